//! Training adapters on a frozen causal language model: [`LmJob`], the causal LM's
//! [`TrainJob`] for the generic loop ([`run_loop`]).
//!
//! # Design
//!
//! * **Data.** [`LmData`] holds prompt → completion pairs: a built-in GLUE/SuperGLUE task
//!   verbalised by its [`Verbalizer`] row, or custom JSONL pairs; an optional [`ChatTemplate`]
//!   renders prompts as a user turn and completions as the assistant's reply. [`LmJob::new`]
//!   tokenises them with an [`LmEncoder`] into [`LmFeatures`] (the job itself holds only ids,
//!   so tests build one from ids: [`LmJob::from_features`]).
//! * **Loss.** Teacher-forced mean cross-entropy over the completion tokens,
//!   [`CausalLmModel::loss`] on a collated [`LmBatch`] (the head runs on target rows only),
//!   with the adapter's dropout.
//! * **Validation** ([`LmEval`]): classification tasks by **label-word scoring** (one row per
//!   example × label word, the summed log-probability of the word's tokens, argmax, the task's
//!   own metrics); STS-B and custom pairs by **greedy generation** (`generate::greedy`, the
//!   embedding closure is [`CausalLmModel::embed_tokens`] so offsets apply to generated
//!   tokens too, the soft prompt as prefix; at most the longest reference + 2 new tokens),
//!   scored by [`score_generated`] (STS-B) or [`exact_match`] (custom).
//! * **Optimiser.** One AdamW group per role: prompt and offsets; there is no head.
//! * **Best adapter.** The adapter in PEFT layout plus `run.json`, an [`LmRunManifest`]
//!   (`"task_kind": "causal-lm"`, verbaliser, chat template, max length, special tokens).
//!
//! Decoder defaults ([`lm_defaults`]) follow the paper's decoder settings: ADePT `l = 7, r = 1`,
//! PT `l = 10`, DePT `l = 7, r = 3`; learning rate 1e-3 for the prompt, 1e-4 for the offsets,
//! batch 8, 256 tokens.
//!
//! Known limit: DePT's offsets are per input *position*; generation feeds left-padded prompts
//! and then one token at a time, so DePT's generation-scored validation (STS-B, custom pairs)
//! applies the offsets at shifted positions. Label-word scoring (right-padded) is exact.

use crate::lm::{target_rows, token_log_probs, CausalLmModel};
use crate::lm_batch::{LmBatch, LmEncoder, LmFeatures};
use crate::optim::{AdamW, AdamWParams};
use crate::run::{LmRunManifest, RunDir, TrainConfig, CAUSAL_LM_TASK_KIND};
use crate::task::{Predictions, Scores, TaskData};
use crate::trainer::{run_loop, TrainJob, TrainReport};
use adept_adapters::{Adapter, MethodKind, PromptInit, TensorRole};
use adept_backbones::generate::{greedy, GreedyOptions};
use adept_backbones::CausalLm;
use adept_data::causal::{exact_match, score_generated, ChatTemplate, LmExample, Verbalizer};
use adept_data::TaskKind;
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The paper's decoder settings for `method`: ADePT `l = 7, r = 1`; PT `l = 10`; DePT
/// `l = 7, r = 3`; prompt lr 1e-3, offsets lr 1e-4, batch 8, max length 256 (the rest as
/// [`TrainConfig::defaults`]; `lr_head` and `pooling` are unused).
pub fn lm_defaults(method: MethodKind) -> TrainConfig {
    let mut c = TrainConfig::defaults(method);
    let (l, r) = match method {
        MethodKind::Adept => (7, 1),
        MethodKind::Dept => (7, 3),
        MethodKind::Pt => (10, 0),
        _ => (0, 0),
    };
    c.adapter.prompt_len = l;
    c.adapter.rank = r;
    c.adapter.max_length = 256;
    c.lr_prompt = 1e-3;
    c.lr_offsets = 1e-4;
    c.batch_size = 8;
    c.eval_batch_size = 16;
    c
}

/// Special token ids of a checkpoint folder: `config.json`, overridden by
/// `generation_config.json` where it sets them. `eos_token_id` may be a number or a list; the
/// padding id falls back to the first EOS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Vec<u32>,
    pub pad: Option<u32>,
}

