"""The click commands: flags -> specs, errors -> exit codes. No measuring logic lives here."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="netbench")
def main() -> None:
    """Split LLM endpoint latency into network, HTTP and model time."""


# --- serve (owned by netbench/sim; edit only between these markers) ---
# --- end serve ---
