"""The commands' logic, under a thin CLI (`cli.py` turns flags into these calls and errors into
one line). Each command takes an `Env` (where output goes, the clock) and returns a
`CommandResult`; `exit_status` is the one place a result, or an error, becomes an exit code
(the README's precedence table).

Reports are computed once: each run's `RunSummary` when it ends, one `Analysis` over the runs of
a report, and every output renders those.
"""

from __future__ import annotations

import dataclasses

import enum
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from netbench.analysis import analyse, load_ttft_ref, sorted_runs
from netbench.capacity import CapacityResult, Limit, Probe, Search, Step, StepKind, capacity_curve, search, step_of
from netbench.compare import compare_runs
from netbench.datasets import load_dataset
from netbench.errors import InputError
from netbench.outputs import check_distinct, check_file, check_folder, make_folder, write_each
from netbench.merge import merge_results
from netbench.phases import PHASE_NAMES
from netbench.prompt_lengths import prompt_lengths
from netbench.report import csvout, hgrm, jsonout, raw
from netbench.report.gates import gate_lines
from netbench.report.progress import progress_bar
from netbench.report.table import print_report
from netbench.report.terminal import console
from netbench.results import RunFileError, RunResult, run_label
from netbench.runner import run
from netbench.serial import dumps
from netbench.signals import stop_on_signals, stop_signal_name
from netbench.slo import GateResult, evaluate, parse_slo
from netbench.spec import RunSpec, SpecError
from netbench.summary import Run


class ExitStatus(enum.IntEnum):
    """Every exit code netbench uses (README, "Exit codes")."""

    OK = 0
    FAILED_REQUESTS = 1  # failed requests over the allowed error rate, none ok, or a worker lost
    BAD_INPUT = 2
    SLO_FAILED = 3
    OUTPUT_FAILED = 4  # an output could not be written at the end (a full disk); the others were
    # Stopped by a signal, the report printed and written: the shell's 128 + signal number.
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


@dataclass(frozen=True)
class Env:
    """Where a command writes, and the wall clock it reads."""

    stdout: TextIO
    stderr: TextIO
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class CommandResult:
    """What decides the exit status of a command."""

    #: the signal that stopped a run ("SIGINT", "SIGTERM"); None when none did
    stop_signal: str | None = None
    interrupted: bool = False
    #: requests failed beyond the allowed rate, none succeeded, or a worker was lost
    failed: bool = False
    gates_failed: bool = False
    #: the outputs that could not be written at the end, each as the error that says why
    output_failures: tuple[InputError, ...] = ()


def exit_status(outcome: CommandResult | BaseException) -> ExitStatus:
    """The exit status of a command's result or of the error it raised. When several apply,
    the first in this order wins: interrupted (130/143), failed requests (1), an output not
    written (4), SLO (3)."""
    if isinstance(outcome, BaseException):
        if isinstance(outcome, KeyboardInterrupt):
            return ExitStatus.INTERRUPTED
        if isinstance(outcome, (SpecError, RunFileError, OSError)):
            return ExitStatus.BAD_INPUT
        raise outcome  # a bug: let it show
    if outcome.interrupted:
        return ExitStatus.TERMINATED if outcome.stop_signal == "SIGTERM" else ExitStatus.INTERRUPTED
    if outcome.failed:
        return ExitStatus.FAILED_REQUESTS
    if outcome.output_failures:
        return ExitStatus.OUTPUT_FAILED
    return ExitStatus.SLO_FAILED if outcome.gates_failed else ExitStatus.OK


# --- run and sweep -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outputs:
    """What a measuring command writes beside the table."""

    as_json: bool = False
    csv_path: str | None = None
    output_path: str | None = None
    raw_path: str | None = None
    hgrm: tuple[tuple[str, str], ...] = ()
    slos: tuple[str, ...] = ()
    max_error_rate: float = 0.0
    progress: bool = True


@dataclass(frozen=True)
class Measured(CommandResult):
    runs: tuple[Run, ...] = ()
    gates: tuple[GateResult, ...] = field(default=())


