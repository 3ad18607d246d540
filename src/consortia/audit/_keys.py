"""Audit keys: generation and the 0600 hex key file kept outside the database."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from consortia.errors import ValidationError

__all__ = ["generate_key", "read_key_file", "write_key_file"]

_MIN_KEY = 16


def generate_key() -> bytes:
    """Return a fresh random 32-byte audit key."""
    return secrets.token_bytes(32)


def write_key_file(path: Path | str, key: bytes | None = None, *, overwrite: bool = False) -> bytes:
    """Write an audit key (hex text) to ``path`` with 0600 permissions and return the key.

    Parameters
    ----------
    path
        File to create.  Keep it outside the database and its backups.
    key
        The key; a fresh :func:`generate_key` when ``None``.
    overwrite
        Replace an existing file (otherwise refuse).
    """
    path = Path(path)
    key = generate_key() if key is None else key
    if len(key) < _MIN_KEY:
        raise ValidationError(f"audit key must be at least {_MIN_KEY} bytes")
    if path.exists() and not overwrite:
        raise ValidationError(f"audit key file {path} exists; pass overwrite=True to replace it")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    os.chmod(path, 0o600)
    return key


def read_key_file(path: Path | str) -> bytes:
    """Read an audit key written by :func:`write_key_file`.

    Raises
    ------
    ValidationError
        The file is missing or does not hold a hex key of at least 16 bytes.
    """
    path = Path(path)
    try:
        text = path.read_text().strip()
        key = bytes.fromhex(text)
    except FileNotFoundError as exc:
        raise ValidationError(f"audit key file {path} not found") from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"audit key file {path} does not hold a hex key") from exc
    if len(key) < _MIN_KEY:
        raise ValidationError(f"audit key in {path} is shorter than {_MIN_KEY} bytes")
    return key
