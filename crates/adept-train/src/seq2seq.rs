//! Text-to-text training of an adapter on a frozen encoder–decoder (T5), as the ADePT / DePT
//! authors run it: source text → encoder, target text → decoder, token cross-entropy, and
//! evaluation by greedy decoding compared as strings.
//!
//! | stage | candle | |
//! |---|---|---|
//! | source tokens → embeddings | `Backbone::word_embeddings` (the shared table) | |
//! | adapter | `Adapter::apply`: `[P, E + f(E)]`, mask extended with ones | **encoder inputs only** |
//! | encoder | `Seq2SeqLm::encode` | |
//! | decoder | `Seq2SeqLm::decode` on `[decoder_start, target[:-1]]` (token ids, the original shared table) | no adapter |
//! | head | `Seq2SeqLm::logits` (the original table) on the rows that predict a target token | |
//! | loss | mean of `−log p(target token)` over the non-padding target tokens | |
//!
//! Targets are `tokens(target text) ‖ EOS`, right-padded; the decoder input is the target shifted
//! right behind `decoder_start_token_id` (what `transformers` builds from `labels`). Padded target
//! positions are left out of the loss and, the decoder being causal, cannot change the rows
//! before them: a padded target gives exactly the loss of the unpadded one. Sources are
//! `tokens(source) ‖ EOS` (T5's tokenizer convention), cut from the right to `max_len` (EOS kept)
//! or refused, per `TrainConfig::over_length`. A target longer than
//! [`Seq2SeqOptions::max_target_len`] (EOS included) is an error naming the example: targets are
//! never truncated silently (a cut label string would teach the wrong answer).
//!
//! Evaluation generates with [`adept_backbones::t5::generate`] from the encoder outputs of the
//! adapted inputs (greedy; beam search with `num_beams > 1`), decodes the tokens before EOS with
//! the tokenizer (special tokens skipped) and scores the strings
//! ([`adept_data::text2text::score_generated`] for built-in tasks, exact match for custom data).
//!
//! [`train_seq2seq`] is the whole run (the library side of `adept train --task-kind seq2seq`).
//! Intended command-line flags, mapping onto its arguments:
//!
//! ```text
//! adept train --task-kind seq2seq --model <t5 folder> --task rte --data <glue dir> \
//!     [--splits paper|official] [--method adept|dept|pt] [--prompt-len 60] [--rank 19] \
//!     [--max-len 256]            source tokens (EOS included), TrainConfig.adapter.max_length
//!     [--max-target-len 16]      Seq2SeqOptions.max_target_len (EOS included)
//!     [--num-beams 1]            Seq2SeqOptions.num_beams (validation decoding)
//!     --out <run dir> [--resume] [--overwrite] (+ the usual lr/steps/batch flags)
//! adept train --task-kind seq2seq --model <t5 folder> --train data.jsonl [--validation v.jsonl] \
//!     [--source-field source] [--target-field target] --out <run dir>
//! ```

use crate::optim::AdamW;
use crate::run::{RunDir, TrainConfig};
use crate::task::Scores;
use crate::tokenize::{load_tokenizer, OverLength, Tokenizer};
use crate::trainer::{run_loop, TrainJob, TrainReport};
use adept_adapters::{Adapter, PromptInit, TensorRole};
use adept_backbones::t5::generate::{generate, target_log_probs, GenerateOptions, Hypothesis};
use adept_backbones::Seq2SeqLm;
use adept_bundle::write_atomic;
use adept_data::text2text::{self, Text2TextExample, Text2TextSpec};
use adept_data::{MetricSpec, SplitChoice, TaskKind};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A frozen encoder–decoder with an adapter on its encoder inputs.
pub struct Seq2SeqModel {
    /// The frozen model, whichever family `config.json` named.
    pub backbone: Box<dyn Seq2SeqLm>,
    pub adapter: Adapter,
}

