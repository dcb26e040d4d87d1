//! Llama-family decoder-only language model (Llama 2/3 layout, SmolLM2, TinyLlama…) written from
//! differentiable candle ops, behind [`crate::CausalLm`].
//!
//! `forward_embeds(inputs_embeds, attention_mask, cache)` runs N × (RMSNorm → self-attention with
//! rotary position embeddings → residual, RMSNorm → SwiGLU feed-forward → residual), then the
//! final RMSNorm. [`CausalLm::logits`] applies the language-model head (the input embedding table
//! when tied) to whichever rows the caller passes, so training computes it for target rows only.
//!
//! Design points:
//! - **Positions from the mask.** A position's id is `cumsum(mask) - 1` over the whole mask
//!   (cached past and new positions), clamped at 0 for padded rows, so left padding, right
//!   padding and a soft prompt (as prefix rows or in the cache) give a token the same position.
//! - **Rotary embeddings** in Hugging Face's rotate-half layout: `x·cos + rotate_half(x)·sin`, the
//!   cos/sin tables computed on the host in f32 from the position ids exactly as
//!   `LlamaRotaryEmbedding` does. (GGUF checkpoints permute Q/K rows for the interleaved layout;
//!   the GGUF loader must undo that before [`LlamaModel::from_tensors`].)
//! - **Grouped-query attention** without copying keys/values: queries `[b, h, s, hd]` are viewed as
//!   `[b, kv_heads, rep·s, hd]` (query head `i` uses key/value head `i / rep`, as HF's
//!   `repeat_kv`), so one batched product per KV head serves its `rep` query heads.
//! - **Masking**: an additive causal bias `[s, past + s]` plus the padding bias `[b, past + s]`
//!   through [`adept_nn::attention_probs`] (a fused softmax with an input-only backward on the
//!   CPU, composite ops elsewhere). Biases are finite (−1e9), so fully padded rows give finite
//!   (meaningless) values rather than NaN, and no NaN reaches the gradient.
//! - **Frozen weights**: every projection is an [`adept_nn::FrozenLinear`] (backward computes the
//!   input gradient only); norms are composite ops on detached weights. candle's fused
//!   `rms_norm`/`softmax_last_dim`/`rope` have no backward pass and are not used.
//! - **KV cache** in optimum's layout `[b, kv_heads, past, head_dim]` per layer ([`crate::KvCache`]).

pub mod fused;
#[cfg(feature = "onnx")]
pub mod onnx;

use crate::{Backbone, CacheShape, CausalLm, KvCache, Weights};
use adept_nn::{attention_probs, Autocast, FrozenLinear};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor, D};
use fused::RopeTables;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `config.json` `model_type`s this family loads.
pub const MODEL_TYPES: &[&str] = &["llama"];

/// The registry's loader: a Llama-family causal LM from an HF-layout folder.
pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Box<dyn CausalLm>> {
    Ok(Box::new(LlamaModel::from_dir(dir, device)?))
}

/// A Llama configuration with every default resolved (what `config.json` leaves out is filled
/// in as `transformers.LlamaConfig` does). Build it with [`LlamaConfig::from_file`] /
/// [`LlamaConfig::from_json_str`], or field by field (the GGUF loader) and then [`validate`].
///
/// [`validate`]: LlamaConfig::validate
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Key/value heads (`num_attention_heads` when the checkpoint does not say: plain MHA).
    pub num_key_value_heads: usize,
    /// Per-head width (`hidden_size / num_attention_heads` when the checkpoint does not say).
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Only `"default"` is supported (no llama3/yarn/linear/dynamic scaling).
    pub rope_type: String,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (HF allows one id or a list).
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// Must be `"silu"`.
    pub hidden_act: String,
    /// Must be false (no projection biases).
    pub attention_bias: bool,
    /// Must be false.
    pub mlp_bias: bool,
}

