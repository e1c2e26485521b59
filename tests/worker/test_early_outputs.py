"""A run's outputs stored as it reports them (``RunOutputs``), against the real S3 server:
what was stored early is kept only where the finished run has the same file at the same place,
and nothing stored for a run that did not succeed is left behind. The files come from a shared
output folder, so no ComfyUI is needed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from comfyline.contracts import OutputKind, OutputSpec, RunJob
from comfyline.runtime import ObjectStore
from comfyline.worker.comfy_client import ComfyClient
from comfyline.worker.outputs import RunOutputs
from comfyline.worker.tracker import OutputFile

from .helpers import make_job

SPECS = [OutputSpec(node="a", kind=OutputKind.IMAGE), OutputSpec(node="b", kind=OutputKind.IMAGE)]


def setup(tmp_path: Path, store: ObjectStore) -> tuple[RunOutputs, RunJob, OutputFile, OutputFile]:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG first")
    (folder / "b.png").write_bytes(b"\x89PNG second, longer")
    run_job = make_job("early", {})
    client = ComfyClient("http://127.0.0.1:9", output_dir=folder)  # never reached
    a = OutputFile("a", "images", "a.png", "", "output")
    b = OutputFile("b", "images", "b.png", "", "output")
    return RunOutputs(client, store, run_job, SPECS), run_job, a, b


def keys(store: ObjectStore, prefix: str) -> list[str]:
    found = store.client.list_objects(store.bucket, prefix=prefix, recursive=True)
    return sorted(o.object_name or "" for o in found)


async def test_files_stored_early_are_kept_at_their_places(
    tmp_path: Path, store: ObjectStore
) -> None:
    outputs, run_job, a, b = setup(tmp_path, store)
    outputs.reported([a])
    outputs.reported([a])  # the same again starts nothing new
    outputs.reported([a, b])
    refs = await outputs.stored([a, b])
    assert [(r.index, r.node_id, r.key) for r in refs] == [
        (0, "a", f"{run_job.output_prefix}0.png"),
        (1, "b", f"{run_job.output_prefix}1.png"),
    ]
    assert await store.get_bytes(refs[0].key) == b"\x89PNG first"
    assert await store.get_bytes(refs[1].key) == b"\x89PNG second, longer"


async def test_a_place_taken_by_another_file_at_the_end_is_stored_again(
    tmp_path: Path, store: ObjectStore
) -> None:
    """Stored early as output 0, ``a`` is output 1 of the finished run: 0 is written again
    with ``b`` (once the early PUT is done), and each key holds its own file."""
    outputs, run_job, a, b = setup(tmp_path, store)
    outputs.reported([a])
    refs = await outputs.stored([b, a])
    assert [(r.index, r.node_id, r.size) for r in refs] == [(0, "b", 19), (1, "a", 10)]
    assert await store.get_bytes(f"{run_job.output_prefix}0.png") == b"\x89PNG second, longer"
    assert await store.get_bytes(f"{run_job.output_prefix}1.png") == b"\x89PNG first"


async def test_a_place_whose_file_changed_kind_keeps_no_object_of_the_first(
    tmp_path: Path, store: ObjectStore
) -> None:
    outputs, run_job, a, _ = setup(tmp_path, store)
    (tmp_path / "out" / "c.mp4").write_bytes(b"not really a video")
    c = OutputFile("b", "images", "c.mp4", "", "output")
    outputs.reported([a])
    refs = await outputs.stored([c])
    assert [r.key for r in refs] == [f"{run_job.output_prefix}0.mp4"]
    assert await asyncio.to_thread(keys, store, run_job.output_prefix) == [refs[0].key]


async def test_what_the_finished_run_does_not_have_is_deleted(
    tmp_path: Path, store: ObjectStore
) -> None:
    outputs, run_job, a, b = setup(tmp_path, store)
    outputs.reported([a, b])
    refs = await outputs.stored([a])
    assert [r.key for r in refs] == [f"{run_job.output_prefix}0.png"]
    assert await asyncio.to_thread(keys, store, run_job.output_prefix) == [refs[0].key]


async def test_a_run_that_did_not_succeed_leaves_nothing_stored(
    tmp_path: Path, store: ObjectStore
) -> None:
    outputs, run_job, a, b = setup(tmp_path, store)
    outputs.reported([a, b])
    await asyncio.sleep(0.5)  # both stored by now
    await outputs.discard()
    assert await asyncio.to_thread(keys, store, run_job.output_prefix) == []
    outputs.reported([a])
    await outputs.discard()  # at once: cancelled while storing, or deleted after
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(keys, store, run_job.output_prefix) == []
