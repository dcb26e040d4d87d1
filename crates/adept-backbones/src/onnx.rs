//! The graph side of the backbone seam (feature `onnx`): what a family's emission receives and
//! returns. Each family emits itself next to its candle modules (`bert/onnx.rs`), starting from
//! the input embeddings the adapter stage produced, so the adapter's graph part (folded table,
//! unfolded MLP, DePT offsets, prompt) is written once for every family.

use adept_onnx::{DataType, GraphBuilder};
use anyhow::Result;
use candle_core::{DType, Tensor};

/// Values the encoder receives: `[batch, l + s]` positions after the adapter stage, the soft
/// prompt's `l` rows first.
///
/// Two forms. **Full** (`constant_prompt: None`): the prompt is a graph value, concatenated
/// in front of the input rows (`embeds [batch, l + s, d]`, `token_type_ids [batch, l + s]`).
/// **Lean** (`constant_prompt: Some(P)`): the graph values hold the input rows alone (`embeds
/// [batch, s, d]`, `token_type_ids [batch, s]`) and the prompt comes as the constant `P [l, d]`
/// at positions `0..l` with token type 0, so the family computes what of the prompt rows does
/// not depend on the input once, at export, and stores it as initializers (BERT family: the
/// embedding output and the first layer's query/key/value projections of the prompt rows, see
/// `bert::onnx`). `attention_mask` and `keep_from` count all `l + s` positions in both forms,
/// and the emission returns the same rows.
#[derive(Clone, Debug)]
pub struct EncoderInputs {
    /// `float [batch, l + s, d]`: `[P; E + f(E)]`; lean form: `float [batch, s, d]`, `E + f(E)`.
    pub embeds: String,
    /// `int64 [batch, l + s]`: 1 for the prompt and real tokens, 0 for padding (both forms).
    pub attention_mask: String,
    /// `int64 [batch, l + s]`: 0 for the prompt, the tokenizer's types after it (lean form:
    /// `[batch, s]`, the input rows' types); `None` for a family that takes no token types
    /// ([`crate::Encoder::uses_token_types`]).
    pub token_type_ids: Option<String>,
    /// Only rows from this position on are needed (the prompt length, for a head that reads the
    /// input tokens): the emission returns `[batch, l + s - keep_from, d]`, and a family may
    /// skip work for the other rows, as `Encoder::forward_embeds_from` does.
    pub keep_from: usize,
    /// The lean form's soft prompt `P [l, d]` (candle, as the adapter holds it), not in the
    /// graph values; `None`: the full form (or no prompt).
    pub constant_prompt: Option<Tensor>,
}

impl EncoderInputs {
    /// Rows of the prompt that are not in the graph values (0 in the full form).
    pub fn constant_prompt_len(&self) -> usize {
        self.constant_prompt.as_ref().map_or(0, |p| p.dims()[0])
    }
}

/// Values a decoder family's emission receives for one step over `s` new tokens with `past`
/// cached positions (the names optimum gives a decoder graph's inputs).
#[derive(Clone, Debug)]
pub struct DecoderInputs {
    /// `float [batch, s, d]`: the adapter stage's output for the new tokens (rows of the folded
    /// table; soft-prompt rows when the prompt runs as virtual tokens).
    pub embeds: String,
    /// `int64 [batch, past + s]`: 1 for attended positions (cached and new), 0 for padding.
    pub attention_mask: String,
    /// `int64 [batch, s]`: each new token's position (attended positions before it).
    pub position_ids: String,
    /// Per layer, `(key, value)`, each `float [batch, kv_heads, past, head_dim]`.
    pub past: Vec<(String, String)>,
}

/// What a decoder family's emission returns.
#[derive(Clone, Debug)]
pub struct DecoderOutputs {
    /// `float [batch, s, vocab]`.
    pub logits: String,
    /// Per layer, `(key, value)`, each `float [batch, kv_heads, past + s, head_dim]`.
    pub present: Vec<(String, String)>,
}

/// How self-attention is emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttentionKind {
    /// Three projection `MatMul`s + `com.microsoft:MultiHeadAttention` (biases inside it).
    #[default]
    MultiHead,
    /// One `com.microsoft:Attention` node with the projections packed into one weight.
    Packed,
}

/// What a family's emission may be asked to vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EmitOptions {
    pub attention: AttentionKind,
    /// Run the row-wise work (projections, feed-forward, LayerNorms) on the rows that hold
    /// tokens only, not on padding: the hidden states travel packed as `[1, tokens, d]`
    /// between attentions, which alone see the `[batch, rows, d]` layout. A family that cannot
    /// (or a decoder) emits its padded form; the results are the same either way (to f32
    /// rounding; per-tensor int8 scales are taken over the rows a form computes, so they
    /// differ). `false` in `EmitOptions::default()` (the decoders' emission, which ignores
    /// it); the classifier export asks for it by default (`GraphOptions::pack_rows`).
    pub pack_rows: bool,
}

/// Flat `f32` values of a tensor (any dtype/layout), for initializers.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The attention mask as `int32`, as ONNX Runtime's attention kernels take it.
pub fn mask_i32(g: &mut GraphBuilder, mask: &str) -> String {
    g.cast(mask, DataType::Int32)
}
