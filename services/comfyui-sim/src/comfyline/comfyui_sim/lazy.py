"""Heavy libraries (numpy, Pillow) loaded on first use, so the server listens in about half a
second; `server.py` warms them up in a background thread right after start-up.

Modules write `if TYPE_CHECKING: import numpy as np` / `else: np = lazy("numpy")`, so type
checking sees the real module and run time pays for the import only when a node first needs it.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._target = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._target)
        return getattr(module, attr)


def lazy(name: str) -> Any:
    """A stand-in for module `name` that imports it at the first attribute access."""
    return _LazyModule(name)


HEAVY_MODULES = ("numpy", "PIL.Image", "PIL.ImageOps", "PIL.PngImagePlugin", "av")


def warm_up() -> None:
    """Import every heavy module now (called from a background thread after start-up)."""
    for name in HEAVY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
