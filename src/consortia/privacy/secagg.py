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

Why the self-mask: if a site is excluded and the round re-runs among the
survivors, a late vector from the excluded site would otherwise complete the
first attempt and the difference of the two sums would unmask it.  A site
reveals a seed for at most one attempt of a round, never for an attempt older
than one it has contributed to, and never contributes after it revealed.  Hence
the aggregator obtains at most one unmasked sum per round, whatever the order or
timing of messages.

The rules are kept in a :class:`Ledger`; :class:`MemoryLedger` is the in-process
implementation, a node persists the same records in its own database.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.errors import ProtocolError, SecureAggregationError, ValidationError
from consortia.precision import DEFAULT_FRAC_BITS
from consortia.privacy.fixedpoint import FixedPoint
from consortia.privacy.keys import PeerKey, SiteIdentity, verify_peers
from consortia.privacy.masking import CHUNK_WORDS, apply_masks, derive_key

__all__ = [
    "Layout",
    "Ledger",
    "MaskedContribution",
    "MemoryLedger",
    "RoundContext",
    "SecureAggregator",
    "SecureSite",
]


@dataclass(frozen=True)
class RoundContext:
    """Public facts of one attempt of one round, known to every participant.

    Attributes
    ----------
    study_id, round_index, attempt
        Identify the attempt; they salt the masks.
    participants
        Signed masking keys of every participant, sorted by site name.
    frac_bits
        Fixed-point resolution agreed for the study.
    """

    study_id: str
    round_index: int
    attempt: int
    participants: tuple[PeerKey, ...]
    frac_bits: int = DEFAULT_FRAC_BITS

    def __post_init__(self) -> None:
        peers = tuple(sorted(self.participants, key=lambda p: p.site))
        object.__setattr__(self, "participants", peers)
        if self.round_index < 0 or self.attempt < 0:
            raise ValidationError("round_index and attempt must be non-negative")

    @property
    def sites(self) -> tuple[str, ...]:
        """Participant names in canonical (sorted) order."""
        return tuple(p.site for p in self.participants)

    @property
    def codec(self) -> FixedPoint:
        """The fixed-point codec of this round."""
        return FixedPoint(self.frac_bits)

    def context_bytes(self) -> bytes:
        """Bytes that bind masks to this study, round, attempt and participant set."""
        parts = [
            b"consortia/round/v1",
            self.study_id.encode(),
            str(self.round_index).encode(),
            str(self.attempt).encode(),
            b",".join(s.encode() for s in self.sites),
        ]
        return b"\x00".join(parts)


_MAX_LAYOUT_ARRAYS = 4096
_MAX_ELEMENTS = 2**40


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the arrays packed in a flat vector, in order."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        """The layout of ``arrays`` in sorted-name order."""
        return cls(tuple((k, tuple(int(d) for d in np.shape(arrays[k]))) for k in sorted(arrays)))

    @property
    def size(self) -> int:
        """Total number of elements."""
        return int(sum(int(np.prod(shape)) for _, shape in self.entries))

    def pack(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Concatenate ``arrays`` (float) into one flat vector in layout order."""
        if not self.entries:
            return np.zeros(0, dtype=np.float64)
        if len(self.entries) == 1:
            name = self.entries[0][0]
            return np.ascontiguousarray(np.ravel(arrays[name]), dtype=np.float64)
        return np.concatenate([np.ravel(arrays[k]).astype(np.float64) for k, _ in self.entries])

    def split(self, vec: np.ndarray) -> dict[str, np.ndarray]:
        """Inverse of :meth:`pack`."""
        out, pos = {}, 0
        for name, shape in self.entries:
            n = int(np.prod(shape))
            out[name] = vec[pos : pos + n].reshape(shape)
            pos += n
        return out

    def to_json(self) -> list[list]:
        """JSON form: ``[[name, [dims...]], ...]``."""
        return [[name, list(shape)] for name, shape in self.entries]

    @classmethod
    def from_json(cls, obj: Any) -> Layout:
        """Inverse of :meth:`to_json`, for untrusted input.

        Raises
        ------
        ValidationError
            Not a list of ``[name, [dims...]]`` pairs, a name that is not a string of
            1-128 characters, a dimension that is not a non-negative integer, more than
            32 dimensions or 4096 arrays, or more than 2**40 elements in all.
        """
        shape_error = "a layout is a list of [name, [dims...]] pairs"
        if not isinstance(obj, list) or len(obj) > _MAX_LAYOUT_ARRAYS:
            raise ValidationError(f"{shape_error} (at most {_MAX_LAYOUT_ARRAYS})")
        entries, total = [], 0
        for pair in obj:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValidationError(shape_error)
            name, dims = pair
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise ValidationError("a layout array name must be a string of 1-128 characters")
            if not isinstance(dims, list | tuple) or len(dims) > 32:
                raise ValidationError(f"layout array {name!r}: dims must be a list of <= 32")
            for d in dims:
                if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= _MAX_ELEMENTS:
                    raise ValidationError(
                        f"layout array {name!r}: dimensions must be non-negative integers"
                    )
            size = math.prod(dims)
            total += size
            if total > _MAX_ELEMENTS:
                raise ValidationError(f"the layout holds more than {_MAX_ELEMENTS} elements")
            entries.append((name, tuple(int(d) for d in dims)))
        return cls(tuple(entries))