/// `config.json` as written by transformers 4 (`rope_theta`, `rope_scaling`) or 5
/// (`rope_parameters: {rope_theta, rope_type}`).
#[derive(Deserialize)]
struct RawConfig {
    #[serde(default = "default_model_type")]
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

fn default_model_type() -> String {
    "llama".into()
}

/// `rope_type` (or the older `type`) and `rope_theta` of a `rope_parameters`/`rope_scaling` object.
fn rope_fields(v: &serde_json::Value) -> (Option<String>, Option<f64>) {
    let ty = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    (ty, v.get("rope_theta").and_then(|t| t.as_f64()))
}

impl LlamaConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json_str(&text)
            .with_context(|| format!("invalid Llama model config {}", path.display()))
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json_str(text: &str) -> anyhow::Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).context(
            "not a Llama config.json (needs vocab_size, hidden_size, intermediate_size, \
             num_hidden_layers, num_attention_heads)",
        )?;
        let mut rope_type = "default".to_owned();
        let mut rope_theta = raw.rope_theta;
        for v in [&raw.rope_parameters, &raw.rope_scaling]
            .into_iter()
            .flatten()
        {
            if v.is_null() {
                continue;
            }
            let (ty, theta) = rope_fields(v);
            if let Some(ty) = ty {
                if ty != "default" {
                    rope_type = ty;
                }
            }
            if theta.is_some() {
                rope_theta = theta;
            }
        }
        let heads = raw.num_attention_heads;
        let cfg = LlamaConfig {
            model_type: raw.model_type,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: raw.num_key_value_heads.unwrap_or(heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / heads.max(1)),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: rope_theta.unwrap_or(10000.0),
            rope_type,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            bos_token_id: raw.bos_token_id,
            eos_token_ids: match raw.eos_token_id {
                None => vec![],
                Some(OneOrMany::One(i)) => vec![i],
                Some(OneOrMany::Many(v)) => v,
            },
            pad_token_id: raw.pad_token_id,
            hidden_act: raw.hidden_act.unwrap_or_else(|| "silu".into()),
            attention_bias: raw.attention_bias.unwrap_or(false),
            mlp_bias: raw.mlp_bias.unwrap_or(false),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Refuses what this implementation does not compute, with the field and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            bail!(
                "model_type {:?} is not a Llama-family model ({})",
                self.model_type,
                MODEL_TYPES.join(", ")
            );
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                bail!("{name} is 0");
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            bail!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_key_value_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!(
                "head_dim {} is odd; rotary embeddings need an even head_dim",
                self.head_dim
            );
        }
        if self.rope_type != "default" {
            bail!(
                "rope_type {:?} is not supported (only \"default\" rotary embeddings, no \
                 llama3/linear/dynamic/yarn scaling); use a checkpoint without rope scaling",
                self.rope_type
            );
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            bail!("rope_theta {} must be positive", self.rope_theta);
        }
        if self.hidden_act != "silu" {
            bail!(
                "hidden_act {:?} is not supported: Llama-family models here use \"silu\" (SwiGLU)",
                self.hidden_act
            );
        }
        if self.attention_bias {
            bail!(
                "attention_bias true is not supported: the attention projections here have no \
                 biases (Llama layout); Qwen2-style biased checkpoints need another family"
            );
        }
        if self.mlp_bias {
            bail!("mlp_bias true is not supported: the SwiGLU projections here have no biases");
        }
        Ok(())
    }

    /// Query heads per key/value head.
    pub fn kv_group(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// `1 / theta^(2i / head_dim)` for `i < head_dim / 2`, in f32 as `LlamaRotaryEmbedding`.
    pub fn inv_freq(&self) -> Vec<f32> {
        let hd = self.head_dim;
        (0..hd / 2)
            .map(|i| 1.0 / (self.rope_theta as f32).powf((2 * i) as f32 / hd as f32))
            .collect()
    }
}

/// One decoder layer's frozen weights (HF names in the comments).
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    /// `self_attn.q_proj` `[heads·hd, d]`
    pub q_proj: FrozenLinear,
    /// `self_attn.k_proj` `[kv_heads·hd, d]`
    pub k_proj: FrozenLinear,
    /// `self_attn.v_proj` `[kv_heads·hd, d]`
    pub v_proj: FrozenLinear,
    /// `self_attn.o_proj` `[d, heads·hd]`
    pub o_proj: FrozenLinear,
    /// `mlp.gate_proj` `[ffn, d]`
    pub gate_proj: FrozenLinear,
    /// `mlp.up_proj` `[ffn, d]`
    pub up_proj: FrozenLinear,
    /// `mlp.down_proj` `[d, ffn]`
    pub down_proj: FrozenLinear,
    /// `input_layernorm.weight` `[d]`
    pub input_norm: Tensor,
    /// `post_attention_layernorm.weight` `[d]`
    pub post_attention_norm: Tensor,
}

