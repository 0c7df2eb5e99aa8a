"""What the target supports, asked before the measured run (none of these requests is measured):

- how many prompt tokens it counts for a text, as the run's mode sends it (`find_counter`):
  vLLM's, SGLang's and the built-in server's `POST /tokenize` (`{"model", "prompt"}` or
  `{"model", "messages"}` -> `{"count", "tokens"}`), llama.cpp's `POST /tokenize`
  (`{"content", "add_special"}` -> `{"tokens"}`, completions only: its chat template is not
  applied there), else `usage.prompt_tokens` of a one-token completion of the text;
- which of `workloads.EXACT_OUTPUT_FIELDS` (`ignore_eos`, `min_tokens`) it takes
  (`exact_output_fields`): a server that refuses a field answers 400, and the run then sends
  the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netbench.curl import fetch
from netbench.prompts import Prompt
from netbench.spec import RunSpec
from netbench.workloads import ENDPOINT_PATHS, EXACT_OUTPUT_FIELDS, Request, api_base, completion_body, endpoint_url, request_headers

_TOKENIZE_PATH = "/tokenize"


class ProbeError(RuntimeError):
    """The server answered a probe in a way that cannot be used."""


def _post(spec: RunSpec, url: str, body: dict[str, Any] | bytes) -> tuple[int, Any]:
    """(HTTP status, the JSON body or None) of one POST."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    fetched = fetch(spec, Request(url, "POST", request_headers(spec, True), raw, False))
    try:
        return fetched.status, json.loads(fetched.body)
    except (ValueError, RecursionError):
        return fetched.status, None


@dataclass(frozen=True)
class TokenCounter:
    """Counts the prompt tokens of a text as the run sends it (with BOS, the chat template)."""

    #: how it counts, for the report: "vLLM /tokenize", "llama.cpp /tokenize", "usage"
    method: str
    count: Callable[[str], int]
    #: the tokens of a bare text (no special tokens); None where the method cannot tell
    count_plain: Callable[[str], int] | None
    #: one count is a tokenisation, not a completion: one per word is affordable
    cheap: bool


def _vllm_counter(spec: RunSpec) -> TokenCounter | None:
    url = api_base(spec.url) + _TOKENIZE_PATH
    chat = spec.mode == "chat"

    def ask(body: dict[str, Any]) -> int | None:
        status, answer = _post(spec, url, {"model": spec.model, **body})
        count = answer.get("count") if status == 200 and isinstance(answer, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def prompt_body(text: str) -> dict[str, Any]:
        return {"messages": [{"role": "user", "content": text}]} if chat else {"prompt": text}

    if ask(prompt_body("hello world")) is None:
        return None
    return TokenCounter(
        "vLLM /tokenize",
        lambda text: _known(ask(prompt_body(text)), "/tokenize"),
        lambda text: _known(ask({"prompt": text, "add_special_tokens": False}), "/tokenize"),
        cheap=True,
    )


def _llama_cpp_counter(spec: RunSpec) -> TokenCounter | None:
    url = api_base(spec.url) + _TOKENIZE_PATH

    def ask(text: str, special: bool) -> int | None:
        status, answer = _post(spec, url, {"content": text, "add_special": special})
        tokens = answer.get("tokens") if status == 200 and isinstance(answer, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    if spec.mode == "chat" or not ask("hello world", True):
        return None
    return TokenCounter(
        "llama.cpp /tokenize",
        lambda text: _known(ask(text, True), "/tokenize"),
        lambda text: _known(ask(text, False), "/tokenize"),
        cheap=True,
    )


def _usage_counter(spec: RunSpec) -> TokenCounter | None:
    url = endpoint_url(spec, ENDPOINT_PATHS[spec.mode])

    def ask(text: str) -> int | None:
        body = json.loads(completion_body(spec.replace(stream_usage=False), Prompt(text), 1))
        status, answer = _post(spec, url, {**body, "stream": False})
        usage = answer.get("usage") if status == 200 and isinstance(answer, dict) else None
        count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None

    if ask("hello world") is None:
        return None
    return TokenCounter("usage.prompt_tokens of probe requests", lambda text: _known(ask(text), "a probe request"), None, cheap=False)


def _known(count: int | None, what: str) -> int:
    if count is None:
        raise ProbeError(f"{what} stopped answering with a token count")
    return count


def find_counter(spec: RunSpec) -> TokenCounter | None:
    """The cheapest way this server counts prompt tokens; None when it has none."""
    for make in (_vllm_counter, _llama_cpp_counter, _usage_counter):
        counter = make(spec)
        if counter is not None:
            return counter
    return None


def exact_output_fields(spec: RunSpec) -> tuple[tuple[str, ...], str | None]:
    """The fields of EXACT_OUTPUT_FIELDS the server takes (a one-token probe each way), and a
    note when it refuses some."""
    url = endpoint_url(spec, ENDPOINT_PATHS[spec.mode])
    base = json.loads(completion_body(spec.replace(stream_usage=False), Prompt("hello"), 1))
    fields = list(EXACT_OUTPUT_FIELDS)
    while fields:
        extra: dict[str, Any] = {name: (True if name == "ignore_eos" else 1) for name in fields}
        status, _ = _post(spec, url, {**base, **extra, "stream": False})
        if status != 400:
            break
        fields.pop()  # min_tokens is the rarer one: drop it first
    refused = [name for name in EXACT_OUTPUT_FIELDS if name not in fields]
    note = None
    if refused:
        note = (f"the server refused {' and '.join(refused)} (HTTP 400): answers may end before --output-tokens "
                "(the output lengths received are reported)")
    return tuple(fields), note
