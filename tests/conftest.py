"""Shared fixtures: the real servers the integration tests run against, on free loopback ports;
and the guard that keeps the rest honest: a test not marked `integration` may start no
subprocess, no process and no listening socket (it fails if it tries), so that
`make test-unit` (`-m "not integration"`) is what it says."""

import multiprocessing.process
import socket
import subprocess
from collections.abc import Iterator

import pytest

from tests.netem.line import make_delay_line  # noqa: F401  (fixtures)
from tests.servers.faults import fault_server, refused_url  # noqa: F401
from tests.servers.nginx import nginx_server  # noqa: F401
from tests.servers.sim import start_sim_server
from tests.servers.slm import slm_server  # noqa: F401
from tests.servers.truth import truth_server  # noqa: F401

_guard = pytest.MonkeyPatch()


def _refuse(what: str):
    def refused(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(f"{what} in a test not marked integration: mark it @pytest.mark.integration")

    return refused


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the item's fixtures: a session fixture that starts a server is caught too.
    if item.get_closest_marker("integration") is None:
        _guard.setattr(subprocess.Popen, "__init__", _refuse("a subprocess"))
        _guard.setattr(multiprocessing.process.BaseProcess, "start", _refuse("a process"))
        _guard.setattr(socket.socket, "listen", _refuse("a listening socket (a server)"))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _guard.undo()


@pytest.fixture(scope="session")
def sim_url() -> Iterator[str]:
    """The built-in server with a fast timing model: ~5 ms to the first token, then 2 ms a token,
    exactly max_tokens of them (the server ignores EOS whatever a request asks)."""
    with start_sim_server("--step-ms", "2", "--prefill-token-ms", "0.2", "--ignore-eos") as base_url:
        yield base_url
