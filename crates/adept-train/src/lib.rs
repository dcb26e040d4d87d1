//! Training and evaluation of adapters on a frozen backbone.
//!
//! Data flow, one module per stage:
//! `task` (examples, labels, scoring) → `tokenize` (text → ids) → `batch` (dynamic padding) →
//! `model` (word embeddings → adapter → backbone → pooling → head → loss) → `trainer` (AdamW per
//! group, schedule, evaluation, best checkpoint, resume) → `run` (files on disk).

pub mod batch;
pub mod checkpoint;
pub mod model;
pub mod optim;
pub mod run;
pub mod task;
pub mod tokenize;
pub mod trainer;

pub use model::{Classifier, Head, Pooling};
pub use run::{read_manifest, RunDir, RunManifest, TrainConfig};
pub use task::{Predictions, Scores, SplitChoice, TaskData};
pub use tokenize::{OverLength, TextEncoder};
pub use trainer::{predict, train, TrainReport};

use adept_adapters::{solve_rank, Adapter, AdapterConfig, MethodKind, PromptInit};
use adept_backbones::Encoder;
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::Path;

/// Resolves the rank and budget of `cfg` for a model of width `d` (fills `cfg.rank`/`cfg.budget`).
pub fn resolve_budget(cfg: &mut TrainConfig, d: usize) -> Result<()> {
    if cfg.budget == 0 {
        cfg.budget = adept_adapters::default_budget(d);
    }
    if cfg.rank == 0 {
        cfg.rank = solve_rank(cfg.method, d, cfg.prompt_len, cfg.budget, cfg.max_len)?;
    }
    Ok(())
}

/// Builds a fresh classifier: a frozen encoder (`adept_backbones::load_encoder`), a new adapter
/// and head.
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
    if cfg.max_len + cfg.prompt_len > max_positions {
        bail!(
            "max length {} plus a {}-token prompt exceeds the model's {} positions",
            cfg.max_len,
            cfg.prompt_len,
            max_positions
        );
    }
    let mut acfg = AdapterConfig::new(cfg.method, d, cfg.prompt_len, cfg.rank);
    acfg.budget = cfg.budget;
    acfg.max_length = cfg.max_len;
    acfg.alpha = cfg.dept_alpha;
    acfg.dropout = cfg.dropout;
    acfg.prompt_init = match &cfg.prompt_init_text {
        Some(text) => PromptInit::Text {
            text: text.clone(),
            token_ids: enc.ids_without_special(text)?,
        },
        None => PromptInit::SampleVocab { seed: cfg.seed },
    };
    let adapter = Adapter::init(acfg, backbone.word_embedding_table(), cfg.seed)?;
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
    let sha = run::sha256_file(&model_dir.join("model.safetensors"))?;
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
    if adapter.method() == MethodKind::HeadOnly && adapter.prompt_len() != 0 {
        bail!("inconsistent head-only adapter");
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
