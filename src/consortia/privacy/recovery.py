"""Liveness at reveal: a round finishes when a site dies between its vector and its reveal.

Bonawitz et al. (CCS 2017), reduced to what this protocol needs.  When site ``i``
masks its vector for an attempt of ``n >= 3`` participants, it also splits its
self-mask seed ``b_i`` with Shamir's scheme (:mod:`consortia.privacy.shamir`,
threshold ``t``, share ``k`` for the ``k``-th participant in sorted order) and
encrypts share ``k`` to participant ``k`` with AES-256-GCM, under a key that HKDF
derives from the X25519 secret of the two sites and the attempt's context, the
associated data binding study, round, attempt, participants, sender, recipient and
threshold.  The ciphertexts (:class:`SeedShares`) travel with the masked vector; the
hub stores and forwards them but cannot read them.  The bundle also carries a
commitment ``H(context, i, b_i)``, so the aggregator checks every seed, revealed or
rebuilt, before it unmasks anything.

If ``i``'s vector is in the sum but ``i`` never reveals, the hub asks each
surviving site for its own seed *and* its share of ``b_i`` (handing it the
ciphertext from ``i`` addressed to it); with ``t`` shares it rebuilds ``b_i``.

Why revealing the self-seed shares of a received site is safe
--------------------------------------------------------------
Only self-mask seeds are ever shared, never the pairwise secrets.  Once every
participant's vector is in the sum, the pairwise masks cancel in the total, which
is ``sum(x) + sum(b)``: learning ``b_i`` only removes ``i``'s self mask from the
total, which is exactly what ``i``'s own reveal would have done.  ``i``'s own
vector ``x_i + sum_j (+/-) m_ij + b_i`` stays hidden by the pairwise masks, whose
X25519 secrets never leave the sites; so does a sum over any proper subset of the
participants.  A site that dies *before* its vector arrives needs nothing: the
attempt is abandoned and re-run among the survivors with fresh masks, and nobody
reveals anything of it.

The rules that keep it so (enforced by :class:`~consortia.privacy.secagg.SecureSite`
with its :class:`~consortia.privacy.ledger.Ledger`):

* A site hands out shares only with its own reveal of the same attempt, so at most
  one attempt per round, never an attempt older than one it contributed to, and
  never after contributing again.  It never holds (so never gives) a share of its
  own seed.
* It decrypts a share of ``j`` only from the ciphertext ``j`` sent with its vector:
  a hub that did not receive ``j``'s contribution has no such ciphertext, and one
  from another study, round, attempt, sender or recipient fails authentication.
* Two sums of one round: the sites that finalised attempt ``A`` cannot contribute
  to a later attempt ``B`` of the round, so if ``B`` is unmasked, ``A``'s finalisers
  are among the sites that ``B`` leaves out.  Rebuilding the seed of a site of ``B``
  for ``A`` needs ``t_A`` of them; so a site joins ``B`` only if ``B`` leaves out
  fewer than ``t_A`` of ``A``'s participants.  A hub that tells half the sites "the
  attempt finished" and the other half "it failed, start again" thus never unmasks
  both attempts.  With the default majority threshold, a round may shed at most
  ``floor(n / 2)`` of its first ``n`` participants across its attempts.

What is not covered: a hub that colludes with ``t`` holders learns ``b_i`` (no
more than ``i``'s reveal gives).  The disclosure rules judged at the reveal
(``repeated_query``, :meth:`~consortia.privacy.disclosure.DisclosureControl.before_reveal`)
are not judged by a site whose seed is rebuilt: it is dead, and judging them
when it masks would refuse every legitimate re-run after a dropout (it masks
attempts that are never revealed).  The surviving sites (at least ``t``) judge
the same sum over the same participants, and each remembers it, so a later
study of the query over another set of sites that includes any of them meets
their refusal; the dead site itself keeps no memory that its release was
revealed.  Rounds of one or two participants
cannot recover (the only holder of a share would be the one other site, which a
threshold of 2 or more excludes): a dead site there still stalls the attempt.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from consortia.errors import (
    ProtocolError,
    SecretSharingError,
    SecureAggregationError,
    ValidationError,
)
from consortia.privacy.context import RoundContext
from consortia.privacy.shamir import SHARE_BYTES, Share, combine, split

__all__ = ["CIPHERTEXT_BYTES", "Reveal", "SeedShares", "commitment", "open_share", "seal_shares"]

_INFO = b"consortia/seed-share/v1"
_NONCE_BYTES = 12
CIPHERTEXT_BYTES = _NONCE_BYTES + SHARE_BYTES + 16
"""Size of one encrypted share: nonce, the share, the GCM tag."""
SEED_BYTES = 32


def _binding(ctx: RoundContext, sender: str, recipient: str) -> bytes:
    return b"\x00".join(
        [ctx.context_bytes(), b"share", sender.encode(), recipient.encode()]
    )  # participants are in the context: a share is bound to the attempt's full set


def _key(secret: bytes, ctx: RoundContext, sender: str, recipient: str) -> bytes:
    salt = hashlib.sha256(_binding(ctx, sender, recipient)).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO).derive(secret)


def _aad(ctx: RoundContext, sender: str, recipient: str, threshold: int) -> bytes:
    return _binding(ctx, sender, recipient) + b"\x00t=" + str(threshold).encode()


def _index(ctx: RoundContext, site: str) -> int:
    return ctx.sites.index(site) + 1


def commitment(seed: bytes, ctx: RoundContext, site: str) -> bytes:
    """SHA-256 commitment to ``site``'s seed for the attempt of ``ctx`` (public)."""
    parts = [b"consortia/seed-commit/v1", ctx.context_bytes(), site.encode(), seed]
    return hashlib.sha256(b"\x00".join(parts)).digest()


