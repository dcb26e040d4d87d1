//! T5 as ONNX graphs (feature `onnx`): the encoder stack from input embeddings, and one decoder
//! step with the self- and cross-attention key/value cache, in the names optimum and
//! transformers.js give a T5 export (`past_key_values.{i}.decoder|encoder.key|value`,
//! `present.{i}.decoder|encoder.key|value`). `adept_export::seq2seq` wraps them with the adapter
//! stage and writes the bundle.
//!
//! Initializers keep Hugging Face names (`encoder.block.{i}.layer.0.SelfAttention.q.weight`,
//! stored transposed `[in, out]` for `MatMul`; `shared.weight`; `lm_head.weight` when untied).
//! Everything is default-domain ops (opset 17): composite RMS norm (ONNX Runtime fuses it into
//! `SimplifiedLayerNormalization`), plain `MatMul` → `Add` (bias) → `Softmax` → `MatMul`
//! attention without the `1/√d_kv` scale (T5 has none).
//!
//! # Relative position bias
//! T5's bucket of a relative distance `r = key − query` depends on `r` only through
//! `clamp(r, −D, D)` with `D = max(relative_attention_max_distance, num_buckets)`: every `|r| ≥
//! D` falls in the last bucket (past `max_exact` the logarithmic part reaches the bucket count at
//! `max_distance` and is clipped). So each stack stores its bias *per clamped distance*,
//! `relative_bias_by_distance [2·D + 1, heads]` (= `relative_attention_bias[bucket(r)]`, the buckets computed at export by
//! [`relative_position_bucket`](super::relative_position_bucket), the code candle runs), and the
//! graph computes `r` from `Range`s, clamps it, and does one `Gather`. No maximum sequence length
//! is baked in, and the buckets are bit-for-bit candle's (no in-graph `Log` whose rounding could
//! move a distance across a bucket boundary). The bias (`[1, heads, q, k]`) plus the padding
//! bias (`(mask − 1)·10⁹`) and, in the decoder, the causal bias (`−10⁹` where the key is after
//! the query) is built once per graph and shared by every layer, as candle does.
//!
//! # The decoder cache: one graph, no `If`
//! The decoder graph takes both caches as inputs and returns both. The cross-attention keys and
//! values are computed from the encoder rows the encoder past does *not* already hold:
//! `present.{i}.encoder.* = Concat(past.{i}.encoder.*, proj(encoder_hidden_states[:, past_enc:]))`
//! with `past_enc` the encoder past's length. On the first step the runtime feeds an empty
//! encoder past (`[b, h, 0, d_kv]`) and the graph projects the whole encoder output; later it
//! feeds the returned `present.*.encoder` back (`past_enc = S`), the slice is empty and the
//! projections cost nothing. So one graph (`decoder_model.onnx`) serves every step, with no
//! `If` node (whose two sub-graphs optimum's merged decoder needs) and no second copy of the
//! weights (optimum's `decoder_with_past_model.onnx`). Decoder positions are offset by the
//! self-attention past's length.

use super::{relative_position_bucket, Activation, T5Attention, T5FeedForward, T5Model};
use crate::onnx::values;
use adept_onnx::{DataType, GraphBuilder};
use anyhow::{ensure, Result};
use candle_core::Tensor;

/// Additive bias for masked-out keys (candle's `mask_bias` and causal bias use the same).
const NEG: f32 = -1e9;

/// Values one decoder step reads (the graph inputs, by the names the caller gave them).
#[derive(Clone, Debug)]
pub struct T5DecoderInputs {
    /// `int64 [b, t]`: the new decoder tokens (the decoder start token on the first step).
    pub input_ids: String,
    /// `int64 [b, S]`: 1 for attended encoder rows.
    pub encoder_attention_mask: String,
    /// `float [b, S, d]`: the encoder output.
    pub encoder_hidden_states: String,
    /// Per decoder layer, self-attention `(key, value)` `float [b, heads, past, d_kv]`.
    pub past_self: Vec<(String, String)>,
    /// Per decoder layer, cross-attention `(key, value)` `float [b, heads, S or 0, d_kv]`.
    pub past_cross: Vec<(String, String)>,
}

/// What one decoder step returns.
#[derive(Clone, Debug)]
pub struct T5DecoderOutputs {
    /// `float [b, t, vocab]`.
    pub logits: String,
    /// Per layer `(key, value)` `[b, heads, past + t, d_kv]`.
    pub present_self: Vec<(String, String)>,
    /// Per layer `(key, value)` `[b, heads, S, d_kv]`.
    pub present_cross: Vec<(String, String)>,
}

