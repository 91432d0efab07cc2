"""larder.diskcache: diskcache's Cache API as its documentation describes it (keys of every kind,
expire, tags, read, incr/decr, pop, queues, transact across processes, memoize, stats,
settings, pickling), on one larder store that C++ and cachectl read too."""

import io
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import tempfile
import threading
import time
import zlib

import pytest

import larder
import larder.diskcache as diskcache

CACHECTL = os.environ.get("LARDER_CACHECTL")


@pytest.fixture
def cache(tmp_path):
    c = diskcache.Cache(str(tmp_path / "dc"))
    yield c
    c.close()


def test_the_public_names_are_diskcaches():
    for name in ["Cache", "FanoutCache", "Disk", "JSONDisk", "Timeout", "EmptyDirWarning",
                 "UnknownFileWarning", "ENOVAL", "UNKNOWN", "EVICTION_POLICY",
                 "DEFAULT_SETTINGS"]:
        assert hasattr(diskcache, name), name
    assert set(diskcache.EVICTION_POLICY) == {"none", "least-recently-stored",
                                              "least-recently-used", "least-frequently-used"}
    assert diskcache.DEFAULT_SETTINGS["size_limit"] == 2**30
    assert repr(diskcache.ENOVAL) == "ENOVAL"


def test_keys_of_every_kind_are_distinct_and_round_trip(cache):
    keys = ["text", b"text", 1, 1.5, ("tuple", 2), None, True, frozenset({1, 2}), "\x00nul"]
    for i, k in enumerate(keys):
        assert cache.set(k, i)
    for i, k in enumerate(keys):
        assert cache[k] == i, k
        assert k in cache
    assert len(cache) == len(keys)
    assert set(map(repr, cache)) == set(map(repr, keys))
    # A str key is stored under its own name: C++ and cachectl find it.
    assert larder.Cache(cache.directory, strategy="shared").get("text") == 0


def test_keys_longer_than_larders_limit(cache):
    long_str = "u" * 10_000
    long_tuple = ("args", list(range(3000)))
    cache[long_str] = 1
    cache[long_tuple] = 2
    assert cache[long_str] == 1 and cache[long_tuple] == 2
    assert long_str in cache and "u" * 9_999 not in cache
    assert sorted(map(repr, cache)) == sorted(map(repr, [long_str, long_tuple]))

    @cache.memoize()
    def total(xs):
        return sum(xs)

    assert total(list(range(5000))) == total(list(range(5000)))
    assert cache.pop(long_str) == 1 and long_str not in cache


def test_get_default_expire_time_and_tag(cache):
    assert cache.get("missing") is None
    assert cache.get("missing", "dflt") == "dflt"
    assert cache.set("k", {"v": 1}, expire=100, tag="users")
    value, when, tag = cache.get("k", expire_time=True, tag=True)
    assert value == {"v": 1} and tag == "users"
    assert time.time() + 90 < when <= time.time() + 100.5
    assert cache.get("k", expire_time=True) == ({"v": 1}, when)
    assert cache.get("k", tag=True) == ({"v": 1}, "users")
    assert cache.get("missing", expire_time=True, tag=True) == (None, None, None)
    cache.set("never", 1)  # expire=None: never expires
    assert cache.get("never", expire_time=True) == (1, None)
    cache.set("int-tag", 1, tag=7)
    assert cache.get("int-tag", tag=True) == (1, 7)


def test_expire_zero_is_already_expired(cache):
    cache.set("k", "v")
    assert cache.set("k", "new", expire=0)
    assert cache.get("k") is None
    assert "k" not in cache


def test_getitem_delitem_and_read(cache):
    with pytest.raises(KeyError):
        cache["missing"]
    with pytest.raises(KeyError):
        del cache["missing"]
    cache["k"] = b"bytes"
    del cache["k"]
    assert cache.delete("k") is False
    assert cache.set("file", io.BytesIO(b"from a file"), read=True)
    assert cache.read("file").read() == b"from a file"
    assert cache.get("file", read=True).read() == b"from a file"
    with pytest.raises(KeyError):
        cache.read("missing")


