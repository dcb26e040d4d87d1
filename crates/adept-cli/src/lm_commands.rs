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
    build_causal_lm, build_eval, evaluate_with, lm_defaults, manifest_skeleton, LmData, LmJob,
    LmScorer, SpecialTokens,
};
use adept_train::{LmEncoder, LmFeatures, LmRunManifest};
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

/// The model folder's tokenizer as an [`LmEncoder`] of `max_len` tokens.
pub fn lm_encoder(dir: &Path, max_len: usize, special: &SpecialTokens) -> Result<LmEncoder> {
    let tok = adept_train::tokenize::load_tokenizer(&dir.join("tokenizer.json"))?;
    let vocab = tok.get_vocab_size(true);
    let mut enc = LmEncoder::new(tok, max_len, special.eos.first().copied())
        .with_context(|| format!("tokenizer of {}", dir.display()))?;
    enc = enc.with_bos(special.bos);
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
    let special = SpecialTokens::for_prompts(model_dir)?;
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
        // Runs written before the BOS followed `add_bos_token` recorded the id regardless.
        bos: m
            .bos_token_id
            .filter(|_| adept_train::lm_train::adds_bos(&model_dir)),
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
    let head = serde_json::json!({"adapter": dir.display().to_string()});
    let setup = EvalSetup {
        enc: &enc,
        eos: &special.eos,
        chat: chat.as_ref(),
        choice: &choice,
        seed: m.train_config.seed,
    };
    let out = score_lm(a, &mut &model, &setup, head)?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// What [`score_lm`] needs besides the scorer: the tokenisation rules, the EOS ids, the chat
/// template the model was tuned with, where the data come from and the split seed.
struct EvalSetup<'a> {
    enc: &'a LmEncoder,
    eos: &'a [u32],
    chat: Option<&'a ChatTemplate>,
    choice: &'a DataChoice<'a>,
    seed: u64,
}

/// The validation split scored by `scorer` (candle or a bundle): label-word scoring for
/// classification tasks, greedy generation always; `head` gets the task, counts and metrics.
fn score_lm(
    a: &EvalArgs,
    scorer: &mut dyn LmScorer,
    s: &EvalSetup<'_>,
    mut out: serde_json::Value,
) -> Result<serde_json::Value> {
    let load = || load_lm_data(&a.data, s.choice, s.seed, s.chat);
    let data = load()?;
    let (name, n) = (data.name.clone(), data.validation.len());
    let classification = data.is_classification();
    out["task"] = serde_json::json!(name);
    out["task_kind"] = serde_json::json!("causal-lm");
    out["split"] = serde_json::json!("validation");
    out["examples"] = serde_json::json!(n);
    let started = std::time::Instant::now();
    let data = if classification {
        let (ev, _) = build_eval(s.enc, data, false)?;
        let r = evaluate_with(scorer, &ev, a.batch_size, s.enc.pad_id, s.eos)?;
        out["label_word_scoring"] = serde_json::json!({"metrics": r.metrics, "primary": r.primary});
        out["metrics"] = serde_json::json!(r.metrics);
        out["primary"] = serde_json::json!(r.primary);
        load()?
    } else {
        data
    };
    let (ev, _) = build_eval(s.enc, data, true)?;
    let r = evaluate_with(scorer, &ev, a.batch_size, s.enc.pad_id, s.eos)?;
    out["generation"] = serde_json::json!({"metrics": r.metrics, "primary": r.primary});
    if !classification {
        out["metrics"] = serde_json::json!(r.metrics);
        out["primary"] = serde_json::json!(r.primary);
    }
    out["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    Ok(out)
}

/// An exported decoder bundle as an [`LmScorer`]: label-word rows through the graph's logits at
/// every position, greedy generation through the runtime's loop; both start from the bundle's
/// prompt cache.
struct BundleScorer<'g>(&'g mut adept_runtime::generate::Generator);

