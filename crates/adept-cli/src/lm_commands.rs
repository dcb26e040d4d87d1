//! `adept train` / `eval` / `export` for causal language models (a `--model` folder whose
//! `config.json` names a causal-LM family, e.g. SmolLM2's `llama`).
//!
//! * **Data.** `--task` is verbalised by the task's prompt template and label words;
//!   `--train-file` must be JSONL prompt/completion objects (`--prompt-field`,
//!   `--completion-field`; `--validation-file`, else a seeded 10% is held out). With
//!   `--chat-template`, prompts become user turns rendered by the model folder's
//!   `tokenizer_config.json` template.
//! * **Tokens.** The model folder's `tokenizer.json`; EOS, BOS and padding ids from
//!   `config.json` / `generation_config.json` (padding falls back to the EOS); a BOS is prepended
//!   only when `tokenizer_config.json` says `add_bos_token: true` (SmolLM2 does not).
//! * **Order.** Data are loaded and tokenised before the run folder is created, so bad input
//!   leaves no half-written run behind.

use crate::args::{EvalArgs, TrainArgs};
use crate::commands::{device, load_task};
use adept_adapters::PromptInit;
use adept_data::causal::{load_prompt_completion, ChatTemplate, LmExample, PromptCompletionSpec};
use adept_train::lm_train::{
    build_causal_lm, build_eval, evaluate, lm_defaults, manifest_skeleton, LmData, LmJob,
    SpecialTokens,
};
use adept_train::{LmEncoder, LmRunManifest};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// Whether `dir`'s `config.json` names a causal-LM family.
pub fn is_causal_lm(dir: &Path) -> Result<bool> {
    let (family, _) = adept_backbones::registry::family_of(dir)?;
    Ok(matches!(
        family.load,
        adept_backbones::registry::Loader::CausalLm(_)
    ))
}

/// Whether the tokenizer of `dir` asks for a BOS (`tokenizer_config.json` `add_bos_token`).
fn adds_bos(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("add_bos_token").and_then(|b| b.as_bool()))
        .unwrap_or(false)
}

/// The model folder's tokenizer as an [`LmEncoder`] of `max_len` tokens.
pub fn lm_encoder(dir: &Path, max_len: usize, special: &SpecialTokens) -> Result<LmEncoder> {
    let tok = adept_train::tokenize::load_tokenizer(&dir.join("tokenizer.json"))?;
    let vocab = tok.get_vocab_size(true);
    let mut enc = LmEncoder::new(tok, max_len, special.eos.first().copied())
        .with_context(|| format!("tokenizer of {}", dir.display()))?;
    if adds_bos(dir) {
        enc = enc.with_bos(special.bos);
    }
    if let Some(p) = special.pad.filter(|&p| (p as usize) < vocab) {
        enc.pad_id = p;
    }
    Ok(enc)
}

/// The chat template of `dir`'s `tokenizer_config.json`, for `--chat-template`.
fn chat_template(dir: &Path) -> Result<ChatTemplate> {
    let path = dir.join("tokenizer_config.json");
    ChatTemplate::from_tokenizer_config(&path).map_err(|e| {
        anyhow::anyhow!(
            "--chat-template: {e}; the model folder {} has no usable chat template (drop --chat-template to train on plain prompts)",
            dir.display()
        )
    })
}

/// The first `n` of a seeded shuffle of `v` (`None`: all).
fn limit(mut v: Vec<LmExample>, n: Option<usize>, seed: u64) -> Vec<LmExample> {
    if let Some(n) = n.filter(|&n| n < v.len()) {
        v.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        v.truncate(n);
    }
    v
}

/// What the data flags name, as prompt/completion pairs.
struct DataChoice<'a> {
    task: Option<String>,
    train_file: Option<&'a Path>,
    validation_file: Option<&'a Path>,
    spec: PromptCompletionSpec,
}

