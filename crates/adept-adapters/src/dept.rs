//! DePT: a soft prompt and low-rank *position* offsets, `E += (α/√r)·(A·B)[:s]`. The offset
//! depends on the position, not the token, so nothing folds into the vocabulary table; an export
//! graph adds the precomputed `[max_len, d]` product's first `s` rows.
//!
//! Tensors (PEFT names): `A [max_len, r]` = `prompt_encoder.lora_embedding_A`, `B [r, d]` =
//! `prompt_encoder.lora_embedding_B`.

use crate::adept::uniform;
use crate::method::names;
use crate::{
    Adapter, AdapterConfig, AdapterMethod, GraphOffset, MethodKind, NamedTensor, PositionRows,
};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;

/// `A [max_len, r]`.
pub const A: &str = names::LORA_A;
/// `B [r, d]`.
pub const B: &str = names::LORA_B;
/// The graph's constant `(α/√r)·A·B`, `[max_len, d]` (not an adapter tensor).
pub const POSITION_OFFSETS: &str = "prompt_encoder.position_offsets";

pub struct Dept;

/// DePT's position offsets for a sequence of `s` positions: `(α/√r)·(A·B)[:s]`, `[s, d]`.
pub fn position_offsets(adapter: &Adapter, s: usize) -> Result<Tensor> {
    let a = adapter.offset(A)?;
    if s > a.dims()[0] {
        candle_core::bail!(
            "input of {s} tokens is longer than DePT's max_length {}",
            a.dims()[0]
        );
    }
    let scale = adapter.config.alpha / (adapter.config.rank as f64).sqrt();
    a.narrow(0, 0, s)?.matmul(adapter.offset(B)?)? * scale
}

