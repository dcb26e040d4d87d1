//! A whole frozen post-LayerNorm encoder layer (BERT's) as one op with a hand-written backward.
//! BERT-family only: it lives with the family (the generic kernels it is written from are in
//! `adept_nn::kernels`).
//!
//! Written from candle ops, one BERT layer is some forty graph nodes: each allocates its output,
//! and candle's backward allocates a zeroed gradient buffer per node and adds into it. With the
//! weights frozen only the gradient of the layer's *input* is needed, so the layer can run as a
//! single custom op: the forward keeps the few activations the backward needs (fused Q/K/V,
//! attention probabilities, the two pre-LayerNorm sums, the feed-forward pre-activation) and the
//! backward is the chain rule written out, every large product on [`adept_nn::blas::sgemm`].
//!
//! Stages, forward (rows `R = b·L`; queries from position `query_from` on, `Rq = b·Lq` rows):
//! 1. `qkv = x·[Wq;Wk;Wv]ᵀ + b` `[R, 3d]` (one product instead of three);
//! 2. per (sequence, head): `P = softmax(QKᵀ/√dh + mask)`, `ctx = P·V` (strided views of `qkv`);
//! 3. `z1 = ctx·Woᵀ + bo + x_q`, `h1 = LN1(z1)`;
//! 4. `u = h1·W1ᵀ + b1`, `z2 = GELU(u)·W2ᵀ + b2 + h1`, `y = LN2(z2)`.
//!
//! Values match the composite candle version within float rounding; the tests check values and
//! input gradients against it, with padding and with `query_from > 0`.

use adept_nn::blas::{sgemm, sgemm_single_thread, MatRef};
use adept_nn::kernels::{
    dot, gelu_erf_scalar, gelu_erf_slope, layer_norm_grad_rows, layer_norm_rows, par_rows, simd,
    softmax_in_place, RowsPtr,
};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};
use std::sync::{Arc, Mutex};

/// The frozen weights of one encoder layer, host copies in PyTorch's `[out, in]` layout.
#[derive(Clone, Debug)]
pub struct EncoderLayerWeights {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f32,
    /// `[3d, d]`: the query, key and value weights stacked.
    pub qkv_weight: Vec<f32>,
    pub qkv_bias: Vec<f32>,
    pub out_weight: Vec<f32>,
    pub out_bias: Vec<f32>,
    pub norm1_gamma: Vec<f32>,
    pub norm1_beta: Vec<f32>,
    /// `[i, d]`
    pub ffn_in_weight: Vec<f32>,
    pub ffn_in_bias: Vec<f32>,
    /// `[d, i]`
    pub ffn_out_weight: Vec<f32>,
    pub ffn_out_bias: Vec<f32>,
    pub norm2_gamma: Vec<f32>,
    pub norm2_beta: Vec<f32>,
}

impl EncoderLayerWeights {
    /// Checks every array against `hidden`, `heads` and `intermediate`.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (d, i) = (self.hidden, self.intermediate);
        if self.heads == 0 || d % self.heads != 0 {
            anyhow::bail!("hidden size {d} is not divisible by {} heads", self.heads);
        }
        for (name, len, want) in [
            ("qkv weight", self.qkv_weight.len(), 3 * d * d),
            ("qkv bias", self.qkv_bias.len(), 3 * d),
            ("attention output weight", self.out_weight.len(), d * d),
            ("attention output bias", self.out_bias.len(), d),
            ("attention LayerNorm γ", self.norm1_gamma.len(), d),
            ("attention LayerNorm β", self.norm1_beta.len(), d),
            ("intermediate weight", self.ffn_in_weight.len(), i * d),
            ("intermediate bias", self.ffn_in_bias.len(), i),
            ("output weight", self.ffn_out_weight.len(), d * i),
            ("output bias", self.ffn_out_bias.len(), d),
            ("output LayerNorm γ", self.norm2_gamma.len(), d),
            ("output LayerNorm β", self.norm2_beta.len(), d),
        ] {
            if len != want {
                anyhow::bail!("encoder layer {name} has {len} values, expected {want}");
            }
        }
        Ok(())
    }
}

