"""``python -m comfyline.enhancer`` as its own process: settings from the environment, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from comfyline.contracts import EnhanceReply, EnhanceRequest, Names, PolicyReply, PolicyRequest
from comfyline.runtime import Bus, BusError
from comfyline.stack.servers import NatsServer
from comfyline.testkit.enhancer import sample_template


async def test_the_service_runs_and_stops_on_sigterm(
    nats_server: NatsServer, namespace: str, names: Names, bus: Bus, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "test-sdxl.json").write_text(
        sample_template("test-sdxl", quality_tags=["masterpiece"]).model_dump_json()
    )
    env = {
        **os.environ,
        "ENHANCER_NATS__URL": nats_server.url,
        "ENHANCER_NAMESPACE": namespace,
        "ENHANCER_CATALOGUE_DIR": str(models),
        "ENHANCER_POLICY__RULES": json.dumps(
            [{"name": "cats", "tier": "mature", "terms": ["cat"]}]
        ),
        "ENHANCER_SHUTDOWN_GRACE_S": "5",
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfyline.enhancer",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        request = EnhanceRequest(model="test-sdxl", prompt="a red fox", quality="fast")
        reply = None
        for _ in range(100):  # the process starts in about a second
            try:
                reply = await bus.request(names.enhance(), request, EnhanceReply, timeout=1)
                break
            except BusError:
                await asyncio.sleep(0.2)
        assert reply is not None and reply.enhancement is not None, "the service never answered"
        assert reply.enhancement.prompt == "a red fox, masterpiece"
        policy = await bus.request(
            names.policy(),
            PolicyRequest(model="test-sdxl", texts=["a cat"], allowed="general"),
            PolicyReply,
            timeout=5,
        )
        assert (policy.tier, policy.allowed) == ("mature", False)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(child.communicate(), timeout=20)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise
    assert child.returncode == 0, stderr.decode()[-2000:]
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert any(line["msg"] == "serving" and line["service"] == "enhancer" for line in lines)
