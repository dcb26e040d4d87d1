//! An exported ADePT bundle in the browser: the tokenizer and the post-processing of the
//! native runtime (`adept infer`), compiled to `wasm32-unknown-unknown` with wasm-bindgen.
//! `model.onnx` itself runs in onnxruntime-web (see `web/`).
//!
//! The rules mirror the native ones exactly:
//! - tokenization: `adept_train::TextEncoder` — `tokenizer.json` with its truncation replaced by
//!   `LongestFirst` at the manifest's `max_length` (right side, no stride) and its padding
//!   removed; an input that overflows is cut (`over_length: truncate`) or refused (`error`);
//!   every id must be inside the model's vocabulary table;
//! - graph inputs: `adept_runtime::PaddedBatch` — `input_ids`, `attention_mask`,
//!   `token_type_ids`, int64 `[batch, seq]` (one unpadded row here);
//! - outputs: `adept_bundle::{argmax, softmax}` (the runtime's own functions) → label and
//!   probabilities (classification), first logit → score (regression).
//!
//! The logic lives in [`Engine`] (plain Rust, also built natively so that
//! `cargo test -p adept-wasm` checks it against `adept-train`); [`wasm::Classifier`] is the
//! JavaScript face.

use adept_bundle::{argmax, softmax, BundleManifest};
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::str::FromStr;
use tokenizers::{
    PaddingParams, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

#[cfg(target_arch = "wasm32")]
pub mod wasm;

/// One encoded input: ids, token types and whether it was cut to `max_length`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub truncated: bool,
}

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
    tokenizer: Tokenizer,
    pub pad_id: u32,
    over_length_error: bool,
}

impl Engine {
    /// Validates `adept.json` and loads `tokenizer.json` (both as text), with the same checks as
    /// the native runtime's `Bundle::open_with`.
    pub fn new(manifest_json: &str, tokenizer_json: &str) -> Result<Self> {
        let manifest: BundleManifest = serde_json::from_str(manifest_json)
            .context("adept.json is not a valid adept bundle manifest")?;
        manifest
            .validate()
            .context("invalid bundle manifest adept.json")?;
        let mut tokenizer = Tokenizer::from_str(tokenizer_json)
            .map_err(|e| anyhow::anyhow!("cannot load tokenizer.json: {e}"))?;

        // = adept_train::tokenize::TextEncoder::new
        let max_len = manifest.max_length;
        if max_len < 4 {
            bail!("max length {max_len} is too short to hold an input");
        }
        let pad_id = tokenizer
            .get_padding()
            .map(|p: &PaddingParams| p.pad_id)
            .or_else(|| tokenizer.token_to_id("[PAD]"))
            .or_else(|| tokenizer.token_to_id("<pad>"))
            .unwrap_or(0);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow::anyhow!("cannot configure truncation: {e}"))?;
        tokenizer.with_padding(None);

        // = adept_runtime::bundle::Bundle::open_with
        let vocab = tokenizer.get_vocab_size(true);
        ensure!(
            vocab <= manifest.vocab_size,
            "tokenizer.json has {vocab} tokens but the model's table only {} rows: tokenizer and model do not match",
            manifest.vocab_size
        );
        ensure!(
            pad_id == manifest.pad_token_id,
            "tokenizer.json pads with id {pad_id}, but adept.json records {}",
            manifest.pad_token_id
        );
        let over_length_error = manifest.over_length == "error";
        Ok(Self {
            manifest,
            tokenizer,
            pad_id,
            over_length_error,
        })
    }

    /// Tokenizes `(text_a, text_b)` (= `TextEncoder::encode` + the runtime's table check).
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Encoded> {
        let enc = match b {
            Some(b) => self.tokenizer.encode((a, b), true),
            None => self.tokenizer.encode(a, true),
        }
        .map_err(|e| anyhow::anyhow!("cannot tokenize {:?}: {e}", preview(a)))?;
        let truncated = !enc.get_overflowing().is_empty();
        if truncated && self.over_length_error {
            bail!(
                "input {:?} is longer than the maximum of {} tokens (the bundle refuses longer inputs)",
                preview(a),
                self.manifest.max_length
            );
        }
        let ids = enc.get_ids().to_vec();
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.manifest.vocab_size)
        {
            bail!(
                "token id {bad} is outside the model's {}-row vocabulary table (input {:?})",
                self.manifest.vocab_size,
                preview(a)
            );
        }
        Ok(Encoded {
            ids,
            type_ids: enc.get_type_ids().to_vec(),
            truncated,
        })
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

    /// Checks a bundle file's sha256 (lowercase hex) and size against the manifest.
    pub fn check_file(&self, name: &str, sha256_hex: &str, bytes: u64) -> Result<()> {
        let want = self
            .manifest
            .files
            .get(name)
            .with_context(|| format!("adept.json lists no file {name}"))?;
        ensure!(
            want.sha256.eq_ignore_ascii_case(sha256_hex),
            "checksum mismatch for {name}: sha256 {}…, but adept.json records {}… (the file changed \
             after export, or the bundle is corrupt; re-export it)",
            &sha256_hex[..12.min(sha256_hex.len())],
            &want.sha256[..12.min(want.sha256.len())]
        );
        ensure!(
            want.bytes == bytes,
            "{name} is {bytes} bytes, adept.json records {}",
            want.bytes
        );
        Ok(())
    }
}

/// sha256 of `data`, lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        p.push('…');
    }
    p
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
