"""`--json`: one JSON object, the plain serialisation of the run summaries (docs/json-schema.md)."""

from __future__ import annotations

from collections.abc import Sequence

from netbench.serial import dumps
from netbench.summary import RunSummary


def render_json(summaries: Sequence[RunSummary]) -> str:
    """One run: its summary object; a sweep: {"runs": [...]}."""
    if len(summaries) == 1:
        return dumps(summaries[0])
    return dumps({"runs": list(summaries)})
