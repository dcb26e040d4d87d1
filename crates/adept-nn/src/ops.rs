//! Element-wise and normalisation ops built only from ops that have a backward pass in candle.

use candle_core::{DType, Device, Result, Tensor, D};
use rand::Rng;

/// Layer normalisation over the last dimension: `(x - mean) / sqrt(var + eps) * gamma + beta`,
/// with the biased variance, exactly as PyTorch's `LayerNorm`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(gamma)?.broadcast_add(beta)
}

/// Softmax over the last dimension. The row maximum is subtracted for stability; it is detached,
/// which leaves the gradient unchanged (softmax is shift-invariant).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    exp.broadcast_div(&sum)
}

/// Mean of `x [b, s, d]` over the positions where `mask [b, s]` is 1 (mask as f32 or u8/u32).
/// Rows with no position selected give zeros rather than NaN.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(x.dtype())?.unsqueeze(D::Minus1)?; // [b, s, 1]
    let summed = x.broadcast_mul(&mask)?.sum(1)?; // [b, d]
    let count = mask.sum(1)?.clamp(1e-9f64, f64::MAX)?; // [b, 1]
    summed.broadcast_div(&count)
}

/// An inverted-dropout mask of `shape` with drop probability `p` (kept entries are `1/(1-p)`),
/// drawn from the caller's seeded RNG so runs and resumed runs are reproducible
/// (candle's CPU random source cannot be seeded).
pub fn dropout_mask(
    shape: &[usize],
    p: f64,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<Tensor> {
    assert!(
        (0.0..1.0).contains(&p),
        "dropout probability must be in [0, 1)"
    );
    let n: usize = shape.iter().product();
    let keep = (1.0 / (1.0 - p)) as f32;
    let values: Vec<f32> = (0..n)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { keep })
        .collect();
    Tensor::from_vec(values, shape, device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn layer_norm_matches_definition_and_has_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(vec![1f32, 2., 4., -1., 0., 3.], (2, 3), &dev)?;
        let g = Tensor::new(&[1f32, 2., 0.5], &dev)?;
        let b = Tensor::new(&[0f32, 1., -1.], &dev)?;
        let y = layer_norm(x.as_tensor(), &g, &b, 1e-5)?;
        // Row 0: mean 7/3, var ((4/3)^2 + (1/3)^2 + (5/3)^2)/3 = 42/27.
        let sd = (42f32 / 27. + 1e-5).sqrt();
        let expected0 = [
            (-4. / 3.) / sd,
            2. * (-1. / 3.) / sd + 1.,
            0.5 * (5. / 3.) / sd - 1.,
        ];
        let got = y.to_vec2::<f32>()?;
        for (a, e) in got[0].iter().zip(expected0) {
            assert!((a - e).abs() < 1e-5, "{a} vs {e}");
        }
        let loss = y.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        let gx = grads.get(x.as_tensor()).expect("gradient reaches x");
        assert!(gx.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0);
        Ok(())
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_exp_ratio() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2., 3.], [1000., 1000., 1000.]], &dev)?;
        let y = softmax_last_dim(&x)?.to_vec2::<f32>()?;
        let z: f32 = [1f32, 2., 3.].iter().map(|v| v.exp()).sum();
        assert!((y[0][2] - 3f32.exp() / z).abs() < 1e-6);
        assert!((y[1][0] - 1. / 3.).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn masked_mean_ignores_masked_positions() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., 100.]]], &dev)?;
        let m = Tensor::new(&[[1u32, 1, 0]], &dev)?;
        let y = masked_mean(&x, &m)?.to_vec2::<f32>()?;
        assert_eq!(y, vec![vec![2f32, 3.]]);
        Ok(())
    }
}