impl SpecialTokens {
    /// The ids a model folder declares: `bos_token_id`, `eos_token_id` (one or a list) and
    /// `pad_token_id` from `config.json`, overridden by `generation_config.json`; padding falls
    /// back to the first EOS. Says nothing about whether prompts start with the BOS: see
    /// [`SpecialTokens::for_prompts`].
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let mut out = Self::default();
        for name in ["config.json", "generation_config.json"] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            let id = |key: &str| -> Result<Option<u32>> {
                match v.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(x) => x
                        .as_u64()
                        .map(|n| Some(n as u32))
                        .with_context(|| format!("{}: {key} should be a token id", path.display())),
                }
            };
            if let Some(b) = id("bos_token_id")? {
                out.bos = Some(b);
            }
            if let Some(p) = id("pad_token_id")? {
                out.pad = Some(p);
            }
            match v.get("eos_token_id") {
                Some(serde_json::Value::Array(a)) => {
                    out.eos = a
                        .iter()
                        .map(|x| x.as_u64().map(|n| n as u32))
                        .collect::<Option<Vec<_>>>()
                        .with_context(|| {
                            format!("{}: eos_token_id should list token ids", path.display())
                        })?;
                }
                Some(serde_json::Value::Null) | None => {}
                Some(_) => out.eos = id("eos_token_id")?.into_iter().collect(),
            }
        }
        if out.pad.is_none() {
            out.pad = out.eos.first().copied();
        }
        Ok(out)
    }

    /// [`SpecialTokens::from_model_dir`] with `bos` kept only when the tokenizer prepends it:
    /// `tokenizer_config.json` says `add_bos_token: true` (SmolLM2 declares a BOS id but says
    /// `false`). Training, the run manifest and the exported bundle all use this, so a bundle
    /// prepends the BOS exactly when training did.
    pub fn for_prompts(dir: &Path) -> Result<Self> {
        let mut out = Self::from_model_dir(dir)?;
        if !adds_bos(dir) {
            out.bos = None;
        }
        Ok(out)
    }
}

/// Whether the tokenizer of `dir` asks for a BOS (`tokenizer_config.json` `add_bos_token`).
pub fn adds_bos(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("add_bos_token").and_then(|b| b.as_bool()))
        .unwrap_or(false)
}

/// A fresh [`CausalLmModel`]: the frozen decoder and a new adapter of `cfg.adapter` (its width
/// from the model; a text prompt init takes `prompt_init_ids`). Errors when the soft prompt
/// plus `cfg.max_len()` exceeds the model's positions. The decoder is put in `cfg.autocast`'s
/// precision after the adapter has read its (f32) embedding table.
pub fn build_causal_lm(
    backbone: Box<dyn CausalLm>,
    cfg: &TrainConfig,
    prompt_init_ids: Option<Vec<u32>>,
) -> Result<CausalLmModel> {
    let max_positions = backbone.max_sequence_len();
    if cfg.max_len() + cfg.prompt_len() > max_positions {
        bail!(
            "max length {} plus a {}-token prompt exceeds the model's {} positions; lower --max-len",
            cfg.max_len(),
            cfg.prompt_len(),
            max_positions
        );
    }
    let mut acfg = cfg.adapter.clone();
    acfg.token_dim = backbone.hidden_size();
    if let PromptInit::Text { token_ids, text } = &mut acfg.prompt_init {
        *token_ids = prompt_init_ids
            .with_context(|| format!("the prompt init text {text:?} was not tokenized"))?;
    }
    let adapter = Adapter::init(acfg, backbone.word_embedding_table(), cfg.seed)?;
    let mut backbone = backbone;
    backbone.set_autocast(cfg.autocast)?;
    Ok(CausalLmModel { backbone, adapter })
}

