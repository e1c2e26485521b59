"""Writing real files: PNG (Pillow), FLAC/MP3/Opus audio and MP4/WEBM video (PyAV), animated
WEBP and GIF (Pillow). PyAV is imported on first use only, to keep start-up fast."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyline.comfyui_sim.lazy import lazy
from comfyline.comfyui_sim.nodes.media import Audio, Images

if TYPE_CHECKING:
    import av
    import numpy as np
    from PIL import Image, PngImagePlugin

    from comfyline.comfyui_sim.nodes.media import Frame
else:
    np = lazy("numpy")
    Image = lazy("PIL.Image")
    PngImagePlugin = lazy("PIL.PngImagePlugin")


def save_png(path: Path, frame: Frame, compress_level: int, text: dict[str, Any] | None) -> None:
    """Save one frame as PNG with ComfyUI's `prompt`/`workflow` text chunks."""
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, json.dumps(value))
    Image.fromarray(frame).save(path, pnginfo=info, compress_level=compress_level)


def encode_preview(frame: Frame, fmt: str, max_size: int | None = None) -> bytes:
    """A preview image's bytes, as ComfyUI sends them in binary frames."""
    image = Image.fromarray(frame[..., :3] if fmt == "JPEG" else frame)
    if max_size is not None:
        image.thumbnail((max_size, max_size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=95, compress_level=1)
    return buffer.getvalue()


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


def _audio_frames(audio: Audio, frame_size: int = 1024) -> list[av.AudioFrame]:
    import av

    wave = audio.waveform[:2] if audio.channels > 2 else audio.waveform
    layout = _layout(wave.shape[0])
    frames = []
    for start in range(0, wave.shape[1], frame_size):
        chunk = np.ascontiguousarray(wave[:, start : start + frame_size], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = audio.sample_rate
        frames.append(frame)
    return frames


def _add_audio_stream(
    container: av.container.OutputContainer, codec: str, audio: Audio, rate: int | None
) -> av.audio.stream.AudioStream:
    import av

    stream = container.add_stream(codec, rate=rate or audio.sample_rate)
    assert isinstance(stream, av.audio.stream.AudioStream)
    stream.layout = _layout(min(audio.channels, 2))
    return stream


def write_audio(
    path: Path,
    audio: Audio,
    container_format: str,
    codec: str,
    bit_rate: int | None = None,
    rate: int | None = None,
) -> None:
    """Encode a sound to FLAC, MP3 or Opus (PyAV converts sample format and rate)."""
    import av

    with av.open(str(path), mode="w", format=container_format) as container:
        stream = _add_audio_stream(container, codec, audio, rate)
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        for frame in _audio_frames(audio):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


VIDEO_CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "h264": ("libx264", {"preset": "ultrafast", "threads": "1"}),
    "h265": ("libx265", {"preset": "ultrafast", "x265-params": "log-level=error"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "b": "0"}),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "log-level=0"}),
}


def even(value: int) -> int:
    return value + (value % 2)


def write_video(
    path: Path,
    images: Images,
    fps: float,
    codec: str = "h264",
    container_format: str | None = None,
    crf: float | None = None,
    pix_fmt: str = "yuv420p",
    audio: Audio | None = None,
    audio_codec: str = "aac",
    audio_rate: int | None = None,
) -> None:
    """Encode frames (padded to even sizes, as yuv420p needs) and maybe a sound track."""
    import av

    encoder, options = VIDEO_CODECS[codec]
    width, height = even(images.width), even(images.height)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=Fraction(fps).limit_denominator(1001))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        opts: dict[str, object] = dict(options)
        if crf is not None:
            opts["crf"] = str(int(crf))
        stream.options = opts
        sound = None
        if audio is not None and audio.samples > 0:
            sound = _add_audio_stream(container, audio_codec, audio, audio_rate)
        for frame in images:
            rgb = frame[..., :3]
            if rgb.shape[0] != height or rgb.shape[1] != width:
                rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if sound is not None and audio is not None:
            for audio_frame in _audio_frames(audio):
                for packet in sound.encode(audio_frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)


def write_animated(
    path: Path,
    images: Images,
    fps: float,
    fmt: str,
    loop: int = 0,
    lossless: bool = False,
    quality: int = 80,
    method: int = 4,
) -> None:
    """Animated WEBP or GIF through Pillow."""
    frames = [Image.fromarray(frame[..., :3]) for frame in images]
    first, rest = frames[0], frames[1:]
    duration = max(1, round(1000 / fps))
    extra: dict[str, Any] = {"lossless": lossless, "quality": quality, "method": method}
    first.save(
        path,
        format=fmt,
        save_all=True,
        append_images=rest,
        duration=duration,
        loop=loop,
        **(extra if fmt == "WEBP" else {}),
    )


def read_audio(path: Path) -> Audio:
    """Decode any sound (or a video's sound track) to float32 planar samples."""
    import av

    chunks: list[np.ndarray[Any, Any]] = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return Audio(np.zeros((1, 0), dtype=np.float32), 44100)
        stream = container.streams.audio[0]
        rate = stream.rate or 44100
        resampler = av.AudioResampler(format="fltp", layout=None, rate=rate)
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                chunks.append(converted.to_ndarray())
    if not chunks:
        return Audio(np.zeros((1, 0), dtype=np.float32), rate)
    wave = np.concatenate(chunks, axis=1).astype(np.float32)
    return Audio(np.ascontiguousarray(wave), rate)


def read_video_frames(path: Path) -> tuple[list[Frame], float]:
    """Decode every frame of a video as RGB, with its frame rate."""
    import av

    frames: list[Frame] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for frame in container.decode(stream):
            frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    return frames, fps
