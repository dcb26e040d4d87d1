//! BERT-family encoder (BERT, MiniLM, RoBERTa-style) written from differentiable ops.
//!
//! `forward_embeds(inputs_embeds, attention_mask, token_type_ids)` runs:
//! `LayerNorm(inputs_embeds + position + token_type)` → N × (self-attention + residual + LayerNorm,
//! feed-forward + residual + LayerNorm). Positions are `offset + 0..L` over the *whole* sequence fed
//! in, prompt included (the PEFT convention for prompt tuning of encoders); `offset` is 0 for BERT and
//! `pad_token_id + 1` for RoBERTa.
//!
//! The family's folder: this file (config, modules, `load`), [`fused`] (each layer as one CPU op
//! with a hand-written input-only backward) and `onnx` (the same computation emitted into an
//! ONNX graph, feature `onnx`). Its registry line is in `crate::registry`.

pub mod fused;
#[cfg(feature = "onnx")]
pub mod onnx;

pub use fused::{encoder_layer, EncoderLayerWeights};

use crate::{Backbone, Encoder, Weights};
use adept_nn::{attention_probs, frozen_layer_norm, Autocast, FrozenLinear};
use anyhow::{bail, Context};
use candle_core::{DType, Device, Module, Result, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
}

/// The `config.json` `model_type`s this family loads.
pub const MODEL_TYPES: &[&str] = &["bert", "roberta", "xlm-roberta", "camembert"];

/// The registry's loader: a BERT-family encoder from an HF-layout folder.
pub fn load(dir: &Path, device: &Device) -> anyhow::Result<Box<dyn Encoder>> {
    Ok(Box::new(BertEncoder::from_dir(dir, device)?))
}

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        let cfg: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a BERT-family config.json", path.display()))?;
        cfg.validate()
            .with_context(|| format!("invalid model config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            bail!(
                "model_type {:?} is not a BERT-family encoder ({})",
                self.model_type,
                MODEL_TYPES.join(", ")
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Activation::parse(&self.hidden_act)?;
        Ok(())
    }

    /// First position id: RoBERTa-style models start after the padding index.
    pub fn position_offset(&self) -> usize {
        if self.model_type == "bert" {
            0
        } else {
            self.pad_token_id + 1
        }
    }

    /// Longest sequence (prompt included) the position table allows.
    pub fn max_sequence_len(&self) -> usize {
        self.max_position_embeddings - self.position_offset()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name {
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "relu" => Self::Relu,
            other => bail!("unsupported hidden_act {other:?} (gelu, gelu_new, relu)"),
        })
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluErf => adept_nn::gelu_erf(x),
            Self::GeluTanh => x.gelu(),
            Self::Relu => x.relu(),
        }
    }
}

