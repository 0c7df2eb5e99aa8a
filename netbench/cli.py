"""The click commands: flags -> specs and `core` calls, errors -> one line naming the flag, and
the exit status `core.exit_status` gives. No logic of the commands lives here."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from netbench import core
from netbench.core import Env, ExitStatus
from netbench.errors import InputError, MergeRefused
from netbench.capacity import Search
from netbench.prompts import prompt_text
from netbench.secrets import is_secret_header, redact, url_secrets
from netbench.spec import ARRIVALS, BACKENDS, MODES, STREAMING_MODES, RunSpec, api_key_from_env, parse_duration_s, parse_header

#: the flag that sets each subject the layers below name in their errors
FLAGS = {
    "ttft_ref": "--ttft-ref",
    "slo": "--slo",
    "hgrm": "--hgrm",
    "csv": "--csv",
    "raw": "--raw",
    "output": "-o",
    "plots": "--plots",
    "max_error_rate": "--max-error-rate",
    "backend": "--backend",
    "ray_address": "--ray-address",
    "prompt": "--prompt",
    "dataset": "--dataset",
    "input_tokens": "--input-tokens",
}
_SEARCH = Search()
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSpec) if f.default is not dataclasses.MISSING}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netbench")
def main() -> None:
    """Split LLM endpoint latency into network, HTTP and model time."""


def error_line(error: BaseException) -> str:
    """The one line a bad input gets on stderr, naming the flag where the error names a subject."""
    if isinstance(error, InputError):
        return f"netbench: error: {FLAGS.get(error.subject, error.subject)} {error.value!r}: {error.reason}"
    if isinstance(error, MergeRefused):
        return f"netbench: error: {error} (pass --force to merge anyway)"
    return f"netbench: error: {error}"


def command_line_secrets(args: Sequence[str]) -> tuple[str, ...]:
    """The secrets a command line carries ($OPENAI_API_KEY, --api-key, secret --header values,
    a URL's password and secret parameters), wherever they stand in it: an error message that
    quotes an argument (click's "unexpected extra argument (...)") must not show them."""
    values = [key] if (key := api_key_from_env()) else []
    for previous, arg in zip(["", *args], args):
        value = arg.partition("=")[2] if arg.startswith("--") and "=" in arg else arg
        if previous == "--api-key" or arg.startswith("--api-key="):
            values.append(value)
        name, colon, header_value = value.partition(":")
        if colon and is_secret_header(name) and header_value.strip():
            values += [header_value.strip(), header_value.strip().partition(" ")[2]]
        values += url_secrets(value.strip())
    return tuple(v for v in values if v)


def run_cli(args: Sequence[str], env: Env) -> int:
    """Run one command line in this process; returns the exit status."""
    secrets = command_line_secrets(args)

    def say(line: str) -> None:
        env.stderr.write(redact(line, secrets) + "\n")

    try:
        outcome = main.main(list(args), prog_name="netbench", standalone_mode=False, obj=env)
    except click.exceptions.Abort:
        say("netbench: aborted")
        return ExitStatus.INTERRUPTED
    except click.ClickException as error:
        say(f"netbench: error: {error.format_message()}")
        return error.exit_code
    except Exception as error:
        status = core.exit_status(error)  # re-raises what is not bad input: a bug shows its traceback
        say(error_line(error))
        return status
    if isinstance(outcome, core.CommandResult):
        for failure in outcome.output_failures:  # the other outputs were written
            say(error_line(failure))
        return core.exit_status(outcome)
    return outcome if isinstance(outcome, int) else ExitStatus.OK  # --help, --version, serve


def entry() -> None:
    """The console script."""
    sys.exit(run_cli(sys.argv[1:], Env(sys.stdout, sys.stderr)))


def _env() -> Env:
    env = click.get_current_context().obj
    return env if isinstance(env, Env) else Env(sys.stdout, sys.stderr)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"unreadable list of integers {text!r}: use e.g. 1,4,8", param_hint="--concurrency") from None
    if not values:
        raise click.BadParameter("an empty list: use e.g. 1,4,8", param_hint="--concurrency")
    return values


def _mode_list(text: str) -> list[str]:
    modes = [part.strip() for part in text.split(",") if part.strip()]
    for mode in modes:
        if mode not in MODES:
            raise click.BadParameter(f"{mode!r}: choose one of {', '.join(MODES)}", param_hint="--mode")
    return modes


def _load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by `run` and `sweep` (what a RunSpec holds, with its defaults)."""
    d = _DEFAULTS
    options = [
        click.option("--url", required=True, help="Server base URL (OpenAI modes, with or without /v1), or the full URL for --mode get."),
        click.option("-n", "--n", "n", type=int, default=d["n"], show_default=True, help="Measured requests (per run)."),
        click.option("--warmup", type=int, default=d["warmup"], show_default=True, help="Requests sent first and not counted."),
        click.option("--max-tokens", type=int, default=d["max_tokens"], show_default=True, help="max_tokens of each stream (a cap: the server may stop sooner; see --output-tokens)."),
        click.option("--input-tokens", default=d["input_tokens"], metavar="N|A:B|MEAN,SD",
                     help="Prompts of N tokens in the server's tokenizer (A:B uniform, MEAN,SD normal), each request its own; sweep: a comma list of N or A:B."),
        click.option("--output-tokens", default=d["output_tokens"], metavar="N|A:B|MEAN,SD",
                     help="max_tokens N, with ignore_eos and min_tokens where the server takes them, so answers are N tokens long."),
        click.option("--shared-prefix-tokens", type=int, default=d["shared_prefix_tokens"], show_default=True,
                     help="With --input-tokens: the first K tokens of every prompt are the same (the prefix-cached case)."),
        click.option("--dataset", default=d["dataset"], type=click.Path(dir_okay=False), metavar="FILE",
                     help="Replay prompts from JSONL (ShareGPT conversations, OpenAI messages, prompt/max_tokens), sampled with --seed."),
        click.option("--unique-prefix/--no-unique-prefix", default=d["unique_prefix"], show_default=True,
                     help="Put a few random words before a fixed prompt (--prompt, a data set's) so a prefix cache cannot shorten TTFT."),
        click.option("--stream-usage/--no-stream-usage", default=d["stream_usage"], show_default=True,
                     help="Ask streams for usage in every chunk (stream_options); --no-stream-usage for servers that reject it."),
        click.option("--prompt", default=d["prompt"], show_default=True, metavar="TEXT|@FILE", help="The prompt of every stream (@FILE: the file's text)."),
        click.option("-m", "--model", default=d["model"], help="Model id (default: the first id /v1/models lists)."),
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Extra request header (repeatable)."),
        click.option("--api-key", default=None, help="Bearer token (default: $OPENAI_API_KEY). Never printed or written."),
        click.option("--timeout", "timeout_s", type=float, default=d["timeout_s"], show_default=True, help="Per-request timeout, seconds."),
        click.option("--insecure", is_flag=True, help="Do not verify TLS certificates."),
        click.option("--cacert", type=click.Path(dir_okay=False), default=d["cacert"], help="CA bundle to verify the server with."),
        click.option("--http2", is_flag=True, help="Use HTTP/2 (ALPN over TLS)."),
        click.option("--follow-redirects", is_flag=True, help="Follow redirects (credentials never go to another host)."),
        click.option("--workers", type=int, default=d["workers"], help="Worker processes (default: min(concurrency, cores); with --backend ray, the cluster's CPUs)."),
        click.option("--max-records", type=int, default=d["max_records"], show_default=True, help="Per-request records kept (a uniform sample)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of the table."),
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Append one row per run to this CSV."),
        click.option("--max-error-rate", type=float, default=0.0, show_default=True, help="Exit 1 when the failed share (0 to 1) exceeds this."),
        click.option("--no-progress", is_flag=True, help="No progress bar on stderr."),
        # open loop
        click.option("--rate", type=float, default=d["rate"], help="Open loop: requests/s, latency measured from the intended send time."),
        click.option("--arrival", type=click.Choice(ARRIVALS), default=d["arrival"], show_default=True),
        click.option("--duration", "duration", default=None, help="Run this long (e.g. 30s) instead of --n requests: with --rate, the schedule's length; else a closed loop at --concurrency."),
        click.option("--max-concurrency", type=int, default=d["max_concurrency"], help="Open loop: cap on requests in flight (default: 256, or --concurrency if larger)."),
        click.option("--seed", type=int, default=d["seed"], show_default=True, help="Seed of the arrival process, the prompt and output lengths and the data set's sample."),
        # outputs beyond the table
        click.option("-o", "--output", "output_path", type=click.Path(), default=None, help="Write the run file (JSON, schema_version) here; a sweep writes one per run into this folder."),
        click.option("--raw", "raw_path", type=click.Path(dir_okay=False), default=None, help="Export the per-request records (every mark) as CSV."),
        click.option("--hgrm", "hgrm", nargs=2, multiple=True, metavar="PHASE FILE", help="Write a phase's HDR percentile spectrum (wrk2's .hgrm)."),
        click.option("--slo", "slos", multiple=True, metavar="EXPR", help="Gate, e.g. 'ttft.p95<200ms', 'error_rate<1%'; exit 3 when one fails."),
        # backend
        click.option("--backend", type=click.Choice(BACKENDS), default=d["backend"], show_default=True),
        click.option("--ray-address", default=d["ray_address"], help="Ray cluster address (default: a private Ray on 127.0.0.1; 'auto': the Ray running on this host)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


_OUTPUT_KEYS = ("as_json", "csv_path", "max_error_rate", "output_path", "raw_path", "hgrm", "slos")


def _outputs(options: dict[str, Any]) -> core.Outputs:
    """Takes the output flags out of `options` (what is left is the spec's)."""
    taken = {k: options.pop(k) for k in _OUTPUT_KEYS}
    taken["hgrm"], taken["slos"] = tuple(taken["hgrm"]), tuple(taken["slos"])
    return core.Outputs(progress=not options.pop("no_progress"), **taken)


def _spec(mode: str, concurrency: int, **options: Any) -> RunSpec:
    headers = tuple(parse_header(h) for h in options.pop("headers"))
    api_key = options.pop("api_key") or api_key_from_env()
    duration = options.pop("duration")
    duration_s = parse_duration_s(duration) if duration is not None else None
    options["prompt"] = prompt_text(options["prompt"])
    return RunSpec(mode=mode, concurrency=concurrency, headers=headers, api_key=api_key, duration_s=duration_s, **options)


@main.command()
@click.option("--mode", default=_DEFAULTS["mode"], show_default=True, help=f"One of {', '.join(MODES)}.")
@click.option("-c", "--concurrency", type=int, default=_DEFAULTS["concurrency"], show_default=True, help="Requests in flight (closed loop).")
@_load_options
def run(mode: str, concurrency: int, **options: Any) -> core.CommandResult:
    """Measure one endpoint: the phase breakdown table of N requests at concurrency C."""
    outputs = _outputs(options)
    return core.measure([_spec(mode, concurrency, **options)], outputs, _env())


@main.command()
@click.option("--mode", "modes", default="health,completions", show_default=True, help="Comma-separated modes.")
@click.option("-c", "--concurrency", "levels", default="1,4,8", show_default=True, help="Comma-separated concurrency levels.")
@_load_options
def sweep(modes: str, levels: str, **options: Any) -> core.CommandResult:
    """Run every mode at every concurrency level (and every --input-tokens length) in turn and
    report them side by side."""
    outputs = _outputs(options)
    lengths = _length_list(options.pop("input_tokens"))
    specs = [
        _spec(mode, level, input_tokens=length, **options)
        for mode in _mode_list(modes)
        for length in (lengths if mode in STREAMING_MODES else [None])
        for level in _int_list(levels)
    ]
    return core.measure(specs, outputs, _env())


def _length_list(text: str | None) -> list[str | None]:
    """A sweep's --input-tokens: lengths (N or A:B) separated by commas."""
    if text is None:
        return [None]
    lengths = [part.strip() for part in text.split(",") if part.strip()]
    if not lengths:
        raise click.BadParameter("an empty list: use e.g. 16,256,2048", param_hint="--input-tokens")
    return list(dict.fromkeys(lengths))


@main.command()
@click.option("--mode", default="completions", show_default=True, help=f"One of {', '.join(MODES)}.")
@click.option("--resolution", type=click.FloatRange(0.001, 1.0), default=_SEARCH.resolution, show_default=True,
              help="Stop when the passing and failing rates lie within this share of each other.")
@click.option("--max-steps", type=click.IntRange(1), default=_SEARCH.max_steps, show_default=True, help="Open-loop rate steps at most.")
@click.option("--max-time", "max_time", default="10m", show_default=True, help="Stop before a step would end after this (e.g. 10m).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, help="Write the rate/latency curve as a PNG.")
@_load_options
def capacity(mode: str, resolution: float, max_steps: int, max_time: str, plot_path: str | None, **options: Any) -> core.CommandResult:
    """Find the highest request rate that meets every --slo gate: a synchronous and a saturating
    run, then open-loop rates aimed at the gates, each step --duration long (default 10s)."""
    outputs = _outputs(options)
    if options["rate"] is not None:
        raise click.BadParameter("capacity chooses the rates itself", param_hint="--rate")
    step_s = parse_duration_s(options.pop("duration") or "10s")
    options["duration"] = None
    spec = _spec(mode, 1, **options)
    bounds = Search(resolution, max_steps, parse_duration_s(max_time), spec.max_concurrency or _SEARCH.max_concurrency, step_s)
    return core.capacity(spec, bounds, outputs, _env(), plot_path)


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
@click.option("--format", "fmt", type=click.Choice(core.REPORT_FORMATS), default="md", show_default=True)
@click.option("--ttft-ref", default=None, metavar="27ms|FILE.csv", help="External warm TTFT: a duration, or a CSV of earlier TTFT measurements (their median).")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), default=None, help="Write PNG plots into this folder and link them from the report.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap confidence intervals.")
def report(run_files: tuple[str, ...], output_path: str | None, fmt: str, ttft_ref: str | None, plots_dir: str | None, seed: int) -> core.CommandResult:
    """Report saved runs: the runs table, TTFT vs HTTP latency, significance, the rule of thumb, plots.

    RUNFILES are run files (`-o` of run/sweep) or folders of them."""
    return core.report(run_files, _env(), fmt, output_path, ttft_ref, plots_dir, seed)


# --- merge and compare run files ---
@main.command()
@click.argument("run_files", nargs=-1, required=True, metavar="RUNFILE RUNFILE...")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False), required=True, help="The merged run file to write.")
@click.option("--force", is_flag=True, help="Merge runs of different modes, URL paths or load models anyway.")
def merge(run_files: tuple[str, ...], output_path: str, force: bool) -> core.CommandResult:
    """Merge runs made at the same time on several hosts into one run file (histograms added, counters summed)."""
    return core.merge(run_files, output_path, _env(), force)


@main.command()
@click.argument("base_file", metavar="BASE")
@click.argument("new_file", metavar="NEW")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of the table.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
def compare(base_file: str, new_file: str, as_json: bool, seed: int) -> core.CommandResult:
    """Compare two run files: p50/p95/p99 per phase, the difference, and whether it is significant."""
    return core.compare(base_file, new_file, _env(), as_json, seed)
