"""The provider worker: catalogue models run by hosted image APIs, on the workers' contract."""

from .clients import Gate, Http, Image, OpenAIImages, ProviderError, QueueApi, make_client
from .settings import ProviderConfig, Settings
from .worker import ProviderWorker

__all__ = [
    "Gate",
    "Http",
    "Image",
    "OpenAIImages",
    "ProviderConfig",
    "ProviderError",
    "ProviderWorker",
    "QueueApi",
    "Settings",
    "make_client",
]