/// Distances at and beyond which every bucket is the last one: `max(max_distance,
/// num_buckets)` (the buckets below `max_exact ≤ num_buckets / 2` are exact distances, so a
/// config with a `max_distance` under `max_exact` still clamps correctly).
pub fn clamp_distance(model: &T5Model) -> usize {
    let c = &model.config;
    c.relative_attention_max_distance
        .max(c.relative_attention_num_buckets)
}

/// The relative bias of every clamped distance `r ∈ [−D, D]` (`D` = [`clamp_distance`], row
/// `r + D`), `[2·D + 1, heads]` flat: `table[bucket(r)]` with `table [buckets, heads]` (see the
/// module docs for why the clamp is exact).
pub fn relative_bias_by_distance(
    model: &T5Model,
    table: &Tensor,
    bidirectional: bool,
) -> Result<Vec<f32>> {
    let c = &model.config;
    let heads = c.num_heads;
    ensure!(
        table.dims() == [c.relative_attention_num_buckets, heads],
        "relative_attention_bias has shape {:?}, expected [{}, {heads}] (buckets, heads)",
        table.dims(),
        c.relative_attention_num_buckets
    );
    let t = values(table)?;
    let md = clamp_distance(model) as i64;
    let mut out = Vec::with_capacity((2 * md as usize + 1) * heads);
    for r in -md..=md {
        let b = relative_position_bucket(
            r,
            bidirectional,
            c.relative_attention_num_buckets,
            c.relative_attention_max_distance,
        ) as usize;
        out.extend_from_slice(&t[b * heads..(b + 1) * heads]);
    }
    Ok(out)
}

/// A bias-free linear layer named `name` (HF `[out, in]`), stored transposed: `x · Wᵀ`.
fn linear(
    g: &mut GraphBuilder,
    name: &str,
    lin: &adept_nn::FrozenLinear,
    x: &str,
) -> Result<String> {
    let w = lin.weight();
    let (out, inp) = w.dims2()?;
    let w = g.weight_transposed(&format!("{name}.weight"), [out, inp], &values(w)?)?;
    Ok(g.matmul(x, &w))
}

/// T5's RMS norm `x / sqrt(mean(x²) + eps) · w` (composite; `w` is the HF tensor `name`).
fn rms_norm(g: &mut GraphBuilder, name: &str, w: &Tensor, x: &str, eps: f64) -> Result<String> {
    let d = w.dims1()?;
    let w = g.weight(name, &[d], &values(w)?)?;
    let two = g.scalar_f32(2.0);
    let eps = g.scalar_f32(eps as f32);
    let sq = g.op("Pow", &[x, &two], vec![]);
    let mean = g.reduce_mean(&sq, &[-1], true);
    let var = g.add(&mean, &eps);
    let rms = g.sqrt(&var);
    let normed = g.div(x, &rms);
    Ok(g.mul(&normed, &w))
}

/// The feed-forward activation as ONNX ops (GELU tanh: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`).
fn activation(g: &mut GraphBuilder, act: Activation, x: &str) -> String {
    match act {
        Activation::Relu => g.relu(x),
        Activation::GeluErf => g.gelu_erf(x),
        Activation::Silu => {
            let s = g.sigmoid(x);
            g.mul(x, &s)
        }
        Activation::GeluTanh => {
            let three = g.scalar_f32(3.0);
            let c = g.scalar_f32(0.044715);
            let k = g.scalar_f32((2.0f64 / std::f64::consts::PI).sqrt() as f32);
            let one = g.scalar_f32(1.0);
            let half = g.scalar_f32(0.5);
            let cube = g.op("Pow", &[x, &three], vec![]);
            let inner = g.mul(&cube, &c);
            let inner = g.add(x, &inner);
            let inner = g.mul(&inner, &k);
            let t = g.tanh(&inner);
            let t = g.add(&t, &one);
            let hx = g.mul(x, &half);
            g.mul(&hx, &t)
        }
    }
}

