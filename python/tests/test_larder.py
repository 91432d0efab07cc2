"""The Python binding: every method on the RocksDB and memory strategies, value kinds, TTLs with a
manual clock, memoize single-flight, C++ interoperability through cachectl, several processes on
one shared cache (spawn and fork), the GIL released while a call waits, bad arguments."""

import contextlib
import multiprocessing
import os
import signal
import subprocess
import threading
import time

import pytest

import larder

CACHECTL = os.environ.get("LARDER_CACHECTL")


@pytest.fixture(params=["process_isolated", "disabled"])
def cache(request, tmp_path):
    clock = larder.ManualClock(1_800_000_000)
    c = larder.Cache(tmp_path / "cache", strategy=request.param, clock=clock, default_ttl=100)
    c.test_clock = clock
    yield c
    c.close()


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


def test_values_round_trip_with_their_type(cache):
    values = {
        "bytes": b"\x00\xffraw",
        "empty": b"",
        "str": "héllo wörld ☃",
        "int": 42,
        "none": None,
        "list": [1, "two", 3.0],
        "dict": {"a": {"b": [1, 2]}},
        "object": Point(1, 2),
        "bytearray": bytearray(b"ba"),
    }
    for k, v in values.items():
        assert cache.set(k, v) is True
    for k, v in values.items():
        got = cache.get(k)
        expected = bytes(v) if isinstance(v, bytearray) else v
        assert got == expected and type(got) is type(expected), k
    assert cache.get(b"str") == "héllo wörld ☃"  # bytes keys are the same keys


def test_mapping_protocol(cache):
    cache["k"] = "v"
    assert cache["k"] == "v"
    assert "k" in cache and "missing" not in cache and 3 not in cache
    with pytest.raises(KeyError):
        cache["missing"]
    del cache["k"]
    with pytest.raises(KeyError):
        del cache["k"]
    cache.set_many({"a": 1, "b": b"2", "c": "3"})
    assert len(cache) == 3
    assert sorted(cache) == ["a", "b", "c"]
    assert cache.get_many(["a", "x", "b", "c"]) == [1, None, b"2", "3"]


def test_every_operation(cache):
    assert cache.set("k1", "v", category="red", metadata={"owner": "me"})
    assert cache.set("k2", "v", category="red")
    assert cache.set("user:1:name", "ann")
    assert cache.set("user:2:name", "bob")
    e = cache.get_entry("k1")
    assert e.value == "v" and e.status == "fresh" and e.category == "red"
    assert e.metadata == {"owner": "me"}  # the value kind is not shown
    assert e.size == 1 and e.access_count >= 1
    assert e.expires_at == pytest.approx(e.created_at + 100)
    assert cache.metadata("k1").category == "red"
    assert cache.keys("red") == ["k1", "k2"]
    assert cache.invalidate_pattern("user:*:name") == 2
    assert cache.get("user:1:name") is None
    assert cache.get_entry("user:1:name", include_stale=True).status == "invalid"
    assert cache.invalidate("k2") is True
    assert cache.invalidate("k2") is False
    assert cache.invalidate_category("red") == 1
    assert cache.cleanup() == 4
    assert cache.keys() == []
    assert cache.set_many([("a", 1), ("b", 2)], category="blue") == [True, True]
    assert cache.clear("blue") == 2
    assert cache.set("c", 3)
    assert cache.delete("c") is True and cache.delete("c") is False
    cache.set("d", 4)
    assert cache.clear() == 1
    cache.flush()
    s = cache.stats()
    assert s.set_count == 8 and s.hit_count >= 1 and s.miss_count >= 1
    assert s.invalidation_count == 4
    assert 0 <= s.hit_rate <= 100 and s.hit_rate + s.miss_rate == pytest.approx(100)
    assert set(s.as_dict()) >= {"hit_count", "miss_count", "total_entries", "categories"}
    assert cache.degraded is False and cache.last_error == ""
    if cache.directory is not None:
        assert os.path.isdir(cache.directory)


