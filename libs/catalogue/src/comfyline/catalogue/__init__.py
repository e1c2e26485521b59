"""The model catalogue: ComfyUI API-format templates and their parameter schemas, as data."""

from .catalogue import Catalogue, UnknownModel
from .render import TemplateError, compose_prompt, render, wan_frames
from .validation import InputInvalid, validate_input

__all__ = [
    "Catalogue",
    "InputInvalid",
    "TemplateError",
    "UnknownModel",
    "compose_prompt",
    "render",
    "validate_input",
    "wan_frames",
]
