"""Runs `netbench serve`: binds the socket, runs uvicorn, announces readiness, stops cleanly.

The one line `netbench serve: listening on http://HOST:PORT` goes to stdout (flushed) once the
server accepts connections, so scripts and test fixtures can start it with `--port 0` and read
the port back. SIGINT and SIGTERM shut it down gracefully with exit status 0.
"""

from __future__ import annotations

import signal
import socket
from types import FrameType

import uvicorn

from netbench.sim.app import create_app
from netbench.sim.config import SimConfig

READY_PREFIX = "netbench serve: listening on "
GRACEFUL_SHUTDOWN_S = 5  # in-flight streams get this long to finish


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing the ready line once its sockets listen."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self._ready_line = ready_line

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self._ready_line, flush=True)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (0: a free port), not yet listening."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the simulated model until SIGINT or SIGTERM. Raises OSError if it cannot bind."""
    sock = bind_socket(host, port)
    uvicorn_config = uvicorn.Config(
        create_app(config),
        loop="auto",  # uvloop and httptools when installed, as under vLLM
        http="auto",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _AnnouncingServer(uvicorn_config, READY_PREFIX + base_url(host, sock))
    # uvicorn catches the signal, shuts down gracefully, restores these handlers and raises
    # the signal again; ending there with status 0 (not a signal status) means "stopped cleanly".
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    with sock:
        server.run(sockets=[sock])