/// Runs the layer on `x [b, L, d]` (CPU, f32) with the additive mask `mask_bias [b, L]` (0 where
/// attended, a large negative number at padding); returns `[b, L - query_from, d]`, the rows
/// from `query_from` on. Differentiable with respect to `x` only.
pub fn encoder_layer(
    weights: &Arc<EncoderLayerWeights>,
    x: &Tensor,
    mask_bias: &Tensor,
    query_from: usize,
) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    if d != weights.hidden {
        candle_core::bail!("encoder layer expects {} features, got {d}", weights.hidden);
    }
    if mask_bias.dims() != [b, l] {
        candle_core::bail!(
            "attention mask bias has shape {:?}, expected [{b}, {l}]",
            mask_bias.dims()
        );
    }
    if query_from >= l {
        candle_core::bail!("cannot keep rows from {query_from} of a {l}-position sequence");
    }
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        candle_core::bail!("the fused encoder layer runs on CPU f32 tensors only");
    }
    weights
        .validate()
        .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
    let mask = mask_bias.flatten_all()?.to_vec1::<f32>()?;
    let packing = Packing::new(&mask, b, l, query_from, weights.heads);
    x.contiguous()?.apply_op1(EncoderLayerOp {
        weights: weights.clone(),
        mask,
        packing,
        batch: b,
        len: l,
        query_from,
        keep_for_backward: x.track_op(),
        saved: Mutex::new(None),
    })
}

/// Which rows the layer computes. Padding sits at the end of each sequence and, masked out as a
/// key, influences no other row; so each sequence's unpadded positions are packed together and
/// only those rows are computed (on SST-2 batches with a 60-token prompt, about a third fewer
/// rows, and attention over the real length only). Padded output rows are zero and pass zero
/// gradient back; through the full computation they hold values nothing downstream may read
/// (pooling masks them out) and, with a loss that ignores them, also pass zero gradient. A
/// sequence whose mask is not "attended prefix, then padding" is computed in full.
struct Packing {
    /// Computed positions per sequence (keys and values).
    lens: Vec<usize>,
    /// First packed row of each sequence, and the total at the end (`b + 1` entries).
    starts: Vec<usize>,
    /// First packed query row of each sequence, and the total.
    q_starts: Vec<usize>,
    /// Offset of each sequence's attention probabilities (`heads` blocks of `lq × len`).
    p_starts: Vec<usize>,
}

impl Packing {
    fn new(mask: &[f32], b: usize, l: usize, query_from: usize, heads: usize) -> Self {
        let attended = |v: f32| v > -0.5;
        // A sequence whose mask is not a prefix, or whose attended prefix ends before the kept
        // rows, is computed in full (its mask is applied in the softmax).
        let lens: Vec<usize> = (0..b)
            .map(|bi| {
                let m = &mask[bi * l..(bi + 1) * l];
                let n = m.iter().take_while(|&&v| attended(v)).count();
                let prefix = m[n..].iter().all(|&v| !attended(v));
                if prefix && n > query_from {
                    n
                } else {
                    l
                }
            })
            .collect();
        let prefix_sums = |f: &dyn Fn(usize) -> usize| -> Vec<usize> {
            let mut v = Vec::with_capacity(b + 1);
            let mut acc = 0;
            for &n in &lens {
                v.push(acc);
                acc += f(n);
            }
            v.push(acc);
            v
        };
        let starts = prefix_sums(&|n| n);
        let q_starts = prefix_sums(&|n| n - query_from);
        let p_starts = prefix_sums(&|n| heads * (n - query_from) * n);
        Self {
            lens,
            starts,
            q_starts,
            p_starts,
        }
    }