fn feed_forward(
    g: &mut GraphBuilder,
    prefix: &str,
    ff: &T5FeedForward,
    act: Activation,
    x: &str,
) -> Result<String> {
    match ff {
        T5FeedForward::Plain { wi, wo } => {
            let h = linear(g, &format!("{prefix}.wi"), wi, x)?;
            let h = activation(g, act, &h);
            linear(g, &format!("{prefix}.wo"), wo, &h)
        }
        T5FeedForward::Gated { wi_0, wi_1, wo } => {
            let a = linear(g, &format!("{prefix}.wi_0"), wi_0, x)?;
            let a = activation(g, act, &a);
            let b = linear(g, &format!("{prefix}.wi_1"), wi_1, x)?;
            let h = g.mul(&a, &b);
            linear(g, &format!("{prefix}.wo"), wo, &h)
        }
    }
}

/// `[b, n, heads·d_kv]` → `[b, heads, n, d_kv]`.
fn split_heads(g: &mut GraphBuilder, x: &str, heads: usize, d_kv: usize) -> String {
    let x = g.reshape(x, &[0, 0, heads as i64, d_kv as i64]);
    g.transpose(&x, &[0, 2, 1, 3])
}

/// One T5 attention sub-layer under the weight prefix `prefix` (`…SelfAttention` or
/// `…EncDecAttention`): queries from `x [b, t, d]`, keys and values from `kv [b, s, d]` (`x`
/// itself for self-attention, the encoder rows for cross-attention), appended after `past`
/// (`[b, h, p, dk]` each) when given, attended with `bias` and projected back. `heads` is
/// `(h, dk, inner)`. Returns the output `[b, t, d]` and the keys/values attended over
/// (`[b, h, p + s, dk]`, the presents).
#[allow(clippy::too_many_arguments)]
fn attention(
    g: &mut GraphBuilder,
    prefix: &str,
    a: &T5Attention,
    x: &str,
    kv: &str,
    past: Option<&(String, String)>,
    bias: &str,
    (h, dk, inner): (usize, usize, usize),
) -> Result<(String, (String, String))> {
    let q = linear(g, &format!("{prefix}.q"), &a.q, x)?;
    let k = linear(g, &format!("{prefix}.k"), &a.k, kv)?;
    let v = linear(g, &format!("{prefix}.v"), &a.v, kv)?;
    let q = split_heads(g, &q, h, dk);
    let k = split_heads(g, &k, h, dk);
    let v = split_heads(g, &v, h, dk);
    let (keys, vals) = match past {
        Some((pk, pv)) => (g.concat(&[pk, &k], 2), g.concat(&[pv, &v], 2)),
        None => (k, v),
    };
    let ctx = attend(g, &q, &keys, &vals, bias, inner);
    let o = linear(g, &format!("{prefix}.o"), &a.o, &ctx)?;
    Ok((o, (keys, vals)))
}

/// Unscaled attention of `q [b, h, lq, dk]` over `k, v [b, h, lk, dk]` plus `bias`
/// (broadcast to `[b, h, lq, lk]`), merged back to `[b, lq, h·dk]`.
fn attend(g: &mut GraphBuilder, q: &str, k: &str, v: &str, bias: &str, inner: usize) -> String {
    let kt = g.transpose(k, &[0, 1, 3, 2]);
    let scores = g.matmul(q, &kt);
    let scores = g.add(&scores, bias);
    let probs = g.softmax(&scores, -1);
    let ctx = g.matmul(&probs, v);
    let ctx = g.transpose(&ctx, &[0, 2, 1, 3]);
    g.reshape(&ctx, &[0, 0, inner as i64])
}

/// `(mask − 1)·10⁹` of an `int64 [b, k]` mask, as `[b, 1, 1, k]`.
fn padding_bias(g: &mut GraphBuilder, mask: &str) -> String {
    let m = g.cast(mask, DataType::Float);
    let one = g.scalar_f32(1.0);
    let big = g.scalar_f32(-NEG);
    let m = g.sub(&m, &one);
    let m = g.mul(&m, &big);
    g.unsqueeze(&m, &[1, 2])
}

