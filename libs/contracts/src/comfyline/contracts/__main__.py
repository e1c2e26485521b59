"""Write the contract's JSON Schemas and AsyncAPI document: ``python -m comfyline.contracts``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .schema import asyncapi, json_schemas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("contract"), help="output folder")
    args = parser.parse_args()
    out: Path = args.out
    (out / "schemas").mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / "schemas" / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n")
    (out / "asyncapi.json").write_text(json.dumps(asyncapi(), indent=2) + "\n")
    print(f"wrote {len(json_schemas())} schemas and asyncapi.json to {out}")


if __name__ == "__main__":
    main()
