"""A worker beside its ComfyUI reads output files from the shared output folder: the setting's
forms, and which files it reads there (the rest still go through /view); each run saves into a
folder of its own, which the worker removes once its files are stored."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyline.worker.comfy_client import ComfyClient
from comfyline.worker.folders import remove_run_folders, run_folder, saving_into
from comfyline.worker.settings import Settings

URL = "http://127.0.0.1:8188"


def test_output_folders_take_pairs_or_json_and_only_known_servers() -> None:
    pairs = Settings(comfyui_urls=f"{URL},http://b:1", comfyui_output_dirs=f"{URL}/=/data/out")
    assert pairs.comfyui_output_dirs == {URL: Path("/data/out")}
    as_json = Settings(comfyui_urls=URL, comfyui_output_dirs=f'{{"{URL}": "/x"}}')
    assert as_json.comfyui_output_dirs == {URL: Path("/x")}
    assert Settings(comfyui_urls=URL).comfyui_output_dirs == {}
    with pytest.raises(ValidationError, match="not in comfyui_urls"):
        Settings(comfyui_urls=URL, comfyui_output_dirs="http://elsewhere:8188=/x")
    with pytest.raises(ValidationError, match="url=folder pairs"):
        Settings(comfyui_urls=URL, comfyui_output_dirs="/just/a/folder")


def test_only_output_files_inside_the_folder_are_read_there(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "comfyline").mkdir(parents=True)
    (out / "comfyline" / "a_00001_.png").write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("not an output")
    client = ComfyClient(URL, output_dir=out)
    found = client._in_output_dir("a_00001_.png", "comfyline", "output")
    assert found == (out / "comfyline" / "a_00001_.png").resolve()
    assert client._in_output_dir("a_00001_.png", "comfyline", "temp") is None  # /view's
    assert client._in_output_dir("missing.png", "comfyline", "output") is None  # /view's
    assert client._in_output_dir("secret.txt", "..", "output") is None  # outside the folder
    assert client._in_output_dir("../../secret.txt", "comfyline", "output") is None
    assert ComfyClient(URL)._in_output_dir("a_00001_.png", "comfyline", "output") is None


async def test_a_file_is_read_whole_in_chunks_of_the_size_asked(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    data = bytes(range(256)) * 40  # 10240 bytes
    (tmp_path / "v" / "big.mp4").write_bytes(data)
    (tmp_path / "v" / "small.png").write_bytes(data[:100])
    client = ComfyClient(URL, output_dir=tmp_path)
    async with client.view("big.mp4", "v", "output", chunk_size=4096) as body:
        chunks = [chunk async for chunk in body]
    assert [len(c) for c in chunks] == [4096, 4096, 2048] and b"".join(chunks) == data
    async with client.view("small.png", "v", "output", chunk_size=4096) as body:
        assert [chunk async for chunk in body] == [data[:100]]


def test_every_save_of_a_run_goes_into_the_run_folder_and_nothing_else_changes() -> None:
    folder = run_folder("comfyline", "job_1", 2)
    assert folder == "comfyline/job_1-2"
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "comfyline/txt2img"}},
        "4": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/clip_%year%"}},
        "5": {"class_type": "SaveImage", "inputs": {"filename_prefix": ""}},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": "../../../etc/x"}},
        "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "/abs/y"}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": ".."}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": ["10", 0]}},  # a link
    }
    before = copy.deepcopy(graph)
    moved = saving_into(graph, folder, "comfyline")
    assert graph == before, "the graph given is left as it is"
    prefixes = {k: v["inputs"].get("filename_prefix") for k, v in moved.items()}
    assert prefixes == {
        "1": None,
        "2": "comfyline/job_1-2/a",
        "3": "comfyline/job_1-2/txt2img",  # the root is not repeated
        "4": "comfyline/job_1-2/video/clip_%year%",  # its subfolders and variables kept
        "5": "comfyline/job_1-2/ComfyUI",  # ComfyUI's own default name
        "6": "comfyline/job_1-2/x",  # never out of the run's folder
        "7": "comfyline/job_1-2/abs/y",
        "8": "comfyline/job_1-2/ComfyUI",
        "9": ["10", 0],
    }
    assert moved["2"]["inputs"]["images"] == ["1", 0] and moved["1"] is graph["1"]


def test_a_jobs_run_folders_are_removed_and_nothing_else(tmp_path: Path) -> None:
    for name in ("job_1-1", "job_1-2", "job_1-3", "job_12-1", "other"):
        (tmp_path / "comfyline" / name / "sub").mkdir(parents=True)
        (tmp_path / "comfyline" / name / "sub" / "a_00001_.png").write_bytes(b"png")
    remove_run_folders(tmp_path, "comfyline", "job_1", 2)
    left = sorted(p.name for p in (tmp_path / "comfyline").iterdir())
    assert left == ["job_1-3", "job_12-1", "other"]  # a later attempt's is not this run's
    remove_run_folders(tmp_path, "comfyline", "job_404", 3)  # none: nothing happens
    assert len(list((tmp_path / "comfyline").iterdir())) == 3
