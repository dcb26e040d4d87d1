//! Greedy and beam-search generation for any [`Seq2SeqLm`], batched, with the decoder cache.
//!
//! Both follow Hugging Face `generate` (`do_sample=False`): every row starts from
//! `decoder_start_token_id`; greedy takes the arg-max (first index on ties) and stops a row at
//! EOS; beam search keeps `num_beams` running beams per row, scores candidates by summed log
//! probabilities, moves the top `num_beams` candidates ending in EOS (or reaching the length
//! limit) to a per-row list of finished hypotheses scored `sum / generated_len^length_penalty`,
//! and stops a row when its best running beam can no longer beat its worst finished hypothesis
//! (`early_stopping=False`'s heuristic). Results are the generated tokens (no start token),
//! ending with EOS when the row stopped there, without padding.

use crate::{Seq2SeqCache, Seq2SeqLm};
use adept_bundle::search::{BeamSearch, Greedy, Scored};
use candle_core::{DType, Result, Tensor, D};

/// How to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens generated per row (EOS included).
    pub max_new_tokens: usize,
    /// 1 = greedy; more = beam search with that many beams.
    pub num_beams: usize,
    /// Exponent of the generated length dividing finished beams' scores (HF default 1.0).
    pub length_penalty: f32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            num_beams: 1,
            length_penalty: 1.0,
        }
    }
}

/// One generated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated token ids, without the decoder start token; ends with EOS when the row stopped
    /// there.
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log probabilities; for beam search divided by
    /// `tokens.len()^length_penalty` (HF's `sequences_scores`).
    pub score: f32,
}

/// Encodes `inputs_embeds [b, s, d]` with `attention_mask [b, s]` and generates one hypothesis
/// per row (greedy when `opts.num_beams == 1`, beam search otherwise).
pub fn generate(
    model: &dyn Seq2SeqLm,
    inputs_embeds: &Tensor,
    attention_mask: &Tensor,
    opts: &GenerateOptions,
) -> Result<Vec<Hypothesis>> {
    let encoder_out = model.encode(inputs_embeds, attention_mask)?;
    if opts.num_beams <= 1 {
        greedy(model, &encoder_out, attention_mask, opts.max_new_tokens)
    } else {
        beam_search(
            model,
            &encoder_out,
            attention_mask,
            opts.num_beams,
            opts.max_new_tokens,
            opts.length_penalty,
        )
    }
}

/// Log-softmax of each row of `logits [n, vocab]`, on the host.
fn log_softmax_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = r.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            r.into_iter().map(|x| x - max - lse).collect()
        })
        .collect())
}

/// Logits of the last decoded position of every row, `[n, vocab]`.
fn step_logits(
    model: &dyn Seq2SeqLm,
    ids: &[u32],
    encoder_out: &Tensor,
    encoder_mask: &Tensor,
    cache: &mut Seq2SeqCache,
) -> Result<Tensor> {
    let n = ids.len();
    let ids = Tensor::from_vec(ids.to_vec(), (n, 1), encoder_out.device())?;
    let hidden = model.decode(&ids, encoder_out, encoder_mask, Some(cache))?;
    model.logits(&hidden.squeeze(1)?)
}

/// Greedy decoding of up to `max_new_tokens` per row from `encoder_out [b, s, d]` and
/// `encoder_mask [b, s]`; stops when every row has produced EOS.
pub fn greedy(
    model: &dyn Seq2SeqLm,
    encoder_out: &Tensor,
    encoder_mask: &Tensor,
    max_new_tokens: usize,
) -> Result<Vec<Hypothesis>> {
    let b = encoder_out.dims3()?.0;
    let start = model.decoder_start_token_id();
    let mut search = Greedy::new(b, start, model.eos_token_id(), model.pad_token_id());
    let mut cache = Seq2SeqCache::new();
    for _ in 0..max_new_tokens {
        let next = search.next_tokens();
        let logits = step_logits(model, next, encoder_out, encoder_mask, &mut cache)?;
        if search.step(&log_softmax_rows(&logits)?) {
            break;
        }
    }
    Ok(hypotheses(search.finish()))
}

fn hypotheses(found: Vec<Scored>) -> Vec<Hypothesis> {
    found
        .into_iter()
        .map(|(tokens, score)| Hypothesis { tokens, score })
        .collect()
}

/// Beam search with `num_beams` beams per row, up to `max_new_tokens` per hypothesis, from
/// `encoder_out [b, s, d]` and `encoder_mask [b, s]`; returns each row's best finished
/// hypothesis. The model runs on `b · num_beams` rows at once, the cache reordered after each
/// step.
pub fn beam_search(
    model: &dyn Seq2SeqLm,
    encoder_out: &Tensor,
    encoder_mask: &Tensor,
    num_beams: usize,
    max_new_tokens: usize,
    length_penalty: f32,
) -> Result<Vec<Hypothesis>> {
    let (b, _, _) = encoder_out.dims3()?;
    let k = num_beams.max(1);
    if max_new_tokens == 0 {
        return Ok(vec![
            Hypothesis {
                tokens: Vec::new(),
                score: 0.0
            };
            b
        ]);
    }
    let dev = encoder_out.device();
    // Each row repeated num_beams times: rows r·k .. r·k + k.
    let expand: Vec<u32> = (0..b * k).map(|i| (i / k) as u32).collect();
    let expand = Tensor::from_vec(expand, b * k, dev)?;
    let enc = encoder_out.index_select(&expand, 0)?;
    let enc_mask = encoder_mask.index_select(&expand, 0)?;

    let start = model.decoder_start_token_id();
    let eos = model.eos_token_id();
    let mut search = BeamSearch::new(b, k, start, eos, max_new_tokens, length_penalty);
    let mut cache = Seq2SeqCache::new();
    for _ in 0..max_new_tokens {
        let logits = step_logits(model, search.next_tokens(), &enc, &enc_mask, &mut cache)?;
        let Some(reorder) = search.step(&log_softmax_rows(&logits)?) else {
            break;
        };
        let reorder: Vec<u32> = reorder.into_iter().map(|r| r as u32).collect();
        let rows = Tensor::from_vec(reorder, b * k, dev)?;
        // Beams never leave their row: cross-attention keys/values stay as they are.
        cache.self_attn = cache
            .self_attn
            .iter()
            .map(|(k, v)| Ok((k.index_select(&rows, 0)?, v.index_select(&rows, 0)?)))
            .collect::<Result<Vec<_>>>()?;
    }
    Ok(hypotheses(search.finish()))
}

/// The log probability of each target token under `logits [.., vocab]`: `log_softmax(logits)`
/// gathered at `targets [..]` (u32), giving `[..]` (teacher forcing; differentiable).
pub fn target_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = shifted.broadcast_sub(&lse)?;
    logp.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)
}
