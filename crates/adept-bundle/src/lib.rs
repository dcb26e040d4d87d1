//! The bundle contract: what `adept export` writes and every runtime reads.
//!
//! ```text
//! <bundle>/model.onnx       input_ids, attention_mask[, token_type_ids]: int64 [batch, sequence]
//!                           -> logits: float [batch, num_outputs]
//! <bundle>/tokenizer.json   the model's Hugging Face tokenizer, copied byte for byte
//! <bundle>/adept.json       a [`BundleManifest`]
//! ```
//!
//! This crate has one job: the manifest's schema, its reader/validator and the checksums of
//! the files it lists. There is exactly one reader ([`BundleManifest::read`]); runtimes call
//! it and [`BundleManifest::verify_files`] before touching the model, so a missing file, a
//! corrupt manifest or a file that changed after export is reported with the file's path and
//! the problem, not as an obscure failure later.
//!
//! Everything a runtime needs to turn text into the graph's inputs is in the manifest: the
//! text fields and how they form the tokenizer's segment pair ([`InputTemplate`]), the
//! longest input (`max_length`, counted in tokens *without* the soft prompt, which lives in
//! the graph), what to do with longer inputs, the padding id and the size of the graph's
//! vocabulary table (token ids at or above it are an error, not a silent out-of-range
//! `Gather`).

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// `format` of every manifest this crate writes.
pub const FORMAT: &str = "adept-bundle";
/// Current `format_version`. Readers refuse newer versions.
pub const FORMAT_VERSION: u32 = 1;
/// File names inside a bundle directory.
pub const MANIFEST_FILE: &str = "adept.json";
pub const MODEL_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Names of the graph's inputs, in order: the first two always, `token_type_ids` when the
/// backbone reads token types (BERT; not RoBERTa-style encoders). The manifest's `inputs`
/// says which a bundle takes; runtimes feed exactly those.
pub const INPUT_NAMES: [&str; 3] = ["input_ids", "attention_mask", "token_type_ids"];
/// The inputs every bundle takes.
pub const REQUIRED_INPUTS: [&str; 2] = ["input_ids", "attention_mask"];

/// The graph inputs of a bundle whose backbone does (`true`) or does not read token types.
pub fn input_names(token_types: bool) -> Vec<String> {
    let n = if token_types { 3 } else { 2 };
    INPUT_NAMES[..n].iter().map(|s| s.to_string()).collect()
}
/// Name of the graph's output.
pub const OUTPUT_NAME: &str = "logits";

/// Adapter methods a bundle may carry (`frozen` is the bare model plus head, used by benches).
pub const METHODS: [&str; 5] = ["adept", "dept", "pt", "head-only", "frozen"];
/// Backbone families a bundle may carry.
pub const FAMILIES: [&str; 3] = ["bert", "t5", "llama"];

/// How ADePT's token-wise offsets reach the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FoldMode {
    /// `E + f(E)` precomputed for the whole vocabulary: one `Gather`, zero extra cost.
    Folded,
    /// The MLP `f` runs in the graph on the gathered rows.
    Unfolded,
    /// The method has no token-wise offsets (DePT, PT, head-only, frozen).
    None,
}

impl std::fmt::Display for FoldMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Folded => "folded",
            Self::Unfolded => "unfolded",
            Self::None => "none",
        })
    }
}

/// Storage type of the graph's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    /// Weights stored as IEEE binary16 and cast to f32 inside the graph (ONNX Runtime folds the
    /// casts when the session is created); activations stay f32.
    F16,
}

impl std::str::FromStr for WeightDtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" | "float" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            other => bail!("unknown dtype {other:?} (f32, f16)"),
        }
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

/// How an example's named text fields become the tokenizer's input: segment A is the first
/// field, segment B the remaining fields joined by `joiner` (absent for single-text tasks).
/// This is `adept_data::Example::{text_a, text_b}`, the rule training used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTemplate {
    pub segment_a: Vec<String>,
    pub segment_b: Vec<String>,
    pub joiner: String,
}

impl InputTemplate {
    /// The training rule for `fields` (in order).
    pub fn from_fields(fields: &[String]) -> Self {
        Self {
            segment_a: fields.iter().take(1).cloned().collect(),
            segment_b: fields.iter().skip(1).cloned().collect(),
            joiner: " ".into(),
        }
    }

