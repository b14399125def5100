#!/usr/bin/env bash
# The machine's limits, measured in the same session as the S3 figures they bound:
#   - the disk: fio O_DIRECT sequential write and read in 1 MiB blocks (io_uring, iodepth 8) on a
#     file of FIO_SIZE on the work disk (never /dev/shm), 4 KiB random reads (iodepth 32), and
#     4 KiB writes each followed by fdatasync at queue depth 1 (the cost of one durable write);
#   - the request path: leofs-bench itself against nginx on loopback answering `return 200` to
#     every request (the same client, so this is the ceiling of any server on this machine for
#     tiny requests), plus nginx serving a static 4 KiB file to GETs.
#
# Usage: perf/limits.sh [OUT_DIR]         (default: /work/tmp/leofs-limits/<timestamp>)
# Needs: fio and nginx (apt-get install -y fio nginx), a built leofs-bench.
# Knobs (environment):
#   BENCH_BIN    leofs-bench binary  (default: $CARGO_TARGET_DIR/release/leofs-bench, then
#                target/release/leofs-bench)
#   FIO_DIR      directory of the fio file; must be on the disk under test (default /work/tmp)
#   FIO_SIZE     fio file size        (default 2G)
#   FIO_RUNTIME  seconds per fio job  (default 15)
#   NGINX_PORT   first loopback port tried (default 38080); the first two free ports from it
#                are used: `return 200`, then the static 4 KiB file
#   DURATION     leofs-bench measured phase (default 10s), WARMUP (default 2s)
#   THREADS      leofs-bench client threads (default 1)
#   FIO          0 skips the fio jobs (request-path ceilings only)
# Output: a table on stdout; raw fio and leofs-bench JSON in OUT_DIR.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-/work/tmp/leofs-limits/$(date -u +%Y%m%dT%H%M%SZ)}"
FIO_DIR="${FIO_DIR:-/work/tmp}"
FIO_SIZE="${FIO_SIZE:-2G}"
FIO_RUNTIME="${FIO_RUNTIME:-15}"
NGINX_PORT="${NGINX_PORT:-38080}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
THREADS="${THREADS:-1}"
FIO="${FIO:-1}"