/// Loads a trained causal-LM adapter folder (a run's `best/`) onto its frozen model, checking
/// the model's checksum; `model_dir` overrides the folder recorded in `run.json`.
pub fn load_trained_lm(
    adapter_dir: &Path,
    model_dir: Option<&Path>,
    device: &Device,
) -> Result<(CausalLmModel, LmRunManifest)> {
    let manifest = crate::run::read_lm_manifest(adapter_dir)?;
    let model_dir = model_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(&manifest.model_dir));
    let weights = model_dir.join("model.safetensors");
    let sha = adept_bundle::sha256_file(&weights)?;
    if sha != manifest.model_sha256 {
        bail!(
            "{} is not the model this adapter was trained on (checksum {}, expected {}); pass --model with the right folder",
            weights.display(),
            &sha[..12],
            &manifest.model_sha256[..manifest.model_sha256.len().min(12)]
        );
    }
    let backbone = adept_backbones::load_causal_lm(&model_dir, device)?;
    let adapter = Adapter::load(adapter_dir, device)?;
    if adapter.config.token_dim != backbone.hidden_size() {
        bail!(
            "adapter width {} in {} does not match the model's {}",
            adapter.config.token_dim,
            adapter_dir.display(),
            backbone.hidden_size()
        );
    }
    Ok((CausalLmModel { backbone, adapter }, manifest))
}

/// Prompt → completion data for a causal LM, before tokenisation.
pub struct LmData {
    /// Task name (built-in) or file stem (custom).
    pub name: String,
    pub train: Vec<LmExample>,
    pub validation: Vec<LmExample>,
    /// The built-in task (its gold validation examples and scorer), if any.
    pub task: Option<(TaskKind, TaskData)>,
    /// The verbaliser of a built-in task.
    pub verbalizer: Option<Verbalizer>,
    /// Label words as scored (after the chat template, if any); empty unless classification.
    pub label_words: Vec<String>,
    /// The validation completions before the chat template (exact-match references).
    pub references: Vec<String>,
    /// The chat template's source when one was applied.
    pub chat_template: Option<String>,
}

impl LmData {
    /// A built-in task verbalised by its [`Verbalizer`] row.
    pub fn builtin(kind: TaskKind, task: TaskData) -> Result<Self> {
        let verbalizer = Verbalizer::for_task(kind);
        let train = verbalizer
            .verbalize_all(&task.train)
            .context("verbalising the train split")?;
        let validation = verbalizer
            .verbalize_all(&task.validation)
            .context("verbalising the validation split")?;
        Ok(Self {
            name: task.name.clone(),
            references: validation.iter().map(|e| e.completion.clone()).collect(),
            train,
            validation,
            label_words: verbalizer.label_words.clone(),
            verbalizer: Some(verbalizer),
            task: Some((kind, task)),
            chat_template: None,
        })
    }

    /// Custom pairs; without `validation`, a seeded 10% (at least one pair) of `train` is held
    /// out.
    pub fn pairs(
        name: &str,
        train: Vec<LmExample>,
        validation: Option<Vec<LmExample>>,
        seed: u64,
    ) -> Result<Self> {
        let (train, validation) = match validation {
            Some(v) => (train, v),
            None => {
                ensure!(
                    train.len() >= 2,
                    "{name} has {} pair(s): at least 2 are needed to hold out a validation set (or pass --validation-file)",
                    train.len()
                );
                let mut idx: Vec<usize> = (0..train.len()).collect();
                idx.shuffle(&mut StdRng::seed_from_u64(seed));
                let k = (train.len() / 10).max(1);
                let held: std::collections::HashSet<usize> = idx[..k].iter().copied().collect();
                let (mut t, mut v) = (Vec::new(), Vec::new());
                for (i, e) in train.into_iter().enumerate() {
                    if held.contains(&i) {
                        v.push(e)
                    } else {
                        t.push(e)
                    }
                }
                (t, v)
            }
        };
        ensure!(
            !validation.is_empty(),
            "{name}: the validation set is empty"
        );
        Ok(Self {
            name: name.to_string(),
            references: validation.iter().map(|e| e.completion.clone()).collect(),
            train,
            validation,
            task: None,
            verbalizer: None,
            label_words: Vec::new(),
            chat_template: None,
        })
    }

