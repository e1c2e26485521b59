"""``python -m comfyline.gateway``: see :mod:`comfyline.gateway.cli`."""

from .cli import main

raise SystemExit(main())
