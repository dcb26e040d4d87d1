//! The ONNX side of each candle module, one function per module, in the order the data flows.
//!
//! | candle (`forward`)                                  | graph (`emit`)                          |
//! |-----------------------------------------------------|-----------------------------------------|
//! | `Backbone::word_embeddings` + `Adapter::apply`      | [`adapter::input_embeddings`]           |
//! | `Adapter::extend(mask, 1)` / `extend(types, 0)`     | [`adapter::extend_with_prompt`] (full graph); lean graph (default): [`adapter::constant_prompt_inputs`] extends the mask only and hands `P` to the encoder as a constant |
//! | `Encoder::forward_embeds_from`                      | `Encoder::emit_from_embeds` (each family's `onnx.rs` in adept-backbones, e.g. `bert::onnx::encoder_from_embeds`); packed graph (default): `bert::onnx::encoder_packed`, the row-wise work on the positions that hold tokens |
//! | the prompt rows of `forward_embeds_from`'s embeddings and first-layer q/k/v projections (input-independent) | lean graph: computed at export by `bert::onnx::prompt_rows` (candle), stored as `embeddings.prompt_output`, `encoder.layer.0.attention.self.prompt_{query,key,value}` |
//! | `hidden.narrow(1, l, s)` + pooling + `Head::forward`| [`head::pool_and_classify`]             |
//! | `CausalLmModel::embed_tokens` (`[E+f(E); P]` rows)  | [`crate::decoder::decoder_graph`] (`Gather` on the input table; token MLP when unfolded) |
//! | `CausalLm::forward_embeds` with a `KvCache` + `CausalLm::logits` | `CausalLm::emit_decoder` (e.g. `adept_backbones::llama::onnx::emit_decoder`) |
//! | `Adapter::apply` + `T5Model::encode` (seq2seq encoder)  | [`crate::seq2seq::encoder_graph`] (adapter stage as above, then `adept_backbones::t5::onnx::emit_encoder`) |
//! | `T5Model::decode` with a `Seq2SeqCache` + `T5Model::logits` | [`crate::seq2seq::decoder_graph`] (`adept_backbones::t5::onnx::emit_decoder`) |
//!
//! [`classifier_graph`] strings them together exactly as `Classifier::forward` does; the
//! parity tests hold the two executions together.
//!
//! The adapter stage (folded table, unfolded MLP, DePT offsets, prompt) acts on word
//! embeddings before anything family-specific happens, so it is written once here; each
//! backbone family emits itself in its own folder (`adept_backbones::<family>::onnx`).

pub mod adapter;
pub mod head;

pub use adept_backbones::onnx::{values, AttentionKind, EmitOptions, EncoderInputs};
use adept_bundle::{FoldMode, Int8Activations, WeightDtype, INPUT_NAMES, OUTPUT_NAME};
use adept_onnx::{
    ActivationQuantization, DataType, Dim, MatMulQuantization, ModelBuilder, MS_DOMAIN,
};
use adept_train::Classifier;
use anyhow::Result;

/// Graph-level options.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphOptions {
    pub fold: FoldMode,
    pub dtype: WeightDtype,
    /// With [`WeightDtype::Int8`]: how the products' inputs are quantized (per row, per
    /// tensor, or in blocks); see [`int8_quantization`].
    pub int8_activations: Int8Activations,
    /// With [`WeightDtype::Int8`]: products whose weight name contains one of these stay float
    /// (on top of the classifier head); see [`int8_quantization`].
    pub int8_keep_float: Vec<String>,
    /// With [`Int8Activations::PerTensor`]: the products (weight-name parts) whose input is
    /// quantized per row instead; `None`: [`int8_per_row_default`] for the model's layer count.
    /// Ignored by the other forms.
    pub int8_per_row: Option<Vec<String>>,
    /// Default-domain opset (17 or later).
    pub opset: i64,
    pub attention: AttentionKind,
    /// The lean graph: what of the soft prompt's rows does not depend on the input (their
    /// embedding output and first-layer query/key/value projections) is computed at export and
    /// stored as initializers, so the graph runs the embeddings and the first layer's
    /// projections on the input rows only. `false`: the full graph, the prompt concatenated in
    /// front of the input rows and run through everything (the reference the lean graph is
    /// tested against). Same logits either way (to f32 rounding).
    pub lean: bool,
    /// The packed graph (default): the encoder's row-wise work runs on the positions that hold
    /// tokens, not on padding (see `EmitOptions::pack_rows`; BERT family, multi-head
    /// attention, two layers or more). `false`: every position of the padded batch. Same
    /// logits either way (to f32 rounding; per-tensor int8 scales are taken over the token
    /// rows alone, so there they differ as between batches).
    pub pack_rows: bool,
}

