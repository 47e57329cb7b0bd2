#!/usr/bin/env python3
"""The PyTorch side of bench/conv_split.sh: reads the JSON lines of dnal's `conv_split`
example (one per conv layer), times the same convolutions in PyTorch the same way (the best of
RUNS calls after a warm-up: forward; forward + weight gradient; forward + input gradient) and
prints a Markdown table of both, with the ratios.

    python3 bench/torch_conv_split.py BURN.jsonl --threads 2 --runs 9
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
    p.add_argument("burn_jsonl")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--runs", type=int, default=21)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    layers = [json.loads(line) for line in open(a.burn_jsonl) if line.startswith("{")]
    print(f"burn flex against PyTorch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"batch {layers[0]['batch']}, milliseconds (best of {a.runs} calls)\n")
    print("| layer | input | out | MACs | flex fwd | torch fwd | flex fwd+dW | torch fwd+dW "
          "| flex fwd+dX | torch fwd+dX | flex/torch fwd | fwd+dW | fwd+dX |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    totals = [0.0] * 6
    for layer in layers:
        t_fwd, t_dw, t_dx = time_layer(layer, a.runs)
        b = (layer["forward_ms"], layer["forward_weight_grad_ms"], layer["forward_input_grad_ms"])
        for i, v in enumerate((b[0], t_fwd, b[1], t_dw, b[2], t_dx)):
            totals[i] += v
        c, h, w = layer["in"]
        print(f"| {layer['layer']} | {c}x{h}x{w} | {layer['out_channels']} | {layer['macs']:,} "
              f"| {b[0]:.2f} | {t_fwd:.2f} | {b[1]:.2f} | {t_dw:.2f} | {b[2]:.2f} | {t_dx:.2f} "
              f"| {b[0] / t_fwd:.2f} | {b[1] / t_dw:.2f} | {b[2] / t_dx:.2f} |")
    f = totals
    print(f"| all | | | | {f[0]:.2f} | {f[1]:.2f} | {f[2]:.2f} | {f[3]:.2f} | {f[4]:.2f} "
          f"| {f[5]:.2f} | {f[0] / f[1]:.2f} | {f[2] / f[3]:.2f} | {f[4] / f[5]:.2f} |")


if __name__ == "__main__":
    main()
