"""The layers of docs/architecture.md, checked on the imports (every import, lazy ones too, as
written in the source): no cycle, nothing imports the CLI, the numbers import no renderer, the
renderers no measuring code, each backend stands alone, and the heavy libraries stay home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "netbench"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = found
    return graph


GRAPH = _imports()
MODULES = set(GRAPH)


def _internal(name: str) -> set[str]:
    """The netbench modules `name` imports."""
    return {m for m in GRAPH[name] if m in MODULES and m != name}


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in _internal(name):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]) if dep in path else dep)
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_nothing_imports_the_cli():
    assert [m for m in MODULES if "netbench.cli" in GRAPH[m] and m != "netbench.__main__"] == []


@pytest.mark.parametrize(("library", "allowed"), [("pycurl", ("netbench.curl",)), ("rich", ("netbench.report",)),
                                                  ("matplotlib", ("netbench.report",)), ("ray", ("netbench.backends.ray",))])  # fmt: skip
def test_heavy_libraries_stay_in_their_module(library, allowed):
    users = {m for m in MODULES if any(i == library or i.startswith(library + ".") for i in GRAPH[m])}
    assert all(m.startswith(allowed) for m in users), sorted(users)


NUMBERS = ("netbench.summary", "netbench.split", "netbench.load_check", "netbench.analysis", "netbench.figures",
           "netbench.compare", "netbench.slo", "netbench.histograms", "netbench.merge")  # fmt: skip


@pytest.mark.parametrize("module", NUMBERS)
def test_the_numbers_import_no_renderer_and_no_command(module):
    assert not {m for m in _internal(module) if m.startswith(("netbench.report", "netbench.core", "netbench.cli"))}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("netbench.report")))
def test_renderers_import_no_measuring_code(module):
    measuring = ("netbench.runner", "netbench.backends", "netbench.worker", "netbench.curl", "netbench.core")
    assert not {m for m in _internal(module) if m.startswith(measuring)}
    # they read summaries: the records' phases are derived once, in summary.Run
    assert "netbench.phases.derive" not in GRAPH[module]


def test_each_backend_stands_alone():
    backends = sorted(m for m in MODULES if m.startswith("netbench.backends.") and m != "netbench.backends.base")
    assert backends == ["netbench.backends.local", "netbench.backends.ray"]
    for backend in backends:
        others = {m for m in _internal(backend) if m.startswith("netbench.backends") or m == "netbench.runner"}
        assert others == {"netbench.backends.base"}, others


def test_every_name_used_is_defined():
    """A name that is not defined (a merge that dropped an import) fails only on the line that
    uses it, which a test may never reach: pyflakes finds it in the source."""
    from pyflakes import api, messages
    from pyflakes.reporter import Reporter

    class Collect(Reporter):
        def __init__(self) -> None:
            super().__init__(None, None)
            self.found: list[str] = []

        def flake(self, message) -> None:
            if isinstance(message, (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)):
                self.found.append(str(message))

        def syntaxError(self, filename, msg, lineno, offset, text) -> None:
            self.found.append(f"{filename}:{lineno}: {msg}")

        def unexpectedError(self, filename, msg) -> None:
            self.found.append(f"{filename}: {msg}")

    reporter = Collect()
    root = PACKAGE.parent
    api.checkRecursive([str(root / folder) for folder in ("netbench", "benchmarks", "tests", "scripts")], reporter)
    assert reporter.found == []


def test_the_code_cites_the_design_that_is_in_the_repository():
    """DESIGN.md lives outside the repository; docs/architecture.md is the design a reader has."""
    root = PACKAGE.parent
    citing = [str(p.relative_to(root)) for p in sorted(PACKAGE.rglob("*.py")) if "DESIGN.md" in p.read_text()]
    assert citing == []
    assert (root / "docs" / "architecture.md").is_file()