impl Default for GraphOptions {
    fn default() -> Self {
        Self {
            fold: FoldMode::None,
            dtype: WeightDtype::F32,
            int8_activations: Int8Activations::PerRow,
            int8_keep_float: Vec::new(),
            int8_per_row: None,
            opset: crate::DEFAULT_OPSET,
            attention: AttentionKind::default(),
            lean: true,
            pack_rows: true,
        }
    }
}

/// Whether the classifier graph `g` was emitted packed: the family packed its rows (BERT
/// family, multi-head attention, two layers or more), whose indices are the graph's only
/// `NonZero` (in the branch of its `If` that batches with padding take). What was emitted, not
/// what was asked for (`GraphOptions::pack_rows`).
pub fn is_packed(g: &adept_onnx::GraphBuilder) -> bool {
    g.all_nodes()
        .iter()
        .any(|node| node.op_type.as_deref() == Some("NonZero"))
}

/// What `adept export --dtype int8` keeps float unless told otherwise
/// (`--int8-keep-float`): the first layer's feed-forward output product. On MiniLM (l = 60
/// ADePT adapters, SST-2) keeping it float alone lowers the mean |int8 − f32| logit-margin error
/// by 21–39 % (1000 training sentences; 22–31 % on dev), more than any other single product,
/// for ~4 % of the int8 speed; see [`int8_quantization`]. With the pair-bounded weights
/// ([`adept_onnx::quantize_per_channel_pairs`]) it gains less (−21 % on the quickstart adapter,
/// −4 % on an l = 20 one, where with 7-bit weights it had raised the error by 14 %) for ~3 %.
pub const INT8_KEEP_FLOAT_DEFAULT: &[&str] = &["layer.0.output.dense"];

