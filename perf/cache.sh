#!/usr/bin/env bash
# The gateway cache (issue 15) in one window: GETs through a gateway-only node joined to
# `leofs demo --nodes 3 --replicas 3`, with the cache off, cold, warm in memory and warm on
# disk, against Garage's 3-node cluster (replication 3, fsync on), the same leofs-bench
# workloads on each.
#
# Per workload, on leofs (each a run of DURATION without warm-up; the objects are preloaded
# once, before the "off" run, and every run reads them with --no-preload, so the cache keeps
# what it took):
#   off          a gateway with no cache (`--gateway-cache-bytes-per-core 0`): every GET
#                fetches its body from a storage node
#   cold         a new gateway, cache on (memory and disk, their defaults) and empty: the
#                first read of each object on each core misses
#   warm-memory  the same gateway, right after: its memory holds the objects
#   warm-disk    that gateway restarted with a 256 KiB memory cache per core: the memory holds
#                next to nothing, the disk cache (written in the runs before) serves
# then the same workload against Garage (its own preload first). Beside each rate, the servers'
# CPU per request: user + system time of every process of the side (leofs: the gateway under
# test and the demo's manager and storage nodes; Garage: its three nodes) over the run, divided
# by its requests, which is what the rate would follow on machines where the client and the
# servers do not share two CPUs.
#
# Usage: perf/cache.sh [OUT_DIR]     (default: /work/tmp/leofs-cache/<timestamp>)
# Knobs: LEOFS_BIN, BENCH_BIN (default target/release/…), GARAGE_BIN (for start-cluster.sh),
# WORKLOADS (default "get-4k get-1m mixed-64k"), DURATION (4s), GATEWAY_CORES (2),
# DATA_ROOT (/work/tmp), ON_ARGS (more arguments of the cache-on gateway of the cold and
# warm-memory runs, e.g. "--gateway-disk-cache-bytes-per-core 0" to see the memory alone),
# R1_STALENESS_MS (set: the bench bucket reads at R=1 on every side, `update-consistency-level
# --bucket bench 2 1 2`, and the cache-on gateways serve a hit unconfirmed for that long after
# its last confirmation, `--gateway-cache-r1-staleness-ms`: what a bucket that opts into
# LeoFS's plain R=1 gets).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-/work/tmp/leofs-cache/$(date -u +%Y%m%dT%H%M%SZ)}"
LEOFS_BIN="${LEOFS_BIN:-$ROOT/target/release/leofs}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/leofs-bench}"
WORKLOADS="${WORKLOADS:-get-4k get-1m mixed-64k}"
DURATION="${DURATION:-4s}"
GATEWAY_CORES="${GATEWAY_CORES:-2}"
ON_ARGS="${ON_ARGS:-}"
R1_STALENESS_MS="${R1_STALENESS_MS:-}"
ADM_BIN="${ADM_BIN:-$ROOT/target/release/leofs-adm}"
STALE_ARGS=""
[[ -n "$R1_STALENESS_MS" ]] && STALE_ARGS="--gateway-cache-r1-staleness-ms $R1_STALENESS_MS"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
PEERS="$ROOT/../shared/peers/garage"

log() { echo "[cache] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -x "$LEOFS_BIN" ]] || die "no $LEOFS_BIN: cargo build --release"
[[ -x "$BENCH_BIN" ]] || die "no $BENCH_BIN: cargo build --release -p leofs-perf"
mkdir -p "$OUT" "$DATA_ROOT"
DIR="$(mktemp -d "$DATA_ROOT/leofs-cache.XXXXXX")"
DEMO_PID="" GATEWAY_PID=""
cleanup() {
  [[ -n "$GATEWAY_PID" ]] && { kill -TERM "$GATEWAY_PID" 2>/dev/null || true; wait "$GATEWAY_PID" 2>/dev/null || true; }
  if [[ -n "$DEMO_PID" ]]; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  "$PEERS/stop-cluster.sh" "$DIR/garage" --wipe >&2 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# name -> leofs-bench arguments (as perf/compare.sh's)
workload_args() {
  case "$1" in
    get-4k) echo "--workload get --size 4KiB --concurrency 32 --objects 1000" ;;
    get-1m) echo "--workload get --size 1MiB --concurrency 8 --objects 256" ;;
    mixed-64k) echo "--workload mixed --size 64KiB --read-ratio 0.9 --concurrency 32 --objects 1000" ;;
    *) die "unknown workload $1" ;;
  esac
}

free_port() { # free_port FIRST: the first free port from FIRST
  local port=$1
  while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
  echo "$port"
}

