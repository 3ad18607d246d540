"""``consortia certs init`` and ``consortia certs issue``."""

from __future__ import annotations

import ipaddress
import stat

from click.testing import CliRunner
from cryptography import x509

from consortia.cli import main


def test_init_and_issue(tmp_path):
    runner = CliRunner()
    ca_dir, out = tmp_path / "ca", tmp_path / "tls"
    result = runner.invoke(main, ["certs", "init", "--dir", str(ca_dir)])
    assert result.exit_code == 0, result.output
    assert "ca.pem" in result.output and "ca-key.pem" in result.output
    assert stat.S_IMODE((ca_dir / "ca-key.pem").stat().st_mode) == 0o600

    again = runner.invoke(main, ["certs", "init", "--dir", str(ca_dir)])
    assert again.exit_code == 1 and "already exists" in again.output

    result = runner.invoke(
        main,
        [
            *("certs", "issue", "--ca", str(ca_dir), "--out", str(out)),
            *("--host", "hub.example.org", "--host", "10.0.0.7", "--name", "hub"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "hub.example.org, 10.0.0.7" in result.output
    leaf = x509.load_pem_x509_certificate((out / "hub.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hub.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert stat.S_IMODE((out / "hub-key.pem").stat().st_mode) == 0o600


def test_issue_defaults_to_loopback_and_reports_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["certs", "init", "--dir", str(tmp_path / "ca")]).exit_code == 0
    result = runner.invoke(
        main, ["certs", "issue", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0 and "localhost, 127.0.0.1" in result.output
    assert (tmp_path / "o" / "server.pem").exists()

    missing = runner.invoke(
        main, ["certs", "issue", "--ca", str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert missing.exit_code == 1 and "no CA in" in missing.output
    bad = runner.invoke(
        main,
        ["certs", "issue", "--ca", str(tmp_path / "ca"), "--out", str(tmp_path), "--host", "a b"],
    )
    assert bad.exit_code == 1 and "neither a valid DNS name" in bad.output
