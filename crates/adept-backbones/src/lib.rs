//! Frozen backbones written from differentiable candle ops, loaded from Hugging Face-layout folders.
//!
//! A backbone takes *input embeddings* (not token ids): the adapter stage sits between the word
//! embedding lookup and the backbone, so the data flow is
//! `tokens → word_embeddings() → adapter → forward_embeds() → hidden states`.
//! All weights are plain (non-`Var`) tensors; linear layers use [`adept_nn::FrozenLinear`] so the
//! backward pass computes activation gradients only.
//!
//! ## The seam: one folder per family, one registry line
//! ```text
//! src/<family>/mod.rs     Config, candle modules, `load(dir, device)`, `impl Encoder`
//! src/<family>/fused.rs   fused CPU ops with input-only backward passes (where they pay)
//! src/<family>/onnx.rs    the same computation emitted into an ONNX graph (feature `onnx`)
//! src/registry.rs         FAMILIES: the `config.json` model_types of each family → its `load`
//! ```
//! Training, export and the command line hold a `Box<dyn Encoder>` from
//! [`registry::load_encoder`] and never name a family. A new family implements [`Backbone`] and
//! [`Encoder`] in its folder and adds one line to [`registry::FAMILIES`].
//!
//! Two kinds of backbone sit behind the seam: [`Encoder`] (bidirectional, read by a pooled head)
//! and [`CausalLm`] (decoder-only, with a language-model head and a key/value cache for
//! generation). A family implements [`Backbone`] and one of them; its registry line says which
//! ([`registry::Loader`]).
//!
//! A third kind, [`Seq2SeqLm`] (encoder–decoder with a decoder cache), holds [`t5`].
//!
//! ## Mixed precision
//! Every family takes [`Encoder::set_autocast`] (and the same on [`CausalLm`], [`Seq2SeqLm`]):
//! with [`adept_nn::Autocast::Bf16`] its [`adept_nn::FrozenLinear`] weights (the LM head included)
//! are held in bf16 and its matrix products, attention's included, run in bf16; embedding
//! tables, norms, softmax, activations and the residual stream stay f32. BERT's fused f32
//! layer ops do not apply then: its layers run from composite ops (logged once).
//!
//! Families: [`bert`] (BERT, MiniLM, RoBERTa, XLM-RoBERTa, CamemBERT), [`llama`] (causal LM;
//! [`generate::greedy`] decodes with it), [`t5`] (T5, T5 v1.1, mT5).

pub mod bert;
pub mod generate;
pub mod gguf;
pub mod llama;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod registry;
pub mod t5;
mod weights;

pub use bert::{BertConfig, BertEncoder};
pub use llama::{LlamaConfig, LlamaModel};
pub use registry::load_seq2seq;
pub use registry::{load_causal_lm, load_encoder, model_type_of, Family, Loader, FAMILIES};
pub use t5::{T5Config, T5Model};
pub use weights::Weights;

use adept_nn::Autocast;
use candle_core::{Device, Result, Tensor};

/// The error a family without mixed precision gives for `autocast` (the trait methods'
/// default): names the family and what to do.
pub fn autocast_unsupported(family: &str, autocast: Autocast) -> anyhow::Result<()> {
    if autocast.is_on() {
        anyhow::bail!(
            "{autocast} autocast is not implemented for the {family} family: train it in f32 \
             (leave out --autocast or pass --autocast f32)"
        );
    }
    Ok(())
}

/// The error for going back from bf16 to f32 on a loaded model (its weights were rounded).
pub(crate) fn check_autocast_change(
    family: &str,
    from: Autocast,
    to: Autocast,
) -> anyhow::Result<()> {
    if from.is_on() && from != to {
        anyhow::bail!(
            "the {family} model's weights are already held in {from}: load it again for {to} \
             (autocast is chosen once, after loading)"
        );
    }
    Ok(())
}

