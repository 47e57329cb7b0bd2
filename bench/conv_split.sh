#!/usr/bin/env bash
# Where the convolution time of a training step goes, layer by layer, with burn flex's kernels,
# dnal's (models/train-kernels/src/conv_op.rs, what training uses) and PyTorch's, on the same machine in one
# run: forward, forward + weight gradient, forward + input
# gradient (batch 64, the best of 21 calls), and the ratios. Run it on a quiet machine.
#
#   bench/conv_split.sh [MODEL INPUT [WIDTH]]   # default: vgg-small 1,28,28; needs python3-torch
#   TORCH_PYTHON=venv/bin/python bench/conv_split.sh mobilenetv2 1,28,28 0.35   # newest PyTorch
#   KERNELS=dnal RUNS=7 bench/conv_split.sh ...   # only dnal's kernels, fewer calls
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-vgg-small}"
input="${2:-1,28,28}"
width=()
[ -z "${3:-}" ] || width=(--width "$3")
runs="${RUNS:-21}"
cargo build --release -q -p dnal-bench --bin conv_split
py="${TORCH_PYTHON:-python3}"
"$py" -c 'import torch' 2>/dev/null || py=/usr/bin/python3
"$py" -c 'import torch' || { echo "PyTorch does not import: apt-get install python3-torch" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
files=()
for kernels in ${KERNELS:-burn dnal}; do
    target/release/conv_split --model "$model" "${width[@]}" --input "$input" --batch 64 \
        --runs "$runs" --kernels "$kernels" > "$tmp/$kernels.jsonl"
    files+=("$tmp/$kernels.jsonl")
done
"$py" bench/torch_conv_split.py "${files[@]}" --threads "$(nproc)" --runs "$runs"