def test_add_touch_incr_decr_pop(cache):
    assert cache.add("a", 1)
    assert not cache.add("a", 2)
    assert cache["a"] == 1
    assert cache.touch("a", expire=50)
    assert cache.get("a", expire_time=True)[1] is not None
    assert cache.touch("a")  # None: never
    assert cache.get("a", expire_time=True)[1] is None
    assert not cache.touch("missing")
    assert cache.incr("n") == 1
    assert cache.incr("n", 10) == 11
    assert cache.decr("n", 2) == 9
    assert cache.incr("d", default=100) == 101
    assert cache.decr("e", default=-9) == -10
    with pytest.raises(KeyError):
        cache.incr("nothing", default=None)
    cache.set("set-int", 41, expire=100, tag="t")  # a number stored by set() counts too
    assert cache.incr("set-int") == 42
    value, when, tag = cache.get("set-int", expire_time=True, tag=True)
    assert value == 42 and when is not None and tag == "t"  # expiry and tag stay
    assert cache.incr("big", 2**70) == 2**70
    cache.set("text", "x")
    with pytest.raises(TypeError):
        cache.incr("text")
    assert cache.pop("n") == 9
    assert cache.pop("n") is None
    assert cache.pop("n", "gone") == "gone"
    cache.set("p", "v", tag="t")
    assert cache.pop("p", tag=True) == ("v", "t")


def test_clear_evict_expire_volume_check(cache):
    for i in range(10):
        cache.set(i, i, tag="odd" if i % 2 else "even")
    assert cache.evict("even") == 5
    assert len(cache) == 5
    assert cache.expire() == 0
    assert cache.cull() == 0
    assert cache.volume() > 0
    assert cache.check() == []
    assert cache.clear() == 5
    assert len(cache) == 0


def test_iteration_follows_insertion(cache):
    for k in ["c", "a", "b"]:  # within one millisecond, most likely
        cache.set(k, k)
    assert list(cache) == ["c", "a", "b"]
    assert list(reversed(cache)) == ["b", "a", "c"]
    assert list(cache.iterkeys()) == ["a", "b", "c"]
    assert cache.peekitem() == ("b", "b")
    assert cache.peekitem(last=False) == ("c", "c")
    cache.clear()
    with pytest.raises(KeyError):
        cache.peekitem()


def test_queues(cache):
    assert cache.pull() == (None, None)
    k1 = cache.push("first")
    k2 = cache.push("second")
    k0 = cache.push("zeroth", side="front")
    assert k0 < k1 < k2
    assert cache.peek() == (k0, "zeroth")
    assert cache.peek(side="back") == (k2, "second")
    assert cache.pull() == (k0, "zeroth")
    assert cache.pull(side="back") == (k2, "second")
    assert cache.pull() == (k1, "first")
    assert cache.pull(default="empty") == "empty"
    named = cache.push(1, prefix="jobs")
    assert named == "jobs-500000000000000"
    assert cache.push(2, prefix="jobs") == "jobs-500000000000001"
    assert cache.pull(prefix="jobs") == (named, 1)


def test_memoize_keys_typed_and_ignore(cache):
    calls = []

    @cache.memoize(typed=True, tag="fib")
    def f(x, y=0):
        calls.append((x, y))
        return x + y

    assert f(1, y=2) == 3 and f(1, y=2) == 3
    assert calls == [(1, 2)]
    f(1.0, y=2)  # typed: another key
    assert len(calls) == 2
    assert cache.get(f.__cache_key__(1, y=2), tag=True) == (3, "fib")

    @cache.memoize(ignore={1})
    def g(a, session):
        calls.append(a)
        return a

    g(5, object())
    g(5, object())  # the ignored argument differs: still a hit
    assert calls.count(5) == 1
    with pytest.raises(TypeError):
        cache.memoize(lambda: 1)


