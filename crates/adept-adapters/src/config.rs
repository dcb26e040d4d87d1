//! `adapter_config.json`: what an adapter is, in PEFT's layout (plus the fields PEFT lacks).
//!
//! In code the adapter's settings are [`AdapterConfig`]; on disk they go through
//! [`AdapterConfigFile`], which adds what PEFT reads (`peft_type`, `task_type`,
//! `num_virtual_tokens`, `num_transformer_submodules`, `inference_mode`) and reads the files
//! adept wrote before each method had its own `peft_type` (all said `PROMPT_TUNING`).

use crate::registry;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl MethodKind {
    /// The method itself (its tensors, init, offsets, fold rule, graph data): the registry's
    /// entry for this kind.
    pub fn imp(self) -> &'static dyn crate::AdapterMethod {
        registry::method(self)
    }
}

impl std::str::FromStr for MethodKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let s = s.to_ascii_lowercase();
        registry::METHODS
            .iter()
            .find(|m| m.name() == s || m.aliases().contains(&s.as_str()))
            .map(|m| m.kind())
            .ok_or_else(|| {
                let names: Vec<_> = registry::METHODS.iter().map(|m| m.name()).collect();
                anyhow::anyhow!("unknown adapter method {s:?} ({})", names.join(", "))
            })
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.imp().name())
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

impl PromptInit {
    /// A text init whose token ids are not known yet (the trainer tokenizes `text`).
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text {
            text: text.into(),
            token_ids: Vec::new(),
        }
    }
}

/// An adapter's settings. Serialised as `adapter_config.json` (see [`AdapterConfigFile`] and the
/// crate README for what each field on disk means).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "AdapterConfigFile", try_from = "AdapterConfigFile")]
pub struct AdapterConfig {
    pub method: MethodKind,
    /// Soft-prompt rows `l` (on disk: PEFT's `num_virtual_tokens`); 0 for head-only.
    pub prompt_len: usize,
    /// Embedding width `d` (PEFT: `token_dim`).
    pub token_dim: usize,
    /// Offset rank `r` (ADePT hidden width, DePT low rank); 0 for PT and head-only.
    pub rank: usize,
    /// The longest input the adapter sees (the tokenizer's max length); DePT: rows of `A`.
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
        let prompt_len = if method.imp().has_prompt() {
            prompt_len
        } else {
            0
        };
        Self {
            method,
            prompt_len,
            token_dim,
            rank,
            max_length: 128,
            alpha: 8.0,
            dropout: 0.1,
            prompt_init: PromptInit::SampleVocab { seed: 0 },
            budget: crate::default_budget(token_dim),
        }
    }

    /// The method's `peft_type` (`PROMPT_TUNING`, `ADEPT`, `DEPT`, `HEAD_ONLY`).
    pub fn peft_type(&self) -> &'static str {
        self.method.imp().peft_type()
    }

    pub fn param_count(&self) -> usize {
        crate::budget::param_count(
            self.method,
            self.token_dim,
            self.prompt_len,
            self.rank,
            self.max_length,
        )
    }
}

/// PEFT's `task_type` written for every adapter: the base model is a plain encoder
/// (`AutoModel`), the classification head is adept's own (`head.safetensors`).
pub const TASK_TYPE: &str = "FEATURE_EXTRACTION";

/// `peft_type` of every adapter adept wrote before each method had its own (read: `method`
/// decides).
pub const LEGACY_PEFT_TYPE: &str = "PROMPT_TUNING";

/// `adapter_config.json` as written and read. The first six fields are PEFT's
/// (`PromptLearningConfig`); the rest are adept's, which PEFT ignores with a warning.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterConfigFile {
    pub peft_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    pub num_virtual_tokens: usize,
    pub token_dim: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_transformer_submodules: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_mode: Option<bool>,
    /// Read first: it decides the method (files older than the per-method `peft_type` say
    /// `PROMPT_TUNING` for every method).
    pub method: MethodKind,
    pub rank: usize,
    pub max_length: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub prompt_init: PromptInit,
    pub budget: usize,
}

impl From<AdapterConfig> for AdapterConfigFile {
    fn from(c: AdapterConfig) -> Self {
        Self {
            peft_type: c.peft_type().to_owned(),
            task_type: Some(TASK_TYPE.to_owned()),
            num_virtual_tokens: c.prompt_len,
            token_dim: c.token_dim,
            num_transformer_submodules: Some(1),
            inference_mode: Some(true),
            method: c.method,
            rank: c.rank,
            max_length: c.max_length,
            alpha: c.alpha,
            dropout: c.dropout,
            prompt_init: c.prompt_init,
            budget: c.budget,
        }
    }
}

