"""Payloads the node fetches by reference: a round's public arrays, cached by digest.

A task names its round's public arrays by the SHA-256 and size of their packed
:mod:`consortia.wire` frame (:class:`~consortia.messages.BlobRef`).  The node fetches
the frame once from ``GET /v1/node/blobs/{sha256}``, refuses one larger than its
limit or than announced, checks the digest of what arrived, and keeps it in a
bounded LRU cache (:class:`BlobCache`): the next attempt, or another task of the
same round, needs no download.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import httpx

from consortia.errors import ProtocolError
from consortia.messages import BlobRef
from consortia.wire import CONTENT_TYPE, DEFAULT_MAX_BYTES

__all__ = ["BlobCache", "fetch_blob"]


class BlobCache:
    """A bounded LRU cache of verified blobs, by SHA-256 (hex).

    Parameters
    ----------
    max_bytes
        Most bytes kept (the least recently used blobs are dropped first; a blob
        larger than this is not kept).
    max_items
        Most blobs kept.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, max_items: int = 64) -> None:
        self.max_bytes = int(max_bytes)
        self.max_items = int(max_items)
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def get(self, digest: str) -> bytes | None:
        """The blob ``digest`` if cached (it becomes the most recently used)."""
        with self._lock:
            data = self._items.get(digest)
            if data is not None:
                self._items.move_to_end(digest)
            return data

    def put(self, digest: str, data: bytes) -> None:
        """Keep ``data`` (already verified against ``digest``)."""
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(digest, None)
            if old is not None:
                self._size -= len(old)
            self._items[digest] = data
            self._size += len(data)
            while self._size > self.max_bytes or len(self._items) > self.max_items:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


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