/// Relative position bias `[1, heads, q, k]` for queries at `q_pos int64 [q]` and keys at
/// `0..k_len` (`k_len` an `int64` scalar), from the stack's per-distance table (see the module
/// docs); `causal` adds `−10⁹` where the key comes after the query.
#[allow(clippy::too_many_arguments)]
fn position_bias(
    g: &mut GraphBuilder,
    table_name: &str,
    by_distance: &[f32],
    heads: usize,
    max_distance: usize,
    q_pos: &str,
    k_len: &str,
    causal: bool,
) -> Result<String> {
    let rows = 2 * max_distance + 1;
    let table = g.weight(table_name, &[rows, heads], by_distance)?;
    let zero = g.scalar_i64(0);
    let one = g.scalar_i64(1);
    let j = g.range(&zero, k_len, &one); // [k]
    let j = g.unsqueeze(&j, &[0]); // [1, k]
    let i = g.unsqueeze(q_pos, &[1]); // [q, 1]
    let rel = g.sub(&j, &i); // [q, k] = key − query
    let md = g.scalar_i64(max_distance as i64);
    let neg_md = g.scalar_i64(-(max_distance as i64));
    let clamped = g.max(&rel, &neg_md);
    let clamped = g.op("Min", &[&clamped, &md], vec![]);
    let idx = g.add(&clamped, &md);
    let bias = g.gather(&table, &idx, 0); // [q, k, heads]
    let bias = g.transpose(&bias, &[2, 0, 1]);
    let bias = g.unsqueeze(&bias, &[0]); // [1, heads, q, k]
    if !causal {
        return Ok(bias);
    }
    let after = g.op("Greater", &[&rel, &zero], vec![]);
    let shut = g.scalar_f32(NEG);
    let open = g.scalar_f32(0.0);
    let c = g.where_(&after, &shut, &open); // [q, k]
    Ok(g.add(&bias, &c))
}

fn stack_table(blocks: Option<&T5Attention>, stack: &str) -> Result<Tensor> {
    blocks
        .and_then(|a| a.relative_attention_bias.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the T5 {stack} has no relative_attention_bias in its first block \
                 ({stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight)"
            )
        })
}

/// Emits the encoder stack from `embeds float [b, L, d]` (prompt rows included) and
/// `attention_mask int64 [b, L]`: relative bias (bidirectional) once, N blocks, final RMS norm.
/// Returns the last hidden states `float [b, L, d]`, as [`T5Model::encode`].
pub fn emit_encoder(
    g: &mut GraphBuilder,
    model: &T5Model,
    embeds: &str,
    attention_mask: &str,
) -> Result<String> {
    let c = &model.config;
    let (h, dk, inner, eps) = (c.num_heads, c.d_kv, c.inner_dim(), c.layer_norm_epsilon);
    let table = stack_table(model.encoder.first().map(|b| &b.attention), "encoder")?;
    let by_distance = relative_bias_by_distance(model, &table, true)?;
    let len = g.dim(embeds, 1);
    let len0 = g.squeeze(&len, &[0]);
    let zero = g.scalar_i64(0);
    let one = g.scalar_i64(1);
    let pos = g.range(&zero, &len0, &one);
    let pos_bias = position_bias(
        g,
        "encoder.relative_bias_by_distance",
        &by_distance,
        h,
        clamp_distance(model),
        &pos,
        &len0,
        false,
    )?;
    let pad = padding_bias(g, attention_mask);
    let bias = g.add(&pos_bias, &pad); // [b, h, L, L]
    let act = model.feed_forward_kind().activation;
    let mut x = embeds.to_owned();
    for (i, blk) in model.encoder.iter().enumerate() {
        let p = format!("encoder.block.{i}.layer");
        let n = rms_norm(
            g,
            &format!("{p}.0.layer_norm.weight"),
            &blk.attention_norm,
            &x,
            eps,
        )?;
        let sa = format!("{p}.0.SelfAttention");
        let heads = (h, dk, inner);
        let (o, _) = attention(g, &sa, &blk.attention, &n, &n, None, &bias, heads)?;
        x = g.add(&x, &o);
        let n = rms_norm(
            g,
            &format!("{p}.1.layer_norm.weight"),
            &blk.ff_norm,
            &x,
            eps,
        )?;
        let f = feed_forward(g, &format!("{p}.1.DenseReluDense"), &blk.ff, act, &n)?;
        x = g.add(&x, &f);
    }
    rms_norm(
        g,
        "encoder.final_layer_norm.weight",
        &model.encoder_final_norm,
        &x,
        eps,
    )
}

