"""The model-template schema: what a catalogue entry must say.

A model is a ComfyUI API-format graph plus a parameter JSON Schema, where each parameter goes
in the graph (:class:`Binding`), what outputs it makes (:class:`OutputSpec`), and its limits.
Two other engines share the schema: a *provider* model (:class:`ProviderSpec`: a hosted API runs
it, no graph) and a *pipeline* (:class:`PipelineStep` list: each step is another catalogue model).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .jobs import OutputKind
from .subjects import token
from .wire import WireModel

JobKind = Literal[
    "image", "inpaint", "portrait", "tts", "lipsync", "video", "smoke", "pipeline", "workflow"
]
Engine = Literal["comfyui", "provider", "pipeline"]
Transform = Literal["asset", "frames", "int", "float"]


class Binding(WireModel):
    """Put the value of parameter ``param`` into ``graph[node].inputs[input]``.

    ``transform``: ``asset`` turns an asset reference into the file name ComfyUI got on upload;
    ``frames`` turns a duration (seconds, with the ``fps`` parameter) into a WAN frame count 4n+1.
    """

    param: str
    node: str
    input: str
    transform: Transform | None = None


class OutputSpec(WireModel):
    """An output node, the key it reports files under, and what kind of files they are."""

    node: str
    kind: OutputKind
    key: Literal["images", "audio", "gifs"] = "images"


class PromptSpec(WireModel):
    """How a model reads its prompt: which parameter, how it is composed, its token budget."""

    param: str = "prompt"
    negative_param: str | None = None
    budget_tokens: int = Field(gt=0)
    budget_by_quality: dict[str, int] = Field(
        default_factory=dict,
        description="budgets per quality (the fast/high preset), e.g. WAN {fast: 175, high: 250}",
    )
    tokenizer: Literal["clip", "estimate"] = "clip"
    compose: str | None = Field(
        default=None,
        description="str.format template over the input, e.g. '{style} portrait of {description}'",
    )
    default_negative: str | None = None
    quality_tags: list[str] = Field(default_factory=list)


class Deadlines(WireModel):
    """How long a job may wait for a worker and how long it may run, in seconds."""

    queue_s: float = Field(default=600, gt=0)
    run_s: float = Field(default=300, gt=0)


class RequiredModel(WireModel):
    """A model file that a ComfyUI server must have, as a combo option of a node input."""

    node_class: str
    input: str
    file: str


class PipelineStep(WireModel):
    """One step of a pipeline: a catalogue model run as a child job.

    Each value of ``input`` is a literal, ``{"input": "<pipeline parameter>"}`` (left out when the
    pipeline's caller did not give it), or ``{"step": "<earlier step>", "output": n}`` (that
    step's n-th output, passed by its S3 key).
    """

    name: str
    model: str
    input: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name", "model")
    @classmethod
    def _is_token(cls, value: str) -> str:
        return token(value)


class ProviderSpec(WireModel):
    """A model a hosted API runs: which configured provider, its API style, its model name."""

    provider: str = Field(description="the provider's name in the provider worker's settings")
    style: Literal["openai-images", "queue"]
    model: str = Field(description="the model's name at the provider, e.g. dall-e-3")
    params: dict[str, str] = Field(
        default_factory=dict, description="job parameter -> the provider's field name"
    )


class ModelTemplate(WireModel):
    """One catalogue entry (served by ``GET /v1/models``, rendered by the worker)."""

    name: str
    version: int = Field(ge=1)
    kind: JobKind
    title: str
    description: str
    graph: dict[str, dict[str, Any]] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(description="JSON Schema (type object) of the input")
    bindings: list[Binding] = Field(default_factory=list)
    outputs: list[OutputSpec] = Field(default_factory=list)
    prompt: PromptSpec | None = None
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    deadlines: Deadlines = Field(default_factory=Deadlines)
    retry_limit: int = Field(default=2, ge=0)
    cost_per_gpu_second: float = Field(default=0.0, ge=0)
    max_queue: int = Field(default=1000, ge=1, description="backlog cap (503 when full)")
    queue_without_capacity: bool = Field(
        default=False,
        description="accept jobs even when live servers report they cannot run it (capacity "
        "that is coming, such as a server being provisioned); otherwise 503 model_unavailable",
    )
    required_nodes: list[str] = Field(default_factory=list)
    required_models: list[RequiredModel] = Field(default_factory=list)
    enhance: bool = True
    notes: str = ""
    expected_s: float | None = Field(
        default=None, gt=0, description="a typical run's seconds (weights a pipeline's progress)"
    )
    provider: ProviderSpec | None = None
    steps: list[PipelineStep] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, value: str) -> str:
        return token(value)

    @property
    def engine(self) -> Engine:
        """What runs the model: ComfyUI (a graph), a hosted provider, or a pipeline of steps."""
        if self.steps:
            return "pipeline"
        if self.provider is not None:
            return "provider"
        return "comfyui"

    @property
    def expected_run_s(self) -> float:
        """A typical run's seconds: ``expected_s``, else the run deadline."""
        return self.expected_s or self.deadlines.run_s
