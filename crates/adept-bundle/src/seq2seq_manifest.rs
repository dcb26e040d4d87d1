//! The manifest (`adept.json`) of a sequence-to-sequence (T5) bundle, typed: written by
//! `adept_export::seq2seq`, read and validated by `adept_runtime::seq2seq` (and anything else
//! that opens such a bundle).
//!
//! ```text
//! adept.json            this manifest: task_kind "seq2seq", model_family "t5", the graphs'
//!                       files and input/output names, the files' sha256 and sizes
//! encoder_model.onnx    input_ids, attention_mask  ->  last_hidden_state, encoder_attention_mask
//!                       (the soft prompt is prepended inside the graph)
//! decoder_model.onnx    input_ids, encoder_attention_mask, encoder_hidden_states,
//!                       past_key_values.{i}.decoder|encoder.key|value
//!                       ->  logits, present.{i}.decoder|encoder.key|value
//! tokenizer.json        the model's tokenizer
//! ```
//!
//! The names are optimum's / transformers.js's for a T5 export with a cache
//! ([`seq2seq_encoder_input_names`] and the functions beside it list them). The keys are the
//! ones seq2seq bundles have always had, so bundles written before this type existed read
//! unchanged; encoder and decoder bundles keep [`crate::BundleManifest`].

use crate::manifest::{FileEntry, FoldMode, Method, WeightDtype};
use crate::{write_atomic, MANIFEST_FILE, OUTPUT_NAME};
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// `task_kind` of a seq2seq bundle.
pub const SEQ2SEQ_TASK_KIND: &str = "seq2seq";
/// Families a seq2seq bundle may hold.
pub const SEQ2SEQ_FAMILIES: [&str; 1] = ["t5"];
/// File of the encoder graph (optimum's name).
pub const ENCODER_FILE: &str = "encoder_model.onnx";
/// File of the decoder graph (optimum's name; one graph for all steps).
pub const DECODER_FILE: &str = "decoder_model.onnx";

/// The encoder graph's inputs, in order.
pub fn seq2seq_encoder_input_names() -> Vec<String> {
    vec!["input_ids".into(), "attention_mask".into()]
}

/// The encoder graph's outputs, in order.
pub fn seq2seq_encoder_output_names() -> Vec<String> {
    vec!["last_hidden_state".into(), "encoder_attention_mask".into()]
}

/// The decoder graph's inputs for `layers` decoder blocks, in order: `input_ids`,
/// `encoder_attention_mask`, `encoder_hidden_states`, then per block
/// `past_key_values.{i}.decoder.key|value` and `past_key_values.{i}.encoder.key|value`.
pub fn seq2seq_decoder_input_names(layers: usize) -> Vec<String> {
    let mut v: Vec<String> = [
        "input_ids",
        "encoder_attention_mask",
        "encoder_hidden_states",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..layers {
        for kind in ["decoder", "encoder"] {
            v.push(format!("past_key_values.{i}.{kind}.key"));
            v.push(format!("past_key_values.{i}.{kind}.value"));
        }
    }
    v
}

/// The decoder graph's outputs for `layers` decoder blocks, in order: `logits`, then per block
/// `present.{i}.decoder.key|value` and `present.{i}.encoder.key|value`.
pub fn seq2seq_decoder_output_names(layers: usize) -> Vec<String> {
    let mut v = vec![OUTPUT_NAME.to_string()];
    for i in 0..layers {
        for kind in ["decoder", "encoder"] {
            v.push(format!("present.{i}.{kind}.key"));
            v.push(format!("present.{i}.{kind}.value"));
        }
    }
    v
}

/// One graph of the bundle: its file and its input and output names.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GraphEntry {
    pub file: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// `adept.json` of a seq2seq (T5) bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Seq2SeqManifest {
    /// Always [`FORMAT`](crate::manifest::FORMAT).
    pub format: String,
    pub format_version: u32,
    /// Version of adept that wrote the bundle.
    pub adept_version: String,
    /// `t5`.
    pub model_family: String,
    /// `config.json`'s `model_type` (`t5`, `mt5`).
    pub model_type: String,
    /// Always [`SEQ2SEQ_TASK_KIND`].
    pub task_kind: String,
    /// `adept`, `dept` or `pt` (`head-only`: the bare model, no adapter).
    pub method: Method,
    /// `folded` / `unfolded` for ADePT, `none` otherwise.
    pub fold: FoldMode,
    pub dtype: WeightDtype,
    /// Default-domain ONNX opset.
    pub opset: i64,
    /// `d_model`.
    pub hidden_size: usize,
    pub num_encoder_layers: usize,
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    /// Width of one head's keys and values.
    pub d_kv: usize,
    /// Width of the logits and rows of the tables.
    pub vocab_size: usize,
    /// Soft-prompt rows `l` the encoder graph prepends (0: none).
    pub prompt_len: usize,
    /// Whether the LM head is the shared table (scaled by `d^-0.5`).
    pub tied_embeddings: bool,
    pub decoder_start_token_id: u32,
    /// Generation stops a row here.
    pub eos_token_id: u32,
    /// Pads encoder inputs on the right.
    pub pad_token_id: u32,
    /// Longest encoder input, soft prompt included.
    pub max_sequence_len: usize,
    pub encoder: GraphEntry,
    pub decoder: GraphEntry,
    /// File of the tokenizer ([`crate::TOKENIZER_FILE`]).
    pub tokenizer: String,
    /// sha256 and size of both graphs and the tokenizer.
    pub files: BTreeMap<String, FileEntry>,
}

