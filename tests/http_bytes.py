"""An independent decoder of raw HTTP/1.1 response bytes and SSE bodies, for tests that check
what a server sent without netbench's own parser (recorded fixtures, relayed connections)."""

from __future__ import annotations

from collections.abc import Iterator


def responses(data: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """The (headers, body) of each HTTP/1.1 response in a connection's bytes; header names are
    lower-cased (a repeated header keeps its last value: use header_lines for all of them)."""
    for head, body in raw_responses(data):
        yield {name.lower(): value for name, value in header_lines(head)}, body


def raw_responses(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (header block, de-chunked body) of each HTTP/1.1 response in a connection's bytes."""
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n\r\n", pos)
        head = data[pos:end]
        headers = {name.lower(): value for name, value in header_lines(head)}
        pos = end + 4
        body = bytearray()
        if headers.get("transfer-encoding") == "chunked":
            while True:
                line_end = data.index(b"\r\n", pos)
                size = int(data[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    pos = data.index(b"\r\n", pos) + 2  # the empty trailer
                    break
                body += data[pos : pos + size]
                pos += size + 2
        elif "content-length" in headers:
            size = int(headers["content-length"])
            body += data[pos : pos + size]
            pos += size
        else:  # delimited by the end of the connection
            body += data[pos:]
            pos = len(data)
        yield head, bytes(body)


def header_lines(head: bytes) -> list[tuple[str, str]]:
    """The (name, value) pairs of a header block, status line excluded, in order."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]


def sse_events(body: bytes) -> list[bytes]:
    """The data of each SSE event in a body (multi-line data joined with newlines)."""
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[len(b"data:") :].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data:
            events.append(b"\n".join(data))
    return events