/// A frozen LayerNorm's parameters.
#[derive(Clone, Debug)]
pub struct Norm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl Norm {
    fn load(w: &Weights, name: &str, d: usize, eps: f64) -> anyhow::Result<Self> {
        Ok(Self {
            weight: w.get_any(&[&format!("{name}.weight"), &format!("{name}.gamma")], &[d])?,
            bias: w.get_any(&[&format!("{name}.bias"), &format!("{name}.beta")], &[d])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        frozen_layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

fn linear(w: &Weights, name: &str, out_f: usize, in_f: usize) -> anyhow::Result<FrozenLinear> {
    let weight = w.get(&format!("{name}.weight"), &[out_f, in_f])?;
    let bias = w.get(&format!("{name}.bias"), &[out_f])?;
    Ok(FrozenLinear::new(weight, Some(bias))?)
}

/// Position, token-type embeddings and the embedding LayerNorm (word embeddings are looked up
/// separately so that the adapter can act on them first).
#[derive(Clone, Debug)]
pub struct BertEmbeddings {
    pub word: Tensor,
    pub position: Tensor,
    pub token_type: Tensor,
    pub norm: Norm,
}

#[derive(Clone, Debug)]
pub struct BertLayer {
    pub query: FrozenLinear,
    pub key: FrozenLinear,
    pub value: FrozenLinear,
    pub attention_output: FrozenLinear,
    pub attention_norm: Norm,
    pub intermediate: FrozenLinear,
    pub output: FrozenLinear,
    pub output_norm: Norm,
}

#[derive(Clone, Debug)]
pub struct BertEncoder {
    pub config: BertConfig,
    pub embeddings: BertEmbeddings,
    pub layers: Vec<BertLayer>,
    activation: Activation,
    /// Host copies of each layer's weights for [`fused::encoder_layer`], the one-op layer
    /// with a hand-written backward; present for CPU f32 models with the erf GELU.
    fused: Option<Vec<Arc<EncoderLayerWeights>>>,
    /// Precision of the linear weights and products ([`Self::set_autocast`]).
    autocast: Autocast,
}

impl BertLayer {
    /// The layer with its linear weights held in `autocast`'s dtype (norms stay f32).
    fn with_autocast(&self, a: Autocast) -> Result<Self> {
        Ok(Self {
            query: self.query.with_autocast(a)?,
            key: self.key.with_autocast(a)?,
            value: self.value.with_autocast(a)?,
            attention_output: self.attention_output.with_autocast(a)?,
            attention_norm: self.attention_norm.clone(),
            intermediate: self.intermediate.with_autocast(a)?,
            output: self.output.with_autocast(a)?,
            output_norm: self.output_norm.clone(),
        })
    }
}

impl BertLayer {
    /// This layer's weights as [`fused::encoder_layer`] takes them (Q/K/V stacked).
    fn fused_weights(&self, config: &BertConfig) -> anyhow::Result<EncoderLayerWeights> {
        let host =
            |t: &Tensor| -> anyhow::Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let bias = |l: &FrozenLinear| -> anyhow::Result<Vec<f32>> {
            match l.bias() {
                Some(b) => host(b),
                None => Ok(vec![0.0; l.out_features()]),
            }
        };
        let stacked = Tensor::cat(
            &[self.query.weight(), self.key.weight(), self.value.weight()],
            0,
        )?;
        let mut qkv_bias = bias(&self.query)?;
        qkv_bias.extend(bias(&self.key)?);
        qkv_bias.extend(bias(&self.value)?);
        let w = EncoderLayerWeights {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
            eps: config.layer_norm_eps as f32,
            qkv_weight: host(&stacked)?,
            qkv_bias,
            out_weight: host(self.attention_output.weight())?,
            out_bias: bias(&self.attention_output)?,
            norm1_gamma: host(&self.attention_norm.weight)?,
            norm1_beta: host(&self.attention_norm.bias)?,
            ffn_in_weight: host(self.intermediate.weight())?,
            ffn_in_bias: bias(&self.intermediate)?,
            ffn_out_weight: host(self.output.weight())?,
            ffn_out_bias: bias(&self.output)?,
            norm2_gamma: host(&self.output_norm.weight)?,
            norm2_beta: host(&self.output_norm.bias)?,
        };
        w.validate()?;
        Ok(w)
    }
}

impl BertEncoder {
    /// Loads `config.json` and `model.safetensors` from a Hugging Face-layout folder.
    pub fn from_dir(dir: &Path, device: &Device) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("model folder {} does not exist", dir.display());
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = Weights::load(&dir.join("model.safetensors"), device)?;
        Self::from_weights(config, weights)
    }

    pub fn from_weights(config: BertConfig, weights: Weights) -> anyhow::Result<Self> {
        config.validate()?;
        let w = weights.with_prefix_detected(
            &["", "bert.", "roberta.", "model."],
            "embeddings.word_embeddings.weight",
        )?;
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embeddings = BertEmbeddings {
            word: w.get("embeddings.word_embeddings.weight", &[config.vocab_size, d])?,
            position: w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, d],
            )?,
            token_type: w.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, d],
            )?,
            norm: Norm::load(&w, "embeddings.LayerNorm", d, eps)?,
        };
        let inter = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(BertLayer {
                    query: linear(&w, &format!("{p}.attention.self.query"), d, d)?,
                    key: linear(&w, &format!("{p}.attention.self.key"), d, d)?,
                    value: linear(&w, &format!("{p}.attention.self.value"), d, d)?,
                    attention_output: linear(&w, &format!("{p}.attention.output.dense"), d, d)?,
                    attention_norm: Norm::load(
                        &w,
                        &format!("{p}.attention.output.LayerNorm"),
                        d,
                        eps,
                    )?,
                    intermediate: linear(&w, &format!("{p}.intermediate.dense"), inter, d)?,
                    output: linear(&w, &format!("{p}.output.dense"), d, inter)?,
                    output_norm: Norm::load(&w, &format!("{p}.output.LayerNorm"), d, eps)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let activation = Activation::parse(&config.hidden_act)?;
        let mut encoder = Self {
            config,
            embeddings,
            layers,
            activation,
            fused: None,
            autocast: Autocast::F32,
        };
        encoder.set_fused_layers(true)?;
        Ok(encoder)
    }

    /// Chooses how the encoder layers run: as one fused op each with a hand-written backward
    /// (`true`, the default; CPU f32 models with the erf GELU only, others keep the composite
    /// path), or from composite candle ops (`false`; the reference, and what CUDA runs).
    /// Both compute the same values; tests and `adept bench` compare them. Under bf16
    /// autocast the fused layers (f32 kernels over f32 host weights) do not apply: the
    /// composite path runs, and this is logged once.
    pub fn set_fused_layers(&mut self, on: bool) -> anyhow::Result<()> {
        let eligible = self.embeddings.word.device().is_cpu()
            && self.embeddings.word.dtype() == DType::F32
            && self.activation == Activation::GeluErf
            && !self.autocast.is_on();
        if on && self.autocast.is_on() {
            adept_nn::autocast::note_composite_layers(
                self.autocast,
                "BERT's fused f32 encoder-layer ops",
            );
        }
        if on && !self.embeddings.word.device().is_cpu() {
            adept_nn::kernels::note_composite_path(
                self.embeddings.word.device(),
                self.embeddings.word.dtype(),
            );
        }
        self.fused = if on && eligible {
            Some(
                self.layers
                    .iter()
                    .map(|l| Ok(Arc::new(l.fused_weights(&self.config)?)))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            )
        } else {
            None
        };
        Ok(())
    }

    /// Whether the layers run as fused ops (see [`Self::set_fused_layers`]).
    pub fn fused_layers(&self) -> bool {
        self.fused.is_some()
    }

    /// Holds the linear weights of every layer in `autocast`'s dtype and runs the layers'
    /// products (the attention's included) in it; embeddings, LayerNorms, softmax and GELU stay
    /// f32 (see [`adept_nn::autocast`]). With bf16 the fused layers are turned off (their host
    /// f32 copies are dropped). Chosen once after loading: going back to f32 is refused.
    pub fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        crate::check_autocast_change("bert", self.autocast, autocast)?;
        if autocast == self.autocast {
            return Ok(());
        }
        let fused = self.fused.is_some();
        self.layers = self
            .layers
            .iter()
            .map(|l| l.with_autocast(autocast))
            .collect::<Result<Vec<_>>>()?;
        self.autocast = autocast;
        self.set_fused_layers(fused)
    }