def _hex(obj: Any, what: str, size: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(obj)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} must be a hex string") from None
    if size is not None and len(raw) != size:
        raise ValidationError(f"{what} must be {size} bytes")
    return raw


def _name(obj: Any, what: str) -> str:
    if not isinstance(obj, str) or not 0 < len(obj) <= 128:
        raise ValidationError(f"{what} must be a site name of 1-128 characters")
    return obj


def _int(obj: Any, what: str) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or obj < 0:
        raise ValidationError(f"{what} must be a non-negative integer")
    return obj


@dataclass(frozen=True)
class SeedShares:
    """One site's self-mask seed for one attempt, split and encrypted to its peers.

    Attributes
    ----------
    study_id, round_index, attempt
        The attempt.
    sender
        The site whose seed is shared.
    threshold
        How many shares rebuild the seed.
    commitment
        :func:`commitment` of the seed (32 bytes).
    ciphertexts
        Recipient site -> encrypted share (:data:`CIPHERTEXT_BYTES` bytes), one for
        every other participant of the attempt.
    """

    study_id: str
    round_index: int
    attempt: int
    sender: str
    threshold: int
    commitment: bytes
    ciphertexts: Mapping[str, bytes] = field(default_factory=dict)

    def check(self, ctx: RoundContext) -> None:
        """Check that this bundle is well formed for the attempt of ``ctx``.

        Raises
        ------
        ProtocolError
            If it names another attempt, a sender that is not a participant, a
            threshold other than the attempt's, or not exactly one ciphertext of the
            right size for every other participant.
        """
        ids = (self.study_id, self.round_index, self.attempt)
        if ids != (ctx.study_id, ctx.round_index, ctx.attempt):
            raise ProtocolError("the seed shares are for another study, round or attempt")
        if self.sender not in ctx.sites:
            raise ProtocolError(f"seed shares from {self.sender!r}, not a participant")
        if ctx.threshold is None or self.threshold != ctx.threshold:
            raise ProtocolError(
                f"the seed shares of {self.sender!r} use threshold {self.threshold}, "
                f"the attempt's is {ctx.threshold}"
            )
        if set(self.ciphertexts) != set(ctx.sites) - {self.sender}:
            raise ProtocolError(
                f"the seed shares of {self.sender!r} must hold one share for every other "
                "participant"
            )
        if len(self.commitment) != 32 or any(
            len(c) != CIPHERTEXT_BYTES for c in self.ciphertexts.values()
        ):
            raise ProtocolError(f"the seed shares of {self.sender!r} have a malformed field")

    def to_json(self) -> dict[str, Any]:
        """JSON form (bytes as hex)."""
        return {
            "study_id": self.study_id,
            "round_index": self.round_index,
            "attempt": self.attempt,
            "sender": self.sender,
            "threshold": self.threshold,
            "commitment": self.commitment.hex(),
            "ciphertexts": {k: v.hex() for k, v in sorted(self.ciphertexts.items())},
        }

    @classmethod
    def from_json(cls, obj: Any) -> SeedShares:
        """Inverse of :meth:`to_json`, for untrusted input.

        Raises
        ------
        ValidationError
            A missing or mistyped field, or more than 65535 ciphertexts.
        """
        if not isinstance(obj, Mapping):
            raise ValidationError("seed shares are a JSON object")
        try:
            cts = obj["ciphertexts"]
            if not isinstance(cts, Mapping) or len(cts) > 65535:
                raise ValidationError("ciphertexts must map at most 65535 sites to hex strings")
            return cls(
                study_id=str(obj["study_id"]),
                round_index=_int(obj["round_index"], "round_index"),
                attempt=_int(obj["attempt"], "attempt"),
                sender=_name(obj["sender"], "sender"),
                threshold=_int(obj["threshold"], "threshold"),
                commitment=_hex(obj["commitment"], "commitment", 32),
                ciphertexts={
                    _name(k, "a recipient"): _hex(v, f"the ciphertext for {k!r}", CIPHERTEXT_BYTES)
                    for k, v in cts.items()
                },
            )
        except KeyError as err:
            raise ValidationError(f"seed shares need the field {err.args[0]!r}") from None


