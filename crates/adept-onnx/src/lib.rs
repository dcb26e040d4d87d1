//! Writing ONNX models from Rust.
//!
//! * [`proto`]: hand-written `prost` messages for the part of `onnx.proto` we write
//!   (`ModelProto`, `GraphProto`, `NodeProto`, `TensorProto`, ...), with the official field
//!   numbers and proto2 presence. No `protoc`, no build script.
//! * [`GraphBuilder`]: builds a graph with helpers named after neural-net modules
//!   ([`linear`](GraphBuilder::linear), [`layer_norm`](GraphBuilder::layer_norm),
//!   [`embedding`](GraphBuilder::embedding), [`gelu_erf`](GraphBuilder::gelu_erf),
//!   [`multi_head_attention`](GraphBuilder::multi_head_attention),
//!   [`skip_layer_norm`](GraphBuilder::skip_layer_norm),
//!   [`packed_attention`](GraphBuilder::packed_attention), ...) and the tensor operators
//!   between them, so export code reads like the model's `forward`. Module weights can be
//!   stored as `f16` ([`set_weight_dtype`](GraphBuilder::set_weight_dtype)) with the
//!   arithmetic left in `f32`.
//! * [`ModelBuilder`]: opset imports, IR version, metadata, [`to_bytes`](ModelBuilder::to_bytes)
//!   and an atomic [`save`](ModelBuilder::save).
//!
//! # Example
//!
//! ```
//! use adept_onnx::{DataType, ModelBuilder};
//!
//! let (d, heads) = (8, 2);
//! let mut model = ModelBuilder::new("encoder", 17).add_opset("com.microsoft", 1);
//! let g = model.graph();
//! let x = g.input("inputs_embeds", DataType::Float, &["batch".into(), "sequence".into(), d.into()])?;
//! let mask = g.input("attention_mask", DataType::Int64, &["batch".into(), "sequence".into()])?;
//! let mask = g.cast(&mask, DataType::Int32);
//! let w = vec![0.01f32; d * d];
//! let b = vec![0.0f32; d];
//! let h = g.scope("encoder.layer.0.attention", |g| -> anyhow::Result<String> {
//!     let q = g.linear("self.query", &x, &w, [d, d], Some(&b))?;
//!     let k = g.linear("self.key", &x, &w, [d, d], Some(&b))?;
//!     let v = g.linear("self.value", &x, &w, [d, d], Some(&b))?;
//!     let ctx = g.multi_head_attention(&q, &k, &v, Some(&mask), heads);
//!     let out = g.linear("output.dense", &ctx, &w, [d, d], Some(&b))?;
//!     let res = g.add(&out, &x);
//!     g.layer_norm("output.LayerNorm", &res, &vec![1.0; d], &b, 1e-12)
//! })?;
//! g.output_as(&h, "last_hidden_state", DataType::Float, &["batch".into(), "sequence".into(), d.into()])?;
//! let bytes = model.metadata("adept.adapter", "adept").to_bytes()?;
//! # assert!(!bytes.is_empty());
//! # anyhow::Ok(())
//! ```
//!
//! # Conventions
//!
//! * **Values are names.** Every helper takes the names of its input values (`&str`) and
//!   returns the name of its output (`String`). Nodes must be added in topological order;
//!   using an undefined value panics (a bug in the export code, not a data error).
//! * **Scopes.** [`GraphBuilder::scope`] / [`push_scope`](GraphBuilder::push_scope) set a
//!   dotted prefix. Initializers created inside are named `"<scope>.<name>"`, nodes
//!   `"<scope>/<OpType>"` (made unique with `_N`), node outputs
//!   `"<node name>_output_<i>"`, the layout PyTorch's exporter uses, with the module path
//!   written the Hugging Face way.
//! * **Weights are initializers named after the Hugging Face parameter**:
//!   `"encoder.layer.0.attention.self.query.weight"`, `"…LayerNorm.bias"`,
//!   `"embeddings.word_embeddings.weight"`. A `Linear` weight is the one exception in
//!   layout: PyTorch keeps it `[out, in]`, the graph needs `x · Wᵀ`, so
//!   [`linear`](GraphBuilder::linear) stores the transpose `[in, out]` under the same name
//!   (its `doc_string` says so) and emits a plain `MatMul`, the form ONNX Runtime fuses.
//! * **Data** are written as little-endian `raw_data`; `f16` initializers are converted
//!   from `f32` with round-to-nearest ([`GraphBuilder::initializer_f16`]).
//! * **Small constants** (GELU's `0.5`, axes, shapes) are shared, deduplicated
//!   initializers named `scalar_f32_0.5`, `const_i64_0_1`, ...
//! * **Graph inputs and outputs** are named verbatim (`input_ids`, `attention_mask`,
//!   `last_hidden_state`); dimensions may be symbolic ([`Dim`]: `"batch".into()`).
//! * **Opsets.** The default domain targets opset 17 or later ([`MIN_OPSET`];
//!   `LayerNormalization` needs 17) and the IR version follows the opset
//!   ([`ir_version_for_opset`]: 17 → IR 8). Attention uses ONNX Runtime's
//!   `com.microsoft:MultiHeadAttention`, so such models must
//!   `add_opset("com.microsoft", 1)`; [`ModelBuilder::build`] checks it.
//!
//! # ONNX Runtime notes
//!
//! * `com.microsoft:MultiHeadAttention` (CPU and onnxruntime-web) takes `query`, `key`,
//!   `value` as `[batch, sequence, hidden]`, attribute `num_heads`, and the key padding
//!   mask as input 4, which must be **`int32`** (`int64` is rejected when the session is
//!   created): `[batch, kv_sequence]` with 1 = attend / 0 = padding, or `[batch]` valid
//!   lengths of right-padded keys, or `[batch, sequence, kv_sequence]`. Masked scores get
//!   `mask_filter_value` (default −10000) added rather than −∞, so a row whose keys are
//!   all padding attends uniformly instead of producing NaN. A float `attention_bias`
//!   (input 5), `scale` and `unidirectional` (causal) are also supported on CPU; see
//!   [`MultiHeadAttention`].
//! * ONNX Runtime (1.31, CPU) rewrites `Add` + `LayerNormalization` into
//!   `SkipLayerNormalization` only when both `Add` operands have *static*, equal shapes past the
//!   batch axis (`skip_layer_norm_fusion.cc`), so never in a graph with a dynamic sequence
//!   length, and never `Sum`. That suits us: the fused node's CPU kernel is scalar (~6× slower
//!   than `Sum` + `LayerNormalization` per row), so [`GraphBuilder::skip_layer_norm`] emits the
//!   standard pair. The erf-GELU pattern after a bias `Add` *is* fused (`BiasGelu`) with
//!   dynamic shapes.
//! * `onnx.checker` does not know contrib operators, so it cannot catch mistakes in them;
//!   only loading the model in ONNX Runtime does.

pub mod graph;
pub mod model;
pub mod proto;

pub use graph::with_correction;
pub use graph::{
    names_part, quantize_blocks, quantize_per_channel, quantize_per_channel_pairs,
    quantize_per_channel_to, quantize_per_row, quantize_row_blocks, ActivationQuantization,
    EmbeddingQuantization, GraphBuilder, MatMulQuantization, MultiHeadAttention, QuantizedInput,
    GELU_FLOOR, MIN_OPSET, MS_DOMAIN, ONNX_ATTENTION_OPSET, PAIR_SUM_LEVELS,
};
pub use model::{ir_version_for_opset, write_atomic, ModelBuilder};
pub use proto::{
    all_nodes, AttributeProto, DataType, Dim, GraphProto, ModelProto, NodeProto, TensorProto,
};

#[cfg(test)]
mod tests;
