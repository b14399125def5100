#!/usr/bin/env bash
# A leofs cluster against a Garage cluster in one window (issues 12, 13): `leofs demo --nodes 3
# --replicas R` (one manager, three storage nodes, one gateway; every process its own; writes
# acknowledged by a majority of the R replicas) and Garage's 3-node cluster (replication_factor
# R, consistent mode, fsync on, no compression), both on loopback; compare.sh runs the same
# leofs-bench workloads against each one's first S3 endpoint, alternating runs ("garage"); the
# CPU each side's processes spend per request (all their processes together, from
# /proc/PID/stat over a measured run: "cpu"); and the single-node leofs (compare.sh starts it)
# against the same running leofs cluster, for the 1-node -> 3-node overhead on this machine
# ("single").
#
# Usage: perf/cluster.sh [OUT_DIR]        (default: /work/tmp/leofs-cluster/<timestamp>)
# Knobs: REPLICAS (default 3; 1 is issue 12's unreplicated comparison), LEOFS_BIN (default
# target/release/leofs), WORKLOADS (default "put-4k get-4k put-1m
# get-1m list-10k"), ROUNDS (default 2), DURATION (default 5s), WARMUP (1s), NODE_CORES (cores
# of each storage node, default 1), GATEWAY_CORES (default 2), LEOFS_ARGS for the single node
# (default "--pin-cores false --cores 2"), DATA_ROOT (default /work/tmp), PARTS (default
# "garage cpu single"; also "kill": each workload with one storage node of each side killed
# mid-run, KILL_DURATION seconds (default 15); 1 MiB PUTs fill about 10 GB per part: run
# them apart on a small disk).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-/work/tmp/leofs-cluster/$(date -u +%Y%m%dT%H%M%SZ)}"
LEOFS_BIN="${LEOFS_BIN:-$ROOT/target/release/leofs}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/leofs-bench}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
NODE_CORES="${NODE_CORES:-1}"
REPLICAS="${REPLICAS:-3}"
GATEWAY_CORES="${GATEWAY_CORES:-2}"
PARTS="${PARTS:-garage cpu single}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
export WORKLOADS="${WORKLOADS:-put-4k get-4k put-1m get-1m list-10k}"
export ROUNDS="${ROUNDS:-2}" DURATION="${DURATION:-5s}" WARMUP="${WARMUP:-1s}"
export LEOFS_ARGS="${LEOFS_ARGS:---pin-cores false --cores 2}"

