"""The hub's settings and their defaults, written once.

Every default of a hub (how long a silent node is waited for, the largest contribution,
where it listens...) is a constant here; :class:`HubSettings`, the engine
(:class:`~consortia.hub.service.StudyEngine`), the command line (``consortia hub start``,
``python -m consortia.hub``) and :class:`~consortia.hub.process.HubProcess` all refer to
these constants instead of repeating the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from consortia._limits import DEFAULT_MAX_BYTES

__all__ = [
    "APPROVAL_TIMEOUT",
    "HOST",
    "LOG_LEVEL",
    "MAX_CONCURRENT_UPLOADS",
    "MAX_JSON_BODY",
    "MAX_PAYLOAD",
    "NODE_TIMEOUT",
    "PORT",
    "REVEAL_TIMEOUT",
    "HubSettings",
]

NODE_TIMEOUT = 30.0
"""Seconds a node may take to post its masked vector for an attempt before it is excluded."""

REVEAL_TIMEOUT = 120.0
"""Seconds a node may take to reveal its self-mask seed once every vector is in."""

MAX_PAYLOAD = DEFAULT_MAX_BYTES
"""Largest accepted contribution, in bytes (256 MiB, the wire format's default limit)."""

MAX_JSON_BODY = 2**20
"""Largest accepted body of any request other than a contribution, in bytes (1 MiB)."""

MAX_CONCURRENT_UPLOADS = 1
"""Contributions of more than 64 KiB read at once: the running sum and one body in memory."""

APPROVAL_TIMEOUT = 24 * 3600.0
"""Seconds a study waits for a node's data owner to approve it before it fails (a day)."""

HOST = "127.0.0.1"
"""Interface the hub listens on."""

PORT = 8443
"""TCP port the hub listens on."""

LOG_LEVEL = "warning"
"""Log level of the hub process."""


@dataclass(frozen=True)
class HubSettings:
    """Configuration of one hub.

    Attributes
    ----------
    db
        SQLAlchemy URL or a SQLite file path (WAL mode).
    node_timeout
        Seconds a node may take to post its masked vector before it is excluded.
    reveal_timeout
        Seconds a node may take to reveal its self-mask seed.
    max_payload
        Largest accepted contribution in bytes.
    max_concurrent_uploads
        Contributions of more than 64 KiB read at once (bounds hub memory whatever the
        number of nodes): the running sum and one body in memory, by default.  A node
        that announces its body (``Expect: 100-continue``) while every slot is taken
        waits at most ``consortia.hub.app.SLOT_WAIT`` seconds for one, else it is
        answered ``503`` with ``Retry-After`` before it sends a byte of its body, and
        tries again (see :meth:`consortia.node.link.HubLink.post`): nobody waits in a
        queue past its socket timeout, and no payload is sent twice.
    audit_key_file
        Optional file holding the audit HMAC key.
    approval_timeout
        Seconds a study waits for a node's data owner to approve it before it fails
        (nodes with ``approval = "manual"``; see :mod:`consortia.hub.approvals`).
    max_json_body
        Largest accepted body of any request other than a contribution, in bytes.
    """

    db: str
    node_timeout: float = NODE_TIMEOUT
    reveal_timeout: float = REVEAL_TIMEOUT
    max_payload: int = MAX_PAYLOAD
    max_concurrent_uploads: int = MAX_CONCURRENT_UPLOADS
    audit_key_file: str | None = None
    approval_timeout: float = APPROVAL_TIMEOUT
    max_json_body: int = MAX_JSON_BODY
