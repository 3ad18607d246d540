import os

import numpy as np
import pytest
from scipy import stats

from consortia.errors import KeyVerificationError, ProtocolError, SecureAggregationError
from consortia.privacy import (
    FixedPoint,
    MemoryLedger,
    RoundContext,
    SecureAggregator,
    SecureSite,
    SiteIdentity,
)
from consortia.privacy.keys import PeerKey
from consortia.privacy.masking import apply_masks, stream


def make_sites(n):
    ids = {f"s{i}": SiteIdentity.generate() for i in range(n)}
    trusted = {k: v.identity_public for k, v in ids.items()}
    sites = {k: SecureSite(k, v, trusted=trusted, ledger=MemoryLedger()) for k, v in ids.items()}
    peers = tuple(v.peer_key(k) for k, v in ids.items())
    return sites, peers


def ctx(peers, study="st", rnd=0, attempt=0):
    return RoundContext(study, rnd, attempt, peers)


def test_masks_cancel_in_the_sum():
    sites, peers = make_sites(5)
    rng = np.random.default_rng(1)
    data = {k: {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=7)} for k in sites}
    c = ctx(peers)
    agg = SecureAggregator(c)
    for k, s in sites.items():
        agg.add(s.mask(c, data[k]))
    sums = agg.finish({k: s.reveal(c) for k, s in sites.items()})
    for name in ("a", "b"):
        expect = sum(d[name] for d in data.values())
        np.testing.assert_allclose(sums[name], expect, atol=5 * FixedPoint().resolution)
        assert sums[name].shape == expect.shape


