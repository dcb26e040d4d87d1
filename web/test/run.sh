#!/usr/bin/env bash
# Browser test of the demo page (see web/README.md). Exits non-zero on any mismatch. When Chromium
# is not installed it is installed with apt-get; if that fails the test fails under CI=true or
# ADEPT_REQUIRE_MODEL=1, and otherwise exits 0 with a SKIP line (also appended to $ADEPT_SKIP_LOG).
#   ADEPT_WEB_BUNDLE   bundle dir relative to the repo root (default: exports/quickstart-sst2-adept,
#                      else exports/qs-test); a decoder bundle runs test/decoder.test.mjs against
#                      `adept generate --json` (ADEPT_WEB_BENCH_PROMPT/_TOKENS: the tokens/s run)
#   ADEPT_BIN          native adept binary (default: target/release/adept)
#   ADEPT_WEB_TEST_OUT output folder (default: web/test-output): screenshots, results.json
#   ADEPT_WEB_TOL      probability tolerance (default 1e-4)
#   SKIP_BUILD=1       use the existing web/pkg
set -euo pipefail
# a relative output folder is relative to the caller's directory
if [ -n "${ADEPT_WEB_TEST_OUT:-}" ]; then
  mkdir -p "$ADEPT_WEB_TEST_OUT" && ADEPT_WEB_TEST_OUT=$(cd "$ADEPT_WEB_TEST_OUT" && pwd)
fi
cd "$(dirname "$0")/.."
WEB=$(pwd)
ROOT=$(cd .. && pwd)

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
  echo "chromium not found; trying apt-get install -y chromium"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
     && (export DEBIAN_FRONTEND=noninteractive; apt-get install -y chromium >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1)); then
    CHROMIUM=$(command -v chromium)
  else
    why="Chromium is not installed and cannot be installed (apt-get install chromium failed; install it, or set CHROMIUM=/path/to/chromium)"
    if [ "${CI:-}" = true ] || [ "${ADEPT_REQUIRE_MODEL:-}" = 1 ]; then
      echo "error: $why" >&2
      exit 1
    fi
    echo "SKIP browser test: $why"
    [ -z "${ADEPT_SKIP_LOG:-}" ] || echo "SKIP browser test: $why" >> "$ADEPT_SKIP_LOG"
    exit 0
  fi
fi
export CHROMIUM

if [ -z "${ADEPT_WEB_BUNDLE:-}" ]; then
  for b in exports/quickstart-sst2-adept exports/qs-test; do
    if [ -f "$ROOT/$b/adept.json" ]; then ADEPT_WEB_BUNDLE=$b; break; fi
  done
fi
if [ -z "${ADEPT_WEB_BUNDLE:-}" ] || [ ! -f "$ROOT/$ADEPT_WEB_BUNDLE/adept.json" ]; then
  echo "error: no bundle (set ADEPT_WEB_BUNDLE=<dir under the repo root>, or run: adept quickstart)" >&2
  exit 1
fi
export ADEPT_WEB_BUNDLE
ADEPT_BIN=${ADEPT_BIN:-$ROOT/target/release/adept}
if [ ! -x "$ADEPT_BIN" ]; then
  echo "error: native adept binary $ADEPT_BIN not found (cargo build --release -p adept-cli, or set ADEPT_BIN)" >&2
  exit 1
fi

[ -d "$WEB/node_modules/playwright-core" ] || (cd "$WEB" && npm ci --no-audit --no-fund)
[ "${SKIP_BUILD:-0}" = 1 ] && [ -f "$WEB/pkg/adept_wasm.js" ] || "$WEB/build.sh"

export ADEPT_WEB_TEST_OUT=${ADEPT_WEB_TEST_OUT:-$WEB/test-output}
REF="$ADEPT_WEB_TEST_OUT/native"
mkdir -p "$REF"
export ADEPT_WEB_REF=$REF
# A decoder bundle (adept.json with a `decoder` section): completions vs `adept generate --json`.
if node -e 'process.exit(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).decoder ? 0 : 1)' \
     "$ROOT/$ADEPT_WEB_BUNDLE/adept.json"; then
  echo "==> native references (adept generate --json, $ADEPT_WEB_BUNDLE)"
  node "$WEB/test/decoder-ref.mjs" "$ROOT/$ADEPT_WEB_BUNDLE" "$REF" "$ADEPT_BIN"
  echo "==> headless Chromium ($CHROMIUM), decoder bundle"
  exec node "$WEB/test/decoder.test.mjs"
fi
echo "==> native references ($ADEPT_WEB_BUNDLE)"
node "$WEB/test/native-ref.mjs" "$ROOT/$ADEPT_WEB_BUNDLE" "$REF"
"$ADEPT_BIN" infer --bundle "$ROOT/$ADEPT_WEB_BUNDLE" --input "$REF/sentences.jsonl" --output "$REF/native.jsonl"
(cd "$ROOT" && cargo run -q --release -p adept-wasm --example native_ids -- "$ROOT/$ADEPT_WEB_BUNDLE") \
  < "$REF/tricky.jsonl" > "$REF/native_ids.jsonl"

echo "==> headless Chromium ($CHROMIUM)"
node "$WEB/test/browser.test.mjs"
