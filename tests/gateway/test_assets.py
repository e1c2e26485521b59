"""Uploads and the gallery; asset references and URLs in job inputs (with the SSRF guard)."""

from __future__ import annotations

import httpx

from comfyline.gateway import create_app
from comfyline.gateway.settings import BodySettings
from comfyline.runtime import Bus, NatsSettings, ObjectStore, S3Settings

from .conftest import ADMIN, Orchestrator, make_settings, new_key, png, upload_files, wav


async def test_upload_is_sniffed_stored_and_listed(
    client: httpx.AsyncClient, store: ObjectStore
) -> None:
    user = await new_key(client, "ann")
    response = await client.post(
        "/v1/assets", files=upload_files(png(32, 16), "image/png", filename="cat.png"), headers=user
    )
    assert response.status_code == 201, response.text
    asset = response.json()
    assert asset["id"].startswith("ast_") and asset["source"] == "upload"
    assert (asset["kind"], asset["content_type"], asset["width"], asset["height"]) == (
        "image",
        "image/png",
        32,
        16,
    )
    assert asset["size"] == len(png(32, 16)) and asset["filename"] == "cat.png"
    stored = await store.get_bytes(f"inputs/ann/{asset['id']}.png")
    assert stored == png(32, 16)
    one = (await client.get(f"/v1/assets/{asset['id']}", headers=user)).json()
    assert one["width"] == 32 and one["filename"] == "cat.png"
    audio = await client.post("/v1/assets", files=upload_files(wav(), "audio/x-wav"), headers=user)
    assert audio.status_code == 201 and audio.json()["content_type"] == "audio/wav"
    gallery = (await client.get("/v1/assets", headers=user)).json()
    assert {a["id"] for a in gallery["data"]} == {asset["id"], audio.json()["id"]}
    assert all("X-Amz-Signature" in a["url"] for a in gallery["data"])
    signed = await client.post(
        f"/v1/assets/{asset['id']}/sign", json={"expires_s": 120}, headers=user
    )
    assert signed.status_code == 200
    async with httpx.AsyncClient() as outside:
        assert (await outside.get(signed.json()["url"])).content == png(32, 16)
    other = await new_key(client, "not-ann")
    assert (await client.get(f"/v1/assets/{asset['id']}", headers=other)).status_code == 404
    assert (await client.delete(f"/v1/assets/{asset['id']}", headers=other)).status_code == 404
    deleted = await client.delete(f"/v1/assets/{asset['id']}", headers=user)
    assert deleted.status_code == 204
    assert (await client.get(f"/v1/assets/{asset['id']}", headers=user)).status_code == 404


async def test_mistyped_unknown_and_malformed_uploads_are_refused(
    client: httpx.AsyncClient,
) -> None:
    user = await new_key(client, "ben")
    liar = await client.post("/v1/assets", files=upload_files(wav(), "image/png"), headers=user)
    assert liar.status_code == 415 and liar.json()["code"] == "unsupported_media_type"
    assert liar.json()["details"] == {"declared": "image/png", "detected": "audio/wav"}
    text = await client.post(
        "/v1/assets", files=upload_files(b"<html>hi</html>", "text/html"), headers=user
    )
    assert text.status_code == 415
    not_multipart = await client.post(
        "/v1/assets", content=png(), headers={**user, "Content-Type": "image/png"}
    )
    assert not_multipart.status_code == 415
    wrong_field = await client.post(
        "/v1/assets", files=upload_files(png(), "image/png", name="image"), headers=user
    )
    assert wrong_field.status_code == 422 and wrong_field.json()["code"] == "validation_error"
    empty = await client.post("/v1/assets", files=upload_files(b"", "image/png"), headers=user)
    assert empty.status_code == 422
    assert (await client.get("/v1/assets", headers=user)).json()["data"] == []


