//! After the encoder (which returns the input rows only): pool over the input tokens, apply the
//! linear head.
//! Mirrors the end of `Classifier::forward` (`narrow(1, l, s)`, `masked_mean` or the first
//! input token, `Head::forward`).

use super::values;
use adept_onnx::{DataType, GraphBuilder};
use adept_train::{Classifier, Pooling};
use anyhow::Result;

/// The head's scope: its weights are `classifier.weight` / `classifier.bias`.
pub const HEAD_PREFIX: &str = "classifier";

/// Masked mean of `x [batch, s, d]` over the positions where `mask [batch, s]` (int64) is 1;
/// `adept_nn::masked_mean`: `sum(x·m) / max(sum(m), 1e-9)`.
pub fn masked_mean(g: &mut GraphBuilder, x: &str, mask: &str) -> String {
    let m = g.cast(mask, DataType::Float);
    let m = g.unsqueeze(&m, &[-1]); // [b, s, 1]
    let masked = g.mul(x, &m);
    let sum = g.reduce_sum(&masked, &[1], false); // [b, d]
    let count = g.reduce_sum(&m, &[1], false); // [b, 1]
    let eps = g.scalar_f32(1e-9);
    let count = g.max(&count, &eps);
    g.div(&sum, &count)
}

/// `hidden [batch, s, d]` (the input rows: the encoder already left out the prompt rows) →
/// logits `[batch, n]`.
pub fn pool_and_classify(
    g: &mut GraphBuilder,
    model: &Classifier,
    hidden: &str,
    mask: &str,
) -> Result<String> {
    let pooled = g.scope("pooler", |g| {
        let inputs = hidden.to_owned();
        match model.pooling {
            Pooling::Mean => masked_mean(g, &inputs, mask),
            Pooling::Cls => {
                let first = g.scalar_i64(0);
                g.gather(&inputs, &first, 1)
            }
        }
    });
    let w = values(model.head.weight.as_tensor())?;
    let b = values(model.head.bias.as_tensor())?;
    let (n, d) = model.head.weight.as_tensor().dims2()?;
    g.linear(HEAD_PREFIX, &pooled, &w, [n, d], Some(&b))
}