/// A padded source/target batch, all `[b, ·]` u32, right-padded with the pad id.
#[derive(Clone, Debug)]
pub struct Seq2SeqBatch {
    /// `[b, s]` source ids (`… ‖ EOS`).
    pub src_ids: Tensor,
    /// `[b, s]` 1 on real source tokens.
    pub src_mask: Tensor,
    /// `[b, t]` target ids (`… ‖ EOS`).
    pub tgt_ids: Tensor,
    /// `[b, t]` 1 on real target tokens (the ones the loss counts).
    pub tgt_mask: Tensor,
}

/// Right-pads `rows` to their longest length: `(ids [b, n], mask [b, n])`.
fn pad_rows(rows: &[&[u32]], pad: u32, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let b = rows.len();
    let n = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad; b * n];
    let mut mask = vec![0u32; b * n];
    for (i, r) in rows.iter().enumerate() {
        ids[i * n..i * n + r.len()].copy_from_slice(r);
        mask[i * n..i * n + r.len()].fill(1);
    }
    Ok((
        Tensor::from_vec(ids, (b, n), device)?,
        Tensor::from_vec(mask, (b, n), device)?,
    ))
}

impl Seq2SeqBatch {
    /// Pads sources and targets (each row `… ‖ EOS`) with `pad`.
    pub fn collate(
        sources: &[&[u32]],
        targets: &[&[u32]],
        pad: u32,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let (src_ids, src_mask) = pad_rows(sources, pad, device)?;
        let (tgt_ids, tgt_mask) = pad_rows(targets, pad, device)?;
        Ok(Self {
            src_ids,
            src_mask,
            tgt_ids,
            tgt_mask,
        })
    }
}

impl Seq2SeqModel {
    /// Encoder inputs `[P, E + f(E)]` `[b, l + s, d]` and the mask `[b, l + s]` (prompt rows
    /// attended) for source `ids`/`mask [b, s]`. `train_rng` turns on the adapter's dropout.
    pub fn encoder_inputs(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let word = self.backbone.word_embeddings(ids)?;
        let embeds = self.adapter.apply(&word, train_rng)?;
        Ok((embeds, self.adapter.extend(mask, 1)?))
    }