def test_masked_vector_is_uniform_and_changes_between_rounds():
    sites, peers = make_sites(3)
    x = {"v": np.zeros(20_000)}  # all-zero data: anything visible is the mask
    s = sites["s0"]
    m0 = s.mask(ctx(peers, rnd=0), x).data
    m1 = s.mask(ctx(peers, rnd=1), x).data
    # top byte of each word should be uniform on 0..255
    for m in (m0, m1):
        top = (m >> np.uint64(56)).astype(int)
        counts = np.bincount(top, minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4
        low = (m & np.uint64(0xFF)).astype(int)
        assert stats.chisquare(np.bincount(low, minlength=256)).pvalue > 1e-4
    assert np.mean(m0 == m1) < 1e-3
    # and a different attempt of the same round gives fresh masks too
    m0b = s.mask(ctx(peers, rnd=2, attempt=1), x).data
    assert np.mean(m0b == m0) < 1e-3


def test_stream_is_deterministic_and_apply_masks_signs():
    key = os.urandom(32)
    a = stream(key, 1000)
    np.testing.assert_array_equal(a, stream(key, 1000))
    assert not np.array_equal(a, stream(os.urandom(32), 1000))
    v = np.arange(50_000, dtype=np.uint64)
    apply_masks(v, [(key, 1), (key, -1)])
    np.testing.assert_array_equal(v, np.arange(50_000, dtype=np.uint64))
    with pytest.raises(TypeError):
        apply_masks(np.zeros(3), [(key, 1)])


def test_aggregator_rejects_wrong_messages():
    sites, peers = make_sites(3)
    c = ctx(peers)
    agg = SecureAggregator(c)
    m = sites["s0"].mask(c, {"a": np.ones(3)})
    agg.add(m)
    with pytest.raises(ProtocolError, match="already contributed"):
        agg.add(m)
    other = sites["s1"].mask(ctx(peers, rnd=5), {"a": np.ones(3)})
    with pytest.raises(ProtocolError, match="another study, round or attempt"):
        agg.add(other)
    bad_layout = sites["s1"].mask(c, {"a": np.ones(4)})
    with pytest.raises(ProtocolError, match="names or shapes differ"):
        agg.add(bad_layout)
    with pytest.raises(SecureAggregationError, match="no contribution yet"):
        agg.finish({})


def test_substituted_key_is_refused():
    sites, peers = make_sites(3)
    mallory = SiteIdentity.generate()
    forged = list(peers)
    # the hub swaps s1's masking key for its own, re-signing with its own identity
    forged[1] = mallory.peer_key("s1")
    with pytest.raises(KeyVerificationError, match="not the enrolled one"):
        sites["s0"].mask(ctx(tuple(forged)), {"a": np.ones(2)})
    # or keeps s1's identity key but cannot produce a valid signature
    fake = PeerKey("s1", mallory.peer_key("s1").mask_key, peers[1].identity_key, peers[1].signature)
    forged[1] = fake
    with pytest.raises(KeyVerificationError, match="valid signature"):
        sites["s0"].mask(ctx(tuple(forged)), {"a": np.ones(2)})


def test_late_site_cannot_be_unmasked():
    """Attempt 0 loses s2; attempt 1 re-runs among survivors; s2's late vector arrives.

    Whatever order the aggregator asks in, it gets at most one unmasked sum for the round.
    """
    sites, peers = make_sites(4)
    x = {k: {"v": np.full(4, float(i + 1))} for i, k in enumerate(sites)}
    c0 = ctx(peers, attempt=0)
    agg0 = SecureAggregator(c0)
    for k in ("s0", "s1", "s3"):
        agg0.add(sites[k].mask(c0, x[k]))
    survivors = tuple(p for p in peers if p.site != "s2")
    c1 = ctx(survivors, attempt=1)
    agg1 = SecureAggregator(c1)
    for k in ("s0", "s1", "s3"):
        agg1.add(sites[k].mask(c1, x[k]))
    # the late vector of s2 now completes attempt 0 ...
    agg0.add(sites["s2"].mask(c0, x["s2"]))
    assert not agg0.missing
    # ... but the survivors, having contributed to attempt 1, never reveal attempt 0
    for k in ("s0", "s1", "s3"):
        with pytest.raises(SecureAggregationError, match="later attempt"):
            sites[k].reveal(c0)
    sums = agg1.finish({k: sites[k].reveal(c1) for k in ("s0", "s1", "s3")})
    np.testing.assert_allclose(sums["v"], np.full(4, 1.0 + 2.0 + 4.0))
    # and once revealed, a site never contributes to that round again
    with pytest.raises(SecureAggregationError, match="already finalised"):
        sites["s0"].mask(ctx(survivors, attempt=2), x["s0"])


def test_reveal_first_then_no_new_attempt():
    sites, peers = make_sites(3)
    c0 = ctx(peers)
    for s in sites.values():
        s.mask(c0, {"v": np.ones(2)})
    sites["s0"].reveal(c0)
    with pytest.raises(SecureAggregationError, match="already finalised"):
        sites["s0"].mask(ctx(peers, attempt=1), {"v": np.ones(2)})
    with pytest.raises(SecureAggregationError, match="did not contribute"):
        sites["s1"].reveal(ctx(peers, attempt=3))


def test_retry_of_same_attempt_is_identical():
    sites, peers = make_sites(3)
    c = ctx(peers)
    a = sites["s1"].mask(c, {"v": np.arange(5.0)})
    b = sites["s1"].mask(c, {"v": np.arange(5.0)})
    np.testing.assert_array_equal(a.data, b.data)


def test_identity_round_trip():
    ident = SiteIdentity.generate()
    again = SiteIdentity.from_bytes(ident.to_bytes())
    assert again.identity_public == ident.identity_public
    pk = ident.peer_key("x")
    assert PeerKey.from_json(pk.to_json()) == pk


def test_aggregator_restores_from_a_persisted_running_sum():
    sites, peers = make_sites(3)
    c = ctx(peers)
    first = SecureAggregator(c)
    first.add(sites["s0"].mask(c, {"v": np.arange(4.0)}))
    first.add(sites["s1"].mask(c, {"v": np.ones(4)}))
    # the hub persists (layout, masked_sum, received), crashes, and restores
    saved = (first.layout, first.masked_sum.copy(), sorted(first.received))
    with pytest.raises(ValueError):
        first.masked_sum[0] = 1  # a read-only view
    again = SecureAggregator.restore(c, *saved)
    again.add(sites["s2"].mask(c, {"v": np.full(4, 2.0)}))
    sums = again.finish({k: s.reveal(c) for k, s in sites.items()})
    np.testing.assert_allclose(sums["v"], np.arange(4.0) + 3.0)
    with pytest.raises(ProtocolError, match="not participants"):
        SecureAggregator.restore(c, saved[0], saved[1], ["zz"])
    with pytest.raises(ProtocolError, match="does not match its layout"):
        SecureAggregator.restore(c, saved[0], saved[1][:2], ["s0"])
    assert SecureAggregator(c).masked_sum is None


def test_finish_can_consume_the_running_sum():
    sites, peers = make_sites(3)
    c = ctx(peers)
    agg = SecureAggregator(c)
    for s in sites.values():
        agg.add(s.mask(c, {"v": np.ones(3)}))
    seeds = {k: s.reveal(c) for k, s in sites.items()}
    np.testing.assert_allclose(agg.finish(seeds)["v"], 3.0)  # non-consuming: repeatable
    np.testing.assert_allclose(agg.finish(seeds, consume=True)["v"], 3.0)
    assert agg.masked_sum is None
    with pytest.raises(SecureAggregationError, match="already finished"):
        agg.finish(seeds)
