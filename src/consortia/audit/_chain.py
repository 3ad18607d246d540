"""The audit log's entry format: canonical JSON, the hash chain, MACs and :class:`AuditEntry`.

``hash_n = SHA-256(canonical JSON of {seq, timestamp, actor, action, details, prev_hash})``,
``prev_hash_1 = GENESIS_HASH``; with a key, ``mac = HMAC-SHA256(key, domain + hash)`` for
entries and ``HMAC-SHA256(key, domain + canonical JSON of [seq, hash])`` for the head record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from consortia.errors import ValidationError

__all__ = ["GENESIS_HASH", "AuditEntry", "canonical_json"]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry."""

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_MAX_LABEL = 200
_MAX_DETAILS = 1 << 20
_ENTRY_DOMAIN = b"consortia-audit-entry\x00"
_HEAD_DOMAIN = b"consortia-audit-head\x00"


def canonical_json(value: Any) -> str:
    """Serialise ``value`` as canonical JSON (sorted keys, no spaces, ASCII, no NaN).

    Raises
    ------
    ValidationError
        ``value`` is not JSON-serialisable (numpy arrays, NaN, sets...).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"audit details must be JSON-serialisable: {exc}") from exc


def _entry_hash(
    seq: int, timestamp: str, actor: str, action: str, details: Any, prev_hash: str
) -> str:
    payload = canonical_json(
        {
            "seq": seq,
            "timestamp": timestamp,
            "actor": actor,
            "action": action,
            "details": details,
            "prev_hash": prev_hash,
        }
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _mac(key: bytes, domain: bytes, message: str) -> str:
    return hmac.new(key, domain + message.encode("utf-8"), hashlib.sha256).hexdigest()


def _head_message(seq: int, hash_: str) -> str:
    return canonical_json([seq, hash_])


def _check_label(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_LABEL:
        raise ValidationError(f"audit {name} must be a non-empty string of <= {_MAX_LABEL} chars")
    return value


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry.

    Attributes
    ----------
    seq
        Position in the log, 1, 2, ...
    timestamp
        UTC time of the append, ISO 8601 with microseconds and a ``Z`` suffix (exactly the
        string that was hashed); :attr:`time` parses it.
    actor, action
        Who did what (for example ``"node:site-a"``, ``"release"``).
    details
        JSON details (names and shapes, ids, policy; never values).
    prev_hash, hash
        Hex SHA-256 of the previous entry and of this one.
    mac
        Hex HMAC-SHA256 of ``hash`` under the log's key, ``None`` for a log without key.
    """

    seq: int
    timestamp: str
    actor: str
    action: str
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    mac: str | None

    @property
    def time(self) -> datetime:
        """:attr:`timestamp` as an aware UTC datetime."""
        return datetime.strptime(self.timestamp, _TS_FORMAT).replace(tzinfo=UTC)


def _to_entry(row: Any) -> AuditEntry:
    """An :class:`AuditEntry` from a database row (unparseable details kept, truncated)."""
    try:
        details = json.loads(row.details)
    except ValueError:
        details = {"<unparseable>": str(row.details)[:200]}
    return AuditEntry(
        int(row.seq),
        str(row.timestamp),
        str(row.actor),
        str(row.action),
        details,
        str(row.prev_hash),
        str(row.hash),
        None if row.mac is None else str(row.mac),
    )
