#!/usr/bin/env python3
"""How budget-mode gate stages went, from their `report.json` (`budget.trace`): where the
gates landed, how far lambda_a fell under the value it ended at (the controller's windup),
how far the gates overshot the budget after first reaching it, when they settled, and the delta
the stage ended at (under 1e4: held or backed off while the gates were off the budget).

    python3 bench/landing_course.py runs/aw/old-22 runs/aw/new-22 ...

Each argument is a search folder or its report.json. Prints a Markdown table (BENCHMARKS.md).
"""
import json
import sys
from pathlib import Path


def report(arg):
    path = Path(arg)
    return json.loads((path / "report.json" if path.is_dir() else path).read_text())


def course(trace, band):
    samples = trace["samples"]
    lam_end = samples[-1]["lambda"]
    lam_min = min(s["lambda"] for s in samples)
    reached = next((s for s in samples if s["cost_ratio"] >= 1 - band), None)
    peak = max(s["cost_ratio"] for s in samples[samples.index(reached):]) if reached else None
    # Settled: the first sample after which every one is within the band.
    settled = None
    for s in reversed(samples):
        if abs(s["cost_ratio"] - 1) > band:
            break
        settled = s["step"]
    return {
        "windup": lam_end / lam_min,
        "reached": reached["step"] if reached else None,
        "peak": peak,
        "settled": settled,
        "steps": trace["steps"],
    }


def main(args):
    print("| run | landed | lambda_a start / end | end / lowest (windup) | first in band | peak after | settled from | delta at the end |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arg in args:
        r = report(arg)
        budget = r.get("budget") or {}
        trace = budget.get("trace")
        fit = budget.get("fit") or {}
        if not trace:
            print(f"| {arg} | no trace | | | | | | |")
            continue
        c = course(trace, trace["band"])
        start = trace["samples"][0]["lambda"]
        end = trace["samples"][-1]["lambda"]
        step = lambda s: "never" if s is None else f"step {s}"
        peak = "-" if c["peak"] is None else f"{c['peak']:.2f}x"
        landed = fit.get("landing_pct")
        landed = "?" if landed is None else f"{landed:+.1f}%"
        print(
            f"| {arg} | {landed} | {start:.2e} / {end:.2e} | {c['windup']:.1f}x | "
            f"{step(c['reached'])} | {peak} | {step(c['settled'])} of {c['steps']} | "
            f"{trace['samples'][-1]['delta']:.3g} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
