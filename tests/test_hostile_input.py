"""Hostile input, without a server: secrets out of every message, every output path checked
before the load, run files checked against their schema (and property-tested with arbitrary
JSON and bytes), the /metrics parser total on any text, markup in tables, merge of one file
twice, and the client-bound verdict's false alarms gone. The same classes against real servers
are tests/test_hostile_servers.py."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from netbench.cli import command_line_secrets
from netbench.core import CommandResult, ExitStatus, exit_status
from netbench.curl import RedirectGuard
from netbench.errors import InputError
from netbench.histograms import PhaseStats
from netbench.load_check import client_bound_reasons, host_loads
from netbench.outputs import write_each
from netbench.report.answer import render_json
from netbench.report.csvout import csv_row
from netbench.report.markdown import render_markdown
from netbench.report.table import print_report
from netbench.results import RunFileError, RunResult, WorkerInfo, _encode_array
from netbench.analysis import analyse
from netbench.secrets import REDACTED, redact_url, url_secrets
from netbench.serial import dumps
from netbench.server_metrics import check_stored, difference, parse, percentiles
from netbench.server_timing import from_llama_cpp
from netbench.spec import RunSpec
from netbench.summary import Run, summarize
from netbench.workloads import Request, build_request
from tests.cli import invoke
from tests.runs import synthetic_run
from tests.synthetic_runs import exposition, make_run, metrics_difference

SECRET = "sk-hostile-7f3a9c"
UNREACHABLE = "http://127.0.0.1:1"


def one_line_error(result, *words: str) -> str:
    """The command failed before any load with exit 2 and one line naming `words`."""
    assert result.code == ExitStatus.BAD_INPUT, result
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netbench: error:"), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


# --- secrets -----------------------------------------------------------------------------------


def test_urls_lose_their_password_and_secret_parameters_and_keep_the_rest():
    url = "https://bob:hunter2@h:8443/v1?api-version=2024-06&api-key=K1&sig=S2&access_token=T3"
    assert redact_url(url) == f"https://bob:{REDACTED}@h:8443/v1?api-version=2024-06&api-key={REDACTED}&sig={REDACTED}&access_token={REDACTED}"
    assert set(url_secrets(url)) == {"hunter2", "K1", "S2", "T3"}
    assert url_secrets("http://h/?key=a%2Fb") == ("a/b", "a%2Fb")  # as decoded and as written
    assert url_secrets("http://h/v1") == () and redact_url("http://h/v1?x=1") == "http://h/v1?x=1"


def test_a_command_lines_secrets_are_found_wherever_they_stand(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-42")
    found = command_line_secrets(["run", "--api-key", "sk-a1", "--api-key=sk-b2", "--header", "X-Api-Key: xk-c3",
                                  "--header=Authorization: Bearer tok-d4", "--url", "http://u:pw-e5@h/?token=t-f6",
                                  "--header", "X-Trace: not-secret"])  # fmt: skip
    assert {"sk-from-env-42", "sk-a1", "sk-b2", "xk-c3", "Bearer tok-d4", "tok-d4", "pw-e5", "t-f6"} <= set(found)
    assert "not-secret" not in found


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--url", UNREACHABLE, "--api-key", SECRET, SECRET],  # click: unexpected extra argument (...)
        ["run", "--url", UNREACHABLE, "--header", f"X-Api-Key: {SECRET}", "--timeout", SECRET],  # not a valid float
        ["run", "--url", f"http://bob:{SECRET}@127.0.0.1:99999/"],  # the spec's own error
        ["run", "--url", f"http://127.0.0.1:1/v1?api-key={SECRET}", "--concurrency", "0"],
        ["sweep", "--url", f"http://bob:{SECRET}@127.0.0.1:1/", "--concurrency", f"1,{SECRET}"],
    ],
)
def test_no_error_message_quotes_a_secret(args, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = invoke(*args)
    assert result.code == ExitStatus.BAD_INPUT and result.stderr.startswith("netbench: error:"), result
    assert SECRET not in result.stderr + result.stdout


def test_the_run_file_and_summary_keep_no_url_secret(tmp_path):
    spec = RunSpec(url=f"http://bob:{SECRET}@127.0.0.1:8000/v1?api-key={SECRET}", mode="get")
    run = synthetic_run(np.full(5, 1000), spec)
    run.context["url"] = spec.url  # as a run file of an older netbench held it
    run.save(tmp_path / "run.json")
    assert SECRET not in (tmp_path / "run.json").read_text()
    summary = summarize(RunResult.load(tmp_path / "run.json"))
    assert SECRET not in summary.url and REDACTED in summary.url
    assert SECRET not in dumps(summary) + json.dumps(csv_row(summary))


def test_a_redirect_to_another_host_is_refused_only_with_secret_headers_libcurl_would_forward():
    follow = RunSpec(url="http://a:80/x", mode="get", follow_redirects=True, headers=(("X-Api-Key", "k"),))
    guard = RedirectGuard.of(follow, build_request(follow))
    assert guard is not None and guard.secrets == ("X-Api-Key",)
    # libcurl withholds Authorization and Cookie itself; nothing to guard without a redirect to follow
    bearer = follow.replace(headers=(("Authorization", "Bearer k"), ("Cookie", "c=1")), api_key="sk-1")
    assert RedirectGuard.of(bearer, build_request(bearer)) is None
    assert RedirectGuard.of(follow.replace(follow_redirects=False), build_request(follow)) is None
    assert RedirectGuard.of(follow, Request("http://a/x", "GET", ("X-Trace: 1",), None, False)) is None
    for location, allowed in [
        (b"/elsewhere", True), (b"http://a/y", True), (b"http://A:80/y", True),
        (b"http://b/y", False), (b"http://a:8080/y", False), (b"https://a/y", False), (b"//b/y", False),
    ]:  # fmt: skip
        guard.reset()
        assert guard.allows(b"HTTP/1.1 302 Found\r\n")
        assert guard.allows(b"Location: " + location + b"\r\n") is allowed, location
    guard.reset()
    assert guard.allows(b"HTTP/1.1 200 OK\r\n") and guard.allows(b"Location: http://b/\r\n")  # not a redirect
    guard.reset()
    guard.allows(b"HTTP/1.1 301 Moved\r\n")
    guard.allows(b"location: http://evil:81/\r\n")
    assert guard.refused == "http://evil:81" and "X-Api-Key" in guard.note()


# --- outputs, checked before the load ------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "words"),
    [
        (["--csv", "{tmp}/missing/rows.csv"], ["--csv", "does not exist"]),
        (["--raw", "{tmp}"], ["--raw", "is a directory"]),  # click's own check
        (["-o", "{tmp}/no/such/run.json"], ["-o", "does not exist"]),
        (["--hgrm", "e2e", "{tmp}/missing/e2e.hgrm"], ["--hgrm", "does not exist"]),
        (["--csv", "/proc/netbench-rows.csv"], ["--csv", "cannot be written"]),  # even for root
        (["--csv", "{tmp}/same.csv", "--raw", "{tmp}/same.csv"], ["--raw", "is the file of the csv output too"]),
        (["--csv", "{tmp}/foreign.csv"], ["--csv", "other columns"]),
        (["--max-error-rate", "nan"], ["--max-error-rate", "from 0 to 1"]),
        (["--max-error-rate", "inf"], ["--max-error-rate", "from 0 to 1"]),
        (["--max-error-rate", "-0.1"], ["--max-error-rate", "from 0 to 1"]),
        (["--max-error-rate", "1.5"], ["--max-error-rate", "from 0 to 1"]),
    ],
)
def test_bad_outputs_fail_before_the_load(tmp_path, outputs, words):
    """The URL is unreachable and no server runs: a check that let the run start would start
    worker processes, which a unit test may not (tests/conftest.py fails it)."""
    (tmp_path / "foreign.csv").write_text("a,b\n1,2\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in outputs]
    one_line_error(invoke("run", "--url", UNREACHABLE, "--no-progress", *args), *words)
    assert not (tmp_path / "missing").exists() and not (tmp_path / "no").exists()  # no folder made


def test_a_sweeps_run_file_folder_may_be_made_but_not_its_parents_and_is_no_file(tmp_path):
    (tmp_path / "a-file").write_text("x")
    sweep = ["sweep", "--url", UNREACHABLE, "--mode", "health", "--concurrency", "1,2", "--no-progress"]
    one_line_error(invoke(*sweep, "-o", str(tmp_path / "a-file")), "-o", "is a file")
    one_line_error(invoke(*sweep, "-o", str(tmp_path / "x" / "runs")), "-o", "does not exist")
    # a sweep's .hgrm files are one per run, each beside the others
    one_line_error(invoke(*sweep, "--hgrm", "e2e", str(tmp_path / "none" / "e.hgrm")), "e-health-c1.hgrm")


def test_report_and_merge_check_their_outputs_first(tmp_path):
    run = make_run("health", 1, [1000, 2000])
    run.save(tmp_path / "a.json")
    one_line_error(invoke("report", str(tmp_path / "a.json"), "-o", str(tmp_path / "no" / "r.md")), "-o", "does not exist")
    one_line_error(invoke("report", str(tmp_path / "a.json"), "--plots", str(tmp_path / "no" / "png")), "--plots")
    one_line_error(invoke("merge", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "-o", str(tmp_path)), "-o", "is a directory")
    one_line_error(invoke("merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", "/proc/m.json"), "-o", "cannot be written")


def test_one_failed_output_leaves_the_others_written(tmp_path):
    written = []
    failures = write_each([
        ("output", "/dev/full", lambda: Path("/dev/full").write_text("x" * 100_000)),
        ("csv", tmp_path / "rows.csv", lambda: written.append((tmp_path / "rows.csv").write_text("ok"))),
    ])  # fmt: skip
    assert [(f.subject, f.value) for f in failures] == [("output", "/dev/full")]
    assert "could not be written" in failures[0].reason and written
    assert (tmp_path / "rows.csv").read_text() == "ok"


def test_a_run_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    run = make_run("health", 1, [1000, 2000])
    run.save(tmp_path / "run.json")
    before = (tmp_path / "run.json").read_text()

    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        make_run("health", 1, [5000]).save(tmp_path / "run.json")
    assert (tmp_path / "run.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left


@pytest.mark.parametrize(
    ("failed", "outputs_failed", "gates", "status"),
    [
        (False, True, False, ExitStatus.OUTPUT_FAILED),
        (False, True, True, ExitStatus.OUTPUT_FAILED),  # 4 wins over 3
        (True, True, True, ExitStatus.FAILED_REQUESTS),  # a real exit 1 is never hidden
    ],
)
def test_an_output_failure_is_4_below_1_and_above_3(failed, outputs_failed, gates, status):
    failures = (InputError("output", "x", "could not be written"),) if outputs_failed else ()
    assert exit_status(CommandResult(failed=failed, gates_failed=gates, output_failures=failures)) is status
    interrupted = CommandResult(stop_signal="SIGINT", interrupted=True, failed=failed, output_failures=failures)
    assert exit_status(interrupted) is ExitStatus.INTERRUPTED


# --- markup, JSON, merge ---------------------------------------------------------------------------


def test_markup_in_a_url_a_model_id_or_a_host_is_printed_as_it_is():
    spec = RunSpec(url="http://127.0.0.1:8000/[/]x[bold]/", mode="completions", model="m[/]", backend="ray")
    run = make_run("completions", 1, [20_000, 21_000], ttft_us=[5_000, 6_000])
    run.spec, run.context["url"] = spec, spec.url
    run.workers = [WorkerInfo(0, "host[/]", 1, 2, 0.0, 2.0, 0.1), WorkerInfo(1, "[red]b", 2, 0, 0.0, 0.0, 0.0)]
    run.notes = ["a note with [/] in it"]
    console = Console(width=200, record=True)
    print_report(summarize(run), console)
    text = console.export_text()
    assert "[/]x[bold]" in text and "host[/]" in text and "[red]b" in text and "a note with [/] in it" in text


def test_json_output_never_holds_nan():
    assert dumps({"a": math.nan, "b": [math.inf, -math.inf], "c": np.float64("nan")}) == (
        '{\n  "a": null,\n  "b": [\n    null,\n    null\n  ],\n  "c": null\n}')  # fmt: skip
    empty = make_run("health", 1, [1000])
    empty.elapsed_s = 0.0
    json.loads(dumps(summarize(empty)), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


def test_merge_of_one_file_twice_is_refused(tmp_path):
    make_run("health", 1, [1000, 2000]).save(tmp_path / "a.json")  # a run file without workers
    synthetic_run(np.full(4, 1000)).save(tmp_path / "b.json")  # and one with
    for name in ("a.json", "b.json"):
        path = str(tmp_path / name)
        one_line_error(invoke("merge", path, path, "-o", str(tmp_path / "m.json")), "repeats a run already in", "--force")
        assert invoke("merge", path, path, "-o", str(tmp_path / "m.json"), "--force").code == 0


# --- run files: a schema ----------------------------------------------------------------------------


def _run_file() -> dict:
    run = make_run("completions", 2, [20_000, 21_000, 22_000], ttft_us=[5_000, 6_000, 7_000],
                   server_metrics=metrics_difference([0.004] * 3, [0.02] * 3, [0.0001] * 3))  # fmt: skip
    run.workers = [WorkerInfo(0, "h", 1, 3, 1.0, 2.0, 0.5)]
    return json.loads(json.dumps(run.to_dict()))


def _flip_one_char(text: str) -> str:
    middle = len(text) // 2
    return text[:middle] + ("A" if text[middle] != "A" else "B") + text[middle + 1 :]


def _set(data: dict, dotted: str, value: object) -> dict:
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    target = out
    for key in parents:
        target = target[key]
    target[last] = value(target[last]) if callable(value) else value
    return out


CORRUPTIONS = [
    ("histograms.histograms.e2e", _flip_one_char, "histograms.e2e"),
    ("histograms.histograms.e2e", 5, "histograms.e2e"),
    ("histograms.histograms.nonsense", "HISTFAAAA", "histograms.nonsense"),
    ("records", _flip_one_char, "records"),
    ("records", lambda _: _encode_array(np.zeros(3, dtype=np.float64)), "records"),  # another dtype
    ("records", lambda _: _encode_array(np.zeros(9, dtype=_records_dtype())), "records"),  # more than requested
    ("events", lambda _: _encode_array(np.zeros(2, dtype=np.int8)), "events"),
    ("counters.ok", "three", "counters.ok"),
    ("counters.requests", -1, "counters.requests"),
    ("counters.ok", 99, "counters.ok"),
    ("spec.n", "32", "spec.n"),
    ("spec.headers", [["X-A"]], "spec.headers"),
    ("spec.mode", "poetry", "spec"),
    ("workers", [{"index": 0}], "workers[0]"),
    ("workers", [{"index": 0, "host": "h", "pid": 1, "requests": "3", "started_at_s": 0, "elapsed_s": 1, "cpu_s": 0}], "workers[0].requests"),
    ("elapsed_s", "long", "elapsed_s"),
    ("started_at_s", -5, "started_at_s"),
    ("notes", "a note", "notes"),
    ("interrupted", "no", "interrupted"),
    ("context.url", 42, "context.url"),
    ("server_metrics.histograms.ttft.count", "many", "server_metrics.histograms.ttft.count"),
    ("server_metrics.histograms.ttft.buckets", [[0.1]], "server_metrics.histograms.ttft.buckets"),
    ("server_metrics.available", "yes", "server_metrics.available"),
    ("schema_version", 99, "schema_version"),
]


def _records_dtype() -> np.dtype:
    from netbench.phases import RECORD_DTYPE

    return RECORD_DTYPE


@pytest.mark.parametrize(("field", "value", "named"), CORRUPTIONS)
def test_a_corrupted_run_file_is_one_line_naming_the_file_and_the_field(tmp_path, field, value, named):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_run_file()))
    bad.write_text(json.dumps(_set(_run_file(), field, value)))
    for command in (["report", str(bad)], ["compare", str(good), str(bad)],
                    ["merge", str(good), str(bad), "-o", str(tmp_path / "m.json")]):  # fmt: skip
        line = one_line_error(invoke(*command), str(bad))
        assert f"field {named}" in line, line


def test_an_unreadable_file_is_one_line_too(tmp_path):
    cases = {"nested.json": "[" * 100_000, "text.json": "hello", "list.json": "[1, 2]", "binary.json": None}
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(os.urandom(300) if text is None else text.encode())
        one_line_error(invoke("report", str(path)), str(path))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_GOOD = _run_file()
#: every field of a run file, nested ones included
FIELDS = sorted(
    {top for top in _GOOD}
    | {f"{top}.{key}" for top, value in _GOOD.items() if isinstance(value, dict) for key in value}
    | {"histograms.histograms.e2e", "histograms.histograms.ttft", "server_metrics.histograms.ttft.buckets",
       "server_metrics.histograms.ttft.sum_s", "server_metrics.histograms.e2e.count"}  # fmt: skip
)


def _outcome_of(data: object) -> RunResult | None:
    """A run file's content read and, when it reads, rendered every way: a RunFileError or
    nothing raised, whatever it holds."""
    try:
        result = RunResult.from_dict(data) if isinstance(data, dict) else None
    except RunFileError:
        return None
    if result is not None:
        run = Run.of(result)
        analysis = analyse([run])
        json.loads(render_json(analysis), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
        render_markdown(analysis)
        csv_row(run.summary)
        print_report(run.summary, Console(width=120, file=open(os.devnull, "w")))
    return result


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_value_in_any_field_of_a_run_file_is_read_or_refused(field, value):
    _outcome_of(_set(_GOOD, field, value))


def _get(data: dict, dotted: str) -> object:
    for key in dotted.split("."):
        data = data[key]  # type: ignore[assignment]
    return data


def _like(value: object) -> st.SearchStrategy:
    """Arbitrary values of the JSON type `value` has: they pass a type check and test the rest."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-1, max_value=2**63) | st.sampled_from([0, 1, 2**31, 2**53 + 1])
    if isinstance(value, float):
        return st.floats(min_value=0, allow_infinity=False) | st.sampled_from([0.0, 1e-300, 1e300])
    if isinstance(value, str):
        return st.text(max_size=20) | st.sampled_from(["[/]", "http://u:p@h/?key=x", "+Inf", "\x00", "é" * 50])
    if isinstance(value, list):
        return st.lists(st.sampled_from(value) if value else json_values, max_size=5)
    return json_values


