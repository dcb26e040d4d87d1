//! Text generation with a decoder bundle, independent of the engine that runs the graph.
//!
//! Everything here is candle-free and builds for `wasm32-unknown-unknown` (no clock, no OS
//! randomness): the native runtime (`adept generate`, ONNX Runtime) and the browser run the same
//! loop, the same logits processing and the same streaming rules, and differ only in the
//! [`DecoderStep`] that runs the graph.
//!
//! * [`GenerationConfig`]: `max_new_tokens`, `temperature`, `top_k`, `top_p`,
//!   `repetition_penalty`, `seed`, `stop_strings`, `eos_token_ids`, `do_sample`.
//! * [`process_logits`]: Hugging Face semantics, in the order `transformers`' `generate` applies
//!   them: `RepetitionPenaltyLogitsProcessor` (over prompt + generated ids; positive logits are
//!   divided by the penalty, negative ones multiplied), and when sampling
//!   `TemperatureLogitsWarper`, `TopKLogitsWarper` (keep every logit ≥ the k-th largest),
//!   `TopPLogitsWarper` (keep the smallest set of most likely tokens whose probability sums to
//!   ≥ p, at least one). Removed tokens get `-inf`.
//! * [`choose_token`]: greedy = the first argmax when not sampling; otherwise a draw from the
//!   softmax of the processed logits with a seeded [`StdRng`] (`seed_from_u64`, deterministic and
//!   wasm-safe). Each row has its own generator seeded with `seed`, so a prompt generates the
//!   same text alone or inside a batch.
//! * [`StreamDecoder`]: incremental detokenisation that emits only complete text: it holds
//!   back while the decoded completion ends in U+FFFD (a multi-byte character split over
//!   tokens) or in something that could still grow into a stop string, and cuts the text at
//!   the first stop string.
//! * [`GenerationLoop`]: the loop, driven one step at a time from outside: left-pads a batch of
//!   prompts, keeps a finished flag per row (EOS, stop string, `max_new_tokens`), feeds
//!   finished rows padding until every row is done, and calls `on_token(row, piece)` with each
//!   newly complete piece. The browser drives it around onnxruntime-web's asynchronous runs.
//! * [`generate`]: the same loop over a synchronous [`DecoderStep`] (the native runtime).
//!
//! # The decoder step contract (the graph's, in optimum's names)
//!
//! ```text
//! input_ids            int64 [b, s]
//! attention_mask       int64 [b, past + s]      1 = attend, 0 = padding
//! position_ids         int64 [b, s]             cumsum(attention_mask) - 1 (padding: 1)
//! past_key_values.{i}.key|value  float [b, kv_heads, past, head_dim]   (past may be 0)
//!   -> logits          float [b, s, vocab]
//!      present.{i}.key|value     float [b, kv_heads, past + s, head_dim]
//! ```
//!
//! A row's layout is `[P | pads | prompt tokens | generated tokens]`, where `P` is the soft
//! prompt's `l` rows: either already in the step's key/value cache (the bundle's
//! `prompt_cache.safetensors`, [`DecoderStep::cached_prefix_len`] = `l`) or fed on the first
//! call as `l` virtual token ids `vocab_size..vocab_size + l` ([`DecoderStep::prefix_ids`]).
//! Prompts of different lengths are left-padded (pad id, mask 0) *after* `P`, so the first real
//! token of every row has position `l` and positions count attended rows only. The mask the
//! loop passes always covers every row the step has seen, the cached prefix included.

