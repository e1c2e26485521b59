"""Each run's own folder in its ComfyUI's output folder.

A ComfyUI save node finds its next file name by listing the folder it writes to and parsing
every name there (``get_save_image_path``), and ComfyUI never removes an output. A server that
saves every job into one folder therefore pays for all the jobs before it on each save: about
3.5 ms per save with 1,000 files in the folder and 30 ms with 10,000, on the CPU, while the GPU
waits. The worker points every ``filename_prefix`` of the graph it sends into a folder of that
run alone (``<root>/<job id>-<attempt>/``), so a save lists a new, empty folder whatever the
server has run before; and a worker that reads the server's output folder (it runs beside its
ComfyUI, ``WORKER_COMFYUI_OUTPUT_DIRS``) removes the run's folder once its files are in S3
(unless ``WORKER_KEEP_COMFYUI_OUTPUTS``), so the server's disk holds only what is running.

The attempt is part of the name: a retry's save nodes get other inputs than the attempt before
(whose files may already be gone), so ComfyUI's cache cannot answer them with those files;
the nodes upstream of the saves are still cached as before.
"""

from __future__ import annotations

import posixpath
import shutil
from pathlib import Path
from typing import Any

#: The input every ComfyUI save node names its files by (images, video, audio, latents, ...).
PREFIX_INPUT = "filename_prefix"
#: ComfyUI's own default prefix, for a save node whose prefix is empty.
DEFAULT_PREFIX = "ComfyUI"


def run_folder(root: str, job_id: str, attempt: int) -> str:
    """Where one attempt of a job saves, under its ComfyUI's output folder."""
    return f"{root}/{job_id}-{attempt}"


def saving_into(graph: dict[str, Any], folder: str, root: str) -> dict[str, Any]:
    """``graph`` with each literal ``filename_prefix`` moved under ``folder`` (the nodes that
    change are copied; the graph given is left as it is). A prefix keeps its own subfolders and
    name (``video/clip`` saves as ``<folder>/video/clip_00001_.mp4``), less a leading
    ``<root>/``; one that would leave ``folder`` (``..``) keeps only its name."""
    moved: dict[str, Any] = {}
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if isinstance(inputs, dict) and isinstance(prefix := inputs.get(PREFIX_INPUT), str):
            node = {**node, "inputs": {**inputs, PREFIX_INPUT: _inside(folder, prefix, root)}}
        moved[node_id] = node
    return moved


def _inside(folder: str, prefix: str, root: str) -> str:
    rest = prefix.removeprefix(f"{root}/")
    path = posixpath.normpath(f"{folder}/{rest}")
    if not path.startswith(f"{folder}/"):
        name = posixpath.basename(posixpath.normpath(rest)) if rest.strip("/.") else ""
        path = f"{folder}/{name if name not in ('', '.', '..') else DEFAULT_PREFIX}"
    return path


def remove_run_folders(output_dir: Path, root: str, job_id: str, attempts: int) -> None:
    """Remove the job's run folders of attempts 1 to ``attempts`` from ``output_dir`` (an
    earlier attempt's prompt may have run on after its worker stopped), best effort. On the
    calling thread: a run's folder holds a few files (about 0.1 ms here; a thread's hand-off
    cost twice that)."""
    for attempt in range(1, attempts + 1):
        path = output_dir / run_folder(root, job_id, attempt)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
