//! Fused CPU kernels, each with a hand-written backward pass, for the frozen backbone's hot spots.
//!
//! Built from candle primitives, softmax, LayerNorm and GELU each take four to eight passes over
//! memory forward and as many again backward, every pass allocating a fresh tensor. These
//! kernels do one pass each way, parallel over rows. They return only the gradient of the
//! activation: the parameters they capture (LayerNorm's γ/β, the attention mask) are frozen.
//!
//! Off the CPU, or for other dtypes, each function falls back to the composite version in
//! [`crate::ops`], which computes the same values; tests check both agree, values and gradients.

use crate::ops::{layer_norm, softmax_last_dim};
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Error, Layout, Result, Shape, Tensor,
};

pub fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: expects f32 input")
    };
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| Error::Msg(format!("{op}: expects a contiguous input")))?;
    Ok(&v[a..b])
}

/// A pointer that may cross threads: each worker writes only its own rows.
#[derive(Clone, Copy)]
pub struct RowsPtr(pub *mut f32);
unsafe impl Send for RowsPtr {}
unsafe impl Sync for RowsPtr {}

/// Runs `kernel(r, out_row)` for every `row`-long row of `out` on candle's own CPU thread pool
/// (the one its matmuls use, so the two never compete for cores), with the loop compiled for
/// AVX2+FMA when the CPU has them.
pub fn par_rows(out: &mut [f32], row: usize, kernel: impl Fn(usize, &mut [f32]) + Sync) {
    let n_rows = out.len() / row.max(1);
    let ptr = RowsPtr(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(n_rows, |range| {
        // Rebound so the closure captures the Send wrapper, not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let ptr = ptr;
        simd(|| {
            for r in range {
                // SAFETY: rows are disjoint and each index is handed to exactly one worker.
                let o = unsafe { std::slice::from_raw_parts_mut(ptr.0.add(r * row), row) };
                kernel(r, o);
            }
        })
    });
}

/// Runs `f` compiled for AVX2+FMA when the CPU has them. Only code inlined into `f` gets those
/// instructions: keep `f` a small loop over `#[inline(always)]` helpers. (One variant only: with
/// a second, AVX-512 one, the compiler stopped inlining the larger kernels into either, and they
/// ran as baseline SSE2 code, slower than AVX2 by more than AVX-512 gained.)
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether the fused kernels apply to `x`: an f32 tensor on the CPU (otherwise callers fall back
/// to candle's composite ops, which compute the same values). The fused ops have CPU kernels
/// only: on a CUDA (or Metal) device the choice of the composite path is automatic and logged
/// once per process ([`note_composite_path`]).
pub fn use_fused(x: &Tensor) -> bool {
    let fused = x.device().is_cpu() && x.dtype() == DType::F32;
    if !fused {
        note_composite_path(x.device(), x.dtype());
    }
    fused
}

/// Logs once per process (a warning when the device is not the CPU, else at debug level) that
/// the fused CPU kernels do not apply to tensors of `dtype` on `device`, so the layers run from
/// candle's composite differentiable ops: same values, same gradients, slower than a custom
/// kernel would be. Backbones call it where they choose their own fused path.
pub fn note_composite_path(device: &candle_core::Device, dtype: DType) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if device.is_cpu() {
            tracing::debug!("fused CPU kernels are f32 only: {dtype:?} tensors run candle's composite ops");
        } else {
            tracing::warn!(
                "the fused kernels (layer norm, softmax, GELU, RMSNorm, SwiGLU, RoPE, BERT layers) have no \
                 kernel for {device:?}: the backbone runs from candle's composite differentiable ops there \
                 ({dtype:?}; same values, the frozen weights still get no gradient)"
            );
        }
    });
}

/// The backward of a one-input fused op whose gradient kernel `op` reads a saved tensor `saved`
/// (the input or the result) and the output gradient `grad`: `op(saved, grad)`, made contiguous,
/// itself not differentiated.
pub fn grad_op2(saved: &Tensor, grad: &Tensor, op: &impl CustomOp2) -> Result<Option<Tensor>> {
    Ok(Some(
        saved
            .contiguous()?
            .apply_op2_no_bwd(&grad.contiguous()?, op)?,
    ))
}

/// `Σ coeffs[i]·x^(n-1-i)` (highest degree first) by Horner's rule. Plain `a·b + c`, not
/// `mul_add`: code that is not compiled for FMA would call a software `fmaf` for it.
#[inline(always)]
fn horner(x: f32, coeffs: &[f32]) -> f32 {
    let mut acc = coeffs[0];
    for &c in &coeffs[1..] {
        acc = acc * x + c;
    }
    acc
}

