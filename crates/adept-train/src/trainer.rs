//! The training loop: per-group AdamW, linear warm-up/decay, periodic evaluation keeping the best
//! adapter, early stopping, atomic checkpoints and exact resume, a progress bar and JSON-lines
//! metrics.

use crate::batch::Batch;
use crate::checkpoint::{self, LoopState};
use crate::model::{cross_entropy, mse, Classifier};
use crate::optim::{linear_schedule, AdamW, AdamWParams};
use crate::run::{RunDir, TrainConfig};
use crate::task::{Predictions, Scores, TaskData};
use crate::tokenize::{Encoded, TextEncoder};
use adept_adapters::TensorRole;
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::io::Write;
use std::time::Duration;
use std::time::Instant;

/// A labelled, encoded dataset ready for batching.
pub struct EncodedSet {
    pub items: Vec<Encoded>,
    /// Class ids (classification) or scores (regression), one per item.
    pub classes: Vec<u32>,
    pub scores: Vec<f32>,
    pub truncated: usize,
}

/// Encodes examples; every example must carry a label of the task's kind.
pub fn encode_set(
    enc: &TextEncoder,
    task: &TaskData,
    examples: &[adept_data::Example],
    split: &str,
) -> Result<EncodedSet> {
    if examples.is_empty() {
        bail!("the {split} split of task {} is empty", task.name);
    }
    let mut set = EncodedSet {
        items: Vec::with_capacity(examples.len()),
        classes: Vec::new(),
        scores: Vec::new(),
        truncated: 0,
    };
    for (i, ex) in examples.iter().enumerate() {
        let b = ex.text_b();
        let e = enc
            .encode(ex.text_a(), b.as_deref())
            .with_context(|| format!("{split} example {i} of task {}", task.name))?;
        set.truncated += e.truncated as usize;
        set.items.push(e);
        if task.regression {
            set.scores.push(ex.label.score().with_context(|| {
                format!(
                    "{split} example {i} of task {} has no score label",
                    task.name
                )
            })?);
        } else {
            let c = ex.label.class().with_context(|| {
                format!(
                    "{split} example {i} of task {} has no class label",
                    task.name
                )
            })?;
            if c >= task.label_names.len() {
                bail!(
                    "{split} example {i} of task {} has label id {c}, but the task has {} labels",
                    task.name,
                    task.label_names.len()
                );
            }
            set.classes.push(c as u32);
        }
    }
    if set.truncated > 0 {
        tracing::warn!(
            "{} of {} {split} examples were longer than {} tokens and were truncated",
            set.truncated,
            set.items.len(),
            enc.max_len
        );
    }
    Ok(set)
}

/// Runs the classifier over `set` in batches of `batch_size`; no dropout, no gradient use.
pub fn predict(
    model: &Classifier,
    set: &[Encoded],
    batch_size: usize,
    pad_id: u32,
    regression: bool,
    device: &Device,
) -> Result<(Predictions, Vec<Vec<f32>>)> {
    // Batches of similar lengths (less padding), outputs put back in input order.
    let mut order: Vec<usize> = (0..set.len()).collect();
    order.sort_by_key(|&i| set[i].ids.len());
    let mut logits_all = vec![Vec::new(); set.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().map(|&i| &set[i]).collect();
        let batch = Batch::collate(&refs, pad_id, device)?;
        let logits = model.forward_eval(&batch)?;
        for (&i, row) in chunk.iter().zip(logits.to_vec2::<f32>()?) {
            logits_all[i] = row;
        }
    }
    let preds = if regression {
        Predictions::Scores(logits_all.iter().map(|r| r[0]).collect())
    } else {
        Predictions::Classes(logits_all.iter().map(|r| adept_bundle::argmax(r)).collect())
    };
    Ok((preds, logits_all))
}

/// The training-set order: a seeded permutation per epoch; batch `step` takes the `batch_size`
/// items after position `step·batch_size` of the concatenated epochs. Pure function of
/// (seed, step), so a resumed run sees exactly the batches the uninterrupted run would.
pub struct BatchOrder {
    n: usize,
    batch_size: usize,
    seed: u64,
    cache: Option<(usize, Vec<usize>)>,
}

