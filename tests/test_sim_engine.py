"""The engine model's shape, asserted as relationships, not absolute times.

Most tests drive the step engine in-process on a virtual clock (schedule → step time → apply),
so they are exact and fast; the last ones check the same shape over real HTTP.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from aichaos.fixtures.llm_sim.engine import StepEngine, StepLag
from aichaos.fixtures.llm_sim.kv_cache import BlockPool
from aichaos.fixtures.llm_sim.metrics import SimMetrics
from aichaos.fixtures.llm_sim.profiles import StepEngineConfig, StepTime
from aichaos.fixtures.llm_sim.sequence import Sequence
from aichaos.fixtures.llm_sim.tokenizer import TextGenerator

STEP = StepTime(c0=0.005, c_prefill=0.00003, c_decode=0.00005, c_kv=0.00000003)


def engine(**overrides) -> StepEngine:
    cfg = {"kind": "step", "max_num_batched_tokens": 8192, "max_num_seqs": 256,
           "block_size": 16, "num_gpu_blocks": 30000, "step_time": STEP, **overrides}  # fmt: skip
    return StepEngine(StepEngineConfig(**cfg), SimMetrics("m", 32768))


def seq(prompt_ids: list[int], max_new: int = 20, arrival: float = 0.0) -> Sequence:
    return Sequence("r", prompt_ids, TextGenerator("random", 1, ["x"]), max_new, [], arrival)


def prompt(n: int, salt: int = 0) -> list[int]:
    return [(i * 7919 + salt * 104729) % 100_000 for i in range(n)]


def run(eng: StepEngine, seqs: list[Sequence], max_steps: int = 200_000) -> float:
    """Submit everything at t=0 and step the engine on a virtual clock until all finish."""
    for s in seqs:
        eng.submit(s)
    t = 0.0
    for _ in range(max_steps):
        if not (eng.running or eng.waiting):
            return t
        plan = eng._schedule(t)
        assert plan, "engine stalled with work left"
        t += eng._step_time(plan)
        eng._apply(plan, t)
    raise AssertionError("engine did not finish")


def counter(eng: StepEngine, name: str) -> float:
    return eng.metrics.registry.get_sample_value(name, {"model_name": "m", "engine": "0"})


def ttft(s: Sequence) -> float:
    return s.first_token - s.arrival


def mean_itl(seqs: list[Sequence]) -> float:
    return statistics.mean((s.last_token - s.first_token) / (len(s.output) - 1) for s in seqs)


def test_ttft_rises_with_prompt_length():
    short, long = seq(prompt(100)), seq(prompt(6000))
    run(engine(), [short])
    run(engine(), [long])
    assert ttft(long) > ttft(short) + 5000 * STEP.c_prefill * 0.9


def test_long_prompt_is_prefilled_in_chunks_of_the_budget():
    s = seq(prompt(20_000), max_new=2)
    eng = engine(max_num_batched_tokens=8192)
    run(eng, [s])
    expected = 3 * STEP.c0 + 20_000 * STEP.c_prefill
    assert abs(ttft(s) - expected) < 1e-9


def test_ttft_rises_with_queue_depth():
    means = []
    for n in (1, 64, 600):
        seqs = [seq(prompt(500, salt=i), max_new=50) for i in range(n)]
        run(engine(), seqs)
        means.append(statistics.mean(ttft(s) for s in seqs))
    assert means[0] < means[1] < means[2]
    # beyond max_num_seqs the queue waits for whole requests to finish
    assert means[2] > 3 * means[1]


def test_itl_rises_with_batch_size():
    itls = []
    for n in (1, 32, 200):
        seqs = [seq(prompt(200, salt=i), max_new=100) for i in range(n)]
        run(engine(), seqs)
        itls.append(mean_itl(seqs))
    assert itls[0] < itls[1] < itls[2]


def test_itl_rises_with_context():
    short = [seq(prompt(100, salt=i), max_new=50) for i in range(32)]
    long = [seq(prompt(4000, salt=i), max_new=50) for i in range(32)]
    run(engine(), short)
    run(engine(), long)
    assert mean_itl(long) > mean_itl(short)


def test_max_num_seqs_caps_the_running_set():
    eng = engine(max_num_seqs=4)
    for i in range(10):
        eng.submit(seq(prompt(50, salt=i)))
    eng._schedule(0.0)
    assert len(eng.running) == 4 and len(eng.waiting) == 6


def test_small_kv_pool_preempts_and_recomputes():
    eng = engine(num_gpu_blocks=60)
    seqs = [seq(prompt(100, salt=i), max_new=150) for i in range(8)]
    run(eng, seqs)
    preemptions = counter(eng, "vllm:num_preemptions_total")
    assert preemptions > 0
    assert all(len(s.output) == 150 and s.finish_reason == "length" for s in seqs)
    assert eng.pool.usage == 0 and eng.pool.num_free == 60
    # a big pool runs the same work without preemption, and faster
    big = engine()
    seqs_big = [seq(prompt(100, salt=i), max_new=150) for i in range(8)]
    assert run(big, seqs_big) < run(
        engine(num_gpu_blocks=60), [seq(prompt(100, salt=i), 150) for i in range(8)]
    )
    assert counter(big, "vllm:num_preemptions_total") == 0


def test_prefix_cache_hits_lower_ttft():
    shared = prompt(2000)
    eng = engine()
    first = seq([*shared, 1, 2, 3])
    run(eng, [first])
    second = seq([*shared, 4, 5, 6])
    run(eng, [second])
    assert ttft(second) < ttft(first) / 3
    assert counter(eng, "vllm:prefix_cache_hits_total") == 2000 // 16 * 16
    assert counter(eng, "vllm:prefix_cache_queries_total") == 2 * 2003


def test_block_pool_evicts_least_recently_used_cached_blocks():
    pool = BlockPool(num_blocks=4, block_size=2)
    a, b = pool.block_hashes([1, 2, 3, 4]), pool.block_hashes([9, 9])
    pool.allocate(2)
    for h in a:
        pool.promote(h)
    pool.free(0, a)
    pool.allocate(1)
    pool.promote(b[0])
    pool.free(0, b)
    assert pool.num_free == 4 and pool.lookup_prefix(a) == a
    pool.allocate(3)  # needs evicting two cached blocks: the oldest (a) go first
    assert pool.lookup_prefix(b) == b and pool.lookup_prefix(a) == []
    pool.resize(2)
    assert pool.usage == 1.0


def test_engine_loop_runs_on_the_real_clock():
    async def go():
        eng = engine()
        eng.start()
        s = seq(prompt(100), max_new=20)
        eng.submit(s)
        got = [piece async for batch in s.batches() for piece in batch]
        await eng.stop()
        return eng, s, got

    eng, s, got = asyncio.run(go())
    assert len(got) == 20 and s.finish_reason == "length" and eng.steps >= 20
    assert eng.lag.summary()["steps"] == eng.steps


# ---- the same shape over real HTTP ----------------------------------------------------


async def _ttfts(url: str, n: int, prompt_words: int) -> list[float]:
    async def one(client, i):
        body = {"prompt": f"r{i} " + "word " * prompt_words, "max_tokens": 20,
                "ignore_eos": True, "stream": True}  # fmt: skip
        start = time.perf_counter()
        async with client.stream("POST", f"{url}/v1/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    return time.perf_counter() - start
        raise AssertionError("no token")

    limits = httpx.Limits(max_connections=n + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return list(await asyncio.gather(*(one(client, i) for i in range(n))))


def test_http_ttft_rises_with_prompt_length_and_load(h100_sim):
    light_short = statistics.median(asyncio.run(_ttfts(h100_sim.url, 5, 10)))
    light_long = statistics.median(asyncio.run(_ttfts(h100_sim.url, 5, 6000)))
    assert light_long > light_short
    heavy = statistics.median(asyncio.run(_ttfts(h100_sim.url, 150, 1500)))
    light = statistics.median(asyncio.run(_ttfts(h100_sim.url, 3, 1500)))
    assert heavy > light


def test_step_lag_keeps_the_last_steps_in_a_fixed_ring():
    lag = StepLag(keep=5)
    for i in range(8):
        lag.add(i / 1000)
    assert lag.summary() == {"steps": 5, "p50_s": 0.005, "p99_s": 0.007, "max_s": 0.007}
    lag.reset()
    assert lag.summary() == {"steps": 0}


def hist(eng: StepEngine, name: str, suffix: str) -> float:
    return counter(eng, f"{name}{suffix}")


def test_per_request_preemptions_and_time_per_output_token():
    eng = engine(num_gpu_blocks=60)
    seqs = [seq(prompt(100, salt=i), max_new=150) for i in range(8)]
    run(eng, seqs)
    assert hist(eng, "vllm:request_num_preemptions", "_count") == 8
    total = counter(eng, "vllm:num_preemptions_total")
    assert total > 0
    assert hist(eng, "vllm:request_num_preemptions", "_sum") == total
    assert sum(s.num_preemptions for s in seqs) == total
    tpot = sum((s.last_token - s.first_token) / 149 for s in seqs)
    assert abs(hist(eng, "vllm:request_time_per_output_token_seconds", "_sum") - tpot) < 1e-9


def test_cached_and_computed_prompt_tokens_and_tokens_per_step():
    shared = prompt(2000)
    eng = engine()
    run(eng, [seq([*shared, 1, 2, 3], max_new=5)])
    run(eng, [seq([*shared, 4, 5, 6], max_new=5)])
    cached = 2000 // 16 * 16
    assert counter(eng, "vllm:prompt_tokens_cached_total") == cached
    computed = 2 * 2003 - cached
    assert hist(eng, "vllm:request_prefill_kv_computed_tokens", "_sum") == computed

    def by_source(name: str, source: str) -> float:
        labels = {"model_name": "m", "engine": "0", "source": source}
        return eng.metrics.registry.get_sample_value(name, labels)

    assert by_source("vllm:prompt_tokens_by_source_total", "local_cache_hit") == cached
    assert by_source("vllm:prompt_tokens_by_source_total", "local_compute") == computed
    assert by_source("vllm:prompt_tokens_cached_by_source_total", "device") == cached
    # each step that produced output: the prompt tokens its finished prefills computed plus
    # the tokens sampled; the chunks of a prefill still running are not observed
    assert hist(eng, "vllm:iteration_tokens_total", "_sum") == computed + 2 * 5
    assert hist(eng, "vllm:iteration_tokens_total", "_count") == 2 * 5


def test_waiting_by_reason_is_the_waiting_queue():
    eng = engine(max_num_seqs=1)
    for i in range(3):
        eng.submit(seq(prompt(10, salt=i)))
    eng._apply(eng._schedule(0.0), 0.01)
    eng.metrics.on_step(eng)
    labels = {"model_name": "m", "engine": "0"}
    value = eng.metrics.registry.get_sample_value
    assert value("vllm:num_requests_waiting_by_reason", {**labels, "reason": "capacity"}) == 2
    assert value("vllm:num_requests_waiting_by_reason", {**labels, "reason": "deferred"}) == 0
    assert value("vllm:num_requests_waiting", labels) == 2
