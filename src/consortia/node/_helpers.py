"""Helpers of the node agent: TLS context, audit key, GC settling, release details."""

from __future__ import annotations

import gc
import ssl
from typing import Any

from consortia.node.config import NodeConfig
from consortia.node.identity import read_private
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task

__all__ = ["audit_key", "release_details", "settle_gc", "tls_verify"]


def tls_verify(config: NodeConfig) -> ssl.SSLContext | bool:
    if config.ca is not None:
        from consortia.certs import client_ssl_context

        return client_ssl_context(config.ca)
    return True


def release_details(worker: SiteWorker, task: Task, masked: Any) -> dict[str, Any]:
    """The audit details of a release: names and shapes, never values."""
    policy = worker.policy_for(task.dataset)
    return {
        "study": task.study_id,
        "round": task.round_index,
        "attempt": task.attempt,
        "step": task.step,
        "algorithm": task.algorithm.get("name"),
        "dataset": task.dataset,
        "researcher": task.researcher,
        "participants": [p.site for p in task.participants],
        "arrays": {name: list(shape) for name, shape in masked.layout.entries},
        "policy": policy.to_mapping(),
    }


def audit_key(config: NodeConfig) -> bytes | None:
    """The node's audit HMAC key from ``[node] audit_key_file`` (0600), or None."""
    if config.audit_key_file is None:
        return None
    from consortia.audit import read_key_file

    read_private(config.audit_key_file)  # refuses a key file that others can read
    return read_key_file(config.audit_key_file)


def settle_gc() -> None:
    """Move everything loaded at start (modules, datasets) out of the collector's reach.

    Answering a task allocates many short-lived objects; without this, the periodic
    full collections walk every long-lived object again and cost about a fifth of the
    node's CPU per round.
    """
    gc.collect()
    gc.freeze()
