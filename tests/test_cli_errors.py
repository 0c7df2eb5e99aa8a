"""Bad input gets one clear line on stderr and exit code 2, never a traceback (in process:
the core's Env captures what the console script would print)."""

import pytest
from click.testing import CliRunner

from netbench.cli import main
from netbench.spec import SpecError
from tests.cli import invoke


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "not a url"], "scheme must be http or https"),
        (["--url", "ftp://127.0.0.1/"], "scheme must be http or https"),
        (["--url", "http://"], "no host"),
        (["--url", "http://127.0.0.1:99999/"], "port"),
        (["--url", "http://127.0.0.1:1", "--concurrency", "0"], "--concurrency must be an integer >= 1"),
        (["--url", "http://127.0.0.1:1", "--n", "0"], "--n must be an integer >= 1"),
        (["--url", "http://127.0.0.1:1", "--warmup", "-1"], "--warmup must be an integer >= 0"),
        (["--url", "http://127.0.0.1:1", "--mode", "poetry"], "--mode 'poetry'"),
        (["--url", "http://127.0.0.1:1", "--header", "no colon here"], "unreadable header"),
        (["--url", "http://127.0.0.1:1", "--concurrency", "four"], "'four' is not a valid integer"),
        (["--url", "http://127.0.0.1:1", "--timeout", "0"], "--timeout must be a number from 0.001"),
        (["--url", "http://127.0.0.1:1", "--timeout", "nan"], "--timeout must be a number from 0.001"),
        (["--url", "http://127.0.0.1:1", "--timeout", "0.0004"], "--timeout must be a number from 0.001"),
        (["--url", "http://127.0.0.1:1", "--rate", "inf"], "--rate must be a number"),
        (["--url", "http://127.0.0.1:1", "--rate", "-2"], "--rate must be a number"),
        (["--url", "http://127.0.0.1:1", "--rate", "5", "--duration", "inf"], "--duration must be a number"),
        (["--url", "http://127.0.0.1:1", "--seed", "-1"], "--seed must be an integer"),
        (["--url", "http://127.0.0.1:1", "--api-key", "sk-\u00e9t\u00e9"], "the API key"),
        (["--url", "http://127.0.0.1:1", "--header", "X-Note: caf\u00e9"], "non-ASCII"),
        (["--url", "http://b\u00fccher..example/"], "not a valid internationalised domain name"),
        (["--url", "http://127.0.0.1:1", "--slo", "ttft.p95 about 2"], "--slo"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = invoke("run", *args)
    assert result.code == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netbench: error:") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_unknown_option_and_unreadable_cacert_are_exit_2():
    assert invoke("run", "--url", "http://127.0.0.1:1", "--bogus").code == 2
    sweep = invoke("sweep", "--url", "http://127.0.0.1:1", "--concurrency", "1,x")
    assert sweep.code == 2 and "unreadable list" in sweep.stderr
    assert invoke("sweep", "--url", "http://127.0.0.1:1", "--mode", "health,poetry").stderr.count("'poetry'") == 1
    assert invoke("run", "--url", "http://127.0.0.1:1", "--hgrm", "nope", "x.hgrm").stderr == (
        "netbench: error: --hgrm 'nope': choose one of " + ", ".join(__import__("netbench.phases").phases.PHASE_NAMES) + "\n")


def test_click_runner_sees_the_spec_error():
    # The click layer turns flags into a RunSpec; validation lives in the spec, not in the CLI.
    result = CliRunner().invoke(main, ["run", "--url", "http://h", "--n", "0"], standalone_mode=False)
    assert isinstance(result.exception, SpecError)
