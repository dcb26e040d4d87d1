//! [`GraphBuilder`]: builds a `GraphProto` one neural-net module at a time.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, ensure, Result};

use crate::proto::{
    AttributeProto, DataType, Dim, GraphProto, NodeProto, TensorProto, TypeProto, ValueInfoProto,
};

/// The `com.microsoft` domain of ONNX Runtime's contrib operators.
pub const MS_DOMAIN: &str = "com.microsoft";

/// First default-domain opset with ONNX's own `Attention` operator
/// ([`GraphBuilder::onnx_attention`]).
pub const ONNX_ATTENTION_OPSET: i64 = 23;

/// Lowest default-domain opset the helpers target (`LayerNormalization` needs 17).
pub const MIN_OPSET: i64 = 17;

/// Builds an ONNX graph: inputs, initializers (weights), nodes and outputs.
///
/// Values are referred to by name (`&str`); every helper returns the name of the value it
/// produced. See the [crate docs](crate) for the naming conventions.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    /// The graph under construction (nodes, initializers, inputs, outputs, ...).
    proto: GraphProto,
    opset: i64,
    scopes: Vec<String>,
    /// Every value name in use: graph inputs, initializers and node outputs.
    values: HashSet<String>,
    node_names: HashSet<String>,
    /// Next numeric suffix to try for a base name.
    suffixes: HashMap<String, usize>,
    /// Deduplicated small constants: (type, dims, raw bytes) -> initializer name.
    constants: HashMap<(DataType, Vec<i64>, Vec<u8>), String>,
    domains: HashSet<String>,
    /// Storage type of module weights ([`weight`](GraphBuilder::weight)): `Float` or `Float16`.
    weight_dtype: DataType,
    /// Dynamic int8 quantization of [`linear`](GraphBuilder::linear)'s products, when set.
    quantization: Option<MatMulQuantization>,
    /// The run-time quantization of each quantized float value and form (per row or not;
    /// [`QuantizedInput`]), so products reading the same value the same way (a layer's query,
    /// key and value) quantize it once.
    quantized_inputs: HashMap<(String, bool), QuantizedInput>,
    /// Values known to be bounded below (GELU ≥ −0.17, ReLU ≥ 0): per row they are quantized
    /// as `x − floor` on the full unsigned range (see [`dynamic_quantize`](Self::dynamic_quantize)).
    lower_bounds: HashMap<String, f32>,
    /// The `floor` a quantized input was shifted by; the product adds `floor · Σ_k W[o, k]`
    /// back into its bias.
    quantized_shift: HashMap<String, f32>,
    /// int8 storage of [`embedding`](GraphBuilder::embedding) tables, when set.
    embedding_quantization: Option<EmbeddingQuantization>,
    /// Set while [`if_else`](Self::if_else) emits its second branch: an initializer that
    /// the first branch already added (same name, same contents) is shared, not refused.
    share_initializers: bool,
    /// Set while [`if_else`](Self::if_else) emits either branch (no nesting).
    in_branch: bool,
}

/// A floor just below exact GELU's minimum (`x·Φ(x)` ≥ −0.16997 at x ≈ −0.75; tanh-GELU's is
/// the same to four digits), so `GELU(x) − GELU_FLOOR` is never negative.
pub const GELU_FLOOR: f32 = -0.1701;

/// How [`GraphBuilder::linear`]'s dynamically quantized products quantize their float input
/// at run time (the weights are always per-output-channel int8, see [`quantize_per_channel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationQuantization {
    /// One symmetric scale per row (per token): `s[r] = max_k |x[r, k]| / 127`,
    /// `q = x / s + 128` as `uint8` with zero point 128 (`ReduceMax(Abs)` + per-axis
    /// `QuantizeLinear`). A row's result depends on that row only, never on the other
    /// sentences of its batch, and a row of small values keeps its resolution. A value the
    /// graph knows is bounded below ([`GraphBuilder::set_lower_bound`]: GELU, ReLU) is
    /// quantized as `x − floor` on 0..255 (zero point 0), the floor folded into the bias.
    #[default]
    PerRow,
    /// `DynamicQuantizeLinear`: one asymmetric uint8 scale and zero point for the whole
    /// tensor (every token of every sentence in the batch), as ONNX Runtime's
    /// `quantize_dynamic` writes it.
    PerTensor,
    /// Blocks of `K`: one `com.microsoft:MatMulNBits` node per product (8 bits, accuracy
    /// level 4), see [`quantize_blocks`]. The weights get one scale per output channel and
    /// block of `block` inputs; ONNX Runtime quantizes the float input to int8 per row and
    /// block of the same length at run time and multiplies with its int8 kernels. Finer than
    /// per row on both sides (a block's outlier no longer coarsens the whole row), so the
    /// logits stay closer to f32, at some speed (see `adept_export::emit::int8_quantization`).
    /// `block` is a power of two, at least 16.
    Blocks(usize),
}

/// A value quantized to `uint8` at run time by [`GraphBuilder::dynamic_quantize`]: the value
/// is `(q − zero_point) · scale / levels` within half a step. Per row `scale` is each row's
/// largest magnitude `[..., 1]` and `levels` 127 (255 one-sided); per tensor `scale` is
/// `DynamicQuantizeLinear`'s step and `levels` 1. The products divide their weight scales by
/// `levels`, so no node computes the step.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedInput {
    /// The `uint8` codes, of the value's shape.
    pub q: String,
    /// The scale, times `levels` (see above).
    pub scale: String,
    /// The scalar `uint8` zero point.
    pub zero_point: String,
    /// What the products divide their weight scales by.
    pub levels: f32,
}

/// `bias + correction` (either may be absent; `None` when both are).
pub fn with_correction(bias: Option<&[f32]>, correction: Option<&[f32]>) -> Option<Vec<f32>> {
    match (bias, correction) {
        (Some(b), Some(c)) => Some(b.iter().zip(c).map(|(b, c)| b + c).collect()),
        (b, c) => b.or(c).map(<[f32]>::to_vec),
    }
}

/// Symmetric 8-bit block quantization of a row-major `[out, in]` weight for
/// `com.microsoft:MatMulNBits` (bits 8, no zero-point input, so the zero point is 128):
/// `k_blocks = ceil(in / block)`, `scale[o, b] = max |w[o, b·block ..]| / 127` (1 for an
/// all-zero block), `code[o, b, i] = round(w / scale) + 128` as `uint8` (128 in the padding
/// past `in`). Returns `(codes [out, k_blocks, block], scales [out, k_blocks])`;
/// `w ≈ (code − 128) · scale` within `scale / 2` per entry.
pub fn quantize_blocks(
    weight: &[f32],
    [out, inp]: [usize; 2],
    block: usize,
) -> (Vec<u8>, Vec<f32>) {
    assert!(block >= 16 && block.is_power_of_two(), "block {block}");
    // The same per-(row, block) rounding as a blocked table, laid out as MatMulNBits reads it:
    // each block padded to `block` codes, offset by the implicit zero point 128.
    let (q, scales) = quantize_row_blocks(weight, [out, inp], block);
    let k_blocks = inp.div_ceil(block);
    let mut codes = vec![128u8; out * k_blocks * block];
    for o in 0..out {
        for b in 0..k_blocks {
            let (lo, hi) = (b * block, ((b + 1) * block).min(inp));
            let dst = &mut codes[(o * k_blocks + b) * block..];
            for (d, &v) in dst.iter_mut().zip(&q[o * inp + lo..o * inp + hi]) {
                *d = (i16::from(v) + 128) as u8;
            }
        }
    }
    (codes, scales)
}

/// Which module products [`GraphBuilder::linear`] emits dynamically quantized (see
/// [`GraphBuilder::set_matmul_quantization`]), and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatMulQuantization {
    /// A weight with fewer input or output features than this stays float (a classifier head
    /// `[d, 2]` costs nothing and would only lose accuracy).
    pub min_features: usize,
    /// A weight whose full name contains one of these as whole dot-separated parts stays
    /// float (e.g. `"intermediate.dense"`, `"layer.0.output.dense"`: the latter does not match
    /// `layer.10.output.dense` nor `layer.0.attention.output.dense`).
    pub keep_float: Vec<String>,
    /// How the products' float inputs are quantized at run time.
    pub activations: ActivationQuantization,
    /// With [`PerTensor`](ActivationQuantization::PerTensor) activations, the products whose
    /// full name contains one of these as whole dot-separated parts quantize their input per
    /// row instead (as [`PerRow`](ActivationQuantization::PerRow) does, bias handling
    /// included); ignored otherwise.
    pub per_row: Vec<String>,
}

impl Default for MatMulQuantization {
    fn default() -> Self {
        Self {
            min_features: 64,
            keep_float: Vec::new(),
            activations: ActivationQuantization::default(),
            per_row: Vec::new(),
        }
    }
}

impl MatMulQuantization {
    /// Whether a linear layer `prefix` (full name) with `[out, in]` features is quantized.
    pub fn applies(&self, prefix: &str, out_features: usize, in_features: usize) -> bool {
        out_features >= self.min_features
            && in_features >= self.min_features
            && !self.keep_float.iter().any(|k| names_part(prefix, k))
    }

    /// Whether the product `prefix` (full name) quantizes its input one scale per row.
    pub fn row_scaled(&self, prefix: &str) -> bool {
        match self.activations {
            ActivationQuantization::PerRow => true,
            ActivationQuantization::PerTensor => self.per_row.iter().any(|k| names_part(prefix, k)),
            ActivationQuantization::Blocks(_) => false,
        }
    }
}

/// Whether `part` is a run of whole dot-separated parts of `name` (`layer.1` is a part of
/// `encoder.layer.1.output`, not of `encoder.layer.11.output`).
pub fn names_part(name: &str, part: &str) -> bool {
    format!(".{name}.").contains(&format!(".{part}."))
}

/// Per-output-channel symmetric int8 quantization of a row-major `[out, in]` weight (a PyTorch
/// `Linear.weight`): `scale[o] = max_i |w[o, i]| / 127` (1 for an all-zero row) and
/// `q[i, o] = round(w[o, i] / scale[o])` in `[-127, 127]`, returned transposed `[in, out]`,
/// ready to be `MatMulInteger`'s right operand. `w ≈ q · scale` within `scale / 2` per entry.
pub fn quantize_per_channel(weight: &[f32], dims: [usize; 2]) -> (Vec<i8>, Vec<f32>) {
    quantize_per_channel_to(weight, dims, 127)
}

/// Largest `|q[2j, o]| + |q[2j + 1, o]|` before rounding of the per-row form's weights (see
/// [`quantize_per_channel_pairs`]): after rounding a pair sums to at most 128, and
/// `255 · 128 = 32640` fits the int16 that `vpmaddubsw` adds a pair of `u8 · s8` products in.
pub const PAIR_SUM_LEVELS: i8 = 127;