_TYPED = [f for f in FIELDS if not isinstance(_get(_GOOD, f), dict)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), field=st.sampled_from(_TYPED))
def test_any_value_of_the_right_type_in_any_field_is_read_or_refused(data, field):
    _outcome_of(_set(_GOOD, field, data.draw(_like(_get(_GOOD, field)))))


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["histograms.histograms.e2e", "records", "events"]), position=st.integers(0, 10_000),
       char=st.sampled_from("A/+=9z"))  # fmt: skip
def test_any_changed_character_of_an_encoded_field_is_read_or_refused(field, position, char):
    def changed(text: str) -> str:
        at = position % len(text)
        return text[:at] + char + text[at + 1 :]

    _outcome_of(_set(_GOOD, field, changed))


@settings(max_examples=200, deadline=None)
@given(data=json_values)
def test_any_json_as_a_run_file_is_refused(data):
    assert _outcome_of(data) is None


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_run_file_are_refused(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("bytes") / "run.json"
    path.write_bytes(raw)
    with pytest.raises(RunFileError):
        RunResult.load(path)


# --- the /metrics parser ------------------------------------------------------------------------------

METRIC_NAMES = ["vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds", "sglang:inter_token_latency_seconds",
                "vllm:request_success", "llamacpp:prompt_tokens", "llamacpp:requests_processing"]  # fmt: skip
sample_values = st.sampled_from(["NaN", "+Inf", "-Inf", "1e308", "-1", "0", "3", "2.5", "x", ""]) | st.floats(allow_nan=True).map(repr)


@st.composite
def expositions(draw: st.DrawFn) -> str:
    """Prometheus-like text: the families netbench reads, with hostile samples and labels."""
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(METRIC_NAMES))
        kind = draw(st.sampled_from(["histogram", "counter", "gauge", "summary", "bogus"]))
        lines += [f"# HELP {name} h", f"# TYPE {name} {kind}"]
        for _ in range(draw(st.integers(0, 5))):
            suffix = draw(st.sampled_from(["_bucket", "_sum", "_count", "_total", ""]))
            le = draw(st.sampled_from(["", 'le="0.1"', 'le="+Inf"', 'le="NaN"', 'le="x"', 'le="-Inf"', 'finished_reason="stop"']))
            labels = "{" + le + "}" if le else ""
            lines.append(f"{name}{suffix}{labels} {draw(sample_values)}")
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n# EOF\n"]))


