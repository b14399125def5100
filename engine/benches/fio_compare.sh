#!/usr/bin/env bash
# Runs the one-shard engine benchmarks side by side with fio on the same disk, alternating
# (fio, engine, fio, engine, ...) so both see the same machine state. Results: BENCHMARKS.md.
#
#   bash engine/benches/fio_compare.sh [DIR]     # DIR: where data goes (default /work/tmp), ext4
#
# Needs fio (apt-get install -y fio). Each fio run writes 3 GiB, each engine run up to ~4 GiB;
# everything is deleted afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DIR="${1:-/work/tmp}"
mkdir -p "$DIR"
FIO_FILE="$DIR/leofs-fio-seq.dat"
trap 'rm -f "$FIO_FILE"' EXIT

cargo bench -p leofs-engine --bench engine --no-run
engine() { cargo bench -q -p leofs-engine --bench engine -- "$@" --dir "$DIR"; }

fio_seq() {
    rm -f "$FIO_FILE"
    local common=(--filename="$FIO_FILE" --bs=1M --rw=write --direct=1 --ioengine=io_uring
        --iodepth=8 --numjobs=1 --output-format=terse --terse-version=3)
    for pass in fresh overwrite; do
        # terse v3 field 48 is the write bandwidth in KiB/s.
        fio --name=seq "${common[@]}" --size=3G --end_fsync=1 |
            awk -F';' -v p="$pass" '{printf "fio seq write 1MiB io_uring iodepth=8 direct=1 3GiB (%s): %.1f MB/s\n", p, $48*1.024/1000}'
    done
    fio --name=seqsync "${common[@]}" --size=2G --fdatasync=1 |
        awk -F';' '{printf "fio seq write 1MiB + fdatasync after each write, iodepth=8 2GiB: %.1f MB/s\n", $48*1.024/1000}'
    rm -f "$FIO_FILE"
}

load() {
    printf '[load %s; busy: %s]\n' "$(cut -d' ' -f1-3 /proc/loadavg)" \
        "$(ps -eo pcpu,comm --sort=-pcpu | awk 'NR>1 && $1>5 {printf "%s(%s%%) ", $2, $1}')"
}

date -u; load
fio_seq; load
for w in 1 4 16; do engine put1m --seconds 5 --sync always --writers "$w"; done; load
engine put1m --seconds 5 --sync none --writers 4; load
fio_seq; load
engine put4k --seconds 5 --sync always; load
engine get --seconds 5; load
engine recovery --records 1000000; load
fio_seq; load
for w in 1 4 16; do engine put1m --seconds 5 --sync always --writers "$w"; done; load
date -u
