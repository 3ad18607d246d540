"""Reach a hub over HTTP(S): the node's and the researcher's transports.

Everything else goes through ``httpx``; a node's per-round posts (vector, seed,
refusal) go through :class:`~consortia.node.link.HubLink`, a lighter keep-alive
connection (one per thread: a node answers several tasks at once).  A network
failure becomes :class:`~consortia.errors.HubUnreachable` here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from consortia.errors import HubUnreachable, ProtocolError
from consortia.messages import (
    BlobRef,
    ContributionHeader,
    RefusalMessage,
    RevealMessage,
    ShareMessage,
)
from consortia.transport.base import (
    NodeTransport,
    Reply,
    ResearcherTransport,
    TaskKey,
    raise_for_status,
)
from consortia.transport.link import HubLink
from consortia.wire import CONTENT_TYPE, DEFAULT_MAX_BYTES

if TYPE_CHECKING:
    from consortia.node.payloads import BlobCache

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["HttpNodeTransport", "HttpResearcherTransport", "fetch_blob"]

log = logging.getLogger("consortia.node")

MAX_RETRY_AFTER = 10.0
"""Longest wait before a post the hub was too busy for is tried again, in seconds."""
MAX_BUSY = 3600.0
"""Longest a post is tried again while the hub says it is busy, in seconds."""


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    """Translate httpx's network errors into :class:`HubUnreachable`."""
    try:
        yield
    except httpx.TransportError as exc:
        raise HubUnreachable(f"cannot reach the hub at {url}: {exc}") from None


def _reply(r: httpx.Response) -> Reply:
    return Reply(r.status_code, r.content, dict(r.headers))


