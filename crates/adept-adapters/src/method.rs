//! The adapter's parameters and its three operations (apply, fold, save/load).

use crate::{AdapterConfig, MethodKind, PromptInit};
use adept_nn::dropout_mask;
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// PEFT names of the tensors in `adapter_model.safetensors`.
pub const PROMPT: &str = "prompt_embeddings";
pub const A: &str = "prompt_encoder.lora_embedding_A";
pub const B: &str = "prompt_encoder.lora_embedding_B";
pub const A_BIAS: &str = "prompt_encoder.lora_embedding_a";
pub const B_BIAS: &str = "prompt_encoder.lora_embedding_b";

/// Which optimiser group a tensor belongs to (each has its own learning rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorRole {
    Prompt,
    Offsets,
}

#[derive(Clone, Debug)]
pub struct Adapter {
    pub config: AdapterConfig,
    /// `P [l, d]`; `None` for head-only.
    prompt: Option<Var>,
    /// ADePT `(W_down [d, r], b1 [r], W_up [r, d], b2 [d])` or DePT `(A [max_len, r], B [r, d])`.
    offsets: Vec<(&'static str, Var)>,
}

fn uniform(shape: (usize, usize), bound: f64, rng: &mut StdRng, dev: &Device) -> Result<Var> {
    let n = shape.0 * shape.1;
    let v: Vec<f32> = (0..n)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, dev)?)
}

impl Adapter {
    /// Fresh parameters as the authors' code initialises them: prompt from `config.prompt_init`
    /// (rows of `word_table`), ADePT `W_down` and DePT `A` kaiming-uniform (a = √5, i.e.
    /// U(±1/√r)), everything else zero, so the offsets are exactly 0 at step 0.
    pub fn init(config: AdapterConfig, word_table: &Tensor, seed: u64) -> anyhow::Result<Self> {
        let (vocab, d) = word_table.dims2()?;
        if d != config.token_dim {
            bail!(
                "adapter token_dim {} does not match the model's embedding width {d}",
                config.token_dim
            );
        }
        let dev = word_table.device();
        let mut rng = StdRng::seed_from_u64(seed);
        let l = config.num_virtual_tokens;
        let prompt = if config.method == MethodKind::HeadOnly || l == 0 {
            None
        } else {
            let ids: Vec<u32> = match &config.prompt_init {
                PromptInit::Text { token_ids, text } => {
                    if token_ids.is_empty() {
                        bail!("prompt init text {text:?} gave no tokens");
                    }
                    if let Some(bad) = token_ids.iter().find(|&&t| t as usize >= vocab) {
                        bail!(
                            "prompt init token id {bad} is outside the vocabulary ({vocab} rows)"
                        );
                    }
                    token_ids.iter().copied().cycle().take(l).collect()
                }
                PromptInit::SampleVocab { seed } => {
                    let mut r = StdRng::seed_from_u64(*seed);
                    (0..l).map(|_| r.random_range(0..vocab as u32)).collect()
                }
            };
            let ids = Tensor::new(ids.as_slice(), dev)?;
            Some(Var::from_tensor(
                &word_table.index_select(&ids, 0)?.contiguous()?,
            )?)
        };
        let r = config.rank;
        let offsets = match config.method {
            MethodKind::Adept => {
                if r == 0 {
                    bail!("ADePT needs a rank r > 0");
                }
                let bound = 1.0 / (r as f64).sqrt();
                vec![
                    (A, uniform((d, r), bound, &mut rng, dev)?),
                    (A_BIAS, Var::zeros(r, DType::F32, dev)?),
                    (B, Var::zeros((r, d), DType::F32, dev)?),
                    (B_BIAS, Var::zeros(d, DType::F32, dev)?),
                ]
            }
            MethodKind::Dept => {
                if r == 0 {
                    bail!("DePT needs a rank r > 0");
                }
                let bound = 1.0 / (r as f64).sqrt();
                vec![
                    (A, uniform((config.max_length, r), bound, &mut rng, dev)?),
                    (B, Var::zeros((r, d), DType::F32, dev)?),
                ]
            }
            MethodKind::Pt | MethodKind::HeadOnly => vec![],
        };
        Ok(Self {
            config,
            prompt,
            offsets,
        })
    }

    pub fn method(&self) -> MethodKind {
        self.config.method
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt.as_ref().map_or(0, |p| p.dims()[0])
    }

    pub fn prompt(&self) -> Option<&Tensor> {
        self.prompt.as_ref().map(|p| p.as_tensor())
    }