@dataclass(frozen=True)
class MaskedContribution:
    """What a site sends to the aggregator: a masked uint64 vector and its layout."""

    study_id: str
    round_index: int
    attempt: int
    site: str
    layout: Layout
    data: np.ndarray


class Ledger(abc.ABC):
    """The records a site keeps to enforce the one-reveal-per-round rule."""

    @abc.abstractmethod
    def seeds(self, study_id: str, round_index: int) -> dict[int, bytes]:
        """Self-mask seeds of the attempts this site contributed to, by attempt."""

    @abc.abstractmethod
    def add_seed(self, study_id: str, round_index: int, attempt: int, seed: bytes) -> None:
        """Record that this site contributed to ``attempt`` with ``seed``."""

    @abc.abstractmethod
    def revealed(self, study_id: str, round_index: int) -> int | None:
        """The attempt whose seed was revealed, if any."""

    @abc.abstractmethod
    def set_revealed(self, study_id: str, round_index: int, attempt: int) -> None:
        """Record that the seed of ``attempt`` was revealed."""


class MemoryLedger(Ledger):
    """An in-memory :class:`Ledger` (simulation and tests)."""

    def __init__(self) -> None:
        self._seeds: dict[tuple[str, int], dict[int, bytes]] = {}
        self._revealed: dict[tuple[str, int], int] = {}

    def seeds(self, study_id: str, round_index: int) -> dict[int, bytes]:
        return dict(self._seeds.get((study_id, round_index), {}))

    def add_seed(self, study_id: str, round_index: int, attempt: int, seed: bytes) -> None:
        self._seeds.setdefault((study_id, round_index), {})[attempt] = seed

    def revealed(self, study_id: str, round_index: int) -> int | None:
        return self._revealed.get((study_id, round_index))

    def set_revealed(self, study_id: str, round_index: int, attempt: int) -> None:
        self._revealed[(study_id, round_index)] = attempt


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
            If this site already revealed a seed for this round, or already
            contributed to a later attempt of it.
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
        if seed is None:
            seed = os.urandom(32)
            self.ledger.add_seed(ctx.study_id, ctx.round_index, ctx.attempt, seed)
        apply_masks(vec, [*pair_keys, (_self_key(seed, ctx), 1)], fill=fill)
        return MaskedContribution(
            ctx.study_id, ctx.round_index, ctx.attempt, self.site, layout, vec
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
    ) -> SecureAggregator:
        """Rebuild an aggregator from a persisted running sum and the sites it holds."""
        agg = cls(ctx)
        sites = set(received)
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

    def finish(self, seeds: Mapping[str, bytes], *, consume: bool = False) -> dict[str, np.ndarray]:
        """Remove the revealed self-masks and decode the sum, by array name.

        With ``consume=True`` the self-masks are removed in place from the running
        sum (no payload-sized copy) and the aggregator cannot be finished again.
        """
        if self.missing:
            raise SecureAggregationError(
                f"cannot finish: no contribution yet from {sorted(self.missing)}"
            )
        if set(seeds) != set(self.ctx.sites):
            raise SecureAggregationError("finishing needs the seed of every participant")
        if self._acc is None or self.layout is None:
            raise SecureAggregationError("this aggregator was already finished (consumed)")
        total = self._acc if consume else self._acc.copy()
        if consume:
            self._acc = None
        apply_masks(total, [(_self_key(seeds[s], self.ctx), -1) for s in self.ctx.sites])
        return self.layout.split(self.ctx.codec.decode(total))