    /// Builds `(text_a, text_b)` from a record's fields; a missing field is an error naming it.
    pub fn segments(
        &self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(String, Option<String>)> {
        let take = |names: &[String]| -> Result<String> {
            let parts = names
                .iter()
                .map(|n| get(n).with_context(|| format!("missing text field {n:?}")))
                .collect::<Result<Vec<_>>>()?;
            Ok(parts.join(&self.joiner))
        };
        let a = take(&self.segment_a)?;
        let b = if self.segment_b.is_empty() {
            None
        } else {
            Some(take(&self.segment_b)?)
        };
        Ok((a, b))
    }
}

/// Size and sha256 of a bundle file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub sha256: String,
    pub bytes: u64,
}

impl FileEntry {
    /// Hashes `path`.
    pub fn of(path: &Path) -> Result<Self> {
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut h = Sha256::new();
        let bytes = std::io::copy(&mut f, &mut h)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            sha256: hex::encode(h.finalize()),
            bytes,
        })
    }
}

/// Where the bundle came from (for people; runtimes do not rely on it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The model folder the adapter was trained on.
    #[serde(default)]
    pub model_dir: String,
    #[serde(default)]
    pub model_sha256: String,
    /// The trained adapter folder exported.
    #[serde(default)]
    pub adapter_dir: String,
    /// Training step of the exported checkpoint.
    #[serde(default)]
    pub step: usize,
    /// Validation metrics recorded at that step (candle, before export).
    #[serde(default)]
    pub validation_metrics: BTreeMap<String, f64>,
}

/// `adept.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub format_version: u32,
    /// Version of adept that wrote the bundle.
    pub adept_version: String,
    /// Backbone family (`bert`; `t5`, `llama` later).
    pub model_family: String,
    /// Task name (`sst2`, `stsb`, a custom file's stem, ...).
    pub task: String,
    /// Class names in logit order (empty for regression).
    pub label_names: Vec<String>,
    pub regression: bool,
    /// Named text fields of an input record, in order.
    pub text_fields: Vec<String>,
    pub input_template: InputTemplate,
    /// Soft-prompt rows prepended inside the graph.
    pub prompt_length: usize,
    /// Longest input in tokens (special tokens included, prompt excluded).
    pub max_length: usize,
    /// `truncate` or `error`, as in training.
    pub over_length: String,
    /// Padding token id used for dynamic padding.
    pub pad_token_id: u32,
    /// Rows of the graph's word-embedding table; token ids must be below it.
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of `logits` (classes, or 1 for regression).
    pub num_outputs: usize,
    /// Default-domain ONNX opset.
    pub opset: i64,
    pub dtype: WeightDtype,
    pub fold: FoldMode,
    /// `adept`, `dept`, `pt`, `head-only` or `frozen`.
    pub method: String,
    /// `mean` or `cls`.
    pub pooling: String,
    /// The graph's inputs ([`input_names`]): `token_type_ids` only for backbones that read it.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Checksums of `model.onnx` and `tokenizer.json`.
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub provenance: Provenance,
}

impl BundleManifest {
    /// Whether the graph takes `token_type_ids`.
    pub fn takes_token_types(&self) -> bool {
        self.inputs.iter().any(|i| i == INPUT_NAMES[2])
    }

