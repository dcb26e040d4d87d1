//! `adept.json`: the manifest's schema, its one reader/validator, and the checksums of the files
//! it lists.

use crate::files::{sha256_file_and_len, write_atomic};
use crate::tokenize::OverLength;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
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

string_enum! {
    /// The adapter method of a bundle (`method` in `adept.json`, `adept.method` in the graph's
    /// metadata).
    pub enum Method ("method") {
        /// Adaptive decomposed prompt tuning: a soft prompt and token-wise offsets `f(E)`.
        Adept = "adept",
        /// Decomposed prompt tuning: a soft prompt and position offsets `A·B`.
        Dept = "dept",
        /// Vanilla prompt tuning: a soft prompt.
        Pt = "pt",
        /// The frozen model and a trained head, no prompt.
        HeadOnly = "head-only",
        /// The bare model plus a head (benches).
        Frozen = "frozen",
    }
}

impl Method {
    /// Whether the method has token-wise offsets to fold (`fold` is then `folded` or
    /// `unfolded`; for every other method it is `none`).
    pub fn has_offsets(self) -> bool {
        self == Self::Adept
    }

    /// Whether the method has a soft prompt (`prompt_length` may be above 0).
    pub fn has_prompt(self) -> bool {
        !matches!(self, Self::HeadOnly | Self::Frozen)
    }
}

string_enum! {
    /// How the backbone's hidden states become the head's input (`pooling` in `adept.json`).
    pub enum Pooling ("pooling") {
        /// Mean over the input tokens (prompt rows and padding excluded).
        Mean = "mean",
        /// The hidden state at the first input token (`[CLS]`), right after the prompt.
        Cls = "cls",
    }
}

/// Adapter methods a bundle may carry (`frozen` is the bare model plus head, used by benches):
/// [`Method`] as written.
pub const METHODS: [&str; 5] = [
    Method::Adept.as_str(),
    Method::Dept.as_str(),
    Method::Pt.as_str(),
    Method::HeadOnly.as_str(),
    Method::Frozen.as_str(),
];
/// Backbone families a bundle may carry (`model_family`; a string, so that a family added to
/// `adept-backbones` needs one line here and no schema change).
pub const FAMILIES: [&str; 3] = ["bert", "t5", "llama"];
/// [`Pooling`] as written.
pub const POOLINGS: [&str; 2] = [Pooling::Mean.as_str(), Pooling::Cls.as_str()];

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
    /// The large matrix products dynamically quantized: per-output-channel symmetric int8
    /// weights and activations quantized to uint8 per row at run time (`QuantizeLinear` +
    /// `MatMulInteger`; with `--int8-activations per-tensor` one scale per input tensor,
    /// `DynamicQuantizeLinear`), or, exported with `--int8-blocks N`, both in blocks of N inputs
    /// (`com.microsoft:MatMulNBits`, 8 bits; see `adept_export::emit::int8_quantization`), and
    /// the word-embedding table (folded or plain, `[vocab, d]`) stored as int8 with one f32
    /// scale per row, dequantized after the `Gather`; position and token-type embeddings,
    /// LayerNorm, attention and the head stay f32 (encoder classifiers only).
    Int8,
}

impl std::str::FromStr for WeightDtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" | "float" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "int8" | "i8" | "qint8" => Ok(Self::Int8),
            other => bail!("unknown dtype {other:?} (f32, f16, int8)"),
        }
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        })
    }
}

/// How an int8 bundle quantizes its products' inputs at run time (`adept export --dtype int8
/// --int8-activations …`, `--int8-blocks N`); recorded in `adept.json` as `"per-row"`,
/// `"per-tensor"` or `"blocks-N"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Int8Activations {
    /// One scale per row (token), computed in the graph (`ReduceMax` of `|x|`, `Div`,
    /// `QuantizeLinear`): a sentence's logits do not depend on its batch-mates.
    #[default]
    PerRow,
    /// One scale for the whole input tensor (`DynamicQuantizeLinear`, which ONNX Runtime fuses
    /// with the product into `DynamicQuantizeMatMul`): the fastest, but every sentence of a
    /// batch shares the scale, so a sentence's logits move a little with its batch-mates.
    PerTensor,
    /// Weights and inputs in blocks of this many inputs (`com.microsoft:MatMulNBits`, 8 bits):
    /// the closest to f32, the slowest on CPU; batch-independent.
    Blocks(usize),
}