class HttpNodeTransport(NodeTransport):
    """A node's transport over HTTP(S).

    Parameters
    ----------
    url
        The hub's base URL.
    credential
        Returns the node's credential (read when first needed: a node that is
        not enrolled yet can still enrol).
    verify
        TLS verification: an SSL context (the hub's CA) or True for the system's.
    timeout
        Seconds to wait for an answer (longer than the long-poll).
    """

    def __init__(
        self,
        url: str,
        credential: Callable[[], str],
        *,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 50.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._credential = credential
        self._context = verify if isinstance(verify, ssl.SSLContext) else None
        self._timeout = float(timeout)
        self._client = httpx.Client(
            base_url=self.url, verify=verify, timeout=httpx.Timeout(timeout, connect=10)
        )
        self._local = threading.local()  # one keep-alive link per thread
        self._links: list[HubLink] = []
        self._links_lock = threading.Lock()
        self._stop = threading.Event()

    # ------------------------------------------------------------------ plumbing

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._credential()}"}

    def _link(self) -> HubLink:
        link = getattr(self._local, "link", None)
        if link is None:
            link = HubLink(self.url, ssl_context=self._context, timeout=self._timeout)
            self._local.link = link
            with self._links_lock:
                self._links.append(link)
        return link

    @staticmethod
    def _path(key: TaskKey, what: str) -> str:
        return (
            f"/v1/node/studies/{quote(key.study_id, safe='')}/rounds/{key.round_index}"
            f"/attempts/{key.attempt}/{what}"
        )

    def post(
        self,
        path: str,
        body: bytes | Sequence[Buffer],
        *,
        content_type: str = "application/json",
        wait: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply | None:
        """POST on this thread's keep-alive link, retried on network errors (None: gave up).

        ``body`` may be parts (see :func:`consortia.wire.pack_parts`), sent without
        being joined.  A hub whose upload slots are all busy answers ``503`` with
        ``Retry-After`` before the body is sent: the post is tried again after a
        random part of that delay (at most :data:`MAX_RETRY_AFTER` s each time, for at
        most :data:`MAX_BUSY` s in all), so the waiting nodes do not come back at once.
        """
        if wait is not None:
            path = f"{path}?wait={float(wait)!r}"
        sent = {**self._auth(), "Content-Type": content_type, **(headers or {})}
        busy_until = time.monotonic() + MAX_BUSY
        delays = iter((0.1, 0.3, 1.0, 2.0, None))
        link = self._link()
        while True:
            try:
                r = link.post(path, body, sent)
            except httpx.TransportError as exc:
                delay = next(delays, None)
                if delay is None or self._stop.is_set():
                    log.warning("could not reach the hub (%s); the task will come again", exc)
                    return None
                time.sleep(delay)
                continue
            after = r.retry_after() if r.status_code == 503 else None
            if after is None or time.monotonic() >= busy_until or self._stop.is_set():
                return r
            self._stop.wait(min(after, MAX_RETRY_AFTER) * random.uniform(0.1, 1.0))

    def _json_post(self, key: TaskKey, what: str, body: str, wait: float | None) -> Reply | None:
        return self.post(self._path(key, what), body.encode(), wait=wait)

    # ------------------------------------------------------------------ NodeTransport

    def enrol(self, token: str, name: str, peer_key: Mapping[str, str]) -> str:
        with _reaching(self.url):
            r = self._client.post(
                "/v1/enrol",
                json={"name": name, "peer_key": dict(peer_key)},
                headers={"Authorization": f"Bearer {token}"},
            )
        if r.status_code != 200:
            raise ProtocolError(f"enrolment refused ({r.status_code}): {_reply(r).detail()}")
        return str(r.json()["credential"])

    def publish(self, datasets: Mapping[str, Any]) -> None:
        with _reaching(self.url):
            r = self._client.put(
                "/v1/node/catalogue", json={"datasets": dict(datasets)}, headers=self._auth()
            )
        if r.status_code != 200:
            raise ProtocolError(f"catalogue refused ({r.status_code}): {_reply(r).detail()}")

    def poll(self, wait: float) -> list[dict[str, Any]]:
        with _reaching(self.url):
            r = self._client.get("/v1/node/tasks", params={"wait": wait}, headers=self._auth())
        if r.status_code != 200:
            raise ProtocolError(f"task poll refused ({r.status_code}): {_reply(r).detail()}")
        try:
            queue = r.json()
        except ValueError:
            raise ProtocolError("the task poll answer is not JSON") from None
        if not isinstance(queue, list):
            raise ProtocolError("the task poll answer is not a list of tasks")
        return queue

    def fetch_blob(self, ref: BlobRef, *, max_bytes: int) -> bytes:
        with _reaching(self.url):
            return fetch_blob(self._client, ref, self._auth(), max_bytes=max_bytes)

    def contribute(
        self,
        key: TaskKey,
        parts: Sequence[Buffer],
        header: ContributionHeader,
        *,
        wait: float = 0.0,
    ) -> Reply | None:
        return self.post(
            self._path(key, "contribution"),
            parts,
            content_type=CONTENT_TYPE,
            headers=header.to_headers(),
            wait=wait,
        )

    def reveal(self, key: TaskKey, msg: RevealMessage, *, wait: float = 0.0) -> Reply | None:
        return self._json_post(key, "reveal", msg.model_dump_json(), wait)

    def share(self, key: TaskKey, msg: ShareMessage, *, wait: float = 0.0) -> Reply | None:
        return self._json_post(key, "shares", msg.model_dump_json(), wait)

    def refuse(self, key: TaskKey, msg: RefusalMessage) -> Reply | None:
        return self._json_post(key, "refusal", msg.model_dump_json(), None)

    def pending(self, key: TaskKey, digest: str) -> Reply | None:
        return self._json_post(key, "pending", json.dumps({"digest": digest}), None)

    def heartbeat(self, key: TaskKey, progress: float | None = None) -> Reply:
        body = {} if progress is None else {"progress": float(progress)}
        with _reaching(self.url):
            r = self._client.post(self._path(key, "heartbeat"), json=body, headers=self._auth())
        return _reply(r)

    def report_budget(self, report: Mapping[str, Any]) -> Reply:
        with _reaching(self.url):
            r = self._client.put("/v1/node/budget", json=dict(report), headers=self._auth())
        return _reply(r)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._client.close()
        with self._links_lock:
            links, self._links = self._links, []
        for link in links:
            link.close()


class HttpResearcherTransport(ResearcherTransport):
    """The SDK's transport over HTTP(S).

    Parameters
    ----------
    url
        The hub's base URL.
    token
        The researcher's (or admin's) bearer token.
    verify
        TLS verification: an SSL context (the hub's CA) or True for the system's.
    """

    def __init__(self, url: str, token: str, *, verify: ssl.SSLContext | bool = True) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=httpx.Timeout(90, connect=10),
        )

    def _get(self, path: str, **params: Any) -> httpx.Response:
        with _reaching(self.url):
            return self._http.get(path, params=params or None)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with _reaching(self.url):
            r = self._http.request(method, path, **kwargs)
        if r.status_code != 200:
            raise_for_status(r.status_code, _reply(r).detail())
        return r.json()

    def whoami(self) -> dict[str, str]:
        return self._call("GET", "/v1/whoami")

    def catalogue(self) -> dict[str, dict[str, Any]]:
        return self._call("GET", "/v1/catalogue")

    def budget(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/budget")

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/nodes")

    def submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/studies", json=dict(request))

    def status(
        self, study_id: str, *, version: int | None = None, wait: float = 0.0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if wait:
            params["wait"] = wait
        if version is not None:
            params["version"] = version
        return self._call("GET", f"/v1/studies/{study_id}", params=params or None)

    def studies(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/studies")

    def cancel(self, study_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/studies/{study_id}/cancel")

    def rounds(self, study_id: str, start: int, limit: int) -> list[dict[str, Any]]:
        return self._call(
            "GET", f"/v1/studies/{study_id}/rounds", params={"start": start, "limit": limit}
        )

    def round_sums(self, study_id: str, round_index: int) -> bytes:
        r = self._get(f"/v1/studies/{study_id}/rounds/{round_index}/sums")
        if r.status_code != 200:
            raise ProtocolError(f"the hub answered {r.status_code} for round {round_index}")
        return r.content

    def result(self, study_id: str) -> tuple[bytes, str] | None:
        r = self._get(f"/v1/studies/{study_id}/result")
        if r.status_code == 404:  # not stored (or a hub older than stored results)
            return None
        if r.status_code != 200:
            raise ProtocolError(f"the hub answered {r.status_code} for the result of {study_id}")
        return r.content, r.headers.get("x-consortia-digest", "")

    def close(self) -> None:
        self._http.close()


def fetch_blob(
    client: httpx.Client,
    ref: BlobRef,
    headers: dict[str, str],
    *,
    cache: BlobCache | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> bytes:
    """The blob ``ref`` from the cache, or downloaded from the hub and verified.

    Parameters
    ----------
    client
        An HTTP client whose base URL is the hub.
    ref
        The blob's digest and size, as the task announced them.
    headers
        The node's authorisation header.
    cache
        Where verified blobs are kept (and looked up first).
    max_bytes
        The largest blob accepted (checked before the download starts).

    Raises
    ------
    ProtocolError
        The blob is larger than ``max_bytes``, the hub refused it, or what arrived is
        not a wire frame, is longer or shorter than announced, or does not match its digest.
    httpx.TransportError
        The hub could not be reached (the task comes again).
    """
    if cache is not None:
        data = cache.get(ref.sha256)
        if data is not None:
            return data
    short = ref.sha256[:12]
    if ref.size > max_bytes:
        raise ProtocolError(f"public arrays {short} are larger than {max_bytes} bytes")
    with client.stream("GET", f"/v1/node/blobs/{ref.sha256}", headers=headers) as r:
        if r.status_code != 200:
            raise ProtocolError(f"the hub refused the public arrays {short} ({r.status_code})")
        if r.headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
            raise ProtocolError(f"public arrays {short}: the answer is not a {CONTENT_TYPE}")
        length = r.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) != ref.size):
            raise ProtocolError(f"public arrays {short}: not of the announced size")
        buf = bytearray()
        for chunk in r.iter_bytes():
            if len(buf) + len(chunk) > ref.size:
                raise ProtocolError(f"public arrays {short}: longer than announced")
            buf += chunk
    if len(buf) != ref.size:
        raise ProtocolError(f"public arrays {short}: shorter than announced")
    if hashlib.sha256(buf).hexdigest() != ref.sha256:
        raise ProtocolError(f"public arrays {short} do not match their digest")
    data = bytes(buf)
    if cache is not None:
        cache.put(ref.sha256, data)
    return data
