"""OpenAI-compatible routes: apps written for OpenAI's SDKs run on Comfyline unchanged.

``POST /v1/images/generations``, ``POST /v1/images/edits`` (inpainting: the mask's transparent
pixels, or the image's own, mark what changes) and ``POST /v1/audio/speech`` take OpenAI's
request bodies, run
the job through the jobs service like any other (same auth, limits, validation, queue), wait for
it, and answer in OpenAI's shapes; errors come as ``{"error": {"message", "type", "param",
"code"}}`` so the SDK raises its usual exceptions. OpenAI's own model names (``dall-e-3``,
``gpt-image-1``, ``tts-1``, ...) and no model at all mean the configured default
(``GATEWAY_OPENAI__*``); a Comfyline model's name is used as it is.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from comfyline.contracts import ErrorCode, JobRecord, JobState, id_timestamp_ms, new_asset_id

from ..deps import Gateway, GatewayDep, SubmitUser
from ..errors import ApiError, request_id_of
from ..media import check
from ..objects import upload_key
from ..schemas import JobCreate

router = APIRouter(prefix="/v1", tags=["openai"])
OPENAI_MODEL = re.compile(r"^(dall-e|gpt-|tts-|chatgpt-)", re.IGNORECASE)
SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
#: OpenAI's voices, each mapped to one of the catalogue's built-in reference voices.
OPENAI_VOICES = {
    "alloy": "amber",
    "ash": "basil",
    "ballad": "basil",
    "coral": "clover",
    "echo": "basil",
    "fable": "dune",
    "nova": "clover",
    "onyx": "dune",
    "sage": "amber",
    "shimmer": "clover",
    "verse": "dune",
}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str = Field(description="Comfyline's stable error code", examples=["unknown_model"])


class OpenAIError(BaseModel):
    """An error as OpenAI answers it (on these routes only)."""

    error: OpenAIErrorDetail


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the given error statuses, in OpenAI's shape."""
    return {status: {"model": OpenAIError, "description": "Error"} for status in statuses}


class ImageGeneration(BaseModel):
    """OpenAI's image request (``quality``, ``style``, ``user`` and the like are accepted and
    ignored)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"prompt": "a red fox in snow", "size": "1024x1024"}]},
    )

    prompt: str = Field(min_length=1, max_length=4000)
    model: str | None = Field(default=None, max_length=128)
    n: int = Field(default=1, ge=1, le=4)
    size: str | None = Field(default=None, description="WIDTHxHEIGHT, or auto")
    response_format: Literal["url", "b64_json"] | None = None


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


class Speech(BaseModel):
    """OpenAI's speech request."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"model": "tts-1", "input": "Hello!", "voice": "alloy"}]},
    )

    input: str = Field(min_length=1, max_length=4096)
    model: str | None = Field(default=None, max_length=128)
    voice: str | dict[str, str] | None = Field(
        default=None, description="an OpenAI voice, a built-in voice, or an audio asset id"
    )
    response_format: str | None = Field(default=None, description="the audio comes as made")
    speed: float | None = Field(default=None, ge=0.25, le=4.0)


def model_for(gw: Gateway, asked: str | None, default: str) -> str:
    """The catalogue model that serves a request naming ``asked``."""
    if not asked or OPENAI_MODEL.match(asked):
        return default
    gw.registry.get(asked)  # unknown_model (422) when the catalogue has no such model
    return asked


def known_params(gw: Gateway, model: str, values: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters the model takes (OpenAI's fields map onto some models, not all)."""
    properties = gw.registry.get(model).parameters.get("properties", {})
    return {k: v for k, v in values.items() if k in properties and v is not None}


def bad_request(message: str, param: str) -> ApiError:
    return ApiError(
        400,
        ErrorCode.VALIDATION_ERROR,
        message,
        details={"errors": [{"field": param, "message": message}]},
    )


async def run_job(
    gw: Gateway, request: Request, user: Any, model: str, values: dict[str, Any]
) -> JobRecord:
    """Submit through the jobs service and wait for the end; an error unless it succeeded."""
    body = JobCreate(model=model, input=values)
    submitted = await gw.job_service.submit(user, body, None, request_id_of(request))
    record = await gw.job_service.wait(submitted.record, gw.settings.openai.wait_s)
    if record.status == JobState.SUCCEEDED:
        return record
    if not record.status.terminal:
        raise ApiError(
            504,
            ErrorCode.TIMEOUT,
            f"job {record.id} did not finish in {gw.settings.openai.wait_s:g} s; "
            f"follow it at /v1/jobs/{record.id}",
            details={"job_id": record.id},
        )
    error = record.error
    message = error.message if error else f"job {record.id} ended {record.status.value}"
    details = {"job_id": record.id}
    if error is not None and error.code == ErrorCode.CONTENT_POLICY:
        raise ApiError(400, error.code, message, details=details)
    raise ApiError(500, error.code if error else ErrorCode.INTERNAL_ERROR, message, details=details)


async def output_bytes(gw: Gateway, record: JobRecord, index: int) -> bytes:
    ref = gw.job_service.output(record, index)
    chunks = await gw.job_service.output_chunks(record, ref)
    return b"".join([chunk async for chunk in chunks])


@router.post(
    "/images/generations",
    summary="Create images (OpenAI-compatible)",
    responses=openai_errors(400, 401, 403, 409, 413, 422, 429, 500, 503, 504),
)
async def create_images(
    body: ImageGeneration, request: Request, user: SubmitUser, gw: GatewayDep
) -> ImagesResponse:
    """OpenAI's `images.generate`: the prompt runs on the configured image model; `n` images
    of `size`; `url` (presigned, like OpenAI's) or `b64_json` (the default for `gpt-image-*`)."""
    model = model_for(gw, body.model, gw.settings.openai.image_model)
    width = height = None
    if body.size and body.size != "auto":
        match = SIZE.match(body.size)
        if not match:
            raise bad_request(f"size {body.size!r}: expected WIDTHxHEIGHT", "size")
        width, height = int(match.group(1)), int(match.group(2))
    values = {"prompt": body.prompt, "width": width, "height": height, "batch_size": body.n}
    record = await run_job(gw, request, user, model, known_params(gw, model, values))
    return await images_answer(gw, request, record, body.model, body.response_format)


async def images_answer(
    gw: Gateway,
    request: Request,
    record: JobRecord,
    asked: str | None,
    response_format: str | None,
) -> ImagesResponse:
    """The job's images as OpenAI lists them: links or inline base64."""
    inline = response_format or ("b64_json" if (asked or "").startswith("gpt-image") else "url")
    revised = record.enhancement.prompt if record.enhancement else None
    data = []
    for ref in record.outputs:
        if inline == "b64_json":
            encoded = base64.b64encode(await output_bytes(gw, record, ref.index)).decode()
            data.append(ImageData(b64_json=encoded, revised_prompt=revised))
        else:
            url = gw.job_service.output_link(ref, gw.base_url(request))
            data.append(ImageData(url=url, revised_prompt=revised))
    return ImagesResponse(created=id_timestamp_ms(record.id) // 1000, data=data)


EDIT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "prompt"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "mask": {"type": "string", "format": "binary"},
                        "prompt": {"type": "string", "minLength": 1, "maxLength": 4000},
                        "model": {"type": "string"},
                        "n": {"type": "integer", "minimum": 1, "maximum": 1},
                        "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                    },
                }
            }
        },
    }
}


