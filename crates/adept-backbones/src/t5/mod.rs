//! T5 (v1 and v1.1, the ADePT paper's backbone) written from differentiable candle ops.
//!
//! The encoder runs from *input embeddings* `[b, s, d]` (the ADePT soft prompt and token offsets
//! apply there, and only there): N × (RMS norm → self-attention → residual, RMS norm →
//! feed-forward → residual), then a final RMS norm. The decoder reads token ids through the
//! original shared table (folding changes the encoder's input table only) and runs N' × (causal
//! self-attention, cross-attention over the encoder output, feed-forward), a final RMS norm, and
//! the language-model head.
//!
//! T5 specifics, as Hugging Face `transformers` computes them:
//! - RMS layer norm: `w · x / sqrt(mean(x²) + eps)` (no mean subtraction, no bias).
//! - Attention scores are *not* scaled by `1/sqrt(d_kv)` (T5 folds it into the initialisation);
//!   `inner = heads · d_kv` may differ from `d_model`.
//! - Relative position bias: a `[buckets, heads]` table in the first block of each stack, looked
//!   up by the bucket of `key − query` (bidirectional buckets in the encoder, causal ones in the
//!   decoder), computed once per stack over the whole sequence (soft prompt included) and added
//!   to the scores of every layer. Cross-attention has no position bias.
//! - Feed-forward: `wo(act(wi(x)))` (`feed_forward_proj: "relu"`) or gated
//!   `wo(act(wi_0(x)) · wi_1(x))` (`"gated-gelu"`: GELU with the tanh approximation).
//! - LM head: tied (`tie_word_embeddings`, the default) → `(h · d^-0.5) · sharedᵀ`; untied →
//!   `h · lm_headᵀ` without scaling.
//!
//! All weights are plain tensors; linear layers, the LM head included, are [`FrozenLinear`]
//! (activation gradients only: no gradient is ever computed for a frozen matrix, the shared
//! table included). RMS norm, the attention softmax with its position and padding biases, and the
//! FFN activation (ReLU, gated GELU) run as the fused CPU ops of [`fused`], each with an
//! input-only backward; the composite candle ops stay as the reference
//! ([`T5Model::set_fused_layers`]`(false)`) and as the path off the CPU. Gradients reach the
//! encoder's input embeddings. [`generate`] holds greedy and beam search over the
//! [`Seq2SeqCache`].

pub mod fused;
pub mod generate;
#[cfg(feature = "onnx")]
pub mod onnx;

use crate::{Backbone, Seq2SeqCache, Seq2SeqCacheShape, Seq2SeqLm, Weights};
use adept_nn::{Autocast, FrozenLinear};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Result, Tensor, D};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `config.json` `model_type`s this family loads (mT5 is T5 v1.1 with a larger vocabulary;
/// its config and weight names are the same).
pub const MODEL_TYPES: &[&str] = &["t5", "mt5"];

/// The registry's loader: a T5 encoder–decoder from an HF-layout folder.
pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Box<dyn Seq2SeqLm>> {
    Ok(Box::new(T5Model::from_dir(dir, device)?))
}

/// A T5 `config.json` (the fields adept reads; others are ignored).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct T5Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    /// Decoder blocks; `None` → `num_layers`.
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_ffn")]
    pub feed_forward_proj: String,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// One id, or the first of a list (`transformers` allows both).
    #[serde(default, deserialize_with = "one_or_first")]
    pub eos_token_id: Option<u32>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Longest sequence the checkpoint was trained on (T5's positions are relative; this only
    /// bounds inputs). Missing → 512.
    #[serde(default)]
    pub n_positions: Option<usize>,
}

fn one_or_first<'de, De: serde::Deserializer<'de>>(
    de: De,
) -> std::result::Result<Option<u32>, De::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(de)? {
        None => None,
        Some(OneOrMany::One(x)) => Some(x),
        Some(OneOrMany::Many(v)) => v.first().copied(),
    })
}

fn default_model_type() -> String {
    "t5".into()
}
fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ffn() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// Exact GELU (`"gelu"`).
    GeluErf,
    /// GELU, tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`; `"gated-gelu"` uses it).
    GeluTanh,
    /// `x · sigmoid(x)` (`"silu"`, `"swish"`).
    Silu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Self::Relu,
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::GeluErf => adept_nn::gelu_erf(x),
            Self::GeluTanh => x.gelu(),
            Self::Silu => x.silu(),
        }
    }
}

