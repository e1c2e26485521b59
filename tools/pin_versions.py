"""Rewrite `[tool.uv] constraint-dependencies` from a fresh resolution.

uv.lock is never committed (it records download addresses), so the exact versions we ship are
kept in the root pyproject.toml. After changing any dependency:

    uv lock && python tools/pin_versions.py && uv sync
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    pins = sorted(
        f"{pkg['name']}=={pkg['version']}"
        for pkg in lock["package"]
        if "version" in pkg and not pkg["name"].startswith("comfyline")
    )
    body = "".join(f'    "{pin}",\n' for pin in pins)
    pyproject = ROOT / "pyproject.toml"
    text = pyproject.read_text()
    new, count = re.subn(
        r"constraint-dependencies = \[.*?\]\n",
        lambda _: f"constraint-dependencies = [\n{body}]\n",
        text,
        flags=re.S,
    )
    if count != 1:
        print("constraint-dependencies not found in pyproject.toml", file=sys.stderr)
        return 1
    pyproject.write_text(new)
    print(f"pinned {len(pins)} packages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
