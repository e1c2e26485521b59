"""Sniffing uploads: types from bytes, declared types checked, image dimensions read."""

from __future__ import annotations

import struct

import pytest

from comfyline.gateway.errors import ApiError
from comfyline.gateway.media import check, dimensions, sniff

PNG = (
    b"\x89PNG\r\n\x1a\n"
    + struct.pack(">I", 13)
    + b"IHDR"
    + struct.pack(">II", 640, 480)
    + b"\x08\x02\x00\x00\x00"
)
JPEG = (
    b"\xff\xd8\xff\xe0"
    + struct.pack(">H", 16)
    + b"JFIF\x00"
    + b"\x00" * 9
    + b"\xff\xc0"
    + struct.pack(">HBHH", 17, 8, 300, 200)
    + b"\x03"
    + b"\x00" * 9
)
GIF = b"GIF89a" + struct.pack("<HH", 12, 34) + b"\x00" * 8
WEBP = (
    b"RIFF\x00\x00\x00\x00WEBPVP8X"
    + b"\x00" * 8
    + (99).to_bytes(3, "little")
    + (49).to_bytes(3, "little")
)
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00"
MOV = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (WAV, "audio/wav"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"fLaC\x00", "audio/flac"),
        (b"OggS\x00", "audio/ogg"),
        (MP4, "video/mp4"),
        (MOV, "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x00", "video/webm"),
        (b"<html>", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


def test_dimensions_of_images() -> None:
    assert dimensions("image/png", PNG) == (640, 480)
    assert dimensions("image/jpeg", JPEG) == (200, 300)
    assert dimensions("image/gif", GIF) == (12, 34)
    assert dimensions("image/webp", WEBP) == (100, 50)
    assert dimensions("image/png", PNG[:10]) == (None, None)


def test_declared_type_must_agree() -> None:
    assert check(PNG, "image/png").kind == "image"
    assert check(JPEG, "image/jpg").content_type == "image/jpeg"  # an alias
    assert check(PNG, None).content_type == "image/png"
    assert check(PNG, "application/octet-stream").content_type == "image/png"
    assert check(MOV, "video/mp4").content_type == "video/mp4"  # same container family
    for head, declared in ((WAV, "image/png"), (PNG, "video/mp4"), (b"<svg/>", "image/svg+xml")):
        with pytest.raises(ApiError) as refused:
            check(head, declared)
        assert refused.value.status == 415
