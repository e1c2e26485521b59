"""The worker's settings: which ComfyUI servers it drives and how it paces its work.

Read once in ``main()`` from ``WORKER_*`` variables (nested blocks with ``__``:
``WORKER_NATS__URL``, ``WORKER_S3__ENDPOINT``) and passed down. ``WORKER_COMFYUI_URLS`` takes a
comma-separated list or a JSON array, so a compose file and a shell both stay readable;
``WORKER_COMFYUI_OUTPUT_DIRS`` takes ``url=folder`` pairs the same way, or a JSON object.
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from comfyline.runtime import FreshSettings, ServiceSettings


def default_worker_id() -> str:
    """``<hostname>-<pid>``, reduced to characters that are safe in a KV key."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname()).strip("-") or "worker"
    return f"{host[:48]}-{os.getpid()}"


def _split_list(value: Any) -> Any:
    """Accept ``a,b``, ``["a", "b"]`` (JSON) or a real list."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(ServiceSettings):
    """Everything ``python -m comfyline.worker`` needs (prefix ``WORKER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_", env_nested_delimiter="__", extra="ignore"
    )

    comfyui_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8188"],
        description="the ComfyUI servers this worker drives",
    )
    comfyui_output_dirs: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description="the output folder of each ComfyUI server this worker can read (server URL "
        "-> folder), as when it runs beside its ComfyUI with the folder shared: a job's output "
        "files are read there instead of fetched from /view (a file not there still is)",
    )
    pipeline_depth: int = Field(
        default=2,
        ge=1,
        le=8,
        description="jobs given to each ComfyUI server at once: one executing and the rest "
        "waiting in its own queue, so it starts the next the moment one ends (1: no pipelining)",
    )
    pipeline_defer_s: float = Field(
        default=0.1,
        ge=0,
        description="after new work is announced, how long a busy server waits before queueing "
        "it, so that an idle server anywhere in the fleet takes it first",
    )
    worker_id: str = Field(default_factory=default_worker_id, pattern=r"^[A-Za-z0-9_-]{1,128}$")
    models: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="serve only these models (default: all the servers can run)"
    )
    ack_wait_s: float = Field(default=30.0, gt=0, description="JetStream AckWait of work")
    heartbeat_interval_s: float = Field(
        default=5.0, gt=0, description="how often the workers KV entry is refreshed"
    )
    jobs_report_gap_s: float = Field(
        default=1.0,
        ge=0,
        description="the workers KV entry shows jobs starting and ending within this long "
        "(one write for all of them; a server coming up or draining is written at once)",
    )
    progress_interval_s: float = Field(
        default=0.5,
        ge=0,
        description="at most one progress event per job this often, the first this long after "
        "the start (a shorter run reports none)",
    )
    started_delay_s: float = Field(
        default=0.2,
        ge=0,
        description="a run's started event is sent this long after ComfyUI starts it; a run "
        "that succeeds sooner reports its start with its end (one event instead of two, and "
        "the orchestrator's work for the other spared while the outputs are being stored)",
    )
    previews: bool = Field(default=False, description="store live previews and report them")
    preview_interval_s: float = Field(default=2.0, ge=0)
    leftover_check_s: float = Field(
        default=30.0,
        gt=0,
        description="how often the servers' queues are checked for prompts a stopped worker left",
    )
    idle_poll_s: float = Field(
        default=1.0, gt=0, description="how often an idle server looks for (re)delivered work"
    )
    hold_pull_s: float = Field(
        default=1.0,
        ge=0,
        description="an idle server holds a pull request open this long on the work of the "
        "model it ran last, so that model's next job comes straight to it (0: wait for the "
        "doorbell and then ask; holding needs a pipeline_depth of 2 or more)",
    )
    health_interval_s: float = Field(default=5.0, gt=0, description="/system_stats while up")
    affinity: bool = Field(
        default=True,
        description="a free server takes work for the model files it has loaded first",
    )
    affinity_wait_s: float = Field(
        default=20.0,
        gt=0,
        description="a job of another model that has waited this long is taken first anyway",
    )
    down_retry_s: float = Field(default=1.0, gt=0, description="/system_stats while down")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="ComfyUI connect timeout")
    read_timeout_s: float = Field(default=60.0, gt=0, description="ComfyUI read timeout")
    watchdog_s: float = Field(
        default=10.0, gt=0, description="silence on the socket after which /history is checked"
    )
    upload_subfolder: str = Field(default="comfyline", pattern=r"^[A-Za-z0-9_-]+$")
    output_subfolder: str = Field(
        default="comfyline",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the folder of ComfyUI's output folder under which each run saves into a "
        "folder of its own (<this>/<job id>-<attempt>/): a save then lists only its own run's "
        "files, however many jobs the server has saved before",
    )
    keep_comfyui_outputs: bool = Field(
        default=False,
        description="keep each run's files in its ComfyUI's output folder once they are stored "
        "(by default a worker that reads that folder, WORKER_COMFYUI_OUTPUT_DIRS, removes the "
        "run's folder: ComfyUI never removes outputs itself)",
    )
    background_defer_s: float = Field(
        default=0.25,
        ge=0,
        description="how long background work (copying fresh outputs to S3, removing a run's "
        "folder) may wait for a run on this worker's servers to overlap with, instead of "
        "running beside the answer and download of the job that just ended",
    )
    fresh: FreshSettings = Field(
        default_factory=FreshSettings,
        description="small outputs kept in JetStream while fresh, so a job's end waits on no S3 "
        "upload (WORKER_FRESH__MAX_BYTES=0: every output to S3 on the job's path)",
    )
    retry_base_s: float = Field(default=2.0, ge=0, description="first nak delay of a retry")

    @field_validator("comfyui_urls", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("comfyui_output_dirs", mode="before")
    @classmethod
    def _dirs(cls, value: Any) -> Any:
        """``url=folder,url=folder`` or a JSON object."""
        if isinstance(value, str):
            if value.strip().startswith("{"):
                return json.loads(value)
            pairs = [str(part).split("=", 1) for part in _split_list(value)]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("comfyui_output_dirs takes url=folder pairs, comma-separated")
            return {url.strip(): folder.strip() for url, folder in pairs}
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        return None if value is None or value == "" else _split_list(value)

    @field_validator("comfyui_urls")
    @classmethod
    def _strip(cls, value: list[str]) -> list[str]:
        urls = [url.rstrip("/") for url in value]
        if len(set(urls)) != len(urls):
            raise ValueError("comfyui_urls lists a server twice")
        return urls

    @model_validator(mode="after")
    def _need_a_server(self) -> Settings:
        if not self.comfyui_urls:
            raise ValueError("comfyui_urls is empty: give at least one ComfyUI server")
        self.comfyui_output_dirs = {
            url.rstrip("/"): folder for url, folder in self.comfyui_output_dirs.items()
        }
        unknown = sorted(set(self.comfyui_output_dirs) - set(self.comfyui_urls))
        if unknown:
            raise ValueError(f"comfyui_output_dirs names servers not in comfyui_urls: {unknown}")
        return self