    /// The precision chosen with [`Self::set_autocast`].
    pub fn autocast(&self) -> Autocast {
        self.autocast
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }

    /// Runs the encoder on `inputs_embeds [b, L, d]` (word embeddings after the adapter, prompt
    /// included), `attention_mask [b, L]` (1 = attend, u32) and `token_type_ids [b, L]` (u32;
    /// `None`: type 0 everywhere, as for RoBERTa-style models).
    /// Returns the last hidden states `[b, L, d]`. Rows at padded positions are not defined
    /// (the fused layers leave them zero, the composite ones compute values from the masked
    /// attention): read only attended rows, as masked pooling does.
    pub fn forward_embeds(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_embeds_from(inputs_embeds, attention_mask, token_type_ids, 0)
    }

    /// As [`Self::forward_embeds`], but returns only the rows from position `keep_from` on
    /// (`[b, L - keep_from, d]`). The last layer then computes queries, the attention output
    /// and the feed-forward block for those rows only: exact, and it skips the prompt rows'
    /// last-layer work when a classifier pools over the input tokens alone.
    pub fn forward_embeds_from(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        keep_from: usize,
    ) -> Result<Tensor> {
        let (b, l, d) = inputs_embeds.dims3()?;
        if keep_from >= l {
            candle_core::bail!("cannot keep rows from {keep_from} of a {l}-position sequence");
        }
        if l > self.config.max_sequence_len() {
            candle_core::bail!(
                "sequence of {l} positions (prompt included) exceeds the model's {} positions",
                self.config.max_sequence_len()
            );
        }
        let offset = self.config.position_offset();
        let positions = self.embeddings.position.narrow(0, offset, l)?; // [L, d]
        let x = inputs_embeds.broadcast_add(&positions)?;
        let x = match token_type_ids {
            Some(ids) => {
                let types = self
                    .embeddings
                    .token_type
                    .index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, l, d))?;
                x.add(&types)?
            }
            None => x.broadcast_add(&self.embeddings.token_type.narrow(0, 0, 1)?)?,
        };
        let mut hidden = self.embeddings.norm.forward(&x)?;

        // Additive mask [b, L]: 0 where attended, -1e9 where padded.
        let bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            let from = if i == last { keep_from } else { 0 };
            hidden = match &self.fused {
                Some(fused) => encoder_layer(&fused[i], &hidden, &bias, from)?,
                None => self.layer_forward(layer, &hidden, &bias, from)?,
            };
        }
        if self.layers.is_empty() && keep_from > 0 {
            hidden = hidden.narrow(1, keep_from, l - keep_from)?;
        }
        Ok(hidden)
    }

    /// One encoder layer. Keys and values come from all rows of `x`; queries (and so the
    /// output) from the rows at and after `query_from`.
    fn layer_forward(
        &self,
        layer: &BertLayer,
        x: &Tensor,
        mask_bias: &Tensor,
        query_from: usize,
    ) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let h = self.config.num_attention_heads;
        let dh = d / h;
        let heads = |t: Tensor, rows: usize| -> Result<Tensor> {
            t.reshape((b, rows, h, dh))?.transpose(1, 2)?.contiguous()
        };
        let xq = if query_from > 0 {
            x.narrow(1, query_from, l - query_from)?
        } else {
            x.clone()
        };
        let lq = l - query_from;
        let q = heads(layer.query.forward(&xq)?, lq)?;
        let k = heads(layer.key.forward(x)?, l)?;
        let v = heads(layer.value.forward(x)?, l)?;
        let scores = self.autocast.matmul(&q, &k.t()?.contiguous()?)?;
        let probs = attention_probs(&scores, mask_bias, 1.0 / (dh as f64).sqrt())?;
        let context = self
            .autocast
            .matmul(&probs, &v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, lq, d))?;
        let attn = layer.attention_output.forward(&context)?;
        let x = layer.attention_norm.forward(&(attn + xq)?)?;
        let inter = self.activation.apply(&layer.intermediate.forward(&x)?)?;
        let out = layer.output.forward(&inter)?;
        layer.output_norm.forward(&(out + x)?)
    }
}

