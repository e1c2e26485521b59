"""``comfyline admin``: operate the fleet through the gateway's admin routes, with an admin key.

::

    comfyline admin workers                    # the live workers
    comfyline admin workers show gpu-box-1
    comfyline admin workers drain gpu-box-1 --reason "driver update"
    comfyline admin workers resume gpu-box-1
    comfyline admin models publish solid-color.json   # a workflow as a model
    comfyline admin models pause txt2img-sdxl --reason "new checkpoint"
    comfyline admin models resume txt2img-sdxl
    comfyline admin dead-letters [--model M]
    comfyline admin dead-letters retry job_...

(``python -m comfyline.gateway admin ...`` is the same app, for a gateway host without the
``comfyline`` command.)

The gateway is ``--url`` (``COMFYLINE_URL``, else ``gateway_url`` of ``--stack`` = the
``stack.json`` that ``comfyline up`` writes) and the key ``--key`` (``COMFYLINE_API_KEY``, else
the stack's ``api_key``). ``app`` is a Typer app; the ``comfyline`` command mounts it as
``admin``. Output is the API's JSON; errors print the API's error body and
exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

app = typer.Typer(help="Operate the fleet (admin key): workers, model pauses, dead letters.")
workers_app = typer.Typer(
    help="Live workers: list, show, drain, resume.", invoke_without_command=True
)
models_app = typer.Typer(help="Publish workflows as models; pause and resume a model's queue.")
letters_app = typer.Typer(help="Jobs that ran out of deliveries.", invoke_without_command=True)
app.add_typer(workers_app, name="workers")
app.add_typer(models_app, name="models")
app.add_typer(letters_app, name="dead-letters")

Url = Annotated[str | None, typer.Option("--url", envvar="COMFYLINE_URL", help="the gateway")]
Key = Annotated[str | None, typer.Option("--key", envvar="COMFYLINE_API_KEY", help="admin key")]
Stack = Annotated[
    Path, typer.Option("--stack", help="stack.json of `comfyline up` (url and key from it)")
]
Reason = Annotated[str, typer.Option("--reason", help="shown to other admins and on jobs")]
DEFAULT_STACK = Path(".comfyline/stack.json")


def _target(url: str | None, key: str | None, stack: Path) -> tuple[str, str]:
    if (url is None or key is None) and stack.exists():
        info = json.loads(stack.read_text())
        url = url or info.get("gateway_url")
        key = key or info.get("api_key")
    if not url or not key:
        raise typer.BadParameter("give --url and --key (or COMFYLINE_URL, COMFYLINE_API_KEY)")
    return url.rstrip("/"), key


def _call(ctx: typer.Context, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    url, key = ctx.obj
    try:
        response = httpx.request(
            method,
            f"{url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach {url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if response.is_error:
        typer.echo(response.text, err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(response.json(), indent=2))


@app.callback()
def _admin(
    ctx: typer.Context, url: Url = None, key: Key = None, stack: Stack = DEFAULT_STACK
) -> None:
    """Operate the fleet."""
    ctx.obj = _target(url, key, stack)


@workers_app.callback()
def list_workers(ctx: typer.Context) -> None:
    """Every live worker: state, servers, loaded models, current jobs, jobs done and failed."""
    if ctx.invoked_subcommand is None:
        _call(ctx, "GET", "/v1/workers")


@workers_app.command("show")
def show_worker(ctx: typer.Context, worker_id: str) -> None:
    """One live worker."""
    _call(ctx, "GET", f"/v1/workers/{worker_id}")


@workers_app.command("drain")
def drain_worker(ctx: typer.Context, worker_id: str, reason: Reason = "") -> None:
    """Finish the running jobs, take no more (the queue moves to other workers)."""
    _call(ctx, "POST", f"/v1/workers/{worker_id}/drain", {"reason": reason})


@workers_app.command("resume")
def resume_worker(ctx: typer.Context, worker_id: str) -> None:
    """Take work again."""
    _call(ctx, "POST", f"/v1/workers/{worker_id}/resume")


@models_app.command("publish")
def publish_model(
    ctx: typer.Context,
    spec: Annotated[
        Path,
        typer.Argument(
            help="JSON: name, title, description, kind, workflow (API format), parameters "
            "(JSON Schema), bindings ([{param, node, input}])"
        ),
    ],
) -> None:
    """Publish a workflow as the next version of a catalogue model (checked against the fleet)."""
    try:
        body = json.loads(spec.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read {spec}: {exc}", err=True)
        raise typer.Exit(1) from exc
    _call(ctx, "POST", "/v1/models", body)


@models_app.command("pause")
def pause_model(ctx: typer.Context, model: str, reason: Reason = "") -> None:
    """Keep the model's jobs queued (they say model_paused) until resumed."""
    _call(ctx, "POST", f"/v1/models/{model}/pause", {"reason": reason})


@models_app.command("resume")
def resume_model(ctx: typer.Context, model: str) -> None:
    """Dispatch the model's queued jobs again."""
    _call(ctx, "POST", f"/v1/models/{model}/resume")


@letters_app.callback()
def list_dead_letters(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="one model's only")] = None,
) -> None:
    """Dead letters, newest first."""
    if ctx.invoked_subcommand is None:
        _call(ctx, "GET", "/v1/dead-letters" + (f"?model={model}" if model else ""))


@letters_app.command("retry")
def retry_dead_letter(ctx: typer.Context, job_id: str) -> None:
    """Submit the job again as a new job that names the one it retries."""
    _call(ctx, "POST", f"/v1/dead-letters/{job_id}/retry")
