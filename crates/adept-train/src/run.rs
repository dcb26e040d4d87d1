//! A training run on disk and its settings.
//!
//! ```text
//! <run>/train_config.json        settings the run started with (resume refuses others)
//! <run>/metrics.jsonl            one JSON object per log line / evaluation
//! <run>/checkpoint.safetensors   latest state (adapter, head, optimiser moments, loop position)
//! <run>/best/                    best adapter so far: adapter_config.json,
//!                                adapter_model.safetensors, head.safetensors, run.json
//! ```
//! Every file is written to a temporary name and renamed; `best/` is replaced by renaming a
//! complete new folder into place.

use crate::model::{Classifier, Pooling};
use crate::task::TaskData;
use crate::tokenize::{OverLength, TextEncoder};
use adept_adapters::{AdapterConfig, MethodKind, PromptInit};
use adept_bundle::{sha256_file, sha256_hex, write_atomic};
use adept_nn::Autocast;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

/// Everything that determines a run (saved as `train_config.json`).
///
/// The adapter's settings are the adapter's own [`AdapterConfig`] (method, `prompt_len`, rank,
/// budget, prompt init, dropout, DePT `alpha`, and `max_length`, which is also the tokenizer's
/// max length); its `token_dim` is 0 until [`crate::resolve_budget`] reads the model's width, and
/// a text prompt init holds no token ids (the trainer tokenizes the text).
///
/// On disk the config keeps the flat layout runs have always had ([`TrainConfigFile`]), so old
/// `train_config.json` files and `run.json` manifests load, and [`TrainConfig::hash`] (kept in
/// every checkpoint) is unchanged for them: a `--resume` of an older run still works, and one
/// under other settings is still refused.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(into = "TrainConfigFile", from = "TrainConfigFile")]
pub struct TrainConfig {
    pub adapter: AdapterConfig,
    pub lr_prompt: f64,
    pub lr_offsets: f64,
    pub lr_head: f64,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub steps: usize,
    pub warmup: usize,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub log_every: usize,
    pub early_stop: Option<usize>,
    pub over_length: OverLength,
    pub pooling: Pooling,
    /// Seeds the batch order, dropout, the adapter's and head's init and, unless a text init is
    /// given, the sampled prompt rows: change it with [`TrainConfig::set_seed`].
    pub seed: u64,
    /// Precision of the frozen backbone while training (`--autocast`): f32, or bf16 weights and
    /// products ([`adept_nn::autocast`]). The adapter, head, optimizer state and loss are f32
    /// either way, and an export reads the original (f32) checkpoint.
    pub autocast: Autocast,
}

impl TrainConfig {
    /// The defaults that worked for short runs on all-MiniLM-L6-v2 (see the README's table).
    pub fn defaults(method: MethodKind) -> Self {
        let prompt_len = match method {
            MethodKind::Pt => 100,
            MethodKind::HeadOnly => 0,
            _ => 60,
        };
        let seed = 42;
        // Rank, budget and width are resolved against the model (`resolve_budget`).
        let mut adapter = AdapterConfig::new(method, 0, prompt_len, 0);
        adapter.budget = 0;
        adapter.max_length = 128;
        adapter.dropout = 0.1;
        adapter.alpha = 8.0;
        adapter.prompt_init = PromptInit::SampleVocab { seed };
        Self {
            adapter,
            lr_prompt: 3e-1,
            lr_offsets: 1e-3,
            lr_head: 1e-3,
            batch_size: 32,
            eval_batch_size: 64,
            steps: 800,
            warmup: 80,
            eval_every: 100,
            checkpoint_every: 100,
            log_every: 10,
            early_stop: None,
            over_length: OverLength::Truncate,
            pooling: Pooling::Mean,
            seed,
            autocast: Autocast::F32,
        }
    }

    pub fn method(&self) -> MethodKind {
        self.adapter.method
    }

    /// Soft-prompt rows `l`.
    pub fn prompt_len(&self) -> usize {
        self.adapter.prompt_len
    }

