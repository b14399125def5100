#!/usr/bin/env bash
# The one command that tests all of leofs on a fresh machine:
#   1. installs what is missing (Python packages from tests/e2e/requirements.txt with pip;
#      rclone from Debian's apt when running as root),
#   2. checks formatting and lints (`cargo fmt --check`, `cargo clippy --workspace`), builds the
#      release binaries (`cargo build --release --bins`),
#   3. runs the Rust tests of the whole workspace (cargo nextest, or cargo test without it), and
#      the engine's tests once more with plain `cargo test --release` (one process per binary),
#   4. runs the end-to-end suite (pytest, tests/e2e) against the REAL release binary, twice:
#      all-in-one, and split (a storage process and a gateway-only process;
#      LEOFS_E2E_DEPLOYMENT). Steps 3 and 4 run as two streams at the same time (below).
# Exits non-zero if any step fails. pytest's closing line is the last test-runner line printed.
#
# Knobs (environment):
#   CARGO_TARGET_DIR         where cargo builds (default: ./target); the e2e suite uses its release/leofs
#   LEOFS_CARGO_FEATURES     features for the Rust tests (default below; dropped if the crate lacks it)
#   LEOFS_SKIP_CARGO_TESTS=1 skip step 3 (e.g. to iterate on the e2e suite)
#   LEOFS_E2E_SKIP_LARGE=1   skip the 1 GiB test; PYTEST_ARGS: extra pytest arguments (e.g. "-k boto3")
set -uo pipefail

CARGO_TEST_FEATURES="${LEOFS_CARGO_FEATURES-leofs-engine/failpoints}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
export LEOFS_BIN="$CARGO_TARGET_DIR/release/leofs"
export LEOFS_ADM_BIN="$CARGO_TARGET_DIR/release/leofs-adm"

declare -a SUMMARY=()
FAILED=0
step() { printf '\n==> %s\n' "$*"; }
record() { # record NAME STATUS SECONDS
    SUMMARY+=("$(printf '%-34s %-6s %5ss' "$1" "$2" "$3")")
    [ "$2" = ok ] || FAILED=1
}
now() { date +%s; }

# ---------------------------------------------------------------------------------------------
step "dependencies"
t0=$(now)
deps_ok=ok
PIP_USER_BIN="$(python3 -m site --user-base 2>/dev/null)/bin"
export PATH="$PATH:$PIP_USER_BIN"
if ! python3 -c 'import boto3, awscrt, pytest, pytest_timeout, requests' 2>/dev/null \
    || ! command -v aws >/dev/null || ! command -v s3cmd >/dev/null; then
    echo "installing Python packages from tests/e2e/requirements.txt"
    python3 -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt || deps_ok=FAIL
    command -v pyenv >/dev/null && pyenv rehash
fi
if ! command -v rclone >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing rclone with apt-get"
        (export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q rclone) \
            >/dev/null || deps_ok=FAIL
    else
        echo "rclone is missing and this is not root: install it (apt-get install rclone)" >&2
        deps_ok=FAIL
    fi
fi
for tool in aws s3cmd rclone; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; deps_ok=FAIL; }
done
echo "python:  $(python3 --version 2>&1)"
echo "boto3:   $(python3 -c 'import boto3; print(boto3.__version__)' 2>&1)"
echo "aws-cli: $(aws --version 2>&1)"
echo "s3cmd:   $(s3cmd --version 2>&1)"
echo "rclone:  $(rclone version 2>/dev/null | head -n1)"
echo "pytest:  $(python3 -m pytest --version 2>&1)"
record "dependencies" "$deps_ok" $(( $(now) - t0 ))

# ---------------------------------------------------------------------------------------------
step "lint: cargo fmt --check, cargo clippy --workspace --all-targets -D warnings"
t0=$(now)
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "note: rustfmt or clippy is not installed with this toolchain; lint step skipped"
elif cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings; then
    record "fmt + clippy (workspace)" ok $(( $(now) - t0 ))