impl LmScorer for BundleScorer<'_> {
    fn row_logprob_sums(
        &mut self,
        rows: &[LmFeatures],
        batch_size: usize,
        _pad_id: u32,
    ) -> Result<Vec<f32>> {
        self.0.batch_size = batch_size.max(1);
        let rows: Vec<(&[u32], usize)> =
            rows.iter().map(|f| (&f.ids[..], f.target_start)).collect();
        self.0.continuation_logprobs(&rows)
    }

    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        eos: &[u32],
        _pad_id: u32,
        batch_size: usize,
    ) -> Result<Vec<Vec<u32>>> {
        self.0.batch_size = batch_size.max(1);
        let cfg = adept_bundle::generate::GenerationConfig {
            max_new_tokens,
            eos_token_ids: eos.to_vec(),
            ..Default::default()
        };
        let (gens, _) = self.0.generate_ids(prompts, &cfg, true, &mut |_, _| {})?;
        Ok(gens.into_iter().map(|g| g.token_ids).collect())
    }
}

/// `adept eval --bundle` on a decoder bundle: the same validation as `adept eval --run` (the
/// task's verbaliser, label-word scoring and greedy generation, the same metrics), with the
/// model in ONNX Runtime. The task is `--task`, else the bundle's; the prompt length limit, BOS,
/// EOS and chat template come from the bundle's `adept.json`; custom data (`--train-file`,
/// `--validation-file`) are JSONL `{"prompt", "completion"}` objects.
pub fn eval_bundle(
    a: &EvalArgs,
    bundle: &Path,
    opts: &adept_runtime::RuntimeOptions,
) -> Result<()> {
    let mut gen = adept_runtime::generate::Generator::open(bundle, opts)?;
    if let Some(why) = &gen.device_fallback {
        tracing::warn!("{why}");
    }
    let spec = gen.spec.clone();
    let manifest = gen.manifest.clone();
    let mut enc = LmEncoder::new(
        gen.tokenizer.clone(),
        manifest.max_length,
        spec.eos_token_ids.first().copied(),
    )
    .with_context(|| format!("the tokenizer of {}", bundle.display()))?
    .with_bos(spec.bos_token_id);
    enc.pad_id = spec.pad_token_id;
    let token = |id: Option<u32>| id.and_then(|i| gen.tokenizer.id_to_token(i));
    let chat = spec
        .chat_template
        .as_deref()
        .map(|src| {
            ChatTemplate::new(
                src,
                token(spec.bos_token_id).as_deref(),
                token(spec.eos_token_ids.first().copied()).as_deref(),
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: decoder.chat_template does not compile: {e}",
                    bundle.join(adept_bundle::MANIFEST_FILE).display()
                )
            })
        })
        .transpose()?;
    let builtin = adept_data::TaskKind::parse(&manifest.task).is_ok();
    if a.data.task.is_none() && a.data.train_file.is_none() && !builtin {
        bail!(
            "{} was trained on custom data ({:?}); pass the data to score: --train-file TRAIN.jsonl \
             --validation-file DEV.jsonl (or --train-file alone to score its seeded 10% hold-out), \
             or --task NAME for a built-in task",
            bundle.display(),
            manifest.task
        );
    }
    let task = a
        .data
        .task
        .clone()
        .or_else(|| builtin.then(|| manifest.task.clone()));
    let train_file = a
        .data
        .train_file
        .clone()
        .or_else(|| a.data.validation_file.clone());
    let choice = DataChoice {
        task,
        train_file: train_file.as_deref(),
        validation_file: a.data.validation_file.as_deref(),
        spec: PromptCompletionSpec {
            prompt_field: "prompt".into(),
            completion_field: "completion".into(),
        },
    };
    let head = serde_json::json!({
        "bundle": bundle.display().to_string(),
        "device": gen.device.to_string(),
    });
    let eos = spec.eos_token_ids.clone();
    let setup = EvalSetup {
        enc: &enc,
        eos: &eos,
        chat: chat.as_ref(),
        choice: &choice,
        seed: lm_defaults(adept_adapters::MethodKind::Adept).seed,
    };
    let out = score_lm(a, &mut BundleScorer(&mut gen), &setup, head)?;
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
