//! Prompt → completion pairs ([`LmExample`]) → token ids → padded candle batches for causal
//! language models: teacher-forced training with the loss on completion tokens only, and
//! label-word scoring.
//!
//! # Tokens
//!
//! Prompt and completion are tokenised **separately** (no special tokens added by the
//! tokenizer's post-processor; special tokens written in the text, such as a chat template's
//! `<|im_start|>`, are still recognised) and concatenated, so the boundary between them is
//! exact: [`LmFeatures::target_start`] is the index of the first completion token. With a
//! byte-level BPE whose pre-tokenizer starts a word at a space, a completion that starts with a
//! space (`" positive"`) tokenises the same alone as after its prompt.
//!
//! `ids = [BOS]? ‖ prompt ‖ completion ‖ [EOS]?`:
//! * **BOS** ([`LmEncoder::bos_id`]) is prepended only when set (SmolLM2's tokenizer adds none:
//!   `add_bos_token = false`).
//! * **EOS** ([`LmEncoder::eos_id`]) is appended to a training completion when
//!   [`LmEncoder::append_eos`] is on (the default when an EOS is known), so the model learns to
//!   stop; not twice when the completion already ends with it (a chat completion ending in
//!   `<|im_end|>`, SmolLM2's EOS). Label-word scoring rows never get an EOS.
//! * **Over-long inputs** lose prompt tokens **from the left** (after the BOS), keeping the
//!   end of the prompt, which sits next to the completion, and the whole completion;
//!   [`LmFeatures::truncated`] counts the dropped tokens. A completion that does not fit with
//!   at least one token before it is an error naming the example.
//!
//! # Masks and the shift
//!
//! [`LmBatch`] is right-padded: `ids`, `mask` (1 = real token) and `target_mask` (1 where the
//! token **at** position `t` is a completion token), all `[b, s]` u32. A causal LM's logits at
//! position `t − 1` predict the token at `t`, so the training loss pairs `logits[:, t − 1]`
//! with `ids[:, t]` where `target_mask[:, t] = 1`, i.e. `logits[:, :-1]` with
//! `ids[:, 1:]` weighted by `target_mask[:, 1:]`. Position 0 can never be a target (every row
//! has a prompt token or a BOS first). [`LmBatch::target_logprob_sums`] and
//! [`LmBatch::loss`] do exactly this.
//!
//! # Label-word scoring
//!
//! For classification, [`ScoreBatch`] makes one row per (example, label word): the example's
//! prompt followed by the label word's tokens (no EOS), rows of an example adjacent in class
//! order. The score of a class is the **sum** of the log-probabilities of its word's tokens
//! (so a word of several tokens is the joint probability of the whole word, not the first
//! token's, and longer words are not length-normalised), and the prediction is the argmax
//! ([`ScoreBatch::predict`]). The prompt of all rows of an example is truncated to leave room
//! for its longest label word, so every class is scored on the same context. Label words whose
//! first tokens coincide are fine here (whole words are summed) but cannot be told apart by
//! greedy generation at its first step; [`LmEncoder::label_word_ids`] warns about them.

use adept_data::causal::LmExample;
use anyhow::{bail, ensure, Result};
use candle_core::{DType, Device, Tensor, D};

use crate::tokenize::Tokenizer;

/// One tokenised pair: `ids = [BOS]? ‖ prompt ‖ completion ‖ [EOS]?`, the completion starting
/// at `target_start` (≥ 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmFeatures {
    pub ids: Vec<u32>,
    /// Index in `ids` of the first completion token; `ids[target_start..]` is the completion.
    pub target_start: usize,
    /// Prompt tokens dropped from the left to fit `max_len`.
    pub truncated: usize,
}

/// Tokenisation rules for causal LMs (see the module docs).
pub struct LmEncoder {
    tokenizer: Tokenizer,
    /// Longest sequence, in tokens (BOS and EOS included).
    pub max_len: usize,
    /// Prepended to every sequence when set.
    pub bos_id: Option<u32>,
    /// The end-of-sequence token, appended to training completions when `append_eos`.
    pub eos_id: Option<u32>,
    pub append_eos: bool,
    /// Padding id of [`LmBatch`] (any id: padded positions are masked out).
    pub pad_id: u32,
}

