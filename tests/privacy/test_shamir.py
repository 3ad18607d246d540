"""Shamir secret sharing: any t of n reconstruct, t-1 say nothing, malformed input refused."""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consortia.errors import SecretSharingError
from consortia.privacy.shamir import PRIME, SHARE_BYTES, Share, combine, split


@st.composite
def _sharing(draw):
    n = draw(st.integers(1, 9))
    t = draw(st.integers(1, n))
    secret = draw(st.binary(min_size=32, max_size=32))
    subset = draw(st.permutations(range(n)).map(lambda p: sorted(p[: draw(st.integers(t, n))])))
    return n, t, secret, subset


@settings(max_examples=60, deadline=None)
@given(_sharing())
def test_any_t_of_n_shares_reconstruct(case):
    n, t, secret, subset = case
    shares = split(secret, threshold=t, shares=n)
    assert [s.index for s in shares] == list(range(1, n + 1))
    assert combine([shares[i] for i in subset], threshold=t) == secret


def _interpolate(points, x):
    total = 0
    for j, (xj, yj) in enumerate(points):
        num = den = 1
        for m, (xm, _) in enumerate(points):
            if m != j:
                num, den = num * (x - xm) % PRIME, den * (xj - xm) % PRIME
        total = (total + yj * num * pow(den, -1, PRIME)) % PRIME
    return total


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda t: st.tuples(st.just(t), st.integers(t, 8), st.binary(min_size=32, max_size=32))
    ),
    st.binary(min_size=32, max_size=32),
)
def test_t_minus_one_shares_are_consistent_with_every_secret(case, candidate):
    """t-1 shares plus any candidate secret lie on one polynomial of degree t-1, and the
    shares that polynomial gives elsewhere reconstruct the candidate: the t-1 shares
    rule no secret out."""
    t, n, secret = case
    shares = split(secret, threshold=t, shares=n)
    seen = shares[: t - 1]
    points = [(0, int.from_bytes(candidate, "big"))] + [(s.index, s.value) for s in seen]
    forged = [Share(i, _interpolate(points, i)) for i in range(t, n + 1)]
    assert all(_interpolate(points, s.index) == s.value for s in seen)
    assert combine(seen + forged[:1], threshold=t) == candidate
    if n > t:  # and the completed set is consistent, so nothing flags it
        assert combine(seen + forged, threshold=t) == candidate


def test_shares_change_between_splits_and_round_trip_as_bytes():
    secret = secrets.token_bytes(32)
    a, b = split(secret, threshold=3, shares=5), split(secret, threshold=3, shares=5)
    assert [s.value for s in a] != [s.value for s in b]  # fresh coefficients each time
    raw = [s.to_bytes() for s in a]
    assert all(len(r) == SHARE_BYTES for r in raw)
    assert combine([Share.from_bytes(r) for r in raw[2:]], threshold=3) == secret


def test_fewer_than_t_duplicates_and_inconsistent_shares_are_refused():
    secret = secrets.token_bytes(32)
    shares = split(secret, threshold=3, shares=5)
    with pytest.raises(SecretSharingError, match="2 shares cannot reconstruct"):
        combine(shares[:2], threshold=3)
    with pytest.raises(SecretSharingError, match="given twice"):
        combine([shares[0], shares[1], shares[1]], threshold=3)
    with pytest.raises(SecretSharingError, match="given twice"):  # same index, other value
        combine([shares[0], shares[1], Share(2, (shares[1].value + 1) % PRIME)], threshold=3)
    bad = Share(shares[3].index, (shares[3].value + 1) % PRIME)
    with pytest.raises(SecretSharingError, match="inconsistent"):
        combine([*shares[:3], bad], threshold=3)
    # exactly t shares with one altered: the result does not fit a 32-byte secret
    # (probability 2**-265 that it does); the AEAD and the commitment stop it first
    with pytest.raises(SecretSharingError, match="does not fit"):
        combine([shares[0], shares[1], bad], threshold=3)
    # a wrong (lower) threshold on exactly that many shares gives garbage: refused too
    with pytest.raises(SecretSharingError, match="does not fit"):
        combine(shares[:2], threshold=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0, "shares": 3}, "threshold <= shares"),
        ({"threshold": 4, "shares": 3}, "threshold <= shares"),
        ({"threshold": 2, "shares": 70_000}, "shares <="),
        ({"threshold": True, "shares": 3}, "integer"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(SecretSharingError, match=match):
        split(b"x" * 32, **kwargs)


def test_malformed_shares_are_refused():
    with pytest.raises(SecretSharingError, match="exactly"):
        Share.from_bytes(b"\x00" * 10)
    with pytest.raises(SecretSharingError, match="index"):
        Share.from_bytes(b"\x00\x00" + b"\x01" * (SHARE_BYTES - 2))  # index 0 is the secret
    with pytest.raises(SecretSharingError, match="element of the field"):
        Share.from_bytes(b"\x00\x01" + b"\xff" * (SHARE_BYTES - 2))
    with pytest.raises(SecretSharingError, match="1-64 bytes"):
        split(b"", threshold=1, shares=1)


def test_every_t_subset_of_a_small_sharing():
    secret = secrets.token_bytes(32)
    shares = split(secret, threshold=3, shares=6)
    for subset in itertools.combinations(shares, 3):
        assert combine(subset, threshold=3) == secret
