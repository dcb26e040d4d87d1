//! `BertEncoder::forward_embeds` as a graph: embeddings (`+ positions + token types`,
//! LayerNorm), then per layer self-attention (`com.microsoft:MultiHeadAttention`) + residual +
//! LayerNorm and feed-forward + residual + LayerNorm. Initializers carry the Hugging Face
//! names (`embeddings.position_embeddings.weight`, `encoder.layer.3.attention.self.query.weight`).
//!
//! Written for ONNX Runtime's fused CPU kernels, in the layout its own BERT optimizer produces:
//! attention is one `com.microsoft:MultiHeadAttention` (q/k/v biases inside it), each residual
//! connection one `com.microsoft:SkipLayerNormalization` (the dense bias inside it; ONNX
//! Runtime would not fuse `Add` + `LayerNormalization` itself because the sequence length is
//! dynamic), and the feed-forward `MatMul` + bias `Add` + erf-GELU is left in the pattern ONNX
//! Runtime rewrites to `MatMul` + `BiasGelu` (tanh-GELU: `FastGelu`).

use super::{Activation, BertEncoder, BertLayer, Norm};
use crate::onnx::{mask_i32, values, AttentionKind, EmitOptions, EncoderInputs};
use adept_nn::FrozenLinear;
use adept_onnx::{GraphBuilder, MultiHeadAttention};
use anyhow::Result;

/// A frozen `nn.Linear` called `prefix` (scoped).
pub fn linear(g: &mut GraphBuilder, prefix: &str, x: &str, l: &FrozenLinear) -> Result<String> {
    let w = values(l.weight())?;
    let b = l.bias().map(values).transpose()?;
    g.linear(
        prefix,
        x,
        &w,
        [l.out_features(), l.in_features()],
        b.as_deref(),
    )
}

/// A frozen `nn.LayerNorm` called `prefix` (scoped).
pub fn layer_norm(g: &mut GraphBuilder, prefix: &str, x: &str, n: &Norm) -> Result<String> {
    g.layer_norm(
        prefix,
        x,
        &values(&n.weight)?,
        &values(&n.bias)?,
        n.eps as f32,
    )
}

/// The feed-forward activation. Exact GELU in the pattern ONNX Runtime fuses (`BiasGelu`);
/// tanh-GELU in the `FastGelu` pattern `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn activation(g: &mut GraphBuilder, act: Activation, x: &str) -> String {
    match act {
        Activation::GeluErf => g.gelu_erf(x),
        Activation::GeluTanh => {
            let c = g.scalar_f32(0.044715);
            let k = g.scalar_f32((2.0f64 / std::f64::consts::PI).sqrt() as f32);
            let one = g.scalar_f32(1.0);
            let half = g.scalar_f32(0.5);
            let three = g.scalar_f32(3.0);
            let cube = g.op("Pow", &[x, &three], vec![]);
            let inner = g.mul(&cube, &c);
            let inner = g.add(x, &inner);
            let inner = g.mul(&inner, &k);
            let t = g.tanh(&inner);
            let t = g.add(&t, &one);
            let y = g.mul(x, &t);
            g.mul(&y, &half)
        }
        Activation::Relu => g.relu(x),
    }
}

/// `LayerNorm(inputs_embeds + position_embeddings[offset .. offset + L] + token_type_embeddings[types])`.
///
/// The position rows are a `Slice` of the table with bounds computed from `L` (the prompt
/// included), the graph form of `position.narrow(0, offset, L)`.
pub fn embeddings(g: &mut GraphBuilder, enc: &BertEncoder, x: &EncoderInputs) -> Result<String> {
    let e = &enc.embeddings;
    let cfg = &enc.config;
    let d = cfg.hidden_size;
    g.scope("embeddings", |g| {
        let offset = cfg.position_offset() as i64;
        let pos_table = g.weight(
            "position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
            &values(&e.position)?,
        )?;
        let len = g.dim(&x.attention_mask, 1);
        let start = g.const_i64(&[offset]);
        let end = g.add(&len, &start);
        let positions = g.slice_dynamic(&pos_table, &start, &end, &[0]); // [L, d]
        let sum = g.add(&x.embeds, &positions);
        let sum = match &x.token_type_ids {
            Some(ids) => {
                let types = g.embedding(
                    "token_type_embeddings",
                    ids,
                    &values(&e.token_type)?,
                    [cfg.type_vocab_size, d],
                )?;
                g.add(&sum, &types)
            }
            // No token types in the graph: every position has type 0, one row added to all.
            None => {
                let row = g.weight(
                    "token_type_embeddings.weight",
                    &[1, d],
                    &values(&e.token_type.narrow(0, 0, 1)?)?,
                )?;
                g.add(&sum, &row)
            }
        };
        layer_norm(g, "LayerNorm", &sum, &e.norm)
    })
}

