#!/usr/bin/env python3
"""Seed spread of `dnal sweep`s that differ only in --seed: per budget and cost weighting,
the top-1 of each seed, their mean and range, and each seed's paired difference between
two weightings (the points of one seed share its weight stage).

    python3 bench/sweep_seeds.py runs/mnv2-s0 runs/mnv2-s1 runs/mnv2-s2 [--against latency,flops]

Prints Markdown tables (BENCHMARKS.md). Reads only each folder's sweep.json.
"""
import json
import sys
from pathlib import Path


def main(argv):
    against = ("latency", "flops")
    if "--against" in argv:
        i = argv.index("--against")
        against = tuple(argv[i + 1].split(","))
        del argv[i : i + 2]
    if len(against) != 2 or not argv:
        sys.exit(__doc__)
    sweeps = [json.loads((Path(d) / "sweep.json").read_text()) for d in argv]
    for d, s in zip(argv, sweeps):
        if s["missing"]:
            sys.exit(f"{d}: points not finished: {', '.join(s['missing'])}")

    # top1[(cost, budget)] = [per seed, in the order given]
    top1, measured = {}, {}
    for s in sweeps:
        for p in s["points"]:
            key = (p["cost"], p["budget_ms"])
            top1.setdefault(key, []).append(100 * p["top1"])
            measured.setdefault(key, []).append(p["measured_ms"])
    n = len(sweeps)
    if any(len(v) != n for v in top1.values()):
        sys.exit("the sweeps do not have the same points")

    print(f"| c_l | budget ms | measured ms (range) | top-1 per seed | mean | range |")
    print("|---|---:|---:|---|---:|---:|")
    parents = [100 * s["parent"]["top1"] for s in sweeps]
    print(
        "| parent | - | - | "
        + ", ".join(f"{x:.2f}%" for x in parents)
        + f" | {sum(parents) / n:.2f}% | {max(parents) - min(parents):.2f} pp |"
    )
    a, b = against
    order = {a: 0, b: 1}
    for (cost, budget), t in sorted(
        top1.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 2), kv[0][0])
    ):
        m = measured[(cost, budget)]
        print(
            f"| {cost} | {budget:g} | {min(m):.3f}-{max(m):.3f} | "
            + ", ".join(f"{x:.2f}%" for x in t)
            + f" | {sum(t) / n:.2f}% | {max(t) - min(t):.2f} pp |"
        )
    print(f"\n| budget ms | {a} - {b}, per seed (pp) | mean | range |")
    print("|---:|---|---:|---:|")
    for budget in sorted({k[1] for k in top1}):
        if (a, budget) not in top1 or (b, budget) not in top1:
            continue
        d = [x - y for x, y in zip(top1[(a, budget)], top1[(b, budget)])]
        print(
            f"| {budget:g} | "
            + ", ".join(f"{x:+.2f}" for x in d)
            + f" | {sum(d) / n:+.2f} | {min(d):+.2f} to {max(d):+.2f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
