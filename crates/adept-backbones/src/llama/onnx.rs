//! One Llama-family decoder step as a graph, with the key/value cache: the graph a causal-LM
//! bundle ships (optimum's input and output names; see `adept_export::decoder`).
//!
//! Emitted from Hugging Face-named tensors and plain dimensions ([`LlamaDims`]), so it needs no
//! candle module: `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `model.layers.{i}.{input,post_attention}_layernorm.weight`, `model.norm.weight`, and the
//! language-model head's table (the original one, tied or not). Initializers keep those names
//! (projection weights stored transposed, `[in, out]`, for `MatMul`; the head as
//! `lm_head.weight [d, vocab]`).
//!
//! Per layer, from `x [b, s, d]`:
//! ```text
//! h  = RMSNorm(x)                       composite (ONNX Runtime fuses it to SimplifiedLayerNormalization)
//! q, k, v = h·W_qᵀ, h·W_kᵀ, h·W_vᵀ      [b, heads|kv, s, hd] after Reshape + Transpose
//! q, k = rope(q), rope(k)               rotate-half layout, cos/sin from position_ids in-graph
//! K, V = Concat(past, k|v, axis 2)      → present.{i}.key|value [b, kv, past + s, hd]
//! attention                             (see DecoderAttention)
//! x = x + o_proj(attn)
//! x = x + down(silu(gate(RMSNorm(x))) · up(RMSNorm(x)))
//! ```
//! then the final norm and `logits = hidden · lm_headᵀ`.
//!
//! Choices, checked against ONNX Runtime 1.31 (CPU):
//! * RMSNorm is the composite above at opset 17: ONNX Runtime's optimizer rewrites it to one
//!   `SimplifiedLayerNormalization` kernel. Opset 23's `RMSNormalization` also runs there, but
//!   would force opset 23 (IR 11) on every consumer for no speed gain; `SimplifiedLayerNormalization`
//!   itself is a non-standard op in the default domain that `onnx.checker` rejects.
//! * Rotary angles are computed from `position_ids` in the graph (a `Mul`, `Cos`, `Sin` once per
//!   step, shared by all layers): no position table, no maximum length baked in.
//! * Attention: see [`DecoderAttention`]. `com.microsoft:GroupQueryAttention` was not used: it
//!   takes per-sequence lengths (`seqlens_k`, `total_sequence_length`) and assumes right-padded
//!   or unpadded keys, while a batch here is left padded and may hold a cached soft prompt
//!   followed by padding.
//!
//! The mask: key `j` is visible to new token `i` iff `attention_mask[j] == 1` and
//! `j <= past + i` (index-based, so left padding, a cached soft prompt and padding between them
//! all work; positions come separately from `position_ids`). Arithmetic is f32 throughout; with
//! f16 weights ([`adept_onnx::GraphBuilder::set_weight_dtype`]) each weight is cast once.

use crate::onnx::{values, DecoderInputs, DecoderOutputs, EmitOptions};
use adept_onnx::{DataType, GraphBuilder, MultiHeadAttention};
use anyhow::{ensure, Context, Result};
use candle_core::Tensor;

/// The dimensions a Llama-family decoder is emitted from (Hugging Face's `LlamaConfig` names in
/// the comments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LlamaDims {
    /// `num_hidden_layers`.
    pub layers: usize,
    /// `hidden_size` `d`.
    pub hidden: usize,
    /// `num_attention_heads`.
    pub heads: usize,
    /// `num_key_value_heads` (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// `head_dim` (usually `hidden / heads`).
    pub head_dim: usize,
    /// `intermediate_size`.
    pub ffn: usize,
    /// `rms_norm_eps`.
    pub rms_eps: f64,
    /// `rope_theta` (plain rotary embedding; no `rope_scaling`).
    pub rope_theta: f64,
    /// Rows of the language-model head.
    pub vocab: usize,
}

