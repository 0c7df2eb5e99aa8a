"""The OpenAI wire format as vLLM speaks it: request validation, response bodies, SSE chunks.

Pure functions and small classes over plain dicts; no HTTP and no timing here.
Errors have vLLM's `ErrorResponse` shape:
`{"object": "error", "message": ..., "type": "BadRequestError", "param": null, "code": 400}`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netbench.sim.config import SimConfig
from netbench.sim.tokens import (
    Generation,
    count_chat_prompt_tokens,
    count_completion_prompt_tokens,
    plan_generation,
)

SSE_DONE = b"data: [DONE]\n\n"


class ApiError(Exception):
    """A request the server refuses, with the status and error type vLLM would use."""

    def __init__(self, message: str, status: int = 400, err_type: str = "BadRequestError") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type

    def body(self) -> dict[str, Any]:
        return {"object": "error", "message": self.message, "type": self.err_type, "param": None, "code": self.status}


@dataclass(frozen=True)
class GenerationRequest:
    """A validated completions or chat request, reduced to what the simulation needs."""

    prompt_tokens: int
    generation: Generation
    stream: bool
    include_usage: bool


def dumps(obj: Any) -> str:
    """Compact JSON, as pydantic's `model_dump_json` writes it in vLLM."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse_event(payload: str) -> bytes:
    """One server-sent event in vLLM's framing."""
    return f"data: {payload}\n\n".encode()


def parse_completion_request(body: Any, config: SimConfig) -> GenerationRequest:
    """Validate a `/v1/completions` body."""
    body = _require_object(body)
    if "prompt" not in body or body["prompt"] is None:
        raise ApiError("prompt: Field required")
    prompt = body["prompt"]
    # One prompt a request: a string, a list of token ids, or a batch holding one of those.
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(_is_int(t) for t in prompt))):
        raise ApiError("prompt: expected a string or a list of token ids (one prompt per request)")
    if not prompt:
        raise ApiError("prompt: must not be empty")
    max_tokens = _max_tokens(body, ("max_tokens",), config)
    _check_model(body, config)
    return _generation_request(body, count_completion_prompt_tokens(prompt), max_tokens)


def parse_chat_request(body: Any, config: SimConfig) -> GenerationRequest:
    """Validate a `/v1/chat/completions` body."""
    body = _require_object(body)
    messages = body.get("messages")
    if messages is None:
        raise ApiError("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages: expected a non-empty list of messages")
    contents = [_message_text(message) for message in messages]
    # max_completion_tokens replaces max_tokens in OpenAI's chat API; vLLM prefers it.
    max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"), config)
    _check_model(body, config)
    return _generation_request(body, count_chat_prompt_tokens(contents), max_tokens)


def _check_model(body: Mapping[str, Any], config: SimConfig) -> None:
    """vLLM serves only its own model name; a request without one gets the served model."""
    model = body.get("model")
    if model is not None and model != config.model_name:
        raise ApiError(f"The model `{model}` does not exist.", status=404, err_type="NotFoundError")


def models_list(config: SimConfig, created: int) -> dict[str, Any]:
    """The `/v1/models` body: one model card."""
    card = {
        "id": config.model_name,
        "object": "model",
        "created": created,
        "owned_by": "netbench",
        "root": config.model_name,
        "parent": None,
    }
    return {"object": "list", "data": [card]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


class _StreamFormat:
    """What chat and completion responses share: the id, the chunk envelope, the usage chunk."""

    id_prefix: str
    chunk_object: str

    def __init__(self, model: str) -> None:
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.chunk_object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> str:
        chunk = self._chunk([])
        chunk["usage"] = usage(prompt_tokens, completion_tokens)
        return dumps(chunk)


class ChatFormat(_StreamFormat):
    """Bodies and stream chunks of one `/v1/chat/completions` response."""

    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def role_chunk(self) -> str | None:
        """vLLM's first chat chunk: the role and empty content, no token."""
        return dumps(self._chunk([_chat_choice({"role": "assistant", "content": ""})]))

    def token_chunk(self, text: str) -> str:
        return dumps(self._chunk([_chat_choice({"content": text})]))

    def final_chunk(self, finish_reason: str, stop_reason: str | None) -> str:
        choice = _chat_choice({"content": ""}, finish_reason)
        choice["stop_reason"] = stop_reason
        return dumps(self._chunk([choice]))

    def response(self, request: GenerationRequest) -> dict[str, Any]:
        generation = request.generation
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "logprobs": None,
                    "finish_reason": generation.finish_reason,
                    "stop_reason": generation.stop_reason,
                }
            ],
            "usage": usage(request.prompt_tokens, generation.completion_tokens),
        }


class CompletionFormat(_StreamFormat):
    """Bodies and stream chunks of one `/v1/completions` response."""

    id_prefix = "cmpl"
    chunk_object = "text_completion"

    def role_chunk(self) -> str | None:
        """Completions streams have no role chunk."""
        return None

    def token_chunk(self, text: str) -> str:
        return dumps(self._chunk([_completion_choice(text)]))

    def final_chunk(self, finish_reason: str, stop_reason: str | None) -> str:
        choice = _completion_choice("", finish_reason)
        choice["stop_reason"] = stop_reason
        return dumps(self._chunk([choice]))

    def response(self, request: GenerationRequest) -> dict[str, Any]:
        generation = request.generation
        choice = _completion_choice(generation.text, generation.finish_reason)
        choice["stop_reason"] = generation.stop_reason
        return {**self._chunk([choice]), "usage": usage(request.prompt_tokens, generation.completion_tokens)}


ResponseFormat = ChatFormat | CompletionFormat


def _chat_choice(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _completion_choice(text: str, finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _message_text(message: Any) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise ApiError("messages: each message must be an object with a string 'role'")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        # Multi-part content: only text parts cost prompt tokens in this simulation.
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(text for text in texts if isinstance(text, str))
    raise ApiError("messages: 'content' must be a string or a list of content parts")


def _max_tokens(body: Mapping[str, Any], names: tuple[str, ...], config: SimConfig) -> int:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value):
            raise ApiError(f"{name}: expected an integer, got {value!r}")
        if value < 1:
            raise ApiError(f"{name} must be at least 1, got {value}.")
        return int(value)
    return config.default_max_tokens


def _generation_request(body: Mapping[str, Any], prompt_tokens: int, max_tokens: int) -> GenerationRequest:
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(f"stream: expected a boolean, got {stream!r}")
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise ApiError("Stream options can only be defined when `stream=True`.")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ApiError("stream_options: expected an object")
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError("n: netbench serve generates one choice per request (n=1)")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise ApiError("stop: expected a string or a list of strings")
    return GenerationRequest(
        prompt_tokens=prompt_tokens,
        generation=plan_generation(max_tokens, stop or ()),
        stream=stream,
        include_usage=bool(stream_options and stream_options.get("include_usage")),
    )
