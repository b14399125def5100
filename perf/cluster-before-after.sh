#!/usr/bin/env bash
# Before/after figures for a change to the cluster's data path, in one window: for each round,
# a fresh `leofs demo --nodes 3 --replicas R` of the AFTER binary, then one of the BEFORE binary
# (the order swaps every round), each measured with the same leofs-bench workloads (4 KiB GET
# and PUT at c=32 by default), one demo at a time; then the mean of each side and the ratio.
#
# Usage: perf/cluster-before-after.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]
#        (default OUT_DIR: /work/tmp/leofs-cluster-before-after/<timestamp>)
# Knobs: ROUNDS (default 3), REPLICAS (3), NODE_CORES (1), GATEWAY_CORES (1), DURATION (8s),
# WARMUP (1s), WORKLOADS (default "get put": leofs-bench workloads at --size 4KiB
# --concurrency 32 --objects 1000), BENCH_BIN (default target/release/leofs-bench), DATA_ROOT
# (default /work/tmp; each demo's data dir is removed when it stops).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BEFORE="${1:?usage: perf/cluster-before-after.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]}"
AFTER="${2:?usage: perf/cluster-before-after.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]}"
OUT="${3:-/work/tmp/leofs-cluster-before-after/$(date -u +%Y%m%dT%H%M%SZ)}"
ROUNDS="${ROUNDS:-3}" REPLICAS="${REPLICAS:-3}" NODE_CORES="${NODE_CORES:-1}"
GATEWAY_CORES="${GATEWAY_CORES:-1}" DURATION="${DURATION:-8s}" WARMUP="${WARMUP:-1s}"
WORKLOADS="${WORKLOADS:-get put}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/leofs-bench}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
mkdir -p "$OUT" "$DATA_ROOT"
log() { echo "[cluster-before-after] $*" >&2; }

DEMO_PID="" DIR=""
stop_demo() {
  if [[ -n "$DEMO_PID" ]]; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
    DEMO_PID=""
  fi
  if [[ -n "$DIR" ]]; then rm -rf "$DIR"; DIR=""; fi
}
trap stop_demo EXIT

# measure SIDE BIN ROUND: one demo of BIN, every workload once; appends "SIDE WORKLOAD OPS/S".
measure() {
  local side=$1 bin=$2 round=$3
  DIR="$(mktemp -d "$DATA_ROOT/leofs-cluster-ba.XXXXXX")"
  "$bin" demo --nodes 3 --replicas "$REPLICAS" --cores "$NODE_CORES" \
    --gateway-cores "$GATEWAY_CORES" --dir "$DIR/data" >"$DIR/out" 2>"$OUT/$side.$round.err" &
  DEMO_PID=$!
  for _ in $(seq 1 600); do
    grep -q '^leofs demo ready' "$DIR/out" 2>/dev/null && break
    kill -0 "$DEMO_PID" 2>/dev/null || { log "the $side demo exited"; exit 1; }
    sleep 0.1
  done
  grep -q '^leofs demo ready' "$DIR/out" || { log "the $side demo did not become ready"; exit 1; }
  local endpoint key secret
  endpoint="$(sed -n 's/^S3 endpoints: \([^ ]*\).*/\1/p' "$DIR/out")"
  key="$(sed -n 's/^Access key: //p' "$DIR/out")"
  secret="$(sed -n 's/^Secret key: //p' "$DIR/out")"
  for workload in $WORKLOADS; do
    "$BENCH_BIN" --endpoint "$endpoint" --access-key "$key" --secret-key "$secret" \
      --region us-east-1 --bucket "ba-$workload" --duration "$DURATION" --warmup "$WARMUP" \
      --quiet --json --workload "$workload" --size 4KiB --concurrency 32 --objects 1000 \
      >"$OUT/$side.$round.$workload.json" 2>/dev/null
    python3 - "$OUT/$side.$round.$workload.json" "$side" "$workload" >>"$OUT/runs.txt" <<'PY'
import json, sys
path, side, workload = sys.argv[1:4]
report = json.load(open(path))
rate = sum(r["ops_per_s"] for r in report["results"])
print(f"{side} {workload} {rate:.0f}")
PY
    log "round $round: $(tail -n1 "$OUT/runs.txt")"
  done
  stop_demo
}

: >"$OUT/runs.txt"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then
    measure after "$AFTER" "$round"; measure before "$BEFORE" "$round"
  else
    measure before "$BEFORE" "$round"; measure after "$AFTER" "$round"
  fi
done

python3 - "$OUT/runs.txt" <<'PY' | tee "$OUT/summary.md"
import sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    side, workload, rate = line.split()
    runs[(side, workload)].append(float(rate))
print("| workload (4 KiB, c=32) | AFTER runs (ops/s) | BEFORE runs (ops/s) | AFTER / BEFORE (means) |")
print("|---|---|---|---|")
for workload in dict.fromkeys(w for _, w in runs):
    after, before = runs[("after", workload)], runs[("before", workload)]
    ratio = (sum(after) / len(after)) / (sum(before) / len(before))
    fmt = lambda rates: " / ".join(f"{r:,.0f}" for r in rates)
    print(f"| {workload} | {fmt(after)} | {fmt(before)} | {ratio:.2f}× |")
PY