def measure(specs: Sequence[RunSpec], outputs: Outputs, env: Env) -> Measured:
    """Run each spec in turn (a sweep stops at an interrupted run), render, write, gate. A stop
    signal at any time (a probe, the run, the writing) keeps what was measured: it is printed
    and written, and the exit status says it was stopped."""
    from netbench.report.sweep_table import print_sweep

    slos = [parse_slo(text) for text in outputs.slos]  # bad input fails before any load is sent
    specs = check_outputs(specs, outputs)
    runs: list[Run] = []
    with stop_on_signals(lambda: None) as received:
        for spec in specs:
            if received:
                break
            label = f"{spec.mode} c={spec.concurrency}"
            with progress_bar(env.stderr, outputs.progress, label) as on_progress:
                result = run(spec, on_progress, clock=env.clock)
            runs.append(Run.of(result))
            if not outputs.as_json:
                print_report(runs[-1].summary, console(env.stdout))
            if result.interrupted:
                break
        summaries = [r.summary for r in runs]
        if len(runs) > 1 and not outputs.as_json:
            print_sweep(summaries, console(env.stdout))
        if outputs.as_json:
            print(jsonout.render_json(summaries), file=env.stdout)
        failures = write_each(_writes(runs, outputs))
        gates = evaluate(slos, summaries)
        for line in gate_lines(gates):
            print(line, file=env.stderr if outputs.as_json else env.stdout)
    stopped = next((s.stop_signal for s in summaries if s.stop_signal), None) or stop_signal_name(received)
    return Measured(
        stop_signal=stopped,
        interrupted=any(s.interrupted for s in summaries) or bool(received),
        failed=any(s.error_rate > outputs.max_error_rate or s.ok == 0 or s.workers_failed for s in summaries),
        gates_failed=any(not g.passed for g in gates),
        output_failures=failures,
        runs=tuple(runs),
        gates=tuple(gates),
    )


def check_outputs(specs: Sequence[RunSpec], outputs: Outputs) -> list[RunSpec]:
    """Every output a measuring command will write, and every data set it reads, checked before
    any load is sent; the specs returned count goodput against the gates."""
    for path in dict.fromkeys(spec.dataset for spec in specs if spec.dataset):
        load_dataset(path)
    rate = outputs.max_error_rate
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or not 0 <= rate <= 1:
        raise InputError("max_error_rate", rate, "must be a share from 0 to 1 (0.05: 5 % may fail)")
    for phase, _ in outputs.hgrm:
        if phase not in PHASE_NAMES:
            raise InputError("hgrm", phase, f"choose one of {', '.join(PHASE_NAMES)}")
    files: list[tuple[str, str | Path]] = []
    in_new_folder: list[tuple[str, str | Path]] = []  # a sweep's run files, in a folder -o creates
    if outputs.csv_path:
        files.append(("csv", outputs.csv_path))
    if outputs.raw_path:
        files.append(("raw", outputs.raw_path))
    labels = [run_label(spec) for spec in specs]
    files += [("hgrm", out) for _, path in outputs.hgrm for out in hgrm.hgrm_paths(path, labels)]
    if outputs.output_path:
        if _one_run_file(len(specs), outputs.output_path):
            files.append(("output", outputs.output_path))
        else:
            check_folder("output", outputs.output_path)
            run_files = [("output", Path(outputs.output_path) / f"{label}.json") for label in labels]
            (files if Path(outputs.output_path).is_dir() else in_new_folder).extend(run_files)
    for subject, path in files:
        check_file(subject, path)
    check_distinct(files + in_new_folder)
    if outputs.csv_path:
        csvout.check_columns(outputs.csv_path)
    return [spec.replace(goodput=outputs.slos) for spec in specs]


def _one_run_file(runs: int, path: str) -> bool:
    """-o of one run names the run file; of a sweep (or ending in '/'), a folder of them."""
    return runs == 1 and not path.endswith("/")