/// `feed_forward_proj` parsed as `transformers` does: `"{act}"` or `"gated-{act}"`, with
/// `"gated-gelu"` meaning the tanh GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedForwardKind {
    pub gated: bool,
    pub activation: Activation,
}

impl FeedForwardKind {
    pub fn parse(proj: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = proj.split('-').collect();
        let malformed = (parts.len() > 1 && parts[0] != "gated") || parts.len() > 2;
        let act_name = if proj == "gated-gelu" {
            "gelu_new"
        } else {
            parts[parts.len() - 1]
        };
        match (malformed, Activation::parse(act_name)) {
            (false, Some(activation)) => Ok(Self {
                gated: parts[0] == "gated",
                activation,
            }),
            _ => bail!(
                "unsupported feed_forward_proj {proj:?}: expected \"{{act}}\" or \"gated-{{act}}\" \
                 with act one of relu, gelu, gelu_new, gelu_pytorch_tanh, silu (T5: \"relu\"; \
                 T5 v1.1 / mT5: \"gated-gelu\")"
            ),
        }
    }
}

impl T5Config {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let cfg: T5Config = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a T5 config.json", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid model config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            bail!(
                "model_type {:?} is not a T5-family model ({})",
                self.model_type,
                MODEL_TYPES.join(", ")
            );
        }
        FeedForwardKind::parse(&self.feed_forward_proj)?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
        ] {
            if v == 0 {
                bail!("{name} is 0");
            }
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            bail!(
                "relative_attention_num_buckets {} / relative_attention_max_distance {} are too \
                 small (need at least 4 buckets and a distance of 2)",
                self.relative_attention_num_buckets,
                self.relative_attention_max_distance
            );
        }
        // The logarithmic buckets start at `buckets / 2` (decoder; `buckets / 4` per direction
        // in the encoder) and reach the last bucket at `max_distance`: a max_distance at or
        // below the start leaves the log scale undefined (transformers then produces negative
        // bucket ids and fails in the embedding lookup).
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 2 {
            bail!(
                "relative_attention_max_distance {} must exceed relative_attention_num_buckets / 2 \
                 = {} (the logarithmic buckets start there); T5 checkpoints use 32 buckets and \
                 distance 128",
                self.relative_attention_max_distance,
                self.relative_attention_num_buckets / 2
            );
        }
        Ok(())
    }

    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// `num_heads · d_kv`, the width of queries, keys and values.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    pub fn feed_forward(&self) -> FeedForwardKind {
        FeedForwardKind::parse(&self.feed_forward_proj).expect("validated")
    }
}

/// T5's relative-position bucket of `relative_position = key − query`, exactly as
/// `T5Attention._relative_position_bucket` (the logarithmic part computed in f32 as PyTorch
/// does). Bidirectional: half the buckets for keys after the query; causal: only keys at or
/// before the query get distinct buckets.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if n < max_exact {
        bucket += n;
    } else {
        let ratio = (n as f32 / max_exact as f32).ln();
        let denom = (max_distance as f64 / max_exact as f64).ln() as f32;
        let large = max_exact + (ratio / denom * (num_buckets - max_exact) as f32) as i64;
        bucket += large.min(num_buckets - 1);
    }
    bucket as u32
}

/// T5's RMS norm: `weight · x / sqrt(mean(x²) + eps)` over the last dimension, composite ops.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let var = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)
}

/// One attention block's projections (no biases). The first block of each stack's
/// self-attention also holds the relative position table `[buckets, heads]`.
#[derive(Clone, Debug)]
pub struct T5Attention {
    pub q: FrozenLinear,
    pub k: FrozenLinear,
    pub v: FrozenLinear,
    pub o: FrozenLinear,
    pub relative_attention_bias: Option<Tensor>,
}

/// The feed-forward block: `wi` (plain) or `wi_0`/`wi_1` (gated), then `wo`.
#[derive(Clone, Debug)]
pub enum T5FeedForward {
    Plain {
        wi: FrozenLinear,
        wo: FrozenLinear,
    },
    Gated {
        wi_0: FrozenLinear,
        wi_1: FrozenLinear,
        wo: FrozenLinear,
    },
}

