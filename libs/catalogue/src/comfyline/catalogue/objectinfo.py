"""Reading ComfyUI's ``/object_info`` (shared by the worker's capability match and the gateway's
workflow checks)."""

from __future__ import annotations

from typing import Any


def combo_options(spec: Any) -> list[str] | None:
    """The options of one input spec if it is a combo, else None.

    Combos come in three forms that must all be read: ``[[options]]``, ``[[options], {...}]`` and
    (newer nodes) ``["COMBO", {"options": [...]}]``.
    """
    if not isinstance(spec, list) or not spec:
        return None
    head = spec[0]
    if isinstance(head, list):
        return [str(option) for option in head]
    if head == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        if isinstance(options, list):
            return [str(option) for option in options]
    return None
