"""The click commands: flags -> specs, errors -> exit codes. No measuring logic lives here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from netbench.phases import PHASE_NAMES
from netbench.spec import MODES, RunSpec, SpecError, api_key_from_env, parse_duration_s, parse_header

if TYPE_CHECKING:
    from netbench.results import RunResult
    from netbench.slo import Slo

#: every exit code netbench uses, documented in the README
EXIT_OK = 0
EXIT_FAILED_REQUESTS = 1  # failed requests over --max-error-rate, none ok, or a worker lost
EXIT_BAD_INPUT = 2
EXIT_SLO_FAILED = 3
# Stopped by a signal, the report printed and written: the shell's 128 + signal number.
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netbench")
def main() -> None:
    """Split LLM endpoint latency into network, HTTP and model time."""


def entry() -> None:
    """The console script: the one place that maps errors to exit codes and one-line messages."""
    from netbench.report.csvout import CsvColumnsError
    from netbench.results import RunFileError

    try:
        code = main.main(standalone_mode=False)
    except (SpecError, RunFileError, CsvColumnsError) as error:
        click.echo(f"netbench: error: {error}", err=True)
        code = EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("netbench: aborted", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as error:
        click.echo(f"netbench: error: {error.format_message()}", err=True)
        code = error.exit_code
    except OSError as error:
        click.echo(f"netbench: error: {error}", err=True)
        code = EXIT_BAD_INPUT
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SpecError(f"unreadable list of integers {text!r}: use e.g. 1,4,8") from None
    if not values:
        raise SpecError("an empty list: use e.g. 1,4,8")
    return values


def _mode_list(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    for mode in modes:
        if mode not in MODES:
            raise SpecError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    return modes


def _load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by `run` and `sweep` (what a RunSpec holds)."""
    options = [
        click.option("--url", required=True, help="Server base URL (OpenAI modes, with or without /v1), or the full URL for --mode get."),
        click.option("--n", "n", type=int, default=32, show_default=True, help="Measured requests (per run)."),
        click.option("--warmup", type=int, default=0, show_default=True, help="Requests sent first and not counted."),
        click.option("--max-tokens", type=int, default=16, show_default=True),
        click.option("--stream-usage/--no-stream-usage", default=True, show_default=True,
                     help="Ask streams for usage in every chunk (stream_options); --no-stream-usage for servers that reject it."),
        click.option("--prompt", default=RunSpec.prompt, show_default=True),
        click.option("--model", default=None, help="Model id (default: the first id /v1/models lists)."),
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Extra request header (repeatable)."),
        click.option("--api-key", default=None, help="Bearer token (default: $OPENAI_API_KEY). Never printed or written."),
        click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True, help="Per-request timeout, seconds."),
        click.option("--insecure", is_flag=True, help="Do not verify TLS certificates."),
        click.option("--cacert", type=click.Path(dir_okay=False), default=None, help="CA bundle to verify the server with."),
        click.option("--http2", is_flag=True, help="Use HTTP/2 (ALPN over TLS)."),
        click.option("--follow-redirects", is_flag=True, help="Follow redirects (credentials never go to another host)."),
        click.option("--workers", type=int, default=None, help="Worker processes (default: min(concurrency, cores); with --backend ray, the cluster's CPUs)."),
        click.option("--max-records", type=int, default=RunSpec.max_records, show_default=True, help="Per-request records kept (a uniform sample)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of the table."),
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Append one row per run to this CSV."),
        click.option("--max-error-rate", type=float, default=0.0, show_default=True, help="Exit 1 when the failed share exceeds this."),
        click.option("--no-progress", is_flag=True, help="No progress bar on stderr."),
        # open loop
        click.option("--rate", type=float, default=None, help="Open loop: requests/s, latency measured from the intended send time."),
        click.option("--arrival", type=click.Choice(["poisson", "constant"]), default="poisson", show_default=True),
        click.option("--duration", "duration", default=None, help="Open loop: run this long (e.g. 30s) instead of --n requests."),
        click.option("--max-concurrency", type=int, default=None, help="Open loop: cap on requests in flight."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the arrival process."),
        # outputs beyond the table
        click.option("-o", "--output", "output_path", type=click.Path(), default=None, help="Write the run file (JSON, schema_version) here; a sweep writes one per run into this folder."),
        click.option("--raw", "raw_path", type=click.Path(dir_okay=False), default=None, help="Export the per-request records (every mark) as CSV."),
        click.option("--hgrm", "hgrm", nargs=2, multiple=True, metavar="PHASE FILE", help="Write a phase's HDR percentile spectrum (wrk2's .hgrm)."),
        click.option("--slo", "slos", multiple=True, metavar="EXPR", help="Gate, e.g. 'ttft.p95<200ms', 'error_rate<1%'; exit 3 when one fails."),
        # backend
        click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True),
        click.option("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(mode: str, concurrency: int, **options: Any) -> RunSpec:
    headers = tuple(parse_header(h) for h in options.pop("headers"))
    api_key = options.pop("api_key") or api_key_from_env()
    duration = options.pop("duration")
    duration_s = parse_duration_s(duration) if duration is not None else None
    return RunSpec(
        mode=mode, concurrency=concurrency, headers=headers, api_key=api_key, duration_s=duration_s, **options
    )


_OUTPUT_KEYS = ("as_json", "csv_path", "max_error_rate", "no_progress", "output_path", "raw_path", "hgrm", "slos")


def _measure(specs: list[RunSpec], outputs: dict[str, Any]) -> int:
    """Run each spec in turn, render, write; return the exit code."""
    from netbench.report.progress import progress_bar
    from netbench.report.table import print_report
    from netbench.runner import run
    from netbench.slo import parse_slo

    slos = [parse_slo(text) for text in outputs["slos"]]  # bad gates fail before any load is sent
    for phase, _ in outputs["hgrm"]:
        if phase not in PHASE_NAMES:
            raise SpecError(f"--hgrm {phase!r}: choose one of {', '.join(PHASE_NAMES)}")
    results = []
    for spec in specs:
        with progress_bar(enabled=not outputs["no_progress"], label=f"{spec.mode} c={spec.concurrency}") as on_progress:
            result = run(spec, on_progress)
        results.append(result)
        if not outputs["as_json"]:
            print_report(result)
        if result.interrupted:
            break
    if len(results) > 1 and not outputs["as_json"]:
        from netbench.report.sweep_table import print_sweep

        print_sweep(results)
    return _finish(results, outputs, slos)


def _finish(results: list[RunResult], outputs: dict[str, Any], slos: list[Slo]) -> int:
    """Write every requested output, evaluate the gates, and choose the exit code."""
    from netbench.report import csvout, hgrm, jsonout, raw
    from netbench.slo import evaluate

    if outputs["as_json"]:
        click.echo(jsonout.render_json(results))
    if outputs["csv_path"]:
        csvout.append_rows(outputs["csv_path"], results)
    if outputs["output_path"]:
        _save_run_files(results, outputs["output_path"])
    if outputs["raw_path"]:
        raw.write_raw_csv(results, outputs["raw_path"])
    for phase, path in outputs["hgrm"]:
        hgrm.write_hgrm(results, phase, path)
    verdicts = evaluate(slos, results)
    for verdict in verdicts:
        click.echo(verdict.line, err=outputs["as_json"])
    if any(r.interrupted for r in results):
        terminated = any(r.context.get("stop_signal") == "SIGTERM" for r in results)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    if any(r.error_rate > outputs["max_error_rate"] or r.ok == 0 or r.counters.get("workers_failed") for r in results):
        return EXIT_FAILED_REQUESTS
    return EXIT_SLO_FAILED if any(not v.passed for v in verdicts) else EXIT_OK


def _save_run_files(results: list[RunResult], path: str) -> None:
    """One run: the file itself. Several (a sweep): a folder with one file per run."""
    if len(results) == 1 and not path.endswith("/"):
        results[0].save(path)
        return
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        result.save(folder / f"{result.label}.json")


@main.command()
@click.option("--mode", default="health", show_default=True, help=f"One of {', '.join(MODES)}.")
@click.option("--concurrency", type=int, default=1, show_default=True, help="Requests in flight (closed loop).")
@_load_options
def run(mode: str, concurrency: int, **options: Any) -> int:
    """Measure one endpoint: the phase breakdown table of N requests at concurrency C."""
    outputs = {k: options.pop(k) for k in _OUTPUT_KEYS}
    return _measure([_spec(mode, concurrency, **options)], outputs)


@main.command()
@click.option("--mode", "modes", default="health,completions", show_default=True, help="Comma-separated modes.")
@click.option("--concurrency", "levels", default="1,4,8", show_default=True, help="Comma-separated concurrency levels.")
@_load_options
def sweep(modes: str, levels: str, **options: Any) -> int:
    """Run every mode at every concurrency level in turn and report them side by side."""
    outputs = {k: options.pop(k) for k in _OUTPUT_KEYS}
    specs = [_spec(mode, level, **options) for mode in _mode_list(modes) for level in _int_list(levels)]
    return _measure(specs, outputs)


# --- serve: the built-in simulated server ---
import dataclasses  # noqa: E402
import typing  # noqa: E402

from netbench.sim.config import SimConfig  # noqa: E402  (light: the server itself is imported lazily)


def _sim_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per SimConfig field: its name, type, default, help text and lower bound."""
    kinds = typing.get_type_hints(SimConfig)
    defaults = SimConfig()
    for knob in reversed(dataclasses.fields(SimConfig)):
        flag = "--" + knob.name.replace("_", "-")
        default, help_text, minimum = getattr(defaults, knob.name), knob.metadata["help"], knob.metadata["min"]
        kind = kinds[knob.name]
        if kind is bool:
            # vLLM's spelling: --enable-prefix-caching / --no-enable-prefix-caching.
            declaration = f"{flag}/--no-{flag[2:]}" if default else flag
            option = click.option(declaration, knob.name, is_flag=True, default=default, show_default=default, help=help_text)
        else:
            ranged = {int: click.IntRange, float: click.FloatRange}.get(kind)
            value_type = ranged(min=minimum) if ranged is not None and minimum is not None else kind
            option = click.option(flag, knob.name, type=value_type, default=default, show_default=True, help=help_text)
        command = option(command)
    return command


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port; 0 picks a free one.")
@_sim_options
def serve(host: str, port: int, **knobs: Any) -> None:
    """Serve a simulated small language model: OpenAI-compatible, with vLLM's scheduler, streams and metrics."""
    from netbench.sim.server import serve as serve_sim

    try:
        config = SimConfig(**knobs)
    except ValueError as error:
        raise click.UsageError(str(error)) from error
    try:
        serve_sim(config, host=host, port=port)
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from error


# --- report: render saved runs again ---
@main.command()
@click.argument("run_files", nargs=-1, required=True, metavar="RUNFILES...")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False), default=None, help="Write the report here (default: stdout).")
@click.option("--format", "fmt", type=click.Choice(["md", "table", "json", "csv"]), default="md", show_default=True)
@click.option("--ttft-ref", default=None, metavar="27ms|FILE.csv", help="External warm TTFT: a duration, or a CSV of earlier TTFT measurements (their median).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None, help="Write PNG plots into this folder and link them from the report.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap confidence intervals.")
def report(run_files: tuple[str, ...], output_path: str | None, fmt: str, ttft_ref: str | None, plots_dir: str | None, seed: int) -> int:
    """Report saved runs: the seed's table, TTFT vs HTTP latency, significance, the rule of thumb, plots.

    RUNFILES are run files (`-o` of run/sweep) or folders of them."""
    import os

    from rich.console import Console

    from netbench.analysis import load_ttft_ref
    from netbench.report import answer

    reference = load_ttft_ref(ttft_ref) if ttft_ref is not None else None  # bad input fails before any work
    results = answer.load_runs(run_files)
    links: list[tuple[str, str]] = []
    if plots_dir is not None:
        from netbench.report.plot import write_plots

        base = Path(output_path).resolve().parent if output_path else Path.cwd()
        links = [(caption, os.path.relpath(path.resolve(), base)) for caption, path in write_plots(results, plots_dir)]
    if fmt == "table":
        if output_path is None:
            answer.render_text(results, reference, Console(), seed)
            return EXIT_OK
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        with open(output_path, "w") as handle:
            answer.render_text(results, reference, Console(file=handle, width=160, no_color=True), seed)
        return EXIT_OK
    if fmt == "md":
        from netbench.report.markdown import render_markdown

        text = render_markdown(results, reference, links, seed=seed)
    elif fmt == "json":
        text = answer.render_json(results, reference, seed) + "\n"
    else:
        text = answer.render_csv(results)
    if output_path is None:
        click.echo(text, nl=False)
    else:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        Path(output_path).write_text(text)
        click.echo(f"netbench: wrote {output_path}" + (f" and {len(links)} plots in {plots_dir}" if links else ""), err=True)
    return EXIT_OK


# --- merge and compare run files ---
@main.command()
@click.argument("run_files", nargs=-1, required=True, metavar="RUNFILE RUNFILE...")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False), required=True, help="The merged run file to write.")
@click.option("--force", is_flag=True, help="Merge runs of different modes, URL paths or load models anyway.")
def merge(run_files: tuple[str, ...], output_path: str, force: bool) -> int:
    """Merge runs made at the same time on several hosts into one run file (histograms added, counters summed)."""
    from netbench.merge import merge_results
    from netbench.results import RunResult

    merged = merge_results([RunResult.load(path) for path in run_files], names=run_files, force=force)
    merged.save(output_path)
    click.echo(f"merged {len(run_files)} runs ({merged.requests} requests) into {output_path}", err=True)
    return EXIT_OK


@main.command()
@click.argument("base_file", metavar="BASE")
@click.argument("new_file", metavar="NEW")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of the table.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
def compare(base_file: str, new_file: str, as_json: bool, seed: int) -> int:
    """Compare two run files: p50/p95/p99 per phase, the difference, and whether it is significant."""
    import json

    from netbench.compare import compare_runs
    from netbench.report.compare_table import print_comparison
    from netbench.results import RunResult

    comparison = compare_runs(RunResult.load(base_file), RunResult.load(new_file), base_file, new_file, seed=seed)
    if as_json:
        click.echo(json.dumps(comparison.to_dict(), indent=2))
    else:
        print_comparison(comparison)
    return EXIT_OK
