#!/usr/bin/env bash
# Training throughput (images/s, SGD steps of batch 64 on random data) of the same networks in
# burn (flex, ndarray) and PyTorch, in one run on this machine, and the ratios; flex also
# without dnal's malloc tuning.
#
#   bench/throughput.sh [STEPS]        # needs Debian's python3-torch for the PyTorch column
#   TORCH_PYTHON=venv/bin/python bench/throughput.sh   # another PyTorch (the newest, from PyPI)
#
# Each network is written once as a dnal NetSpec (JSON) and PyTorch builds the same layers from
# it (bench/torch_throughput.py). Both use all cores (2 here); run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-20}"
threads="$(nproc)"
cargo build --release -q -p dnal-bench --bin train_throughput
bin=target/release/train_throughput
# Debian's python3-torch lives in the system Python, which a pyenv or venv on PATH may hide.
py="${TORCH_PYTHON:-python3}"
"$py" -c 'import torch' 2>/dev/null || py=/usr/bin/python3
"$py" -c 'import torch' || { echo "PyTorch does not import: apt-get install python3-torch" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

ips() { sed -n 's/.*"images_per_second": \([0-9.]*\).*/\1/p'; }

echo "PyTorch: $("$py" -c 'import torch; print(torch.__version__)')"
printf '%-16s %-8s %5s %10s %10s %10s %10s %10s %10s\n' model input batch "flex" "flex, plain malloc" "torch" "ndarray" "flex/torch" "malloc gain"
# model, input, classes, width (- for none), steps as a share of STEPS (the supernet is slow).
for row in "vgg-small 1,28,28 10 - 1" "vgg16 3,32,32 10 - 1" "mobilenetv2 1,28,28 10 0.35 1" \
    "mobilenetv2 3,32,32 10 1.0 1" "proxyless 1,28,28 10 0.35 4"; do
    set -- $row
    model=$1 input=$2 classes=$3 share=$5
    width=(); label=$model
    if [ "$4" != - ]; then width=(--width "$4"); label="$model@$4"; fi
    n=$(( steps / share > 2 ? steps / share : 2 ))
    spec="$tmp/$model.json"
    flex=$("$bin" --model "$model" "${width[@]}" --input "$input" --classes "$classes" --backend cpu \
        --batch 64 --steps "$n" --spec-out "$spec" | ips)
    if [ "$4" = - ]; then
        # The same without dnal's malloc tuning (dnal::allocator), to show what it buys.
        plain=$(DNAL_DEFAULT_MALLOC=1 "$bin" --model "$model" --input "$input" --classes "$classes" \
            --backend cpu --batch 64 --steps "$n" | ips)
    else
        plain=-
    fi
    torch=$("$py" bench/torch_throughput.py "$spec" --batch 64 --steps "$n" --threads "$threads" | ips)
    if [ "$model" = vgg-small ]; then
        # ndarray is far slower (BENCHMARKS.md, "CPU backends"): a few steps tell.
        nd=$("$bin" --model "$model" --input "$input" --classes "$classes" --backend ndarray \
            --batch 64 --steps 3 --warmup 1 | ips)
    else
        nd="-"
    fi
    ratio=$("$py" -c "print(f'{$flex / $torch:.2f}')")
    gain=-
    [ "$plain" = - ] || gain=$("$py" -c "print(f'{$flex / $plain:.2f}')")
    printf '%-16s %-8s %5s %10s %10s %10s %10s %10s %10s\n' "$label" "$input" 64 "$flex" "$plain" "$torch" "$nd" "$ratio" "$gain"
done
