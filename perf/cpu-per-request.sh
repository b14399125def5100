#!/usr/bin/env bash
# CPU time per request of the leofs server and of the client, for one leofs-bench workload.
#
# Starts a fresh leofs (LEOFS_BIN, LEOFS_ARGS) on loopback, runs leofs-bench against it, and over
# 5 s in the middle of the measured phase reads the user+system CPU time of both processes
# (/proc/PID/stat) and the machine's CPU split (/proc/stat). It prints ops/s (from leofs-bench),
# the CPUs each side used, their microseconds of CPU per request, and where the machine's time
# went (iowait is idle time while a thread waits in io_uring). Used to measure an optimisation's
# effect on server cost when throughput is bounded by something else (see BENCHMARKS.md).
#
# Usage: perf/cpu-per-request.sh "leofs-bench workload arguments"
#   e.g. perf/cpu-per-request.sh "--workload get --size 4KiB --concurrency 32 --objects 1000"
# Knobs (environment): LEOFS_BIN (default target/release/leofs), LEOFS_ARGS (extra `leofs server`
# arguments, e.g. "--pin-cores false"), BENCH_BIN (default target/release/leofs-bench), DURATION
# (measured phase, default 10s, at least 8s), DATA_ROOT (default /work/tmp), PORT (default 38480).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORKLOAD="${1:?usage: perf/cpu-per-request.sh \"leofs-bench workload arguments\"}"
LEOFS_BIN="${LEOFS_BIN:-$ROOT/target/release/leofs}"
LEOFS_ARGS="${LEOFS_ARGS:-}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/leofs-bench}"
DURATION="${DURATION:-10s}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
PORT="${PORT:-38480}"
ACCESS_KEY=cpukey
SECRET_KEY=cpusecretcpusecret

die() { echo "cpu-per-request: $*" >&2; exit 1; }
[[ -x "$LEOFS_BIN" ]] || die "no leofs binary at $LEOFS_BIN (cargo build --release)"
[[ -x "$BENCH_BIN" ]] || die "no leofs-bench at $BENCH_BIN (cargo build --release)"

DIR="$(mktemp -d "$DATA_ROOT/leofs-cpu.XXXXXX")"
SERVER_PID=""
BENCH_PID=""
cleanup() {
  [[ -n "$BENCH_PID" ]] && kill "$BENCH_PID" 2>/dev/null || true
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT

# shellcheck disable=SC2086
LEOFS_ROOT_ACCESS_KEY=$ACCESS_KEY LEOFS_ROOT_SECRET_KEY=$SECRET_KEY "$LEOFS_BIN" server \
  --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$((PORT + 1))" \
  $LEOFS_ARGS >"$DIR/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  grep -q "leofs ready" "$DIR/server.log" && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DIR/server.log" >&2; die "leofs exited"; }
  sleep 0.1
done
grep -q "leofs ready" "$DIR/server.log" || die "leofs not ready within 30 s"

# shellcheck disable=SC2086
"$BENCH_BIN" --endpoint "http://127.0.0.1:$PORT" --access-key $ACCESS_KEY --secret-key $SECRET_KEY \
  $WORKLOAD --duration "$DURATION" --warmup 2s --json >"$DIR/bench.json" 2>"$DIR/bench.err" &
BENCH_PID=$!

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 5 # preload, connection set-up and warm-up
s0=$(cpu_ticks "$SERVER_PID"); c0=$(cpu_ticks "$BENCH_PID"); t0=$(date +%s.%N)
m0=$(head -1 /proc/stat)
sleep 5
s1=$(cpu_ticks "$SERVER_PID"); c1=$(cpu_ticks "$BENCH_PID"); t1=$(date +%s.%N)
m1=$(head -1 /proc/stat)
wait "$BENCH_PID" || die "leofs-bench failed: $(tail -3 "$DIR/bench.err")"
BENCH_PID=""

python3 - "$DIR/bench.json" "$s0" "$s1" "$c0" "$c1" "$t0" "$t1" "$m0" "$m1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
s0, s1, c0, c1 = map(int, sys.argv[2:6])
t0, t1 = map(float, sys.argv[6:8])
m0, m1 = ([int(x) for x in m.split()[1:9]] for m in sys.argv[8:10])
hz = int(sys.argv[10])
ops = sum(r["ops_per_s"] for r in report["results"])
seconds = t1 - t0
server, client = (s1 - s0) / hz / seconds, (c1 - c0) / hz / seconds
print(f"ops/s {ops:.0f}  server {server:.2f} CPUs = {server / ops * 1e6:.1f} us/request"
      f"  client {client:.2f} CPUs = {client / ops * 1e6:.1f} us/request")
delta = [b - a for a, b in zip(m0, m1)]
names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
print("machine: " + " ".join(f"{n} {100 * d / sum(delta):.0f}%" for n, d in zip(names, delta)))
PY
