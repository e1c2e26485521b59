"""Links to fresh outputs: served by the gateway from JetStream, with no API key, while the
output is fresh; a 307 to S3 once it has left the stream; refused when tampered with or
expired."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from comfyline.contracts import JobRecord, utcnow
from comfyline.gateway import create_app
from comfyline.gateway.app import GatewayApp
from comfyline.runtime import (
    Bus,
    FreshOutputs,
    FreshSettings,
    NatsSettings,
    ObjectStore,
    S3Settings,
)
from comfyline.testkit.fixtures import TEST_FRESH_TOTAL_BYTES

from .conftest import Orchestrator, make_settings, png
from .test_jobs import first_job_of, submit
from .test_lane import VARYING, client_of


async def _fresh(bus: Bus) -> FreshOutputs:
    fresh = FreshOutputs(bus, FreshSettings(total_bytes=TEST_FRESH_TOTAL_BYTES))
    await fresh.ensure()
    return fresh


async def _ended_fresh(
    client: httpx.AsyncClient, headers: dict[str, str], orchestrator: Orchestrator
) -> tuple[JobRecord, FreshOutputs]:
    job = (await submit(client, headers)).json()
    fresh = await _fresh(orchestrator.bus)
    record = await orchestrator.queued(job["id"])
    return await orchestrator.complete(record, fresh=fresh), fresh


async def test_a_fresh_outputs_link_serves_its_bytes_without_a_key(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator, store: ObjectStore
) -> None:
    record, _ = await _ended_fresh(client, alice, orchestrator)
    job = (await client.get(f"/v1/jobs/{record.id}", headers=alice)).json()
    output = job["outputs"][0]
    assert output["url"].startswith("http://gw.test/v1/files/")
    answer = await client.get(output["url"])  # no Authorization header
    assert answer.status_code == 200, answer.text
    assert answer.content == png(16, 8)
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"] == 'inline; filename="0.png"'
    # Not in S3 yet (no archiver ran): the job's other ways to its bytes read the stream too.
    listed = store.client.list_objects(store.bucket, prefix=f"outputs/alice/{record.id}/")
    assert not list(listed)
    content = await client.get(output["content_url"], headers=alice)
    assert content.status_code == 200 and content.content == png(16, 8)
    moved = await client.get(f"/v1/jobs/{record.id}/outputs/0", headers=alice)
    assert moved.status_code == 307
    assert moved.headers["location"].startswith("http://gw.test/v1/files/")
    v2 = (await client.get(f"/api/v2/jobs/{record.id}", headers=alice)).json()
    assert v2["outputs"][0]["url"].startswith("http://gw.test/v1/files/")
    assert (await client.get(v2["outputs"][0]["url"])).content == png(16, 8)


async def test_a_link_tampered_with_or_expired_is_refused(
    gateway: FastAPI,
    client: httpx.AsyncClient,
    alice: dict[str, str],
    orchestrator: Orchestrator,
) -> None:
    record, _ = await _ended_fresh(client, alice, orchestrator)
    url = (await client.get(f"/v1/jobs/{record.id}", headers=alice)).json()["outputs"][0]["url"]
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    # Another key under the same signature.
    other = url.replace(parts.path, parts.path[:-2] + "AA")
    # A later expiry under the same signature.
    later = url.replace(f"expires={query['expires']}", f"expires={int(query['expires']) + 60}")
    odd = url.replace(query["signature"], "%C3%A3%05E")  # not even ASCII
    for bad in (other, later, url.replace(query["signature"], "x" * 32), odd):
        answer = await client.get(bad)
        assert answer.status_code == 403, bad
        assert answer.json()["code"] == "forbidden"
    links = gateway.state.gateway.views.output_links
    expired = links.fresh_url("http://gw.test", record.outputs[0].key, int(time.time()) - 1)
    answer = await client.get(expired)
    assert answer.status_code == 403 and "expired" in answer.json()["error"]
    unsigned = await client.get(parts.path)
    assert unsigned.status_code == 422


async def test_once_the_output_left_the_stream_its_link_sends_to_s3(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator, store: ObjectStore
) -> None:
    record, fresh = await _ended_fresh(client, alice, orchestrator)
    url = (await client.get(f"/v1/jobs/{record.id}", headers=alice)).json()["outputs"][0]["url"]
    key = record.outputs[0].key
    await store.put_bytes(key, png(16, 8), "image/png")  # as the archiver copies it
    await fresh.forget(key)  # as the stream's max age removes it
    answer = await client.get(url)
    assert answer.status_code == 307
    location = answer.headers["location"]
    assert "X-Amz-Signature=" in location and "/v1/files/" not in location
    async with httpx.AsyncClient() as s3:
        assert (await s3.get(location)).content == png(16, 8)


async def test_an_output_no_longer_fresh_is_linked_to_s3(
    client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator, store: ObjectStore
) -> None:
    """After ``fresh_until`` the link goes to S3 directly (no hop through the gateway), and
    an output a worker stored in S3 itself (no ``fresh_until``) always did."""
    record, _ = await _ended_fresh(client, alice, orchestrator)
    ref = record.outputs[0]
    await store.put_bytes(ref.key, png(16, 8), "image/png")
    stale = ref.model_copy(update={"fresh_until": utcnow() - timedelta(seconds=1)})
    await orchestrator.write(record.model_copy(update={"outputs": [stale]}))
    url = (await client.get(f"/v1/jobs/{record.id}", headers=alice)).json()["outputs"][0]["url"]
    assert "X-Amz-Signature=" in url and "/v1/files/" not in url
    async with httpx.AsyncClient() as s3:
        assert (await s3.get(url)).content == png(16, 8)


async def test_a_waiting_answers_fresh_outputs_are_read_ahead_for_their_download(
    gateway: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    """Answering a ``Prefer: wait``, the gateway reads the job's fresh outputs beside the
    answer: the download that follows is served from that read (here the stream no longer
    has the output when it comes), once."""
    links = gateway.state.gateway.views.output_links
    fresh = await _fresh(orchestrator.bus)

    async def finish_soon() -> None:
        record = await orchestrator.queued(await first_job_of(orchestrator, "alice"))
        await orchestrator.complete(record, fresh=fresh)

    runner = asyncio.create_task(finish_soon())
    answer = await submit(client, {**alice, "Prefer": "wait=5"})
    await runner
    assert answer.status_code == 200, answer.text
    output = answer.json()["outputs"][0]
    key = f"outputs/alice/{answer.json()['id']}/0.png"
    ahead = links.reading_ahead(key)
    assert ahead is not None
    await asyncio.wait_for(ahead, 5)
    await fresh.forget(key)  # gone from the stream: only the read ahead has it now
    download = await client.get(output["url"])
    assert download.status_code == 200, download.text
    assert download.content == png(16, 8) and download.headers["content-type"] == "image/png"
    again = await client.get(output["url"])
    assert again.status_code == 307  # read ahead for one download only
    assert links.reading_ahead(key) is None


async def test_a_job_read_without_waiting_reads_nothing_ahead(
    gateway: FastAPI, client: httpx.AsyncClient, alice: dict[str, str], orchestrator: Orchestrator
) -> None:
    record, _ = await _ended_fresh(client, alice, orchestrator)
    job = (await client.get(f"/v1/jobs/{record.id}", headers=alice)).json()
    assert job["status"] == "succeeded"
    assert gateway.state.gateway.views.output_links.reading_ahead(record.outputs[0].key) is None


@pytest.fixture
async def two_gateways(
    namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings
) -> AsyncIterator[dict[str, FastAPI]]:
    """Two gateways on one namespace: ``lane`` and ``whole`` (its files lane off)."""
    made = {
        name: create_app(make_settings(namespace, nats_settings, s3_settings, files_lane=on))
        for name, on in (("lane", True), ("whole", False))
    }
    async with (
        made["lane"].router.lifespan_context(made["lane"]),
        made["whole"].router.lifespan_context(made["whole"]),
    ):
        yield made


async def test_the_files_lane_answers_as_the_whole_app(
    two_gateways: dict[str, FastAPI], bus: Bus, store: ObjectStore
) -> None:
    """``GET /v1/files/...`` in its own lane (the app's middlewares and handlers, no router):
    the same statuses, bodies and headers as through the whole app; what it does not take (a
    query the route would refuse or read otherwise) goes through the whole app."""
    fresh = await _fresh(bus)
    kept, gone = "outputs/alice/job-1/0.png", "outputs/alice/job-2/0.png"
    assert await fresh.put(kept, png(16, 8), "image/png") is not None
    await store.put_bytes(gone, png(8, 8), "image/png")
    lane_app = two_gateways["lane"]
    assert isinstance(lane_app, GatewayApp) and lane_app.files_lane is not None
    links = lane_app.state.gateway.views.output_links
    later = int(time.time()) + 300
    url = links.fresh_url("http://gw.test", kept, later)
    token, query = url.split("/v1/files/")[1].split("?")
    signature = parse_qs(query)["signature"][0]
    # (path and query, taken by the lane, status)
    cases = [
        (f"/v1/files/{token}?{query}", True, 200),
        (f"/v1/files/{token}?{query}&extra=1", True, 200),
        (links.fresh_url("", gone, later), True, 307),
        (f"/v1/files/{token}?expires={later}&signature={'x' * 32}", True, 403),
        (f"/v1/files/{token}?expires={later + 1}&signature={signature}", True, 403),
        (links.fresh_url("", kept, int(time.time()) - 1), True, 403),
        (f"/v1/files/{token}?expires=soon&signature={signature}", False, 422),
        (f"/v1/files/{token}?expires={later}", False, 422),
        (f"/v1/files/{token}?expires={later}&signature={'x' * 65}", False, 422),
        (f"/v1/files/{token}?{query}&expires={later}", False, 200),
        (f"/v1/files/{token}/more?{query}", False, 404),
    ]
    for path, taken, status in cases:
        answers = []
        before = lane_app.files_lane.served
        for name in ("lane", "whole"):
            async with client_of(two_gateways[name]) as http:
                answers.append(await http.get(path, headers={"Origin": "https://app.example"}))
        lane, whole = answers
        assert lane.status_code == whole.status_code == status, (path, lane.text)
        assert (lane_app.files_lane.served - before == 1) is taken, path
        assert set(lane.headers) - VARYING == set(whole.headers) - VARYING, path
        assert lane.headers["x-request-id"]
        if status in (200, 307):
            assert lane.content == whole.content
        else:
            assert lane.json()["code"] == whole.json()["code"], path
        if status == 307:
            assert lane.headers["location"].split("?")[0] == whole.headers["location"].split("?")[0]
