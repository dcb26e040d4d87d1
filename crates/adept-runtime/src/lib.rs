//! Serving an exported bundle with ONNX Runtime.
//!
//! One job: take a bundle directory written by `adept export` (model.onnx, tokenizer.json,
//! adept.json) and turn texts into predictions with ONNX Runtime, through the `ort` crate with
//! the library loaded at run time (`load-dynamic`; nothing is downloaded at build time).
//!
//! * [`ortlib`]: find the shared library (`adept_cache::find_onnxruntime`: `--ort-lib`,
//!   `$ORT_DYLIB_PATH`, the cache), check its version against what `ort` needs, load it once.
//! * [`Bundle::open_with`]: validate the manifest and the checksums, load the tokenizer with
//!   the training rules (`adept_bundle::TextEncoder`, the contract crate's, which training and
//!   the browser run too: same special tokens, truncation, padding id), create the session
//!   (graph optimisation "all", threads, CPU or CUDA with fallback) and check the model's
//!   inputs, outputs and metadata against the manifest.
//! * [`Bundle::predict`]: dynamic-padding batches ([`PaddedBatch`], the contract's layout) →
//!   [`Prediction`]s (label, probabilities, logits; score for regression).
//! * [`cli`]: `InferArgs`/`run_infer` (`adept infer`), `BundleEvalArgs`/`run_bundle_eval`
//!   (`adept eval --bundle`).
//! * [`generate`]: decoder bundles: the ort `DecoderStep` (key/value cache kept as ort values,
//!   started from the prompt cache or the soft prompt's virtual ids), [`Generator`] and
//!   `GenerateArgs`/`run_generate` (`adept generate`).
//! * [`bench`]: `bench_session`, latency/throughput of a bundle on fixed batches.

pub mod bench;
pub mod bundle;
pub mod cli;
pub mod generate;
pub mod ortlib;
pub mod seq2seq;
pub mod session;

pub use bench::{
    bench_batches, bench_bundle, bench_interleaved, bench_session, bench_session_with,
    paired_ratio, paired_time_ratio, BenchStats, PairedRatio,
};
pub use bundle::{Bundle, PaddedBatch, PaddingStats, Prediction, RuntimeOptions};
pub use cli::{
    run_bundle_eval, run_infer, BundleEvalArgs, BundleEvalReport, InferArgs, InferReport,
    RuntimeArgs, SessionArgs, TextPair,
};
pub use generate::{
    run_generate, GenerateArgs, GenerationStats, Generator, OrtDecoderStep, PromptCache,
};
pub use session::{build_session, BuiltSession, DeviceKind, SessionConfig};