impl Seq2SeqManifest {
    /// Reads and validates `<dir>/adept.json`; errors name the file.
    pub fn read(dir: &Path) -> Result<Self> {
        let (text, path) = crate::manifest::read_manifest_text(dir)?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and validates the text of an `adept.json`; `name` (its path) names it in errors.
    pub fn from_json(text: &str, name: &str) -> Result<Self> {
        crate::manifest::parse_manifest(text, name, "seq2seq (T5) bundle", Self::validate)
    }

    /// Checks the fields on their own and against each other; errors say which field and how
    /// to fix it.
    pub fn validate(&self) -> Result<()> {
        crate::manifest::check_format(&self.format, self.format_version)?;
        ensure!(
            self.task_kind == SEQ2SEQ_TASK_KIND,
            "task_kind is {:?}, not {SEQ2SEQ_TASK_KIND:?}: open encoder and decoder bundles with \
             adept_runtime::Bundle",
            self.task_kind
        );
        ensure!(
            SEQ2SEQ_FAMILIES.contains(&self.model_family.as_str()),
            "model_family {:?} is not a seq2seq family ({SEQ2SEQ_FAMILIES:?})",
            self.model_family
        );
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("num_encoder_layers", self.num_encoder_layers),
            ("num_decoder_layers", self.num_decoder_layers),
            ("num_heads", self.num_heads),
            ("d_kv", self.d_kv),
            ("vocab_size", self.vocab_size),
        ] {
            ensure!(v >= 1, "{field} is 0");
        }
        for (field, id) in [
            ("decoder_start_token_id", self.decoder_start_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            ensure!(
                (id as usize) < self.vocab_size,
                "{field} {id} is outside the {}-token vocabulary",
                self.vocab_size
            );
        }
        ensure!(
            self.max_sequence_len > self.prompt_len,
            "max_sequence_len {} leaves no room after the {}-row soft prompt",
            self.max_sequence_len,
            self.prompt_len
        );
        ensure!(self.opset >= 17, "opset {} is below 17", self.opset);
        let method = self.method;
        ensure!(
            method.has_prompt() || self.prompt_len == 0,
            "method {method} has no prompt, but prompt_len is {}",
            self.prompt_len
        );
        ensure!(
            method.has_offsets() == (self.fold != FoldMode::None),
            "method {method} cannot have fold {} (ADePT is folded or unfolded, every other method none)",
            self.fold
        );
        let graphs = [
            (
                "encoder",
                &self.encoder,
                seq2seq_encoder_input_names(),
                seq2seq_encoder_output_names(),
            ),
            (
                "decoder",
                &self.decoder,
                seq2seq_decoder_input_names(self.num_decoder_layers),
                seq2seq_decoder_output_names(self.num_decoder_layers),
            ),
        ];
        for (what, g, inputs, outputs) in graphs {
            ensure!(
                g.inputs == inputs,
                "{what}.inputs {:?} are not the {what} graph's {:?} ({} decoder layers)",
                g.inputs,
                inputs,
                self.num_decoder_layers
            );
            ensure!(
                g.outputs == outputs,
                "{what}.outputs {:?} are not the {what} graph's {:?} ({} decoder layers)",
                g.outputs,
                outputs,
                self.num_decoder_layers
            );
        }
        for (field, f) in [
            ("encoder.file", &self.encoder.file),
            ("decoder.file", &self.decoder.file),
            ("tokenizer", &self.tokenizer),
        ] {
            ensure!(
                !f.is_empty() && !f.contains(['/', '\\']) && f != MANIFEST_FILE,
                "{field} {f:?} must be a plain file name inside the bundle"
            );
            let e = self.files.get(f).with_context(|| {
                format!(
                    "files has no entry for {f} ({field}); every file is listed with its sha256"
                )
            })?;
            ensure!(
                e.sha256.len() == 64 && e.sha256.chars().all(|c| c.is_ascii_hexdigit()),
                "files.{f}.sha256 {:?} is not a sha256 hex digest",
                e.sha256
            );
        }
        ensure!(
            self.encoder.file != self.decoder.file,
            "encoder.file and decoder.file are both {:?}",
            self.encoder.file
        );
        Ok(())
    }

    /// Checks that every listed file exists in `dir` and matches its sha256 and size.
    pub fn verify_files(&self, dir: &Path) -> Result<()> {
        crate::manifest::verify_listed_files(&self.files, dir)
    }

    /// Writes `<dir>/adept.json` (pretty JSON) atomically after validating.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.validate()
            .context("refusing to write an invalid seq2seq bundle manifest")?;
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
    }