    /// Encoder output `[b, l + s, d]` of the adapted inputs, and its mask `[b, l + s]`.
    pub fn encode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (embeds, mask) = self.encoder_inputs(ids, mask, train_rng)?;
        Ok((self.backbone.encode(&embeds, &mask)?, mask))
    }

    /// Decoder inputs `[b, t]` for targets `[b, t]`: `decoder_start_token_id` followed by the
    /// targets shifted right by one (the last target column dropped).
    pub fn decoder_inputs(&self, tgt_ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = tgt_ids.dims2()?;
        let start = Tensor::full(
            self.backbone.decoder_start_token_id(),
            (b, 1),
            tgt_ids.device(),
        )?;
        if t == 1 {
            return Ok(start);
        }
        Tensor::cat(&[&start, &tgt_ids.narrow(1, 0, t - 1)?], 1)
    }

    /// Decoder hidden states `[b, t, d]` predicting each target position (teacher forcing).
    pub fn decoder_hidden(
        &self,
        batch: &Seq2SeqBatch,
        train_rng: Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        let (enc, enc_mask) = self.encode(&batch.src_ids, &batch.src_mask, train_rng)?;
        let dec_in = self.decoder_inputs(&batch.tgt_ids)?;
        self.backbone.decode(&dec_in, &enc, &enc_mask, None)
    }

    /// `log p(target token)` at every target position, `[b, t]` (padding positions included;
    /// for tests and scoring: the head runs on all `b·t` rows).
    pub fn target_log_probs(&self, batch: &Seq2SeqBatch) -> candle_core::Result<Tensor> {
        let h = self.decoder_hidden(batch, None)?;
        let logits = self.backbone.logits(&h)?;
        target_log_probs(&logits, &batch.tgt_ids)
    }

    /// Mean cross-entropy over the real (non-padding) target tokens of the batch, EOS included:
    /// `−Σ log p / n_tokens` (`transformers`' loss with `-100` on padding). The head runs only on
    /// the rows that predict a real token. Errors when the batch has no target token.
    pub fn loss(
        &self,
        batch: &Seq2SeqBatch,
        train_rng: Option<&mut StdRng>,
    ) -> candle_core::Result<Tensor> {
        let (b, t) = batch.tgt_ids.dims2()?;
        let mask = batch.tgt_mask.to_vec2::<u32>()?;
        let ids = batch.tgt_ids.to_vec2::<u32>()?;
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for i in 0..b {
            for j in 0..t {
                if mask[i][j] != 0 {
                    rows.push((i * t + j) as u32);
                    targets.push(ids[i][j]);
                }
            }
        }
        if rows.is_empty() {
            candle_core::bail!("the batch has no target token (empty target mask)");
        }
        let h = self.decoder_hidden(batch, train_rng)?;
        let d = h.dims3()?.2;
        let dev = h.device();
        let picked = h
            .reshape((b * t, d))?
            .index_select(&Tensor::new(rows, dev)?, 0)?;
        let logits = self.backbone.logits(&picked)?;
        target_log_probs(&logits, &Tensor::new(targets, dev)?)?
            .mean_all()?
            .neg()
    }

    /// Generates from source `ids`/`mask [b, s]` (eval mode: no dropout): greedy when
    /// `opts.num_beams == 1`, beam search otherwise, from the encoder output of the adapted
    /// inputs. Tokens end with EOS where the row stopped there.
    pub fn generate(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        opts: &GenerateOptions,
    ) -> candle_core::Result<Vec<Hypothesis>> {
        let (embeds, mask) = self.encoder_inputs(ids, mask, None)?;
        generate(self.backbone.as_ref(), &embeds.detach(), &mask, opts)
    }
}

/// Tokenisation rules for text-to-text (see the module docs).
pub struct Seq2SeqEncoder {
    pub tokenizer: Tokenizer,
    /// Longest source in tokens, EOS included (the prompt is counted separately).
    pub max_source_len: usize,
    /// Longest target in tokens, EOS included.
    pub max_target_len: usize,
    pub over_length: OverLength,
    pub eos_id: u32,
    pub pad_id: u32,
}

impl Seq2SeqEncoder {
    fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {:?}: {e}", preview(text)))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `tokens(source) ‖ EOS`, cut from the right to `max_source_len` (EOS kept) under
    /// `OverLength::Truncate` (the bool says it was), an error naming `origin` under `Error`.
    pub fn source(&self, text: &str, origin: &str) -> Result<(Vec<u32>, bool)> {
        let mut ids = self.tokens(text).with_context(|| origin.to_string())?;
        let room = self.max_source_len.saturating_sub(1);
        let cut = ids.len() > room;
        if cut {
            if self.over_length == OverLength::Error {
                bail!(
                    "{origin}: the source has {} tokens (EOS included), more than the maximum {}; \
                     raise --max-len or pass --over-length truncate",
                    ids.len() + 1,
                    self.max_source_len
                );
            }
            ids.truncate(room);
        }
        ids.push(self.eos_id);
        Ok((ids, cut))
    }

    /// `tokens(target) ‖ EOS`; an error naming `origin` when longer than `max_target_len`.
    pub fn target(&self, text: &str, origin: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokens(text).with_context(|| origin.to_string())?;
        ids.push(self.eos_id);
        if ids.len() > self.max_target_len {
            bail!(
                "{origin}: the target {:?} has {} tokens (EOS included), more than the maximum \
                 target length {}; raise --max-target-len (targets are never truncated)",
                preview(text),
                ids.len(),
                self.max_target_len
            );
        }
        Ok(ids)
    }

