#!/usr/bin/env bash
# dnal on a GPU against PyTorch on the same GPU, in one run: training throughput (images/s of
# SGD steps on random data, the networks of bench/throughput.sh) on burn's wgpu and CUDA
# backends and in PyTorch, then a short DNAL search (all four stages) on each backend.
#
#   bench/gpu.sh [STEPS]                       # STEPS per network (default 30)
#   BACKENDS=wgpu bench/gpu.sh                 # wgpu only (CUDA builds need the internet, below)
#   TORCH_DEVICE=cpu BACKENDS=wgpu MODELS=vgg-small SEARCH_IMAGES=600 bench/gpu.sh 2   # check the script without a GPU (lavapipe)
#
# Environment:
#   BACKENDS        burn backends to measure: "wgpu cuda" (the default), "wgpu" or "cuda".
#   TORCH_PYTHON    the Python whose PyTorch (with CUDA) is the baseline (default python3).
#   TORCH_DEVICE    PyTorch's device (default cuda).
#   BATCH           batch size (default 128; the paper's presets train at 96-128).
#   MODELS          labels of the networks to time (default all five below).
#   SEARCH_MODELS   models of the short search (default "vgg-small mobilenetv2"); empty skips it.
#   SEARCH_IMAGES   training images of the short search (default 12000; test images: a sixth).
#   DATA_DIR        Fashion-MNIST's files for the search (default Debian's
#                   /usr/share/datasets/fashion-mnist).
#   DNAL_BIN, THROUGHPUT_BIN
#                   prebuilt `dnal` and `train_throughput` (for a machine without cargo); else
#                   both are built here, with `--features cuda` when BACKENDS has cuda.
#   OUT             folder for the results (default a new folder under /tmp): gpu.txt (the
#                   tables), throughput.jsonl (one line per measurement) and each search's
#                   report.json as search-BACKEND-MODEL.json.
#
# burn 0.22's CUDA backend builds cubecl's LLVM bundler, whose build script downloads LLVM: a
# machine without the internet builds only wgpu (shared notes, burn.md). wgpu needs a Vulkan
# loader and the GPU's Vulkan driver (libvulkan1; NVIDIA's driver brings its ICD).
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-30}"
backends="${BACKENDS:-wgpu cuda}"
batch="${BATCH:-128}"
torch_device="${TORCH_DEVICE:-cuda}"
models="${MODELS:-vgg-small vgg16 mobilenetv2@0.35 mobilenetv2@1.0 proxyless@0.35}"
search_models="${SEARCH_MODELS-vgg-small mobilenetv2}"
search_images="${SEARCH_IMAGES:-12000}"
data_dir="${DATA_DIR:-/usr/share/datasets/fashion-mnist}"
out="${OUT:-$(mktemp -d /tmp/dnal-gpu.XXXXXX)}"
mkdir -p "$out"
py="${TORCH_PYTHON:-python3}"
# A pyenv or venv on PATH may hide the system Python's PyTorch.
[ -n "${TORCH_PYTHON:-}" ] || "$py" -c 'import torch' 2>/dev/null || py=/usr/bin/python3

for b in $backends; do
    case "$b" in wgpu | cuda) ;; *) echo "BACKENDS: unknown backend '$b' (wgpu, cuda)" >&2; exit 2 ;; esac
done
"$py" -c 'import torch' || { echo "PyTorch does not import in $py: set TORCH_PYTHON" >&2; exit 1; }
if [[ "$torch_device" == cuda* ]]; then
    "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "PyTorch in $py sees no CUDA GPU (torch.cuda.is_available() is False);" \
            "TORCH_DEVICE=cpu compares with the CPU" >&2
        exit 1
    }
fi

