//! Adapter methods for a frozen model: ADePT, DePT and vanilla prompt tuning (PT).
//!
//! One type, [`Adapter`], is the seam shared by training, export and analysis. It owns its
//! parameters (the soft prompt and the method's own tensors, by their PEFT names) and offers:
//! - [`Adapter::apply`]: word embeddings `E [b, s, d]` → `[P, E + offsets(E)] [b, l + s, d]`
//!   (training and evaluation in candle);
//! - [`Adapter::fold_table`]: token-wise offsets (ADePT's) folded into the vocabulary table
//!   (`E + f(E)` for every row), exact because `f` sees only the token's own embedding;
//! - [`Adapter::graph_stage`]: what is left for an export graph (the folded table or the
//!   method's [`GraphOffset`]s, and the prompt); `adept-export` turns it into nodes;
//! - [`Adapter::save`]/[`Adapter::load`]: `adapter_config.json` + `adapter_model.safetensors`
//!   in PEFT's layout (see the crate README).
//!
//! What differs between methods sits behind one trait, [`AdapterMethod`], one module each, and
//! the [`registry`] maps a [`MethodKind`] to its method:
//!
//! | module | method | prompt | offsets | parameters | `peft_type` |
//! |---|---|---|---|---|---|
//! | [`adept`] | ADePT | `P [l, d]` | `ReLU(E·W_down + b1)·W_up + b2` per token (dropout 0.1 before the ReLU); folds | `l·d + 2·r·d + r + d` | `ADEPT` |
//! | [`dept`] | DePT  | `P [l, d]` | `(α/√r)·(A·B)[:s]` per position | `l·d + max_len·r + r·d` | `DEPT` |
//! | [`pt`] | PT    | `P [l, d]` | none | `l·d` | `PROMPT_TUNING` |
//! | [`pt`] | head-only | none | none | 0 | `HEAD_ONLY` |
//!
//! [`budget`] picks `r` for a prompt length under a parameter budget (default `100·d`).
//!
//! The prompt length is `prompt_len` everywhere in code (`AdapterConfig::prompt_len`,
//! `Adapter::prompt_len`); only `adapter_config.json` calls it `num_virtual_tokens`, as PEFT
//! does.

mod adapter;
pub mod adept;
pub mod budget;
mod config;
pub mod dept;
mod method;
pub mod pt;
pub mod registry;

pub use adapter::{Adapter, TensorRole};
pub use budget::{default_budget, solve_rank};
pub use config::{
    AdapterConfig, AdapterConfigFile, MethodKind, PromptInit, LEGACY_PEFT_TYPE, TASK_TYPE,
};
pub use method::names::{self, PROMPT};
pub use method::{AdapterMethod, GraphOffset, GraphStage, NamedTensor, PositionRows, TokenMlp};
pub use registry::method;

#[cfg(test)]
pub(crate) mod testutil {
    use crate::{AdapterConfig, MethodKind};
    use candle_core::{Device, Tensor};

    pub fn table() -> Tensor {
        Tensor::randn(0f32, 1., (50, 8), &Device::Cpu).unwrap()
    }

    pub fn cfg(method: MethodKind, l: usize, r: usize) -> AdapterConfig {
        let mut c = AdapterConfig::new(method, 8, l, r);
        c.max_length = 12;
        c
    }

    /// Deterministic values in `[-scale, scale)` (64-bit LCG), so a failure reproduces.
    pub fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (2.0 * ((s >> 40) as f32 / (1u64 << 24) as f32) - 1.0) * scale
            })
            .collect()
    }

    pub fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Relative tolerance for an f32 result against an f64 reference: f32 rounding (u = 2⁻²⁴ ≈
    /// 6e-8) in a sum of n terms errs by at most about n·u times the sum of the terms'
    /// magnitudes, and typically √n·u; these sums have n ≤ 12 terms, so 1e-5 (≈ 170 u) is loose
    /// for correct code while a wrong term (an offset of order 0.1–1) is 10⁴ times larger.
    pub const REL_TOL: f64 = 1e-5;
}