log "starting leofs demo --nodes 3 --replicas 3"
"$LEOFS_BIN" demo --nodes 3 --replicas 3 --dir "$DIR/leofs" >"$OUT/demo.out" 2>"$OUT/demo.err" &
DEMO_PID=$!
for _ in $(seq 1 600); do
  grep -q '^leofs demo ready' "$OUT/demo.out" 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$OUT/demo.err" >&2; exit 1; }
  sleep 0.1
done
grep -q '^leofs demo ready' "$OUT/demo.out" || die "the demo did not become ready"
ACCESS_KEY="$(sed -n 's/^Access key: //p' "$OUT/demo.out")"
SECRET_KEY="$(sed -n 's/^Secret key: //p' "$OUT/demo.out")"
JOIN="$(sed -n 's/.* --join \([^ ]*\) .*/\1/p' "$OUT/demo.out")"
SECRET_FILE="$DIR/leofs/cluster.secret"
ADMIN="$(sed -n 's/^Admin: leofs-adm --admin \([^ ]*\) .*/\1/p' "$OUT/demo.out")"
TOKEN="$(sed -n 's/^Admin: .* --token \([^ ]*\) .*/\1/p' "$OUT/demo.out")"
adm() { "$ADM_BIN" --admin "$ADMIN" --token "$TOKEN" "$@"; }
[[ -n "$JOIN" && -f "$SECRET_FILE" ]] || die "cannot find the demo's managers or secret"

GW_PORT="$(free_port 38900)"
GW_ADMIN="$(free_port $((GW_PORT + 1)))"
start_gateway() { # start_gateway DATA_DIR EXTRA_ARGS...
  local data="$1" started
  shift
  started="$(grep -c '^leofs ready' "$OUT/gateway.log" 2>/dev/null || true)"
  "$LEOFS_BIN" server --roles gateway --join "$JOIN" --cluster-secret-file "$SECRET_FILE" \
    --cores "$GATEWAY_CORES" --pin-cores false --data-dir "$data" \
    --listen "127.0.0.1:$GW_PORT" --admin-listen "127.0.0.1:$GW_ADMIN" "$@" \
    >>"$OUT/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  for _ in $(seq 1 600); do
    [[ "$(grep -c '^leofs ready' "$OUT/gateway.log" || true)" -gt "${started:-0}" ]] && return
    kill -0 "$GATEWAY_PID" 2>/dev/null || { tail -n 20 "$OUT/gateway.log" >&2; exit 1; }
    sleep 0.1
  done
  die "the gateway did not start"
}
stop_gateway() {
  kill -TERM "$GATEWAY_PID"
  wait "$GATEWAY_PID" || true
  GATEWAY_PID=""
}
metric_sum() { # metric_sum NAME: the gateway's figure, all cores together
  curl -s "http://127.0.0.1:$GW_ADMIN/metrics" |
    awk -v n="$1" 'index($0, n"{") == 1 || index($0, n" ") == 1 { s += $NF } END { printf "%d", s }'
}
snapshot() { # snapshot LABEL: the gateway's cache figures after a run
  {
    printf '%s' "$1"
    for m in leofs_gateway_cache_hits_total leofs_gateway_cache_misses_total \
      leofs_gateway_disk_cache_hits_total leofs_gateway_disk_cache_entries \
      leofs_gateway_disk_cache_bytes leofs_gateway_cache_entries; do
      printf ' %s=%s' "${m#leofs_gateway_}" "$(metric_sum "$m")"
    done
    echo
  } >>"$OUT/cache-metrics.txt"
}
cpu_ticks() { # cpu_ticks PID...: user + system clock ticks of these processes
  local pid total=0
  for pid in "$@"; do
    [[ -r "/proc/$pid/stat" ]] || continue
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}
SERVER_PIDS=()
run() { # run LABEL ENDPOINT ACCESS SECRET REGION BUCKET ARGS...: SERVER_PIDS' CPU in LABEL.cpu
  local label="$1" endpoint="$2" access="$3" secret="$4" region="$5" bucket="$6" before
  shift 6
  log "$label"
  before="$(cpu_ticks "${SERVER_PIDS[@]}")"
  # shellcheck disable=SC2068
  "$BENCH_BIN" --endpoint "$endpoint" --access-key "$access" --secret-key "$secret" \
    --region "$region" --bucket "$bucket" --warmup 0s \
    --quiet --json $@ >"$OUT/$label.json" 2>"$OUT/$label.err" ||
    log "$label: leofs-bench exit $? ($(tail -n 1 "$OUT/$label.err"))"
  echo $(($(cpu_ticks "${SERVER_PIDS[@]}") - before)) >"$OUT/$label.cpu"
}

