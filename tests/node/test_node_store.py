"""The node's own database: durable secure-aggregation ledger, peer binding, private keys."""

from __future__ import annotations

import os

import numpy as np
import pytest

from consortia.errors import KeyVerificationError, SecureAggregationError, ValidationError
from consortia.node.identity import fingerprint, load_identity, read_private
from consortia.node.store import NodeStore
from consortia.privacy.keys import SiteIdentity
from consortia.privacy.secagg import RoundContext, SecureAggregator, SecureSite


def _ctx(ids: dict[str, SiteIdentity], attempt: int = 0) -> RoundContext:
    return RoundContext("study", 0, attempt, tuple(i.peer_key(n) for n, i in ids.items()))


def test_one_reveal_per_round_survives_a_node_restart(tmp_path):
    ids = {n: SiteIdentity.generate() for n in ("a", "b", "c")}
    store = NodeStore(tmp_path / "a")
    site = SecureSite("a", ids["a"], ledger=store.ledger)
    first = site.mask(_ctx(ids), {"x": np.ones(3)})
    seed = site.reveal(_ctx(ids))
    store.close()
    # a restarted node: a new process, the same database
    store = NodeStore(tmp_path / "a")
    again = SecureSite("a", ids["a"], ledger=store.ledger)
    assert again.reveal(_ctx(ids)) == seed  # the same attempt may be re-revealed
    with pytest.raises(SecureAggregationError, match="already finalised"):
        again.mask(_ctx(ids, attempt=1), {"x": np.ones(3)})
    store.close()
    assert first.data.dtype == np.uint64


def test_a_restarted_node_sends_the_same_masked_vector(tmp_path):
    ids = {n: SiteIdentity.generate() for n in ("a", "b", "c")}
    store = NodeStore(tmp_path / "a")
    v1 = SecureSite("a", ids["a"], ledger=store.ledger).mask(_ctx(ids), {"x": np.arange(4.0)})
    store.close()
    store = NodeStore(tmp_path / "a", fsync=False)
    v2 = SecureSite("a", ids["a"], ledger=store.ledger).mask(_ctx(ids), {"x": np.arange(4.0)})
    store.close()
    np.testing.assert_array_equal(v1.data, v2.data)  # idempotent retry: not double-counted
    # and the sum over the three sites is right
    agg = SecureAggregator(_ctx(ids))
    agg.add(v2)
    seeds = {
        "a": SecureSite("a", ids["a"], ledger=NodeStore(tmp_path / "a").ledger).reveal(_ctx(ids))
    }
    for n in ("b", "c"):
        s = SecureSite(n, ids[n])
        agg.add(s.mask(_ctx(ids), {"x": np.arange(4.0)}))
        seeds[n] = s.reveal(_ctx(ids))
    np.testing.assert_allclose(agg.finish(seeds)["x"], 3 * np.arange(4.0))


def test_unpinned_peers_are_not_trusted_by_default(tmp_path):
    store = NodeStore(tmp_path / "n")
    b, c = SiteIdentity.generate(), SiteIdentity.generate()
    peers = (b.peer_key("b"), c.peer_key("c"))
    # trust on first use is off: a peer nobody pinned is not trusted (a hub cannot enrol one)
    assert store.check_peers(peers, {}) == {}
    assert store.check_peers(peers, {"b": fingerprint(b.identity_public)}) == {
        "b": b.identity_public
    }
    # pins added by the owner (`consortia node peers add`) live in the node's database
    store.pins.add("c", fingerprint(c.identity_public))
    assert store.pins.all() == {"c": fingerprint(c.identity_public)}
    assert store.pins.remove("c") and not store.pins.remove("c")
    store.close()


