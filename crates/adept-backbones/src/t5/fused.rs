//! Fused CPU ops for the T5 layer, each with a hand-written backward that returns only the
//! activation's gradient (what they capture — the position bias, the padding mask — is frozen).
//!
//! - RMS layer norm: T5's `w · x / sqrt(mean(x²) + eps)` is Llama's RMSNorm, so [`rms_norm`] is
//!   [`crate::llama::fused::rms_norm`] (one pass each way instead of six ops that also compute a
//!   gradient for the frozen weight).
//! - [`attention_probs`]: `softmax(scores + position_bias + padding)` in one pass; composite, the
//!   broadcast adds allocate two `[b, h, q, k]` tensors forward and accumulate gradients for the
//!   (frozen) biases backward.
//! - [`gated_gelu`]: `gelu_tanh(a) ⊙ b` (T5 v1.1's gated feed-forward), and [`relu`] (T5 v1's):
//!   one pass each way, where candle's composite backward takes three to six.
//!
//! Off the CPU or for other dtypes each function falls back to the composite ops, which compute
//! the same values; the tests in `tests/t5.rs` compare both, values and input gradients.

use adept_nn::kernels::{
    exp_f32, f32_slice, gated, grad_op2, par_rows, pointwise, use_fused, Pointwise, SoftmaxGrad,
};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use std::sync::Arc;

/// T5's RMS layer norm `w · x / sqrt(mean(x²) + eps)` over the last dimension of `x [.., d]`,
/// `w [d]` frozen: the same op as Llama's RMSNorm.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    crate::llama::fused::rms_norm(x, weight, eps)
}

// ---------------------------------------------------------------------------------------------
// Attention probabilities with the relative position bias.

/// `softmax(scores + position_bias + pad)` over the last dimension of `scores [b, h, q, k]`,
/// with `position_bias [1, h, q, k]` (or none) and the padding bias `pad [b, k]` (0 where
/// attended, a large negative value where padded), both frozen; the composite reference is
/// [`attention_probs_composite`].
pub fn attention_probs(
    scores: &Tensor,
    position_bias: Option<&Tensor>,
    pad: &Tensor,
) -> Result<Tensor> {
    let (b, h, q, k) = scores.dims4()?;
    if pad.dims() != [b, k] {
        candle_core::bail!(
            "attention padding bias has shape {:?}, expected [{b}, {k}]",
            pad.dims()
        );
    }
    if let Some(pb) = position_bias {
        if pb.dims() != [1, h, q, k] {
            candle_core::bail!(
                "position bias has shape {:?}, expected [1, {h}, {q}, {k}]",
                pb.dims()
            );
        }
    }
    if !use_fused(scores) {
        return attention_probs_composite(scores, position_bias, pad);
    }
    let position = match position_bias {
        Some(pb) => Some(Arc::new(pb.flatten_all()?.to_vec1::<f32>()?)),
        None => None,
    };
    scores.contiguous()?.apply_op1(BiasedSoftmax {
        pad: Arc::new(pad.flatten_all()?.to_vec1::<f32>()?),
        position,
        heads: h,
        q,
        k,
    })
}

/// The composite reference of [`attention_probs`]: broadcast adds and adept-nn's softmax.
pub fn attention_probs_composite(
    scores: &Tensor,
    position_bias: Option<&Tensor>,
    pad: &Tensor,
) -> Result<Tensor> {
    let scores = match position_bias {
        Some(pb) => scores.broadcast_add(pb)?,
        None => scores.clone(),
    };
    adept_nn::attention_probs(&scores, pad, 1.0)
}

struct BiasedSoftmax {
    /// `[b, k]`.
    pad: Arc<Vec<f32>>,
    /// `[h, q, k]`.
    position: Option<Arc<Vec<f32>>>,
    heads: usize,
    q: usize,
    k: usize,
}