    fn rows(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    fn query_rows(&self) -> usize {
        *self.q_starts.last().unwrap_or(&0)
    }
}

struct EncoderLayerOp {
    weights: Arc<EncoderLayerWeights>,
    mask: Vec<f32>,
    packing: Packing,
    batch: usize,
    len: usize,
    query_from: usize,
    keep_for_backward: bool,
    saved: Mutex<Option<Saved>>,
}

/// What the backward pass needs from the forward (all in packed rows).
struct Saved {
    qkv: Vec<f32>,
    probs: Vec<f32>,
    z1: Vec<f32>,
    u: Vec<f32>,
    z2: Vec<f32>,
}

/// A vector of `n` values, each filled with `row` repeated (the bias before `C += A·B`).
fn rows_of(row: &[f32], n_rows: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(row.len() * n_rows);
    for _ in 0..n_rows {
        v.extend_from_slice(row);
    }
    v
}

/// `y += x·Wᵀ` for `x [rows, k]`, `W [n, k]` (PyTorch's layout), `y [rows, n]`.
fn add_x_wt(y: &mut [f32], x: &[f32], w: &[f32], k: usize) {
    let n = w.len() / k;
    sgemm(
        x.len() / k,
        n,
        k,
        MatRef::new(x, k, false),
        MatRef::new(w, k, true),
        y,
        n,
        true,
    );
}

/// `y (+)= g·W` for `g [rows, n]`, `W [n, k]`, `y [rows, k]`: the input gradient of `x·Wᵀ`.
fn g_w(y: &mut [f32], g: &[f32], w: &[f32], n: usize, accumulate: bool) {
    let k = w.len() / n;
    sgemm(
        g.len() / n,
        k,
        n,
        MatRef::new(g, n, false),
        MatRef::new(w, k, false),
        y,
        k,
        accumulate,
    );
}

fn add_g_w(y: &mut [f32], g: &[f32], w: &[f32], n: usize) {
    g_w(y, g, w, n, true)
}

fn set_g_w(y: &mut [f32], g: &[f32], w: &[f32], n: usize) {
    g_w(y, g, w, n, false)
}

/// Runs `task(t)` for `t` in `0..n` on candle's CPU thread pool.
fn par_tasks(n: usize, task: impl Fn(usize) + Sync) {
    candle_core::utils::barrier_pool().execute_chunked(n, |range| {
        for t in range {
            task(t)
        }
    });
}

/// `softmax(scale·s + mask)` for each `mask.len()`-long row of `scores`, in place.
fn masked_softmax_rows(scores: &mut [f32], mask: &[f32], scale: f32) {
    simd(|| {
        for row in scores.chunks_mut(mask.len()) {
            for (s, m) in row.iter_mut().zip(mask) {
                *s = *s * scale + m;
            }
            softmax_in_place(row);
        }
    })
}

/// The softmax backward for each `l`-long row, in place: `g ← scale · p ⊙ (g − Σ g⊙p)`.
fn softmax_grad_rows(g: &mut [f32], p: &[f32], l: usize, scale: f32) {
    simd(|| {
        for (gr, pr) in g.chunks_mut(l).zip(p.chunks(l)) {
            let dot = dot(gr, pr);
            for (g, &pv) in gr.iter_mut().zip(pr) {
                *g = scale * pv * (*g - dot);
            }
        }
    })
}

impl EncoderLayerOp {
    /// `(hidden, heads, head size, intermediate)`.
    fn sizes(&self) -> (usize, usize, usize, usize) {
        let w = &self.weights;
        (w.hidden, w.heads, w.hidden / w.heads, w.intermediate)
    }