    /// The text of generated tokens: those before the first EOS, special tokens skipped.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        let end = tokens
            .iter()
            .position(|&t| t == self.eos_id)
            .unwrap_or(tokens.len());
        let text = self
            .tokenizer
            .decode(&tokens[..end], true)
            .map_err(|e| anyhow::anyhow!("cannot decode {:?}: {e}", &tokens[..end]))?;
        Ok(text.trim().to_string())
    }
}

fn preview(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        s.push('…');
    }
    s
}

/// How examples are scored.
#[derive(Clone, Debug)]
pub enum Seq2SeqScoring {
    /// A built-in task's metrics on the parsed strings.
    Task(MetricSpec),
    /// Custom data: `exact_match`, trimmed strings.
    ExactMatch,
}

/// A text-to-text task: source/target pairs per split and how outputs are scored.
pub struct Seq2SeqTask {
    pub name: String,
    /// The source template with placeholders (`"sentence1: {sentence1} sentence2: {sentence2}"`),
    /// or for custom data `"{<source field>}"`.
    pub template: String,
    pub train: Vec<Text2TextExample>,
    pub validation: Vec<Text2TextExample>,
    pub test: Vec<Text2TextExample>,
    pub scoring: Seq2SeqScoring,
}

impl Seq2SeqTask {
    /// A GLUE/SuperGLUE task from `data_dir`, with the authors' template and targets.
    pub fn builtin(
        kind: TaskKind,
        data_dir: &Path,
        splits: SplitChoice,
        seed: u64,
    ) -> Result<Self> {
        let spec = kind.spec();
        let s = adept_data::load_splits(kind, data_dir, splits.mode(seed)).with_context(|| {
            format!("cannot load task {} from {}", spec.name, data_dir.display())
        })?;
        let conv = |ex: &[adept_data::Example], split: &str| {
            text2text::split_to_text2text(kind, ex, split)
        };
        Ok(Self {
            name: spec.name.to_string(),
            template: text2text::template_string(text2text::template(kind)),
            train: conv(&s.train, "train")?,
            validation: conv(&s.validation, "validation")?,
            test: conv(&s.test, "test")?,
            scoring: Seq2SeqScoring::Task(spec.metric_spec()),
        })
    }

    /// Custom source/target files; without a validation file a seeded 10% (at least one) of
    /// the training file is held out.
    pub fn custom(
        train_path: &Path,
        validation_path: Option<&Path>,
        spec: &Text2TextSpec,
        seed: u64,
    ) -> Result<Self> {
        let train = text2text::load_text2text(train_path, spec)?;
        let (train, validation) = match validation_path {
            Some(p) => (train, text2text::load_text2text(p, spec)?),
            None => {
                if train.len() < 2 {
                    bail!(
                        "{} has {} example(s): at least 2 are needed to hold out a validation \
                         set (or pass a validation file)",
                        train_path.display(),
                        train.len()
                    );
                }
                // The rule of `adept_data::split::take_random`: the first k of the seeded
                // permutation are held out; both sides keep file order.
                let k = (train.len() / 10).max(1);
                let mut held = vec![false; train.len()];
                for &i in &adept_data::split::permutation(train.len(), seed)[..k] {
                    held[i] = true;
                }
                let (mut rest, mut val) = (Vec::new(), Vec::new());
                for (e, h) in train.into_iter().zip(held) {
                    if h {
                        val.push(e);
                    } else {
                        rest.push(e);
                    }
                }
                (rest, val)
            }
        };
        Ok(Self {
            name: train_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "custom".into()),
            template: format!("{{{}}}", spec.source_field),
            train,
            validation,
            test: Vec::new(),
            scoring: Seq2SeqScoring::ExactMatch,
        })
    }

    /// The primary metric's name.
    pub fn primary_metric(&self) -> &'static str {
        match &self.scoring {
            Seq2SeqScoring::Task(s) => s.primary.name(),
            Seq2SeqScoring::ExactMatch => "exact_match",
        }
    }

    /// Scores generated strings against `golds`.
    pub fn score(&self, generated: &[String], golds: &[Text2TextExample]) -> Result<Scores> {
        Ok(match &self.scoring {
            Seq2SeqScoring::Task(spec) => {
                let s = text2text::score_generated(spec, generated, golds)?;
                Scores {
                    primary: s.primary_value(),
                    metrics: s.values,
                }
            }
            Seq2SeqScoring::ExactMatch => {
                let em = text2text::exact_match_score(generated, golds)?;
                Scores {
                    primary: em,
                    metrics: BTreeMap::from([("exact_match".to_string(), em)]),
                }
            }
        })
    }
}

