//! Text → token ids with the model's own `tokenizer.json` (special tokens, pair layout, token
//! types), truncated to `max_len` input tokens; the soft prompt is counted separately.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tokenizers::{
    PaddingParams, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// What to do with inputs longer than `max_len` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverLength {
    /// Cut to `max_len` (longest field first) and count it in a warning.
    Truncate,
    /// Refuse the example with an error naming it.
    Error,
}

/// One encoded example: ids, token types, and whether it was truncated.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub truncated: bool,
}

pub struct TextEncoder {
    tokenizer: Tokenizer,
    pub max_len: usize,
    pub over_length: OverLength,
    pub pad_id: u32,
}

impl TextEncoder {
    pub fn from_file(path: &Path, max_len: usize, over_length: OverLength) -> Result<Self> {
        if !path.exists() {
            bail!("tokenizer not found: {} does not exist", path.display());
        }
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        Self::new(tokenizer, max_len, over_length)
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
        })
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
                "input {:?} is longer than the maximum of {} tokens (use --over-length truncate to cut it)",
                preview(a),
                self.max_len
            );
        }
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
            truncated,
        })
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

fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        p.push('…');
    }
    p
}