    fn forward(&self, x: &[f32]) -> (Vec<f32>, Saved) {
        let w = &*self.weights;
        let pk = &self.packing;
        let (d, h, dh, inter) = self.sizes();
        let (l, qf) = (self.len, self.query_from);
        let (rows, q_rows) = (pk.rows(), pk.query_rows());
        let scale = 1.0 / (dh as f32).sqrt();

        // 0. The computed rows of x, packed.
        let mut xp = Vec::with_capacity(rows * d);
        for (bi, &n) in pk.lens.iter().enumerate() {
            xp.extend_from_slice(&x[bi * l * d..(bi * l + n) * d]);
        }

        // 1. Fused Q/K/V projection.
        let mut qkv = rows_of(&w.qkv_bias, rows);
        add_x_wt(&mut qkv, &xp, &w.qkv_weight, d);

        // 2. Attention per (sequence, head); each task writes its own probability block and its
        // head's columns of its sequence's context rows.
        let mut probs = vec![0f32; *pk.p_starts.last().unwrap_or(&0)];
        let mut ctx = vec![0f32; q_rows * d];
        let (p_ptr, ctx_ptr) = (RowsPtr(probs.as_mut_ptr()), RowsPtr(ctx.as_mut_ptr()));
        par_tasks(self.batch * h, |task| {
            // Rebound so the closure captures the Send wrapper, not its raw-pointer field.
            #[allow(clippy::redundant_locals)]
            let (p_ptr, ctx_ptr) = (p_ptr, ctx_ptr);
            let (bi, hi) = (task / h, task % h);
            let (n, lq) = (pk.lens[bi], pk.lens[bi] - qf);
            let seq = &qkv[pk.starts[bi] * 3 * d..pk.starts[bi + 1] * 3 * d];
            let q = &seq[qf * 3 * d + hi * dh..];
            let k = &seq[d + hi * dh..];
            let v = &seq[2 * d + hi * dh..];
            let mask = &self.mask[bi * l..bi * l + n];
            // SAFETY: the probability block and the context block (this sequence's rows, this
            // head's columns) belong to this task alone.
            unsafe {
                let p = std::slice::from_raw_parts_mut(
                    p_ptr.0.add(pk.p_starts[bi] + hi * lq * n),
                    lq * n,
                );
                sgemm_single_thread(
                    lq,
                    n,
                    dh,
                    MatRef::new(q, 3 * d, false),
                    MatRef::new(k, 3 * d, true),
                    p.as_mut_ptr(),
                    n,
                    false,
                );
                masked_softmax_rows(p, mask, scale);
                sgemm_single_thread(
                    lq,
                    dh,
                    n,
                    MatRef::new(p, n, false),
                    MatRef::new(v, 3 * d, false),
                    ctx_ptr.0.add(pk.q_starts[bi] * d + hi * dh),
                    d,
                    false,
                );
            }
        });

        // 3. Attention output, residual (the query rows of x), LayerNorm.
        let mut z1 = Vec::with_capacity(q_rows * d);
        for (bi, &n) in pk.lens.iter().enumerate() {
            z1.extend_from_slice(&xp[(pk.starts[bi] + qf) * d..(pk.starts[bi] + n) * d]);
        }
        drop(xp);
        par_rows(&mut z1, d, |_, o| {
            for (o, b) in o.iter_mut().zip(&w.out_bias) {
                *o += b;
            }
        });
        add_x_wt(&mut z1, &ctx, &w.out_weight, d);
        drop(ctx);
        let h1 = layer_norm_rows(&z1, &w.norm1_gamma, &w.norm1_beta, w.eps);

        // 4. Feed-forward, residual, LayerNorm.
        let mut u = rows_of(&w.ffn_in_bias, q_rows);
        add_x_wt(&mut u, &h1, &w.ffn_in_weight, d);
        let mut act = vec![0f32; u.len()];
        par_rows(&mut act, inter, |r, o| {
            for (o, &v) in o.iter_mut().zip(&u[r * inter..]) {
                *o = gelu_erf_scalar(v);
            }
        });
        let mut z2 = h1;
        par_rows(&mut z2, d, |_, o| {
            for (o, bias) in o.iter_mut().zip(&w.ffn_out_bias) {
                *o += bias;
            }
        });
        add_x_wt(&mut z2, &act, &w.ffn_out_weight, inter);
        drop(act);
        let y = layer_norm_rows(&z2, &w.norm2_gamma, &w.norm2_beta, w.eps);

        // 5. Unpack: padded rows of the output are zero.
        let lq_full = l - qf;
        let mut out = vec![0f32; self.batch * lq_full * d];
        for bi in 0..self.batch {
            let (a, e) = (pk.q_starts[bi] * d, pk.q_starts[bi + 1] * d);
            out[bi * lq_full * d..][..e - a].copy_from_slice(&y[a..e]);
        }
        (
            out,
            Saved {
                qkv,
                probs,
                z1,
                u,
                z2,
            },
        )
    }