use anyhow::{bail, ensure, Context, Result};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// How to generate. The neutral values switch a processor off: `temperature` 1, `top_k` 0,
/// `top_p` 1, `repetition_penalty` 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Most tokens generated per prompt (EOS not counted as text but counted as a token).
    pub max_new_tokens: usize,
    /// Logits are divided by it before sampling (> 0).
    pub temperature: f32,
    /// Keep only the `top_k` largest logits when sampling (0: off).
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with cumulative probability ≥ `top_p`
    /// (in (0, 1]; 1: off).
    pub top_p: f32,
    /// Hugging Face's repetition penalty over prompt and generated ids (> 0; 1: off).
    pub repetition_penalty: f32,
    /// Seed of each row's sampler.
    pub seed: u64,
    /// Stop a row when its decoded completion contains one of these; the text is cut there.
    pub stop_strings: Vec<String>,
    /// Stop a row when it generates one of these ids (the id is not decoded into the text).
    pub eos_token_ids: Vec<u32>,
    /// Sample (`true`) or take the argmax (`false`, greedy; temperature/top-k/top-p unused).
    pub do_sample: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop_strings: Vec::new(),
            eos_token_ids: Vec::new(),
            do_sample: false,
        }
    }
}

impl GenerationConfig {
    /// Checks the values; errors name the field and its valid range.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.max_new_tokens >= 1,
            "max_new_tokens is 0; generate at least 1 token"
        );
        ensure!(
            self.temperature.is_finite() && self.temperature > 0.0,
            "temperature {} must be a finite number > 0 (1 = unchanged; use greedy decoding instead of 0)",
            self.temperature
        );
        ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "top_p {} must be in (0, 1] (1 = off)",
            self.top_p
        );
        ensure!(
            self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0,
            "repetition_penalty {} must be a finite number > 0 (1 = off)",
            self.repetition_penalty
        );
        for s in &self.stop_strings {
            ensure!(!s.is_empty(), "a stop string is empty");
        }
        Ok(())
    }
}

/// Applies the repetition penalty to `logits` (`[vocab]`) in place: for every distinct id in
/// `seen`, a positive logit is divided by `penalty`, a negative one multiplied
/// (`RepetitionPenaltyLogitsProcessor`). Ids outside the row are ignored.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if i < logits.len() && !done[i] {
            done[i] = true;
            let v = logits[i];
            logits[i] = if v < 0.0 { v * penalty } else { v / penalty };
        }
    }
}

/// Divides `logits` by `temperature` in place (`TemperatureLogitsWarper`).
pub fn apply_temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        for v in logits.iter_mut() {
            *v /= temperature;
        }
    }
}

