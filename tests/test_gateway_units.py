"""The gateway's mechanisms on a controlled clock: breaker, token bucket, shedding, cache, and
what a replica is sent."""

from __future__ import annotations

import asyncio
import random

import fakeredis
import pytest

from aichaos.fixtures.gateway.app import Gateway
from aichaos.fixtures.gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from aichaos.fixtures.gateway.cache import MemoryCache, RedisCache, cache_key
from aichaos.fixtures.gateway.config import ConfigError, load_config, parse_replica
from aichaos.fixtures.gateway.limits import Shedder, TokenBucket
from aichaos.fixtures.gateway.pool import ReplicaPool, ReplicaState


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_on_consecutive_failures_and_recovers_through_probes():
    clock = Clock()
    b = CircuitBreaker("llm", consecutive=3, open_s=60, probes=3, clock=clock)
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow()
    clock.now = 59.9
    assert not b.allow()
    clock.now = 60.0
    assert [b.allow() for _ in range(4)] == [True, True, True, False]  # three probes
    assert b.state == HALF_OPEN
    b.success()
    b.success()
    assert b.state == HALF_OPEN
    b.success()
    assert b.state == CLOSED and b.allow()


def test_breaker_half_open_failure_reopens():
    clock = Clock()
    b = CircuitBreaker("llm", consecutive=1, open_s=5, clock=clock)
    b.failure()
    clock.now = 5
    assert b.allow() and b.state == HALF_OPEN
    b.failure()
    assert b.state == OPEN and not b.allow()


def test_breaker_opens_on_error_ratio_over_the_window():
    clock = Clock()
    b = CircuitBreaker("llm", consecutive=100, error_ratio=0.1, window_s=10, min_requests=10,
                       clock=clock)  # fmt: skip
    for i in range(9):
        clock.now = i * 0.1
        b.success()
    b.failure()  # 1 of 10 = 10%
    assert b.state == OPEN


def test_breaker_forgets_outside_the_window():
    clock = Clock()
    b = CircuitBreaker("llm", consecutive=100, error_ratio=0.5, window_s=10, min_requests=4,
                       clock=clock)  # fmt: skip
    b.failure()
    b.failure()
    clock.now = 11
    b.success()
    b.success()
    b.success()
    b.failure()  # old failures fell out: 1 of 4
    assert b.state == CLOSED


def test_token_bucket_limits_per_minute_and_says_when():
    clock = Clock()
    bucket = TokenBucket(20, clock=clock)
    assert [bucket.take() for _ in range(20)] == [0.0] * 20
    wait = bucket.take()
    assert wait == pytest.approx(3.0)  # 20/min → one every 3 s
    clock.now = 3.0
    assert bucket.take() == 0.0


def test_shedder_drops_free_first_and_enterprise_last():
    shed = Shedder({"free": 2, "pro": 4, "enterprise": 8})
    for _ in range(3):
        shed.enter()
    assert not shed.admit("free") and shed.admit("pro") and shed.admit("enterprise")
    for _ in range(3):
        shed.enter()
    assert not shed.admit("pro") and shed.admit("enterprise")


def test_memory_cache_lru_and_ttl(monkeypatch):
    async def go():
        cache = MemoryCache(max_entries=2, ttl_s=10)
        await cache.put("a", {"v": 1})
        await cache.put("b", {"v": 2})
        assert await cache.get("a") == {"v": 1}
        await cache.put("c", {"v": 3})  # evicts b, the least recently used
        assert await cache.get("b") is None and await cache.get("a") == {"v": 1}
        import aichaos.fixtures.gateway.cache as mod

        real = mod.time.monotonic
        monkeypatch.setattr(mod.time, "monotonic", lambda: real() + 11)
        assert await cache.get("a") is None

    asyncio.run(go())


def test_memory_cache_drops_expired_answers_when_new_ones_arrive(monkeypatch):
    import aichaos.fixtures.gateway.cache as mod

    now = [1000.0]
    monkeypatch.setattr(mod.time, "monotonic", lambda: now[0])

    async def go():
        cache = MemoryCache(max_entries=100, ttl_s=10)
        for i in range(5):
            await cache.put(f"old{i}", {"v": i})
        now[0] += 11  # the first five are past their TTL
        await cache.put("new", {"v": 9})
        assert len(cache) == 1 and await cache.get("new") == {"v": 9}

    asyncio.run(go())