/// What `--dtype int8` quantizes: every encoder product (attention projections, feed-forward)
/// with per-channel int8 weights and per-row (per-token) symmetric uint8 activations
/// ([`ActivationQuantization::PerRow`]), or, with `--int8-blocks N`
/// ([`Int8Activations::Blocks`]), weights and activations both in blocks of N inputs
/// ([`ActivationQuantization::Blocks`], `com.microsoft:MatMulNBits`), or, with
/// `--int8-activations per-tensor` ([`Int8Activations::PerTensor`]), one asymmetric uint8 scale
/// per input tensor (`DynamicQuantizeLinear`, fused by ONNX Runtime into
/// `DynamicQuantizeMatMul`; the feed-forward's first bias then follows its product as an `Add`
/// that the kernel takes in, and the GELU is a plain `Gelu`). The word-embedding table is int8 too (one scale per row, or
/// per row and block of N columns; set in [`classifier_graph`]); the head (`classifier`), the
/// adapter stage, the other embeddings and LayerNorm stay float. Per row and in blocks a
/// sentence's logits do not depend on the other sentences of its batch; per tensor they do (one
/// `DynamicQuantizeLinear` scale per batch moved them by up to 4e-2 logits on the adapter below,
/// 0.16 on the int8 test's l = 20 run), which is the price of its speed: 1.2–1.3× the per-row
/// bundle, and the only int8 form that is 1.2× ONNX Runtime's own `quantize_dynamic` on the
/// `torch.onnx.export` graph (README, "Serving on CPU"; docs/serving.md).
///
/// Measured on the 872 SST-2 dev sentences, a 150-step l = 60 ADePT adapter (f32 accuracy
/// 76.15), batches of 32, ONNX Runtime 1.31 (agreement = int8 label = f32 label):
///
/// | variant                                   | agree % | acc    | max Δlogit | batch-mate Δ |
/// |-------------------------------------------|---------|--------|------------|--------------|
/// | per tensor, all products int8             | 98.74   | 75.80  | 0.33       | 4.2e-2       |
/// | per row, all products int8, symmetric     | 98.51   | 75.34  | 0.15       | 0            |
/// | per row, GELU output shifted, float table | 98.39   | 76.15  | 0.15       | 0            |
/// | per row + int8 table (the default)        | 98.74   | 76.03  | 0.16       | 0            |
/// | per tensor, q/k/v float                   | 98.97   | 75.80  | 0.27       | 2.1e-2       |
/// | per row, layer 0 float                    | 99.08   | 76.15  | 0.08       | 0            |
/// | blocks of 128, float table                | 99.31   | 75.92  | 0.09       | 0            |
/// | blocks of 64, float table                 | 99.31   | 76.15  | 0.08       | 0            |
/// | blocks of 32, float table                 | 99.66   | 76.26  | 0.06       | 0            |
/// | Python `quantize_dynamic` on the f32 graph| 97.94   | 76.61  | 0.28       | 7.9e-2       |
///
/// Per row, the error is spread over all products (keeping one class float, q/k/v, attention
/// output or feed-forward input, moved the agreement by at most +0.7 points; layers 0–1 float
/// 99.20 %): the flips are sentences within ~0.15 logits of the boundary. Blocks make both
/// roundings local, so an outlier channel no longer coarsens its whole row or column: blocks of
/// 32 reached 99.2–99.7 % on three adapters (this one; the int8 test's 60-step run, 99.54 % with
/// the table in blocks too; a 150-step l = 20 run) where per row gave 98.4–98.7 %. They cost
/// speed on CPU (ONNX Runtime's MatMulNBits kernel against MatMulIntegerToFloat; see
/// docs/serving.md). Per row halves the per-tensor logit error; symmetric, it left the one-sided
/// GELU output 7 bits and lost 0.8 points, so a value the graph knows is bounded below (GELU ≥
/// −0.17, ReLU ≥ 0, [`adept_onnx::GELU_FLOOR`]) is quantized as `x − floor` on all 256 levels
/// with the floor folded into the bias.
///
/// Why one scale per tensor loses here: the soft prompt's rows carry the largest activations.
/// At the feed-forward input of layers 1–4 (the post-attention LayerNorm output) their largest
/// magnitude is 22–30 where the input rows' is 6.5–9.3, and at the GELU output of layers 1–3
/// 14–20 against 3.6–4.2 (means over 50 dev sentences), so a scale shared with the prompt rows leaves the sentence's
/// own tokens a fraction of the levels. Per row each token keeps its own scale. Smoothing the
/// outlier channels into the weights (SmoothQuant, α = 0.65–0.9, calibrated on 300 training
/// sentences) brought per tensor to 98.4–98.9 %, the per-row level, not above it.
///
/// In the graph, per row is five small ops per quantized value (`Abs`, `ReduceMax`, `Max`,
/// `Div` by the row maximum, and one per-tensor `QuantizeLinear` of step 1/127, the 1/127
/// folded into the products' weight scales: see `adept_onnx::QuantizedInput`), and no bias
/// `Add` follows a product: the feed-forward's first bias is a `Sub` of its negation before
/// the GELU (`GraphBuilder::bias_gelu`), the second product's shift correction goes into the
/// residual `Sum`'s bias (see `GraphBuilder::linear_unbiased`). MiniLM's default int8 graph has
/// 373 nodes as written in the padded form (`pack_rows: false`; the packed export, both
/// encoders under an `If`, 756), 235 after ONNX Runtime's fusions (331 with a `BiasGelu`, 379 with seven
/// ops per quantized value, 560 with bias ops after the products; the latter step shortened the
/// browser page's session start by ~180 ms).
///
/// `keep_float` (weight-name parts, `adept export --int8-keep-float`; the command's default is
/// [`INT8_KEEP_FLOAT_DEFAULT`]) stays float beside the head. Which products the error comes
/// from, measured by keeping each of MiniLM's 24 product groups float in turn (mean |int8 −
/// f32| logit margin, 1000 SST-2 training sentences, two l = 60 adapters): the first layer's
/// feed-forward output alone removes 39 % / 21 % of it, the next best 13–20 %; the rest change
/// it by −8 % to +16 % (some make it worse: rounding errors partly cancel).
///
/// `per_row` (weight-name parts, `adept export --int8-per-row`; default
/// [`int8_per_row_default`]): with per-tensor activations, the products whose input is
/// quantized per row instead, bias handling included, where most of the per-tensor error comes
/// from; ignored by the other forms.
pub fn int8_quantization(
    activations: Int8Activations,
    keep_float: &[String],
    per_row: &[String],
) -> MatMulQuantization {
    MatMulQuantization {
        min_features: 8,
        keep_float: std::iter::once(head::HEAD_PREFIX.to_string())
            .chain(keep_float.iter().cloned())
            .collect(),
        activations: match activations {
            Int8Activations::PerRow => ActivationQuantization::PerRow,
            Int8Activations::PerTensor => ActivationQuantization::PerTensor,
            Int8Activations::Blocks(n) => ActivationQuantization::Blocks(n),
        },
        per_row: per_row.to_vec(),
    }
}