impl AdapterMethod for Dept {
    fn kind(&self) -> MethodKind {
        MethodKind::Dept
    }
    fn name(&self) -> &'static str {
        "dept"
    }
    fn peft_type(&self) -> &'static str {
        "DEPT"
    }
    fn offset_shapes(&self, d: usize, r: usize, max_len: usize) -> Vec<(&'static str, Vec<usize>)> {
        vec![(A, vec![max_len, r]), (B, vec![r, d])]
    }
    fn init_offsets(
        &self,
        cfg: &AdapterConfig,
        rng: &mut StdRng,
        dev: &Device,
    ) -> Result<Vec<Var>> {
        let r = cfg.rank;
        if r == 0 {
            candle_core::bail!("DePT needs a rank r > 0");
        }
        let bound = 1.0 / (r as f64).sqrt();
        Ok(vec![
            uniform((cfg.max_length, r), bound, rng, dev)?,
            Var::zeros((r, cfg.token_dim), DType::F32, dev)?,
        ])
    }
    fn add_offsets(
        &self,
        adapter: &Adapter,
        word_embeds: &Tensor,
        _train_rng: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let (_, s, _) = word_embeds.dims3()?;
        word_embeds.broadcast_add(&position_offsets(adapter, s)?)
    }
    /// The product is a constant, so it is computed once at export (by [`position_offsets`],
    /// the code training runs) for all `max_length` positions; the graph slices its first `s`
    /// rows. Inputs longer than `max_length` fail in the graph's `Add`, as they fail here.
    fn graph_offsets(&self, adapter: &Adapter) -> anyhow::Result<Vec<GraphOffset>> {
        Ok(vec![GraphOffset::PositionRows(PositionRows {
            scope: names::SCOPE,
            table: NamedTensor {
                name: POSITION_OFFSETS,
                tensor: position_offsets(adapter, adapter.config.max_length)?,
            },
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cfg, flat, lcg, REL_TOL};

    #[test]
    fn dept_offsets_are_position_based() -> anyhow::Result<()> {
        let (vocab, d, r, max_len) = (50, 8, 2, 12);
        let t = Tensor::from_vec(lcg(21, vocab * d, 1.0), (vocab, d), &Device::Cpu)?;
        let a = Adapter::init(cfg(MethodKind::Dept, 1, r), &t, 5)?;
        // The engineering notes' DePT scaling: (α/√r)·A·B with α = 8.
        assert_eq!(a.config.alpha, 8.0);
        let scale = 8.0 / (r as f64).sqrt();
        // B is zero at init (offsets ≡ 0): give it non-zero values.
        for (name, _, v) in a.vars() {
            if name == B {
                v.set(&Tensor::from_vec(
                    lcg(22, r * d, 1.0),
                    (r, d),
                    &Device::Cpu,
                )?)?;
            }
        }
        let ts = a.tensors();
        let (a_mat, b_mat) = (flat(&ts[A]), flat(&ts[B]));
        assert_eq!((a_mat.len(), b_mat.len()), (max_len * r, r * d));
        // Reference offsets (α/√r)·(A·B)[p] in f64, with the magnitude of their terms.
        let reference = |p: usize, c: usize| -> (f64, f64) {
            let (mut sum, mut mag) = (0.0f64, 0.0f64);
            for k in 0..r {
                let term = a_mat[p * r + k] as f64 * b_mat[k * d + c] as f64;
                sum += term;
                mag += term.abs();
            }
            (scale * sum, scale * mag)
        };

        // position_offsets(s) is [s, d], every row as the reference.
        let s_len = 5;
        let off = flat(&position_offsets(&a, s_len)?);
        assert_eq!(off.len(), s_len * d);
        for p in 0..s_len {
            for c in 0..d {
                let (want, mag) = reference(p, c);
                let err = (off[p * d + c] as f64 - want).abs();
                assert!(
                    err <= REL_TOL * mag,
                    "position {p} col {c}: {} vs {want}",
                    off[p * d + c]
                );
            }
        }

        // Through apply: token 3 at positions 0 and 1, token 7 at positions 1 and 2 and at
        // position 2 in both sequences; positions 3 hold different tokens (11, 20).
        let ids: [[u32; 5]; 2] = [[3, 7, 7, 11, 9], [7, 3, 7, 20, 9]];
        let id_tensor = Tensor::new(&ids, &Device::Cpu)?;
        let e = t
            .index_select(&id_tensor.flatten_all()?, 0)?
            .reshape((2, s_len, d))?;
        let out = a.apply(&e, None)?;
        assert_eq!(out.dims(), &[2, 1 + s_len, d]);
        let out_v = flat(&out);
        let table = flat(&t);
        let prompt = flat(a.prompt().unwrap());
        // offset[b][p] = out - E, checked against E + (α/√r)·(A·B)[p] in f64.
        let mut offsets = vec![vec![vec![0.0f64; d]; s_len]; 2];
        let mut worst_rel = 0.0f64;
        for (b, seq) in ids.iter().enumerate() {
            let base = b * (1 + s_len) * d;
            assert_eq!(
                &out_v[base..base + d],
                &prompt[..],
                "prompt row of sequence {b}"
            );
            for (p, &id) in seq.iter().enumerate() {
                for c in 0..d {
                    let x = table[id as usize * d + c] as f64;
                    let got = out_v[base + (1 + p) * d + c] as f64;
                    let (o, mag) = reference(p, c);
                    let err = (got - (x + o)).abs();
                    let bound = REL_TOL * (x.abs() + mag);
                    assert!(
                        err <= bound,
                        "seq {b} pos {p} col {c}: {got} vs E + offset = {}",
                        x + o
                    );
                    worst_rel = worst_rel.max(err / (x.abs() + mag));
                    offsets[b][p][c] = got - x;
                }
            }
        }
        eprintln!("DePT offsets: max relative error {worst_rel:e}");
        let max_diff = |u: &[f64], v: &[f64]| -> f64 {
            u.iter()
                .zip(v)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max)
        };
        // Same token, different positions: different offsets.
        assert!(
            max_diff(&offsets[0][0], &offsets[1][1]) > 0.1,
            "token 3 at positions 0, 1"
        );
        assert!(
            max_diff(&offsets[0][1], &offsets[0][2]) > 0.1,
            "token 7 at positions 1, 2"
        );
        // Same position, whatever the token or sequence: the same offset (up to f32 rounding
        // of E + offset − E).
        for p in 0..s_len {
            let diff = max_diff(&offsets[0][p], &offsets[1][p]);
            assert!(diff < 1e-6, "position {p}: offsets differ by {diff:e}");
        }

        assert!(position_offsets(&a, max_len).is_ok());
        assert!(position_offsets(&a, max_len + 1).is_err());

        // The graph gets the whole [max_len, d] product, the same values training adds.
        let stage = a.graph_stage(&t, false)?;
        assert!(stage.folded_table.is_none());
        match &stage.offsets[..] {
            [GraphOffset::PositionRows(rows)] => {
                assert_eq!(rows.table.name, POSITION_OFFSETS);
                assert_eq!(rows.table.tensor.dims(), &[max_len, d]);
                assert_eq!(
                    flat(&rows.table.tensor.narrow(0, 0, s_len)?),
                    flat(&position_offsets(&a, s_len)?)
                );
            }
            other => panic!("{other:?}"),
        }
        Ok(())
    }
}
