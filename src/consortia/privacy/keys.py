"""Site identities and signed masking keys.

Each site holds two long-lived private keys:

* an Ed25519 *identity* key, whose public half is enrolled with the federation
  and is what peers trust;
* an X25519 *masking* key, whose public half travels to peers through the hub,
  signed by the identity key so that a hub cannot substitute its own key to learn
  a pairwise mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from consortia.errors import KeyVerificationError, ValidationError

__all__ = ["PeerKey", "SiteIdentity", "verify_peers"]

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()
_SIG_CONTEXT = b"consortia/mask-key/v1\x00"


def _signed_message(site: str, mask_key: bytes) -> bytes:
    return _SIG_CONTEXT + site.encode("utf-8") + b"\x00" + mask_key


@dataclass(frozen=True)
class PeerKey:
    """A site's public masking key, signed by its identity key.

    Attributes
    ----------
    site
        The site's name.
    mask_key
        Raw 32-byte X25519 public key.
    identity_key
        Raw 32-byte Ed25519 public key of the site's identity.
    signature
        Ed25519 signature of (site, mask_key) by the identity key.
    """

    site: str
    mask_key: bytes
    identity_key: bytes
    signature: bytes

    def verify(self, trusted_identity: bytes | None = None) -> None:
        """Check the signature, and that the identity is the trusted one if given."""
        if trusted_identity is not None and trusted_identity != self.identity_key:
            raise KeyVerificationError(
                f"the identity key presented for site {self.site!r} is not the enrolled one"
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.identity_key).verify(
                self.signature, _signed_message(self.site, self.mask_key)
            )
        except (InvalidSignature, ValueError):
            raise KeyVerificationError(
                f"the masking key of site {self.site!r} does not carry a valid signature"
            ) from None

    def to_json(self) -> dict[str, str]:
        """Hex-encoded JSON form."""
        return {
            "site": self.site,
            "mask_key": self.mask_key.hex(),
            "identity_key": self.identity_key.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, str]) -> PeerKey:
        """Inverse of :meth:`to_json`."""
        try:
            return cls(
                site=str(obj["site"]),
                mask_key=bytes.fromhex(obj["mask_key"]),
                identity_key=bytes.fromhex(obj["identity_key"]),
                signature=bytes.fromhex(obj["signature"]),
            )
        except (KeyError, ValueError, TypeError):
            raise ValidationError(
                "a peer key needs hex fields site, mask_key, identity_key and signature"
            ) from None


class SiteIdentity:
    """A site's private identity (Ed25519) and masking (X25519) keys."""

    def __init__(self, identity: Ed25519PrivateKey, masking: X25519PrivateKey) -> None:
        self._identity = identity
        self._masking = masking

    @classmethod
    def generate(cls) -> SiteIdentity:
        """Create fresh keys."""
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    def to_bytes(self) -> bytes:
        """Serialise both private keys (64 bytes); store with care."""
        return self._identity.private_bytes(_RAW, _RAW_PRIV, _NOENC) + self._masking.private_bytes(
            _RAW, _RAW_PRIV, _NOENC
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SiteIdentity:
        """Inverse of :meth:`to_bytes`."""
        if len(raw) != 64:
            raise ValidationError("a site identity is 64 bytes")
        return cls(
            Ed25519PrivateKey.from_private_bytes(raw[:32]),
            X25519PrivateKey.from_private_bytes(raw[32:]),
        )

    @property
    def identity_public(self) -> bytes:
        """Raw Ed25519 public key (what the federation enrols)."""
        return self._identity.public_key().public_bytes(_RAW, _RAW_PUB)

    def sign(self, message: bytes) -> bytes:
        """Sign an arbitrary message with the identity key."""
        return self._identity.sign(message)

    def peer_key(self, site: str) -> PeerKey:
        """The signed public masking key this site publishes as ``site``."""
        mask_pub = self._masking.public_key().public_bytes(_RAW, _RAW_PUB)
        return PeerKey(
            site=site,
            mask_key=mask_pub,
            identity_key=self.identity_public,
            signature=self._identity.sign(_signed_message(site, mask_pub)),
        )

    def shared_secret(self, peer: PeerKey) -> bytes:
        """X25519 agreement with a peer's masking key."""
        try:
            return self._masking.exchange(X25519PublicKey.from_public_bytes(peer.mask_key))
        except ValueError:
            raise KeyVerificationError(
                f"the masking key of site {peer.site!r} is invalid"
            ) from None


def verify_peers(
    peers: tuple[PeerKey, ...],
    trusted: Mapping[str, bytes] | None,
    *,
    allow_unknown: bool = False,
) -> None:
    """Verify every peer key; with ``trusted``, each identity must be the enrolled one.

    With ``allow_unknown``, a site absent from ``trusted`` is accepted on its own
    signature alone (the caller must not count it as trusted); a site present in
    ``trusted`` must still present exactly its trusted identity.
    """
    names = [p.site for p in peers]
    if len(set(names)) != len(names):
        raise KeyVerificationError("the participant list names a site twice")
    for peer in peers:
        expected = None
        if trusted is not None:
            if peer.site not in trusted:
                if not allow_unknown:
                    raise KeyVerificationError(f"site {peer.site!r} is not a trusted peer")
                peer.verify(None)
                continue
            expected = trusted[peer.site]
        peer.verify(expected)