impl Int8Activations {
    /// The block size of [`Blocks`](Self::Blocks).
    pub fn block(self) -> Option<usize> {
        match self {
            Self::Blocks(n) => Some(n),
            _ => None,
        }
    }

    /// Whether a sentence's logits are independent of the other sentences of its batch.
    pub fn batch_independent(self) -> bool {
        self != Self::PerTensor
    }
}

impl std::str::FromStr for Int8Activations {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Self> {
        let s = text.trim().to_ascii_lowercase().replace('_', "-");
        match s.as_str() {
            "per-row" | "row" => Ok(Self::PerRow),
            "per-tensor" | "tensor" => Ok(Self::PerTensor),
            other => match other.strip_prefix("blocks-").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 16 && n.is_power_of_two() => Ok(Self::Blocks(n)),
                _ => bail!(
                    "unknown int8 activation quantization {text:?} (int8_activations: per-row, \
                     per-tensor, or blocks-N with N a power of two of at least 16)"
                ),
            },
        }
    }
}

impl std::fmt::Display for Int8Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PerRow => f.write_str("per-row"),
            Self::PerTensor => f.write_str("per-tensor"),
            Self::Blocks(n) => write!(f, "blocks-{n}"),
        }
    }
}

impl TryFrom<String> for Int8Activations {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Int8Activations> for String {
    fn from(a: Int8Activations) -> String {
        a.to_string()
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
        let (sha256, bytes) = sha256_file_and_len(path)?;
        Ok(Self { sha256, bytes })
    }
}

string_enum! {
    /// What a decoder bundle's graph computes (`decoder.task_kind` in `adept.json`).
    pub enum DecoderTask ("decoder task_kind") {
        /// Next-token logits with a key/value cache (optimum's `text-generation-with-past`).
        CausalLm = "causal-lm",
    }
}

/// File name of a decoder bundle's prompt cache.
pub const PROMPT_CACHE_FILE: &str = "prompt_cache.safetensors";

/// The graph inputs of a decoder bundle with `num_layers` layers, in order (optimum's names):
/// `input_ids`, `attention_mask`, `position_ids`, then `past_key_values.{i}.key` and
/// `past_key_values.{i}.value` for each layer.
pub fn decoder_input_names(num_layers: usize) -> Vec<String> {
    let mut v: Vec<String> = ["input_ids", "attention_mask", "position_ids"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for i in 0..num_layers {
        v.push(format!("past_key_values.{i}.key"));
        v.push(format!("past_key_values.{i}.value"));
    }
    v
}

/// The graph outputs of a decoder bundle, in order: `logits`, then `present.{i}.key` and
/// `present.{i}.value` for each layer.
pub fn decoder_output_names(num_layers: usize) -> Vec<String> {
    let mut v = vec![OUTPUT_NAME.to_string()];
    for i in 0..num_layers {
        v.push(format!("present.{i}.key"));
        v.push(format!("present.{i}.value"));
    }
    v
}

/// The `decoder` section of a decoder (causal LM) bundle's `adept.json`; absent for encoder
/// bundles, whose manifests are unchanged.
///
/// # The decoder bundle (a folder)
///
/// ```text
/// adept.json                  model_family "llama", this section, files: model.onnx,
///                             tokenizer.json and the prompt cache with their checksums
/// model.onnx                  inputs (optimum's names):
///                               input_ids       int64 [b, s]
///                               attention_mask  int64 [b, past + s]
///                               position_ids    int64 [b, s]
///                               past_key_values.{i}.key|value  float [b, kv_heads, past, head_dim]
///                             outputs:
///                               logits          float [b, s, vocab_size]
///                               present.{i}.key|value          float [b, kv_heads, past + s, head_dim]
/// tokenizer.json              the model's tokenizer
/// prompt_cache.safetensors    past_key_values.{i}.key|value  f32 [1, kv_heads, l, head_dim]:
///                             the soft prompt's keys and values (input-independent, computed
///                             at export)
/// ```
///
/// The graph's input table is the folded vocabulary `E + f(E)` (`vocab_size` rows) with the
/// soft prompt's `l` rows appended: ids `virtual_token_base .. virtual_token_base + l` (with
/// `virtual_token_base = vocab_size`) are the prompt, so a runtime may run the prompt as `l`
/// virtual tokens instead of loading the cache. The logits cover the real vocabulary only.
///
/// A token's position is the number of attended positions before it (`cumsum(mask) - 1`).
/// Starting from the prompt cache (`past = l`, mask ones) the first real token has position
/// `l`. A batch of prompts of different lengths is left-padded (`pad_token_id`, mask 0) after
/// the prompt rows: `[P | pads | tokens]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderSpec {
    /// `causal-lm`.
    pub task_kind: DecoderTask,
    pub num_layers: usize,
    /// Key/value heads (grouped-query attention: fewer than the query heads).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of the logits and rows of the (folded) vocabulary table, soft prompt excluded.
    pub vocab_size: usize,
    /// Soft-prompt rows `l` (0: no prompt).
    pub prompt_len: usize,
    /// Prepended to every prompt when set.
    pub bos_token_id: Option<u32>,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<u32>,
    /// Left-padding id of batched prompts.
    pub pad_token_id: u32,
    /// Longest sequence the model takes, soft prompt, prompt and generated tokens together.
    pub max_sequence_len: usize,
    /// The model's chat template (Jinja, as in `tokenizer_config.json`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// File name of the prompt cache inside the bundle ([`PROMPT_CACHE_FILE`]).
    pub prompt_cache_file: String,
    /// First virtual token id of the soft prompt; always `vocab_size`.
    pub virtual_token_base: usize,
}

impl DecoderSpec {
    /// Checks the section on its own; errors say which field and how to fix it.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.num_layers >= 1, "decoder.num_layers is 0");
        ensure!(self.kv_heads >= 1, "decoder.kv_heads is 0");
        ensure!(self.head_dim >= 1, "decoder.head_dim is 0");
        ensure!(self.vocab_size >= 1, "decoder.vocab_size is 0");
        ensure!(
            self.virtual_token_base == self.vocab_size,
            "decoder.virtual_token_base {} must equal decoder.vocab_size {} (the soft prompt's rows follow the vocabulary)",
            self.virtual_token_base,
            self.vocab_size
        );
        ensure!(
            !self.eos_token_ids.is_empty(),
            "decoder.eos_token_ids is empty; list the model's end-of-sequence ids"
        );
        let ids = self
            .eos_token_ids
            .iter()
            .map(|&i| ("eos_token_ids", i))
            .chain(self.bos_token_id.map(|i| ("bos_token_id", i)))
            .chain([("pad_token_id", self.pad_token_id)]);
        for (field, id) in ids {
            ensure!(
                (id as usize) < self.vocab_size,
                "decoder.{field} {id} is outside the {}-token vocabulary",
                self.vocab_size
            );
        }
        ensure!(
            self.max_sequence_len > self.prompt_len,
            "decoder.max_sequence_len {} leaves no room after the {}-row soft prompt",
            self.max_sequence_len,
            self.prompt_len
        );
        ensure!(
            !self.prompt_cache_file.is_empty()
                && !self.prompt_cache_file.contains(['/', '\\'])
                && self.prompt_cache_file != MODEL_FILE
                && self.prompt_cache_file != TOKENIZER_FILE,
            "decoder.prompt_cache_file {:?} must be a plain file name inside the bundle (e.g. {PROMPT_CACHE_FILE:?})",
            self.prompt_cache_file
        );
        Ok(())
    }

