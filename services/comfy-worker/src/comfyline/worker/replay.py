"""Replaying a recorded ComfyUI session (shared/comfyui-transcripts) through the worker's eyes.

A transcript lists what a real ComfyUI sent and answered. Its frames, parsed exactly as the
worker parses live ones, drive a :class:`RunTracker`: the tests use this to hold the frame
handling to real ComfyUI behaviour, and ``python -m comfyline.worker.replay FILE`` prints how
the worker would have followed each prompt of a recording (handy when ComfyUI changes).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any

from .frames import Frame, parse
from .tracker import RunTracker

Transcript = dict[str, Any]


def load(path: Path) -> Transcript:
    """Read one transcript file."""
    data: Transcript = json.loads(path.read_text())
    return data


def posted(transcript: Transcript) -> list[dict[str, Any]]:
    """Every accepted ``POST /prompt`` body, in order."""
    return [
        step["request"]["json"]
        for step in transcript["steps"]
        if step["dir"] == "http"
        and step["request"]["path"] == "/prompt"
        and step["request"]["method"] == "POST"
        and step["response"]["status"] == 200
    ]


def http_steps(transcript: Transcript, path_prefix: str) -> list[dict[str, Any]]:
    """Every HTTP exchange whose path starts with ``path_prefix``."""
    return [
        step
        for step in transcript["steps"]
        if step["dir"] == "http" and step["request"]["path"].startswith(path_prefix)
    ]


def _binary(frame: dict[str, Any]) -> bytes:
    # Recordings keep the header and decoded metadata of binary frames, not the image bytes.
    event = int(frame["event_type"])
    if event == 4:
        meta = json.dumps(frame["metadata"]).encode()
        return struct.pack(">II", 4, len(meta)) + meta + b"\x89PNG"
    return bytes.fromhex(frame["header_hex"])


def frames(transcript: Transcript, *sockets: str) -> list[Frame]:
    """The frames received on ``sockets`` (default: every socket), parsed."""
    found: list[Frame] = []
    for step in transcript["steps"]:
        if step["dir"] != "ws_in" or (sockets and step["socket"] not in sockets):
            continue
        frame = step["frame"]
        found.append(parse(_binary(frame) if frame.get("binary") else json.dumps(frame)))
    return found


def replay(transcript: Transcript, which: int = 0, *sockets: str) -> RunTracker:
    """A tracker for the ``which``-th accepted prompt, fed every recorded frame."""
    body = posted(transcript)[which]
    tracker = RunTracker(body["prompt_id"], body["prompt"])
    for frame in frames(transcript, *sockets):
        tracker.feed(frame)
    return tracker


def main(argv: list[str]) -> int:
    """Print, for each prompt of each file, how the worker follows it."""
    for name in argv:
        transcript = load(Path(name))
        for index, body in enumerate(posted(transcript)):
            tracker = RunTracker(body["prompt_id"], body["prompt"])
            print(f"{name} prompt {index} ({body['prompt_id']})")
            for frame in frames(transcript):
                update = tracker.feed(frame)
                if update.started or update.progressed or update.finished or update.done:
                    progress = tracker.progress()
                    print(
                        f"  {type(frame).__name__:<22} {tracker.phase:<11} {progress.percent:5.1f}%"
                    )
            print(f"  files: {[f.filename for f in tracker.files()]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