impl BatchOrder {
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Self {
        Self {
            n,
            batch_size,
            seed,
            cache: None,
        }
    }

    fn epoch_perm(&mut self, epoch: usize) -> &[usize] {
        if self.cache.as_ref().map(|c| c.0) != Some(epoch) {
            let mut perm: Vec<usize> = (0..self.n).collect();
            let mut rng = StdRng::seed_from_u64(
                self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            perm.shuffle(&mut rng);
            self.cache = Some((epoch, perm));
        }
        &self.cache.as_ref().expect("just filled").1
    }

    pub fn batch(&mut self, step: usize) -> Vec<usize> {
        let start = step * self.batch_size;
        let n = self.n;
        (start..start + self.batch_size)
            .map(|p| self.epoch_perm(p / n)[p % n])
            .collect()
    }
}

/// What a finished (or early-stopped) run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub steps: usize,
    pub best_step: Option<usize>,
    pub best_metric: Option<f64>,
    pub best_metrics: BTreeMap<String, f64>,
    pub final_loss: f64,
    pub seconds: f64,
    pub stopped_early: bool,
}

pub fn dropout_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(
        seed.wrapping_mul(31).wrapping_add(step as u64 + 1) ^ 0xD1B5_4A32_D192_ED03,
    )
}

/// One optimiser over the classifier's trainable tensors, one group (own peak learning rate)
/// per role: prompt, offsets, head.
pub fn build_optimizer(model: &Classifier, cfg: &TrainConfig) -> Result<AdamW> {
    let mut opt = AdamW::new(AdamWParams::default());
    let mut prompt_vars = Vec::new();
    let mut offset_vars = Vec::new();
    for (name, role, var) in model.adapter.vars() {
        match role {
            TensorRole::Prompt => prompt_vars.push((name, var)),
            TensorRole::Offsets => offset_vars.push((name, var)),
        }
    }
    if !prompt_vars.is_empty() {
        opt.add_group("prompt", cfg.lr_prompt, prompt_vars)?;
    }
    if !offset_vars.is_empty() {
        opt.add_group("offsets", cfg.lr_offsets, offset_vars)?;
    }
    opt.add_group("head", cfg.lr_head, model.head.vars())?;
    Ok(opt)
}

/// Labels of a training batch.
pub enum Targets {
    Classes(Vec<u32>),
    Scores(Vec<f32>),
}

/// Forward (with the adapter's dropout), loss, backward and one AdamW step; returns the loss.
pub fn train_step(
    model: &Classifier,
    opt: &mut AdamW,
    batch: &Batch,
    targets: &Targets,
    seed: u64,
    step: usize,
    lr_scale: f64,
) -> Result<f64> {
    let mut rng = dropout_rng(seed, step);
    let logits = model.forward(batch, Some(&mut rng))?;
    let loss = classifier_loss(&logits, targets, model.backbone.device())?;
    optimise(&loss, opt, step, lr_scale)
}

/// What the training loop needs of a model and its task: the trainable tensors, the loss of a
/// batch of training items, validation scores and how to keep the best adapter. The loop itself
/// ([`run_loop`]: schedule, per-group AdamW, evaluation, early stopping, checkpoints, exact
/// resume, progress and metrics) is the same for every kind of model; [`ClassifierJob`] is the
/// encoder classifier's, `crate::lm_train::LmJob` the causal language model's.
pub trait TrainJob {
    fn device(&self) -> &Device;
    /// Training items; batch `step` takes items by [`BatchOrder`].
    fn train_len(&self) -> usize;
    /// One optimiser, one group (own peak learning rate) per role.
    fn optimizer(&self, cfg: &TrainConfig) -> Result<AdamW>;
    /// The loss of training items `idx` (dropout drawn from `rng`).
    fn loss(&self, idx: &[usize], rng: &mut StdRng) -> Result<Tensor>;
    /// Scores on the validation split (eval mode).
    fn validate(&self, cfg: &TrainConfig) -> Result<Scores>;
    /// The primary metric's name, for progress lines.
    fn primary_metric(&self) -> &str;
    /// Every trainable tensor by name (checkpoints).
    fn tensors(&self) -> HashMap<String, Tensor>;
    /// Restores what [`TrainJob::tensors`] gave.
    fn set_values(&self, tensors: &HashMap<String, Tensor>) -> Result<()>;
    /// Extra fields for the `train` lines of `metrics.jsonl` (e.g. peak memory); none by default,
    /// so encoder runs log what they always have.
    fn train_log_extra(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        None
    }
    /// Writes the run's `best/` (adapter, head if any, `run.json`).
    fn save_best(
        &self,
        run: &RunDir,
        cfg: &TrainConfig,
        metrics: &BTreeMap<String, f64>,
        step: usize,
    ) -> Result<()>;
}