/// What the adapter and training code need from any backbone: its width and the word-embedding
/// table the adapter reads (and ADePT folds into).
pub trait Backbone {
    /// Hidden size `d` of the embeddings the backbone consumes.
    fn hidden_size(&self) -> usize;
    /// Rows of the word-embedding table.
    fn vocab_size(&self) -> usize;
    /// The word-embedding table `[vocab, d]` (the table ADePT folds into).
    fn word_embedding_table(&self) -> &Tensor;
    /// Looks up `ids [b, s]` in the word-embedding table, giving `[b, s, d]`.
    fn word_embeddings(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let rows = self.word_embedding_table().index_select(&flat, 0)?;
        rows.reshape((b, s, self.hidden_size()))
    }
}

/// An encoder family behind the seam: runs from input embeddings, and (feature `onnx`) emits
/// the same computation into a graph.
pub trait Encoder: Backbone + Send + Sync {
    /// The family (`bert`): the bundle manifest's `model_family`.
    fn family(&self) -> &'static str;
    /// The checkpoint's own `model_type` (`bert`, `roberta`, …).
    fn model_type(&self) -> &str;
    fn device(&self) -> &Device;
    /// Longest sequence (prompt included) the model takes.
    fn max_sequence_len(&self) -> usize;
    /// Whether the model reads token type ids (BERT: yes; RoBERTa-style, one type: no).
    fn uses_token_types(&self) -> bool;
    /// Number of transformer layers (`num_hidden_layers`).
    fn num_layers(&self) -> usize;
    /// Last hidden states `[b, L - keep_from, d]` for `inputs_embeds [b, L, d]` (prompt
    /// included), `attention_mask [b, L]` (u32, 1 = attend) and `token_type_ids [b, L]` (u32;
    /// `None` = type 0). Only rows from `keep_from` on come out, and a family may skip work
    /// for the others. Rows at padded positions are undefined: read attended rows only.
    fn forward_embeds_from(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        keep_from: usize,
    ) -> Result<Tensor>;
    /// Fused CPU layers on (the default where the family has them) or off (composite candle
    /// ops: the reference, and what other devices run). Values are the same either way.
    fn set_fused_layers(&mut self, on: bool) -> anyhow::Result<()>;
    fn fused_layers(&self) -> bool;
    /// Holds the frozen linear weights in `autocast`'s dtype and runs the backbone's matrix
    /// products in it, norms, softmax and activations staying f32 ([`adept_nn::autocast`]).
    /// Chosen once, after loading. Families without it refuse [`Autocast::Bf16`] with an error
    /// that names them.
    fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        autocast_unsupported(self.family(), autocast)
    }
    /// The precision chosen with [`Self::set_autocast`] (f32 when never set).
    fn autocast(&self) -> Autocast {
        Autocast::F32
    }
    /// For tests and tools that need the concrete family (`downcast_ref::<BertEncoder>()`).
    fn as_any(&self) -> &dyn std::any::Any;
    /// A copy sharing the weights (candle tensors are reference-counted).
    fn clone_box(&self) -> Box<dyn Encoder>;
    /// Emits the encoder into `g` from the adapter stage's outputs; returns the last hidden
    /// states from row `inputs.keep_from` on, `float [batch, l + s - keep_from, d]`. Both forms
    /// of [`onnx::EncoderInputs`] (full, and lean with `constant_prompt`) must be handled.
    #[cfg(feature = "onnx")]
    fn emit_from_embeds(
        &self,
        g: &mut adept_onnx::GraphBuilder,
        inputs: &onnx::EncoderInputs,
        opts: &onnx::EmitOptions,
    ) -> anyhow::Result<String>;
}