/// A frozen Llama-family causal LM.
#[derive(Clone, Debug)]
pub struct LlamaModel {
    pub config: LlamaConfig,
    /// `model.embed_tokens.weight` `[vocab, d]`.
    pub embed_tokens: Tensor,
    pub layers: Vec<LlamaLayer>,
    /// `model.norm.weight` `[d]`.
    pub norm: Tensor,
    /// The head: `lm_head.weight`, or `embed_tokens` when tied (same storage).
    lm_head: FrozenLinear,
    inv_freq: Vec<f32>,
    source: PathBuf,
    fused: bool,
    /// Precision of the linear weights and products ([`Self::set_autocast`]).
    autocast: Autocast,
}

impl LlamaLayer {
    /// The layer with its projections held in `autocast`'s dtype (norm weights stay f32).
    fn with_autocast(&self, a: Autocast) -> Result<Self> {
        Ok(Self {
            q_proj: self.q_proj.with_autocast(a)?,
            k_proj: self.k_proj.with_autocast(a)?,
            v_proj: self.v_proj.with_autocast(a)?,
            o_proj: self.o_proj.with_autocast(a)?,
            gate_proj: self.gate_proj.with_autocast(a)?,
            up_proj: self.up_proj.with_autocast(a)?,
            down_proj: self.down_proj.with_autocast(a)?,
            input_norm: self.input_norm.clone(),
            post_attention_norm: self.post_attention_norm.clone(),
        })
    }
}

/// Root-mean-square normalisation over the last dimension with a frozen weight, from
/// differentiable ops: `x · rsqrt(mean(x²) + eps) · w`, as HF's `LlamaRMSNorm` in f32.
/// ([`fused::rms_norm`] computes the same in one op.)
pub fn rms_norm_composite(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(weight)
}

/// Rotary embedding in the rotate-half layout: `x·cos + rotate_half(x)·sin` for
/// `x [b, heads, s, hd]`, `cos [b, 1, s, hd]` and `sin_signed [b, 1, s, hd]`, the sine with its
/// first half negated (so that `rotate_half(x)·sin = cat(x₂, x₁)·sin_signed`).
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin_signed: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let swapped = Tensor::cat(&[&x2, &x1], D::Minus1)?;
    x.broadcast_mul(cos)?
        .add(&swapped.broadcast_mul(sin_signed)?)
}

/// Position ids `[b][s]` of the last `s` of the mask's columns: `cumsum(mask) - 1` over each
/// row, clamped at 0 (padded positions before the first attended one).
pub fn positions_from_mask(mask: &[Vec<u32>], s: usize) -> Vec<Vec<u32>> {
    mask.iter()
        .map(|row| {
            let mut acc = 0u32;
            let all: Vec<u32> = row
                .iter()
                .map(|&m| {
                    acc += (m != 0) as u32;
                    acc.saturating_sub(1)
                })
                .collect();
            all[all.len() - s..].to_vec()
        })
        .collect()
}