/// Sets every logit below the `top_k`-th largest to `-inf` (`TopKLogitsWarper`: ties with the
/// k-th value stay; `top_k` 0 is off, above the vocabulary keeps all).
pub fn apply_top_k(logits: &mut [f32], top_k: usize) {
    if top_k == 0 || top_k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = sorted[top_k - 1];
    for v in logits.iter_mut() {
        if *v < kth {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Nucleus filtering (`TopPLogitsWarper`): sorts ascending, accumulates the softmax
/// probabilities (f32, as transformers does), removes every token whose cumulative
/// probability is ≤ `1 - top_p`, always keeping the most likely one; removed → `-inf`.
pub fn apply_top_p(logits: &mut [f32], top_p: f32) {
    if top_p >= 1.0 || logits.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Ascending, stable on ties (index order).
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let sorted: Vec<f32> = order.iter().map(|&i| logits[i]).collect();
    let probs = softmax_f32(&sorted);
    let threshold = 1.0 - top_p;
    let mut cum = 0.0f32;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[rank];
        if cum <= threshold && rank != last {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Softmax of a row with `-inf` entries mapping to 0 (a row of all `-inf` gives all 0).
fn softmax_f32(x: &[f32]) -> Vec<f32> {
    let max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![0.0; x.len()];
    }
    let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// The full processing of one row of logits (`[vocab]`, in place), in `generate`'s order:
/// repetition penalty over `seen` (prompt + generated ids); when `cfg.do_sample`, then
/// temperature, top-k and top-p.
pub fn process_logits(logits: &mut [f32], seen: &[u32], cfg: &GenerationConfig) {
    apply_repetition_penalty(logits, seen, cfg.repetition_penalty);
    if cfg.do_sample {
        apply_temperature(logits, cfg.temperature);
        apply_top_k(logits, cfg.top_k);
        apply_top_p(logits, cfg.top_p);
    }
}

/// The next token from processed logits: the first argmax when not sampling, otherwise a draw
/// from their softmax with `rng`. Errors when no token has a finite logit (NaN logits, or
/// everything filtered).
pub fn choose_token(logits: &[f32], do_sample: bool, rng: &mut StdRng) -> Result<u32> {
    ensure!(
        !logits.is_empty(),
        "the model returned an empty row of logits"
    );
    if !do_sample {
        ensure!(
            logits.iter().all(|v| !v.is_nan()),
            "the model returned NaN logits"
        );
        return Ok(crate::argmax(logits) as u32);
    }
    let probs = softmax_f32(logits);
    let dist = WeightedIndex::new(&probs).map_err(|e| {
        anyhow::anyhow!("cannot sample from the logits ({e}): NaN logits or every token filtered")
    })?;
    Ok(dist.sample(rng) as u32)
}

/// Token ids → text, as the stream decoder needs it: the whole completion so far, special
/// tokens skipped.
pub trait Detokenizer {
    fn decode(&self, ids: &[u32]) -> Result<String>;
}

impl Detokenizer for tokenizers::Tokenizer {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        std::ops::Deref::deref(self)
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("cannot decode token ids {ids:?}: {e}"))
    }
}

/// Why a row stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// It generated an EOS id.
    Eos,
    /// Its text contains a stop string (cut there).
    Stop,
    /// It reached `max_new_tokens`.
    Length,
}

/// Incremental detokenisation of one row. Each [`push`](Self::push) decodes the whole
/// completion and returns the part of it that is now final: nothing while the text ends in
/// U+FFFD (an incomplete multi-byte character) or in a prefix of a stop string; when a stop
/// string appears, the text up to it and `stopped = true`. The pieces concatenate to
/// [`text`](Self::text).
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    stops: Vec<String>,
    emitted: String,
    stopped: bool,
}

impl StreamDecoder {
    pub fn new(stop_strings: &[String]) -> Self {
        Self {
            stops: stop_strings.to_vec(),
            ..Default::default()
        }
    }

    /// Adds a generated id; returns the newly final text (possibly empty) and whether a stop
    /// string ended the completion.
    pub fn push(&mut self, id: u32, detok: &dyn Detokenizer) -> Result<(String, bool)> {
        ensure!(
            !self.stopped,
            "the completion already ended at a stop string"
        );
        self.ids.push(id);
        let text = detok.decode(&self.ids)?;
        if let Some(cut) = self.first_stop(&text) {
            self.stopped = true;
            return Ok((self.advance(&text[..cut]), true));
        }
        if text.ends_with('\u{FFFD}') {
            return Ok((String::new(), false));
        }
        let hold = self.stop_prefix_len(&text);
        Ok((self.advance(&text[..text.len() - hold]), false))
    }

    /// Emits whatever is held back (at the end of generation); the final text.
    pub fn finish(&mut self, detok: &dyn Detokenizer) -> Result<String> {
        if self.stopped || self.ids.is_empty() {
            return Ok(String::new());
        }
        let text = detok.decode(&self.ids)?;
        Ok(self.advance(&text))
    }

    /// The text emitted so far.
    pub fn text(&self) -> &str {
        &self.emitted
    }

    /// The generated ids so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Byte offset of the earliest stop string in `text`.
    fn first_stop(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// Length of the longest suffix of `text` that is a proper prefix of a stop string.
    fn stop_prefix_len(&self, text: &str) -> usize {
        let mut best = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > best && text.ends_with(&s[..i]) {
                    best = i;
                }
            }
        }
        best
    }

    /// Emits `upto[emitted.len()..]` if `upto` extends what was emitted. A decoder may rewrite
    /// earlier text as tokens arrive (rare: merges across the boundary); then nothing is
    /// emitted until the text extends the emitted part again.
    fn advance(&mut self, upto: &str) -> String {
        if upto.len() > self.emitted.len() && upto.starts_with(self.emitted.as_str()) {
            let piece = upto[self.emitted.len()..].to_owned();
            self.emitted.push_str(&piece);
            piece
        } else {
            String::new()
        }
    }
}

