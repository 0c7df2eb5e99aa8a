"""Unit tests of the simulated server's parts: SimConfig, the tokenizer and EOS, request parsing,
the scheduler (on a virtual clock, so its timing is checked exactly) and the capacity model."""

from __future__ import annotations

import asyncio
import pickle
import statistics
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netbench.sim import tokens
from netbench.sim.capacity import cached_prompt_tokens, capacity, idle_latency
from netbench.sim.config import SimConfig
from netbench.sim.engine import Engine, SimRequest, Step
from netbench.sim.metrics import SimMetrics, buckets_1_2_5
from netbench.sim.prefix_cache import PrefixCache, block_keys
from netbench.sim.protocol import ApiError, parse_chat_request, parse_completion_request

# --- config ------------------------------------------------------------------------------------


def test_config_is_frozen_picklable_and_validated() -> None:
    config = SimConfig(step_ms=40, max_num_seqs=2, stamp_events=True)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError):
        config.step_ms = 1  # type: ignore[misc]
    bad_knobs = ({"step_ms": -1}, {"max_num_seqs": 0}, {"max_num_batched_tokens": 0}, {"default_max_tokens": 0},
                 {"stream_interval": 0}, {"eos_mean_tokens": 0.5}, {"model_name": ""})  # fmt: skip
    for bad in bad_knobs:
        with pytest.raises(ValueError):
            SimConfig(**bad)  # type: ignore[arg-type]


def test_step_cost_formula() -> None:
    config = SimConfig(step_ms=10, prefill_token_ms=0.5, decode_token_ms=0.25)
    assert config.step_s(0, 1) == pytest.approx(0.01025)
    assert config.step_s(100, 4) == pytest.approx(0.061)


# --- tokenizer, output, EOS --------------------------------------------------------------------


def test_tokenizer_counts_four_byte_pieces_and_round_trips() -> None:
    assert len(tokens.encode("a bb ccc dddd")) == 4  # words of 1-4 characters: one token each
    assert len(tokens.encode("hello  there\nworld")) == 2 + 2 + 2  # 5 characters: two tokens a word
    assert len(tokens.encode("naïve")) == 2  # 6 UTF-8 bytes
    text = "the lighthouse keeper, naïve and 100% sure"
    ids = tokens.encode(text)
    assert tokens.decode(ids) == text
    assert "".join(tokens.token_str(i) for i in ids) == text
    assert tokens.token_str(ids[1]).startswith(" ") and not tokens.token_str(ids[0]).startswith(" ")
    assert len(set(tokens.encode("ab ab"))) == 2  # the leading space makes a different token
    assert len(set(tokens.encode("aa ab ba bb"))) == 4
    assert max(tokens.encode("\U0010ffff" * 3)) < 2**42
    with pytest.raises(tokens.TokenError):
        tokens.decode([tokens.TEXT_ID_BASE + 1])  # no piece encodes to this id


def test_prompt_templates() -> None:
    assert tokens.completion_prompt_ids("hi there") == [tokens.BOS_ID, *tokens.encode("hi there")]
    assert tokens.completion_prompt_ids("hi", add_special_tokens=False) == tokens.encode("hi")
    assert tokens.completion_prompt_ids([5, 6, 7]) == [5, 6, 7]
    chat = tokens.chat_prompt_ids([("system", "Be brief."), ("user", "hi")])
    assert len(chat) == (4 + 3) + (4 + 1) + 3
    assert tokens.decode(chat) == (
        "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\nhi<|im_end|><|im_start|>assistant\n"
    )
    assert len(tokens.chat_prompt_ids([("user", "hi")], add_generation_prompt=False)) == 5
    assert len(tokens.chat_prompt_ids([("narrator", "hi")])) == (3 + 2 + 1) + 3  # "narrator": two tokens


def test_output_text_retokenises_to_as_many_tokens() -> None:
    for count in (1, 5, 64, 200):
        text = "".join(tokens.output_token_text(i) for i in range(count))
        assert len(tokens.encode(text)) == count