log() { echo "[limits] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# first port >= $1 that nothing listens on (other servers may share this machine)
free_port() {
  local port="$1"
  while ss -Htln "sport = :$port" | grep -q .; do port=$((port + 1)); done
  echo "$port"
}
NGINX_PORT="$(free_port "$NGINX_PORT")"
STATIC_PORT="$(free_port $((NGINX_PORT + 1)))"

if [[ -z "${BENCH_BIN:-}" ]]; then
  for candidate in "${CARGO_TARGET_DIR:-$ROOT/target}/release/leofs-bench" "$ROOT/target/release/leofs-bench"; do
    if [[ -x "$candidate" ]]; then BENCH_BIN="$candidate"; break; fi
  done
fi
[[ -x "${BENCH_BIN:-}" ]] || die "leofs-bench not found: cargo build --release -p leofs-perf, or set BENCH_BIN"
command -v fio >/dev/null || die "fio not installed (apt-get install -y fio)"
command -v nginx >/dev/null || die "nginx not installed (apt-get install -y nginx)"
command -v jq >/dev/null || die "jq not installed"

mkdir -p "$OUT" "$FIO_DIR"
FIO_FILE="$FIO_DIR/leofs-limits-fio.$$"
NGINX_DIR="$(mktemp -d "${TMPDIR:-/tmp}/leofs-limits-nginx.XXXXXX")"
NGINX_PID=""

cleanup() {
  if [[ -n "$NGINX_PID" ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
  rm -f "$FIO_FILE"
  rm -rf "$NGINX_DIR"
}
trap cleanup EXIT

# ---- disk ----
loadavg() { echo "$(date -u +%H:%M:%S) before $1: load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"; }

fio_job() { # name rw bs iodepth [extra fio args]
  loadavg "fio $1"
  log "fio $1 ($2, bs=$3, iodepth=$4, O_DIRECT, io_uring, ${FIO_RUNTIME}s, file $FIO_FILE) ${*:5}"
  fio --name="$1" --filename="$FIO_FILE" --size="$FIO_SIZE" --rw="$2" --bs="$3" \
    --iodepth="$4" --ioengine=io_uring --direct=1 --numjobs=1 --time_based "${@:5}" \
    --runtime="$FIO_RUNTIME" --ramp_time=2 --group_reporting --output-format=json \
    >"$OUT/fio-$1.json"
}
if [[ "$FIO" != 0 ]]; then
  fio_job seq-write-1m write 1M 8
  fio_job seq-read-1m read 1M 8
  fio_job rand-read-4k randread 4k 32
  fio_job sync-write-4k write 4k 1 --fdatasync=1
fi

# ---- request path: nginx on loopback ----
mkdir -p "$NGINX_DIR/www" "$NGINX_DIR/tmp"
head -c 4096 /dev/urandom >"$NGINX_DIR/www/blob4k"
# nginx workers run unprivileged: they must be able to read the static file
chmod 755 "$NGINX_DIR" "$NGINX_DIR/www"
chmod 644 "$NGINX_DIR/www/blob4k"
cat >"$NGINX_DIR/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $NGINX_DIR/tmp;
  proxy_temp_path $NGINX_DIR/tmp;
  fastcgi_temp_path $NGINX_DIR/tmp;
  uwsgi_temp_path $NGINX_DIR/tmp;
  scgi_temp_path $NGINX_DIR/tmp;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { return 200; }
  }
  server {
    listen 127.0.0.1:$STATIC_PORT;
    root $NGINX_DIR/www;
    location / {
      if (\$request_method = PUT) { return 200; }
      try_files /blob4k =404;
    }
  }
}
EOF
log "starting nginx ($(nginx -v 2>&1 | sed 's/^nginx version: //')) on 127.0.0.1:$NGINX_PORT and :$STATIC_PORT"
nginx -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" -p "$NGINX_DIR" &
NGINX_PID=$!
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
  sleep 0.1
done
kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(cat "$NGINX_DIR/error.log")"
curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || die "nginx did not start: $(cat "$NGINX_DIR/error.log")"

bench() { # name port args...
  local name="$1" port="$2"; shift 2
  log "leofs-bench $name: $*"
  loadavg "bench $name"
  local rc=0
  "$BENCH_BIN" --endpoint "http://127.0.0.1:$port" --access-key limits --secret-key limits \
    --bucket limits --threads "$THREADS" --duration "$DURATION" --warmup "$WARMUP" \
    --no-verify --quiet --json "$@" >"$OUT/bench-$name.json" || rc=$?
  [[ $rc == 0 ]] || log "leofs-bench $name exited $rc (errors are in $OUT/bench-$name.json)"
}
bench nginx-put-4k "$NGINX_PORT" --workload put --size 4KiB --concurrency 32
bench nginx-get-empty "$NGINX_PORT" --workload get --size 4KiB --concurrency 32 --objects 100
bench nginx-get-4k "$STATIC_PORT" --workload get --size 4KiB --concurrency 32 --objects 100
bench nginx-put-1m "$NGINX_PORT" --workload put --size 1MiB --concurrency 8

# ---- table ----
fio_row() { # name file kind(write|read)
  [[ -f "$2" ]] || return 0
  jq -r --arg name "$1" --arg kind "$3" '.jobs[0][$kind] as $j |
    [$name, ($j.iops | floor), ($j.bw_bytes / 1e6 * 10 | floor / 10),
     (($j.clat_ns.percentile["50.000000"] // 0) / 1e6 * 1000 | floor / 1000),
     (($j.clat_ns.percentile["99.000000"] // 0) / 1e6 * 1000 | floor / 1000)] | @tsv' "$2"
}
bench_row() { # label file
  jq -r --arg name "$1" '
    (.results[0] // {ops_per_s: 0, mb_per_s: 0, latency_ms: {p50: 0, p99: 0}}) as $r |
    ((.errors | add) // 0) as $errors |
    [$name, ($r.ops_per_s | floor), ($r.mb_per_s * 10 | floor / 10),
     $r.latency_ms.p50, $r.latency_ms.p99] +
    (if $errors > 0 then ["errors: \($errors)"] else [] end) | @tsv' "$2"
}
{
  printf 'limit\tops/s\tMB/s\tp50 ms\tp99 ms\n'
  fio_row "fio seq write 1MiB qd8 O_DIRECT" "$OUT/fio-seq-write-1m.json" write
  fio_row "fio seq read 1MiB qd8 O_DIRECT" "$OUT/fio-seq-read-1m.json" read
  fio_row "fio rand read 4KiB qd32 O_DIRECT" "$OUT/fio-rand-read-4k.json" read
  fio_row "fio 4KiB write+fdatasync qd1 O_DIRECT" "$OUT/fio-sync-write-4k.json" write
  bench_row "nginx return-200 PUT 4KiB c=32" "$OUT/bench-nginx-put-4k.json"
  bench_row "nginx return-200 GET (empty) c=32" "$OUT/bench-nginx-get-empty.json"
  bench_row "nginx static GET 4KiB c=32" "$OUT/bench-nginx-get-4k.json"
  bench_row "nginx return-200 PUT 1MiB c=8" "$OUT/bench-nginx-put-1m.json"
} | column -t -s $'\t' | tee "$OUT/table.txt"
echo
echo "load average before each measurement (other processes share this machine):"
sed 's/^/  /' "$OUT/loadavg.txt"
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r); fio file on $(df --output=source "$FIO_DIR" | tail -1) ($FIO_DIR); leofs-bench threads=$THREADS; raw JSON in $OUT"
