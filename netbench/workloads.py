"""What each mode sends: the URL, method, headers and body of its requests, and the
`RequestSource` a worker builds each request from, by the request's run-wide index: its own
prompt (`prompts`, `datasets`) and output length (`lengths`), never a list of n bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from netbench.lengths import Lengths
from netbench.prompts import Prompt, PromptSource
from netbench.spec import RunSpec

HEALTH_PATH = "/health"
MODELS_PATH = "/v1/models"
ENDPOINT_PATHS = {
    "health": HEALTH_PATH,
    "models": MODELS_PATH,
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


@dataclass(frozen=True)
class Request:
    url: str
    method: str
    #: "Name: value" lines, as libcurl takes them
    headers: tuple[str, ...]
    body: bytes | None
    streaming: bool
    #: the prompt tokens it was built to have, and the max_tokens it asks for (-1: not known, none)
    prompt_tokens: int = -1
    output_tokens: int = -1


#: what a pasted endpoint URL may end with (the OpenAI client's paths, below its base URL)
_OPENAI_ENDPOINTS = ("/chat/completions", "/completions", "/models")


def openai_root(url: str) -> str:
    """The OpenAI base URL (what the openai client calls base_url), no query: a pasted endpoint
    (`.../v1/completions`, Azure's `.../deployments/D/chat/completions`) loses its endpoint
    path; a server base URL without `/v1` gains it."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for endpoint in _OPENAI_ENDPOINTS:
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
            break
    else:
        if not path.endswith("/v1"):
            path += "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def api_base(url: str) -> str:
    """The server's base URL (where vLLM serves /health and /metrics), no query: the OpenAI
    base URL without its trailing '/v1'."""
    root = openai_root(url)
    return root[: -len("/v1")] if root.endswith("/v1") else root


def endpoint_url(spec: RunSpec, path: str) -> str:
    """The URL of one of the paths above: `/v1/...` below the OpenAI base URL, the others below
    the server's; the query of --url (Azure's api-version) is kept on every one."""
    url = openai_root(spec.url) + path[len("/v1") :] if path.startswith("/v1/") else api_base(spec.url) + path
    query = urlsplit(spec.url).query
    return f"{url}?{query}" if query else url


def request_headers(spec: RunSpec, json_body: bool) -> tuple[str, ...]:
    lines = [f"{name}: {value}" for name, value in spec.headers]
    names = {name.lower() for name, _ in spec.headers}
    if spec.api_key and "authorization" not in names:
        lines.append(f"Authorization: Bearer {spec.api_key}")
    if json_body and "content-type" not in names:
        lines.append("Content-Type: application/json")
    # libcurl would send "Expect: 100-continue" for larger bodies: a round trip no real client waits for.
    lines.append("Expect:")
    return tuple(lines)


#: what a body sets to get exactly max_tokens tokens: vLLM, SGLang and llama.cpp take
#: `ignore_eos`; vLLM and SGLang `min_tokens` (runner.prepare finds which a server refuses)
EXACT_OUTPUT_FIELDS = ("ignore_eos", "min_tokens")


def completion_body(spec: RunSpec, prompt: Prompt, max_tokens: int, exact_output: tuple[str, ...] = ()) -> bytes:
    body: dict[str, object] = {"model": spec.model, "max_tokens": max_tokens, "stream": True}
    if spec.stream_usage:
        # usage in every chunk (vLLM, SGLang): the tokens each event carried, and the total
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    if "ignore_eos" in exact_output:
        body["ignore_eos"] = True
    if "min_tokens" in exact_output:
        body["min_tokens"] = max_tokens
    if spec.mode == "chat":
        messages = prompt.messages or (("user", prompt.text or ""),)
        body["messages"] = [{"role": role, "content": content} for role, content in messages]
    else:
        body["prompt"] = prompt.text if prompt.text is not None else "\n\n".join(c for _, c in prompt.messages or ())
    return json.dumps(body).encode()


def build_request(spec: RunSpec, path: str | None = None) -> Request:
    """The request of a mode without a prompt of its own (`path` overrides the mode's
    endpoint); a stream's body holds --prompt as it is."""
    if spec.mode == "get":
        return Request(spec.url, "GET", request_headers(spec, False), None, False)
    url = endpoint_url(spec, path or ENDPOINT_PATHS[spec.mode])
    if spec.streaming:
        body = completion_body(spec, Prompt(spec.prompt), spec.max_tokens)
        return Request(url, "POST", request_headers(spec, True), body, True, output_tokens=spec.max_tokens)
    return Request(url, "GET", request_headers(spec, False), None, False)


@dataclass(frozen=True)
class RequestSource:
    """Every request of a run from its run-wide index (warm-up included): the same request
    each time, or, for streams with `prompts`, each its own prompt and output length."""

    #: the request of a run whose requests do not vary; the URL and headers of the others
    base: Request
    spec: RunSpec | None = None
    prompts: PromptSource | None = None
    #: --output-tokens; None: the prompt's own length, else --max-tokens
    outputs: Lengths | None = None
    #: the fields of EXACT_OUTPUT_FIELDS the server takes, sent with --output-tokens
    exact_output: tuple[str, ...] = ()

    def request(self, index: int) -> Request:
        if self.prompts is None or self.spec is None:
            return self.base
        prompt = self.prompts.prompt(index)
        if self.outputs is not None:
            max_tokens, exact = self.outputs.length(index), self.exact_output
        else:
            max_tokens, exact = prompt.output_tokens or self.spec.max_tokens, ()
        body = completion_body(self.spec, prompt, max_tokens, exact)
        return Request(self.base.url, "POST", self.base.headers, body, True, prompt.tokens, max_tokens)