    /// Renders every prompt as a user turn (+ generation prompt) and every completion as the
    /// reply (+ end of turn); label words become replies without the end of turn.
    pub fn with_chat(mut self, chat: &ChatTemplate) -> Result<Self> {
        let apply = |v: &mut Vec<LmExample>| -> Result<()> {
            for e in v.iter_mut() {
                *e = chat.apply(e, None)?;
            }
            Ok(())
        };
        apply(&mut self.train)?;
        apply(&mut self.validation)?;
        if !self.label_words.is_empty() {
            self.label_words = chat.label_words(&self.label_words)?;
        }
        self.chat_template = Some(chat.source().to_string());
        Ok(self)
    }

    /// Classification (label-word scoring) rather than generation.
    pub fn is_classification(&self) -> bool {
        self.verbalizer.as_ref().is_some_and(|v| !v.is_regression())
    }
}

/// Predicted classes → metrics.
pub type ClassScorer = Box<dyn Fn(&Predictions) -> Result<Scores> + Send + Sync>;
/// Generated token ids (EOS dropped) → text.
pub type Decoder = Box<dyn Fn(&[u32]) -> Result<String> + Send + Sync>;
/// Generated texts → metrics.
pub type TextScorer = Box<dyn Fn(&[String]) -> Result<Scores> + Send + Sync>;

/// How validation is scored.
pub enum LmEval {
    /// Label-word scoring: `num_labels` rows per example (prompt ‖ label word, the word as the
    /// target), adjacent in class order; `score` turns the argmax classes into metrics.
    Scoring {
        rows: Vec<LmFeatures>,
        num_labels: usize,
        score: ClassScorer,
    },
    /// Greedy generation from each prompt; `decode` turns new tokens (EOS dropped) into text,
    /// `score` the texts into metrics.
    Generation {
        prompts: Vec<Vec<u32>>,
        max_new_tokens: usize,
        decode: Decoder,
        score: TextScorer,
    },
}

/// The summed log-probability of each row's target tokens (`[BOS]? ‖ prompt ‖ target`, the
/// target from `target_start`), in batches of `batch_size`; eval mode (no dropout). The head
/// runs on the target rows only.
pub fn row_logprob_sums(
    model: &CausalLmModel,
    rows: &[LmFeatures],
    batch_size: usize,
    pad_id: u32,
) -> Result<Vec<f32>> {
    let device = model.backbone.device();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size.max(1)) {
        let refs: Vec<&LmFeatures> = chunk.iter().collect();
        let batch = LmBatch::collate(&refs, pad_id, device)?;
        let (b, s) = batch.ids.dims2()?;
        let (flat, targets) = target_rows(&batch.ids, &batch.target_mask)?;
        // Detached input: no backward graph is recorded, so each layer's activations are freed
        // as the forward moves on (eval peak memory stays that of one layer, not thirty).
        let (embeds, mask) = model.embed_with_prompt(&batch.ids, &batch.mask, None)?;
        let l = model.adapter.prompt_len();
        let h = model
            .backbone
            .forward_embeds(&embeds.detach(), &mask, None)?
            .narrow(1, l, s)?;
        let d = h.dim(2)?;
        let picked = h.reshape((b * s, d))?.index_select(&flat, 0)?;
        let lp = token_log_probs(&model.backbone.logits(&picked)?, &targets)?.to_vec1::<f32>()?;
        let mut sums = vec![0f32; b];
        for (r, v) in flat.to_vec1::<u32>()?.iter().zip(lp) {
            sums[*r as usize / s] += v;
        }
        out.extend(sums);
    }
    Ok(out)
}

/// Greedy continuations of `prompts` with the adapter in the loop (offsets on every token, the
/// soft prompt as prefix), in batches of `batch_size`; each ends at the first of `eos`
/// (included).
pub fn generate(
    model: &CausalLmModel,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos: &[u32],
    pad_id: u32,
    batch_size: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut opts = GreedyOptions::new(max_new_tokens, eos);
    opts.pad_id = pad_id;
    let embed = |ids: &Tensor| model.embed_tokens(ids, None);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(batch_size.max(1)) {
        out.extend(greedy(
            model.backbone.as_ref(),
            &embed,
            model.adapter.prompt(),
            chunk,
            &opts,
        )?);
    }
    Ok(out)
}

