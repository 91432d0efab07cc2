#!/usr/bin/env python3
"""Writes the CSV trace that docs/performance.md replays (larder-bench replay).

1M requests over 100k keys drawn with Zipf(0.9) weights, each key with a fixed size of 100-999
bytes, seeded: the same file every time. Usage: bench/make_trace.py [OUT] [--requests N]
"""
import argparse
import itertools
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", nargs="?", default="/tmp/trace1m.csv")
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    cum = list(itertools.accumulate(1.0 / (r ** a.alpha) for r in range(1, a.keys + 1)))
    sizes = [rng.randrange(100, 1000) for _ in range(a.keys)]
    ranks = rng.choices(range(a.keys), cum_weights=cum, k=a.requests)
    with open(a.out, "w") as f:
        f.write("timestamp,key,size\n")
        for t, k in enumerate(ranks):
            f.write(f"{t},k{k},{sizes[k]}\n")


if __name__ == "__main__":
    main()