def test_a_sub_second_ttl_expires_instead_of_never(cache):
    """expire=0.5 truncated to 0, which means "never expires": still fresh after 2.2 s."""
    clock = cache.test_clock
    assert cache.set("half", "v", expire=0.5)
    assert cache.set("tiny", "v", expire=0.0001)  # below 1 ms: 1 ms, never "never"
    assert cache.set("one-and-a-half", "v", expire=1.5)
    half = cache.get_entry("half")
    assert half.expires_at - half.created_at == pytest.approx(0.5, abs=1e-6)
    clock.advance(0.001)
    assert cache.get("tiny") is None
    clock.advance(0.498)  # 499 ms
    assert cache.get("half") == "v"
    clock.advance(0.001)  # 500 ms: stale, exact to the millisecond
    assert cache.get("half") is None
    clock.advance(0.999)  # 1.499 s: 1.5 s was not cut to 1 s
    assert cache.get("one-and-a-half") == "v"
    clock.advance(0.001)
    assert cache.get("one-and-a-half") is None
    assert cache.touch("forever-not", expire=0.2) is False
    assert cache.set("t", "v", expire=10)
    assert cache.touch("t", expire=0.2)
    clock.advance(0.199)
    assert cache.get("t") == "v"
    clock.advance(0.001)
    assert cache.get("t") is None
    for bad in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError):
            cache.set("bad", "v", expire=bad)
        with pytest.raises(ValueError):
            cache.touch("t", expire=bad)


def test_short_real_ttls_expire(tmp_path):
    """With the real clock: a 50 ms TTL is a miss once 50 ms have passed, not after a second."""
    import time
    c = larder.Cache(tmp_path, strategy="disabled")
    try:
        start = time.monotonic()
        assert c.set("k", "v", expire=0.05)
        assert c.set("long", "v", expire=60)
        while c.get("k") is not None:
            assert time.monotonic() - start < 0.9, "a 50 ms TTL still fresh after 0.9 s"
            time.sleep(0.005)
        assert time.monotonic() - start >= 0.05
        assert c.get("long") == "v"
    finally:
        c.close()


def test_ttl_fresh_stale_expired_with_a_manual_clock(cache):
    clock = cache.test_clock
    assert cache.set("t", "v", expire=10)
    assert cache.set("forever", "v", expire=0)
    clock.advance(11)
    assert cache.get("t") is None
    assert cache.get("t", include_stale=True) == "v"
    assert cache.get_entry("t", include_stale=True).status == "stale"
    assert "t" not in cache
    clock.advance(10)  # past stale_factor (2) x ttl
    assert cache.get_entry("t", include_stale=True) is None or \
        cache.get_entry("t", include_stale=True).status == "expired"
    clock.advance(10**6)
    assert cache.get("forever") == "v"
    assert cache.get_entry("forever").expires_at is None


