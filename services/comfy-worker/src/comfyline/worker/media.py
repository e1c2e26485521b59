"""What an output file is, learnt from its bytes as they stream past (never held whole).

:class:`MediaProbe` is fed each chunk on its way from ``/view`` to S3 and keeps only a bounded
head and the few container units it needs: PNG/JPEG/GIF/WebP dimensions, animated WebP duration,
FLAC and WAV duration, and MP4 duration and picture size (from ``moov``, which ffmpeg writes at
the end). Anything it cannot read is left unknown rather than guessed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from comfyline.contracts import OutputKind

CONTENT_TYPES: dict[str, tuple[str, OutputKind]] = {
    "png": ("image/png", OutputKind.IMAGE),
    "jpg": ("image/jpeg", OutputKind.IMAGE),
    "jpeg": ("image/jpeg", OutputKind.IMAGE),
    "webp": ("image/webp", OutputKind.IMAGE),
    "gif": ("image/gif", OutputKind.IMAGE),
    "flac": ("audio/flac", OutputKind.AUDIO),
    "wav": ("audio/wav", OutputKind.AUDIO),
    "mp3": ("audio/mpeg", OutputKind.AUDIO),
    "opus": ("audio/ogg", OutputKind.AUDIO),
    "ogg": ("audio/ogg", OutputKind.AUDIO),
    "m4a": ("audio/mp4", OutputKind.AUDIO),
    "mp4": ("video/mp4", OutputKind.VIDEO),
    "webm": ("video/webm", OutputKind.VIDEO),
    "mkv": ("video/x-matroska", OutputKind.VIDEO),
    "mov": ("video/quicktime", OutputKind.VIDEO),
}
_HEAD = 256 * 1024
_MOOV_LIMIT = 32 * 1024 * 1024


def extension(filename: str) -> str:
    """The lower-case extension of a file name (``bin`` when there is none)."""
    _, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and ext.isalnum() else "bin"


def content_type(filename: str) -> str:
    """The MIME type of a file by its extension."""
    return CONTENT_TYPES.get(extension(filename), ("application/octet-stream", None))[0]


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """Dimensions and duration, where the format tells them."""

    width: int | None = None
    height: int | None = None
    duration_s: float | None = None


Unit = Callable[[bytes, bytes, int], None]


class _UnitWalker:
    """Walks length-prefixed units (MP4 boxes, RIFF chunks) keeping a prefix of chosen ones."""

    def __init__(self, riff: bool, want: Callable[[bytes], int], on_unit: Unit) -> None:
        self.riff = riff
        self.want = want
        self.on_unit = on_unit
        self._header = bytearray()
        self._skip = 0
        self._kind = b""
        self._size = 0
        self._keep: bytearray | None = None
        self._limit = 0

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                if self._keep is not None and len(self._keep) < self._limit:
                    self._keep += data[i : i + min(take, self._limit - len(self._keep))]
                self._skip -= take
                i += take
                if not self._skip:
                    self._finish()
                continue
            need = self._header_size() - len(self._header)
            self._header += data[i : i + need]
            i += min(need, n - i)
            if len(self._header) == self._header_size():
                self._start()

    def _header_size(self) -> int:
        if not self.riff and len(self._header) >= 4 and self._header[:4] == b"\0\0\0\1":
            return 16
        return 8

    def _start(self) -> None:
        header = bytes(self._header)
        self._header.clear()
        if self.riff:
            kind, size = header[:4], struct.unpack("<I", header[4:8])[0]
            payload = size + (size & 1)
        else:
            size, kind = struct.unpack(">I", header[:4])[0], header[4:8]
            if size == 1:
                size = struct.unpack(">Q", header[8:16])[0]
            payload = size - len(header) if size else 1 << 62
        self._kind, self._size = kind, size
        self._limit = self.want(kind)
        self._keep = bytearray() if self._limit else None
        self._skip = max(0, payload)
        if not self._skip:
            self._finish()

    def _finish(self) -> None:
        if self._keep is not None:
            self.on_unit(self._kind, bytes(self._keep), self._size)
        self._keep = None


class MediaProbe:
    """Feed it a file's chunks in order; ask :meth:`info` at the end."""

    def __init__(self, filename: str) -> None:
        self.ext = extension(filename)
        self._head = bytearray()
        self._offset = 0
        self._walker: _UnitWalker | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._duration: float | None = None
        self._ms = 0
        self._byte_rate = 0
        if self.ext == "mp4" or self.ext in {"mov", "m4a"}:
            self._walker = _UnitWalker(False, self._mp4_want, self._mp4_unit)
        elif self.ext in {"webp", "wav"}:
            self._walker = _UnitWalker(True, self._riff_want, self._riff_unit)

    def feed(self, chunk: bytes) -> None:
        """Look at the next bytes of the file."""
        if len(self._head) < _HEAD:
            self._head += chunk[: _HEAD - len(self._head)]
        if self._walker is None:
            return
        if self._walker.riff and self._offset < 12:
            # "RIFF" <size> "WEBP"/"WAVE", then the chunks
            skip = min(12 - self._offset, len(chunk))
            self._offset += skip
            chunk = chunk[skip:]
        self._walker.feed(chunk)

    # --- ISO-BMFF (mp4) ----------------------------------------------------------------------
    @staticmethod
    def _mp4_want(kind: bytes) -> int:
        return _MOOV_LIMIT if kind == b"moov" else 0

    def _mp4_unit(self, kind: bytes, payload: bytes, size: int) -> None:
        for child, body in _boxes(payload):
            if child == b"mvhd" and body:
                version = body[0]
                if version == 1 and len(body) >= 32:
                    scale, length = struct.unpack(">IQ", body[20:32])
                elif len(body) >= 20:
                    scale, length = struct.unpack(">II", body[12:20])
                else:
                    continue
                if scale:
                    self._duration = length / scale
            elif child == b"trak":
                for grandchild, tkhd in _boxes(body):
                    if grandchild == b"tkhd" and len(tkhd) >= 84:
                        width, height = struct.unpack(">II", tkhd[-8:])
                        if width >> 16 and height >> 16:
                            self._width, self._height = width >> 16, height >> 16

    # --- RIFF (webp, wav) --------------------------------------------------------------------
    @staticmethod
    def _riff_want(kind: bytes) -> int:
        return {b"VP8X": 10, b"VP8 ": 10, b"VP8L": 5, b"ANMF": 16, b"fmt ": 16, b"data": 1}.get(
            kind, 0
        )

    def _riff_unit(self, kind: bytes, payload: bytes, size: int) -> None:
        if kind == b"VP8X" and len(payload) >= 10:
            self._width = 1 + int.from_bytes(payload[4:7], "little")
            self._height = 1 + int.from_bytes(payload[7:10], "little")
        elif kind == b"VP8 " and len(payload) >= 10 and self._width is None:
            self._width = struct.unpack("<H", payload[6:8])[0] & 0x3FFF
            self._height = struct.unpack("<H", payload[8:10])[0] & 0x3FFF
        elif kind == b"VP8L" and len(payload) >= 5 and self._width is None:
            bits = int.from_bytes(payload[1:5], "little")
            self._width, self._height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif kind == b"ANMF" and len(payload) >= 15:
            self._ms += int.from_bytes(payload[12:15], "little")
            self._duration = self._ms / 1000.0
        elif kind == b"fmt " and len(payload) >= 12:
            self._byte_rate = struct.unpack("<I", payload[8:12])[0]
        elif kind == b"data" and self._byte_rate:
            self._duration = size / self._byte_rate

    # --- the answer --------------------------------------------------------------------------
    def info(self) -> MediaInfo:
        """What the bytes seen so far say."""
        head = bytes(self._head)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
            width, height = struct.unpack(">II", head[16:24])
            return MediaInfo(width, height)
        if head.startswith(b"\xff\xd8"):
            return _jpeg(head)
        if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])
            return MediaInfo(width, height)
        if head.startswith(b"fLaC") and len(head) >= 26:
            bits = int.from_bytes(head[18:26], "big")
            rate, total = bits >> 44, bits & ((1 << 36) - 1)
            return MediaInfo(duration_s=total / rate if rate and total else None)
        return MediaInfo(self._width, self._height, self._duration)


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    """The child boxes of an in-memory box payload."""
    found: list[tuple[bytes, bytes]] = []
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I", data[i : i + 4])[0], data[i + 4 : i + 8]
        start = i + 8
        if size == 1 and i + 16 <= len(data):
            size, start = struct.unpack(">Q", data[i + 8 : i + 16])[0], i + 16
        elif size == 0:
            size = len(data) - i
        if size < 8:
            break
        found.append((kind, data[start : i + size]))
        i += size
    return found


def _jpeg(head: bytes) -> MediaInfo:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            i += 1
            continue
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return MediaInfo(width, height)
        i += 2 + length
    return MediaInfo()