fn load_lm_data(
    data: &crate::args::DataArgs,
    choice: &DataChoice,
    seed: u64,
    chat: Option<&ChatTemplate>,
) -> Result<LmData> {
    let d = match choice.train_file {
        Some(train) => {
            let is_jsonl = train
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
            if !is_jsonl {
                bail!(
                    "{}: a causal LM trains on a JSONL file of {{\"{}\": …, \"{}\": …}} objects (one per line, \
                     extension .jsonl); CSV/TSV classification files are for encoder models",
                    train.display(),
                    choice.spec.prompt_field,
                    choice.spec.completion_field
                );
            }
            let t = load_prompt_completion(train, &choice.spec)?;
            let v = choice
                .validation_file
                .map(|p| load_prompt_completion(p, &choice.spec))
                .transpose()?;
            let name = train
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "custom".into());
            let mut d = LmData::pairs(&name, t, v, seed)?;
            d.train = limit(d.train, data.train_limit, seed);
            d.validation = limit(d.validation, data.eval_limit, seed);
            d.references = d.validation.iter().map(|e| e.completion.clone()).collect();
            d
        }
        None => {
            let mut args = data.clone();
            args.task = choice.task.clone();
            args.train_file = None;
            let task = load_task(&args, seed)?;
            let kind = adept_data::TaskKind::parse(&task.name)?;
            LmData::builtin(kind, task)?
        }
    };
    match chat {
        Some(c) => d.with_chat(c),
        None => Ok(d),
    }
}