def _scraped_twice_is_usable(before_text: str, after_text: str) -> None:
    before, after = parse("http://h/metrics", before_text), parse("http://h/metrics", after_text)
    stored = difference(before, after)
    assert isinstance(stored["available"], bool) and (stored["available"] or isinstance(stored["reason"], str))
    check_stored(json.loads(json.dumps(stored, allow_nan=False)))  # what the run file holds, read back
    percentiles(stored)


@settings(max_examples=400, deadline=None)
@given(before=expositions(), after=expositions())
def test_any_exposition_scrapes_to_a_usable_difference(before, after):
    _scraped_twice_is_usable(before, after)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text_scrapes_to_a_usable_difference(text):
    _scraped_twice_is_usable(text, text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket 3\n", "le is None"),
        ("# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{le=\"0.1\"} NaN\n", "a sample of nan"),
        ("# TYPE vllm:e2e_request_latency_seconds histogram\nvllm:e2e_request_latency_seconds_bucket{le=\"x\"} 1\n", "le is 'x'"),
        ("\x00\xff" * 1000, "not Prometheus text"),
    ],
)
def test_a_bad_scrape_says_why_it_is_not_available(text, reason):
    stored = difference(parse("u", text), parse("u", text))
    assert stored["available"] is False and reason in stored["reason"], stored