/// How a decoder layer's attention is emitted. Both give the same values (to 1e-6 against
/// transformers in the e2e tests).
///
/// Decode at SmolLM2-135M size (batch 1, 32-token prefill then 32 cached steps, one ONNX
/// Runtime 1.31 CPU thread on a shared 2-core machine; `bench_decode_smollm2_size` in
/// adept-e2e): `Plain` 131 / 76 ms per token (median, two runs), `MultiHead` 95 / 79 ms: no
/// difference beyond the noise, because a decode step is bound by reading the ~540 MB of f32
/// weights (the attention over a short cache is a few percent of it). `Plain` is the default:
/// default-domain ops only, and no key/value repetition for grouped-query attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DecoderAttention {
    /// Default-domain ops only: `MatMul` → `Add` (mask bias) → `Softmax` → `MatMul`, grouped
    /// heads as a reshape (`[b, kv, groups·s, hd]`), so keys and values are never repeated.
    /// Runs on every ONNX runtime (onnxruntime-web included).
    #[default]
    Plain,
    /// `com.microsoft:MultiHeadAttention` with the rotated queries/keys as `[b, s, heads·hd]`,
    /// the full keys/values (past included, heads repeated for grouped-query attention) and
    /// the mask as an additive `attention_bias [b, 1, s, past + s]`.
    MultiHead,
}

fn dims_check(d: &LlamaDims) -> Result<()> {
    ensure!(
        d.layers > 0 && d.hidden > 0 && d.heads > 0 && d.kv_heads > 0 && d.ffn > 0 && d.vocab > 0,
        "Llama dimensions must be positive: {d:?}"
    );
    ensure!(
        d.heads.is_multiple_of(d.kv_heads),
        "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
        d.heads,
        d.kv_heads
    );
    ensure!(
        d.head_dim > 0 && d.head_dim.is_multiple_of(2),
        "head_dim ({}) must be even for the rotary embedding",
        d.head_dim
    );
    Ok(())
}

/// The flat f32 values of the HF tensor `name`, checked to be `shape`.
fn tensor_values(
    weight: &dyn Fn(&str) -> Result<Tensor>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let t = weight(name).with_context(|| format!("Llama weight {name} (expected {shape:?})"))?;
    ensure!(
        t.dims() == shape,
        "Llama weight {name} has shape {:?}, expected {shape:?}: the checkpoint does not match \
         the dimensions the decoder is emitted with (config.json)",
        t.dims()
    );
    values(&t)
}

/// A bias-free `nn.Linear` called `name` (HF `[out, in]`), stored transposed; `x · Wᵀ`.
fn proj(
    g: &mut GraphBuilder,
    weight: &dyn Fn(&str) -> Result<Tensor>,
    prefix: &str,
    name: &str,
    x: &str,
    [out, inp]: [usize; 2],
) -> Result<String> {
    let full = format!("{prefix}.{name}.weight");
    let w = tensor_values(weight, &full, &[out, inp])?;
    let w = g.weight_transposed(&full, [out, inp], &w)?;
    Ok(g.matmul(x, &w))
}

/// `x / sqrt(mean(x², -1) + eps) · w` over the last axis, as the composite ONNX Runtime's
/// optimizer fuses into `SimplifiedLayerNormalization` (`Pow` → `ReduceMean` → `Add` → `Sqrt`
/// → `Div` → `Mul`). `w [d]` is the HF tensor `name`.
fn rms_norm(
    g: &mut GraphBuilder,
    weight: &dyn Fn(&str) -> Result<Tensor>,
    name: &str,
    x: &str,
    d: usize,
    eps: f64,
) -> Result<String> {
    let w = tensor_values(weight, name, &[d])?;
    let w = g.weight(name, &[d], &w)?;
    let two = g.scalar_f32(2.0);
    let eps = g.scalar_f32(eps as f32);
    let sq = g.op("Pow", &[x, &two], vec![]);
    let mean = g.reduce_mean(&sq, &[-1], true);
    let var = g.add(&mean, &eps);
    let rms = g.sqrt(&var);
    let normed = g.div(x, &rms);
    Ok(g.mul(&normed, &w))
}

