"""Secure aggregation: sites mask, the aggregator only ever sees masked arrays and the sum.

Protocol for one attempt ``a`` of round ``r`` of study ``s`` with participants ``P``:

1. Each site ``i`` encodes its arrays in fixed point (one flat uint64 vector),
   adds ``+m_ij`` for every peer ``j > i`` and ``-m_ij`` for every ``j < i``
   (``m_ij`` from X25519(i, j) + HKDF salted with ``(s, r, a, P)``), and adds a
   *self-mask* ``b_i`` expanded from a fresh random seed that it keeps.
2. The aggregator adds the masked vectors as they arrive (streaming); pairwise
   masks cancel once every participant's vector is in, leaving
   ``sum(x) + sum(b)``.
3. Only when every participant's vector is in does the aggregator ask each site
   to *reveal* its self-mask seed for that attempt, and subtracts the streams.
4. Liveness (rounds of 3 or more participants): with its vector each site sends
   its seed split into Shamir shares, each encrypted to one peer; a site whose
   vector is in the sum but that never reveals has its seed rebuilt from the
   shares that the surviving sites release with their own reveal.  Why that is
   safe, and the rules that keep it so: :mod:`consortia.privacy.recovery`.

Why the self-mask: if a site is excluded and the round re-runs among the
survivors, a late vector from the excluded site would otherwise complete the
first attempt and the difference of the two sums would unmask it.  A site
reveals a seed for at most one attempt of a round, never for an attempt older
than one it has contributed to, and never contributes after it revealed.  Hence
the aggregator obtains at most one unmasked sum per round, whatever the order or
timing of messages.

The rules are kept in a :class:`~consortia.privacy.ledger.Ledger`;
:class:`~consortia.privacy.ledger.MemoryLedger` is the in-process implementation, a
node persists the same records in its own database.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from consortia.errors import (
    ProtocolError,
    SecretSharingError,
    SecureAggregationError,
)
from consortia.privacy.context import RoundContext
from consortia.privacy.keys import PeerKey, SiteIdentity, verify_peers
from consortia.privacy.layout import Layout
from consortia.privacy.ledger import Ledger, MemoryLedger
from consortia.privacy.masking import CHUNK_WORDS, apply_masks, derive_key
from consortia.privacy.recovery import (
    Reveal,
    SeedShares,
    commitment,
    open_share,
    rebuild_seed,
    seal_shares,
)

__all__ = [
    "Layout",
    "Ledger",
    "MaskedContribution",
    "MemoryLedger",
    "Reveal",
    "RoundContext",
    "SecureAggregator",
    "SecureSite",
    "SeedShares",
]


@dataclass(frozen=True)
class MaskedContribution:
    """What a site sends to the aggregator: a masked uint64 vector and its layout.

    ``shares`` holds the site's seed split among its peers, each share encrypted
    to one peer (None when the attempt shares no seeds); the hub stores and forwards
    it (:meth:`SeedShares.to_json <consortia.privacy.recovery.SeedShares.to_json>`).
    """

    study_id: str
    round_index: int
    attempt: int
    site: str
    layout: Layout
    data: np.ndarray
    shares: SeedShares | None = None


class SecureSite:
    """The site side of secure aggregation.

    Parameters
    ----------
    site
        This site's name (must appear among the round's participants).
    identity
        This site's private keys.
    trusted
        Enrolled identity public keys by site name.  When given, every peer's
        masking key must be signed by the trusted identity of that peer.
    ledger
        Where the one-reveal-per-round records live.
    allow_unknown
        Accept peers absent from ``trusted`` on their own signature (they still
        mask, but a node's policy does not count them as trusted sites).
    """

    def __init__(
        self,
        site: str,
        identity: SiteIdentity,
        *,
        trusted: Mapping[str, bytes] | None = None,
        ledger: Ledger | None = None,
        allow_unknown: bool = False,
    ) -> None:
        self.site = site
        self.allow_unknown = allow_unknown
        self.identity = identity
        self.ledger = ledger if ledger is not None else MemoryLedger()
        self._secrets: dict[PeerKey, bytes] = {}
        self._verified: set[PeerKey] = set()
        self.trusted = trusted

    @property
    def trusted(self) -> dict[str, bytes] | None:
        """Enrolled identity keys of the peers (None: signatures checked, identities not)."""
        return self._trusted

    @trusted.setter
    def trusted(self, value: Mapping[str, bytes] | None) -> None:
        self._trusted = dict(value) if value is not None else None
        self._verified = set()

    def verify(self, peers: tuple[PeerKey, ...]) -> None:
        """Verify the peers' signed keys against the trusted identities (cached per key)."""
        if not set(peers) <= self._verified:
            verify_peers(peers, self._trusted, allow_unknown=self.allow_unknown)
            self._verified.update(peers)
        elif len({p.site for p in peers}) != len(peers):
            verify_peers(peers, self._trusted)  # raises the duplicate-site error

    def _secret(self, peer: PeerKey) -> bytes:
        secret = self._secrets.get(peer)
        if secret is None:
            secret = self._secrets[peer] = self.identity.shared_secret(peer)
        return secret

    def _pair_keys(self, ctx: RoundContext) -> list[tuple[bytes, int]]:
        if self.site not in ctx.sites:
            raise ProtocolError(f"site {self.site!r} is not a participant of this round")
        self.verify(ctx.participants)
        mine = ctx.participants[ctx.sites.index(self.site)]
        if mine.identity_key != self.identity.identity_public:
            raise SecureAggregationError(
                f"the key listed for site {self.site!r} is not this site's own key"
            )
        base = ctx.context_bytes()
        keys = []
        for peer in ctx.participants:
            if peer.site == self.site:
                continue
            lo, hi = sorted((self.site, peer.site))
            context = base + b"\x00pair\x00" + lo.encode() + b"\x00" + hi.encode()
            secret = self._secret(peer)
            keys.append((derive_key(secret, context), 1 if self.site < peer.site else -1))
        return keys

    def mask(self, ctx: RoundContext, arrays: Mapping[str, np.ndarray]) -> MaskedContribution:
        """Encode and mask ``arrays`` for attempt ``ctx.attempt``.

        Raises
        ------
        SecureAggregationError
            If this site already revealed a seed for this round, already
            contributed to a later attempt of it, or shared its seed of an earlier
            attempt that this one leaves too many sites out of (see
            :mod:`consortia.privacy.recovery`).
        EncodingRangeError
            If a value is outside the fixed-point range.
        """
        key = (ctx.study_id, ctx.round_index)
        if self.ledger.revealed(*key) is not None:
            raise SecureAggregationError(
                "this round is already finalised at this site; it will not contribute again"
            )
        seeds = self.ledger.seeds(*key)
        if seeds and max(seeds) > ctx.attempt:
            raise SecureAggregationError(
                "this site already contributed to a later attempt of this round"
            )
        pair_keys = self._pair_keys(ctx)
        self._check_exclusions(ctx)
        layout = Layout.of(arrays)
        codec = ctx.codec
        n = len(ctx.sites)
        limit = codec.bound(n)
        flat = layout.pack(arrays)
        vec = np.empty(flat.size, dtype=np.uint64)
        work = np.empty(min(flat.size, CHUNK_WORDS))

        def fill(start: int, chunk: np.ndarray) -> None:
            x = flat[start : start + chunk.size]
            if not codec.encode_into(x, chunk, limit=limit, work=work):
                # slow path, only to name the offending array in the error
                for name, _ in layout.entries:
                    codec.encode(np.ravel(arrays[name]), n_parties=n, name=name)

        seed = seeds.get(ctx.attempt)
        t = ctx.threshold
        if t is not None and ctx.attempt not in self.ledger.attempts(*key):
            self.ledger.add_attempt(*key, ctx.attempt, ctx.sites, t)
        if seed is None:
            seed = os.urandom(32)
            self.ledger.add_seed(ctx.study_id, ctx.round_index, ctx.attempt, seed)
        apply_masks(vec, [*pair_keys, (_self_key(seed, ctx), 1)], fill=fill)
        shares = None
        if t is not None:
            by_site = {p.site: p for p in ctx.participants}
            shares = seal_shares(seed, ctx, self.site, lambda s: self._secret(by_site[s]))
        return MaskedContribution(
            ctx.study_id, ctx.round_index, ctx.attempt, self.site, layout, vec, shares
        )

    def _check_exclusions(self, ctx: RoundContext) -> None:
        # A later attempt that leaves out t_A of an earlier attempt A's participants
        # would let those left out (who may have finalised A) rebuild this site's
        # seed of A while this site's vector also counts in the later sum.
        now = set(ctx.sites)
        for attempt, (sites, t) in self.ledger.attempts(ctx.study_id, ctx.round_index).items():
            left_out = len(set(sites) - now)
            if attempt < ctx.attempt and left_out >= t:
                raise SecureAggregationError(
                    f"attempt {ctx.attempt} leaves out {left_out} of the {len(sites)} "
                    f"participants of attempt {attempt}, whose seed shares need {t}: this "
                    "site will not contribute (the round cannot shed that many sites)"
                )

    def reveal(self, ctx: RoundContext) -> bytes:
        """Release this site's self-mask seed for ``ctx.attempt`` (at most one per round)."""
        key = (ctx.study_id, ctx.round_index)
        seeds = self.ledger.seeds(*key)
        if ctx.attempt not in seeds:
            raise SecureAggregationError("this site did not contribute to that attempt")
        if max(seeds) > ctx.attempt:
            raise SecureAggregationError(
                "this site contributed to a later attempt; the older one stays masked"
            )
        done = self.ledger.revealed(*key)
        if done is not None and done != ctx.attempt:
            raise SecureAggregationError("this site already revealed another attempt")
        self.ledger.set_revealed(ctx.study_id, ctx.round_index, ctx.attempt)
        return seeds[ctx.attempt]

    def check_share_request(
        self,
        ctx: RoundContext,
        missing: Collection[str],
        shares: Mapping[str, bytes] | None = None,
    ) -> dict[str, bytes]:
        """Check a request for shares of the ``missing`` seeds and open them (nothing is
        recorded or released): see :meth:`reveal_and_share`."""
        lost = set(missing)
        if self.site in lost:
            raise SecureAggregationError(
                f"site {self.site!r} holds no share of its own seed and is revealing it"
            )
        strangers = lost - set(ctx.sites)
        if strangers:
            raise SecureAggregationError(
                f"sites {sorted(strangers)} are not participants of this attempt"
            )
        if not lost:
            return {}
        if ctx.threshold is None:
            raise SecureAggregationError(
                "this attempt shares no seeds (recovery off, or fewer than 3 participants): "
                "a missing seed cannot be rebuilt"
            )
        self._pair_keys(ctx)  # verifies the participants' keys and this site's place
        by_site = {p.site: p for p in ctx.participants}
        given = shares or {}
        opened = {}
        for peer in sorted(lost):
            if peer not in given:
                raise SecureAggregationError(
                    f"no share from site {peer!r} addressed to {self.site!r}: a share is given "
                    "only for a site whose contribution is in the sum"
                )
            secret = self._secret(by_site[peer])
            opened[peer] = open_share(given[peer], ctx, peer, self.site, secret)
        return opened

    def reveal_and_share(
        self,
        ctx: RoundContext,
        missing: Collection[str] = (),
        shares: Mapping[str, bytes] | None = None,
    ) -> Reveal:
        """Release this site's seed for ``ctx.attempt`` and its shares of the missing seeds.

        Parameters
        ----------
        ctx
            The attempt (every participant's vector is in its sum).
        missing
            Participants whose vector is in the sum but whose seed the hub lacks.
        shares
            For each missing peer, the ciphertext that peer sent, with its vector,
            addressed to this site (``SeedShares.ciphertexts[this site]``).

        Raises
        ------
        SecureAggregationError
            Nothing is released when: a missing site is this site or not a
            participant; the attempt shares no seeds; a missing peer's ciphertext is
            absent (its contribution never reached the hub) or does not authenticate
            for this attempt and this site; or the one-reveal-per-round rule refuses
            (as in :meth:`reveal`: shares are given only with this site's own reveal
            of the same attempt).
        """
        opened = self.check_share_request(ctx, missing, shares)
        seed = self.reveal(ctx)  # the one-reveal-per-round rule, then its record
        return Reveal(ctx.study_id, ctx.round_index, ctx.attempt, self.site, seed, opened)


def _self_key(seed: bytes, ctx: RoundContext) -> bytes:
    return derive_key(seed, ctx.context_bytes() + b"\x00self")


class SecureAggregator:
    """The aggregating side of one attempt: holds a running masked sum only.

    Parameters
    ----------
    ctx
        The attempt being aggregated.
    """

    def __init__(self, ctx: RoundContext) -> None:
        self.ctx = ctx
        self.layout: Layout | None = None
        self._acc: np.ndarray | None = None
        self.received: set[str] = set()
        self.bundles: dict[str, SeedShares] = {}

    @property
    def missing(self) -> set[str]:
        """Participants whose masked vector has not arrived."""
        return set(self.ctx.sites) - self.received

    @property
    def masked_sum(self) -> np.ndarray | None:
        """The running masked sum (read-only view), None before the first vector."""
        if self._acc is None:
            return None
        view = self._acc.view()
        view.setflags(write=False)
        return view

    @classmethod
    def restore(
        cls,
        ctx: RoundContext,
        layout: Layout | None,
        masked_sum: np.ndarray | None,
        received: Iterable[str],
        bundles: Mapping[str, SeedShares] | None = None,
    ) -> SecureAggregator:
        """Rebuild an aggregator from a persisted running sum and the sites it holds.

        ``bundles`` are the seed shares that came with the received vectors, by site.
        """
        agg = cls(ctx)
        sites = set(received)
        for site, bundle in (bundles or {}).items():
            if site not in sites or bundle.sender != site:
                raise ProtocolError(f"seed shares of {site!r} without its vector")
            bundle.check(ctx)
            agg.bundles[site] = bundle
        if not sites:
            return agg
        if layout is None or masked_sum is None:
            raise ProtocolError("restoring a running sum needs its layout and value")
        unknown = sites - set(ctx.sites)
        if unknown:
            raise ProtocolError(f"sites {sorted(unknown)} are not participants of this attempt")
        acc = np.array(masked_sum, dtype=np.uint64)
        if acc.ndim != 1 or acc.size != layout.size:
            raise ProtocolError("the persisted running sum does not match its layout")
        agg.layout, agg._acc, agg.received = layout, acc, sites
        return agg

    def add(self, masked: MaskedContribution) -> None:
        """Add one site's masked vector into the running sum."""
        c = self.ctx
        if (masked.study_id, masked.round_index, masked.attempt) != (
            c.study_id,
            c.round_index,
            c.attempt,
        ):
            raise ProtocolError("the contribution is for another study, round or attempt")
        if masked.site not in c.sites:
            raise ProtocolError(f"site {masked.site!r} is not a participant of this attempt")
        if masked.site in self.received:
            raise ProtocolError(f"site {masked.site!r} already contributed to this attempt")
        data = np.asarray(masked.data)
        if data.dtype != np.uint64 or data.ndim != 1 or data.size != masked.layout.size:
            raise ProtocolError("the masked vector does not match its layout")
        if masked.shares is not None:
            if masked.shares.sender != masked.site:
                raise ProtocolError(f"site {masked.site!r} sent another site's seed shares")
            masked.shares.check(c)
        if self.layout is None:
            self.layout = masked.layout
            self._acc = data.copy()
        else:
            if masked.layout != self.layout:
                raise ProtocolError(
                    f"site {masked.site!r} sent arrays whose names or shapes differ from "
                    "the other sites'"
                )
            assert self._acc is not None
            np.add(self._acc, data, out=self._acc)
        self.received.add(masked.site)
        if masked.shares is not None:
            self.bundles[masked.site] = masked.shares

    def finish(
        self,
        seeds: Mapping[str, bytes],
        *,
        consume: bool = False,
        shares: Mapping[str, Mapping[str, bytes]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Remove the self-masks and decode the sum, by array name.

        Parameters
        ----------
        seeds
            The revealed seeds, by site.
        consume
            Remove the self-masks and decode in place, in the running sum's own
            memory (no payload-sized copy: the arrays returned are views of it);
            the aggregator cannot be finished again.
        shares
            For a participant whose seed is missing from ``seeds``: the shares of it
            that the other sites revealed, by holder (``Reveal.shares[site]`` of
            each).  Its seed is rebuilt from them and checked against the
            commitment it sent with its vector.

        Raises
        ------
        SecretSharingError
            A missing seed cannot be rebuilt: fewer shares than its threshold,
            inconsistent shares, or no seed shares came with that site's vector.
        SecureAggregationError
            A vector is missing, a seed is neither revealed nor shared, a revealed
            seed does not match its site's commitment, or the aggregator was consumed.
        """
        ctx = self.ctx
        if self.missing:
            raise SecureAggregationError(
                f"cannot finish: no contribution yet from {sorted(self.missing)}"
            )
        shares = shares or {}
        if not set(seeds) <= set(ctx.sites):
            raise SecureAggregationError("seeds were given for sites that are not participants")
        lost = set(ctx.sites) - set(seeds)
        if not lost <= set(shares):
            raise SecureAggregationError("finishing needs the seed of every participant")
        if self._acc is None or self.layout is None:
            raise SecureAggregationError("this aggregator was already finished (consumed)")
        full = dict(seeds)
        for site in sorted(lost):
            bundle = self.bundles.get(site)
            if bundle is None:
                raise SecretSharingError(
                    f"cannot rebuild the seed of site {site!r}: no seed shares came with its vector"
                )
            full[site] = rebuild_seed(bundle, shares[site], ctx)
        for site, seed in seeds.items():
            bundle = self.bundles.get(site)
            if bundle is not None and commitment(seed, ctx, site) != bundle.commitment:
                raise SecureAggregationError(
                    f"the seed revealed by site {site!r} does not match its commitment"
                )
        total = self._acc if consume else self._acc.copy()
        if consume:
            self._acc = None
        apply_masks(total, [(_self_key(full[s], ctx), -1) for s in ctx.sites])
        if consume:  # decoded over the running sum's own memory (no second payload)
            return self.layout.split(ctx.codec.decode_in_place(total))
        return self.layout.split(ctx.codec.decode(total))
