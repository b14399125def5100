#!/usr/bin/env bash
# Versioned-bucket figures before/after a change: two leofs binaries started side by side on
# fresh data dirs, a bucket `bench` with versioning enabled in each (boto3), then perf/compare.sh
# alternating runs AFTER (as "leofs") against BEFORE (as the peer) on that bucket.
#
# Usage: perf/versioned.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]
# Knobs: WORKLOADS (default "put-4k get-4k get-1m"), ROUNDS (4), DURATION (4s), WARMUP (1s),
# DATA_ROOT (default /work/tmp), BENCH_BIN as perf/compare.sh.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BEFORE="${1:?usage: perf/versioned.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]}"
AFTER="${2:?usage: perf/versioned.sh BEFORE_LEOFS_BIN AFTER_LEOFS_BIN [OUT_DIR]}"
OUT="${3:-/work/tmp/leofs-versioned/$(date -u +%Y%m%dT%H%M%SZ)}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
mkdir -p "$OUT" "$DATA_ROOT"
DIR="$(mktemp -d "$DATA_ROOT/leofs-versioned.XXXXXX")"
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

free_port() {
  local port=$1
  while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
  echo "$port"
}

# start NAME BIN: starts a server and waits until it is ready; its S3 port is left in PORT.
# (Called directly, not in $(...): the pid must reach PIDS in this shell for cleanup.)
PORT=""
start() {
  local name=$1 bin=$2 s3 admin pid
  s3="$(free_port $((38700 + RANDOM % 500)))"
  admin="$(free_port $((s3 + 1)))"
  LEOFS_ROOT_ACCESS_KEY="VERSIONED${name^^}000001" LEOFS_ROOT_SECRET_KEY="${name}0versioned0secret0key0abcdefghij" \
    "$bin" server --data-dir "$DIR/$name" --listen "127.0.0.1:$s3" --admin-listen "127.0.0.1:$admin" \
    >"$OUT/$name.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do
    grep -q '^leofs ready' "$OUT/$name.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^leofs ready' "$OUT/$name.log" || { tail -n 20 "$OUT/$name.log" >&2; exit 1; }
  PORT="$s3"
}
start before "$BEFORE"
BEFORE_PORT="$PORT"
start after "$AFTER"
AFTER_PORT="$PORT"
python3 - "$BEFORE_PORT" "$AFTER_PORT" <<'PY'
import sys
import boto3
for name, port in (("before", sys.argv[1]), ("after", sys.argv[2])):
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id=f"VERSIONED{name.upper()}000001",
                      aws_secret_access_key=f"{name}0versioned0secret0key0abcdefghij")
    s3.create_bucket(Bucket="bench")
    s3.put_bucket_versioning(Bucket="bench", VersioningConfiguration={"Status": "Enabled"})
PY
LEOFS_ENDPOINT="http://127.0.0.1:$AFTER_PORT" LEOFS_ACCESS_KEY=VERSIONEDAFTER000001 \
  LEOFS_SECRET_KEY=after0versioned0secret0key0abcdefghij \
  PEER=before PEER_ENDPOINT="http://127.0.0.1:$BEFORE_PORT" PEER_ACCESS_KEY=VERSIONEDBEFORE000001 \
  PEER_SECRET_KEY=before0versioned0secret0key0abcdefghij PEER_REGION=us-east-1 PEER_BUCKET=bench \
  ROUNDS="${ROUNDS:-4}" DURATION="${DURATION:-4s}" WARMUP="${WARMUP:-1s}" \
  WORKLOADS="${WORKLOADS:-put-4k get-4k get-1m}" "$HERE/compare.sh" "$OUT"
