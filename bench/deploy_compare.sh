#!/usr/bin/env bash
# A pruned model against its parent on the boards: MACs ratio against the measured cost ratio
# (QEMU instruction counts), flash, RAM, and the activation arena against its lower bound.
#
#   bench/deploy_compare.sh RUN_DIR [BOARD ...]     # RUN_DIR: what `dnal search --out` wrote
#
# Deploys RUN_DIR/parent and RUN_DIR (the pruned export) with 4 test images each.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: bench/deploy_compare.sh RUN_DIR [BOARD ...]}"
shift
boards=("${@:-cortex-m4-qemu}")
[ $# -gt 0 ] || boards=(cortex-m4-qemu cortex-m7-qemu)
cargo build --release -q -p dnal
fw="$(mktemp -d)"
trap 'rm -rf "$fw"' EXIT
for board in "${boards[@]}"; do
    for net in parent pruned; do
        export_dir="$run"
        [ "$net" = parent ] && export_dir="$run/parent"
        target/release/dnal deploy --export "$export_dir" --board "$board" \
            --out "$fw/$board-$net" --run --images 4 > /dev/null
    done
done
python3 - "$fw" "${boards[@]}" <<'PY'
import json, sys
fw, boards = sys.argv[1], sys.argv[2:]
print(f"{'board':<16} {'net':<7} {'MACs':>11} {'cost/inference':>15} {'unit':<13} {'flash B':>9} {'RAM B':>8} {'stack B':>7} {'arena B':>8} {'lower bound B':>13} {'max|diff|':>9}")
for b in boards:
    r = {n: json.load(open(f"{fw}/{b}-{n}/deploy.json")) for n in ("parent", "pruned")}
    for n, d in r.items():
        print(f"{b:<16} {n:<7} {d['macs']:>11,} {d['cost']['per_inference']:>15,.0f} {d['cost']['unit']:<13} {d['flash_bytes']:>9,} {d['ram_bytes']:>8,} {d['stack_bytes'] or 0:>7,} {d['arena_bytes']:>8,} {d['arena_lower_bound_bytes']:>13,} {d['parity']['max_abs_diff']:>9.1e}")
    macs = r["parent"]["macs"] / r["pruned"]["macs"]
    cost = r["parent"]["cost"]["per_inference"] / r["pruned"]["cost"]["per_inference"]
    print(f"{b:<16} MACs ratio {macs:.2f}x, measured cost ratio {cost:.2f}x (speed-up / MACs saving = {cost / macs:.2f})")
PY