def test_stats_count_from_when_they_are_enabled(cache):
    cache.set("k", 1)
    assert cache.stats(enable=False) == (0, 0)
    cache.stats(enable=True)  # from now on
    cache.get("k")
    cache.get("missing")
    assert cache.stats() == (1, 1)
    assert cache.stats(reset=True) == (1, 1)
    assert cache.stats() == (0, 0)


def test_settings_and_pickling(tmp_path):
    c = diskcache.Cache(str(tmp_path / "dc"), size_limit=2**20,
                        eviction_policy="least-recently-used")
    assert c.size_limit == 2**20
    assert c.eviction_policy == "least-recently-used"
    assert c.reset("cull_limit") == 10
    assert c.reset("cull_limit", 0) == 0 and c.cull_limit == 0
    c.cull_limit = 5  # as reset("cull_limit", 5)
    assert c.reset("cull_limit") == 5
    c.statistics = 1
    assert c.stats() == (0, 0) and c.statistics == 1
    with pytest.raises(ValueError):
        diskcache.Cache(str(tmp_path / "x"), no_such_setting=1)
    with pytest.raises(ValueError):
        diskcache.Cache(str(tmp_path / "x"), eviction_policy="random")
    c.set("k", "v")
    clone = pickle.loads(pickle.dumps(c))
    assert clone.directory == c.directory and clone.get("k") == "v"
    assert clone.size_limit == 2**20
    clone.close()
    c.close()
    assert c.get("k") == "v"  # a closed cache reopens on use


def test_a_size_limit_evicts_least_recently_stored(tmp_path):
    c = diskcache.Cache(str(tmp_path / "dc"), size_limit=10_000)
    for i in range(30):
        c.set(i, b"x" * 1000)
    assert len(c) <= 10
    assert 29 in c and 0 not in c
    c.close()


def test_close_while_other_threads_call(cache):
    errors = []

    def worker(n):
        try:
            for i in range(200):
                cache.set((n, i), i)
                assert cache.get((n, i)) == i
        except Exception as e:  # a closed store under a running call would land here
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for _ in range(20):
        cache.close()  # as `with cache:` in each thread of diskcache's own tests does
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(cache) == 800


def test_a_new_size_limit_applies_from_the_next_call(tmp_path):
    c = diskcache.Cache(str(tmp_path / "dc"))
    for i in range(30):
        c.set(i, b"x" * 1000)
    assert len(c) == 30
    c.size_limit = 10_000  # as diskcache's tests set it
    for i in range(30, 40):
        c.set(i, b"x" * 1000)
    assert len(c) <= 10 and 39 in c
    with pytest.raises(ValueError):
        c.reset("eviction_policy", "random")
    c.close()


def test_a_directory_in_tmp_is_made_private_and_taken():
    # diskcache programs often name a directory right under /tmp (mode 1777): larder refuses
    # to create a cache root there itself, so larder.diskcache makes it first, mode 0700.
    directory = os.path.join(tempfile.gettempdir(), f"larder-dc-{os.getpid()}-{time.time_ns()}")
    try:
        c = diskcache.Cache(directory)
        c["k"] = 1
        assert c["k"] == 1
        assert os.stat(directory).st_mode & 0o777 == 0o700
        c.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_no_directory_makes_a_temporary_one():
    c = diskcache.Cache()
    assert os.path.isdir(c.directory)
    c.set("k", 1)
    assert c["k"] == 1
    c.close()