else
    record "fmt + clippy (workspace)" FAIL $(( $(now) - t0 ))
fi

# ---------------------------------------------------------------------------------------------
step "cargo build --release --bins (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
t0=$(now)
if cargo build --release --bins; then build_ok=ok; else build_ok=FAIL; fi
record "cargo build --release" "$build_ok" $(( $(now) - t0 ))

# ---------------------------------------------------------------------------------------------
# Steps 3 and 4 run as two streams at once, so that the machine's two cores are both busy
# (much of the end-to-end suite waits on processes, heartbeats and timeouts):
#   stream 1: the Rust tests (nextest, then the engine's tests in release), then the
#             all-in-one end-to-end pass over LATE_FILES: the cluster files (which start
#             clusters of processes of their own, run in the all-in-one pass only, and are the
#             most sensitive to a busy machine: they run once the compilers are done), and the
#             disk-full files;
#   stream 2: the all-in-one pass over every other file, then the split pass over every file,
#             then the all-in-one pass over LAST_FILES: the rebalance file, whose clusters of
#             four to six processes move partitions under load, runs when stream 1 is done
#             (its detach under load has twice run past its 600 s timeout while another pass
#             ran beside it; alone it takes about 100 s; see the closing notes).
# In a CI check on this machine (incremental build, session 26): stream 1 took 911 s (nextest
# 255 s, engine 173 s, late files 483 s), stream 2 1,394 s (rest 554 s, split 544 s, last
# files 296 s); the full-disk rounds (about 140 s) then left the split pass, which now ends
# about when stream 1 does.
# Each stream's output goes to a file, printed in full once both are done.
LATE_FILES="test_cluster.py test_versioning_cluster.py test_managers.py test_split.py test_gateway_cache.py test_lifecycle.py test_disk_full.py test_cluster_disk_full.py"
LAST_FILES="test_rebalance.py"
late_args=(); last_args=(); rest_ignores=()
for f in $LATE_FILES; do
    late_args+=("tests/e2e/$f")
    rest_ignores+=("--ignore=tests/e2e/$f")
done
for f in $LAST_FILES; do
    last_args+=("tests/e2e/$f")
    rest_ignores+=("--ignore=tests/e2e/$f")
done

feature_args=()
if [ -n "$CARGO_TEST_FEATURES" ]; then
    crate="${CARGO_TEST_FEATURES%%/*}"; feature="${CARGO_TEST_FEATURES#*/}"
    manifest="$(cargo metadata --no-deps --format-version 1 2>/dev/null \
        | python3 -c "import json,sys; print(next((p['manifest_path'] for p in json.load(sys.stdin)['packages'] if p['name']=='$crate'), ''))")"
    if [ -n "$manifest" ] && grep -qE "^$feature *=" "$manifest"; then
        feature_args=(--features "$CARGO_TEST_FEATURES")
    else
        echo "note: $CARGO_TEST_FEATURES not defined; running without it"
    fi
fi

