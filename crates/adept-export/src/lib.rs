//! Trained adapter → ONNX bundle.
//!
//! One job: turn a trained adapter folder (a run's `best/`) into a bundle directory that any
//! runtime can serve:
//!
//! ```text
//! exports/<run>/model.onnx      input_ids, attention_mask, token_type_ids (int64 [batch, seq]) -> logits
//! exports/<run>/tokenizer.json  copied from the model folder
//! exports/<run>/adept.json      adept_bundle::BundleManifest, with sha256 of both files
//! ```
//!
//! * [`emit`]: one graph function per candle module (adapter stage, pooling and head), in the
//!   order of `Classifier::forward`; each backbone family emits itself from its own folder in
//!   `adept_backbones` (`Encoder::emit_from_embeds`).
//! * [`bundle`]: [`export_classifier`], the manifest and the atomic directory write (a
//!   temporary directory beside the target, renamed when complete).
//! * [`cli`]: [`ExportArgs`] (clap arguments with the `cli` feature) and [`run_export`] for `adept export`.
//! * [`variants`]: the side-by-side exports the serving benchmark compares.
//!
//! # ADePT folding
//! ADePT's offsets `f(e) = ReLU(e·W_down + b1)·W_up + b2` depend only on a token's own
//! word-embedding row, and BERT adds positions and token types after them, so `E + f(E)` can
//! be precomputed for the whole vocabulary (`Adapter::fold_table`) and the graph needs one
//! `Gather` — the served model costs exactly what prompt tuning with `l` rows costs.
//! `--no-fold` keeps the MLP in the graph (MatMul/Add/Relu/MatMul/Add); both give the same
//! logits (tested to 1e-5).
//!
//! # Weights in f16
//! `--dtype f16` stores every initializer as binary16 followed by a `Cast` to f32 (ONNX Runtime
//! folds the casts at session creation), halving the file; the arithmetic stays f32, so the
//! only error is the rounding of the weights.

pub mod bundle;
pub mod cli;
pub mod decoder;
pub mod emit;
pub mod seq2seq;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod variants;

pub use bundle::{
    export_classifier, manifest_for, model_bytes, resolve_fold, ExportOptions, ExportReport,
    TaskInfo,
};
pub use cli::{run_export, ExportArgs};

/// The default-domain ONNX opset of an export unless `--opset` says otherwise: 23, the first
/// with ONNX's own `Attention`, which encoder graphs use in place of
/// `com.microsoft:MultiHeadAttention` (the faster kernel in ONNX Runtime 1.31 on CPU: MiniLM
/// int8 per row 1.09× at batch 1, f32 1.02×; see docs/serving.md). 17 is the
/// lowest accepted, for runtimes older than ONNX Runtime 1.23.
pub const DEFAULT_OPSET: i64 = 23;
pub use emit::{classifier_graph, AttentionKind, GraphOptions};
pub use variants::{bench_classifiers, export_bench_variants, BenchVariant};
