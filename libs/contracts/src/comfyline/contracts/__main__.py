"""Write the contract's JSON Schemas and AsyncAPI document: ``python -m comfyline.contracts``.

``--check`` writes nothing and exits 1 when the folder differs from what the models say (CI runs
it on the committed copy in ``docs/contract``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .schema import asyncapi, json_schemas


def documents() -> dict[str, str]:
    """Every file of the exported contract, by its path inside the output folder."""
    files = {
        f"schemas/{name}.json": json.dumps(schema, indent=2) + "\n"
        for name, schema in json_schemas().items()
    }
    files["asyncapi.json"] = json.dumps(asyncapi(), indent=2) + "\n"
    return files


def stale(out: Path) -> list[str]:
    """The files under ``out`` that are missing, different, or no longer part of the contract."""
    files = documents()
    wrong = [
        p for p, text in files.items() if not (out / p).is_file() or (out / p).read_text() != text
    ]
    extra = [
        str(p.relative_to(out))
        for p in sorted((out / "schemas").glob("*.json"))
        if str(p.relative_to(out)) not in files
    ]
    return sorted(wrong + extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("contract"), help="output folder")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    out: Path = args.out
    if args.check:
        differ = stale(out)
        if differ:
            print(f"{out} is not current: {', '.join(differ)}")
            print(f"run: python -m comfyline.contracts --out {out}")
            sys.exit(1)
        print(f"{out} is current")
        return
    (out / "schemas").mkdir(parents=True, exist_ok=True)
    for path in sorted((out / "schemas").glob("*.json")):
        path.unlink()
    for name, text in documents().items():
        (out / name).write_text(text)
    print(f"wrote {len(documents()) - 1} schemas and asyncapi.json to {out}")


if __name__ == "__main__":
    main()
