#!/usr/bin/env bash
# How long a gateway-only node takes to serve again after a restart with a full disk cache
# (issue 15), for one or two binaries on the same cache directory: `leofs demo --nodes 3
# --replicas 3` and a one-core gateway-only node joined to it; OBJECTS objects of 1 KiB are
# written and read at random through that gateway for FILL_SECONDS (each object read enters
# its disk cache), and their files written; then, for each binary in turn, ROUNDS
# times: the gateway is stopped, the page cache dropped (as after a reboot: every file's header
# is read from the disk), and the gateway started again on the same data directory. Prints the
# seconds to its `leofs ready` line and, from its log, when the disk cache had its entries
# back (the line that says so, with how many).
#
# Usage: perf/disk-cache-restart.sh BIN [BIN2]     (needs root: it drops the page cache)
# Knobs: OBJECTS (default 50000), FILL_SECONDS (40), ROUNDS (2), BENCH_BIN (target/release/leofs-bench), DATA_ROOT
# (/work/tmp). The demo runs from the first binary.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BINS=("$@")
[[ ${#BINS[@]} -ge 1 ]] || { echo "usage: $0 BIN [BIN2]" >&2; exit 2; }
OBJECTS="${OBJECTS:-50000}"
FILL_SECONDS="${FILL_SECONDS:-40}"
ROUNDS="${ROUNDS:-2}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/leofs-bench}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
log() { echo "[disk-cache-restart] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "needs root to drop the page cache"
DIR="$(mktemp -d "$DATA_ROOT/leofs-dcr.XXXXXX")"
DEMO_PID="" GATEWAY_PID=""
cleanup() {
  [[ -n "$GATEWAY_PID" ]] && { kill -TERM "$GATEWAY_PID" 2>/dev/null || true; wait "$GATEWAY_PID" 2>/dev/null || true; }
  if [[ -n "$DEMO_PID" ]]; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
free_port() {
  local port=$1
  while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
  echo "$port"
}

"${BINS[0]}" demo --nodes 3 --replicas 3 --dir "$DIR/demo" >"$DIR/demo.out" 2>"$DIR/demo.err" &
DEMO_PID=$!
for _ in $(seq 1 600); do
  grep -q '^leofs demo ready' "$DIR/demo.out" 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$DIR/demo.err" >&2; exit 1; }
  sleep 0.1
done
grep -q '^leofs demo ready' "$DIR/demo.out" || die "the demo did not become ready"
ACCESS_KEY="$(sed -n 's/^Access key: //p' "$DIR/demo.out")"
SECRET_KEY="$(sed -n 's/^Secret key: //p' "$DIR/demo.out")"
JOIN="$(sed -n 's/.* --join \([^ ]*\) .*/\1/p' "$DIR/demo.out")"
PORT="$(free_port 38960)"
ADMIN="$(free_port $((PORT + 1)))"
CACHE_DIR="$DIR/gateway/gateway-cache/core-0"

start_gateway() { # start_gateway BIN: starts it; READY_SECS: the seconds to `leofs ready`
  local started ended
  READY_SECS=""
  : >"$DIR/gateway.log"
  started=$(date +%s.%N)
  "$1" server --roles gateway --join "$JOIN" --cluster-secret-file "$DIR/demo/cluster.secret" \
    --cores 1 --pin-cores false --data-dir "$DIR/gateway" --listen "127.0.0.1:$PORT" \
    --admin-listen "127.0.0.1:$ADMIN" >"$DIR/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  for _ in $(seq 1 12000); do
    grep -q '^leofs ready' "$DIR/gateway.log" && break
    kill -0 "$GATEWAY_PID" 2>/dev/null || { tail -n 20 "$DIR/gateway.log" >&2; exit 1; }
    sleep 0.01
  done
  ended=$(date +%s.%N)
  grep -q '^leofs ready' "$DIR/gateway.log" || die "the gateway did not become ready"
  READY_SECS=$(echo "$ended - $started" | bc)
}
stop_gateway() {
  kill -TERM "$GATEWAY_PID" 2>/dev/null || log "the gateway had exited already"
  wait "$GATEWAY_PID" || true
  GATEWAY_PID=""
}
entries_line() { # the disk cache's line with its entries, colours stripped
  sed 's/\x1b\[[0-9;]*m//g' "$DIR/gateway.log" | grep -o 'disk cache.*entries=.*' | head -n 1
}

log "filling the disk cache: $OBJECTS objects of 1 KiB, read at random for ${FILL_SECONDS}s"
start_gateway "${BINS[0]}"
"$BENCH_BIN" --endpoint "http://127.0.0.1:$PORT" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
  --bucket bench --quiet --workload get --size 1KiB --concurrency 32 --objects "$OBJECTS" \
  --prefix restart/ --duration "${FILL_SECONDS}s" --warmup 0s >/dev/null
held=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^leofs_gateway_disk_cache_entries/ { s += $NF } END { print s + 0 }')
for _ in $(seq 1 300); do
  [[ $(find "$CACHE_DIR" -maxdepth 1 -type f -name '????????????????????????????????' | wc -l) -ge "$held" ]] && break
  sleep 1
done
log "$held entries, $(find "$CACHE_DIR" -maxdepth 1 -type f | wc -l) files in the disk cache"
stop_gateway

for round in $(seq 1 "$ROUNDS"); do
  for bin in "${BINS[@]}"; do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    start_gateway "$bin"
    for _ in $(seq 1 6000); do
      [[ -n "$(entries_line)" ]] && break
      sleep 0.1
    done
    echo "round $round, $bin: ready after $READY_SECS s; $(entries_line || true)"
    [[ -n "$(entries_line || true)" ]] || log "round $round, $bin: no line with the disk cache's entries within 600 s"
    stop_gateway
  done
done
