//! ADePT: a soft prompt and a token-shared MLP whose output is added to every input token
//! embedding, `E + f(E)` with `f(e) = ReLU(e·W_down + b1)·W_up + b2` (dropout before the ReLU
//! while training). `f` sees only the token's own row, so it folds into the vocabulary table.
//!
//! Tensors (PEFT names): `W_down [d, r]` = `prompt_encoder.lora_embedding_A`, `b1 [r]` =
//! `…_a`, `W_up [r, d]` = `…_B`, `b2 [d]` = `…_b`.

use crate::method::names;
use crate::{Adapter, AdapterConfig, AdapterMethod, GraphOffset, MethodKind, TokenMlp};
use adept_nn::dropout_mask;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;

/// `W_down [d, r]`.
pub const W_DOWN: &str = names::LORA_A;
/// `b1 [r]`.
pub const B1: &str = names::LORA_A_BIAS;
/// `W_up [r, d]`.
pub const W_UP: &str = names::LORA_B;
/// `b2 [d]`.
pub const B2: &str = names::LORA_B_BIAS;

pub struct Adept;

/// `U(±bound)` values of `shape` drawn from `rng` (kaiming-uniform with a = √5 when
/// `bound = 1/√fan_in`).
pub(crate) fn uniform(
    shape: (usize, usize),
    bound: f64,
    rng: &mut StdRng,
    dev: &Device,
) -> Result<Var> {
    use rand::Rng;
    let n = shape.0 * shape.1;
    let v: Vec<f32> = (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, dev)?)
}

/// ADePT's token-wise MLP `f(e) = ReLU(e·W_down + b1)·W_up + b2` on `e [..., d]`; `dropout`
/// applies inverted dropout (`adapter.config.dropout`) to the hidden pre-activation.
pub fn token_offsets(
    adapter: &Adapter,
    e: &Tensor,
    dropout: Option<&mut StdRng>,
) -> Result<Tensor> {
    let (w_down, b1, w_up, b2) = (
        adapter.offset(W_DOWN)?,
        adapter.offset(B1)?,
        adapter.offset(W_UP)?,
        adapter.offset(B2)?,
    );
    let mut hidden = e.broadcast_matmul(w_down)?.broadcast_add(b1)?;
    if let Some(rng) = dropout {
        if adapter.config.dropout > 0.0 {
            let mask = dropout_mask(hidden.dims(), adapter.config.dropout, rng, e.device())?;
            hidden = hidden.mul(&mask)?;
        }
    }
    hidden.relu()?.broadcast_matmul(w_up)?.broadcast_add(b2)
}