    /// Reads and validates `<dir>/adept.json` (fields only; see [`verify_files`](Self::verify_files)).
    pub fn read(dir: &Path) -> Result<Self> {
        ensure!(
            dir.is_dir(),
            "bundle directory {} does not exist (export one with `adept export`)",
            dir.display()
        );
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the bundle manifest {} (missing?)",
                path.display()
            )
        })?;
        let m: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid adept bundle manifest", path.display()))?;
        m.validate()
            .with_context(|| format!("invalid bundle manifest {}", path.display()))?;
        Ok(m)
    }

    /// Checks the fields for consistency.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.format == FORMAT,
            "format is {:?}, expected {FORMAT:?}",
            self.format
        );
        ensure!(
            (1..=FORMAT_VERSION).contains(&self.format_version),
            "format_version {} is not supported (this adept reads 1..={FORMAT_VERSION}); upgrade adept",
            self.format_version
        );
        ensure!(
            FAMILIES.contains(&self.model_family.as_str()),
            "unknown model_family {:?} (one of {FAMILIES:?})",
            self.model_family
        );
        ensure!(
            METHODS.contains(&self.method.as_str()),
            "unknown method {:?} (one of {METHODS:?})",
            self.method
        );
        ensure!(
            ["mean", "cls"].contains(&self.pooling.as_str()),
            "unknown pooling {:?} (mean, cls)",
            self.pooling
        );
        ensure!(
            ["truncate", "error"].contains(&self.over_length.as_str()),
            "unknown over_length {:?} (truncate, error)",
            self.over_length
        );
        if self.regression {
            ensure!(
                self.num_outputs == 1,
                "a regression bundle has 1 output, not {}",
                self.num_outputs
            );
        } else {
            ensure!(
                !self.label_names.is_empty(),
                "a classification bundle needs label_names"
            );
            ensure!(
                self.num_outputs == self.label_names.len(),
                "num_outputs {} does not match the {} label names",
                self.num_outputs,
                self.label_names.len()
            );
        }
        ensure!(!self.text_fields.is_empty(), "text_fields is empty");
        for f in self
            .input_template
            .segment_a
            .iter()
            .chain(&self.input_template.segment_b)
        {
            ensure!(
                self.text_fields.contains(f),
                "input_template uses {f:?}, which is not one of text_fields {:?}",
                self.text_fields
            );
        }
        ensure!(
            !self.input_template.segment_a.is_empty(),
            "input_template.segment_a is empty"
        );
        ensure!(
            self.max_length >= 2,
            "max_length {} is too short",
            self.max_length
        );
        ensure!(self.vocab_size > 0, "vocab_size is 0");
        ensure!(
            (self.pad_token_id as usize) < self.vocab_size,
            "pad_token_id {} is outside the {}-row table",
            self.pad_token_id,
            self.vocab_size
        );
        ensure!(self.opset >= 17, "opset {} is below 17", self.opset);
        match self.method.as_str() {
            "adept" => ensure!(
                self.fold != FoldMode::None,
                "an ADePT bundle is folded or unfolded, not {}",
                self.fold
            ),
            _ => ensure!(
                self.fold == FoldMode::None,
                "method {} has no offsets to fold (fold is {})",
                self.method,
                self.fold
            ),
        }
        if ["head-only", "frozen"].contains(&self.method.as_str()) {
            ensure!(
                self.prompt_length == 0,
                "method {} has no prompt, but prompt_length is {}",
                self.method,
                self.prompt_length
            );
        }
        ensure!(
            self.inputs == input_names(true) || self.inputs == input_names(false),
            "inputs {:?} are neither {:?} nor {REQUIRED_INPUTS:?}",
            self.inputs,
            input_names(true)
        );
        ensure!(
            self.outputs == [OUTPUT_NAME],
            "outputs {:?} are not [{OUTPUT_NAME:?}]",
            self.outputs
        );
        for f in [MODEL_FILE, TOKENIZER_FILE] {
            let e = self
                .files
                .get(f)
                .with_context(|| format!("files has no entry for {f}"))?;
            ensure!(
                e.sha256.len() == 64 && e.sha256.chars().all(|c| c.is_ascii_hexdigit()),
                "files.{f}.sha256 {:?} is not a sha256 hex digest",
                e.sha256
            );
        }
        Ok(())
    }

    /// Checks that `model.onnx` and `tokenizer.json` in `dir` exist and match their checksums.
    pub fn verify_files(&self, dir: &Path) -> Result<()> {
        for (name, want) in &self.files {
            let path = dir.join(name);
            ensure!(
                path.is_file(),
                "bundle file {} is missing (listed in {})",
                path.display(),
                dir.join(MANIFEST_FILE).display()
            );
            let got = FileEntry::of(&path)?;
            ensure!(
                got.sha256 == want.sha256,
                "checksum mismatch for {}: sha256 {}…, but {} records {}… (the file changed after export, \
                 or the bundle is corrupt; re-export it)",
                path.display(),
                &got.sha256[..12],
                dir.join(MANIFEST_FILE).display(),
                &want.sha256[..12.min(want.sha256.len())]
            );
            ensure!(
                got.bytes == want.bytes,
                "{} is {} bytes, the manifest records {}",
                path.display(),
                got.bytes,
                want.bytes
            );
        }
        Ok(())
    }

    /// Records the checksums of `model.onnx` and `tokenizer.json` in `dir`.
    pub fn record_files(&mut self, dir: &Path) -> Result<()> {
        for f in [MODEL_FILE, TOKENIZER_FILE] {
            self.files
                .insert(f.to_string(), FileEntry::of(&dir.join(f))?);
        }
        Ok(())
    }

    /// Writes `<dir>/adept.json` (pretty JSON) after validating.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.validate()
            .context("refusing to write an invalid bundle manifest")?;
        let path = dir.join(MANIFEST_FILE);
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Label name for class `id` (regression bundles have none).
    pub fn label(&self, id: usize) -> Option<&str> {
        self.label_names.get(id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests;

/// Class probabilities from logits (numerically stable softmax). The one post-processing rule
/// shared by the native runtime, the browser and training-time evaluation.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The predicted class: index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}