    fn backward(&self, s: &Saved, gy_full: &[f32]) -> Vec<f32> {
        let w = &*self.weights;
        let pk = &self.packing;
        let (d, h, dh, inter) = self.sizes();
        let (l, qf) = (self.len, self.query_from);
        let (rows, q_rows) = (pk.rows(), pk.query_rows());
        let scale = 1.0 / (dh as f32).sqrt();

        // The gradient of the computed output rows, packed.
        let lq_full = l - qf;
        let mut gy = Vec::with_capacity(q_rows * d);
        for bi in 0..self.batch {
            let n = pk.q_starts[bi + 1] - pk.q_starts[bi];
            gy.extend_from_slice(&gy_full[bi * lq_full * d..][..n * d]);
        }

        // LN2, then the feed-forward block back to h1 (its residual path included).
        let gz2 = layer_norm_grad_rows(&s.z2, &gy, &w.norm2_gamma, w.eps);
        drop(gy);
        let mut gu = vec![0f32; q_rows * inter];
        set_g_w(&mut gu, &gz2, &w.ffn_out_weight, d);
        par_rows(&mut gu, inter, |r, o| {
            for (o, &v) in o.iter_mut().zip(&s.u[r * inter..]) {
                *o *= gelu_erf_slope(v);
            }
        });
        let mut gh1 = gz2;
        add_g_w(&mut gh1, &gu, &w.ffn_in_weight, inter);
        drop(gu);

        // LN1; its input z1 = attention output + x_q, so gz1 flows to both.
        let gz1 = layer_norm_grad_rows(&s.z1, &gh1, &w.norm1_gamma, w.eps);
        drop(gh1);
        let mut gctx = vec![0f32; q_rows * d];
        set_g_w(&mut gctx, &gz1, &w.out_weight, d);

        // Attention, per (sequence, head): gradients of Q, K and V into their columns of gqkv.
        // Rows before `query_from` have no query, so their Q gradient stays zero.
        let mut gqkv = vec![0f32; rows * 3 * d];
        let g_ptr = RowsPtr(gqkv.as_mut_ptr());
        par_tasks(self.batch * h, |task| {
            // Rebound so the closure captures the Send wrapper, not its raw-pointer field.
            #[allow(clippy::redundant_locals)]
            let g_ptr = g_ptr;
            let (bi, hi) = (task / h, task % h);
            let (n, lq) = (pk.lens[bi], pk.lens[bi] - qf);
            let seq = &s.qkv[pk.starts[bi] * 3 * d..pk.starts[bi + 1] * 3 * d];
            let q = &seq[qf * 3 * d + hi * dh..];
            let k = &seq[d + hi * dh..];
            let v = &seq[2 * d + hi * dh..];
            let p = &s.probs[pk.p_starts[bi] + hi * lq * n..][..lq * n];
            let gc = &gctx[pk.q_starts[bi] * d..pk.q_starts[bi + 1] * d][hi * dh..];
            let mut gs = vec![0f32; lq * n];
            // SAFETY (all writes below): the gqkv blocks written are this sequence's rows in
            // this head's columns, owned by this task.
            unsafe {
                let g_seq = g_ptr.0.add(pk.starts[bi] * 3 * d);
                // dV = Pᵀ·dC
                sgemm_single_thread(
                    n,
                    dh,
                    lq,
                    MatRef::new(p, n, true),
                    MatRef::new(gc, d, false),
                    g_seq.add(2 * d + hi * dh),
                    3 * d,
                    false,
                );
                // dP = dC·Vᵀ
                sgemm_single_thread(
                    lq,
                    n,
                    dh,
                    MatRef::new(gc, d, false),
                    MatRef::new(v, 3 * d, true),
                    gs.as_mut_ptr(),
                    n,
                    false,
                );
                // dS = scale · P ⊙ (dP − Σ dP⊙P)
                softmax_grad_rows(&mut gs, p, n, scale);
                // dQ = dS·K
                sgemm_single_thread(
                    lq,
                    dh,
                    n,
                    MatRef::new(&gs, n, false),
                    MatRef::new(k, 3 * d, false),
                    g_seq.add(qf * 3 * d + hi * dh),
                    3 * d,
                    false,
                );
                // dK = dSᵀ·Q
                sgemm_single_thread(
                    n,
                    dh,
                    lq,
                    MatRef::new(&gs, n, true),
                    MatRef::new(q, 3 * d, false),
                    g_seq.add(d + hi * dh),
                    3 * d,
                    false,
                );
            }
        });
        drop(gctx);

        // Back through the fused projection, plus the residual into the query rows.
        let mut gxp = vec![0f32; rows * d];
        set_g_w(&mut gxp, &gqkv, &w.qkv_weight, 3 * d);
        drop(gqkv);
        // Unpack into [b, l, d]: padded rows get zero gradient.
        let mut gx = vec![0f32; self.batch * l * d];
        let gx_ptr = RowsPtr(gx.as_mut_ptr());
        par_tasks(self.batch, |bi| {
            // Rebound so the closure captures the Send wrapper, not its raw-pointer field.
            #[allow(clippy::redundant_locals)]
            let gx_ptr = gx_ptr;
            let n = pk.lens[bi];
            // SAFETY: sequence bi's rows belong to this task.
            let dst = unsafe { std::slice::from_raw_parts_mut(gx_ptr.0.add(bi * l * d), n * d) };
            dst.copy_from_slice(&gxp[pk.starts[bi] * d..pk.starts[bi + 1] * d]);
            let g1 = &gz1[pk.q_starts[bi] * d..pk.q_starts[bi + 1] * d];
            simd(|| {
                for (o, g) in dst[qf * d..].iter_mut().zip(g1) {
                    *o += g;
                }
            });
        });
        gx
    }
}

impl CustomOp1 for EncoderLayerOp {
    fn name(&self) -> &'static str {
        "adept-encoder-layer"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = adept_nn::kernels::f32_slice(storage, layout, self.name())?;
        let (d, ..) = self.sizes();
        let (y, saved) = self.forward(x);
        if self.keep_for_backward {
            *self.saved.lock().expect("encoder layer state") = Some(saved);
        }
        Ok((
            CpuStorage::F32(y),
            Shape::from((self.batch, self.len - self.query_from, d)),
        ))
    }