def test_memoize_computes_once_for_concurrent_callers(cache):
    calls = []
    gate = threading.Event()

    @cache.memoize(expire=60)
    def slow(x, scale=1):
        calls.append(x)
        gate.wait(5)
        return {"x": x * scale}

    results = []
    threads = [threading.Thread(target=lambda: results.append(slow(3, scale=2))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(10)
    assert calls == [3]
    assert results == [{"x": 6}] * 8
    assert slow(3, scale=2) == {"x": 6} and calls == [3]  # now from the cache
    assert slow(4) == {"x": 4} and calls == [3, 4]

    @cache.memoize()
    def returns_none():
        calls.append("none")
        return None

    assert returns_none() is None and returns_none() is None
    assert calls.count("none") == 1  # None is a result, cached like any other

    @cache.memoize(name="fails")
    def fails():
        calls.append("fail")
        raise RuntimeError("boom")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            fails()
    assert calls.count("fail") == 2  # exceptions are not cached


def test_bad_arguments_raise_value_error_naming_the_field(tmp_path):
    with pytest.raises(larder.ConfigError, match="strategy"):
        larder.Cache(tmp_path, strategy="bogus")
    with pytest.raises(ValueError, match="eviction_policy"):
        larder.Cache(tmp_path, eviction_policy="random")
    # (every policy name is accepted, s3fifo included)
    for name in ("lru", "lfu", "fifo", "ttl", "s3fifo"):
        c = larder.Cache(tmp_path / name, eviction_policy=name, max_entries=2)
        for k in ("a", "b", "c"):
            c.set(k, k)  # the third evicts (ttl: is refused)
        assert len(c) == 2
    with pytest.raises(ValueError, match="max_entries"):
        larder.Cache(tmp_path, max_entries=-1)
    with pytest.raises(ValueError, match="stale_factor"):
        larder.Cache(tmp_path, strategy="disabled", stale_factor=0.5)
    with pytest.raises(ValueError, match="default_ttl"):
        larder.Cache(tmp_path, strategy="disabled", default_ttl=-1)
    assert issubclass(larder.ConfigError, ValueError)
    with larder.Cache(strategy="disabled") as c:
        with pytest.raises(ValueError, match="expire"):
            c.set("k", "v", expire=-1)
        with pytest.raises(TypeError, match="key"):
            c.set(3, "v")
        with pytest.raises(ValueError, match="pattern"):
            c.invalidate_pattern("")
        with pytest.raises(ValueError, match="reserved"):
            c.set("k", "v", metadata={"larder.kind": "x"})
        assert c.set("", "v") is False  # refused, as in C++
        assert c.set("k", "v", category="a\0b") is False
    with pytest.raises(ValueError, match="closed"):
        c.get("k")


def test_unsafe_root_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(larder.ConfigError, match="cache_root"):
        larder.Cache(open_dir / "c")


def test_log_callback_receives_lines(tmp_path):
    lines = []
    c = larder.Cache(tmp_path / "c", log=lambda level, message: lines.append((level, message)))
    c.set("k", "v")
    c.close()
    assert all(level in ("debug", "info", "warning", "error") for level, _ in lines)


@pytest.mark.skipif(not CACHECTL, reason="LARDER_CACHECTL is not set")
def test_entries_are_shared_with_cpp_programs(tmp_path):
    root = tmp_path / "shared"
    with larder.Cache(root, strategy="shared") as c:
        assert c.set("from-python", b"\x01\x02raw bytes")
        assert c.set("text", "UTF-8 ✓")
    out = subprocess.run([CACHECTL, "--root", str(root), "get", "--raw", "from-python"],
                         capture_output=True, check=True)
    assert out.stdout == b"\x01\x02raw bytes"
    out = subprocess.run([CACHECTL, "--root", str(root), "get", "--raw", "text"],
                         capture_output=True, check=True)
    assert out.stdout.decode() == "UTF-8 ✓"
    subprocess.run([CACHECTL, "--root", str(root), "set", "from-cpp", "written by cachectl",
                    "--meta", "tool=cachectl"], check=True, capture_output=True)
    with larder.Cache(root, strategy="shared") as c:
        assert c.get("from-cpp") == b"written by cachectl"  # no kind recorded: bytes
        assert c.get_entry("from-cpp").metadata == {"tool": "cachectl"}


def _worker(root, n, results):
    c = larder.Cache(root, strategy="shared")
    for i in range(50):
        c.set(f"w{n}:{i}", {"n": n, "i": i})
    results.put(sum(1 for i in range(50) if c.get(f"w{n}:{i}") == {"n": n, "i": i}))
    c.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_shared_cache_from_several_processes(tmp_path, method):
    ctx = multiprocessing.get_context(method)
    root = str(tmp_path / "shared")
    # spawn: the workers elect an owner among themselves (and take over as they exit). fork: a
    # forked child cannot run RocksDB (its threads do not survive fork), so, as a forking server
    # would, the parent opens the cache first and owns it; the workers are its clients.
    parent = larder.Cache(root, strategy="shared") if method == "fork" else None
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(root, n, results)) for n in range(3)]
    for p in procs:
        p.start()
    counts = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert counts == [50, 50, 50]
    with parent or larder.Cache(root, strategy="shared") as c:
        assert len(c.keys()) == 150
        assert c.get("w2:49") == {"n": 2, "i": 49}


def test_a_cache_used_after_fork_works_in_the_child(tmp_path):
    for strategy in ("shared", "process_isolated"):
        c = larder.Cache(tmp_path / strategy, strategy=strategy)
        assert c.set("before", "fork")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the parent's cache object, reopened transparently
            try:
                ok = c.set("child", "set") and (strategy != "shared" or c.get("before") == "fork")
                ok = ok and c.get("child") == "set"
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"1", strategy
        os.waitpid(pid, 0)
        assert c.get("before") == "fork"  # the parent's cache is untouched
        if strategy == "shared":
            assert c.get("child") == "set"  # the child was a client of this owner
        c.close()


def _owner(root, ready):
    c = larder.Cache(root, strategy="shared")
    c.set("k", "v")
    ready.set()
    time.sleep(120)


