"""What a file really is: its type from its first bytes, checked against what the client said.

Only image, audio and video types that models take are accepted. A declared type must agree
with the sniffed one (aliases such as ``image/jpg`` or ``audio/x-wav`` allowed); a mismatch or an
unknown type is 415. Image dimensions are read from the header when they are there.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from comfyline.contracts import ErrorCode

from .errors import ApiError

SNIFF_BYTES = 64 * 1024

ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-flac": "audio/flac",
    "audio/x-m4a": "audio/mp4",
    "video/x-matroska": "video/webm",
}
#: Types whose sniffed family is the same container (ISO BMFF, Matroska).
SAME_FAMILY = [
    {"video/mp4", "video/quicktime", "audio/mp4"},
    {"video/webm", "audio/webm"},
]


@dataclass(frozen=True, slots=True)
class Media:
    """A sniffed file type: the content type, its kind, and dimensions when known."""

    content_type: str
    kind: str
    width: int | None = None
    height: int | None = None


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file say, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def canonical(content_type: str | None) -> str | None:
    """A declared type without parameters, lower-cased, aliases resolved."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def check(head: bytes, declared: str | None) -> Media:
    """The file's media type, refusing unknown types and mismatches (415)."""
    found = sniff(head)
    want = canonical(declared)
    if found is None:
        raise ApiError(
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "not an image, audio or video file of a supported type",
            details={"declared": declared, "supported": sorted(set(_KINDS))},
        )
    if want and want not in {"application/octet-stream", found}:
        if not any(want in family and found in family for family in SAME_FAMILY):
            raise ApiError(
                415,
                ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                f"the file is {found}, not {want} as declared",
                details={"declared": want, "detected": found},
            )
        found = want if want in _KINDS else found
    width, height = dimensions(found, head)
    return Media(found, _KINDS[found], width, height)


_KINDS = {
    "image/png": "image",
    "image/jpeg": "image",
    "image/gif": "image",
    "image/webp": "image",
    "audio/wav": "audio",
    "audio/mpeg": "audio",
    "audio/flac": "audio",
    "audio/ogg": "audio",
    "audio/mp4": "audio",
    "video/mp4": "video",
    "video/quicktime": "video",
    "video/webm": "video",
}


def dimensions(content_type: str, head: bytes) -> tuple[int | None, int | None]:
    """Width and height of an image from its header bytes, when they are there."""
    try:
        if content_type == "image/png" and len(head) >= 24:
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if content_type == "image/gif" and len(head) >= 10:
            w, h = struct.unpack("<HH", head[6:10])
            return int(w), int(h)
        if content_type == "image/webp":
            return _webp(head)
        if content_type == "image/jpeg":
            return _jpeg(head)
    except struct.error:
        pass
    return None, None


def _webp(head: bytes) -> tuple[int | None, int | None]:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and len(head) >= 30:
        w, h = struct.unpack("<HH", head[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None, None


def _jpeg(head: bytes) -> tuple[int | None, int | None]:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None, None
        marker = head[i + 1]
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None, None
