//! Mixed precision for a frozen backbone ("autocast", as in PyTorch's `torch.autocast`).
//!
//! With [`Autocast::Bf16`] a backbone holds the weights of its linear layers in bf16 (half the
//! memory of f32) and runs its matrix products in bf16, while everything that is trained or
//! reduced stays f32:
//!
//! - **Where the casts go.** The residual stream between layers stays f32. A [`crate::FrozenLinear`]
//!   holding a bf16 weight casts its input to bf16, multiplies (bf16 operands, f32 accumulation,
//!   bf16 result: candle's CUDA cuBLAS GEMM; on the CPU candle 0.11 widens both operands to f32,
//!   multiplies and rounds the result to bf16, the same numbers), and casts the product back to
//!   f32 before adding its (f32) bias. The attention products (`q·kᵀ`, `p·v`) go through
//!   [`Autocast::matmul`], which casts both operands the same way. LayerNorm / RMSNorm, softmax,
//!   GELU / SiLU, the rotary embedding, the residual additions, the loss and the adapter run in
//!   f32 (PyTorch autocast keeps norms and softmax in f32 for the same reason: their reductions
//!   lose too much in 8 mantissa bits).
//! - **Gradients.** candle's `to_dtype` is differentiable (its backward casts the gradient back),
//!   so the gradient flowing through the backbone is bf16 inside each product and f32 between
//!   them, and it reaches the adapter as f32. Frozen tensors get no gradient either way: the
//!   bf16 weight is captured by the frozen-linear op, whose backward computes `grad · W` only.
//! - **Kept in f32.** Embedding tables (they are gathered, not multiplied, and the adapter reads
//!   and folds them), norm weights and biases (tiny). The optimizer state and the checkpoint
//!   hold only the adapter and head, which are f32 anyway; an export reads the original
//!   checkpoint again, so a deployed bundle is f32 whatever the training precision.
//!
//! bf16 keeps 8 significant bits (a relative rounding error of at most u = 2⁻⁸ ≈ 0.4% per
//! value), so a bf16 backbone's outputs differ from f32 by ~u to a few u relative, and a few
//! training steps agree to ~1e-2: the tests state the bounds they check and derive them.

use candle_core::{DType, Result, Tensor};

/// Precision of a frozen backbone's weights and products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Autocast {
    /// Everything in f32 (the default).
    #[default]
    F32,
    /// Linear-layer weights held in bf16; matrix products in bf16; the rest in f32.
    Bf16,
}

impl Autocast {
    /// The names `--autocast` takes and the run manifest records.
    pub const NAMES: &'static [&'static str] = &["f32", "bf16"];

    /// `"f32"` or `"bf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Autocast::F32 => "f32",
            Autocast::Bf16 => "bf16",
        }
    }

    /// Parses `"f32"` (also `"off"`, `"none"`) or `"bf16"`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "off" | "none" => Ok(Autocast::F32),
            "bf16" | "bfloat16" => Ok(Autocast::Bf16),
            other => Err(format!(
                "unknown autocast {other:?}: use f32 (no autocast) or bf16"
            )),
        }
    }

    /// Whether anything is cast (not [`Autocast::F32`]).
    pub fn is_on(self) -> bool {
        self != Autocast::F32
    }

    /// The dtype weights are held in and products run in.
    pub fn dtype(self) -> DType {
        match self {
            Autocast::F32 => DType::F32,
            Autocast::Bf16 => DType::BF16,
        }
    }

    /// `a · b` (candle's batched `matmul`) with both operands cast to [`Self::dtype`] and the
    /// product cast back to `a`'s dtype; plain `a.matmul(b)` when off. Differentiable in both
    /// operands (the casts pass the gradient through, cast back).
    pub fn matmul(self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let dt = self.dtype();
        if a.dtype() == dt && b.dtype() == dt {
            return a.matmul(b);
        }
        a.to_dtype(dt)?
            .matmul(&b.to_dtype(dt)?)?
            .to_dtype(a.dtype())
    }
}

/// Logs once per process (at info level) that under `autocast` a family's fused f32 layer ops
/// (`what`) do not apply and its layers run from composite ops: same computation, bf16
/// products, the frozen weights still without gradients.
pub fn note_composite_layers(autocast: Autocast, what: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::info!(
            "{autocast} autocast: {what} do not apply, the layers run from composite ops (bf16 \
             products; norms, softmax and activations in f32; the frozen weights still get no \
             gradient)"
        )
    });
}

impl std::fmt::Display for Autocast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Autocast {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Autocast::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for n in Autocast::NAMES {
            assert_eq!(Autocast::parse(n).unwrap().as_str(), *n);
        }
        assert_eq!(Autocast::parse("off").unwrap(), Autocast::F32);
        let err = Autocast::parse("fp16").unwrap_err();
        assert!(err.contains("\"fp16\"") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn bf16_matmul_is_close_to_f32_and_passes_f32_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 1., (2, 3, 16), &dev)?;
        let b = Tensor::randn(0f32, 1., (2, 16, 5), &dev)?;
        let exact = Autocast::F32.matmul(a.as_tensor(), &b)?;
        let cast = Autocast::Bf16.matmul(a.as_tensor(), &b)?;
        assert_eq!(cast.dtype(), DType::F32);
        // Each operand rounds by at most u = 2^-8 relative and the result once more: a product
        // of 16 terms of size ~1 differs by well under 16 · 3 · 2^-8 ≈ 0.2 (worst
        // case); typically ~0.02.
        let diff = (&exact - &cast)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff > 0.0 && diff < 0.1, "bf16 product differs by {diff}");
        let g = cast.sum_all()?.backward()?;
        let ga = g.get(a.as_tensor()).expect("gradient reaches a");
        assert_eq!(ga.dtype(), DType::F32);
        let g_ref = exact.sum_all()?.backward()?;
        let d = (ga - g_ref.get(a.as_tensor()).unwrap())?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(d < 0.1, "gradient differs by {d}");
        Ok(())
    }
}
