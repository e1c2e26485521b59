"""Facts of the Origin check (and, in newer releases, the Sec-Fetch-Site check)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import aiohttp
import pytest

from comfyline.testkit.comfyui import ComfyClient, empty_image_graph


def _port(comfy: ComfyClient) -> int:
    return urlsplit(comfy.url).port or 80


def _require_loopback(comfy: ComfyClient) -> None:
    host = urlsplit(comfy.url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        pytest.skip("ComfyUI checks Origin against Host only when Host is a loopback name")


async def test_origin_of_another_host_is_403_on_get_and_post(comfy: ComfyClient) -> None:
    _require_loopback(comfy)
    evil = {"Origin": "http://evil.example.com"}
    get = await comfy.request("GET", "/system_stats", headers=evil)
    assert (get.status, get.content_type, get.body) == (403, None, b"")
    post = await comfy.request(
        "POST", "/prompt", json_body={"prompt": empty_image_graph()}, headers=evil
    )
    assert (post.status, post.body) == (403, b"")
    assert (await comfy.get_json("/prompt"))["exec_info"]["queue_remaining"] == 0


async def test_origin_localhost_against_host_127_is_a_mismatch(comfy: ComfyClient) -> None:
    _require_loopback(comfy)
    host = urlsplit(comfy.url).hostname
    other = "localhost" if host != "localhost" else "127.0.0.1"
    reply = await comfy.request(
        "GET", "/system_stats", headers={"Origin": f"http://{other}:{_port(comfy)}"}
    )
    assert reply.status == 403
    other_port = await comfy.request(
        "GET", "/system_stats", headers={"Origin": f"http://{host}:{_port(comfy) + 1}"}
    )
    assert other_port.status == 403


async def test_origin_equal_to_host_is_allowed(comfy: ComfyClient) -> None:
    host = urlsplit(comfy.url).netloc
    reply = await comfy.request("GET", "/system_stats", headers={"Origin": f"http://{host}"})
    assert reply.status == 200


async def test_origin_check_covers_the_websocket_upgrade(comfy: ComfyClient) -> None:
    _require_loopback(comfy)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await comfy.session.ws_connect(
            f"{comfy.url}/ws", headers={"Origin": "http://evil.example.com"}
        )
    assert refused.value.status == 403


async def test_sec_fetch_site_cross_site_is_403_on_newer_releases(comfy: ComfyClient) -> None:
    reply = await comfy.request("GET", "/system_stats", headers={"Sec-Fetch-Site": "cross-site"})
    if reply.status == 200:
        pytest.skip("this server has no Sec-Fetch-Site check (ComfyUI 0.3.64 checks only Origin)")
    assert (reply.status, reply.body) == (403, b"")
    same = await comfy.request("GET", "/system_stats", headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status == 200


async def test_origin_check_is_skipped_when_host_is_not_a_loopback_name(comfy: ComfyClient) -> None:
    reply = await comfy.request(
        "GET",
        "/system_stats",
        headers={"Host": "comfy.example.com", "Origin": "http://evil.example.com"},
    )
    assert reply.status == 200


async def test_a_side_without_a_port_is_compared_by_host_name_alone(comfy: ComfyClient) -> None:
    _require_loopback(comfy)
    host = urlsplit(comfy.url).hostname or ""
    # Origin without a port: the Host's port is dropped before comparing.
    same = await comfy.request("GET", "/system_stats", headers={"Origin": f"http://{host}"})
    assert same.status == 200
    # Host without a port: the Origin's port is dropped too.
    reply = await comfy.request(
        "GET", "/system_stats", headers={"Host": host, "Origin": f"http://{host}:9"}
    )
    assert reply.status == 200
    # The host names still have to match.
    other = await comfy.request("GET", "/system_stats", headers={"Origin": "http://localhost"})
    assert other.status == (200 if host == "localhost" else 403)
