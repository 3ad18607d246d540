"""Serve the hub with uvicorn: ``python -m consortia.hub --db URL --port N ...``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Sequence

import uvicorn

from consortia.errors import ConsortiaError, ValidationError
from consortia.hub.app import HubSettings, create_app
from consortia.hub.approvals import DEFAULT_APPROVAL_TIMEOUT

__all__ = ["HTTP_IMPLEMENTATION", "http_implementation", "is_loopback", "main", "serve"]

HTTP_IMPLEMENTATION = "httptools"
"""uvicorn's HTTP/1.1 implementation used by the hub (its C parser, not the pure-Python h11)."""


def http_implementation() -> str:
    """The uvicorn ``http`` setting of the hub: ``httptools``, checked to be importable.

    uvicorn silently falls back to its pure-Python parser when httptools is missing,
    which makes receiving a large contribution several times slower; the hub refuses to
    start instead.

    Raises
    ------
    ConsortiaError
        If the ``httptools`` package is not installed.
    """
    try:
        import httptools  # noqa: F401
    except ImportError:
        raise ConsortiaError(
            "the hub needs the 'httptools' package (uvicorn's C HTTP parser): pip install httptools"
        ) from None
    return HTTP_IMPLEMENTATION


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    settings: HubSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8443,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    insecure_http: bool = False,
    log_level: str = "warning",
) -> None:
    """Run the hub until interrupted.

    Parameters
    ----------
    settings
        The hub's configuration (database URL, timeouts, limits).
    host, port
        Where to listen.
    tls_cert, tls_key
        Server certificate chain and key (PEM, for example from ``consortia certs``).
    insecure_http
        Serve plain HTTP; allowed only on a loopback address.

    Raises
    ------
    ValidationError
        If TLS is not configured and plain HTTP was not explicitly allowed on loopback.
    ConsortiaError
        If ``httptools`` (uvicorn's C HTTP parser) is not installed.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValidationError("--tls-cert and --tls-key go together")
    if tls_cert is None:
        if not insecure_http:
            raise ValidationError(
                "the hub serves HTTPS: give --tls-cert and --tls-key "
                "(or --insecure-http on a loopback address for local tests)"
            )
        if not is_loopback(host):
            raise ValidationError(
                f"--insecure-http is allowed only on a loopback address, not on {host!r}"
            )
    http = http_implementation()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level=log_level,
        http=http,
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m consortia.hub``."""
    p = argparse.ArgumentParser(prog="python -m consortia.hub")
    p.add_argument("--db", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--insecure-http", action="store_true")
    p.add_argument("--node-timeout", type=float, default=30.0)
    p.add_argument("--reveal-timeout", type=float, default=120.0)
    p.add_argument("--max-payload", type=int, default=256 * 2**20)
    p.add_argument("--max-json-body", type=int, default=2**20)
    p.add_argument("--audit-key-file")
    p.add_argument("--approval-timeout", type=float, default=DEFAULT_APPROVAL_TIMEOUT)
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper())
    serve(
        HubSettings(
            db=a.db,
            node_timeout=a.node_timeout,
            reveal_timeout=a.reveal_timeout,
            max_payload=a.max_payload,
            max_json_body=a.max_json_body,
            audit_key_file=a.audit_key_file,
            approval_timeout=a.approval_timeout,
        ),
        host=a.host,
        port=a.port,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        insecure_http=a.insecure_http,
        log_level=a.log_level,
    )
