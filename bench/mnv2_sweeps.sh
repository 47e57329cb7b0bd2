#!/usr/bin/env bash
# Issue 16 item 4's full-data sweeps, one per call: MobileNetV2 0.35 on all of Fashion-MNIST,
# latency- against FLOPs-aware, stages 10/3/4, each seed with its own copy of the board's
# table. A finished sweep's sweep.json is copied to bench/results/ (run folders do not outlive
# a machine; the results do, in git), where bench/sweep_seeds.py reads it.
#
#   bench/mnv2_sweeps.sh f32 SEED        # cortex-m7-qemu, budgets 15/30/60 ms
#   bench/mnv2_sweeps.sh int8 SEED       # the same as int8 firmware, with an int8 table
#   bench/mnv2_sweeps.sh aarch64 SEED    # aarch64-qemu (f32), budgets 1.25/2.5/5 ms
#
# One f32 seed takes about 2 hours of a 2-core machine (10 weight epochs of 2.5-4.5 minutes,
# then six points of 9-13 minutes, two at a time). The int8 and aarch64 sweeps share f32 seed
# SEED's weight stage when its folder is there (`--from-weights`), else train their own, which
# is the same network (a seed fixes the whole run). Calling it again continues where it
# stopped; bench/results/ gets the sweep.json after every budget's pair of points (with the
# rest listed as missing, for `bench/sweep_seeds.py --partial`).
#
# Environment:
#   RUNS      folder for the tables and sweep folders (default runs/mnv2-sweeps)
#   DNAL_BIN  a prebuilt `dnal` (default: built here, release)
#   TRIAL     extra `dnal sweep` flags for a trial of the script, e.g. "--train-limit 256
#             --test-limit 128" (a few minutes); a trial's sweep.json is not kept
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:?"which sweep: f32, int8 or aarch64"}
seed=${2:?"which seed: 0, 1, 2"}
[[ $seed =~ ^[0-9]+$ ]] || { echo "SEED is a number, not '$seed'" >&2; exit 2; }
case $kind in
  f32) board=cortex-m7-qemu; budgets=15,30,60; precision=(); tag=m7-f32 ;;
  int8) board=cortex-m7-qemu; budgets=15,30,60; precision=(--precision int8); tag=m7-int8 ;;
  aarch64) board=aarch64-qemu; budgets=1.25,2.5,5; precision=(); tag=a64-f32 ;;
  *) echo "unknown sweep '$kind': f32, int8 or aarch64" >&2; exit 2 ;;
esac

if [[ -z ${DNAL_BIN:-} ]]; then
  cargo build --release -p dnal
  DNAL_BIN=$PWD/target/release/dnal
fi
runs=${RUNS:-runs/mnv2-sweeps}
mkdir -p "$runs"
model=(--model mobilenetv2 --width 0.35)

table=$runs/table-$tag.json
if [[ ! -f $table ]]; then
  "$DNAL_BIN" profile --board "$board" "${model[@]}" "${precision[@]}" --out "$table.tmp"
  mv "$table.tmp" "$table"
fi

out=$runs/$tag-s$seed
if [[ ! -f $out/sweep-plan.json ]]; then
  # Each seed's own copy: a table learns from the measurements kept beside it, and seeds
  # that shared one would not be independent.
  cp "$table" "$out-table.json"
  if [[ $kind != f32 && -d $runs/m7-f32-s$seed/weights ]]; then
    parent=(--from-weights "$runs/m7-f32-s$seed")
  else
    parent=("${model[@]}" --epochs-weights 10 --seed "$seed")
  fi
  "$DNAL_BIN" sweep "${parent[@]}" "${precision[@]}" --board "$board" --budgets-ms "$budgets" \
    --latency-table "$out-table.json" --costs latency,flops \
    --epochs-gates 3 --epochs-finetune 4 ${TRIAL:-} --out "$out" --only prepare
else
  "$DNAL_BIN" sweep --resume "$out" --only prepare
fi

# The points a budget at a time, its latency- and FLOPs-aware point at once (point K and
# K + budgets: `--only prepare` lists them), collected after each: a run stopped short
# (a machine that goes away after a few hours) keeps whole pairs, which is what
# bench/sweep_seeds.py compares.
n=$(tr ',' '\n' <<<"$budgets" | wc -l)
kept=bench/results/mnv2-$tag-s$seed.json
for ((k = 0; k < n; k++)); do
  pids=()
  for point in $k $((k + n)); do
    "$DNAL_BIN" sweep --resume "$out" --only point --point "$point" >"$out/point-$point.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "a point failed: see $out/point-*.log" >&2; exit 1; }
  done
  "$DNAL_BIN" sweep --resume "$out" --only collect
  if [[ -z ${TRIAL:-} ]]; then
    cp "$out/sweep.json" "$kept"
    echo "kept $kept ($((k + 1)) of $n budgets)"
  fi
done
[[ -z ${TRIAL:-} ]] || { echo "a trial: $out/sweep.json is not kept"; exit 0; }
echo "python3 bench/sweep_seeds.py bench/results/mnv2-$tag-s*.json tables the seeds"
