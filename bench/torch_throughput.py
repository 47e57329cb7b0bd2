#!/usr/bin/env python3
"""Training throughput of a dnal NetSpec (JSON) in PyTorch: the same layers (Conv-BN-ReLU
blocks, pools, adds, linear), the same SGD step, random data. Prints one JSON line.

    python3 bench/torch_throughput.py SPEC.json --batch 64 --steps 20 --threads 2
    python3 bench/torch_throughput.py SPEC.json --batch 128 --device cuda   # bench/gpu.sh
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def act(x, a):
    if a == "relu":
        return F.relu(x)
    if a == "relu6":
        return F.relu6(x)
    return x


class SpecNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        shapes = [spec["input"]]
        self.layers = nn.ModuleList()
        for node in spec["nodes"]:
            x = shapes[node["inputs"][0]]
            op = node["op"]
            if op == "conv":
                groups = x["channels"] if node["depthwise"] else 1
                conv = nn.Conv2d(x["channels"], node["out_channels"], node["kernel"],
                                 node["stride"], node["padding"], groups=groups, bias=False)
                self.layers.append(nn.Sequential(conv, nn.BatchNorm2d(node["out_channels"])))
                h = (x["height"] + 2 * node["padding"] - node["kernel"]) // node["stride"] + 1
                w = (x["width"] + 2 * node["padding"] - node["kernel"]) // node["stride"] + 1
                shapes.append({"channels": node["out_channels"], "height": h, "width": w})
            elif op in ("max_pool", "avg_pool"):
                self.layers.append(nn.Identity())
                h = (x["height"] - node["kernel"]) // node["stride"] + 1
                w = (x["width"] - node["kernel"]) // node["stride"] + 1
                shapes.append({"channels": x["channels"], "height": h, "width": w})
            elif op == "global_avg_pool":
                self.layers.append(nn.Identity())
                shapes.append({"channels": x["channels"], "height": 1, "width": 1})
            elif op == "add":
                self.layers.append(nn.Identity())
                shapes.append(x)
            elif op == "linear":
                n = x["channels"] * x["height"] * x["width"]
                self.layers.append(nn.Linear(n, node["out_features"]))
                shapes.append({"channels": node["out_features"], "height": 1, "width": 1})
            else:
                raise ValueError(f"unknown op {op}")

    def forward(self, x):
        values = [x]
        for node, layer in zip(self.spec["nodes"], self.layers):
            x = values[node["inputs"][0]]
            op = node["op"]
            if op == "conv":
                y = act(layer(x), node["activation"])
            elif op == "max_pool":
                y = F.max_pool2d(x, node["kernel"], node["stride"])
            elif op == "avg_pool":
                y = F.avg_pool2d(x, node["kernel"], node["stride"])
            elif op == "global_avg_pool":
                y = x.mean(dim=(2, 3), keepdim=True)
            elif op == "add":
                y = x
                for v in node["inputs"][1:]:
                    y = y + values[v]
                y = act(y, node["activation"])
            elif op == "linear":
                y = act(layer(torch.flatten(x, 1)), node["activation"])
                y = y.reshape(y.shape[0], -1, 1, 1)
            values.append(y)
        return values[-1].flatten(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("spec")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    spec = json.load(open(a.spec))
    torch.manual_seed(0)
    device = torch.device(a.device)
    net = SpecNet(spec).to(device)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    s = spec["input"]
    x = torch.randn(a.batch, s["channels"], s["height"], s["width"], device=device)
    y = torch.arange(a.batch, device=device) % spec["num_classes"]
    for step in range(a.warmup + a.steps):
        if step == a.warmup:
            start = time.perf_counter()
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.item()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        # The last update must have run before the clock stops (loss.item() waited for the
        # forward only).
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "framework": "pytorch " + torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "model": spec["name"],
        "batch": a.batch,
        "steps": a.steps,
        "images_per_second": round(a.steps * a.batch / seconds, 2),
    }))


if __name__ == "__main__":
    main()
