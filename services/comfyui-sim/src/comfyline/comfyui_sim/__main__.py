"""`python -m comfyline.comfyui_sim` (or `comfyui-sim`): run the Comfyline ComfyUI simulator."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from comfyline.comfyui_sim.config import config_from_args
from comfyline.comfyui_sim.server import serve


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config = config_from_args(args)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s [comfyui-sim] %(name)s: %(message)s",
    )
    asyncio.run(serve(config, args))


if __name__ == "__main__":
    main()