/// One forward step of a decoder over the contract's inputs (see the module docs). The step
/// owns its key/value cache: each call appends the `s` new rows and returns the logits of the
/// last row of every sequence.
pub trait DecoderStep {
    /// Runs `ids` (`[b, s]`, row-major), `mask` (`[b, past + s]`, covering the cached prefix
    /// and every earlier step) and `positions` (`[b, s]`); returns the logits of the last of the
    /// `s` rows, `[b, vocab]` row-major.
    fn step(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>>;

    /// Width of the logits.
    fn vocab_size(&self) -> usize;

    /// Rows already in the cache before the first call (the prompt cache: `l`); the loop's
    /// mask starts with that many ones. Called before the first step.
    fn cached_prefix_len(&self) -> usize {
        0
    }

    /// Ids fed before the padding on the first call (the soft prompt as virtual tokens
    /// `vocab_size..vocab_size + l` when no prompt cache is used). Called before the first step.
    fn prefix_ids(&self) -> Vec<i64> {
        Vec::new()
    }

    /// Called once before the first step with the batch size, so that a step can size its cache
    /// (e.g. broadcast a prompt cache to `batch` rows).
    fn start(&mut self, _batch: usize) -> Result<()> {
        Ok(())
    }

    /// As [`DecoderStep::step`], but returns the logits of every one of the `s` rows,
    /// `[b, s, vocab]` row-major (for scoring continuations, [`continuation_logprobs`]).
    fn step_all(
        &mut self,
        _ids: &[i64],
        _mask: &[i64],
        _positions: &[i64],
        _batch: usize,
        _seq: usize,
    ) -> Result<Vec<f32>> {
        bail!("this decoder step returns only the last position's logits; it cannot score continuations")
    }
}

/// Per row `(ids, target_start)`, the summed log-probability of `ids[target_start..]` given the
/// ids before them (and the soft prompt): `Σ_{t ≥ target_start} log_softmax(logits[t − 1])[ids[t]]`,
/// as training's label-word scoring computes it. The rows run as one batch, laid out exactly as
/// [`generate`]'s first call (`[prefix | pads | ids]`, left padded with `pad_id`), so the
/// positions and the attended keys are those generation uses. `target_start ≥ 1`.
pub fn continuation_logprobs(
    step: &mut dyn DecoderStep,
    rows: &[(&[u32], usize)],
    pad_id: u32,
) -> Result<Vec<f32>> {
    ensure!(!rows.is_empty(), "no rows to score");
    for (i, (ids, start)) in rows.iter().enumerate() {
        ensure!(
            *start >= 1 && *start <= ids.len(),
            "row {i}: target start {start} outside 1..={} (position 0 has no predecessor)",
            ids.len()
        );
    }
    let b = rows.len();
    let vocab = step.vocab_size();
    let cached = step.cached_prefix_len();
    let prefix = step.prefix_ids();
    step.start(b)?;
    let longest = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    let seq = prefix.len() + longest;
    let mut ids = Vec::with_capacity(b * seq);
    let mut mask = Vec::with_capacity(b * (cached + seq));
    let mut positions = Vec::with_capacity(b * seq);
    for (r, _) in rows {
        let pads = longest - r.len();
        ids.extend_from_slice(&prefix);
        ids.extend(std::iter::repeat_n(pad_id as i64, pads));
        ids.extend(r.iter().map(|&t| t as i64));
        let mut m = vec![1i64; cached + prefix.len()];
        m.extend(std::iter::repeat_n(0, pads));
        m.extend(std::iter::repeat_n(1, r.len()));
        positions.extend_from_slice(&positions_from_mask(&m)[cached..]);
        mask.extend(m);
    }
    let logits = step
        .step_all(&ids, &mask, &positions, b, seq)
        .context("the decoder step failed")?;
    ensure!(
        logits.len() == b * seq * vocab,
        "the decoder step returned {} logits, expected batch {b} × {seq} positions × vocab {vocab}",
        logits.len()
    );
    let mut out = Vec::with_capacity(b);
    for (row, (r, start)) in rows.iter().enumerate() {
        // Token t of the row sits at column seq − len + t; its logits come from the column before.
        let first_col = seq - r.len();
        let mut sum = 0f32;
        for (t, &tok) in r.iter().enumerate().skip(*start) {
            let col = first_col + t - 1;
            let l = &logits[(row * seq + col) * vocab..(row * seq + col + 1) * vocab];
            ensure!(
                (tok as usize) < vocab,
                "row {row}: token id {tok} is outside the {vocab}-token vocabulary"
            );
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + l.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
            sum += l[tok as usize] - lse;
        }
        out.push(sum);
    }
    Ok(out)
}

/// One completed prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The completion (stop string and everything after it excluded).
    pub text: String,
    /// Generated ids (an EOS id that ended the row included).
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
}