    /// Consumes the saved activations (freeing them as the backward pass walks down the layers):
    /// a second backward pass over the same graph is refused with an error.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let saved = self.saved.lock().expect("encoder layer state").take();
        let Some(saved) = saved else {
            candle_core::bail!("encoder layer: backward called twice or without a forward")
        };
        let grad = grad.contiguous()?;
        let gx = {
            let (storage, layout) = grad.storage_and_layout();
            let Storage::Cpu(cpu) = &*storage else {
                candle_core::bail!("encoder layer: gradient is not on the CPU")
            };
            let gy = adept_nn::kernels::f32_slice(cpu, layout, self.name())?;
            self.backward(&saved, gy)
        };
        Ok(Some(Tensor::from_vec(gx, arg.dims(), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adept_nn::{layer_norm, softmax_last_dim};
    use candle_core::{Device, Var};

    fn random(n: usize, std: f32, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * std)
            .collect()
    }

    fn weights(d: usize, heads: usize, inter: usize) -> EncoderLayerWeights {
        EncoderLayerWeights {
            hidden: d,
            heads,
            intermediate: inter,
            eps: 1e-12,
            qkv_weight: random(3 * d * d, 0.4, 1),
            qkv_bias: random(3 * d, 0.1, 2),
            out_weight: random(d * d, 0.3, 3),
            out_bias: random(d, 0.1, 4),
            norm1_gamma: random(d, 0.5, 5).iter().map(|v| 1.0 + v).collect(),
            norm1_beta: random(d, 0.2, 6),
            ffn_in_weight: random(inter * d, 0.3, 7),
            ffn_in_bias: random(inter, 0.1, 8),
            ffn_out_weight: random(d * inter, 0.2, 9),
            ffn_out_bias: random(d, 0.1, 10),
            norm2_gamma: random(d, 0.5, 11).iter().map(|v| 1.0 + v).collect(),
            norm2_beta: random(d, 0.2, 12),
        }
    }

    /// The same layer from plain candle ops (candle's own matmul and autograd).
    fn composite(
        w: &EncoderLayerWeights,
        x: &Tensor,
        mask_bias: &Tensor,
        qf: usize,
    ) -> Result<Tensor> {
        let dev = x.device();
        let (b, l, d) = x.dims3()?;
        let (h, i) = (w.heads, w.intermediate);
        let dh = d / h;
        let t = |v: &Vec<f32>, shape: &[usize]| Tensor::from_slice(v, shape, dev);
        let lin = |x: &Tensor, wt: &Tensor, bias: &Tensor| {
            x.broadcast_matmul(&wt.t()?)?.broadcast_add(bias)
        };
        let qkv_w = t(&w.qkv_weight, &[3 * d, d])?;
        let qkv_b = t(&w.qkv_bias, &[3 * d])?;
        let heads = |t: Tensor, rows: usize| -> Result<Tensor> {
            t.reshape((b, rows, h, dh))?.transpose(1, 2)?.contiguous()
        };
        let xq = x.narrow(1, qf, l - qf)?;
        let lq = l - qf;
        let q = heads(
            lin(&xq, &qkv_w.narrow(0, 0, d)?, &qkv_b.narrow(0, 0, d)?)?,
            lq,
        )?;
        let k = heads(lin(x, &qkv_w.narrow(0, d, d)?, &qkv_b.narrow(0, d, d)?)?, l)?;
        let v = heads(
            lin(x, &qkv_w.narrow(0, 2 * d, d)?, &qkv_b.narrow(0, 2 * d, d)?)?,
            l,
        )?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (dh as f64).sqrt())?
            .broadcast_add(&mask_bias.reshape((b, 1, 1, l))?)?;
        let ctx = softmax_last_dim(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, lq, d))?;
        let attn = lin(&ctx, &t(&w.out_weight, &[d, d])?, &t(&w.out_bias, &[d])?)?;
        let h1 = layer_norm(
            &(attn + xq)?,
            &t(&w.norm1_gamma, &[d])?,
            &t(&w.norm1_beta, &[d])?,
            w.eps as f64,
        )?;
        let u = lin(
            &h1,
            &t(&w.ffn_in_weight, &[i, d])?,
            &t(&w.ffn_in_bias, &[i])?,
        )?;
        let out = lin(
            &u.gelu_erf()?,
            &t(&w.ffn_out_weight, &[d, i])?,
            &t(&w.ffn_out_bias, &[d])?,
        )?;
        layer_norm(
            &(out + h1)?,
            &t(&w.norm2_gamma, &[d])?,
            &t(&w.norm2_beta, &[d])?,
            w.eps as f64,
        )
    }

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