/// `x · cos + rotate_half(x) · sin` for `x [b, n, s, hd]` and `cos`/`sin [b, 1, s, hd]`
/// (`rotate_half(x) = [-x₂, x₁]`, the halves of the last axis).
fn rope(g: &mut GraphBuilder, x: &str, cos: &str, sin: &str, hd: usize) -> String {
    let half = (hd / 2) as i64;
    let x1 = g.slice(x, &[0], &[half], &[-1]);
    let x2 = g.slice(x, &[half], &[i64::MAX], &[-1]);
    let neg = g.op("Neg", &[&x2], vec![]);
    let rot = g.concat(&[&neg, &x1], -1);
    let a = g.mul(x, cos);
    let b = g.mul(&rot, sin);
    g.add(&a, &b)
}

/// `cos`/`sin [b, 1, s, hd]` of `position_ids [b, s]`: `θ_k = p · theta^(-2k/hd)`, the angles
/// repeated for both halves (HF's `cat(freqs, freqs)`), computed in f32 as HF does.
fn rope_tables(g: &mut GraphBuilder, position_ids: &str, dims: &LlamaDims) -> (String, String) {
    let hd = dims.head_dim;
    let inv: Vec<f32> = (0..hd / 2)
        .map(|k| (1.0 / dims.rope_theta.powf((2 * k) as f64 / hd as f64)) as f32)
        .collect();
    let inv = g.const_f32(&inv);
    let p = g.cast(position_ids, DataType::Float);
    let p = g.unsqueeze(&p, &[-1]); // [b, s, 1]
    let freqs = g.mul(&p, &inv); // [b, s, hd/2]
    let emb = g.concat(&[&freqs, &freqs], -1); // [b, s, hd]
    let emb = g.unsqueeze(&emb, &[1]); // [b, 1, s, hd]
    let cos = g.op("Cos", &[&emb], vec![]);
    let sin = g.op("Sin", &[&emb], vec![]);
    (cos, sin)
}

/// The additive attention mask `[b, 1, s, past + s]`: 0 where key `j` is visible to new token
/// `i` (`attention_mask[j] == 1` and `j <= past + i`), `f32::MIN` elsewhere.
fn mask_bias(g: &mut GraphBuilder, attention_mask: &str, embeds: &str) -> String {
    let total = g.dim(attention_mask, 1); // [1] = past + s
    let s = g.dim(embeds, 1); // [1]
    let past = g.sub(&total, &s);
    let zero = g.scalar_i64(0);
    let one = g.scalar_i64(1);
    let total0 = g.squeeze(&total, &[0]);
    let s0 = g.squeeze(&s, &[0]);
    let j = g.range(&zero, &total0, &one); // [T]
    let i = g.range(&zero, &s0, &one); // [s]
    let last = g.add(&i, &past); // [s]: the last visible key of each new token
    let last = g.unsqueeze(&last, &[1]); // [s, 1]
    let causal = g.op("LessOrEqual", &[&j, &last], vec![]); // [s, T]
    let m = g.equal(attention_mask, &one); // [b, T]
    let m = g.unsqueeze(&m, &[1, 2]); // [b, 1, 1, T]
    let visible = g.op("And", &[&m, &causal], vec![]); // [b, 1, s, T]
    let open = g.scalar_f32(0.0);
    let shut = g.scalar_f32(f32::MIN);
    g.where_(&visible, &open, &shut)
}

/// Emits one decoder step (see the module docs) with the default attention form
/// ([`DecoderAttention::Plain`]). `weight` returns HF-named tensors; `lm_head` is the head's
/// `[vocab, d]` table. Returns `logits [b, s, vocab]` and per layer the present keys/values
/// `[b, kv, past + s, hd]`; the caller declares them as graph outputs.
pub fn emit_decoder(
    g: &mut GraphBuilder,
    dims: &LlamaDims,
    weight: &dyn Fn(&str) -> Result<Tensor>,
    lm_head: &Tensor,
    inputs: &DecoderInputs,
    opts: &EmitOptions,
) -> Result<DecoderOutputs> {
    let _ = opts;
    emit_decoder_with(
        g,
        dims,
        weight,
        lm_head,
        inputs,
        DecoderAttention::default(),
    )
}