/// What runs validation's two primitives: the candle model ([`CausalLmModel`]), or an exported
/// bundle (`adept eval --bundle` implements it over ONNX Runtime), so both score the same rows
/// with the same metrics.
pub trait LmScorer {
    /// See [`row_logprob_sums`].
    fn row_logprob_sums(
        &mut self,
        rows: &[LmFeatures],
        batch_size: usize,
        pad_id: u32,
    ) -> Result<Vec<f32>>;
    /// Greedy continuations, each ending at the first of `eos` (included); see [`generate`].
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        eos: &[u32],
        pad_id: u32,
        batch_size: usize,
    ) -> Result<Vec<Vec<u32>>>;
}

impl LmScorer for &CausalLmModel {
    fn row_logprob_sums(
        &mut self,
        rows: &[LmFeatures],
        batch_size: usize,
        pad_id: u32,
    ) -> Result<Vec<f32>> {
        row_logprob_sums(self, rows, batch_size, pad_id)
    }
    fn generate(
        &mut self,
        prompts: &[Vec<u32>],
        max_new_tokens: usize,
        eos: &[u32],
        pad_id: u32,
        batch_size: usize,
    ) -> Result<Vec<Vec<u32>>> {
        generate(self, prompts, max_new_tokens, eos, pad_id, batch_size)
    }
}

/// Scores `model` on `eval` (see [`LmEval`]).
pub fn evaluate(
    model: &CausalLmModel,
    eval: &LmEval,
    batch_size: usize,
    pad_id: u32,
    eos: &[u32],
) -> Result<Scores> {
    evaluate_with(&mut &*model, eval, batch_size, pad_id, eos)
}

/// Scores `eval` (see [`LmEval`]) with any [`LmScorer`]: label-word scoring takes the argmax of
/// each example's summed label-word log-probabilities; generation decodes the greedy
/// continuations (EOS dropped) and scores the texts.
pub fn evaluate_with(
    model: &mut dyn LmScorer,
    eval: &LmEval,
    batch_size: usize,
    pad_id: u32,
    eos: &[u32],
) -> Result<Scores> {
    match eval {
        LmEval::Scoring {
            rows,
            num_labels,
            score,
        } => {
            let sums = model.row_logprob_sums(rows, batch_size * num_labels, pad_id)?;
            let preds = sums.chunks(*num_labels).map(adept_bundle::argmax).collect();
            score(&Predictions::Classes(preds))
        }
        LmEval::Generation {
            prompts,
            max_new_tokens,
            decode,
            score,
        } => {
            let out = model.generate(prompts, *max_new_tokens, eos, pad_id, batch_size)?;
            let texts = out
                .iter()
                .map(|t| {
                    let kept: Vec<u32> = t.iter().copied().filter(|x| !eos.contains(x)).collect();
                    decode(&kept)
                })
                .collect::<Result<Vec<_>>>()?;
            score(&texts)
        }
    }
}

/// The causal LM's training job (see the module docs).
pub struct LmJob<'a> {
    pub model: &'a CausalLmModel,
    pub train: Vec<LmFeatures>,
    pub eval: LmEval,
    pub pad_id: u32,
    /// End-of-sequence ids that stop generation.
    pub eos: Vec<u32>,
    pub primary_metric: String,
    /// `run.json` of the best adapter; its `train_config`, `step`, `validation_metrics` and
    /// provenance fields are filled in at each save.
    pub manifest: LmRunManifest,
}

