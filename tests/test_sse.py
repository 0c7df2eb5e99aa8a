"""SSE parsing across arbitrary chunk splits, and what counts as a token."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

import netbench.sse
from netbench.sse import MAX_EVENT_BYTES, Event, EventKind, SSEParser, interpret

BOM = b"\xef\xbb\xbf"


def _stream(payloads: list[bytes], newline: bytes) -> bytes:
    out = b": keep-alive comment" + newline + newline
    for payload in payloads:
        out += b"data: " + payload + newline + newline
    return out


def _feed_all(chunks: list[bytes]) -> list[bytes]:
    """The data of every unnamed event, in order (named events fail the test)."""
    parser = SSEParser()
    events: list[bytes] = []
    for chunk in chunks:
        for event_type, data in parser.feed(chunk):
            assert event_type == b"", event_type
            events.append(data)
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
       newline=st.sampled_from([b"\n", b"\r\n", b"\r"]), bom=st.booleans())
def test_any_chunking_yields_the_same_events(payloads, cuts, newline, bom):
    stream = (BOM if bom else b"") + _stream(payloads, newline) + b"data: [DONE]" + newline + newline
    assert _feed_all(_split(stream, cuts)) == [*payloads, b"[DONE]"]


def test_one_byte_at_a_time_with_crlf():
    stream = b'data: {"a":1}\r\n\r\ndata: [DONE]\r\n\r\n'
    assert _feed_all([bytes([b]) for b in stream]) == [b'{"a":1}', b"[DONE]"]


def test_multi_line_data_is_joined_and_fields_without_data_are_not_events():
    stream = b"event: ping\nid: 3\n\ndata: a\ndata: b\n\ndata:c\n\ndata\n\n"
    assert _feed_all([stream]) == [b"a\nb", b"c", b""]


def test_a_named_event_carries_its_type_until_the_blank_line():
    parser = SSEParser()
    events = parser.feed(b"event: error\ndata: {\"message\": \"x\"}\n\ndata: [DONE]\n\n")
    assert events == [(b"error", b'{"message": "x"}'), (b"", b"[DONE]")]


def test_a_bom_is_ignored_only_at_the_start_even_split_across_chunks():
    assert _feed_all([BOM[:1], BOM[1:2], BOM[2:] + b"data: a\n\n"]) == [b"a"]
    # a BOM after the first bytes is no BOM: that line is not a data line any more
    assert _feed_all([b"data: a\n\n" + BOM + b"data: b\n\n"]) == [b"a"]


def test_a_line_beyond_the_bound_stops_the_parser():
    parser = SSEParser()
    assert parser.feed(b"data: " + b"x" * (MAX_EVENT_BYTES + 1)) == []
    assert parser.overflowed
    assert parser.feed(b"\n\ndata: [DONE]\n\n") == []


def test_an_incomplete_event_is_held_back():
    parser = SSEParser()
    assert parser.feed(b"data: [DO") == []
    assert parser.feed(b"NE]\n") == []
    assert parser.feed(b"\n") == [(b"", b"[DONE]")]


def _chat(*deltas: dict, **extra: object) -> bytes:
    """A chat chunk with one choice per delta."""
    choices = [{"index": index, "delta": delta, "finish_reason": None} for index, delta in enumerate(deltas)]
    return json.dumps({"choices": choices, **extra}).encode()


def _completion(text: object, **extra: object) -> bytes:
    return json.dumps({"choices": [{"index": 0, "text": text}], **extra}).encode()


def test_role_only_and_empty_deltas_are_not_tokens():
    assert interpret(_chat({"role": "assistant", "content": ""})).kind is EventKind.OTHER
    assert interpret(_chat({"role": "assistant", "content": None})).kind is EventKind.OTHER  # llama.cpp's role chunk
    assert interpret(_chat({"role": "assistant"})).kind is EventKind.OTHER
    assert interpret(_chat({})).kind is EventKind.OTHER
    assert interpret(_completion("")).kind is EventKind.OTHER
    assert interpret(json.dumps({"choices": []}).encode()).kind is EventKind.OTHER


def test_every_field_a_server_puts_tokens_in_is_a_token_and_only_content_is_content():
    cases = {
        _completion(" the"): True,
        _chat({"content": "Hi"}): True,
        _chat({"reasoning_content": "think"}): False,
        _chat({"reasoning": "think"}): False,
        _chat({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}): False,
        _chat({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get"}}]}): False,
        _chat({"reasoning": "", "content": "x"}): True,
    }
    for data, content in cases.items():
        event = interpret(data)
        assert (event.kind, event.content) == (EventKind.TOKEN, content), data
    assert interpret(_chat({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]})).kind is EventKind.OTHER


def test_usage_done_and_server_stamps():
    usage = interpret(json.dumps({"choices": [], "usage": {"completion_tokens": 7, "prompt_tokens": 12}}).encode())
    assert (usage.kind, usage.usage_completion_tokens, usage.usage_prompt_tokens) == (EventKind.OTHER, 7, 12)
    continuous = interpret(_chat({"content": "a b"}, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}))
    assert (continuous.kind, continuous.usage_completion_tokens) == (EventKind.TOKEN, 2)
    assert interpret(b"[DONE]").kind is EventKind.DONE
    stamped = interpret(_completion("x", netbench_sent_ns=123))
    assert (stamped.kind, stamped.sent_ns) == (EventKind.TOKEN, 123)


def test_errors_inside_the_stream_carry_the_servers_message():
    vllm = json.dumps({"error": {"message": "engine died", "type": "InternalServerError", "param": None, "code": 500}})
    cases = [
        (vllm.encode(), b"", "engine died"),
        (json.dumps({"object": "error", "message": "bad things", "type": "BadRequestError"}).encode(), b"", "bad things"),
        (json.dumps({"error": "overloaded"}).encode(), b"", "overloaded"),
        (b'{"message": "typed"}', b"error", "typed"),
        (b"not json at all", b"error", "not json at all"),
    ]
    for data, event_type, message in cases:
        event = interpret(data, event_type)
        assert (event.kind, event.message) == (EventKind.ERROR, message), data
    assert interpret(_completion("x", error=None)).kind is EventKind.TOKEN


def test_every_wrong_shape_is_malformed_and_says_why():
    deep_list = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    cases = {
        b"{not json": "not JSON",
        b"[1, 2]": "not a JSON object",
        b"42": "not a JSON object",
        deep_list: "nested too deeply",
        deep_object: "nested too deeply",
        json.dumps({"choices": 5}).encode(): "choices is not a list",
        json.dumps({"choices": [5]}).encode(): "a choice is not an object",
        json.dumps({"choices": [{"delta": "x"}]}).encode(): "delta is not an object",
        json.dumps({"choices": [{"text": 3}]}).encode(): "text is not a string",
        json.dumps({"choices": [{"delta": {"tool_calls": {"a": 1}}}]}).encode(): "delta.tool_calls is not a list",
        json.dumps({"choices": [], "usage": {"completion_tokens": "seven"}}).encode(): "usage.completion_tokens is not a token count",
        json.dumps({"choices": [], "usage": {"completion_tokens": 2**40}}).encode(): "usage.completion_tokens is not a token count",
        json.dumps({"choices": [], "usage": {"completion_tokens": -1}}).encode(): "usage.completion_tokens is not a token count",
        json.dumps({"choices": [], "usage": {"completion_tokens": True}}).encode(): "usage.completion_tokens is not a token count",
        json.dumps({"choices": [], "usage": [1]}).encode(): "usage is not an object",
        json.dumps({"choices": [], "netbench_sent_ns": "now"}).encode(): "netbench_sent_ns is not a monotonic stamp",
    }
    for data, why in cases.items():
        event = interpret(data)
        assert (event.kind, event.message) == (EventKind.MALFORMED, why), data[:80]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["choices", "delta", "text", "content", "reasoning", "reasoning_content", "tool_calls",
                         "function", "name", "arguments", "usage", "completion_tokens", "prompt_tokens", "error",
                         "object", "message", "netbench_sent_ns", "id"]) | st.text(max_size=5),
        children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(value=json_values, event_type=st.sampled_from([b"", b"error", b"message"]))
def test_interpret_is_total_on_any_json(value, event_type):
    event = interpret(json.dumps(value).encode(), event_type)
    assert isinstance(event.kind, EventKind)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), event_type=st.binary(max_size=8))
def test_interpret_is_total_on_any_bytes(data, event_type):
    assert isinstance(interpret(data, event_type).kind, EventKind)


# -- exact values, one per behaviour mutation testing found unguarded (make mutation) ----------


def _events(*chunks: bytes) -> list[tuple[bytes, bytes]]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_a_cr_ending_one_chunk_and_the_lf_starting_the_next_are_one_line_end():
    # a second LF would be a blank line: "a" and "b" would become two events; and the CR only
    # ever swallows the one LF right after it, not the next chunk's
    assert _events(b"data: a\r", b"\ndata: b\n\n", b"data: c\n", b"\n") == [(b"", b"a\nb"), (b"", b"c")]
    assert _events(b"data: a\r\ndata: b\r\n\r\n") == [(b"", b"a\nb")]


def test_a_bom_after_the_start_is_data_not_ignored():
    # the BOM glued to a field name makes an unknown field: the second event never forms
    assert _events(b"data: a\n\n", BOM + b"data: b\n\n", b"\xef") == [(b"", b"a")]
    assert _events(b"data: a\n\n", b"\xef\xbb", b"\xbf\n") == [(b"", b"a")]


def test_an_event_type_without_the_space_keeps_its_first_letter():
    assert _events(b"event:error\ndata: x\n\n", b"event:  two\ndata:y\n\n") == [(b"error", b"x"), (b" two", b"y")]


def test_a_line_of_exactly_the_bound_is_still_parsed():
    line = b"data: " + b"x" * (MAX_EVENT_BYTES - 6)
    parser = SSEParser()
    assert parser.feed(line) == [] and not parser.overflowed
    assert parser.feed(b"\n\n") == [(b"", line[6:])]


def test_any_choice_with_a_token_makes_the_event_a_token():
    assert interpret(_chat({"content": "a"}, {})) == Event(EventKind.TOKEN, content=True)
    assert interpret(_chat({"reasoning": "r"}, {})) == Event(EventKind.TOKEN, content=False)
    assert interpret(json.dumps({"choices": [{"text": "a"}, {"text": ""}]}).encode()) == Event(EventKind.TOKEN, content=True)
    # text and a null delta.content in one choice: the text is content
    assert interpret(json.dumps({"choices": [{"text": "a", "delta": {"content": None}}]}).encode()).content is True


def test_a_tool_call_with_only_an_id_opens_a_call_and_is_a_token():
    assert interpret(_chat({"tool_calls": [{"id": "call_1", "type": "function"}]})).kind is EventKind.TOKEN
    assert interpret(_chat({"tool_calls": [{"index": 0, "type": "function"}]})).kind is EventKind.OTHER


def test_each_wrong_field_is_named_in_the_message():
    cases = {
        _chat({"tool_calls": [5]}): "delta.tool_calls holds a non-object",
        _chat({"tool_calls": [{"function": "f"}]}): "delta.tool_calls[].function is not an object",
        _chat({"tool_calls": [{"function": {"name": 1}}]}): "tool call name is not a string",
        _chat({"tool_calls": [{"function": {"arguments": 1}}]}): "tool call arguments is not a string",
        _chat({"content": 1}): "delta.content is not a string",
        _chat({"reasoning_content": 1}): "delta.reasoning_content is not a string",
        _chat({"reasoning": 1}): "delta.reasoning is not a string",
        _chat(usage={"prompt_tokens": "3"}): "usage.prompt_tokens is not a token count",
        _chat(usage={"completion_tokens": 2**31}): "usage.completion_tokens is not a token count",
        _chat(netbench_sent_ns=-2): "netbench_sent_ns is not a monotonic stamp",
    }
    for data, why in cases.items():
        assert interpret(data) == Event(EventKind.MALFORMED, message=why), data


def test_every_field_of_a_full_event_is_its_own():
    # 1 is each field's first value that is neither a default (-1) nor a count's 0
    assert interpret(_chat({"reasoning": "r"}, usage={"completion_tokens": 1})) == Event(EventKind.TOKEN, False, 1, -1)
    assert interpret(_chat({"content": "c"}, usage={"prompt_tokens": 1})) == Event(EventKind.TOKEN, True, -1, 1)
    assert interpret(_chat({}, netbench_sent_ns=1)) == Event(EventKind.OTHER, sent_ns=1)
    assert interpret(_chat({}, usage={"completion_tokens": 0, "prompt_tokens": 2**31 - 1})) == Event(EventKind.OTHER, False, 0, 2**31 - 1)
    assert interpret(_chat({}, netbench_sent_ns=2**63 - 1)).sent_ns == 2**63 - 1
    assert interpret(_chat({}, netbench_sent_ns=-1, usage=None)) == Event(EventKind.OTHER)
    assert interpret(_chat({"content": "c"}, usage={})) == Event(EventKind.TOKEN, content=True)
    timings = {"prompt_ms": 1.5, "predicted_ms": 2.0}
    assert interpret(_chat({}, timings=timings)) == Event(EventKind.OTHER, timings=timings)
    assert interpret(_chat({"content": "c"}, timings=[1])) == Event(EventKind.TOKEN, content=True)


def test_an_error_objects_words_are_its_message_then_detail_then_type():
    cases = [
        ({"detail": "d", "type": "t"}, "d"),
        ({"type": "t", "code": 1}, "t"),
        ({"code": 503}, '{"code": 503}'),
    ]
    for error, message in cases:
        assert interpret(json.dumps({"error": error}).encode()) == Event(EventKind.ERROR, message=message)
    assert interpret(b'{"error": "", "choices": []}') == Event(EventKind.OTHER)
    # an error event whose data is not UTF-8 still says what it can
    assert interpret(b"\xffengine\xfe", b"error") == Event(EventKind.ERROR, message="\ufffdengine\ufffd")


def test_an_object_too_deep_to_walk_after_it_parsed_is_malformed(monkeypatch):
    """json.loads may accept nesting that walking the object then overflows (an error object
    with no message is re-encoded for its words, one frame deeper): that event is malformed
    too. Where the stack runs out depends on the caller, so the overflow is forced here."""

    def overflow(body):
        raise RecursionError

    monkeypatch.setattr(netbench.sse, "_interpret_object", overflow)
    assert interpret(b'{"error": {"a": {"b": 1}}}') == Event(EventKind.MALFORMED, message="nested too deeply")
