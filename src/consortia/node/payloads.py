"""Payloads the node fetches by reference: a round's public arrays, cached by digest.

A task names its round's public arrays by the SHA-256 and size of their packed
:mod:`consortia.wire` frame (:class:`~consortia.messages.BlobRef`).  The node fetches
the frame once from ``GET /v1/node/blobs/{sha256}``, refuses one larger than its
limit or than announced, checks the digest of what arrived, and keeps it in a
bounded LRU cache (:class:`BlobCache`): the next attempt, or another task of the
same round, needs no download.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from consortia.transport.http import fetch_blob

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
