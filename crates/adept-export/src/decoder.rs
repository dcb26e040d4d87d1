//! Causal-LM bundles: one decoder step with a key/value cache, in optimum's names.
//!
//! ```text
//! out/model.onnx                  input_ids int64 [b, s], attention_mask int64 [b, past + s],
//!                                 position_ids int64 [b, s],
//!                                 past_key_values.{i}.key|value float [b, kv, past, hd]
//!                                 -> logits float [b, s, vocab], present.{i}.key|value [b, kv, past + s, hd]
//! out/prompt_cache.safetensors    past_key_values.{i}.key|value f32 [1, kv, l, hd]: the soft prompt's cache
//! out/tokenizer.json              copied
//! out/adept.json                  the manifest, with a causal-lm section (see [`DecoderManifest`])
//! ```
//!
//! # The two tables
//! The input side is one `Gather` on `adapter.input_table.weight [vocab + l, d]`: rows
//! `0..vocab` are the folded table `E + f(E)` (ADePT folded) or the frozen `E` (PT, ADePT
//! unfolded: then the token MLP runs in the graph on the gathered rows, masked off for the
//! prompt rows), and rows `vocab..vocab + l` are the soft prompt `P`. So ids `vocab..vocab+l-1`
//! are the prompt as *virtual tokens*: a runtime may run `[vocab, …, vocab + l - 1, tokens…]`
//! without a cache, or start from `prompt_cache.safetensors` (the same keys/values, computed at
//! export) with the attention mask covering the `l` cached positions. Either way positions come
//! from `position_ids` (`cumsum(mask) - 1`), so the prompt sits at positions `0..l`.
//!
//! The language-model head keeps the *original* table `[vocab, d]` as its own initializer
//! (`lm_head.weight`, stored transposed `[d, vocab]`): folding changes what the model reads,
//! not what it predicts. A tied checkpoint therefore stores its table twice (input side and
//! head); `WeightDtype::F16` halves both.
//!
//! DePT's offsets are per *position* of the input, which a cached decoder step cannot fold or
//! place (the same token sits at a different position each step): DePT is refused.

