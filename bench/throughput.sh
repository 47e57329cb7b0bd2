#!/usr/bin/env bash
# Training throughput (images/s, SGD steps of batch 64 on random data) of the same networks in
# burn (flex, ndarray) and PyTorch, in one run on this machine, and the ratios.
#
#   bench/throughput.sh [STEPS]        # needs Debian's python3-torch for the PyTorch column
#
# Each network is written once as a dnal NetSpec (JSON) and PyTorch builds the same layers from
# it (bench/torch_throughput.py). Both use all cores (2 here); run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-20}"
threads="$(nproc)"
cargo build --release -q -p dnal --example train_throughput
bin=target/release/examples/train_throughput
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

ips() { sed -n 's/.*"images_per_second": \([0-9.]*\).*/\1/p'; }

printf '%-10s %-8s %5s %12s %12s %12s %10s\n' model input batch "flex img/s" "torch img/s" "ndarray" "flex/torch"
for row in "vgg-small 1,28,28 10" "vgg16 3,32,32 10"; do
    set -- $row
    model=$1 input=$2 classes=$3
    spec="$tmp/$model.json"
    flex=$("$bin" --model "$model" --input "$input" --classes "$classes" --backend cpu \
        --batch 64 --steps "$steps" --spec-out "$spec" | ips)
    torch=$(python3 bench/torch_throughput.py "$spec" --batch 64 --steps "$steps" --threads "$threads" | ips)
    if [ "$model" = vgg-small ]; then
        # ndarray is ~30x slower: a few steps tell.
        nd=$("$bin" --model "$model" --input "$input" --classes "$classes" --backend ndarray \
            --batch 64 --steps 3 --warmup 1 | ips)
    else
        nd="-"
    fi
    ratio=$(python3 -c "print(f'{$flex / $torch:.2f}')")
    printf '%-10s %-8s %5s %12s %12s %12s %10s\n' "$model" "$input" 64 "$flex" "$torch" "$nd" "$ratio"
done
