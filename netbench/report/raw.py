"""`--raw FILE.csv`: every kept per-request record with every mark, for users' own analysis."""

from __future__ import annotations

import csv
from pathlib import Path

from netbench.outcomes import Outcome
from netbench.phases import RECORD_DTYPE
from netbench.results import RunResult

COLUMNS = ("mode", "concurrency", "rate", "outcome", *RECORD_DTYPE.names)
_OUTCOME_FIELD = RECORD_DTYPE.names.index("error_class")


def write_raw_csv(results: list[RunResult], path: str | Path) -> None:
    target = Path(path)
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for result in results:
            spec = result.spec
            prefix = (spec.mode, spec.concurrency, "" if spec.rate is None else spec.rate)
            for record in result.records.tolist():
                writer.writerow((*prefix, Outcome(record[_OUTCOME_FIELD]).key, *record))