log() { echo "[cluster] $*" >&2; }
mkdir -p "$OUT" "$DATA_ROOT"
DIR="$(mktemp -d "$DATA_ROOT/leofs-cluster.XXXXXX")"
DEMO_PID=""
cleanup() {
  if [[ -n "$DEMO_PID" ]]; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  for pid in ${RESTARTED_PIDS:-}; do kill "$pid" 2>/dev/null || true; done
  /work/shared/peers/garage/stop-cluster.sh "$DIR/garage" --wipe >&2 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

log "starting leofs demo --nodes 3 --replicas $REPLICAS (storage nodes x $NODE_CORES core, gateway x $GATEWAY_CORES cores)"
"$LEOFS_BIN" demo --nodes 3 --replicas "$REPLICAS" --cores "$NODE_CORES" --gateway-cores "$GATEWAY_CORES" \
  --dir "$DIR/leofs" >"$OUT/demo.out" 2>"$OUT/demo.err" &
DEMO_PID=$!
for _ in $(seq 1 600); do
  grep -q '^leofs demo ready' "$OUT/demo.out" 2>/dev/null && break
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$OUT/demo.err" >&2; exit 1; }
  sleep 0.1
done
grep -q '^leofs demo ready' "$OUT/demo.out" || { log "the demo did not become ready"; exit 1; }
export LEOFS_ENDPOINT LEOFS_ACCESS_KEY LEOFS_SECRET_KEY
LEOFS_ENDPOINT="$(sed -n 's/^S3 endpoints: \([^ ]*\).*/\1/p' "$OUT/demo.out")"
LEOFS_ACCESS_KEY="$(sed -n 's/^Access key: //p' "$OUT/demo.out")"
LEOFS_SECRET_KEY="$(sed -n 's/^Secret key: //p' "$OUT/demo.out")"
log "leofs cluster at $LEOFS_ENDPOINT"

if part garage || part cpu || part kill; then
log "starting Garage's 3-node cluster (REPLICATION=$REPLICAS FSYNC=1 COMPRESSION=none)"
peer_env="$(REPLICATION=$REPLICAS FSYNC=1 COMPRESSION=none /work/shared/peers/garage/start-cluster.sh 3 "$DIR/garage")"
PEER_ENDPOINT="$(sed -n 's/^ENDPOINT=//p' <<<"$peer_env")"
PEER_PIDS="$(sed -n 's/^PIDS=//p' <<<"$peer_env")"
export PEER_ENDPOINT PEER_ACCESS_KEY PEER_SECRET_KEY PEER_REGION PEER_BUCKET
PEER_ACCESS_KEY="$(sed -n 's/^ACCESS_KEY=//p' <<<"$peer_env")"
PEER_SECRET_KEY="$(sed -n 's/^SECRET_KEY=//p' <<<"$peer_env")"
PEER_REGION="$(sed -n 's/^REGION=//p' <<<"$peer_env")"
PEER_BUCKET="$(sed -n 's/^BUCKET=//p' <<<"$peer_env")"
log "Garage cluster at $PEER_ENDPOINT (pids $PEER_PIDS)"

fi
if part garage; then
  "$HERE/compare.sh" "$OUT/vs-garage" | tee "$OUT/vs-garage.txt"
fi

# CPU per request of each side (every process of the side), one workload at a time.
cpu_ticks() { # total utime+stime ticks of the given pids
  local total=0 pid
  for pid in "$@"; do
    [[ -r /proc/$pid/stat ]] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
if part cpu; then
LEOFS_PIDS="$(pgrep -f -- "--data-dir $DIR/leofs/" | tr '\n' ' ')"
hz="$(getconf CLK_TCK)"
{
  echo "| workload | side | ops/s | CPU µs per request (all its processes) |"
  echo "|---|---|---|---|"
} >"$OUT/cpu.md"
for name in put-4k get-4k put-1m get-1m; do
  case "$name" in
    put-4k) args="--workload put --size 4KiB --concurrency 32" ;;
    get-4k) args="--workload get --size 4KiB --concurrency 32 --objects 1000" ;;
    put-1m) args="--workload put --size 1MiB --concurrency 8" ;;
    get-1m) args="--workload get --size 1MiB --concurrency 8 --objects 256" ;;
  esac
  for side in leofs garage; do
    if [[ $side == leofs ]]; then
      endpoint=$LEOFS_ENDPOINT key=$LEOFS_ACCESS_KEY secret=$LEOFS_SECRET_KEY region=us-east-1 bucket=cpu
      pids=$LEOFS_PIDS
    else
      endpoint=$PEER_ENDPOINT key=$PEER_ACCESS_KEY secret=$PEER_SECRET_KEY region=$PEER_REGION bucket=$PEER_BUCKET
      pids=$PEER_PIDS
    fi
    # shellcheck disable=SC2086
    "$BENCH_BIN" --endpoint "$endpoint" --access-key "$key" --secret-key "$secret" \
      --region "$region" --bucket "$bucket" --duration 8s --warmup 1s --quiet --json $args \
      >"$OUT/cpu.$name.$side.json" 2>/dev/null &
    bench=$!
    sleep 3
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids); t0=$(date +%s.%N)
    sleep 5
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids); t1=$(date +%s.%N)
    wait "$bench" || true
    python3 - "$OUT/cpu.$name.$side.json" "$before" "$after" "$hz" "$t0" "$t1" "$name" "$side" >>"$OUT/cpu.md" <<'PY'
import json, sys
path, before, after, hz, t0, t1, name, side = sys.argv[1:9]
report = json.load(open(path))
op = "PUT" if name.startswith("put") else "GET"
rate = next(r["ops_per_s"] for r in report["results"] if r["op"] == op)
cpu_s = (int(after) - int(before)) / int(hz)
per = cpu_s / (rate * (float(t1) - float(t0))) * 1e6 if rate else float("nan")
print(f"| {name} | {side} | {rate:,.0f} | {per:,.0f} |")
PY
  done
done
cat "$OUT/cpu.md"
fi