async def test_oversize_upload_is_413_and_nothing_is_stored(
    namespace: str, nats_settings: NatsSettings, s3_settings: S3Settings, bus: Bus
) -> None:
    settings = make_settings(
        namespace, nats_settings, s3_settings, bodies=BodySettings(max_upload_bytes=200_000)
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            user = await new_key(client, "cid")
            big = png() + b"\x00" * 400_000  # a PNG header, then far too many bytes
            response = await client.post(
                "/v1/assets", files=upload_files(big, "image/png"), headers=user
            )
            assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
            medium = png() + b"\x00" * 220_000  # under the request cap, over the file cap
            response = await client.post(
                "/v1/assets", files=upload_files(medium, "image/png"), headers=user
            )
            assert response.status_code == 413
            assert (await client.get("/v1/assets", headers=user)).json()["data"] == []


async def test_job_inputs_reference_the_callers_assets_and_outputs(
    client: httpx.AsyncClient, orchestrator: Orchestrator
) -> None:
    dan = await new_key(client, "dan", limits={"submit_per_min": 100, "max_queue": 100})
    eve = await new_key(client, "eve", limits={"submit_per_min": 100, "max_queue": 100})
    asset = (
        await client.post("/v1/assets", files=upload_files(png(), "image/png"), headers=dan)
    ).json()
    own = await client.post(
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": asset["id"]}},
        headers=dan,
    )
    assert own.status_code == 202 and own.json()["input"]["image"] == asset["id"]
    stolen = await client.post(
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": asset["id"]}},
        headers=eve,
    )
    assert stolen.status_code == 422 and stolen.json()["code"] == "asset_not_found"
    earlier = (
        await client.post("/v1/jobs", json={"model": "cpu-smoke", "input": {}}, headers=dan)
    ).json()
    ref = {"job": earlier["id"], "output": 0}
    pending = await client.post(
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": ref}},
        headers=dan,
    )
    assert pending.status_code == 422  # not finished yet
    await orchestrator.run(earlier["id"])
    chained = await client.post(
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": ref}},
        headers=dan,
    )
    assert chained.status_code == 202, chained.text
    other = await client.post(
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": ref}},
        headers=eve,
    )
    assert other.status_code == 422 and other.json()["code"] == "asset_not_found"
    implicit = await client.post(  # output defaults to 0
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": {"job": earlier["id"]}}},
        headers=dan,
    )
    assert implicit.status_code == 202, implicit.text
    sound = (
        await client.post("/v1/assets", files=upload_files(wav(), "audio/wav"), headers=dan)
    ).json()
    wrong_kind = await client.post(
        "/v1/jobs",
        json={"model": "test-sdxl", "input": {"prompt": "fox", "image": sound["id"]}},
        headers=dan,
    )
    assert wrong_kind.status_code == 422 and "expects image" in wrong_kind.json()["error"]
    # the gallery shows the job's output too
    gallery = (await client.get("/v1/assets", params={"source": "output"}, headers=dan)).json()
    assert [(a["job_id"], a["output"]) for a in gallery["data"]] == [(earlier["id"], 0)]
    assert (await client.get("/v1/assets", params={"owner": "dan"}, headers=ADMIN)).json()["data"]


async def test_ssrf_urls_are_refused_before_any_connection(client: httpx.AsyncClient) -> None:
    user = await new_key(client, "fay", limits={"submit_per_min": 100, "max_queue": 100})
    for url in (
        "https://127.0.0.1/cat.png",
        "https://localhost/cat.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/cat.png",
        "https://[::1]/cat.png",
        "https://[::ffff:127.0.0.1]/cat.png",
        "https://2130706433/cat.png",
        "http://example.com/cat.png",
        "https://user:pw@example.com/cat.png",
        "ftp://example.com/cat.png",
    ):
        response = await client.post(
            "/v1/jobs",
            json={"model": "test-sdxl", "input": {"prompt": "fox", "image": url}},
            headers=user,
        )
        assert response.status_code == 422, (url, response.text)
        assert response.json()["code"] == "url_not_allowed", (url, response.json())
