"""`make mutation`: which lines of the measuring core no unit test guards.

    .venv/bin/python -m benchmarks.mutation --out benchmarks_out [--reuse]

Runs mutmut (configured in setup.cfg's [mutmut]: the modules, the fast unit tests each mutant
is tested with) over SCOPE, reads its verdicts and writes `mutation.md` into --out: per module
the mutants killed, survived (of them, untested: no test ran the function), timed out and
equivalent, the score, and every surviving mutant with file:line and its diff. Equivalent
mutants (no behaviour can tell them apart) are listed in benchmarks/mutation_equivalents.toml,
each with the mutated line and a reason; a listed one that is killed, or whose diff no longer
holds its line, is stale. Exit status 1 when a mutant survives unlisted or a listing is stale.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.toml")
MUTMUT = Path(sys.executable).with_name("mutmut")

#: module -> the mutants (mutmut's names, globs) that `make mutation` tests: the measuring core.
#: tcpinfo: the parse (TcpSockets reads real sockets: the integration tests' part); curl: where
#: libcurl's marks, the token events and TCP_INFO become a record, and the callbacks that stamp them
SCOPE: dict[str, tuple[str, ...]] = {
    "netbench/phases.py": ("netbench.phases.*",),
    "netbench/sse.py": ("netbench.sse.*",),
    "netbench/tcpinfo.py": ("netbench.tcpinfo.x_parse__mutmut_*",),
    "netbench/curl.py": tuple(
        f"netbench.curl.{function}__mutmut_*"
        for function in (
            "x_outcome_of", "x__known", "xǁ_Connectionsǁbegin_attempt", "xǁ_Connectionsǁcomplete",
            "xǁTransferǁ_align_anchor", "xǁTransferǁ_on_prereq", "xǁTransferǁ_on_header", "xǁTransferǁ_on_body",
            "xǁTransferǁ_on_stream", "xǁTransferǁdigest", "xǁTransferǁ_digest_chunk", "xǁTransferǁ_mark_us",
            "xǁTransferǁfinish", "xǁTransferǁserver_timings",
        )
    ),
}  # fmt: skip
#: mutmut's verdicts, as `mutmut results` names them, by the column they count in
KILLED = frozenset(("killed", "segfault", "caught by type check"))
TIMEOUT = "timeout"
UNTESTED = "no tests"


@dataclass
class Mutant:
    name: str
    module: str
    status: str
    diff: str = ""
    line: int = 0
    #: the reason it is equivalent, "" when it is not listed
    equivalent: str = ""

    @property
    def caught(self) -> bool:
        """A test failed under it (killed) or it ran past its time (timeout): the score's numerator."""
        return self.status in KILLED or self.status == TIMEOUT


@dataclass
class Tally:
    killed: int = 0
    survived: int = 0
    untested: int = 0
    timeout: int = 0
    equivalent: int = 0

    @property
    def score(self) -> float:
        judged = self.killed + self.survived + self.timeout
        return 100.0 * (self.killed + self.timeout) / judged if judged else 100.0


@dataclass
class Report:
    mutants: list[Mutant]
    wall_s: float
    stale: list[str] = field(default_factory=list)

    def tally(self, module: str) -> Tally:
        tally = Tally()
        for mutant in self.mutants:
            if mutant.module != module:
                continue
            if mutant.equivalent:
                tally.equivalent += 1
            elif mutant.status in KILLED:
                tally.killed += 1
            elif mutant.status == TIMEOUT:
                tally.timeout += 1
            else:
                tally.survived += 1
                tally.untested += mutant.status == UNTESTED
        return tally

    @property
    def unexplained(self) -> list[Mutant]:
        return [m for m in self.mutants if not m.equivalent and not m.caught]


def module_of(name: str) -> str | None:
    """The module of SCOPE a mutant belongs to; None outside it."""
    return next((module for module, globs in SCOPE.items() if any(fnmatch(name, g) for g in globs)), None)


def run_mutmut(reuse: bool, max_children: int) -> None:
    if not reuse:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    globs = [g for module_globs in SCOPE.values() for g in module_globs]
    subprocess.run([str(MUTMUT), "run", "--max-children", str(max_children), *globs], cwd=ROOT, check=True)


