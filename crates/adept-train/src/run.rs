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
use adept_adapters::{write_atomic, MethodKind};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

/// Everything that determines a run (saved as `train_config.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub method: MethodKind,
    /// Soft-prompt rows `l`.
    pub prompt_len: usize,
    /// Offset rank; solved from the budget when not given.
    pub rank: usize,
    pub budget: usize,
    /// Prompt initialisation: a text whose token embeddings are repeated, or sampled vocab rows.
    pub prompt_init_text: Option<String>,
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
}

impl TrainConfig {
    /// The defaults that worked for short runs on all-MiniLM-L6-v2 (see the README's table).
    pub fn defaults(method: MethodKind) -> Self {
        Self {
            method,
            prompt_len: match method {
                MethodKind::Pt => 100,
                MethodKind::HeadOnly => 0,
                _ => 60,
            },
            rank: 0,
            budget: 0,
            prompt_init_text: None,
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
            max_len: 128,
            over_length: OverLength::Truncate,
            pooling: Pooling::Mean,
            seed: 42,
            dropout: 0.1,
            dept_alpha: 8.0,
        }
    }

    /// A stable fingerprint of the settings that change the optimisation trajectory.
    pub fn hash(&self) -> String {
        let mut c = self.clone();
        // Logging cadence does not change the result.
        c.log_every = 0;
        let bytes = serde_json::to_vec(&c).expect("config serialises");
        hex::encode(&Sha256::digest(&bytes)[..8])
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

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
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
        let head_tmp = fresh.join("head.safetensors");
        candle_core::safetensors::save(&model.head.tensors(), &head_tmp)
            .with_context(|| format!("cannot write {}", head_tmp.display()))?;
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
        let best = self.best_dir();
        let old = self.path.join(".best.old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if best.exists() {
            std::fs::rename(&best, &old)?;
        }
        std::fs::rename(&fresh, &best)?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }
}

/// Reads `run.json` of a trained adapter folder (a run's `best/`).
pub fn read_manifest(adapter_dir: &Path) -> Result<RunManifest> {
    let p = adapter_dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not an adept run manifest", p.display()))
}
