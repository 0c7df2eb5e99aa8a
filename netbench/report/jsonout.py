"""`--json`: one JSON object, the plain serialisation of the run summaries (docs/json-schema.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from netbench.serial import plain
from netbench.summary import RunSummary


def render_json(summaries: Sequence[RunSummary]) -> str:
    """One run: its summary object; a sweep: {"runs": [...]}."""
    if len(summaries) == 1:
        return json.dumps(plain(summaries[0]), indent=2)
    return json.dumps({"runs": plain(list(summaries))}, indent=2)