/// Settings of a text-to-text run beyond [`TrainConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqOptions {
    /// Longest target in tokens, EOS included; also the generation limit.
    pub max_target_len: usize,
    /// 1 = greedy validation decoding (the authors'); more = beam search.
    pub num_beams: usize,
}

impl Default for Seq2SeqOptions {
    fn default() -> Self {
        Self {
            max_target_len: 16,
            num_beams: 1,
        }
    }
}

/// `run.json` of a text-to-text run's `best/`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seq2SeqManifest {
    pub adept_version: String,
    /// Always `"seq2seq"`.
    pub task_kind: String,
    pub model_dir: String,
    pub model_family: String,
    pub model_type: String,
    pub model_sha256: String,
    pub tokenizer_sha256: String,
    pub task: String,
    pub template: String,
    pub primary_metric: String,
    pub max_source_len: usize,
    pub options: Seq2SeqOptions,
    pub train_config: TrainConfig,
    pub step: usize,
    pub validation_metrics: BTreeMap<String, f64>,
}

/// Generated strings for `examples`, in batches of `batch_size`.
pub fn generate_texts(
    model: &Seq2SeqModel,
    enc: &Seq2SeqEncoder,
    sources: &[Vec<u32>],
    batch_size: usize,
    opts: &Seq2SeqOptions,
) -> Result<Vec<String>> {
    let device = model.backbone.device();
    let gen = GenerateOptions {
        max_new_tokens: opts.max_target_len,
        num_beams: opts.num_beams.max(1),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(batch_size.max(1)) {
        let rows: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let (ids, mask) = pad_rows(&rows, enc.pad_id, device)?;
        for h in model.generate(&ids, &mask, &gen)? {
            out.push(enc.decode(&h.tokens)?);
        }
    }
    Ok(out)
}

/// The text-to-text training job for [`run_loop`].
pub struct Seq2SeqJob<'a> {
    pub model: &'a Seq2SeqModel,
    pub enc: &'a Seq2SeqEncoder,
    pub task: &'a Seq2SeqTask,
    pub opts: Seq2SeqOptions,
    /// Tokenised training pairs.
    pub train: Vec<(Vec<u32>, Vec<u32>)>,
    /// Tokenised validation sources.
    pub val_sources: Vec<Vec<u32>>,
    pub truncated: usize,
}

impl<'a> Seq2SeqJob<'a> {
    /// Tokenises the task's train and validation splits (targets too long are errors).
    pub fn new(
        model: &'a Seq2SeqModel,
        enc: &'a Seq2SeqEncoder,
        task: &'a Seq2SeqTask,
        opts: Seq2SeqOptions,
    ) -> Result<Self> {
        if task.train.is_empty() || task.validation.is_empty() {
            bail!(
                "task {} needs training and validation examples ({} and {})",
                task.name,
                task.train.len(),
                task.validation.len()
            );
        }
        let mut truncated = 0;
        let mut train = Vec::with_capacity(task.train.len());
        for ex in &task.train {
            if ex.target.is_empty() {
                bail!("{}: training example without a target", ex.origin);
            }
            let (src, cut) = enc.source(&ex.source, &ex.origin)?;
            truncated += cut as usize;
            train.push((src, enc.target(&ex.target, &ex.origin)?));
        }
        let mut val_sources = Vec::with_capacity(task.validation.len());
        for ex in &task.validation {
            let (src, cut) = enc.source(&ex.source, &ex.origin)?;
            truncated += cut as usize;
            val_sources.push(src);
        }
        if truncated > 0 {
            tracing::warn!(
                "{truncated} source(s) of task {} were cut to {} tokens",
                task.name,
                enc.max_source_len
            );
        }
        Ok(Self {
            model,
            enc,
            task,
            opts,
            train,
            val_sources,
            truncated,
        })
    }