def _writes(runs: Sequence[Run], outputs: Outputs) -> list[tuple[str, str | Path, Callable[[], None]]]:
    """Each output to write at the end, as (subject, path, write): the run files first."""
    writes: list[tuple[str, str | Path, Callable[[], None]]] = []
    results = [r.result for r in runs]
    if not results:
        return writes
    if outputs.output_path:
        output_path = outputs.output_path
        if _one_run_file(len(results), output_path):
            writes.append(("output", output_path, lambda: results[0].save(output_path)))
        else:
            for result in results:
                path = Path(output_path) / f"{result.label}.json"
                writes.append(("output", path, lambda r=result, p=path: r.save(make_folder(p.parent) / p.name)))
    if outputs.csv_path:
        csv_path = outputs.csv_path
        writes.append(("csv", csv_path, lambda: csvout.append_rows(csv_path, [r.summary for r in runs])))
    if outputs.raw_path:
        raw_path = outputs.raw_path
        writes.append(("raw", raw_path, lambda: raw.write_raw_csv(results, raw_path)))
    for phase, path in outputs.hgrm:
        writes.append(("hgrm", path, lambda ph=phase, p=path: hgrm.write_hgrm(results, ph, p)))
    return writes


# --- report, merge, compare ------------------------------------------------------------------


def load_runs(paths: Sequence[str]) -> list[Run]:
    """Run files; a folder stands for the *.json files in it."""
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                raise RunFileError(f"{path} holds no run files (*.json)")
            files += found
        else:
            files.append(path)
    return [Run.of(RunResult.load(f)) for f in files]


REPORT_FORMATS = ("md", "table", "json", "csv")


def report(
    paths: Sequence[str],
    env: Env,
    fmt: str = "md",
    output_path: str | None = None,
    ttft_ref: str | None = None,
    plots_dir: str | None = None,
    seed: int = 0,
) -> CommandResult:
    """Render saved runs again: the runs table, TTFT vs HTTP latency, significance, the rule of
    thumb (md), the same as JSON or as breakdown tables, or the CSV rows; plots on request."""
    reference = load_ttft_ref(ttft_ref) if ttft_ref is not None else None  # bad input fails before any work
    if plots_dir is not None:
        check_folder("plots", plots_dir)
    in_plots = plots_dir is not None and os.path.realpath(Path(output_path or "").parent) == os.path.realpath(plots_dir)
    if output_path is not None and not (in_plots and not Path(plots_dir).exists()):  # type: ignore[arg-type]
        check_file("output", output_path)  # (in a plots folder yet to be made, the folder was checked)
    runs = sorted_runs(load_runs(paths))
    links: list[tuple[str, str]] = []
    failures: tuple[InputError, ...] = ()
    if plots_dir is not None:
        from netbench.figures import cdfs, phase_bars
        from netbench.report.plot import write_plots

        base = Path(output_path).resolve().parent if output_path else Path.cwd()
        written: list[tuple[str, Path]] = []
        failures = write_each([("plots", plots_dir, lambda: written.extend(write_plots(phase_bars(runs), cdfs(runs), plots_dir)))])
        links = [(caption, os.path.relpath(path.resolve(), base)) for caption, path in written]
    if fmt == "csv":
        text = csvout.render_csv([r.summary for r in runs])
    else:
        analysis = analyse(runs, reference, seed=seed)
        lengths = prompt_lengths(runs, analysis.ttft_vs_http)
        if fmt == "table":
            from netbench.report.answer import render_text

            if output_path is None:
                render_text(analysis, console(env.stdout))
                return CommandResult(output_failures=failures)
            buffer = io.StringIO()
            render_text(analysis, console(buffer, width=160, color=False))
            text = buffer.getvalue()
        elif fmt == "md":
            from netbench.report.markdown import render_markdown

            text = render_markdown(analysis, links, lengths)
        else:
            from netbench.report.answer import render_json

            text = render_json(analysis, lengths) + "\n"
    if output_path is None:
        env.stdout.write(text)
    else:
        failures += write_each([("output", output_path, lambda: Path(output_path).write_text(text))])
        if not failures:
            plots = f" and {len(links)} plots in {plots_dir}" if links else ""
            print(f"netbench: wrote {output_path}{plots}", file=env.stderr)
    return CommandResult(output_failures=failures)