/// `VmHWM` (peak resident set) of this process in MiB, from `/proc/self/status` (Linux; `None`
/// elsewhere).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl<'a> LmJob<'a> {
    /// Tokenises `data` with `enc`: training pairs with [`LmEncoder::encode`]; validation as
    /// label-word rows (classification) or prompts for generation (at most the longest
    /// reference + 2 new tokens). `manifest` as for [`LmJob::from_features`].
    pub fn new(
        model: &'a CausalLmModel,
        enc: &LmEncoder,
        data: LmData,
        eos: Vec<u32>,
        mut manifest: LmRunManifest,
    ) -> Result<Self> {
        let train = data
            .train
            .iter()
            .enumerate()
            .map(|(i, e)| enc.encode(e, &format!("{} train example {i}", data.name)))
            .collect::<Result<Vec<_>>>()?;
        let truncated = train.iter().filter(|f| f.truncated > 0).count();
        if truncated > 0 {
            tracing::warn!(
                "{truncated} of {} training examples were longer than {} tokens: their prompts lost tokens from the left",
                train.len(),
                enc.max_len
            );
        }
        manifest.label_words = data.label_words.clone();
        manifest.chat_template = data.chat_template.clone();
        manifest.regression = data.verbalizer.as_ref().is_some_and(|v| v.is_regression());
        manifest.template = data.verbalizer.as_ref().map(|v| v.template.clone());
        let (eval, primary) = build_eval(enc, data, false)?;
        Ok(Self {
            model,
            train,
            eval,
            pad_id: enc.pad_id,
            eos,
            primary_metric: primary,
            manifest,
        })
    }

    /// A job from token ids directly (tests, or callers with their own tokenisation).
    pub fn from_features(
        model: &'a CausalLmModel,
        train: Vec<LmFeatures>,
        eval: LmEval,
        pad_id: u32,
        eos: Vec<u32>,
        primary_metric: &str,
        manifest: LmRunManifest,
    ) -> Self {
        Self {
            model,
            train,
            eval,
            pad_id,
            eos,
            primary_metric: primary_metric.to_string(),
            manifest,
        }
    }
}