impl LmEncoder {
    /// An encoder without BOS, with the EOS given (appended to training completions when
    /// `Some`). The padding id is the tokenizer's padding id, else `<pad>`, else the EOS, else 0.
    pub fn new(tokenizer: Tokenizer, max_len: usize, eos_id: Option<u32>) -> Result<Self> {
        ensure!(
            max_len >= 2,
            "max length {max_len} is too short for a prompt token and a completion token"
        );
        let vocab = tokenizer.get_vocab_size(true);
        if let Some(e) = eos_id {
            ensure!(
                (e as usize) < vocab,
                "EOS id {e} is outside the tokenizer's {vocab} tokens"
            );
        }
        let pad_id = tokenizer
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| tokenizer.token_to_id("<pad>"))
            .or(eos_id)
            .unwrap_or(0);
        Ok(Self {
            tokenizer,
            max_len,
            bos_id: None,
            eos_id,
            append_eos: eos_id.is_some(),
            pad_id,
        })
    }

    /// Prepends `bos` to every sequence.
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos_id = bos;
        self
    }

    /// Whether training completions end with the EOS (needs an EOS id).
    pub fn with_append_eos(mut self, on: bool) -> Self {
        self.append_eos = on;
        self
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a text, without the post-processor's special tokens.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenize {:?}: {e}", preview(text)))?;
        Ok(enc.get_ids().to_vec())
    }

    fn bos_len(&self) -> usize {
        usize::from(self.bos_id.is_some())
    }

    /// `[BOS]? ‖ prompt (left-truncated to leave `room` tokens) ‖ completion`.
    fn assemble(
        &self,
        prompt: Vec<u32>,
        completion: &[u32],
        room: usize,
        name: &str,
    ) -> Result<LmFeatures> {
        let bos = self.bos_len();
        // The first completion token needs one token before it: a prompt token or the BOS.
        let context = if bos == 1 { 0 } else { 1 };
        if prompt.is_empty() && bos == 0 {
            bail!(
                "{name}: the prompt is empty and there is no BOS token, so the first completion \
                 token has nothing to be predicted from; give the example a prompt"
            );
        }
        if bos + context + room > self.max_len {
            bail!(
                "{name}: the completion alone is {room} tokens, which with {} leaves no room in \
                 the maximum of {} tokens; raise the max length or shorten the completion",
                if bos == 1 {
                    "the BOS"
                } else {
                    "one prompt token"
                },
                self.max_len
            );
        }
        let keep = self.max_len - bos - room;
        let truncated = prompt.len().saturating_sub(keep);
        let mut ids = Vec::with_capacity(bos + prompt.len() - truncated + completion.len());
        ids.extend(self.bos_id);
        ids.extend_from_slice(&prompt[truncated..]);
        let target_start = ids.len();
        ids.extend_from_slice(completion);
        Ok(LmFeatures {
            ids,
            target_start,
            truncated,
        })
    }

    /// A training pair: the completion (with EOS when `append_eos`) must be non-empty; an
    /// over-long prompt is cut from the left. `name` names the example in errors.
    pub fn encode(&self, example: &LmExample, name: &str) -> Result<LmFeatures> {
        let prompt = self.tokens(&example.prompt)?;
        let mut completion = self.tokens(&example.completion)?;
        if completion.is_empty() {
            bail!(
                "{name}: the completion {:?} has no tokens: there is nothing to train on",
                example.completion
            );
        }
        if let (true, Some(eos)) = (self.append_eos, self.eos_id) {
            if completion.last() != Some(&eos) {
                completion.push(eos);
            }
        }
        let room = completion.len();
        self.assemble(prompt, &completion, room, name)
    }

    /// [`encode`](Self::encode) for a list, naming failures `example {i}`.
    pub fn encode_all(&self, examples: &[LmExample]) -> Result<Vec<LmFeatures>> {
        examples
            .iter()
            .enumerate()
            .map(|(i, e)| self.encode(e, &format!("example {i}")))
            .collect()
    }

    /// The prompt alone (`[BOS]? ‖ prompt`, left-truncated to leave `max_new_tokens` free), for
    /// generation: `target_start = ids.len()`.
    pub fn encode_prompt(
        &self,
        prompt: &str,
        max_new_tokens: usize,
        name: &str,
    ) -> Result<LmFeatures> {
        self.assemble(self.tokens(prompt)?, &[], max_new_tokens, name)
    }

    /// Token ids of each label word (no EOS). An empty one is an error; label words whose
    /// first tokens coincide get a warning (see [`shared_first_tokens`]).
    pub fn label_word_ids(&self, words: &[String]) -> Result<Vec<Vec<u32>>> {
        ensure!(!words.is_empty(), "no label words to score");
        let ids: Vec<Vec<u32>> = words
            .iter()
            .map(|w| self.tokens(w))
            .collect::<Result<_>>()?;
        for (w, t) in words.iter().zip(&ids) {
            ensure!(!t.is_empty(), "label word {w:?} has no tokens");
        }
        for (a, b) in shared_first_tokens(&ids) {
            tracing::warn!(
                "label words {:?} and {:?} both start with token {}: label-word scoring sums \
                 whole words and is unaffected, but generation cannot tell them apart at its \
                 first token; prefer words that differ from their first token",
                words[a],
                words[b],
                ids[a][0]
            );
        }
        Ok(ids)
    }

    /// The scoring rows of one example: its prompt, cut from the left to leave room for the
    /// longest label word, followed by each label word, in class order.
    pub fn score_rows(
        &self,
        prompt: &str,
        label_ids: &[Vec<u32>],
        name: &str,
    ) -> Result<Vec<LmFeatures>> {
        let prompt = self.tokens(prompt)?;
        let room = label_ids.iter().map(Vec::len).max().unwrap_or(0);
        label_ids
            .iter()
            .map(|w| {
                let mut f = self.assemble(prompt.clone(), &[], room, name)?;
                f.ids.extend_from_slice(w);
                Ok(f)
            })
            .collect()
    }
}