def test_a_good_family_survives_a_bad_one_beside_it():
    good = exposition({"time_to_first_token_seconds": [0.01]})
    bad = "# TYPE vllm:e2e_request_latency_seconds histogram\nvllm:e2e_request_latency_seconds_bucket 1\n"
    scraped = parse("u", good.replace("# HELP vllm:e2e_request_latency_seconds", bad + "# HELP x"))
    assert "ttft" in scraped.histograms and scraped.skipped


@settings(max_examples=300, deadline=None)
@given(timings=st.dictionaries(st.sampled_from(["prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"])
                               | st.text(max_size=5), json_values, max_size=6))  # fmt: skip
def test_llama_cpp_timings_of_any_shape_are_read_or_ignored(timings):
    from_llama_cpp(timings)  # finish() reads them outside the stream's own guard


# --- the client-bound verdict -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worker", "token_lag_p99_us", "expected"),
    [
        # idle and instant workers: a tiny span says nothing of CPU ("13769 % of a CPU")
        (WorkerInfo(0, "h", 1, 1, 0.0, 0.0001, 0.0137), None, []),
        (WorkerInfo(0, "h", 1, 0, 0.0, 0.0, 0.002), None, []),
        (WorkerInfo(0, "h", 1, 1000, 0.0, 0.9, 0.89), None, []),
        (WorkerInfo(0, "h", 1, 1000, 0.0, 2.0, 1.9), None, ["worker 0 on h used 95 % of a CPU"]),
        # late input: over 1 % of the worker's requests
        (WorkerInfo(0, "h", 1, 1000, 0.0, 2.0, 0.2, late_input=10, input_lag_max_us=50_000), None, []),
        (WorkerInfo(0, "h", 1, 1000, 0.0, 2.0, 0.2, late_input=11, input_lag_max_us=50_000), None,
         ["worker 0 on h read input late: 11 of 1000 requests had response bytes waiting unread over 10 ms (up to 50 ms)"]),
        (WorkerInfo(0, "h", 1, 1000, 0.0, 2.0, 0.2), 10_000, []),
        (WorkerInfo(0, "h", 1, 1000, 0.0, 2.0, 0.2), 120_500, ["token arrival lag p99 120.5 ms (above 10 ms)"]),
    ],
)
def test_client_bound_follows_measured_lateness(worker, token_lag_p99_us, expected):
    lag = None if token_lag_p99_us is None else PhaseStats(100, 50, 60, token_lag_p99_us, token_lag_p99_us, 70.0)
    reasons = client_bound_reasons([worker], None, lag)
    assert len(reasons) == len(expected) and all(r.startswith(e) for r, e in zip(reasons, expected)), reasons
    assert host_loads([worker])[0].client_bound is any("worker" in e for e in expected)
