"""A private nginx master on free loopback ports (plain HTTP, HTTPS, HTTPS+HTTP/2) for tests.

Requests to `/logged` (and only those) are written to `access_log_path`, one line each:
`$arg_tag $connection $connection_requests $server_protocol $ssl_protocol $ssl_session_reused`,
so tests can see which connection, protocol and TLS session ("r": resumed) served each request
without slowing down the other locations.

Each run writes its own config, certificates (a trustme CA and a leaf for 127.0.0.1,
localhost and the listen host), pid file, logs and temp dirs into a temporary directory and runs
`nginx -g 'daemon off;'` in the foreground; the system nginx service is never touched.
`run_nginx(host=line.server.v4, netns=line.server.namespace)` runs it inside the delay line's
server namespace instead of on loopback.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.netem.netns import exec_prefix
from tests.servers.ports import LOOPBACK, free_port, stop_process_group, wait_for_ports

__all__ = ["nginx_server"]

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure_nginx.sh"

START_DEADLINE_S = 10.0
STOP_DEADLINE_S = 5.0
# Ports are picked before nginx binds them, so another process can win the race; retry then.
START_ATTEMPTS = 3


@dataclass(frozen=True)
class NginxServer:
    """Where a running test nginx listens. URLs have no trailing slash."""

    http_url: str
    https_url: str
    h2_url: str
    cacert_path: Path
    access_log_path: Path
    http_port: int
    https_port: int
    h2_port: int
    version: str
    prefix_dir: Path
    pid: int


def ensure_nginx() -> str:
    """Install nginx if missing and return the path of the binary."""
    subprocess.run(["bash", str(ENSURE_SCRIPT)], check=True, timeout=600)
    binary = shutil.which("nginx")
    if binary is None:
        raise RuntimeError(f"{ENSURE_SCRIPT} ran but nginx is not on PATH")
    return binary


def nginx_version(binary: str) -> str:
    """The version string from `nginx -v` (written to stderr), e.g. "1.22.1"."""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=True)
    match = re.search(r"nginx/(\d+\.\d+\.\d+)", out.stderr + out.stdout)
    if match is None:
        raise RuntimeError(f"cannot parse nginx version from {out.stderr!r}")
    return match.group(1)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _locations() -> str:
    # $scheme/$server_port keep /redirect-other on the same server, only the host name changes.
    return """
        location = / { return 200 "ok\\n"; }
        location = /null { return 200 "ok\\n"; }
        location = /logged { return 200 "ok\\n"; }
        location = /redirect { return 302 /null; }
        location = /redirect-other { return 302 $scheme://localhost:$server_port/null; }
        location = /echo-auth { return 200 "$http_authorization"; }
"""


def _host_literal(host: str) -> str:
    """host as it appears before `:port` in a listen directive or URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


def _config(prefix: Path, ports: tuple[int, int, int], version: str, cert: Path, key: Path,
            host: str) -> str:
    http_port, https_port, h2_port = ports
    listen_host = _host_literal(host)
    # `listen ... http2` was deprecated in 1.25.1 in favour of the `http2 on;` directive.
    if _version_tuple(version) >= (1, 25, 1):
        h2_listen, h2_directive = f"listen {listen_host}:{h2_port} ssl;", "http2 on;"
    else:
        h2_listen, h2_directive = f"listen {listen_host}:{h2_port} ssl http2;", ""
    # A session cache, as most deployments have: a client's later connections resume.
    tls = f"""
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_session_cache shared:netbench:1m;"""
    locations = _locations()
    temp_paths = "\n".join(
        f"    {name}_temp_path {prefix / 'temp' / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
# A SIGQUIT must not wait for clients that keep connections open.
worker_shutdown_timeout 2s;
events {{ worker_connections 4096; }}
http {{
    log_format netbench '$arg_tag $connection $connection_requests $server_protocol $ssl_protocol $ssl_session_reused';
    map $uri $netbench_logged {{ /logged 1; default 0; }}
    access_log {prefix / 'access.log'} netbench if=$netbench_logged;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{temp_paths}
    server {{
        listen {listen_host}:{http_port};
{locations}
    }}
    server {{
        listen {listen_host}:{https_port} ssl;
{tls}
{locations}
    }}
    server {{
        {h2_listen}
        {h2_directive}
{tls}
{locations}
    }}
}}
"""


def _write_certificates(prefix: Path, host: str) -> tuple[Path, Path, Path]:
    """Write a CA and a leaf for 127.0.0.1, localhost and host; return (ca, cert chain, key)."""
    ca = trustme.CA()
    leaf = ca.issue_cert(*dict.fromkeys(("127.0.0.1", "localhost", host)))
    ca_path, cert_path, key_path = prefix / "ca.pem", prefix / "server.pem", prefix / "server.key"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


def _log_tail(prefix: Path) -> str:
    """The end of nginx's error log and stderr, for start-failure messages."""
    texts = [
        path.read_text(errors="replace")
        for path in (prefix / "error.log", prefix / "stderr.log")
        if path.exists()
    ]
    return "".join(texts)[-2000:]


@contextlib.contextmanager
def run_nginx(host: str = LOOPBACK, netns: str | None = None) -> Iterator[NginxServer]:
    """Start a private nginx on three free ports of host (inside network namespace `netns`
    when given); stop it (no process left) on exit."""
    binary = ensure_nginx()
    version = nginx_version(binary)
    with tempfile.TemporaryDirectory(prefix="netbench-nginx-") as tmp:
        prefix = Path(tmp)
        (prefix / "temp").mkdir()
        ca_path, cert_path, key_path = _write_certificates(prefix, host)
        conf_path = prefix / "nginx.conf"
        prefix_argv = [] if netns is None else exec_prefix(netns)
        url_host = _host_literal(host)
        last_error = ""
        for _ in range(START_ATTEMPTS):
            ports = (free_port(), free_port(), free_port())
            if len(set(ports)) < len(ports):
                continue
            conf_path.write_text(_config(prefix, ports, version, cert_path, key_path, host))
            # -e points the startup error log into the prefix too (nginx opens it before the
            # config is read); stderr goes to a file so a chatty nginx can never block on a pipe.
            with open(prefix / "stderr.log", "wb") as stderr_file:
                proc = subprocess.Popen(
                    [*prefix_argv, binary, "-p", str(prefix), "-c", str(conf_path),
                     "-e", str(prefix / "error.log"), "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr_file,
                    start_new_session=True,
                )
            try:
                wait_for_ports(list(ports), START_DEADLINE_S, proc, host=host, netns=netns)
            except (RuntimeError, TimeoutError) as exc:
                stop_process_group(proc, signal.SIGKILL, STOP_DEADLINE_S)
                last_error = f"{exc}\n{_log_tail(prefix)}"
                if "Address already in use" in last_error:
                    continue
                raise RuntimeError(f"nginx failed to start: {last_error}") from exc
            try:
                http_port, https_port, h2_port = ports
                yield NginxServer(
                    http_url=f"http://{url_host}:{http_port}",
                    https_url=f"https://{url_host}:{https_port}",
                    h2_url=f"https://{url_host}:{h2_port}",
                    cacert_path=ca_path,
                    access_log_path=prefix / "access.log",
                    http_port=http_port,
                    https_port=https_port,
                    h2_port=h2_port,
                    version=version,
                    prefix_dir=prefix,
                    pid=proc.pid,
                )
            finally:
                # SIGQUIT is nginx's graceful shutdown; the group kill follows after the deadline.
                stop_process_group(proc, signal.SIGQUIT, STOP_DEADLINE_S)
            return
        raise RuntimeError(f"nginx failed to start after {START_ATTEMPTS} attempts: {last_error}")


@pytest.fixture(scope="session")
def nginx_server() -> Iterator[NginxServer]:
    """A session-wide private nginx: http_url, https_url (verify with cacert_path), h2_url."""
    with run_nginx() as server:
        yield server
