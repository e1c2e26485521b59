"""The comfy-worker: pulls work for the models its ComfyUI servers can run, drives ComfyUI,
streams outputs to S3 and reports run events (see docs/architecture.md)."""

from .capability import Capability, combo_options
from .comfy_client import ComfyClient
from .errors import (
    ComfyUnavailable,
    ExecutionFailed,
    InputError,
    PromptRejected,
    RunCancelled,
    RunInterrupted,
    WorkerError,
)
from .media import MediaInfo, MediaProbe
from .run import ComfyRun, RunOptions, RunResult
from .service import Worker
from .settings import Settings
from .tracker import OutputFile, Phase, RunTracker

__all__ = [
    "Capability",
    "ComfyClient",
    "ComfyRun",
    "ComfyUnavailable",
    "ExecutionFailed",
    "InputError",
    "MediaInfo",
    "MediaProbe",
    "OutputFile",
    "Phase",
    "PromptRejected",
    "RunCancelled",
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "RunTracker",
    "Settings",
    "Worker",
    "WorkerError",
    "combo_options",
]
