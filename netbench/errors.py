"""Typed errors of the layers below the CLI. Their messages name what was wrong in the core's
own words (`subject`: "ttft_ref", "slo", "ray_address", ...), never a command-line flag: the
CLI, which owns the flags, names them (`cli.FLAGS`). All are bad input: one line, exit code 2.
"""

from __future__ import annotations

from collections.abc import Sequence

from netbench.spec import SpecError


class InputError(SpecError):
    """A value the user gave that cannot be used: `subject` names it, `reason` says why."""

    def __init__(self, subject: str, value: object, reason: str) -> None:
        self.subject, self.value, self.reason = subject, value, reason
        super().__init__(f"{subject} {value!r}: {reason}")


class MergeRefused(SpecError):
    """Runs that are not one load (another mode, URL path or load model, a repeated run)."""

    def __init__(self, differences: Sequence[str]) -> None:
        self.differences = tuple(differences)
        super().__init__(f"cannot merge: {'; '.join(self.differences)}")
