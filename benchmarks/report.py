"""The suite's verdict: every figure as a ratio to its peer, the targets, perf.md and perf.json."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.stats import ratio


@dataclass(frozen=True)
class Target:
    key: str
    name: str
    measured: float | None
    goal: float
    #: "<=" or ">="
    relation: str
    unit: str

    @property
    def passed(self) -> bool:
        compare: Callable[[float, float], bool] = operator.le if self.relation == "<=" else operator.ge
        return self.measured is not None and compare(self.measured, self.goal)


def best_worker_rps(overhead: dict[str, Any]) -> float:
    """What one netbench worker process sustained: its best over concurrency 1..4."""
    return max(level["netbench"]["requests_per_s"] for level in overhead.values())


def targets(overhead: dict[str, Any], lag: dict[str, Any], scale: dict[str, Any]) -> list[Target]:
    c1, c8 = overhead["c1"], lag["c8"]
    rps = best_worker_rps(overhead)
    return [
        Target("e2e_vs_wrk", "netbench e2e p50 / wrk p50, null server, c=1", ratio(c1["netbench"]["p50_us"], c1["wrk"]["p50_us"]), 2.0, "<=", "x"),
        Target("worker_rps", "one netbench worker, requests/s on the null server", rps, 15_000, ">=", "/s"),
        Target("rps_vs_aiohttp", "one netbench worker / sequential aiohttp loop, requests/s", ratio(rps, c1["aiohttp"]["requests_per_s"]), 8.0, ">=", "x"),
        Target("lag_p50", "netbench token lag p50, c=8", c8["netbench"]["p50_us"], 100, "<=", "µs"),
        Target("lag_p99", "netbench token lag p99, c=8", c8["netbench"]["p99_us"], 1000, "<=", "µs"),
        Target("lag_vs_aiohttp", "aiohttp reader lag p50 / netbench lag p50, c=8", ratio(c8["aiohttp"]["p50_us"], c8["netbench"]["p50_us"]), 3.0, ">=", "x"),
        Target(
            "memory_growth",
            f"peak memory, n={scale['get_large']['n']:,} / n={scale['get_small']['n']:,}",
            ratio(scale["get_large"]["peak_rss_mib"], scale["get_small"]["peak_rss_mib"]),
            1.5,
            "<=",
            "x",
        ),
    ]


def evidence(key: str, perf: dict[str, Any]) -> str:
    """What the same run says about a target's limit: netbench against the bare pycurl floor."""
    c1, c8, load = perf["overhead"]["c1"], perf["token_lag"]["c8"], perf["machine"]["load_before"]
    if key == "e2e_vs_wrk":
        floor = c1["pycurl"]["p50_us"]
        return (
            f"a bare pycurl loop's TOTAL p50 was {_num(floor)} µs ({_x(ratio(floor, c1['wrk']['p50_us']))} wrk's): "
            f"libcurl driven from Python sets that floor; netbench reported {_num(c1['netbench']['p50_us'])} µs."
        )
    if key in ("worker_rps", "rps_vs_aiohttp"):
        best = max(level["pycurl"]["requests_per_s"] for level in perf["overhead"].values())
        aiohttp = c1["aiohttp"]["requests_per_s"]
        return (
            f"a bare pycurl loop did {_num(best)} requests/s at best in this run, {_x(ratio(best, aiohttp))} the "
            f"aiohttp loop's {_num(aiohttp)} (load average {load} on {perf['machine']['cores']} cores, nginx "
            "included); netbench's per-request bookkeeping costs the rest."
        )
    if key in ("lag_p50", "lag_p99", "lag_vs_aiohttp"):
        floor = c8["pycurl"]
        return (
            f"the bare pycurl reader, which parses nothing while it reads, saw p50 {_num(floor['p50_us'])} µs and "
            f"p99 {_num(floor['p99_us'])} µs in this run: what no client can go below on this machine "
            f"(load average {load}: a sleeping process waits for a core when its event arrives)."
        )
    large, small = perf["scale"]["get_large"], perf["scale"]["get_small"]
    return f"peak {_num(large['peak_rss_mib'], 1)} MiB for n={large['n']:,} against {_num(small['peak_rss_mib'], 1)} MiB for n={small['n']:,}."


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


Ratio = Callable[[dict[str, Any], dict[str, Any]], float | None]


def _digits(target: Target) -> int:
    return 2 if target.unit == "x" else 0


def _measured(target: Target) -> str:
    return f"{_num(target.measured, _digits(target))} {target.unit}"