if [ -z "${DNAL_BIN:-}" ] || [ -z "${THROUGHPUT_BIN:-}" ]; then
    features=()
    [[ " $backends " == *" cuda "* ]] && features=(--features dnal/cuda)
    echo "building dnal and train_throughput ${features[*]}" >&2
    if ! cargo build --release -q -p dnal -p dnal-bench --bin dnal --bin train_throughput "${features[@]}"; then
        if [ ${#features[@]} -gt 0 ]; then
            echo "the CUDA build failed: burn's CUDA backend downloads LLVM while it builds;" \
                "without the internet, BACKENDS=wgpu bench/gpu.sh" >&2
        fi
        exit 1
    fi
fi
dnal="${DNAL_BIN:-target/release/dnal}"
throughput="${THROUGHPUT_BIN:-target/release/train_throughput}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

ips() { sed -n 's/.*"images_per_second": \([0-9.]*\).*/\1/p'; }
ratio() { "$py" -c "print(f'{$1 / $2:.2f}')"; }

{
    echo "# bench/gpu.sh, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    if command -v nvidia-smi >/dev/null; then
        echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
    fi
    echo "PyTorch: $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda or "")') on $torch_device"
    echo "batch $batch, $steps steps per network after 3 warm-up steps; images per second"
    echo
} | tee "$out/gpu.txt"

# Throughput: every network on every backend, PyTorch beside it.
header=$(printf '%-18s %-8s' model input)
for b in $backends; do header+=$(printf ' %10s' "$b"); done
header+=$(printf ' %10s' torch)
for b in $backends; do header+=$(printf ' %11s' "$b/torch"); done
echo "$header" | tee -a "$out/gpu.txt"
: >"$out/throughput.jsonl"
for label in $models; do
    model=${label%@*} width=()
    [[ "$label" == *@* ]] && width=(--width "${label#*@}")
    case "$model" in
        vgg16) input=3,32,32 ;;
        mobilenetv2) [ "${label#*@}" = 1.0 ] && input=3,32,32 || input=1,28,28 ;;
        *) input=1,28,28 ;;
    esac
    spec="$tmp/$model.json"
    row=$(printf '%-18s %-8s' "$label" "$input")
    burn_ips=()
    for b in $backends; do
        line=$("$throughput" --model "$model" "${width[@]}" --input "$input" --classes 10 --backend "$b" \
            --batch "$batch" --steps "$steps" --spec-out "$spec")
        echo "$line" >>"$out/throughput.jsonl"
        burn_ips+=("$(echo "$line" | ips)")
        row+=$(printf ' %10s' "${burn_ips[-1]}")
    done
    threads=()
    [ "$torch_device" = cpu ] && threads=(--threads "$(nproc)")
    line=$("$py" bench/torch_throughput.py "$spec" --batch "$batch" --steps "$steps" --device "$torch_device" "${threads[@]}")
    echo "$line" >>"$out/throughput.jsonl"
    torch=$(echo "$line" | ips)
    row+=$(printf ' %10s' "$torch")
    for v in "${burn_ips[@]}"; do row+=$(printf ' %11s' "$(ratio "$v" "$torch")"); done
    echo "$row" | tee -a "$out/gpu.txt"
done

# A short search per backend: every stage on a subset; the weight stage's images/s
# is plain training with data loading and augmentation, beside PyTorch's throughput above.
if [ -n "$search_models" ]; then
    [ -f "$data_dir/train-images-idx3-ubyte.gz" ] || [ -f "$data_dir/train-images-idx3-ubyte" ] || {
        echo "no Fashion-MNIST in $data_dir (apt-get install dataset-fashion-mnist, or DATA_DIR=...)" >&2
        exit 1
    }
    {
        echo
        echo "short search: dnal search --train-limit $search_images --test-limit $((search_images / 6)) --epochs-weights 2 --epochs-gates 2 --epochs-finetune 2 --batch-size $batch"
        printf '%-12s %-8s %9s %9s %9s %9s %9s %9s\n' model backend "weights/s" "gates/s" "finet./s" "seconds" "parent" "pruned"
    } | tee -a "$out/gpu.txt"
    for model in $search_models; do
        width=()
        [ "$model" = mobilenetv2 ] && width=(--width 0.35)
        for b in $backends; do
            run="$tmp/search-$b-$model"
            "$dnal" search --backend "$b" --model "$model" "${width[@]}" --dataset fashion-mnist \
                --data-dir "$data_dir" --train-limit "$search_images" --test-limit $((search_images / 6)) --epochs-weights 2 \
                --epochs-gates 2 --epochs-finetune 2 --batch-size "$batch" --out "$run" >/dev/null
            cp "$run/report.json" "$out/search-$b-$model.json"
            "$py" - "$run/report.json" "$model" "$b" <<'EOF' | tee -a "$out/gpu.txt"
import json, sys
report = json.load(open(sys.argv[1]))
def rate(stage):
    epochs = [e for e in report["history"] if e["stage"] == stage]
    # The first epoch compiles kernels (wgpu, CUDA): the last one is the steady state.
    return f"{epochs[-1]['images_per_second']:.0f}" if epochs else "-"
seconds = sum(s["seconds"] for s in report["stages"])
print(f"{sys.argv[2]:<12} {sys.argv[3]:<8} {rate('weights'):>9} {rate('gates'):>9} {rate('finetune'):>9}"
      f" {seconds:>9.1f} {report['parent']['top1'] * 100:>8.2f}% {report['pruned']['top1'] * 100:>8.2f}%")
EOF
        done
    done
fi
echo "results in $out" >&2
