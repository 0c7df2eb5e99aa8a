"""`--json`: one JSON object, the seed's keys first, then every phase and counter."""

from __future__ import annotations

import json

from netbench.results import RunResult
from netbench.summary import summarize


def render_json(results: list[RunResult]) -> str:
    """One run: its summary object; a sweep: {"runs": [...]}."""
    if len(results) == 1:
        return json.dumps(summarize(results[0]), indent=2)
    return json.dumps({"runs": [summarize(r) for r in results]}, indent=2)