/// `exp(x)` for f32 without a libm call, so loops over it vectorise: Cody–Waite range reduction
/// `x = n·ln2 + r`, a degree-6 polynomial for `e^r` on |r| ≤ ln2/2, and `2^n` through the
/// exponent bits. Relative error below 3e-7 on [-87, 88]; inputs below -87 give 0.
#[inline(always)]
pub fn exp_f32(x_in: f32) -> f32 {
    let x = x_in.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5·2^23 trick (no libm call, so the loop vectorises).
    const MAGIC: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = horner(
        r,
        &[
            0.001_388_889,
            0.008_333_334,
            0.041_666_668,
            0.166_666_67,
            0.5,
            1.0,
            1.0,
        ],
    );
    // n as an integer, read off the mantissa of `shifted` (a float-to-int `as` cast saturates,
    // which compilers do not vectorise).
    let n_int = shifted.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    if x_in < -87.0 {
        0.0
    } else {
        p * scale
    }
}

/// Softmax of one row, in place.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    let max = lane_max(row);
    for v in row.iter_mut() {
        *v = exp_f32(*v - max);
    }
    let inv = 1.0 / lane_sum(row.len(), |j| row[j]);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

// ---------------------------------------------------------------------------------------------
// Attention probabilities: softmax(scale · scores + mask_bias) over the last dimension.

/// `softmax(scale · scores + bias)` over the last dimension of `scores [b, h, q, k]`, with an
/// additive, frozen `mask_bias [b, k]` (0 where attended, a large negative value where padded).
pub fn attention_probs(scores: &Tensor, mask_bias: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, h, q, k) = scores.dims4()?;
    if mask_bias.dims() != [b, k] {
        candle_core::bail!(
            "attention mask bias has shape {:?}, expected [{b}, {k}]",
            mask_bias.dims()
        );
    }
    if !use_fused(scores) {
        let z = (scores * scale)?.broadcast_add(&mask_bias.reshape((b, 1, 1, k))?)?;
        return softmax_last_dim(&z);
    }
    let bias = mask_bias.flatten_all()?.to_vec1::<f32>()?;
    scores.contiguous()?.apply_op1(AttentionProbs {
        bias,
        rows_per_batch: h * q,
        k,
        scale: scale as f32,
    })
}

struct AttentionProbs {
    bias: Vec<f32>,
    rows_per_batch: usize,
    k: usize,
    scale: f32,
}

impl CustomOp1 for AttentionProbs {
    fn name(&self) -> &'static str {
        "adept-attention-probs"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let k = self.k;
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, k, |r, o| {
            let xr = &x[r * k..(r + 1) * k];
            let bi = r / self.rows_per_batch;
            let bias = &self.bias[bi * k..(bi + 1) * k];
            for j in 0..k {
                o[j] = xr[j] * self.scale + bias[j];
            }
            softmax_in_place(o);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad_op2(
            res,
            grad,
            &SoftmaxGrad {
                k: self.k,
                scale: self.scale,
            },
        )
    }
}

/// `scale · p ⊙ (g − Σ g⊙p)` per row of `k` values, from the probabilities `p` and their
/// gradient `g`: the input gradient of any softmax whose input was scaled by `scale` and shifted
/// by frozen biases (BERT's attention, T5's with the position bias).
pub struct SoftmaxGrad {
    pub k: usize,
    pub scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "adept-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let k = self.k;
        let mut out = vec![0f32; p.len()];
        par_rows(&mut out, k, |r, o| {
            let (pr, gr) = (&p[r * k..(r + 1) * k], &g[r * k..(r + 1) * k]);
            let dot = dot(pr, gr);
            for j in 0..k {
                o[j] = self.scale * pr[j] * (gr[j] - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm with frozen γ and β.

/// LayerNorm over the last dimension with frozen `gamma`/`beta` (no gradient for them), the
/// gradient of `x` computed in one pass.
pub fn frozen_layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if !use_fused(x) {
        return layer_norm(x, &gamma.detach(), &beta.detach(), eps);
    }
    let d = *x.dims().last().unwrap_or(&0);
    if gamma.dims() != [d] || beta.dims() != [d] {
        candle_core::bail!(
            "layer norm over {d} features got γ {:?} and β {:?}",
            gamma.dims(),
            beta.dims()
        );
    }
    x.contiguous()?.apply_op1(FrozenLayerNorm {
        gamma: gamma.to_vec1::<f32>()?,
        beta: beta.to_vec1::<f32>()?,
        eps: eps as f32,
    })
}

struct FrozenLayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

// Reductions with 16 independent partial sums, so that the compiler can keep them in one SIMD
// register (a plain `iter().sum()` must add in order and stays scalar). The order is fixed, so
// results are deterministic.
const LANES: usize = 16;

/// `Σ f(i)` over `0..n` in [`LANES`] interleaved partial sums.
#[inline(always)]
pub fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = n / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    let mut total = acc.iter().sum::<f32>();
    for i in full..n {
        total += f(i);
    }
    total
}

/// The largest value of `x` (−∞ for an empty slice).
#[inline(always)]
pub fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = if *v > *a { *v } else { *a };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `Σ a⊙b`.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    lane_sum(n, |i| a[i] * b[i])
}

#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len() as f32;
    let mean = lane_sum(x.len(), |i| x[i]) / d;
    let var = lane_sum(x.len(), |i| (x[i] - mean) * (x[i] - mean)) / d;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for FrozenLayerNorm {
    fn name(&self) -> &'static str {
        "adept-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let out = layer_norm_rows(x, &self.gamma, &self.beta, self.eps);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        grad_op2(
            arg,
            grad,
            &LayerNormGrad {
                gamma: self.gamma.clone(),
                eps: self.eps,
            },
        )
    }
}

