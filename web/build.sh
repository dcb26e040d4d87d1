#!/usr/bin/env bash
# Builds the page's assets into web/pkg/ (git-ignored):
#   pkg/adept_wasm.js + pkg/adept_wasm_bg.wasm   the bundle tokenizer/post-processing (crates/adept-wasm)
#   pkg/ort/                                     onnxruntime-web's wasm backend (from npm)
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli matching the crate's
# wasm-bindgen (cargo install wasm-bindgen-cli --version 0.2.130), node + npm.
set -euo pipefail
cd "$(dirname "$0")"
WEB=$(pwd)
ROOT=$(cd .. && pwd)
WB_VERSION=0.2.130

if ! command -v wasm-bindgen >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/wasm-bindgen" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v wasm-bindgen >/dev/null 2>&1; then
  echo "error: wasm-bindgen not found; install it with: cargo install wasm-bindgen-cli --version $WB_VERSION" >&2
  exit 1
fi
got=$(wasm-bindgen --version | awk '{print $2}')
if [ "$got" != "$WB_VERSION" ]; then
  echo "error: wasm-bindgen $got installed, the crate uses $WB_VERSION: cargo install wasm-bindgen-cli --version $WB_VERSION --force" >&2
  exit 1
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
if [ ! -d "$WEB/node_modules/onnxruntime-web" ]; then
  npm ci --no-audit --no-fund
fi
for f in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
  cp "$WEB/node_modules/onnxruntime-web/dist/$f" "$WEB/pkg/ort/"
done
cp "$WEB/node_modules/onnxruntime-web/LICENSE" "$WEB/pkg/ort/LICENSE" 2>/dev/null || true

du -sh "$WEB/pkg"/adept_wasm_bg.wasm "$WEB/pkg/ort"/*.wasm
echo "built: serve the repository root (node web/serve.mjs) and open http://127.0.0.1:8080/web/"