/// The encoder classifier's training job.
pub struct ClassifierJob<'a> {
    pub model: &'a Classifier,
    pub enc: &'a TextEncoder,
    pub task: &'a TaskData,
    pub train_set: EncodedSet,
    pub val_set: EncodedSet,
}

impl<'a> ClassifierJob<'a> {
    /// Encodes the task's train and validation splits.
    pub fn new(model: &'a Classifier, enc: &'a TextEncoder, task: &'a TaskData) -> Result<Self> {
        Ok(Self {
            model,
            enc,
            task,
            train_set: encode_set(enc, task, &task.train, "train")?,
            val_set: encode_set(enc, task, &task.validation, "validation")?,
        })
    }
}

impl TrainJob for ClassifierJob<'_> {
    fn device(&self) -> &Device {
        self.model.backbone.device()
    }
    fn train_len(&self) -> usize {
        self.train_set.items.len()
    }
    fn optimizer(&self, cfg: &TrainConfig) -> Result<AdamW> {
        build_optimizer(self.model, cfg)
    }
    fn loss(&self, idx: &[usize], rng: &mut StdRng) -> Result<Tensor> {
        let refs: Vec<&Encoded> = idx.iter().map(|&i| &self.train_set.items[i]).collect();
        let batch = Batch::collate(&refs, self.enc.pad_id, self.device())?;
        let targets = if self.task.regression {
            Targets::Scores(idx.iter().map(|&i| self.train_set.scores[i]).collect())
        } else {
            Targets::Classes(idx.iter().map(|&i| self.train_set.classes[i]).collect())
        };
        let logits = self.model.forward(&batch, Some(rng))?;
        classifier_loss(&logits, &targets, self.device())
    }
    fn validate(&self, cfg: &TrainConfig) -> Result<Scores> {
        let (preds, _) = predict(
            self.model,
            &self.val_set.items,
            cfg.eval_batch_size,
            self.enc.pad_id,
            self.task.regression,
            self.device(),
        )?;
        self.task.score(&preds, &self.task.validation)
    }
    fn primary_metric(&self) -> &str {
        &self.task.primary_metric
    }
    fn tensors(&self) -> HashMap<String, Tensor> {
        let mut t = self.model.adapter.tensors();
        t.extend(self.model.head.tensors());
        t
    }
    fn set_values(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.model.adapter.set_values(tensors)?;
        self.model.head.set_values(tensors)
    }
    fn save_best(
        &self,
        run: &RunDir,
        cfg: &TrainConfig,
        metrics: &BTreeMap<String, f64>,
        step: usize,
    ) -> Result<()> {
        run.save_best(self.model, self.task, cfg, self.enc, metrics, step)
    }
}

fn classifier_loss(logits: &Tensor, targets: &Targets, device: &Device) -> Result<Tensor> {
    Ok(match targets {
        Targets::Scores(t) => mse(logits, &Tensor::new(t.as_slice(), device)?)?,
        Targets::Classes(t) => cross_entropy(logits, &Tensor::new(t.as_slice(), device)?)?,
    })
}