results="$(mktemp -d "${TMPDIR:-/tmp}/leofs-tests.XXXXXX")"
# timed NAME COMMAND...: runs COMMAND, records "NAME STATUS SECONDS" in $results/NAME.
timed() {
    local name=$1; shift
    local t0; t0=$(now)
    printf '\n==> %s\n' "$name"
    "$@"
    local rc=$?
    local status=ok; [ $rc = 0 ] || status=FAIL
    echo "$name|$status|$(( $(now) - t0 ))" >"$results/$(echo "$name" | tr ' /()' '____')"
    return $rc
}
run_e2e() { # deployment, then pytest arguments
    local deployment=$1; shift
    # shellcheck disable=SC2086
    LEOFS_E2E_DEPLOYMENT=$deployment python3 -m pytest -q --durations=15 "$@" ${PYTEST_ARGS:-}
    local rc=$?
    # Exit code 5 (no test collected) is a failure, unless PYTEST_ARGS chose the tests (then
    # one of the passes may well have none of them).
    if [ $rc = 5 ] && [ -n "${PYTEST_ARGS:-}" ]; then return 0; fi
    return $rc
}
stream1() {
    if [ "${LEOFS_SKIP_CARGO_TESTS:-0}" = 1 ]; then
        echo "Rust tests skipped (LEOFS_SKIP_CARGO_TESTS=1)"
    elif cargo nextest --version >/dev/null 2>&1; then
        timed "cargo nextest (workspace)" cargo nextest run --workspace ${feature_args[@]+"${feature_args[@]}"}
    else
        timed "cargo test (workspace)" cargo test --workspace ${feature_args[@]+"${feature_args[@]}"}
    fi
    # The engine's tests must also pass as plain `cargo test` runs them: every test of a
    # binary in one process, sharing its fail-point registry (nextest runs each test in a
    # process of its own).
    if [ "${LEOFS_SKIP_CARGO_TESTS:-0}" != 1 ]; then
        timed "cargo test (engine, release)" cargo test -p leofs-engine --release
    fi
    if [ "$build_ok" = ok ]; then
        timed "pytest e2e all-in-one (late files)" run_e2e all-in-one "${late_args[@]}"
    fi
}
stream2() {
    [ "$build_ok" = ok ] || return 0
    timed "pytest e2e all-in-one (rest)" run_e2e all-in-one tests/e2e "${rest_ignores[@]}"
    timed "pytest e2e split" run_e2e split tests/e2e
    # The last files wait for stream 1 (at most as long as stream 1 may take).
    while kill -0 "$stream1_pid" 2>/dev/null; do sleep 2; done
    timed "pytest e2e all-in-one (last files)" run_e2e all-in-one "${last_args[@]}"
}

step "Rust tests and the end-to-end suite, in two streams (LEOFS_BIN=$LEOFS_BIN)"
if [ "$build_ok" != ok ]; then
    echo "end-to-end suite: skipped, the release build failed"
    record "pytest tests/e2e" "FAIL" 0
fi
# Each stream runs in a process group of its own (job control on), so that Ctrl-C or a CI
# timeout stops both streams and everything they started.
stop_streams() { kill -- -"$stream1_pid" -"$stream2_pid" 2>/dev/null; rm -rf "$results"; }
trap 'stop_streams; exit 130' INT
trap 'stop_streams; exit 143' TERM
set -m
stream1 >"$results/stream1.log" 2>&1 &
stream1_pid=$!
stream2 >"$results/stream2.log" 2>&1 &
stream2_pid=$!
set +m
wait "$stream1_pid"
wait "$stream2_pid"
trap - INT TERM
step "stream 1: Rust tests, then the all-in-one end-to-end pass over LATE_FILES"
cat "$results/stream1.log"
step "stream 2: the all-in-one pass over every other file, then the split pass, then LAST_FILES"
cat "$results/stream2.log"
for f in "$results"/*; do
    case "$f" in *.log) continue ;; esac
    IFS='|' read -r name status secs <"$f"
    record "$name" "$status" "$secs"
done
# A stream that died before it recorded every step (or exited with an error) fails the run.
expected=0
[ "${LEOFS_SKIP_CARGO_TESTS:-0}" = 1 ] || expected=$((expected + 2))
[ "$build_ok" != ok ] || expected=$((expected + 4))
recorded=$(find "$results" -type f ! -name '*.log' | wc -l)
if [ "$recorded" -ne "$expected" ]; then
    record "test streams ($recorded of $expected steps recorded)" FAIL 0
fi
rm -rf "$results"

# ---------------------------------------------------------------------------------------------
step "summary (step, status, seconds)"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
if [ "$FAILED" = 0 ]; then echo "  => everything ok"; else echo "  => FAILED"; fi
exit "$FAILED"
