"""The values that flow between simulated nodes: image batches, masks, latents, audio, video.

Images are uint8 frames made lazily, one at a time, so a long or large video never sits whole in
memory. Everything generated is a deterministic function of a `sig` (the node's cache signature,
which covers its inputs, seeds and ancestry), so equal inputs give equal files and a different
prompt or seed gives a different picture or sound.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from comfyline.comfyui_sim.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL import Image

    Frame = NDArray[np.uint8]
    FloatArray = NDArray[np.float32]
else:
    np = lazy("numpy")
    Image = lazy("PIL.Image")


def digest(*parts: object) -> str:
    """A short stable hash of anything printable, used to derive signatures."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def resize(frame: Frame, width: int, height: int) -> Frame:
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))


def pattern_frame(sig: str, index: int, height: int, width: int) -> Frame:
    """A deterministic picture for `sig`: a coloured wave field with stripes that move per frame."""
    h = hashlib.sha256(sig.encode()).digest()
    c0 = np.array(list(h[0:3]), dtype=np.float32)
    c1 = np.array(list(h[3:6]), dtype=np.float32)
    c2 = np.array(list(h[6:9]), dtype=np.float32)
    fx, fy = 1 + h[9] % 6, 1 + h[10] % 4
    period = 6 + h[11] % 26
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    wave = (np.sin(np.float32(2 * math.pi) * (fx * x + fy * y) + np.float32(index * 0.35)) + 1) / 2
    cols = np.arange(width, dtype=np.int32)[None, :]
    rows = np.arange(height, dtype=np.int32)[:, None]
    stripes = (((cols + rows + index * 2) // period) % 2).astype(np.float32) * np.float32(0.25)
    out = np.empty((height, width, 3), dtype=np.uint8)
    for channel in range(3):
        base = c0[channel] + (c1[channel] - c0[channel]) * wave
        out[..., channel] = (base * (1 - stripes) + c2[channel] * stripes).astype(np.uint8)
    return out


class Images:
    """IMAGE: `count` frames of `height` x `width` x `channels`, each made on demand."""

    def __init__(
        self,
        count: int,
        height: int,
        width: int,
        channels: int,
        make: Callable[[int], Frame],
        sig: str,
    ) -> None:
        self.count, self.height, self.width, self.channels = count, height, width, channels
        self._make = make
        self.sig = sig

    def frame(self, index: int) -> Frame:
        return self._make(index)

    def __iter__(self) -> Iterator[Frame]:
        return (self._make(i) for i in range(self.count))

    def __str__(self) -> str:
        return (
            f"SimImage(batch={self.count}, height={self.height}, width={self.width}, "
            f"channels={self.channels})"
        )

    @classmethod
    def from_array(cls, frames: Frame, sig: str) -> Images:
        """A batch from a `(count, height, width, channels)` array."""
        count, height, width, channels = frames.shape
        return cls(count, height, width, channels, lambda i: frames[i], sig)

    @classmethod
    def solid(cls, rgb: tuple[int, int, int], count: int, height: int, width: int) -> Images:
        color = np.array(rgb, dtype=np.uint8)

        def make(_: int) -> Frame:
            return np.broadcast_to(color, (height, width, 3)).copy()

        return cls(count, height, width, 3, make, digest("solid", rgb, count, height, width))

    @classmethod
    def pattern(
        cls,
        sig: str,
        count: int,
        height: int,
        width: int,
        base: Images | None = None,
        mask: FloatArray | None = None,
        strength: float = 1.0,
    ) -> Images:
        """Generated frames, blended over `base` where `mask` (or by `strength`) says so."""

        def make(index: int) -> Frame:
            fresh = pattern_frame(sig, index, height, width)
            if base is None or base.count == 0:
                return fresh
            under = resize(base.frame(min(index, base.count - 1))[..., :3], width, height)
            if mask is not None:
                weight = mask_to_size(mask, width, height)[..., None] * np.float32(strength)
            elif base.count == 1 and count > 1:
                ramp = 0.35 + 0.65 * index / (count - 1)
                weight = np.full((1, 1, 1), min(1.0, strength * ramp), np.float32)
            else:
                weight = np.full((1, 1, 1), min(1.0, strength), np.float32)
            mixed = under.astype(np.float32) * (1 - weight) + fresh.astype(np.float32) * weight
            return mixed.astype(np.uint8)

        return cls(count, height, width, 3, make, sig)

    def map(
        self,
        fn: Callable[[Frame], Frame],
        sig: str,
        height: int | None = None,
        width: int | None = None,
        channels: int | None = None,
    ) -> Images:
        return Images(
            self.count,
            height or self.height,
            width or self.width,
            channels or self.channels,
            lambda i: fn(self.frame(i)),
            sig,
        )

    def select(self, indices: list[int], sig: str) -> Images:
        """Frames picked (and maybe repeated) by index: pingpong, loops, frame-rate changes."""
        picked = list(indices)
        return Images(
            len(picked),
            self.height,
            self.width,
            self.channels,
            lambda i: self.frame(picked[i]),
            sig,
        )


def mask_to_size(mask: FloatArray, width: int, height: int) -> FloatArray:
    if mask.shape == (height, width):
        return mask
    image = Image.fromarray(mask.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0), dtype=np.float32)


@dataclass(frozen=True)
class Mask:
    """MASK: `(count, height, width)` floats in 0..1 (1 = repaint)."""

    values: FloatArray
    sig: str

    def first(self) -> FloatArray:
        return np.asarray(self.values[0], dtype=np.float32)

    def __str__(self) -> str:
        count, height, width = self.values.shape
        return f"SimMask(batch={count}, height={height}, width={width})"


@dataclass(frozen=True)
class Latent:
    """LATENT: no tensor, just what decoding needs: size, batch, frames and what to blend over."""

    sig: str
    width: int
    height: int
    batch: int = 1
    frames: int = 1
    channels: int = 4
    base: Images | None = None
    mask: FloatArray | None = None
    strength: float = 1.0

    def __str__(self) -> str:
        return (
            f"SimLatent(batch={self.batch}, channels={self.channels}, frames={self.frames}, "
            f"height={self.height // 8}, width={self.width // 8})"
        )


@dataclass(frozen=True)
class Ref:
    """MODEL, CLIP, VAE, CLIP_VISION and friends: a name and a signature, nothing loaded."""

    kind: str
    name: str
    sig: str

    def __str__(self) -> str:
        return f"<Sim{self.kind} {self.name}>"


@dataclass(frozen=True)
class Conditioning:
    """CONDITIONING: the encoded text, kept as its signature."""

    sig: str
    text: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"SimConditioning({self.text[:40]!r})"


@dataclass(frozen=True)
class Audio:
    """AUDIO: float32 `(channels, samples)` in -1..1 at `sample_rate`."""

    waveform: FloatArray
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def samples(self) -> int:
        return int(self.waveform.shape[1])

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate

    def __str__(self) -> str:
        wave = f"SimAudio(channels={self.channels}, samples={self.samples})"
        return f"{{'waveform': {wave}, 'sample_rate': {self.sample_rate}}}"

    def fitted(self, seconds: float) -> Audio:
        """Cut or pad with silence to `seconds`."""
        wanted = max(0, round(seconds * self.sample_rate))
        wave = self.waveform[:, :wanted]
        if wave.shape[1] < wanted:
            pad = np.zeros((self.channels, wanted - wave.shape[1]), dtype=np.float32)
            wave = np.concatenate([wave, pad], axis=1)
        return Audio(np.ascontiguousarray(wave, dtype=np.float32), self.sample_rate)

    def loudness(self, fps: float, frames: int) -> FloatArray:
        """RMS per video frame, 0..1: how open a simulated mouth is."""
        out = np.zeros(frames, dtype=np.float32)
        if self.samples == 0:
            return out
        mono = self.waveform.mean(axis=0)
        step = self.sample_rate / fps
        for index in range(frames):
            chunk = mono[int(index * step) : int((index + 1) * step)]
            if chunk.size:
                out[index] = float(np.sqrt(np.mean(chunk * chunk)))
        peak = float(out.max())
        return out / peak if peak > 0 else out


def speech(sig: str, seconds: float, sample_rate: int = 24000) -> Audio:
    """A deterministic speech-like sound: syllables of a voiced tone with a pitch from `sig`."""
    h = hashlib.sha256(sig.encode()).digest()
    count = max(1, round(seconds * sample_rate))
    t = np.arange(count, dtype=np.float32) / np.float32(sample_rate)
    pitch = 100.0 + h[0] % 120
    rate = 3.0 + (h[1] % 30) / 10.0
    syllable = np.floor(t * rate).astype(np.int64)
    jitter = np.array([1.0 + ((b % 21) - 10) / 100.0 for b in h], dtype=np.float32)
    f0 = np.float32(pitch) * jitter[syllable % len(jitter)]
    phase = np.cumsum(np.float32(2 * math.pi) * f0 / np.float32(sample_rate))
    envelope = np.sin(np.float32(math.pi) * (t * np.float32(rate) % 1)) ** 2
    voice = np.sin(phase) + 0.4 * np.sin(2 * phase) + 0.15 * np.sin(3 * phase)
    wave = (0.25 * envelope * voice).astype(np.float32)
    return Audio(wave[None, :], sample_rate)


@dataclass(frozen=True)
class Video:
    """VIDEO (CreateVideo's output): frames, a frame rate and maybe a sound track."""

    images: Images
    fps: float
    audio: Audio | None = None

    def __str__(self) -> str:
        return f"SimVideo(frames={self.images.count}, fps={self.fps})"


@dataclass(frozen=True)
class SonicData:
    """SONIC_PREDATA: the face image, the sound, and how much of it to animate."""

    sig: str
    image: Images
    audio: Audio
    duration: float
    min_resolution: int

    def __str__(self) -> str:
        return f"SimSonicData(duration={self.duration})"
