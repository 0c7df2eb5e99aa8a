"""The responses recorded from the real llama-server (tests/data/llama_cpp/, written by the
capture.py there), decoded with the tests' own HTTP/SSE decoder."""

from __future__ import annotations

import json
from pathlib import Path

from tests.http_bytes import raw_responses, sse_events

DATA = Path(__file__).parent / "data" / "llama_cpp"
#: every recorded response, by name; the streamed ones end in "_stream" or "_timings_per_token"
NAMES = sorted(path.stem for path in DATA.glob("*.http"))
STREAMS = [name for name in NAMES if "_stream" in name]
BODIES = [name for name in NAMES if name not in STREAMS]


def recorded(name: str) -> tuple[bytes, bytes]:
    """The header block and the de-chunked body of one recorded response."""
    [(head, body)] = list(raw_responses((DATA / f"{name}.http").read_bytes()))
    return head, body


def events(name: str) -> list[dict]:
    """The decoded JSON events of a recorded stream, [DONE] left out."""
    return [json.loads(event) for event in sse_events(recorded(name)[1]) if event != b"[DONE]"]


def final(name: str) -> dict:
    """The object that holds the request's final timings: the body, or the last stream event."""
    return events(name)[-1] if name in STREAMS else json.loads(recorded(name)[1])


def carries_token(event: dict) -> bool:
    """True for a completions or chat event with text in it (the role-only chunk has none)."""
    return any(c.get("text") or (c.get("delta") or {}).get("content") for c in event.get("choices", []))


def metrics(which: str) -> str:
    """/metrics as scraped just before ("before") or just after ("after") the recorded requests."""
    return (DATA / f"metrics_{which}.txt").read_text()
