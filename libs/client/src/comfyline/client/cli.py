"""The ``comfyline`` command line: run models, follow jobs, manage uploads and keys.

The gateway and key come from ``--url`` / ``--key``, else ``COMFYLINE_URL`` /
``COMFYLINE_API_KEY``, else the ``stack.json`` that ``comfyline up`` writes (``--stack``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from .admin_cli import app as admin_app
from .core import DEFAULT_STACK, ComfylineError, ConnectionFailed, Event, Job, JobFailed
from .sync import Client

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job ended failed, cancelled or timed out
EXIT_USAGE = 2  # a command line mistake (typer's own code)
EXIT_API_ERROR = 3  # the gateway refused the request (its code is printed)
EXIT_UNREACHABLE = 4  # no gateway configured, or it could not be reached

EPILOG = (
    "Exit codes: 0 done; 1 the job failed, was cancelled or timed out; 2 bad command line; "
    "3 the gateway refused (its error code is printed); 4 no gateway or it cannot be reached."
)

app = typer.Typer(
    help="Comfyline from a terminal: run a model and save its outputs, follow and cancel jobs, "
    "upload inputs, list models, manage API keys.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
)
jobs_app = typer.Typer(help="Your jobs: list, show, watch, cancel.", no_args_is_help=True)
models_app = typer.Typer(help="The models you can run.", no_args_is_help=True)
assets_app = typer.Typer(help="Files you uploaded (use their id as a job input).")
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(assets_app, name="assets", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(admin_app, name="admin", no_args_is_help=True)

out = Console()
err = Console(stderr=True)


class Options:
    """The connection options of the whole command line, given before the subcommand."""

    url: str | None = None
    key: str | None = None
    stack: Path | None = None
    as_json: bool = False


options = Options()


@app.callback()
def _global(
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="COMFYLINE_URL", help="The gateway, e.g. http://host:8000."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", envvar="COMFYLINE_API_KEY", help="Your API key.", show_default=False),
    ] = None,
    stack: Annotated[
        Path | None,
        typer.Option(
            "--stack",
            envvar="COMFYLINE_STACK",
            help=f"stack.json of a local stack (default {DEFAULT_STACK}); gives url and key.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON instead of tables.")
    ] = False,
) -> None:
    options.url, options.key, options.stack, options.as_json = url, key, stack, as_json


@contextmanager
def client() -> Iterator[Client]:
    """A client for the configured gateway; API errors become messages and exit codes."""
    try:
        with Client(options.url, options.key, stack=options.stack) as made:
            yield made
    except JobFailed as exc:
        err.print(f"[red]job {exc.job.id} {exc.job.status}[/]: {exc.code}: {exc.message}")
        raise typer.Exit(EXIT_JOB_FAILED) from None
    except ConnectionFailed as exc:
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except ComfylineError as exc:
        if exc.status == 0:
            err.print(f"[red]{exc.message}[/]")
            raise typer.Exit(EXIT_UNREACHABLE) from None
        err.print(f"[red]error {exc.status} {exc.code}[/]: {exc.message}")
        if exc.details:
            err.print(json.dumps(exc.details, indent=2))
        raise typer.Exit(EXIT_API_ERROR) from None


def emit(data: Any, table: Callable[[], Table] | None = None) -> None:
    """``--json``: the data as JSON; otherwise the table (or the JSON when there is none)."""
    if options.as_json or table is None:
        out.print_json(json.dumps(data, default=str))
    else:
        out.print(table())


def parse_value(text: str) -> Any:
    """``256`` is a number, ``true`` a boolean, ``[1,2]`` a list; anything else is a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def pairs(items: list[str], what: str) -> dict[str, str]:
    found = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: write {what} as name=value")
        found[name] = value
    return found


# -- run ------------------------------------------------------------------------------------


class ProgressView:
    """A live bar: percent, the node running, elapsed time; the status while queued."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress = progress
        self.task = task

    def __call__(self, event: Event) -> None:
        percent = float((event.progress or {}).get("percent") or 0)
        node = (event.progress or {}).get("node_type")
        label = event.status
        if event.status == "queued" and event.queue_position is not None:
            label = f"queued (position {event.queue_position})"
        elif node:
            label = f"{event.status}: {node}"
        if event.status == "succeeded":
            percent = 100.0
        self.progress.update(self.task, completed=percent, description=label)


def follow(api: Client, job: Job, timeout_s: float | None = None) -> Job:
    """Show the job's progress until it ends."""
    if job.done:
        return job
    columns = (
        TextColumn("{task.fields[job]}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task(job.status, total=100, job=job.id)
        return api.wait(job.id, timeout_s=timeout_s, on_event=ProgressView(progress, task))


@app.command(epilog=EPILOG)
def run(
    model: Annotated[str, typer.Argument(help="The model to run (see `comfyline models ls`).")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "-p", "--param", help="An input parameter, name=value (repeatable); JSON values parsed."
        ),
    ] = None,
    input_file: Annotated[
        list[str] | None,
        typer.Option(
            "--input", help="A file input, name=PATH (repeatable): uploaded, then passed by id."
        ),
    ] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Where the outputs are saved.")
    ] = Path("."),
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Submit, print the job id, do not wait.")
    ] = False,
    timeout_s: Annotated[
        float | None, typer.Option("--timeout", help="Give up waiting after this many seconds.")
    ] = None,
) -> None:
    """Run MODEL with the given parameters, show its progress, save its outputs to --out.

    Example: comfyline run cpu-smoke -p width=256 -p height=128 --out out/
    """
    values: dict[str, Any] = {k: parse_value(v) for k, v in pairs(param or [], "-p").items()}
    files = {name: Path(path) for name, path in pairs(input_file or [], "--input").items()}
    for name, path in files.items():
        if not path.is_file():
            raise typer.BadParameter(f"--input {name}: {path} is not a file")
    with client() as api:
        for name, path in files.items():
            asset = api.upload(path)
            err.print(f"uploaded {path} as {asset.id}")
            values[name] = asset.id
        job = api.submit(model, values)
        if no_wait:
            out.print(job.id)
            return
        started = time.monotonic()
        job = follow(api, job, timeout_s)
        if not job.succeeded:
            raise JobFailed(job)
        saved = api.download(job, out_dir)
        err.print(f"[green]{job.id} succeeded[/] in {time.monotonic() - started:.1f} s")
        for path in saved:
            out.print(str(path))