    /// The longest input in tokens (tokenizer and adapter alike).
    pub fn max_len(&self) -> usize {
        self.adapter.max_length
    }

    /// Sets the run's seed; sampled prompt rows that followed the old seed follow the new one.
    pub fn set_seed(&mut self, seed: u64) {
        if self.adapter.prompt_init == (PromptInit::SampleVocab { seed: self.seed }) {
            self.adapter.prompt_init = PromptInit::SampleVocab { seed };
        }
        self.seed = seed;
    }

    /// A stable fingerprint of the settings that change the optimisation trajectory: the
    /// `train_config.json` form, logging cadence left out.
    pub fn hash(&self) -> String {
        let mut c = TrainConfigFile::from(self.clone());
        // Logging cadence does not change the result.
        c.log_every = 0;
        let bytes = serde_json::to_vec(&c).expect("config serialises");
        // The first 8 bytes of the sha256, in hex.
        sha256_hex(&bytes)[..16].to_string()
    }
}

/// `train_config.json` (and `run.json`'s `train_config`): the flat layout every run has been
/// saved in, field order included (the hash is over these bytes). `prompt_init_seed` appears
/// only when sampled prompt rows do not follow `seed`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfigFile {
    pub method: MethodKind,
    /// Soft-prompt rows `l`.
    pub prompt_len: usize,
    /// Offset rank; solved from the budget when not given.
    pub rank: usize,
    pub budget: usize,
    /// Prompt initialisation: a text whose token embeddings are repeated, or (null) sampled
    /// vocabulary rows.
    pub prompt_init_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_init_seed: Option<u64>,
    pub lr_prompt: f64,
    pub lr_offsets: f64,
    pub lr_head: f64,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub steps: usize,
    pub warmup: usize,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub log_every: usize,
    pub early_stop: Option<usize>,
    pub max_len: usize,
    pub over_length: OverLength,
    pub pooling: Pooling,
    pub seed: u64,
    pub dropout: f64,
    pub dept_alpha: f64,
    /// The frozen backbone's precision; written only when not f32, so f32 runs keep the bytes
    /// (and [`TrainConfig::hash`]) they always had, and older files read as f32.
    #[serde(default, skip_serializing_if = "AutocastName::is_f32")]
    pub autocast: AutocastName,
}

/// [`Autocast`] as `train_config.json` spells it (`"f32"`, `"bf16"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutocastName {
    #[default]
    F32,
    Bf16,
}

impl AutocastName {
    fn is_f32(&self) -> bool {
        *self == AutocastName::F32
    }
}

impl From<Autocast> for AutocastName {
    fn from(a: Autocast) -> Self {
        match a {
            Autocast::F32 => AutocastName::F32,
            Autocast::Bf16 => AutocastName::Bf16,
        }
    }
}

impl From<AutocastName> for Autocast {
    fn from(a: AutocastName) -> Self {
        match a {
            AutocastName::F32 => Autocast::F32,
            AutocastName::Bf16 => Autocast::Bf16,
        }
    }
}

impl From<TrainConfig> for TrainConfigFile {
    fn from(c: TrainConfig) -> Self {
        let a = c.adapter;
        let (prompt_init_text, prompt_init_seed) = match a.prompt_init {
            PromptInit::Text { text, .. } => (Some(text), None),
            PromptInit::SampleVocab { seed } => (None, (seed != c.seed).then_some(seed)),
        };
        Self {
            method: a.method,
            prompt_len: a.prompt_len,
            rank: a.rank,
            budget: a.budget,
            prompt_init_text,
            prompt_init_seed,
            lr_prompt: c.lr_prompt,
            lr_offsets: c.lr_offsets,
            lr_head: c.lr_head,
            batch_size: c.batch_size,
            eval_batch_size: c.eval_batch_size,
            steps: c.steps,
            warmup: c.warmup,
            eval_every: c.eval_every,
            checkpoint_every: c.checkpoint_every,
            log_every: c.log_every,
            early_stop: c.early_stop,
            max_len: a.max_length,
            over_length: c.over_length,
            pooling: c.pooling,
            seed: c.seed,
            dropout: a.dropout,
            dept_alpha: a.alpha,
            autocast: c.autocast.into(),
        }
    }
}

