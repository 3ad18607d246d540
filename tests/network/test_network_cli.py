"""docs/deployment.md followed literally through the CLI: TLS hub, three nodes, a study."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
from netutil import NETWORK_TEST_TIMEOUT, PATIENCE, toy_frame, wait_until

from consortia import Simulation
from consortia.data import load_dataset
from consortia.errors import ProtocolError
from consortia.hub import free_port
from consortia.sdk import connect
from consortia.stats.descriptive import Mean

pytestmark = pytest.mark.timeout(NETWORK_TEST_TIMEOUT)

_SCRIPT = Path(sys.executable).with_name("consortia")
CLI = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from consortia.cli import main; main()"]
)


def cli(*args: str, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=PATIENCE
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"consortia {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def test_deployment_guide_end_to_end_over_tls(tmp_path, procs):
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    cli("certs", "init", "--dir", "ca", cwd=hub_dir)
    cli("certs", "issue", "--ca", "ca", "--out", "tls", cwd=hub_dir)
    ca = hub_dir / "ca" / "ca.pem"
    port = free_port()
    procs.append(
        subprocess.Popen(
            [
                *CLI,
                "hub",
                "start",
                "--db",
                "hub.sqlite",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--tls-cert",
                "tls/server.pem",
                "--tls-key",
                "tls/server-key.pem",
                "--node-timeout",
                "20",
            ],
            cwd=hub_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    url = f"https://127.0.0.1:{port}"

    verify = ssl.create_default_context(cafile=str(ca))

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", verify=verify, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, PATIENCE, "the TLS hub")
    researcher = cli(
        "hub",
        "token",
        "create",
        "--db",
        "hub.sqlite",
        "--role",
        "researcher",
        "--name",
        "alice",
        cwd=hub_dir,
    ).stdout.strip()
    assert researcher.startswith("cre_")

    frames = {}
    enrols = []
    for i in range(3):
        name = f"hospital-{'abc'[i]}"
        site = tmp_path / name
        site.mkdir()
        (site / "ca.pem").write_bytes(ca.read_bytes())
        frame = toy_frame(i, 30 + 5 * i)
        frame.insert(0, "patient_id", [f"{name}-{k}" for k in range(len(frame))])
        frame.to_csv(site / "cohort.csv", index=False)
        (site / "node.toml").write_text(
            textwrap.dedent(
                f"""\
                [node]
                name = "{name}"
                hub = "{url}"
                ca = "ca.pem"
                data_dir = "state"
                poll_wait = 10

                [datasets.cohort]
                path = "cohort.csv"

                [datasets.cohort.schema]
                id = "patient_id"
                covariates = {{ x1 = "float", x2 = "float", y = "float" }}

                [datasets.cohort.policy]
                allowed_algorithms = ["stats.*"]
                min_cohort_size = 10
                min_sites = 3
                """
            )
        )
        token = cli(
            "hub", "enrolment-token", "create", "--db", "hub.sqlite", "--node", name, cwd=hub_dir
        ).stdout.strip()
        (site / "enrol.token").write_text(token + "\n")
        enrols.append(
            subprocess.Popen(
                [*CLI, "node", "enrol", "--config", "node.toml", "--token-file", "enrol.token"],
                cwd=site,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        frames[name] = site
    fingerprints = {}
    for name, p in zip(frames, enrols, strict=True):
        out, err = p.communicate(timeout=PATIENCE)
        assert p.returncode == 0, err
        assert "identity fingerprint:" in out
        fingerprints[name] = out.split("identity fingerprint:")[1].split()[0]
    # the owners exchange fingerprints and each pins the others (docs/deployment.md 2.2)
    for name, site in frames.items():
        for other, fp in fingerprints.items():
            if other != name:
                cli("node", "peers", "add", "--config", "node.toml", other, fp, cwd=site)
        listed = cli("node", "peers", "list", "--config", "node.toml", cwd=site).stdout
        assert all(fingerprints[o] in listed for o in frames if o != name)
    for site in frames.values():
        assert (site / "state" / "credential").stat().st_mode & 0o777 == 0o600
        assert (site / "state" / "identity.key").stat().st_mode & 0o777 == 0o600
        procs.append(
            subprocess.Popen(
                [*CLI, "node", "start", "--config", "node.toml", "--log-level", "warning"],
                cwd=site,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    env = {
        **os.environ,
        "CONSORTIA_HUB": url,
        "CONSORTIA_TOKEN": researcher,
        "CONSORTIA_CA": str(ca),
    }
    out = cli(
        "study",
        "submit",
        "--algorithm",
        "stats.mean",
        "--params",
        '{"columns": ["x1", "y"]}',
        "--dataset",
        "cohort",
        "--timeout",
        str(int(PATIENCE)),
        cwd=tmp_path,
        env=env,
    ).stdout
    sid = out.splitlines()[0].strip()
    assert "mean" in out and "n = 105" in out
    shown = cli("study", "status", sid, "--format", "json", cwd=tmp_path, env=env).stdout
    status = json.loads(shown)
    assert status["status"] == "finished" and len(status["participants"]) == 3
    assert "mean" in cli("study", "result", sid, cwd=tmp_path, env=env).stdout
    assert "finished" in cli("study", "cancel", sid, cwd=tmp_path, env=env).stdout

    # the SDK over TLS gives the simulation's exact result on the same files
    with connect(url, researcher, ca=ca) as fed:
        got = fed.result(sid)
    sites = {
        name: load_dataset(str(site / "cohort.csv"), name="cohort") for name, site in frames.items()
    }
    ref = Simulation(sites, dataset="cohort").run(Mean(columns=("x1", "y")))
    np.testing.assert_allclose(got.mean, ref.mean, rtol=0, atol=1e-12)
    with pytest.raises(ProtocolError):  # the hub's certificate is not in the system store
        connect(url, researcher)

    assert cli("audit", "verify", "--db", "hub.sqlite", cwd=hub_dir).returncode == 0
    for site in frames.values():
        assert cli("audit", "verify", "--db", "state/node.sqlite", cwd=site).returncode == 0


def test_plain_http_only_on_loopback_with_the_flag(tmp_path):
    r = cli("hub", "start", "--db", "h.sqlite", "--port", "1", cwd=tmp_path, check=False)
    assert r.returncode != 0 and "--tls-cert" in r.stderr
    r = cli(
        "hub",
        "start",
        "--db",
        "h.sqlite",
        "--host",
        "0.0.0.0",
        "--insecure-http",
        cwd=tmp_path,
        check=False,
    )
    assert r.returncode != 0 and "loopback" in r.stderr
