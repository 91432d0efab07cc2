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
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import diskcache

import larder


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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
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
