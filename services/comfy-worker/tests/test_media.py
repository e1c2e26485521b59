"""Dimensions and durations read from bytes as they stream past, in chunks of any size."""

from __future__ import annotations

import io
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from comfyline.worker.media import MediaInfo, MediaProbe, content_type, extension


def probe(name: str, data: bytes, chunk: int) -> MediaInfo:
    p = MediaProbe(name)
    for i in range(0, len(data), chunk):
        p.feed(data[i : i + chunk])
    return p.info()


def image(fmt: str, size: tuple[int, int] = (123, 45)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, fmt)
    return buffer.getvalue()


def audio(fmt: str, codec: str, seconds: float) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream: Any = container.add_stream(codec, rate=24000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, int(24000 * seconds)), dtype=np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 24000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def video(frames: int, fps: int, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream: Any = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), i * 3, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize(
    ("fmt", "ext"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif")]
)
def test_image_dimensions(fmt: str, ext: str, chunk: int) -> None:
    assert probe(f"x.{ext}", image(fmt), chunk) == MediaInfo(123, 45)


def test_animated_webp_duration_is_the_sum_of_its_frames() -> None:
    frames = [Image.new("RGB", (64, 32), (i * 40, 0, 0)) for i in range(5)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], duration=200)
    assert probe("a.webp", buffer.getvalue(), 13) == MediaInfo(64, 32, 1.0)


@pytest.mark.parametrize(("fmt", "codec"), [("flac", "flac"), ("wav", "pcm_s16le")])
def test_audio_duration(fmt: str, codec: str) -> None:
    info = probe(f"a.{fmt}", audio(fmt, codec, 2.5), 333)
    assert info.duration_s == pytest.approx(2.5, abs=0.01)


def test_mp4_duration_and_size_come_from_moov_at_the_end() -> None:
    data = video(frames=40, fps=20, size=(96, 64))
    assert data.find(b"moov") > data.find(b"mdat"), "moov after mdat, as ffmpeg writes it"
    info = probe("v.mp4", data, 1000)
    assert (info.width, info.height) == (96, 64)
    assert info.duration_s == pytest.approx(2.0, abs=0.06)


def test_unknown_bytes_say_nothing() -> None:
    assert probe("x.bin", b"hello world" * 100, 50) == MediaInfo()
    assert probe("x.png", b"\x89PNG\r\n", 50) == MediaInfo()


def test_types_by_extension() -> None:
    assert (extension("a/B.PNG"), content_type("b.PNG")) == ("png", "image/png")
    assert content_type("x_00001-audio.mp4") == "video/mp4"
    assert content_type("tts_00001_.flac") == "audio/flac"
    assert extension("noext") == "bin"
