"""Self-checks for the test servers (nginx, fault server, llama.cpp server), without netbench.

Each check talks to a server with the stdlib only, so a failure here points at the fixture,
not at the client under test.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.servers.faults import FaultServer, run_fault_server
from tests.servers.nginx import NginxServer, run_nginx
from tests.servers.slm import SlmServer

pytestmark = pytest.mark.integration

IO_TIMEOUT_S = 5.0
COMPLETION_BODY = json.dumps({"model": "fault-model", "prompt": "hi", "max_tokens": 4,
                              "stream": True})
CHAT_BODY = json.dumps({"model": "fault-model", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 4, "stream": True})


def _sse_data(body: bytes) -> list[str]:
    """The `data:` payloads of an SSE body, in order (LF or CRLF line endings)."""
    return [
        line[len(b"data: "):].decode()
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n")
        for line in event.split(b"\n")
        if line.startswith(b"data: ")
    ]


def _tokens(payloads: list[str]) -> list[str]:
    """Token texts of completions or chat chunks; role-only chat chunks carry none."""
    tokens = []
    for payload in payloads:
        if payload == "[DONE]":
            continue
        for choice in json.loads(payload)["choices"]:
            text = choice.get("text") or choice.get("delta", {}).get("content")
            if text:
                tokens.append(text)
    return tokens


def _raw_request(port: int, path: str, body: str = COMPLETION_BODY) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    data = body.encode()
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )
    return sock


def _recv_until_error(sock: socket.socket) -> tuple[bytes, BaseException | None]:
    """Read until EOF or an error; return what arrived and the error (None on clean EOF)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            return received, exc
        if not chunk:
            return received, None
        received += chunk


def _process_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 5 (pgrp) follows the parenthesised command name, which may contain spaces.
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(entry.name))
    return members


# -- nginx ---------------------------------------------------------------------------


def test_nginx_http_ok_and_keepalive(nginx_server: NginxServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", nginx_server.http_port, timeout=IO_TIMEOUT_S)
    local_ports = []
    for path in ("/", "/null", "/null"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"ok\n")
        assert conn.sock is not None
        local_ports.append(conn.sock.getsockname()[1])
    conn.close()
    assert len(set(local_ports)) == 1, "nginx closed the keep-alive connection"


def test_nginx_redirects_and_echo_auth(nginx_server: NginxServer) -> None:
    port = nginx_server.http_port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT_S)
    conn.request("GET", "/redirect")
    response = conn.getresponse()
    response.read()
    assert response.status == 302
    assert response.getheader("Location") == f"http://127.0.0.1:{port}/null"
    conn.request("GET", "/redirect-other")
    response = conn.getresponse()
    response.read()
    assert response.status == 302
    assert response.getheader("Location") == f"http://localhost:{port}/null"
    conn.request("GET", "/echo-auth", headers={"Authorization": "Bearer sk-test"})
    assert conn.getresponse().read() == b"Bearer sk-test"
    conn.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_nginx_https_verifies_with_ca(nginx_server: NginxServer, host: str) -> None:
    context = ssl.create_default_context(cafile=str(nginx_server.cacert_path))
    conn = http.client.HTTPSConnection(host, nginx_server.https_port, context=context,
                                       timeout=IO_TIMEOUT_S)
    conn.request("GET", "/null")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok\n")
    conn.close()


def test_nginx_https_fails_without_ca(nginx_server: NginxServer) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", nginx_server.https_port,
                                       context=ssl.create_default_context(),
                                       timeout=IO_TIMEOUT_S)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/null")
    conn.close()


@pytest.mark.parametrize(("port_field", "expected"), [("h2_port", "h2"), ("https_port", "http/1.1")])
def test_nginx_alpn(nginx_server: NginxServer, port_field: str, expected: str) -> None:
    context = ssl.create_default_context(cafile=str(nginx_server.cacert_path))
    context.set_alpn_protocols(["h2", "http/1.1"])
    port = getattr(nginx_server, port_field)
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == expected


def test_nginx_stops_without_leftovers() -> None:
    with run_nginx() as server:
        pgid = server.pid
        assert len(_process_group_members(pgid)) == 2  # master + 1 worker
        # An idle keep-alive client must not hold up the shutdown.
        idle = socket.create_connection(("127.0.0.1", server.http_port), timeout=IO_TIMEOUT_S)
        started = time.monotonic()
    elapsed_s = time.monotonic() - started
    idle.close()
    assert _process_group_members(pgid) == []
    assert elapsed_s < 3.0


# -- fault server --------------------------------------------------------------------


def test_fault_models_answer_under_every_prefix(fault_server: FaultServer) -> None:
    from tests.servers.faults import FAULTS, MODEL_ID

    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    paths = ["/v1/models"] + [f"/{fault}/v1/models" for fault in FAULTS]
    for path in paths:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200, path
        assert json.loads(response.read())["data"][0]["id"] == MODEL_ID
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()
    assert fault_server.connections == 1
    assert fault_server.requests == {**{path: 1 for path in paths}, "/health": 1}


@pytest.mark.parametrize(("endpoint", "body"), [("completions", COMPLETION_BODY),
                                                 ("chat/completions", CHAT_BODY)])
