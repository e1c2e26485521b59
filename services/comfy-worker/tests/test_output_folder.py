"""A worker beside its ComfyUI reads output files from the shared output folder: the setting's
forms, and which files it reads there (the rest still go through /view)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyline.worker.comfy_client import ComfyClient
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
