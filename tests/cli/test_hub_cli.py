"""``consortia hub token create`` / ``enrolment-token create`` on a hub with a keyed audit log."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi.testclient import TestClient

from consortia.audit import write_key_file
from consortia.cli import main
from consortia.hub import HubSettings, bootstrap_token, create_app


def test_tokens_created_by_the_cli_keep_a_keyed_hub_log_verifiable(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    key_file = tmp_path / "audit.key"
    write_key_file(key_file)
    settings = HubSettings(db=db, audit_key_file=str(key_file))
    with TestClient(create_app(settings)):
        pass  # the hub created its keyed log
    runner = CliRunner()
    common = ["--db", db, "--audit-key-file", str(key_file)]
    r = runner.invoke(main, ["hub", "token", "create", "--role", "admin", "--name", "ops", *common])
    assert r.exit_code == 0, r.output
    admin = r.output.strip()
    r = runner.invoke(main, ["hub", "enrolment-token", "create", "--node", "hosp-a", *common])
    assert r.exit_code == 0, r.output
    # without the key the CLI refuses rather than leaving an entry without MAC
    r = runner.invoke(
        main, ["hub", "token", "create", "--db", db, "--role", "admin", "--name", "x"]
    )
    assert r.exit_code != 0 and "audit key" in r.output
    with TestClient(create_app(settings)) as c:
        report = c.get("/v1/audit/verify", headers={"Authorization": f"Bearer {admin}"}).json()
    assert report["ok"], report
    assert report["n_entries"] == 2


def test_bootstrap_token_on_an_unkeyed_log_needs_no_key(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    assert bootstrap_token(db, "researcher", "alice").startswith("cre_")


def test_an_unknown_log_level_is_a_usage_error_not_a_traceback(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("")
    for cmd in (["hub", "start"], ["node", "start", "--config", str(config)]):
        r = CliRunner().invoke(main, [*cmd, "--log-level", "verbose"])
        assert r.exit_code == 2, r.output
        assert "'verbose' is not one of" in r.output and "Traceback" not in r.output