def seal_shares(
    seed: bytes, ctx: RoundContext, sender: str, secret_with: Callable[[str], bytes]
) -> SeedShares:
    """Split ``seed`` among the participants of ``ctx`` and encrypt each share to its holder.

    ``secret_with(peer)`` is the X25519 secret of ``sender`` and ``peer``.
    """
    t = ctx.threshold
    if t is None:
        raise SecureAggregationError("this attempt shares no seeds (recovery is off)")
    shares = split(seed, threshold=t, shares=len(ctx.sites))
    cts = {}
    for share, peer in zip(shares, ctx.sites, strict=True):
        if peer == sender:
            continue  # a site holds no share of its own seed
        nonce = secrets.token_bytes(_NONCE_BYTES)
        aead = AESGCM(_key(secret_with(peer), ctx, sender, peer))
        cts[peer] = nonce + aead.encrypt(nonce, share.to_bytes(), _aad(ctx, sender, peer, t))
    return SeedShares(
        ctx.study_id,
        ctx.round_index,
        ctx.attempt,
        sender,
        t,
        commitment(seed, ctx, sender),
        cts,
    )


def open_share(
    ciphertext: bytes, ctx: RoundContext, sender: str, recipient: str, secret: bytes
) -> bytes:
    """Decrypt the share of ``sender``'s seed addressed to ``recipient`` (its bytes form).

    Raises
    ------
    SecureAggregationError
        If the ciphertext does not authenticate for this study, round, attempt,
        participants, sender, recipient and threshold (tampered, replayed from
        another attempt, or addressed to another site), or holds a share with
        another index than ``recipient``'s.
    """
    t = ctx.threshold
    if t is None:
        raise SecureAggregationError("this attempt shares no seeds (recovery is off)")
    if not isinstance(ciphertext, bytes) or len(ciphertext) != CIPHERTEXT_BYTES:
        raise SecureAggregationError(f"the share from site {sender!r} is malformed")
    nonce, body = ciphertext[:_NONCE_BYTES], ciphertext[_NONCE_BYTES:]
    try:
        plain = AESGCM(_key(secret, ctx, sender, recipient)).decrypt(
            nonce, body, _aad(ctx, sender, recipient, t)
        )
    except InvalidTag:
        raise SecureAggregationError(
            f"the share from site {sender!r} does not authenticate for this study, round, "
            f"attempt and recipient {recipient!r}"
        ) from None
    if Share.from_bytes(plain).index != _index(ctx, recipient):
        raise SecureAggregationError(f"the share from site {sender!r} has the wrong index")
    return plain


