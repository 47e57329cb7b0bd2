#!/usr/bin/env bash
# Where the convolution time of a training step goes, layer by layer, with burn flex's kernels,
# dnal's (models/train-kernels/src/conv_op.rs, what training uses) and PyTorch's, on the same machine in one
# run: forward, forward + weight gradient, forward + input
# gradient (batch 64, the best of 21 calls), and the ratios. Run it on a quiet machine.
#
#   bench/conv_split.sh [MODEL INPUT]      # default: vgg-small 1,28,28; needs python3-torch
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-vgg-small}"
input="${2:-1,28,28}"
cargo build --release -q -p dnal-bench --bin conv_split
py=python3
"$py" -c 'import torch' 2>/dev/null || py=/usr/bin/python3
"$py" -c 'import torch' || { echo "PyTorch does not import: apt-get install python3-torch" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for kernels in burn dnal; do
    target/release/conv_split --model "$model" --input "$input" --batch 64 --runs 21 \
        --kernels "$kernels" > "$tmp/$kernels.jsonl"
done
"$py" bench/torch_conv_split.py "$tmp/burn.jsonl" "$tmp/dnal.jsonl" --threads "$(nproc)" --runs 21
