//! `adapter_config.json`: what an adapter is, in the PEFT spirit (plus the fields PEFT lacks).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// Soft prompt + token-wise MLP offsets (foldable into the vocabulary table).
    Adept,
    /// Soft prompt + position-based low-rank offsets.
    Dept,
    /// Vanilla prompt tuning.
    Pt,
    /// No adapter: only the classification head trains (a baseline).
    #[serde(rename = "head-only")]
    HeadOnly,
}

impl std::str::FromStr for MethodKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "adept" => Self::Adept,
            "dept" => Self::Dept,
            "pt" | "prompt-tuning" => Self::Pt,
            "head-only" | "head" | "none" => Self::HeadOnly,
            other => anyhow::bail!("unknown adapter method {other:?} (adept, dept, pt, head-only)"),
        })
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Adept => "adept",
            Self::Dept => "dept",
            Self::Pt => "pt",
            Self::HeadOnly => "head-only",
        })
    }
}

/// How the soft prompt starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromptInit {
    /// The word embeddings of these token ids (a tokenized text), repeated to fill `l` rows
    /// (PEFT's `TEXT` init). `text` is kept for the record.
    Text { text: String, token_ids: Vec<u32> },
    /// Rows of the vocabulary table sampled uniformly with this seed (`SAMPLE_VOCAB`).
    SampleVocab { seed: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// PEFT's name for the family; ours is always prompt tuning plus offsets.
    pub peft_type: String,
    pub method: MethodKind,
    /// Soft-prompt rows `l` (PEFT: `num_virtual_tokens`).
    pub num_virtual_tokens: usize,
    /// Embedding width `d` (PEFT: `token_dim`).
    pub token_dim: usize,
    /// Offset rank `r` (ADePT hidden width, DePT low rank); 0 for PT.
    pub rank: usize,
    /// DePT: rows of `A` (the longest input the offsets cover).
    pub max_length: usize,
    /// DePT scaling numerator: offsets are `(α/√r)·A·B`.
    pub alpha: f64,
    /// ADePT: dropout on the MLP's hidden pre-activation during training.
    pub dropout: f64,
    pub prompt_init: PromptInit,
    /// Parameter budget the rank was solved for.
    pub budget: usize,
}

impl AdapterConfig {
    pub fn new(method: MethodKind, token_dim: usize, prompt_len: usize, rank: usize) -> Self {
        let num_virtual_tokens = if method == MethodKind::HeadOnly {
            0
        } else {
            prompt_len
        };
        Self {
            peft_type: "PROMPT_TUNING".into(),
            method,
            num_virtual_tokens,
            token_dim,
            rank,
            max_length: 128,
            alpha: 8.0,
            dropout: 0.1,
            prompt_init: PromptInit::SampleVocab { seed: 0 },
            budget: crate::default_budget(token_dim),
        }
    }

    pub fn param_count(&self) -> usize {
        crate::budget::param_count(
            self.method,
            self.token_dim,
            self.num_virtual_tokens,
            self.rank,
            self.max_length,
        )
    }
}