for name in $WORKLOADS; do
  args="$(workload_args "$name") --prefix cache-$name/"
  leofs=("http://127.0.0.1:$GW_PORT" "$ACCESS_KEY" "$SECRET_KEY" us-east-1 bench)
  start_gateway "$DIR/gw-off-$name" --gateway-cache-bytes-per-core 0
  read -r -a SERVER_PIDS <<<"$GATEWAY_PID $(pgrep -P "$DEMO_PID" | tr '\n' ' ')"
  run "$name.preload" "${leofs[@]}" "$args --duration 1s"
  if [[ -n "$R1_STALENESS_MS" ]]; then
    adm update-consistency-level --bucket bench 2 1 2 >>"$OUT/adm.log"
    sleep 2 # every gateway knows the bucket's levels (its catalog, within a second)
  fi
  run "$name.off" "${leofs[@]}" "$args --duration $DURATION --no-preload"
  stop_gateway
  # shellcheck disable=SC2086
  start_gateway "$DIR/gw-on-$name" $ON_ARGS $STALE_ARGS
  read -r -a SERVER_PIDS <<<"$GATEWAY_PID $(pgrep -P "$DEMO_PID" | tr '\n' ' ')"
  run "$name.cold" "${leofs[@]}" "$args --duration $DURATION --no-preload"
  snapshot "$name.cold"
  run "$name.warm-memory" "${leofs[@]}" "$args --duration $DURATION --no-preload"
  snapshot "$name.warm-memory"
  stop_gateway
  start_gateway "$DIR/gw-on-$name" --gateway-cache-bytes-per-core 262144 $STALE_ARGS
  read -r -a SERVER_PIDS <<<"$GATEWAY_PID $(pgrep -P "$DEMO_PID" | tr '\n' ' ')"
  run "$name.warm-disk" "${leofs[@]}" "$args --duration $DURATION --no-preload"
  snapshot "$name.warm-disk"
  stop_gateway
done

log "starting Garage's 3-node cluster (REPLICATION=3 FSYNC=1 COMPRESSION=none)"
peer_env="$(REPLICATION=3 FSYNC=1 COMPRESSION=none "$PEERS/start-cluster.sh" 3 "$DIR/garage")"
garage=("$(sed -n 's/^ENDPOINT=//p' <<<"$peer_env")" "$(sed -n 's/^ACCESS_KEY=//p' <<<"$peer_env")"
  "$(sed -n 's/^SECRET_KEY=//p' <<<"$peer_env")" "$(sed -n 's/^REGION=//p' <<<"$peer_env")"
  "$(sed -n 's/^BUCKET=//p' <<<"$peer_env")")
read -r -a SERVER_PIDS <<<"$(sed -n 's/^PIDS=//p' <<<"$peer_env" | tr -d '"')"
for name in $WORKLOADS; do
  run "$name.garage-preload" "${garage[@]}" "$(workload_args "$name") --prefix cache-$name/ --duration 1s"
  run "$name.garage" "${garage[@]}" "$(workload_args "$name") --prefix cache-$name/ --duration $DURATION --no-preload"
done

python3 - "$OUT" "$WORKLOADS" >"$OUT/summary.md" <<'EOF'
import json, math, sys
out, workloads = sys.argv[1], sys.argv[2].split()
sides = ["off", "cold", "warm-memory", "warm-disk", "garage"]
TICK_US = 10_000  # clock ticks of 10 ms

def measure(name, side):
    try:
        report = json.load(open(f"{out}/{name}.{side}.json"))
        ops = sum(r["ops"] for r in report["results"])
        secs = max(r["elapsed_s"] for r in report["results"])
        errors = sum(report.get("errors", {}).values())
        ticks = int(open(f"{out}/{name}.{side}.cpu").read())
        return ops / secs, ticks * TICK_US / ops, errors
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return math.nan, math.nan, 0

print("Rate (ops/s) and, in brackets, the servers' CPU per request:\n")
print("| workload | cache off | cold | warm in memory | warm on disk | Garage 3 nodes | warm memory / off: rate; CPU | warm disk / off: rate; CPU | warm memory / Garage |")
print("|---|---|---|---|---|---|---|---|---|")
for name in workloads:
    m = {side: measure(name, side) for side in sides}
    cells = [f"{m[s][0]:,.0f} ({m[s][1]:,.0f} µs)" + (f", {m[s][2]} errors" if m[s][2] else "") for s in sides]
    def ratio(a, b):
        return f"{m[a][0] / m[b][0]:.2f}×; {m[b][1] / m[a][1]:.2f}×"
    print(f"| {name} | " + " | ".join(cells) + f" | {ratio('warm-memory', 'off')} | {ratio('warm-disk', 'off')} | {m['warm-memory'][0] / m['garage'][0]:.2f}× |")
EOF
cat "$OUT/summary.md"
log "done: $OUT/summary.md, cache figures in $OUT/cache-metrics.txt"