/// Reads a safetensors checkpoint: `model.safetensors`, or the shards a
/// `model.safetensors.index.json` lists. Returns the path error messages should name (the file or
/// the index) and every tensor, as stored (any dtype, on the CPU).
pub fn read_checkpoint(dir: &Path) -> anyhow::Result<(PathBuf, HashMap<String, Tensor>)> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let read = |p: &Path| -> anyhow::Result<HashMap<String, Tensor>> {
        candle_core::safetensors::load(p, &Device::Cpu).with_context(|| {
            format!(
                "cannot read {} as safetensors (corrupt or truncated file?)",
                p.display()
            )
        })
    };
    if single.exists() {
        return Ok((single.clone(), read(&single)?));
    }
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .with_context(|| format!("cannot read {}", index.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", index.display()))?;
        let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
            bail!("{} has no \"weight_map\" object", index.display());
        };
        let mut files: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        let mut all = HashMap::new();
        for f in files {
            let p = dir.join(f);
            if !p.exists() {
                bail!(
                    "{} lists the shard {f}, but {} does not exist",
                    index.display(),
                    p.display()
                );
            }
            all.extend(read(&p)?);
        }
        return Ok((index, all));
    }
    bail!(
        "model weights not found: {} has neither model.safetensors nor \
         model.safetensors.index.json",
        dir.display()
    )
}

impl LlamaModel {
    /// The dimensions the ONNX emission needs.
    #[cfg(feature = "onnx")]
    pub fn onnx_dims(&self) -> onnx::LlamaDims {
        let c = &self.config;
        onnx::LlamaDims {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            ffn: c.intermediate_size,
            rms_eps: c.rms_norm_eps,
            rope_theta: c.rope_theta,
            vocab: c.vocab_size,
        }
    }

    /// A frozen tensor by its Hugging Face name (`model.layers.{i}.self_attn.q_proj.weight`,
    /// `model.norm.weight`, …), as the checkpoint stores it.
    pub fn hf_tensor(&self, name: &str) -> anyhow::Result<Tensor> {
        let unknown = || anyhow::anyhow!("the Llama model has no tensor named {name}");
        let rest = name.strip_prefix("model.").unwrap_or(name);
        match rest {
            "embed_tokens.weight" => return Ok(self.embed_tokens.clone()),
            "norm.weight" => return Ok(self.norm.clone()),
            "lm_head.weight" => return Ok(self.lm_head.weight().clone()),
            _ => {}
        }
        let rest = rest.strip_prefix("layers.").ok_or_else(unknown)?;
        let (i, field) = rest.split_once('.').ok_or_else(unknown)?;
        let layer = i
            .parse::<usize>()
            .ok()
            .and_then(|i| self.layers.get(i))
            .ok_or_else(unknown)?;
        let t = match field {
            "self_attn.q_proj.weight" => layer.q_proj.weight(),
            "self_attn.k_proj.weight" => layer.k_proj.weight(),
            "self_attn.v_proj.weight" => layer.v_proj.weight(),
            "self_attn.o_proj.weight" => layer.o_proj.weight(),
            "mlp.gate_proj.weight" => layer.gate_proj.weight(),
            "mlp.up_proj.weight" => layer.up_proj.weight(),
            "mlp.down_proj.weight" => layer.down_proj.weight(),
            "input_layernorm.weight" => &layer.input_norm,
            "post_attention_layernorm.weight" => &layer.post_attention_norm,
            _ => return Err(unknown()),
        };
        Ok(t.clone())
    }

