#!/usr/bin/env bash
# Before/after figures for a change, in one window: three perf/compare.sh runs with the same
# workloads and rounds, so that every ratio is taken between runs that alternated on the same
# machine at the same time:
#   1. AFTER against BEFORE (BEFORE runs as the peer),
#   2. AFTER against Garage,
#   3. BEFORE against Garage.
#
# Usage: perf/before-after.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]
#        (default OUT_DIR: /work/tmp/leofs-before-after/<timestamp>)
# Knobs: WORKLOADS (default "put-4k get-4k put-1m get-1m"), ROUNDS (default 3), LEOFS_ARGS
# (passed to both leofs binaries), DATA_ROOT (default /work/tmp); the rest as perf/compare.sh.
# Run 1 keeps two leofs data dirs at once, and a 1 MiB PUT run writes ~0.7 GB/s: it is measured
# for DIRECT_DURATION (default 4s) after DIRECT_WARMUP (1s), DIRECT_ROUNDS (4) times, so that
# both dirs fit the disk (~30 GB for put-1m); runs 2 and 3 use compare.sh's usual 10 s.
# STEPS (default "direct after-garage before-garage") picks which of the three runs to make.
# Output: OUT_DIR/{after-vs-before,after-vs-garage,before-vs-garage}/summary.md.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BEFORE="${1:?usage: perf/before-after.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]}"
AFTER="${2:?usage: perf/before-after.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]}"
OUT="${3:-/work/tmp/leofs-before-after/$(date -u +%Y%m%dT%H%M%SZ)}"
export WORKLOADS="${WORKLOADS:-put-4k get-4k put-1m get-1m}"
export ROUNDS="${ROUNDS:-3}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
LEOFS_ARGS="${LEOFS_ARGS:-}"
STEPS=" ${STEPS:-direct after-garage before-garage} "

log() { echo "[before-after] $*" >&2; }
for bin in "$BEFORE" "$AFTER"; do
  [[ -x "$bin" ]] || { log "ERROR: $bin is not an executable leofs binary"; exit 1; }
done
mkdir -p "$OUT" "$DATA_ROOT"
PEER_DIR="$(mktemp -d "$DATA_ROOT/leofs-before.XXXXXX")"
PEER_PID=""
cleanup() {
  if [[ -n "$PEER_PID" ]] && kill -0 "$PEER_PID" 2>/dev/null; then
    kill -TERM "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PEER_PID" 2>/dev/null || true
  fi
  rm -rf "$PEER_DIR"
}
trap cleanup EXIT

# 1. AFTER against BEFORE, BEFORE started here as a running peer.
if [[ "$STEPS" == *" direct "* ]]; then
port=38600
while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
admin=$((port + 1))
while ss -Htln "sport = :$admin" | grep -q .; do admin=$((admin + 1)); done
export PEER_ACCESS_KEY="LEOFSBEFORE0000000001"
export PEER_SECRET_KEY="before0secret0key0before0secret0key0abc"
# shellcheck disable=SC2086
LEOFS_ROOT_ACCESS_KEY="$PEER_ACCESS_KEY" LEOFS_ROOT_SECRET_KEY="$PEER_SECRET_KEY" \
  "$BEFORE" server --data-dir "$PEER_DIR/data" --listen "127.0.0.1:$port" \
  --admin-listen "127.0.0.1:$admin" $LEOFS_ARGS >"$OUT/before-peer.log" 2>&1 &
PEER_PID=$!
for _ in $(seq 1 600); do
  grep -q '^leofs ready' "$OUT/before-peer.log" 2>/dev/null && break
  kill -0 "$PEER_PID" 2>/dev/null || { tail -n 20 "$OUT/before-peer.log" >&2; exit 1; }
  sleep 0.1
done
log "before-leofs ready on 127.0.0.1:$port (pid $PEER_PID)"
PEER=before PEER_ENDPOINT="http://127.0.0.1:$port" PEER_REGION=us-east-1 PEER_BUCKET=bench \
  DURATION="${DIRECT_DURATION:-4s}" WARMUP="${DIRECT_WARMUP:-1s}" ROUNDS="${DIRECT_ROUNDS:-4}" \
  LEOFS_BIN="$AFTER" LEOFS_ARGS="$LEOFS_ARGS" "$HERE/compare.sh" "$OUT/after-vs-before"
cleanup
PEER_PID=""
unset PEER_ACCESS_KEY PEER_SECRET_KEY
fi

# 2. and 3.: each against Garage (started and stopped by compare.sh).
if [[ "$STEPS" == *" after-garage "* ]]; then
  LEOFS_BIN="$AFTER" LEOFS_ARGS="$LEOFS_ARGS" "$HERE/compare.sh" "$OUT/after-vs-garage"
fi
if [[ "$STEPS" == *" before-garage "* ]]; then
  LEOFS_BIN="$BEFORE" LEOFS_ARGS="$LEOFS_ARGS" "$HERE/compare.sh" "$OUT/before-vs-garage"
fi
log "done: $OUT/{after-vs-before,after-vs-garage,before-vs-garage}/summary.md"
