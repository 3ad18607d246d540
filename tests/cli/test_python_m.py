"""``python -m consortia.hub`` and ``python -m consortia.node`` are the click commands
``consortia hub start`` and ``consortia node start``: one definition of their options."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from consortia.cli import main
from consortia.hub import settings


def _options(cmd: click.Command) -> set[str]:
    return {opt for p in cmd.params for opt in p.opts}


@pytest.mark.parametrize(
    ("module", "group"),
    [("consortia.hub", "hub"), ("consortia.node", "node")],
)
def test_python_m_offers_the_options_of_the_click_command(module: str, group: str) -> None:
    cmd = main.commands[group].commands["start"]  # type: ignore[attr-defined]
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    assert out.startswith(f"Usage: python -m {module} [OPTIONS]")
    shown = {word.rstrip(",") for line in out.splitlines() for word in line.split()}
    assert _options(cmd) - {"--help"} <= shown
    if group == "hub":  # the defaults come from consortia.hub.settings
        defaults = {p.name: p.default for p in cmd.params}
        assert defaults["node_timeout"] == settings.NODE_TIMEOUT == 30.0
        assert defaults["reveal_timeout"] == settings.REVEAL_TIMEOUT == 120.0
        assert defaults["max_payload"] == settings.MAX_PAYLOAD == 256 * 2**20
        assert defaults["approval_timeout"] == settings.APPROVAL_TIMEOUT == 86400.0
        assert defaults["port"] == settings.PORT


def test_python_m_consortia_hub_refuses_plain_http_off_loopback(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "consortia.hub", "--db", str(tmp_path / "h.sqlite")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1 and "--tls-cert" in r.stderr
    assert "Traceback" not in r.stderr


def test_python_m_consortia_node_needs_an_existing_config(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "consortia.node", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_the_hub_defaults_are_written_once() -> None:
    import inspect

    from consortia.hub import HubProcess, HubSettings
    from consortia.hub.service import StudyEngine

    hub = HubSettings(db="x")
    engine = inspect.signature(StudyEngine.__init__).parameters
    process = inspect.signature(HubProcess.__init__).parameters
    for name, value in [
        ("node_timeout", settings.NODE_TIMEOUT),
        ("reveal_timeout", settings.REVEAL_TIMEOUT),
        ("max_payload", settings.MAX_PAYLOAD),
        ("approval_timeout", settings.APPROVAL_TIMEOUT),
    ]:
        assert getattr(hub, name) == engine[name].default == process[name].default == value
