#!/usr/bin/env bash
# Online rebalance of a loaded cluster (issue 14), in one run:
#   1. "disk": the data filesystem's sequential write limit, dd of 1 GiB in 4 MiB O_DIRECT writes
#      (best of DD_RUNS), the reference the rebalance rate is compared to; and the same writes
#      while a second dd reads 1 GiB with O_DIRECT beside them (on one machine the sources read
#      what they move from the disk the new node writes it to);
#   2. "leofs": `leofs demo --nodes 3 --replicas 3` loaded with LOAD_GB of 1 MiB objects
#      (leofs-bench's preload), then a 4th storage node joins (attached) and `leofs-adm
#      rebalance` is timed until the ring is idle again: wall time, bytes moved (the nodes'
#      moved_bytes, and the 4th node's live bytes), MB/s and that rate against the disk's;
#   3. "latency": 4 KiB GETs through the gateway for LAT_DURATION while idle, then the same while
#      a second rebalance runs (the 4th node detached); p50/p99 of each and the ratio (needs 2);
#   3b. "recover": storage-3 killed, its data dir removed and started again empty (by the demo),
#      then `leofs-adm recover-node` timed until done: the bytes it holds again over that time;
#   4. "garage": the peer's figure, Garage's 3-node cluster (replication 3, fsync on, no
#      compression, its default resync settings) with the same objects, a 4th node assigned and
#      `garage layout apply` timed until the new node has fetched every block queued for it and
#      the layout history is back to one version. Skipped when no garage binary is found.
#
# Usage: perf/rebalance.sh [OUT_DIR]      (default: /work/tmp/leofs-rebalance/<timestamp>)
# Knobs: LOAD_GB (default 2: the bytes flow for about 2 s, long enough for the 0.1 s samples; or
# OBJECTS, the count of 1 MiB objects), GARAGE_OBJECTS (Garage's load, default 1024: it moves
# about 1.2 MB/s, so 1 GiB already takes 10 minutes), PARTS (default "disk leofs
# latency recover garage"), LEOFS_BIN, ADM_BIN, BENCH_BIN (default target/release/leofs, leofs-adm,
# leofs-bench), GARAGE_BIN (default /work/shared/peers/garage/bin/bin/garage, then PATH),
# NODE_CORES (cores of each storage node, default 1), GATEWAY_CORES (default 2), GET_CONCURRENCY
# (default 8), LAT_DURATION (seconds of each GET run; default the first rebalance's wall time, at
# least 10), DD_RUNS (default 3), GARAGE_TIMEOUT (seconds, default 1800), DATA_ROOT (default
# /work/tmp). Peak disk use: about 4 x LOAD_GB, one side at a time.
# Output: summary.md and the raw figures in OUT_DIR; every data dir is removed on exit.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${1:-/work/tmp/leofs-rebalance/$(date -u +%Y%m%dT%H%M%SZ)}"
LEOFS_BIN="${LEOFS_BIN:-$ROOT/target/release/leofs}"
ADM_BIN="${ADM_BIN:-$ROOT/target/release/leofs-adm}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/leofs-bench}"
DATA_ROOT="${DATA_ROOT:-/work/tmp}"
LOAD_GB="${LOAD_GB:-2}"
NODE_CORES="${NODE_CORES:-1}"
GATEWAY_CORES="${GATEWAY_CORES:-2}"
GET_CONCURRENCY="${GET_CONCURRENCY:-8}"
DD_RUNS="${DD_RUNS:-3}"
GARAGE_TIMEOUT="${GARAGE_TIMEOUT:-1800}"
PARTS="${PARTS:-disk leofs latency recover garage}"
GARAGE_DIR=/work/shared/peers/garage
OBJECTS="${OBJECTS:-$((LOAD_GB * 1024))}"
GARAGE_OBJECTS="${GARAGE_OBJECTS:-1024}"
part() { [[ " $PARTS " == *" $1 "* ]]; }