/// A frozen linear's bias, stored as `"<prefix>.bias"` (scoped), for a kernel that adds it
/// itself (`MultiHeadAttention`, `SkipLayerNormalization`).
fn bias_of(g: &mut GraphBuilder, prefix: &str, l: &FrozenLinear) -> Result<Option<String>> {
    l.bias()
        .map(|b| {
            g.scope(prefix, |g| {
                g.weight("bias", &[l.out_features()], &values(b)?)
            })
        })
        .transpose()
}

/// A frozen linear without its bias: the bare `MatMul` (the bias goes to the next kernel).
fn matmul_only(g: &mut GraphBuilder, prefix: &str, x: &str, l: &FrozenLinear) -> Result<String> {
    let w = values(l.weight())?;
    g.linear(prefix, x, &w, [l.out_features(), l.in_features()], None)
}

/// `LayerNorm(input + bias + residual)` as one `SkipLayerNormalization` (the LayerNorm's
/// parameters under `prefix`).
fn residual_norm(
    g: &mut GraphBuilder,
    prefix: &str,
    input: &str,
    bias: Option<&str>,
    residual: &str,
    n: &Norm,
) -> Result<String> {
    g.skip_layer_norm(
        prefix,
        input,
        residual,
        bias,
        &values(&n.weight)?,
        &values(&n.bias)?,
        n.eps as f32,
    )
}

/// Self-attention block (`attention.*` in Hugging Face names): q/k/v projections, attention
/// with the key padding mask, output projection, residual + LayerNorm.
///
/// As ONNX Runtime's own BERT fusion lays it out: the projections are bare `MatMul`s, their
/// biases go packed (`self.qkv_bias = [query.bias; key.bias; value.bias]`) into
/// `MultiHeadAttention`, and the output projection's bias into `SkipLayerNormalization`.
pub fn self_attention(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    x: &str,
    xq: &str,
    mask: &str,
    heads: usize,
) -> Result<String> {
    g.scope("attention", |g| {
        // Queries (and so the block's output rows) from `xq`, keys and values from all of `x`.
        let q = matmul_only(g, "self.query", xq, &layer.query)?;
        let k = matmul_only(g, "self.key", x, &layer.key)?;
        let v = matmul_only(g, "self.value", x, &layer.value)?;
        let mut qkv_bias = Vec::new();
        for l in [&layer.query, &layer.key, &layer.value] {
            match l.bias() {
                Some(b) => qkv_bias.extend(values(b)?),
                None => qkv_bias.extend(std::iter::repeat_n(0.0, l.out_features())),
            }
        }
        let context = g.scope("self", |g| -> Result<String> {
            let bias = g.weight("qkv_bias", &[qkv_bias.len()], &qkv_bias)?;
            let spec = MultiHeadAttention::new(&q, &k, &v, heads)
                .bias(&bias)
                .key_padding_mask(mask);
            Ok(g.attention(spec))
        })?;
        let out = matmul_only(g, "output.dense", &context, &layer.attention_output)?;
        let bias = bias_of(g, "output.dense", &layer.attention_output)?;
        residual_norm(
            g,
            "output.LayerNorm",
            &out,
            bias.as_deref(),
            xq,
            &layer.attention_norm,
        )
    })
}

