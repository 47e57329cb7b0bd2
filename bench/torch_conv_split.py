#!/usr/bin/env python3
"""The PyTorch side of bench/conv_split.sh: reads the JSON lines of dnal's `conv_split`
example (one file per kernel set, one line per conv layer), times the same convolutions in
PyTorch the same way (the best of RUNS calls after a warm-up: forward; forward + weight
gradient; forward + input gradient) and prints a Markdown table of all, with the ratios.

    python3 bench/torch_conv_split.py FLEX.jsonl DNAL.jsonl --threads 2 --runs 9
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def best_ms(runs, f):
    f()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        f()
        best = min(best, (time.perf_counter() - t) * 1e3)
    return best


def time_layer(layer, runs):
    c, h, w = layer["in"]
    k, groups = layer["kernel"], layer["groups"]
    conv = dict(stride=layer["stride"], padding=layer["padding"], groups=groups)
    x = torch.randn(layer["batch"], c, h, w)
    wt = torch.randn(layer["out_channels"], c // groups, k, k)
    out = F.conv2d(x, wt, **conv)
    g = torch.randn_like(out)

    def forward():
        with torch.no_grad():
            F.conv2d(x, wt, **conv).sum().item()

    def backward(grad_of):
        xx = x.detach().requires_grad_(grad_of == "input")
        ww = wt.detach().requires_grad_(grad_of == "weight")
        (F.conv2d(xx, ww, **conv) * g).sum().backward()
        (xx if grad_of == "input" else ww).grad.sum().item()

    return (
        best_ms(runs, forward),
        best_ms(runs, lambda: backward("weight")),
        best_ms(runs, lambda: backward("input")),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("jsonl", nargs="+", help="conv_split output, one file per kernel set")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--runs", type=int, default=21)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    runs = [[json.loads(line) for line in open(f) if line.startswith("{")] for f in a.jsonl]
    names = [r[0]["framework"] for r in runs]
    layers = runs[0]
    print(f"{', '.join(names)} against PyTorch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), batch {layers[0]['batch']}, milliseconds (best of {a.runs} calls)\n")
    directions = [("fwd", "forward_ms"), ("fwd+dW", "forward_weight_grad_ms"),
                  ("fwd+dX", "forward_input_grad_ms")]
    head = ["layer", "input", "out", "MACs"]
    for d, _ in directions:
        head += [f"{n} {d}" for n in names] + [f"torch {d}"]
    head += [f"{n}/torch {d}" for d, _ in directions for n in names]
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (len(head) - 2))
    totals = {}
    for i, layer in enumerate(layers):
        torch_ms = time_layer(layer, a.runs)
        cells, ratios = [], []
        for j, (_, key) in enumerate(directions):
            for n, r in zip(names, runs):
                v = r[i][key]
                totals[(n, j)] = totals.get((n, j), 0.0) + v
                cells.append(f"{v:.2f}")
                ratios.append((n, j, v / torch_ms[j]))
            totals[("torch", j)] = totals.get(("torch", j), 0.0) + torch_ms[j]
            cells.append(f"{torch_ms[j]:.2f}")
        ratio_cells = [f"{x:.2f}" for j in range(3) for (n, jj, x) in ratios if jj == j]
        c, h, w = layer["in"]
        print(f"| {layer['layer']} | {c}x{h}x{w} | {layer['out_channels']} | {layer['macs']:,} | "
              + " | ".join(cells + ratio_cells) + " |")
    cells = [f"{totals[(n, j)]:.2f}" for j in range(3) for n in names + ["torch"]]
    ratio_cells = [f"{totals[(n, j)] / totals[('torch', j)]:.2f}" for j in range(3) for n in names]
    print("| all | | | | " + " | ".join(cells + ratio_cells) + " |")


if __name__ == "__main__":
    main()
