//! A linear layer with frozen weights whose backward pass computes only the input gradient.
//!
//! candle's `matmul` backward always computes the gradients of both operands, so a frozen weight
//! costs a full extra matrix product per layer in every backward pass (and memory to hold it). Here
//! the product runs as a custom op over the activation alone: the weight is captured by the op, and
//! `bwd` returns `grad · W`. On the CPU (f32) both products run on [`crate::blas::sgemm`]: the
//! loaded BLAS when there is one (OpenBLAS's AVX-512 kernels; candle's `gemm` crate has AVX2
//! only on stable Rust), else the `gemm` crate, so the results equal `x.matmul(W^T)` within
//! float rounding. Elsewhere (CUDA, other dtypes) candle's own matmul runs.
//!
//! Under bf16 autocast ([`FrozenLinear::with_autocast`], see [`crate::autocast`]) the weight is
//! held in bf16; `forward` casts an f32 input to bf16, runs the same op in bf16 and casts the
//! product back to f32 before adding the f32 bias, so callers see f32 in and out.

use crate::Autocast;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Storage, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

static PLAIN_MATMUL: AtomicBool = AtomicBool::new(false);

/// Benchmarks only: makes every [`FrozenLinear`] use candle's plain `matmul`, whose backward also
/// computes (and discards) the weight gradient. Lets `adept bench --plain-matmul` measure what the
/// input-only backward saves, in the same process. Results are identical either way.
pub fn use_plain_matmul_backward(on: bool) {
    PLAIN_MATMUL.store(on, Ordering::SeqCst);
}

