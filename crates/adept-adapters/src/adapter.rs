//! [`Adapter`]: an adapter's parameters and the operations every method shares (init, apply,
//! fold, save/load), each dispatching to the method ([`crate::AdapterMethod`]) for what differs.

use crate::method::names::PROMPT;
use crate::{AdapterConfig, AdapterMethod, GraphStage, NamedTensor, PromptInit};
use adept_bundle::write_atomic;
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

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
    /// The method's tensors, in [`AdapterMethod::offset_shapes`] order, by PEFT name.
    offsets: Vec<(&'static str, Var)>,
}

impl Adapter {
    /// Fresh parameters as the authors' code initialises them: prompt from `config.prompt_init`
    /// (rows of `word_table`), then the method's own tensors ([`AdapterMethod::init_offsets`]:
    /// ADePT `W_down` and DePT `A` kaiming-uniform, everything else zero, so the offsets are
    /// exactly 0 at step 0).
    pub fn init(config: AdapterConfig, word_table: &Tensor, seed: u64) -> anyhow::Result<Self> {
        let (vocab, d) = word_table.dims2()?;
        if d != config.token_dim {
            bail!(
                "adapter token_dim {} does not match the model's embedding width {d}",
                config.token_dim
            );
        }
        let method = config.method.imp();
        let dev = word_table.device();
        let mut rng = StdRng::seed_from_u64(seed);
        let l = config.prompt_len;
        let prompt = if !method.has_prompt() || l == 0 {
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
        let shapes = method.offset_shapes(d, config.rank, config.max_length);
        let values = method.init_offsets(&config, &mut rng, dev)?;
        let offsets = shapes
            .iter()
            .map(|(name, _)| *name)
            .zip(values)
            .collect::<Vec<_>>();
        debug_assert!(offsets
            .iter()
            .zip(&shapes)
            .all(|((_, v), (_, s))| v.dims() == s.as_slice()));
        Ok(Self {
            config,
            prompt,
            offsets,
        })
    }

    pub fn method(&self) -> crate::MethodKind {
        self.config.method
    }

    /// The method behind this adapter.
    pub fn imp(&self) -> &'static dyn AdapterMethod {
        self.config.method.imp()
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt.as_ref().map_or(0, |p| p.dims()[0])
    }

    pub fn prompt(&self) -> Option<&Tensor> {
        self.prompt.as_ref().map(|p| p.as_tensor())
    }

