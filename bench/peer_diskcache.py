#!/usr/bin/env python3
"""Peer comparison: the same get/set workload through larder and python-diskcache.

Run by hand (not by CI), after building:
    /usr/bin/python3 bench/peer_diskcache.py [--keys N] [--value-size B] [--rounds R]

Workload (identical on both sides): N sets of B-byte values into a fresh cache, then N gets of
keys drawn at random (all stored). larder runs through `build/tools/larder-bench getset`;
diskcache runs in this process (Debian: apt-get install python3-diskcache) with its default
eviction policy and with 'least-recently-used' (which writes on every read), and larder with LRU
and LFU. Medians of R rounds; the last column is larder / diskcache for the same policy family.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, "..", "build", "tools", "larder-bench")


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def larder(keys, value_size, policy, rounds):
    out = subprocess.run([BENCH, "getset", "--keys", str(keys), "--value-size", str(value_size),
                          "--policy", policy, "--rounds", str(rounds), "--json"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return r["sets_per_s"], r["gets_per_s"]


def diskcache_run(keys, value_size, policy, rounds):
    import diskcache
    names = ["key%08d" % i for i in range(keys)]
    rng = random.Random(7)
    order = [rng.randrange(keys) for _ in range(keys)]
    value = b"v" * value_size
    sets, gets = [], []
    for _ in range(rounds):
        d = tempfile.mkdtemp(prefix="peer-diskcache-")
        try:
            with diskcache.Cache(d, eviction_policy=policy, size_limit=2**40) as c:
                t0 = time.perf_counter()
                for k in names:
                    c.set(k, value)
                t1 = time.perf_counter()
                hits = 0
                for i in order:
                    hits += c.get(names[i]) is not None
                t2 = time.perf_counter()
                if hits != keys:
                    print("warning: diskcache missed %d gets" % (keys - hits), file=sys.stderr)
            sets.append(keys / (t1 - t0))
            gets.append(keys / (t2 - t1))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return median(sets), median(gets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--value-size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not os.access(BENCH, os.X_OK):
        sys.exit("build larder first (scripts/setup.sh build): %s is missing" % BENCH)
    try:
        import diskcache  # noqa: F401
    except ImportError:
        sys.exit("python-diskcache is not installed (apt-get install python3-diskcache), "
                 "run with /usr/bin/python3")
    rows = []
    dc_default = diskcache_run(a.keys, a.value_size, "least-recently-stored", a.rounds)
    dc_lru = diskcache_run(a.keys, a.value_size, "least-recently-used", a.rounds)
    l_lru = larder(a.keys, a.value_size, "lru", a.rounds)
    l_lfu = larder(a.keys, a.value_size, "lfu", a.rounds)
    print("%d keys, %d-byte values, median of %d rounds (ops/s)\n" % (a.keys, a.value_size,
                                                                      a.rounds))
    print("%-44s %12s %12s" % ("", "sets/s", "gets/s"))
    rows = [("diskcache (default: least-recently-stored)", dc_default),
            ("diskcache (least-recently-used)", dc_lru),
            ("larder (lru)", l_lru), ("larder (lfu)", l_lfu)]
    for name, (s, g) in rows:
        print("%-44s %12.0f %12.0f" % (name, s, g))
    print("\nlarder lru / diskcache default: sets %.1fx, gets %.1fx" %
          (l_lru[0] / dc_default[0], l_lru[1] / dc_default[1]))
    print("larder lru / diskcache lru:     sets %.1fx, gets %.1fx" %
          (l_lru[0] / dc_lru[0], l_lru[1] / dc_lru[1]))


if __name__ == "__main__":
    main()