log() { echo "[rebalance] $(date -u +%H:%M:%S) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
free_port() { local p="$1"; while ss -Htln "sport = :$p" | grep -q .; do p=$((p + 1)); done; echo "$p"; }
mkdir -p "$OUT" "$DATA_ROOT"
DIR="$(mktemp -d "$DATA_ROOT/leofs-rebalance.XXXXXX")"
DEMO_PID="" NODE4_PID="" SAMPLER_PID=""
save_warnings() { # the leofs nodes' warnings and errors, kept in OUT (the logs go with the data)
  local f
  [[ -d "$DIR/leofs" ]] || return 0
  for f in "$DIR"/leofs/*.log "$DIR"/storage-4.log; do
    [[ -f "$f" ]] || continue
    sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E ' (WARN|ERROR) ' | sed "s|^|$(basename "$f" .log) |" || true
  done >"$OUT/leofs-warnings.log"
}
cleanup() {
  if [[ -n "$SAMPLER_PID" ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
  if [[ -n "$NODE4_PID" ]]; then kill "$NODE4_PID" 2>/dev/null || true; fi
  if [[ -n "$DEMO_PID" ]]; then
    kill -INT "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [[ -d "$DIR/garage" ]]; then "$GARAGE_DIR/stop-cluster.sh" "$DIR/garage" --wipe 2>/dev/null || true; fi
  save_warnings
  rm -rf "$DIR"
}
trap cleanup EXIT
echo "# Rebalance (issue 14), $(date -u +%Y-%m-%dT%H:%MZ), LOAD_GB=$LOAD_GB, GARAGE_OBJECTS=$GARAGE_OBJECTS" >"$OUT/summary.md"
say() { echo "$*" | tee -a "$OUT/summary.md"; }

# ---- 1. the disk's sequential write limit ----
DISK_MBS=""
if part disk; then
  for i in $(seq 1 "$DD_RUNS"); do
    t0=$(now)
    dd if=/dev/zero of="$DIR/dd.bin" bs=4M count=256 oflag=direct conv=fdatasync status=none
    t1=$(now)
    rm -f "$DIR/dd.bin"
    dd_rate=$(calc "round(1073741824 / ($t1 - $t0) / 1e6)")
    log "dd run $i: $dd_rate MB/s"
    if [[ -z "$DISK_MBS" || $dd_rate -gt $DISK_MBS ]]; then DISK_MBS=$dd_rate; fi
  done
  say "disk: dd 1 GiB bs=4M oflag=direct on $DATA_ROOT, best of $DD_RUNS: $DISK_MBS MB/s"
  dd if=/dev/urandom of="$DIR/dd-read.bin" bs=4M count=256 status=none
  sync
  DISK_RW_MBS=""
  for i in $(seq 1 "$DD_RUNS"); do
    dd if="$DIR/dd-read.bin" of=/dev/null bs=4M iflag=direct status=none &
    reader=$!
    t0=$(now)
    dd if=/dev/zero of="$DIR/dd.bin" bs=4M count=256 oflag=direct conv=fdatasync status=none
    t1=$(now)
    wait "$reader"
    rm -f "$DIR/dd.bin"
    dd_rate=$(calc "round(1073741824 / ($t1 - $t0) / 1e6)")
    log "dd run $i beside a reader: $dd_rate MB/s"
    if [[ -z "$DISK_RW_MBS" || $dd_rate -gt $DISK_RW_MBS ]]; then DISK_RW_MBS=$dd_rate; fi
  done
  rm -f "$DIR/dd-read.bin"
  say "disk: the same writes while dd reads 1 GiB (iflag=direct) beside them, best of $DD_RUNS: $DISK_RW_MBS MB/s"
fi

of_disk() { # MB/s: "= P% of the disk limit"
  if [[ -n "$DISK_MBS" ]]; then echo "= $(calc "round(100 * $1 / $DISK_MBS, 1)")% of the disk limit ($DISK_MBS MB/s)"; fi
}
of_disk_rw() { # MB/s: the same, and against the write limit beside a reader
  if [[ -n "$DISK_MBS" ]]; then
    echo "$(of_disk "$1"), $(calc "round(100 * $1 / $DISK_RW_MBS, 1)")% of its write limit beside a reader ($DISK_RW_MBS MB/s)"
  fi
}

# ---- 2. leofs: a 4th node joins a loaded N=3 cluster ----
bench() { # endpoint key secret region bucket json_out [leofs-bench args...]
  local endpoint=$1 key=$2 secret=$3 region=$4 bucket=$5 json=$6; shift 6
  "$BENCH_BIN" --endpoint "$endpoint" --access-key "$key" --secret-key "$secret" \
    --region "$region" --bucket "$bucket" --json "$@" >"$json" 2>"$json.err"
}
load() { # objects endpoint key secret region bucket: that many 1 MiB objects (the GET preload)
  local objects=$1; shift
  log "loading $objects objects of 1 MiB into $1"
  bench "$@" "$OUT/load.$5.json" --workload get --size 1MiB --objects "$objects" \
    --preload-concurrency 8 --concurrency 8 --duration 1s --warmup 0s --prefix load/ --quiet
}
if part leofs || part latency; then
  log "starting leofs demo --nodes 3 --replicas 3"
  "$LEOFS_BIN" demo --nodes 3 --replicas 3 --cores "$NODE_CORES" --gateway-cores "$GATEWAY_CORES" \
    --dir "$DIR/leofs" >"$OUT/demo.out" 2>"$OUT/demo.err" &
  DEMO_PID=$!
  for _ in $(seq 1 600); do
    grep -q '^leofs demo ready' "$OUT/demo.out" 2>/dev/null && break
    kill -0 "$DEMO_PID" 2>/dev/null || { cat "$OUT/demo.err" >&2; exit 1; }
    sleep 0.1
  done
  grep -q '^leofs demo ready' "$OUT/demo.out" || die "the demo did not become ready"
  ENDPOINT="$(sed -n 's/^S3 endpoints: \([^ ]*\).*/\1/p' "$OUT/demo.out")"
  KEY="$(sed -n 's/^Access key: //p' "$OUT/demo.out")"
  SECRET="$(sed -n 's/^Secret key: //p' "$OUT/demo.out")"
  ADMIN="$(sed -n 's/^Admin: leofs-adm --admin \([^ ]*\) .*/\1/p' "$OUT/demo.out")"
  TOKEN="$(sed -n 's/^Admin: .* --token \([^ ]*\) .*/\1/p' "$OUT/demo.out")"
  adm() { "$ADM_BIN" --admin "$ADMIN" --token "$TOKEN" "$@"; }
  # The managers' RPC address, as the demo gave it to its storage nodes.
  storage1="$(pgrep -f -- "--data-dir $DIR/leofs/storage-1" | head -1)"
  JOIN="$(tr '\0' '\n' <"/proc/$storage1/cmdline" | sed -n '/^--join$/{n;p;}')"
  load "$OBJECTS" "$ENDPOINT" "$KEY" "$SECRET" us-east-1 moving
  sleep 5 # heartbeats carry the figures below
  adm status >"$OUT/status.before.txt"
  moved_bytes() { adm --json rebalance-status | jq .moved_bytes; }
  rebalance() { # timed `leofs-adm rebalance`, its progress lines stamped with the wall clock
    adm rebalance 2>&1 >/dev/null | while IFS= read -r line; do echo "$(now) $line"; done >"$1"
  }
  moving_secs() { # t0 log: seconds from t0 to the first progress line past the moving phase
    awk -v t0="$1" '$0 !~ / moving / { printf "%.1f", $1 - t0; exit }' "$2"
  }

  rpc=$(free_port 47100); admin4=$(free_port $((rpc + 1)))
  log "starting a 4th storage node (rpc 127.0.0.1:$rpc, joins $JOIN)"
  "$LEOFS_BIN" server --roles storage --join "$JOIN" --rpc-listen "127.0.0.1:$rpc" \
    --admin-listen "127.0.0.1:$admin4" --data-dir "$DIR/storage-4" \
    --cluster-secret-file "$DIR/leofs/cluster.secret" --cores "$NODE_CORES" >"$DIR/storage-4.log" 2>&1 &
  NODE4_PID=$!
  NODE4=""
  for _ in $(seq 1 300); do
    NODE4="$(adm --json status | jq -r --arg a "127.0.0.1:$rpc" \
      '.cluster.nodes[] | select(.member.addr == $a and .member.state == "attached") | .member.id')"
    [[ -n "$NODE4" ]] && break
    kill -0 "$NODE4_PID" 2>/dev/null || { tail -n 20 "$DIR/storage-4.log" >&2; die "node 4 exited"; }
    sleep 0.2
  done
  [[ -n "$NODE4" ]] || die "node 4 did not register as attached"
  log "node $NODE4 attached; rebalance"
  sample_live4() { # every 0.1 s: the wall clock and node 4's live bytes (its own /metrics)
    while :; do
      echo "$(now) $(curl -s "http://127.0.0.1:$admin4/metrics" | awk '/^leofs_live_bytes/ {s += $2} END {print s + 0}')"
      sleep 0.1
    done
  }
  sample_live4 >"$OUT/live4.attach.txt" &
  SAMPLER_PID=$!
  b0=$(moved_bytes); t0=$(now)
  rebalance "$OUT/rebalance-attach.log"
  t1=$(now)
  kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true
  # The flow on the receiving side: from its first 1% to its 99% of what it ends up holding.
  read -r flow_secs flow_mb <<<"$(awk -v t0="$t0" '{t[NR] = $1; b[NR] = $2; last = $2}
    END { for (i = 1; i <= NR; i++) { if (a == "" && b[i] >= 0.01 * last) a = i; if (z == "" && b[i] >= 0.99 * last) z = i }
          printf "%.2f %.0f\n", t[z] - t[a], (b[z] - b[a]) / 1e6 }' "$OUT/live4.attach.txt")"
  sleep 3 # the last heartbeats
  b1=$(moved_bytes)
  live4=$(adm --json du "$NODE4" | jq '[.heartbeat.shards[].live_bytes] | add')
  adm status >"$OUT/status.after-attach.txt"
  secs=$(calc "round($t1 - $t0, 1)")
  flip=$(moving_secs "$t0" "$OUT/rebalance-attach.log")
  mb=$(calc "round(($b1 - $b0) / 1e6)"); rate=$(calc "round(($b1 - $b0) / 1e6 / $secs, 1)")
  say "leofs attach: node $NODE4 joins $OBJECTS x 1 MiB x 3 replicas: rebalance $secs s (moving phase $flip s)," \
    "moved_bytes $mb MB, node $NODE4 live $(calc "round($live4 / 1e6)") MB: $rate MB/s" \
    "$(of_disk "$rate"); over the moving phase $(calc "round($mb / $flip, 1)") MB/s"
  flow_rate=$(calc "round($flow_mb / max($flow_secs, 0.1), 1)")
  say "leofs attach, while the bytes flowed (node $NODE4's live bytes sampled every 0.1 s, 1% to 99%):" \
    "$flow_mb MB in $flow_secs s = $flow_rate MB/s $(of_disk_rw "$flow_rate")"
fi

# ---- 3. foreground GET latency, idle and while a rebalance runs ----
get_run() { # json_out: 4 KiB GETs; returns once the measured phase ended
  bench "$ENDPOINT" "$KEY" "$SECRET" us-east-1 latency "$1" --workload get --size 4KiB \
    --objects 1000 --concurrency "$GET_CONCURRENCY" --duration "${LAT_DURATION}s" --warmup 2s --prefix get/
}
wait_run_phase() { # bench_pid err_file: until its measured phase is on
  for _ in $(seq 1 1200); do
    grep -q ' run\]' "$2" 2>/dev/null && return
    kill -0 "$1" 2>/dev/null || return
    sleep 0.1
  done
}
latency() { # json: "p50 p99 ops/s" of GET
  jq -r '.results[] | select(.op == "GET") | "\(.latency_ms.p50) \(.latency_ms.p99) \(.ops_per_s | round)"' "$1"
}
if part latency; then
  LAT_DURATION="${LAT_DURATION:-$(calc "max(10, round(${secs:-10}))")}"
  log "idle GETs, $LAT_DURATION s"
  get_run "$OUT/get-idle.json"
  log "GETs while node $NODE4 is detached and the ring rebalanced"
  get_run "$OUT/get-during.json" &
  bench_pid=$!
  wait_run_phase "$bench_pid" "$OUT/get-during.json.err"
  g0=$(now)
  adm detach "$NODE4" >/dev/null
  b0=$(moved_bytes); t0=$(now)
  rebalance "$OUT/rebalance-detach.log"
  t1=$(now)
  wait "$bench_pid" || log "the GET run during the rebalance had errors (see get-during.json)"
  g1=$(now)
  sleep 3
  b1=$(moved_bytes)
  adm status >"$OUT/status.after-detach.txt"
  secs2=$(calc "round($t1 - $t0, 1)") flip2=$(moving_secs "$t0" "$OUT/rebalance-detach.log")
  mb2=$(calc "round(($b1 - $b0) / 1e6)")
  read -r i50 i99 iops <<<"$(latency "$OUT/get-idle.json")"
  read -r d50 d99 dops <<<"$(latency "$OUT/get-during.json")"
  errors=$(jq '[.errors[]] | add // 0' "$OUT/get-during.json")
  overlap=$(calc "round(100 * (min($t1, $g1) - $t0) / ($g1 - $g0))")
  say "leofs detach under GETs: rebalance $secs2 s (moving phase $flip2 s), moved_bytes $mb2 MB," \
    "$(calc "round($mb2 / $secs2, 1)") MB/s (moving phase $(calc "round($mb2 / $flip2, 1)") MB/s);" \
    "it ran for $overlap% of the GET run"
  say "4 KiB GET c=$GET_CONCURRENCY, $LAT_DURATION s: idle p50 $i50 / p99 $i99 ms, $iops ops/s;" \
    "during the rebalance p50 $d50 / p99 $d99 ms, $dops ops/s ($errors errors);" \
    "ratio p50 $(calc "round($d50 / $i50, 2)")x, p99 $(calc "round($d99 / $i99, 2)")x"
fi
# ---- 3b. recover-node: a wiped storage node gets every replica back ----
if part recover && [[ -n "$DEMO_PID" ]]; then
  if [[ -n "$NODE4_PID" ]]; then kill "$NODE4_PID" 2>/dev/null || true; NODE4_PID=""; fi
  pid3="$(pgrep -f -- "--data-dir $DIR/leofs/storage-3" | head -1)"
  id3="$(adm --json status | jq -r --arg a "$(tr '\0' '\n' <"/proc/$pid3/cmdline" | sed -n '/^--rpc-listen$/{n;p;}')" \
    '.cluster.nodes[] | select(.member.addr == $a) | .member.id')"
  log "wiping storage-3 (node $id3): kill -9, its data dir removed; the demo starts it again"
  kill -9 "$pid3"
  sleep 0.5
  rm -rf "$DIR/leofs/storage-3"
  for _ in $(seq 1 600); do
    [[ "$(adm --json status | jq -r --argjson n "$id3" '.cluster.nodes[] | select(.member.id == $n) | .member.state')" == running ]] \
      && pgrep -f -- "--data-dir $DIR/leofs/storage-3" >/dev/null && break
    sleep 0.2
  done
  sleep 3 # its heartbeats carry its (empty) figures
  t0=$(now)
  adm recover-node "$id3" >"$OUT/recover-node.txt" 2>"$OUT/recover-node.progress"
  t1=$(now)
  sleep 3
  live3=$(adm --json du "$id3" | jq '[.heartbeat.shards[].live_bytes] | add')
  rsecs=$(calc "round($t1 - $t0, 1)") rmb=$(calc "round($live3 / 1e6)")
  rrate=$(calc "round($live3 / 1e6 / ($t1 - $t0), 1)")
  say "leofs recover-node: node $id3 wiped, $rmb MB back in $rsecs s (recover-node until idle):" \
    "$rrate MB/s $(of_disk "$rrate")"
fi
if [[ -n "$DEMO_PID" ]]; then # free the disk and the CPUs before the peer
  kill "$NODE4_PID" 2>/dev/null || true; NODE4_PID=""
  kill -INT "$DEMO_PID"; wait "$DEMO_PID" 2>/dev/null || true; DEMO_PID=""
  save_warnings
  rm -rf "$DIR/leofs" "$DIR/storage-4"
fi

# ---- 4. Garage: a 4th node added to a loaded 3-node cluster ----
GARAGE_BIN="${GARAGE_BIN:-$GARAGE_DIR/bin/bin/garage}"
[[ -x "$GARAGE_BIN" ]] || GARAGE_BIN="$(command -v garage || true)"
if part garage && [[ -z "$GARAGE_BIN" ]]; then
  say "garage: skipped (no garage binary: cargo install garage --locked --root DIR; GARAGE_BIN=DIR/bin/garage)"
elif part garage; then
  export GARAGE_BIN REPLICATION=3 FSYNC=1 COMPRESSION=none
  g() { local i=$1; shift; "$GARAGE_BIN" -c "$DIR/garage/node$i/garage.toml" "$@"; }
  env3="$("$GARAGE_DIR/start-cluster.sh" 3 "$DIR/garage")"
  load "$GARAGE_OBJECTS" "$(sed -n 's/^ENDPOINT=//p' <<<"$env3")" "$(sed -n 's/^ACCESS_KEY=//p' <<<"$env3")" \
    "$(sed -n 's/^SECRET_KEY=//p' <<<"$env3")" "$(sed -n 's/^REGION=//p' <<<"$env3")" \
    "$(sed -n 's/^BUCKET=//p' <<<"$env3")"
  sleep 5
  # start-cluster.sh again with 4: nodes 0-2 run on, node 3 starts and connects (no role yet).
  "$GARAGE_DIR/start-cluster.sh" 4 "$DIR/garage" >/dev/null
  id3="$(g 3 node id -q | cut -d@ -f1)"
  g 0 layout assign -z z3 -c 10G "$id3" >/dev/null
  g 0 status >"$OUT/garage-status.before.txt"
  node3_bytes() { find "$DIR/garage/node3/data" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
  log "garage layout apply: node 3 joins"
  t0=$(now); first="" last=$t0 size=$(node3_bytes) queued=0
  g 0 layout apply --version 2 >"$OUT/garage-apply.txt"
  # Done once node 3 has had blocks queued for resync and its queue is empty again, with one
  # layout version live (its metadata synced). Garage fetches a block a new node is told of only
  # 2 x rpc_timeout (10 min by default) later, and hands blocks over from old nodes only after
  # BLOCK_GC_DELAY (10 min): the window of growth is reported beside the wall time.
  while true; do
    sleep 2
    if (($(calc "int($(now) - $t0)") > GARAGE_TIMEOUT)); then log "garage: not done in $GARAGE_TIMEOUT s"; break; fi
    new=$(node3_bytes)
    queue=$(g 3 stats 2>/dev/null | sed -n 's/.*resync queue length:[[:space:]]*//p' | head -1)
    echo "$(now) bytes $new queue ${queue:-?}" >>"$OUT/garage-node3.log"
    if [[ $new != "$size" ]]; then size=$new last=$(now); first=${first:-$last}; fi
    if ((${queue:-0} > 0)); then queued=1; fi
    if ((queued)) && [[ ${queue:-1} == 0 ]] && g 0 layout history | grep -q 'single live layout version'; then break; fi
  done
  g 0 status >"$OUT/garage-status.after.txt"
  gsecs=$(calc "round($last - $t0, 1)") window=$(calc "round($last - ${first:-$last}, 1)")
  grate=$(calc "round($size / 1e6 / $gsecs, 1)")
  say "garage add node 3: node 3 data $(calc "round($size / 1e6)") MB, its last block $gsecs s after" \
    "layout apply: $grate MB/s $(of_disk "$grate")${rate:+; leofs/Garage rate $(calc "round($rate / $grate, 1)")x};" \
    "blocks arrived over the last $window s of it ($(calc "round($size / 1e6 / max($window, 1), 1)") MB/s)"
fi
log "results in $OUT"
