"""Serve the hub with uvicorn (``consortia hub start`` or ``python -m consortia.hub``)."""

from __future__ import annotations

import ipaddress

import uvicorn

from consortia.errors import ConsortiaError, ValidationError
from consortia.hub.app import create_app
from consortia.hub.settings import HOST, LOG_LEVEL, PORT, HubSettings

__all__ = ["HTTP_IMPLEMENTATION", "http_implementation", "is_loopback", "serve"]

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
    host: str = HOST,
    port: int = PORT,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    insecure_http: bool = False,
    log_level: str = LOG_LEVEL,
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