def test_json_disk_stores_compressed_json(tmp_path):
    c = diskcache.Cache(str(tmp_path / "dc"), disk=diskcache.JSONDisk, disk_compress_level=6)
    assert c.disk.compress_level == 6
    c.set({"a": [1, 2]}.__repr__(), {"nested": [1, "two", None]})
    c.set(("k", 1), [1.5, True])
    assert c["{'a': [1, 2]}"] == {"nested": [1, "two", None]}
    assert c[["k", 1]] == [1.5, True]  # JSON has no tuples: the key comes back as a list
    assert sorted(map(repr, c)) == sorted(map(repr, ["{'a': [1, 2]}", ["k", 1]]))
    # What larder holds is the Disk's bytes: zlib-compressed JSON.
    raw = larder.Cache(c.directory, strategy="shared").get(next(iter(c._cache.keys())))
    assert raw[0] == "larder.disk"
    assert json.loads(zlib.decompress(raw[2])) in ({"nested": [1, "two", None]}, [1.5, True])
    c.close()


def test_a_custom_disks_hooks_are_used_for_keys_and_values(tmp_path):
    calls = []

    class Upper(diskcache.Disk):
        def put(self, key):
            calls.append("put")
            return super().put(key.upper() if isinstance(key, str) else key)

        def get(self, key, raw):
            calls.append("get")
            return super().get(key, raw)

        def store(self, value, read, key=diskcache.UNKNOWN):
            calls.append("store")
            return super().store(value, read, key=key)

        def fetch(self, mode, filename, value, read):
            calls.append("fetch")
            return super().fetch(mode, filename, value, read)

    c = diskcache.Cache(str(tmp_path / "dc"), disk=Upper)
    c.set("key", {"v": 1})
    assert c["KEY"] == {"v": 1}  # put() upper-cased the key
    assert list(c) == ["KEY"]
    assert {"put", "get", "store", "fetch"} <= set(calls)
    c.set("blob", io.BytesIO(b"file bytes"), read=True)
    assert c.get("blob", read=True).read() == b"file bytes"
    # A pickled value is signed: bytes planted in its place are not loaded.
    c.set("obj", object.__new__(Point))
    assert isinstance(c["obj"], Point)
    stored = c._cache.get("OBJ")
    c._cache.set("OBJ", (stored[0], stored[1], b"\0" * 32 + pickle.dumps(Point())))
    assert c.get("obj", "miss") == "miss"
    with pytest.raises(TypeError):
        diskcache.Cache(str(tmp_path / "x"), disk=object)
    c.close()


class Point:
    pass


def test_fanout_cache_is_one_store(tmp_path):
    c = diskcache.FanoutCache(str(tmp_path / "fc"), shards=4, timeout=1)
    assert c.shards == 4
    c.set("k", "v")
    assert diskcache.Cache(str(tmp_path / "fc"))["k"] == "v"
    sub = c.cache("users/active")
    assert sub is c.cache("users/active")
    assert sub.directory == str(tmp_path / "fc" / "cache" / "users" / "active")
    sub["k"] = "inner"
    assert c["k"] == "v" and sub["k"] == "inner"
    c.deque("jobs").append(1)
    assert list(c.deque("jobs")) == [1]
    c.index("names")["a"] = 1
    assert dict(c.index("names")) == {"a": 1}
    with pytest.raises(ValueError):
        c.cache("../escape")
    c.close()


def _transact_worker(directory, n):
    c = diskcache.Cache(directory)
    for _ in range(n):
        with c.transact():
            v = c.get("count", 0)
            c.set("count", v + 1)  # read-modify-write: safe only inside transact
    c.close()


def _incr_worker(directory, n):
    c = diskcache.Cache(directory)
    for _ in range(n):
        c.incr("hits")
    c.close()


