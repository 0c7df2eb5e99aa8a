"""The Starlette app of `netbench serve`: routes, streaming, client disconnects, the HTTP delay.

Routes: `GET /health`, `GET /v1/models`, `GET /metrics`, `POST /v1/completions`,
`POST /v1/chat/completions`, `POST /tokenize`, `POST /detokenize`. One `Engine` and one
`SimMetrics` per app; the engine loop runs for the app's lifespan.

A stream sends its headers at once and its first event (the chat role chunk, then the first
token) when the first token exists, as vLLM does. With `--stream-interval K` an event carries
the first token alone, then K tokens each, and the rest with the finish reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from netbench.sim.config import SimConfig
from netbench.sim.engine import Engine, SimRequest
from netbench.sim.metrics import RequestRecorder, SimMetrics
from netbench.sim.protocol import (
    SSE_DONE,
    ApiError,
    ChatFormat,
    CompletionFormat,
    GenerationRequest,
    ResponseFormat,
    final_usage,
    models_list,
    parse_chat_request,
    parse_completion_request,
    parse_detokenize_request,
    parse_tokenize_request,
    sse_event,
    tokenize_response,
    usage,
)

Parser = Callable[[Any, SimConfig], GenerationRequest]


class HttpDelayMiddleware:
    """Holds every HTTP request for `delay_s` before the app sees it.

    It simulates framework overhead: the response headers are late by the delay, and, like the
    FastAPI layer in front of vLLM's engine, the server's own metrics do not see it.
    """

    def __init__(self, app: ASGIApp, delay_s: float) -> None:
        self._app = app
        self._delay_s = delay_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(self._delay_s)
        await self._app(scope, receive, send)


class SimHandlers:
    """The request handlers, sharing one engine and one metrics registry."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.metrics = SimMetrics(config)
        self.engine = Engine(config, self.metrics)
        self.metrics.watch(self.engine)
        self._created = int(time.time())

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def models(self, request: Request) -> Response:
        return JSONResponse(models_list(self.config, self._created))

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, parse_completion_request, CompletionFormat(self.config.model_name))

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, parse_chat_request, ChatFormat(self.config.model_name))

    async def tokenize(self, request: Request) -> Response:
        try:
            ids, return_token_strs = parse_tokenize_request(await _json_body(request), self.config)
        except ApiError as exc:
            return _error_response(exc)
        return JSONResponse(tokenize_response(ids, return_token_strs, self.config))

    async def detokenize(self, request: Request) -> Response:
        try:
            return JSONResponse(parse_detokenize_request(await _json_body(request), self.config))
        except ApiError as exc:
            return _error_response(exc)

    async def _generate(self, http_request: Request, parse: Parser, fmt: ResponseFormat) -> Response:
        arrival_s = time.monotonic()
        try:
            request = parse(await _json_body(http_request), self.config)
        except ApiError as exc:
            return _error_response(exc)
        recorder = RequestRecorder(self.metrics, arrival_s, request.prompt_tokens)
        if request.stream:
            events = self._stream(request, fmt, recorder)
            # Starlette cancels the stream when the client disconnects; closing the generator
            # afterwards runs its cleanup even if it was parked at a `yield` at that moment.
            return StreamingResponse(events, media_type="text/event-stream", background=BackgroundTask(events.aclose))
        return await self._complete(http_request, request, fmt, recorder)

    async def _stream(
        self, request: GenerationRequest, fmt: ResponseFormat, recorder: RequestRecorder
    ) -> AsyncGenerator[bytes, None]:
        generation = request.generation
        engine_request = self.engine.submit(request.prompt_ids, generation.completion_tokens)
        last = generation.completion_tokens - 1
        completed = False
        try:
            pending, unsent = "", 0
            for index, text in enumerate(generation.texts):
                await engine_request.next_token()
                recorder.token()
                if index == 0:
                    role_chunk = fmt.role_chunk(self._running_usage(request, 0))
                    if role_chunk is not None:
                        yield sse_event(role_chunk)
                pending, unsent = pending + text, unsent + 1
                running_usage = self._running_usage(request, index + 1)
                if index == last:
                    final = fmt.final_chunk(pending, generation.finish_reason, generation.stop_reason, running_usage)
                    yield self._event(final, bool(pending))
                elif index == 0 or unsent >= self.config.stream_interval:
                    yield self._event(fmt.token_chunk(pending, running_usage), bool(pending))
                    pending, unsent = "", 0
            if request.include_usage:
                yield sse_event(fmt.usage_chunk(self._final_usage(request, engine_request)))
            recorder.finish(engine_request, generation.finish_reason)
            completed = True
            yield SSE_DONE
        finally:
            if not completed:
                self._abort(engine_request, recorder)

    def _running_usage(self, request: GenerationRequest, generated: int) -> dict[str, int] | None:
        """The cumulative usage a chunk carries under continuous_usage_stats, else None."""
        return usage(request.prompt_tokens, generated) if request.continuous_usage else None

    def _final_usage(self, request: GenerationRequest, engine_request: SimRequest) -> dict[str, Any]:
        cached = engine_request.cached_tokens if self.config.enable_prompt_tokens_details else None
        return final_usage(request.prompt_tokens, request.generation.completion_tokens, cached)

    def _event(self, payload: str, carries_text: bool) -> bytes:
        if carries_text and self.config.stamp_events:
            # Stamped after serialising, so the stamp is as close to the socket write as it can be.
            payload = f'{payload[:-1]},"netbench_sent_ns":{time.monotonic_ns()}}}'
        return sse_event(payload)

    async def _complete(
        self, http_request: Request, request: GenerationRequest, fmt: ResponseFormat, recorder: RequestRecorder
    ) -> Response:
        generation = request.generation
        engine_request = self.engine.submit(request.prompt_ids, generation.completion_tokens)
        collect = asyncio.ensure_future(self._collect(engine_request, recorder))
        # Like vLLM's `with_cancellation`: a client that hangs up frees its slot at once.
        gone = asyncio.ensure_future(_wait_for_disconnect(http_request))
        try:
            done, _ = await asyncio.wait((collect, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            collect.cancel()  # a no-op once it has finished
        if collect not in done:
            return Response(status_code=499)  # nobody is left to read it
        recorder.finish(engine_request, generation.finish_reason)
        return JSONResponse(fmt.response(request, self._final_usage(request, engine_request)))

    async def _collect(self, engine_request: SimRequest, recorder: RequestRecorder) -> None:
        completed = False
        try:
            for _ in range(engine_request.output_tokens):
                await engine_request.next_token()
                recorder.token()
            completed = True
        finally:
            if not completed:
                self._abort(engine_request, recorder)

    def _abort(self, engine_request: SimRequest, recorder: RequestRecorder) -> None:
        self.engine.release(engine_request)
        recorder.abort()


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise ApiError(f"JSON decode error: {exc}") from exc


def _error_response(exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _http_error(request: Request, exc: Exception) -> Response:
    # FastAPI's body for routing errors, so what vLLM answers to an unknown path.
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app(config: SimConfig) -> Starlette:
    """A fresh app with its own engine and metrics registry."""
    handlers = SimHandlers(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Streaming responses run in an anyio task group, whose backend is imported on first
        # use: tens of ms on a small box, which would land in the first request's TTFT.
        async with anyio.create_task_group():
            pass
        engine_loop = asyncio.create_task(handlers.engine.run())
        try:
            yield
        finally:
            engine_loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await engine_loop

    routes = [
        Route("/health", handlers.health, methods=["GET"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/metrics", handlers.prometheus, methods=["GET"]),
        Route("/v1/completions", handlers.completions, methods=["POST"]),
        Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/tokenize", handlers.tokenize, methods=["POST"]),
        Route("/detokenize", handlers.detokenize, methods=["POST"]),
    ]
    middleware = []
    if config.http_delay_ms > 0:
        middleware.append(Middleware(HttpDelayMiddleware, delay_s=config.http_delay_ms / 1000.0))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
