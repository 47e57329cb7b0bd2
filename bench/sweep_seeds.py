#!/usr/bin/env python3
"""Seed spread of `dnal sweep`s that differ only in --seed: per budget and cost weighting,
the top-1 of each seed, their mean and range, and each seed's paired difference between
two weightings (the points of one seed share its weight stage).

    python3 bench/sweep_seeds.py runs/mnv2-s0 bench/results/mnv2-m7-f32-s1.json ... [--against latency,flops] [--partial]

Each argument is a sweep folder (its sweep.json is read) or a sweep.json kept elsewhere
(bench/results/ keeps finished sweeps, since run folders do not outlive a machine). A file
with a "transcribed_from" key holds figures copied from a note, not a sweep.json: the
tables say so. A sweep with unfinished points is refused, unless --partial: then only the
points every sweep finished are tabled, and the tables say which were left out. Prints
Markdown tables (BENCHMARKS.md).
"""
import json
import sys
from pathlib import Path


def sweep_json(arg):
    path = Path(arg)
    return path / "sweep.json" if path.is_dir() else path


def landing(point):
    """How far the gate stage landed from the budget, and what the fit reopened/closed."""
    if point.get("landing_pct") is None:
        return "?"
    fit = point.get("fit_channels")
    moved = f" (+{fit['reopened']}/-{fit['closed']})" if fit else ""
    return f"{point['landing_pct']:+.1f}%{moved}"


def main(argv):
    against = ("latency", "flops")
    if "--against" in argv:
        i = argv.index("--against")
        against = tuple(argv[i + 1].split(","))
        del argv[i : i + 2]
    if len(against) != 2 or not argv:
        sys.exit(__doc__)
    partial = "--partial" in argv
    if partial:
        argv.remove("--partial")
    sweeps = [json.loads(sweep_json(d).read_text()) for d in argv]
    for d, s in zip(argv, sweeps):
        if s["missing"] and not partial:
            sys.exit(f"{d}: points not finished: {', '.join(s['missing'])} (--partial tables the rest)")
    if partial:
        keys = [{(p["cost"], p["budget_ms"]) for p in s["points"]} for s in sweeps]
        common = set.intersection(*keys)
        dropped = sorted(set.union(*keys) - common, key=lambda k: (k[1], k[0]))
        for s in sweeps:
            s["points"] = [p for p in s["points"] if (p["cost"], p["budget_ms"]) in common]
        if dropped:
            left = ", ".join(f"{c} {b:g} ms" for c, b in dropped)
            print(f"Partial: left out, as not every sweep finished them: {left}.\n")

    # top1[(cost, budget)] = [per seed, in the order given]
    top1, measured, landed = {}, {}, {}
    for s in sweeps:
        for p in s["points"]:
            key = (p["cost"], p["budget_ms"])
            top1.setdefault(key, []).append(100 * p["top1"])
            measured.setdefault(key, []).append(p["measured_ms"])
            landed.setdefault(key, []).append(landing(p))
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
    transcribed = [
        f"column {i + 1} ({d}): {s['transcribed_from']}"
        for i, (d, s) in enumerate(zip(argv, sweeps))
        if "transcribed_from" in s
    ]
    if transcribed:
        print("\nTranscribed, not read from a sweep.json: " + "; ".join(transcribed))
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
    if any(x != "?" for v in landed.values() for x in v):
        print("\n| c_l | budget ms | gates landed (fit reopened/closed), per seed |")
        print("|---|---:|---|")
        for (cost, budget), v in sorted(
            landed.items(), key=lambda kv: (kv[0][1], order.get(kv[0][0], 2), kv[0][0])
        ):
            print(f"| {cost} | {budget:g} | " + ", ".join(v) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