    fn offset(&self, name: &str) -> Result<&Tensor> {
        self.offsets
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("adapter has no tensor {name}")))
    }

    /// All trainable tensors with their PEFT names and optimiser group.
    pub fn vars(&self) -> Vec<(String, TensorRole, Var)> {
        let mut out = Vec::new();
        if let Some(p) = &self.prompt {
            out.push((PROMPT.to_string(), TensorRole::Prompt, p.clone()));
        }
        for (n, v) in &self.offsets {
            out.push((n.to_string(), TensorRole::Offsets, v.clone()));
        }
        out
    }

    /// Named tensors (what goes to `adapter_model.safetensors` and into export graphs).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars()
            .into_iter()
            .map(|(n, _, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    pub fn param_count(&self) -> usize {
        self.vars().iter().map(|(_, _, v)| v.elem_count()).sum()
    }

    /// ADePT's token-wise MLP `f(e) = ReLU(e·W_down + b1)·W_up + b2` on `e [..., d]`;
    /// `dropout` applies inverted dropout to the hidden pre-activation (training only).
    pub fn token_offsets(&self, e: &Tensor, dropout: Option<&mut StdRng>) -> Result<Tensor> {
        let (w_down, b1, w_up, b2) = (
            self.offset(A)?,
            self.offset(A_BIAS)?,
            self.offset(B)?,
            self.offset(B_BIAS)?,
        );
        let mut hidden = e.broadcast_matmul(w_down)?.broadcast_add(b1)?;
        if let Some(rng) = dropout {
            if self.config.dropout > 0.0 {
                let mask = dropout_mask(hidden.dims(), self.config.dropout, rng, e.device())?;
                hidden = hidden.mul(&mask)?;
            }
        }
        hidden.relu()?.broadcast_matmul(w_up)?.broadcast_add(b2)
    }

    /// DePT's position offsets for a sequence of `s` positions: `(α/√r)·(A·B)[:s]`, `[s, d]`.
    pub fn position_offsets(&self, s: usize) -> Result<Tensor> {
        let a = self.offset(A)?;
        if s > a.dims()[0] {
            candle_core::bail!(
                "input of {s} tokens is longer than DePT's max_length {}",
                a.dims()[0]
            );
        }
        let scale = self.config.alpha / (self.config.rank as f64).sqrt();
        a.narrow(0, 0, s)?.matmul(self.offset(B)?)? * scale
    }

    /// Input word embeddings `E [b, s, d]` → `[P, E + offsets(E)]`, `[b, l + s, d]`.
    /// `train_rng` turns on ADePT's dropout (and draws its mask).
    pub fn apply(&self, word_embeds: &Tensor, train_rng: Option<&mut StdRng>) -> Result<Tensor> {
        let (b, s, d) = word_embeds.dims3()?;
        let embeds = match self.config.method {
            MethodKind::Adept => (word_embeds + self.token_offsets(word_embeds, train_rng)?)?,
            MethodKind::Dept => word_embeds.broadcast_add(&self.position_offsets(s)?)?,
            MethodKind::Pt | MethodKind::HeadOnly => word_embeds.clone(),
        };
        match &self.prompt {
            Some(p) => {
                let l = p.dims()[0];
                let prompt = p.as_tensor().unsqueeze(0)?.broadcast_as((b, l, d))?;
                Tensor::cat(&[&prompt, &embeds], 1)
            }
            None => Ok(embeds),
        }
    }

    /// A `[b, s]` mask or token-type tensor with `l` leading entries of `fill` (1 for the mask,
    /// 0 for token types): the prompt is always attended and belongs to segment 0.
    pub fn extend(&self, t: &Tensor, fill: u32) -> Result<Tensor> {
        let l = self.prompt_len();
        if l == 0 {
            return Ok(t.clone());
        }
        let (b, _) = t.dims2()?;
        let prefix = (Tensor::ones((b, l), t.dtype(), t.device())? * fill as f64)?;
        Tensor::cat(&[&prefix, t], 1)
    }

    /// ADePT folded: the vocabulary table `E + f(E)` (eval mode), computed in chunks of rows.
    pub fn fold_table(&self, word_table: &Tensor) -> anyhow::Result<Tensor> {
        if self.config.method != MethodKind::Adept {
            bail!(
                "only ADePT's token-wise offsets fold into the vocabulary table ({} has none to fold)",
                self.config.method
            );
        }
        let (vocab, _) = word_table.dims2()?;
        let table = word_table.detach();
        let chunk = 4096;
        let mut parts = Vec::new();
        let mut start = 0;
        while start < vocab {
            let n = chunk.min(vocab - start);
            let rows = table.narrow(0, start, n)?;
            parts.push((&rows + self.token_offsets(&rows, None)?.detach())?);
            start += n;
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`, each through a
    /// temporary file and a rename.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create adapter folder {}", dir.display()))?;
        let cfg = serde_json::to_vec_pretty(&self.config)?;
        write_atomic(&dir.join("adapter_config.json"), &cfg)?;
        let weights = dir.join("adapter_model.safetensors");
        let tmp = dir.join(".adapter_model.safetensors.tmp");
        let tensors = self.tensors();
        if !tensors.is_empty() {
            candle_core::safetensors::save(&tensors, &tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &weights)?;
        }
        Ok(())
    }

    /// Reads an adapter written by [`Adapter::save`] (or PEFT with the same names), checking
    /// every tensor's shape against the config.
    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let config: AdapterConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid adapter config", cfg_path.display()))?;
        let weights_path = dir.join("adapter_model.safetensors");
        let mut tensors = if config.method == MethodKind::HeadOnly {
            HashMap::new()
        } else {
            candle_core::safetensors::load(&weights_path, device).with_context(|| {
                format!("cannot read adapter weights {}", weights_path.display())
            })?
        };
        let (d, l, r) = (config.token_dim, config.num_virtual_tokens, config.rank);
        let mut take = |name: &'static str, shape: &[usize]| -> anyhow::Result<Var> {
            let t = tensors
                .remove(name)
                .with_context(|| format!("{}: missing tensor {name}", weights_path.display()))?;
            if t.dims() != shape {
                bail!(
                    "{}: tensor {name} has shape {:?}, adapter_config.json implies {:?}",
                    weights_path.display(),
                    t.dims(),
                    shape
                );
            }
            Ok(Var::from_tensor(&t.to_dtype(DType::F32)?)?)
        };
        let prompt = if config.method == MethodKind::HeadOnly || l == 0 {
            None
        } else {
            Some(take(PROMPT, &[l, d])?)
        };
        let offsets = match config.method {
            MethodKind::Adept => vec![
                (A, take(A, &[d, r])?),
                (A_BIAS, take(A_BIAS, &[r])?),
                (B, take(B, &[r, d])?),
                (B_BIAS, take(B_BIAS, &[d])?),
            ],
            MethodKind::Dept => vec![
                (A, take(A, &[config.max_length, r])?),
                (B, take(B, &[r, d])?),
            ],
            _ => vec![],
        };
        Ok(Self {
            config,
            prompt,
            offsets,
        })
    }

    /// Overwrites parameter values in place (used when resuming from a checkpoint).
    pub fn set_values(&self, values: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (name, _, var) in self.vars() {
            let t = values
                .get(&name)
                .with_context(|| format!("checkpoint lacks adapter tensor {name}"))?;
            var.set(t)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a reader
/// never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Tensor {
        Tensor::randn(0f32, 1., (50, 8), &Device::Cpu).unwrap()
    }

    fn cfg(method: MethodKind, l: usize, r: usize) -> AdapterConfig {
        let mut c = AdapterConfig::new(method, 8, l, r);
        c.max_length = 12;
        c
    }

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

    /// Deterministic values in `[-scale, scale)` (64-bit LCG), so a failure reproduces.
    fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
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

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// Relative tolerance for an f32 result against an f64 reference: f32 rounding (u = 2⁻²⁴ ≈
    /// 6e-8) in a sum of n terms errs by at most about n·u times the sum of the terms' magnitudes,
    /// and typically √n·u; these sums have n ≤ 12 terms, so 1e-5 (≈ 170 u) is loose for correct
    /// code while a wrong term (an offset of order 0.1–1) is 10⁴ times larger.
    const REL_TOL: f64 = 1e-5;

    #[test]
    fn fold_table_equals_e_plus_f_row_by_row() -> anyhow::Result<()> {
        // More rows than fold_table's 4096-row chunk, so the chunk seam is checked too.
        let (vocab, d, r) = (4096 + 45, 8, 3);
        let t = Tensor::from_vec(lcg(11, vocab * d, 1.0), (vocab, d), &Device::Cpu)?;
        let a = Adapter::init(cfg(MethodKind::Adept, 2, r), &t, 2)?;
        // ADePT initialises W_up = b2 = b1 = 0 (f ≡ 0): give every MLP tensor non-zero values.
        let mut seed = 100;
        for (name, _, v) in a.vars() {
            if name != PROMPT {
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
            flat(&ts[A]),
            flat(&ts[A_BIAS]),
            flat(&ts[B]),
            flat(&ts[B_BIAS]),
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

        assert!(Adapter::init(cfg(MethodKind::Pt, 2, 0), &t, 0)?
            .fold_table(&t)
            .is_err());
        Ok(())
    }

    #[test]
    fn save_load_roundtrip_and_shape_mismatch_error() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("adept-adapter-test-{}", std::process::id()));
        let t = table();
        let a = Adapter::init(cfg(MethodKind::Dept, 2, 3), &t, 5)?;
        a.save(&dir)?;
        let b = Adapter::load(&dir, &Device::Cpu)?;
        assert_eq!(a.config, b.config);
        for (name, tensor) in a.tensors() {
            let other = &b.tensors()[&name];
            let diff = (tensor - other)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{name}");
        }
        // Claim a different rank: loading must name the tensor and both shapes.
        let mut c = b.config.clone();
        c.rank = 5;
        write_atomic(&dir.join("adapter_config.json"), &serde_json::to_vec(&c)?)?;
        let err = format!("{:#}", Adapter::load(&dir, &Device::Cpu).unwrap_err());
        assert!(
            err.contains("lora_embedding_A") && err.contains("[12, 3]"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

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
        let off = flat(&a.position_offsets(s_len)?);
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

        assert!(a.position_offsets(max_len).is_ok());
        assert!(a.position_offsets(max_len + 1).is_err());
        Ok(())
    }
}
