#!/usr/bin/env bash
# Side-by-side S3 figures: the same leofs-bench workloads against leofs and a peer (Garage),
# ALTERNATING runs per workload (leofs, peer, leofs, peer, ...) so that slow drifts of the shared
# machine hit both sides alike, then ratios leofs/peer per workload.
#
# Usage: perf/compare.sh [OUT_DIR]        (default: /work/tmp/leofs-compare/<timestamp>)
#
# leofs is started here from LEOFS_BIN on a fresh data dir with generated root keys
# (LEOFS_ROOT_ACCESS_KEY / LEOFS_ROOT_SECRET_KEY), and the script waits for its `leofs ready` line.
# The peer is started with PEER_START (default: Garage via /work/shared/peers/garage/start.sh with
# FSYNC=1 COMPRESSION=none, i.e. fsync'd data and metadata and no compression, like-for-like with
# leofs' durable writes). Set PEER=none to measure leofs alone, or PEER_ENDPOINT + PEER_ACCESS_KEY +
# PEER_SECRET_KEY + PEER_REGION + PEER_BUCKET to use an already running peer. LEOFS_BIN=none
# measures the peer alone (to validate the tool or record peer figures before leofs runs);
# LEOFS_ENDPOINT + LEOFS_ACCESS_KEY + LEOFS_SECRET_KEY measure an already running leofs (a
# cluster: perf/cluster.sh) instead of starting one.
# Both servers are stopped (and their data dirs removed) at the end.
#
# Knobs (environment):
#   LEOFS_BIN     leofs binary (default: target/release/leofs)
#   LEOFS_ARGS    extra `leofs server` arguments (e.g. "--cores 1", or "--pin-cores false": the
#                 setting for CPUs shared with other busy processes, here the load generator)
#   BENCH_BIN     leofs-bench (default: $CARGO_TARGET_DIR/release/leofs-bench, then target/release)
#   ROUNDS        runs per side and workload (default 2)
#   DURATION      measured phase per run (default 10s); WARMUP (default 2s)
#   THREADS       leofs-bench client threads (default 1)
#   WORKLOADS     space-separated subset of: put-4k get-4k get-1k put-1m get-1m get-16m mixed-64k
#                 list-10k
#   DATA_ROOT     where data dirs go; must be a real disk for O_DIRECT (default /work/tmp)
#   LEOFS_PORT    first port tried for leofs' S3 listener (default 38280); the first free ports
#                 from it are used for S3 and admin, and from 39900 for the Garage peer
#                 (S3_PORT, RPC_PORT, ADMIN_PORT override those)
# Output: a table on stdout; summary.md (markdown) and every run's JSON in OUT_DIR.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-/work/tmp/leofs-compare/$(date -u +%Y%m%dT%H%M%SZ)}"
LEOFS_BIN="${LEOFS_BIN:-$ROOT/target/release/leofs}"
LEOFS_ARGS="${LEOFS_ARGS:-}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
THREADS="${THREADS:-1}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
LEOFS_PORT="${LEOFS_PORT:-38280}"
PEER="${PEER:-garage}"
PEER_START="${PEER_START:-/work/shared/peers/garage/start.sh}"
PEER_STOP="${PEER_STOP:-/work/shared/peers/garage/stop.sh}"
WORKLOADS="${WORKLOADS:-put-4k get-4k get-1k put-1m get-1m mixed-64k list-10k}"

log() { echo "[compare] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# first port >= $1 that nothing listens on (other servers may share this machine)
free_port() {
  local port="$1"
  while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
  echo "$port"
}
LEOFS_PORT="$(free_port "$LEOFS_PORT")"
LEOFS_ADMIN_PORT="$(free_port $((LEOFS_PORT + 1)))"
S3_PORT="${S3_PORT:-$(free_port 39900)}"
RPC_PORT="${RPC_PORT:-$(free_port $((S3_PORT + 1)))}"
ADMIN_PORT="${ADMIN_PORT:-$(free_port $((RPC_PORT + 1)))}"
export S3_PORT RPC_PORT ADMIN_PORT

# name -> leofs-bench arguments (the issue's workload set)
workload_args() {
  case "$1" in
    put-4k) echo "--workload put --size 4KiB --concurrency 32" ;;
    get-4k) echo "--workload get --size 4KiB --concurrency 32 --objects 1000" ;;
    get-1k) echo "--workload get --size 1KiB --concurrency 32 --objects 1000" ;;
    put-1m) echo "--workload put --size 1MiB --concurrency 8" ;;
    get-1m) echo "--workload get --size 1MiB --concurrency 8 --objects 256" ;;
    get-16m) echo "--workload get --size 16MiB --concurrency 4 --objects 16" ;;
    mixed-64k) echo "--workload mixed --size 64KiB --read-ratio 0.9 --concurrency 32 --objects 1000" ;;
    list-10k) echo "--workload list --size 1KiB --concurrency 4 --objects 10000" ;;
    *) die "unknown workload $1" ;;
  esac
}

