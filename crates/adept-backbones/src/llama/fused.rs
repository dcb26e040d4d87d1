//! Fused CPU ops for the Llama layer, each with a hand-written backward that returns only the
//! activation's gradient (the weights they capture are frozen).
//!
//! Written from candle primitives, RMSNorm takes six ops (and computes a gradient for its frozen
//! weight), SwiGLU three, and the rotary embedding five plus a copy for the head transpose; each
//! op allocates a fresh tensor forward and again backward. Here each is one pass each way,
//! parallel over rows on candle's thread pool. Off the CPU or for other dtypes, each function
//! falls back to the composite ops in [`super`], which compute the same values; tests compare
//! both, values and gradients.

use adept_nn::kernels::{
    exp_f32, f32_slice, gated, grad_op2, lane_sum, par_rows, use_fused, Pointwise,
};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// RMSNorm with a frozen weight.

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension of `x [.., d]`, `w [d]` frozen.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !use_fused(x) {
        return super::rms_norm_composite(x, &weight.detach(), eps);
    }
    let d = x.dim(D::Minus1)?;
    if weight.dims() != [d] {
        candle_core::bail!(
            "RMSNorm over {d} features got a weight of shape {:?}",
            weight.dims()
        );
    }
    x.contiguous()?.apply_op1(RmsNorm {
        weight: Arc::new(weight.to_vec1::<f32>()?),
        eps: eps as f32,
    })
}

struct RmsNorm {
    weight: Arc<Vec<f32>>,
    eps: f32,
}

#[inline(always)]
fn rstd(x: &[f32], eps: f32) -> f32 {
    let ms = lane_sum(x.len(), |i| x[i] * x[i]) / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "adept-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let w = &self.weight[..];
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, d, |r, o| {
            let xr = &x[r * d..(r + 1) * d];
            let rs = rstd(xr, self.eps);
            for j in 0..d {
                o[j] = xr[j] * rs * w[j];
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad_op2(
            arg,
            grad,
            &RmsNormGrad {
                weight: self.weight.clone(),
                eps: self.eps,
            },
        )
    }
}

/// `dx = r · (g⊙w − x · r² · mean(g⊙w⊙x))`, `r = rsqrt(mean(x²) + eps)`.
struct RmsNormGrad {
    weight: Arc<Vec<f32>>,
    eps: f32,
}

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "adept-rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let w = &self.weight[..];
        let d = w.len();
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, d, |r, o| {
            let (xr, gr) = (&x[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
            let rs = rstd(xr, self.eps);
            let m = lane_sum(d, |i| gr[i] * w[i] * xr[i]) / d as f32;
            let k = rs * rs * m;
            for j in 0..d {
                o[j] = rs * (gr[j] * w[j] - xr[j] * k);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: silu(gate) ⊙ up.

/// `silu(gate) ⊙ up` for two tensors of one shape, gradients for both
/// (`d/dgate = g_out·u·σ(g)(1 + g(1 − σ(g)))`, `d/dup = g_out·g·σ(g)`).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !use_fused(gate) || gate.dims() != up.dims() {
        return gate.silu()?.mul(up);
    }
    gated(gate, up, Silu)
}

#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-v))
}

/// `x·σ(x)` as a [`Pointwise`] function, slope `σ(x)(1 + x(1 − σ(x)))`.
#[derive(Clone, Copy)]
struct Silu;

impl Pointwise for Silu {
    const NAME: &'static str = "adept-swiglu";
    const GRAD_NAME: &'static str = "adept-swiglu-grad";
    const SLOPE_FROM_OUTPUT: bool = false;
    fn value(x: f32) -> f32 {
        x * sigmoid(x)
    }
    fn slope(x: f32) -> f32 {
        let s = sigmoid(x);
        s * (1.0 + x * (1.0 - s))
    }
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding with the head transpose.

/// Cos and signed-sin tables for a batch, `[b, 1, s, hd]` tensors and their host copies.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin_signed: Tensor,
    host_cos: Arc<Vec<f32>>,
    host_sin: Arc<Vec<f32>>,
}

impl RopeTables {
    pub fn new(
        cos: Vec<f32>,
        sin_signed: Vec<f32>,
        b: usize,
        s: usize,
        hd: usize,
        device: &candle_core::Device,
    ) -> Result<Self> {
        Ok(Self {
            cos: Tensor::from_slice(&cos, (b, 1, s, hd), device)?,
            sin_signed: Tensor::from_slice(&sin_signed, (b, 1, s, hd), device)?,
            host_cos: Arc::new(cos),
            host_sin: Arc::new(sin_signed),
        })
    }
}

/// Rotary embedding of `x [b, s, heads, hd]` (a projection's output, heads split), returned in
/// attention layout `[b, heads, s, hd]`: `x·cos + rotate_half(x)·sin`.
pub fn rope_heads(x: &Tensor, t: &RopeTables) -> Result<Tensor> {
    if !use_fused(x) {
        return super::apply_rope(&x.transpose(1, 2)?, &t.cos, &t.sin_signed);
    }
    let (b, s, h, hd) = x.dims4()?;
    x.contiguous()?.apply_op1(Rope {
        cos: t.host_cos.clone(),
        sin: t.host_sin.clone(),
        dims: (b, s, h, hd),
        forward: true,
    })
}

/// The rotation with its head transpose, either way: forward from `[b, s, heads, hd]` to
/// `[b, heads, s, hd]`, or (`forward == false`, the backward pass) the transposed map back.
struct Rope {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
    /// `(b, s, heads, hd)` of the forward input.
    dims: (usize, usize, usize, usize),
    forward: bool,
}

impl Rope {
    /// Forward `x·cos + rotate_half(x)·sin` (output row r = ((bi·h + hi)·s + si)); backward
    /// `dx = cos⊙g + swap(sin⊙g)` (swap exchanges the halves; output row r = ((bi·s + si)·h + hi)).
    fn rows(&self, x: &[f32]) -> Vec<f32> {
        let (_, s, h, hd) = self.dims;
        let half = hd / 2;
        let (cos, sin) = (&self.cos[..], &self.sin[..]);
        // Which half of the sin row multiplies the swapped half into each output half.
        let (sin_lo, sin_hi) = if self.forward { (0, half) } else { (half, 0) };
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, hd, |r, o| {
            let (bi, si, src) = if self.forward {
                let (si, hi, bi) = (r % s, (r / s) % h, r / (s * h));
                (bi, si, (bi * s + si) * h + hi)
            } else {
                let (hi, si, bi) = (r % h, (r / h) % s, r / (s * h));
                (bi, si, (bi * h + hi) * s + si)
            };
            let xr = &x[src * hd..][..hd];
            let c = &cos[(bi * s + si) * hd..][..hd];
            let sn = &sin[(bi * s + si) * hd..][..hd];
            for j in 0..half {
                o[j] = xr[j] * c[j] + xr[j + half] * sn[j + sin_lo];
                o[j + half] = xr[j + half] * c[j + half] + xr[j] * sn[j + sin_hi];
            }
        });
        out
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        if self.forward {
            "adept-rope"
        } else {
            "adept-rope-grad"
        }
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(st, l, self.name())?;
        let (b, s, h, hd) = self.dims;
        let shape = if self.forward {
            Shape::from((b, h, s, hd))
        } else {
            Shape::from((b, s, h, hd))
        };
        Ok((CpuStorage::F32(self.rows(x)), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.contiguous()?.apply_op1_no_bwd(&Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            dims: self.dims,
            forward: !self.forward,
        })?;
        Ok(Some(g))
    }
}