/// Per-output-channel int8 quantization of a row-major `[out, in]` weight whose products can
/// never overflow ONNX Runtime's u8 × s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512F):
/// `scale[o] = max_j (|w[o, 2j]| + |w[o, 2j + 1]|) / 127` ([`PAIR_SUM_LEVELS`]; an odd last
/// input pairs with nothing; 1 for an all-zero row) and `q[i, o] = round(w[o, i] / scale[o])`,
/// returned transposed `[in, out]` like [`quantize_per_channel`].
///
/// Those kernels multiply with `vpmaddubsw`, which adds the `u8 · s8` products of inputs 2j and
/// 2j + 1 in a saturating int16: with full-range weights `2 · 255 · 127` overflows it, and a
/// per-row input puts every row's largest value at 255 (0 or 255 around the zero point 128
/// when symmetric), so some sums clip. Bounding each adjacent pair's sum instead of each
/// weight (`255 · 128` fits) makes the integers exact on every CPU at a finer step than ONNX
/// Runtime's `reduce_range` remedy (7 bits, `[-63, 63]`, this form's weights until
/// 2026-12-04): a channel's largest weight rarely sits beside another large one, so on MiniLM
/// the step is `max |w| / 91` per channel at the median (`/ 63` at the worst), against
/// `max |w| / 63`. Measured on an AVX2 CPU (the quickstart's l = 60 SST-2 adapter, 872 dev
/// sentences, mean |int8 − f32| logit-margin error): 0.039 → 0.033, labels equal to f32 98.97
/// → 99.31 % (every product int8: 0.078 → 0.042); the int8 CI test's adapter: mean logit error
/// 0.027 unchanged, max 0.121 → 0.100, labels 98.17 → 98.51 % (every product int8: 0.038 →
/// 0.028). Full-range 8-bit weights clipped there: 0.047 (the per-row form before 7 bits).
///
/// The per-tensor form keeps plain 8-bit weights ([`quantize_per_channel`]), its per-row
/// products included ([`MatMulQuantization::per_row`]): a per-tensor input leaves most codes
/// away from the ends, so clipping is rarer, and the pair bound measured mixed there (margin
/// error 0.052 → 0.047 for the default mix, but labels equal to f32 99.08 → 98.62 %); 7 bits
/// raised its error from 0.052 to 0.064.
pub fn quantize_per_channel_pairs(weight: &[f32], dims: [usize; 2]) -> (Vec<i8>, Vec<f32>) {
    quantize_channels(weight, dims, PAIR_SUM_LEVELS, |row| {
        row.chunks(2)
            .map(|p| p.iter().map(|v| v.abs()).sum::<f32>())
            .fold(0.0f32, f32::max)
    })
}

/// [`quantize_per_channel`] on `[-levels, levels]`: `scale[o] = max_i |w[o, i]| / levels`.
pub fn quantize_per_channel_to(
    weight: &[f32],
    dims: [usize; 2],
    levels: i8,
) -> (Vec<i8>, Vec<f32>) {
    quantize_channels(weight, dims, levels, |row| {
        row.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    })
}

/// Per-output-channel int8 codes of a row-major `[out, in]` weight, transposed `[in, out]`:
/// `scale[o] = range(w[o, ..]) / levels` (1 where the range is 0) and `q[i, o] =
/// round(w[o, i] / scale[o])` clamped to `[-levels, levels]`.
fn quantize_channels(
    weight: &[f32],
    [out, inp]: [usize; 2],
    levels: i8,
    range: impl Fn(&[f32]) -> f32,
) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(weight.len(), out * inp, "weight is not [{out}, {inp}]");
    let lv = f32::from(levels);
    let mut scales = vec![1.0f32; out];
    let mut q = vec![0i8; out * inp];
    for o in 0..out {
        let row = &weight[o * inp..(o + 1) * inp];
        let max = range(row);
        if max > 0.0 {
            scales[o] = max / lv;
        }
        for (i, v) in row.iter().enumerate() {
            q[i * out + o] = (v / scales[o]).round().clamp(-lv, lv) as i8;
        }
    }
    (q, scales)
}

/// Options of a `com.microsoft:MultiHeadAttention` node; see
/// [`GraphBuilder::attention`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiHeadAttention<'a> {
    /// `[batch, sequence, hidden]`.
    pub query: &'a str,
    /// `[batch, kv_sequence, hidden]`.
    pub key: &'a str,
    /// `[batch, kv_sequence, v_hidden]`.
    pub value: &'a str,
    /// Number of heads; `hidden` must be divisible by it.
    pub num_heads: usize,
    /// `[3 * hidden]`: the query, key and value projection biases concatenated, added to
    /// `query`, `key`, `value` inside the kernel (so the projections can be bare `MatMul`s).
    pub bias: Option<&'a str>,
    /// `int32 [batch, kv_sequence]`, 1 = attend, 0 = padding (or `int32 [batch]` with the
    /// valid length of right-padded keys).
    pub key_padding_mask: Option<&'a str>,
    /// Float bias added to the scaled scores, `[batch or 1, heads or 1, sequence,
    /// kv_sequence]` (e.g. T5's relative position bias).
    pub attention_bias: Option<&'a str>,
    /// Score scale; ONNX Runtime's default is `1/sqrt(head_size)` (T5 uses 1.0).
    pub scale: Option<f32>,
    /// Causal masking (each query attends to keys at positions `<=` its own).
    pub unidirectional: bool,
}

impl<'a> MultiHeadAttention<'a> {
    /// Attention of `query` over `key`/`value` with no mask and the default scale.
    pub fn new(query: &'a str, key: &'a str, value: &'a str, num_heads: usize) -> Self {
        Self {
            query,
            key,
            value,
            num_heads,
            bias: None,
            key_padding_mask: None,
            attention_bias: None,
            scale: None,
            unidirectional: false,
        }
    }

    /// Sets the packed `[3 * hidden]` query/key/value bias.
    pub fn bias(mut self, bias: &'a str) -> Self {
        self.bias = Some(bias);
        self
    }

    /// Sets the `int32` key padding mask.
    pub fn key_padding_mask(mut self, mask: &'a str) -> Self {
        self.key_padding_mask = Some(mask);
        self
    }

    /// Sets the additive attention bias.
    pub fn attention_bias(mut self, bias: &'a str) -> Self {
        self.attention_bias = Some(bias);
        self
    }

    /// Sets the score scale.
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }

    /// Enables causal masking.
    pub fn causal(mut self) -> Self {
        self.unidirectional = true;
        self
    }
}

/// Which [`GraphBuilder::embedding`] tables are stored as int8 (see
/// [`GraphBuilder::set_embedding_quantization`]): a `[rows, dim]` table with at least
/// `min_rows` rows becomes `int8 [rows, dim]` plus `float [rows, blocks]` scales, one per row
/// ([`quantize_per_row`]) or per row and block of `block` columns ([`quantize_row_blocks`]);
/// smaller tables stay float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingQuantization {
    /// Tables with fewer rows keep their float storage: a token-type table (1–2 rows) saves
    /// nothing worth its rounding; a vocabulary (30522 rows for MiniLM) is most of an int8 file.
    pub min_rows: usize,
    /// One scale per this many columns of a row instead of one per row (`--int8-blocks`, so
    /// the table's rounding matches the products'); `None`: per row.
    pub block: Option<usize>,
}

impl Default for EmbeddingQuantization {
    /// Vocabulary tables (at least 32 rows; the test models' 48-row table too), not token
    /// types; one scale per row.
    fn default() -> Self {
        Self {
            min_rows: 32,
            block: None,
        }
    }
}

/// Per-row symmetric int8 quantization of a row-major `[rows, dim]` table (an embedding
/// table): `scale[r] = max_c |t[r, c]| / 127` (1 for an all-zero row) and
/// `q[r, c] = round(t[r, c] / scale[r])` in `[-127, 127]`, row-major `[rows, dim]` like the
/// table. `t ≈ q · scale` within `scale[r] / 2` per entry.
pub fn quantize_per_row(table: &[f32], [rows, dim]: [usize; 2]) -> (Vec<i8>, Vec<f32>) {
    quantize_row_blocks(table, [rows, dim], dim.max(1))
}