if [[ -z "${BENCH_BIN:-}" ]]; then
  for candidate in "${CARGO_TARGET_DIR:-$ROOT/target}/release/leofs-bench" "$ROOT/target/release/leofs-bench"; do
    if [[ -x "$candidate" ]]; then BENCH_BIN="$candidate"; break; fi
  done
fi
[[ -x "${BENCH_BIN:-}" ]] || die "leofs-bench not found: cargo build --release -p leofs-perf, or set BENCH_BIN"
if [[ "$LEOFS_BIN" != none && -z "${LEOFS_ENDPOINT:-}" ]]; then
  [[ -x "$LEOFS_BIN" ]] || die "leofs binary $LEOFS_BIN not found: cargo build --release -p leofs, or set LEOFS_BIN"
fi
for w in $WORKLOADS; do workload_args "$w" >/dev/null; done

mkdir -p "$OUT" "$DATA_ROOT"
RUN_DIR="$(mktemp -d "$DATA_ROOT/leofs-compare.XXXXXX")"
LEOFS_PID=""
PEER_STARTED=0

cleanup() {
  if [[ -n "$LEOFS_PID" ]] && kill -0 "$LEOFS_PID" 2>/dev/null; then
    log "stopping leofs (pid $LEOFS_PID)"
    kill -TERM "$LEOFS_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$LEOFS_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$LEOFS_PID" 2>/dev/null || true
  fi
  if [[ $PEER_STARTED == 1 ]]; then
    log "stopping the peer"
    "$PEER_STOP" "$RUN_DIR/peer" --wipe >&2 || true
  fi
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

# ---- peer ----
if [[ "$PEER" == "none" ]]; then
  log "no peer: leofs alone"
elif [[ -n "${PEER_ENDPOINT:-}" ]]; then
  log "using the running peer at $PEER_ENDPOINT"
else
  log "starting $PEER with FSYNC=1 COMPRESSION=none (fsync'd data and metadata, no compression)"
  peer_env="$(FSYNC=1 COMPRESSION=none "$PEER_START" "$RUN_DIR/peer")" || die "peer did not start"
  PEER_STARTED=1
  PEER_ENDPOINT="$(sed -n 's/^ENDPOINT=//p' <<<"$peer_env")"
  PEER_ACCESS_KEY="$(sed -n 's/^ACCESS_KEY=//p' <<<"$peer_env")"
  PEER_SECRET_KEY="$(sed -n 's/^SECRET_KEY=//p' <<<"$peer_env")"
  PEER_REGION="$(sed -n 's/^REGION=//p' <<<"$peer_env")"
  PEER_BUCKET="$(sed -n 's/^BUCKET=//p' <<<"$peer_env")"
fi

# ---- leofs ----
start_leofs() {
  LEOFS_ACCESS_KEY="LEOFSBENCH$(head -c 5 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)"
  LEOFS_SECRET_KEY="$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  local data="$RUN_DIR/leofs" log_file="$OUT/leofs.log"
  log "starting leofs: $LEOFS_BIN server --data-dir $data --listen 127.0.0.1:$LEOFS_PORT --admin-listen 127.0.0.1:$LEOFS_ADMIN_PORT $LEOFS_ARGS"
  # shellcheck disable=SC2086
  LEOFS_ROOT_ACCESS_KEY="$LEOFS_ACCESS_KEY" LEOFS_ROOT_SECRET_KEY="$LEOFS_SECRET_KEY" \
    "$LEOFS_BIN" server --data-dir "$data" --listen "127.0.0.1:$LEOFS_PORT" \
    --admin-listen "127.0.0.1:$LEOFS_ADMIN_PORT" $LEOFS_ARGS >"$log_file" 2>&1 &
  LEOFS_PID=$!
  for _ in $(seq 1 600); do
    grep -q '^leofs ready' "$log_file" 2>/dev/null && break
    kill -0 "$LEOFS_PID" 2>/dev/null || { tail -n 20 "$log_file" >&2; die "leofs exited before 'leofs ready'"; }
    sleep 0.1
  done
  grep -q '^leofs ready' "$log_file" || die "leofs did not print 'leofs ready' within 60 s (log: $log_file)"
  LEOFS_ENDPOINT="http://127.0.0.1:$LEOFS_PORT"
  log "leofs ready at $LEOFS_ENDPOINT (pid $LEOFS_PID)"
}
if [[ "$LEOFS_BIN" == none ]]; then
  log "LEOFS_BIN=none: measuring the peer alone"
elif [[ -n "${LEOFS_ENDPOINT:-}" ]]; then
  log "using the running leofs at $LEOFS_ENDPOINT"
else
  start_leofs
fi

run_one() { # side workload round
  local side="$1" name="$2" round="$3" rc=0
  local file="$OUT/$name.$side.$round.json"
  echo "$(date -u +%H:%M:%S) before $name $side #$round: load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
  # shellcheck disable=SC2046
  if [[ "$side" == leofs ]]; then
    "$BENCH_BIN" --endpoint "$LEOFS_ENDPOINT" --access-key "$LEOFS_ACCESS_KEY" \
      --secret-key "$LEOFS_SECRET_KEY" --region us-east-1 --bucket bench \
      --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" --quiet --json \
      $(workload_args "$name") >"$file" 2>"$file.err" || rc=$?
  else
    "$BENCH_BIN" --endpoint "$PEER_ENDPOINT" --access-key "$PEER_ACCESS_KEY" \
      --secret-key "$PEER_SECRET_KEY" --region "$PEER_REGION" --bucket "$PEER_BUCKET" \
      --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" --quiet --json \
      $(workload_args "$name") >"$file" 2>"$file.err" || rc=$?
  fi
  case $rc in
    0) log "$name $side #$round ok" ;;
    2) log "$name $side #$round finished WITH ERRORS (counted in $file)" ;;
    *) log "$name $side #$round FAILED (exit $rc): $(tail -n 1 "$file.err")" ;;
  esac
}