impl Backbone for BertEncoder {
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn word_embedding_table(&self) -> &Tensor {
        &self.embeddings.word
    }
}

impl Encoder for BertEncoder {
    fn family(&self) -> &'static str {
        "bert"
    }
    fn model_type(&self) -> &str {
        &self.config.model_type
    }
    fn device(&self) -> &Device {
        self.embeddings.word.device()
    }
    fn max_sequence_len(&self) -> usize {
        self.config.max_sequence_len()
    }
    fn uses_token_types(&self) -> bool {
        self.config.type_vocab_size > 1
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn forward_embeds_from(
        &self,
        inputs_embeds: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        keep_from: usize,
    ) -> Result<Tensor> {
        BertEncoder::forward_embeds_from(
            self,
            inputs_embeds,
            attention_mask,
            token_type_ids,
            keep_from,
        )
    }
    fn set_fused_layers(&mut self, on: bool) -> anyhow::Result<()> {
        BertEncoder::set_fused_layers(self, on)
    }
    fn fused_layers(&self) -> bool {
        BertEncoder::fused_layers(self)
    }
    fn set_autocast(&mut self, autocast: Autocast) -> anyhow::Result<()> {
        BertEncoder::set_autocast(self, autocast)
    }
    fn autocast(&self) -> Autocast {
        BertEncoder::autocast(self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn clone_box(&self) -> Box<dyn Encoder> {
        Box::new(self.clone())
    }
    #[cfg(feature = "onnx")]
    fn emit_from_embeds(
        &self,
        g: &mut adept_onnx::GraphBuilder,
        inputs: &crate::onnx::EncoderInputs,
        opts: &crate::onnx::EmitOptions,
    ) -> anyhow::Result<String> {
        onnx::encoder_from_embeds(g, self, inputs, opts)
    }
}

impl Module for BertEncoder {
    /// Convenience: `ids [b, s]` with full mask and type 0.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let embeds = self.word_embeddings(ids)?;
        let ones = Tensor::ones(ids.dims(), DType::U32, ids.device())?;
        self.forward_embeds(&embeds, &ones, None)
    }
}

/// Random weights for a tiny configuration, for tests that need no checkpoint (feature
/// `test-utils`).
#[cfg(feature = "test-utils")]
pub fn random_encoder(
    config: BertConfig,
    seed: u64,
    device: &Device,
) -> anyhow::Result<BertEncoder> {
    use std::collections::HashMap;
    let d = config.hidden_size;
    let i = config.intermediate_size;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![config.vocab_size, d],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![config.max_position_embeddings, d],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![config.type_vocab_size, d],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), vec![d]),
    ];
    for l in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (n, s) in [
            ("attention.self.query", vec![d, d]),
            ("attention.self.key", vec![d, d]),
            ("attention.self.value", vec![d, d]),
            ("attention.output.dense", vec![d, d]),
            ("intermediate.dense", vec![i, d]),
            ("output.dense", vec![d, i]),
        ] {
            shapes.push((format!("{p}.{n}.weight"), s.clone()));
            shapes.push((format!("{p}.{n}.bias"), vec![s[0]]));
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{n}.weight"), vec![d]));
            shapes.push((format!("{p}.{n}.bias"), vec![d]));
        }
    }
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
    };
    let mut tensors = HashMap::new();
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let is_gamma = name.ends_with("LayerNorm.weight");
        let values: Vec<f32> = (0..n)
            .map(|_| {
                if is_gamma {
                    1.0 + 0.1 * next()
                } else {
                    0.2 * next()
                }
            })
            .collect();
        tensors.insert(name, Tensor::from_vec(values, shape, device)?);
    }
    let weights = Weights::from_tensors("<random>".into(), tensors);
    BertEncoder::from_weights(config, weights)
}

/// A tiny configuration for tests (feature `test-utils`).
#[cfg(feature = "test-utils")]
pub fn tiny_config(vocab_size: usize) -> BertConfig {
    BertConfig {
        model_type: "bert".into(),
        vocab_size,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        hidden_act: "gelu".into(),
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
    }
}
