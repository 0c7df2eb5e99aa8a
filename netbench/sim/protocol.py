"""The OpenAI wire format as vLLM speaks it: request validation, response bodies, SSE chunks.

Pure functions and small classes over plain dicts; no HTTP and no timing here. Every error has
vLLM's current `ErrorResponse` body, `{"error": {"message", "type", "param", "code"}}`, with
`code` the HTTP status (vllm/entrypoints/openai/protocol.py, `ErrorInfo`). Chunk shapes follow
vLLM's serving_chat.py and serving_completion.py: chat chunks leave out unset fields,
completion chunks carry `stop_reason` and `usage` (null unless set); the last token event also
carries `finish_reason`; with `stream_options.continuous_usage_stats` every chunk carries the
cumulative usage, and `include_usage` adds a final chunk with empty `choices`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from netbench.sim import tokens
from netbench.sim.config import SimConfig
from netbench.sim.tokens import Generation, eos_position, plan_generation

SSE_DONE = b"data: [DONE]\n\n"


class ApiError(Exception):
    """A request the server refuses, with the status, error type and parameter vLLM would name."""

    def __init__(self, message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.err_type, "param": self.param, "code": self.status}}


def validation_error(message: str, param: str, value: object) -> ApiError:
    """vLLM's `VLLMValidationError`: its message names the parameter and the rejected value."""
    return ApiError(f"{message} (parameter={param}, value={value})", param=param)


@dataclass(frozen=True)
class GenerationRequest:
    """A validated completions or chat request, reduced to what the simulation needs."""

    prompt_ids: tuple[int, ...]
    generation: Generation
    stream: bool
    include_usage: bool
    continuous_usage: bool

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


def dumps(obj: Any) -> str:
    """Compact JSON, as pydantic's `model_dump_json` writes it in vLLM."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse_event(payload: str) -> bytes:
    """One server-sent event in vLLM's framing."""
    return f"data: {payload}\n\n".encode()


def parse_completion_request(body: Any, config: SimConfig) -> GenerationRequest:
    """Validate a `/v1/completions` body."""
    body = _require_object(body)
    prompt = _completion_prompt(body)
    max_tokens = _max_tokens(body, ("max_tokens",))
    _check_model(body, config)
    return _generation_request(body, config, tuple(tokens.completion_prompt_ids(prompt)), max_tokens)


def parse_chat_request(body: Any, config: SimConfig) -> GenerationRequest:
    """Validate a `/v1/chat/completions` body."""
    body = _require_object(body)
    messages = _messages(body)
    # max_completion_tokens replaces max_tokens in OpenAI's chat API; vLLM prefers it.
    max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"))
    _check_model(body, config)
    return _generation_request(body, config, tuple(tokens.chat_prompt_ids(messages)), max_tokens)


def parse_tokenize_request(body: Any, config: SimConfig) -> tuple[list[int], bool]:
    """Validate a `/tokenize` body (a completion `prompt` or chat `messages`); its ids, and
    whether to return the token strings too."""
    body = _require_object(body)
    return_token_strs = _bool(body, "return_token_strs", False)
    if "messages" in body:
        messages = _messages(body)
        add_generation_prompt = _bool(body, "add_generation_prompt", True)
        ids = tokens.chat_prompt_ids(messages, add_generation_prompt)
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            raise ApiError("prompt: Field required (a string), or messages")
        ids = tokens.completion_prompt_ids(prompt, _bool(body, "add_special_tokens", True))
    _check_model(body, config)
    return ids, return_token_strs


def tokenize_response(ids: list[int], return_token_strs: bool, config: SimConfig) -> dict[str, Any]:
    """vLLM's `TokenizeResponse`."""
    strs = [tokens.token_str(token_id) for token_id in ids] if return_token_strs else None
    return {"count": len(ids), "max_model_len": config.max_model_len, "tokens": ids, "token_strs": strs}


def parse_detokenize_request(body: Any, config: SimConfig) -> dict[str, str]:
    """Validate a `/detokenize` body and answer it: vLLM's `DetokenizeResponse`."""
    body = _require_object(body)
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(_is_int(token_id) for token_id in ids):
        raise ApiError("tokens: expected a list of token ids")
    _check_model(body, config)
    try:
        return {"prompt": tokens.decode(ids)}
    except tokens.TokenError as exc:
        raise ApiError(str(exc), param="tokens") from exc