use crate::emit::adapter::token_mlp;
use adept_adapters::{GraphOffset, MethodKind, TokenMlp};
use adept_backbones::onnx::{values, DecoderInputs, DecoderOutputs, EmitOptions};
use adept_backbones::CacheShape;
pub use adept_bundle::PROMPT_CACHE_FILE;
use adept_bundle::{
    BundleManifest, DecoderSpec, DecoderTask, FoldMode, InputTemplate, OverLength, Pooling,
    Provenance, WeightDtype, FORMAT, FORMAT_VERSION, MODEL_FILE, TOKENIZER_FILE,
};
use adept_onnx::{DataType, Dim, GraphBuilder, ModelBuilder, MS_DOMAIN};
use adept_train::CausalLmModel;
use anyhow::{bail, ensure, Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::path::Path;

/// The input table's initializer (`.weight` is appended): `[vocab + l, d]`.
pub const INPUT_TABLE: &str = "adapter.input_table";
/// Graph input names (optimum's).
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const POSITION_IDS: &str = "position_ids";
/// Graph output name of the logits.
pub const LOGITS: &str = "logits";

/// `past_key_values.{i}.key` / `.value`.
pub fn past_names(i: usize) -> (String, String) {
    (
        format!("past_key_values.{i}.key"),
        format!("past_key_values.{i}.value"),
    )
}

/// `present.{i}.key` / `.value`.
pub fn present_names(i: usize) -> (String, String) {
    (format!("present.{i}.key"), format!("present.{i}.value"))
}

/// The adapter stage of a decoder graph: rows to gather and what is added to them.
#[derive(Clone, Debug)]
pub struct InputStage {
    /// `[vocab + l, d]`: the token rows (folded or not), then the prompt rows.
    pub table: Tensor,
    /// Token rows in `table` (ids from here on are the prompt's virtual tokens).
    pub vocab: usize,
    /// ADePT unfolded: the token MLP, added to token rows only.
    pub mlp: Option<TokenMlp>,
}

/// A decoder graph: inputs (optimum's names), the adapter stage ([`InputStage`]), the
/// family's decoder step (`emit`, e.g. `CausalLm::emit_decoder` or
/// `adept_backbones::llama::onnx::emit_decoder`), outputs `logits` and `present.*`.
pub fn decoder_graph(
    stage: &InputStage,
    cache: CacheShape,
    vocab_out: usize,
    dtype: WeightDtype,
    opset: i64,
    emit: &mut dyn FnMut(&mut GraphBuilder, &DecoderInputs) -> Result<DecoderOutputs>,
) -> Result<ModelBuilder> {
    ensure!(
        dtype != WeightDtype::Int8,
        "--dtype int8 is for encoder classifier bundles; a decoder bundle is exported as f32 or f16"
    );
    let mut builder = ModelBuilder::new("adept_decoder", opset).add_opset(MS_DOMAIN, 1);
    let g = builder.graph();
    if dtype == WeightDtype::F16 {
        g.set_weight_dtype(DataType::Float16)?;
    }
    let (rows, d) = stage.table.dims2()?;
    ensure!(
        rows >= stage.vocab,
        "the input table has {rows} rows, fewer than the vocabulary ({})",
        stage.vocab
    );
    let seq: Vec<Dim> = vec!["batch".into(), "sequence".into()];
    let total: Vec<Dim> = vec!["batch".into(), "total_sequence".into()];
    let ids = g.input(INPUT_IDS, DataType::Int64, &seq)?;
    let mask = g.input(ATTENTION_MASK, DataType::Int64, &total)?;
    let pos = g.input(POSITION_IDS, DataType::Int64, &seq)?;
    let kv_dims = |len: &str| -> Vec<Dim> {
        vec![
            "batch".into(),
            cache.kv_heads.into(),
            len.into(),
            cache.head_dim.into(),
        ]
    };
    let mut past = Vec::with_capacity(cache.layers);
    for i in 0..cache.layers {
        let (k, v) = past_names(i);
        let k = g.input(&k, DataType::Float, &kv_dims("past_sequence"))?;
        let v = g.input(&v, DataType::Float, &kv_dims("past_sequence"))?;
        past.push((k, v));
    }
    // Adapter stage: rows of [E (+ f(E) folded) ; P], the MLP on token rows when unfolded.
    let mut embeds = g.embedding(INPUT_TABLE, &ids, &values(&stage.table)?, [rows, d])?;
    if let Some(mlp) = &stage.mlp {
        let off = token_mlp(g, mlp, &embeds)?;
        let vocab = g.scalar_i64(stage.vocab as i64);
        let is_token = g.op("Less", &[&ids, &vocab], vec![]);
        let keep = g.cast(&is_token, DataType::Float);
        let keep = g.unsqueeze(&keep, &[-1]);
        let off = g.mul(&off, &keep);
        embeds = g.add(&embeds, &off);
    }
    let inputs = DecoderInputs {
        embeds,
        attention_mask: mask,
        position_ids: pos,
        past,
    };
    let out = emit(g, &inputs)?;
    ensure!(
        out.present.len() == cache.layers,
        "the decoder emitted {} present key/value pairs for {} layers",
        out.present.len(),
        cache.layers
    );
    g.output_as(
        &out.logits,
        LOGITS,
        DataType::Float,
        &["batch".into(), "sequence".into(), vocab_out.into()],
    )?;
    for (i, (k, v)) in out.present.iter().enumerate() {
        let (kn, vn) = present_names(i);
        g.output_as(k, &kn, DataType::Float, &kv_dims("total_sequence"))?;
        g.output_as(v, &vn, DataType::Float, &kv_dims("total_sequence"))?;
    }
    Ok(builder)
}

/// Special tokens and template the manifest carries (from the checkpoint's `config.json` /
/// `generation_config.json` / `tokenizer_config.json`, read by the caller).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationInfo {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub chat_template: Option<String>,
}

/// Options of [`export_causal_lm`].
#[derive(Clone, Debug, PartialEq)]
pub struct DecoderExportOptions {
    /// `None`: ADePT folded; PT has none. `Unfolded` keeps ADePT's MLP in the graph.
    pub fold: Option<FoldMode>,
    pub dtype: WeightDtype,
    /// Default-domain opset (17 or later).
    pub opset: i64,
    pub overwrite: bool,
    pub generation: GenerationInfo,
    /// The manifest's task name (a built-in task, a custom file's stem; default `causal-lm`).
    pub task: String,
    /// Longest prompt in tokens the run was trained with (the manifest's `max_length`).
    pub max_prompt_len: usize,
    pub provenance: Provenance,
}

impl Default for DecoderExportOptions {
    fn default() -> Self {
        Self {
            fold: None,
            dtype: WeightDtype::F32,
            opset: crate::DEFAULT_OPSET,
            overwrite: false,
            generation: GenerationInfo::default(),
            task: "causal-lm".into(),
            max_prompt_len: 256,
            provenance: Provenance::default(),
        }
    }
}

