"""SSE parsing across arbitrary chunk splits, and what counts as a token."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from netbench.sse import EventKind, SSEParser, interpret


def _stream(payloads: list[bytes], newline: bytes) -> bytes:
    out = b": keep-alive comment" + newline + newline
    for payload in payloads:
        out += b"data: " + payload + newline + newline
    return out


def _feed_all(chunks: list[bytes]) -> list[bytes]:
    parser = SSEParser()
    events: list[bytes] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return pieces


payload_strategy = st.lists(
    st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30).map(
        lambda s: json.dumps({"choices": [{"text": s}]}).encode()
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(payloads=payload_strategy, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
       newline=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_any_chunking_yields_the_same_events(payloads, cuts, newline):
    stream = _stream(payloads, newline) + b"data: [DONE]" + newline + newline
    assert _feed_all(_split(stream, cuts)) == [*payloads, b"[DONE]"]


def test_one_byte_at_a_time_with_crlf():
    stream = b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert _feed_all([bytes([b]) for b in stream]) == [b'{"a":1}', b"[DONE]"]


def test_multi_line_data_is_joined_and_fields_without_data_are_not_events():
    stream = b"event: ping\nid: 3\n\ndata: a\ndata: b\n\ndata:c\n\n"
    assert _feed_all([stream]) == [b"a\nb", b"c"]


def test_an_incomplete_event_is_held_back():
    parser = SSEParser()
    assert parser.feed(b"data: [DO") == []
    assert parser.feed(b"NE]\n") == []
    assert parser.feed(b"\n") == [b"[DONE]"]


def _chat(delta: dict) -> bytes:
    return json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode()


def test_role_only_and_empty_deltas_are_not_tokens():
    assert interpret(_chat({"role": "assistant", "content": ""})).kind is EventKind.OTHER
    assert interpret(_chat({"role": "assistant"})).kind is EventKind.OTHER
    assert interpret(_chat({})).kind is EventKind.OTHER
    assert interpret(_chat({"content": "Hi"})).kind is EventKind.TOKEN
    assert interpret(json.dumps({"choices": [{"text": ""}]}).encode()).kind is EventKind.OTHER
    assert interpret(json.dumps({"choices": [{"text": " the"}]}).encode()).kind is EventKind.TOKEN


def test_usage_done_malformed_and_server_stamps():
    usage = interpret(json.dumps({"choices": [], "usage": {"completion_tokens": 7}}).encode())
    assert (usage.kind, usage.usage_completion_tokens) == (EventKind.OTHER, 7)
    assert interpret(b"[DONE]").kind is EventKind.DONE
    assert interpret(b"{not json").kind is EventKind.MALFORMED
    assert interpret(b"[1, 2]").kind is EventKind.MALFORMED
    stamped = interpret(json.dumps({"choices": [{"text": "x"}], "netbench_sent_ns": 123}).encode())
    assert (stamped.kind, stamped.sent_ns) == (EventKind.TOKEN, 123)
