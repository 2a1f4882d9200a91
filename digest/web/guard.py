"""What every request to the web app passes first: size limits, security headers, no 500 text.

A plain ASGI middleware, so it also covers the answers the router gives on its own (404, 405).
"""

from __future__ import annotations

import logging
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

NONCE_KEY = "csp_nonce"  # in scope["state"], so pages reach it as request.state.csp_nonce
# Browsers send a few kilobytes of headers at most. The HTTP parser bounds only what arrives
# in pieces, so a whole oversized header block read at once is refused here.
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


def security_headers(nonce: str) -> list[tuple[bytes, bytes]]:
    """Headers every answer carries. Tokens sit in URLs, so no page may leak its address."""
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
              "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
    ]


class Guard:
    """Refuses long URLs (414), large header blocks (431) and large bodies (413), and adds
    security headers to every answer.

    The body is read here, up to the limit, before the app sees the request: a declared
    Content-Length over the limit is refused at once, and a chunked body as soon as it
    passes it. The app then gets the buffered body.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_url_chars: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_url_chars = max_url_chars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})[NONCE_KEY] = nonce
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                ours = security_headers(nonce)
                names = {name for name, _ in ours}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + ours}
            await send(message)

        url_chars = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if url_chars > self.max_url_chars:
            await _refuse(send_with_headers, 414, "URI Too Long")
            return
        headers = scope.get("headers", [])
        if (len(headers) > MAX_HEADERS
                or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES):
            await _refuse(send_with_headers, 431, "Request Header Fields Too Large")
            return
        declared = _content_length(scope)
        if declared == -1:
            await _refuse(send_with_headers, 400, "Bad Request: unreadable Content-Length")
            return
        if declared is not None and declared > self.max_body_bytes:
            await _refuse(send_with_headers, 413, "Content Too Large")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _refuse(send_with_headers, 413, "Content Too Large")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send_with_headers)
        except Exception:
            # Whatever went wrong is logged here; the client learns nothing about it.
            log.exception("web request failed path=%s", scope.get("path", "")[:80])
            if started:
                raise
            await _refuse(send_with_headers, 500, "Internal Server Error")


def _content_length(scope: Scope) -> int | None:
    """The declared body size, None when there is none, -1 when it is not a number."""
    values = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
    if not values:
        return None
    text = values[0].strip()
    if not text.isdigit() or any(v.strip() != text for v in values):
        return -1
    return int(text)


async def _refuse(send: Send, status: int, text: str) -> None:
    body = text.encode() + b"\n"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