def rebuild_seed(bundle: SeedShares, shares: Mapping[str, bytes], ctx: RoundContext) -> bytes:
    """Rebuild ``bundle.sender``'s seed from the shares its peers revealed, by holder.

    Raises
    ------
    SecretSharingError
        Fewer than the threshold, a share from the sender itself, from a site that is
        not a participant or with another index than its holder's, inconsistent
        shares, or a result that does not match the sender's commitment.
    """
    j = bundle.sender
    points = []
    for holder, raw in shares.items():
        if holder == j or holder not in ctx.sites:
            raise SecretSharingError(f"{holder!r} cannot hold a share of the seed of {j!r}")
        share = Share.from_bytes(raw)
        if share.index != _index(ctx, holder):
            raise SecretSharingError(f"the share of {j!r} held by {holder!r} has the wrong index")
        points.append(share)
    try:
        seed = combine(points, threshold=bundle.threshold, size=SEED_BYTES)
    except SecretSharingError as err:
        raise SecretSharingError(f"cannot rebuild the seed of site {j!r}: {err}") from None
    if commitment(seed, ctx, j) != bundle.commitment:
        raise SecretSharingError(
            f"cannot rebuild the seed of site {j!r}: the shares do not match its commitment"
        )
    return seed


@dataclass(frozen=True)
class Reveal:
    """What a site releases at the reveal of an attempt.

    Attributes
    ----------
    study_id, round_index, attempt
        The attempt.
    site
        The revealing site.
    seed
        Its own self-mask seed.
    shares
        Peer whose seed is missing -> this site's share of it (bytes form of a
        :class:`~consortia.privacy.shamir.Share`); empty when nothing is missing.
    """

    study_id: str
    round_index: int
    attempt: int
    site: str
    seed: bytes
    shares: Mapping[str, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form (bytes as hex)."""
        return {
            "study_id": self.study_id,
            "round_index": self.round_index,
            "attempt": self.attempt,
            "site": self.site,
            "seed": self.seed.hex(),
            "shares": {k: v.hex() for k, v in sorted(self.shares.items())},
        }

    @classmethod
    def from_json(cls, obj: Any) -> Reveal:
        """Inverse of :meth:`to_json`, for untrusted input."""
        if not isinstance(obj, Mapping):
            raise ValidationError("a reveal is a JSON object")
        try:
            shares = obj["shares"]
            if not isinstance(shares, Mapping) or len(shares) > 65535:
                raise ValidationError("shares must map at most 65535 sites to hex strings")
            return cls(
                study_id=str(obj["study_id"]),
                round_index=_int(obj["round_index"], "round_index"),
                attempt=_int(obj["attempt"], "attempt"),
                site=_name(obj["site"], "site"),
                seed=_hex(obj["seed"], "seed", SEED_BYTES),
                shares={
                    _name(k, "a peer"): _hex(v, f"the share of {k!r}", SHARE_BYTES)
                    for k, v in shares.items()
                },
            )
        except KeyError as err:
            raise ValidationError(f"a reveal needs the field {err.args[0]!r}") from None