/// What [`export_causal_lm`] produced.
#[derive(Clone, Debug)]
pub struct DecoderExportReport {
    pub manifest: BundleManifest,
    pub nodes: usize,
    pub model_bytes: u64,
}

/// The fold mode for `method`: ADePT folded unless asked unfolded; PT none; others refused.
pub fn resolve_decoder_fold(method: MethodKind, fold: Option<FoldMode>) -> Result<FoldMode> {
    match method {
        MethodKind::Dept => bail!(
            "DePT cannot be exported as a causal-LM decoder: its offsets belong to input positions, \
             which a cached decoder step neither folds nor sees in one piece; train ADePT \
             (token-wise offsets, foldable) or PT for generation"
        ),
        MethodKind::HeadOnly => bail!(
            "a head-only adapter has nothing to export for a causal LM (no prompt, no offsets, \
             no classification head); train ADePT or PT"
        ),
        MethodKind::Adept => match fold.unwrap_or(FoldMode::Folded) {
            FoldMode::None => {
                bail!("an ADePT adapter is exported folded or unfolded, not without its offsets")
            }
            f => Ok(f),
        },
        MethodKind::Pt => match fold.unwrap_or(FoldMode::None) {
            FoldMode::None => Ok(FoldMode::None),
            f => bail!("only ADePT's token-wise offsets fold into the vocabulary table; PT has none ({f} requested)"),
        },
    }
}

/// The input stage of `model` for `fold`: `[E + f(E) | E ; P]` and the MLP when unfolded.
pub fn input_stage(model: &CausalLmModel, fold: FoldMode) -> Result<InputStage> {
    let word = model.backbone.word_embedding_table();
    let (vocab, d) = word.dims2()?;
    let stage = model.adapter.graph_stage(word, fold == FoldMode::Folded)?;
    let base = stage.folded_table.unwrap_or_else(|| word.clone());
    let table = match &stage.prompt {
        Some(p) => {
            ensure!(
                p.tensor.dims2()?.1 == d,
                "the soft prompt {} has shape {:?}, expected [l, {d}]",
                p.name,
                p.tensor.dims()
            );
            Tensor::cat(&[&base, &p.tensor.to_dtype(base.dtype())?], 0)?
        }
        None => base,
    };
    let mut mlp = None;
    for off in stage.offsets {
        match off {
            GraphOffset::TokenMlp(m) => mlp = Some(m),
            GraphOffset::PositionRows(_) => {
                bail!("position-based offsets (DePT) cannot be exported in a causal-LM decoder")
            }
        }
    }
    Ok(InputStage { table, vocab, mlp })
}