    /// Whether `<dir>/adept.json` says `task_kind: "seq2seq"` (without validating the rest:
    /// for routing a bundle to the seq2seq runtime, which then reads it with [`Self::read`]).
    pub fn is_seq2seq_bundle(dir: &Path) -> bool {
        std::fs::read(dir.join(MANIFEST_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|m| m["task_kind"] == SEQ2SEQ_TASK_KIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FORMAT, FORMAT_VERSION};
    use crate::TOKENIZER_FILE;

    fn sample(dir: &Path) -> Seq2SeqManifest {
        let mut files = BTreeMap::new();
        for (f, body) in [
            (ENCODER_FILE, &b"enc"[..]),
            (DECODER_FILE, &b"dec"[..]),
            (TOKENIZER_FILE, &b"{}"[..]),
        ] {
            std::fs::write(dir.join(f), body).unwrap();
            files.insert(f.to_string(), FileEntry::of(&dir.join(f)).unwrap());
        }
        Seq2SeqManifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            adept_version: "0.1.0".into(),
            model_family: "t5".into(),
            model_type: "t5".into(),
            task_kind: SEQ2SEQ_TASK_KIND.into(),
            method: Method::Adept,
            fold: FoldMode::Folded,
            dtype: WeightDtype::F32,
            opset: 17,
            hidden_size: 16,
            num_encoder_layers: 2,
            num_decoder_layers: 2,
            num_heads: 2,
            d_kv: 8,
            vocab_size: 100,
            prompt_len: 4,
            tied_embeddings: true,
            decoder_start_token_id: 0,
            eos_token_id: 1,
            pad_token_id: 0,
            max_sequence_len: 512,
            encoder: GraphEntry {
                file: ENCODER_FILE.into(),
                inputs: seq2seq_encoder_input_names(),
                outputs: seq2seq_encoder_output_names(),
            },
            decoder: GraphEntry {
                file: DECODER_FILE.into(),
                inputs: seq2seq_decoder_input_names(2),
                outputs: seq2seq_decoder_output_names(2),
            },
            tokenizer: TOKENIZER_FILE.into(),
            files,
        }
    }

    #[test]
    fn roundtrip_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let m = sample(dir.path());
        m.write(dir.path()).unwrap();
        let back = Seq2SeqManifest::read(dir.path()).unwrap();
        assert_eq!(back, m);
        assert!(Seq2SeqManifest::is_seq2seq_bundle(dir.path()));
        back.verify_files(dir.path()).unwrap();
        std::fs::write(dir.path().join(DECODER_FILE), b"deX").unwrap();
        let err = format!("{:#}", back.verify_files(dir.path()).unwrap_err());
        assert!(
            err.contains(DECODER_FILE) && err.contains("sha256") && err.contains("adept.json"),
            "{err}"
        );
    }

    /// Each broken manifest is refused with an error that names the file and the field.
    #[test]
    fn bad_manifests_are_refused_naming_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = sample(dir.path());
        type Break = fn(&mut serde_json::Value);
        let cases: [(Break, &str); 7] = [
            (|v| v["task_kind"] = "causal-lm".into(), "task_kind"),
            (|v| v["model_family"] = "bert".into(), "model_family"),
            (|v| v["eos_token_id"] = 100.into(), "eos_token_id 100"),
            (|v| v["fold"] = "none".into(), "fold"),
            (
                |v| v["decoder"]["inputs"][3] = "past_key_values.0.key".into(),
                "decoder.inputs",
            ),
            (
                |v| {
                    v["files"].as_object_mut().unwrap().remove(DECODER_FILE);
                },
                "files has no entry for decoder_model.onnx",
            ),
            (
                |v| {
                    v.as_object_mut().unwrap().remove("num_heads");
                },
                "num_heads",
            ),
        ];
        for (brk, want) in cases {
            let mut v = serde_json::to_value(&good).unwrap();
            brk(&mut v);
            std::fs::write(dir.path().join(MANIFEST_FILE), v.to_string()).unwrap();
            let err = format!("{:#}", Seq2SeqManifest::read(dir.path()).unwrap_err());
            let path = dir.path().join(MANIFEST_FILE).display().to_string();
            assert!(err.contains(&path), "error does not name {path}: {err}");
            assert!(err.contains(want), "error does not mention {want:?}: {err}");
        }
        // Not JSON at all.
        std::fs::write(dir.path().join(MANIFEST_FILE), "{ not json").unwrap();
        let err = format!("{:#}", Seq2SeqManifest::read(dir.path()).unwrap_err());
        assert!(
            err.contains("adept.json") && err.contains("not a valid"),
            "{err}"
        );
        // No manifest.
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
        let err = format!("{:#}", Seq2SeqManifest::read(dir.path()).unwrap_err());
        assert!(
            err.contains("cannot read") && err.contains("adept.json"),
            "{err}"
        );
        // Writing an invalid manifest is refused too.
        let mut bad = good.clone();
        bad.prompt_len = 600;
        let err = format!("{:#}", bad.write(dir.path()).unwrap_err());
        assert!(err.contains("max_sequence_len"), "{err}");
    }
}
