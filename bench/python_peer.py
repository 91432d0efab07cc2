#!/usr/bin/env python3
"""larder's Python binding against python-diskcache, in one process and one run.

Workloads (each timed separately, median of --rounds rounds, fresh directories per round):
  set      N distinct keys
  get-uni  N gets of uniformly random stored keys
  get-hot  N gets, 90 % of them on 1 % of the keys
  memoize  N calls of a memoized function over N/10 distinct arguments
for 100 B and 1 KB values. diskcache runs with its default eviction policy
(least-recently-stored) and with least-recently-used; larder with LRU (process_isolated).

    PYTHONPATH=build/python python3 bench/python_peer.py [--n 20000] [--rounds 3]

Prints one row per workload: ops/s for each system and larder's ratio to each diskcache mode.

With --core: diskcache's own benchmark mix (its tests/benchmark_core.py, written again here):
1, 4 and 8 processes on one cache, each doing --ops operations on keys drawn from 100 byte-string
keys (prefilled): 90 % get, 9 % set of a value of 1 to 99 copies of a counter's digits, 1 %
delete; the first 1000 of each process are not timed. diskcache.Cache against
larder.diskcache.Cache (the same code with only the import changed). Prints total ops/s (all
processes' operations from the first process's start to the last one's end, once all have
opened the cache) and each operation's p50 / p99 latency, medians over
--rounds rounds. Then the asyncio API's throughput: the same mix in one process through
larder.aio with 100 concurrent tasks, against larder.Cache in one thread.

    PYTHONPATH=build/python python3 bench/python_peer.py --core [--ops 20000] [--rounds 3]
"""

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import diskcache

import larder
import larder.diskcache