def merge(paths: Sequence[str], output_path: str, env: Env, force: bool = False) -> CommandResult:
    """Runs made at the same time on several hosts, merged into one run file."""
    check_file("output", output_path)
    merged = merge_results([RunResult.load(path) for path in paths], names=paths, force=force)
    failures = write_each([("output", output_path, lambda: merged.save(output_path))])
    if not failures:
        print(f"merged {len(paths)} runs ({merged.requests} requests) into {output_path}", file=env.stderr)
    return CommandResult(output_failures=failures)


def compare(base_path: str, new_path: str, env: Env, as_json: bool = False, seed: int = 0) -> CommandResult:
    """Two run files side by side: p50/p95/p99 per phase, the difference, its significance."""
    from netbench.report.compare_table import print_comparison

    comparison = compare_runs(Run.of(RunResult.load(base_path)), Run.of(RunResult.load(new_path)), base_path, new_path, seed=seed)
    if as_json:
        print(dumps(comparison), file=env.stdout)
    else:
        print_comparison(comparison, console(env.stdout))
    return CommandResult()


# --- capacity: the highest rate that meets the gates ----------------------------------------


@dataclass(frozen=True)
class CapacityFound(CommandResult):
    found: CapacityResult | None = None
    runs: tuple[Run, ...] = ()


def capacity(spec: RunSpec, bounds: Search, outputs: Outputs, env: Env, plot_path: str | None = None) -> CapacityFound:
    """Search the rate (`netbench.capacity`), each step one run of `spec` for `bounds.step_s`;
    render the steps and the answer, write the outputs and the plot."""
    from netbench.report.capacity_table import capacity_lines, print_capacity

    if not outputs.slos:
        raise InputError("slo", "", "capacity needs at least one gate, e.g. --slo 'ttft.p95<500ms'")
    slos = [parse_slo(text) for text in outputs.slos]
    # A search makes many runs: -o is a folder of run files, as a sweep's is.
    if outputs.output_path and not outputs.output_path.endswith("/"):
        outputs = dataclasses.replace(outputs, output_path=outputs.output_path + "/")
    [base] = check_outputs([spec.replace(duration_s=bounds.step_s)], outputs)
    runs: list[Run] = []

    def measure(probe: Probe) -> Step:
        if probe.kind is StepKind.RATE:
            step_spec = base.replace(rate=probe.rate_rps, max_concurrency=probe.concurrency)
            label = f"capacity: {probe.rate_rps:.4g}/s"
        else:
            step_spec = base.replace(rate=None, concurrency=probe.concurrency)
            label = f"capacity: {probe.kind.value} c={probe.concurrency}"
        with progress_bar(env.stderr, outputs.progress, label) as on_progress:
            result = run(step_spec, on_progress, clock=env.clock)
        runs.append(Run.of(result))
        step = step_of(probe, runs[-1], slos, outputs.max_error_rate)
        print(capacity_lines([step])[-1], file=env.stderr)
        return step

    found = search(measure, bounds, outputs.slos)
    if outputs.as_json:
        print(dumps(found), file=env.stdout)
    else:
        print_capacity(found, console(env.stdout))
    failures = write_each(_writes(runs, outputs))
    if plot_path is not None:
        from netbench.report.plot import write_capacity_plot

        write_capacity_plot(capacity_curve(found), plot_path)
        print(f"netbench: wrote {plot_path}", file=env.stderr)
    summaries = [r.summary for r in runs]
    return CapacityFound(
        stop_signal=next((s.stop_signal for s in summaries if s.stop_signal), None),
        interrupted=found.limit is Limit.INTERRUPTED,
        failed=bool(summaries) and summaries[0].ok == 0,
        gates_failed=found.rate_rps is None,
        found=found,
        runs=tuple(runs),
        output_failures=failures,
    )
