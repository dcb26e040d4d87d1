//! Differentiable building blocks for frozen backbones.
//!
//! candle's fused kernels (`candle_nn::LayerNorm`, `ops::softmax_last_dim`, `rotary_emb::rope`) have no
//! backward pass: gradients silently stop at them. Adapters sit *below* the backbone (they change the
//! input embeddings), so every op between the loss and the input must be differentiable. This crate
//! provides those ops written from differentiable primitives, plus [`FrozenLinear`]: a linear layer
//! whose backward computes only the gradient of its *input*, never of its (frozen) weight, which
//! saves a third of the backbone's backward FLOPs.
//!
//! On the CPU the frozen encoder layer runs faster still as one op, [`encoder_layer`]: the whole
//! post-LayerNorm block with a hand-written input-only backward, computing only unpadded rows,
//! its products on an optional run-time-loaded BLAS ([`blas`]) or the `gemm` crate.
//!
//! The crate has one job: numerics that both the backbones and the adapters share.

pub mod blas;
mod encoder_layer;
mod frozen_linear;
mod fused;
mod ops;

pub use encoder_layer::{encoder_layer, EncoderLayerWeights};
pub use frozen_linear::{use_plain_matmul_backward, FrozenLinear};
pub use fused::{attention_probs, erf_f32, frozen_layer_norm, gelu_erf};
pub use ops::{dropout_mask, layer_norm, masked_mean, softmax_last_dim};