/// `y = x · Wᵀ + b` with `W [out, in]` and `b [out]` frozen.
#[derive(Clone, Debug)]
pub struct FrozenLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl FrozenLinear {
    /// `weight` is `[out_features, in_features]` as stored by PyTorch / Hugging Face checkpoints.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_f, _in_f) = weight.dims2()?;
        if let Some(b) = &bias {
            if b.dims1()? != out_f {
                candle_core::bail!(
                    "linear bias has {} entries but the weight has {} output rows",
                    b.dims1()?,
                    out_f
                );
            }
        }
        let weight = weight.detach().contiguous()?;
        Ok(Self {
            weight,
            bias: bias.map(|b| b.detach()),
        })
    }

    /// The same layer with its weight held in `autocast`'s dtype (bf16: half the memory; the
    /// bias stays f32). [`Autocast::F32`] gives the weight back in f32.
    pub fn with_autocast(&self, autocast: Autocast) -> Result<Self> {
        Ok(Self {
            weight: self.weight.to_dtype(autocast.dtype())?,
            bias: self.bias.clone(),
        })
    }

    /// The dtype the weight is held in (f32, or bf16 under autocast).
    pub fn weight_dtype(&self) -> DType {
        self.weight.dtype()
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Applies the layer to `x [..., in]`, giving `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_f = self.in_features();
        let last = *dims.last().unwrap_or(&0);
        if last != in_f {
            candle_core::bail!("linear layer expects {in_f} input features, got shape {dims:?}");
        }
        let rows = x.elem_count() / in_f.max(1);
        let x2 = x.reshape((rows, in_f))?;
        // Autocast: the product runs in the weight's dtype, the result comes back in x's.
        let cast = x.dtype() != self.weight.dtype();
        let x2 = if cast {
            x2.to_dtype(self.weight.dtype())?
        } else {
            x2.contiguous()?
        };
        let back = |y: Tensor| if cast { y.to_dtype(x.dtype()) } else { Ok(y) };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-scalar input") = self.out_features();
        if PLAIN_MATMUL.load(Ordering::Relaxed) || !x2.track_op() && !x2.device().is_cpu() {
            let y = back(x2.matmul(&self.weight.t()?)?)?.reshape(out_dims)?;
            return match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        // On the CPU the bias is added inside the op, in the same pass over the output.
        let fuse_bias = x2.device().is_cpu() && x2.dtype() == DType::F32;
        let bias = match (&self.bias, fuse_bias) {
            (Some(b), true) => Some(b.to_vec1::<f32>()?),
            _ => None,
        };
        let y = back(x2.apply_op1(InputOnlyMatmul {
            weight: self.weight.clone(),
            bias,
        })?)?
        .reshape(out_dims)?;
        match (&self.bias, fuse_bias) {
            (Some(b), false) => y.broadcast_add(b),
            _ => Ok(y),
        }
    }
}

/// `a [m, k] · b [k, n]` (with `b_transposed`, `b` holds `[n, k]` row-major) on
/// [`crate::blas::sgemm`], both operands contiguous row-major.
fn product(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], b_transposed: bool) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    let b_ld = if b_transposed { k } else { n };
    crate::blas::sgemm(
        m,
        n,
        k,
        crate::blas::MatRef::new(a, k, false),
        crate::blas::MatRef::new(b, b_ld, b_transposed),
        &mut c,
        n,
        false,
    );
    c
}

/// `x [m, k] · Wᵀ` where `W [n, k]` is frozen; gradient only for `x`.
struct InputOnlyMatmul {
    weight: Tensor,
    /// Added to every output row in `cpu_fwd` (CPU f32 only).
    bias: Option<Vec<f32>>,
}

impl InputOnlyMatmul {
    fn dims(&self, layout: &Layout) -> Result<(usize, usize, usize)> {
        let (m, k) = layout.shape().dims2()?;
        let (n, k2) = self.weight.dims2()?;
        if k != k2 {
            candle_core::bail!("frozen matmul: input has {k} features, weight expects {k2}");
        }
        Ok((m, n, k))
    }
}

impl CustomOp1 for InputOnlyMatmul {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (m, n, k) = self.dims(layout)?;
        let wt = self.weight.t()?;
        let (w_storage, w_layout) = wt.storage_and_layout();
        let Storage::Cpu(w) = &*w_storage else {
            candle_core::bail!("frozen-linear: weight is not on the CPU")
        };
        let mut out = match (storage, w) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                // y [m, n] = x [m, k] · Wᵀ: W [n, k] row-major read transposed.
                let x = crate::fused::f32_slice(storage, layout, self.name())?;
                let w = crate::fused::f32_slice(w, self.weight.layout(), self.name())?;
                CpuStorage::F32(product(m, n, k, x, w, true))
            }
            _ => storage.matmul(w, (1, m, n, k), layout, w_layout)?,
        };
        if let (Some(bias), CpuStorage::F32(values)) = (&self.bias, &mut out) {
            crate::fused::par_rows(values, n, |_, row| {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            });
        }
        Ok((out, Shape::from((m, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (m, n, k) = self.dims(layout)?;
        let wt = self.weight.t()?;
        let (w_storage, w_layout) = wt.storage_and_layout();
        let Storage::Cuda(w) = &*w_storage else {
            candle_core::bail!("frozen-linear: weight is not on the CUDA device")
        };
        let out = storage.matmul(w, (1, m, n, k), layout, w_layout)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dy = grad_res.contiguous()?;
        let (dy_s, dy_l) = dy.storage_and_layout();
        let (w_s, w_l) = self.weight.storage_and_layout();
        if let (
            Storage::Cpu(dy_cpu @ CpuStorage::F32(_)),
            Storage::Cpu(w_cpu @ CpuStorage::F32(_)),
        ) = (&*dy_s, &*w_s)
        {
            // dx [m, k] = dy [m, n] · W [n, k]
            let (m, n) = dy.dims2()?;
            let k = self.weight.dims()[1];
            let dy = crate::fused::f32_slice(dy_cpu, dy_l, self.name())?;
            let w = crate::fused::f32_slice(w_cpu, w_l, self.name())?;
            let dx = product(m, k, n, dy, w, false);
            return Ok(Some(Tensor::from_vec(dx, (m, k), grad_res.device())?));
        }
        Ok(Some(grad_res.matmul(&self.weight)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_input_gradient_match_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (5, 4), &dev)?;
        let b = Tensor::randn(0f32, 1., 5, &dev)?;
        let x = Var::randn(0f32, 1., (2, 3, 4), &dev)?;
        let lin = FrozenLinear::new(w.clone(), Some(b.clone()))?;
        let y = lin.forward(x.as_tensor())?;
        let reference = x.as_tensor().broadcast_matmul(&w.t()?)?.broadcast_add(&b)?;
        let diff = (&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "forward differs by {diff}");

        let grads = y.sqr()?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("input gradient");
        let ref_grads = reference.sqr()?.sum_all()?.backward()?;
        let g_ref = ref_grads.get(x.as_tensor()).unwrap();
        let diff = (g - g_ref)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "input gradient differs by {diff}");
        // The frozen weight gets no gradient at all.
        assert!(grads.get(lin.weight()).is_none());
        Ok(())
    }

    #[test]
    fn bf16_autocast_holds_a_bf16_weight_and_stays_close_to_f32() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.2, (24, 32), &dev)?;
        let b = Tensor::randn(0f32, 1., 24, &dev)?;
        let x = Var::randn(0f32, 1., (2, 3, 32), &dev)?;
        let f32_lin = FrozenLinear::new(w, Some(b))?;
        let lin = f32_lin.with_autocast(Autocast::Bf16)?;
        assert_eq!(lin.weight_dtype(), DType::BF16);
        assert_eq!(lin.bias().unwrap().dtype(), DType::F32);
        for plain in [false, true] {
            use_plain_matmul_backward(plain);
            let y = lin.forward(x.as_tensor())?;
            use_plain_matmul_backward(false);
            assert_eq!(y.dtype(), DType::F32);
            let reference = f32_lin.forward(x.as_tensor())?;
            // Outputs are ~N(0, 1.3); bf16 rounding (u = 2^-8) of x, W and the product, the errors
            // of 32 terms adding in quadrature: well under 6e-3 of the largest output.
            let diff = (&y - &reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
            let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 6e-3 * scale,
                "bf16 forward differs by {diff} (scale {scale})"
            );
            let grads = y.sqr()?.sum_all()?.backward()?;
            let g = grads.get(x.as_tensor()).expect("input gradient");
            assert_eq!(g.dtype(), DType::F32);
            let ref_grads = reference.sqr()?.sum_all()?.backward()?;
            let g_ref = ref_grads.get(x.as_tensor()).unwrap();
            let rel = ((g - g_ref)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)
                / g_ref.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
            assert!(rel < 1e-2, "bf16 input gradient relative error {rel}");
            if !plain {
                // The frozen weight gets no gradient in either dtype.
                assert!(grads.get(lin.weight()).is_none());
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_wrong_input_width() {
        let dev = Device::Cpu;
        let lin = FrozenLinear::new(
            Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap(),
            None,
        )
        .unwrap();
        let x = Tensor::zeros((1, 4), candle_core::DType::F32, &dev).unwrap();
        let err = lin.forward(&x).unwrap_err().to_string();
        assert!(err.contains("expects 3 input features"), "{err}");
    }
}