/// Emits one decoder step (see the module docs): token rows of the *original* shared table,
/// causal self-attention over the past and new positions (relative bias with positions offset
/// by the past length), cross-attention over the encoder output (keys/values from the encoder
/// past, extended by the rows it lacks), feed-forward, final norm and the LM head (tied:
/// `h·d^-0.5·sharedᵀ`; untied: `h·lm_headᵀ`). Returns logits and both presents; the caller
/// declares them as outputs.
pub fn emit_decoder(
    g: &mut GraphBuilder,
    model: &T5Model,
    inputs: &T5DecoderInputs,
) -> Result<T5DecoderOutputs> {
    let c = &model.config;
    let (h, dk, inner, eps, d) = (
        c.num_heads,
        c.d_kv,
        c.inner_dim(),
        c.layer_norm_epsilon,
        c.d_model,
    );
    let n_layers = model.decoder.len();
    ensure!(
        inputs.past_self.len() == n_layers && inputs.past_cross.len() == n_layers,
        "the T5 decoder has {n_layers} blocks but {} self-attention and {} cross-attention past \
         pairs were given",
        inputs.past_self.len(),
        inputs.past_cross.len()
    );
    let table = stack_table(model.decoder.first().map(|b| &b.self_attention), "decoder")?;
    let by_distance = relative_bias_by_distance(model, &table, false)?;
    // Positions: queries past..past + t, keys 0..past + t.
    let past = g.dim(&inputs.past_self[0].0, 2);
    let t = g.dim(&inputs.input_ids, 1);
    let total = g.add(&past, &t);
    let past0 = g.squeeze(&past, &[0]);
    let total0 = g.squeeze(&total, &[0]);
    let one = g.scalar_i64(1);
    let q_pos = g.range(&past0, &total0, &one);
    let self_bias = position_bias(
        g,
        "decoder.relative_bias_by_distance",
        &by_distance,
        h,
        clamp_distance(model),
        &q_pos,
        &total0,
        true,
    )?;
    let cross_bias = padding_bias(g, &inputs.encoder_attention_mask);
    // Encoder rows the cross-attention past lacks (all on the first step, none later).
    let past_enc = g.dim(&inputs.past_cross[0].0, 2);
    let end = g.const_i64(&[i64::MAX]);
    let enc_new = g.slice_dynamic(&inputs.encoder_hidden_states, &past_enc, &end, &[1]);

    let (vocab, _) = model.shared.dims2()?;
    let shared = g.weight("shared.weight", &[vocab, d], &values(&model.shared)?)?;
    let mut x = g.gather(&shared, &inputs.input_ids, 0);
    let act = model.feed_forward_kind().activation;
    let heads = (h, dk, inner);
    let mut present_self = Vec::with_capacity(n_layers);
    let mut present_cross = Vec::with_capacity(n_layers);
    for (i, blk) in model.decoder.iter().enumerate() {
        let p = format!("decoder.block.{i}.layer");
        // causal self-attention with the cache
        let n = rms_norm(
            g,
            &format!("{p}.0.layer_norm.weight"),
            &blk.self_attention_norm,
            &x,
            eps,
        )?;
        let sa = format!("{p}.0.SelfAttention");
        let past = Some(&inputs.past_self[i]);
        let a = &blk.self_attention;
        let (o, present) = attention(g, &sa, a, &n, &n, past, &self_bias, heads)?;
        x = g.add(&x, &o);
        present_self.push(present);
        // cross-attention over the encoder output
        let n = rms_norm(
            g,
            &format!("{p}.1.layer_norm.weight"),
            &blk.cross_attention_norm,
            &x,
            eps,
        )?;
        let ca = format!("{p}.1.EncDecAttention");
        let past = Some(&inputs.past_cross[i]);
        let a = &blk.cross_attention;
        let (o, present) = attention(g, &ca, a, &n, &enc_new, past, &cross_bias, heads)?;
        x = g.add(&x, &o);
        present_cross.push(present);
        // feed-forward
        let n = rms_norm(
            g,
            &format!("{p}.2.layer_norm.weight"),
            &blk.ff_norm,
            &x,
            eps,
        )?;
        let f = feed_forward(g, &format!("{p}.2.DenseReluDense"), &blk.ff, act, &n)?;
        x = g.add(&x, &f);
    }
    let hidden = rms_norm(
        g,
        "decoder.final_layer_norm.weight",
        &model.decoder_final_norm,
        &x,
        eps,
    )?;
    let logits = match &model.lm_head {
        Some(head) => {
            let w = g.weight_transposed("lm_head.weight", [vocab, d], &values(head)?)?;
            g.matmul(&hidden, &w)
        }
        None => {
            // Tied: the shared table again, transposed in the graph (ONNX Runtime folds the
            // constant Transpose at load), so it is stored once.
            let scale = g.scalar_f32((d as f64).powf(-0.5) as f32);
            let hs = g.mul(&hidden, &scale);
            let wt = g.transpose(&shared, &[1, 0]);
            g.matmul(&hs, &wt)
        }
    };
    Ok(T5DecoderOutputs {
        logits,
        present_self,
        present_cross,
    })
}