/// The same block with one `com.microsoft:Attention` node: the q/k/v weights packed into
/// `self.qkv.weight [d, 3d]` (`[W_qᵀ | W_kᵀ | W_vᵀ]`) and their biases into `self.qkv.bias`.
pub fn self_attention_packed(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    x: &str,
    mask: &str,
    heads: usize,
) -> Result<String> {
    g.scope("attention", |g| {
        let d = layer.query.in_features();
        let parts = [&layer.query, &layer.key, &layer.value];
        let ws = parts
            .iter()
            .map(|l| values(l.weight()))
            .collect::<Result<Vec<_>>>()?;
        let n: usize = parts.iter().map(|l| l.out_features()).sum();
        // [in, out] layout: row i holds q_i(.), k_i(.), v_i(.) side by side.
        let mut packed = Vec::with_capacity(d * n);
        for i in 0..d {
            for (l, w) in parts.iter().zip(&ws) {
                let out = l.out_features();
                packed.extend((0..out).map(|o| w[o * d + i]));
            }
        }
        let mut bias = Vec::with_capacity(n);
        for l in parts {
            match l.bias() {
                Some(b) => bias.extend(values(b)?),
                None => bias.extend(std::iter::repeat_n(0.0, l.out_features())),
            }
        }
        let context = g.scope("self", |g| -> Result<String> {
            let w = g.weight("qkv.weight", &[d, n], &packed)?;
            let b = g.weight("qkv.bias", &[n], &bias)?;
            Ok(g.packed_attention(x, &w, &b, Some(mask), heads))
        })?;
        let out = matmul_only(g, "output.dense", &context, &layer.attention_output)?;
        let bias = bias_of(g, "output.dense", &layer.attention_output)?;
        residual_norm(
            g,
            "output.LayerNorm",
            &out,
            bias.as_deref(),
            x,
            &layer.attention_norm,
        )
    })
}

/// Feed-forward block: `intermediate.dense` → activation → `output.dense` → residual +
/// LayerNorm (`SkipLayerNormalization`, with `output.dense.bias` inside it).
pub fn feed_forward(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    act: Activation,
    x: &str,
) -> Result<String> {
    let h = linear(g, "intermediate.dense", x, &layer.intermediate)?;
    let h = g.scope("intermediate", |g| activation(g, act, &h));
    let out = matmul_only(g, "output.dense", &h, &layer.output)?;
    let bias = bias_of(g, "output.dense", &layer.output)?;
    residual_norm(
        g,
        "output.LayerNorm",
        &out,
        bias.as_deref(),
        x,
        &layer.output_norm,
    )
}

/// One encoder layer (`encoder.layer.{i}`).
/// One encoder layer (`encoder.layer.{i}`); with `query_from > 0` (multi-head attention only)
/// its output holds the rows from `query_from` on: queries, attention output and feed-forward
/// for those rows alone, as `BertEncoder::forward_embeds_from` computes the last layer.
pub fn layer(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    i: usize,
    x: &str,
    mask: &str,
    attention: AttentionKind,
    query_from: usize,
) -> Result<String> {
    let layer = &enc.layers[i];
    let heads = enc.config.num_attention_heads;
    g.scope(&format!("encoder.layer.{i}"), |g| {
        let h = match attention {
            AttentionKind::MultiHead => {
                let xq = if query_from > 0 {
                    g.slice(x, &[query_from as i64], &[i64::MAX], &[1])
                } else {
                    x.to_owned()
                };
                self_attention(g, layer, x, &xq, mask, heads)?
            }
            AttentionKind::Packed => {
                let h = self_attention_packed(g, layer, x, mask, heads)?;
                if query_from > 0 {
                    g.slice(&h, &[query_from as i64], &[i64::MAX], &[1])
                } else {
                    h
                }
            }
        };
        feed_forward(g, layer, enc.activation(), &h)
    })
}

/// The whole encoder from input embeddings (the graph form of `forward_embeds`).
pub fn encoder_from_embeds(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    x: &EncoderInputs,
    opts: &EmitOptions,
) -> Result<String> {
    let mut hidden = embeddings(g, enc, x)?;
    let mask = g.scope("encoder", |g| mask_i32(g, &x.attention_mask));
    let last = enc.layers.len().saturating_sub(1);
    for i in 0..enc.layers.len() {
        let from = if i == last { x.keep_from } else { 0 };
        hidden = layer(g, enc, i, &hidden, &mask, opts.attention, from)?;
    }
    if enc.layers.is_empty() && x.keep_from > 0 {
        hidden = g.slice(&hidden, &[x.keep_from as i64], &[i64::MAX], &[1]);
    }
    Ok(hidden)
}
