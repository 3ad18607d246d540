"""The hub's outermost ASGI middleware: who is calling, and how much they may send.

:class:`RequestGuard` answers every ``/v1`` request that carries no valid bearer
token with 401 *before* a byte of its body is read, refuses a declared
``Content-Length`` above the route's limit with 413 before reading, and stops a
streamed (chunked) body as soon as it passes that limit.  The principal it
resolved is left in the request's state (``request.state.principal``) for the
routes and the fast path, so a token is looked up once per request, in the
database: a revoked or deleted token stops working at once, and a revoked or
expired one is answered 401 with a message that says which.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consortia.errors import AuthenticationError
from consortia.hub.auth import Principal
from consortia.hub.errors import HubError
from consortia.hub.fastpath import bearer_token

__all__ = ["BodyTooLarge", "RequestGuard", "read_body"]

Resolver = Callable[[str | None], Awaitable["Principal | None"]]
Limit = Callable[[str], int]
Rejected = Callable[[Principal, str, str, int, str], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """A request body passed its limit while being read (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


async def _answer(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the unread body is not drained
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Authenticate, then bound the body, of every request under ``/v1/``.

    Parameters
    ----------
    app
        The wrapped ASGI application.
    resolve
        ``await resolve(token)``: the principal of a bearer token, or None; it raises
        :class:`~consortia.errors.AuthenticationError` for a revoked or expired token.
    limit
        ``limit(path)``: the largest body accepted on that path, in bytes.
    rejected
        ``await rejected(principal, method, path, status, reason)``: records a refusal.
    """

    def __init__(
        self, app: ASGIApp, *, resolve: Resolver, limit: Limit, rejected: Rejected
    ) -> None:
        self.app = app
        self.resolve = resolve
        self.limit = limit
        self.rejected = rejected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        try:
            who = await self.resolve(bearer_token(scope))
        except AuthenticationError as exc:  # a known token, revoked or expired: say which
            await _answer(send, 401, str(exc), [(b"www-authenticate", b"Bearer")])
            return
        if who is None:
            await _answer(
                send, 401, "missing or invalid bearer token", [(b"www-authenticate", b"Bearer")]
            )
            return
        scope.setdefault("state", {})["principal"] = who
        limit = self.limit(scope["path"])
        length = _content_length(scope)
        if length is not None and (not length.isdigit() or int(length) > limit):
            status = 400 if not length.isdigit() else 413
            reason = (
                "the Content-Length header is not a number"
                if status == 400
                else f"the request body is larger than {limit} bytes"
            )
            await self.rejected(who, scope["method"], scope["path"], status, reason)
            await _answer(send, status, reason)
            return
        seen = 0
        tripped: BodyTooLarge | None = None

        async def bounded() -> Message:
            nonlocal seen, tripped
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    tripped = BodyTooLarge(limit)
                    raise tripped
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded, tracked)
        except BodyTooLarge as exc:
            if started:
                raise
            await self.rejected(who, scope["method"], scope["path"], 413, exc.detail)
            await _answer(send, 413, exc.detail)
            return
        if tripped is not None:  # the application answered the 413 itself (FastAPI)
            await self.rejected(who, scope["method"], scope["path"], 413, tripped.detail)


def _content_length(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.decode("latin-1").strip()
    return None


async def read_body(request: Request, length: str | None, limit: int) -> bytearray:
    """Read a request body into one buffer (sized from Content-Length), at most ``limit``."""
    if length is None:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HubError(413, f"contribution larger than {limit} bytes")
        return body
    size = int(length)
    body = bytearray(size)
    view = memoryview(body)
    pos = 0
    async for chunk in request.stream():
        end = pos + len(chunk)
        if end > size:
            raise HubError(400, "the body is longer than its Content-Length")
        view[pos:end] = chunk
        pos = end
    if pos != size:
        raise HubError(400, "the body is shorter than its Content-Length")
    return body
