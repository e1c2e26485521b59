"""Presigned links: the signer that keeps the day's key writes the S3 client's own links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from minio import Minio

from comfyline.runtime.links import LinkSigner

KEYS = [
    "jobs/01HZX/0.png",
    "jobs/alice@example.com/01HZX/out put (1).png",
    "jobs/ünïcødé/ファイル.wav",
    "a~b/c+d=e&f?g#h%i.mp4",
]
DATES = [
    datetime(2026, 12, 6, 19, 59, 59, tzinfo=UTC),
    datetime(2026, 12, 6, 20, 0, 0, tzinfo=UTC),
    datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC),  # another day: another signing key
]


@pytest.mark.parametrize(
    ("endpoint", "secure"),
    [("127.0.0.1:8333", False), ("s3.example.com", True), ("media.example.com:9443", True)],
)
def test_links_are_the_s3_clients_own(endpoint: str, secure: bool) -> None:
    client = Minio(endpoint, "AKIDEXAMPLE", "s3cr3t/k+y", secure=secure, region="eu-west-3")
    sample = client.presigned_get_object("outputs", "probe")
    signer = LinkSigner.probe(sample, "outputs", "eu-west-3", "AKIDEXAMPLE", "s3cr3t/k+y")
    assert signer is not None
    for key in KEYS:
        for date in DATES:
            for seconds in (1, 3600, 604800):
                filename = key.rsplit("/", 1)[-1]
                for params in (None, {"response-content-disposition": f'inline; "{filename}"'}):
                    ours = signer.get(key, seconds, params, now=date)
                    theirs = client.presigned_get_object(
                        "outputs",
                        key,
                        expires=timedelta(seconds=seconds),
                        response_headers=dict(params) if params else None,
                        request_date=date,
                    )
                    assert ours == theirs


def test_a_virtual_host_endpoint_is_left_to_the_s3_client() -> None:
    client = Minio("s3.amazonaws.com", "AKIDEXAMPLE", "secret", secure=True, region="us-east-1")
    sample = client.presigned_get_object("outputs", "probe")
    assert LinkSigner.probe(sample, "outputs", "us-east-1", "AKIDEXAMPLE", "secret") is None


def test_a_links_lifetime_is_checked_as_the_s3_client_checks_it() -> None:
    signer = LinkSigner("http", "127.0.0.1:8333", "outputs", "us-east-1", "a", "b")
    for seconds in (0, 604801):
        with pytest.raises(ValueError):
            signer.get("k", seconds)
