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


def api_base(url: str) -> str:
    """The server's base URL: path prefix kept, a trailing '/v1' and '/' removed."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def endpoint_url(spec: RunSpec, path: str) -> str:
    return api_base(spec.url) + path


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
