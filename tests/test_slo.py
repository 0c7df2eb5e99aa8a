"""SLO gates: parsing (clear one-line errors for what cannot be read) and evaluation."""

import numpy as np
import pytest

from netbench.cli import error_line
from netbench.errors import InputError
from netbench.outcomes import Outcome
from netbench.report.gates import gate_lines
from netbench.slo import evaluate, parse_slo
from netbench.spec import RunSpec
from netbench.summary import summarize
from tests.cli import invoke
from tests.runs import synthetic_run


def run_with_e2e_ms(*values_ms: float, failed: int = 0):
    run = synthetic_run(np.array(values_ms) * 1000)
    run.counters["requests"] += failed
    run.counters[Outcome.HTTP_5XX.key] += failed
    return run


def test_parse_units_and_operators():
    assert parse_slo("ttft.p95<200ms").bound == 200_000
    assert parse_slo("e2e.p99 <= 2s").bound == 2_000_000
    assert parse_slo("e2e.p999<1.5m").bound == 90_000_000
    assert parse_slo("error_rate<1%").bound == pytest.approx(0.01)
    assert parse_slo("error_rate<0.01").bound == pytest.approx(0.01)
    assert parse_slo("rps>=100").bound == 100
    gate = parse_slo("ttfb.max>300us")
    assert (gate.metric, gate.statistic, gate.bound) == ("ttfb", "max", 300)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttft.p95 about 2", "expected e.g. 'ttft.p95<200ms'"),
        ("ttft.p95<200", "give the bound a unit, e.g. 200ms or 200s"),
        ("ttft.p95<200parsecs", "unreadable duration '200parsecs'"),
        ("ttft.p95<-3ms", "is negative"),
        ("ttft<200ms", "a phase needs one of .p50"),
        ("ttft.p42<200ms", "a phase needs one of .p50"),
        ("latency.p95<200ms", "unknown metric 'latency'"),
        ("error_rate<abc%", "'abc' is not a number"),
        ("rps.p50>3", "rps takes no statistic"),
    ],
)
def test_unparsable_gates_say_what_is_wrong(text, message):
    with pytest.raises(InputError) as raised:
        parse_slo(text)
    assert "--slo" not in str(raised.value) and (raised.value.subject, raised.value.value) == ("slo", text)
    line = error_line(raised.value)  # the CLI names the flag
    assert line.startswith(f"netbench: error: --slo {text!r}") and message in line


def test_evaluate_pass_fail_lines():
    run = run_with_e2e_ms(*range(1, 101), failed=2)  # 100 ok (1..100 ms), 2 failed
    gates = [parse_slo(t) for t in ("e2e.p50<60ms", "e2e.p99<50ms", "error_rate<5%", "error_rate<1%", "ttft.p95<1s")]
    summary = summarize(run)
    verdicts = evaluate(gates, [summary])
    lines = gate_lines(verdicts)
    assert [v.passed for v in verdicts] == [True, False, True, False, False]
    assert verdicts[0].value == summary.phases["e2e"].p50_us  # the number every output shows
    assert lines[0].startswith("SLO e2e.p50<60ms: PASS (measured 50.")
    assert lines[1].startswith("SLO e2e.p99<50ms: FAIL (measured 99.")
    assert lines[3] == "SLO error_rate<1%: FAIL (measured 1.96 %)"
    # a GET has no TTFT: a gate on a phase with no value fails, it never passes silently
    assert lines[4] == "SLO ttft.p95<1s: FAIL (measured no value)" and verdicts[4].value is None


def test_every_statistic_reads_the_summary():
    summary = summarize(run_with_e2e_ms(*range(1, 1001)))
    e2e = summary.phases["e2e"]
    for statistic, value in (("p50", e2e.p50_us), ("p90", e2e.p90_us), ("p95", e2e.p95_us), ("p99", e2e.p99_us),
                             ("p999", e2e.p999_us), ("max", e2e.max_us), ("mean", e2e.mean_us)):  # fmt: skip
        (gate,) = evaluate([parse_slo(f"e2e.{statistic}<1h")], [summary])
        assert gate.value == value and gate.passed
    assert e2e.p50_us < e2e.p90_us < e2e.p95_us < e2e.p99_us < e2e.p999_us <= e2e.max_us


def test_sweep_verdicts_name_the_run():
    closed = run_with_e2e_ms(1, 2, 3)
    opened = synthetic_run(np.array([1000, 2000]), RunSpec(url="http://127.0.0.1:8000/", mode="get", rate=20.0))
    lines = gate_lines(evaluate([parse_slo("e2e.max<10ms")], [summarize(closed), summarize(opened)]))
    assert lines[0].endswith("[get c=1]") and lines[1].endswith("[get rate=20/s]")


def test_a_bad_gate_fails_before_any_load_is_sent(refused_url):
    # The target refuses connections: were the run attempted, the exit code would be 1, not 2.
    result = invoke("run", "--url", refused_url, "--slo", "e2e.p95<2")
    assert result.code == 2
    assert result.stderr.strip() == "netbench: error: --slo 'e2e.p95<2': give the bound a unit, e.g. 2ms or 2s"
