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
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = ["Answer", "HubLink"]


class Answer:
    """The status and body of one answer (the part of ``httpx.Response`` the node uses)."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.content.decode("utf-8", "replace")


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
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
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

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST ``body`` to ``path`` (relative to the hub's URL) and return the answer.

        Raises
        ------
        httpx.TransportError
            The hub could not be reached or the connection failed.
        """
        for retry in (False, True):
            fresh = self._conn is None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.request("POST", self._prefix + path, body=body, headers=headers)
                r = self._conn.getresponse()
                content = r.read()
                if r.will_close:
                    self.close()
                return Answer(r.status, content)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if fresh or retry:
                    raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the connection (a later call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
