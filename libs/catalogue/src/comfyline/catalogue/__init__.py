"""The model catalogue: ComfyUI API-format templates and their parameter schemas, as data."""

from .assets import (
    ASSET_REF_FORMS,
    ASSET_REF_TYPE,
    AssetRef,
    BuiltinVoice,
    JobOutputRef,
    asset_params,
    asset_schema,
    builtin_voices,
    graph_assets,
    parse_asset_ref,
    voice_transcript,
    with_files,
)
from .catalogue import Catalogue, UnknownModel
from .examples import example_input
from .render import (
    TemplateError,
    compose_prompt,
    output_specs,
    prepare_input,
    render,
    wan_frames,
    workflow_graph,
)
from .validation import InputInvalid, apply_choices, validate_input
from .work import Texts, goes_at_once, has_text, job_texts, run_limits, work_message

__all__ = [
    "ASSET_REF_FORMS",
    "ASSET_REF_TYPE",
    "AssetRef",
    "BuiltinVoice",
    "Catalogue",
    "InputInvalid",
    "JobOutputRef",
    "TemplateError",
    "Texts",
    "UnknownModel",
    "apply_choices",
    "asset_params",
    "asset_schema",
    "builtin_voices",
    "compose_prompt",
    "example_input",
    "goes_at_once",
    "graph_assets",
    "has_text",
    "job_texts",
    "output_specs",
    "parse_asset_ref",
    "prepare_input",
    "render",
    "run_limits",
    "validate_input",
    "voice_transcript",
    "wan_frames",
    "with_files",
    "work_message",
    "workflow_graph",
]