    /// Fused vs composite on a batch whose padding is given per sequence as a list of masked
    /// positions; compares output rows that are attended (padded ones must be zero when the
    /// padding is trailing) and the input gradient of a loss over those rows.
    fn check(query_from: usize, masked: &[(usize, usize)], trailing: bool) -> Result<()> {
        let dev = Device::Cpu;
        let (b, l, d, h, inter) = (3, 9, 16, 4, 40);
        let w = Arc::new(weights(d, h, inter));
        w.validate().unwrap();
        let x = Var::from_vec(random(b * l * d, 1.0, 20), (b, l, d), &dev)?;
        let mut mask = vec![0f32; b * l];
        for &(bi, j) in masked {
            mask[bi * l + j] = -1e9;
        }
        let keep: Vec<f32> = (0..b)
            .flat_map(|bi| (query_from..l).map(move |j| (bi, j)))
            .map(|(bi, j)| if mask[bi * l + j] == 0.0 { 1.0 } else { 0.0 })
            .collect();
        let keep = Tensor::from_vec(keep, (b, l - query_from, 1), &dev)?;
        let mask = Tensor::from_vec(mask, (b, l), &dev)?;
        let y = encoder_layer(&w, x.as_tensor(), &mask, query_from)?;
        let r = composite(&w, x.as_tensor(), &mask, query_from)?;
        assert_eq!(y.dims(), [b, l - query_from, d]);
        let (yk, rk) = (y.broadcast_mul(&keep)?, r.broadcast_mul(&keep)?);
        assert!(
            max_diff(&yk, &rk) < 2e-5,
            "values differ by {}",
            max_diff(&yk, &rk)
        );
        if trailing {
            // Padded rows are not computed: exactly zero.
            assert_eq!(max_diff(&yk, &y), 0.0, "padded output rows are zero");
        }
        let probe = Tensor::from_vec(random(y.elem_count(), 1.0, 21), y.dims(), &dev)?
            .broadcast_mul(&keep)?;
        let gy = (&y * &probe)?.sum_all()?.backward()?;
        let gr = (&r * &probe)?.sum_all()?.backward()?;
        let (a, e) = (
            gy.get(x.as_tensor()).unwrap(),
            gr.get(x.as_tensor()).unwrap(),
        );
        let scale = e.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(scale > 1e-2, "the reference gradient is not trivially zero");
        assert!(
            max_diff(a, e) < 1e-4 * scale.max(1.0),
            "input gradients differ by {} (largest {scale})",
            max_diff(a, e)
        );
        Ok(())
    }