/// `dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂))` with `ĝ = g ⊙ γ`, `x̂ = (x − μ) · rstd`.
struct LayerNormGrad {
    gamma: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "adept-layer-norm-grad"
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
        let out = layer_norm_grad_rows(x, g, &self.gamma, self.eps);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// LayerNorm of each `gamma.len()`-long row of `z` with frozen `gamma`/`beta`.
pub fn layer_norm_rows(z: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let d = gamma.len();
    let mut out = vec![0f32; z.len()];
    par_rows(&mut out, d, |r, o| {
        let zr = &z[r * d..(r + 1) * d];
        let (mean, rstd) = row_stats(zr, eps);
        for j in 0..d {
            o[j] = (zr[j] - mean) * rstd * gamma[j] + beta[j];
        }
    });
    out
}

/// The input gradient of [`layer_norm_rows`] for each row, from the output gradient `g`.
pub fn layer_norm_grad_rows(z: &[f32], g: &[f32], gamma: &[f32], eps: f32) -> Vec<f32> {
    let d = gamma.len();
    let mut out = vec![0f32; z.len()];
    par_rows(&mut out, d, |r, o| {
        layer_norm_grad_row(
            &z[r * d..(r + 1) * d],
            &g[r * d..(r + 1) * d],
            gamma,
            eps,
            o,
        )
    });
    out
}

/// One row of [`LayerNormGrad`]: the gradient of the LayerNorm input `x` from the output
/// gradient `g`, with frozen `gamma`, into `out`.
#[inline(always)]
fn layer_norm_grad_row(x: &[f32], g: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let d = gamma.len();
    let (x, g, out) = (&x[..d], &g[..d], &mut out[..d]);
    let (mean, rstd) = row_stats(x, eps);
    let mean_g = lane_sum(d, |j| g[j] * gamma[j]) / d as f32;
    let mean_gx = lane_sum(d, |j| g[j] * gamma[j] * (x[j] - mean) * rstd) / d as f32;
    for j in 0..d {
        let gh = g[j] * gamma[j];
        let xh = (x[j] - mean) * rstd;
        out[j] = rstd * (gh - mean_g - xh * mean_gx);
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (erf form).

/// Element-wise work in blocks: `kernel(start, out[start..start + len])`.
pub fn for_chunks(out: &mut [f32], kernel: impl Fn(usize, &mut [f32]) + Sync) {
    const BLOCK: usize = 4096;
    let n = out.len();
    let full = n / BLOCK * BLOCK;
    let (head, tail) = out.split_at_mut(full);
    if full > 0 {
        par_rows(head, BLOCK, |r, o| kernel(r * BLOCK, o));
    }
    if !tail.is_empty() {
        simd(|| kernel(full, tail));
    }
}

/// `erf(x)` for f32 (Numerical Recipes' `erfcc`, Chebyshev fit; fractional error below 1.2e-7).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z
        + horner(
            t,
            &[
                0.170_872_77,
                -0.822_152_2,
                1.488_515_9,
                -1.135_204,
                0.278_868_07,
                -0.186_288_06,
                0.096_784_18,
                0.374_091_96,
                1.000_023_7,
                -1.265_512_2,
            ],
        );
    let erfc = t * exp_f32(poly);
    if x >= 0.0 {
        1.0 - erfc
    } else {
        erfc - 1.0
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// `x · Φ(x)` for one value.
#[inline(always)]
pub fn gelu_erf_scalar(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_f32(v * FRAC_1_SQRT_2))
}

/// The derivative of [`gelu_erf_scalar`]: `Φ(x) + x φ(x)`.
#[inline(always)]
pub fn gelu_erf_slope(v: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_f32(v * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp_f32(-0.5 * v * v);
    cdf + v * pdf
}

/// `x · Φ(x) = ½ x (1 + erf(x/√2))`, the GELU of BERT (`hidden_act = "gelu"`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !use_fused(x) {
        return x.gelu_erf();
    }
    pointwise(x, GeluErf)
}

/// BERT's GELU as a [`Pointwise`] function; its slope `Φ(x) + x φ(x)` reads the input.
#[derive(Clone, Copy)]
struct GeluErf;

impl Pointwise for GeluErf {
    const NAME: &'static str = "adept-gelu-erf";
    const GRAD_NAME: &'static str = "adept-gelu-erf-grad";
    const SLOPE_FROM_OUTPUT: bool = false;
    fn value(x: f32) -> f32 {
        gelu_erf_scalar(x)
    }
    fn slope(x: f32) -> f32 {
        gelu_erf_slope(x)
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise functions with an input-only backward.

/// An element-wise activation `y = value(x)` whose backward is `g · slope(·)`, where the slope is
/// read from the input `x` or, when `SLOPE_FROM_OUTPUT`, from the output `y` (ReLU's `[y > 0]`):
/// one pass each way, where candle's composite backward takes several ops. Run through
/// [`pointwise`].
pub trait Pointwise: Copy + Send + Sync + 'static {
    /// Op names as candle reports them.
    const NAME: &'static str;
    const GRAD_NAME: &'static str;
    /// Whether [`Pointwise::slope`] takes the output rather than the input.
    const SLOPE_FROM_OUTPUT: bool;
    fn value(x: f32) -> f32;
    /// `dy/dx`, as a function of `x` (or of `y` when `SLOPE_FROM_OUTPUT`).
    fn slope(v: f32) -> f32;
}

/// `P::value` applied to every element of the f32 CPU tensor `x` (callers check [`use_fused`] and
/// keep a composite path for other devices and dtypes), differentiable with respect to `x`.
pub fn pointwise<P: Pointwise>(x: &Tensor, p: P) -> Result<Tensor> {
    x.contiguous()?.apply_op1(PointwiseOp(p))
}

struct PointwiseOp<P>(P);

impl<P: Pointwise> CustomOp1 for PointwiseOp<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        for_chunks(&mut out, |start, o| {
            for (o, &v) in o.iter_mut().zip(&x[start..]) {
                *o = P::value(v);
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let saved = if P::SLOPE_FROM_OUTPUT { res } else { arg };
        grad_op2(saved, grad, &PointwiseGrad(self.0))
    }
}

/// `g · P::slope(saved)`.
struct PointwiseGrad<P>(P);

impl<P: Pointwise> CustomOp2 for PointwiseGrad<P> {
    fn name(&self) -> &'static str {
        P::GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let v = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; v.len()];
        for_chunks(&mut out, |start, o| {
            for ((o, &v), &gv) in o.iter_mut().zip(&v[start..]).zip(&g[start..]) {
                *o = gv * P::slope(v);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `P::value(a) ⊙ b` for two f32 CPU tensors of one shape (a gated feed-forward: SwiGLU's
/// `silu(gate) ⊙ up`, T5 v1.1's `gelu(a) ⊙ b`), gradients for both inputs in one pass each:
/// `d/da = g · b · P::slope(a)`, `d/db = g · P::value(a)`. `P::SLOPE_FROM_OUTPUT` must be false.
pub fn gated<P: Pointwise>(a: &Tensor, b: &Tensor, p: P) -> Result<Tensor> {
    if P::SLOPE_FROM_OUTPUT {
        candle_core::bail!(
            "{}: a gated op needs the slope as a function of the input",
            P::NAME
        );
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, GatedOp(p))
}

struct GatedOp<P>(P);

impl<P: Pointwise> CustomOp2 for GatedOp<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = f32_slice(s1, l1, self.name())?;
        let b = f32_slice(s2, l2, self.name())?;
        if a.len() != b.len() {
            candle_core::bail!("{}: inputs of {} and {} values", P::NAME, a.len(), b.len());
        }
        let mut out = vec![0f32; a.len()];
        for_chunks(&mut out, |start, o| {
            let (a, b) = (&a[start..start + o.len()], &b[start..start + o.len()]);
            for j in 0..o.len() {
                o[j] = P::value(a[j]) * b[j];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (a, b) = (a.contiguous()?, b.contiguous()?);
        let da = a.apply_op3_no_bwd(&b, &grad, &GatedGrad(self.0, true))?;
        let db = a.apply_op3_no_bwd(&b, &grad, &GatedGrad(self.0, false))?;
        Ok((Some(da), Some(db)))
    }
}

/// `g · b · P::slope(a)` (with respect to `a`) or `g · P::value(a)` (to `b`).
struct GatedGrad<P>(P, bool);

impl<P: Pointwise> CustomOp3 for GatedGrad<P> {
    fn name(&self) -> &'static str {
        P::GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = f32_slice(s1, l1, self.name())?;
        let b = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let mut out = vec![0f32; a.len()];
        for_chunks(&mut out, |start, o| {
            let n = o.len();
            let (a, b, g) = (
                &a[start..start + n],
                &b[start..start + n],
                &g[start..start + n],
            );
            if self.1 {
                for j in 0..n {
                    o[j] = g[j] * b[j] * P::slope(a[j]);
                }
            } else {
                for j in 0..n {
                    o[j] = g[j] * P::value(a[j]);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
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
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Values and input gradients (under a random linear loss) of a fused op against the
    /// composite reference.
    fn check(
        x: &Var,
        fused: impl Fn(&Tensor) -> Result<Tensor>,
        reference: impl Fn(&Tensor) -> Result<Tensor>,
        tol: f32,
    ) -> Result<()> {
        let y = fused(x.as_tensor())?;
        let r = reference(x.as_tensor())?;
        assert!(
            max_diff(&y, &r) < tol,
            "values differ by {}",
            max_diff(&y, &r)
        );
        let w = Tensor::randn(0f32, 1., y.dims(), &Device::Cpu)?;
        let gy = (y * &w)?.sum_all()?.backward()?;
        let gr = (r * &w)?.sum_all()?.backward()?;
        let a = gy.get(x.as_tensor()).expect("fused op passes a gradient");
        let b = gr.get(x.as_tensor()).expect("reference passes a gradient");
        assert!(
            max_diff(a, b) < tol,
            "gradients differ by {}",
            max_diff(a, b)
        );
        Ok(())
    }

    #[test]
    fn exp_matches_std_exp() {
        let mut worst = 0f32;
        for i in -8700..8800 {
            let x = i as f32 * 0.01 + 0.003;
            let rel = (exp_f32(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_f32(-1e9), 0.0);
    }

    #[test]
    fn erf_matches_reference_values() {
        // erf at a few points (Abramowitz & Stegun table 7.1).
        for (x, e) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.5, -0.966_105_1),
        ] {
            assert!(
                (erf_f32(x) - e).abs() < 2e-7,
                "erf({x}) = {} vs {e}",
                erf_f32(x)
            );
        }
    }

    #[test]
    fn attention_probs_match_composite_softmax() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 2., (2, 3, 4, 5), &dev)?;
        let mask = Tensor::new(&[[1f32, 1., 1., 0., 0.], [1., 1., 1., 1., 1.]], &dev)?;
        let bias = ((mask - 1.0)? * 1e9)?;
        let scale = 0.35;
        check(
            &x,
            |t| attention_probs(t, &bias, scale),
            |t| softmax_last_dim(&(t * scale)?.broadcast_add(&bias.reshape((2, 1, 1, 5))?)?),
            1e-5,
        )?;
        // Padded keys get exactly zero probability.
        let p = attention_probs(x.as_tensor(), &bias, scale)?;
        assert_eq!(
            p.narrow(0, 0, 1)?
                .narrow(3, 3, 2)?
                .abs()?
                .sum_all()?
                .to_scalar::<f32>()?,
            0.0
        );
        Ok(())
    }

    #[test]
    fn frozen_layer_norm_matches_composite() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(1f32, 3., (3, 4, 8), &dev)?;
        let g = Tensor::randn(1f32, 0.5, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.5, 8, &dev)?;
        check(
            &x,
            |t| frozen_layer_norm(t, &g, &b, 1e-12),
            |t| layer_norm(t, &g, &b, 1e-12),
            1e-4,
        )
    }

    #[test]
    fn gelu_matches_candle_gelu_erf() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 3., (4, 300), &dev)?;
        check(&x, gelu_erf, |t| t.gelu_erf(), 1e-5)
    }
}
