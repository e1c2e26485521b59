"""``python -m comfyline.stack`` is the ``comfyline`` command."""

from .cli import main

raise SystemExit(main())