/// Pairs `(i, j)`, `i < j`, of label words whose token lists start with the same token.
pub fn shared_first_tokens(label_ids: &[Vec<u32>]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for i in 0..label_ids.len() {
        for j in i + 1..label_ids.len() {
            if !label_ids[i].is_empty() && label_ids[i].first() == label_ids[j].first() {
                out.push((i, j));
            }
        }
    }
    out
}

/// A right-padded batch of [`LmFeatures`]: `ids`, `mask`, `target_mask`, all `[b, s]` u32 with
/// `s` the longest row (see the module docs for the shift).
#[derive(Clone, Debug)]
pub struct LmBatch {
    pub ids: Tensor,
    pub mask: Tensor,
    pub target_mask: Tensor,
}

impl LmBatch {
    /// Pads `items` on the right with `pad_id`: `mask[i, t] = 1` for `t < len_i`,
    /// `target_mask[i, t] = 1` for `target_start_i ≤ t < len_i`.
    pub fn collate(items: &[&LmFeatures], pad_id: u32, device: &Device) -> Result<Self> {
        ensure!(!items.is_empty(), "cannot collate an empty batch");
        let s = items.iter().map(|f| f.ids.len()).max().unwrap_or(0);
        let b = items.len();
        let mut ids = vec![pad_id; b * s];
        let mut mask = vec![0u32; b * s];
        let mut target = vec![0u32; b * s];
        for (r, f) in items.iter().enumerate() {
            ensure!(
                f.target_start >= 1 && f.target_start <= f.ids.len(),
                "row {r}: completion start {} outside 1..={} (position 0 has no predecessor)",
                f.target_start,
                f.ids.len()
            );
            let row = r * s;
            ids[row..row + f.ids.len()].copy_from_slice(&f.ids);
            mask[row..row + f.ids.len()].fill(1);
            target[row + f.target_start..row + f.ids.len()].fill(1);
        }
        Ok(Self {
            ids: Tensor::from_vec(ids, (b, s), device)?,
            mask: Tensor::from_vec(mask, (b, s), device)?,
            target_mask: Tensor::from_vec(target, (b, s), device)?,
        })
    }

    pub fn size(&self) -> usize {
        self.ids.dims()[0]
    }

