"""larder.aio: the Cache API as coroutines, async memoize with single flight, and an event loop
that keeps running while calls wait on a stopped shared owner."""

import asyncio
import os
import signal
import time

import pytest

import larder
import larder.aio

from test_larder import _wait_until_stopped, shared_owner


def run(coro):
    return asyncio.run(coro)


async def call_together(c, fn, arg, n, gate):
    """n concurrent calls of fn(arg), let go (gate) once all have joined one computation; their
    results, exceptions included."""
    tasks = [asyncio.create_task(fn(arg)) for _ in range(n)]
    assert await c._await_followers(fn.cache_key(arg), n - 1, 30)
    gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_every_call_is_a_coroutine_on_one_store(tmp_path):
    async def main():
        async with larder.aio.Cache(tmp_path / "c", strategy="shared", default_ttl=100) as c:
            assert await c.set("k", {"a": [1, 2]}, expire=60, category="cat")
            assert await c.get("k") == {"a": [1, 2]}
            assert await c.get("absent", "dflt") == "dflt"
            e = await c.get_entry("k")
            assert e.category == "cat" and e.value == {"a": [1, 2]}
            assert (await c.metadata("k")).category == "cat"
            assert await c.set_many({"m1": 1, "m2": b"two"}) == [True, True]
            assert await c.get_many(["m1", "m2", "nope"]) == [1, b"two", None]
            assert await c.add("k", "other") is False
            assert await c.add("new", "v") is True
            assert await c.incr("n", 5) == 5
            assert await c.incr("n") == 6
            assert await c.touch("k", 10)
            assert await c.compare_and_set("new", "v", "w")
            assert await c.get_and_touch("new", 30) == "w"
            assert await c.set_all({"a1": 1, "a2": 2})
            assert sorted(await c.keys()) == ["a1", "a2", "k", "m1", "m2", "n", "new"]
            assert await c.delete("a1") is True
            assert await c.invalidate("a2") is True
            assert await c.invalidate_category("cat") == 1
            assert await c.invalidate_pattern("m*") == 2
            assert await c.cleanup() == 4
            stats = await c.stats()
            assert stats.total_entries == 2 and stats.hit_count >= 5
            await c.flush()
            assert c.directory == str(tmp_path / "c")
            assert not c.degraded
            assert await c.clear() == 2
        with pytest.raises(ValueError):
            await c.get("k")

    run(main())
    # The same store as larder.Cache sees it.
    with larder.Cache(tmp_path / "c", strategy="shared") as sync:
        assert sync.keys() == []


def test_values_are_shared_with_the_sync_api(tmp_path):
    with larder.Cache(tmp_path / "c", strategy="shared") as sync:
        sync.set("from-sync", (1, "x"))

        async def main():
            c = larder.aio.Cache(tmp_path / "c", strategy="shared")
            assert await c.get("from-sync") == (1, "x")
            assert await c.set("from-aio", [3])
            await c.close()

        run(main())
        assert sync.get("from-aio") == [3]


def test_bad_options_raise_at_open(tmp_path):
    with pytest.raises(larder.ConfigError):
        larder.aio.Cache(tmp_path, max_workers=0)

    async def main():
        with pytest.raises(larder.ConfigError):
            await larder.aio.Cache(tmp_path / "c", max_entries=-1).open()

    run(main())


def test_memoize_computes_once_for_concurrent_callers(tmp_path):
    calls = []

    async def main():
        async with larder.aio.Cache(tmp_path / "c", strategy="shared") as c:
            gate = asyncio.Event()

            @c.memoize(expire=60)
            async def slow(x):
                calls.append(x)
                await gate.wait()  # every caller has joined before the leader finishes
                return x * 2

            assert await call_together(c, slow, 21, 20, gate) == [42] * 20
            assert calls == [21]
            assert await slow(21) == 42  # a hit now
            assert calls == [21]
            # The key is the sync memoize's: both share results.
            assert await c.get(slow.cache_key(21)) == (42,)

    run(main())


def test_memoize_passes_an_exception_to_every_caller_and_caches_nothing(tmp_path):
    calls = []

    async def main():
        async with larder.aio.Cache(tmp_path / "c", strategy="shared") as c:
            gate = asyncio.Event()

            @c.memoize()
            async def failing(x):
                calls.append(x)
                await gate.wait()
                raise KeyError(x)

            results = await call_together(c, failing, 1, 5, gate)
            assert all(isinstance(r, KeyError) for r in results)
            assert calls == [1]
            assert await c.get(failing.cache_key(1), "none") == "none"
            with pytest.raises(KeyError):
                await failing(1)
            assert calls == [1, 1]

    run(main())


def test_memoize_takes_only_async_functions(tmp_path):
    c = larder.aio.Cache(tmp_path / "c")
    with pytest.raises(TypeError):
        c.memoize()(lambda x: x)


def test_the_event_loop_keeps_running_while_calls_wait_on_a_stopped_owner(tmp_path):
    root = str(tmp_path / "shared")

    async def main(owner):
        c = larder.aio.Cache(root, strategy="shared", lock_timeout=1.5)
        assert await c.get("k") == "v"
        os.kill(owner.pid, signal.SIGSTOP)
        _wait_until_stopped(owner.pid)
        ticks = []
        stop = asyncio.Event()

        async def heartbeat():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        start = time.monotonic()
        results = await asyncio.gather(*(c.get("k", "timed out") for _ in range(100)))
        waited = time.monotonic() - start
        stop.set()
        await beat
        # Every call came back (a miss within lock_timeout, not a hang) ...
        assert results == ["timed out"] * 100
        assert waited >= 1.0
        # ... and the loop ran all along: no gap between heartbeats near a call's 1.5 s wait.
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert len(ticks) > waited / 0.01 / 4
        assert max(gaps) < 0.75
        os.kill(owner.pid, signal.SIGCONT)
        await c.close()

    with shared_owner(root) as owner:
        run(main(owner))