impl AdapterMethod for Adept {
    fn kind(&self) -> MethodKind {
        MethodKind::Adept
    }
    fn name(&self) -> &'static str {
        "adept"
    }
    fn peft_type(&self) -> &'static str {
        "ADEPT"
    }
    fn offset_shapes(
        &self,
        d: usize,
        r: usize,
        _max_len: usize,
    ) -> Vec<(&'static str, Vec<usize>)> {
        vec![
            (W_DOWN, vec![d, r]),
            (B1, vec![r]),
            (W_UP, vec![r, d]),
            (B2, vec![d]),
        ]
    }
    fn init_offsets(
        &self,
        cfg: &AdapterConfig,
        rng: &mut StdRng,
        dev: &Device,
    ) -> Result<Vec<Var>> {
        let (d, r) = (cfg.token_dim, cfg.rank);
        if r == 0 {
            candle_core::bail!("ADePT needs a rank r > 0");
        }
        let bound = 1.0 / (r as f64).sqrt();
        Ok(vec![
            uniform((d, r), bound, rng, dev)?,
            Var::zeros(r, DType::F32, dev)?,
            Var::zeros((r, d), DType::F32, dev)?,
            Var::zeros(d, DType::F32, dev)?,
        ])
    }
    fn add_offsets(
        &self,
        adapter: &Adapter,
        word_embeds: &Tensor,
        train_rng: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        word_embeds + token_offsets(adapter, word_embeds, train_rng)?
    }
    fn folds(&self) -> bool {
        true
    }
    fn graph_offsets(&self, adapter: &Adapter) -> anyhow::Result<Vec<GraphOffset>> {
        Ok(vec![GraphOffset::TokenMlp(TokenMlp {
            scope: names::SCOPE,
            w_down: adapter.named_offset(W_DOWN)?,
            b1: adapter.named_offset(B1)?,
            w_up: adapter.named_offset(W_UP)?,
            b2: adapter.named_offset(B2)?,
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cfg, flat, lcg, table, REL_TOL};
    use crate::PromptInit;
    use rand::SeedableRng;

    #[test]
    fn adept_at_init_adds_nothing_but_the_prompt() -> anyhow::Result<()> {
        let t = table();
        let mut c = cfg(MethodKind::Adept, 3, 4);
        c.prompt_init = PromptInit::Text {
            text: "x".into(),
            token_ids: vec![7, 9],
        };
        let a = Adapter::init(c, &t, 1)?;
        let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu)?;
        let e = t.index_select(&ids.flatten_all()?, 0)?.reshape((1, 4, 8))?;
        let mut rng = StdRng::seed_from_u64(3);
        let out = a.apply(&e, Some(&mut rng))?;
        assert_eq!(out.dims(), &[1, 7, 8]);
        // Prompt rows are token 7, 9, 7 (text init repeated), then E unchanged.
        let expect_prompt = t.index_select(&Tensor::new(&[7u32, 9, 7], &Device::Cpu)?, 0)?;
        let diff = (out.get(0)?.narrow(0, 0, 3)? - expect_prompt)?
            .abs()?
            .max_all()?;
        assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        let diff = (out.narrow(1, 3, 4)? - &e)?.abs()?.max_all()?;
        assert_eq!(diff.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    #[test]
    fn fold_table_equals_e_plus_f_row_by_row() -> anyhow::Result<()> {
        // More rows than fold_table's 4096-row chunk, so the chunk seam is checked too.
        let (vocab, d, r) = (4096 + 45, 8, 3);
        let t = Tensor::from_vec(lcg(11, vocab * d, 1.0), (vocab, d), &Device::Cpu)?;
        let a = Adapter::init(cfg(MethodKind::Adept, 2, r), &t, 2)?;
        // ADePT initialises W_up = b2 = b1 = 0 (f ≡ 0): give every MLP tensor non-zero values.
        let mut seed = 100;
        for (name, _, v) in a.vars() {
            if name != names::PROMPT {
                seed += 1;
                let vals = lcg(seed, v.elem_count(), 0.8);
                v.set(&Tensor::from_vec(vals, v.dims(), &Device::Cpu)?)?;
            }
        }
        let folded = a.fold_table(&t)?;
        assert_eq!(folded.dims(), &[vocab, d]);
        let got = flat(&folded);

        // The reference: plain f64 loops over the raw tensors, W_down [d, r], b1 [r],
        // W_up [r, d], b2 [d] (row-major), f(e) = ReLU(e·W_down + b1)·W_up + b2.
        let ts = a.tensors();
        let (w_down, b1, w_up, b2) = (
            flat(&ts[W_DOWN]),
            flat(&ts[B1]),
            flat(&ts[W_UP]),
            flat(&ts[B2]),
        );
        assert_eq!(
            (w_down.len(), b1.len(), w_up.len(), b2.len()),
            (d * r, r, r * d, d)
        );
        let e = flat(&t);
        let (mut worst_rel, mut max_offset) = (0.0f64, 0.0f64);
        let (mut active, mut inactive) = (0usize, 0usize);
        for row in 0..vocab {
            let x = &e[row * d..(row + 1) * d];
            let mut hidden = vec![0.0f64; r];
            let mut hidden_mag = vec![0.0f64; r];
            for j in 0..r {
                let mut z = b1[j] as f64;
                let mut mag = (b1[j] as f64).abs();
                for i in 0..d {
                    z += x[i] as f64 * w_down[i * r + j] as f64;
                    mag += (x[i] as f64 * w_down[i * r + j] as f64).abs();
                }
                if z > 0.0 {
                    active += 1;
                } else {
                    inactive += 1;
                }
                hidden[j] = z.max(0.0);
                hidden_mag[j] = mag;
            }
            for c in 0..d {
                let mut f = b2[c] as f64;
                // Magnitude of every term, hidden ones at their pre-activation size (their own
                // rounding error propagates through W_up).
                let mut mag = (x[c] as f64).abs() + (b2[c] as f64).abs();
                for j in 0..r {
                    f += hidden[j] * w_up[j * d + c] as f64;
                    mag += hidden_mag[j] * (w_up[j * d + c] as f64).abs();
                }
                let want = x[c] as f64 + f;
                let err = (got[row * d + c] as f64 - want).abs();
                assert!(
                    err <= REL_TOL * mag,
                    "row {row} col {c}: folded {} vs E + f(E) = {want} (error {err:e}, scale {mag})",
                    got[row * d + c]
                );
                worst_rel = worst_rel.max(err / mag);
                max_offset = max_offset.max(f.abs());
            }
        }
        eprintln!(
            "fold_table: {vocab} rows, max relative error {worst_rel:e}, max |f(E)| {max_offset}"
        );
        // The check has teeth: offsets are large, and the ReLU both passes and blocks units.
        assert!(max_offset > 0.5, "offsets too small: {max_offset}");
        assert!(
            active > vocab / 10 && inactive > vocab / 10,
            "{active} {inactive}"
        );

        // The graph stage of a folded ADePT is that table and no offsets; unfolded, the MLP.
        let stage = a.graph_stage(&t, true)?;
        assert!(stage.offsets.is_empty());
        assert_eq!(flat(stage.folded_table.as_ref().unwrap()), got);
        let stage = a.graph_stage(&t, false)?;
        assert!(stage.folded_table.is_none());
        match &stage.offsets[..] {
            [GraphOffset::TokenMlp(m)] => {
                assert_eq!(
                    (m.w_down.name, m.b1.name, m.w_up.name, m.b2.name),
                    (W_DOWN, B1, W_UP, B2)
                );
                assert_eq!(flat(&m.w_up.tensor), w_up);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(stage.prompt.unwrap().name, names::PROMPT);

        for kind in [MethodKind::Pt, MethodKind::Dept, MethodKind::HeadOnly] {
            let other = Adapter::init(cfg(kind, 2, 2), &t, 0)?;
            assert!(other.fold_table(&t).is_err(), "{kind} folded");
            assert!(other.graph_stage(&t, true).is_err(), "{kind} folded");
        }
        Ok(())
    }
}