    /// Graph input names ([`decoder_input_names`]).
    pub fn input_names(&self) -> Vec<String> {
        decoder_input_names(self.num_layers)
    }

    /// Graph output names ([`decoder_output_names`]).
    pub fn output_names(&self) -> Vec<String> {
        decoder_output_names(self.num_layers)
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
    pub over_length: OverLength,
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
    /// int8 bundles: the weight-name parts (`layer.0.output.dense`) whose products stayed
    /// float beside the head (`adept export --int8-keep-float`); empty otherwise, and absent
    /// from the file when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub int8_keep_float: Vec<String>,
    /// int8 bundles with per-tensor activations: the products whose input is quantized per row
    /// instead (full names; `adept export --int8-per-row`); empty otherwise, and absent from the
    /// file when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub int8_per_row: Vec<String>,
    /// int8 bundles: how the products' inputs are quantized at run time (absent from bundles
    /// written before it was recorded, which are per row or in blocks, and from non-int8 ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_activations: Option<Int8Activations>,
    pub fold: FoldMode,
    /// `adept`, `dept`, `pt`, `head-only` or `frozen`.
    pub method: Method,
    /// `mean` or `cls`.
    pub pooling: Pooling,
    /// The graph's inputs ([`input_names`]): `token_type_ids` only for backbones that read it.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Checksums of `model.onnx` and `tokenizer.json`.
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default)]
    pub provenance: Provenance,
    /// Present for decoder (causal LM) bundles only; see [`DecoderSpec`]. For those, `inputs`
    /// and `outputs` are [`decoder_input_names`] / [`decoder_output_names`], `label_names` is
    /// empty, `regression` false, `num_outputs` = `vocab_size` = `decoder.vocab_size`,
    /// `prompt_length` = `decoder.prompt_len`, `pad_token_id` = `decoder.pad_token_id`,
    /// `max_length` the longest prompt in tokens, and `pooling` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<DecoderSpec>,
}

