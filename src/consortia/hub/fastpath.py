"""A pure ASGI fast path in front of FastAPI for the calls every node makes every round.

A node posts a masked vector and a seed every round; with FastAPI's routing and
dependency resolution these two calls cost the hub more than the work they ask
for.  :class:`FastPath` lets a handler (built in :func:`consortia.hub.app.create_app`)
answer a well-formed call of a known node directly, and hands everything else to
FastAPI unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HOT_PATH", "FastPath", "bearer_token", "wait_param"]

Handler = Callable[[Scope, Receive, Send], Awaitable["list[Message] | None"]]

HOT_PATH = re.compile(
    r"/v1/node/studies/(?P<study>[^/]+)/rounds/(?P<round>[0-9]{1,9})"
    r"/attempts/(?P<attempt>[0-9]{1,9})/(?P<kind>contribution|reveal)"
)


def wait_param(query: bytes) -> float | None:
    """The ``wait`` query parameter if the query holds only a valid one (else None)."""
    if not query:
        return 0.0
    name, _, value = query.decode("latin-1").partition("=")
    if name != "wait" or "&" in value:
        return None
    try:
        wait = float(value)
    except ValueError:
        return None
    return wait if 0 <= wait <= 60 else None


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


class FastPath:
    """ASGI middleware: lets ``handler`` serve a POST first, FastAPI otherwise.

    ``handler(scope, receive, send)`` returns None when it answered, or the
    request messages it consumed before declining (replayed to the application).
    """

    def __init__(self, app: ASGIApp, handler: Handler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        consumed = await self.handler(scope, receive, send)
        if consumed is None:
            return
        if not consumed:
            await self.app(scope, receive, send)
            return

        async def replay() -> Message:
            return consumed.pop(0) if consumed else await receive()

        await self.app(scope, replay, send)
