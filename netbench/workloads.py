"""What each mode sends: the URL, method, headers and body of its requests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

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


def completion_body(spec: RunSpec) -> bytes:
    body: dict[str, object] = {"model": spec.model, "max_tokens": spec.max_tokens, "stream": True}
    if spec.stream_usage:
        # usage in every chunk (vLLM, SGLang): the tokens each event carried, and the total
        body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    if spec.mode == "chat":
        body["messages"] = [{"role": "user", "content": spec.prompt}]
    else:
        body["prompt"] = spec.prompt
    return json.dumps(body).encode()


def build_request(spec: RunSpec, path: str | None = None) -> Request:
    """The request every iteration of this run sends; `path` overrides the mode's endpoint."""
    if spec.mode == "get":
        return Request(spec.url, "GET", request_headers(spec, False), None, False)
    url = endpoint_url(spec, path or ENDPOINT_PATHS[spec.mode])
    if spec.streaming:
        return Request(url, "POST", request_headers(spec, True), completion_body(spec), True)
    return Request(url, "GET", request_headers(spec, False), None, False)
