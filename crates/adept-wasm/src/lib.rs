//! An exported ADePT bundle in the browser: the tokenizer and the post-processing of the
//! native runtime (`adept infer`), compiled to `wasm32-unknown-unknown` with wasm-bindgen.
//! `model.onnx` itself runs in onnxruntime-web (see `web/`).
//!
//! The rules are not mirrored here but shared: they are the candle-free contract crate's
//! (`adept-bundle`), which training and the native runtime run too:
//! - tokenization: [`adept_bundle::TextEncoder::for_bundle`] — `tokenizer.json` with its
//!   truncation replaced by `LongestFirst` at the manifest's `max_length` (right side, no
//!   stride) and its padding removed; an input that overflows is cut (`over_length: truncate`)
//!   or refused (`error`); every id must be inside the model's vocabulary table;
//! - graph inputs: [`adept_bundle::PaddedBatch`] — `input_ids`, `attention_mask`,
//!   `token_type_ids`, int64 `[batch, seq]` (one row here);
//! - the manifest and the file checks: [`adept_bundle::BundleManifest`];
//! - outputs: `adept_bundle::{argmax, softmax}` → label and probabilities (classification),
//!   first logit → score (regression).
//!
//! In the browser `tokenizers` is built with its pure-Rust regex backend (`unstable_wasm`),
//! natively with onig (see adept-bundle's Cargo.toml); the browser test compares the two on
//! tricky inputs. The glue lives in [`Engine`] (plain Rust, also built natively so that `cargo
//! test -p adept-wasm` runs it); [`wasm::Classifier`] is the JavaScript face.

use adept_bundle::tokenize::tokenizer_from_json;
use adept_bundle::{
    argmax, softmax, BundleManifest, FileEntry, TextEncoder, MANIFEST_FILE, TOKENIZER_FILE,
};
use anyhow::{ensure, Result};
use serde::Serialize;

pub use adept_bundle::{sha256_hex, Encoded, PaddedBatch};

pub mod decoder;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

/// One prediction, as `adept infer` writes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub label: Option<String>,
    pub label_id: Option<usize>,
    /// `(name, p)` in logit order (classification; empty for regression).
    pub probabilities: Vec<(String, f32)>,
    pub logits: Vec<f32>,
    pub score: Option<f32>,
}

/// A bundle's manifest and tokenizer, configured with the native runtime's rules.
pub struct Engine {
    pub manifest: BundleManifest,
    encoder: TextEncoder,
    pub pad_id: u32,
}

impl Engine {
    /// Validates `adept.json` and loads `tokenizer.json` (both as text), with the same checks as
    /// the native runtime's `Bundle::open_with`.
    pub fn new(manifest_json: &str, tokenizer_json: &str) -> Result<Self> {
        let manifest = BundleManifest::from_json(manifest_json, MANIFEST_FILE)?;
        let tokenizer = tokenizer_from_json(tokenizer_json, TOKENIZER_FILE)?;
        let encoder = TextEncoder::for_bundle(tokenizer, &manifest, TOKENIZER_FILE, MANIFEST_FILE)?;
        Ok(Self {
            pad_id: encoder.pad_id,
            manifest,
            encoder,
        })
    }

    /// Tokenizes `(text_a, text_b)` (= the runtime's `Bundle::encode`).
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Encoded> {
        self.encoder.encode_within(a, b, self.manifest.vocab_size)
    }

    /// The graph's inputs for one encoded input (a batch of one: no padding).
    pub fn inputs(&self, e: &Encoded) -> PaddedBatch<i64> {
        PaddedBatch::collate(&[e], self.pad_id)
    }

    /// Builds `(text_a, text_b)` from named fields with the manifest's template.
    pub fn segments(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(String, Option<String>)> {
        self.manifest.input_template.segments(get)
    }

    /// One row of logits → prediction (= `Bundle::prediction`).
    pub fn postprocess(&self, logits: &[f32]) -> Result<Prediction> {
        let n = self.manifest.num_outputs;
        ensure!(
            logits.len() == n,
            "the model returned {} logits, the manifest says {n}",
            logits.len()
        );
        if self.manifest.regression {
            return Ok(Prediction {
                label: None,
                label_id: None,
                probabilities: Vec::new(),
                logits: logits.to_vec(),
                score: logits.first().copied(),
            });
        }
        let id = argmax(logits);
        let probs = softmax(logits);
        Ok(Prediction {
            label: self.manifest.label(id).map(str::to_owned),
            label_id: Some(id),
            probabilities: self
                .manifest
                .label_names
                .iter()
                .cloned()
                .zip(probs)
                .collect(),
            logits: logits.to_vec(),
            score: None,
        })
    }

    /// Checks a bundle file's sha256 (hex) and size against the manifest.
    pub fn check_file(&self, name: &str, sha256_hex: &str, bytes: u64) -> Result<()> {
        let got = FileEntry {
            sha256: sha256_hex.to_string(),
            bytes,
        };
        self.manifest.check_file(name, &got, name, MANIFEST_FILE)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