    /// Sequence 0 has three padded positions, sequence 2 one.
    const TRAILING: [(usize, usize); 4] = [(0, 6), (0, 7), (0, 8), (2, 8)];

    #[test]
    fn matches_the_composite_layer_in_values_and_input_gradients() -> Result<()> {
        check(0, &TRAILING, true)
    }

    #[test]
    fn matches_the_composite_layer_when_keeping_only_later_rows() -> Result<()> {
        check(4, &TRAILING, true)
    }

    #[test]
    fn matches_the_composite_layer_without_padding() -> Result<()> {
        check(2, &[], true)
    }

    #[test]
    fn a_mask_with_holes_is_computed_in_full_and_still_matches() -> Result<()> {
        // Position 3 of sequence 1 masked in the middle: no packing, the mask is applied.
        check(0, &[(1, 3), (0, 8)], false)?;
        // A sequence whose attended positions end before the kept rows: also in full.
        check(4, &[(1, 3), (1, 4), (1, 5), (1, 6), (1, 7), (1, 8)], false)
    }

    #[test]
    fn output_without_gradient_tracking_equals_the_tracked_output() -> Result<()> {
        let dev = Device::Cpu;
        let w = Arc::new(weights(8, 2, 12));
        let x = Tensor::from_vec(random(2 * 5 * 8, 1.0, 30), (2, 5, 8), &dev)?;
        let mask = Tensor::zeros((2, 5), candle_core::DType::F32, &dev)?;
        let plain = encoder_layer(&w, &x, &mask, 1)?;
        let var = Var::from_tensor(&x)?;
        let tracked = encoder_layer(&w, var.as_tensor(), &mask, 1)?;
        assert_eq!(max_diff(&plain, &tracked), 0.0);
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let dev = Device::Cpu;
        let w = Arc::new(weights(8, 2, 12));
        let x = Tensor::zeros((2, 5, 6), candle_core::DType::F32, &dev).unwrap();
        let mask = Tensor::zeros((2, 5), candle_core::DType::F32, &dev).unwrap();
        let err = encoder_layer(&w, &x, &mask, 0).unwrap_err().to_string();
        assert!(err.contains("expects 8 features"), "{err}");
        let x = Tensor::zeros((2, 5, 8), candle_core::DType::F32, &dev).unwrap();
        let bad_mask = Tensor::zeros((2, 4), candle_core::DType::F32, &dev).unwrap();
        let err = encoder_layer(&w, &x, &bad_mask, 0).unwrap_err().to_string();
        assert!(err.contains("mask bias has shape"), "{err}");
        let mut short = weights(8, 2, 12);
        short.ffn_out_bias.pop();
        let err = short.validate().unwrap_err().to_string();
        assert!(err.contains("output bias has 7 values"), "{err}");
    }
}
