"""The blocking client: ``Client().run("cpu-smoke", {"width": 256})``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from .core import (
    RETRY_STATUSES,
    Asset,
    ComfylineError,
    ConnectionFailed,
    Event,
    Job,
    JobFailed,
    Retry,
    SseParser,
    Target,
    error_of,
    filename_for,
    job_body,
    job_query,
    new_idempotency_key,
    parse_event,
)

OnEvent = Callable[[Event], None]


class Client:
    """Comfyline's API from Python. The gateway and key come from the arguments, else
    ``COMFYLINE_URL`` / ``COMFYLINE_API_KEY``, else the local stack's ``stack.json``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        stack: Path | None = None,
        retry: Retry | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.target = Target.find(base_url, api_key, stack)
        self.retry = retry or Retry()
        self._http = httpx.Client(
            base_url=self.target.base_url,
            headers={"Authorization": f"Bearer {self.target.api_key}"},
            timeout=httpx.Timeout(timeout_s, connect=5.0),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, retried on 429/503 (after ``Retry-After``) and on a failed connection."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retry.attempts:
                    raise ConnectionFailed(self.target.base_url, exc) from exc
                delay = self.retry.delay(attempt, None)
                self.retry.notify(attempt, delay, type(exc).__name__)
                time.sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retry.attempts:
                delay = self.retry.delay(attempt, response)
                self.retry.notify(attempt, delay, f"{response.status_code}")
                time.sleep(delay)
                continue
            error = error_of(response)
            if error is not None:
                raise error
            return response

    # -- jobs ---------------------------------------------------------------------------------

    def submit(
        self,
        model: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait_s: float | None = None,
        **options: Any,
    ) -> Job:
        """Submit a job (an idempotency key is made when none is given, so retries are safe).
        ``wait_s`` holds the answer up to that long for the job to end (``Prefer: wait``)."""
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        if wait_s:
            headers["Prefer"] = f"wait={int(wait_s)}"
        body = job_body(model, input, options)
        return Job.model_validate(
            self.request("POST", "/v1/jobs", json=body, headers=headers).json()
        )

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self.request("GET", f"/v1/jobs/{job_id}").json())

    def jobs(
        self, *, status: str | None = None, model: str | None = None, limit: int | None = None
    ) -> list[Job]:
        """The caller's jobs, newest first."""
        page = self.request("GET", "/v1/jobs", params=job_query(status, model, limit)).json()
        return [Job.model_validate(item) for item in page["data"]]

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self.request("DELETE", f"/v1/jobs/{job_id}").json())

    def events(self, job_id: str, last_event_id: int | None = None) -> Iterator[Event]:
        """The job's events until it ends; a dropped stream is resumed with ``Last-Event-ID``,
        so no event is lost or repeated."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30.0, connect=5.0, read=60.0),
                ) as response:
                    if response.status_code == 204:
                        return  # ended, and nothing after last_event_id
                    if response.is_error:
                        response.read()
                        if response.status_code not in RETRY_STATUSES:
                            raise ComfylineError.from_response(response)
                        raise httpx.RemoteProtocolError(f"{response.status_code}")
                    parser = SseParser()
                    for line in response.iter_lines():
                        for kind, _, data in parser.feed(line):
                            event = parse_event(kind, data)
                            if event is None:
                                continue
                            failures = 0
                            last_event_id = event.seq
                            yield event
                            if event.terminal:
                                return
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise ConnectionFailed(self.target.base_url, exc) from exc
                delay = self.retry.delay(failures, None)
                self.retry.notify(failures, delay, f"event stream: {type(exc).__name__}")
                time.sleep(delay)

    def wait(
        self, job_id: str, *, timeout_s: float | None = None, on_event: OnEvent | None = None
    ) -> Job:
        """Follow the job until it ends (or ``timeout_s`` passes) and return its last state."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for event in self.events(job_id):
            if on_event is not None:
                on_event(event)
            if deadline is not None and time.monotonic() > deadline:
                raise ComfylineError(0, "timeout", f"job {job_id} still {event.status}")
        return self.get(job_id)

    def run(
        self,
        model: str,
        input: Mapping[str, Any] | None = None,
        *,
        on_event: OnEvent | None = None,
        timeout_s: float | None = None,
        **options: Any,
    ) -> Job:
        """Submit and wait; raises :class:`JobFailed` unless the job succeeds."""
        job = self.submit(model, input, **options)
        if not job.done:
            job = self.wait(job.id, timeout_s=timeout_s, on_event=on_event)
        if not job.succeeded:
            raise JobFailed(job)
        return job

    def download(self, job: Job, directory: Path) -> list[Path]:
        """Save every output of ``job`` into ``directory``; the paths written."""
        directory.mkdir(parents=True, exist_ok=True)
        saved = []
        for output in job.outputs:
            path = directory / filename_for(job, output)
            with self._http.stream("GET", output.content_url) as response:
                if response.is_error:
                    response.read()
                    raise ComfylineError.from_response(response)
                with path.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
            saved.append(path)
        return saved

    # -- assets, models, keys, status ---------------------------------------------------------

    def upload(
        self, file: Path | bytes, filename: str | None = None, content_type: str | None = None
    ) -> Asset:
        """Upload an image, audio or video file; use the returned ``id`` in a job's input."""
        data = file.read_bytes() if isinstance(file, Path) else file
        name = filename or (file.name if isinstance(file, Path) else "upload")
        part = (name, data, content_type) if content_type else (name, data)
        response = self.request("POST", "/v1/assets", files={"file": part})
        return Asset.model_validate(response.json())

    def assets(self, source: str = "all") -> list[Asset]:
        page = self.request("GET", "/v1/assets", params={"source": source}).json()
        return [Asset.model_validate(item) for item in page["data"]]

    def models(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.request("GET", "/v1/models").json()["data"]
        return data

    def model(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", f"/v1/models/{name}").json()
        return found

    def keys(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.request("GET", "/v1/keys").json()["data"]
        return data

    def create_key(self, name: str = "", **fields: Any) -> dict[str, Any]:
        """A new key; its ``secret`` is shown this once."""
        made: dict[str, Any] = self.request(
            "POST", "/v1/keys", json={"name": name, **fields}
        ).json()
        return made

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        revoked: dict[str, Any] = self.request("DELETE", f"/v1/keys/{key_id}").json()
        return revoked

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.request("GET", "/v1/status").json()
        return found