def _clients_table(levels: dict[str, Any], figure: str, third: tuple[str, str], last: tuple[str, Ratio]) -> list[str]:
    """One row per client and concurrency: p50, p99, a third figure, and ratios to netbench's row."""
    (third_label, third_key), (last_label, last_ratio) = third, last
    lines = [
        f"| client | concurrency | {figure} p50 µs | {figure} p99 µs | {third_label} | p50 / netbench p50 | {last_label} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for level, clients in levels.items():
        ours = clients["netbench"]
        for name, f in clients.items():
            lines.append(
                f"| {name} | {level[1:]} | {_num(f['p50_us'])} | {_num(f['p99_us'])} | {_num(f[third_key])} "
                f"| {_x(ratio(f['p50_us'], ours['p50_us']))} | {_x(last_ratio(f, ours))} |"
            )
    return lines


def _scale_table(scale: dict[str, Any]) -> list[str]:
    small = scale["get_small"]["peak_rss_mib"]
    lines = [
        "| run | requests | peak memory MiB (tree) | vs smallest | processes | CPU s | CPU µs/request | requests/s | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"get_small": "GET nginx, c=4", "get_large": "GET nginx, c=4", "streams": "streams, built-in server"}
    for name, f in scale.items():
        label = labels[name] + (f", c={f['concurrency']}, {f['max_tokens']} tokens" if name == "streams" else "")
        lines.append(
            f"| {label} | {_num(f['n'])} | {_num(f['peak_rss_mib'], 1)} | {_x(ratio(f['peak_rss_mib'], small))} "
            f"| {f['processes']} | {_num(f['cpu_s'], 2)} | {_num(f['cpu_us_per_request'], 1)} "
            f"| {_num(f['requests_per_s'])} | {_num(f['wall_s'], 1)} |"
        )
    return lines


def render_markdown(perf: dict[str, Any]) -> str:
    machine = perf["machine"]
    verdicts = [Target(**{k: v for k, v in t.items() if k != "passed"}) for t in perf["targets"]]
    passed = sum(t.passed for t in verdicts)
    lines = [
        "# netbench perf: measuring the measurer",
        "",
        f"One run of `benchmarks/run_perf.py` ({perf['plan_name']} plan, {perf['plan']['rounds']} round(s), "
        f"medians over rounds), {machine['date']}, on {machine['cores']} cores; load average "
        f"{machine['load_before']} before, {machine['load_after']} after. Every ratio compares figures "
        "taken in this run, on this machine.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()) + ".",
        "",
        f"## Targets: {passed} of {len(verdicts)} met",
        "",
        "| target | measured | goal | met |",
        "|---|---:|---:|---|",
    ]
    for t in verdicts:
        lines.append(f"| {t.name} | {_measured(t)} | {t.relation} {_num(t.goal, _digits(t))} {t.unit} | {'yes' if t.passed else '**no**'} |")
    lines += [
        "",
        "## 1. Null-server overhead",
        "",
        "nginx on loopback answering `GET /null` with 3 bytes over keep-alive connections; one thread or "
        "process per client: wrk `-t1 -cC --latency` (C, the physical reference), a bare pycurl CurlMulti "
        "loop (libcurl's TOTAL; the floor of any libcurl client driven from Python), netbench `--workers 1` "
        "(its reported e2e = libcurl TOTAL), an aiohttp loop (vLLM's benchmark client) and an httpx loop "
        "(guidellm's client), both timed around the request and the body read.",
        "",
        *_clients_table(
            perf["overhead"],
            "e2e",
            ("requests/s", "requests_per_s"),
            ("netbench req/s / this", lambda f, ours: ratio(ours["requests_per_s"], f["requests_per_s"])),
        ),
        "",
        f"One netbench worker process sustained {_num(best_worker_rps(perf['overhead']))} requests/s (best of c=1 and c=4).",
        "",
        "## 2. Token timing precision",
        "",
        "`netbench serve --stamp-events` (a token every 5 ms) stamps each token event with "
        "`time.monotonic_ns()` as it writes it; each client subtracts the stamp from its own monotonic "
        "clock when it sees the event (netbench `--workers 1`: the `token_lag` phase, taken at the write "
        "callback; pycurl: a bare CurlMulti reader that only stores chunks with their arrival time, the "
        "floor; aiohttp: vLLM's `async for chunk_bytes in response.content` reader).",
        "",
        *_clients_table(
            perf["token_lag"],
            "lag",
            ("samples", "count"),
            ("p99 / netbench p99", lambda f, ours: ratio(f["p99_us"], ours["p99_us"])),
        ),
        "",
        "## 3. Scale",
        "",
        "Peak memory is the sum of each process's high-water mark (VmHWM) over netbench's whole tree "
        "(parent and workers); CPU is user + system time of the tree, start-up included. GET runs keep "
        "histograms plus netbench's default bounded sample of per-request records.",
        "",
        *_scale_table(perf["scale"]),
        "",
    ]
    missed = [t for t in verdicts if not t.passed]
    if missed:
        lines += ["## Missed targets, and what this run says limits them", ""]
        lines += [
            f"- {t.name}: {_measured(t)}, goal {t.relation} {_num(t.goal, _digits(t))} {t.unit}; {evidence(t.key, perf)}"
            for t in missed
        ]
        lines.append("")
    return "\n".join(lines)


def write(out_dir: Path, perf: dict[str, Any]) -> tuple[Path, Path]:
    """Write perf.json and perf.md into out_dir; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "perf.json", out_dir / "perf.md"
    json_path.write_text(json.dumps(perf, indent=2) + "\n")
    md_path.write_text(render_markdown(perf))
    return json_path, md_path


def verdicts_dicts(found: list[Target]) -> list[dict[str, Any]]:
    return [asdict(t) | {"passed": t.passed} for t in found]