def test_peer_identity_trust_on_first_use_and_pinning(tmp_path):
    store = NodeStore(tmp_path / "n")
    b, c = SiteIdentity.generate(), SiteIdentity.generate()
    peers = (b.peer_key("b"), c.peer_key("c"))
    tofu = {"trust_on_first_use": True}
    trusted = store.check_peers(peers, {}, **tofu)
    assert trusted == {"b": b.identity_public, "c": c.identity_public}
    # a hub substituting another identity (and masking key) for b is refused, even after a restart
    evil = SiteIdentity.generate().peer_key("b")
    with pytest.raises(KeyVerificationError, match="changed since it was first seen"):
        store.check_peers((evil, c.peer_key("c")), {}, **tofu)
    store.close()
    store = NodeStore(tmp_path / "n")
    with pytest.raises(KeyVerificationError, match="'b'"):
        store.check_peers((evil,), {}, **tofu)
    # a pinned fingerprint wins over first use, with or without it
    for kw in (tofu, {}):
        with pytest.raises(KeyVerificationError, match="pinned"):
            store.check_peers((c.peer_key("c"),), {"c": fingerprint(b.identity_public)}, **kw)
        assert store.check_peers((c.peer_key("c"),), {"c": fingerprint(c.identity_public)}, **kw)
    store.close()


def test_identity_is_private_and_stable(tmp_path):
    ident = load_identity(tmp_path)
    path = tmp_path / "identity.key"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_identity(tmp_path).identity_public == ident.identity_public
    os.chmod(path, 0o644)
    with pytest.raises(ValidationError, match="chmod 600"):
        read_private(path)
    with pytest.raises(ValidationError, match="enrol"):
        load_identity(tmp_path / "other", create=False)


def test_a_task_commits_its_ledger_change_and_audit_entry_together(tmp_path):
    ids = {n: SiteIdentity.generate() for n in ("a", "b", "c")}
    store = NodeStore(tmp_path / "a")
    site = SecureSite("a", ids["a"], ledger=store.ledger)
    # a failure before the record: neither the seed nor an audit entry is kept
    with pytest.raises(RuntimeError, match="boom"), store.ledger.deferred():
        site.mask(_ctx(ids), {"x": np.ones(3)})
        raise RuntimeError("boom")
    assert store.ledger.seeds("study", 0) == {} and len(store.audit) == 0
    # a recorded task: the seed and its audit entry are both on disk
    with store.ledger.deferred():
        first = site.mask(_ctx(ids), {"x": np.ones(3)})
        store.record("node:a", "release", {"study": "study", "round": 0})
    with store.ledger.deferred():
        seed = site.reveal(_ctx(ids))
        store.record("node:a", "reveal", {"study": "study", "round": 0})
    store.close()
    store = NodeStore(tmp_path / "a")
    assert [e.action for e in store.audit.entries()] == ["release", "reveal"]
    assert store.ledger.seeds("study", 0) == {0: seed} and store.ledger.revealed("study", 0) == 0
    again = SecureSite("a", ids["a"], ledger=store.ledger)
    assert again.reveal(_ctx(ids)) == seed
    with pytest.raises(SecureAggregationError, match="already finalised"):
        again.mask(_ctx(ids, attempt=1), {"x": np.ones(3)})
    assert store.audit.verify().ok
    store.close()
    assert first.data.dtype == np.uint64


def test_a_failed_record_leaves_no_seed_behind(tmp_path):
    ids = {n: SiteIdentity.generate() for n in ("a", "b", "c")}
    store = NodeStore(tmp_path / "a")
    site = SecureSite("a", ids["a"], ledger=store.ledger)
    with pytest.raises(ValidationError), store.ledger.deferred():
        site.mask(_ctx(ids), {"x": np.ones(3)})
        store.record("node:a", "release", {"bad": np.ones(1)})  # not JSON: the commit fails
    assert store.ledger.seeds("study", 0) == {}
    store.close()
    store = NodeStore(tmp_path / "a")
    assert store.ledger.seeds("study", 0) == {} and len(store.audit) == 0
    store.close()
