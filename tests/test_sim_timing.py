"""Unit tests of the simulated server's parts: SimConfig, the token model, the engine's scheduling."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netbench.sim.config import SimConfig
from netbench.sim.engine import Engine
from netbench.sim.metrics import SimMetrics
from netbench.sim.protocol import ApiError, parse_chat_request, parse_completion_request
from netbench.sim.tokens import count_chat_prompt_tokens, count_completion_prompt_tokens, plan_generation


def test_config_is_frozen_picklable_and_validated() -> None:
    config = SimConfig(prefill_ms=40, max_batch=2, stamp_events=True)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError):
        config.decode_ms = 1  # type: ignore[misc]
    for bad in ({"decode_ms": -1}, {"max_batch": 0}, {"default_max_tokens": 0}, {"model_name": ""}):
        with pytest.raises(ValueError):
            SimConfig(**bad)  # type: ignore[arg-type]


def test_timing_formulas() -> None:
    config = SimConfig(prefill_ms=20, prefill_per_token_ms=0.5, decode_ms=10, batch_slowdown=0.25)
    assert config.prefill_s(100) == pytest.approx(0.070)
    assert config.decode_step_s(1) == pytest.approx(0.010)
    assert config.decode_step_s(5) == pytest.approx(0.020)


def test_prompt_token_counts() -> None:
    assert count_completion_prompt_tokens("hi there") == 1 + 1 + 2  # BOS + "hi" + "there" (5 chars)
    assert count_completion_prompt_tokens([5, 6, 7]) == 3
    assert count_chat_prompt_tokens(["hi", ""]) == (4 + 1) + (4 + 0) + 3


def test_generation_is_deterministic_and_honours_stop() -> None:
    plain = plan_generation(4)
    assert plain == plan_generation(4)
    assert plain.text == "the quick brown fox" and plain.finish_reason == "length"
    assert plain.completion_tokens == 4
    stopped = plan_generation(10, ["brown", "zzz"])
    assert stopped.tokens == ("the", " quick") and stopped.finish_reason == "stop"
    assert stopped.stop_reason == "brown" and stopped.completion_tokens == 3
    assert plan_generation(2, ["fox"]).finish_reason == "length"  # the stop string is never reached


def test_request_parsing() -> None:
    config = SimConfig(default_max_tokens=5)
    chat = parse_chat_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, config)
    assert chat.generation.completion_tokens == 5 and chat.prompt_tokens == 4 + 1 + 3 and not chat.stream
    completion = parse_completion_request({"prompt": ["a b"], "max_tokens": 2, "stream": True}, config)
    assert completion.prompt_tokens == 3 and completion.stream and not completion.include_usage
    for body in ({"prompt": ["a", "b"]}, {"prompt": ""}, {"prompt": "x", "max_tokens": "3"}, {"prompt": "x", "n": 2}):
        with pytest.raises(ApiError) as error:
            parse_completion_request(body, config)
        assert error.value.status == 400
    with pytest.raises(ApiError) as error:
        parse_chat_request({"messages": [{"content": "no role"}]}, config)
    assert error.value.body()["type"] == "BadRequestError"


def test_scheduler_steps_batch_and_queue() -> None:
    """The scheduling decisions, step by step, without waiting for real time."""
    config = SimConfig(prefill_ms=10, prefill_per_token_ms=0, decode_ms=4, max_batch=2, batch_slowdown=0.5)

    async def scenario() -> None:
        engine = Engine(config)
        first, second, third = (engine.submit(prompt_tokens=8, output_tokens=2) for _ in range(3))
        batch, step_s = engine._schedule_step()
        assert batch == [first, second] and step_s == pytest.approx(2 * 0.010)  # two prefills
        assert (engine.num_running, engine.num_waiting) == (2, 1)
        engine._finish_step(batch)
        assert first.generated == second.generated == 1 and first.first_token_s is not None
        batch, step_s = engine._schedule_step()
        assert step_s == pytest.approx(0.004 * 1.5)  # one decode step at 2 running
        engine._finish_step(batch)
        assert first.finished_s is not None and engine.num_running == 0
        batch, step_s = engine._schedule_step()  # the queued request gets its turn
        assert batch == [third] and third.queue_s > 0 and step_s == pytest.approx(0.010)
        assert first.token_ready.qsize() == 2

    asyncio.run(scenario())


def test_release_frees_a_slot_at_once() -> None:
    async def scenario() -> None:
        engine = Engine(SimConfig(max_batch=1))
        running, waiting = engine.submit(1, 5), engine.submit(1, 5)
        batch, _ = engine._schedule_step()
        engine.release(waiting)
        assert engine.num_waiting == 0
        engine.release(running)
        engine.release(running)  # idempotent
        assert engine.num_running == 0
        engine._finish_step(batch)
        assert running.generated == 0  # released mid-step: no token

    asyncio.run(scenario())


def test_engine_loop_keeps_time() -> None:
    """Real time: the first token after the prefill, then one every decode step (2-core tolerance)."""
    config = SimConfig(prefill_ms=30, prefill_per_token_ms=0, decode_ms=10)

    async def scenario() -> list[float]:
        engine = Engine(config)
        loop_task = asyncio.create_task(engine.run())
        # The engine idles for less than the prefill first: idle time must not shorten the step.
        await asyncio.sleep(0.01)
        request = engine.submit(prompt_tokens=1, output_tokens=21)
        stamps_s = []
        for _ in range(21):
            await request.next_token()
            stamps_s.append(time.monotonic() - request.arrival_s)
        loop_task.cancel()
        return stamps_s

    stamps_s = asyncio.run(scenario())
    assert stamps_s[0] == pytest.approx(0.030, rel=0.2)
    assert stamps_s[-1] - stamps_s[0] == pytest.approx(20 * 0.010, rel=0.2)


def test_two_servers_in_one_process_keep_separate_registries() -> None:
    config = SimConfig(model_name="a")
    first = SimMetrics("a", Engine(config))
    second = SimMetrics("b", Engine(config))
    first.generation_tokens.inc(3)
    families = {f.name: f for f in text_string_to_metric_families(second.exposition().decode())}
    assert families["vllm:generation_tokens"].samples[0].value == 0
    assert families["vllm:generation_tokens"].samples[0].labels["model_name"] == "b"
