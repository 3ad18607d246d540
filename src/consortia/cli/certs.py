"""``consortia certs``: a small certificate authority for TLS between hub and nodes."""

from __future__ import annotations

from pathlib import Path

import click

from consortia.errors import ValidationError


@click.group(name="certs")
def command() -> None:
    """Create a small CA and TLS server certificates for the hub."""


@command.command("init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for ca.pem and ca-key.pem (created if missing).",
)
@click.option("--common-name", default="consortia CA", show_default=True, help="CA subject name.")
@click.option("--days", default=3650, show_default=True, type=int, help="Validity in days.")
@click.option("--overwrite", is_flag=True, help="Replace an existing CA.")
def init(directory: Path, common_name: str, days: int, overwrite: bool) -> None:
    """Create a certificate authority in DIR (ca.pem to distribute, ca-key.pem to keep)."""
    try:
        from consortia.certs import create_ca

        files = create_ca(directory, common_name=common_name, days=days, overwrite=overwrite)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"CA certificate: {files.certificate}")
    click.echo(f"CA private key: {files.key} (mode 0600, keep it safe)")


@command.command("issue")
@click.option(
    "--ca",
    "ca_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the CA (from `consortia certs init`).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for <name>.pem and <name>-key.pem.",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="DNS name or IP address of the server; repeat for several "
    "(default: localhost and 127.0.0.1).",
)
@click.option("--name", default="server", show_default=True, help="Base name of the files.")
@click.option("--days", default=825, show_default=True, type=int, help="Validity in days.")
def issue(ca_dir: Path, out_dir: Path, hosts: tuple[str, ...], name: str, days: int) -> None:
    """Issue a TLS server certificate signed by the CA."""
    hostnames = hosts or ("localhost", "127.0.0.1")
    try:
        from consortia.certs import issue_server_certificate

        files = issue_server_certificate(ca_dir, out_dir, hostnames=hostnames, days=days, name=name)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"certificate: {files.certificate} (for {', '.join(hostnames)})")
    click.echo(f"private key: {files.key} (mode 0600)")
    click.echo(f"clients trust: {files.ca_certificate}")
