#!/usr/bin/env bash
# The one command that tests all of leofs on a fresh machine:
#   1. installs what is missing (Python packages from tests/e2e/requirements.txt with pip;
#      rclone from Debian's apt when running as root),
#   2. checks formatting and lints (`cargo fmt --check`, `cargo clippy --workspace`), builds the
#      release binaries (`cargo build --release --bins`),
#   3. runs the Rust tests of the whole workspace (cargo nextest, or cargo test without it), and
#      the engine's tests once more with plain `cargo test --release` (one process per binary),
#   4. runs the end-to-end suite (pytest, tests/e2e) against the REAL release binary, twice and
#      at the same time: all-in-one, and split (a storage process and a gateway-only process;
#      LEOFS_E2E_DEPLOYMENT).
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
if [ "${LEOFS_SKIP_CARGO_TESTS:-0}" = 1 ]; then
    step "Rust tests skipped (LEOFS_SKIP_CARGO_TESTS=1)"
else
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
    t0=$(now)
    if cargo nextest --version >/dev/null 2>&1; then
        step "cargo nextest run --workspace ${feature_args[*]}"
        cargo nextest run --workspace "${feature_args[@]}" && rust_ok=ok || rust_ok=FAIL
        record "cargo nextest (workspace)" "$rust_ok" $(( $(now) - t0 ))
    else
        step "cargo test --workspace ${feature_args[*]} (cargo-nextest not installed)"
        cargo test --workspace "${feature_args[@]}" && rust_ok=ok || rust_ok=FAIL
        record "cargo test (workspace)" "$rust_ok" $(( $(now) - t0 ))
    fi
fi

# ---------------------------------------------------------------------------------------------
# The engine's tests must also pass as plain `cargo test` runs them: every test of a binary in
# one process, sharing its fail-point registry (nextest runs each test in a process of its own).
if [ "${LEOFS_SKIP_CARGO_TESTS:-0}" != 1 ]; then
    step "cargo test -p leofs-engine --release (all tests of a binary in one process)"
    t0=$(now)
    cargo test -p leofs-engine --release && engine_ok=ok || engine_ok=FAIL
    record "cargo test (engine, release)" "$engine_ok" $(( $(now) - t0 ))
fi

# ---------------------------------------------------------------------------------------------
# Twice: against one process with every role, then split (every server a storage process and a
# gateway-only process joined to it over the wire). The two passes run at the same time (the
# split pass skips the cluster tests, which start processes of their own and run once, in the
# all-in-one pass): its output is kept in a file and shown once it is done.
run_e2e() { # deployment: runs the suite against it
    # shellcheck disable=SC2086
    LEOFS_E2E_DEPLOYMENT=$1 python3 -m pytest tests/e2e -q --durations=15 ${PYTEST_ARGS:-}
}
if [ "$build_ok" != ok ]; then
    step "end-to-end suite: skipped, the release build failed"
    record "pytest tests/e2e (all-in-one)" "FAIL" 0
    record "pytest tests/e2e (split)" "FAIL" 0
else
    split_log="$(mktemp "${TMPDIR:-/tmp}/leofs-e2e-split.XXXXXX")"
    t0=$(now)
    run_e2e split >"$split_log" 2>&1 &
    split_pid=$!
    step "end-to-end suite (all-in-one; split beside it): pytest tests/e2e (LEOFS_BIN=$LEOFS_BIN)"
    run_e2e all-in-one
    # Exit code 5 (no test collected) is a failure too.
    [ $? = 0 ] && e2e_ok=ok || e2e_ok=FAIL
    record "pytest tests/e2e (all-in-one)" "$e2e_ok" $(( $(now) - t0 ))
    wait "$split_pid"
    [ $? = 0 ] && e2e_ok=ok || e2e_ok=FAIL
    step "end-to-end suite (split), run beside the all-in-one pass"
    cat "$split_log"
    rm -f "$split_log"
    record "pytest tests/e2e (split)" "$e2e_ok" $(( $(now) - t0 ))
fi

# ---------------------------------------------------------------------------------------------
step "summary (step, status, seconds)"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
if [ "$FAILED" = 0 ]; then echo "  => everything ok"; else echo "  => FAILED"; fi
exit "$FAILED"