/// Position ids from a mask row: `cumsum(mask) - 1` for attended positions, 1 for padding (as
/// transformers' `prepare_inputs_for_generation`).
pub fn positions_from_mask(mask: &[i64]) -> Vec<i64> {
    let mut seen = 0i64;
    mask.iter()
        .map(|&m| {
            seen += m;
            if m == 0 {
                1
            } else {
                seen - 1
            }
        })
        .collect()
}

/// The inputs of one decoder step (the contract's, see the module docs), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepInputs {
    /// `[batch, seq]`.
    pub ids: Vec<i64>,
    /// `[batch, past + seq]`: the cached prefix, every earlier step and this one.
    pub mask: Vec<i64>,
    /// `[batch, seq]`.
    pub positions: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

/// The generation loop driven from outside, one step at a time: [`inputs`](Self::inputs) gives
/// the next step's feeds, the caller runs the graph (synchronously as [`generate`] does, or
/// asynchronously as the browser's onnxruntime-web does) and hands the last row's logits to
/// [`push_logits`](Self::push_logits), until [`is_done`](Self::is_done); then
/// [`finish`](Self::finish). All the rules (padding, masks, positions, logits processing,
/// sampling, EOS, stop strings, streaming) live here, so every engine runs the same loop.
#[derive(Clone, Debug)]
pub struct GenerationLoop {
    cfg: GenerationConfig,
    pad_id: u32,
    vocab: usize,
    prompt_lens: Vec<usize>,
    /// The next step's input ids, `[b, seq]`.
    ids: Vec<i64>,
    seq: usize,
    masks: Vec<Vec<i64>>,
    rngs: Vec<StdRng>,
    seen: Vec<Vec<u32>>,
    streams: Vec<StreamDecoder>,
    generated: Vec<Vec<u32>>,
    finished: Vec<Option<FinishReason>>,
    steps: usize,
}

impl GenerationLoop {
    /// A loop over `prompts` (token ids, BOS already added), left-padded with `pad_id`, for a
    /// decoder with `vocab` logits whose cache already holds `cached` rows (the prompt cache)
    /// and that is fed `prefix` ids before the padding on the first step (the soft prompt as
    /// virtual tokens). Errors on a bad `cfg` or an empty prompt.
    pub fn new(
        prompts: &[Vec<u32>],
        pad_id: u32,
        cfg: &GenerationConfig,
        vocab: usize,
        cached: usize,
        prefix: &[i64],
    ) -> Result<Self> {
        cfg.validate()?;
        ensure!(!prompts.is_empty(), "no prompts to generate from");
        for (i, p) in prompts.iter().enumerate() {
            ensure!(
                !p.is_empty(),
                "prompt {i} has no tokens (an empty text with no BOS token); give it some text"
            );
        }
        let b = prompts.len();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        // First call: [prefix | pads | prompt] per row; mask [cached ones | prefix ones | 0.. | 1..].
        let s0 = prefix.len() + longest;
        let mut ids = Vec::with_capacity(b * s0);
        let mut masks: Vec<Vec<i64>> = Vec::with_capacity(b);
        for p in prompts {
            let pads = longest - p.len();
            ids.extend_from_slice(prefix);
            ids.extend(std::iter::repeat_n(pad_id as i64, pads));
            ids.extend(p.iter().map(|&t| t as i64));
            let mut m = vec![1i64; cached + prefix.len()];
            m.extend(std::iter::repeat_n(0, pads));
            m.extend(std::iter::repeat_n(1, p.len()));
            masks.push(m);
        }
        Ok(Self {
            cfg: cfg.clone(),
            pad_id,
            vocab,
            prompt_lens: prompts.iter().map(Vec::len).collect(),
            ids,
            seq: s0,
            masks,
            rngs: (0..b).map(|_| StdRng::seed_from_u64(cfg.seed)).collect(),
            seen: prompts.to_vec(),
            streams: (0..b)
                .map(|_| StreamDecoder::new(&cfg.stop_strings))
                .collect(),
            generated: vec![Vec::new(); b],
            finished: vec![None; b],
            steps: 0,
        })
    }