    /// Loads `config.json` and `model.safetensors` (or a sharded checkpoint) from a Hugging
    /// Face-layout folder; weights are converted to f32 on `device`.
    pub fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("model folder {} does not exist", dir.display());
        }
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let (source, tensors) = read_checkpoint(dir)?;
        Self::from_tensors(config, tensors, &source, device)
    }

    /// Builds the model from tensors with Hugging Face names (`model.embed_tokens.weight`,
    /// `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`,
    /// `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,
    /// `model.layers.{i}.{input,post_attention}_layernorm.weight`, `model.norm.weight`,
    /// `lm_head.weight` (ignored when tied); the `model.` prefix may be absent). Tensors may be of
    /// any float dtype on any device: they are converted to f32 on `device`. `source` is the
    /// file named in error messages. Q/K rows must be in HF's (rotate-half) order.
    pub fn from_tensors(
        config: LlamaConfig,
        tensors: HashMap<String, Tensor>,
        source: &Path,
        device: &Device,
    ) -> anyhow::Result<Self> {
        config
            .validate()
            .with_context(|| format!("invalid Llama config for {}", source.display()))?;
        let mut converted = HashMap::with_capacity(tensors.len());
        for (name, t) in tensors {
            let t = t
                .to_dtype(DType::F32)
                .and_then(|t| t.to_device(device))
                .with_context(|| format!("{}: cannot convert tensor {name}", source.display()))?;
            converted.insert(name, t);
        }
        let prefix = if converted.contains_key("model.embed_tokens.weight") {
            "model."
        } else if converted.contains_key("embed_tokens.weight") {
            ""
        } else {
            "model."
        };
        let w = Weights::from_tensors(source.to_path_buf(), converted);
        let c = &config;
        let (d, hd, ffn) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let (qd, kvd) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let lin = |name: String, out_f: usize, in_f: usize| -> anyhow::Result<FrozenLinear> {
            Ok(FrozenLinear::new(w.get(&name, &[out_f, in_f])?, None)?)
        };
        let embed_tokens = w.get(&format!("{prefix}embed_tokens.weight"), &[c.vocab_size, d])?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}layers.{i}");
                Ok(LlamaLayer {
                    q_proj: lin(format!("{p}.self_attn.q_proj.weight"), qd, d)?,
                    k_proj: lin(format!("{p}.self_attn.k_proj.weight"), kvd, d)?,
                    v_proj: lin(format!("{p}.self_attn.v_proj.weight"), kvd, d)?,
                    o_proj: lin(format!("{p}.self_attn.o_proj.weight"), d, qd)?,
                    gate_proj: lin(format!("{p}.mlp.gate_proj.weight"), ffn, d)?,
                    up_proj: lin(format!("{p}.mlp.up_proj.weight"), ffn, d)?,
                    down_proj: lin(format!("{p}.mlp.down_proj.weight"), d, ffn)?,
                    input_norm: w.get(&format!("{p}.input_layernorm.weight"), &[d])?,
                    post_attention_norm: w
                        .get(&format!("{p}.post_attention_layernorm.weight"), &[d])?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let norm = w.get(&format!("{prefix}norm.weight"), &[d])?;
        let head = if c.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            w.get("lm_head.weight", &[c.vocab_size, d])
                .with_context(|| {
                    "the config says tie_word_embeddings: false, so the checkpoint needs its own \
                 lm_head.weight (set tie_word_embeddings: true if the head is the embedding table)"
                })?
        };
        Ok(Self {
            inv_freq: config.inv_freq(),
            config,
            embed_tokens,
            layers,
            norm,
            lm_head: FrozenLinear::new(head, None)?,
            source: source.to_path_buf(),
            fused: true,
            autocast: Autocast::F32,
        })
    }

    /// Holds every projection and the LM head in `autocast`'s dtype and runs the products (the
    /// attention's included) in it; the embedding table, RMSNorm, RoPE, SwiGLU and softmax stay
    /// f32 (see [`adept_nn::autocast`]; the fused f32 ops keep running on the f32 activations).
    /// A tied head gets its own bf16 copy of the table (the f32 table stays for the adapter).
    /// Chosen once after loading: going back to f32 is refused.
    pub fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        crate::check_autocast_change("llama", self.autocast, autocast)?;
        if autocast == self.autocast {
            return Ok(());
        }
        self.layers = self
            .layers
            .iter()
            .map(|l| l.with_autocast(autocast))
            .collect::<Result<Vec<_>>>()?;
        self.lm_head = self.lm_head.with_autocast(autocast)?;
        self.autocast = autocast;
        Ok(())
    }

    /// The precision chosen with [`Self::set_autocast`].
    pub fn autocast(&self) -> Autocast {
        self.autocast
    }

    /// Chooses how RMSNorm, the rotary embedding and SwiGLU run: as fused ops with
    /// hand-written input-only backward passes (`true`, the default; CPU f32 only, elsewhere the
    /// composite ops run anyway), or from composite candle ops (`false`; the reference). Both
    /// compute the same values.
    pub fn set_fused_layers(&mut self, on: bool) {
        self.fused = on;
    }

    /// Whether the fused ops are on (see [`Self::set_fused_layers`]).
    pub fn fused_layers(&self) -> bool {
        self.fused
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        if self.fused {
            fused::rms_norm(x, w, self.config.rms_norm_eps)
        } else {
            rms_norm_composite(x, &w.detach(), self.config.rms_norm_eps)
        }
    }

    /// Rotary embedding of `x [b, s, heads, hd]`, returned as `[b, heads, s, hd]`.
    fn rope(&self, x: &Tensor, t: &RopeTables) -> Result<Tensor> {
        if self.fused {
            fused::rope_heads(x, t)
        } else {
            apply_rope(&x.transpose(1, 2)?, &t.cos, &t.sin_signed)
        }
    }

    /// The checkpoint file (or index, or GGUF file) the weights came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Cos and signed-sin tables, each `[b, 1, s, hd]`, for position ids `[b][s]`.
    fn rope_tables(&self, positions: &[Vec<u32>], device: &Device) -> Result<RopeTables> {
        let hd = self.config.head_dim;
        let half = hd / 2;
        let b = positions.len();
        let s = positions.first().map_or(0, |p| p.len());
        let mut cos = Vec::with_capacity(b * s * hd);
        let mut sin = Vec::with_capacity(b * s * hd);
        for row in positions {
            for &p in row {
                let freqs: Vec<f32> = self.inv_freq.iter().map(|f| p as f32 * f).collect();
                for k in 0..hd {
                    let f = freqs[k % half];
                    cos.push(f.cos());
                    sin.push(if k < half { -f.sin() } else { f.sin() });
                }
            }
        }
        RopeTables::new(cos, sin, b, s, hd, device)
    }

    /// See [`CausalLm::forward_embeds`].
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, s, d) = inputs_embeds.dims3()?;
        if d != c.hidden_size {
            candle_core::bail!(
                "inputs_embeds has shape {:?}; this model's hidden size is {}",
                inputs_embeds.dims(),
                c.hidden_size
            );
        }
        if s == 0 {
            candle_core::bail!(
                "inputs_embeds has no positions (shape {:?})",
                inputs_embeds.dims()
            );
        }
        let past = cache.as_ref().map_or(0, |k| k.past_len());
        if let Some(k) = cache.as_ref() {
            if !k.is_empty() && k.layers.len() != c.num_hidden_layers {
                candle_core::bail!(
                    "KV cache has {} layers; this model has {}",
                    k.layers.len(),
                    c.num_hidden_layers
                );
            }
        }
        let t = past + s;
        if attention_mask.dims() != [b, t] {
            candle_core::bail!(
                "attention_mask has shape {:?}; expected [{b}, {t}] (batch, cached {past} + new {s} \
                 positions)",
                attention_mask.dims()
            );
        }
        if t > c.max_position_embeddings {
            candle_core::bail!(
                "sequence of {t} positions (cache and prompt included) exceeds the model's {} \
                 positions",
                c.max_position_embeddings
            );
        }
        let device = inputs_embeds.device();
        let mask: Vec<Vec<u32>> = attention_mask.to_dtype(DType::U32)?.to_vec2()?;
        let positions = positions_from_mask(&mask, s);
        let rope = self.rope_tables(&positions, device)?;
        let pad_bias: Vec<f32> = mask
            .iter()
            .flatten()
            .map(|&m| if m != 0 { 0.0 } else { -1e9 })
            .collect();
        let pad_bias = Tensor::from_vec(pad_bias, (b, t), device)?;
        let causal = if s > 1 {
            let v: Vec<f32> = (0..s)
                .flat_map(|i| (0..t).map(move |j| if j <= past + i { 0.0 } else { -1e9 }))
                .collect();
            Some(Tensor::from_vec(v, (1, 1, s, t), device)?)
        } else {
            None
        };
        let mut x = inputs_embeds.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let past_kv = cache
                .as_ref()
                .and_then(|k| k.layers.get(i))
                .map(|(k, v)| (k.clone(), v.clone()));
            let (out, k, v) =
                self.layer_forward(layer, &x, &rope, &pad_bias, causal.as_ref(), past_kv)?;
            x = out;
            if let Some(kc) = cache.as_deref_mut() {
                if kc.layers.len() > i {
                    kc.layers[i] = (k, v);
                } else {
                    kc.layers.push((k, v));
                }
            }
        }
        self.norm(&x, &self.norm)
    }

    /// One decoder layer on `x [b, s, d]`; returns the output and this layer's keys/values over
    /// past and new positions, `[b, kv_heads, past + s, hd]`.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &LlamaLayer,
        x: &Tensor,
        rope: &RopeTables,
        pad_bias: &Tensor,
        causal: Option<&Tensor>,
        past: Option<(Tensor, Tensor)>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let c = &self.config;
        let (b, s, _) = x.dims3()?;
        let (h, kvh, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rep = h / kvh;
        let hn = self.norm(x, &layer.input_norm)?;
        // rotary embeddings come out contiguous in attention layout [b, heads, s, hd]
        let q = self.rope(&layer.q_proj.forward(&hn)?.reshape((b, s, h, hd))?, rope)?;
        let k = self.rope(&layer.k_proj.forward(&hn)?.reshape((b, s, kvh, hd))?, rope)?;
        let v = layer
            .v_proj
            .forward(&hn)?
            .reshape((b, s, kvh, hd))?
            .transpose(1, 2)?;
        let v = v.contiguous()?;
        // (candle's cat keeps a contiguous result only when every part is contiguous)
        let (k, v) = match past {
            Some((pk, pv)) => (
                Tensor::cat(&[&pk.contiguous()?, &k], 2)?,
                Tensor::cat(&[&pv.contiguous()?, &v], 2)?,
            ),
            None => (k, v),
        };
        let t = k.dim(2)?;
        // Grouped: query heads of one KV head side by side, [b, kvh, rep·s, hd].
        let qg = q.reshape((b, kvh, rep * s, hd))?;
        let scores = self.autocast.matmul(&qg, &k.t()?)?.reshape((b, h, s, t))?;
        let scores = match causal {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = attention_probs(&scores, pad_bias, 1.0 / (hd as f64).sqrt())?;
        let ctx = self
            .autocast
            .matmul(&probs.reshape((b, kvh, rep * s, t))?, &v)?
            .reshape((b, h, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, h * hd))?;
        let x = (x + layer.o_proj.forward(&ctx)?)?;
        let hn = self.norm(&x, &layer.post_attention_norm)?;
        let gate = layer.gate_proj.forward(&hn)?;
        let up = layer.up_proj.forward(&hn)?;
        let act = if self.fused {
            fused::swiglu(&gate, &up)?
        } else {
            gate.silu()?.mul(&up)?
        };
        let x = (&x + layer.down_proj.forward(&act)?)?;
        Ok((x, k, v))
    }
}

