"""The small CA: files, certificate contents, and real TLS handshakes."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from consortia.certs import (
    CAFiles,
    CertFiles,
    client_ssl_context,
    create_ca,
    issue_server_certificate,
    server_ssl_context,
)
from consortia.errors import ValidationError


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> tuple[CAFiles, CertFiles, CAFiles]:
    root = tmp_path_factory.mktemp("pki")
    ca = create_ca(root / "ca")
    server = issue_server_certificate(root / "ca", root / "server")
    other = create_ca(root / "other-ca", common_name="someone else")
    return ca, server, other


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello over tls"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def https_server(cert: CertFiles) -> Iterator[int]:
    """An ssl-wrapped http.server on 127.0.0.1; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = server_ssl_context(cert.certificate, cert.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_ca_files_and_permissions(pki, tmp_path):
    ca, server, _ = pki
    assert ca.certificate.name == "ca.pem" and ca.key.name == "ca-key.pem"
    assert stat.S_IMODE(ca.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(ca.certificate.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert "consortia CA" in cert.subject.rfc4514_string()
    # refuses to overwrite, unless asked
    before = ca.certificate.read_bytes()
    with pytest.raises(ValidationError, match="already exists"):
        create_ca(ca.certificate.parent)
    assert ca.certificate.read_bytes() == before
    fresh = create_ca(tmp_path / "ca")
    again = create_ca(tmp_path / "ca", overwrite=True, common_name="renewed", days=30)
    assert again == fresh and b"renewed" not in before
    renewed = x509.load_pem_x509_certificate(again.certificate.read_bytes())
    assert "renewed" in renewed.subject.rfc4514_string()


def test_server_certificate_contents(pki):
    ca, server, _ = pki
    assert server.ca_certificate == ca.certificate
    certs = x509.load_pem_x509_certificates(server.certificate.read_bytes())
    leaf, ca_cert = certs[0], certs[1]
    assert ca_cert.subject == x509.load_pem_x509_certificate(ca.certificate.read_bytes()).subject
    leaf.verify_directly_issued_by(ca_cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert 824 <= days <= 826


def test_tls_handshake_trusting_the_ca(pki):
    ca, server, _ = pki
    with https_server(server) as port:
        for host in ("127.0.0.1", "localhost"):
            response = httpx.get(
                f"https://{host}:{port}/", verify=client_ssl_context(ca.certificate), timeout=60
            )
            assert response.status_code == 200 and response.text == "hello over tls"


def test_tls_handshake_fails_with_another_ca_or_no_ca(pki):
    _, server, other = pki
    with https_server(server) as port:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/", verify=client_ssl_context(other.certificate))
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/")  # system trust store only


def test_tls_handshake_fails_for_a_host_not_in_the_certificate(pki, tmp_path):
    ca, _, _ = pki
    elsewhere = issue_server_certificate(
        ca.certificate.parent, tmp_path, hostnames=["hub.example.org", "10.1.2.3"], name="hub"
    )
    assert elsewhere.certificate.name == "hub.pem"
    with (
        https_server(elsewhere) as port,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        httpx.get(f"https://127.0.0.1:{port}/", verify=client_ssl_context(ca.certificate))


def test_uvicorn_serves_the_issued_certificate(pki):
    ca, server, _ = pki

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(server.certificate),
        ssl_keyfile=str(server.key),
        log_level="warning",
        lifespan="off",
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 300  # a generous ceiling: the server says when it is up
        while not uv.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert uv.started, "the TLS server did not start"
        response = httpx.get(
            f"https://localhost:{port}/", verify=client_ssl_context(ca.certificate), timeout=60
        )
        assert response.status_code == 200 and response.text == "ok"
    finally:
        uv.should_exit = True
        thread.join(60)


def test_bad_input(pki, tmp_path: Path):
    ca, _, _ = pki
    ca_dir = ca.certificate.parent
    with pytest.raises(ValidationError, match="neither a valid DNS name nor an IP"):
        issue_server_certificate(ca_dir, tmp_path, hostnames=["bad host!"])
    with pytest.raises(ValidationError, match="at least one"):
        issue_server_certificate(ca_dir, tmp_path, hostnames=[])
    with pytest.raises(ValidationError, match="no CA in"):
        issue_server_certificate(tmp_path / "nowhere", tmp_path)
    with pytest.raises(ValidationError, match="days"):
        issue_server_certificate(ca_dir, tmp_path, days=0)
    with pytest.raises(ValidationError, match="simple file name"):
        issue_server_certificate(ca_dir, tmp_path, name="../evil")
    with pytest.raises(ValidationError, match="common_name"):
        create_ca(tmp_path / "x", common_name="")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "ca.pem").write_text("garbage")
    (tmp_path / "broken" / "ca-key.pem").write_text("garbage")
    with pytest.raises(ValidationError, match="not valid PEM"):
        issue_server_certificate(tmp_path / "broken", tmp_path)
    wildcard = issue_server_certificate(ca_dir, tmp_path, hostnames=["*.example.org", "::1"])
    leaf = x509.load_pem_x509_certificate(wildcard.certificate.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
