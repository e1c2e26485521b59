"""Publishing while no stream answers (a stream without a leader during a NATS cluster's
election looks the same to a client as no stream at all): tried again, then a clear error."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import StreamConfig

from comfyline.contracts import ErrorCode, Names, WireModel
from comfyline.runtime import Bus, BusError, NatsSettings


class Note(WireModel):
    text: str


async def _bus(settings: NatsSettings, names: Names, retry_s: float) -> Bus:
    return await Bus.connect(
        settings.model_copy(update={"publish_retry_s": retry_s}), names, "publish-test"
    )


async def test_a_publish_no_stream_takes_fails_as_unavailable_after_its_retry_time(
    nats_settings: NatsSettings, names: Names
) -> None:
    bus = await _bus(nats_settings, names, retry_s=0.5)
    try:
        with pytest.raises(BusError, match="no stream takes") as raised:
            await bus.publish(f"{names.namespace}.nowhere", Note(text="x"), msg_id="n-1")
        assert raised.value.code == ErrorCode.SERVICE_UNAVAILABLE
    finally:
        await bus.close()


async def test_a_publish_lands_once_when_the_stream_answers_within_its_retry_time(
    nats_settings: NatsSettings, names: Names
) -> None:
    bus = await _bus(nats_settings, names, retry_s=10)
    stream = f"{names.namespace}_LATE"
    subject = f"{names.namespace}.late"
    try:
        publishing = asyncio.create_task(bus.publish(subject, Note(text="x"), msg_id="late-1"))
        await asyncio.sleep(0.3)
        assert not publishing.done()  # still trying: nothing takes the subject yet
        await bus.js.add_stream(StreamConfig(name=stream, subjects=[subject]))
        ack = await asyncio.wait_for(publishing, 10)
        assert ack.stream == stream and not ack.duplicate
        assert (await bus.js.stream_info(stream)).state.messages == 1
    finally:
        await bus.js.delete_stream(stream)
        await bus.close()
