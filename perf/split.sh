#!/usr/bin/env bash
# The split deployment against all-in-one, in one window (issue 11): a storage process
# (`--roles manager,storage --rpc-listen`) and a gateway-only process joined to it
# (`--roles gateway --join`) run as compare.sh's peer, and compare.sh runs the all-in-one
# `leofs server` beside it, alternating runs per workload. compare.sh's ratios are
# all-in-one / split; the split's share of all-in-one is their inverse.
#
# Usage: perf/split.sh [OUT_DIR]        (default: /work/tmp/leofs-split/<timestamp>)
# Knobs: LEOFS_BIN (default target/release/leofs), WORKLOADS (default "put-4k get-4k put-1m
# get-1m"), ROUNDS (default 3), DURATION (default 4s: two data dirs must fit the disk under
# 1 MiB PUTs), WARMUP (1s), LEOFS_ARGS (to every leofs process; default "--pin-cores false":
# three processes and the load generator share two CPUs), DATA_ROOT (default /work/tmp).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-/work/tmp/leofs-split/$(date -u +%Y%m%dT%H%M%SZ)}"
LEOFS_BIN="${LEOFS_BIN:-$ROOT/target/release/leofs}"
LEOFS_ARGS="${LEOFS_ARGS:---pin-cores false}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
export WORKLOADS="${WORKLOADS:-put-4k get-4k put-1m get-1m}"
export ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-4s}" WARMUP="${WARMUP:-1s}"

log() { echo "[split] $*" >&2; }
mkdir -p "$OUT" "$DATA_ROOT"
DIR="$(mktemp -d "$DATA_ROOT/leofs-split.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { # free_port FIRST [COUNT]: the first of COUNT free consecutive ports from FIRST
  local port=$1 count=${2:-1} i
  while :; do
    for ((i = 0; i < count; i++)); do
      ss -Htln "sport = :$((port + i))" | grep -q . && break
    done
    [[ $i == "$count" ]] && { echo "$port"; return; }
    port=$((port + i + 1))
  done
}
wait_ready() { # wait_ready LOG PID
  for _ in $(seq 1 600); do
    grep -q '^leofs ready' "$1" 2>/dev/null && return
    kill -0 "$2" 2>/dev/null || { tail -n 20 "$1" >&2; exit 1; }
    sleep 0.1
  done
  log "ERROR: no 'leofs ready' in $1"; exit 1
}

rpc=$(free_port 38700 2)
admin=$(free_port $((rpc + 2)))
s3=$(free_port $((admin + 1)))
export PEER_ACCESS_KEY="LEOFSSPLIT00000000001"
export PEER_SECRET_KEY="split0secret0key0split0secret0key0abcde"
# shellcheck disable=SC2086
LEOFS_ROOT_ACCESS_KEY="$PEER_ACCESS_KEY" LEOFS_ROOT_SECRET_KEY="$PEER_SECRET_KEY" \
  "$LEOFS_BIN" server --roles manager,storage --rpc-listen "127.0.0.1:$rpc" --cores 2 \
  --data-dir "$DIR/storage" --admin-listen "127.0.0.1:$admin" $LEOFS_ARGS \
  >"$OUT/storage.log" 2>&1 &
PIDS+=($!)
wait_ready "$OUT/storage.log" "${PIDS[0]}"
# shellcheck disable=SC2086
"$LEOFS_BIN" server --roles gateway --join "127.0.0.1:$rpc" --cores 2 \
  --cluster-secret-file "$DIR/storage/cluster.secret" --data-dir "$DIR/gateway" \
  --listen "127.0.0.1:$s3" $LEOFS_ARGS >"$OUT/gateway.log" 2>&1 &
PIDS+=($!)
wait_ready "$OUT/gateway.log" "${PIDS[1]}"
log "split ready: storage rpc 127.0.0.1:$rpc, gateway http://127.0.0.1:$s3"
PEER=split PEER_ENDPOINT="http://127.0.0.1:$s3" PEER_REGION=us-east-1 PEER_BUCKET=bench \
  LEOFS_BIN="$LEOFS_BIN" LEOFS_ARGS="--cores 2 $LEOFS_ARGS" LEOFS_PORT=$((s3 + 1)) \
  "$HERE/compare.sh" "$OUT"
log "done: $OUT/summary.md (ratios are all-in-one / split)"
