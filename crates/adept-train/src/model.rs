//! The classifier: word embeddings → adapter → frozen encoder → pooling → trainable head → loss.
//!
//! This is the one place the stages meet, in the order the data flows through them (and the order
//! the exported ONNX graph follows).

use adept_adapters::Adapter;
use adept_backbones::Encoder;
use anyhow::Context;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

use crate::batch::Batch;

/// How the encoder's hidden states become one vector per example: the bundle contract's type
/// (`"mean"`/`"cls"` in `train_config.json`, `run.json`, `adept.json` and on the command line).
/// `Mean` (over the *input* tokens; prompt rows and padding excluded) is the default: it is how
/// all-MiniLM-L6-v2 was trained (sentence-transformers), and it worked best in our runs. `Cls`
/// is the hidden state at `[CLS]` (the first input token, right after the prompt).
pub use adept_bundle::Pooling;

/// Linear head `[d] → [n]` (n = classes, or 1 for regression), trainable.
#[derive(Clone, Debug)]
pub struct Head {
    pub weight: Var,
    pub bias: Var,
}

pub const HEAD_WEIGHT: &str = "classifier.weight";
pub const HEAD_BIAS: &str = "classifier.bias";

impl Head {
    /// PyTorch `nn.Linear` initialisation: U(±1/√d) for weight and bias.
    pub fn init(d: usize, n: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let bound = 1.0 / (d as f64).sqrt();
        let mut draw = |k: usize| -> Vec<f32> {
            (0..k)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect()
        };
        Ok(Self {
            weight: Var::from_tensor(&Tensor::from_vec(draw(n * d), (n, d), device)?)?,
            bias: Var::from_tensor(&Tensor::from_vec(draw(n), n, device)?)?,
        })
    }

    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        pooled
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())
    }

    pub fn tensors(&self) -> HashMap<String, Tensor> {
        HashMap::from([
            (HEAD_WEIGHT.to_string(), self.weight.as_tensor().clone()),
            (HEAD_BIAS.to_string(), self.bias.as_tensor().clone()),
        ])
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        vec![
            (HEAD_WEIGHT.to_string(), self.weight.clone()),
            (HEAD_BIAS.to_string(), self.bias.clone()),
        ]
    }

    pub fn set_values(&self, values: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (name, var) in self.vars() {
            let t = values
                .get(&name)
                .with_context(|| format!("missing head tensor {name}"))?;
            if t.dims() != var.dims() {
                anyhow::bail!(
                    "head tensor {name} has shape {:?}, expected {:?} (different label set?)",
                    t.dims(),
                    var.dims()
                );
            }
            var.set(t)?;
        }
        Ok(())
    }
}

pub struct Classifier {
    /// The frozen encoder, whichever family `config.json` named (`adept_backbones::registry`).
    pub backbone: Box<dyn Encoder>,
    pub adapter: Adapter,
    pub head: Head,
    pub pooling: Pooling,
}

impl Classifier {
    /// Logits `[b, n]` for a batch. `train_rng` enables dropout in the adapter.
    pub fn forward(&self, batch: &Batch, train_rng: Option<&mut StdRng>) -> Result<Tensor> {
        self.forward_with(batch, train_rng, false)
    }

    /// [`Classifier::forward`] for evaluation: no dropout, and the input embeddings are detached
    /// so that no backward graph is recorded through the frozen backbone; each layer's
    /// activations are freed as the forward moves on (an evaluation batch then peaks at one
    /// layer's activations, not all of them).
    pub fn forward_eval(&self, batch: &Batch) -> Result<Tensor> {
        self.forward_with(batch, None, true)
    }

    fn forward_with(
        &self,
        batch: &Batch,
        train_rng: Option<&mut StdRng>,
        detach: bool,
    ) -> Result<Tensor> {
        let word = self.backbone.word_embeddings(&batch.ids)?; // tokens → embeddings
        let embeds = self.adapter.apply(&word, train_rng)?; // [P, E + f(E)]
        let embeds = if detach { embeds.detach() } else { embeds };
        let mask = self.adapter.extend(&batch.mask, 1)?;
        let types = if self.backbone.uses_token_types() {
            Some(self.adapter.extend(&batch.type_ids, 0)?)
        } else {
            None
        };
        let l = self.adapter.prompt_len();
        // backbone; only the input rows come out (the head never sees the prompt rows)
        let inputs = self
            .backbone
            .forward_embeds_from(&embeds, &mask, types.as_ref(), l)?;
        let pooled = match self.pooling {
            Pooling::Mean => adept_nn::masked_mean(&inputs, &batch.mask)?,
            Pooling::Cls => inputs.narrow(1, 0, 1)?.squeeze(1)?,
        };
        self.head.forward(&pooled) // head
    }

    /// Every trainable var: adapter tensors (with their group) and the head.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .adapter
            .vars()
            .into_iter()
            .map(|(n, _, var)| (n, var))
            .collect();
        v.extend(self.head.vars());
        v
    }
}

/// Mean cross-entropy of `logits [b, n]` against class ids `labels [b]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let log_probs = shifted.broadcast_sub(&log_z)?;
    let picked = log_probs.gather(&labels.unsqueeze(1)?, 1)?; // [b, 1]
    picked.mean_all()?.neg()
}

/// Mean squared error of `pred [b, 1]` against `targets [b]` (f32).
pub fn mse(pred: &Tensor, targets: &Tensor) -> Result<Tensor> {
    (pred.squeeze(1)? - targets.to_dtype(DType::F32)?)?
        .sqr()?
        .mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_value() -> Result<()> {
        // logits (0, ln 3) → p = (1/4, 3/4); label 1 → −ln(3/4) = 0.28768.
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0f32, 3f32.ln()], [0., 0.]], &dev)?;
        let labels = Tensor::new(&[1u32, 0], &dev)?;
        let ce = cross_entropy(&logits, &labels)?.to_scalar::<f32>()?;
        let expected = (-(0.75f32).ln() + 2f32.ln()) / 2.0;
        assert!((ce - expected).abs() < 1e-6, "{ce} vs {expected}");
        Ok(())
    }
}