def read_statuses() -> dict[str, str]:
    """Every mutant's verdict, from `mutmut results --all true` ("    name: status" lines)."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT, check=True, capture_output=True, text=True)
    statuses = {}
    for line in out.stdout.splitlines():
        name, sep, status = line.strip().partition(": ")
        if sep:
            statuses[name] = status
    return statuses


def diff_of(name: str) -> str:
    out = subprocess.run([str(MUTMUT), "show", name], cwd=ROOT, check=True, capture_output=True, text=True)
    return out.stdout.partition("\n")[2].rstrip()


def function_lines(module: str) -> dict[str, int]:
    """mutmut's mangled name of each function of a module (`x_name`, `xǁClassǁname`) -> the
    first line of its source (its first decorator's, or its `def`)."""
    tree = ast.parse((ROOT / module).read_text())
    lines: dict[str, int] = {}

    def add(node: ast.AST, mangled: str) -> None:
        lines[mangled] = min([node.lineno, *(d.lineno for d in node.decorator_list)])

    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            add(node, f"x_{node.name}")
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    add(item, f"xǁ{node.name}ǁ{item.name}")
    return lines


def changed_line(diff: str) -> int:
    """The first line (1-based, within the function's source) that the diff changes."""
    for line in diff.splitlines():
        hunk = re.match(r"@@ -(\d+)", line)
        if hunk:
            number = int(hunk.group(1))
        elif line.startswith(("-", "+")) and not line.startswith(("---", "+++")):
            return number
        elif line.startswith(" "):
            number += 1
    return 1


def mutated_lines(diff: str) -> list[str]:
    return [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def collect() -> Report:
    statuses = read_statuses()
    mutants = [Mutant(name, module, status) for name, status in statuses.items() if (module := module_of(name))]
    not_killed = [m for m in mutants if not m.caught]
    listed = {entry["mutant"]: entry for entry in tomllib.loads(EQUIVALENTS.read_text()).get("equivalent", [])}
    wanted = not_killed + [m for m in mutants if m.name in listed and m not in not_killed]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for mutant, diff in zip(wanted, pool.map(diff_of, [m.name for m in wanted])):
            mutant.diff = diff
    starts = {module: function_lines(module) for module in SCOPE}
    for mutant in wanted:
        function = mutant.name.rpartition("__mutmut_")[0].rpartition(".")[2]
        mutant.line = starts[mutant.module].get(function, 0) + changed_line(mutant.diff) - 1
    report = Report(mutants, wall_s=0.0)
    by_name = {m.name: m for m in mutants}
    for name, entry in listed.items():
        mutant = by_name.get(name)
        if mutant is None:
            report.stale.append(f"{name}: listed as equivalent, but no such mutant is in scope")
        elif mutant.caught:
            report.stale.append(f"{name}: listed as equivalent, but a test kills it: remove it from the list")
        elif entry["mutation"].strip() not in mutated_lines(mutant.diff):
            report.stale.append(f"{name}: its diff no longer holds `{entry['mutation']}` (mutants renumbered?)")
        else:
            mutant.equivalent = entry["reason"]
    return report


def markdown(report: Report) -> str:
    out = [
        "# Mutation testing of the measuring core",
        "",
        f"`make mutation` (mutmut, {_mutmut_version()}), wall time {report.wall_s / 60:.1f} min. "
        "Score: (killed + timeout) / (mutants - equivalent). Untested: survived, no test ran the function.",
        "",
        "| module | mutants | killed | survived | of them untested | timeout | equivalent | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for module in SCOPE:
        t = report.tally(module)
        total = t.killed + t.survived + t.timeout + t.equivalent
        out.append(f"| `{module}` | {total} | {t.killed} | {t.survived} | {t.untested} | {t.timeout} | {t.equivalent} | {t.score:.1f} % |")
    if report.stale:
        out += ["", "## Stale equivalents", "", *(f"- {line}" for line in report.stale)]
    out += ["", f"## Surviving mutants ({len(report.unexplained)})", ""]
    for mutant in sorted(report.unexplained, key=lambda m: (m.module, m.line)):
        out += [f"### {mutant.module}:{mutant.line} `{mutant.name}` ({mutant.status})", "", "```diff", mutant.diff, "```", ""]
    equivalents = [m for m in report.mutants if m.equivalent]
    out += ["", f"## Equivalent mutants ({len(equivalents)})", ""]
    out += [f"- {m.module}:{m.line} `{m.name}`: {m.equivalent}" for m in sorted(equivalents, key=lambda m: (m.module, m.line))]
    return "\n".join(out) + "\n"


def _mutmut_version() -> str:
    from importlib.metadata import version

    return f"mutmut {version('mutmut')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks_out")
    parser.add_argument("--reuse", action="store_true", help="keep mutants/ and mutmut's verdicts of unchanged code")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    args = parser.parse_args(argv)
    started = time.monotonic()
    run_mutmut(args.reuse, args.max_children)
    report = collect()
    report.wall_s = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mutation.md").write_text(markdown(report))
    for module in SCOPE:
        t = report.tally(module)
        print(f"{module}: killed {t.killed}, survived {t.survived}, timeout {t.timeout}, equivalent {t.equivalent}: {t.score:.1f} %")
    problems = len(report.unexplained) + len(report.stale)
    print(f"{len(report.unexplained)} surviving, {len(report.stale)} stale equivalents: {args.out / 'mutation.md'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