impl From<TrainConfigFile> for TrainConfig {
    fn from(f: TrainConfigFile) -> Self {
        let prompt_init = match f.prompt_init_text {
            Some(text) => PromptInit::text(text),
            None => PromptInit::SampleVocab {
                seed: f.prompt_init_seed.unwrap_or(f.seed),
            },
        };
        let mut adapter = AdapterConfig::new(f.method, 0, f.prompt_len, f.rank);
        adapter.budget = f.budget;
        adapter.max_length = f.max_len;
        adapter.alpha = f.dept_alpha;
        adapter.dropout = f.dropout;
        adapter.prompt_init = prompt_init;
        Self {
            adapter,
            lr_prompt: f.lr_prompt,
            lr_offsets: f.lr_offsets,
            lr_head: f.lr_head,
            batch_size: f.batch_size,
            eval_batch_size: f.eval_batch_size,
            steps: f.steps,
            warmup: f.warmup,
            eval_every: f.eval_every,
            checkpoint_every: f.checkpoint_every,
            log_every: f.log_every,
            early_stop: f.early_stop,
            over_length: f.over_length,
            pooling: f.pooling,
            seed: f.seed,
            autocast: f.autocast.into(),
        }
    }
}

/// Provenance of a trained adapter (`run.json`), read by `eval` and the exporter.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunManifest {
    pub adept_version: String,
    pub model_dir: String,
    pub model_family: String,
    pub model_sha256: String,
    pub tokenizer_sha256: String,
    pub task: String,
    pub label_names: Vec<String>,
    pub regression: bool,
    pub text_fields: Vec<String>,
    pub max_len: usize,
    pub pooling: Pooling,
    pub train_config: TrainConfig,
    pub step: usize,
    pub validation_metrics: BTreeMap<String, f64>,
}

pub struct RunDir {
    path: PathBuf,
    /// The model folder and its checksums, recorded in every manifest.
    pub model_dir: PathBuf,
    pub model_sha256: String,
    pub tokenizer_sha256: String,
}

