#!/usr/bin/env bash
# int8 against f32 for one export: post-training quantisation (top-1 on the export's test
# images), then both deployed on the boards: instructions, flash, RAM, arena, weights, parity.
# On the Cortex-M boards int8 is also deployed with its 3x3 convolutions by Winograd
# (`dnal deploy --winograd`, row "int8w").
#
#   bench/int8.sh EXPORT_DIR [BOARD ...]     # EXPORT_DIR: what `dnal search --out` wrote
#
# Writes EXPORT_DIR-int8 (replaced if it is an earlier int8 export); firmware in a temporary
# folder, 8 test images each.
set -euo pipefail
cd "$(dirname "$0")/.."
export_dir="${1:?usage: bench/int8.sh EXPORT_DIR [BOARD ...]}"
shift
boards=("$@")
[ $# -gt 0 ] || boards=(cortex-m4-qemu cortex-m7-qemu aarch64-qemu)
cargo build --release -q -p dnal
int8_dir="${export_dir%/}-int8"
target/release/dnal quantize --export "$export_dir" --out "$int8_dir"
fw="$(mktemp -d)"
trap 'rm -rf "$fw"' EXIT
for board in "${boards[@]}"; do
    kinds=(f32 int8)
    [[ "$board" == cortex-m* ]] && kinds+=(int8w)
    for kind in "${kinds[@]}"; do
        dir="$int8_dir"
        extra=()
        [ "$kind" = f32 ] && dir="$export_dir"
        [ "$kind" = int8w ] && extra=(--winograd)
        target/release/dnal deploy --export "$dir" --board "$board" \
            --out "$fw/$board-$kind" --run --images 8 "${extra[@]}" > /dev/null
    done
done
python3 - "$fw" "${boards[@]}" <<'PY'
import json, os, sys
fw, boards = sys.argv[1], sys.argv[2:]
print(f"{'board':<15} {'kind':<5} {'instr/inference':>15} {'instr/MAC':>9} {'flash B':>9} {'RAM B':>8} {'arena B':>8} {'weights B':>9} {'max|diff|':>9} {'top-1 vs f32':>12}")
for b in boards:
    r = {k: json.load(open(f"{fw}/{b}-{k}/deploy.json")) for k in ("f32", "int8", "int8w")
         if os.path.exists(f"{fw}/{b}-{k}/deploy.json")}
    for k, d in r.items():
        agree = d.get("f32_agreement")
        agree = f"{100 * agree['top1_agreement']:.1f}%" if agree else ""
        print(f"{b:<15} {k:<5} {d['cost']['per_inference']:>15,.0f} {d['cost']['per_mac']:>9.2f} {d['flash_bytes']:>9,} {d['ram_bytes']:>8,} {d['arena_bytes']:>8,} {d['weights_bytes']:>9,} {d['parity']['max_abs_diff']:>9.1e} {agree:>12}")
    f = r["f32"]
    for k in ("int8", "int8w"):
        if k not in r:
            continue
        i = r[k]
        print(f"{b:<15} {k}/f32: instructions {i['cost']['per_inference'] / f['cost']['per_inference']:.2f}x, "
              f"weights {i['weights_bytes'] / f['weights_bytes']:.2f}x, arena {i['arena_bytes'] / f['arena_bytes']:.2f}x, "
              f"flash {i['flash_bytes'] / f['flash_bytes']:.2f}x, RAM {i['ram_bytes'] / f['ram_bytes']:.2f}x")
PY
