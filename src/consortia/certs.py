"""A small certificate authority and TLS server certificates (package ``cryptography``).

``create_ca`` writes ``ca.pem`` (the certificate clients trust) and ``ca-key.pem`` (the CA's
private key, 0600).  ``issue_server_certificate`` signs a server certificate for the given
host names and IP addresses (subject alternative names, ``serverAuth`` extended key usage)
and writes ``<name>.pem`` (the certificate followed by the CA certificate, a full chain) and
``<name>-key.pem`` (0600).  Keys are ECDSA P-256.

:func:`server_ssl_context` and :func:`client_ssl_context` build ``ssl.SSLContext`` objects
from these files (the latter verifies host names and trusts only the given CA).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from consortia.errors import ValidationError

__all__ = [
    "CAFiles",
    "CertFiles",
    "client_ssl_context",
    "create_ca",
    "issue_server_certificate",
    "server_ssl_context",
]

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca-key.pem"
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class CAFiles:
    """Paths written by :func:`create_ca`.

    Attributes
    ----------
    certificate
        ``ca.pem``: distribute it to clients (hub URL users, nodes) as their trust anchor.
    key
        ``ca-key.pem``: the CA private key (0600); keep it offline if possible.
    """

    certificate: Path
    key: Path


@dataclass(frozen=True)
class CertFiles:
    """Paths written by :func:`issue_server_certificate`.

    Attributes
    ----------
    certificate
        ``<name>.pem``: the server certificate followed by the CA certificate.
    key
        ``<name>-key.pem``: the server private key (0600).
    ca_certificate
        The issuing CA's ``ca.pem``.
    """

    certificate: Path
    key: Path
    ca_certificate: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36500:
        raise ValidationError(f"days must be an integer between 1 and 36500, got {days!r}")
    return days


def create_ca(
    directory: Path | str,
    *,
    common_name: str = "consortia CA",
    days: int = 3650,
    overwrite: bool = False,
) -> CAFiles:
    """Create a self-signed certificate authority in ``directory``.

    Parameters
    ----------
    directory
        Folder for ``ca.pem`` and ``ca-key.pem`` (created if missing).
    common_name
        The CA's subject common name.
    days
        Validity in days.
    overwrite
        Replace an existing CA (otherwise refuse: every certificate it issued would become
        untrusted).

    Returns
    -------
    CAFiles
        The paths written.

    Raises
    ------
    ValidationError
        The CA files exist and ``overwrite`` is false, or a parameter is invalid.
    """
    _check_days(days)
    if not isinstance(common_name, str) or not common_name.strip():
        raise ValidationError("common_name must be a non-empty string")
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT_NAME, directory / CA_KEY_NAME
    if not overwrite and (cert_path.exists() or key_path.exists()):
        raise ValidationError(
            f"a CA already exists in {directory}; pass overwrite=True to replace it"
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CAFiles(certificate=cert_path, key=key_path)


def _general_name(host: str) -> x509.GeneralName:
    if not isinstance(host, str) or not host:
        raise ValidationError(f"host name must be a non-empty string, got {host!r}")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    wildcard_ok = len(labels) > 2 and labels[0] == "*"
    if len(host) > 253 or not all(
        _HOST_LABEL.fullmatch(label) or (i == 0 and wildcard_ok) for i, label in enumerate(labels)
    ):
        raise ValidationError(f"host {host!r} is neither a valid DNS name nor an IP address")
    return x509.DNSName(host.rstrip("."))


def issue_server_certificate(
    ca_dir: Path | str,
    out_dir: Path | str,
    *,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 825,
    name: str = "server",
    overwrite: bool = True,
) -> CertFiles:
    """Issue a TLS server certificate signed by the CA in ``ca_dir``.

    Parameters
    ----------
    ca_dir
        Folder holding ``ca.pem`` and ``ca-key.pem`` (from :func:`create_ca`).
    out_dir
        Folder for ``<name>.pem`` and ``<name>-key.pem`` (created if missing).
    hostnames
        DNS names and IP addresses the server is reached by; all become subject alternative
        names, the first is also the subject common name.
    days
        Validity in days (825 is the most browsers accept).
    name
        Base name of the files written.
    overwrite
        Replace existing files of that name (default: yes, re-issuing is routine).

    Returns
    -------
    CertFiles
        The paths written.

    Raises
    ------
    ValidationError
        Missing or unreadable CA, invalid host name, file name or days.
    """
    _check_days(days)
    if isinstance(hostnames, str):
        hostnames = (hostnames,)
    if not hostnames:
        raise ValidationError("hostnames must name at least one DNS name or IP address")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name or ""):
        raise ValidationError(f"name {name!r} must be a simple file name")
    sans = [_general_name(h) for h in hostnames]
    ca_dir, out_dir = Path(ca_dir), Path(out_dir)
    ca_cert_path, ca_key_path = ca_dir / CA_CERT_NAME, ca_dir / CA_KEY_NAME
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ValidationError(f"no CA in {ca_dir}: {Path(exc.filename).name} not found") from exc
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"the CA files in {ca_dir} are not valid PEM: {exc}") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValidationError(f"unsupported CA key type in {ca_key_path}")
    cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}-key.pem"
    if not overwrite and (cert_path.exists() or key_path.exists()):
        raise ValidationError(f"{cert_path} exists; pass overwrite=True to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca_not_after = ca_cert.not_valid_after_utc
    not_after = min(now + dt.timedelta(days=days), ca_not_after)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(hostnames[0]))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    return CertFiles(certificate=cert_path, key=key_path, ca_certificate=ca_cert_path)


def server_ssl_context(certificate: Path | str, key: Path | str) -> ssl.SSLContext:
    """Return a TLS 1.2+ server context for a certificate chain and key (for uvicorn, use
    ``ssl_certfile``/``ssl_keyfile`` with the same paths instead)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certificate), str(key))
    return context


def client_ssl_context(ca_certificate: Path | str) -> ssl.SSLContext:
    """Return a client context that trusts only ``ca_certificate`` and checks host names
    (pass it as ``httpx.Client(verify=...)``)."""
    context = ssl.create_default_context(cafile=str(ca_certificate))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