def _wait_until_stopped(pid):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop")


@contextlib.contextmanager
def shared_owner(root):
    """A process (spawned) owning the shared cache at `root`, holding "k" = "v"; continued and
    ended when the block ends, whatever was done to it."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    owner = ctx.Process(target=_owner, args=(str(root), ready))
    owner.start()
    try:
        assert ready.wait(60)
        yield owner
    finally:
        os.kill(owner.pid, signal.SIGCONT)
        owner.terminate()
        owner.join(30)


def test_the_gil_is_released_while_a_call_waits_for_a_stopped_owner(tmp_path):
    root = str(tmp_path / "shared")
    with shared_owner(root) as owner:
        client = larder.Cache(root, strategy="shared", lock_timeout=1.5)
        assert client.get("k") == "v"
        os.kill(owner.pid, signal.SIGSTOP)
        # A signal arrives asynchronously: until it has, the owner may answer one more request.
        _wait_until_stopped(owner.pid)
        done = threading.Event()
        result = []

        def waiting_call():
            result.append(client.get("k", "timed out"))
            done.set()

        t = threading.Thread(target=waiting_call)
        spins = 0
        start = time.monotonic()
        t.start()
        while not done.is_set() and time.monotonic() - start < 10:
            spins += 1  # pure Python: runs only while the waiting call does not hold the GIL
        t.join(10)
        waited = time.monotonic() - start
        assert result == ["timed out"]  # a miss within lock_timeout, not a hang
        assert 1.0 <= waited < 8
        assert spins > 10_000
        assert client.stats().error_count >= 1
        os.kill(owner.pid, signal.SIGCONT)
        client.close()


def test_cache_key_and_global_cache(tmp_path):
    assert larder.CacheKey.from_parts("a:b", 1) == "a\\:b:1"
    assert larder.CacheKey.from_map({"b": 2, "a": 1}) == "a=1&b=2"
    f = tmp_path / "f"
    f.write_text("x")
    k1 = larder.CacheKey.from_path(f)
    f.write_text("longer")
    assert larder.CacheKey.from_path(f) != k1
    env = dict(os.environ, LARDER_CACHE_ROOT=str(tmp_path / "g"), LARDER_STRATEGY="shared",
               LARDER_MAX_ENTRIES="7")
    code = ("import larder; c = larder.global_cache(); assert c is larder.global_cache(); "
            "c.set('k', 'v'); print(c.directory)")
    out = subprocess.run([os.sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "g")
    bad = subprocess.run([os.sys.executable, "-c", "import larder; larder.global_cache()"],
                         env=dict(env, LARDER_MAX_ENTRIES="12abc"), capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "LARDER_MAX_ENTRIES" in bad.stderr


def test_add_touch_incr_set_all(cache):
    clock = cache.test_clock
    assert cache.add("a", {"first": 1}, expire=10)
    assert not cache.add("a", "second")
    assert cache.get("a") == {"first": 1}
    clock.advance(8)
    assert cache.touch("a", 100)  # a new lifetime from now
    clock.advance(50)
    assert cache.get("a") == {"first": 1}
    assert not cache.touch("missing", 10)
    assert cache.incr("n") == 1
    assert cache.incr("n", 41) == 42
    assert cache.incr("n", -50) == -8
    assert cache.get("n") == -8  # a counter reads back as an int
    cache.set("text", "12 apples")
    assert cache.incr("text") is None
    assert cache.get("text") == "12 apples"
    with pytest.raises(TypeError):
        cache.incr("n", 1.5)
    # set_all: all or nothing; mixed kinds round-trip with their types
    assert cache.set_all({"x": b"raw", "y": "text", "z": [1, 2]}, category="batch")
    assert (cache.get("x"), cache.get("y"), cache.get("z")) == (b"raw", "text", [1, 2])
    assert sorted(cache.keys("batch")) == ["x", "y", "z"]
    assert not cache.set_all([("ok", "v"), ("", "empty key")])
    assert cache.get("ok") is None


def test_compare_and_set_and_get_and_touch(cache):
    clock = cache.test_clock
    assert not cache.compare_and_set("k", None, 1)  # nothing stored
    cache.set("k", {"a": [1, 2]}, expire=10)
    assert not cache.compare_and_set("k", {"a": [1, 3]}, "no")
    assert cache.compare_and_set("k", {"a": [1, 2]}, Point(1, 2), expire=100, category="c")
    assert cache.get("k") == Point(1, 2)  # a signed pickle now, with the call's options
    assert cache.metadata("k").category == "c"
    assert cache.compare_and_set("k", Point(1, 2), (1, "t"))  # compared by its pickle
    assert cache.get("k") == (1, "t")
    assert cache.incr("n", 5) == 5
    assert cache.compare_and_set("n", 5, 6)  # a counter compares with its int
    assert cache.get("n") == 6
    clock.advance(100)  # stale: its value no longer counts
    assert not cache.compare_and_set("k", (1, "t"), "late")

    cache.set("t", b"bytes", expire=10)
    clock.advance(8)
    assert cache.get_and_touch("t", 100) == b"bytes"
    clock.advance(50)  # alive only because of the renewal
    assert cache.get("t") == b"bytes"
    assert cache.metadata("t").expires_at == pytest.approx(clock.now() + 50)
    assert cache.get_and_touch("missing", 10, default="d") == "d"
    clock.advance(50)
    assert cache.get_and_touch("t", 10) is None  # expired: a miss, nothing renewed
    cache.set("fresh", 6)
    before = cache.stats()
    assert cache.get_and_touch("fresh") == 6
    after = cache.stats()
    assert (after.hit_count, after.miss_count) == (before.hit_count + 1, before.miss_count)


def _cas_worker(root, results):
    with larder.Cache(root, strategy="shared") as c:
        done = 0
        while done < 50:
            v = c.get("cas")
            if v is None:
                c.add("cas", 0)
            elif c.compare_and_set("cas", v, v + 1):
                done += 1
        results.put(done)


def test_compare_and_set_is_atomic_across_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "shared")
    results = ctx.Queue()
    procs = [ctx.Process(target=_cas_worker, args=(root, results)) for _ in range(3)]
    for p in procs:
        p.start()
    assert [results.get(timeout=60) for _ in procs] == [50, 50, 50]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with larder.Cache(root, strategy="shared") as c:
        assert c.get("cas") == 150


def _incr_worker(root, results):
    with larder.Cache(root, strategy="shared") as c:
        results.put(sum(c.incr("counter") is not None for _ in range(100)))


def test_incr_is_atomic_across_processes(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    root = str(tmp_path / "shared")
    results = ctx.Queue()
    procs = [ctx.Process(target=_incr_worker, args=(root, results)) for _ in range(3)]
    for p in procs:
        p.start()
    assert [results.get(timeout=60) for _ in procs] == [100, 100, 100]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with larder.Cache(root, strategy="shared") as c:
        assert c.get("counter") == 300


def test_read_only_view_reads_and_changes_nothing(tmp_path):
    root = tmp_path / "shared"
    with larder.Cache(root, strategy="shared") as c:
        c.set("k", {"v": 1})
    before = sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
    with larder.Cache(root, strategy="shared", read_only=True) as view:
        assert view.get("k") == {"v": 1}
        assert not view.set("x", 1)
        assert not view.delete("k")
        assert view.incr("n") is None
        assert view.clear() == 0
    after = sorted((p, p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))
    assert after == before
    with pytest.raises(larder.ConfigError, match="read_only"):
        larder.Cache(tmp_path / "iso", strategy="process_isolated", read_only=True)


def test_remote_tier_shares_values_between_two_caches(tmp_path):
    # A real redis-server on a Unix socket in the test's directory (scripts/setup.sh installs it).
    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock),
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        assert sock.exists(), "redis-server did not start"
        url = f"redis+unix://{sock}?prefix=py"
        a = larder.Cache(tmp_path / "a", remote=url)
        b = larder.Cache(tmp_path / "b", remote=url)
        assert a.set("k", {"x": [1, 2]}, category="c")
        assert b.get("k") == {"x": [1, 2]}
        s = b.stats()
        assert s.remote_hit_count == 1 and s.remote_error_count == 0
        assert b.get_entry("k").category == "c"
        a.delete("k")
        deadline = time.time() + 5
        while b.get("k") is not None and time.time() < deadline:
            time.sleep(0.005)
        assert b.get("k") is None
        a.close()
        b.close()
    finally:
        server.kill()
        server.wait()
    with pytest.raises(larder.ConfigError, match="remote"):
        larder.Cache(tmp_path / "c", remote="nonsense")