impl RunDir {
    /// Opens (creating) a run folder for a model folder; with `resume` false an existing
    /// checkpoint is an error unless `overwrite`.
    pub fn create(
        path: &Path,
        model_dir: &Path,
        cfg: &TrainConfig,
        resume: bool,
        overwrite: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create run folder {}", path.display()))?;
        let run = Self {
            path: path.to_path_buf(),
            model_dir: model_dir.to_path_buf(),
            model_sha256: sha256_file(&model_dir.join("model.safetensors"))?,
            tokenizer_sha256: sha256_file(&model_dir.join("tokenizer.json"))?,
        };
        let cfg_path = run.config_path();
        if resume {
            if cfg_path.exists() {
                let saved: TrainConfig = serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)
                    .with_context(|| format!("{} is not a training config", cfg_path.display()))?;
                if saved.autocast != cfg.autocast {
                    anyhow::bail!(
                        "cannot resume {}: it was trained with --autocast {}, and {} was given now; \
                         resume it with --autocast {}",
                        path.display(),
                        saved.autocast,
                        cfg.autocast,
                        saved.autocast
                    );
                }
                if saved.hash() != cfg.hash() {
                    anyhow::bail!(
                        "cannot resume {}: its training config differs from the one given now (compare {})",
                        path.display(),
                        cfg_path.display()
                    );
                }
            }
        } else if run.checkpoint_path().exists() && !overwrite {
            anyhow::bail!(
                "{} already holds a run; pass --resume to continue it or --overwrite to start again",
                path.display()
            );
        } else {
            for f in [run.checkpoint_path(), run.metrics_path()] {
                if f.exists() {
                    std::fs::remove_file(&f)?;
                }
            }
        }
        write_atomic(&cfg_path, &serde_json::to_vec_pretty(cfg)?)?;
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn config_path(&self) -> PathBuf {
        self.path.join("train_config.json")
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("checkpoint.safetensors")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    pub fn best_dir(&self) -> PathBuf {
        self.path.join("best")
    }

    pub fn metrics_writer(&self) -> Result<BufWriter<File>> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.metrics_path())
            .with_context(|| format!("cannot open {}", self.metrics_path().display()))?;
        Ok(BufWriter::new(f))
    }

    /// Drops metric lines logged after `step` (they belong to work the checkpoint does not hold).
    pub fn truncate_metrics_after(&self, step: usize) -> Result<()> {
        let path = self.metrics_path();
        if !path.exists() {
            return Ok(());
        }
        let mut kept = Vec::new();
        for line in BufReader::new(File::open(&path)?).lines() {
            let line = line?;
            let keep = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step);
            if keep {
                kept.push(line);
            }
        }
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())
    }

    /// Writes the current adapter, head and manifest as the new `best/`.
    pub fn save_best(
        &self,
        model: &Classifier,
        task: &TaskData,
        cfg: &TrainConfig,
        enc: &TextEncoder,
        metrics: &BTreeMap<String, f64>,
        step: usize,
    ) -> Result<()> {
        let fresh = self.path.join(".best.new");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh)?;
        }
        model.adapter.save(&fresh)?;
        let head_path = fresh.join("head.safetensors");
        // The bytes `candle_core::safetensors::save` writes (same serializer, no metadata),
        // flushed to disk before `best/` is renamed into place.
        let head_bytes = safetensors::serialize(&model.head.tensors(), None)
            .with_context(|| format!("cannot serialise {}", head_path.display()))?;
        write_atomic(&head_path, &head_bytes)?;
        let manifest = RunManifest {
            adept_version: env!("CARGO_PKG_VERSION").to_string(),
            model_dir: self.model_dir.display().to_string(),
            model_family: model.backbone.family().into(),
            model_sha256: self.model_sha256.clone(),
            tokenizer_sha256: self.tokenizer_sha256.clone(),
            task: task.name.clone(),
            label_names: task.label_names.clone(),
            regression: task.regression,
            text_fields: task.text_fields.clone(),
            max_len: enc.max_len,
            pooling: model.pooling,
            train_config: cfg.clone(),
            step,
            validation_metrics: metrics.clone(),
        };
        write_atomic(
            &fresh.join("run.json"),
            &serde_json::to_vec_pretty(&manifest)?,
        )?;
        self.install_best(&fresh)
    }

    /// Writes a causal-LM run's adapter (PEFT layout) and `run.json` ([`LmRunManifest`], its
    /// provenance fields filled from this run folder) as the new `best/`.
    pub fn save_best_lm(
        &self,
        adapter: &adept_adapters::Adapter,
        manifest: &LmRunManifest,
    ) -> Result<()> {
        let fresh = self.path.join(".best.new");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh)?;
        }
        adapter.save(&fresh)?;
        let mut m = manifest.clone();
        m.adept_version = env!("CARGO_PKG_VERSION").to_string();
        m.task_kind = CAUSAL_LM_TASK_KIND.to_string();
        m.model_dir = self.model_dir.display().to_string();
        m.model_sha256 = self.model_sha256.clone();
        m.tokenizer_sha256 = self.tokenizer_sha256.clone();
        write_atomic(&fresh.join("run.json"), &serde_json::to_vec_pretty(&m)?)?;
        self.install_best(&fresh)
    }

    /// Replaces `best/` by the complete folder `fresh` (rename; the old one removed after).
    fn install_best(&self, fresh: &Path) -> Result<()> {
        let best = self.best_dir();
        let old = self.path.join(".best.old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if best.exists() {
            std::fs::rename(&best, &old)?;
        }
        std::fs::rename(fresh, &best)?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }
}

/// `task_kind` of a causal-LM run's `run.json` (encoder runs have no such key).
pub const CAUSAL_LM_TASK_KIND: &str = "causal-lm";