def test_eos_position_is_deterministic_geometric_and_after_min_tokens() -> None:
    draws = [tokens.eos_position(f"request {i}".encode(), 64.0, 0) for i in range(20_000)]
    assert draws == [tokens.eos_position(f"request {i}".encode(), 64.0, 0) for i in range(20_000)]
    assert statistics.mean(draws) == pytest.approx(64.0, rel=0.03)
    # Geometric: P(position > k) = (1 - 1/64)^k
    assert sum(d > 64 for d in draws) / len(draws) == pytest.approx((1 - 1 / 64) ** 64, abs=0.015)
    assert min(draws) == 1
    assert all(tokens.eos_position(f"request {i}".encode(), 64.0, 10) == d + 10 for i, d in enumerate(draws[:100]))


def test_generation_lengths_eos_stop_and_min_tokens() -> None:
    plain = tokens.plan_generation(4)
    assert plain.text == "the old fox ran" and plain.finish_reason == "length" and plain.completion_tokens == 4
    eos = tokens.plan_generation(10, eos_at=3)
    assert eos.texts == ("the", " old", "") and eos.finish_reason == "stop" and eos.stop_reason is None
    assert tokens.plan_generation(3, eos_at=3).finish_reason == "length"  # max_tokens is checked first
    assert tokens.plan_generation(3, eos_at=9).completion_tokens == 3
    stopped = tokens.plan_generation(10, ["fox", "zzz"])
    assert stopped.texts == ("the", " old", "") and stopped.finish_reason == "stop" and stopped.stop_reason == "fox"
    # A stop string spanning tokens: every token up to the one completing it is generated.
    spanning = tokens.plan_generation(10, ["old fox ran"])
    assert spanning.texts == ("the", "", "", "") and spanning.completion_tokens == 4
    # Stop strings count only once min_tokens tokens exist: the second "the" ends it.
    late = tokens.plan_generation(20, ["the"], min_tokens=2)
    assert late.completion_tokens == 14 and late.text == "the old fox ran to a calm sea and saw it glow as"
    assert tokens.plan_generation(2, ["fox"]).finish_reason == "length"  # never reached


# --- request parsing ------------------------------------------------------------------------------


def _completion(config: SimConfig, **body: object):  # noqa: ANN202
    return parse_completion_request({"prompt": "tell me about the sea", **body}, config)