/// [`quantize_per_row`] with one scale per row and block of `block` columns (the last block
/// of a row may be shorter): `scale [rows, ceil(dim / block)]` row-major, `q [rows, dim]`;
/// `t[r, c] ≈ q[r, c] · scale[r, c / block]` within half that step.
pub fn quantize_row_blocks(
    table: &[f32],
    [rows, dim]: [usize; 2],
    block: usize,
) -> (Vec<i8>, Vec<f32>) {
    assert_eq!(table.len(), rows * dim, "table is not [{rows}, {dim}]");
    assert!(block > 0, "block of 0 columns");
    let blocks = dim.div_ceil(block);
    let mut scales = vec![1.0f32; rows * blocks];
    let mut q = vec![0i8; rows * dim];
    for r in 0..rows {
        for b in 0..blocks {
            let (lo, hi) = (r * dim + b * block, r * dim + ((b + 1) * block).min(dim));
            let max = table[lo..hi].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = &mut scales[r * blocks + b];
            if max > 0.0 {
                *s = max / 127.0;
            }
            for (o, v) in q[lo..hi].iter_mut().zip(&table[lo..hi]) {
                *o = (v / *s).round().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    (q, scales)
}

fn checked_dims(shape: &[usize], len: usize, name: &str) -> Result<Vec<i64>> {
    let n: usize = shape.iter().product();
    ensure!(
        n == len,
        "initializer {name:?}: shape {shape:?} holds {n} elements but {len} were given"
    );
    Ok(shape.iter().map(|&d| d as i64).collect())
}

fn join_list<T: ToString>(values: &[T]) -> String {
    values
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("_")
}

impl GraphBuilder {
    /// An empty graph called `name` that targets default-domain opset `opset`.
    ///
    /// The opset decides how some helpers encode their operators (`ReduceMean` takes its
    /// axes as an attribute before opset 18 and as an input from 18 on).
    pub fn new(name: impl Into<String>, opset: i64) -> Self {
        Self {
            proto: GraphProto {
                name: Some(name.into()),
                ..Default::default()
            },
            opset,
            scopes: Vec::new(),
            values: HashSet::new(),
            node_names: HashSet::new(),
            suffixes: HashMap::new(),
            constants: HashMap::new(),
            domains: HashSet::new(),
            weight_dtype: DataType::Float,
            quantization: None,
            quantized_inputs: HashMap::new(),
            lower_bounds: HashMap::new(),
            quantized_shift: HashMap::new(),
            embedding_quantization: None,
            share_initializers: false,
            in_branch: false,
        }
    }

    /// Sets how module weights are stored: `DataType::Float` (default) or `DataType::Float16`.
    ///
    /// With `Float16`, [`weight`](Self::weight) (and so [`linear`](Self::linear),
    /// [`layer_norm`](Self::layer_norm), [`embedding`](Self::embedding)) stores each parameter as
    /// an `f16` initializer followed by `Cast(to = float)`: the file holds half the bytes, the
    /// computation stays `f32`. ONNX Runtime constant-folds the casts when it creates the session,
    /// so there is no cost per run.
    pub fn set_weight_dtype(&mut self, dtype: DataType) -> Result<()> {
        ensure!(
            matches!(dtype, DataType::Float | DataType::Float16),
            "weights are stored as float or float16, not {dtype:?}"
        );
        self.weight_dtype = dtype;
        Ok(())
    }

    /// The storage type of module weights (see [`set_weight_dtype`](Self::set_weight_dtype)).
    pub fn weight_dtype(&self) -> DataType {
        self.weight_dtype
    }

    /// Emits [`linear`](Self::linear) layers that `quantization` selects as dynamically
    /// quantized products ([`quantized_linear`](Self::quantized_linear)); `None` (the default)
    /// keeps them float. Other weights (embeddings, LayerNorm, biases) are not affected.
    pub fn set_matmul_quantization(&mut self, quantization: Option<MatMulQuantization>) {
        self.quantization = quantization;
    }

    /// The quantization [`linear`](Self::linear) applies, if any.
    pub fn matmul_quantization(&self) -> Option<&MatMulQuantization> {
        self.quantization.as_ref()
    }

    /// Stores [`embedding`](Self::embedding) tables of at least
    /// [`min_rows`](EmbeddingQuantization::min_rows) rows as int8 with one scale per row, or per
    /// row and [`block`](EmbeddingQuantization::block) of columns (see
    /// [`quantized_embedding`](Self::quantized_embedding)); `None` (the default) keeps them
    /// float (or f16, see [`set_weight_dtype`](Self::set_weight_dtype)).
    pub fn set_embedding_quantization(&mut self, quantization: Option<EmbeddingQuantization>) {
        self.embedding_quantization = quantization;
    }

    /// The int8 storage [`embedding`](Self::embedding) applies, if any.
    pub fn embedding_quantization(&self) -> Option<EmbeddingQuantization> {
        self.embedding_quantization
    }

    /// The default-domain opset this graph targets.
    pub fn opset(&self) -> i64 {
        self.opset
    }

    /// Sets the graph's doc string.
    pub fn set_doc_string(&mut self, doc: impl Into<String>) {
        self.proto.doc_string = Some(doc.into());
    }

    /// Operator domains used by the nodes so far (`""` is the default domain).
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().map(String::as_str)
    }

    /// The nodes added so far, in order.
    pub fn nodes(&self) -> &[NodeProto] {
        &self.proto.node
    }

    /// The nodes added so far and those of their sub-graphs (the branches of
    /// [`if_else`](Self::if_else)), in order ([`crate::all_nodes`]).
    pub fn all_nodes(&self) -> Vec<&NodeProto> {
        crate::proto::all_nodes(&self.proto)
    }

    #[cfg(test)]
    pub(crate) fn nodes_mut_for_tests(&mut self) -> &mut Vec<NodeProto> {
        &mut self.proto.node
    }

    /// The names of the initializers so far.
    pub fn initializer_names(&self) -> impl Iterator<Item = &str> {
        self.proto
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
    }

    // ----------------------------------------------------------------------------------
    // Names and scopes
    // ----------------------------------------------------------------------------------

    /// Enters a naming scope: initializer and node names created until the matching
    /// [`pop_scope`](Self::pop_scope) are prefixed with it (`"encoder"`, then `"layer.0"`
    /// gives `"encoder.layer.0.…"`).
    pub fn push_scope(&mut self, scope: impl Into<String>) {
        self.scopes.push(scope.into());
    }

    /// Leaves the innermost naming scope.
    pub fn pop_scope(&mut self) {
        self.scopes
            .pop()
            .expect("pop_scope called without a matching push_scope");
    }

    /// Runs `f` inside the naming scope `scope` (see [`push_scope`](Self::push_scope)).
    pub fn scope<R>(&mut self, scope: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.push_scope(scope);
        let result = f(self);
        self.pop_scope();
        result
    }

    /// The current scope path, e.g. `"encoder.layer.0.attention"` (empty at the root).
    pub fn current_scope(&self) -> String {
        self.scopes.join(".")
    }

    /// `name` qualified with the current scope: `"encoder.layer.0"` + `"output.dense"` →
    /// `"encoder.layer.0.output.dense"`.
    pub fn qualify(&self, name: &str) -> String {
        if self.scopes.is_empty() {
            name.to_owned()
        } else if name.is_empty() {
            self.current_scope()
        } else {
            format!("{}.{name}", self.current_scope())
        }
    }

    fn fresh(used: &HashSet<String>, suffixes: &mut HashMap<String, usize>, base: &str) -> String {
        if !used.contains(base) {
            return base.to_owned();
        }
        let next = suffixes.entry(base.to_owned()).or_insert(1);
        loop {
            let candidate = format!("{base}_{next}");
            *next += 1;
            if !used.contains(&candidate) {
                return candidate;
            }
        }
    }

    /// Reserves and returns a value name not used yet, `base` or `base_N`.
    pub fn unique_value_name(&mut self, base: &str) -> String {
        let name = Self::fresh(&self.values, &mut self.suffixes, base);
        self.values.insert(name.clone());
        name
    }

    fn unique_node_name(&mut self, op_type: &str) -> String {
        let scope = self.current_scope();
        let base = if scope.is_empty() {
            op_type.to_owned()
        } else {
            format!("{scope}/{op_type}")
        };
        let name = Self::fresh(&self.node_names, &mut self.suffixes, &base);
        self.node_names.insert(name.clone());
        name
    }

    /// Whether `name` is already a value of the graph (input, initializer or node output).
    pub fn has_value(&self, name: &str) -> bool {
        self.values.contains(name)
    }

    // ----------------------------------------------------------------------------------
    // Inputs, outputs, value info
    // ----------------------------------------------------------------------------------

    /// Declares a graph input. `name` is used verbatim (not scoped).
    ///
    /// ```
    /// # use adept_onnx::{GraphBuilder, DataType};
    /// let mut g = GraphBuilder::new("g", 17);
    /// let x = g.input("inputs_embeds", DataType::Float, &["batch".into(), "sequence".into(), 8.into()])?;
    /// # anyhow::Ok(())
    /// ```
    pub fn input(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) -> Result<String> {
        ensure!(!name.is_empty(), "graph inputs need a name");
        ensure!(
            self.values.insert(name.to_owned()),
            "value name {name:?} is already used"
        );
        self.proto.input.push(value_info(name, elem_type, dims));
        Ok(name.to_owned())
    }

    /// Declares the existing value `name` as a graph output.
    pub fn output(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) -> Result<()> {
        ensure!(self.values.contains(name), "output {name:?} is not a value");
        ensure!(
            !self.is_graph_output(name),
            "{name:?} is already a graph output"
        );
        self.proto.output.push(value_info(name, elem_type, dims));
        Ok(())
    }

    fn is_graph_output(&self, name: &str) -> bool {
        self.proto
            .output
            .iter()
            .any(|o| o.name.as_deref() == Some(name))
    }

    /// Declares `value` as a graph output called `name`.
    ///
    /// A value made by a node is renamed in place (in the producing node and in all its
    /// consumers); a graph input, an initializer or a value that already is an output is
    /// routed through an `Identity` node instead. After a rename, refer to the value by
    /// its new name.
    pub fn output_as(
        &mut self,
        value: &str,
        name: &str,
        elem_type: DataType,
        dims: &[Dim],
    ) -> Result<()> {
        if value != name {
            ensure!(
                self.values.contains(value),
                "output {value:?} is not a value"
            );
            ensure!(
                !self.values.contains(name),
                "value name {name:?} is already used"
            );
            let produced_by_node = self
                .proto
                .node
                .iter()
                .any(|n| n.output.iter().any(|o| o == value));
            if produced_by_node && !self.is_graph_output(value) {
                self.rename_value(value, name);
            } else {
                let node_name = self.unique_node_name("Identity");
                self.values.insert(name.to_owned());
                self.push_node(
                    "",
                    "Identity",
                    node_name,
                    &[value],
                    vec![name.to_owned()],
                    vec![],
                );
            }
        }
        self.output(name, elem_type, dims)
    }

    fn rename_value(&mut self, old: &str, new: &str) {
        for node in &mut self.proto.node {
            for v in node.input.iter_mut().chain(node.output.iter_mut()) {
                if v == old {
                    *v = new.to_owned();
                }
            }
        }
        for vi in &mut self.proto.value_info {
            if vi.name.as_deref() == Some(old) {
                vi.name = Some(new.to_owned());
            }
        }
        self.values.remove(old);
        self.values.insert(new.to_owned());
    }

    /// Declares the output of a `com.microsoft` node as a float tensor (shape left open): ONNX's
    /// shape inference knows no contrib op, so without this standard tools (shape inference,
    /// `onnxruntime.quantization`, Netron) see an untyped value.
    fn contrib_output(&mut self, name: String) -> String {
        self.proto
            .value_info
            .push(value_info_untyped_shape(&name, DataType::Float));
        name
    }

    /// Records the type of an intermediate value (optional; ONNX infers most types).
    pub fn value_info(&mut self, name: &str, elem_type: DataType, dims: &[Dim]) {
        self.proto
            .value_info
            .push(value_info(name, elem_type, dims));
    }

    // ----------------------------------------------------------------------------------
    // Initializers and constants
    // ----------------------------------------------------------------------------------

    /// Adds an initializer as is (its name is used verbatim). Returns its name.
    pub fn initializer(&mut self, tensor: TensorProto) -> Result<String> {
        let name = tensor.name.clone().unwrap_or_default();
        ensure!(!name.is_empty(), "initializers need a name");
        if self.share_initializers && self.values.contains(&name) {
            // The second branch of `if_else`: the first one's weight, stored once.
            let same = self
                .proto
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name.as_str()))
                .is_some_and(|t| *t == tensor);
            ensure!(
                same,
                "the two branches of an If store different values under the name {name:?} (a \
                 weight both read must be the same tensor, stored once)"
            );
            return Ok(name);
        }
        ensure!(
            self.values.insert(name.clone()),
            "value name {name:?} is already used"
        );
        self.proto.initializer.push(tensor);
        Ok(name)
    }

    /// An `f32` initializer called `name` (qualified with the current scope), stored as
    /// little-endian `raw_data`. Returns the full name.
    pub fn initializer_f32(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<String> {
        let name = self.qualify(name);
        let dims = checked_dims(shape, data.len(), &name)?;
        self.initializer(TensorProto::from_f32(&name, &dims, data))
    }

    /// An `int8` initializer `[rows, cols]` called `name` (qualified with the current scope)
    /// with a doc string saying how it dequantizes. Returns the full name.
    pub fn initializer_i8(
        &mut self,
        name: &str,
        [rows, cols]: [usize; 2],
        data: &[i8],
        doc: String,
    ) -> Result<String> {
        let name = self.qualify(name);
        let dims = checked_dims(&[rows, cols], data.len(), &name)?;
        let bytes = data.iter().map(|&v| v as u8).collect();
        let mut tensor = TensorProto::from_raw(&name, DataType::Int8, &dims, bytes);
        tensor.doc_string = Some(doc);
        self.initializer(tensor)
    }

    /// An `f16` initializer from `f32` values (rounded to nearest). Returns the full name.
    pub fn initializer_f16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<String> {
        let name = self.qualify(name);
        let dims = checked_dims(shape, data.len(), &name)?;
        self.initializer(TensorProto::from_f32_as_f16(&name, &dims, data))
    }

    /// An `i64` initializer. Returns the full name.
    pub fn initializer_i64(&mut self, name: &str, shape: &[usize], data: &[i64]) -> Result<String> {
        let name = self.qualify(name);
        let dims = checked_dims(shape, data.len(), &name)?;
        self.initializer(TensorProto::from_i64(&name, &dims, data))
    }

    /// An `i32` initializer. Returns the full name.
    pub fn initializer_i32(&mut self, name: &str, shape: &[usize], data: &[i32]) -> Result<String> {
        let name = self.qualify(name);
        let dims = checked_dims(shape, data.len(), &name)?;
        self.initializer(TensorProto::from_i32(&name, &dims, data))
    }

    /// A transposed `f32` initializer: `data` is row-major `[rows, cols]` (e.g. a PyTorch
    /// `Linear.weight [out, in]`) and the initializer holds its transpose `[cols, rows]`,
    /// ready to be the right operand of `MatMul`.
    pub fn initializer_f32_transposed(
        &mut self,
        name: &str,
        [rows, cols]: [usize; 2],
        data: &[f32],
    ) -> Result<String> {
        let name = self.qualify(name);
        checked_dims(&[rows, cols], data.len(), &name)?;
        let mut t = vec![0.0f32; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = data[r * cols + c];
            }
        }
        let mut tensor = TensorProto::from_f32(&name, &[cols as i64, rows as i64], &t);
        tensor.doc_string = Some(format!(
            "transpose of the [{rows}, {cols}] parameter {name}, stored [{cols}, {rows}] for MatMul"
        ));
        self.initializer(tensor)
    }

    /// A module parameter called `name` (scoped), stored in the graph's weight dtype (see
    /// [`set_weight_dtype`](Self::set_weight_dtype)). Returns the name of an `f32` value: the
    /// initializer itself, or the output of its `Cast` when stored as `f16`.
    pub fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<String> {
        match self.weight_dtype {
            DataType::Float16 => {
                let w = self.initializer_f16(name, shape, data)?;
                Ok(self.cast(&w, DataType::Float))
            }
            _ => self.initializer_f32(name, shape, data),
        }
    }

    /// [`weight`](Self::weight) for a row-major `[rows, cols]` parameter stored transposed
    /// (`[cols, rows]`, ready for `MatMul`), like
    /// [`initializer_f32_transposed`](Self::initializer_f32_transposed).
    pub fn weight_transposed(
        &mut self,
        name: &str,
        [rows, cols]: [usize; 2],
        data: &[f32],
    ) -> Result<String> {
        let full = self.qualify(name);
        checked_dims(&[rows, cols], data.len(), &full)?;
        let mut t = vec![0.0f32; data.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = data[r * cols + c];
            }
        }
        let dims = [cols as i64, rows as i64];
        let mut tensor = match self.weight_dtype {
            DataType::Float16 => TensorProto::from_f32_as_f16(&full, &dims, &t),
            _ => TensorProto::from_f32(&full, &dims, &t),
        };
        tensor.doc_string = Some(format!(
            "transpose of the [{rows}, {cols}] parameter {full}, stored [{cols}, {rows}] for MatMul"
        ));
        let w = self.initializer(tensor)?;
        Ok(match self.weight_dtype {
            DataType::Float16 => self.cast(&w, DataType::Float),
            _ => w,
        })
    }

    fn constant(&mut self, tensor: TensorProto, base: String) -> String {
        let data_type = DataType::try_from(tensor.data_type.unwrap_or(0)).unwrap_or_default();
        let key = (
            data_type,
            tensor.dims.clone(),
            tensor.raw_data.clone().unwrap_or_default(),
        );
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let name = self.unique_value_name(&base);
        self.proto.initializer.push(TensorProto {
            name: Some(name.clone()),
            ..tensor
        });
        self.constants.insert(key, name.clone());
        name
    }

    /// A shared scalar `f32` constant (rank 0), e.g. `scalar_f32_0.5`.
    pub fn scalar_f32(&mut self, value: f32) -> String {
        self.constant(
            TensorProto::from_f32("", &[], &[value]),
            format!("scalar_f32_{value}"),
        )
    }

    /// A shared scalar `i64` constant (rank 0).
    pub fn scalar_i64(&mut self, value: i64) -> String {
        self.constant(
            TensorProto::from_i64("", &[], &[value]),
            format!("scalar_i64_{value}"),
        )
    }

    /// A shared 1-D `i64` constant (shapes, axes, indices), e.g. `const_i64_0_1`.
    pub fn const_i64(&mut self, values: &[i64]) -> String {
        let base = if values.len() <= 8 {
            format!("const_i64_{}", join_list(values))
        } else {
            "const_i64".to_owned()
        };
        self.constant(
            TensorProto::from_i64("", &[values.len() as i64], values),
            base,
        )
    }

    /// A shared 1-D `f32` constant.
    pub fn const_f32(&mut self, values: &[f32]) -> String {
        let base = if values.len() <= 8 {
            format!("const_f32_{}", join_list(values))
        } else {
            "const_f32".to_owned()
        };
        self.constant(
            TensorProto::from_f32("", &[values.len() as i64], values),
            base,
        )
    }

    // ----------------------------------------------------------------------------------
    // Generic nodes
    // ----------------------------------------------------------------------------------

    fn push_node(
        &mut self,
        domain: &str,
        op_type: &str,
        name: String,
        inputs: &[&str],
        outputs: Vec<String>,
        attributes: Vec<AttributeProto>,
    ) {
        for input in inputs {
            assert!(
                input.is_empty() || self.values.contains(*input),
                "{op_type} node {name:?}: input {input:?} is not a value of the graph"
            );
        }
        self.domains.insert(domain.to_owned());
        self.proto.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs,
            name: Some(name),
            op_type: Some(op_type.to_owned()),
            domain: (!domain.is_empty()).then(|| domain.to_owned()),
            attribute: attributes,
            doc_string: None,
        });
    }

    /// Adds a node of `domain:op_type` with `num_outputs` outputs and returns their names.
    ///
    /// The node is named `"<scope>/<op_type>"` (made unique with `_N`), its outputs
    /// `"<node name>_output_<i>"`. An input `""` marks an omitted optional input.
    ///
    /// # Panics
    /// If an input is not a value of the graph (nodes must be added in topological order).
    pub fn node(
        &mut self,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        num_outputs: usize,
        attributes: Vec<AttributeProto>,
    ) -> Vec<String> {
        let name = self.unique_node_name(op_type);
        let outputs: Vec<String> = (0..num_outputs)
            .map(|i| self.unique_value_name(&format!("{name}_output_{i}")))
            .collect();
        self.push_node(domain, op_type, name, inputs, outputs.clone(), attributes);
        outputs
    }

    /// A default-domain node with one output; returns the output's name.
    pub fn op(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        let mut outputs = self.node("", op_type, inputs, 1, attributes);
        outputs.pop().expect("one output")
    }

    // ----------------------------------------------------------------------------------
    // Elementwise and tensor-manipulation helpers
    // ----------------------------------------------------------------------------------

    /// `MatMul(a, b)` (numpy-style batched matrix product).
    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }

    /// `Add(a, b)` with broadcasting.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }

    /// `Sub(a, b)` with broadcasting.
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }

    /// `Mul(a, b)` with broadcasting.
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    /// `Div(a, b)` with broadcasting.
    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b], vec![])
    }

    /// `Erf(x)`.
    pub fn erf(&mut self, x: &str) -> String {
        self.op("Erf", &[x], vec![])
    }

    /// `Tanh(x)`.
    pub fn tanh(&mut self, x: &str) -> String {
        self.op("Tanh", &[x], vec![])
    }

    /// `Sigmoid(x)`.
    pub fn sigmoid(&mut self, x: &str) -> String {
        self.op("Sigmoid", &[x], vec![])
    }

    /// `Sqrt(x)`.
    pub fn sqrt(&mut self, x: &str) -> String {
        self.op("Sqrt", &[x], vec![])
    }

    /// `Identity(x)`.
    pub fn identity(&mut self, x: &str) -> String {
        self.op("Identity", &[x], vec![])
    }

    /// `Relu(x)`.
    pub fn relu(&mut self, x: &str) -> String {
        let y = self.op("Relu", &[x], vec![]);
        self.set_lower_bound(&y, 0.0);
        y
    }

    /// Declares that every element of `value` is ≥ `floor` (an activation's range), so that a
    /// per-row int8 product reading it quantizes `value − floor` with all 256 levels instead of
    /// a symmetric range half of which is unused.
    pub fn set_lower_bound(&mut self, value: &str, floor: f32) {
        self.lower_bounds.insert(value.to_owned(), floor);
    }

    /// Exact (erf) GELU in the BERT pattern
    /// `Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5)`, i.e. `x · (1 + erf(x/√2)) · 0.5`.
    ///
    /// This is the subgraph PyTorch exports for HF BERT's `gelu`. ONNX Runtime 1.31
    /// (CPU, level "extended") rewrites it to one `com.microsoft:Gelu` node, and after a
    /// bias `Add` (as in [`linear`](Self::linear) → GELU) to `MatMul` + `BiasGelu`
    /// (checked by the `tiny_encoder_block` test). The two `Mul`s may come in either order,
    /// but the division must be a `Div` by √2: `Mul(x, 1/√2)` is *not* fused.
    pub fn gelu_erf(&mut self, x: &str) -> String {
        let sqrt2 = self.scalar_f32(std::f32::consts::SQRT_2);
        let one = self.scalar_f32(1.0);
        let half = self.scalar_f32(0.5);
        let scaled = self.div(x, &sqrt2);
        let erf = self.erf(&scaled);
        let shifted = self.add(&erf, &one);
        let product = self.mul(x, &shifted);
        let y = self.mul(&product, &half);
        self.set_lower_bound(&y, GELU_FLOOR);
        y
    }

    /// `GELU(x + bias)` (exact, erf) after a product quantized per row, whose bias must not be
    /// an `Add` (ONNX Runtime would fuse it into the product's `MatMulIntegerToFloat`, see
    /// [`quantized_linear`](Self::quantized_linear)): `x − "bias_negated"` (an initializer of
    /// `−bias [d]` in the current scope, over the last axis of `x [..., d]`) and
    /// [`gelu_erf`](Self::gelu_erf), which ONNX Runtime fuses into one `Gelu`. Not the
    /// `com.microsoft:BiasGelu` ORT would make of `Add` + GELU: in MiniLM's int8 bundle that
    /// kernel was 3.5–4.5 % slower at batch 32 (2 threads, interleaved runs; equal outputs). The
    /// output is marked bounded below by [`GELU_FLOOR`], like `gelu_erf`'s.
    pub fn bias_gelu(&mut self, x: &str, bias: &[f32]) -> Result<String> {
        let negated: Vec<f32> = bias.iter().map(|v| -v).collect();
        let b = self.initializer_f32("bias_negated", &[bias.len()], &negated)?;
        let shifted = self.sub(x, &b);
        Ok(self.gelu_erf(&shifted))
    }

    /// `Softmax(x, axis)`.
    pub fn softmax(&mut self, x: &str, axis: i64) -> String {
        self.op("Softmax", &[x], vec![AttributeProto::int("axis", axis)])
    }

    /// `Gather(data, indices, axis)`; with `axis = 0` an embedding lookup.
    pub fn gather(&mut self, data: &str, indices: &str, axis: i64) -> String {
        self.op(
            "Gather",
            &[data, indices],
            vec![AttributeProto::int("axis", axis)],
        )
    }

    /// `Concat(inputs, axis)`.
    pub fn concat(&mut self, inputs: &[&str], axis: i64) -> String {
        self.op("Concat", inputs, vec![AttributeProto::int("axis", axis)])
    }

    /// `Reshape(x, shape)` to a constant shape (`0` copies the input dimension, `-1` is
    /// inferred).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.const_i64(shape);
        self.reshape_dynamic(x, &shape)
    }

    /// `Reshape(x, shape)` with a computed `i64` shape value.
    pub fn reshape_dynamic(&mut self, x: &str, shape: &str) -> String {
        self.op("Reshape", &[x, shape], vec![])
    }

    /// `Transpose(x, perm)`.
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![AttributeProto::ints("perm", perm)])
    }

    /// `Unsqueeze(x, axes)` (axes as an input, opset 13+).
    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let axes = self.const_i64(axes);
        self.op("Unsqueeze", &[x, &axes], vec![])
    }

    /// `Squeeze(x, axes)` (axes as an input, opset 13+).
    pub fn squeeze(&mut self, x: &str, axes: &[i64]) -> String {
        let axes = self.const_i64(axes);
        self.op("Squeeze", &[x, &axes], vec![])
    }

    /// `Cast(x, to)`.
    pub fn cast(&mut self, x: &str, to: DataType) -> String {
        self.op("Cast", &[x], vec![AttributeProto::int("to", to as i64)])
    }

    /// `Shape(x)` (an `i64` vector).
    pub fn shape(&mut self, x: &str) -> String {
        self.op("Shape", &[x], vec![])
    }

    /// Dimension `axis` of `x` as a 1-element `int64` vector (`Shape` then `Slice`).
    pub fn dim(&mut self, x: &str, axis: i64) -> String {
        let shape = self.shape(x);
        self.slice(&shape, &[axis], &[axis + 1], &[0])
    }

    /// `Slice(x, starts, ends, axes)` with constant bounds and step 1.
    pub fn slice(&mut self, x: &str, starts: &[i64], ends: &[i64], axes: &[i64]) -> String {
        let starts = self.const_i64(starts);
        let ends = self.const_i64(ends);
        let axes = self.const_i64(axes);
        self.op("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    /// `Slice(x, starts, ends, axes)` with computed `i64` bounds (1-D values of equal length).
    pub fn slice_dynamic(&mut self, x: &str, starts: &str, ends: &str, axes: &[i64]) -> String {
        let axes = self.const_i64(axes);
        self.op("Slice", &[x, starts, ends, &axes], vec![])
    }

    /// `Range(start, limit, delta)` over scalar values (a 1-D tensor).
    pub fn range(&mut self, start: &str, limit: &str, delta: &str) -> String {
        self.op("Range", &[start, limit, delta], vec![])
    }

    /// `Max(a, b)` with broadcasting.
    pub fn max(&mut self, a: &str, b: &str) -> String {
        self.op("Max", &[a, b], vec![])
    }

    /// `ReduceSum(x, axes, keepdims)` (axes as an input, opset 13+).
    pub fn reduce_sum(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let axes = self.const_i64(axes);
        self.op(
            "ReduceSum",
            &[x, &axes],
            vec![AttributeProto::int("keepdims", i64::from(keepdims))],
        )
    }

    /// `Expand(x, shape)` with a computed (or constant) `i64` shape value.
    pub fn expand(&mut self, x: &str, shape: &str) -> String {
        self.op("Expand", &[x, shape], vec![])
    }

    /// `ReduceMean(x, axes, keepdims)`, as an attribute before opset 18 and as an input
    /// from opset 18 on.
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        let keepdims = AttributeProto::int("keepdims", i64::from(keepdims));
        if self.opset >= 18 {
            let axes = self.const_i64(axes);
            self.op("ReduceMean", &[x, &axes], vec![keepdims])
        } else {
            self.op(
                "ReduceMean",
                &[x],
                vec![AttributeProto::ints("axes", axes), keepdims],
            )
        }
    }

    /// `Where(condition, x, y)`.
    pub fn where_(&mut self, condition: &str, x: &str, y: &str) -> String {
        self.op("Where", &[condition, x, y], vec![])
    }

    /// `Equal(a, b)` (a `bool` tensor).
    pub fn equal(&mut self, a: &str, b: &str) -> String {
        self.op("Equal", &[a, b], vec![])
    }

    // ----------------------------------------------------------------------------------
    // Module-level helpers
    // ----------------------------------------------------------------------------------

    /// `x · W + b` with `weight_in_out` already stored `[in, out]`.
    pub fn linear_from(&mut self, x: &str, weight_in_out: &str, bias: Option<&str>) -> String {
        let y = self.matmul(x, weight_in_out);
        match bias {
            Some(b) => self.add(&y, b),
            None => y,
        }
    }

    /// A PyTorch `nn.Linear` called `prefix` (relative to the current scope).
    ///
    /// `weight` is the row-major `[out_features, in_features]` parameter; it is stored
    /// transposed, `[in, out]`, as the initializer `"<prefix>.weight"`, and `bias` as
    /// `"<prefix>.bias"`. Emits `MatMul` (+ `Add`) named `"<prefix>/MatMul"`, ….
    pub fn linear(
        &mut self,
        prefix: &str,
        x: &str,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
        bias: Option<&[f32]>,
    ) -> Result<String> {
        if self.quantizes(prefix, out_features, in_features) {
            return self.quantized_linear(prefix, x, weight, [out_features, in_features], bias);
        }
        let w = self.linear_weight(prefix, weight, [out_features, in_features])?;
        self.scope(prefix, |g| {
            let b = bias
                .map(|b| g.weight("bias", &[out_features], b))
                .transpose()?;
            Ok(g.linear_from(x, &w, b.as_deref()))
        })
    }

    /// The float weight of [`linear`](Self::linear) `prefix` as it stores it:
    /// `"<prefix>.weight"` transposed to `[in_features, out_features]`, in the weight dtype
    /// (see [`weight_transposed`](Self::weight_transposed)). Returns the name of the `f32`
    /// value, for a node that reads the same weight (sharing it, across the branches of
    /// [`if_else`](Self::if_else) too).
    pub fn linear_weight(
        &mut self,
        prefix: &str,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
    ) -> Result<String> {
        self.scope(prefix, |g| {
            g.weight_transposed("weight", [out_features, in_features], weight)
        })
    }

    /// `x [..., in_features]` quantized to `uint8` at run time, per row or per tensor as
    /// `per_row` says (the product's [`row_scaled`](Self::row_scaled)); returns `q` of `x`'s
    /// shape, a scale and a zero point with `x ≈ (q − zero_point) · scale / levels` (see
    /// [`QuantizedInput`]):
    /// - per row: `max [..., 1] = max(max_k |x[.., k]|, 1e-12)` (`Abs`, `ReduceMax`, `Max`),
    ///   then one step per row (see `quantize_rows`), zero point 128 (a value known to be
    ///   bounded below: `x − floor` on 0..255, zero point 0);
    /// - per tensor: `DynamicQuantizeLinear(x)` (scalar scale and zero point over the whole
    ///   tensor, `levels` 1).
    ///
    /// Done once per value and form: a second call with the same `x` and `per_row` returns the
    /// first call's outputs, so a layer's query, key and value share one quantization.
    ///
    /// `width`: `x`'s last dimension (`in_features` of the products that read it).
    pub fn dynamic_quantize(&mut self, x: &str, width: usize, per_row: bool) -> QuantizedInput {
        let key = (x.to_owned(), per_row);
        if let Some(q) = self.quantized_inputs.get(&key) {
            return q.clone();
        }
        let floor = self.lower_bounds.get(x).copied().filter(|_| per_row);
        let q = if let Some(floor) = floor {
            // One-sided (GELU, ReLU): `x − floor ≥ 0` on 0..255 with zero point 0, one scale
            // per row `max_k (x − floor) / 255`: twice the levels of the symmetric form.
            let shift = self.scalar_f32(-floor);
            let shifted = self.add(x, &shift);
            self.quantized_shift.insert(x.to_owned(), floor);
            self.quantize_rows(&shifted, &shifted, 255.0, 0, width)
        } else if per_row {
            // Symmetric: `max_k |x| / 127` per row, zero point 128.
            let abs = self.op("Abs", &[x], vec![]);
            self.quantize_rows(x, &abs, 127.0, 128, width)
        } else {
            let [q, scale, zero_point]: [String; 3] = self
                .node("", "DynamicQuantizeLinear", &[x], 3, vec![])
                .try_into()
                .expect("three outputs");
            QuantizedInput {
                q,
                scale,
                zero_point,
                levels: 1.0,
            }
        };
        self.quantized_inputs.insert(key, q.clone());
        q
    }

    /// `v [..., K]` quantized to `uint8` row by row: `max = max(max_k range[.., k], 1e-12)`
    /// (so an all-zero row stays 0), one step `max / levels` per row.
    ///
    /// From opset 21 on, as one blocked `QuantizeLinear(v, step [..., 1], zero_point [..., 1],
    /// axis −1, block_size K)`: the step is `max · (1 / levels)` on the `[..., 1]` maxima and the
    /// zero point (when not 0) the constant expanded to their shape (`Shape`, `Expand`); the
    /// scale is the step (`levels` 1). In ONNX Runtime 1.31 this runs faster than dividing all
    /// of `v` (an `[1, 85, 384]` input into a `[384, 384]` product, 2 threads: 146 µs against
    /// 177 µs with its `MatMulIntegerToFloat`, the same integers).
    ///
    /// Below opset 21, the row maxima divide `v` by a broadcast `Div` before one per-tensor
    /// `QuantizeLinear(v / max, 1 / levels, zero_point)` (ONNX Runtime's vectorized path)
    /// rather than by a per-axis `QuantizeLinear` over `v` reshaped to `[rows, K]` (four nodes
    /// per quantized value besides the one that makes `range` instead of eleven); the scale is
    /// `max` and `levels` is left to the weight scales of the products.
    fn quantize_rows(
        &mut self,
        v: &str,
        range: &str,
        levels: f32,
        zero_point: u8,
        width: usize,
    ) -> QuantizedInput {
        let keepdims = AttributeProto::int("keepdims", 1);
        let max = if self.opset >= 18 {
            let axes = self.const_i64(&[-1]);
            self.op("ReduceMax", &[range, &axes], vec![keepdims])
        } else {
            self.op(
                "ReduceMax",
                &[range],
                vec![AttributeProto::ints("axes", &[-1]), keepdims],
            )
        };
        let tiny = self.scalar_f32(1e-12);
        let max = self.max(&max, &tiny);
        let zero = self.constant(
            TensorProto::from_raw("", DataType::Uint8, &[], vec![zero_point]),
            format!("scalar_u8_{zero_point}"),
        );
        if self.opset >= 21 {
            let inverse = self.scalar_f32(1.0 / levels);
            let step = self.mul(&max, &inverse);
            let block = vec![
                AttributeProto::int("axis", -1),
                AttributeProto::int("block_size", width as i64),
            ];
            let q = if zero_point == 0 {
                // No zero point: uint8 with zero point 0.
                self.op("QuantizeLinear", &[v, &step], block)
            } else {
                let shape = self.shape(&step);
                let zeros = self.expand(&zero, &shape);
                self.op("QuantizeLinear", &[v, &step, &zeros], block)
            };
            return QuantizedInput {
                q,
                scale: step,
                zero_point: zero,
                levels: 1.0,
            };
        }
        let unit = self.div(v, &max);
        let step = self.scalar_f32(1.0 / levels);
        let q = self.op("QuantizeLinear", &[&unit, &step, &zero], vec![]);
        QuantizedInput {
            q,
            scale: max,
            zero_point: zero,
            levels,
        }
    }

    /// A PyTorch `nn.Linear` called `prefix` as a dynamically quantized product:
    /// [`dynamic_quantize`](Self::dynamic_quantize)`(x)` (shared by products of the same `x`),
    /// `MatMulInteger` with the `int8 [in, out]` weight `"<prefix>.weight_quantized"` (see
    /// [`quantize_per_channel`]) and zero points `"<prefix>.weight_zero_point"`, `Cast` to
    /// float, `Mul` by `x_scale · "<prefix>.weight_scale" [out]` (`x_scale` a scalar or
    /// `[..., 1]` per row; `weight_scale` the per-channel scale divided by the input's
    /// [`QuantizedInput::levels`]), `Add` of `"<prefix>.bias"` (per row `Sub` of
    /// `"<prefix>.bias_negated"`, see the code). ONNX Runtime's CPU optimizer fuses this into
    /// `MatMulIntegerToFloat` (per-row and per-column scales; u8·s8 kernels, VNNI where the
    /// CPU has it) or, per tensor, `DynamicQuantizeMatMul`. All standard operators, so ONNX
    /// tools type every value; the fused ops are in onnxruntime-web's CPU (wasm) build too.
    pub fn quantized_linear(
        &mut self,
        prefix: &str,
        x: &str,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
        bias: Option<&[f32]>,
    ) -> Result<String> {
        let full = self.qualify(prefix);
        checked_dims(&[out_features, in_features], weight.len(), &full)?;
        if let Some(ActivationQuantization::Blocks(block)) =
            self.quantization.as_ref().map(|q| q.activations)
        {
            return self.block_quantized_linear(
                prefix,
                x,
                weight,
                [out_features, in_features],
                bias,
                block,
            );
        }
        let (y, correction) =
            self.quantized_product(prefix, x, weight, [out_features, in_features])?;
        let bias = with_correction(bias, correction.as_deref());
        let per_row = !self.bias_follows_quantized_product(prefix);
        self.scope(prefix, |g| match bias {
            // Per row as `y − (−bias)`: ONNX Runtime fuses a following `Add` of a constant (in
            // either order) into MatMulIntegerToFloat, whose kernel (1.31) adds the bias before
            // it applies a non-scalar activation scale, so the bias would come out multiplied by
            // each row's scale.
            Some(b) if per_row => {
                let negated: Vec<f32> = b.iter().map(|v| -v).collect();
                let b = g.initializer_f32("bias_negated", &[out_features], &negated)?;
                Ok(g.sub(&y, &b))
            }
            Some(b) => {
                let b = g.initializer_f32("bias", &[out_features], &b)?;
                Ok(g.add(&y, &b))
            }
            None => Ok(y),
        })
    }

    /// The product of [`quantized_linear`](Self::quantized_linear) without any bias
    /// (`MatMulInteger`, `Cast`, `Mul` by the scales, which ONNX Runtime fuses), and the
    /// shift correction `floor · Σ_k Ŵ[o, k]` (`Ŵ` the dequantized weight) that must be added
    /// to the output when `x` is quantized one-sided as `x − floor` (see
    /// [`set_lower_bound`](Self::set_lower_bound)); `None` when it is not.
    fn quantized_product(
        &mut self,
        prefix: &str,
        x: &str,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
    ) -> Result<(String, Option<Vec<f32>>)> {
        let full = self.qualify(prefix);
        let row_scaled = self.row_scaled(prefix);
        let per_row_form = self
            .quantization
            .as_ref()
            .is_some_and(|q| q.activations == ActivationQuantization::PerRow);
        let ((q, scales), weight_range) = if per_row_form {
            (
                quantize_per_channel_pairs(weight, [out_features, in_features]),
                "with |q[2j]| + |q[2j + 1]| <= 128",
            )
        } else {
            (
                quantize_per_channel(weight, [out_features, in_features]),
                "on [-127, 127]",
            )
        };
        let QuantizedInput {
            q: xq,
            scale: x_scale,
            zero_point: x_zero,
            levels,
        } = self.dynamic_quantize(x, in_features, row_scaled);
        // A shifted input (x = x' + floor) adds floor · Σ_k W[o, k] to every output, from the
        // dequantized weights the product actually uses.
        let shifted = row_scaled.then(|| self.quantized_shift.get(x).copied());
        let correction = shifted.flatten().map(|floor| {
            (0..out_features)
                .map(|o| {
                    let sum: f32 = (0..in_features)
                        .map(|k| q[k * out_features + o] as f32)
                        .sum();
                    floor * sum * scales[o]
                })
                .collect::<Vec<f32>>()
        });
        let y = self.scope(prefix, |g| -> Result<String> {
            let wq = g.initializer_i8(
                "weight_quantized",
                [in_features, out_features],
                &q,
                format!(
                    "int8 transpose of the [{out_features}, {in_features}] parameter \
                     {full}.weight, per output channel {weight_range}: \
                     weight ≈ weight_quantized · weight_scale · {levels} \
                     (the levels of the quantized input, folded in)"
                ),
            )?;
            let name = g.qualify("weight_zero_point");
            let wz = g.initializer(TensorProto::from_raw(
                &name,
                DataType::Int8,
                &[out_features as i64],
                vec![0u8; out_features],
            ))?;
            let folded: Vec<f32> = scales.iter().map(|s| s / levels).collect();
            let ws = g.initializer_f32("weight_scale", &[out_features], &folded)?;
            let acc = g.op("MatMulInteger", &[&xq, &wq, &x_zero, &wz], vec![]);
            let acc = g.cast(&acc, DataType::Float);
            let scale = g.mul(&x_scale, &ws);
            Ok(g.mul(&acc, &scale))
        })?;
        Ok((y, correction))
    }

    /// [`linear`](Self::linear) without its bias, for a kernel that adds the bias itself
    /// (the residual `Sum`, `MultiHeadAttention`, [`bias_gelu`](Self::bias_gelu)):
    /// returns the product and what that kernel must add to the layer's bias, the shift
    /// correction of a dynamically quantized product whose input is quantized one-sided (see
    /// [`quantized_product`](Self::quantized_product)); `None` for every other product.
    pub fn linear_unbiased(
        &mut self,
        prefix: &str,
        x: &str,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
    ) -> Result<(String, Option<Vec<f32>>)> {
        let blocks = matches!(
            self.quantization.as_ref().map(|q| q.activations),
            Some(ActivationQuantization::Blocks(_))
        );
        if !blocks && self.quantizes(prefix, out_features, in_features) {
            checked_dims(
                &[out_features, in_features],
                weight.len(),
                &self.qualify(prefix),
            )?;
            return self.quantized_product(prefix, x, weight, [out_features, in_features]);
        }
        let y = self.linear(prefix, x, weight, [out_features, in_features], None)?;
        Ok((y, None))
    }

    /// Whether a bias `Add` may follow a quantized product: only when its input has one scale
    /// per tensor, where ONNX Runtime takes the `Add` into `DynamicQuantizeMatMul`. Per row it
    /// would fuse it into `MatMulIntegerToFloat` wrongly (see
    /// [`quantized_linear`](Self::quantized_linear)); in blocks `MatMulNBits` is left as it was
    /// measured, with the bias in the next kernel.
    pub fn bias_follows_quantized_product(&self, prefix: &str) -> bool {
        !self.row_scaled(prefix)
            && self
                .quantization
                .as_ref()
                .is_some_and(|q| q.activations == ActivationQuantization::PerTensor)
    }

    /// Whether the product `prefix` (in the current scope) quantizes its input one scale per
    /// row: per-row activations, or per tensor with `prefix` among
    /// [`MatMulQuantization::per_row`]. True without quantization (the default form).
    pub fn row_scaled(&self, prefix: &str) -> bool {
        let full = self.qualify(prefix);
        self.quantization
            .as_ref()
            .is_none_or(|q| q.row_scaled(&full))
    }

    /// Whether [`linear`](Self::linear) emits the layer `prefix` with `[out, in]` features as
    /// a dynamically quantized product.
    pub fn quantizes(&self, prefix: &str, out_features: usize, in_features: usize) -> bool {
        self.quantization
            .as_ref()
            .is_some_and(|q| q.applies(&self.qualify(prefix), out_features, in_features))
    }

    /// A PyTorch `nn.Linear` called `prefix` as one `com.microsoft:MatMulNBits` node (bits 8,
    /// `block_size` = `block`, accuracy level 4: int8 products on the CPU) over
    /// `x [..., in_features]`, with the codes `"<prefix>.weight_q8" uint8 [out, k_blocks, block]`
    /// and `"<prefix>.weight_scales" [out, k_blocks]` of [`quantize_blocks`], then `Add` of
    /// `"<prefix>.bias"`. The input is not quantized in the graph: ONNX Runtime does it per
    /// row and block inside the kernel.
    fn block_quantized_linear(
        &mut self,
        prefix: &str,
        x: &str,
        weight: &[f32],
        [out_features, in_features]: [usize; 2],
        bias: Option<&[f32]>,
        block: usize,
    ) -> Result<String> {
        let full = self.qualify(prefix);
        ensure!(
            block >= 16 && block.is_power_of_two(),
            "{full}: MatMulNBits blocks must be a power of two of at least 16, not {block}"
        );
        let (codes, scales) = quantize_blocks(weight, [out_features, in_features], block);
        let k_blocks = in_features.div_ceil(block);
        self.scope(prefix, |g| {
            let name = g.qualify("weight_q8");
            let mut tensor = TensorProto::from_raw(
                &name,
                DataType::Uint8,
                &[out_features as i64, k_blocks as i64, block as i64],
                codes,
            );
            tensor.doc_string = Some(format!(
                "8-bit codes of the [{out_features}, {in_features}] parameter {full}.weight in \
                 blocks of {block} inputs: weight ≈ (weight_q8 − 128) · weight_scales"
            ));
            let wq = g.initializer(tensor)?;
            let ws = g.initializer_f32("weight_scales", &[out_features, k_blocks], &scales)?;
            let attrs = vec![
                AttributeProto::int("K", in_features as i64),
                AttributeProto::int("N", out_features as i64),
                AttributeProto::int("bits", 8),
                AttributeProto::int("block_size", block as i64),
                AttributeProto::int("accuracy_level", 4),
            ];
            let mut outputs = g.node(MS_DOMAIN, "MatMulNBits", &[x, &wq, &ws], 1, attrs);
            let y = g.contrib_output(outputs.pop().expect("one output"));
            match bias {
                Some(b) => {
                    let b = g.initializer_f32("bias", &[out_features], b)?;
                    Ok(g.add(&y, &b))
                }
                None => Ok(y),
            }
        })
    }

    /// `LayerNormalization(x, scale, bias)` (opset 17) over the axes from `axis` on.
    pub fn layer_norm_from(
        &mut self,
        x: &str,
        scale: &str,
        bias: &str,
        epsilon: f32,
        axis: i64,
    ) -> String {
        self.op(
            "LayerNormalization",
            &[x, scale, bias],
            vec![
                AttributeProto::int("axis", axis),
                AttributeProto::float("epsilon", epsilon),
            ],
        )
    }

    /// A PyTorch `nn.LayerNorm` over the last axis called `prefix`: initializers
    /// `"<prefix>.weight"` (gamma) and `"<prefix>.bias"` (beta).
    pub fn layer_norm(
        &mut self,
        prefix: &str,
        x: &str,
        gamma: &[f32],
        beta: &[f32],
        epsilon: f32,
    ) -> Result<String> {
        ensure!(
            gamma.len() == beta.len(),
            "layer norm {prefix:?}: gamma has {} values, beta {}",
            gamma.len(),
            beta.len()
        );
        self.scope(prefix, |g| {
            let w = g.weight("weight", &[gamma.len()], gamma)?;
            let b = g.weight("bias", &[beta.len()], beta)?;
            Ok(g.layer_norm_from(x, &w, &b, epsilon, -1))
        })
    }

    /// `LayerNorm(input + skip [+ bias])` over the last axis, a transformer's residual
    /// connection: one `Sum` of the two (three) terms and one standard `LayerNormalization`.
    /// `input` and `skip` are `[batch, sequence, hidden]`; `gamma`, `beta`, `bias` are
    /// `[hidden]`.
    ///
    /// Not ONNX Runtime's fused `com.microsoft:SkipLayerNormalization`: its CPU kernel (1.31,
    /// also compiled into onnxruntime-web) normalizes each row in scalar loops with a division
    /// per entry, ~1.5 µs per 384-wide row, where `Sum` + the vectorized `LayerNormalization`
    /// take ~0.35 µs (98 rows, one thread: 231 against 35 µs). In MiniLM's bundles at batch 1
    /// this was 12–14 % more sentences per second (int8 and f32, logits unchanged). ONNX Runtime
    /// fuses `Add` + `LayerNormalization` into the slow node only when both `Add` operands have
    /// static equal shapes past the batch axis, never with a dynamic sequence length, and it
    /// does not fuse `Sum` at all.
    pub fn skip_layer_norm_from(
        &mut self,
        input: &str,
        skip: &str,
        gamma: &str,
        beta: &str,
        bias: Option<&str>,
        epsilon: f32,
    ) -> String {
        let mut terms = vec![input, skip];
        if let Some(b) = bias {
            terms.push(b);
        }
        let sum = self.op("Sum", &terms, vec![]);
        self.layer_norm_from(&sum, gamma, beta, epsilon, -1)
    }

    /// The residual connection of a transformer block, `LayerNorm(input + bias + skip)`, as
    /// [`skip_layer_norm_from`](Self::skip_layer_norm_from) emits it. The LayerNorm's
    /// parameters are `"<prefix>.weight"`/`"<prefix>.bias"` (a PyTorch `nn.LayerNorm` called
    /// `prefix`); `bias` is the value of the preceding linear's bias, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn skip_layer_norm(
        &mut self,
        prefix: &str,
        input: &str,
        skip: &str,
        bias: Option<&str>,
        gamma: &[f32],
        beta: &[f32],
        epsilon: f32,
    ) -> Result<String> {
        ensure!(
            gamma.len() == beta.len(),
            "layer norm {prefix:?}: gamma has {} values, beta {}",
            gamma.len(),
            beta.len()
        );
        self.scope(prefix, |g| {
            let w = g.weight("weight", &[gamma.len()], gamma)?;
            let b = g.weight("bias", &[beta.len()], beta)?;
            Ok(g.skip_layer_norm_from(input, skip, &w, &b, bias, epsilon))
        })
    }

    /// A PyTorch `nn.Embedding` called `prefix`: the `[num_embeddings, dim]` table becomes
    /// `"<prefix>.weight"` and `ids [...]` are looked up with `Gather(axis = 0)`, giving
    /// `float [..., dim]`. Under [`set_embedding_quantization`](Self::set_embedding_quantization)
    /// a table of at least `min_rows` rows is stored as int8 instead
    /// ([`quantized_embedding`](Self::quantized_embedding)).
    pub fn embedding(
        &mut self,
        prefix: &str,
        ids: &str,
        table: &[f32],
        [num_embeddings, dim]: [usize; 2],
    ) -> Result<String> {
        let quantize = self
            .embedding_quantization
            .is_some_and(|q| num_embeddings >= q.min_rows);
        if quantize {
            let block = self.embedding_quantization.and_then(|q| q.block);
            return self.quantized_embedding(prefix, ids, table, [num_embeddings, dim], block);
        }
        self.scope(prefix, |g| {
            let w = g.weight("weight", &[num_embeddings, dim], table)?;
            Ok(g.gather(&w, ids, 0))
        })
    }

    /// An embedding lookup on a table stored as int8, by default per row ([`quantize_per_row`]):
    /// `"<prefix>.weight_quantized"` `int8 [num_embeddings, dim]` and `"<prefix>.weight_scale"`
    /// `float [num_embeddings, 1]`; for `ids [...]` (`int64`) the result `float [..., dim]` is
    /// `Cast(Gather(weight_quantized, ids)) · Gather(weight_scale, ids)`, each entry within half
    /// its row's step (`max |row| / 254`) of the float table's. The file holds a quarter of the
    /// table's bytes (plus 4 per row); the lookup gathers `dim` bytes and one scale per id.
    /// `DequantizeLinear` (per axis, on ids flattened to one row each, then reshaped back)
    /// measured the same in ONNX Runtime 1.31 (both 1.0–1.2 ms per `[32, 64]` ids on a
    /// `[30522, 384]` table, 2 threads, against 0.4–0.7 ms for the float `Gather`; the whole
    /// MiniLM batch takes ~700 ms); `Cast`/`Mul` needs no reshape.
    ///
    /// With `block` (`Some(b)`, `b < dim`): one scale per row and block of `b` columns
    /// ([`quantize_row_blocks`]), `"<prefix>.weight_scale" [num_embeddings, ceil(dim / b)]`;
    /// the gathered scales are spread over their columns by a second `Gather` (axis −1, column
    /// `c` reads block `c / b`).
    pub fn quantized_embedding(
        &mut self,
        prefix: &str,
        ids: &str,
        table: &[f32],
        [num_embeddings, dim]: [usize; 2],
        block: Option<usize>,
    ) -> Result<String> {
        let full = self.qualify(prefix);
        checked_dims(
            &[num_embeddings, dim],
            table.len(),
            &format!("{full}.weight"),
        )?;
        let block = block.filter(|&b| b > 0 && b < dim).unwrap_or(dim.max(1));
        let blocks = dim.div_ceil(block);
        let (q, scales) = quantize_row_blocks(table, [num_embeddings, dim], block);
        self.scope(prefix, |g| {
            let wq = g.initializer_i8(
                "weight_quantized",
                [num_embeddings, dim],
                &q,
                format!(
                    "int8 [{num_embeddings}, {dim}] parameter {full}.weight, one scale per row \
                     and block of {block} columns: weight[r, c] ≈ weight_quantized[r, c] · \
                     weight_scale[r, c / {block}]"
                ),
            )?;
            let ws = g.initializer_f32("weight_scale", &[num_embeddings, blocks], &scales)?;
            let rows = g.gather(&wq, ids, 0);
            let rows = g.cast(&rows, DataType::Float);
            let mut row_scales = g.gather(&ws, ids, 0);
            if blocks > 1 {
                let columns: Vec<i64> = (0..dim).map(|c| (c / block) as i64).collect();
                let columns = g.const_i64(&columns);
                row_scales = g.gather(&row_scales, &columns, -1);
            }
            Ok(g.mul(&rows, &row_scales))
        })
    }

    /// `com.microsoft:MultiHeadAttention` over `[batch, sequence, hidden]` query, key and
    /// value, with an optional `int32 [batch, kv_sequence]` key padding mask (1 = keep,
    /// 0 = padding). Returns the `[batch, sequence, hidden]` output.
    pub fn multi_head_attention(
        &mut self,
        query: &str,
        key: &str,
        value: &str,
        key_padding_mask: Option<&str>,
        num_heads: usize,
    ) -> String {
        let mut spec = MultiHeadAttention::new(query, key, value, num_heads);
        spec.key_padding_mask = key_padding_mask;
        self.attention(spec)
    }

    /// `com.microsoft:MultiHeadAttention` with all the options of
    /// [`MultiHeadAttention`]. The graph's model must import `com.microsoft` opset 1.
    pub fn attention(&mut self, spec: MultiHeadAttention<'_>) -> String {
        // Inputs: query, key, value, bias, key_padding_mask, attention_bias, ...
        let mut inputs = vec![
            spec.query,
            spec.key,
            spec.value,
            spec.bias.unwrap_or(""),
            spec.key_padding_mask.unwrap_or(""),
            spec.attention_bias.unwrap_or(""),
        ];
        while inputs.last() == Some(&"") {
            inputs.pop();
        }
        let mut attributes = vec![AttributeProto::int("num_heads", spec.num_heads as i64)];
        if let Some(scale) = spec.scale {
            attributes.push(AttributeProto::float("scale", scale));
        }
        if spec.unidirectional {
            attributes.push(AttributeProto::int("unidirectional", 1));
        }
        let mut outputs = self.node(MS_DOMAIN, "MultiHeadAttention", &inputs, 1, attributes);
        self.contrib_output(outputs.pop().expect("one output"))
    }

    /// ONNX's own `Attention` (default domain, opset [`ONNX_ATTENTION_OPSET`] on) over
    /// `query [batch, rows, hidden]`, `key`/`value [batch, kv, hidden]` with `num_heads` heads
    /// (as many for the keys), the default scale `1/sqrt(head_size)`, no bias: the context
    /// `[batch, rows, hidden]`. `mask`: `bool [batch, 1, rows, kv]`, true = attend (ONNX
    /// Runtime 1.31 wants the query axis spelled out, not broadcast).
    ///
    /// In ONNX Runtime's CPU kernel a masked key adds exact zeros to the sums, so a row's
    /// context is the same to the bit with padding keys masked or absent.
    pub fn onnx_attention(
        &mut self,
        query: &str,
        key: &str,
        value: &str,
        mask: Option<&str>,
        num_heads: usize,
    ) -> Result<String> {
        if self.opset < ONNX_ATTENTION_OPSET {
            bail!(
                "ONNX `Attention` needs default-domain opset {ONNX_ATTENTION_OPSET} or later; this \
                 graph targets opset {} (export with --opset {ONNX_ATTENTION_OPSET})",
                self.opset
            );
        }
        let mut inputs = vec![query, key, value];
        if let Some(m) = mask {
            inputs.push(m);
        }
        let heads = num_heads as i64;
        Ok(self.op(
            "Attention",
            &inputs,
            vec![
                AttributeProto::int("q_num_heads", heads),
                AttributeProto::int("kv_num_heads", heads),
            ],
        ))
    }

    /// `com.microsoft:Attention`: self-attention with the query/key/value projections packed
    /// into one weight, the form ONNX Runtime's own BERT fusion produces.
    ///
    /// `x [batch, sequence, hidden]`, `weight [hidden, 3 * hidden]` (`[W_qᵀ | W_kᵀ | W_vᵀ]`),
    /// `bias [3 * hidden]`, `mask` an `int32 [batch, sequence]` key padding mask (1 = attend).
    /// Returns the `[batch, sequence, hidden]` context, before the output projection.
    pub fn packed_attention(
        &mut self,
        x: &str,
        weight: &str,
        bias: &str,
        mask: Option<&str>,
        num_heads: usize,
    ) -> String {
        let mut inputs = vec![x, weight, bias];
        if let Some(m) = mask {
            inputs.push(m);
        }
        let mut outputs = self.node(
            MS_DOMAIN,
            "Attention",
            &inputs,
            1,
            vec![AttributeProto::int("num_heads", num_heads as i64)],
        );
        self.contrib_output(outputs.pop().expect("one output"))
    }

    // ----------------------------------------------------------------------------------
    // Control flow
    // ----------------------------------------------------------------------------------

    /// `If(condition)`: `then_branch` and `else_branch` each emit a sub-graph of this graph and
    /// return the names of its results, one per entry of `outputs` (a base name and the element
    /// type of each `If` output; the shapes may differ between the branches). Returns the
    /// names of the `If` node's outputs.
    ///
    /// The branches see every value defined before the call (inputs, initializers, node
    /// outputs) and none of each other's. Their weights are initializers of this (the outer)
    /// graph, so the file holds them once: a weight the second branch adds under a name already
    /// held is shared, and must have the same contents (else an error). Values the branches compute stay
    /// inside them, so what [`dynamic_quantize`](Self::dynamic_quantize) remembers from one
    /// branch is forgotten before the next one and after the `If`.
    pub fn if_else(
        &mut self,
        condition: &str,
        outputs: &[(&str, DataType)],
        then_branch: impl FnOnce(&mut Self) -> Result<Vec<String>>,
        else_branch: impl FnOnce(&mut Self) -> Result<Vec<String>>,
    ) -> Result<Vec<String>> {
        ensure!(
            self.values.contains(condition),
            "If: the condition {condition:?} is not a value of the graph"
        );
        ensure!(!self.in_branch, "If nodes do not nest here");
        let quantized = self.quantized_inputs.clone();
        let then_graph = {
            let (nodes, infos) = (self.proto.node.len(), self.proto.value_info.len());
            self.in_branch = true;
            let results = then_branch(self);
            self.in_branch = false;
            let results = results?;
            self.quantized_inputs.clone_from(&quantized);
            self.take_branch("then_branch", nodes, infos, &results, outputs)?
        };
        let else_graph = {
            let (nodes, infos) = (self.proto.node.len(), self.proto.value_info.len());
            (self.in_branch, self.share_initializers) = (true, true);
            let results = else_branch(self);
            (self.in_branch, self.share_initializers) = (false, false);
            let results = results?;
            self.quantized_inputs = quantized;
            self.take_branch("else_branch", nodes, infos, &results, outputs)?
        };
        let attributes = vec![
            AttributeProto::graph("then_branch", then_graph),
            AttributeProto::graph("else_branch", else_graph),
        ];
        let names = self.node("", "If", &[condition], outputs.len(), attributes);
        let mut renamed = Vec::with_capacity(names.len());
        for (name, (base, elem_type)) in names.into_iter().zip(outputs) {
            let base = self.qualify(base);
            let new = Self::fresh(&self.values, &mut self.suffixes, &base);
            self.rename_value(&name, &new);
            self.proto
                .value_info
                .push(value_info_untyped_shape(&new, *elem_type));
            renamed.push(new);
        }
        Ok(renamed)
    }

    /// Moves the nodes and value infos added since `nodes`/`infos` into a sub-graph whose
    /// outputs are `results` (an `Identity` inside it for a result defined outside it).
    fn take_branch(
        &mut self,
        name: &str,
        nodes: usize,
        infos: usize,
        results: &[String],
        outputs: &[(&str, DataType)],
    ) -> Result<GraphProto> {
        ensure!(
            results.len() == outputs.len(),
            "If: the {name} returned {} values for {} outputs",
            results.len(),
            outputs.len()
        );
        let mut node = self.proto.node.split_off(nodes);
        let value_info = self.proto.value_info.split_off(infos);
        let mut output = Vec::with_capacity(results.len());
        for (result, (_, elem_type)) in results.iter().zip(outputs) {
            let inside = node.iter().any(|n| n.output.iter().any(|o| o == result));
            let result = if inside {
                result.clone()
            } else {
                let node_name = self.unique_node_name("Identity");
                let out = self.unique_value_name(&format!("{node_name}_output_0"));
                node.push(NodeProto {
                    input: vec![result.clone()],
                    output: vec![out.clone()],
                    name: Some(node_name),
                    op_type: Some("Identity".into()),
                    ..Default::default()
                });
                out
            };
            output.push(value_info_untyped_shape(&result, *elem_type));
        }
        Ok(GraphProto {
            name: Some(self.qualify(name)),
            node,
            output,
            value_info,
            ..Default::default()
        })
    }

    // ----------------------------------------------------------------------------------
    // Finishing
    // ----------------------------------------------------------------------------------

    /// Checks that the graph is complete: it has outputs and every node input is defined
    /// before use (nodes are in topological order by construction).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.proto.output.is_empty(),
            "graph {:?} has no outputs",
            self.proto.name()
        );
        let mut defined: HashSet<&str> = self
            .proto
            .input
            .iter()
            .filter_map(|v| v.name.as_deref())
            .collect();
        defined.extend(
            self.proto
                .initializer
                .iter()
                .filter_map(|t| t.name.as_deref()),
        );
        check_defined(&self.proto.node, &mut defined)?;
        for output in &self.proto.output {
            let name = output.name.as_deref().unwrap_or("");
            ensure!(
                defined.contains(name),
                "graph output {name:?} is never produced"
            );
        }
        Ok(())
    }

    /// The graph proto after [`validate`](Self::validate), borrowed (no copy of the
    /// weights).
    pub fn proto(&self) -> Result<&GraphProto> {
        self.validate()?;
        Ok(&self.proto)
    }

    /// The finished `GraphProto`.
    pub fn build(self) -> Result<GraphProto> {
        self.validate()?;
        Ok(self.proto)
    }
}

