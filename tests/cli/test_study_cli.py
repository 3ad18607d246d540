"""``consortia study`` turns consortia errors into one-line CLI errors."""

from click.testing import CliRunner

from consortia.cli import main
from consortia.hub.process import free_port


def test_unreachable_hub_is_a_one_line_error():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "abc"], ["result", "abc"], ["cancel", "abc"]):
        r = CliRunner().invoke(main, ["study", *args, "--hub", url, "--token", "t"])
        assert r.exit_code == 1
        assert "cannot reach the hub" in r.output and "Traceback" not in r.output


def test_unknown_algorithm_is_refused_before_connecting():
    r = CliRunner().invoke(
        main,
        [
            "study",
            "submit",
            "--hub",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--algorithm",
            "stats.nope",
            "--dataset",
            "d",
        ],
    )
    assert r.exit_code == 1 and "no algorithm is registered under 'stats.nope'" in r.output


def _submit(params: str, algorithm: str = "survival.kaplan_meier"):
    url = f"http://127.0.0.1:{free_port()}"
    return CliRunner().invoke(
        main,
        ["study", "submit", "--hub", url, "--token", "t", "--algorithm", algorithm,
         "--dataset", "d", "--params", params],
    )  # fmt: skip


def test_params_from_a_file_by_at_sign_or_path(tmp_path):
    good = tmp_path / "p.json"
    good.write_text('{"time": "time", "event": "event", "time_grid": [0, 5, 10]}')
    for value in (f"@{good}", str(good)):
        r = _submit(value)
        # the parameters were read and the algorithm built: only the hub is missing
        assert r.exit_code == 1 and "cannot reach the hub" in r.output, r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"time": "time", "event": "event", "nonsense": 1}')
    r = _submit(f"@{bad}")
    assert r.exit_code == 1 and "nonsense" in r.output and "cannot reach" not in r.output


def test_params_that_are_not_a_json_object_name_the_rule(tmp_path):
    r = _submit("@" + str(tmp_path / "missing.json"))
    assert r.exit_code == 2 and "cannot read" in r.output and "missing.json" in r.output
    notjson = tmp_path / "p.json"
    notjson.write_text("time=time")
    r = _submit(f"@{notjson}")
    assert r.exit_code == 2 and "is not JSON" in r.output and "@FILE" in r.output
    r = _submit("[1, 2]")
    assert r.exit_code == 2 and "must be a JSON object" in r.output
    r = _submit("{nope")
    assert r.exit_code == 2 and "is not JSON" in r.output