/// Provenance of a causal-LM adapter (`run.json` with `"task_kind": "causal-lm"`): what
/// `eval` and the exporter need to rebuild the data, the tokenisation and the generation
/// settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LmRunManifest {
    pub adept_version: String,
    /// Always [`CAUSAL_LM_TASK_KIND`].
    pub task_kind: String,
    pub model_dir: String,
    pub model_family: String,
    pub model_type: String,
    pub model_sha256: String,
    pub tokenizer_sha256: String,
    /// A built-in task's name, or the stem of the prompt/completion file.
    pub task: String,
    /// Custom prompt/completion data (`None` for a built-in task).
    pub train_file: Option<String>,
    pub validation_file: Option<String>,
    pub prompt_field: Option<String>,
    pub completion_field: Option<String>,
    /// The verbaliser of a built-in task: prompt template and one label word per class
    /// (empty for regression and custom pairs).
    pub template: Option<String>,
    pub label_words: Vec<String>,
    pub regression: bool,
    /// The chat template the prompts were rendered with (its source), if any.
    pub chat_template: Option<String>,
    /// Longest sequence in tokens (BOS and EOS included, soft prompt excluded).
    pub max_len: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub train_config: TrainConfig,
    pub step: usize,
    pub validation_metrics: BTreeMap<String, f64>,
}

/// The `task_kind` of a trained adapter folder's `run.json`: `"causal-lm"`, or `"encoder"`
/// when the key is absent.
pub fn run_task_kind(adapter_dir: &Path) -> Result<String> {
    let p = adapter_dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", p.display()))?;
    Ok(v.get("task_kind")
        .and_then(|k| k.as_str())
        .unwrap_or("encoder")
        .to_string())
}

/// Reads a causal-LM run's `run.json` ([`LmRunManifest`]).
pub fn read_lm_manifest(adapter_dir: &Path) -> Result<LmRunManifest> {
    let p = adapter_dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let m: LmRunManifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a causal-LM run manifest", p.display()))?;
    anyhow::ensure!(
        m.task_kind == CAUSAL_LM_TASK_KIND,
        "{} has task_kind {:?}, expected {CAUSAL_LM_TASK_KIND:?}",
        p.display(),
        m.task_kind
    );
    Ok(m)
}

