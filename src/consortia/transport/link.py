"""The node's keep-alive connection for the calls it makes every round.

A node posts a masked vector and a seed every round.  Through ``httpx`` one such
post costs a node about 0.4 ms of CPU, through the standard library's
``http.client`` about 0.13 ms; with a node process per CPU-bound site and a
federation on few cores, that is a large share of the time of a round.  This
module keeps one ``http.client`` connection (TLS with the node's own context)
for those posts; everything else the node does goes through ``httpx``.

Failures are reported as :class:`httpx.TransportError` so that callers handle
both paths alike.  A request on a kept-alive connection that the hub closed
meanwhile is retried once on a new connection (every call sent this way is
idempotent at the hub).

A body may be given as parts (a frame's header, then the array's own buffer, see
:func:`consortia.wire.pack_parts`): they are sent one after the other, never joined
into one payload-sized copy.  A large body is announced first
(``Expect: 100-continue``) and sent only once the hub asks for it: a hub whose
upload slots are all busy answers at once (``503`` with ``Retry-After``), before a
byte of the body has left the node.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from consortia.transport.base import Reply

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["EXPECT_CONTINUE_MIN", "Answer", "HubLink"]

EXPECT_CONTINUE_MIN = 1 << 16
"""Bodies of at least this many bytes are announced (``Expect: 100-continue``) before sent."""

_MAX_LINE = 65536  # longest status or header line read from an interim answer
_MAX_INTERIM_BODY = 1 << 20  # longest body read from a final answer given before the body


Answer = Reply
"""The status and body of one answer (the part of ``httpx.Response`` the node uses)."""


class HubLink:
    """One keep-alive HTTP(S) connection to the hub.

    Parameters
    ----------
    base_url
        The hub's URL (``http://`` or ``https://``, optionally with a path prefix).
    ssl_context
        Context for ``https`` (default: the system's trust store, host names checked).
    timeout
        Seconds to wait for an answer (long enough for the hub's long-poll).
    connect_timeout
        Seconds to wait for a connection.
    continue_timeout
        Seconds to wait for the hub's ``100 Continue`` (or final answer) to an
        announced body; past it the body is sent anyway (RFC 9110, section 10.1.1).
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        continue_timeout: float = 30.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port or (443 if self._https else 80)
        self._prefix = url.path.rstrip("/")
        self._context = ssl_context
        self._timeout = float(timeout)
        self._connect_timeout = float(connect_timeout)
        self._continue_timeout = float(continue_timeout)
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._https:
            context = self._context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.settimeout(self._timeout)
        return conn

    def post(self, path: str, body: bytes | Sequence[Buffer], headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``path`` (relative to the hub's URL) and return the answer.

        ``body`` is bytes, or a sequence of buffers sent one after the other (never
        joined).  A body of :data:`EXPECT_CONTINUE_MIN` bytes or more is announced
        with ``Expect: 100-continue`` and sent only when the hub asks for it; a final
        answer given instead (for example ``503`` with ``Retry-After``) is returned
        without the body having been sent, and the connection is closed.

        Raises
        ------
        httpx.TransportError
            The hub could not be reached or the connection failed.
        """
        parts = [memoryview(body).cast("B")] if isinstance(body, bytes) else _views(body)
        size = sum(p.nbytes for p in parts)
        for retry in (False, True):
            fresh = self._conn is None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                conn.putrequest("POST", self._prefix + path, skip_accept_encoding=True)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.putheader("Content-Length", str(size))
                announce = size >= EXPECT_CONTINUE_MIN
                if announce:
                    conn.putheader("Expect", "100-continue")
                    conn.endheaders()
                    early = self._interim(conn)
                    if early is not None:  # answered before the body: it was never sent
                        self.close()
                        return early
                else:  # a small body leaves with the headers, in one send (one segment)
                    conn.endheaders(b"".join(parts))
                for part in parts if announce else ():
                    conn.send(part)
                r = conn.getresponse()
                content = r.read()
                if r.will_close:
                    self.close()
                return Answer(r.status, content, dict(r.getheaders()))
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if fresh or retry:
                    raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _interim(self, conn: http.client.HTTPConnection) -> Answer | None:
        """Wait for ``100 Continue`` (None) or the hub's final answer to an announced body.

        None also when nothing came within ``continue_timeout`` (the body is sent anyway).
        """
        sock = conn.sock
        assert sock is not None
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        if not pending and not select.select([sock], [], [], self._continue_timeout)[0]:
            return None
        # the hub sends nothing after "100 Continue" before it has the body, so this
        # buffered reader cannot swallow any part of the final answer
        with sock.makefile("rb") as fp:
            line = fp.readline(_MAX_LINE + 1)
            fields = line.split(None, 2)
            if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
                raise http.client.BadStatusLine(line.decode("latin-1", "replace")[:80])
            status = int(fields[1])
            found: dict[str, str] = {}
            while True:
                line = fp.readline(_MAX_LINE + 1)
                if len(line) > _MAX_LINE:
                    raise http.client.LineTooLong("header line")
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                found[name.strip().lower()] = value.strip()
            if status == 100:
                return None
            length = found.get("content-length", "0")
            size = min(int(length), _MAX_INTERIM_BODY) if length.isdigit() else 0
            return Answer(status, fp.read(size) if size else b"", found)

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _views(parts: Sequence[Buffer]) -> list[memoryview]:
    """Byte views of the parts of a body (no copy)."""
    return [memoryview(p).cast("B") for p in parts]