async def store_part(gw: Gateway, owner: str, form: Any, field: str) -> str | None:
    """A file part of the form stored as a new asset of ``owner``; its id (None if absent)."""
    part = form.get(field) or form.get(f"{field}[]")
    if part is None:
        return None
    if not isinstance(part, UploadFile):
        raise bad_request(f"{field} must be a file", field)
    data = await part.read()
    limit = gw.settings.bodies.max_upload_bytes
    if len(data) > limit:
        raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"{field} is larger than {limit} bytes")
    if not data:
        raise bad_request(f"{field} is empty", field)
    media = check(data[:4096], part.content_type)
    if media.kind != "image":
        raise bad_request(f"{field} must be an image, not {media.kind}", field)
    asset_id = new_asset_id()
    key = upload_key(owner, asset_id, media.content_type)
    metadata = {"owner": owner, "asset-id": asset_id, "kind": media.kind}
    await gw.store.put_bytes(key, data, media.content_type, metadata)
    return asset_id


@router.post(
    "/images/edits",
    summary="Edit an image (OpenAI-compatible)",
    openapi_extra=EDIT_FORM,
    responses=openai_errors(400, 401, 403, 409, 413, 415, 422, 429, 500, 503, 504),
)
async def edit_images(request: Request, user: SubmitUser, gw: GatewayDep) -> ImagesResponse:
    """OpenAI's `images.edit`: `image` inpainted by the configured edit model where `mask` (or,
    without one, the image itself) is transparent, following `prompt`. The files are kept as
    the caller's uploads."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send multipart/form-data")
    async with request.form(max_files=4, max_fields=16) as form:
        prompt, asked, response_format = (
            form.get(k) for k in ("prompt", "model", "response_format")
        )
        if not isinstance(prompt, str) or not prompt.strip():
            raise bad_request("prompt is required", "prompt")
        if response_format not in (None, "url", "b64_json"):
            raise bad_request("response_format is url or b64_json", "response_format")
        model = model_for(
            gw, asked if isinstance(asked, str) else None, gw.settings.openai.edit_model
        )
        image = await store_part(gw, user.owner, form, "image")
        if image is None:
            raise bad_request("image is required", "image")
        mask = await store_part(gw, user.owner, form, "mask")
    values = {"image": image, "mask": mask or image, "mask_channel": "alpha", "prompt": prompt}
    record = await run_job(gw, request, user, model, known_params(gw, model, values))
    return await images_answer(
        gw, request, record, asked if isinstance(asked, str) else None, response_format
    )


@router.post(
    "/audio/speech",
    summary="Create speech (OpenAI-compatible)",
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {}, "audio/flac": {}, "audio/mpeg": {}}},
        **openai_errors(400, 401, 403, 409, 413, 422, 429, 500, 503, 504),
    },
)
async def create_speech(
    body: Speech, request: Request, user: SubmitUser, gw: GatewayDep
) -> Response:
    """OpenAI's `audio.speech.create`: the text spoken by the configured speech model in one of
    the built-in reference voices (OpenAI's voice names map to them), or in an uploaded
    recording (`voice`: an `ast_...` id). The audio comes in the format the model makes."""
    model = model_for(gw, body.model, gw.settings.openai.speech_model)
    voice: Any = body.voice
    if isinstance(voice, dict):
        voice = voice.get("id")
    if isinstance(voice, str):
        voice = OPENAI_VOICES.get(voice.lower(), voice)
    values = {"text": body.input, "voice": voice, "speed": body.speed}
    record = await run_job(gw, request, user, model, known_params(gw, model, values))
    audio = next((ref for ref in record.outputs if ref.kind == "audio"), None)
    if audio is None:
        raise ApiError(500, ErrorCode.INTERNAL_ERROR, f"model {model} made no audio")
    return Response(
        await output_bytes(gw, record, audio.index),
        media_type=audio.content_type,
        headers={"X-Comfyline-Job": record.id},
    )
