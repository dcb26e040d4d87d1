//! Differentiable building blocks for frozen backbones.
//!
//! candle's fused kernels (`candle_nn::LayerNorm`, `ops::softmax_last_dim`, `rotary_emb::rope`) have no
//! backward pass: gradients silently stop at them. Adapters sit *below* the backbone (they change the
//! input embeddings), so every op between the loss and the input must be differentiable. This crate
//! provides those ops written from differentiable primitives, plus [`FrozenLinear`]: a linear layer
//! whose backward computes only the gradient of its *input*, never of its (frozen) weight, which
//! saves a third of the backbone's backward FLOPs.
//!
//! [`kernels`] holds the row kernels (softmax, LayerNorm, GELU, dot products, the AVX2 dispatch
//! and candle's row-parallel pool) that the fused ops here and a family's own fused layers
//! (`adept_backbones::bert::fused`) are written from; [`blas`] runs large products on an
//! optional run-time-loaded BLAS or the `gemm` crate.
//!
//! [`autocast`] holds the bf16 mixed-precision setting ([`Autocast`]): a frozen backbone's
//! linear weights in bf16 and its products in bf16, the rest in f32.
//!
//! The crate has one job: numerics that both the backbones and the adapters share.

pub mod autocast;
pub mod blas;
mod frozen_linear;
mod fused;
mod ops;

pub use autocast::Autocast;
pub use frozen_linear::{use_plain_matmul_backward, FrozenLinear};
pub use fused::{attention_probs, erf_f32, frozen_layer_norm, gelu_erf};
pub use ops::{dropout_mask, layer_norm, masked_mean, softmax_last_dim};

/// Row kernels for writing fused CPU ops with hand-written backward passes (used by this crate's
/// ops and by backbone families' fused layers). The `#[inline(always)]` ones are meant to be
/// inlined into a loop run under [`kernels::simd`].
pub mod kernels {
    pub use crate::fused::{
        dot, exp_f32, f32_slice, for_chunks, gated, gelu_erf_scalar, gelu_erf_slope, grad_op2,
        lane_max, lane_sum, layer_norm_grad_rows, layer_norm_rows, note_composite_path, par_rows,
        pointwise, simd, softmax_in_place, use_fused, Pointwise, RowsPtr, SoftmaxGrad,
    };
}
