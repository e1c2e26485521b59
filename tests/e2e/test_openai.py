"""The official ``openai`` package, pointed at a stack started by ``comfyline up``, makes images
and speech, and raises its own exceptions for Comfyline's errors."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from .conftest import Stack, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("openai")) as running:
        yield running


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{stack.info['gateway_url']}/v1", api_key=stack.info["api_key"], max_retries=0
    )


def test_images_generate_makes_an_image_of_the_size_asked(client: openai.OpenAI) -> None:
    made = client.images.generate(
        model="dall-e-3", prompt="a lighthouse at dusk", size="256x192", response_format="b64_json"
    )
    assert made.data and made.data[0].b64_json
    picture = Image.open(io.BytesIO(base64.b64decode(made.data[0].b64_json)))
    assert picture.size == (256, 192)
    linked = client.images.generate(prompt="a red kite", size="128x128", n=2)
    assert linked.data and len(linked.data) == 2
    fetched = httpx.get(linked.data[1].url or "")
    assert Image.open(io.BytesIO(fetched.content)).size == (128, 128)


def test_speech_comes_in_a_built_in_voice(client: openai.OpenAI) -> None:
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from Comfyline.")
    audio = speech.read()
    assert audio[:4] == b"fLaC" and len(audio) > 1000
    assert speech.response.headers["content-type"] == "audio/flac"


def test_errors_come_in_openais_shape(client: openai.OpenAI, stack: Stack) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as unknown:
        client.images.generate(model="no-such-model", prompt="x")
    assert unknown.value.code == "unknown_model"
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(prompt="x", size="huge")
    assert bad_size.value.param == "size"
    stranger = openai.OpenAI(
        base_url=f"{stack.info['gateway_url']}/v1", api_key="cl_wrong", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.images.generate(prompt="x")
    assert refused.value.code == "unauthorized"


def test_images_edit_inpaints_where_the_mask_is_transparent(client: openai.OpenAI) -> None:
    def png(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    photo = png(Image.new("RGB", (128, 96), (200, 120, 40)))
    mask = Image.new("RGBA", (128, 96), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 24, 96, 72))  # the hole to fill
    edited = client.images.edit(
        model="gpt-image-1",
        image=("photo.png", photo, "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a window",
    )
    assert edited.data and edited.data[0].b64_json  # gpt-image-* answers inline, like OpenAI
    result = Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json)))
    assert result.size == (128, 96)
    with pytest.raises(openai.BadRequestError) as missing:
        client.images.edit(image=("photo.png", photo, "image/png"), prompt="")
    assert missing.value.param == "prompt"
