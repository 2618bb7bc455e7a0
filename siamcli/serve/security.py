"""What makes the service safe to expose: token, body limit, response headers, the host warning.

Security model (docs/serve.md says the same for users):
  * loopback by default; another --host without a token prints a warning (config.py);
  * with a token, every /api route and /metrics need `Authorization: Bearer <token>`, compared
    in constant time (hashes of equal length, so not even the length leaks); the page, its
    static files, /healthz, /readyz and the OpenAPI schema stay open (they reveal nothing
    about the gallery);
  * request bodies past --max-upload-mb are refused with 413 from the Content-Length header
    before a byte is read, or as soon as a streamed body passes the limit;
  * uploads are decoded by the CLI's hardened decoder; items are addressed by id, never by path;
  * the page is served with a strict Content-Security-Policy (no inline script, no third party).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

bearer = HTTPBearer(auto_error=False, description="The token given to `siamcli serve --token` (or SIAMCLI_TOKEN).")

PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                                 b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens (hashed first: equal lengths, nothing leaks)."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def token_dependency(token: str):
    """A FastAPI dependency demanding `Authorization: Bearer <token>` (401 otherwise)."""

    async def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not token_matches(credentials.credentials, token):
            raise HTTPException(401, "missing or wrong token: send `Authorization: Bearer <token>`", headers={"WWW-Authenticate": "Bearer"})

    return require_token


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit / (1 << 20):g} MiB (--max-upload-mb)")


class BodyLimit:
    """ASGI middleware: 413 (JSON) for bodies over `limit` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int, on_reject=None):
        self.app = app
        self.limit = limit
        self.on_reject = on_reject or (lambda: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send)
        received, started = 0, False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)  # FastAPI turns it into the 413 response
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        self.on_reject()
        await send_json(send, 413, {"detail": BodyTooLarge(self.limit).detail}, [(b"connection", b"close")])


class PageHeaders:
    """ASGI middleware: security headers on every response (the CSP matters for the page)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope["path"] in ("/docs", "/redoc")  # FastAPI's docs pages load Swagger UI from a CDN

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in PAGE_HEADERS if n not in present and not (docs and n == b"content-security-policy")]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def send_json(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
