"""Helpers shared by the test servers: free and refused loopback ports, readiness waits, stopping,
whether a process still runs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.netem.netns import socket_in

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing was bound to a moment ago.

    The port is released before returning, so a server started right after can bind it;
    callers that race other processes retry with a new port on EADDRINUSE.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """Yield a port on 127.0.0.1 where every connect is refused, for as long as the block runs.

    The port stays bound but never listens: the kernel answers SYNs with RST, and no other
    process can start listening there meanwhile (a merely "free" port could be taken).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


def port_accepts(port: int, host: str = LOOPBACK, timeout_s: float = 0.5,
                 netns: str | None = None) -> bool:
    """True when a TCP connect to host:port succeeds (from inside network namespace `netns`)."""
    if netns is None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket_in(netns, family) as sock:
            sock.settimeout(timeout_s)
            sock.connect((host, port))
            return True
    except OSError:
        return False


def wait_for_ports(
    ports: list[int],
    deadline_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    host: str = LOOPBACK,
    netns: str | None = None,
) -> None:
    """Wait until every port accepts connections (probed from inside `netns` when given).

    Raises TimeoutError after deadline_s seconds, or RuntimeError as soon as `proc`
    exits (a server that died will never listen, so waiting out the deadline is pointless).
    """
    end = time.monotonic() + deadline_s
    pending = list(ports)
    while pending:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening")
        pending = [port for port in pending if not port_accepts(port, host, netns=netns)]
        if not pending:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"ports {pending} on {host} not accepting after {deadline_s} s")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped by whoever adopted it, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_process_group(proc: subprocess.Popen[bytes], first_signal: int, deadline_s: float) -> None:
    """Stop a server started with start_new_session=True, children included.

    Sends first_signal (the server's graceful stop) to the whole process group, waits up to
    deadline_s, then SIGKILLs the group: killing only the leader would orphan nginx workers.
    """
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        proc.wait()
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, first_signal)
    try:
        proc.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while children linger; the group kill catches both.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=deadline_s)
