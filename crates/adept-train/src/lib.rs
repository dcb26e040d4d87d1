//! Training and evaluation of adapters on a frozen backbone.
//!
//! Data flow, one module per stage:
//! `task` (examples, labels, scoring) → `tokenize` (text → ids) → `batch` (dynamic padding) →
//! `model` (word embeddings → adapter → backbone → pooling → head → loss) → `trainer` (AdamW per
//! group, schedule, evaluation, best checkpoint, resume) → `run` (files on disk).

pub mod batch;
pub mod checkpoint;
pub mod lm;
pub mod lm_batch;
pub mod lm_train;
pub mod model;
pub mod optim;
pub mod run;
pub mod seq2seq;
pub mod task;
pub mod tokenize;
pub mod trainer;

pub use lm::CausalLmModel;
pub use lm_batch::{LmBatch, LmEncoder, LmFeatures, ScoreBatch};
pub use model::{Classifier, Head, Pooling};
pub use run::{read_manifest, LmRunManifest, RunDir, RunManifest, TrainConfig};
pub use task::{Predictions, Scores, SplitChoice, TaskData};
pub use tokenize::{OverLength, TextEncoder};
pub use trainer::{predict, train, TrainReport};

use adept_adapters::{solve_rank, Adapter, PromptInit};
use adept_backbones::Encoder;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::Path;

/// Resolves the adapter of `cfg` for a model of width `d`: fills `cfg.adapter.token_dim`, and the
/// budget and rank when not given.
pub fn resolve_budget(cfg: &mut TrainConfig, d: usize) -> Result<()> {
    let a = &mut cfg.adapter;
    a.token_dim = d;
    if a.budget == 0 {
        a.budget = adept_adapters::default_budget(d);
    }
    if a.rank == 0 {
        a.rank = solve_rank(a.method, d, a.prompt_len, a.budget, a.max_length)?;
    }
    Ok(())
}

/// Builds a fresh classifier: a frozen encoder (`adept_backbones::load_encoder`), a new adapter
/// (`cfg.adapter`, its text prompt init tokenized by `enc`) and head. The encoder is put in
/// `cfg.autocast`'s precision after the adapter has read its (f32) embedding table; a family
/// without that precision is an error naming it.
pub fn build_classifier(
    backbone: Box<dyn Encoder>,
    enc: &TextEncoder,
    cfg: &TrainConfig,
    num_outputs: usize,
) -> Result<Classifier> {
    let d = backbone.hidden_size();
    if enc.vocab_size() > backbone.vocab_size() {
        bail!(
            "the tokenizer has {} tokens but the model's embedding table only {} rows: tokenizer and model do not match",
            enc.vocab_size(),
            backbone.vocab_size()
        );
    }
    let max_positions = backbone.max_sequence_len();
    if cfg.max_len() + cfg.prompt_len() > max_positions {
        bail!(
            "max length {} plus a {}-token prompt exceeds the model's {} positions",
            cfg.max_len(),
            cfg.prompt_len(),
            max_positions
        );
    }
    let mut acfg = cfg.adapter.clone();
    acfg.token_dim = d;
    if let PromptInit::Text { text, token_ids } = &mut acfg.prompt_init {
        *token_ids = enc.ids_without_special(text)?;
    }
    let adapter = Adapter::init(acfg, backbone.word_embedding_table(), cfg.seed)?;
    let mut backbone = backbone;
    backbone.set_autocast(cfg.autocast)?;
    let head = Head::init(d, num_outputs, cfg.seed.wrapping_add(1), backbone.device())?;
    Ok(Classifier {
        backbone,
        adapter,
        head,
        pooling: cfg.pooling,
    })
}

/// Loads a trained adapter folder (a run's `best/`) onto its frozen model.
pub fn load_trained(
    adapter_dir: &Path,
    model_dir: Option<&Path>,
    device: &Device,
) -> Result<(Classifier, TextEncoder, RunManifest)> {
    let manifest = read_manifest(adapter_dir)?;
    let model_dir = model_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(&manifest.model_dir));
    let sha = adept_bundle::sha256_file(&model_dir.join("model.safetensors"))?;
    if sha != manifest.model_sha256 {
        bail!(
            "{} is not the model this adapter was trained on (checksum {}, expected {})",
            model_dir.join("model.safetensors").display(),
            &sha[..12],
            &manifest.model_sha256[..12]
        );
    }
    let backbone = adept_backbones::load_encoder(&model_dir, device)?;
    let enc = TextEncoder::from_file(
        &model_dir.join("tokenizer.json"),
        manifest.max_len,
        manifest.train_config.over_length,
    )?;
    let adapter = Adapter::load(adapter_dir, device)?;
    if adapter.config.token_dim != backbone.hidden_size() {
        bail!(
            "adapter width {} does not match the model's {}",
            adapter.config.token_dim,
            backbone.hidden_size()
        );
    }
    let n = if manifest.regression {
        1
    } else {
        manifest.label_names.len()
    };
    let head = Head::init(backbone.hidden_size(), n, 0, device)?;
    let head_path = adapter_dir.join("head.safetensors");
    let values = candle_core::safetensors::load(&head_path, device)
        .with_context(|| format!("cannot read {}", head_path.display()))?;
    head.set_values(&values)
        .with_context(|| format!("in {}", head_path.display()))?;
    if !adapter.imp().has_prompt() && adapter.prompt_len() != 0 {
        bail!(
            "inconsistent {} adapter: it has no prompt",
            adapter.method()
        );
    }
    Ok((
        Classifier {
            backbone,
            adapter,
            head,
            pooling: manifest.pooling,
        },
        enc,
        manifest,
    ))
}