impl Backbone for LlamaModel {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn word_embedding_table(&self) -> &Tensor {
        &self.embed_tokens
    }
}

impl CausalLm for LlamaModel {
    fn family(&self) -> &'static str {
        "llama"
    }
    fn model_type(&self) -> &str {
        &self.config.model_type
    }
    fn device(&self) -> &Device {
        self.embed_tokens.device()
    }
    fn max_sequence_len(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn cache_shape(&self) -> CacheShape {
        CacheShape {
            layers: self.config.num_hidden_layers,
            kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim,
        }
    }
    fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        LlamaModel::forward_embeds(self, inputs_embeds, attention_mask, cache)
    }
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }
    fn lm_head_table(&self) -> &Tensor {
        self.lm_head.weight()
    }
    fn tied_embeddings(&self) -> bool {
        self.config.tie_word_embeddings
    }
    fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        LlamaModel::set_autocast(self, autocast)
    }
    fn autocast(&self) -> Autocast {
        LlamaModel::autocast(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn clone_box(&self) -> Box<dyn CausalLm> {
        Box::new(self.clone())
    }
    #[cfg(feature = "onnx")]
    fn emit_decoder(
        &self,
        g: &mut adept_onnx::GraphBuilder,
        inputs: &crate::onnx::DecoderInputs,
        opts: &crate::onnx::EmitOptions,
    ) -> anyhow::Result<crate::onnx::DecoderOutputs> {
        onnx::emit_decoder(
            g,
            &self.onnx_dims(),
            &|name| self.hf_tensor(name),
            self.lm_head_table(),
            inputs,
            opts,
        )
    }
}
