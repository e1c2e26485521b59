"""The prompt-enhancer's two services and a webhook endpoint, as small test stand-ins."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from comfyline.contracts import (
    Enhancement,
    EnhanceReply,
    EnhanceRequest,
    ErrorReply,
    PolicyReply,
    PolicyRequest,
    WireModel,
)
from comfyline.runtime import Bus, Delivery, serve


async def serve_policy(bus: Bus, allowed: bool = True) -> list[PolicyRequest]:
    """Answer ``policy.v1`` like the prompt-enhancer; returns the requests as they come."""
    seen: list[PolicyRequest] = []

    async def respond(delivery: Delivery) -> WireModel:
        seen.append(delivery.parse(PolicyRequest))
        return PolicyReply(tier="general" if allowed else "explicit", allowed=allowed)

    await serve(bus, bus.names.policy(), "policy", respond)
    return seen


async def serve_enhancer(
    bus: Bus, *, delay_s: float = 0.0, error: str | None = None
) -> list[EnhanceRequest]:
    """Answer ``enhance.v1`` (appending ", detailed") after ``delay_s``, or an ``ErrorReply``."""
    seen: list[EnhanceRequest] = []

    async def respond(delivery: Delivery) -> WireModel:
        request = delivery.parse(EnhanceRequest)
        seen.append(request)
        await asyncio.sleep(delay_s)
        if error:
            return ErrorReply(error=error, code="service_unavailable")
        enhancement = Enhancement(
            original_prompt=request.prompt,
            prompt=request.prompt + ", detailed",
            strategy="rules",
            tokenizer="clip",
            tokens_before=3,
            tokens_after=5,
            budget=75,
            expansion_pct=66.0,
            compressed=False,
        )
        return EnhanceReply(enhancement=enhancement)

    await serve(bus, bus.names.enhance(), "enhance", respond)
    return seen


@dataclass
class Received:
    """One request a :class:`WebhookReceiver` got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers with ``statuses`` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(lines[0].split(" ")[1], headers, body))
            status = self.statuses.pop(0) if self.statuses else 200
            reply = f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            writer.write(reply.encode())
            await writer.drain()
        finally:
            writer.close()
