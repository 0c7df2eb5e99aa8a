"""Shared fixtures: the real servers the integration tests run against, on free loopback ports."""

from collections.abc import Iterator

import pytest

from tests.servers.faults import fault_server, refused_url  # noqa: F401  (fixtures)
from tests.servers.nginx import nginx_server  # noqa: F401
from tests.servers.sim import start_sim_server
from tests.servers.slm import slm_server  # noqa: F401
from tests.servers.truth import truth_server  # noqa: F401


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """The built-in server with a fast timing model: 5 ms prefill, 2 ms per token."""
    with start_sim_server("--prefill-ms", "5", "--decode-ms", "2") as base_url:
        yield base_url
