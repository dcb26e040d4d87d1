//! Text → token ids with the model's own `tokenizer.json` (special tokens, pair layout, token
//! types), truncated to `max_len` input tokens; the soft prompt is counted separately.
//!
//! The rules, the same in training, `adept infer` and the browser: the tokenizer's own
//! truncation is replaced by `LongestFirst` at `max_len` (right side, no stride) and its padding
//! is removed (batches are padded by [`PaddedBatch`](crate::PaddedBatch)); the padding id is the
//! tokenizer's padding id, else `[PAD]`, else `<pad>`, else 0; an input that overflows is cut
//! ([`OverLength::Truncate`], counted by `truncated`) or refused ([`OverLength::Error`]). A
//! bundle's encoder ([`TextEncoder::for_bundle`]) also checks the tokenizer against the
//! manifest, and [`TextEncoder::encode_within`] every id against the model's table.

use crate::manifest::BundleManifest;
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use std::path::Path;
use std::str::FromStr;
use tokenizers::{
    PaddingParams, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

string_enum! {
    /// What to do with inputs longer than `max_len` tokens (`over_length` in `adept.json`, the
    /// run's `train_config.json` and `--over-length`).
    pub enum OverLength ("over_length") {
        /// Cut to `max_len` (longest field first) and count it in a warning.
        Truncate = "truncate",
        /// Refuse the example with an error naming it.
        Error = "error",
    }
}

/// One encoded example: ids, token types, and whether it was truncated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub truncated: bool,
}

/// What the error for an over-long input suggests, in training (where the flag exists).
const TRAINING_HINT: &str = "use --over-length truncate to cut it";
/// ... and when serving a bundle (the rule is the bundle's).
const BUNDLE_HINT: &str = "the bundle refuses longer inputs";

/// A tokenizer configured with the rules above.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pub max_len: usize,
    pub over_length: OverLength,
    pub pad_id: u32,
    over_length_hint: &'static str,
}

/// Loads a `tokenizer.json` file.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        bail!("tokenizer not found: {} does not exist", path.display());
    }
    Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("cannot load tokenizer {}: {e}", path.display()))
}

/// Parses the text of a `tokenizer.json` (`name` names it in the error).
pub fn tokenizer_from_json(json: &str, name: &str) -> Result<Tokenizer> {
    Tokenizer::from_str(json).map_err(|e| anyhow::anyhow!("cannot load {name}: {e}"))
}

impl TextEncoder {
    pub fn from_file(path: &Path, max_len: usize, over_length: OverLength) -> Result<Self> {
        Self::new(load_tokenizer(path)?, max_len, over_length)
    }

    pub fn new(mut tokenizer: Tokenizer, max_len: usize, over_length: OverLength) -> Result<Self> {
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
        Ok(Self {
            tokenizer,
            max_len,
            over_length,
            pad_id,
            over_length_hint: TRAINING_HINT,
        })
    }

    /// The encoder of a bundle: `tokenizer` (its `tokenizer.json`) with the manifest's
    /// `max_length` and `over_length`, checked against the manifest: its vocabulary must fit
    /// the model's table and its padding id must be the recorded one. `tokenizer_name` and
    /// `manifest_name` name the two files in errors (full paths natively, file names in the
    /// browser).
    pub fn for_bundle(
        tokenizer: Tokenizer,
        manifest: &BundleManifest,
        tokenizer_name: &str,
        manifest_name: &str,
    ) -> Result<Self> {
        let mut enc = Self::new(tokenizer, manifest.max_length, manifest.over_length)?;
        enc.over_length_hint = BUNDLE_HINT;
        ensure!(
            enc.vocab_size() <= manifest.vocab_size,
            "{tokenizer_name} has {} tokens but the model's table only {} rows: tokenizer and model do not match",
            enc.vocab_size(),
            manifest.vocab_size
        );
        ensure!(
            enc.pad_id == manifest.pad_token_id,
            "{tokenizer_name} pads with id {}, but {manifest_name} records {}",
            enc.pad_id,
            manifest.pad_token_id
        );
        Ok(enc)
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Encodes a text or a text pair with the model's special tokens.
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Encoded> {
        let enc = match b {
            Some(b) => self.tokenizer.encode((a, b), true),
            None => self.tokenizer.encode(a, true),
        }
        .map_err(|e| anyhow::anyhow!("cannot tokenize {:?}: {e}", preview(a)))?;
        let truncated = !enc.get_overflowing().is_empty();
        if truncated && self.over_length == OverLength::Error {
            bail!(
                "input {:?} is longer than the maximum of {} tokens ({})",
                preview(a),
                self.max_len,
                self.over_length_hint
            );
        }
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated,
        })
    }

    /// [`encode`](Self::encode), and every id must be a row of a `table_rows`-row vocabulary
    /// table (the graph's `vocab_size`): an id outside it is an error, not an out-of-range
    /// `Gather`.
    pub fn encode_within(&self, a: &str, b: Option<&str>, table_rows: usize) -> Result<Encoded> {
        let e = self.encode(a, b)?;
        if let Some(&bad) = e.ids.iter().find(|&&id| id as usize >= table_rows) {
            bail!(
                "token id {bad} is outside the model's {table_rows}-row vocabulary table (input {:?})",
                preview(a)
            );
        }
        Ok(e)
    }

    /// Token ids of a plain text without special tokens (for prompt initialisation).
    pub fn ids_without_special(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {:?}: {e}", preview(text)))
            .context("prompt init text")?;
        Ok(enc.get_ids().to_vec())
    }
}

/// The first 60 characters of `s` (with an ellipsis when cut), for messages.
fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        p.push('…');
    }
    p
}

#[cfg(test)]
mod tests;
