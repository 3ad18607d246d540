"""Verification of an audit log read in one snapshot: the chain, the MACs, the head, anchors."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from consortia.audit._chain import (
    _ENTRY_DOMAIN,
    _HEAD_DOMAIN,
    GENESIS_HASH,
    _entry_hash,
    _head_message,
    _mac,
    canonical_json,
)

__all__ = ["AuditReport"]


@dataclass(frozen=True)
class AuditReport:
    """The verdict of :meth:`AuditLog.verify`.

    Attributes
    ----------
    ok
        ``True`` when the log is intact.
    n_entries
        Entries read.
    first_bad_seq
        The first sequence number found edited, missing, forged or out of place (for a
        truncated tail, the first missing one); ``None`` when intact.
    reason
        One line explaining the verdict.
    """

    ok: bool
    n_entries: int
    first_bad_seq: int | None
    reason: str

    def __str__(self) -> str:
        return ("OK: " if self.ok else "TAMPERED: ") + self.reason


def _verify_rows(
    key: bytes | None,
    pins: dict[int, str],
    head: tuple[int, str, str | None] | None,
    rows: Iterator[Any],
) -> AuditReport:
    """Check the entry ``rows`` (in ``seq`` order) against each other, the ``head`` record
    read in the same snapshot, the ``key``'s MACs and the anchors ``pins`` (seq -> hash)."""
    chain = _ChainCheck(key, pins)
    bad = chain.feed(rows)
    if bad is not None:
        return bad
    last = chain.last_seq
    if head is None:
        return chain.bad(last + 1, "the head record is missing or duplicated")
    head_seq, head_hash, head_mac = head
    if key is not None:
        want = _mac(key, _HEAD_DOMAIN, _head_message(head_seq, head_hash))
        if head_mac is None or not hmac.compare_digest(str(head_mac), want):
            return chain.bad(min(head_seq, last) + 1, "the head record has an invalid MAC")
    if head_seq > last:
        return chain.bad(
            last + 1, f"the log was truncated: head says {head_seq} entries, {last} remain"
        )
    if head_seq < last:
        return chain.bad(head_seq + 1, f"entries after the head ({head_seq}) were added")
    if head_hash != chain.prev_hash:
        return chain.bad(last, f"entry {last} does not match the head record")
    if chain.pins and max(chain.pins) > last:
        lost = max(chain.pins)
        return chain.bad(last + 1, f"the log was truncated: it lost entry {lost} given as anchor")
    n = chain.n
    checked = "hash chain and MACs verified" if key else "hash chain verified"
    if key is None:
        checked += ", no key: MACs not checked"
    return AuditReport(True, n, None, f"intact: {n} entries, {checked}")


class _ChainCheck:
    """Incremental verification of entries fed in ``seq`` order."""

    def __init__(self, key: bytes | None, pins: dict[int, str]) -> None:
        self.key = key
        self.pins = {seq: h for seq, h in pins.items() if seq > 0}
        self.prev_hash = GENESIS_HASH
        self.last_seq = 0
        self.n = 0

    def bad(self, seq: int, reason: str) -> AuditReport:
        return AuditReport(False, self.n, seq, reason)

    def feed(self, rows: Iterator[Any]) -> AuditReport | None:
        """Check ``rows``; return the failure report, or ``None`` if they all verify."""
        for row in rows:
            seq, expected = int(row.seq), self.last_seq + 1
            if seq != expected:
                if seq > expected:
                    return self.bad(expected, f"entry {expected} is missing (next is {seq})")
                return self.bad(seq, f"entry {seq} is out of order")
            self.n += 1
            try:
                details = json.loads(row.details)
                if canonical_json(details) != row.details:
                    raise ValueError("not canonical")
                computed = _entry_hash(
                    seq, row.timestamp, row.actor, row.action, details, row.prev_hash
                )
            except (ValueError, TypeError):  # ValidationError is a ValueError
                return self.bad(seq, f"entry {seq} has altered details")
            if computed != row.hash:
                return self.bad(seq, f"entry {seq} was edited (its hash does not match)")
            if row.prev_hash != self.prev_hash:
                return self.bad(seq, f"entry {seq} does not chain to entry {seq - 1}")
            if self.key is not None:
                if row.mac is None:
                    return self.bad(seq, f"entry {seq} has no MAC (forged or written without key)")
                if not hmac.compare_digest(str(row.mac), _mac(self.key, _ENTRY_DOMAIN, row.hash)):
                    return self.bad(seq, f"entry {seq} has an invalid MAC (forged or re-hashed)")
            pinned = self.pins.get(seq)
            if pinned is not None and row.hash != pinned:
                return self.bad(seq, f"entry {seq} differs from the anchor (rewritten)")
            self.prev_hash = str(row.hash)
            self.last_seq = seq
        return None
