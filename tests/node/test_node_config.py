"""The node's TOML configuration: round trip and typed errors naming the key."""

from __future__ import annotations

import textwrap

import pytest

from consortia.errors import ValidationError
from consortia.node import DatasetConfig, NodeConfig, load_config
from consortia.privacy.policy import Policy


def _write(tmp_path, text: str):
    p = tmp_path / "node.toml"
    p.write_text(textwrap.dedent(text))
    return p


def test_round_trip_and_relative_paths(tmp_path):
    cfg = NodeConfig(
        name="hospital-a",
        hub="https://hub.example.org:8443",
        data_dir=tmp_path / "state",
        ca=tmp_path / "ca.pem",
        peers={"hospital-b": "ab" * 32},
        poll_wait=7.5,
        fsync=False,
        approval="manual",
        auto_approve=("stats.count", "stats.mean"),
        datasets=(
            DatasetConfig(
                name="cohort",
                path=tmp_path / "c.csv",
                schema={"id": "pid", "covariates": {"age": "float"}},
                policy=Policy(allowed_algorithms=("stats.*",), min_sites=4),
            ),
        ),
    )
    assert load_config(cfg.write(tmp_path / "n.toml")) == cfg
    p = _write(
        tmp_path,
        """
        [node]
        name = "a"
        hub = "http://127.0.0.1:1/"
        data_dir = "state"
        [datasets.d]
        path = "data/d.csv"
        """,
    )
    got = load_config(p)
    assert got.data_dir == tmp_path / "state" and got.hub == "http://127.0.0.1:1"
    assert got.datasets[0].path == tmp_path / "data" / "d.csv"
    assert got.datasets[0].policy == Policy() and got.fsync is True
    assert got.approval == "auto" and got.auto_approve == ()  # today's behaviour


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[datasets.d]\npath='x'\n", r"\[node\] table"),
        ("[node]\nname='a'\nhub='http://h'\n[datasets.d]\npath='x'\n", "data_dir"),
        (
            "[node]\nname='a'\nhub='ftp://h'\ndata_dir='s'\n[datasets.d]\npath='x'\n",
            r"\[node\] hub: must",
        ),
        (
            "[node]\nname='a'\nhub='http://h'\ndata_dir='s'\ncolour=1\n[datasets.d]\npath='x'\n",
            "colour",
        ),
        ("[node]\nname='a'\nhub='http://h'\ndata_dir='s'\n", "no \\[datasets"),
        (
            "[node]\nname='a'\nhub='http://h'\ndata_dir='s'\n[peers]\nb='xy'\n[datasets.d]\npath='x'\n",
            "fingerprint",
        ),
        (
            "[node]\nname='a'\nhub='http://h'\ndata_dir='s'\n[datasets.d]\npath='x'\n[datasets.d.policy]\nmin_site=3\n",
            "min_site",
        ),
        (
            "[node]\nname='a'\nhub='http://h'\ndata_dir='s'\npoll_wait=0\n[datasets.d]\npath='x'\n",
            "poll_wait",
        ),
        (
            "[node]\nname='a'\nhub='http://h'\ndata_dir='s'\napproval='maybe'\n"
            "[datasets.d]\npath='x'\n",
            r"\[node\] approval: must be one of",
        ),
        (
            "[node]\nname='a'\nhub='http://h'\ndata_dir='s'\nauto_approve='stats.*'\n"
            "[datasets.d]\npath='x'\n",
            r"\[node\] auto_approve: must be a list",
        ),
        ("[node\n", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, text, match):
    with pytest.raises(ValidationError, match=match):
        load_config(_write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(ValidationError, match="no node configuration"):
        load_config(tmp_path / "absent.toml")


def test_audit_key_file_is_read_relative_and_must_be_private(tmp_path):
    from consortia.audit import write_key_file
    from consortia.node import NodeAgent

    key = tmp_path / "audit.key"
    write_key_file(key)
    csv = tmp_path / "d.csv"
    csv.write_text("x\n1\n")
    path = _write(
        tmp_path,
        """
        [node]
        name = "a"
        hub = "http://127.0.0.1:1"
        data_dir = "state"
        audit_key_file = "audit.key"
        [datasets.d]
        path = "d.csv"
        """,
    )
    cfg = load_config(path)
    assert cfg.audit_key_file == key
    assert load_config(cfg.write(tmp_path / "again.toml")).audit_key_file == key
    agent = NodeAgent(cfg)
    try:
        agent.store.audit.append("node:a", "test", {})
        assert agent.store.audit.keyed
    finally:
        agent.close()
    key.chmod(0o644)
    with pytest.raises(ValidationError, match="owner only"):
        NodeAgent(cfg)
