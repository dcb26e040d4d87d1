//! Greedy generation for any [`CausalLm`], with the adapter stage in the loop.
//!
//! The model never sees token ids: [`greedy`] takes an `embed` closure that turns ids `[b, s]`
//! into input embeddings `[b, s, d]`. Pass `|ids| model.word_embeddings(ids)` for the plain
//! model, or the adapter's forward (e.g. ADePT's `E + f(E)`) so that prompt tokens *and every
//! generated token* get the same treatment as in training. A soft prompt `P [l, d]` is passed as
//! `prefix`: its rows are prepended to every sequence in the first step, with mask ones, exactly
//! as PEFT's prompt tuning feeds `generate` (`[P, pad…, prompt]`; positions from the mask, so the
//! padding in between does not shift them).
//!
//! The batch is left-padded; the first step runs the whole (prefix +) prompt and fills a
//! [`KvCache`], then each step feeds the last chosen token of every row. Rows that have emitted
//! an end-of-sequence id keep feeding it (their outputs are ignored), as `transformers` does
//! with its pad id; the loop stops when every row has finished or after `max_new_tokens`.
//! No gradient is recorded: the embeddings are detached.

use crate::{CausalLm, KvCache};
use candle_core::{DType, Result, Tensor, D};

/// What to generate: at most `max_new_tokens` per row, stopping a row at any of `eos`.
#[derive(Clone, Debug)]
pub struct GreedyOptions {
    pub max_new_tokens: usize,
    /// End-of-sequence ids (empty: always generate `max_new_tokens`).
    pub eos: Vec<u32>,
    /// Id fed at padded prompt positions (masked, so any valid id does; 0 by default).
    pub pad_id: u32,
}

impl GreedyOptions {
    pub fn new(max_new_tokens: usize, eos: &[u32]) -> Self {
        Self {
            max_new_tokens,
            eos: eos.to_vec(),
            pad_id: 0,
        }
    }
}

/// Greedy decoding of a batch of prompts (token ids, no padding, each non-empty).
///
/// - `embed`: ids `[b, s]` (u32) → input embeddings `[b, s, d]`; called once for the padded
///   prompts and once per step for the chosen tokens `[b, 1]`.
/// - `prefix`: optional soft prompt `[l, d]`, prepended to every row of the first step.
///
/// Returns each row's new tokens, ending with the first end-of-sequence id if one was chosen
/// (included), never padded.
pub fn greedy(
    model: &dyn CausalLm,
    embed: &dyn Fn(&Tensor) -> Result<Tensor>,
    prefix: Option<&Tensor>,
    prompts: &[Vec<u32>],
    opts: &GreedyOptions,
) -> Result<Vec<Vec<u32>>> {
    let b = prompts.len();
    if b == 0 || opts.max_new_tokens == 0 {
        return Ok(vec![vec![]; b]);
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        candle_core::bail!("prompt {i} is empty: greedy generation needs at least one token");
    }
    let device = model.device();
    let d = model.hidden_size();
    let n = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let l = match prefix {
        Some(p) => {
            let (l, pd) = p.dims2()?;
            if pd != d {
                candle_core::bail!("soft prompt has shape {:?}; expected [l, {d}]", p.dims());
            }
            l
        }
        None => 0,
    };
    let total = l + n + opts.max_new_tokens;
    if total > model.max_sequence_len() {
        candle_core::bail!(
            "soft prompt ({l}) + longest prompt ({n}) + {} new tokens = {total} positions exceed \
             the model's {}",
            opts.max_new_tokens,
            model.max_sequence_len()
        );
    }
    let mut ids = Vec::with_capacity(b * n);
    let mut mask = Vec::with_capacity(b * (l + n));
    for p in prompts {
        mask.extend(std::iter::repeat_n(1u32, l));
        mask.extend(std::iter::repeat_n(0u32, n - p.len()));
        mask.extend(std::iter::repeat_n(1u32, p.len()));
        ids.extend(std::iter::repeat_n(opts.pad_id, n - p.len()));
        ids.extend_from_slice(p);
    }
    let ids = Tensor::from_vec(ids, (b, n), device)?;
    let mut x = embed(&ids)?.detach();
    if let Some(p) = prefix {
        let p = p.detach().unsqueeze(0)?.broadcast_as((b, l, d))?;
        x = Tensor::cat(&[&p, &x], 1)?;
    }
    let mut mask = Tensor::from_vec(mask, (b, l + n), device)?;
    let ones = Tensor::ones((b, 1), DType::U32, device)?;
    let mut cache = KvCache::new();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    for step in 0..opts.max_new_tokens {
        let hidden = model.forward_embeds(&x, &mask, Some(&mut cache))?;
        let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?.squeeze(1)?; // [b, d]
        let next: Vec<u32> = model
            .logits(&last)?
            .argmax_keepdim(D::Minus1)?
            .squeeze(1)?
            .to_dtype(DType::U32)?
            .to_vec1()?;
        let mut feed = Vec::with_capacity(b);
        for (r, &tok) in next.iter().enumerate() {
            if done[r] {
                feed.push(*out[r].last().unwrap_or(&opts.pad_id));
                continue;
            }
            out[r].push(tok);
            done[r] = opts.eos.contains(&tok);
            feed.push(tok);
        }
        if done.iter().all(|&f| f) || step + 1 == opts.max_new_tokens {
            break;
        }
        let ids = Tensor::from_vec(feed, (b, 1), device)?;
        x = embed(&ids)?.detach();
        mask = Tensor::cat(&[&mask, &ones], 1)?;
    }
    Ok(out)
}