    /// One of the method's tensors by PEFT name (not the prompt).
    pub fn offset(&self, name: &str) -> Result<&Tensor> {
        self.offsets
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "the {} adapter has no tensor {name}",
                    self.config.method
                ))
            })
    }

    /// [`Adapter::offset`] with its name, for an export graph.
    pub fn named_offset(&self, name: &'static str) -> Result<NamedTensor> {
        Ok(NamedTensor {
            name,
            tensor: self.offset(name)?.clone(),
        })
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

    /// Named tensors (what goes to `adapter_model.safetensors`).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars()
            .into_iter()
            .map(|(n, _, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    pub fn param_count(&self) -> usize {
        self.vars().iter().map(|(_, _, v)| v.elem_count()).sum()
    }

    /// Input word embeddings `E [b, s, d]` → `[P, E + offsets(E)]`, `[b, l + s, d]`.
    /// `train_rng` turns on the method's dropout (and draws its mask).
    pub fn apply(&self, word_embeds: &Tensor, train_rng: Option<&mut StdRng>) -> Result<Tensor> {
        let (b, _, d) = word_embeds.dims3()?;
        let embeds = self.imp().add_offsets(self, word_embeds, train_rng)?;
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

    /// The fold rule, for every method: when the offsets see only a token's own row
    /// ([`AdapterMethod::folds`]), the vocabulary table `E + offsets(E)` (eval mode) replaces
    /// the word embeddings; computed in chunks of rows.
    pub fn fold_table(&self, word_table: &Tensor) -> anyhow::Result<Tensor> {
        let method = self.imp();
        if !method.folds() {
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
            parts.push(method.add_offsets(self, &rows, None)?.detach());
            start += n;
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// What an export graph needs of this adapter: the folded table (`fold`, a method that
    /// folds) or the method's [`graph_offsets`](AdapterMethod::graph_offsets), and the prompt.
    pub fn graph_stage(&self, word_table: &Tensor, fold: bool) -> anyhow::Result<GraphStage> {
        let (folded_table, offsets) = if fold {
            (Some(self.fold_table(word_table)?), Vec::new())
        } else {
            (None, self.imp().graph_offsets(self)?)
        };
        Ok(GraphStage {
            folded_table,
            offsets,
            prompt: self.prompt().map(|p| NamedTensor {
                name: PROMPT,
                tensor: p.clone(),
            }),
        })
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`, each with
    /// [`write_atomic`] (temporary file, `fsync`, rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create adapter folder {}", dir.display()))?;
        let cfg = serde_json::to_vec_pretty(&self.config)?;
        write_atomic(&dir.join("adapter_config.json"), &cfg)?;
        let weights = dir.join("adapter_model.safetensors");
        let tensors = self.tensors();
        if !tensors.is_empty() {
            // The bytes `candle_core::safetensors::save` writes (same serializer, no metadata).
            let bytes = safetensors::serialize(&tensors, None)
                .with_context(|| format!("cannot serialise {}", weights.display()))?;
            write_atomic(&weights, &bytes)?;
        }
        Ok(())
    }

    /// Reads an adapter written by [`Adapter::save`] (this version or an older one), checking
    /// every tensor's shape against the config.
    pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let config: AdapterConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid adapter config", cfg_path.display()))?;
        let method = config.method.imp();
        let (d, l, r) = (config.token_dim, config.prompt_len, config.rank);
        let with_prompt = method.has_prompt() && l > 0;
        let shapes = method.offset_shapes(d, r, config.max_length);
        let weights_path = dir.join("adapter_model.safetensors");
        let mut tensors = if !with_prompt && shapes.is_empty() {
            HashMap::new()
        } else {
            candle_core::safetensors::load(&weights_path, device).with_context(|| {
                format!("cannot read adapter weights {}", weights_path.display())
            })?
        };
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
        let prompt = if with_prompt {
            Some(take(PROMPT, &[l, d])?)
        } else {
            None
        };
        let offsets = shapes
            .iter()
            .map(|(name, shape)| Ok((*name, take(name, shape)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{cfg, table};
    use crate::{dept, MethodKind};

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("adept-adapter-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn save_load_roundtrip_and_shape_mismatch_error() -> anyhow::Result<()> {
        let dir = temp_dir("roundtrip");
        let t = table();
        for method in [
            MethodKind::Adept,
            MethodKind::Dept,
            MethodKind::Pt,
            MethodKind::HeadOnly,
        ] {
            let a = Adapter::init(cfg(method, 2, 3), &t, 5)?;
            a.save(&dir)?;
            let b = Adapter::load(&dir, &Device::Cpu)?;
            assert_eq!(a.config, b.config);
            assert_eq!(a.tensors().len(), b.tensors().len(), "{method}");
            for (name, tensor) in a.tensors() {
                let other = &b.tensors()[&name];
                let diff = (tensor - other)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(diff, 0.0, "{name}");
            }
            std::fs::remove_dir_all(&dir)?;
        }
        // Claim a different rank: loading must name the tensor and both shapes.
        let a = Adapter::init(cfg(MethodKind::Dept, 2, 3), &t, 5)?;
        a.save(&dir)?;
        let mut c = a.config.clone();
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

    /// An adapter folder as adept wrote it before each method had its own `peft_type`
    /// (`PROMPT_TUNING` for all; `method` decides) loads with its tensors.
    #[test]
    fn adapters_written_before_per_method_peft_types_still_load() -> anyhow::Result<()> {
        let dir = temp_dir("legacy");
        let t = table();
        let a = Adapter::init(cfg(MethodKind::Dept, 2, 3), &t, 5)?;
        a.save(&dir)?;
        let legacy = format!(
            r#"{{
  "peft_type": "PROMPT_TUNING",
  "method": "dept",
  "num_virtual_tokens": 2,
  "token_dim": 8,
  "rank": 3,
  "max_length": 12,
  "alpha": 8.0,
  "dropout": 0.1,
  "prompt_init": {{
    "kind": "sample_vocab",
    "seed": 0
  }},
  "budget": {}
}}"#,
            crate::default_budget(8)
        );
        std::fs::write(dir.join("adapter_config.json"), legacy)?;
        let b = Adapter::load(&dir, &Device::Cpu)?;
        assert_eq!(b.config, a.config);
        assert_eq!(b.method(), MethodKind::Dept);
        let diff = (dept::position_offsets(&a, 4)? - dept::position_offsets(&b, 4)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// A PT adapter's files are what Python PEFT reads as prompt tuning: its config keys and
    /// one tensor `prompt_embeddings [l, d]`.
    #[test]
    fn a_pt_adapter_is_a_peft_prompt_tuning_adapter() -> anyhow::Result<()> {
        let dir = temp_dir("peft");
        let a = Adapter::init(cfg(MethodKind::Pt, 4, 0), &table(), 5)?;
        a.save(&dir)?;
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json"))?)?;
        assert_eq!(v["peft_type"], "PROMPT_TUNING");
        assert_eq!(v["task_type"], "FEATURE_EXTRACTION");
        assert_eq!(v["num_virtual_tokens"], 4);
        assert_eq!(v["token_dim"], 8);
        assert_eq!(v["num_transformer_submodules"], 1);
        let w =
            candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)?;
        assert_eq!(w.keys().collect::<Vec<_>>(), ["prompt_embeddings"]);
        assert_eq!(w["prompt_embeddings"].dims(), &[4, 8]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