def test_fault_ok_stream_and_keepalive(fault_server: FaultServer, endpoint: str, body: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    for _ in range(2):
        conn.request("POST", f"/ok/v1/{endpoint}", body=body)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.getheader("Content-Type").startswith("text/event-stream")
        payloads = _sse_data(response.read())
        assert payloads[-1] == "[DONE]"
        assert _tokens(payloads) == [" Hello", " from", " the", " faults"]
    conn.close()
    assert fault_server.connections == 1
    assert fault_server.request_count(f"/ok/v1/{endpoint}") == 2


def test_fault_ok_non_streaming(fault_server: FaultServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    conn.request("POST", "/ok/v1/completions", body=json.dumps({"prompt": "hi", "stream": False}))
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["choices"][0]["text"] == " Hello from the faults"
    conn.close()


def test_fault_reset_before_headers(fault_server: FaultServer) -> None:
    with _raw_request(fault_server.port, "/reset-before-headers/v1/completions") as sock:
        received, error = _recv_until_error(sock)
    assert received == b""
    assert isinstance(error, ConnectionResetError)
    assert fault_server.request_count("/reset-before-headers/v1/completions") == 1


def test_fault_reset_mid_stream(fault_server: FaultServer) -> None:
    with _raw_request(fault_server.port, "/reset-mid-stream/v1/completions") as sock:
        received, error = _recv_until_error(sock)
    assert isinstance(error, ConnectionResetError)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert _tokens(_sse_data(received)) == [" Hello", " from"]


def test_fault_stall_times_out_and_stops_promptly() -> None:
    with run_fault_server() as server:
        sock = _raw_request(server.port, "/stall/v1/completions")
        sock.settimeout(0.3)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(65536)
        started = time.monotonic()
    elapsed_s = time.monotonic() - started
    sock.settimeout(IO_TIMEOUT_S)
    _, error = _recv_until_error(sock)
    sock.close()
    assert elapsed_s < 1.0
    assert error is None or isinstance(error, ConnectionResetError)


@pytest.mark.parametrize(("fault", "status"), [("http429", 429), ("http500", 500)])
def test_fault_http_errors(fault_server: FaultServer, fault: str, status: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    for _ in range(2):
        conn.request("POST", f"/{fault}/v1/chat/completions", body=CHAT_BODY)
        response = conn.getresponse()
        body = response.read()
        assert response.status == status
        assert int(response.getheader("Content-Length")) == len(body)
        assert "message" in json.loads(body)["error"]
    conn.close()
    assert fault_server.connections == 1


def test_fault_bad_json(fault_server: FaultServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    conn.request("POST", "/bad-json/v1/completions", body=COMPLETION_BODY)
    payloads = _sse_data(conn.getresponse().read())
    conn.close()
    assert len(payloads) == 3
    json.loads(payloads[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(payloads[1])
    assert payloads[2] == "[DONE]"


def test_fault_no_done(fault_server: FaultServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    conn.request("POST", "/no-done/v1/chat/completions", body=CHAT_BODY)
    payloads = _sse_data(conn.getresponse().read())  # a complete chunked body: no error
    assert "[DONE]" not in payloads
    assert len(_tokens(payloads)) == 4
    conn.request("GET", "/no-done/v1/models")
    assert conn.getresponse().status == 200
    conn.close()
    assert fault_server.connections == 1


def test_fault_truncated_chunked(fault_server: FaultServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=IO_TIMEOUT_S)
    conn.request("POST", "/truncated-chunked/v1/completions", body=COMPLETION_BODY)
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead):
        response.read()
    conn.close()


def test_fault_trickle(fault_server: FaultServer) -> None:
    started = time.monotonic()
    with _raw_request(fault_server.port, "/trickle/v1/chat/completions", CHAT_BODY) as sock:
        reads = 0
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "connection closed before the stream ended"
            received += chunk
            reads += 1
    elapsed_s = time.monotonic() - started
    head, _, chunked = received.partition(b"\r\n\r\n")
    body = b""
    while True:  # de-chunk by hand: the point is the exact bytes that arrived
        size_line, _, chunked = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += chunked[:size]
        chunked = chunked[size + 2:]
    payloads = _sse_data(body)
    assert payloads[-1] == "[DONE]"
    assert len(_tokens(payloads)) == 4
    assert reads > 50, "the body arrived in too few pieces to be a trickle"
    # About 1 s on an idle machine; the margin absorbs a loaded CI box, not a slower design.
    assert elapsed_s < 3.0


def test_refused_url(refused_url: str) -> None:
    port = int(refused_url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)


# -- llama.cpp server (llama-server) ----------------------------------------------------


@pytest.mark.slm
def test_slm_serves_health_models_tokenize_metrics_and_a_chat_stream(slm_server: SlmServer) -> None:
    assert os.access(slm_server.server_path, os.X_OK) and os.path.exists(slm_server.model_path)
    conn = http.client.HTTPConnection("127.0.0.1", slm_server.port, timeout=60)
    conn.request("GET", "/health")
    assert json.loads(conn.getresponse().read()) == {"status": "ok"}
    conn.request("GET", "/v1/models")
    assert json.loads(conn.getresponse().read())["data"][0]["id"] == slm_server.model_id
    conn.request("POST", "/tokenize", body=json.dumps({"content": "1, 2, 3"}))
    assert len(json.loads(conn.getresponse().read())["tokens"]) == 7  # "1" "," " " "2" "," " " "3"
    conn.request("GET", "/metrics")  # --metrics
    assert b"llamacpp:tokens_predicted_total" in conn.getresponse().read()
    body = json.dumps({"model": slm_server.model_id, "max_tokens": 8, "stream": True,
                       "messages": [{"role": "user", "content": "Say hello."}]})
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    payloads = _sse_data(response.read())
    conn.close()
    assert payloads[-1] == "[DONE]"
    assert len(_tokens(payloads)) >= 1
    assert "timings" in json.loads(payloads[-2])  # llama.cpp's own timings on the last event
