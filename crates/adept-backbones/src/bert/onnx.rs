//! `BertEncoder::forward_embeds` as a graph: embeddings (`+ positions + token types`,
//! LayerNorm), then per layer self-attention (ONNX `Attention`, or below opset 23
//! `com.microsoft:MultiHeadAttention`) + residual +
//! LayerNorm and feed-forward + residual + LayerNorm. Initializers carry the Hugging Face
//! names (`embeddings.position_embeddings.weight`, `encoder.layer.3.attention.self.query.weight`).
//!
//! Written for ONNX Runtime's fused CPU kernels, much in the layout its own BERT optimizer
//! produces: attention is one `com.microsoft:MultiHeadAttention` (q/k/v biases inside it), each
//! residual connection one `Sum` (the dense bias inside it) and a standard `LayerNormalization`
//! (not `com.microsoft:SkipLayerNormalization`, whose CPU kernel is several times slower; see
//! `GraphBuilder::skip_layer_norm_from`), and the feed-forward `MatMul` + bias `Add` + erf-GELU is left in the pattern ONNX
//! Runtime rewrites to `MatMul` + `BiasGelu` (tanh-GELU: `FastGelu`).
//!
//! **Lean form** ([`EncoderInputs::constant_prompt`]). The soft prompt sits at positions
//! `0..l` with token type 0 in every BERT-family model (RoBERTa-style ones included: positions
//! here are `offset + i` for every row, never derived from the mask, in candle as in the graph,
//! so neither padding side nor the input moves them). So everything about the prompt rows up to
//! the first attention is input-independent, and [`prompt_rows`] computes it once at export with
//! the candle modules `forward_embeds_from` runs (an exact f32 evaluation of the same
//! functions, and no ONNX evaluator needed at export): the embedding output of the prompt rows
//! (`embeddings.prompt_output [l, d]`) and their first-layer query/key/value projections
//! (`encoder.layer.0.attention.self.prompt_{query,key,value} [l, d]`, heads side by side as
//! `MultiHeadAttention` splits them, without the biases, which the kernel adds to all rows).
//! The graph then runs the embeddings and the first layer's three projections on the input
//! rows only and concatenates the constants in front; the prompt rows' attention (their queries
//! attend to input keys), output projection and feed-forward still run, as in every later
//! layer, whose prompt rows depend on the input. With `AttentionKind::Packed` (one fused
//! projection over all rows) only the embedding output is constant.
//!
//! **Packed form** (`EmitOptions::pack_rows`, the classifier export's default; see
//! [`encoder_packed`]): between attentions the hidden states hold only the rows of positions
//! that hold tokens, so padding costs the products nothing; lean or full as above. Where a
//! batch has no padding (one sentence, or sentences of one length) that only costs gathers, so
//! the packed export holds the padded encoder too, without its mask, and an `If` on the mask
//! picks one per run ([`encoder_from_embeds`]); both read the same initializers.
//!
//! **Attention kernel.** From default-domain opset 23 on (the export's default) attention is
//! ONNX's own `Attention` ([`GraphBuilder::onnx_attention`]), which has no bias input: the
//! query bias is a `Sum` before it, the key bias is left out (it shifts each query's scores by
//! one constant, which the softmax removes) and the value bias joins the output projection's
//! (`output.dense.bias_with_value_bias = b_v·W_oᵀ + b_o`, as a context row's attention weights
//! sum to one); the key mask is `bool [batch, 1, L, L]`, made once ([`attention_mask`]). Its CPU
//! kernel is faster than `MultiHeadAttention` and gives a row the same bits with padding keys
//! masked or absent, so the padded branch runs without a mask in int8 graphs too. Below opset
//! 23 the graph uses `com.microsoft:MultiHeadAttention`, and a float graph's padded encoder
//! runs each layer whose queries are all its rows (not the lean first layer, nor a last layer
//! that keeps the input rows only) as one `com.microsoft:Attention` node over the three q/k/v
//! weights side by side ([`self_attention_packed`]; the packed encoder's layers read the same
//! three weights apart).

use super::{Activation, BertEncoder, BertLayer, Norm};
use crate::onnx::{mask_i32, values, AttentionKind, EmitOptions, EncoderInputs};
use adept_nn::FrozenLinear;
use adept_onnx::{AttributeProto, DataType, GraphBuilder, MultiHeadAttention};
use anyhow::{ensure, Context, Result};
use candle_core::{DType, Tensor};

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
            let y = g.mul(&y, &half);
            g.set_lower_bound(&y, adept_onnx::GELU_FLOOR);
            y
        }
        Activation::Relu => g.relu(x),
    }
}