    /// The batch of training items `idx`.
    pub fn batch(&self, idx: &[usize]) -> Result<Seq2SeqBatch> {
        let src: Vec<&[u32]> = idx.iter().map(|&i| self.train[i].0.as_slice()).collect();
        let tgt: Vec<&[u32]> = idx.iter().map(|&i| self.train[i].1.as_slice()).collect();
        Ok(Seq2SeqBatch::collate(
            &src,
            &tgt,
            self.enc.pad_id,
            self.model.backbone.device(),
        )?)
    }

    /// Generated validation strings.
    pub fn validation_outputs(&self, batch_size: usize) -> Result<Vec<String>> {
        generate_texts(
            self.model,
            self.enc,
            &self.val_sources,
            batch_size,
            &self.opts,
        )
    }
}

impl TrainJob for Seq2SeqJob<'_> {
    fn device(&self) -> &Device {
        self.model.backbone.device()
    }
    fn train_len(&self) -> usize {
        self.train.len()
    }
    fn optimizer(&self, cfg: &TrainConfig) -> Result<AdamW> {
        let mut opt = AdamW::new(Default::default());
        let (mut prompt, mut offsets) = (Vec::new(), Vec::new());
        for (name, role, var) in self.model.adapter.vars() {
            match role {
                TensorRole::Prompt => prompt.push((name, var)),
                TensorRole::Offsets => offsets.push((name, var)),
            }
        }
        if prompt.is_empty() && offsets.is_empty() {
            bail!("a text-to-text run needs an adapter with trainable tensors (not head-only)");
        }
        if !prompt.is_empty() {
            opt.add_group("prompt", cfg.lr_prompt, prompt)?;
        }
        if !offsets.is_empty() {
            opt.add_group("offsets", cfg.lr_offsets, offsets)?;
        }
        Ok(opt)
    }
    fn loss(&self, idx: &[usize], rng: &mut StdRng) -> Result<Tensor> {
        Ok(self.model.loss(&self.batch(idx)?, Some(rng))?)
    }
    fn validate(&self, cfg: &TrainConfig) -> Result<Scores> {
        let out = self.validation_outputs(cfg.eval_batch_size)?;
        self.task.score(&out, &self.task.validation)
    }
    fn primary_metric(&self) -> &str {
        self.task.primary_metric()
    }
    fn tensors(&self) -> HashMap<String, Tensor> {
        self.model.adapter.tensors()
    }
    fn set_values(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.model.adapter.set_values(tensors)
    }
    fn save_best(
        &self,
        run: &RunDir,
        cfg: &TrainConfig,
        metrics: &BTreeMap<String, f64>,
        step: usize,
    ) -> Result<()> {
        let manifest = Seq2SeqManifest {
            adept_version: env!("CARGO_PKG_VERSION").to_string(),
            task_kind: "seq2seq".into(),
            model_dir: run.model_dir.display().to_string(),
            model_family: self.model.backbone.family().into(),
            model_type: self.model.backbone.model_type().into(),
            model_sha256: run.model_sha256.clone(),
            tokenizer_sha256: run.tokenizer_sha256.clone(),
            task: self.task.name.clone(),
            template: self.task.template.clone(),
            primary_metric: self.task.primary_metric().into(),
            max_source_len: self.enc.max_source_len,
            options: self.opts,
            train_config: cfg.clone(),
            step,
            validation_metrics: metrics.clone(),
        };
        // The same swap as the classifier's `best/`: a complete new folder renamed into place.
        let fresh = run.path().join(".best.new");
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh)?;
        }
        self.model.adapter.save(&fresh)?;
        write_atomic(
            &fresh.join("run.json"),
            &serde_json::to_vec_pretty(&manifest)?,
        )?;
        let best = run.best_dir();
        let old = run.path().join(".best.old");
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