/// [`emit_decoder`] with the attention form chosen.
pub fn emit_decoder_with(
    g: &mut GraphBuilder,
    dims: &LlamaDims,
    weight: &dyn Fn(&str) -> Result<Tensor>,
    lm_head: &Tensor,
    inputs: &DecoderInputs,
    attention: DecoderAttention,
) -> Result<DecoderOutputs> {
    dims_check(dims)?;
    ensure!(
        inputs.past.len() == dims.layers,
        "the decoder has {} layers but {} past key/value pairs were given",
        dims.layers,
        inputs.past.len()
    );
    ensure!(
        lm_head.dims() == [dims.vocab, dims.hidden],
        "the language-model head's table has shape {:?}, expected [{}, {}] (vocab, hidden)",
        lm_head.dims(),
        dims.vocab,
        dims.hidden
    );
    let d = dims.hidden;
    let (cos, sin) = rope_tables(g, &inputs.position_ids, dims);
    let bias = mask_bias(g, &inputs.attention_mask, &inputs.embeds);
    let mut x = inputs.embeds.clone();
    let mut present = Vec::with_capacity(dims.layers);
    for (i, (past_k, past_v)) in inputs.past.iter().enumerate() {
        let prefix = format!("model.layers.{i}");
        let (y, k, v) = layer(
            g, dims, weight, &prefix, &x, &cos, &sin, &bias, past_k, past_v, attention,
        )?;
        x = y;
        present.push((k, v));
    }
    let h = rms_norm(g, weight, "model.norm.weight", &x, d, dims.rms_eps)?;
    let table = values(lm_head)?;
    let w = g.weight_transposed("lm_head.weight", [dims.vocab, d], &table)?;
    let logits = g.matmul(&h, &w);
    Ok(DecoderOutputs { logits, present })
}