impl T5FeedForward {
    /// `x [.., d]` → `[.., d]`; `fused` picks the fused activation ops where one exists.
    fn forward(&self, x: &Tensor, act: Activation, fused: bool) -> Result<Tensor> {
        match self {
            Self::Plain { wi, wo } => {
                let h = wi.forward(x)?;
                let h = match act {
                    Activation::Relu if fused => fused::relu(&h)?,
                    _ => act.apply(&h)?,
                };
                wo.forward(&h)
            }
            Self::Gated { wi_0, wi_1, wo } => {
                let h = match act {
                    Activation::GeluTanh if fused => {
                        fused::gated_gelu(&wi_0.forward(x)?, &wi_1.forward(x)?)?
                    }
                    _ => act.apply(&wi_0.forward(x)?)?.mul(&wi_1.forward(x)?)?,
                };
                wo.forward(&h)
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct T5EncoderBlock {
    pub attention_norm: Tensor,
    pub attention: T5Attention,
    pub ff_norm: Tensor,
    pub ff: T5FeedForward,
}

#[derive(Clone, Debug)]
pub struct T5DecoderBlock {
    pub self_attention_norm: Tensor,
    pub self_attention: T5Attention,
    pub cross_attention_norm: Tensor,
    pub cross_attention: T5Attention,
    pub ff_norm: Tensor,
    pub ff: T5FeedForward,
}

/// A frozen T5 encoder–decoder with its LM head.
#[derive(Clone, Debug)]
pub struct T5Model {
    pub config: T5Config,
    /// The shared embedding table `[vocab, d]`: the encoder's input table (ADePT folds into
    /// copies of it, never into this one), the decoder's input table, and the tied LM head.
    pub shared: Tensor,
    /// The untied LM head `[vocab, d]` (`tie_word_embeddings: false`).
    pub lm_head: Option<Tensor>,
    pub encoder: Vec<T5EncoderBlock>,
    pub encoder_final_norm: Tensor,
    pub decoder: Vec<T5DecoderBlock>,
    pub decoder_final_norm: Tensor,
    ff_kind: FeedForwardKind,
    /// The LM head as a frozen linear layer over `lm_head` or `shared` (input-only backward:
    /// no gradient is computed for the frozen table).
    head: FrozenLinear,
    /// RMS norm, attention softmax and the FFN activation as the fused ops of [`fused`] (the
    /// default) or as composite candle ops (the reference).
    fused: bool,
    /// Precision of the linear weights and products ([`Self::set_autocast`]).
    autocast: Autocast,
}

impl T5Attention {
    fn with_autocast(&self, a: Autocast) -> Result<Self> {
        Ok(Self {
            q: self.q.with_autocast(a)?,
            k: self.k.with_autocast(a)?,
            v: self.v.with_autocast(a)?,
            o: self.o.with_autocast(a)?,
            relative_attention_bias: self.relative_attention_bias.clone(),
        })
    }
}

impl T5FeedForward {
    fn with_autocast(&self, a: Autocast) -> Result<Self> {
        Ok(match self {
            Self::Plain { wi, wo } => Self::Plain {
                wi: wi.with_autocast(a)?,
                wo: wo.with_autocast(a)?,
            },
            Self::Gated { wi_0, wi_1, wo } => Self::Gated {
                wi_0: wi_0.with_autocast(a)?,
                wi_1: wi_1.with_autocast(a)?,
                wo: wo.with_autocast(a)?,
            },
        })
    }
}

fn linear(w: &Weights, name: &str, out_f: usize, in_f: usize) -> anyhow::Result<FrozenLinear> {
    let weight = w.get(&format!("{name}.weight"), &[out_f, in_f])?;
    Ok(FrozenLinear::new(weight, None)?)
}

fn attention(
    w: &Weights,
    prefix: &str,
    config: &T5Config,
    with_bias: bool,
) -> anyhow::Result<T5Attention> {
    let (d, inner) = (config.d_model, config.inner_dim());
    Ok(T5Attention {
        q: linear(w, &format!("{prefix}.q"), inner, d)?,
        k: linear(w, &format!("{prefix}.k"), inner, d)?,
        v: linear(w, &format!("{prefix}.v"), inner, d)?,
        o: linear(w, &format!("{prefix}.o"), d, inner)?,
        relative_attention_bias: if with_bias {
            Some(w.get(
                &format!("{prefix}.relative_attention_bias.weight"),
                &[config.relative_attention_num_buckets, config.num_heads],
            )?)
        } else {
            None
        },
    })
}

fn feed_forward(
    w: &Weights,
    prefix: &str,
    config: &T5Config,
    kind: FeedForwardKind,
) -> anyhow::Result<T5FeedForward> {
    let (d, ff) = (config.d_model, config.d_ff);
    let wo = linear(w, &format!("{prefix}.wo"), d, ff)?;
    Ok(if kind.gated {
        T5FeedForward::Gated {
            wi_0: linear(w, &format!("{prefix}.wi_0"), ff, d)?,
            wi_1: linear(w, &format!("{prefix}.wi_1"), ff, d)?,
            wo,
        }
    } else {
        T5FeedForward::Plain {
            wi: linear(w, &format!("{prefix}.wi"), ff, d)?,
            wo,
        }
    })
}

/// `[b, s, inner]` → `[b, heads, s, d_kv]`.
fn split_heads(x: &Tensor, heads: usize, d_kv: usize) -> Result<Tensor> {
    let (b, s, _) = x.dims3()?;
    x.reshape((b, s, heads, d_kv))?
        .transpose(1, 2)?
        .contiguous()
}

/// Additive padding bias `[b, k]` from a u32 mask: 0 where attended, -1e9 where padded.
fn mask_bias(mask: &Tensor) -> Result<Tensor> {
    (mask.to_dtype(DType::F32)? - 1.0)? * 1e9
}

impl T5Model {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face-layout folder.
    pub fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("model folder {} does not exist", dir.display());
        }
        let config = T5Config::from_file(&dir.join("config.json"))?;
        let weights = Weights::load(&dir.join("model.safetensors"), device)?;
        Self::from_weights(config, weights)
    }

    /// Builds the model from a checkpoint's tensors (`shared.weight` or
    /// `encoder.embed_tokens.weight`, `encoder.block.{i}.layer.{j}.…`, `decoder.…`,
    /// `lm_head.weight` when untied).
    pub fn from_weights(config: T5Config, w: Weights) -> anyhow::Result<Self> {
        config.validate()?;
        let (d, v) = (config.d_model, config.vocab_size);
        let ff_kind = config.feed_forward();
        let shared = w.get_any(&["shared.weight", "encoder.embed_tokens.weight"], &[v, d])?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(w.get("lm_head.weight", &[v, d]).context(
                "tie_word_embeddings is false, so the checkpoint needs its own lm_head.weight",
            )?)
        };
        let encoder = (0..config.num_layers)
            .map(|i| {
                let p = format!("encoder.block.{i}.layer");
                Ok(T5EncoderBlock {
                    attention_norm: w.get(&format!("{p}.0.layer_norm.weight"), &[d])?,
                    attention: attention(&w, &format!("{p}.0.SelfAttention"), &config, i == 0)?,
                    ff_norm: w.get(&format!("{p}.1.layer_norm.weight"), &[d])?,
                    ff: feed_forward(&w, &format!("{p}.1.DenseReluDense"), &config, ff_kind)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let decoder = (0..config.decoder_layers())
            .map(|i| {
                let p = format!("decoder.block.{i}.layer");
                Ok(T5DecoderBlock {
                    self_attention_norm: w.get(&format!("{p}.0.layer_norm.weight"), &[d])?,
                    self_attention: attention(
                        &w,
                        &format!("{p}.0.SelfAttention"),
                        &config,
                        i == 0,
                    )?,
                    cross_attention_norm: w.get(&format!("{p}.1.layer_norm.weight"), &[d])?,
                    cross_attention: attention(
                        &w,
                        &format!("{p}.1.EncDecAttention"),
                        &config,
                        false,
                    )?,
                    ff_norm: w.get(&format!("{p}.2.layer_norm.weight"), &[d])?,
                    ff: feed_forward(&w, &format!("{p}.2.DenseReluDense"), &config, ff_kind)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let head = FrozenLinear::new(lm_head.clone().unwrap_or_else(|| shared.clone()), None)?;
        Ok(Self {
            encoder_final_norm: w.get("encoder.final_layer_norm.weight", &[d])?,
            decoder_final_norm: w.get("decoder.final_layer_norm.weight", &[d])?,
            config,
            shared,
            lm_head,
            encoder,
            decoder,
            ff_kind,
            head,
            fused: true,
            autocast: Autocast::F32,
        })
    }

    /// Holds every projection of both stacks and the LM head in `autocast`'s dtype and runs the
    /// products (the attention's included) in it; the shared table, RMS norms, position bias,
    /// softmax and activations stay f32 (see [`adept_nn::autocast`]). Chosen once after
    /// loading: going back to f32 is refused.
    pub fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        crate::check_autocast_change("t5", self.autocast, autocast)?;
        if autocast == self.autocast {
            return Ok(());
        }
        for blk in &mut self.encoder {
            blk.attention = blk.attention.with_autocast(autocast)?;
            blk.ff = blk.ff.with_autocast(autocast)?;
        }
        for blk in &mut self.decoder {
            blk.self_attention = blk.self_attention.with_autocast(autocast)?;
            blk.cross_attention = blk.cross_attention.with_autocast(autocast)?;
            blk.ff = blk.ff.with_autocast(autocast)?;
        }
        self.head = self.head.with_autocast(autocast)?;
        self.autocast = autocast;
        Ok(())
    }

    /// The precision chosen with [`Self::set_autocast`].
    pub fn autocast(&self) -> Autocast {
        self.autocast
    }

    pub fn device(&self) -> &Device {
        self.shared.device()
    }

    pub fn feed_forward_kind(&self) -> FeedForwardKind {
        self.ff_kind
    }

    /// Chooses how RMS norm, the attention softmax (with the position and padding biases) and
    /// the feed-forward activation run: as the fused ops of [`fused`] with input-only backward
    /// passes (`true`, the default; CPU f32, elsewhere they fall back to composite ops) or as
    /// composite candle ops (`false`, the reference). Both compute the same values.
    pub fn set_fused_layers(&mut self, on: bool) {
        self.fused = on;
    }

    /// Whether the fused ops are on (see [`Self::set_fused_layers`]).
    pub fn fused_layers(&self) -> bool {
        self.fused
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        if self.fused {
            fused::rms_norm(x, w, self.config.layer_norm_epsilon)
        } else {
            rms_norm(x, &w.detach(), self.config.layer_norm_epsilon)
        }
    }

    /// Relative position bias `[1, heads, q, k]` for queries at positions `q_from..q_from + q`
    /// and keys at `0..k`, from `table [buckets, heads]`; `causal` also adds -1e9 where the key
    /// comes after the query (the decoder's causal mask).
    pub fn position_bias(
        &self,
        table: &Tensor,
        q_from: usize,
        q: usize,
        k: usize,
        bidirectional: bool,
        causal: bool,
    ) -> Result<Tensor> {
        let heads = self.config.num_heads;
        let mut buckets = Vec::with_capacity(q * k);
        let mut causal_bias = Vec::with_capacity(if causal { q * k } else { 0 });
        for i in q_from..q_from + q {
            for j in 0..k {
                buckets.push(relative_position_bucket(
                    j as i64 - i as i64,
                    bidirectional,
                    self.config.relative_attention_num_buckets,
                    self.config.relative_attention_max_distance,
                ));
                if causal {
                    causal_bias.push(if j > i { -1e9f32 } else { 0.0 });
                }
            }
        }
        let dev = table.device();
        let ids = Tensor::from_vec(buckets, q * k, dev)?;
        let bias = table
            .index_select(&ids, 0)? // [q·k, heads]
            .reshape((q, k, heads))?
            .permute((2, 0, 1))?;
        let bias = if causal {
            bias.broadcast_add(&Tensor::from_vec(causal_bias, (1, q, k), dev)?)?
        } else {
            bias
        };
        bias.unsqueeze(0)?.contiguous()
    }

    /// Attention of queries `q [b, h, lq, dk]` over `k, v [b, h, lk, dk]`, unscaled scores plus
    /// `bias` (broadcast to `[b, h, lq, lk]`) and the padding bias `pad [b, lk]`; returns the
    /// output projection `[b, lq, d]`.
    fn attend(
        &self,
        attn: &T5Attention,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        bias: Option<&Tensor>,
        pad: &Tensor,
    ) -> Result<Tensor> {
        let (b, h, lq, dk) = q.dims4()?;
        let scores = self.autocast.matmul(q, &k.t()?.contiguous()?)?;
        let probs = if self.fused {
            fused::attention_probs(&scores, bias, pad)?
        } else {
            fused::attention_probs_composite(&scores, bias, pad)?
        };
        let ctx = self
            .autocast
            .matmul(&probs, v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, lq, h * dk))?;
        attn.o.forward(&ctx)
    }

    /// The encoder's last hidden states `[b, s, d]` (final RMS norm applied) for
    /// `inputs_embeds [b, s, d]` (soft prompt included) and `attention_mask [b, s]` (u32, 1 =
    /// attend). Rows at padded positions are computed but meaningless.
    pub fn encode(&self, inputs_embeds: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, s, d) = inputs_embeds.dims3()?;
        if d != self.config.d_model {
            candle_core::bail!(
                "inputs_embeds have width {d}, the T5 model's d_model is {}",
                self.config.d_model
            );
        }
        if attention_mask.dims() != [b, s] {
            candle_core::bail!(
                "attention mask has shape {:?}, expected [{b}, {s}] (one entry per input row, \
                 soft prompt included)",
                attention_mask.dims()
            );
        }
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        let pad = mask_bias(attention_mask)?;
        let table = self
            .encoder
            .first()
            .and_then(|blk| blk.attention.relative_attention_bias.as_ref());
        let pos = match table {
            Some(t) => Some(self.position_bias(t, 0, s, s, true, false)?),
            None => None,
        };
        let mut x = inputs_embeds.clone();
        for blk in &self.encoder {
            let n = self.norm(&x, &blk.attention_norm)?;
            let a = &blk.attention;
            let q = split_heads(&a.q.forward(&n)?, h, dk)?;
            let k = split_heads(&a.k.forward(&n)?, h, dk)?;
            let v = split_heads(&a.v.forward(&n)?, h, dk)?;
            x = (x + self.attend(a, &q, &k, &v, pos.as_ref(), &pad)?)?;
            let n = self.norm(&x, &blk.ff_norm)?;
            x = (&x + blk.ff.forward(&n, self.ff_kind.activation, self.fused)?)?;
        }
        self.norm(&x, &self.encoder_final_norm)
    }

    /// Cross-attention keys and values of every decoder block for `encoder_out [b, s, d]`,
    /// each `[b, heads, s, d_kv]`.
    pub fn cross_key_values(&self, encoder_out: &Tensor) -> Result<Vec<(Tensor, Tensor)>> {
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        self.decoder
            .iter()
            .map(|blk| {
                let a = &blk.cross_attention;
                Ok((
                    split_heads(&a.k.forward(encoder_out)?, h, dk)?,
                    split_heads(&a.v.forward(encoder_out)?, h, dk)?,
                ))
            })
            .collect()
    }

    /// The decoder's final (normed, unscaled) hidden states `[b, t, d]` for `decoder_ids [b, t]`
    /// (u32; the first step starts from `decoder_start_token_id`), attending causally to
    /// themselves (and to the cache's past positions) and to `encoder_out [b, s, d]` where
    /// `encoder_mask [b, s]` is 1. With `cache`, reads and extends its self-attention keys and
    /// values and computes the cross-attention ones once (on the first call with an empty
    /// cache). Decoder inputs are never padded on the left: positions count from the cache's
    /// length.
    pub fn decode(
        &self,
        decoder_ids: &Tensor,
        encoder_out: &Tensor,
        encoder_mask: &Tensor,
        mut cache: Option<&mut Seq2SeqCache>,
    ) -> Result<Tensor> {
        let (b, t) = decoder_ids.dims2()?;
        let (be, s, _) = encoder_out.dims3()?;
        if be != b || encoder_mask.dims() != [b, s] {
            candle_core::bail!(
                "decoder ids {:?}, encoder output {:?} and encoder mask {:?} disagree (expected \
                 [b, t], [b, s, d], [b, s])",
                decoder_ids.dims(),
                encoder_out.dims(),
                encoder_mask.dims()
            );
        }
        let (h, dk, d) = (self.config.num_heads, self.config.d_kv, self.config.d_model);
        let past = cache.as_ref().map_or(0, |c| c.past_len());
        let computed_cross;
        let cross: &[(Tensor, Tensor)] = match cache.as_deref_mut() {
            Some(c) => {
                if c.cross_attn.is_empty() {
                    c.cross_attn = self.cross_key_values(encoder_out)?;
                }
                computed_cross = c.cross_attn.clone();
                &computed_cross
            }
            None => {
                computed_cross = self.cross_key_values(encoder_out)?;
                &computed_cross
            }
        };
        let ids = decoder_ids.flatten_all()?;
        let mut x = self.shared.index_select(&ids, 0)?.reshape((b, t, d))?;
        let total = past + t;
        let table = self
            .decoder
            .first()
            .and_then(|blk| blk.self_attention.relative_attention_bias.as_ref());
        // Block 0 always holds the table (loading requires it) when there are decoder blocks.
        let self_bias = match table {
            Some(tb) => Some(self.position_bias(tb, past, t, total, false, true)?),
            None => None,
        };
        let no_pad = Tensor::zeros((b, total), DType::F32, decoder_ids.device())?;
        let enc_pad = mask_bias(encoder_mask)?;
        let mut new_self = Vec::with_capacity(self.decoder.len());
        for (i, blk) in self.decoder.iter().enumerate() {
            let n = self.norm(&x, &blk.self_attention_norm)?;
            let a = &blk.self_attention;
            let q = split_heads(&a.q.forward(&n)?, h, dk)?;
            let mut k = split_heads(&a.k.forward(&n)?, h, dk)?;
            let mut v = split_heads(&a.v.forward(&n)?, h, dk)?;
            if let Some(c) = cache.as_deref() {
                if let Some((pk, pv)) = c.self_attn.get(i) {
                    k = Tensor::cat(&[pk, &k], 2)?;
                    v = Tensor::cat(&[pv, &v], 2)?;
                }
            }
            x = (x + self.attend(a, &q, &k, &v, self_bias.as_ref(), &no_pad)?)?;
            new_self.push((k, v));

            let n = self.norm(&x, &blk.cross_attention_norm)?;
            let a = &blk.cross_attention;
            let q = split_heads(&a.q.forward(&n)?, h, dk)?;
            let (ck, cv) = &cross[i];
            x = (x + self.attend(a, &q, ck, cv, None, &enc_pad)?)?;

            let n = self.norm(&x, &blk.ff_norm)?;
            x = (&x + blk.ff.forward(&n, self.ff_kind.activation, self.fused)?)?;
        }
        if let Some(c) = cache {
            c.self_attn = new_self;
        }
        self.norm(&x, &self.decoder_final_norm)
    }

    /// Logits `[.., vocab]` of decoder hidden states `[.., d]`: tied → `(h · d^-0.5) · sharedᵀ`,
    /// untied → `h · lm_headᵀ`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let hidden = match &self.lm_head {
            Some(_) => hidden.clone(),
            None => (hidden * (self.config.d_model as f64).powf(-0.5))?,
        };
        self.head.forward(&hidden)
    }
}

impl Backbone for T5Model {
    fn hidden_size(&self) -> usize {
        self.config.d_model
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    /// The shared table: the encoder's input table (what ADePT folds into).
    fn word_embedding_table(&self) -> &Tensor {
        &self.shared
    }
}

impl Seq2SeqLm for T5Model {
    fn family(&self) -> &'static str {
        "t5"
    }
    fn model_type(&self) -> &str {
        &self.config.model_type
    }
    fn device(&self) -> &Device {
        self.shared.device()
    }
    fn max_sequence_len(&self) -> usize {
        self.config.n_positions.unwrap_or(512)
    }
    fn cache_shape(&self) -> Seq2SeqCacheShape {
        Seq2SeqCacheShape {
            decoder_layers: self.config.decoder_layers(),
            heads: self.config.num_heads,
            head_dim: self.config.d_kv,
        }
    }
    fn encode(&self, inputs_embeds: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        T5Model::encode(self, inputs_embeds, attention_mask)
    }
    fn decode(
        &self,
        decoder_ids: &Tensor,
        encoder_out: &Tensor,
        encoder_mask: &Tensor,
        cache: Option<&mut Seq2SeqCache>,
    ) -> Result<Tensor> {
        T5Model::decode(self, decoder_ids, encoder_out, encoder_mask, cache)
    }
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        T5Model::logits(self, hidden)
    }
    fn lm_head_table(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.shared)
    }
    fn tied_embeddings(&self) -> bool {
        self.lm_head.is_none()
    }
    fn decoder_start_token_id(&self) -> u32 {
        self.config
            .decoder_start_token_id
            .or(self.config.pad_token_id)
            .unwrap_or(0)
    }
    fn eos_token_id(&self) -> u32 {
        self.config.eos_token_id.unwrap_or(1)
    }
    fn pad_token_id(&self) -> u32 {
        self.config.pad_token_id.unwrap_or(0)
    }
    fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        T5Model::set_autocast(self, autocast)
    }
    fn autocast(&self) -> Autocast {
        T5Model::autocast(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn clone_box(&self) -> Box<dyn Seq2SeqLm> {
        Box::new(self.clone())
    }
}
