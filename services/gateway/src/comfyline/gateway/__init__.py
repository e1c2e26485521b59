"""Comfyline's gateway: the public HTTP, SSE and WebSocket API in front of the job pipeline.

``create_app(settings)`` builds the FastAPI app; ``python -m comfyline.gateway`` serves it with
uvicorn, and ``python -m comfyline.gateway keys ...`` manages API keys.
"""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