/// `<dir>/adept.json` as text and its path; errors say whether the folder or the file is
/// missing.
pub(crate) fn read_manifest_text(dir: &Path) -> Result<(String, std::path::PathBuf)> {
    ensure!(
        dir.is_dir(),
        "bundle directory {} does not exist (export one with `adept export`)",
        dir.display()
    );
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the bundle manifest {} (missing? is {} a bundle written by `adept export`?)",
            path.display(),
            dir.display()
        )
    })?;
    Ok((text, path))
}

/// Parses a manifest of some `kind` ("bundle", "seq2seq (T5) bundle") from `text` and runs
/// `validate` on it; errors name the manifest (`name`).
pub(crate) fn parse_manifest<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
    kind: &str,
    validate: impl Fn(&T) -> Result<()>,
) -> Result<T> {
    let m: T = serde_json::from_str(text)
        .with_context(|| format!("{name} is not a valid adept {kind} manifest"))?;
    validate(&m).with_context(|| format!("invalid {kind} manifest {name}"))?;
    Ok(m)
}

/// The `format` and `format_version` fields every manifest shares.
pub(crate) fn check_format(format: &str, format_version: u32) -> Result<()> {
    ensure!(
        format == FORMAT,
        "format is {format:?}, expected {FORMAT:?}"
    );
    ensure!(
        (1..=FORMAT_VERSION).contains(&format_version),
        "format_version {format_version} is not supported (this adept reads 1..={FORMAT_VERSION}); upgrade adept"
    );
    Ok(())
}

impl BundleManifest {
    /// Whether the graph takes `token_type_ids`.
    pub fn takes_token_types(&self) -> bool {
        self.inputs.iter().any(|i| i == INPUT_NAMES[2])
    }