/// Exports `model` as a causal-LM bundle at `out_dir` (see the module docs), atomically.
pub fn export_causal_lm(
    model: &CausalLmModel,
    tokenizer_json: &Path,
    out_dir: &Path,
    opts: &DecoderExportOptions,
) -> Result<DecoderExportReport> {
    crate::bundle::refuse_existing(out_dir, opts.overwrite)?;
    let method = model.adapter.method();
    let fold = resolve_decoder_fold(method, opts.fold)?;
    let bb = &model.backbone;
    let cache = bb.cache_shape();
    let stage = input_stage(model, fold)?;
    let vocab = stage.vocab;
    let l = model.adapter.prompt_len();
    let d = bb.hidden_size();
    let mut builder = decoder_graph(
        &stage,
        cache,
        vocab,
        opts.dtype,
        opts.opset,
        &mut |g, inputs| bb.emit_decoder(g, inputs, &EmitOptions::default()),
    )?;
    let nodes = builder.graph().nodes().len();
    builder.graph().set_doc_string(format!(
        "adept causal LM: {} decoder, method {method}, {l}-token prompt as virtual tokens {vocab}..{}, offsets {fold}",
        bb.family(),
        vocab + l
    ));
    let builder = builder
        .producer("adept", env!("CARGO_PKG_VERSION"))
        .metadata("adept.task_kind", "causal-lm")
        .metadata("adept.method", &method.to_string())
        .metadata("adept.fold", &fold.to_string())
        .metadata("adept.dtype", &opts.dtype.to_string())
        .metadata("adept.prompt_length", &l.to_string())
        .metadata("adept.vocab_size", &vocab.to_string());
    let bytes = builder.to_bytes()?;
    drop(builder);

    let staging = crate::bundle::Staging::beside(out_dir)?;
    adept_bundle::write_atomic(&staging.dir.join(MODEL_FILE), &bytes)?;
    drop(bytes);
    crate::bundle::copy_tokenizer(&staging.dir, tokenizer_json)?;
    // The prompt's keys/values, computed by the candle model (what training saw).
    let mut tensors = HashMap::new();
    let pc = model.prompt_cache()?;
    for i in 0..cache.layers {
        let (kn, vn) = past_names(i);
        let (k, v) = match &pc {
            Some(c) => {
                let (k, v) = c.layers.get(i).with_context(|| {
                    format!(
                        "the prompt cache has {} layers, expected {}",
                        c.layers.len(),
                        cache.layers
                    )
                })?;
                (
                    k.to_dtype(candle_core::DType::F32)?,
                    v.to_dtype(candle_core::DType::F32)?,
                )
            }
            None => {
                let z = Tensor::zeros(
                    (1, cache.kv_heads, 0, cache.head_dim),
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )?;
                (z.clone(), z)
            }
        };
        let want = [1, cache.kv_heads, l, cache.head_dim];
        ensure!(
            k.dims() == want && v.dims() == want,
            "prompt cache layer {i}: key {:?} / value {:?}, expected {want:?}",
            k.dims(),
            v.dims()
        );
        tensors.insert(kn, k);
        tensors.insert(vn, v);
    }
    let pc_path = staging.dir.join(PROMPT_CACHE_FILE);
    candle_core::safetensors::save(&tensors, &pc_path)
        .with_context(|| format!("cannot write {}", pc_path.display()))?;
    std::fs::File::open(&pc_path)?.sync_all()?;

    let files = crate::bundle::file_entries(
        &staging.dir,
        &[MODEL_FILE, TOKENIZER_FILE, PROMPT_CACHE_FILE],
    )?;
    let mut inputs = vec![INPUT_IDS.into(), ATTENTION_MASK.into(), POSITION_IDS.into()];
    let mut outputs = vec![LOGITS.to_string()];
    for i in 0..cache.layers {
        let (k, v) = past_names(i);
        inputs.extend([k, v]);
        let (k, v) = present_names(i);
        outputs.extend([k, v]);
    }
    let g = &opts.generation;
    let pad = g
        .pad_token_id
        .or_else(|| g.eos_token_ids.first().copied())
        .unwrap_or(0);
    let manifest = BundleManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        adept_version: env!("CARGO_PKG_VERSION").into(),
        model_family: bb.family().into(),
        task: opts.task.clone(),
        label_names: Vec::new(),
        regression: false,
        text_fields: vec!["prompt".into()],
        input_template: InputTemplate::from_fields(&["prompt".to_string()]),
        prompt_length: l,
        max_length: opts.max_prompt_len,
        over_length: OverLength::Truncate,
        pad_token_id: pad,
        vocab_size: vocab,
        hidden_size: d,
        num_outputs: vocab,
        opset: opts.opset,
        dtype: opts.dtype,
        int8_keep_float: Vec::new(),
        int8_per_row: Vec::new(),
        int8_activations: None,
        fold,
        method: method.to_string().parse()?,
        pooling: Pooling::Mean,
        inputs,
        outputs,
        files,
        provenance: opts.provenance.clone(),
        decoder: Some(DecoderSpec {
            task_kind: DecoderTask::CausalLm,
            num_layers: cache.layers,
            kv_heads: cache.kv_heads,
            head_dim: cache.head_dim,
            vocab_size: vocab,
            prompt_len: l,
            bos_token_id: g.bos_token_id,
            eos_token_ids: g.eos_token_ids.clone(),
            pad_token_id: pad,
            max_sequence_len: bb.max_sequence_len(),
            chat_template: g.chat_template.clone(),
            prompt_cache_file: PROMPT_CACHE_FILE.into(),
            virtual_token_base: vocab,
        }),
    };
    manifest
        .validate()
        .context("the decoder bundle's manifest is inconsistent (an adept bug)")?;
    let json = serde_json::to_vec_pretty(&manifest)?;
    adept_bundle::write_atomic(&staging.dir.join(adept_bundle::MANIFEST_FILE), &json)?;
    let model_bytes = manifest.files[MODEL_FILE].bytes;
    staging.commit(out_dir, opts.overwrite)?;
    Ok(DecoderExportReport {
        manifest,
        nodes,
        model_bytes,
    })
}
