"""Named network namespaces for the delay line: names, create, remove, stale clean-up, sockets.

Names are `nbdl-<owner pid>-<tag>-<side>` (side `c` or `s`), so a later run can tell a
namespace whose owner is dead (a crashed or SIGKILLed run) from one in use by a live test
process, and remove only the former. Removing a namespace first SIGKILLs every process still
inside it, so nothing keeps running in a namespace nobody can see any more.

`socket_in` creates a socket inside a namespace from this process: a short-lived thread joins
the namespace with setns(2) (per thread for network namespaces; Python 3.11 has no os.setns)
and creates the socket there; a socket stays in the namespace it was created in, so any thread
can use it afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

PREFIX = "nbdl-"
NETNS_DIR = Path("/run/netns")
TUN_PATH = Path("/dev/net/tun")
CLONE_NEWNET = 0x40000000
IP_TIMEOUT_S = 10.0
_NAME = re.compile(rf"^{PREFIX}(\d+)-[0-9a-z]+-[cs]$")


def namespace_name(owner_pid: int, tag: str, side: str) -> str:
    return f"{PREFIX}{owner_pid}-{tag}-{side}"


def ip(*args: str, input_text: str | None = None) -> None:
    """Run `ip ARGS`; raise RuntimeError with ip's own message when it fails."""
    result = subprocess.run(["ip", *args], input=input_text, capture_output=True, text=True,
                            timeout=IP_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def exec_prefix(namespace: str) -> list[str]:
    """The argv prefix that runs a command inside the namespace (`ip netns exec` execs it)."""
    return ["ip", "netns", "exec", namespace]


def namespace_pids(namespace: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                            timeout=IP_TIMEOUT_S)
    return [int(word) for word in result.stdout.split()] if result.returncode == 0 else []


def remove_namespace(namespace: str) -> None:
    """SIGKILL every process in the namespace, then delete it; a missing namespace is fine."""
    for pid in namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if (NETNS_DIR / namespace).exists():
        ip("netns", "del", namespace)


def our_namespaces() -> list[str]:
    """Every delay-line namespace on the machine, live or stale."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(name for name in os.listdir(NETNS_DIR) if _NAME.match(name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces() -> list[str]:
    """Remove the namespaces whose owner process is gone; return their names."""
    stale = []
    for name in our_namespaces():
        match = _NAME.match(name)
        if match is not None and not _alive(int(match.group(1))):
            remove_namespace(name)
            stale.append(name)
    return stale


@functools.cache
def unavailable_reason() -> str | None:
    """Why namespaces with TUN devices cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "the delay line needs root (CAP_NET_ADMIN) to create network namespaces"
    if shutil.which("ip") is None:
        return "the delay line needs iproute2's `ip` on PATH"
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR))
    except OSError as error:
        return f"the delay line needs {TUN_PATH}: {error.strerror}"
    probe = namespace_name(os.getpid(), "probe", "c")
    try:
        ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return f"cannot create a network namespace: {error}"
    remove_namespace(probe)
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(namespace: str, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A new socket that lives in the namespace (see the module docstring)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_create() -> None:
        try:
            fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind))
        except BaseException as error:  # re-raised in the caller's thread
            failed.append(error)

    # The thread ends inside the namespace; only this one thread ever changed namespace.
    thread = threading.Thread(target=enter_and_create, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]