/// `LayerNorm(inputs_embeds + position_embeddings[offset .. offset + L] + token_type_embeddings[types])`
/// for the rows in `x.embeds`: `[batch, l + s, d]`, or in the lean form `[batch, s, d]` (the
/// input rows, positions from `offset + l` on).
///
/// The position rows are a `Slice` of the table with bounds computed from the rows' count, the
/// graph form of `position.narrow(0, offset, L)`.
pub fn embeddings(g: &mut GraphBuilder, enc: &BertEncoder, x: &EncoderInputs) -> Result<String> {
    let e = &enc.embeddings;
    let cfg = &enc.config;
    let d = cfg.hidden_size;
    g.scope("embeddings", |g| {
        // The lean form's rows start after the constant prompt rows.
        let offset = (cfg.position_offset() + x.constant_prompt_len()) as i64;
        let pos_table = g.weight(
            "position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
            &values(&e.position)?,
        )?;
        let len = g.dim(&x.embeds, 1);
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
/// itself (`MultiHeadAttention`, the residual `Sum`).
fn bias_of(g: &mut GraphBuilder, prefix: &str, l: &FrozenLinear) -> Result<Option<String>> {
    l.bias()
        .map(|b| {
            g.scope(prefix, |g| {
                g.weight("bias", &[l.out_features()], &values(b)?)
            })
        })
        .transpose()
}

/// A frozen linear without its bias, and what the kernel that adds the bias must add to it
/// (see `GraphBuilder::linear_unbiased`).
fn unbiased(
    g: &mut GraphBuilder,
    prefix: &str,
    x: &str,
    l: &FrozenLinear,
) -> Result<(String, Option<Vec<f32>>)> {
    let w = values(l.weight())?;
    g.linear_unbiased(prefix, x, &w, [l.out_features(), l.in_features()])
}

/// [`bias_of`] plus a correction from [`unbiased`]: stored as `"<prefix>.bias"` when there is
/// no correction, else as `"<prefix>.bias_corrected"` (the layer's bias, zeros if it has none,
/// plus the correction).
fn corrected_bias(
    g: &mut GraphBuilder,
    prefix: &str,
    l: &FrozenLinear,
    correction: Option<Vec<f32>>,
) -> Result<Option<String>> {
    let Some(correction) = correction else {
        return bias_of(g, prefix, l);
    };
    let bias = l.bias().map(values).transpose()?;
    let sum = adept_onnx::with_correction(bias.as_deref(), Some(&correction))
        .expect("a correction is present");
    g.scope(prefix, |g| g.weight("bias_corrected", &[sum.len()], &sum))
        .map(Some)
}

/// A frozen linear without its bias: the bare `MatMul` (the bias goes to the next kernel).
fn matmul_only(g: &mut GraphBuilder, prefix: &str, x: &str, l: &FrozenLinear) -> Result<String> {
    let w = values(l.weight())?;
    g.linear(prefix, x, &w, [l.out_features(), l.in_features()], None)
}

/// `LayerNorm(input + bias + residual)` as `Sum` + `LayerNormalization` (the LayerNorm's
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
/// `MultiHeadAttention`, and the output projection's bias into the residual `Sum`.
pub fn self_attention(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    x: &str,
    xq: &str,
    mask: Option<&str>,
    heads: usize,
) -> Result<String> {
    g.scope("attention", |g| {
        // Queries (and so the block's output rows) from `xq`, keys and values from all of `x`.
        let q = matmul_only(g, "self.query", xq, &layer.query)?;
        let k = matmul_only(g, "self.key", x, &layer.key)?;
        let v = matmul_only(g, "self.value", x, &layer.value)?;
        attention_from_projections(g, layer, [&q, &k, &v], xq, mask, heads)
    })
}

/// `[query.bias; key.bias; value.bias]` (zeros for a projection without bias), the packed
/// bias of `MultiHeadAttention` and of the packed `Attention` node.
fn packed_qkv_bias(layer: &BertLayer) -> Result<Vec<f32>> {
    let mut bias = Vec::new();
    for l in [&layer.query, &layer.key, &layer.value] {
        match l.bias() {
            Some(b) => bias.extend(values(b)?),
            None => bias.extend(std::iter::repeat_n(0.0, l.out_features())),
        }
    }
    Ok(bias)
}

/// The self-attention block from its bare projections `q [batch, rows, d]`, `k`, `v [batch, L,
/// d]` (no biases yet): `MultiHeadAttention` (with `self.qkv_bias`), the output projection and
/// the residual LayerNorm with `residual [batch, rows, d]` (the rows the queries came from).
/// Call inside the `attention` scope.
fn attention_from_projections(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    [q, k, v]: [&str; 3],
    residual: &str,
    mask: Option<&str>,
    heads: usize,
) -> Result<String> {
    let context = attention_context(g, layer, [q, k, v], mask, heads)?;
    attention_output(g, layer, &context, residual)
}

/// `MultiHeadAttention` over the bare projections `q`, `k`, `v` (with `self.qkv_bias`): the
/// context rows of the queries. Call inside the `attention` scope.
fn attention_context(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    [q, k, v]: [&str; 3],
    mask: Option<&str>,
    heads: usize,
) -> Result<String> {
    if onnx_attention(g) {
        return g.scope("self", |g| -> Result<String> {
            // Only the query bias is added: a key bias adds one constant to each query's
            // scores, which the softmax takes away, and the value bias, whose weights sum to
            // one in every context row, goes into the output projection's bias
            // ([`attention_output`]).
            let q = match layer.query.bias() {
                Some(b) => {
                    let bias = g.weight("query.bias", &[b.dims()[0]], &values(b)?)?;
                    g.op("Sum", &[q, &bias], vec![])
                }
                None => q.to_owned(),
            };
            g.onnx_attention(&q, k, v, mask, heads)
        });
    }
    let qkv_bias = packed_qkv_bias(layer)?;
    g.scope("self", |g| -> Result<String> {
        let bias = g.weight("qkv_bias", &[qkv_bias.len()], &qkv_bias)?;
        let mut spec = MultiHeadAttention::new(q, k, v, heads).bias(&bias);
        if let Some(mask) = mask {
            spec = spec.key_padding_mask(mask);
        }
        Ok(g.attention(spec))
    })
}

/// The output projection of `context` and the residual LayerNorm with `residual` (same rows,
/// any leading shape). Call inside the `attention` scope.
fn attention_output(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    context: &str,
    residual: &str,
) -> Result<String> {
    let out = matmul_only(g, "output.dense", context, &layer.attention_output)?;
    let bias = match (onnx_attention(g), layer.value.bias()) {
        // The value bias passes through the attention unchanged (see `attention_context`):
        // `(c + b_v)·W_oᵀ + b_o = c·W_oᵀ + (b_v·W_oᵀ + b_o)`.
        (true, Some(bv)) => {
            let folded = layer
                .attention_output
                .forward(&bv.to_dtype(DType::F32)?.unsqueeze(0)?)?
                .squeeze(0)?;
            let folded = values(&folded)?;
            Some(g.scope("output.dense", |g| {
                g.weight("bias_with_value_bias", &[folded.len()], &folded)
            })?)
        }
        _ => bias_of(g, "output.dense", &layer.attention_output)?,
    };
    residual_norm(
        g,
        "output.LayerNorm",
        &out,
        bias.as_deref(),
        residual,
        &layer.attention_norm,
    )
}

/// The same block with one `com.microsoft:Attention` node: the q/k/v weights side by side,
/// `[d, 3d]` (`[W_qᵀ | W_kᵀ | W_vᵀ]`), and their biases packed (`self.qkv_bias`).
///
/// The file holds the three weights as [`linear`] stores them (`self.query.weight`, …) and
/// the graph concatenates them: ONNX Runtime folds the `Concat` once, when it creates the
/// session, and a graph whose other branch reads the three apart (the packed form's middle
/// layers, see [`encoder_from_embeds`]) stores them once.
pub fn self_attention_packed(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    x: &str,
    mask: Option<&str>,
    heads: usize,
) -> Result<String> {
    g.scope("attention", |g| {
        let bias = packed_qkv_bias(layer)?;
        // The weights as `matmul_only` stores them (`self.query.weight`, …).
        let mut ws = Vec::with_capacity(3);
        for (prefix, l) in [
            ("self.query", &layer.query),
            ("self.key", &layer.key),
            ("self.value", &layer.value),
        ] {
            let w = values(l.weight())?;
            ws.push(g.linear_weight(prefix, &w, [l.out_features(), l.in_features()])?);
        }
        let context = g.scope("self", |g| -> Result<String> {
            let w = g.concat(&[&ws[0], &ws[1], &ws[2]], 1);
            let b = g.weight("qkv_bias", &[bias.len()], &bias)?;
            Ok(g.packed_attention(x, &w, &b, mask, heads))
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
/// LayerNorm (`Sum` with `output.dense.bias`, `LayerNormalization`).
pub fn feed_forward(
    g: &mut GraphBuilder,
    layer: &BertLayer,
    act: Activation,
    x: &str,
) -> Result<String> {
    let inter = &layer.intermediate;
    // Per tensor, the bias `Add` after the product is what ONNX Runtime fuses into
    // `DynamicQuantizeMatMul`, and the GELU after it becomes one `Gelu`: 6–9 % more sentences/s
    // at batch 32 than a `BiasGelu` (MiniLM, l = 60, 2 threads, interleaved runs).
    let h = if act == Activation::GeluErf
        && !g.bias_follows_quantized_product("intermediate.dense")
        && g.quantizes(
            "intermediate.dense",
            inter.out_features(),
            inter.in_features(),
        ) {
        // A quantized product per row takes no bias `Add` after it (see
        // `GraphBuilder::quantized_linear`): `Sub` of the negated bias, then the GELU.
        let (h, correction) = unbiased(g, "intermediate.dense", x, inter)?;
        let bias = inter.bias().map(values).transpose()?;
        let bias = adept_onnx::with_correction(bias.as_deref(), correction.as_deref())
            .unwrap_or_else(|| vec![0.0; inter.out_features()]);
        g.scope("intermediate.dense", |g| g.bias_gelu(&h, &bias))?
    } else {
        let h = linear(g, "intermediate.dense", x, inter)?;
        g.scope("intermediate", |g| activation(g, act, &h))
    };
    // A quantized output.dense reads the GELU output shifted to be non-negative: the shift's
    // correction joins the bias in the residual Sum.
    let (out, correction) = unbiased(g, "output.dense", &h, &layer.output)?;
    let bias = corrected_bias(g, "output.dense", &layer.output, correction)?;
    residual_norm(
        g,
        "output.LayerNorm",
        &out,
        bias.as_deref(),
        x,
        &layer.output_norm,
    )
}

/// One encoder layer (`encoder.layer.{i}`); with `query_from > 0` (multi-head attention only)
/// its output holds the rows from `query_from` on: queries, attention output and feed-forward
/// for those rows alone, as `BertEncoder::forward_embeds_from` computes the last layer.
pub fn layer(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    i: usize,
    x: &str,
    mask: Option<&str>,
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
                let mask = mask.map(|m| mask_for_queries(g, m, query_from));
                self_attention(g, layer, x, &xq, mask.as_deref(), heads)?
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

/// The whole encoder from input embeddings (the graph form of `forward_embeds`); in the lean
/// form (see the module docs) with the prompt rows' input-independent values as constants.
///
/// With [`EmitOptions::pack_rows`] (multi-head attention, two layers or more) the graph holds
/// two encoders over the same weights and an `If` picks one per run: a batch whose mask is all
/// ones (one sentence, or sentences of one length) runs [`encoder_padded`] (without a mask
/// unless the products are quantized), any other [`encoder_packed`].
pub fn encoder_from_embeds(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    x: &EncoderInputs,
    opts: &EmitOptions,
) -> Result<String> {
    ensure!(
        !(opts.attention == AttentionKind::Packed && onnx_attention(g)),
        "com.microsoft:Attention (AttentionKind::Packed) reads an int32 key mask; at opset {} \
         and later the encoder's attention is ONNX's own `Attention`: use AttentionKind::MultiHead",
        adept_onnx::ONNX_ATTENTION_OPSET
    );
    let hidden = embeddings(g, enc, x)?;
    // What of the prompt rows is input-independent, computed once for both branches.
    let rows = x
        .constant_prompt
        .as_ref()
        .map(|prompt| prompt_rows(enc, prompt))
        .transpose()?;
    let rows = rows.as_ref();
    if opts.pack_rows && opts.attention == AttentionKind::MultiHead && enc.layers.len() >= 2 {
        let full = g.scope("encoder", |g| no_padding(g, &x.attention_mask));
        // Without padding the mask changes nothing, and `MultiHeadAttention` without one takes
        // a faster kernel whose f32 sums round differently (~1e-6). Quantized products turn
        // such differences into whole int8 steps (4e-2 logits on MiniLM per row), so int8
        // graphs keep the mask: a sentence alone then runs the same kernels as in a batch.
        // ONNX's own `Attention` (opset 23 on) gives the same bits with the padding keys
        // masked or absent, so there no graph needs the mask here.
        let masked = g.matmul_quantization().is_some() && !onnx_attention(g);
        // At the root scope, so that both branches name their weights as the padded form.
        let mut out = g.if_else(
            &full,
            &[("encoder.output", DataType::Float)],
            |g| {
                Ok(vec![encoder_padded(
                    g,
                    enc,
                    x,
                    rows,
                    &hidden,
                    masked,
                    opts.attention,
                )?])
            },
            |g| Ok(vec![encoder_packed(g, enc, x, rows, &hidden)?]),
        )?;
        return Ok(out.pop().expect("one output"));
    }
    encoder_padded(g, enc, x, rows, &hidden, true, opts.attention)
}

/// Whether this graph's attention is ONNX's own `Attention` (default-domain opset 23 on) rather
/// than `com.microsoft:MultiHeadAttention`.
///
/// In ONNX Runtime 1.31 on CPU it is the faster kernel (MiniLM's `[1, 85, 384]`, 12 heads, 2
/// threads: 91 µs against 131–146 µs unmasked, 112 against 165 µs with a key mask), and a row's
/// context is the same to the bit whether padding keys are masked or absent, so an int8 graph
/// can drop the mask for a batch without padding and still give a sentence the same logits
/// alone and in a batch.
fn onnx_attention(g: &GraphBuilder) -> bool {
    g.opset() >= adept_onnx::ONNX_ATTENTION_OPSET
}

/// The key padding mask `mask` (`int64 [batch, L]`, 1 = token) as the graph's attention reads
/// it: `int32 [batch, L]` for `MultiHeadAttention`, `bool [batch, 1, L, L]` (every query row
/// spelled out) for ONNX `Attention`; made once and shared by the layers.
fn attention_mask(g: &mut GraphBuilder, mask: &str) -> String {
    if !onnx_attention(g) {
        return mask_i32(g, mask);
    }
    // `mask > 0`, as the packed form reads it (a value below 0 is padding; a cast would
    // take any non-zero value for a token).
    let zero = g.scalar_i64(0);
    let keys = g.op("Greater", &[mask, &zero], vec![]);
    let keys = g.unsqueeze(&keys, &[1, 2]); // [batch, 1, 1, L]
    let len = g.dim(mask, 1);
    let ones = g.const_i64(&[1, 1]);
    let one = g.const_i64(&[1]);
    let shape = g.concat(&[&ones, &len, &one], 0); // [1, 1, L, 1]
    g.expand(&keys, &shape)
}

/// [`attention_mask`] for the queries from row `from` on: the 4-D mask's query rows from
/// `from` (ONNX `Attention`); `MultiHeadAttention`'s mask has no query axis.
fn mask_for_queries(g: &mut GraphBuilder, mask: &str, from: usize) -> String {
    if from == 0 || !onnx_attention(g) {
        return mask.to_owned();
    }
    g.slice(mask, &[from as i64], &[i64::MAX], &[2])
}

/// `bool []`: whether every position of `mask` (`int64 [batch, L]`) holds a token.
///
/// As `Sum(Clip(mask, 0, 1)) == Size(mask)`, which holds for an empty batch too (a `ReduceMin`
/// over no element is an error in ONNX Runtime); the clip counts as the packed form does (a
/// value above 1 is a token, one below 0 padding).
fn no_padding(g: &mut GraphBuilder, mask: &str) -> String {
    let zero = g.scalar_i64(0);
    let one = g.scalar_i64(1);
    let tokens = g.op("Clip", &[mask, &zero, &one], vec![]);
    let count = g.op(
        "ReduceSum",
        &[&tokens],
        vec![AttributeProto::int("keepdims", 0)],
    );
    let size = g.op("Size", &[mask], vec![]);
    g.equal(&count, &size)
}

/// The padded form of the encoder from the embedding output `hidden`: every layer on the
/// `[batch, l + s, d]` layout (the lean form's first layer beside the constant prompt rows,
/// `rows`: [`prompt_rows`] of `x.constant_prompt`),
/// the last one on the rows from `keep_from` on. `masked: false` leaves the key padding mask
/// out of the attentions, for a batch without padding (the `If` of
/// [`encoder_from_embeds`]).
///
/// In a float graph (no quantized product), a layer whose queries are all its rows (not the
/// lean form's first layer, which has the prompt's keys and values precomputed, nor a last
/// layer that keeps the input rows only) runs as one `com.microsoft:Attention` node with the
/// three weights side by side (the packed-attention form of [`layer`]): one product where
/// `MultiHeadAttention` takes three, 3–5 % more sentences/s for MiniLM at batch 1 and 32
/// (l = 60, 2 threads, interleaved). An int8 graph (even with q/k/v kept float) keeps the
/// products and kernels of the packed branch, so that a sentence gets the same logits alone
/// and in a batch.
fn encoder_padded(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    x: &EncoderInputs,
    rows: Option<&PromptRows>,
    hidden: &str,
    masked: bool,
    attention: AttentionKind,
) -> Result<String> {
    let mut hidden = hidden.to_owned();
    let float_graph = g.matmul_quantization().is_none();
    let mask = masked.then(|| g.scope("encoder", |g| attention_mask(g, &x.attention_mask)));
    let mask = mask.as_deref();
    let n = enc.layers.len();
    let last = n.saturating_sub(1);
    let mut first = 0;
    if let Some(rows) = rows {
        let batch = g.dim(&x.embeds, 0);
        let lean_layer = n > 0 && attention == AttentionKind::MultiHead;
        if lean_layer {
            let from = if last == 0 { x.keep_from } else { 0 };
            hidden = first_layer_lean(g, enc, rows, &hidden, mask, &batch, from, None)?;
            first = 1;
        } else {
            // Packed attention projects all rows in one node: only the embedding output is
            // constant.
            hidden = prepend_rows(g, PROMPT_OUTPUT, &rows.hidden, &hidden, &batch)?;
        }
    }
    for i in first..n {
        let from = if i == last { x.keep_from } else { 0 };
        let kind = if from == 0
            && attention == AttentionKind::MultiHead
            && float_graph
            && !onnx_attention(g)
        {
            AttentionKind::Packed
        } else {
            attention
        };
        hidden = layer(g, enc, i, &hidden, mask, kind, from)?;
    }
    if n == 0 && x.keep_from > 0 {
        hidden = g.slice(&hidden, &[x.keep_from as i64], &[i64::MAX], &[1]);
    }
    Ok(hidden)
}

/// The initializer of the prompt rows' embedding output in the lean form.
pub const PROMPT_OUTPUT: &str = "embeddings.prompt_output";
/// The first layer's prompt-row projections in the lean form, in the layer's
/// `attention.self` scope (`encoder.layer.0.attention.self.prompt_key`, …).
pub const PROMPT_PROJECTIONS: [&str; 3] = ["prompt_query", "prompt_key", "prompt_value"];

/// What of the soft prompt's rows does not depend on the input (positions `offset..offset + l`,
/// token type 0), computed with the encoder's candle modules as `forward_embeds_from` runs
/// them, in f32.
#[derive(Clone, Debug)]
pub struct PromptRows {
    /// `[l, d]`: `LayerNorm(P + position_embeddings[offset .. offset + l] +
    /// token_type_embeddings[0])`, the embedding output of the prompt rows.
    pub hidden: Tensor,
    /// `[l, d]` each: the first layer's query, key and value projections of `hidden`, without
    /// their biases (`hidden · Wᵀ`); `None` for an encoder without layers.
    pub first_layer: Option<[Tensor; 3]>,
}

/// [`PromptRows`] for the soft prompt `prompt [l, d]`.
pub fn prompt_rows(enc: &BertEncoder, prompt: &Tensor) -> Result<PromptRows> {
    let cfg = &enc.config;
    let d = cfg.hidden_size;
    let (l, pd) = prompt
        .dims2()
        .context("the soft prompt must be a [l, d] matrix")?;
    ensure!(
        pd == d,
        "the soft prompt is [{l}, {pd}] but the encoder's hidden size is {d}: the adapter was \
         trained on another model; export it with the model it was trained on"
    );
    ensure!(
        l < cfg.max_sequence_len(),
        "a {l}-row soft prompt leaves no position for input tokens in a model of {} positions",
        cfg.max_sequence_len()
    );
    let e = &enc.embeddings;
    let f32 = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?) };
    let p = f32(&prompt.to_device(e.position.device())?)?;
    let positions = f32(&e.position.narrow(0, cfg.position_offset(), l)?)?;
    let type0 = f32(&e.token_type.narrow(0, 0, 1)?)?;
    let x = p.add(&positions)?.broadcast_add(&type0)?;
    let norm = Norm {
        weight: f32(&e.norm.weight)?,
        bias: f32(&e.norm.bias)?,
        eps: e.norm.eps,
    };
    let hidden = norm.forward(&x)?;
    let first_layer = match enc.layers.first() {
        Some(layer) => {
            let project = |lin: &FrozenLinear| -> Result<Tensor> {
                let bare = FrozenLinear::new(f32(lin.weight())?, None)?;
                Ok(bare.forward(&hidden)?)
            };
            Some([
                project(&layer.query)?,
                project(&layer.key)?,
                project(&layer.value)?,
            ])
        }
        None => None,
    };
    Ok(PromptRows {
        hidden,
        first_layer,
    })
}

/// `rows [r, d]` stored as the initializer `name` (scoped) and broadcast over the batch, then
/// put in front of `x [batch, s, d]`: `[batch, r + s, d]` (`x` itself when `r` is 0).
fn prepend_rows(
    g: &mut GraphBuilder,
    name: &str,
    rows: &Tensor,
    x: &str,
    batch: &str,
) -> Result<String> {
    let (r, d) = rows.dims2()?;
    if r == 0 {
        return Ok(x.to_owned());
    }
    let c = g.weight(name, &[r, d], &values(rows)?)?;
    let c = g.unsqueeze(&c, &[0]);
    let rest = g.const_i64(&[r as i64, d as i64]);
    let shape = g.concat(&[batch, &rest], 0);
    let c = g.expand(&c, &shape);
    Ok(g.concat(&[&c, x], 1))
}

/// The first layer (`encoder.layer.0`) in the lean form: `x [batch, s, d]` holds the input rows'
/// embedding output; the prompt rows' embedding output and projections come from `rows`. Keys
/// and values: `[prompt_key; x · W_kᵀ]` (all `l + s` rows); queries and the block's output
/// rows from row `query_from` of the `l + s` on, as in [`layer`]. With `packed` (the packed
/// form, `query_from` 0; see [`encoder_packed`]) the attention's context and the residual are
/// packed by those token rows, and so is the output.
#[allow(clippy::too_many_arguments)]
fn first_layer_lean(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    rows: &PromptRows,
    x: &str,
    mask: Option<&str>,
    batch: &str,
    query_from: usize,
    packed: Option<&TokenRows>,
) -> Result<String> {
    let layer = &enc.layers[0];
    let heads = enc.config.num_attention_heads;
    let [pq, pk, pv] = rows
        .first_layer
        .as_ref()
        .context("the encoder has no first layer")?;
    let l = rows.hidden.dims()[0];
    // Rows from `query_from`: the prompt's (constant) from min(query_from, l), the input's from
    // query_from - l when that is positive.
    let p_from = query_from.min(l);
    let xq = if query_from > l {
        g.slice(x, &[(query_from - l) as i64], &[i64::MAX], &[1])
    } else {
        x.to_owned()
    };
    // The residual rows (unscoped: the initializer is `embeddings.prompt_output`).
    let residual = prepend_rows(
        g,
        PROMPT_OUTPUT,
        &rows.hidden.narrow(0, p_from, l - p_from)?,
        &xq,
        batch,
    )?;
    let residual = match packed {
        Some(all) => g.scope("encoder", |g| pack(g, &residual, all)),
        None => residual,
    };
    g.scope("encoder.layer.0", |g| {
        let h = g.scope("attention", |g| -> Result<String> {
            let q = matmul_only(g, "self.query", &xq, &layer.query)?;
            let k = matmul_only(g, "self.key", x, &layer.key)?;
            let v = matmul_only(g, "self.value", x, &layer.value)?;
            let [nq, nk, nv] = PROMPT_PROJECTIONS.map(|n| format!("self.{n}"));
            let q = prepend_rows(g, &nq, &pq.narrow(0, p_from, l - p_from)?, &q, batch)?;
            let k = prepend_rows(g, &nk, pk, &k, batch)?;
            let v = prepend_rows(g, &nv, pv, &v, batch)?;
            let mask = mask.map(|m| mask_for_queries(g, m, query_from));
            let context = attention_context(g, layer, [&q, &k, &v], mask.as_deref(), heads)?;
            let context = match packed {
                Some(all) => pack(g, &context, all),
                None => context,
            };
            attention_output(g, layer, &context, &residual)
        })?;
        feed_forward(g, layer, enc.activation(), &h)
    })
}

/// Which positions of a `[batch, L]` layout hold tokens (the packed form: see
/// [`encoder_packed`]). The packed rows are kept as `[1, N, d]`, a batch of one, so that ONNX
/// Runtime fuses the products and activations as it does in the padded form (a `[N, d]` matrix
/// turns the feed-forward's `MatMul` + bias into a `Gemm` and loses the `BiasGelu`).
struct TokenRows {
    /// `int64 [1, N, 2]`: the `(batch, position)` pairs that hold tokens, in order (`NonZero`
    /// of the mask, transposed), for `GatherND` to make `[1, N, d]` ([`pack`]).
    index: String,
    /// `int64 [batch, L, 2]`: `(0, r)` with `r` each position's row among the `N` (a padding
    /// position gets row 0: attention masks it out as a key and the packing drops it as a
    /// query), for `GatherND` back to `[batch, L, d]` ([`unpack`]).
    map: String,
}

/// [`TokenRows`] of `mask` (`int64 [batch, L]`, 1 = token): `index = NonZero(mask)ᵀ`, row
/// `r = (CumSum(mask) − 1) · mask` over the flattened mask.
fn token_rows(g: &mut GraphBuilder, mask: &str) -> TokenRows {
    // 0/1 whatever the caller sent, so that `NonZero` and the running count agree (a mask
    // is 0/1; a value above 1 counts as 1, one below 0 as padding): `Clip(mask, 0, 1)`.
    let zero = g.scalar_i64(0);
    let one = g.scalar_i64(1);
    let mask = g.op("Clip", &[mask, &zero, &one], vec![]);
    let nonzero = g.op("NonZero", &[&mask], vec![]); // [2, N]
    let pairs = g.transpose(&nonzero, &[1, 0]);
    let index = g.unsqueeze(&pairs, &[0]);
    let flat = g.reshape(&mask, &[-1]);
    let count = g.op("CumSum", &[&flat, &zero], vec![]); // along axis 0
    let before = g.sub(&count, &one);
    let row = g.mul(&before, &flat);
    let shape = g.shape(&mask);
    let row = g.reshape_dynamic(&row, &shape);
    let batch = g.mul(&mask, &zero);
    // Stacked on a new last axis of (statically) 2, so that shape inference types what
    // `GatherND` makes of it (ONNX Runtime fuses only what it can type).
    let row = g.unsqueeze(&row, &[-1]);
    let batch = g.unsqueeze(&batch, &[-1]);
    let map = g.concat(&[&batch, &row], -1); // [batch, L, 2]
    TokenRows { index, map }
}

/// `x [batch, L, d]` → `[1, N, d]`: the rows that hold tokens (`GatherND`).
fn pack(g: &mut GraphBuilder, x: &str, rows: &TokenRows) -> String {
    g.op("GatherND", &[x, &rows.index], vec![])
}

/// `x [1, N, d]` → `[batch, L, d]` (padding positions hold a copy of row 0).
fn unpack(g: &mut GraphBuilder, x: &str, rows: &TokenRows) -> String {
    g.op("GatherND", &[x, &rows.map], vec![])
}

/// The packed form of [`encoder_from_embeds`] (`EmitOptions::pack_rows`, multi-head attention,
/// two layers or more): between attentions the hidden states travel as `[1, N, d]`, the `N`
/// rows of the `[batch, l + s]` positions that hold tokens (the prompt's and the input's, never
/// padding), so the products, the feed-forward and the LayerNorms run on those rows alone. The
/// attention itself needs the `[batch, l + s, d]` layout: each middle layer takes its
/// query/key/value projections there by a `GatherND` each ([`unpack`]) and its attention
/// context back by another ([`pack`]); the indices come once from the attention mask
/// ([`token_rows`]). The first layer projects the padded embedding output it already has (the
/// lean form's input rows, beside the constant prompt rows) and packs from its attention on;
/// the last layer unpacks its input once and runs padded, on the query rows from `keep_from` on
/// (as [`layer`]), returning `[batch, s, d]`.
///
/// With sentences of unequal lengths, the padded form spends a share of its work on padding
/// rows: a fifth of the rows of batches of 32 SST-2 sentences in input order with a 60-row
/// prompt. At batch 1 there is no padding, and every gather is a copy the padded form does not
/// make, and batches sorted by length (the runtime's buckets) carry little. This layout (the
/// first layer's projections and the whole last layer padded) is the measured trade (MiniLM,
/// l = 60, 2 threads, the two bundles interleaved, SST-2 dev in input order): 1.20–1.22× the
/// padded graph at batch 32 and 0.98–1.00× at batch 1 (0.94–0.97× among the fourteen bundles
/// of `adept bench --serving`), where packing the first and last layers too ran 1.21–1.25× and
/// 0.96–0.99×, and packing only the output projections and feed-forwards (two gathers a layer)
/// 1.15–1.17× and 0.98–0.99×. Every token row goes through exactly the functions of the padded
/// form, so the logits are the same up to f32 rounding.
fn encoder_packed(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    x: &EncoderInputs,
    rows: Option<&PromptRows>,
    hidden: &str,
) -> Result<String> {
    let n = enc.layers.len();
    ensure!(n >= 2, "the packed encoder needs two layers or more");
    let (mask, all) = g.scope("encoder", |g| {
        (
            attention_mask(g, &x.attention_mask),
            token_rows(g, &x.attention_mask),
        )
    });
    // The first layer (never the last here): queries from every row.
    let mut hp = match rows {
        Some(rows) => {
            let batch = g.dim(&x.embeds, 0);
            first_layer_lean(g, enc, rows, hidden, Some(&mask), &batch, 0, Some(&all))?
        }
        None => {
            let hp = g.scope("encoder", |g| pack(g, hidden, &all));
            layer_packed(g, enc, 0, &hp, Some(hidden), &all, &mask)?
        }
    };
    let last = n - 1;
    for i in 1..last {
        hp = layer_packed(g, enc, i, &hp, None, &all, &mask)?;
    }
    let padded = g.scope("encoder", |g| unpack(g, &hp, &all));
    layer(
        g,
        enc,
        last,
        &padded,
        Some(&mask),
        AttentionKind::MultiHead,
        x.keep_from,
    )
}

/// One encoder layer in the packed form: `xp [1, N, d]` its input packed by `all` (the rows
/// of the output projection, the feed-forward and the residual); returns the output packed.
/// The query/key/value projections run on `padded` (`[batch, L, d]`, the same rows padded, when
/// the caller has them) or on `xp` and are then unpacked for the attention.
fn layer_packed(
    g: &mut GraphBuilder,
    enc: &BertEncoder,
    i: usize,
    xp: &str,
    padded: Option<&str>,
    all: &TokenRows,
    mask: &str,
) -> Result<String> {
    let layer = &enc.layers[i];
    let heads = enc.config.num_attention_heads;
    g.scope(&format!("encoder.layer.{i}"), |g| {
        let h = g.scope("attention", |g| -> Result<String> {
            let x = padded.unwrap_or(xp);
            let q = matmul_only(g, "self.query", x, &layer.query)?;
            let k = matmul_only(g, "self.key", x, &layer.key)?;
            let v = matmul_only(g, "self.value", x, &layer.value)?;
            let [q, k, v] = match padded {
                Some(_) => [q, k, v],
                None => [q, k, v].map(|t| unpack(g, &t, all)),
            };
            let context = attention_context(g, layer, [&q, &k, &v], Some(mask), heads)?;
            let context = pack(g, &context, all);
            attention_output(g, layer, &context, xp)
        })?;
        feed_forward(g, layer, enc.activation(), &h)
    })
}