/// Trains `model` on `task` as `cfg` says, writing into `run`. With `resume`, continues from
/// the run's checkpoint. `stop_after` (tests: simulate a kill) ends the loop after that many
/// steps without finishing the run.
pub fn train(
    model: &Classifier,
    enc: &TextEncoder,
    task: &TaskData,
    cfg: &TrainConfig,
    run: &RunDir,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<TrainReport> {
    run_loop(
        &ClassifierJob::new(model, enc, task)?,
        cfg,
        run,
        resume,
        stop_after,
    )
}

/// Backward and one AdamW step on `loss`; returns its value (an error if it is not finite).
fn optimise(loss: &Tensor, opt: &mut AdamW, step: usize, lr_scale: f64) -> Result<f64> {
    let value = loss.to_scalar::<f32>()? as f64;
    if !value.is_finite() {
        bail!("training diverged at step {step}: loss is {value}; lower the learning rates");
    }
    let grads = loss.backward()?;
    opt.step(&grads, lr_scale)?;
    Ok(value)
}

/// The training loop for any [`TrainJob`], writing into `run`; see [`train`].
pub fn run_loop(
    job: &dyn TrainJob,
    cfg: &TrainConfig,
    run: &RunDir,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<TrainReport> {
    let device = job.device().clone();
    let mut opt = job.optimizer(cfg)?;

    let config_hash = cfg.hash();
    let mut state = LoopState {
        step: 0,
        best_metric: None,
        best_step: None,
        evals_since_best: 0,
        config_hash: config_hash.clone(),
    };
    let ckpt_path = run.checkpoint_path();
    if resume {
        if ckpt_path.exists() {
            let (tensors, st) = checkpoint::load(&ckpt_path, &device)?;
            if st.config_hash != config_hash {
                bail!(
                    "{} was written under a different training config; resume with the run's own settings ({})",
                    ckpt_path.display(),
                    run.config_path().display()
                );
            }
            job.set_values(&tensors)?;
            opt.load_state(&tensors, st.step)?;
            state = st;
            run.truncate_metrics_after(state.step)?;
            tracing::info!("resuming {} from step {}", run.path().display(), state.step);
        } else {
            tracing::info!(
                "no checkpoint in {}: starting from step 0",
                run.path().display()
            );
        }
    }

    let mut metrics_log = run.metrics_writer()?;
    let mut order = BatchOrder::new(job.train_len(), cfg.batch_size, cfg.seed);
    let mut pb = Progress::new(cfg.steps, state.step);
    let started = Instant::now();
    let mut last_loss = f64::NAN;
    let mut best_metrics = BTreeMap::new();
    let mut stopped_early = false;
    let mut window = (Instant::now(), 0usize);
    let stop_at = stop_after
        .map(|n| (state.step + n).min(cfg.steps))
        .unwrap_or(cfg.steps);

    while state.step < stop_at {
        let step = state.step;
        let idx = order.batch(step);
        let lr_scale = linear_schedule(step, cfg.warmup, cfg.steps);
        let mut rng = dropout_rng(cfg.seed, step);
        let loss = job.loss(&idx, &mut rng)?;
        last_loss = optimise(&loss, &mut opt, step, lr_scale)?;
        drop(loss);
        state.step += 1;
        window.1 += idx.len();

        if state.step.is_multiple_of(cfg.log_every) || state.step == cfg.steps {
            let secs = window.0.elapsed().as_secs_f64();
            let eps = window.1 as f64 / secs.max(1e-9);
            let mut line = serde_json::json!({"event": "train", "step": state.step,
                "loss": last_loss, "lr_scale": lr_scale, "examples_per_s": eps});
            if let (Some(extra), Some(obj)) = (job.train_log_extra(), line.as_object_mut()) {
                obj.extend(extra);
            }
            writeln!(metrics_log, "{line}")?;
            pb.set_message(format!("loss {last_loss:.4} · {eps:.1} ex/s"));
            window = (Instant::now(), 0);
        }
        pb.set_position(state.step);

        let eval_now = state.step.is_multiple_of(cfg.eval_every) || state.step == cfg.steps;
        if eval_now {
            let scores = job.validate(cfg)?;
            let primary = scores.primary;
            let improved = state.best_metric.is_none_or(|b| primary > b);
            if improved {
                state.best_metric = Some(primary);
                state.best_step = Some(state.step);
                state.evals_since_best = 0;
                best_metrics = scores.metrics.clone();
                job.save_best(run, cfg, &scores.metrics, state.step)?;
            } else {
                state.evals_since_best += 1;
            }
            writeln!(
                metrics_log,
                "{}",
                serde_json::json!({"event": "eval", "split": "validation", "step": state.step,
                    "metrics": scores.metrics, "primary": primary, "best": state.best_metric,
                    "best_step": state.best_step})
            )?;
            pb.println(format!(
                "step {:>5}: validation {} = {:.4} (best {:.4} at step {})",
                state.step,
                job.primary_metric(),
                primary,
                state.best_metric.unwrap_or(f64::NAN),
                state.best_step.unwrap_or(0)
            ));
            if let Some(patience) = cfg.early_stop {
                if state.evals_since_best >= patience {
                    stopped_early = true;
                }
            }
        }
        metrics_log.flush()?;
        if state.step.is_multiple_of(cfg.checkpoint_every)
            || state.step == cfg.steps
            || stopped_early
        {
            let mut tensors = job.tensors();
            tensors.extend(opt.state());
            checkpoint::save(&ckpt_path, &tensors, &state)?;
        }
        if stopped_early {
            pb.println(format!(
                "early stop: no improvement in {} evaluations",
                state.evals_since_best
            ));
            break;
        }
    }
    pb.finish();
    Ok(TrainReport {
        steps: state.step,
        best_step: state.best_step,
        best_metric: state.best_metric,
        best_metrics,
        final_loss: last_loss,
        seconds: started.elapsed().as_secs_f64(),
        stopped_early,
    })
}

/// Seconds between plain progress lines when stderr is not a terminal (`ADEPT_PROGRESS_EVERY`).
pub const ENV_PROGRESS_EVERY: &str = "ADEPT_PROGRESS_EVERY";

/// Training progress on stderr: an indicatif bar on a terminal; elsewhere (nohup, CI, a log
/// file), where indicatif hides the bar and drops its lines, a plain line every
/// `ADEPT_PROGRESS_EVERY` seconds (default 30; 0: every step, with the last logged loss) and at
/// the last step.
enum Progress {
    Bar(ProgressBar),
    Plain {
        total: usize,
        first: usize,
        every: Duration,
        started: Instant,
        last: Option<Instant>,
        msg: String,
    },
}

impl Progress {
    fn new(total: usize, position: usize) -> Self {
        if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new(total as u64);
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid template"),
            );
            pb.set_position(position as u64);
            Progress::Bar(pb)
        } else {
            let secs = std::env::var(ENV_PROGRESS_EVERY)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(30.0);
            Progress::Plain {
                total,
                first: position,
                every: Duration::from_secs_f64(secs),
                started: Instant::now(),
                last: None,
                msg: String::new(),
            }
        }
    }

    fn set_message(&mut self, m: String) {
        match self {
            Progress::Bar(pb) => pb.set_message(m),
            Progress::Plain { msg, .. } => *msg = m,
        }
    }

    fn set_position(&mut self, step: usize) {
        match self {
            Progress::Bar(pb) => pb.set_position(step as u64),
            Progress::Plain {
                total,
                first,
                every,
                started,
                last,
                msg,
            } => {
                let due = last.is_none_or(|t| t.elapsed() >= *every) && !msg.is_empty();
                if !(due || step == *total) {
                    return;
                }
                *last = Some(Instant::now());
                let elapsed = started.elapsed().as_secs_f64();
                let done = step.saturating_sub(*first).max(1) as f64;
                let eta = elapsed / done * total.saturating_sub(step) as f64;
                eprintln!(
                    "step {step}/{total} ({:.0}%) {msg} · elapsed {}, eta {}",
                    100.0 * step as f64 / (*total).max(1) as f64,
                    clock(elapsed),
                    clock(eta)
                );
            }
        }
    }

    fn println(&self, line: String) {
        match self {
            Progress::Bar(pb) => pb.println(line),
            Progress::Plain { .. } => eprintln!("{line}"),
        }
    }

    fn finish(self) {
        if let Progress::Bar(pb) = self {
            pb.finish_and_clear();
        }
    }
}

/// `1h02m03s`, `4m05s`, `7s`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod progress_tests {
    #[test]
    fn clock_reads_as_hours_minutes_seconds() {
        assert_eq!(super::clock(7.4), "7s");
        assert_eq!(super::clock(245.0), "4m05s");
        assert_eq!(super::clock(3723.0), "1h02m03s");
    }
}