/// Which products a per-tensor int8 bundle quantizes per row unless told otherwise
/// (`adept export --int8-per-row`): the feed-forward products (`layer.N.intermediate.dense`,
/// `layer.N.output.dense`) of every layer but the last two, none for a model of two layers or
/// fewer.
///
/// Measured on MiniLM (6 layers; the quickstart's 150-step l = 60 ADePT adapter on SST-2, f32
/// accuracy 77.06; 872 dev sentences, ONNX Runtime 1.31, 2 threads, an AVX2 CPU), by quantizing
/// one product group per row at a time with the rest per tensor: layers 4–5 removed nothing of
/// the mean |int8 − f32| logit error (0.0448 all per tensor; about half the logit-margin error
/// docs/serving.md reports), the feed-forward products of layers 0–3 the most (to 0.0406–0.042
/// each, with layer 3's attention projections). Per row where it matters and per tensor
/// elsewhere:
///
/// | per row on                         | agree b1 | agree b32 | mean err | sentences/s b1 |
/// |------------------------------------|----------|-----------|----------|----------------|
/// | nothing (all per tensor)           | 97.82    | 98.05     | 0.0448   | 70–80          |
/// | feed-forward of layers 0–3 (this)  | 99.08    | 98.97     | 0.0266   | 81             |
/// | + layer 3's q/k/v                  | 99.43    | 98.62     | 0.0242   | 71–74          |
/// | feed-forward of layers 0–4         | 98.74    | 98.97     | 0.0255   |                |
/// | every layer's feed-forward + attention output | 98.97 | | 0.0279   |                |
/// | everything (`--int8-activations per-row`) | 98.97 | 98.97 | 0.0249 | 61             |
///
/// (The per-row form with full-range 8-bit weights, before
/// [`adept_onnx::quantize_per_channel_pairs`]; batch 32 in input order. `adept infer`'s
/// length-sorted batches of 32 gave this default 99.20 %.)
/// (agree = int8 label equals the f32 label, at batch 1 and 32; the f32 bundle ran 51–56
/// sentences/s in the same runs.) The per-row products cost a few small ops each (the row
/// maxima) and no longer take the fused `DynamicQuantizeMatMul`; the rest keep the per-tensor
/// speed. `adept bench --serving` (two runs, same machine) timed the mix at 0.93–0.94 of every
/// product per tensor at batch 1 and 0.92–0.99 at batch 32: about the per-row error for 5–8 %
/// of the per-tensor speed, and 1.08× the per-row form at batch 1.
pub fn int8_per_row_default(layers: usize) -> Vec<String> {
    (0..layers.saturating_sub(2))
        .flat_map(|i| {
            [
                format!("layer.{i}.intermediate.dense"),
                format!("layer.{i}.output.dense"),
            ]
        })
        .collect()
}

