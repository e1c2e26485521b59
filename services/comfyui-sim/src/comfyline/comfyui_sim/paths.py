"""The input/, output/ and temp/ folders, and ComfyUI's rules for naming and finding files in them.

These mirror ComfyUI's `folder_paths` helpers (`get_save_image_path`, `annotated_filepath`), so
file names, counters and subfolders come out exactly as the real save nodes report them.
"""

from __future__ import annotations

import mimetypes
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

mimetypes.add_type("image/webp", ".webp")
mimetypes.add_type("audio/flac", ".flac")
mimetypes.add_type("audio/ogg", ".opus")
mimetypes.add_type("video/webm", ".webm")

VIDEO_EXTENSIONS = ("webm", "mp4", "mkv", "gif", "mov")


class SavePathError(Exception):
    """A filename prefix that points outside its folder."""


@dataclass(frozen=True)
class DataDirs:
    """The three folders ComfyUI reads and writes, under one root."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    @classmethod
    def create(cls, root: Path | None) -> DataDirs:
        """Make the folders; temp/ is emptied, as ComfyUI does at start-up."""
        base = Path(tempfile.mkdtemp(prefix="comfyui-sim-")) if root is None else root
        dirs = cls(base.resolve())
        for folder in (dirs.input, dirs.output):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dirs.temp, ignore_errors=True)
        dirs.temp.mkdir(parents=True, exist_ok=True)
        return dirs

    def by_type(self, kind: str | None) -> Path | None:
        """`get_directory_by_type`: input, output or temp; anything else is None."""
        return {"input": self.input, "output": self.output, "temp": self.temp}.get(kind or "")

    def annotated(self, name: str) -> tuple[str, Path | None]:
        """`annotated_filepath`: strip a trailing ` [output]`, ` [input]` or ` [temp]`."""
        for tag, folder in (
            ("[output]", self.output),
            ("[input]", self.input),
            ("[temp]", self.temp),
        ):
            if name.endswith(tag):
                return name[: -(len(tag) + 1)], folder
        return name, None

    def input_file(self, name: str) -> Path:
        """Where an input name (maybe `sub/name.png`, maybe annotated) lives on disk."""
        plain, folder = self.annotated(name)
        return (folder or self.input) / plain

    def input_exists(self, name: object) -> bool:
        """`exists_annotated_filepath`, as LoadImage's VALIDATE_INPUTS uses it."""
        if not isinstance(name, str):
            raise TypeError(f"expected a file name, got {type(name).__name__}")
        return self.input_file(name).exists()

    def input_files(self, kinds: tuple[str, ...]) -> list[str]:
        """Top-level input files whose guessed content type starts with one of `kinds`."""
        try:
            names = [p.name for p in self.input.iterdir() if p.is_file()]
        except FileNotFoundError:
            return []
        picked = []
        for name in names:
            guessed = mimetypes.guess_type(name)[0] or ""
            if guessed.split("/")[0] in kinds:
                picked.append(name)
        return sorted(picked)

    def input_videos(self) -> list[str]:
        try:
            names = [p.name for p in self.input.iterdir() if p.is_file()]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS)


@dataclass(frozen=True)
class SaveTarget:
    """Where a save node writes: folder, base file name, first free counter, reported subfolder."""

    folder: Path
    filename: str
    counter: int
    subfolder: str


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for key, value in (
        ("%width%", width),
        ("%height%", height),
        ("%year%", now.tm_year),
        ("%month%", f"{now.tm_mon:02}"),
        ("%day%", f"{now.tm_mday:02}"),
        ("%hour%", f"{now.tm_hour:02}"),
        ("%minute%", f"{now.tm_min:02}"),
        ("%second%", f"{now.tm_sec:02}"),
    ):
        prefix = prefix.replace(key, str(value))
    return prefix


def save_target(prefix: str, base: Path, width: int = 0, height: int = 0) -> SaveTarget:
    """`get_save_image_path`: split a prefix like `video/ComfyUI` and find the next counter.

    The counter is one more than the highest `<name>_<digits>...` already in the folder.
    """
    if "%" in prefix:
        prefix = _compute_vars(prefix, width, height)
    normalized = os.path.normpath(prefix)
    subfolder = os.path.dirname(normalized)
    filename = os.path.basename(normalized)
    folder = base / subfolder
    if os.path.commonpath((str(base), os.path.abspath(folder))) != str(base):
        raise SavePathError(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}\n         output_dir: {base}"
        )
    counter = 1
    if folder.is_dir():
        prefix_len = len(filename)
        highest = 0
        for existing in os.listdir(folder):
            head = existing[: prefix_len + 1]
            if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
                continue
            try:
                digits = int(existing[prefix_len + 1 :].split("_")[0])
            except ValueError:
                digits = 0
            highest = max(highest, digits)
        counter = highest + 1
    else:
        folder.mkdir(parents=True, exist_ok=True)
    return SaveTarget(folder=folder, filename=filename, counter=counter, subfolder=subfolder)
