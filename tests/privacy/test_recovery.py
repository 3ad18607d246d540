"""Liveness at reveal: survivors rebuild the seed of a site that died after its vector.

And a hub that lies about who is in the sum, replays, tampers or asks for too much
gets nothing.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from consortia.errors import (
    ProtocolError,
    SecretSharingError,
    SecureAggregationError,
    ValidationError,
)
from consortia.privacy import (
    MemoryLedger,
    Reveal,
    RoundContext,
    SecureAggregator,
    SecureSite,
    SeedShares,
    SiteIdentity,
)
from consortia.privacy.recovery import CIPHERTEXT_BYTES


def make_sites(n: int):
    ids = {f"s{i}": SiteIdentity.generate() for i in range(n)}
    trusted = {k: v.identity_public for k, v in ids.items()}
    sites = {k: SecureSite(k, v, trusted=trusted, ledger=MemoryLedger()) for k, v in ids.items()}
    keys = {k: v.peer_key(k) for k, v in ids.items()}
    return sites, keys


def ctx(keys, names=None, rnd=0, attempt=0, **kw):
    names = sorted(keys) if names is None else names
    return RoundContext("st", rnd, attempt, tuple(keys[n] for n in names), **kw)


def data(names, size=1000):
    rng = np.random.default_rng(7)
    # integers and multiples of 1/8: exactly representable, so the sum is exact
    return {
        n: {"a": rng.integers(-1000, 1000, size) / 8.0, "b": rng.integers(0, 9, (3, 4))}
        for n in names
    }


def contribute(sites, c, x, names=None):
    agg = SecureAggregator(c)
    out = {}
    for n in names or c.sites:
        m = sites[n].mask(c, x[n])
        # through the hub: the share bundle is stored and forwarded as JSON
        bundle = SeedShares.from_json(json.loads(json.dumps(m.shares.to_json())))
        assert bundle == m.shares
        agg.add(m)
        out[n] = bundle
    return agg, out


def ask(site, c, missing, bundles):
    """What a hub sends a survivor: the missing sites and their ciphertexts addressed to it."""
    shares = {j: bundles[j].ciphertexts[site.site] for j in missing}
    reveal = site.reveal_and_share(c, missing, shares)
    return Reveal.from_json(json.loads(json.dumps(reveal.to_json())))  # over the wire


def test_five_sites_one_dies_after_its_vector_survivors_finish_exactly():
    sites, keys = make_sites(5)
    c = ctx(keys)
    assert c.threshold == 3  # the default: a majority of 5
    x = data(c.sites)
    agg, bundles = contribute(sites, c, x)
    dead = "s2"
    survivors = [n for n in c.sites if n != dead]
    reveals = {n: ask(sites[n], c, {dead}, bundles) for n in survivors}
    assert all(set(r.shares) == {dead} for r in reveals.values())
    seeds = {n: r.seed for n, r in reveals.items()}
    recovered = agg.finish(seeds, shares={dead: {n: r.shares[dead] for n, r in reveals.items()}})
    for name in ("a", "b"):
        np.testing.assert_array_equal(recovered[name], sum(x[n][name] for n in c.sites))
    # exactly t shares are enough, and the total is the no-dropout total bit for bit
    three = {n: reveals[n].shares[dead] for n in survivors[:3]}
    again = agg.finish(seeds, shares={dead: three})
    everyone = agg.finish({**seeds, dead: sites[dead].reveal(c)})  # had it lived
    for name in ("a", "b"):
        assert again[name].tobytes() == everyone[name].tobytes() == recovered[name].tobytes()


def test_fewer_than_t_shares_is_a_typed_error():
    sites, keys = make_sites(5)
    c = ctx(keys)
    agg, bundles = contribute(sites, c, data(c.sites))
    reveals = {n: ask(sites[n], c, {"s4"}, bundles) for n in ("s0", "s1")}
    with pytest.raises(SecretSharingError, match="'s4'.*2 shares cannot reconstruct"):
        agg.finish(
            {n: r.seed for n, r in reveals.items()}
            | {"s2": sites["s2"].reveal(c), "s3": sites["s3"].reveal(c)},
            shares={"s4": {n: r.shares["s4"] for n, r in reveals.items()}},
        )
    with pytest.raises(SecureAggregationError, match="seed of every participant"):
        agg.finish({n: r.seed for n, r in reveals.items()})  # neither seed nor shares


def test_a_hub_cannot_get_shares_of_a_site_whose_vector_it_did_not_receive():
    """s4 dies before its vector of attempt 1: its seed shares of attempt 1 never exist."""
    sites, keys = make_sites(5)
    c0 = ctx(keys, rnd=1)
    _, old = contribute(sites, c0, data(c0.sites))  # round 1, attempt 0: s4 sent everything
    # round 1 is re-run as attempt 1 among the same five (say the hub lost a vector);
    # s4 dies before sending anything
    c1 = ctx(keys, rnd=1, attempt=1)
    contribute(sites, c1, data(c1.sites), names=["s0", "s1", "s2", "s3"])
    s0 = sites["s0"]
    with pytest.raises(SecureAggregationError, match="no share from site 's4'"):
        s0.reveal_and_share(c1, {"s4"}, {})
    with pytest.raises(SecureAggregationError, match="does not authenticate"):  # replayed
        s0.reveal_and_share(c1, {"s4"}, {"s4": old["s4"].ciphertexts["s0"]})
    with pytest.raises(SecureAggregationError, match="does not authenticate"):  # forged
        s0.reveal_and_share(c1, {"s4"}, {"s4": bytes(CIPHERTEXT_BYTES)})
    # nothing was released or recorded: s0 still reveals attempt 1 normally
    assert sites["s0"].ledger.revealed("st", 1) is None
    assert s0.reveal_and_share(c1).seed == s0.reveal(c1)


def test_tampered_misaddressed_and_wrong_attempt_shares_are_refused():
    sites, keys = make_sites(4)
    c = ctx(keys)
    _, bundles = contribute(sites, c, data(c.sites))
    ct = bytearray(bundles["s3"].ciphertexts["s0"])
    ct[-20] ^= 1
    with pytest.raises(SecureAggregationError, match="does not authenticate"):
        sites["s0"].reveal_and_share(c, {"s3"}, {"s3": bytes(ct)})
    with pytest.raises(SecureAggregationError, match="does not authenticate"):  # for s1
        sites["s0"].reveal_and_share(c, {"s3"}, {"s3": bundles["s3"].ciphertexts["s1"]})
    with pytest.raises(SecureAggregationError, match="malformed"):
        sites["s0"].reveal_and_share(c, {"s3"}, {"s3": b"short"})
    # a share of another attempt: attempt 1 of the same round, same sites
    c1 = ctx(keys, attempt=1)
    for n in ("s0", "s3"):
        sites[n].mask(c1, data(c1.sites)[n])
    with pytest.raises(SecureAggregationError, match="does not authenticate"):
        sites["s0"].reveal_and_share(c1, {"s3"}, {"s3": bundles["s3"].ciphertexts["s0"]})


def test_aggregator_refuses_shares_of_another_attempt_and_wrong_seeds():
    sites, keys = make_sites(4)
    c = ctx(keys, rnd=3)
    agg, _ = contribute(sites, c, data(c.sites))
    # the same four sites in another round: valid shares of another seed
    c_other = ctx(keys, rnd=4)
    _, other = contribute(sites, c_other, data(c.sites))
    stale = {n: ask(sites[n], c_other, {"s3"}, other).shares["s3"] for n in ("s0", "s1", "s2")}
    seeds = {n: sites[n].reveal(c) for n in ("s0", "s1", "s2")}
    with pytest.raises(SecretSharingError, match="commitment"):
        agg.finish(seeds, shares={"s3": stale})
    with pytest.raises(SecretSharingError, match="held by 's1' has the wrong index"):
        agg.finish(seeds, shares={"s3": {"s0": stale["s0"], "s1": stale["s0"], "s2": stale["s2"]}})
    with pytest.raises(SecretSharingError, match="cannot hold a share"):
        agg.finish(seeds, shares={"s3": {"s3": stale["s0"]}})
    # a site that reveals a wrong seed is caught by its commitment too
    with pytest.raises(SecureAggregationError, match="'s0' does not match its commitment"):
        agg.finish({**seeds, "s0": bytes(32), "s3": sites["s3"].reveal(c)})


def test_a_hub_asking_twice_with_different_claims():
    sites, keys = make_sites(5)
    c0 = ctx(keys)
    _, b0 = contribute(sites, c0, data(c0.sites))
    s0 = sites["s0"]
    # a site never "holds" a share of its own seed, nor of a stranger's
    with pytest.raises(SecureAggregationError, match="own seed"):
        s0.reveal_and_share(c0, {"s0"}, {"s0": b0["s1"].ciphertexts["s0"]})
    with pytest.raises(SecureAggregationError, match="not participants"):
        s0.reveal_and_share(c0, {"mallory"}, {})
    # first claim: s4's seed is missing; then s3's too (it died meanwhile): the same
    # attempt, a growing set, the same seed: a retry that reveals nothing new
    r1 = s0.reveal_and_share(c0, {"s4"}, {"s4": b0["s4"].ciphertexts["s0"]})
    r2 = s0.reveal_and_share(c0, {"s3", "s4"}, {j: b0[j].ciphertexts["s0"] for j in ("s3", "s4")})
    assert r1.seed == r2.seed and r1.shares["s4"] == r2.shares["s4"]
    # another claim: "attempt 0 failed, re-run without s4" -- s0 has finalised attempt 0
    c1 = ctx(keys, names=["s0", "s1", "s2", "s3"], attempt=1)
    with pytest.raises(SecureAggregationError, match="already finalised"):
        s0.mask(c1, data(c1.sites)["s0"])
    # and s1, which did join attempt 1, gives nothing more of attempt 0
    sites["s1"].mask(c1, data(c1.sites)["s1"])
    with pytest.raises(SecureAggregationError, match="later attempt"):
        sites["s1"].reveal_and_share(c0, {"s4"}, {"s4": b0["s4"].ciphertexts["s1"]})
    with pytest.raises(SecureAggregationError, match="not participants"):  # s4 not in 1
        sites["s1"].reveal_and_share(c1, {"s4"}, {"s4": b0["s4"].ciphertexts["s1"]})


def test_a_hub_splitting_the_sites_never_unmasks_two_attempts():
    """The hub tells s0, s1, s2 that attempt 0 finished (they reveal, with shares of s3
    and s4) and tells s3, s4 that it failed and re-runs among them: the two sums would
    give s0 + s1 + s2.  s3 and s4 refuse the re-run: it leaves out 3 of attempt 0's
    5 participants, as many as the threshold."""
    sites, keys = make_sites(5)
    c0 = ctx(keys)
    x = data(c0.sites)
    agg0, b0 = contribute(sites, c0, x)
    reveals = {n: ask(sites[n], c0, {"s3", "s4"}, b0) for n in ("s0", "s1", "s2")}
    c1 = ctx(keys, names=["s3", "s4"], attempt=1)
    for n in ("s3", "s4"):
        with pytest.raises(SecureAggregationError, match="leaves out 3 of the 5"):
            sites[n].mask(c1, x[n])
    # the one sum of the round: attempt 0, rebuilt from the shares of s0, s1, s2
    sums = agg0.finish(
        {n: r.seed for n, r in reveals.items()},
        shares={j: {n: r.shares[j] for n, r in reveals.items()} for j in ("s3", "s4")},
    )
    np.testing.assert_array_equal(sums["a"], sum(x[n]["a"] for n in c0.sites))
    # a real dropout re-run (in another round) that leaves out one site is still fine
    c2 = ctx(keys, names=["s1", "s2", "s3", "s4"], rnd=1, attempt=1)
    assert sites["s3"].mask(ctx(keys, rnd=1), x["s3"]) is not None
    assert sites["s3"].mask(c2, x["s3"]) is not None  # leaves out 1 < 3


def test_rounds_of_one_or_two_cannot_recover():
    sites, keys = make_sites(2)
    c = ctx(keys)
    assert c.threshold is None
    m = sites["s0"].mask(c, {"v": np.ones(3)})
    assert m.shares is None
    with pytest.raises(SecureAggregationError, match="fewer than 3 participants"):
        sites["s0"].reveal_and_share(c, {"s1"}, {"s1": bytes(CIPHERTEXT_BYTES)})
    with pytest.raises(ValidationError, match="cannot recover"):
        ctx(keys, recovery_threshold=2)
    sites5, keys5 = make_sites(5)
    for bad in (1, 5, True):
        with pytest.raises(ValidationError, match="recovery_threshold"):
            ctx(keys5, recovery_threshold=bad)
    assert ctx(keys5, recovery_threshold=4).threshold == 4
    c_off = ctx(keys5, recovery_threshold=0)
    assert c_off.threshold is None and sites5["s0"].mask(c_off, {"v": np.ones(2)}).shares is None


def test_the_aggregator_checks_the_bundles_it_receives():
    sites, keys = make_sites(3)
    c = ctx(keys)
    m = sites["s0"].mask(c, {"v": np.ones(3)})
    agg = SecureAggregator(ctx(keys, recovery_threshold=0))
    with pytest.raises(ProtocolError, match="threshold"):
        agg.add(m)
    stolen = dataclasses.replace(m, shares=sites["s1"].mask(c, {"v": np.ones(3)}).shares)
    with pytest.raises(ProtocolError, match="another site's seed shares"):
        SecureAggregator(c).add(stolen)
    short = dataclasses.replace(
        m, shares=dataclasses.replace(m.shares, ciphertexts={"s1": m.shares.ciphertexts["s1"]})
    )
    with pytest.raises(ProtocolError, match="every other participant"):
        SecureAggregator(c).add(short)
    # a restored aggregator (hub restart) recovers from the persisted bundles
    agg = SecureAggregator(c)
    agg.add(m)
    for n in ("s1", "s2"):
        agg.add(sites[n].mask(c, {"v": np.ones(3)}))
    back = SecureAggregator.restore(
        c, agg.layout, agg.masked_sum, agg.received, bundles=agg.bundles
    )
    reveals = {
        n: sites[n].reveal_and_share(c, {"s0"}, {"s0": m.shares.ciphertexts[n]})
        for n in ("s1", "s2")
    }
    out = back.finish(
        {n: r.seed for n, r in reveals.items()},
        shares={"s0": {n: r.shares["s0"] for n, r in reveals.items()}},
    )
    np.testing.assert_array_equal(out["v"], np.full(3, 3.0))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: o.pop("commitment"),
        lambda o: o.update(threshold="3"),
        lambda o: o.update(commitment="zz"),
        lambda o: o.update(ciphertexts={"s1": "00"}),
        lambda o: o.update(ciphertexts=[1]),
        lambda o: o.update(sender=""),
    ],
)
def test_seed_shares_from_untrusted_json(mutate):
    sites, keys = make_sites(3)
    obj = sites["s0"].mask(ctx(keys), {"v": np.ones(1)}).shares.to_json()
    mutate(obj)
    with pytest.raises(ValidationError):
        SeedShares.from_json(obj)
    with pytest.raises(ValidationError):
        Reveal.from_json({"site": "s0"})