impl Clone for Box<dyn Encoder> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Keys and values of the positions seen so far, one `(key, value)` pair per layer, each
/// `[batch, kv_heads, past, head_dim]` (the layout optimum's `past_key_values.{i}.key|value` use).
/// An empty cache means no past. The attention mask passed with a cached step covers past and
/// new positions: `[batch, past + new]`.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }
    /// Positions already in the cache (0 when empty).
    pub fn past_len(&self) -> usize {
        self.layers.first().map_or(0, |(k, _)| k.dims()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Shape of a causal LM's key/value cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// A decoder-only language-model family behind the seam: runs from input embeddings (so the
/// adapter stage sits between the word-embedding lookup and the first layer, as for encoders),
/// with a key/value cache for generation, and a language-model head that always keeps the
/// original (unfolded) output table, tied or not.
///
/// Positions come from the attention mask: a position's id is the number of attended positions
/// before it (`cumsum(mask) - 1`, as Hugging Face's `generate` computes them), so left padding,
/// right padding and a soft prompt held in the cache all give the same positions to the same
/// tokens.
pub trait CausalLm: Backbone + Send + Sync {
    /// The family (`llama`): the bundle manifest's `model_family`.
    fn family(&self) -> &'static str;
    /// The checkpoint's own `model_type`.
    fn model_type(&self) -> &str;
    fn device(&self) -> &Device;
    /// Longest sequence (prompt, input and generated tokens) the model takes.
    fn max_sequence_len(&self) -> usize;
    fn cache_shape(&self) -> CacheShape;
    /// Final (normed) hidden states `[b, s, d]` for `inputs_embeds [b, s, d]`, with
    /// `attention_mask [b, past + s]` (u32, 1 = attend) covering the cached positions and the new
    /// ones. With `cache`, attends to its keys/values and appends the new ones to it. Rows at
    /// padded positions are undefined.
    fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor>;
    /// Logits `[.., vocab]` of hidden states `[.., d]` through the language-model head.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor>;
    /// The language-model head's table `[vocab, d]` (the original embeddings when tied: folding
    /// changes the input table only).
    fn lm_head_table(&self) -> &Tensor;
    /// Whether the checkpoint ties the head to the input embeddings.
    fn tied_embeddings(&self) -> bool;
    /// Holds the frozen linear weights in `autocast`'s dtype and runs the backbone's matrix
    /// products in it, norms, softmax and activations staying f32 ([`adept_nn::autocast`]).
    /// Chosen once, after loading. Families without it refuse [`Autocast::Bf16`] with an error
    /// that names them.
    fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        autocast_unsupported(self.family(), autocast)
    }
    /// The precision chosen with [`Self::set_autocast`] (f32 when never set).
    fn autocast(&self) -> Autocast {
        Autocast::F32
    }
    fn as_any(&self) -> &dyn std::any::Any;
    fn clone_box(&self) -> Box<dyn CausalLm>;
    /// Emits one decoder step into `g` from the adapter stage's output for the new tokens:
    /// layers with the key/value cache, final norm and the language-model head (the original
    /// table); returns the logits and each layer's present keys/values.
    #[cfg(feature = "onnx")]
    fn emit_decoder(
        &self,
        g: &mut adept_onnx::GraphBuilder,
        inputs: &onnx::DecoderInputs,
        opts: &onnx::EmitOptions,
    ) -> anyhow::Result<onnx::DecoderOutputs>;
}

impl Clone for Box<dyn CausalLm> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A sequence-to-sequence decoder's cache, one entry per decoder layer, in optimum's layout:
/// `self_attn[i]` = the self-attention `(key, value)` of the positions decoded so far, each
/// `[batch, heads, past, head_dim]` (`past_key_values.{i}.decoder.key|value`), and `cross_attn[i]`
/// = the cross-attention `(key, value)` of the encoder output, each `[batch, heads, s_enc,
/// head_dim]` (`past_key_values.{i}.encoder.key|value`), computed once on the first cached step.
/// An empty cache means no past.
#[derive(Clone, Debug, Default)]
pub struct Seq2SeqCache {
    pub self_attn: Vec<(Tensor, Tensor)>,
    pub cross_attn: Vec<(Tensor, Tensor)>,
}

impl Seq2SeqCache {
    pub fn new() -> Self {
        Self::default()
    }
    /// Decoder positions already in the cache (0 when empty).
    pub fn past_len(&self) -> usize {
        self.self_attn.first().map_or(0, |(k, _)| k.dims()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.self_attn.is_empty() && self.cross_attn.is_empty()
    }
    /// Keeps batch rows `rows` (u32 `[n]`, indices into the batch, repeats allowed) of every
    /// tensor: beam search's reordering. The cross-attention entries are reordered too.
    pub fn select_rows(&self, rows: &Tensor) -> Result<Self> {
        let pick = |v: &[(Tensor, Tensor)]| -> Result<Vec<(Tensor, Tensor)>> {
            v.iter()
                .map(|(k, v)| Ok((k.index_select(rows, 0)?, v.index_select(rows, 0)?)))
                .collect()
        };
        Ok(Self {
            self_attn: pick(&self.self_attn)?,
            cross_attn: pick(&self.cross_attn)?,
        })
    }
}

/// Shape of a sequence-to-sequence decoder's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq2SeqCacheShape {
    pub decoder_layers: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// An encoder–decoder language-model family behind the seam (T5). The encoder runs from input
/// embeddings (the ADePT prompt and offsets apply there only); the decoder reads token ids
/// through the original shared table and has a [`Seq2SeqCache`] for generation; the LM head
/// keeps the original table, tied or not. [`Backbone::word_embedding_table`] is the encoder's
/// input table (the one ADePT folds into).
pub trait Seq2SeqLm: Backbone + Send + Sync {
    /// The family (`t5`): the bundle manifest's `model_family`.
    fn family(&self) -> &'static str;
    /// The checkpoint's own `model_type`.
    fn model_type(&self) -> &str;
    fn device(&self) -> &Device;
    /// Longest encoder input (prompt included) the model takes.
    fn max_sequence_len(&self) -> usize;
    fn cache_shape(&self) -> Seq2SeqCacheShape;
    /// Encoder output `[b, s, d]` (final norm applied) for `inputs_embeds [b, s, d]` (prompt
    /// included) and `attention_mask [b, s]` (u32, 1 = attend). Padded rows are undefined.
    fn encode(&self, inputs_embeds: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;
    /// Decoder final hidden states `[b, t, d]` (before the head's scaling) for `decoder_ids
    /// [b, t]` (u32), attending causally to the cached and new decoder positions and to
    /// `encoder_out [b, s, d]` where `encoder_mask [b, s]` is 1. With `cache`, reads and
    /// extends it (cross-attention keys/values computed on the first call).
    fn decode(
        &self,
        decoder_ids: &Tensor,
        encoder_out: &Tensor,
        encoder_mask: &Tensor,
        cache: Option<&mut Seq2SeqCache>,
    ) -> Result<Tensor>;
    /// Logits `[.., vocab]` of decoder hidden states `[.., d]` through the LM head.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor>;
    /// The LM head's table `[vocab, d]` (the original shared table when tied).
    fn lm_head_table(&self) -> &Tensor;
    /// Whether the head is tied to the shared table (and scales hidden states by `d^-0.5`).
    fn tied_embeddings(&self) -> bool;
    /// First decoder input of every sequence.
    fn decoder_start_token_id(&self) -> u32;
    fn eos_token_id(&self) -> u32;
    fn pad_token_id(&self) -> u32;
    /// Holds the frozen linear weights in `autocast`'s dtype and runs the backbone's matrix
    /// products in it, norms, softmax and activations staying f32 ([`adept_nn::autocast`]).
    /// Chosen once, after loading. Families without it refuse [`Autocast::Bf16`] with an error
    /// that names them.
    fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        autocast_unsupported(self.family(), autocast)
    }
    /// The precision chosen with [`Self::set_autocast`] (f32 when never set).
    fn autocast(&self) -> Autocast {
        Autocast::F32
    }
    fn as_any(&self) -> &dyn std::any::Any;
    fn clone_box(&self) -> Box<dyn Seq2SeqLm>;
}

impl Clone for Box<dyn Seq2SeqLm> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}