impl CustomOp1 for BiasedSoftmax {
    fn name(&self) -> &'static str {
        "adept-t5-attention-probs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let k = self.k;
        let hq = self.heads * self.q;
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, k, |r, o| {
            let xr = &x[r * k..(r + 1) * k];
            let pad = &self.pad[(r / hq) * k..(r / hq + 1) * k];
            match &self.position {
                Some(pos) => {
                    let pr = &pos[(r % hq) * k..(r % hq + 1) * k];
                    for j in 0..k {
                        o[j] = xr[j] + pr[j] + pad[j];
                    }
                }
                None => {
                    for j in 0..k {
                        o[j] = xr[j] + pad[j];
                    }
                }
            }
            adept_nn::kernels::softmax_in_place(o);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad_op2(
            res,
            grad,
            &SoftmaxGrad {
                k: self.k,
                scale: 1.0,
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Feed-forward activations.

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// `tanh(u)` from [`exp_f32`] (no libm call, so loops vectorise): `1 − 2 / (e^{2u} + 1)`.
#[inline(always)]
fn tanh_f32(u: f32) -> f32 {
    1.0 - 2.0 / (exp_f32(2.0 * u) + 1.0)
}

/// GELU, tanh approximation, and its derivative at `x`.
#[inline(always)]
fn gelu_tanh_and_slope(x: f32) -> (f32, f32) {
    let t = tanh_f32(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
    let value = 0.5 * x * (1.0 + t);
    let slope =
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    (value, slope)
}

/// `gelu_tanh(a) ⊙ b` for two tensors of one shape (T5 v1.1's gated feed-forward), gradients
/// for both (`d/da = g·b·gelu'(a)`, `d/db = g·gelu(a)`); the composite reference is
/// `a.gelu()? * b`.
pub fn gated_gelu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !use_fused(a) || a.dims() != b.dims() || b.dtype() != a.dtype() {
        return a.gelu()?.mul(b);
    }
    gated(a, b, GeluTanh)
}

/// GELU (tanh approximation) as a [`Pointwise`] function.
#[derive(Clone, Copy)]
struct GeluTanh;

impl Pointwise for GeluTanh {
    const NAME: &'static str = "adept-t5-gated-gelu";
    const GRAD_NAME: &'static str = "adept-t5-gated-gelu-grad";
    const SLOPE_FROM_OUTPUT: bool = false;
    fn value(x: f32) -> f32 {
        gelu_tanh_and_slope(x).0
    }
    fn slope(x: f32) -> f32 {
        gelu_tanh_and_slope(x).1
    }
}

/// `max(x, 0)` with a one-pass backward `g · [y > 0]` (T5 v1's feed-forward); the composite
/// reference is candle's `relu`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !use_fused(x) {
        return x.relu();
    }
    pointwise(x, Relu)
}

/// ReLU as a [`Pointwise`] function; its slope `[y > 0]` reads the output.
#[derive(Clone, Copy)]
struct Relu;

impl Pointwise for Relu {
    const NAME: &'static str = "adept-t5-relu";
    const GRAD_NAME: &'static str = "adept-t5-relu-grad";
    const SLOPE_FROM_OUTPUT: bool = true;
    fn value(x: f32) -> f32 {
        x.max(0.0)
    }
    fn slope(y: f32) -> f32 {
        if y > 0.0 {
            1.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Values of `f` and `g` on the same input, and the input gradients of `Σ (out ⊙ w)` for a
    /// fixed random `w`: (value difference, gradient difference, largest gradient).
    fn compare(
        x: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
        g: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> (f32, f32, f32) {
        let w = Tensor::randn(0f32, 1., x.dims(), x.device()).unwrap();
        let run = |op: &dyn Fn(&Tensor) -> Result<Tensor>| {
            let v = Var::from_tensor(x).unwrap();
            let y = op(v.as_tensor()).unwrap();
            let loss = (&y * &w).unwrap().sum_all().unwrap();
            let grad = loss.backward().unwrap().get(v.as_tensor()).unwrap().clone();
            (y, grad)
        };
        let (yf, gf) = run(&f);
        let (yc, gc) = run(&g);
        let scale = gc
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        (max_diff(&yf, &yc), max_diff(&gf, &gc), scale)
    }

    #[test]
    fn attention_probs_with_position_bias_match_the_composite_op() {
        let dev = Device::Cpu;
        let (b, h, q, k) = (2, 3, 5, 7);
        let scores = (Tensor::randn(0f32, 1., (b, h, q, k), &dev).unwrap() * 3.0).unwrap();
        let pos = Tensor::randn(0f32, 1., (1, h, q, k), &dev).unwrap();
        // Row 1 has its last two keys padded.
        let pad = Tensor::new(
            &[
                [0f32, 0., 0., 0., 0., 0., 0.],
                [0., 0., 0., 0., 0., -1e9, -1e9],
            ],
            &dev,
        )
        .unwrap();
        for bias in [Some(&pos), None] {
            let (dv, dg, scale) = compare(
                &scores,
                |s| attention_probs(s, bias, &pad),
                |s| attention_probs_composite(s, bias, &pad),
            );
            assert!(dv < 1e-6, "probabilities differ by {dv}");
            assert!(dg < 1e-5 * scale.max(1.0), "gradients differ by {dg}");
            assert!(scale > 0.0);
        }
        let probs = attention_probs(&scores, Some(&pos), &pad).unwrap();
        let padded: Vec<f32> = probs
            .get(1)
            .unwrap()
            .narrow(2, 5, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            padded.iter().all(|&p| p == 0.0),
            "padded keys get {padded:?}"
        );
        let err = attention_probs(&scores, Some(&pos.narrow(3, 0, 6).unwrap()), &pad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("position bias has shape"), "{err}");
    }

    #[test]
    fn rms_norm_matches_the_composite_t5_layer_norm() {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1., (3, 4, 16), &dev).unwrap() * 2.0).unwrap();
        let w = Tensor::randn(1f32, 0.2, 16, &dev).unwrap();
        let (dv, dg, scale) = compare(
            &x,
            |x| rms_norm(x, &w, 1e-6),
            |x| super::super::rms_norm(x, &w, 1e-6),
        );
        assert!(dv < 1e-5, "values differ by {dv}");
        assert!(dg < 1e-5 * scale.max(1.0), "gradients differ by {dg}");
    }

    #[test]
    fn gated_gelu_matches_the_composite_op_for_both_inputs() {
        let dev = Device::Cpu;
        // 3·4·1500 elements: more than one 4096-block, with a tail.
        let a = (Tensor::randn(0f32, 1., (3, 4, 1500), &dev).unwrap() * 3.0).unwrap();
        let b = Tensor::randn(0f32, 1., (3, 4, 1500), &dev).unwrap();
        let (dv, dg, scale) = compare(&a, |a| gated_gelu(a, &b), |a| a.gelu()?.mul(&b));
        assert!(dv < 1e-5, "values differ by {dv}");
        assert!(dg < 1e-5 * scale.max(1.0), "gradient wrt a differs by {dg}");
        let (dv, dg, scale) = compare(&b, |b| gated_gelu(&a, b), |b| a.gelu()?.mul(b));
        assert!(dv < 1e-5, "values differ by {dv}");
        assert!(dg < 1e-5 * scale.max(1.0), "gradient wrt b differs by {dg}");
    }

    #[test]
    fn relu_matches_candles_relu() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (5, 3000), &dev).unwrap();
        let (dv, dg, scale) = compare(&x, relu, |x| x.relu());
        assert_eq!(dv, 0.0);
        assert_eq!(dg, 0.0);
        assert!(scale > 0.0);
    }
}