# -- jobs -----------------------------------------------------------------------------------


def jobs_table(jobs: list[Job]) -> Table:
    table = Table("id", "model", "status", "created", "outputs", box=None)
    for job in jobs:
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(job.id, job.model, job.status, created, str(len(job.outputs)))
    return table


@jobs_app.command("ls")
def jobs_ls(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """Your jobs, newest first."""
    with client() as api:
        jobs = api.jobs(status=status, model=model, limit=limit)
    emit([j.model_dump(mode="json") for j in jobs], lambda: jobs_table(jobs))


@jobs_app.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """One job, as the API shows it."""
    with client() as api:
        emit(api.get(job_id).model_dump(mode="json"))


@jobs_app.command("watch")
def jobs_watch(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Show a job's progress until it ends; exit 1 unless it succeeds."""
    with client() as api:
        job = follow(api, api.get(job_id))
        if not job.succeeded:
            raise JobFailed(job)
        err.print(f"[green]{job.id} succeeded[/]")


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="The job's id.")]) -> None:
    """Cancel a queued or running job."""
    with client() as api:
        job = api.cancel(job_id)
    err.print(f"{job.id}: {job.status}")


# -- models, assets, keys, status -----------------------------------------------------------


@models_app.command("ls")
def models_ls() -> None:
    """Every model: name, kind, whether a worker serves it now."""
    with client() as api:
        models = api.models()

    def table() -> Table:
        view = Table("name", "kind", "title", "available", box=None)
        for m in models:
            available = (m.get("availability") or {}).get("available")
            ready = "yes" if available else "no"
            view.add_row(m["name"], str(m.get("kind", "")), str(m.get("title", "")), ready)
        return view

    emit(models, table)


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="The model's name.")]) -> None:
    """One model with its parameter schema."""
    with client() as api:
        emit(api.model(name))


@assets_app.command("upload")
def assets_upload(
    path: Annotated[Path, typer.Argument(help="An image, audio or video file.", exists=True)],
) -> None:
    """Upload a file; prints its id, to use as a job input."""
    with client() as api:
        asset = api.upload(path)
    if options.as_json:
        emit(asset.model_dump(mode="json"))
    else:
        out.print(asset.id)


@assets_app.command("ls")
def assets_ls(
    source: Annotated[str, typer.Option(help="all, upload or output.")] = "all",
) -> None:
    """Your uploads and outputs, newest first."""
    with client() as api:
        assets = api.assets(source)

    def table() -> Table:
        view = Table("id", "type", "size", "filename", box=None)
        for a in assets:
            view.add_row(a.id, a.content_type or "", str(a.size), a.filename or "")
        return view

    emit([a.model_dump(mode="json") for a in assets], table)


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Option(help="A label for the key.")] = "") -> None:
    """Create a key; its secret is printed this once."""
    with client() as api:
        made = api.create_key(name)
    if options.as_json:
        emit(made)
    else:
        err.print(
            f"key {made['key']['key_id']} created; store its secret now, it is not shown again:"
        )
        out.print(made["secret"])


@keys_app.command("ls")
def keys_ls() -> None:
    """Your keys (never their secrets)."""
    with client() as api:
        keys = api.keys()

    def table() -> Table:
        view = Table("id", "name", "role", "created", "revoked", box=None)
        for k in keys:
            row = (k["key_id"], k["name"], k["role"], k["created_at"], k.get("revoked_at"))
            view.add_row(*(str(v or "") for v in row))
        return view

    emit(keys, table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke a key; it stops working at once."""
    with client() as api:
        api.revoke_key(key_id)
    err.print(f"{key_id} revoked")


@app.command()
def status() -> None:
    """The fleet: per model availability and backlog, running jobs, live workers."""
    with client() as api:
        emit(api.status())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit code."""
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="comfyline")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    return EXIT_OK