    /// Reads and validates `<dir>/adept.json` (fields only; see [`verify_files`](Self::verify_files)).
    pub fn read(dir: &Path) -> Result<Self> {
        let (text, path) = read_manifest_text(dir)?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and validates the text of an `adept.json` (`name` names it in errors: its path,
    /// or the file name where there is no file system).
    pub fn from_json(text: &str, name: &str) -> Result<Self> {
        parse_manifest(text, name, "bundle", Self::validate)
    }

    /// Checks the fields for consistency.
    pub fn validate(&self) -> Result<()> {
        check_format(&self.format, self.format_version)?;
        ensure!(
            FAMILIES.contains(&self.model_family.as_str()),
            "unknown model_family {:?} (one of {FAMILIES:?})",
            self.model_family
        );
        let method = self.method;
        ensure!(
            self.int8_keep_float.is_empty() || self.dtype == WeightDtype::Int8,
            "int8_keep_float {:?} is set but dtype is {}: only int8 bundles keep products float",
            self.int8_keep_float,
            self.dtype
        );
        ensure!(
            self.int8_per_row.is_empty()
                || self.int8_activations == Some(Int8Activations::PerTensor),
            "int8_per_row {:?} is set but the bundle is {}{}: only per-tensor int8 bundles \
             quantize some products per row",
            self.int8_per_row,
            self.dtype,
            self.int8_activations
                .map(|a| format!(" with {a} activations"))
                .unwrap_or_default()
        );
        if let Some(a) = self.int8_activations {
            ensure!(
                self.dtype == WeightDtype::Int8,
                "int8_activations {a} is set but dtype is {}: only int8 bundles quantize activations",
                self.dtype
            );
        }
        if let Some(d) = &self.decoder {
            return self.validate_decoder(d);
        }
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
        if method.has_offsets() {
            ensure!(
                self.fold != FoldMode::None,
                "an ADePT bundle is folded or unfolded, not {}",
                self.fold
            );
        } else {
            ensure!(
                self.fold == FoldMode::None,
                "method {method} has no offsets to fold (fold is {})",
                self.fold
            );
        }
        if !method.has_prompt() {
            ensure!(
                self.prompt_length == 0,
                "method {method} has no prompt, but prompt_length is {}",
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

    /// Whether this is a decoder (causal LM) bundle.
    pub fn is_decoder(&self) -> bool {
        self.decoder.is_some()
    }

    /// The checks of a decoder bundle (after the format checks [`validate`](Self::validate)
    /// shares with encoder bundles).
    fn validate_decoder(&self, d: &DecoderSpec) -> Result<()> {
        d.validate()?;
        ensure!(
            self.model_family == "llama",
            "a decoder bundle's model_family is \"llama\", not {:?}",
            self.model_family
        );
        ensure!(
            !self.regression && self.label_names.is_empty(),
            "a decoder bundle has no label_names and is not a regression"
        );
        for (field, got) in [
            ("vocab_size", self.vocab_size),
            ("num_outputs", self.num_outputs),
        ] {
            ensure!(
                got == d.vocab_size,
                "{field} {got} does not match decoder.vocab_size {}",
                d.vocab_size
            );
        }
        ensure!(
            self.prompt_length == d.prompt_len,
            "prompt_length {} does not match decoder.prompt_len {}",
            self.prompt_length,
            d.prompt_len
        );
        ensure!(
            self.pad_token_id == d.pad_token_id,
            "pad_token_id {} does not match decoder.pad_token_id {}",
            self.pad_token_id,
            d.pad_token_id
        );
        ensure!(self.opset >= 17, "opset {} is below 17", self.opset);
        let method = self.method;
        ensure!(
            method.has_offsets() == (self.fold != FoldMode::None),
            "method {method} cannot have fold {} (ADePT is folded or unfolded, every other method none)",
            self.fold
        );
        ensure!(
            method.has_prompt() || d.prompt_len == 0,
            "method {method} has no prompt, but decoder.prompt_len is {}",
            d.prompt_len
        );
        ensure!(
            self.inputs == d.input_names(),
            "a decoder bundle with {} layers takes inputs {:?}, but the manifest lists {:?}",
            d.num_layers,
            d.input_names(),
            self.inputs
        );
        ensure!(
            self.outputs == d.output_names(),
            "a decoder bundle with {} layers has outputs {:?}, but the manifest lists {:?}",
            d.num_layers,
            d.output_names(),
            self.outputs
        );
        let mut needed = vec![MODEL_FILE, TOKENIZER_FILE];
        if d.prompt_len > 0 {
            needed.push(d.prompt_cache_file.as_str());
        }
        for f in needed {
            let e = self.files.get(f).with_context(|| {
                format!("files has no entry for {f} (decoder bundles list it with its checksum)")
            })?;
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
        verify_listed_files(&self.files, dir)
    }

    /// Checks a bundle file's checksum and size (`got`, e.g. computed by the browser) against
    /// the entry for `name`; `shown` and `manifest_name` name the file and the manifest in
    /// errors.
    pub fn check_file(
        &self,
        name: &str,
        got: &FileEntry,
        shown: &str,
        manifest_name: &str,
    ) -> Result<()> {
        check_listed_file(&self.files, name, got, shown, manifest_name)
    }

    /// Records the checksums of `model.onnx` and `tokenizer.json` in `dir` (and of a decoder
    /// bundle's prompt cache).
    pub fn record_files(&mut self, dir: &Path) -> Result<()> {
        for f in [MODEL_FILE, TOKENIZER_FILE] {
            self.files
                .insert(f.to_string(), FileEntry::of(&dir.join(f))?);
        }
        if let Some(d) = &self.decoder {
            if d.prompt_len > 0 {
                let f = d.prompt_cache_file.clone();
                let entry = FileEntry::of(&dir.join(&f))?;
                self.files.insert(f, entry);
            }
        }
        Ok(())
    }

    /// Writes `<dir>/adept.json` (pretty JSON) atomically after validating.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.validate()
            .context("refusing to write an invalid bundle manifest")?;
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
    }

    /// Label name for class `id` (regression bundles have none).
    pub fn label(&self, id: usize) -> Option<&str> {
        self.label_names.get(id).map(String::as_str)
    }
}

/// Checks that every file of a manifest's `files` exists in `dir` and matches its sha256 and
/// size (every bundle kind lists its files this way).
pub fn verify_listed_files(files: &BTreeMap<String, FileEntry>, dir: &Path) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE).display().to_string();
    for name in files.keys() {
        let path = dir.join(name);
        ensure!(
            path.is_file(),
            "bundle file {} is missing (listed in {manifest_path})",
            path.display(),
        );
        let got = FileEntry::of(&path)?;
        check_listed_file(
            files,
            name,
            &got,
            &path.display().to_string(),
            &manifest_path,
        )?;
    }
    Ok(())
}

/// Checks `got` (a file's checksum and size) against the entry for `name` in `files`; `shown`
/// and `manifest_name` name the file and the manifest in errors.
pub fn check_listed_file(
    files: &BTreeMap<String, FileEntry>,
    name: &str,
    got: &FileEntry,
    shown: &str,
    manifest_name: &str,
) -> Result<()> {
    let want = files
        .get(name)
        .with_context(|| format!("{manifest_name} lists no file {name}"))?;
    ensure!(
        want.sha256.eq_ignore_ascii_case(&got.sha256),
        "checksum mismatch for {shown}: sha256 {}…, but {manifest_name} records {}… (the file changed \
         after export, or the bundle is corrupt; re-export it)",
        &got.sha256[..12.min(got.sha256.len())],
        &want.sha256[..12.min(want.sha256.len())]
    );
    ensure!(
        got.bytes == want.bytes,
        "{shown} is {} bytes, {manifest_name} records {}",
        got.bytes,
        want.bytes
    );
    Ok(())
}

#[cfg(test)]
mod tests;
