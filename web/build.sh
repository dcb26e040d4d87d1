#!/usr/bin/env bash
# Builds the page's assets into web/pkg/ (git-ignored):
#   pkg/adept_wasm.js + pkg/adept_wasm_bg.wasm   the bundle tokenizer/post-processing (crates/adept-wasm)
#   pkg/ort/                                     onnxruntime-web's wasm backend (from npm)
# Installs what it needs when missing: the rustup target wasm32-unknown-unknown,
# wasm-bindgen-cli at exactly the crate's wasm-bindgen version (into ~/.cargo/bin, or
# $CARGO_HOME/bin), and the npm packages of web/package-lock.json (into web/node_modules).
set -euo pipefail
cd "$(dirname "$0")"
WEB=$(pwd)
ROOT=$(cd .. && pwd)
WB_VERSION=0.2.130
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
export PATH="$CARGO_BIN:$PATH"

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    echo "==> rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
elif ! rustc --print target-list | grep -qx wasm32-unknown-unknown; then
  echo "error: rustc has no wasm32-unknown-unknown target and rustup is not installed" >&2
  exit 1
fi

got=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$got" != "$WB_VERSION" ]; then
  echo "==> cargo install wasm-bindgen-cli $WB_VERSION (found: ${got:-none})"
  # --locked first (the versions its authors tested); a registry that no longer serves one of
  # those exact versions (e.g. webpki-roots 1.0.11 here) makes that fail, so then resolve anew.
  if ! cargo install wasm-bindgen-cli --version "$WB_VERSION" --locked --force; then
    echo "==> --locked failed; installing wasm-bindgen-cli $WB_VERSION with fresh dependency resolution"
    cargo install wasm-bindgen-cli --version "$WB_VERSION" --force
  fi
  got=$(wasm-bindgen --version | awk '{print $2}')
  if [ "$got" != "$WB_VERSION" ]; then
    echo "error: wasm-bindgen on PATH is $got ($(command -v wasm-bindgen)), the crate needs $WB_VERSION" >&2
    exit 1
  fi
fi

echo "==> cargo build -p adept-wasm (wasm32-unknown-unknown, release)"
(cd "$ROOT" && cargo build -p adept-wasm --lib --target wasm32-unknown-unknown --release)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

echo "==> wasm-bindgen --target web"
rm -rf "$WEB/pkg"
mkdir -p "$WEB/pkg/ort"
wasm-bindgen --target web --no-typescript --out-dir "$WEB/pkg" \
  "$TARGET_DIR/wasm32-unknown-unknown/release/adept_wasm.wasm"

echo "==> onnxruntime-web (npm)"
if [ ! -d "$WEB/node_modules/onnxruntime-web" ] || [ ! -d "$WEB/node_modules/playwright-core" ]; then
  npm ci --no-audit --no-fund
fi
for f in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
  cp "$WEB/node_modules/onnxruntime-web/dist/$f" "$WEB/pkg/ort/"
done
cp "$WEB/node_modules/onnxruntime-web/LICENSE" "$WEB/pkg/ort/LICENSE" 2>/dev/null || true

du -sh "$WEB/pkg"/adept_wasm_bg.wasm "$WEB/pkg/ort"/*.wasm
echo "built: serve the repository root (node web/serve.mjs) and open http://127.0.0.1:8080/web/"
