"""Start the built-in simulated server (`netbench serve`) as a subprocess on a free loopback port.

    from tests.servers.sim import start_sim_server

    with start_sim_server("--step-ms", "10", "--ignore-eos") as base_url:
        httpx.get(f"{base_url}/health")

`host=` and `netns=` run it inside a network namespace (the delay line's server side):
`start_sim_server(host=line.server.v4, netns=line.server.namespace)`.
The server binds port 0 and announces `netbench serve: listening on URL`; leaving the block
sends SIGTERM and asserts the server exited 0 (unless the block raised).
"""

from __future__ import annotations

import contextlib
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO

from tests.netem.netns import exec_prefix
from tests.servers.ports import LOOPBACK

SERVE_COMMAND = (sys.executable, "-c", "from netbench.cli import main; main()", "serve")
READY_LINE = re.compile(r"^netbench serve: listening on (http://\S+)$")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def spawn_sim_server(*extra_args: str, stderr: IO[bytes] | None = None, host: str = LOOPBACK,
                     netns: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start `netbench serve --host HOST --port 0 *extra_args` (inside `netns` when given);
    return it and its base URL."""
    prefix = [] if netns is None else exec_prefix(netns)
    proc = subprocess.Popen(
        [*prefix, *SERVE_COMMAND, "--host", host, "--port", "0", *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        return proc, _read_base_url(proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def stop_sim_server(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    """Send `signum`, wait for the exit and return its status (SIGKILL after a timeout)."""
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    return proc.returncode


@contextlib.contextmanager
def start_sim_server(*extra_args: str, host: str = LOOPBACK, netns: str | None = None) -> Iterator[str]:
    """Run a simulated server for the block; yield its base URL, e.g. `http://127.0.0.1:41234`."""
    with tempfile.TemporaryFile() as stderr:
        proc, base_url = spawn_sim_server(*extra_args, stderr=stderr, host=host, netns=netns)
        try:
            yield base_url
        finally:
            returncode = stop_sim_server(proc)
        stderr.seek(0)
        assert returncode == 0, f"netbench serve exited {returncode}; stderr:\n{stderr.read().decode(errors='replace')}"


def _read_base_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while (remaining_s := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([proc.stdout], [], [], remaining_s)
        if not readable:
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"netbench serve exited with {proc.wait()} before listening")
        match = READY_LINE.match(line.strip())
        if match:
            return match.group(1)
    raise TimeoutError(f"netbench serve did not announce itself within {START_TIMEOUT_S} s")