/// The whole classifier as an ONNX model: `input_ids`, `attention_mask` and, for a backbone
/// that reads them, `token_type_ids` (`int64 [batch, sequence]`) → `logits` (`float [batch, n]`).
///
/// The order of the calls is the order of `Classifier::forward`.
pub fn classifier_graph(model: &Classifier, opts: &GraphOptions) -> Result<ModelBuilder> {
    let mut builder = ModelBuilder::new("adept_classifier", opts.opset).add_opset(MS_DOMAIN, 1);
    let g = builder.graph();
    match opts.dtype {
        WeightDtype::F32 => {}
        WeightDtype::F16 => g.set_weight_dtype(DataType::Float16)?,
        WeightDtype::Int8 => {
            let per_row = opts
                .int8_per_row
                .clone()
                .unwrap_or_else(|| int8_per_row_default(model.backbone.num_layers()));
            g.set_matmul_quantization(Some(int8_quantization(
                opts.int8_activations,
                &opts.int8_keep_float,
                &per_row,
            )));
            // The word-embedding table (folded or plain): int8 per row, 1/4 of its bytes.
            // With --int8-blocks, per row and block like the products.
            g.set_embedding_quantization(Some(adept_onnx::EmbeddingQuantization {
                block: opts.int8_activations.block(),
                ..Default::default()
            }));
        }
    }
    let seq: Vec<Dim> = vec!["batch".into(), "sequence".into()];
    let [ids, mask, types] = INPUT_NAMES;
    let ids = g.input(ids, DataType::Int64, &seq)?;
    let mask = g.input(mask, DataType::Int64, &seq)?;
    // token_type_ids only for a backbone that reads token types (the manifest lists the inputs).
    let types = if model.backbone.uses_token_types() {
        Some(g.input(types, DataType::Int64, &seq)?)
    } else {
        None
    };

    // tokens → word embeddings → adapter: [P; E + f(E)], mask and types extended.
    let embeds = adapter::input_embeddings(g, model, &ids, opts.fold)?;
    let stage = if opts.lean {
        adapter::constant_prompt_inputs
    } else {
        adapter::extend_with_prompt
    };
    let mut encoder_inputs = stage(g, &model.adapter, &ids, &embeds, &mask, types.as_deref())?;
    // Only the input rows come out (the head never reads the prompt rows), so the last layer
    // computes those alone, as `Classifier::forward` does.
    encoder_inputs.keep_from = model.adapter.prompt_len();
    // backbone
    let emit = EmitOptions {
        attention: opts.attention,
        pack_rows: opts.pack_rows,
    };
    let hidden = model.backbone.emit_from_embeds(g, &encoder_inputs, &emit)?;
    // drop the prompt rows → pooling → head
    let logits = head::pool_and_classify(g, model, &hidden, &mask)?;

    let n = model.head.weight.dims()[0];
    g.output_as(
        &logits,
        OUTPUT_NAME,
        DataType::Float,
        &["batch".into(), n.into()],
    )?;
    let packed = is_packed(g);
    g.set_doc_string(format!(
        "adept classifier: {} backbone, method {}, {}-token prompt, offsets {}, pooling {:?}, {} outputs, {} {}",
        model.backbone.family(),
        model.adapter.method(),
        model.adapter.prompt_len(),
        opts.fold,
        model.pooling,
        n,
        if opts.lean { "lean" } else { "full" },
        if packed {
            "packed graph (the padded encoder for batches without padding: If on the mask)"
        } else {
            "padded graph"
        }
    ));
    Ok(builder)
}
