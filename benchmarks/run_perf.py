"""`make perf`: netbench against wrk, aiohttp and httpx, every figure from this one run.

    .venv/bin/python -m benchmarks.run_perf --out benchmarks_out [--plan smoke]

Starts a private nginx and a built-in server (`netbench serve --stamp-events`) on free
loopback ports, runs the three benchmarks (overhead, token lag, scale) and writes
`perf.json` and `perf.md` into --out. Exit status 0 whether or not targets are met: the
figures are the product; a client that fails is an error (status 1).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.overhead import null_server_overhead
from benchmarks.plan import PLANS
from benchmarks.scale import scale
from benchmarks.token_lag import SERVER_ARGS, token_lag
from netbench.curl import curl_version
from tests.servers.nginx import run_nginx
from tests.servers.sim import start_sim_server

ENSURE_WRK = Path(__file__).resolve().parents[1] / "scripts" / "ensure_wrk.sh"


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _wrk_version() -> str:
    # wrk prints its version line and then its usage, with a non-zero status.
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).split()[1]


def run_suite(plan_name: str, log: Any = sys.stderr) -> dict[str, Any]:
    """Run every benchmark of the plan; return the perf document (what perf.json holds)."""
    plan = PLANS[plan_name]
    subprocess.run(["bash", str(ENSURE_WRK)], check=True, timeout=600)
    load_before = _load_average()
    with run_nginx() as nginx, start_sim_server(*SERVER_ARGS) as sim_url:
        null_url = f"{nginx.http_url}/null"
        print("perf: 1/3 null-server overhead", file=log, flush=True)
        overhead = null_server_overhead(null_url, plan)
        print("perf: 2/3 token lag", file=log, flush=True)
        lag = token_lag(sim_url, plan)
        print("perf: 3/3 scale", file=log, flush=True)
        costs = scale(null_url, sim_url, plan)
        nginx_version = nginx.version
    return {
        "plan_name": plan_name,
        "plan": vars(plan),
        "machine": {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": os.cpu_count(),
            "load_before": load_before,
            "load_after": _load_average(),
            "versions": {
                "python": sys.version.split()[0],
                "netbench": version("netbench"),
                "libcurl": curl_version().split()[1].removeprefix("libcurl/"),
                "wrk": _wrk_version().removeprefix("debian/"),
                "nginx": nginx_version,
                "aiohttp": version("aiohttp"),
                "httpx": version("httpx"),
            },
        },
        "overhead": overhead,
        "token_lag": lag,
        "scale": costs,
        "targets": report.verdicts_dicts(report.targets(overhead, lag, costs)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks_out"), help="Folder for perf.md and perf.json.")
    parser.add_argument("--plan", choices=sorted(PLANS), default="full", help="full (make perf) or smoke (tiny counts).")
    args = parser.parse_args(argv)
    perf = run_suite(args.plan)
    json_path, md_path = report.write(args.out, perf)
    print(md_path.read_text())
    print(f"perf: wrote {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