def test_several_processes_on_one_cache_transact_and_incr(tmp_path):
    directory = str(tmp_path / "dc")
    diskcache.Cache(directory).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_transact_worker, args=(directory, 50)) for _ in range(3)]
    procs += [ctx.Process(target=_incr_worker, args=(directory, 50)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    c = diskcache.Cache(directory)
    assert c["count"] == 150  # no update lost: transact excluded the other processes
    assert c["hits"] == 150
    c.close()


@pytest.mark.skipif(not CACHECTL, reason="LARDER_CACHECTL not set")
def test_str_keys_are_readable_by_cachectl(cache):
    cache.set("plain", b"bytes value")
    cache.close()
    out = subprocess.run([CACHECTL, "--root", cache.directory, "get", "--raw", "plain"],
                         capture_output=True, check=True)
    assert out.stdout == b"bytes value"


# ---- recipes


def test_averager(cache):
    ave = diskcache.Averager(cache, "latency")
    assert ave.get() is None
    ave.add(0.080)
    ave.add(0.120)
    assert ave.get() == pytest.approx(0.1)
    ave.add(0.160)
    assert ave.pop() == pytest.approx(0.12)
    assert ave.get() is None


def _hold_lock(directory, held, release):
    c = diskcache.Cache(directory)
    lock = diskcache.Lock(c, "report")
    lock.acquire()
    held.set()
    release.wait(60)
    lock.release()
    c.close()


def test_lock_excludes_another_process(cache):
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(cache.directory, held, release))
    p.start()
    try:
        assert held.wait(60)
        lock = diskcache.Lock(cache, "report")
        assert lock.locked()
        # What acquire tries, refused while the other process holds the lock:
        assert not cache.add("report", None)
        got = []
        t = threading.Thread(target=lambda: (lock.acquire(), got.append(True)))
        t.start()
        release.set()
        t.join(60)
        assert got == [True]
        assert lock.locked()
        lock.release()
        assert not lock.locked()
        with lock:
            assert lock.locked()
    finally:
        release.set()
        p.join(60)


def test_rlock_is_reentrant_and_refuses_a_foreign_release(cache):
    rlock = diskcache.RLock(cache, "user-123")
    rlock.acquire()
    rlock.acquire()
    rlock.release()
    with rlock:
        pass
    rlock.release()
    with pytest.raises(AssertionError):
        rlock.release()
    rlock.acquire()
    errors = []

    def other_thread():
        try:
            rlock.release()
        except AssertionError as e:
            errors.append(e)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert len(errors) == 1  # another thread does not hold it
    rlock.release()


def test_bounded_semaphore(cache):
    sem = diskcache.BoundedSemaphore(cache, "max-cons", value=2)
    sem.acquire()
    sem.acquire()
    assert cache.get("max-cons") == 0
    sem.release()
    with sem:
        assert cache.get("max-cons") == 0
    sem.release()
    with pytest.raises(AssertionError):
        sem.release()


def test_throttle_lets_count_calls_per_period_on_an_injected_clock(cache):
    now = [1000.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    calls = []

    @diskcache.throttle(cache, 2, 1, time_func=lambda: now[0], sleep_func=sleep)
    def work():
        calls.append(now[0])

    for _ in range(6):
        work()
    # 2 at once, then one every 0.5 s: 6 calls take 2 s of the injected clock.
    assert calls[:2] == [1000.0, 1000.0]
    assert now[0] == pytest.approx(1002.0)
    assert all(s == pytest.approx(0.5) for s in slept)


def test_barrier_makes_calls_take_turns(cache):
    inside = []
    overlap = []
    both_started = threading.Barrier(2)

    @diskcache.barrier(cache, diskcache.Lock)
    def work(n):
        inside.append(n)
        if len(inside) > 1:
            overlap.append(list(inside))
        lock = diskcache.Lock(cache, work.__wrapped__.__module__ + "." +
                              work.__wrapped__.__qualname__)
        assert lock.locked()
        inside.remove(n)

    def run(n):
        both_started.wait()
        for _ in range(20):
            work(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlap == []


def test_memoize_stampede_caches_and_recomputes_early_in_the_background(cache):
    calls = []
    recomputed = threading.Event()

    @diskcache.memoize_stampede(cache, expire=60)
    def f(x):
        calls.append(x)
        if len(calls) > 1:
            recomputed.set()
        return x * 2

    assert f(21) == 42
    assert f(21) == 42
    assert calls == [21]  # far from expiry: a plain hit
    key = f.__cache_key__(21)
    assert cache.get(key)[0] == 42
    # A result whose computation took (as recorded) as long as its whole lifetime is recomputed
    # early: the caller still gets the cached result at once.
    cache.set(key, (42, 1e6), expire=60)
    assert f(21) == 42
    assert recomputed.wait(30)
    # The recomputation stores its result with its own (short) computing time: wait for its
    # thread to end, then look.
    for t in threading.enumerate():
        if t.name == "larder-memoize-stampede":
            t.join(30)
    assert cache.get(key)[1] < 1e6
    assert f.__wrapped__(3) == 6


# ---- Deque and Index


def test_deque_as_documented(tmp_path):
    d = diskcache.Deque(directory=str(tmp_path / "dq"))
    d += range(5)
    assert list(d) == [0, 1, 2, 3, 4]
    for value in range(5):
        d.appendleft(-value)
    assert len(d) == 10
    assert list(d) == [-4, -3, -2, -1, 0, 0, 1, 2, 3, 4]
    assert d.pop() == 4
    assert d.popleft() == -4
    d.reverse()
    assert list(d) == [3, 2, 1, 0, 0, -1, -2, -3]
    d.rotate(2)
    assert list(d) == [-2, -3, 3, 2, 1, 0, 0, -1]
    d.rotate(-2)
    assert list(d) == [3, 2, 1, 0, 0, -1, -2, -3]
    assert d[0] == 3 and d[-1] == -3
    d[1] = "two"
    assert d[1] == "two"
    del d[1]
    assert d.count(0) == 2 and d.index(1) == 1
    d.remove(0)
    assert list(d) == [3, 1, 0, -1, -2, -3]
    with pytest.raises(ValueError):
        d.remove(99)
    with pytest.raises(IndexError):
        d[100]
    assert d.peek() == -3 and d.peekleft() == 3
    assert d == [3, 1, 0, -1, -2, -3] and d < [4]
    # The same directory is the same deque, also in another handle (and after pickling).
    assert list(diskcache.Deque(directory=d.directory)) == list(d)
    assert list(pickle.loads(pickle.dumps(d))) == list(d)
    d.clear()
    with pytest.raises(IndexError):
        d.pop()
    with pytest.raises(IndexError):
        d.peekleft()


def test_deque_maxlen_drops_from_the_other_end(tmp_path):
    d = diskcache.Deque(range(5), directory=str(tmp_path / "dq"), maxlen=3)
    assert list(d) == [2, 3, 4]
    d.appendleft(1)
    assert list(d) == [1, 2, 3]


def test_index_as_documented(tmp_path):
    index = diskcache.Index(str(tmp_path / "ix"))
    index.update([("a", 1), ("b", 2), ("c", 3)])
    assert index["a"] == 1
    assert list(index) == ["a", "b", "c"]
    assert len(index) == 3
    del index["b"]
    assert index.popitem() == ("c", 3)
    assert index.popitem(last=False) == ("a", 1)
    with pytest.raises(KeyError):
        index.popitem()
    assert index.setdefault("x", 5) == 5 and index.setdefault("x", 6) == 5
    assert index.pop("x") == 5
    with pytest.raises(KeyError):
        index.pop("x")
    assert index.pop("x", None) is None
    index.update(d=4, e=5)
    assert index == {"e": 5, "d": 4}
    assert list(index.items()) == [("d", 4), ("e", 5)]
    assert list(reversed(index)) == ["e", "d"]
    assert index.peekitem() == ("e", 5)
    assert diskcache.Index(index.directory) == index
    other = diskcache.Index([("k", "v")], z=1)
    assert dict(other) == {"k": "v", "z": 1}
    assert pickle.loads(pickle.dumps(index)) == index
    index.clear()
    assert len(index) == 0
