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