/// Checks that `nodes` (and the nodes of their sub-graphs, which see the values defined before
/// their node) use only values defined before them; adds their outputs to `defined`.
fn check_defined<'a>(nodes: &'a [NodeProto], defined: &mut HashSet<&'a str>) -> Result<()> {
    for node in nodes {
        for input in &node.input {
            if !input.is_empty() && !defined.contains(input.as_str()) {
                bail!(
                    "node {:?} uses {input:?} before it is defined",
                    node.name.as_deref().unwrap_or("")
                );
            }
        }
        for sub in node.attribute.iter().filter_map(|a| a.g.as_deref()) {
            let mut inner = defined.clone();
            inner.extend(sub.initializer.iter().filter_map(|t| t.name.as_deref()));
            check_defined(&sub.node, &mut inner)?;
            for output in &sub.output {
                let name = output.name.as_deref().unwrap_or("");
                ensure!(
                    inner.contains(name),
                    "sub-graph {:?} of node {:?}: output {name:?} is never produced",
                    sub.name.as_deref().unwrap_or(""),
                    node.name.as_deref().unwrap_or("")
                );
            }
        }
        defined.extend(node.output.iter().map(String::as_str));
    }
    Ok(())
}

/// A tensor value of element type `elem_type` and unknown shape.
fn value_info_untyped_shape(name: &str, elem_type: DataType) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(crate::proto::type_proto::Value::TensorType(
                crate::proto::type_proto::Tensor {
                    elem_type: Some(elem_type as i32),
                    shape: None,
                },
            )),
            denotation: None,
        }),
        doc_string: None,
    }
}

fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto::tensor(elem_type, dims)),
        doc_string: None,
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn kept_float_names_match_whole_dot_separated_parts() {
        let q = MatMulQuantization {
            keep_float: vec!["layer.1".into(), "output.dense".into()],
            ..Default::default()
        };
        let applies = |p: &str| q.applies(p, 128, 128);
        assert!(!applies("encoder.layer.1.attention.self.query"));
        assert!(applies("encoder.layer.11.attention.self.query"));
        assert!(!applies("encoder.layer.3.output.dense"));
        assert!(!applies("encoder.layer.3.attention.output.dense"));
        assert!(applies("encoder.layer.3.intermediate.dense"));
        assert!(names_part("a.b.c", "a.b.c") && names_part("a.b.c", "b"));
        assert!(!names_part("a.bc", "b") && !names_part("a.b.c", "b.c.d"));
    }
}