def timed(n, fn):
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def workloads(n, size, seed):
    rng = random.Random(seed)
    keys = [f"key:{i:08d}" for i in range(n)]
    value = os.urandom(size)
    uniform = [keys[rng.randrange(n)] for _ in range(n)]
    hot_set = keys[: max(1, n // 100)]
    hot = [rng.choice(hot_set) if rng.random() < 0.9 else keys[rng.randrange(n)]
           for _ in range(n)]
    args = [rng.randrange(max(1, n // 10)) for _ in range(n)]
    return keys, value, uniform, hot, args


def run_system(make, n, size, seed):
    keys, value, uniform, hot, args = workloads(n, size, seed)
    out = {}
    base = tempfile.mkdtemp(prefix="larder-peer-")
    try:
        c = make(base)

        def sets():
            for k in keys:
                c.set(k, value)

        def gets(seq):
            def run():
                get = c.get
                for k in seq:
                    get(k)
            return run

        out["set"] = timed(n, sets)
        out["get-uni"] = timed(n, gets(uniform))
        out["get-hot"] = timed(n, gets(hot))

        @c.memoize()
        def square(x):
            return x * x

        def memo():
            for a in args:
                square(a)

        out["memoize"] = timed(n, memo)
        c.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


SYSTEMS = {
    "larder": lambda d: larder.Cache(d, max_entries=0, max_size=0, default_ttl=0,
                                     eviction_policy="lru"),
    "diskcache": lambda d: diskcache.Cache(d, size_limit=2**40),
    "diskcache-lru": lambda d: diskcache.Cache(d, size_limit=2**40,
                                               eviction_policy="least-recently-used"),
}


CORE_SYSTEMS = {"diskcache": diskcache, "larder.diskcache": larder.diskcache}
CORE_KEYS = 100
CORE_WARMUP = 1000


def core_worker(module_name, directory, ops, seed, start_together, results):
    module = CORE_SYSTEMS[module_name]
    rng = random.Random(seed)
    cache = module.Cache(directory)
    timings = {"get": [], "set": [], "delete": []}
    clock = time.perf_counter
    start_together.wait()  # every process has started and opened the cache
    began = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
    for count in range(ops):
        key = str(rng.randrange(CORE_KEYS)).encode()
        choice = rng.random()
        if choice < 0.90:
            action, start = "get", clock()
            cache.get(key)
        elif choice < 0.99:
            value = str(count).encode() * rng.randrange(1, 100)
            action, start = "set", clock()
            cache.set(key, value)
        else:
            action, start = "delete", clock()
            cache.delete(key)
        end = clock()
        if count >= CORE_WARMUP:
            timings[action].append(end - start)
    ended = time.monotonic()
    cache.close()
    results.put((began, ended, timings))


def core_round(module_name, procs, ops, seed):
    base = tempfile.mkdtemp(prefix="larder-core-")
    directory = os.path.join(base, "cache")
    try:
        c = CORE_SYSTEMS[module_name].Cache(directory)
        for k in range(CORE_KEYS):
            c.set(str(k).encode(), str(k).encode())
        c.close()
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        start_together = ctx.Barrier(procs)
        workers = [ctx.Process(target=core_worker,
                               args=(module_name, directory, ops, seed * 100 + n,
                                     start_together, results))
                   for n in range(procs)]
        for w in workers:
            w.start()
        merged = {"get": [], "set": [], "delete": []}
        began, ended = [], []
        for _ in workers:
            b, e, timings = results.get(timeout=600)
            began.append(b)
            ended.append(e)
            for action, times in timings.items():
                merged[action].extend(times)
        wall = max(ended) - min(began)  # the timed loops, from the first start to the last end
        for w in workers:
            w.join(60)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = {"ops/s": procs * ops / wall}
    for action, times in merged.items():
        times.sort()
        if times:
            out[action + " p50"] = times[len(times) // 2] * 1e6
            out[action + " p99"] = times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6
    return out


def core(ops, rounds):
    print(f"# diskcache's benchmark_core mix: python {sys.version.split()[0]}, diskcache "
          f"{diskcache.__version__}, {ops} ops per process, {rounds} rounds (medians; "
          "latencies in microseconds)")
    columns = ["ops/s", "get p50", "get p99", "set p50", "set p99", "delete p50", "delete p99"]
    print(f"{'procs':>5} {'system':<17} " + " ".join(f"{c:>10}" for c in columns))
    for procs in (1, 4, 8):
        rows = {name: [] for name in CORE_SYSTEMS}
        for r in range(rounds):
            for name in CORE_SYSTEMS:  # interleaved
                rows[name].append(core_round(name, procs, ops, r))
        med = {}
        for name in CORE_SYSTEMS:
            med[name] = {c: statistics.median(x.get(c, 0.0) for x in rows[name]) for c in columns}
            print(f"{procs:>5} {name:<17} " +
                  " ".join(f"{med[name][c]:>10.0f}" for c in columns))
        ratio = med["larder.diskcache"]["ops/s"] / med["diskcache"]["ops/s"]
        print(f"{procs:>5} {'larder / dc':<17} {ratio:>9.2f}x")


def aio_throughput(ops, rounds):
    """larder.aio with 100 concurrent tasks (the core mix, one process) against the same
    operations through larder.Cache in one thread."""
    import asyncio
    import larder.aio

    def mix(seed):
        rng = random.Random(seed)
        out = []
        for count in range(ops):
            key = str(rng.randrange(CORE_KEYS)).encode()
            choice = rng.random()
            if choice < 0.90:
                out.append(("get", key, None))
            elif choice < 0.99:
                out.append(("set", key, str(count).encode() * rng.randrange(1, 100)))
            else:
                out.append(("delete", key, None))
        return out

    def run_sync(directory, todo):
        c = larder.Cache(directory, strategy="shared", max_entries=0, max_size=0, default_ttl=0)
        t0 = time.perf_counter()
        for op, key, value in todo:
            if op == "get":
                c.get(key)
            elif op == "set":
                c.set(key, value)
            else:
                c.delete(key)
        elapsed = time.perf_counter() - t0
        c.close()
        return len(todo) / elapsed

    async def run_aio(directory, todo):
        async with larder.aio.Cache(directory, strategy="shared", max_entries=0, max_size=0,
                                    default_ttl=0) as c:
            async def task(part):
                for op, key, value in part:
                    if op == "get":
                        await c.get(key)
                    elif op == "set":
                        await c.set(key, value)
                    else:
                        await c.delete(key)

            t0 = time.perf_counter()
            await asyncio.gather(*(task(todo[i::100]) for i in range(100)))
            return len(todo) / (time.perf_counter() - t0)

    sync_rows, aio_rows = [], []
    for r in range(rounds):
        todo = mix(r)
        for kind in ("sync", "aio"):
            base = tempfile.mkdtemp(prefix="larder-aio-")
            try:
                directory = os.path.join(base, "cache")
                if kind == "sync":
                    sync_rows.append(run_sync(directory, todo))
                else:
                    aio_rows.append(asyncio.run(run_aio(directory, todo)))
            finally:
                shutil.rmtree(base, ignore_errors=True)
    s, a = statistics.median(sync_rows), statistics.median(aio_rows)
    print(f"# asyncio: the core mix in one process, {ops} ops, {rounds} rounds (median ops/s)")
    print(f"larder.Cache, 1 thread: {s:.0f}   larder.aio, 100 tasks (8 workers): {a:.0f}   "
          f"ratio {a / s:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--core", action="store_true",
                   help="diskcache's benchmark_core mix, diskcache vs larder.diskcache")
    p.add_argument("--ops", type=int, default=20000, help="--core: operations per process")
    a = p.parse_args()
    if a.core:
        core(a.ops, a.rounds)
        aio_throughput(a.ops, a.rounds)
        return
    print(f"# python {sys.version.split()[0]}, diskcache {diskcache.__version__}, "
          f"n={a.n}, rounds={a.rounds} (median ops/s)")
    print(f"{'size':>5} {'workload':<8} {'larder':>10} {'diskcache':>10} {'dc-lru':>10} "
          f"{'x default':>9} {'x lru':>7}")
    for size in (100, 1024):
        rows = {name: [] for name in SYSTEMS}
        for r in range(a.rounds):
            for name, make in SYSTEMS.items():  # interleaved: noise hits every system alike
                rows[name].append(run_system(make, a.n, size, seed=r))
        for w in ("set", "get-uni", "get-hot", "memoize"):
            med = {name: statistics.median(x[w] for x in rows[name]) for name in SYSTEMS}
            print(f"{size:>5} {w:<8} {med['larder']:>10.0f} {med['diskcache']:>10.0f} "
                  f"{med['diskcache-lru']:>10.0f} {med['larder'] / med['diskcache']:>8.2f}x "
                  f"{med['larder'] / med['diskcache-lru']:>6.2f}x")


if __name__ == "__main__":
    main()
