#!/usr/bin/env bash
# Browser test of the demo page (see web/README.md). Exits non-zero on any mismatch. When Chromium
# is not installed it is installed with apt-get; if that fails the test fails under CI=true or
# ADEPT_REQUIRE_MODEL=1, and otherwise exits 0 with a SKIP line (also appended to $ADEPT_SKIP_LOG).
#   ADEPT_WEB_BUNDLE   bundle dir(s) relative to the repo root, space-separated (default:
#                      exports/quickstart-sst2-adept, else exports/qs-test), e.g. an f32 and an int8
#                      export of one run; each encoder bundle is checked against `adept infer` on that
#                      bundle (test/browser.test.mjs), then test/bench.mjs prints the figures table
#                      (all bundles, 1 and N threads). One decoder bundle runs test/decoder.test.mjs
#                      against `adept generate --json` (ADEPT_WEB_BENCH_PROMPT/_TOKENS: tokens/s run)
#   ADEPT_BIN          native adept binary (default: target/release/adept)
#   ADEPT_WEB_TEST_OUT output folder (default: web/test-output): screenshots, results.json; with
#                      several bundles one subfolder per bundle, and results.json with the figures
#   ADEPT_WEB_TOL      probability tolerance, float bundles (default 1e-4)
#   ADEPT_WEB_TOL_INT8 probability tolerance, int8 bundles (default 2e-2; see browser.test.mjs)
#   ADEPT_WEB_BENCH=0  skip the figures; ADEPT_WEB_BENCH_N sentences of SST-2 dev (default 100,
#                      0 = all 872), ADEPT_WEB_BENCH_THREADS (default "1 N"), see test/bench.mjs
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
read -r -a BUNDLES <<< "${ADEPT_WEB_BUNDLE:-}"
if [ "${#BUNDLES[@]}" = 0 ]; then
  echo "error: no bundle (set ADEPT_WEB_BUNDLE=<dir under the repo root>, or run: adept quickstart)" >&2
  exit 1
fi
for b in "${BUNDLES[@]}"; do
  if [ ! -f "$ROOT/$b/adept.json" ]; then
    echo "error: $ROOT/$b/adept.json not found (ADEPT_WEB_BUNDLE lists bundle folders relative to the repository root)" >&2
    exit 1
  fi
done
ADEPT_BIN=${ADEPT_BIN:-$ROOT/target/release/adept}
if [ ! -x "$ADEPT_BIN" ]; then
  echo "error: native adept binary $ADEPT_BIN not found (cargo build --release -p adept-cli, or set ADEPT_BIN)" >&2
  exit 1
fi

[ -d "$WEB/node_modules/playwright-core" ] || (cd "$WEB" && npm ci --no-audit --no-fund)
[ "${SKIP_BUILD:-0}" = 1 ] && [ -f "$WEB/pkg/adept_wasm.js" ] || "$WEB/build.sh"

OUT=${ADEPT_WEB_TEST_OUT:-$WEB/test-output}
mkdir -p "$OUT"
is_decoder() {
  node -e 'process.exit(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).decoder ? 0 : 1)' "$ROOT/$1/adept.json"
}
# A decoder bundle (adept.json with a `decoder` section): completions vs `adept generate --json`.
if is_decoder "${BUNDLES[0]}"; then
  if [ "${#BUNDLES[@]}" != 1 ]; then
    echo "error: a decoder bundle is tested on its own (ADEPT_WEB_BUNDLE=${BUNDLES[0]})" >&2
    exit 1
  fi
  export ADEPT_WEB_BUNDLE ADEPT_WEB_TEST_OUT=$OUT ADEPT_WEB_REF=$OUT/native
  mkdir -p "$ADEPT_WEB_REF"
  echo "==> native references (adept generate --json, $ADEPT_WEB_BUNDLE)"
  node "$WEB/test/decoder-ref.mjs" "$ROOT/$ADEPT_WEB_BUNDLE" "$ADEPT_WEB_REF" "$ADEPT_BIN"
  echo "==> headless Chromium ($CHROMIUM), decoder bundle"
  exec node "$WEB/test/decoder.test.mjs"
fi

rc=0
for b in "${BUNDLES[@]}"; do
  if is_decoder "$b"; then
    echo "error: $b is a decoder bundle; test it on its own" >&2
    exit 1
  fi
  if [ "${#BUNDLES[@]}" = 1 ]; then dir=$OUT; else dir=$OUT/$(basename "$b"); fi
  REF="$dir/native"
  mkdir -p "$REF"
  echo "==> native references ($b, $(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).dtype' "$ROOT/$b/adept.json"))"
  node "$WEB/test/native-ref.mjs" "$ROOT/$b" "$REF"
  # One sentence at a time, as the page runs them (a per-tensor int8 bundle's logits depend on
  # the batch; the others' do not).
  "$ADEPT_BIN" infer --bundle "$ROOT/$b" --input "$REF/sentences.jsonl" --output "$REF/native.jsonl" \
    --batch-size 1
  (cd "$ROOT" && cargo run -q --release -p adept-wasm --example native_ids -- "$ROOT/$b") \
    < "$REF/tricky.jsonl" > "$REF/native_ids.jsonl"
  echo "==> headless Chromium ($CHROMIUM), $b"
  ADEPT_WEB_BUNDLE=$b ADEPT_WEB_REF=$REF ADEPT_WEB_TEST_OUT=$dir node "$WEB/test/browser.test.mjs" || rc=1
done

if [ "${ADEPT_WEB_BENCH:-1}" != 0 ]; then
  echo "==> figures (test/bench.mjs; machine: $(nproc) CPUs,$(uptime | sed 's/.*load average/ load average/'))"
  ADEPT_WEB_BUNDLES="${BUNDLES[*]}" ADEPT_WEB_TEST_OUT=$OUT node "$WEB/test/bench.mjs" || rc=1
fi
exit $rc