/// Validation of `data` (see [`LmEval`]) and its primary metric's name: label-word scoring for
/// classification unless `generation`, greedy generation otherwise.
pub fn build_eval(enc: &LmEncoder, data: LmData, generation: bool) -> Result<(LmEval, String)> {
    let name = data.name.clone();
    if data.is_classification() && !generation {
        let (_, task) = data
            .task
            .expect("classification comes from a built-in task");
        let label_ids = enc.label_word_ids(&data.label_words)?;
        let mut rows = Vec::with_capacity(data.validation.len() * label_ids.len());
        for (i, e) in data.validation.iter().enumerate() {
            rows.extend(enc.score_rows(
                &e.prompt,
                &label_ids,
                &format!("{name} validation example {i}"),
            )?);
        }
        let primary = task.primary_metric.clone();
        let score = Box::new(move |p: &Predictions| task.score(p, &task.validation));
        return Ok((
            LmEval::Scoring {
                rows,
                num_labels: label_ids.len(),
                score,
            },
            primary,
        ));
    }
    // Generation: the longest reference completion (with EOS) + 2 new tokens.
    let mut longest = 0;
    for e in &data.validation {
        longest = longest.max(enc.tokens(&e.completion)?.len() + 1);
    }
    let max_new_tokens = longest + 2;
    let prompts = data
        .validation
        .iter()
        .enumerate()
        .map(|(i, e)| {
            enc.encode_prompt(
                &e.prompt,
                max_new_tokens,
                &format!("{name} validation example {i}"),
            )
            .map(|f| f.ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let tok = enc.tokenizer().clone();
    let decode = Box::new(move |ids: &[u32]| {
        tok.decode(ids, true)
            .map_err(|e| anyhow::anyhow!("cannot decode generated tokens {ids:?}: {e}"))
    });
    match (data.task, data.verbalizer) {
        (Some((kind, task)), Some(verbalizer)) => {
            let spec = kind.spec().metric_spec();
            let primary = task.primary_metric.clone();
            let golds = task.validation;
            let score = Box::new(move |g: &[String]| -> Result<Scores> {
                let s = score_generated(&verbalizer, &spec, g, &golds)?;
                Ok(Scores {
                    primary: s.primary_value(),
                    metrics: s.values,
                })
            });
            Ok((
                LmEval::Generation {
                    prompts,
                    max_new_tokens,
                    decode,
                    score,
                },
                primary,
            ))
        }
        _ => {
            let refs = data.references;
            let score = Box::new(move |g: &[String]| -> Result<Scores> {
                let em = exact_match(g, &refs)?;
                Ok(Scores {
                    primary: em,
                    metrics: BTreeMap::from([("exact_match".to_string(), em)]),
                })
            });
            Ok((
                LmEval::Generation {
                    prompts,
                    max_new_tokens,
                    decode,
                    score,
                },
                "exact_match".to_string(),
            ))
        }
    }
}

/// One optimiser over the adapter's tensors: a `prompt` group and an `offsets` group.
pub fn build_lm_optimizer(adapter: &Adapter, cfg: &TrainConfig) -> Result<AdamW> {
    let mut opt = AdamW::new(AdamWParams::default());
    let (mut prompt, mut offsets) = (Vec::new(), Vec::new());
    for (name, role, var) in adapter.vars() {
        match role {
            TensorRole::Prompt => prompt.push((name, var)),
            TensorRole::Offsets => offsets.push((name, var)),
        }
    }
    if !prompt.is_empty() {
        opt.add_group("prompt", cfg.lr_prompt, prompt)?;
    }
    if !offsets.is_empty() {
        opt.add_group("offsets", cfg.lr_offsets, offsets)?;
    }
    Ok(opt)
}

impl TrainJob for LmJob<'_> {
    fn device(&self) -> &Device {
        self.model.backbone.device()
    }
    fn train_len(&self) -> usize {
        self.train.len()
    }
    fn optimizer(&self, cfg: &TrainConfig) -> Result<AdamW> {
        build_lm_optimizer(&self.model.adapter, cfg)
    }
    fn loss(&self, idx: &[usize], rng: &mut StdRng) -> Result<Tensor> {
        let refs: Vec<&LmFeatures> = idx.iter().map(|&i| &self.train[i]).collect();
        let b = LmBatch::collate(&refs, self.pad_id, self.device())?;
        Ok(self
            .model
            .loss(&b.ids, &b.mask, &b.target_mask, Some(rng))?)
    }
    fn validate(&self, cfg: &TrainConfig) -> Result<Scores> {
        evaluate(
            self.model,
            &self.eval,
            cfg.eval_batch_size,
            self.pad_id,
            &self.eos,
        )
    }
    fn primary_metric(&self) -> &str {
        &self.primary_metric
    }
    fn tensors(&self) -> HashMap<String, Tensor> {
        self.model.adapter.tensors()
    }
    fn set_values(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.model.adapter.set_values(tensors)
    }
    fn train_log_extra(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mb = peak_rss_mb()?;
        let mut m = serde_json::Map::new();
        m.insert(
            "peak_rss_mb".into(),
            serde_json::json!((mb * 10.0).round() / 10.0),
        );
        Some(m)
    }
    fn save_best(
        &self,
        run: &RunDir,
        cfg: &TrainConfig,
        metrics: &BTreeMap<String, f64>,
        step: usize,
    ) -> Result<()> {
        let mut m = self.manifest.clone();
        m.train_config = cfg.clone();
        m.step = step;
        m.validation_metrics = metrics.clone();
        run.save_best_lm(&self.model.adapter, &m)
    }
}

/// A manifest skeleton for a model folder's checkpoint: family/type from the model, the rest
/// to be filled by the caller ([`LmJob::new`] fills verbaliser and chat fields, the run folder
/// the checksums).
pub fn manifest_skeleton(
    model: &CausalLmModel,
    task: &str,
    max_len: usize,
    special: &SpecialTokens,
    cfg: &TrainConfig,
) -> LmRunManifest {
    LmRunManifest {
        adept_version: env!("CARGO_PKG_VERSION").to_string(),
        task_kind: CAUSAL_LM_TASK_KIND.to_string(),
        model_dir: String::new(),
        model_family: model.backbone.family().to_string(),
        model_type: model.backbone.model_type().to_string(),
        model_sha256: String::new(),
        tokenizer_sha256: String::new(),
        task: task.to_string(),
        train_file: None,
        validation_file: None,
        prompt_field: None,
        completion_field: None,
        template: None,
        label_words: Vec::new(),
        regression: false,
        chat_template: None,
        max_len,
        bos_token_id: special.bos,
        eos_token_ids: special.eos.clone(),
        pad_token_id: special.pad,
        train_config: cfg.clone(),
        step: 0,
        validation_metrics: BTreeMap::new(),
    }
}

/// Trains with [`run_loop`] (see [`crate::train`] for `resume` and `stop_after`).
pub fn train_lm(
    job: &LmJob<'_>,
    cfg: &TrainConfig,
    run: &RunDir,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<TrainReport> {
    run_loop(job, cfg, run, resume, stop_after)
}