    /// Per row, the summed log-probability of its completion tokens under `logits [b, s, v]`
    /// (the model's outputs at every position of `ids`; f32): `Σ_t target_mask[t] ·
    /// log_softmax(logits[t − 1])[ids[t]]` for `t ≥ 1`. Returns `[b]` f32. Differentiable.
    pub fn target_logprob_sums(&self, logits: &Tensor) -> Result<Tensor> {
        let (tok_lp, weights) = self.shifted_logprobs(logits)?;
        Ok((tok_lp * weights)?.sum(1)?)
    }

    /// Mean negative log-likelihood over all completion tokens of the batch (a scalar):
    /// `−Σ target_logprob / Σ target_mask[:, 1:]`. Each token weighs the same, so long
    /// completions weigh more than short ones.
    pub fn loss(&self, logits: &Tensor) -> Result<Tensor> {
        let (tok_lp, weights) = self.shifted_logprobs(logits)?;
        let count = weights.sum_all()?.to_scalar::<f32>()?;
        ensure!(count > 0.0, "the batch has no completion tokens");
        Ok(((tok_lp * weights)?.sum_all()? * f64::from(-1.0 / count))?)
    }

    /// `(log p(ids[:, t] | ·) from logits[:, t − 1], target_mask[:, t])` for `t = 1..s`, both
    /// `[b, s − 1]` f32.
    fn shifted_logprobs(&self, logits: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s) = self.ids.dims2()?;
        let (lb, ls, _v) = logits.dims3()?;
        ensure!(
            (lb, ls) == (b, s),
            "logits are [{lb}, {ls}, _] but the batch is [{b}, {s}]"
        );
        ensure!(s >= 2, "rows of one token have nothing to predict");
        let lp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, s - 1)?, D::Minus1)?;
        let next = self.ids.narrow(1, 1, s - 1)?.contiguous()?.unsqueeze(2)?;
        let tok_lp = lp.contiguous()?.gather(&next, 2)?.squeeze(2)?;
        let weights = self.target_mask.narrow(1, 1, s - 1)?.to_dtype(DType::F32)?;
        Ok((tok_lp, weights))
    }
}

/// Label-word scoring rows for a list of examples: `examples.len() × num_labels` rows, the
/// rows of example `i` at `i·num_labels .. (i+1)·num_labels` in class order.
#[derive(Clone, Debug)]
pub struct ScoreBatch {
    pub batch: LmBatch,
    pub num_labels: usize,
    /// Example index of each row.
    pub example: Vec<usize>,
    /// Class of each row.
    pub label: Vec<usize>,
}

impl ScoreBatch {
    /// The rows of `examples` (their prompts; completions are ignored) × `label_ids` (from
    /// [`LmEncoder::label_word_ids`]). Errors name `example {first_index + i}`.
    pub fn build(
        enc: &LmEncoder,
        examples: &[LmExample],
        label_ids: &[Vec<u32>],
        first_index: usize,
        device: &Device,
    ) -> Result<Self> {
        let k = label_ids.len();
        ensure!(k >= 1, "no label words to score");
        let mut rows = Vec::with_capacity(examples.len() * k);
        let (mut example, mut label) = (Vec::new(), Vec::new());
        for (i, e) in examples.iter().enumerate() {
            let name = format!("example {}", first_index + i);
            rows.extend(enc.score_rows(&e.prompt, label_ids, &name)?);
            example.extend(std::iter::repeat_n(i, k));
            label.extend(0..k);
        }
        let refs: Vec<&LmFeatures> = rows.iter().collect();
        Ok(Self {
            batch: LmBatch::collate(&refs, enc.pad_id, device)?,
            num_labels: k,
            example,
            label,
        })
    }

    /// The predicted class of each example: the argmax over its rows of the summed label-word
    /// log-probabilities (`row_scores`, one per row, e.g. from
    /// [`LmBatch::target_logprob_sums`]); ties go to the lower class.
    pub fn predict(&self, row_scores: &[f32]) -> Result<Vec<usize>> {
        ensure!(
            row_scores.len() == self.example.len(),
            "{} row scores for {} rows",
            row_scores.len(),
            self.example.len()
        );
        Ok(row_scores
            .chunks(self.num_labels)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (j, &s)| {
                        if s > best.1 {
                            (j, s)
                        } else {
                            best
                        }
                    })
                    .0
            })
            .collect())
    }
}

fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        p.push('…');
    }
    p
}