    /// Rows of the batch.
    pub fn batch(&self) -> usize {
        self.prompt_lens.len()
    }

    /// Whether every row has finished (EOS, stop string) or `max_new_tokens` steps ran.
    pub fn is_done(&self) -> bool {
        self.steps >= self.cfg.max_new_tokens || self.finished.iter().all(Option::is_some)
    }

    /// The next step's inputs: on the first step `[b, prefix + longest prompt]`, then `[b, 1]`
    /// (finished rows are fed the pad id).
    pub fn inputs(&self) -> StepInputs {
        let mask_len = self.masks[0].len();
        let seq = self.seq;
        StepInputs {
            ids: self.ids.clone(),
            mask: self.masks.iter().flatten().copied().collect(),
            positions: self
                .masks
                .iter()
                .flat_map(|m| positions_from_mask(m)[mask_len - seq..].to_vec())
                .collect(),
            batch: self.batch(),
            seq,
        }
    }

    /// Takes the step's last-row logits (`[b, vocab]`, row-major), chooses each open row's next
    /// token and calls `on_token(row, piece)` with each newly final piece of text. Returns
    /// [`is_done`](Self::is_done).
    pub fn push_logits(
        &mut self,
        logits: &[f32],
        detok: &dyn Detokenizer,
        on_token: &mut dyn FnMut(usize, &str),
    ) -> Result<bool> {
        let (b, vocab) = (self.batch(), self.vocab);
        ensure!(!self.is_done(), "generation has already finished");
        ensure!(
            logits.len() == b * vocab,
            "the decoder step returned {} logits, expected batch {b} × vocab {vocab}",
            logits.len()
        );
        let mut next = vec![self.pad_id as i64; b];
        for row in 0..b {
            if self.finished[row].is_some() {
                continue;
            }
            let mut l = logits[row * vocab..(row + 1) * vocab].to_vec();
            process_logits(&mut l, &self.seen[row], &self.cfg);
            let tok = choose_token(&l, self.cfg.do_sample, &mut self.rngs[row])
                .with_context(|| format!("prompt {row}"))?;
            next[row] = tok as i64;
            self.generated[row].push(tok);
            self.seen[row].push(tok);
            if self.cfg.eos_token_ids.contains(&tok) {
                self.finished[row] = Some(FinishReason::Eos);
                continue;
            }
            let (piece, stopped) = self.streams[row].push(tok, detok)?;
            if !piece.is_empty() {
                on_token(row, &piece);
            }
            if stopped {
                self.finished[row] = Some(FinishReason::Stop);
            }
        }
        self.steps += 1;
        if !self.is_done() {
            self.ids = next;
            for m in self.masks.iter_mut() {
                m.push(1);
            }
            self.seq = 1;
        }
        Ok(self.is_done())
    }

    /// The ids generated so far in `row` (an EOS that ended it included).
    pub fn generated(&self, row: usize) -> &[u32] {
        &self.generated[row]
    }

