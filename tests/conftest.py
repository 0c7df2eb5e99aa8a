"""Shared fixtures: the real servers the integration tests run against, on free loopback ports."""

from collections.abc import Iterator

import pytest

from tests.netem.line import make_delay_line  # noqa: F401  (fixtures)
from tests.servers.faults import fault_server, refused_url  # noqa: F401
from tests.servers.nginx import nginx_server  # noqa: F401
from tests.servers.sim import start_sim_server
from tests.servers.slm import slm_server  # noqa: F401
from tests.servers.truth import truth_server  # noqa: F401


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """The built-in server with a fast timing model: ~5 ms to the first token, then 2 ms a token,
    exactly max_tokens of them (netbench's client does not send ignore_eos yet)."""
    with start_sim_server("--step-ms", "2", "--prefill-token-ms", "0.2", "--ignore-eos") as base_url:
        yield base_url
