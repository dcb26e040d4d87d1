//! The ONNX side of each candle module, one function per module, in the order the data flows.
//!
//! | candle (`forward`)                                  | graph (`emit`)                          |
//! |-----------------------------------------------------|-----------------------------------------|
//! | `Backbone::word_embeddings` + `Adapter::apply`      | [`adapter::input_embeddings`]           |
//! | `Adapter::extend(mask, 1)` / `extend(types, 0)`     | [`adapter::extend_with_prompt`]         |
//! | `BertEncoder::forward_embeds`                       | [`bert::encoder_from_embeds`] ([`GraphBackbone`]) |
//! | `hidden.narrow(1, l, s)` + pooling + `Head::forward`| [`head::pool_and_classify`]             |
//!
//! [`classifier_graph`] strings them together exactly as `Classifier::forward` does; the
//! parity tests hold the two executions together.
//!
//! New backbone families (T5 encoder, Llama decoder) implement [`GraphBackbone`]: the adapter
//! stage (folded table, unfolded MLP, DePT offsets, prompt) does not change, because it acts
//! on word embeddings before anything family-specific happens.

pub mod adapter;
pub mod bert;
pub mod head;

use adept_bundle::{FoldMode, WeightDtype, INPUT_NAMES, OUTPUT_NAME};
use adept_onnx::{DataType, Dim, GraphBuilder, ModelBuilder, MS_DOMAIN};
use adept_train::Classifier;
use anyhow::Result;
use candle_core::{DType, Tensor};

/// Values the encoder receives: `[batch, l + s]` inputs after the adapter stage.
#[derive(Clone, Debug)]
pub struct EncoderInputs {
    /// `float [batch, l + s, d]`: `[P; E + f(E)]`.
    pub embeds: String,
    /// `int64 [batch, l + s]`: 1 for the prompt and real tokens, 0 for padding.
    pub attention_mask: String,
    /// `int64 [batch, l + s]`: 0 for the prompt, the tokenizer's types after it.
    pub token_type_ids: String,
}

/// A backbone family that can emit itself into a graph, starting from input embeddings (the
/// adapter stage sits before it). BERT implements it; T5's encoder and Llama will.
pub trait GraphBackbone {
    /// `bert`, `t5`, `llama` (the manifest's `model_family`).
    fn family(&self) -> &'static str;
    fn hidden_size(&self) -> usize;
    /// The word-embedding table `[vocab, d]` the adapter reads (and ADePT folds into).
    fn word_table(&self) -> &Tensor;
    /// Emits the encoder and returns its last hidden states `float [batch, l + s, d]`.
    fn emit_from_embeds(
        &self,
        g: &mut GraphBuilder,
        inputs: &EncoderInputs,
        opts: &GraphOptions,
    ) -> Result<String>;
}

/// Flat `f32` values of a tensor (any dtype/layout), for initializers.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
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

/// Graph-level options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GraphOptions {
    pub fold: FoldMode,
    pub dtype: WeightDtype,
    /// Default-domain opset (17 or later).
    pub opset: i64,
    pub attention: AttentionKind,
}

/// The whole classifier as an ONNX model: `input_ids`, `attention_mask`, `token_type_ids`
/// (`int64 [batch, sequence]`) → `logits` (`float [batch, n]`).
///
/// The order of the calls is the order of `Classifier::forward`.
pub fn classifier_graph(model: &Classifier, opts: &GraphOptions) -> Result<ModelBuilder> {
    let mut builder = ModelBuilder::new("adept_classifier", opts.opset).add_opset(MS_DOMAIN, 1);
    let g = builder.graph();
    if opts.dtype == WeightDtype::F16 {
        g.set_weight_dtype(DataType::Float16)?;
    }
    let seq: Vec<Dim> = vec!["batch".into(), "sequence".into()];
    let [ids, mask, types] = INPUT_NAMES;
    let ids = g.input(ids, DataType::Int64, &seq)?;
    let mask = g.input(mask, DataType::Int64, &seq)?;
    let types = g.input(types, DataType::Int64, &seq)?;

    // tokens → word embeddings → adapter: [P; E + f(E)], mask and types extended.
    let embeds = adapter::input_embeddings(g, model, &ids, opts.fold)?;
    let encoder_inputs =
        adapter::extend_with_prompt(g, &model.adapter, &ids, &embeds, &mask, &types)?;
    // backbone
    let hidden = model.backbone.emit_from_embeds(g, &encoder_inputs, opts)?;
    // drop the prompt rows → pooling → head
    let logits = head::pool_and_classify(g, model, &hidden, &mask)?;

    let n = model.head.weight.dims()[0];
    g.output_as(
        &logits,
        OUTPUT_NAME,
        DataType::Float,
        &["batch".into(), n.into()],
    )?;
    g.set_doc_string(format!(
        "adept classifier: {} backbone, method {}, {}-token prompt, offsets {}, pooling {:?}, {} outputs",
        model.backbone.family(),
        model.adapter.method(),
        model.adapter.prompt_len(),
        opts.fold,
        model.pooling,
        n
    ));
    Ok(builder)
}