/// A fresh model: the frozen `backbone` and a new adapter from `cfg.adapter` (its width set to
/// the model's, its text prompt init tokenized by `tokenizer`), seeded by `cfg.seed`. `cfg`'s
/// rank and budget must be resolved ([`crate::resolve_budget`]). The model is put in
/// `cfg.autocast`'s precision after the adapter has read its (f32) embedding table.
pub fn build_seq2seq(
    backbone: Box<dyn Seq2SeqLm>,
    tokenizer: &Tokenizer,
    cfg: &TrainConfig,
) -> Result<Seq2SeqModel> {
    let d = backbone.hidden_size();
    if tokenizer.get_vocab_size(true) > backbone.vocab_size() {
        bail!(
            "the tokenizer has {} tokens but the model's embedding table only {} rows: tokenizer \
             and model do not match",
            tokenizer.get_vocab_size(true),
            backbone.vocab_size()
        );
    }
    if cfg.max_len() + cfg.prompt_len() > backbone.max_sequence_len() {
        bail!(
            "max length {} plus a {}-token prompt exceeds the model's {} positions",
            cfg.max_len(),
            cfg.prompt_len(),
            backbone.max_sequence_len()
        );
    }
    let mut acfg = cfg.adapter.clone();
    acfg.token_dim = d;
    if let PromptInit::Text { text, token_ids } = &mut acfg.prompt_init {
        *token_ids = tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize the prompt init text: {e}"))?
            .get_ids()
            .to_vec();
    }
    let adapter = Adapter::init(acfg, backbone.word_embedding_table(), cfg.seed)?;
    let mut backbone = backbone;
    backbone.set_autocast(cfg.autocast)?;
    Ok(Seq2SeqModel { backbone, adapter })
}

/// The encoder for `backbone`'s special ids, `cfg`'s source length and over-length rule.
pub fn seq2seq_encoder(
    tokenizer: Tokenizer,
    backbone: &dyn Seq2SeqLm,
    cfg: &TrainConfig,
    opts: &Seq2SeqOptions,
) -> Result<Seq2SeqEncoder> {
    if cfg.max_len() < 2 || opts.max_target_len < 1 {
        bail!(
            "max length {} / max target length {} are too short (need a token and EOS in the \
             source, EOS in the target)",
            cfg.max_len(),
            opts.max_target_len
        );
    }
    Ok(Seq2SeqEncoder {
        tokenizer,
        max_source_len: cfg.max_len(),
        max_target_len: opts.max_target_len,
        over_length: cfg.over_length,
        eos_id: backbone.eos_token_id(),
        pad_id: backbone.pad_token_id(),
    })
}

/// Trains an adapter on the encoder–decoder in `model_dir` (`config.json`, `model.safetensors`,
/// `tokenizer.json`) for `task`, writing the run into `run_dir` (see [`crate::run`]; `best/`
/// holds the adapter and a [`Seq2SeqManifest`] `run.json`). `cfg`'s budget and rank are
/// resolved against the model here. With `resume`, continues from the run's checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train_seq2seq(
    model_dir: &Path,
    task: &Seq2SeqTask,
    cfg: &TrainConfig,
    opts: &Seq2SeqOptions,
    run_dir: &Path,
    resume: bool,
    overwrite: bool,
    device: &Device,
) -> Result<TrainReport> {
    let backbone = adept_backbones::load_seq2seq(model_dir, device)?;
    let tokenizer = load_tokenizer(&model_dir.join("tokenizer.json"))?;
    let mut cfg = cfg.clone();
    crate::resolve_budget(&mut cfg, backbone.hidden_size())?;
    let enc = seq2seq_encoder(tokenizer.clone(), backbone.as_ref(), &cfg, opts)?;
    let model = build_seq2seq(backbone, &tokenizer, &cfg)?;
    let run = RunDir::create(run_dir, model_dir, &cfg, resume, overwrite)?;
    let job = Seq2SeqJob::new(&model, &enc, task, *opts)?;
    run_loop(&job, &cfg, &run, resume, None)
}