pub fn train(a: &TrainArgs, model_dir: &Path) -> Result<()> {
    let mut cfg = crate::commands::train_config_from(a, lm_defaults(a.method));
    if a.budget.is_some() && a.rank.is_none() {
        cfg.adapter.rank = 0; // solved from the budget
    }
    let dev = device(&a.model.device)?;
    let special = SpecialTokens::from_model_dir(model_dir)?;
    let enc = lm_encoder(model_dir, cfg.max_len(), &special)?;
    let chat =
        a.lm.chat_template
            .then(|| chat_template(model_dir))
            .transpose()?;
    let choice = DataChoice {
        task: a.data.task.clone(),
        train_file: a.data.train_file.as_deref(),
        validation_file: a.data.validation_file.as_deref(),
        spec: PromptCompletionSpec {
            prompt_field: a.lm.prompt_field.clone(),
            completion_field: a.lm.completion_field.clone(),
        },
    };
    let data = load_lm_data(&a.data, &choice, cfg.seed, chat.as_ref())?;
    let (name, n_train, n_val) = (data.name.clone(), data.train.len(), data.validation.len());

    let backbone = adept_backbones::load_causal_lm(model_dir, &dev)?;
    if enc.tokenizer().get_vocab_size(true) > backbone.vocab_size() {
        bail!(
            "{}: the tokenizer has {} tokens but the model's embedding table only {} rows: tokenizer and model do not match",
            model_dir.join("tokenizer.json").display(),
            enc.tokenizer().get_vocab_size(true),
            backbone.vocab_size()
        );
    }
    adept_train::resolve_budget(&mut cfg, backbone.hidden_size())?;
    let init_ids = match &cfg.adapter.prompt_init {
        PromptInit::Text { text, .. } => Some(enc.tokens(text)?),
        _ => None,
    };
    let model = build_causal_lm(backbone, &cfg, init_ids)?;
    let mut manifest = manifest_skeleton(&model, &name, cfg.max_len(), &special, &cfg);
    if let Some(t) = &a.data.train_file {
        manifest.train_file = Some(t.display().to_string());
        manifest.validation_file = a
            .data
            .validation_file
            .as_ref()
            .map(|p| p.display().to_string());
        manifest.prompt_field = Some(a.lm.prompt_field.clone());
        manifest.completion_field = Some(a.lm.completion_field.clone());
    }
    let job = LmJob::new(&model, &enc, data, special.eos.clone(), manifest)?;

    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}-{}-s{}",
            name.to_lowercase(),
            model.backbone.family(),
            a.method,
            cfg.seed
        ))
    });
    let run = adept_train::RunDir::create(&out, model_dir, &cfg, a.resume, a.overwrite)?;
    tracing::info!(
        "{} on {name} ({} causal LM): {n_train} train / {n_val} validation pairs; l = {}, r = {}, {} trainable parameters; validation by {}; run folder {}",
        cfg.method(),
        model.backbone.family(),
        cfg.prompt_len(),
        cfg.adapter.rank,
        model.adapter.config.param_count(),
        match job.eval {
            adept_train::lm_train::LmEval::Scoring { .. } => "label-word scoring",
            _ => "greedy generation",
        },
        out.display()
    );
    let report = adept_train::lm_train::train_lm(&job, &cfg, &run, a.resume, a.stop_after)?;
    let summary = serde_json::json!({
        "run": out.display().to_string(),
        "task": name,
        "task_kind": "causal-lm",
        "method": cfg.method().to_string(),
        "prompt_len": cfg.prompt_len(),
        "rank": cfg.adapter.rank,
        "seed": cfg.seed,
        "peak_rss_mb": adept_train::lm_train::peak_rss_mb(),
        "report": report,
    });
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// `adept eval --run` of a causal-LM run: label-word scoring (classification tasks) and greedy
/// generation metrics on the validation split, one JSON object.
pub fn eval(a: &EvalArgs, dir: &Path, dev: &Device) -> Result<()> {
    let (model, m): (_, LmRunManifest) =
        adept_train::lm_train::load_trained_lm(dir, a.model.as_deref(), dev)?;
    let model_dir = a
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(&m.model_dir));
    let special = SpecialTokens {
        bos: m.bos_token_id,
        eos: m.eos_token_ids.clone(),
        pad: m.pad_token_id,
    };
    let enc = lm_encoder(&model_dir, m.max_len, &special)?;
    let chat = match &m.chat_template {
        Some(src) => {
            let c = chat_template(&model_dir)?;
            if c.source() != src {
                tracing::warn!(
                    "the chat template of {} differs from the one the run was trained with",
                    model_dir.display()
                );
            }
            Some(c)
        }
        None => None,
    };
    let train_file = a
        .data
        .train_file
        .clone()
        .or_else(|| m.train_file.as_ref().map(PathBuf::from));
    let validation_file = a
        .data
        .validation_file
        .clone()
        .or_else(|| m.validation_file.as_ref().map(PathBuf::from));
    let choice = DataChoice {
        task: a.data.task.clone().or_else(|| Some(m.task.clone())),
        train_file: train_file.as_deref(),
        validation_file: validation_file.as_deref(),
        spec: PromptCompletionSpec {
            prompt_field: m.prompt_field.clone().unwrap_or_else(|| "prompt".into()),
            completion_field: m
                .completion_field
                .clone()
                .unwrap_or_else(|| "completion".into()),
        },
    };
    let seed = m.train_config.seed;
    let load = || load_lm_data(&a.data, &choice, seed, chat.as_ref());
    let data = load()?;
    let (name, n) = (data.name.clone(), data.validation.len());
    let classification = data.is_classification();
    let mut out = serde_json::json!({
        "adapter": dir.display().to_string(),
        "task": name,
        "task_kind": "causal-lm",
        "split": "validation",
        "examples": n,
    });
    let data = if classification {
        let (ev, _) = build_eval(&enc, data, false)?;
        let s = evaluate(&model, &ev, a.batch_size, enc.pad_id, &special.eos)?;
        out["label_word_scoring"] = serde_json::json!({"metrics": s.metrics, "primary": s.primary});
        out["metrics"] = serde_json::json!(s.metrics);
        out["primary"] = serde_json::json!(s.primary);
        load()?
    } else {
        data
    };
    let (ev, _) = build_eval(&enc, data, true)?;
    let s = evaluate(&model, &ev, a.batch_size, enc.pad_id, &special.eos)?;
    out["generation"] = serde_json::json!({"metrics": s.metrics, "primary": s.primary});
    if !classification {
        out["metrics"] = serde_json::json!(s.metrics);
        out["primary"] = serde_json::json!(s.primary);
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// One JSON line describing a written decoder bundle.
pub fn export_summary(r: &adept_export::decoder::DecoderExportReport) -> Result<String> {
    let m = &r.manifest;
    Ok(serde_json::to_string(&serde_json::json!({
        "task_kind": "causal-lm",
        "method": m.method,
        "fold": m.fold,
        "dtype": m.dtype,
        "prompt_len": m.prompt_length,
        "vocab_size": m.vocab_size,
        "nodes": r.nodes,
        "model_bytes": r.model_bytes,
    }))?)
}