/// One decoder layer; returns the layer output and its present key and value.
#[allow(clippy::too_many_arguments)]
fn layer(
    g: &mut GraphBuilder,
    dims: &LlamaDims,
    weight: &dyn Fn(&str) -> Result<Tensor>,
    prefix: &str,
    x: &str,
    cos: &str,
    sin: &str,
    bias: &str,
    past_k: &str,
    past_v: &str,
    attention: DecoderAttention,
) -> Result<(String, String, String)> {
    let d = dims.hidden;
    let (h, kvh, hd) = (
        dims.heads as i64,
        dims.kv_heads as i64,
        dims.head_dim as i64,
    );
    let qd = dims.heads * dims.head_dim;
    let kd = dims.kv_heads * dims.head_dim;
    let sa = format!("{prefix}.self_attn");
    let normed = rms_norm(
        g,
        weight,
        &format!("{prefix}.input_layernorm.weight"),
        x,
        d,
        dims.rms_eps,
    )?;
    let q = proj(g, weight, &sa, "q_proj", &normed, [qd, d])?;
    let k = proj(g, weight, &sa, "k_proj", &normed, [kd, d])?;
    let v = proj(g, weight, &sa, "v_proj", &normed, [kd, d])?;
    // [b, s, n·hd] → [b, n, s, hd]
    let q = g.reshape(&q, &[0, 0, h, hd]);
    let q = g.transpose(&q, &[0, 2, 1, 3]);
    let k = g.reshape(&k, &[0, 0, kvh, hd]);
    let k = g.transpose(&k, &[0, 2, 1, 3]);
    let v = g.reshape(&v, &[0, 0, kvh, hd]);
    let v = g.transpose(&v, &[0, 2, 1, 3]);
    let q = rope(g, &q, cos, sin, dims.head_dim);
    let k = rope(g, &k, cos, sin, dims.head_dim);
    let keys = g.concat(&[past_k, &k], 2); // [b, kv, T, hd]
    let vals = g.concat(&[past_v, &v], 2);
    let context = match attention {
        DecoderAttention::Plain => {
            let groups = h / kvh;
            let scale = g.scalar_f32(1.0 / (dims.head_dim as f32).sqrt());
            let q = g.mul(&q, &scale);
            // [b, h, s, hd] → [b, kv, groups·s, hd]: heads kv·groups + r use kv head kv.
            let q = g.reshape(&q, &[0, kvh, -1, hd]);
            let kt = g.transpose(&keys, &[0, 1, 3, 2]);
            let scores = g.matmul(&q, &kt); // [b, kv, groups·s, T]
            let shape4 = g.shape(&scores);
            let shape5 = {
                let t = g.dim(&scores, 3);
                let head = g.const_i64(&[0, kvh, groups, -1]);
                g.concat(&[&head, &t], 0)
            };
            let scores = g.reshape_dynamic(&scores, &shape5); // [b, kv, groups, s, T]
            let bias5 = g.unsqueeze(bias, &[1]); // [b, 1, 1, s, T]
            let scores = g.add(&scores, &bias5);
            let probs = g.softmax(&scores, -1);
            let probs = g.reshape_dynamic(&probs, &shape4); // [b, kv, groups·s, T]
            let ctx = g.matmul(&probs, &vals); // [b, kv, groups·s, hd]
            let ctx = g.reshape(&ctx, &[0, h, -1, hd]); // [b, h, s, hd]
            let ctx = g.transpose(&ctx, &[0, 2, 1, 3]);
            g.reshape(&ctx, &[0, 0, h * hd])
        }
        DecoderAttention::MultiHead => {
            let groups = (h / kvh) as usize;
            let q = g.transpose(&q, &[0, 2, 1, 3]);
            let q = g.reshape(&q, &[0, 0, h * hd]); // [b, s, h·hd]
            let repeat = |g: &mut GraphBuilder, t: &str| -> String {
                // [b, kv, T, hd] → [b, T, kv·groups·hd], each kv head repeated `groups` times.
                let t = g.transpose(t, &[0, 2, 1, 3]); // [b, T, kv, hd]
                if groups == 1 {
                    return g.reshape(&t, &[0, 0, h * hd]);
                }
                let t = g.unsqueeze(&t, &[3]); // [b, T, kv, 1, hd]
                let shape = g.shape(&t);
                let head = g.slice(&shape, &[0], &[3], &[0]);
                let tail = g.const_i64(&[groups as i64, hd]);
                let shape = g.concat(&[&head, &tail], 0);
                let t = g.expand(&t, &shape);
                g.reshape(&t, &[0, 0, h * hd])
            };
            let kk = repeat(g, &keys);
            let vv = repeat(g, &vals);
            let spec = MultiHeadAttention::new(&q, &kk, &vv, dims.heads).attention_bias(bias);
            // g.attention records the contrib output's type (value_info) for shape inference.
            g.attention(spec)
        }
    };
    let o = proj(g, weight, &sa, "o_proj", &context, [d, qd])?;
    let x = g.add(x, &o);
    let normed = rms_norm(
        g,
        weight,
        &format!("{prefix}.post_attention_layernorm.weight"),
        &x,
        d,
        dims.rms_eps,
    )?;
    let mlp = format!("{prefix}.mlp");
    let gate = proj(g, weight, &mlp, "gate_proj", &normed, [dims.ffn, d])?;
    let up = proj(g, weight, &mlp, "up_proj", &normed, [dims.ffn, d])?;
    let sig = g.sigmoid(&gate);
    let silu = g.mul(&gate, &sig);
    let act = g.mul(&silu, &up);
    let down = proj(g, weight, &mlp, "down_proj", &act, [d, dims.ffn])?;
    let y = g.add(&x, &down);
    Ok((y, keys, vals))
}
