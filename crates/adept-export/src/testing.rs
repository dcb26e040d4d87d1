//! Small, deterministic models for tests and benchmarks (no checkpoint needed): a word-level
//! tokenizer, a tiny random BERT, and adapters whose every tensor holds non-zero values (a
//! freshly initialised ADePT has `W_up = 0`, which would make folding trivially exact).

use crate::bundle::TaskInfo;
use adept_adapters::{Adapter, AdapterConfig, MethodKind};
use adept_backbones::bert::{random_encoder, tiny_config};
use adept_backbones::{Backbone, BertEncoder, Encoder};
use adept_bundle::Provenance;
use adept_train::{Classifier, Head, OverLength, Pooling, TextEncoder};
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Words of the tiny tokenizer (after `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`).
pub const TINY_WORDS: &[&str] = &[
    "the", "a", "film", "movie", "is", "was", "not", "very", "good", "bad", "great", "boring",
    "funny", "and", "but", "it", "this", "story", "acting", "plot", "i", "loved", "hated", ".",
    ",", "!", "?", "of", "to", "in", "with", "too", "long", "short", "smart", "dull", "warm",
    "cold", "best", "worst",
];

/// Rows of the tiny model's table: larger than the tokenizer (4 + 40 = 44 tokens), as real
/// models often are.
pub const TINY_VOCAB: usize = 48;

/// A deterministic stream of values in `[-scale, scale)` (64-bit LCG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_unit(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (2.0 * self.next_unit() - 1.0) * scale)
            .collect()
    }
}

/// A Hugging Face `tokenizer.json` (word level, lower-cased, BERT's `[CLS] A [SEP] B [SEP]`).
pub fn tiny_tokenizer_json() -> String {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let mut vocab = serde_json::Map::new();
    for (i, t) in specials.iter().chain(TINY_WORDS).enumerate() {
        vocab.insert((*t).to_string(), serde_json::json!(i));
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special =
        |t: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq =
        |s: &str, type_id: u32| serde_json::json!({"Sequence": {"id": s, "type_id": type_id}});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

/// Writes [`tiny_tokenizer_json`] to `dir/tokenizer.json` and returns the path.
pub fn write_tiny_tokenizer(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, tiny_tokenizer_json())?;
    Ok(p)
}

/// Fills every adapter tensor with deterministic values in `[-scale, scale)`.
pub fn randomize_adapter(adapter: &Adapter, seed: u64, scale: f32) -> Result<()> {
    let mut rng = Lcg(seed);
    // Sorted by name: the tensors' HashMap order is random, the values must not be.
    let mut tensors: Vec<(String, Tensor)> = adapter.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let values: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, t)| {
            let v = rng.vec(t.elem_count(), scale);
            Ok((name, Tensor::from_vec(v, t.dims(), t.device())?))
        })
        .collect::<Result<_>>()?;
    adapter.set_values(&values)
}

/// An adapter of `method` with `l` prompt rows and rank `r` for `backbone`, every tensor random.
pub fn random_adapter(
    backbone: &dyn Backbone,
    method: MethodKind,
    l: usize,
    r: usize,
    max_len: usize,
    seed: u64,
    scale: f32,
) -> Result<Adapter> {
    let r = if method.imp().uses_rank() { r } else { 0 };
    let mut cfg = AdapterConfig::new(method, backbone.hidden_size(), l, r);
    cfg.max_length = max_len;
    let adapter = Adapter::init(cfg, backbone.word_embedding_table(), seed)?;
    randomize_adapter(&adapter, seed.wrapping_add(1000), scale)?;
    Ok(adapter)
}

/// A linear head with deterministic random values.
pub fn random_head(d: usize, n: usize, seed: u64) -> Result<Head> {
    let head = Head::init(d, n, seed, &Device::Cpu)?;
    let mut rng = Lcg(seed ^ 0x5eed);
    let w = Tensor::from_vec(rng.vec(n * d, 0.5), (n, d), &Device::Cpu)?;
    let b = Tensor::from_vec(rng.vec(n, 0.5), n, &Device::Cpu)?;
    head.set_values(&HashMap::from([
        ("classifier.weight".to_string(), w),
        ("classifier.bias".to_string(), b),
    ]))?;
    Ok(head)
}

/// The tiny random BERT (`tiny_config(TINY_VOCAB)`: d = 16, 2 layers, 4 heads).
pub fn tiny_backbone(seed: u64) -> Result<BertEncoder> {
    random_encoder(tiny_config(TINY_VOCAB), seed, &Device::Cpu)
}

/// A tiny classifier: random BERT, random adapter (`l` = 5, `r` = 3, DePT `max_len` 24) and head.
pub fn tiny_classifier(
    method: MethodKind,
    pooling: Pooling,
    num_outputs: usize,
    seed: u64,
) -> Result<Classifier> {
    let backbone = tiny_backbone(seed)?;
    let l = match method {
        MethodKind::HeadOnly => 0,
        _ => 5,
    };
    let adapter = random_adapter(&backbone, method, l, 3, 24, seed + 1, 0.5)?;
    let head = random_head(16, num_outputs, seed + 2)?;
    Ok(Classifier {
        backbone: Box::new(backbone),
        adapter,
        head,
        pooling,
    })
}

