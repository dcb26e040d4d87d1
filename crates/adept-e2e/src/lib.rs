//! No library code: the end-to-end tests live in `tests/` (export → ONNX Runtime parity,
//! folding, bundle validation, the `adept-export`/`adept infer` commands, RoBERTa bundles,
//! Python PEFT and `onnx.checker` interop). A crate of their own keeps `adept-export` and
//! `adept-runtime` from depending on each other, even in tests.