impl TryFrom<AdapterConfigFile> for AdapterConfig {
    type Error = String;
    fn try_from(f: AdapterConfigFile) -> Result<Self, String> {
        let own = f.method.imp().peft_type();
        if f.peft_type != own && f.peft_type != LEGACY_PEFT_TYPE {
            return Err(format!(
                "peft_type {:?} does not match method {:?} (expected {own:?})",
                f.peft_type, f.method
            ));
        }
        if !f.method.imp().has_prompt() && f.num_virtual_tokens != 0 {
            return Err(format!(
                "a {} adapter has no prompt, but num_virtual_tokens is {}",
                f.method, f.num_virtual_tokens
            ));
        }
        Ok(Self {
            method: f.method,
            prompt_len: f.num_virtual_tokens,
            token_dim: f.token_dim,
            rank: f.rank,
            max_length: f.max_length,
            alpha: f.alpha,
            dropout: f.dropout,
            prompt_init: f.prompt_init,
            budget: f.budget,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `adapter_config.json` of an ADePT run written before each method had its own
    /// `peft_type` (verbatim from a run of that version).
    const LEGACY_ADEPT: &str = r#"{
  "peft_type": "PROMPT_TUNING",
  "method": "adept",
  "num_virtual_tokens": 60,
  "token_dim": 384,
  "rank": 19,
  "max_length": 128,
  "alpha": 8.0,
  "dropout": 0.1,
  "prompt_init": {
    "kind": "sample_vocab",
    "seed": 42
  },
  "budget": 38400
}"#;

    #[test]
    fn legacy_configs_load_by_method() {
        let c: AdapterConfig = serde_json::from_str(LEGACY_ADEPT).unwrap();
        assert_eq!(c.method, MethodKind::Adept);
        assert_eq!((c.prompt_len, c.token_dim, c.rank), (60, 384, 19));
        assert_eq!(c.prompt_init, PromptInit::SampleVocab { seed: 42 });
        for (method, l) in [("dept", 60), ("pt", 100), ("head-only", 0)] {
            let text = LEGACY_ADEPT
                .replace("\"adept\"", &format!("{method:?}"))
                .replace("60", &l.to_string());
            let c: AdapterConfig = serde_json::from_str(&text).unwrap();
            assert_eq!(c.method.to_string(), method);
            assert_eq!(c.prompt_len, l);
        }
    }

    #[test]
    fn each_method_writes_its_own_peft_type_and_reads_it_back() {
        for (kind, peft) in [
            (MethodKind::Adept, "ADEPT"),
            (MethodKind::Dept, "DEPT"),
            (MethodKind::Pt, "PROMPT_TUNING"),
            (MethodKind::HeadOnly, "HEAD_ONLY"),
        ] {
            let c = AdapterConfig::new(kind, 8, 3, 2);
            let v = serde_json::to_value(&c).unwrap();
            assert_eq!(v["peft_type"], peft);
            assert_eq!(v["task_type"], "FEATURE_EXTRACTION");
            assert_eq!(v["num_transformer_submodules"], 1);
            assert_eq!(v["num_virtual_tokens"], c.prompt_len);
            assert!(v.get("prompt_len").is_none(), "{v}");
            let back: AdapterConfig = serde_json::from_value(v).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn a_peft_type_that_contradicts_the_method_is_refused() {
        let text = LEGACY_ADEPT.replace("PROMPT_TUNING", "DEPT");
        let err = serde_json::from_str::<AdapterConfig>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("DEPT") && err.contains("ADEPT"), "{err}");
        let text = LEGACY_ADEPT.replace("PROMPT_TUNING", "LORA");
        assert!(serde_json::from_str::<AdapterConfig>(&text).is_err());
    }

    #[test]
    fn names_agree_with_serde_and_parse_back() {
        for m in registry::METHODS {
            let kind = m.kind();
            assert_eq!(registry::method(kind).kind(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(m.name().into())
            );
            assert_eq!(m.name().parse::<MethodKind>().unwrap(), kind);
            for a in m.aliases() {
                assert_eq!(a.parse::<MethodKind>().unwrap(), kind);
            }
        }
        assert_eq!("PT".parse::<MethodKind>().unwrap(), MethodKind::Pt);
        assert_eq!(
            "prompt-tuning".parse::<MethodKind>().unwrap(),
            MethodKind::Pt
        );
        assert_eq!("none".parse::<MethodKind>().unwrap(), MethodKind::HeadOnly);
        let err = "lora".parse::<MethodKind>().unwrap_err().to_string();
        assert!(err.contains("adept, dept, pt, head-only"), "{err}");
    }
}