# Each workload with one storage node killed (SIGKILL) a third of the way into its measured
# phase, on each side in turn: its rate and every failed request. The leofs demo starts its
# killed node again after 10 s; a killed Garage node is started again here with the command
# line it ran. Either is given 20 s to rejoin before the next run.
if part kill; then
KILL_DURATION="${KILL_DURATION:-15}"
{
  echo "| workload | side | ops/s (MB/s) with a node killed | requests | failed | first failure |"
  echo "|---|---|---|---|---|---|"
} >"$OUT/kill.md"
for name in put-4k get-4k put-1m get-1m list-10k; do
  case "$name" in
    put-4k) args="--workload put --size 4KiB --concurrency 32" ;;
    get-4k) args="--workload get --size 4KiB --concurrency 32 --objects 1000" ;;
    put-1m) args="--workload put --size 1MiB --concurrency 8" ;;
    get-1m) args="--workload get --size 1MiB --concurrency 8 --objects 256" ;;
    list-10k) args="--workload list --size 1KiB --concurrency 4 --objects 10000" ;;
  esac
  for side in leofs garage; do
    if [[ $side == leofs ]]; then
      endpoint=$LEOFS_ENDPOINT key=$LEOFS_ACCESS_KEY secret=$LEOFS_SECRET_KEY region=us-east-1 bucket="kill-$name"
      victim="$(pgrep -f -- "--data-dir $DIR/leofs/storage-2" | head -1)"
    else
      endpoint=$PEER_ENDPOINT key=$PEER_ACCESS_KEY secret=$PEER_SECRET_KEY region=$PEER_REGION bucket=$PEER_BUCKET
      victim="$(pgrep -f -- "$DIR/garage/node1/garage.toml" | head -1)"
    fi
    [[ -n "$victim" ]] || { log "no $side node to kill"; exit 1; }
    mapfile -d '' cmdline <"/proc/$victim/cmdline"
    # shellcheck disable=SC2086
    "$BENCH_BIN" --endpoint "$endpoint" --access-key "$key" --secret-key "$secret" \
      --region "$region" --bucket "$bucket" --duration "${KILL_DURATION}s" --warmup 1s \
      --json $args >"$OUT/kill.$name.$side.json" 2>"$OUT/kill.$name.$side.err" &
    bench=$!
    # The preload (GET and LIST workloads) runs first: kill once the measured phase is on
    # (its progress lines say "run").
    for _ in $(seq 1 1200); do
      grep -q ' run\]' "$OUT/kill.$name.$side.err" 2>/dev/null && break
      kill -0 "$bench" 2>/dev/null || break
      sleep 0.1
    done
    sleep $((KILL_DURATION / 3))
    log "$name on $side: killing node pid $victim"
    kill -9 "$victim"
    wait "$bench" || true
    python3 - "$OUT/kill.$name.$side.json" "$name" "$side" >>"$OUT/kill.md" <<'PY'
import json, sys
path, name, side = sys.argv[1:4]
report = json.load(open(path))
ok = sum(r["ops"] for r in report["results"])
rate = sum(r["ops_per_s"] for r in report["results"])
mb = sum(r["mb_per_s"] for r in report["results"])
errors = report["errors"]
warmup = report["warmup_errors"]
failed = sum(errors.values()) + sum(warmup.values())
first = next(iter(report["error_examples"].values()), "")[:80].replace("|", "/")
print(f"| {name} | {side} | {rate:,.0f} ({mb:,.1f}) | {ok + failed:,} | {failed} | {first} |")
PY
    if [[ $side == garage ]]; then
      setsid "${cmdline[@]}" >>"$DIR/garage/node1/garage.log" 2>&1 </dev/null &
      RESTARTED_PIDS="${RESTARTED_PIDS:-} $!"
    fi
    sleep 20
  done
done
cat "$OUT/kill.md"
fi

if part single; then
  log "single-node leofs (compare.sh's leofs) against the leofs cluster (as its peer)"
  PEER_ENDPOINT="$LEOFS_ENDPOINT" PEER_ACCESS_KEY="$LEOFS_ACCESS_KEY" \
    PEER_SECRET_KEY="$LEOFS_SECRET_KEY" PEER_REGION=us-east-1 PEER_BUCKET=single-vs-cluster \
    LEOFS_ENDPOINT="" "$HERE/compare.sh" "$OUT/single-vs-cluster" | tee "$OUT/single-vs-cluster.txt"
fi
log "results in $OUT"
