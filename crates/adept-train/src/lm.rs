//! The causal language model: word embeddings → adapter → frozen decoder → language-model head →
//! loss on the completion tokens only.
//!
//! The stages in the order the data flows (and the order the exported decoder graph follows):
//!
//! | stage | candle | on every token? |
//! |---|---|---|
//! | tokens → embeddings | `Backbone::word_embeddings` | yes |
//! | adapter offsets | [`CausalLmModel::embed_tokens`] (`E + f(E)` for ADePT) | yes, generated tokens too |
//! | soft prompt | `[P, …]` prepended, mask extended with ones | no: it comes first, offset-free |
//! | decoder | `CausalLm::forward_embeds` | |
//! | head | `CausalLm::logits` on the rows that predict a completion token | |
//!
//! Because the prompt comes first and carries no offsets, its keys and values in every layer are
//! the same for every request: [`CausalLmModel::prompt_cache`] computes them once (export stores
//! them; generation starts from them). ADePT's offsets see only a token's own row, so they fold
//! into the input table exactly as for encoders; the head keeps the original table even when the
//! checkpoint ties it to the input embeddings.

use adept_adapters::Adapter;
use adept_backbones::{CausalLm, KvCache};
use candle_core::{DType, Result, Tensor, D};
use rand::rngs::StdRng;

pub struct CausalLmModel {
    /// The frozen decoder, whichever family `config.json` named.
    pub backbone: Box<dyn CausalLm>,
    pub adapter: Adapter,
}

impl CausalLmModel {
    /// Token ids `[b, s]` → input embeddings with the adapter's offsets `[b, s, d]` (no prompt).
    /// Position-based offsets (DePT) are taken from position 0 of `ids`.
    pub fn embed_tokens(&self, ids: &Tensor, train_rng: Option<&mut StdRng>) -> Result<Tensor> {
        let word = self.backbone.word_embeddings(ids)?;
        self.adapter
            .imp()
            .add_offsets(&self.adapter, &word, train_rng)
    }

    /// `[P, E + f(E)]` and the mask extended with the prompt's ones, for `ids`/`mask [b, s]`.
    pub fn embed_with_prompt(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> Result<(Tensor, Tensor)> {
        let embeds = self
            .adapter
            .apply(&self.backbone.word_embeddings(ids)?, train_rng)?;
        Ok((embeds, self.adapter.extend(mask, 1)?))
    }

    /// Hidden states `[b, s, d]` of the input rows (prompt rows dropped) for `ids`/`mask [b, s]`.
    pub fn hidden(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let (embeds, mask) = self.embed_with_prompt(ids, mask, train_rng)?;
        let h = self.backbone.forward_embeds(&embeds, &mask, None)?;
        let l = self.adapter.prompt_len();
        let s = ids.dims2()?.1;
        h.narrow(1, l, s)
    }

    /// Logits `[b, s, vocab]` of every input row (for tests and small inputs; training computes
    /// the head on target rows only, see [`CausalLmModel::loss`]).
    pub fn logits(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.hidden(ids, mask, None)?;
        self.backbone.logits(&h)
    }

    /// Mean cross-entropy over the completion tokens. `target_mask [b, s]` (u32) is 1 where
    /// token `t` is a completion token, predicted from row `t - 1`; padding and prompt tokens
    /// are 0 (a 1 at `t = 0` is ignored: nothing predicts the first token). The head runs on
    /// the predicting rows only, so a 49k-row vocabulary costs `n_targets × vocab`, not
    /// `b × s × vocab`. Errors if the batch has no target token.
    pub fn loss(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        target_mask: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let (rows, targets) = target_rows(ids, target_mask)?;
        let h = self.hidden(ids, mask, train_rng)?;
        let (b, s, d) = h.dims3()?;
        let picked = h.reshape((b * s, d))?.index_select(&rows, 0)?;
        let logits = self.backbone.logits(&picked)?;
        mean_nll(&logits, &targets)
    }

    /// The soft prompt's keys and values in every layer, `[1, kv_heads, l, head_dim]` each: the
    /// same for every request, because the prompt comes first and carries no offsets. `None`
    /// without a prompt.
    pub fn prompt_cache(&self) -> Result<Option<KvCache>> {
        let Some(p) = self.adapter.prompt() else {
            return Ok(None);
        };
        let l = p.dims()[0];
        let mut cache = KvCache::new();
        let mask = Tensor::ones((1, l), DType::U32, p.device())?;
        self.backbone
            .forward_embeds(&p.unsqueeze(0)?, &mask, Some(&mut cache))?;
        Ok(Some(cache))
    }
}

/// Flat row indices (`b·s` layout) of the rows that predict a target token, and those tokens.
pub fn target_rows(ids: &Tensor, target_mask: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, s) = ids.dims2()?;
    let ids_v = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let tm = target_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for i in 0..b {
        for t in 1..s {
            if tm[i][t] != 0 {
                rows.push((i * s + t - 1) as u32);
                targets.push(ids_v[i][t]);
            }
        }
    }
    if rows.is_empty() {
        candle_core::bail!("the batch has no completion token to predict (empty target mask)");
    }
    let dev = ids.device();
    Ok((Tensor::new(rows, dev)?, Tensor::new(targets, dev)?))
}

/// Mean negative log-likelihood of `targets [n]` under `logits [n, vocab]`.
pub fn mean_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    token_log_probs(logits, targets)?.mean_all()?.neg()
}

/// `log p(target)` per row: `logits [n, vocab]`, `targets [n]` → `[n]`.
pub fn token_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted
        .gather(&targets.unsqueeze(1)?, 1)?
        .broadcast_sub(&log_z)?
        .squeeze(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn target_rows_shift_by_one() -> Result<()> {
        let dev = Device::Cpu;
        let ids = Tensor::new(&[[5u32, 6, 7, 0], [8, 9, 10, 11]], &dev)?;
        let tm = Tensor::new(&[[0u32, 0, 1, 0], [1, 0, 1, 1]], &dev)?;
        let (rows, targets) = target_rows(&ids, &tm)?;
        // row 0: token 7 at t=2 predicted by row 1; row 1: t=0 ignored, t=2,3 by rows 5, 6.
        assert_eq!(rows.to_vec1::<u32>()?, vec![1, 5, 6]);
        assert_eq!(targets.to_vec1::<u32>()?, vec![7, 10, 11]);
        let empty = Tensor::zeros((2, 4), DType::U32, &dev)?;
        assert!(target_rows(&ids, &empty).is_err());
        Ok(())
    }

    #[test]
    fn nll_matches_hand_value() -> Result<()> {
        // logits (0, ln 3): p = (1/4, 3/4).
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0f32, 3f32.ln()], [0., 3f32.ln()]], &dev)?;
        let t = Tensor::new(&[1u32, 0], &dev)?;
        let lp = token_log_probs(&logits, &t)?.to_vec1::<f32>()?;
        assert!((lp[0] - 0.75f32.ln()).abs() < 1e-6 && (lp[1] - 0.25f32.ln()).abs() < 1e-6);
        let nll = mean_nll(&logits, &t)?.to_scalar::<f32>()?;
        assert!((nll + (0.75f32.ln() + 0.25f32.ln()) / 2.0).abs() < 1e-6);
        Ok(())
    }
}
