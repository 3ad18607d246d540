"""Append-only, hash-chained audit log in a SQL database (SQLite or PostgreSQL).

Every entry records who (``actor``) did what (``action``) with which JSON ``details`` (names
and shapes of released arrays, study ids, policy...: never values).  Entries are numbered
``seq = 1, 2, ...`` and chained::

    hash_n = SHA-256(canonical JSON of {seq, timestamp, actor, action, details, prev_hash})
    prev_hash_n = hash_{n-1}        (64 zeros for the first entry)

With a secret ``key`` (kept in a file outside the database, see :func:`write_key_file`) every
entry also carries ``mac = HMAC-SHA256(key, hash)``, and a one-row *head record* (table
``<table>_head``) holds the last ``seq`` and ``hash`` with its own HMAC.  The head record is
also the lock that serialises appends: each append first updates it (a row lock in PostgreSQL,
the write lock in SQLite), then reads the previous hash, inserts the entry (``seq`` is the
primary key, so a forked chain is impossible) and moves the head, all in one transaction,
retried on lock contention.

The package's modules: :mod:`~consortia.audit._chain` (entry format, hashes, MACs),
:mod:`~consortia.audit._keys` (key files), :mod:`~consortia.audit._store` (tables, locks,
retried snapshot reads), :mod:`~consortia.audit._verify` (the verdict) and
:mod:`~consortia.audit._log` (:class:`AuditLog`).

Guarantees of :meth:`AuditLog.verify`
-------------------------------------
* Without a key: any edit, reordering or deletion of entries made *without* recomputing the
  hashes is detected (hash mismatch, broken chain, sequence gap), and a tail truncation is
  detected unless the head record is also rewritten.  Someone who can write to the database
  can rebuild a consistent chain, since SHA-256 is public: the hash chain alone protects
  against accidents and careless tampering only.
* With the key: an attacker without the key cannot forge, edit, reorder or delete any entry,
  nor truncate the tail, without ``verify`` failing at the first affected ``seq``, because
  neither entry MACs nor the head MAC can be recomputed.  The one attack left is a *rollback*:
  restoring an older copy of the whole database (or of the head row together with deleting
  the entries after it).  Detect it by publishing :meth:`AuditLog.head` elsewhere (a node
  sends its head with every contribution and the hub keeps them, see
  ``GET /v1/nodes/{node}/audit-heads``) and passing them as ``anchors`` to ``verify``.
  Emptying both tables (or deleting the whole database) is likewise only detectable from
  outside: an empty log with no head record is initialised afresh when next opened.
"""

from consortia.audit._chain import GENESIS_HASH, AuditEntry, canonical_json
from consortia.audit._keys import generate_key, read_key_file, write_key_file
from consortia.audit._log import AuditLog
from consortia.audit._store import audit_tables
from consortia.audit._verify import AuditReport

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditReport",
    "audit_tables",
    "canonical_json",
    "generate_key",
    "read_key_file",
    "write_key_file",
]