/// Reads `run.json` of a trained adapter folder (a run's `best/`).
pub fn read_manifest(adapter_dir: &Path) -> Result<RunManifest> {
    let p = adapter_dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not an adept run manifest", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `train_config.json` of an ADePT run written before `TrainConfig` embedded the adapter's
    /// config (verbatim), and the config hash its checkpoint recorded.
    const OLD_ADEPT: &str = r#"{
  "method": "adept",
  "prompt_len": 60,
  "rank": 19,
  "budget": 38400,
  "prompt_init_text": null,
  "lr_prompt": 0.3,
  "lr_offsets": 0.001,
  "lr_head": 0.001,
  "batch_size": 32,
  "eval_batch_size": 64,
  "steps": 20,
  "warmup": 2,
  "eval_every": 20,
  "checkpoint_every": 100,
  "log_every": 10,
  "early_stop": null,
  "max_len": 128,
  "over_length": "truncate",
  "pooling": "mean",
  "seed": 42,
  "dropout": 0.1,
  "dept_alpha": 8.0
}"#;

    /// The same for a DePT run with `--seed 7 --prompt-init-text "a great movie"
    /// --prompt-len 10 --steps 2`.
    const OLD_DEPT_TEXT: &str = r#"{
  "method": "dept",
  "prompt_len": 10,
  "rank": 67,
  "budget": 38400,
  "prompt_init_text": "a great movie",
  "lr_prompt": 0.3,
  "lr_offsets": 0.001,
  "lr_head": 0.001,
  "batch_size": 32,
  "eval_batch_size": 64,
  "steps": 2,
  "warmup": 0,
  "eval_every": 2,
  "checkpoint_every": 100,
  "log_every": 10,
  "early_stop": null,
  "max_len": 128,
  "over_length": "truncate",
  "pooling": "mean",
  "seed": 7,
  "dropout": 0.1,
  "dept_alpha": 8.0
}"#;

    #[test]
    fn old_train_configs_load_rewrite_identically_and_keep_their_hash() {
        let variants = [
            (OLD_ADEPT.to_string(), "ebf5dfefa72b8b37"),
            (
                OLD_ADEPT
                    .replace("\"adept\"", "\"dept\"")
                    .replace("\"rank\": 19", "\"rank\": 30"),
                "3923826d4768d262",
            ),
            (
                OLD_ADEPT
                    .replace("\"adept\"", "\"pt\"")
                    .replace("\"prompt_len\": 60", "\"prompt_len\": 100")
                    .replace("\"rank\": 19", "\"rank\": 0"),
                "0959cbc27241f3bc",
            ),
            (
                OLD_ADEPT
                    .replace("\"adept\"", "\"head-only\"")
                    .replace("\"prompt_len\": 60", "\"prompt_len\": 0")
                    .replace("\"rank\": 19", "\"rank\": 0"),
                "ad120638a256f68a",
            ),
            (OLD_DEPT_TEXT.to_string(), "8e24a3278508fa3b"),
        ];
        for (text, hash) in variants {
            let cfg: TrainConfig = serde_json::from_str(&text).unwrap();
            assert_eq!(cfg.hash(), hash, "{text}");
            assert_eq!(serde_json::to_string_pretty(&cfg).unwrap(), text);
        }
        let cfg: TrainConfig = serde_json::from_str(OLD_DEPT_TEXT).unwrap();
        assert_eq!(cfg.method(), MethodKind::Dept);
        assert_eq!(
            (cfg.prompt_len(), cfg.adapter.rank, cfg.max_len()),
            (10, 67, 128)
        );
        assert_eq!(cfg.adapter.prompt_init, PromptInit::text("a great movie"));
        assert_eq!(cfg.adapter.alpha, 8.0);
        assert_eq!(cfg.seed, 7);
    }

    #[test]
    fn every_setting_changes_the_hash_but_logging_does_not() {
        let base: TrainConfig = serde_json::from_str(OLD_ADEPT).unwrap();
        let changed: Vec<Box<dyn Fn(&mut TrainConfig)>> = vec![
            Box::new(|c| c.adapter.method = MethodKind::Dept),
            Box::new(|c| c.adapter.prompt_len = 61),
            Box::new(|c| c.adapter.rank = 18),
            Box::new(|c| c.adapter.budget = 1),
            Box::new(|c| c.adapter.prompt_init = PromptInit::text("hi")),
            Box::new(|c| c.adapter.prompt_init = PromptInit::SampleVocab { seed: 1 }),
            Box::new(|c| c.adapter.max_length = 64),
            Box::new(|c| c.adapter.dropout = 0.0),
            Box::new(|c| c.adapter.alpha = 4.0),
            Box::new(|c| c.lr_prompt = 0.5),
            Box::new(|c| c.steps = 21),
            Box::new(|c| c.set_seed(1)),
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut c = base.clone();
            change(&mut c);
            assert_ne!(c.hash(), base.hash(), "change {i}");
            // And what changed survives the file.
            let back: TrainConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back.hash(), c.hash(), "change {i}");
            assert_eq!(
                back.adapter.prompt_init, c.adapter.prompt_init,
                "change {i}"
            );
        }
        let mut c = base.clone();
        c.log_every = 1;
        assert_eq!(c.hash(), base.hash());
        // The width comes from the model, not from the settings.
        c.adapter.token_dim = 384;
        assert_eq!(c.hash(), base.hash());
    }

    #[test]
    fn set_seed_moves_sampled_prompt_rows_but_not_a_text_init() {
        let mut c = TrainConfig::defaults(MethodKind::Adept);
        assert_eq!(c.adapter.prompt_init, PromptInit::SampleVocab { seed: 42 });
        c.set_seed(7);
        assert_eq!(c.adapter.prompt_init, PromptInit::SampleVocab { seed: 7 });
        assert!(!serde_json::to_string(&c)
            .unwrap()
            .contains("prompt_init_seed"));
        c.adapter.prompt_init = PromptInit::text("x");
        c.set_seed(9);
        assert_eq!(c.adapter.prompt_init, PromptInit::text("x"));
    }
}