def test_request_parsing() -> None:
    config = SimConfig(default_max_tokens=5, ignore_eos=True)
    chat = parse_chat_request({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, config)
    assert chat.generation.completion_tokens == 5 and chat.prompt_tokens == 4 + 1 + 3 and not chat.stream
    completion = parse_completion_request({"prompt": ["a b"], "max_tokens": 2, "stream": True}, config)
    assert completion.prompt_ids == (tokens.BOS_ID, *tokens.encode("a b")) and completion.stream
    assert not completion.include_usage and not completion.continuous_usage
    usage_options = {"stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    assert parse_completion_request({"prompt": "x", **usage_options}, config).continuous_usage
    only_continuous = {"stream": True, "stream_options": {"continuous_usage_stats": True}}
    assert not parse_completion_request({"prompt": "x", **only_continuous}, config).continuous_usage
    bad_bodies = ({"prompt": ["a", "b"]}, {"prompt": ""}, {"prompt": "x", "max_tokens": "3"}, {"prompt": "x", "n": 2},
                  {"prompt": "x", "ignore_eos": "yes"}, {"prompt": "x", "min_tokens": 9, "max_tokens": 3},
                  {"prompt": "x", "min_tokens": -1}, {"prompt": "x", "stream_options": {}})  # fmt: skip
    for body in bad_bodies:
        with pytest.raises(ApiError) as error:
            parse_completion_request(body, config)
        assert error.value.status == 400
    with pytest.raises(ApiError) as error:
        parse_chat_request({"messages": [{"content": "no role"}]}, config)
    assert error.value.body() == {
        "error": {"message": error.value.message, "type": "BadRequestError", "param": None, "code": 400}
    }


def test_eos_is_per_request_deterministic_and_ignore_eos_generates_max_tokens() -> None:
    config = SimConfig(eos_mean_tokens=8)
    lengths = {_completion(config, max_tokens=200, seed=seed).generation.completion_tokens for seed in range(40)}
    assert len(lengths) > 5 and max(lengths) < 200  # EOS ends them early, at different places
    again = _completion(config, max_tokens=200, seed=3).generation
    assert again == _completion(config, max_tokens=200, seed=3).generation
    assert again.finish_reason == "stop" and again.texts[-1] == ""
    assert _completion(config, max_tokens=200, ignore_eos=True).generation.completion_tokens == 200
    assert parse_completion_request({"prompt": "x", "max_tokens": 200}, SimConfig(ignore_eos=True)).generation.completion_tokens == 200
    with_min = [_completion(config, max_tokens=200, seed=s, min_tokens=50).generation for s in range(20)]
    assert all(g.completion_tokens > 50 for g in with_min)
    # The server's seed draws other positions for the same requests.
    reseeded = {_completion(SimConfig(eos_mean_tokens=8, seed=1), max_tokens=200, seed=s).generation.completion_tokens for s in range(40)}
    assert reseeded != lengths


def test_context_length_checks_name_the_parameter() -> None:
    config = SimConfig(max_model_len=64, default_max_tokens=16, ignore_eos=True)
    prompt_60 = " ".join(["ab"] * 59)  # 59 words + BOS
    assert _completion(config).generation.completion_tokens == 16
    # The default max_tokens fills what is left of the context.
    assert parse_completion_request({"prompt": prompt_60}, config).generation.completion_tokens == 4
    with pytest.raises(ApiError) as too_many:
        parse_completion_request({"prompt": prompt_60, "max_tokens": 5}, config)
    assert too_many.value.param == "max_tokens"
    assert too_many.value.message.startswith("'max_tokens' or 'max_completion_tokens' is too large: 5.")
    assert "(5 > 64 - 60)" in too_many.value.message
    with pytest.raises(ApiError) as too_long:
        parse_completion_request({"prompt": " ".join(["ab"] * 63)}, config)
    assert too_long.value.param == "input_tokens" and "your request has 64 input tokens" in too_long.value.message


# --- the scheduler on a virtual clock -------------------------------------------------------------


class Clock:
    """A virtual engine clock: tests move it by each step's duration."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def run_step(engine: Engine, clock: Clock) -> Step:
    """One engine step, taking exactly its modelled time."""
    step = engine.schedule_step()
    clock.now_s += step.duration_s
    engine.finish_step(step)
    return step


def prompt(length: int, first: int = 100) -> list[int]:
    """A prompt of `length` token ids, unique for each `first`."""
    return [first, *range(1000, 1000 + length - 1)]


def ttft_s(request: SimRequest) -> float:
    assert request.first_token_s is not None
    return request.first_token_s - request.arrival_s


CONFIG = SimConfig(step_ms=10, prefill_token_ms=0.05, decode_token_ms=0.1, enable_prefix_caching=False)


def test_short_prompts_share_one_prefill_step() -> None:
    """Continuous batching: four short prompts together cost one step, not four prefills."""
    clock = Clock()
    engine = Engine(CONFIG, clock=clock)
    alone = engine.submit(prompt(20), 5)
    run_step(engine, clock)
    assert ttft_s(alone) == pytest.approx(CONFIG.step_s(20, 0))
    while engine.num_running:
        run_step(engine, clock)
    together = [engine.submit(prompt(20, first), 5) for first in range(4)]
    step = run_step(engine, clock)
    assert (step.prefill_tokens, step.decode_tokens) == (80, 0)
    assert [ttft_s(r) for r in together] == [pytest.approx(CONFIG.step_s(80, 0))] * 4
    assert ttft_s(together[0]) < 1.5 * ttft_s(alone)  # four prefills in a row would take 4x
    # A request that arrives while a step runs waits for it: up to one step more.
    late = engine.submit(prompt(20, 9), 5)
    clock.now_s += 0.004  # it arrived 4 ms into the step above
    run_step(engine, clock)
    assert ttft_s(late) == pytest.approx(0.004 + CONFIG.step_s(20, 4))


def test_decodes_go_first_and_a_long_prefill_is_chunked() -> None:
    config = SimConfig(step_ms=5, prefill_token_ms=0.2, decode_token_ms=0.1, max_num_batched_tokens=256,
                       enable_prefix_caching=False)  # fmt: skip
    clock = Clock()
    engine = Engine(config, clock=clock)
    decoding = [engine.submit(prompt(10, first), 50) for first in range(2)]
    run_step(engine, clock)
    long = engine.submit(prompt(1000, 7), 3)
    steps = [run_step(engine, clock) for _ in range(4)]
    # Every step: both decodes first (1 token each), then 254 prompt tokens of the long request.
    assert [(s.decode_tokens, s.prefill_tokens) for s in steps] == [(2, 254), (2, 254), (2, 254), (2, 238)]
    assert all(s.prefill_tokens + s.decode_tokens <= 256 for s in steps)
    assert long.first_token_s == pytest.approx(clock.now_s)  # its first token ends the 4th chunk
    assert ttft_s(long) == pytest.approx(3 * config.step_s(254, 2) + config.step_s(238, 2))
    # The decodes kept going through the prefill, one token a (longer) step.
    assert [r.generated for r in decoding] == [5, 5]


def test_budget_smaller_than_the_decodes_defers_the_rest() -> None:
    config = SimConfig(step_ms=1, max_num_batched_tokens=3, enable_prefix_caching=False)
    clock = Clock()
    engine = Engine(config, clock=clock)
    requests = [engine.submit([first], 4) for first in range(5)]
    first = run_step(engine, clock)
    assert [tokens for _, tokens in first.scheduled] == [1, 1, 1] and engine.num_waiting == 2
    second = run_step(engine, clock)
    assert [r for r, _ in second.scheduled] == requests[:3]  # running requests keep their turn
    assert engine.num_waiting == 2


def test_requests_beyond_max_num_seqs_wait_first_come_first_served() -> None:
    config = SimConfig(step_ms=10, max_num_seqs=2, enable_prefix_caching=False)
    clock = Clock()
    engine = Engine(config, clock=clock)
    requests = [engine.submit(prompt(8, first), 2) for first in range(4)]
    run_step(engine, clock)
    assert (engine.num_running, engine.num_waiting) == (2, 2)
    run_step(engine, clock)  # the first two finish
    assert requests[0].finished_s is not None and engine.num_running == 0
    step = run_step(engine, clock)
    assert [r for r, _ in step.scheduled] == requests[2:]
    assert requests[2].queue_s == pytest.approx(2 * config.step_s(0, 0), rel=0.05)
    assert requests[0].token_ready.qsize() == 2


def test_release_frees_a_slot_at_once() -> None:
    clock = Clock()
    engine = Engine(SimConfig(max_num_seqs=1), clock=clock)
    running, waiting = engine.submit([1], 5), engine.submit([2], 5)
    step = engine.schedule_step()
    engine.release(waiting)
    assert engine.num_waiting == 0
    engine.release(running)
    engine.release(running)  # idempotent
    assert engine.num_running == 0
    engine.finish_step(step)
    assert running.generated == 0  # released mid-step: no token


def test_prefix_cache_serves_whole_blocks_and_always_computes_the_last_token() -> None:
    clock = Clock()
    engine = Engine(SimConfig(block_size=16), clock=clock)
    first = engine.submit(prompt(100), 1)
    run_step(engine, clock)
    assert first.cached_tokens == 0
    same = engine.submit(prompt(100), 1)
    run_step(engine, clock)
    assert same.cached_tokens == 96  # 6 whole blocks of 16; the 7th is partial
    exact = engine.submit(prompt(96), 1)
    run_step(engine, clock)
    assert exact.cached_tokens == 80  # fully cached: the last block is computed again for the logits
    shared = engine.submit([*prompt(40), *range(5000, 5060)], 1)
    step = run_step(engine, clock)
    assert shared.cached_tokens == 32 and step.prefill_tokens == 100 - 32
    other = engine.submit(prompt(100, first=101), 1)
    run_step(engine, clock)
    assert other.cached_tokens == 0  # the first token differs: no block matches after it
    off = Engine(SimConfig(enable_prefix_caching=False), clock=clock)
    off.submit(prompt(100), 1)
    run_step(off, clock)
    again = off.submit(prompt(100), 1)
    run_step(off, clock)
    assert again.cached_tokens == 0


def test_prefix_cache_evicts_least_recently_used_blocks() -> None:
    cache = PrefixCache(capacity_blocks=3)
    a, b = block_keys(list(range(32)), 16), block_keys(list(range(100, 132)), 16)
    cache.add(a)
    assert cache.hit_blocks(a, 2) == 2
    cache.add(b)  # a's blocks are the oldest: one of them goes
    assert len(cache) == 3 and cache.hit_blocks(b, 2) == 2
    assert cache.hit_blocks(a, 2) == 0  # a's first block was evicted, so nothing after it matches
    assert cache.hit_blocks(a, 0) == 0
    # A chunked prefill caches the blocks each chunk completes.
    clock = Clock()
    engine = Engine(SimConfig(max_num_batched_tokens=40, block_size=16), clock=clock)
    leader = engine.submit(prompt(100), 1)
    run_step(engine, clock)
    follower = engine.submit(prompt(100), 1)
    run_step(engine, clock)  # the leader's second chunk takes the whole budget: the follower waits
    assert follower.admitted_s is None and leader.computed_tokens == 80
    run_step(engine, clock)  # the leader's last 20 tokens, then the follower, with 5 blocks cached
    assert follower.cached_tokens == 80 and leader.finished_s is not None


def test_engine_reports_steps_and_prefix_lookups() -> None:
    seen: dict[str, list[tuple[int, ...]]] = {"steps": [], "lookups": []}

    class Stats:
        def on_step(self, scheduled_tokens: int) -> None:
            seen["steps"].append((scheduled_tokens,))

        def on_prefix_lookup(self, query_tokens: int, hit_tokens: int) -> None:
            seen["lookups"].append((query_tokens, hit_tokens))

    clock = Clock()
    engine = Engine(SimConfig(), Stats(), clock=clock)
    for _ in range(2):
        engine.submit(prompt(40), 2)
        run_step(engine, clock)
    run_step(engine, clock)
    assert seen["lookups"] == [(40, 0), (40, 32)]
    assert seen["steps"] == [(40,), (1 + 8,), (1,)]


# --- capacity: the formula against the scheduler ---------------------------------------------------


def saturated_rate(config: SimConfig, prompt_tokens: int, output_tokens: int, clients: int,
                   shared_prefix_tokens: int = 0, steps: int = 3000) -> float:  # fmt: skip
    """Requests a second the scheduler completes when `clients` requests are always outstanding."""
    clock = Clock()
    engine = Engine(config, clock=clock)
    serial = iter(range(10**9))

    def new_request() -> SimRequest:
        unique = [10_000 + next(serial)] * (prompt_tokens - shared_prefix_tokens)
        return engine.submit([*range(shared_prefix_tokens), *unique], output_tokens)

    outstanding = [new_request() for _ in range(clients)]
    done_s: list[float] = []
    for _ in range(steps):
        run_step(engine, clock)
        finished = [r for r in outstanding if r.finished_s is not None]
        done_s += [clock.now_s] * len(finished)
        outstanding = [r for r in outstanding if r.finished_s is None] + [new_request() for _ in finished]
    window = done_s[len(done_s) // 3 :]  # past the start-up
    return (len(window) - 1) / (window[-1] - window[0])


@pytest.mark.parametrize(
    ("config", "prompt_tokens", "output_tokens", "shared", "bound"),
    [
        (SimConfig(max_num_seqs=16), 20, 12, 0, "max_num_seqs"),
        (SimConfig(max_num_seqs=16, max_num_batched_tokens=512), 700, 8, 0, "max_num_batched_tokens"),
        (SimConfig(max_num_seqs=64, max_num_batched_tokens=512), 300, 20, 0, "max_num_batched_tokens"),
        (SimConfig(max_num_seqs=16, max_num_batched_tokens=512), 700, 8, 600, "max_num_seqs"),
        (SimConfig(step_ms=2, prefill_token_ms=0.5, decode_token_ms=0.05, max_num_seqs=8), 100, 30, 0, "max_num_seqs"),
    ],
)
def test_capacity_matches_a_saturated_scheduler(
    config: SimConfig, prompt_tokens: int, output_tokens: int, shared: int, bound: str
) -> None:
    model = capacity(config, prompt_tokens, output_tokens, shared_prefix_tokens=shared)
    assert model.bound == bound
    measured = saturated_rate(config, prompt_tokens, output_tokens, 2 * config.max_num_seqs, shared)
    assert measured == pytest.approx(model.requests_per_s, rel=0.03)
    assert model.output_tokens_per_s == pytest.approx(model.requests_per_s * output_tokens)


def test_capacity_with_fewer_clients_than_seats() -> None:
    config = SimConfig(max_num_seqs=64)
    model = capacity(config, 20, 12, concurrency=4)
    assert model.requests_per_s < capacity(config, 20, 12).requests_per_s
    assert saturated_rate(config, 20, 12, clients=4) == pytest.approx(model.requests_per_s, rel=0.03)
    assert model.running == pytest.approx(4, rel=0.01)


def test_cached_prompt_tokens_and_idle_latency() -> None:
    config = SimConfig(step_ms=10, prefill_token_ms=0.1, decode_token_ms=0.5, max_num_batched_tokens=100)
    assert cached_prompt_tokens(config, 100, 40) == 32
    assert cached_prompt_tokens(config, 33, 100) == 32 and cached_prompt_tokens(config, 32, 100) == 16
    assert cached_prompt_tokens(SimConfig(enable_prefix_caching=False), 100, 40) == 0
    idle = idle_latency(config, 250, 5)
    assert idle.ttft_s == pytest.approx((3 * 10 + 250 * 0.1) / 1000)
    assert idle.tpot_s == pytest.approx(0.0105) and idle.e2e_s == pytest.approx(idle.ttft_s + 4 * 0.0105)
    clock = Clock()
    engine = Engine(config, clock=clock)
    alone = engine.submit(prompt(250), 5)
    while alone.finished_s is None:
        run_step(engine, clock)
    assert ttft_s(alone) == pytest.approx(idle.ttft_s) and alone.finished_s == pytest.approx(idle.e2e_s)
    with pytest.raises(ValueError):
        capacity(config, 0, 5)


# --- the real-time loop and metrics -------------------------------------------------------------------


def test_engine_loop_keeps_time() -> None:
    """Real time: the first token after the prefill step, then one a decode step (2-core tolerance)."""
    config = SimConfig(step_ms=10, prefill_token_ms=0, decode_token_ms=0)

    async def scenario() -> list[float]:
        engine = Engine(config)
        loop_task = asyncio.create_task(engine.run())
        # The engine idles first: idle time must not shorten the next step.
        await asyncio.sleep(0.015)
        request = engine.submit([1, 2, 3], output_tokens=21)
        stamps_s = []
        for _ in range(21):
            await request.next_token()
            stamps_s.append(time.monotonic() - request.arrival_s)
        loop_task.cancel()
        return stamps_s

    stamps_s = asyncio.run(scenario())
    assert stamps_s[0] == pytest.approx(0.010, rel=0.3)
    assert stamps_s[-1] - stamps_s[0] == pytest.approx(20 * 0.010, rel=0.2)


def test_two_servers_in_one_process_keep_separate_registries() -> None:
    first = SimMetrics(SimConfig(model_name="a"))
    second = SimMetrics(SimConfig(model_name="b"))
    first.generation_tokens.inc(3)
    families = {f.name: f for f in text_string_to_metric_families(second.exposition().decode())}
    assert families["vllm:generation_tokens"].samples[0].value == 0
    assert families["vllm:generation_tokens"].samples[0].labels["model_name"] == "b"
    assert buckets_1_2_5(8192) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