    /// Ends generation: emits each row's held-back text through `on_token` and returns the
    /// generations in prompt order (rows still open finish with [`FinishReason::Length`]).
    pub fn finish(
        mut self,
        detok: &dyn Detokenizer,
        on_token: &mut dyn FnMut(usize, &str),
    ) -> Result<Vec<Generation>> {
        let b = self.batch();
        let mut out = Vec::with_capacity(b);
        for row in 0..b {
            let reason = self.finished[row].unwrap_or(FinishReason::Length);
            let rest = self.streams[row].finish(detok)?;
            if !rest.is_empty() {
                on_token(row, &rest);
            }
            out.push(Generation {
                text: self.streams[row].text().to_owned(),
                token_ids: std::mem::take(&mut self.generated[row]),
                finish_reason: reason,
                prompt_tokens: self.prompt_lens[row],
            });
        }
        Ok(out)
    }
}

/// Generates a completion for every prompt (token ids, BOS already added where the model wants
/// one) in one batch. `pad_id` pads prompts on the left; `on_token(row, piece)` receives each
/// newly final piece of text in order (the pieces of a row concatenate to its `text`). Returns
/// the generations in prompt order. This is [`GenerationLoop`] driven by a synchronous step.
pub fn generate(
    step: &mut dyn DecoderStep,
    prompts: &[Vec<u32>],
    pad_id: u32,
    cfg: &GenerationConfig,
    detok: &dyn Detokenizer,
    on_token: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>> {
    generate_until(step, prompts, pad_id, cfg, detok, on_token, &|| false)
}

/// Why [`generate_until`] stopped early: its `stop` said so (a server whose clients went away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("generation cancelled")
    }
}

impl std::error::Error for Cancelled {}

/// [`generate`], checking `stop` before every step: when it says `true` the batch ends with a
/// [`Cancelled`] error (the rows generated so far are dropped).
pub fn generate_until(
    step: &mut dyn DecoderStep,
    prompts: &[Vec<u32>],
    pad_id: u32,
    cfg: &GenerationConfig,
    detok: &dyn Detokenizer,
    on_token: &mut dyn FnMut(usize, &str),
    stop: &dyn Fn() -> bool,
) -> Result<Vec<Generation>> {
    let vocab = step.vocab_size();
    let cached = step.cached_prefix_len();
    let prefix = step.prefix_ids();
    let mut lp = GenerationLoop::new(prompts, pad_id, cfg, vocab, cached, &prefix)?;
    step.start(prompts.len())?;
    while !lp.is_done() {
        if stop() {
            return Err(Cancelled.into());
        }
        let x = lp.inputs();
        let logits = step
            .step(&x.ids, &x.mask, &x.positions, x.batch, x.seq)
            .context("the decoder step failed")?;
        lp.push_logits(&logits, detok, on_token)?;
    }
    lp.finish(detok, on_token)
}

/// A prompt's token ids for a decoder bundle: the tokenizer without its special tokens, then
/// `bos_token_id` in front unless the text already starts with it; every id must be inside the
/// `vocab_size`-token table. (The rule of the native runtime's `Generator::encode_prompt`.)
pub fn encode_prompt(
    tokenizer: &tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    vocab_size: usize,
    text: &str,
) -> Result<Vec<u32>> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("cannot tokenize the prompt {text:?}: {e}"))?;
    let mut ids = enc.get_ids().to_vec();
    if let Some(bos) = bos_token_id {
        if ids.first() != Some(&bos) {
            ids.insert(0, bos);
        }
    }
    for &id in &ids {
        ensure!(
            (id as usize) < vocab_size,
            "token id {id} of the prompt {text:?} is outside the {vocab_size}-token vocabulary"
        );
    }
    Ok(ids)
}

/// Checks that a prompt fits: `prefix + prompt + max_new_tokens ≤ max_sequence_len`.
pub fn check_fits(
    prompt_len: usize,
    prefix: usize,
    max_new_tokens: usize,
    max_sequence_len: usize,
    which: usize,
) -> Result<()> {
    if prefix + prompt_len + max_new_tokens > max_sequence_len {
        bail!(
            "prompt {which} has {prompt_len} tokens; with the {prefix}-row soft prompt and \
             max_new_tokens {max_new_tokens} that is {} positions, above the bundle's \
             max_sequence_len {max_sequence_len}; shorten the prompt or lower --max-new-tokens",
            prefix + prompt_len + max_new_tokens
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
