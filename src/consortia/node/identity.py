"""A node's long-lived keys and credential, kept in its data directory (mode 0600)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from consortia.errors import ValidationError
from consortia.privacy.keys import SiteIdentity

__all__ = ["fingerprint", "load_identity", "mutual_pins", "read_private", "write_private"]


def fingerprint(identity_public: bytes) -> str:
    """SHA-256 hex of a raw Ed25519 identity public key (what operators compare and pin)."""
    return hashlib.sha256(identity_public).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_private(path: Path) -> bytes:
    """Read a private file, refusing one that others can read."""
    mode = path.stat().st_mode & 0o077
    if mode:
        raise ValidationError(f"{path} must be readable by its owner only (chmod 600)")
    return path.read_bytes()


def load_identity(data_dir: Path, *, create: bool = True) -> SiteIdentity:
    """The node's identity from ``data_dir/identity.key`` (created on first use)."""
    path = Path(data_dir) / "identity.key"
    if path.exists():
        return SiteIdentity.from_bytes(read_private(path))
    if not create:
        raise ValidationError(f"no node identity at {path}; run `consortia node enrol` first")
    ident = SiteIdentity.generate()
    write_private(path, ident.to_bytes())
    return ident


def mutual_pins(data_dirs: dict[str, Path]) -> dict[str, dict[str, str]]:
    """For nodes set up together (a demo, a test): each node's ``[peers]`` pinning the others.

    Creates each node's identity in its data directory if needed.  In a real
    consortium every owner pins the fingerprints that the other owners sent them
    (``consortia node peers add``); the hub never decides who is trusted.
    """
    fps = {
        name: fingerprint(load_identity(Path(d)).identity_public) for name, d in data_dirs.items()
    }
    return {name: {k: v for k, v in fps.items() if k != name} for name in fps}
