"""Comfyline's Python client.

::

    from comfyline.client import Client

    with Client() as client:  # COMFYLINE_URL / COMFYLINE_API_KEY, else .comfyline/stack.json
        job = client.run("cpu-smoke", {"width": 256, "height": 128})
        client.download(job, Path("out"))

:class:`AsyncClient` has the same methods, awaited. Errors are :class:`ComfylineError` with the
gateway's ``code``; 429 and 503 are retried after ``Retry-After``.
"""

from .aio import AsyncClient
from .core import (
    Asset,
    ComfylineError,
    ConnectionFailed,
    Event,
    Job,
    JobFailed,
    Output,
    Retry,
    Target,
)
from .sync import Client

__all__ = [
    "Asset",
    "AsyncClient",
    "Client",
    "ComfylineError",
    "ConnectionFailed",
    "Event",
    "Job",
    "JobFailed",
    "Output",
    "Retry",
    "Target",
]