for name in $WORKLOADS; do
  for round in $(seq 1 "$ROUNDS"); do
    if [[ "$LEOFS_BIN" != none ]]; then run_one leofs "$name" "$round"; fi
    if [[ -n "${PEER_ENDPOINT:-}" ]]; then run_one peer "$name" "$round"; fi
  done
done

# ---- summary ----
python3 - "$OUT" "$ROUNDS" "$PEER" "$WORKLOADS" "$DURATION" "$WARMUP" "$THREADS" "$LEOFS_BIN" <<'PY' | tee "$OUT/summary.md"
import json, os, statistics, sys

out, rounds, peer, workloads, duration, warmup, threads, leofs_bin = sys.argv[1:9]
rounds = int(rounds)
leofs_none = leofs_bin == "none"

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def primary(report, name):
    """(rate, unit, MB/s, p50, p99, errors) of the workload's headline operation."""
    results = {r["op"]: r for r in report["results"]}
    errors = sum(report["errors"].values()) + sum(report["warmup_errors"].values())
    if name.startswith("list"):
        r = results.get("LIST")
        return (r["items_per_s"] if r else 0.0), "keys/s", 0.0, r and r["latency_ms"]["p50"], r and r["latency_ms"]["p99"], errors
    if name.startswith("mixed"):
        ops = sum(r["ops_per_s"] for op, r in results.items())
        mb = sum(r["mb_per_s"] for op, r in results.items())
        g = results.get("GET")
        return ops, "ops/s", mb, g and g["latency_ms"]["p50"], g and g["latency_ms"]["p99"], errors
    op = "PUT" if name.startswith("put") else "GET"
    r = results.get(op)
    if r is None:
        return 0.0, "ops/s", 0.0, None, None, errors
    return r["ops_per_s"], "ops/s", r["mb_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], errors

def side(name, who):
    if (who == "leofs" and leofs_none) or (who == "peer" and peer == "none"):
        return []
    runs = []
    for i in range(1, rounds + 1):
        rep = load(os.path.join(out, f"{name}.{who}.{i}.json"))
        runs.append(primary(rep, name) if rep else None)
    return runs

def fmt_runs(runs):
    return " / ".join("FAIL" if r is None else f"{r[0]:,.0f}" + (f" ({r[5]} err)" if r[5] else "") for r in runs)

def mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None

print(f"leofs-bench: {rounds} alternating run(s) per side, {duration} measured after {warmup} warmup, "
      f"{threads} client thread(s); peer: {peer} (FSYNC=1 COMPRESSION=none unless given)\n")
print("| workload | unit | leofs runs | peer runs | leofs mean | peer mean | ratio leofs/peer | leofs MB/s | peer MB/s | leofs p50/p99 ms | peer p50/p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name in workloads.split():
    l, p = side(name, "leofs"), side(name, "peer")
    ok_l = [r for r in l if r]
    ok_p = [r for r in p if r]
    unit = (ok_l or ok_p or [(0, "ops/s")])[0][1]
    lm, pm = mean([r[0] for r in ok_l]), mean([r[0] for r in ok_p])
    ratio = f"{lm / pm:.2f}" if lm is not None and pm else "-"
    lat = lambda rs: "-" if not rs else f"{mean([r[3] for r in rs]):.2f} / {mean([r[4] for r in rs]):.2f}" if mean([r[3] for r in rs]) is not None else "-"
    mb = lambda rs: "-" if not rs else f"{mean([r[2] for r in rs]):.1f}"
    print(f"| {name} | {unit} | {fmt_runs(l) or '-'} | {fmt_runs(p) or '-'} | "
          f"{'-' if lm is None else f'{lm:,.0f}'} | {'-' if pm is None else f'{pm:,.0f}'} | {ratio} | "
          f"{mb(ok_l)} | {mb(ok_p)} | {lat(ok_l)} | {lat(ok_p)} |")
PY
echo
echo "load average before each run (other processes share this machine):"
sed 's/^/  /' "$OUT/loadavg.txt"
log "raw JSON and summary.md in $OUT"