/// A text encoder over `tokenizer_json` with training's rules.
pub fn text_encoder(tokenizer_json: &Path, max_len: usize) -> Result<TextEncoder> {
    TextEncoder::from_file(tokenizer_json, max_len, OverLength::Truncate)
}

/// Task description for a classification task with `labels`, or a regression task (empty).
pub fn task_info(task: &str, labels: &[&str], text_fields: &[&str]) -> TaskInfo {
    TaskInfo {
        task: task.into(),
        label_names: labels.iter().map(|s| s.to_string()).collect(),
        regression: labels.is_empty(),
        text_fields: text_fields.iter().map(|s| s.to_string()).collect(),
        provenance: Provenance::default(),
    }
}

/// The Hugging Face tensors of a BERT encoder (the names `BertEncoder::from_dir` reads).
pub fn bert_tensors(enc: &BertEncoder) -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    let e = &enc.embeddings;
    t.insert("embeddings.word_embeddings.weight".into(), e.word.clone());
    t.insert(
        "embeddings.position_embeddings.weight".into(),
        e.position.clone(),
    );
    t.insert(
        "embeddings.token_type_embeddings.weight".into(),
        e.token_type.clone(),
    );
    t.insert("embeddings.LayerNorm.weight".into(), e.norm.weight.clone());
    t.insert("embeddings.LayerNorm.bias".into(), e.norm.bias.clone());
    for (i, l) in enc.layers.iter().enumerate() {
        let p = format!("encoder.layer.{i}");
        for (name, lin) in [
            ("attention.self.query", &l.query),
            ("attention.self.key", &l.key),
            ("attention.self.value", &l.value),
            ("attention.output.dense", &l.attention_output),
            ("intermediate.dense", &l.intermediate),
            ("output.dense", &l.output),
        ] {
            t.insert(format!("{p}.{name}.weight"), lin.weight().clone());
            if let Some(b) = lin.bias() {
                t.insert(format!("{p}.{name}.bias"), b.clone());
            }
        }
        for (name, n) in [
            ("attention.output.LayerNorm", &l.attention_norm),
            ("output.LayerNorm", &l.output_norm),
        ] {
            t.insert(format!("{p}.{name}.weight"), n.weight.clone());
            t.insert(format!("{p}.{name}.bias"), n.bias.clone());
        }
    }
    t
}

/// Writes a model folder (config.json, model.safetensors, tokenizer.json) for `enc` (a BERT-family
/// encoder) with the tiny tokenizer.
pub fn write_model_dir(enc: &dyn Encoder, dir: &Path) -> Result<()> {
    let Some(enc) = enc.as_any().downcast_ref::<BertEncoder>() else {
        anyhow::bail!(
            "write_model_dir writes BERT-family encoders only, not {}",
            enc.family()
        );
    };
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&enc.config)?,
    )?;
    candle_core::safetensors::save(&bert_tensors(enc), dir.join("model.safetensors"))?;
    write_tiny_tokenizer(dir)?;
    Ok(())
}

/// A trained-run folder as `adept train` leaves it (`<run>/best/` with adapter_config.json,
/// adapter_model.safetensors, head.safetensors, run.json), for `model` saved in `model_dir`
/// (see [`write_model_dir`]). `labels` empty means regression.
pub fn write_run_dir(
    model: &Classifier,
    model_dir: &Path,
    run_dir: &Path,
    task: &str,
    labels: &[&str],
    text_fields: &[&str],
    max_len: usize,
) -> Result<PathBuf> {
    let best = run_dir.join("best");
    model.adapter.save(&best)?;
    candle_core::safetensors::save(&model.head.tensors(), best.join("head.safetensors"))?;
    let mut cfg = adept_train::TrainConfig::defaults(model.adapter.method());
    cfg.adapter.prompt_len = model.adapter.prompt_len();
    cfg.adapter.rank = model.adapter.config.rank;
    cfg.adapter.max_length = max_len;
    cfg.pooling = model.pooling;
    let sha = |f: &str| adept_bundle::sha256_file(&model_dir.join(f));
    let manifest = adept_train::RunManifest {
        adept_version: env!("CARGO_PKG_VERSION").into(),
        model_dir: model_dir.display().to_string(),
        model_family: "bert".into(),
        model_sha256: sha("model.safetensors")?,
        tokenizer_sha256: sha("tokenizer.json")?,
        task: task.into(),
        label_names: labels.iter().map(|s| s.to_string()).collect(),
        regression: labels.is_empty(),
        text_fields: text_fields.iter().map(|s| s.to_string()).collect(),
        max_len,
        pooling: model.pooling,
        train_config: cfg,
        step: 100,
        validation_metrics: Default::default(),
    };
    std::fs::write(best.join("run.json"), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(best)
}