/// Reads `run.json` of a text-to-text run's `best/`, refusing other kinds of run.
pub fn read_seq2seq_manifest(adapter_dir: &Path) -> Result<Seq2SeqManifest> {
    let p = adapter_dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let m: Seq2SeqManifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a text-to-text run manifest", p.display()))?;
    if m.task_kind != "seq2seq" {
        bail!(
            "{}: task_kind is {:?}, not \"seq2seq\"",
            p.display(),
            m.task_kind
        );
    }
    Ok(m)
}

/// A trained text-to-text run's `best/` (or the run folder's, via `adapter_dir`) on its frozen
/// model: the model folder recorded in `run.json` or `model_dir`, refused when its
/// `model.safetensors` is not the one the run was trained on (checksum); the encoder rebuilt
/// with the run's source length, over-length rule and target length.
pub fn load_trained_seq2seq(
    adapter_dir: &Path,
    model_dir: Option<&Path>,
    device: &Device,
) -> Result<(Seq2SeqModel, Seq2SeqEncoder, Seq2SeqManifest)> {
    let manifest = read_seq2seq_manifest(adapter_dir)?;
    let model_dir = model_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from(&manifest.model_dir));
    let weights = model_dir.join("model.safetensors");
    let sha = adept_bundle::sha256_file(&weights)?;
    if sha != manifest.model_sha256 {
        bail!(
            "{} is not the model this adapter was trained on (checksum {}, expected {}); pass \
             --model with the right folder",
            weights.display(),
            &sha[..sha.len().min(12)],
            &manifest.model_sha256[..manifest.model_sha256.len().min(12)]
        );
    }
    let backbone = adept_backbones::load_seq2seq(&model_dir, device)?;
    let adapter = Adapter::load(adapter_dir, device)?;
    if adapter.config.token_dim != backbone.hidden_size() {
        bail!(
            "adapter width {} in {} does not match the model's {} ({})",
            adapter.config.token_dim,
            adapter_dir.display(),
            backbone.hidden_size(),
            model_dir.display()
        );
    }
    let tokenizer = load_tokenizer(&model_dir.join("tokenizer.json"))?;
    let enc = seq2seq_encoder(
        tokenizer,
        backbone.as_ref(),
        &manifest.train_config,
        &manifest.options,
    )?;
    Ok((Seq2SeqModel { backbone, adapter }, enc, manifest))
}

/// Generated strings for `examples` (sources encoded by `enc`, cut as in training; greedy or
/// `opts.num_beams` beams, at most `opts.max_target_len` tokens) in batches of `batch_size`,
/// and their scores under `task`'s metrics: what validation computes during training.
pub fn evaluate_seq2seq(
    model: &Seq2SeqModel,
    enc: &Seq2SeqEncoder,
    task: &Seq2SeqTask,
    examples: &[Text2TextExample],
    opts: &Seq2SeqOptions,
    batch_size: usize,
) -> Result<(Vec<String>, Scores)> {
    if examples.is_empty() {
        bail!("task {} has no examples to evaluate", task.name);
    }
    let mut sources = Vec::with_capacity(examples.len());
    for ex in examples {
        sources.push(enc.source(&ex.source, &ex.origin)?.0);
    }
    let generated = generate_texts(model, enc, &sources, batch_size, opts)?;
    let scores = task.score(&generated, examples)?;
    Ok((generated, scores))
}