def test_redis_cache_round_trip(monkeypatch):
    server = fakeredis.FakeServer()
    import redis.asyncio as redis

    monkeypatch.setattr(redis, "from_url", lambda url: fakeredis.FakeAsyncRedis(server=server))

    async def go():
        cache = RedisCache("redis://127.0.0.1:6379/0", ttl_s=30)
        key = cache_key("m", [{"role": "user", "content": "q"}], {"max_tokens": 5})
        assert await cache.get(key) is None
        await cache.put(key, {"lines": ["data: {}"]})
        assert await cache.get(key) == {"lines": ["data: {}"]}
        await cache.close()

    asyncio.run(go())


def test_cache_key_ignores_nothing_that_changes_the_answer():
    msgs = [{"role": "user", "content": "q"}]
    assert cache_key("m", msgs, {"max_tokens": 5}) == cache_key("m", msgs, {"max_tokens": 5})
    assert cache_key("m", msgs, {"max_tokens": 5}) != cache_key("m", msgs, {"max_tokens": 6})


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "gw.yaml"
    bad.write_text("retry: {attempts: 0}\n")
    with pytest.raises(ConfigError, match=r"gw.yaml: retry.attempts: "):
        load_config(bad, {})
    bad.write_text("api_keys: {k1: platinum}\n")
    with pytest.raises(ConfigError, match="tier 'platinum'"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="expected ID=http"):
        parse_replica("r1=localhost:80")


def test_settings_on_the_command_line_merge_into_the_file(tmp_path):
    file = tmp_path / "gw.yaml"
    file.write_text("llm_breaker: {consecutive: 4}\nrate_limits_per_min: {free: 5}\n")
    config = load_config(file, {}, ["llm_breaker.open_s=10", "rate_limits_per_min.free=180"])
    assert config.llm_breaker.open_s == 10 and config.llm_breaker.consecutive == 4
    assert config.rate_limits_per_min["free"] == 180
    assert config.rate_limits_per_min["enterprise"] == 2000  # the other tiers keep defaults
    config = load_config(None, {}, ["rate_limits_per_min.free=1"])
    assert config.rate_limits_per_min == {"free": 1, "pro": 200, "enterprise": 2000}
    with pytest.raises(ConfigError, match=r"--set: llm_breaker.open_s: "):
        load_config(None, {}, ["llm_breaker.open_s=-1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, {}, ["open_s"])


def test_a_replica_is_sent_its_own_model_name_not_the_gateways():
    async def bodies(config):
        gateway = Gateway(config)
        try:
            return gateway._for_replica({"model": "aichaos-rag", "prompt": "p"})
        finally:
            await gateway.close()

    served = load_config(None, {}, ["model=tiny"])
    assert asyncio.run(bodies(served)) == {"model": "tiny", "prompt": "p"}
    assert asyncio.run(bodies(load_config(None, {}))) == {"prompt": "p"}


def test_calls_that_report_nothing_skip_open_breakers_and_take_no_probe_slot():
    clock = Clock()
    replicas = [
        ReplicaState(rid, f"http://127.0.0.1:{i}", CircuitBreaker(rid, consecutive=1, open_s=10,
                                                                  probes=1, clock=clock))
        for i, rid in enumerate(("r1", "r2", "r3"))
    ]  # fmt: skip
    pool = ReplicaPool(replicas, random.Random(0))
    replicas[0].breaker.failure()  # r1 open
    replicas[2].outstanding = 5
    assert [r.id for r in pool.worth_trying()] == ["r2", "r3"]
    clock.now = 10.0  # r1 may half-open: its one probe slot stays for a call that reports back
    assert [r.id for r in pool.worth_trying()] == ["r1", "r2", "r3"]
    assert [r.id for r in pool.worth_trying()] == ["r1", "r2", "r3"]
    assert pool.pick({"r2", "r3"}).id == "r1" and replicas[0].breaker.state == HALF_OPEN