def _check_model(body: Mapping[str, Any], config: SimConfig) -> None:
    """vLLM serves only its own model name; a request without one gets the served model."""
    model = body.get("model")
    if model is not None and model != config.model_name:
        raise ApiError(f"The model `{model}` does not exist.", status=404, err_type="NotFoundError", param="model")


def models_list(config: SimConfig, created: int) -> dict[str, Any]:
    """The `/v1/models` body: one model card."""
    card = {
        "id": config.model_name,
        "object": "model",
        "created": created,
        "owned_by": "netbench",
        "root": config.model_name,
        "parent": None,
        "max_model_len": config.max_model_len,
    }
    return {"object": "list", "data": [card]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """vLLM's `UsageInfo`, in its field order."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def final_usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> dict[str, Any]:
    """The usage of a finished request, with `prompt_tokens_details` when `cached_tokens` is
    given and not 0 (vLLM's --enable-prompt-tokens-details)."""
    totals = usage(prompt_tokens, completion_tokens)
    if cached_tokens:
        totals["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return totals


def _response_usage(totals: dict[str, Any]) -> dict[str, Any]:
    """Usage in a whole response: vLLM writes every field, so an unset detail is null."""
    return {**totals, "prompt_tokens_details": totals.get("prompt_tokens_details")}


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

    def usage_chunk(self, totals: dict[str, Any]) -> str:
        """The chunk `include_usage` adds after the last token: no choices, the totals."""
        chunk = self._chunk([])
        chunk["usage"] = totals
        return dumps(chunk)


class ChatFormat(_StreamFormat):
    """Bodies and stream chunks of one `/v1/chat/completions` response."""

    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def role_chunk(self, running_usage: dict[str, int] | None) -> str | None:
        """vLLM's first chat chunk, sent with the first output: the role and empty content."""
        return self._with_usage([_chat_choice({"role": "assistant", "content": ""})], running_usage)

    def token_chunk(self, text: str, running_usage: dict[str, int] | None) -> str:
        return self._with_usage([_chat_choice({"content": text})], running_usage)

    def final_chunk(
        self, text: str, finish_reason: str, stop_reason: str | None, running_usage: dict[str, int] | None
    ) -> str:
        choice = _chat_choice({"content": text}, finish_reason)
        choice["stop_reason"] = stop_reason
        return self._with_usage([choice], running_usage)

    def _with_usage(self, choices: list[dict[str, Any]], running_usage: dict[str, int] | None) -> str:
        chunk = self._chunk(choices)
        if running_usage is not None:  # chat chunks leave out what is not set
            chunk["usage"] = running_usage
        return dumps(chunk)

    def response(self, request: GenerationRequest, totals: dict[str, Any]) -> dict[str, Any]:
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
            "usage": _response_usage(totals),
        }


class CompletionFormat(_StreamFormat):
    """Bodies and stream chunks of one `/v1/completions` response."""

    id_prefix = "cmpl"
    chunk_object = "text_completion"

    def role_chunk(self, running_usage: dict[str, int] | None) -> str | None:
        """Completions streams have no role chunk."""
        return None

    def token_chunk(self, text: str, running_usage: dict[str, int] | None) -> str:
        return self._with_usage(_completion_choice(text), running_usage)

    def final_chunk(
        self, text: str, finish_reason: str, stop_reason: str | None, running_usage: dict[str, int] | None
    ) -> str:
        return self._with_usage(_completion_choice(text, finish_reason, stop_reason), running_usage)

    def _with_usage(self, choice: dict[str, Any], running_usage: dict[str, int] | None) -> str:
        # vLLM serialises completion chunks with every field, so "usage" is null when unset.
        return dumps({**self._chunk([choice]), "usage": running_usage})

    def response(self, request: GenerationRequest, totals: dict[str, Any]) -> dict[str, Any]:
        generation = request.generation
        choice = _completion_choice(generation.text, generation.finish_reason, generation.stop_reason)
        return {**self._chunk([choice]), "usage": _response_usage(totals)}


ResponseFormat = ChatFormat | CompletionFormat


def _chat_choice(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _completion_choice(text: str, finish_reason: str | None = None, stop_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason, "stop_reason": stop_reason}


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("The request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"{name}: expected a boolean, got {value!r}")
    return value


def _int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and not _is_int(value):
        raise ApiError(f"{name}: expected an integer, got {value!r}")
    return value


def _completion_prompt(body: Mapping[str, Any]) -> str | list[int]:
    if body.get("prompt") is None:
        raise ApiError("prompt: Field required")
    prompt = body["prompt"]
    # One prompt a request: a string, a list of token ids, or a batch holding one of those.
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(_is_int(t) for t in prompt))):
        raise ApiError("prompt: expected a string or a list of token ids (one prompt per request)")
    if not prompt:
        raise ApiError("prompt: must not be empty")
    return prompt


def _messages(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    messages = body.get("messages")
    if messages is None:
        raise ApiError("messages: Field required")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages: expected a non-empty list of messages")
    return [_message(message) for message in messages]


def _message(message: Any) -> tuple[str, str]:
    """A message's role and the text of its content."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise ApiError("messages: each message must be an object with a string 'role'")
    return message["role"], _message_text(message)


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        # Multi-part content: only text parts cost prompt tokens in this simulation.
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        return "\n".join(text for text in texts if isinstance(text, str))
    raise ApiError("messages: 'content' must be a string or a list of content parts")


def _max_tokens(body: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    """The requested max_tokens (the first of `names` set), or None for the default."""
    for name in names:
        value = _int(body, name)
        if value is None:
            continue
        if value < 1:
            raise ApiError(f"max_tokens must be at least 1, got {value}.", param=name)
        return value
    return None


def _generation_request(
    body: Mapping[str, Any], config: SimConfig, prompt_ids: tuple[int, ...], max_tokens: int | None
) -> GenerationRequest:
    stream = _bool(body, "stream", False)
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise ApiError("Stream options can only be defined when `stream=True`.")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise ApiError("stream_options: expected an object")
    include_usage = _bool(stream_options or {}, "include_usage", False)
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError("n: netbench serve generates one choice per request (n=1)")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise ApiError("stop: expected a string or a list of strings")
    ignore_eos = _bool(body, "ignore_eos", False) or config.ignore_eos
    min_tokens = _int(body, "min_tokens") or 0
    seed = _int(body, "seed")
    max_tokens = _fit_context(config, len(prompt_ids), max_tokens)
    if min_tokens < 0:
        raise ApiError(f"min_tokens must be greater than or equal to 0, got {min_tokens}.")
    if min_tokens > max_tokens:
        raise ApiError(f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {min_tokens}.")
    eos_at = None
    if not ignore_eos:
        drawn_for = f"seed:{seed}" if seed is not None else ",".join(map(str, prompt_ids))
        eos_at = eos_position(f"{config.seed}|{drawn_for}".encode(), config.eos_mean_tokens, min_tokens)
    return GenerationRequest(
        prompt_ids=prompt_ids,
        generation=plan_generation(max_tokens, stop or (), eos_at, min_tokens),
        stream=stream,
        include_usage=include_usage,
        continuous_usage=include_usage and _bool(stream_options or {}, "continuous_usage_stats", False),
    )


def _fit_context(config: SimConfig, prompt_tokens: int, max_tokens: int | None) -> int:
    """vLLM's context-length checks; the max_tokens to use (the default fills what is left)."""
    limit = config.max_model_len
    if prompt_tokens >= limit:
        raise validation_error(
            f"This model's maximum context length is {limit} tokens. However, your request has "
            f"{prompt_tokens} input tokens. Please reduce the length of the input messages.",
            "input_tokens",
            prompt_tokens,
        )
    if max_tokens is None:
        return min(config.default_max_tokens, limit - prompt_tokens)
    if prompt_tokens + max_tokens > limit:
        raise validation_error(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's maximum "
            f"context length is {limit} tokens and your request has {prompt_tokens} input tokens "
            f"({max_tokens} > {limit} - {prompt_tokens}).",
            "max_tokens",
            max_tokens,
        )
    return max_tokens
