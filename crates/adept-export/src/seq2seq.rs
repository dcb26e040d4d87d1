//! Sequence-to-sequence (T5) bundles: an encoder graph with the adapter stage, and one decoder
//! graph with the self- and cross-attention cache, named as optimum / transformers.js name a
//! T5 export.
//!
//! ```text
//! out/encoder_model.onnx   input_ids int64 [b, s], attention_mask int64 [b, s]
//!                          -> last_hidden_state float [b, l + s, d],
//!                             encoder_attention_mask int64 [b, l + s]   (the mask with the prompt's ones)
//! out/decoder_model.onnx   input_ids int64 [b, t], encoder_attention_mask int64 [b, S],
//!                          encoder_hidden_states float [b, S, d],
//!                          past_key_values.{i}.decoder.key|value float [b, h, past, d_kv],
//!                          past_key_values.{i}.encoder.key|value float [b, h, S or 0, d_kv]
//!                          -> logits float [b, t, vocab],
//!                             present.{i}.decoder.key|value [b, h, past + t, d_kv],
//!                             present.{i}.encoder.key|value [b, h, S, d_kv]
//! out/tokenizer.json       copied
//! out/adept.json           the manifest ([`Seq2SeqManifest`], typed in adept-bundle)
//! ```
//!
//! The adapter acts on the encoder's input only: the encoder graph gathers token rows from the
//! folded table `E + f(E)` (ADePT folded, `adapter.folded_word_embeddings.weight`) or from `E`
//! (`embeddings.word_embeddings.weight`, then ADePT's MLP in the graph when unfolded, DePT's
//! position rows), prepends the soft prompt `P` inside the graph and extends the mask with
//! ones (the same emission as a classifier's, [`crate::emit::adapter`]). The decoder reads the
//! *original* shared table (`shared.weight`) and its LM head keeps the original table (tied:
//! the same initializer, `h·d^-0.5·sharedᵀ`; untied: `lm_head.weight`): folding changes what
//! the encoder reads, nothing else.
//!
//! One decoder graph serves the first step and every later one, with no `If` node: the
//! cross-attention keys/values are projected only from the encoder rows the encoder past lacks
//! (all of them on the first step, when the runtime feeds an empty `[b, h, 0, d_kv]` encoder
//! past; none later, when it feeds back `present.*.encoder`). See
//! `adept_backbones::t5::onnx` for the graph and the relative position bias (exact for every
//! length: biases per clamped distance, one `Gather`).

use crate::emit::adapter::{
    check_fold, default_fold, extend_with_prompt, position_rows, token_mlp, FOLDED_TABLE,
    WORD_TABLE,
};
use adept_adapters::{Adapter, GraphOffset};
use adept_backbones::onnx::values;
use adept_backbones::t5::onnx::{emit_decoder, emit_encoder, T5DecoderInputs};
use adept_backbones::{Seq2SeqLm, T5Model};
use adept_bundle::{FoldMode, WeightDtype, FORMAT, FORMAT_VERSION, TOKENIZER_FILE};
use adept_onnx::{DataType, Dim, ModelBuilder, MS_DOMAIN};
use anyhow::{bail, Context, Result};
use std::path::Path;

pub use adept_bundle::seq2seq_manifest::{GraphEntry, Seq2SeqManifest, DECODER_FILE, ENCODER_FILE};
/// Encoder graph inputs.
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
/// Encoder graph outputs.
pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
pub const ENCODER_ATTENTION_MASK: &str = "encoder_attention_mask";
/// Decoder graph inputs besides `input_ids` and `encoder_attention_mask`.
pub const ENCODER_HIDDEN_STATES: &str = "encoder_hidden_states";
pub const LOGITS: &str = "logits";

/// `past_key_values.{i}.{decoder|encoder}.key` / `.value`.
pub fn past_names(i: usize, kind: &str) -> (String, String) {
    (
        format!("past_key_values.{i}.{kind}.key"),
        format!("past_key_values.{i}.{kind}.value"),
    )
}

/// `present.{i}.{decoder|encoder}.key` / `.value`.
pub fn present_names(i: usize, kind: &str) -> (String, String) {
    (
        format!("present.{i}.{kind}.key"),
        format!("present.{i}.{kind}.value"),
    )
}

/// The T5 model behind a `dyn Seq2SeqLm`.
pub fn as_t5(backbone: &dyn Seq2SeqLm) -> Result<&T5Model> {
    backbone
        .as_any()
        .downcast_ref::<T5Model>()
        .with_context(|| {
            format!(
                "seq2seq export knows the T5 family only; this backbone is {} ({})",
                backbone.family(),
                backbone.model_type()
            )
        })
}

fn new_builder(name: &str, dtype: WeightDtype, opset: i64) -> Result<ModelBuilder> {
    if opset < 17 {
        bail!("opset {opset} is too old: the graphs need opset 17 or later");
    }
    if dtype == WeightDtype::Int8 {
        bail!(
            "--dtype int8 is for encoder classifier bundles; a T5 bundle is exported as f32 or f16"
        );
    }
    let mut b = ModelBuilder::new(name, opset).add_opset(MS_DOMAIN, 1);
    if dtype == WeightDtype::F16 {
        b.graph().set_weight_dtype(DataType::Float16)?;
    }
    Ok(b)
}

/// The encoder graph (see the module docs): `input_ids`, `attention_mask` → adapter stage
/// (`fold`: the folded table, or `E` plus the method's offsets), `[P; rows]` with the mask
/// extended → T5 encoder stack → `last_hidden_state [b, l + s, d]` and `encoder_attention_mask
/// [b, l + s]`.
pub fn encoder_graph(
    model: &T5Model,
    adapter: &Adapter,
    fold: FoldMode,
    dtype: WeightDtype,
    opset: i64,
) -> Result<ModelBuilder> {
    check_fold(adapter.method(), fold)?;
    let mut builder = new_builder("adept_t5_encoder", dtype, opset)?;
    let g = builder.graph();
    let seq: Vec<Dim> = vec!["batch".into(), "sequence".into()];
    let ids = g.input(INPUT_IDS, DataType::Int64, &seq)?;
    let mask = g.input(ATTENTION_MASK, DataType::Int64, &seq)?;
    let table = &model.shared;
    let (vocab, d) = table.dims2()?;
    let stage = adapter.graph_stage(table, fold == FoldMode::Folded)?;
    let mut e = match &stage.folded_table {
        Some(folded) => g.embedding(FOLDED_TABLE, &ids, &values(folded)?, [vocab, d])?,
        None => g.embedding(WORD_TABLE, &ids, &values(table)?, [vocab, d])?,
    };
    for offset in &stage.offsets {
        let off = match offset {
            GraphOffset::TokenMlp(mlp) => token_mlp(g, mlp, &e)?,
            GraphOffset::PositionRows(rows) => position_rows(g, rows, &ids)?,
        };
        e = g.add(&e, &off);
    }
    let inputs = extend_with_prompt(g, adapter, &ids, &e, &mask, None)?;
    let hidden = emit_encoder(g, model, &inputs.embeds, &inputs.attention_mask)?;
    let enc_seq: Vec<Dim> = vec!["batch".into(), "encoder_sequence".into()];
    g.output_as(
        &hidden,
        LAST_HIDDEN_STATE,
        DataType::Float,
        &["batch".into(), "encoder_sequence".into(), d.into()],
    )?;
    g.output_as(
        &inputs.attention_mask,
        ENCODER_ATTENTION_MASK,
        DataType::Int64,
        &enc_seq,
    )?;
    g.set_doc_string(format!(
        "adept T5 encoder: method {}, {}-row soft prompt prepended in the graph, offsets {fold}",
        adapter.method(),
        adapter.prompt_len()
    ));
    Ok(builder)
}

/// The decoder graph (see the module docs and `adept_backbones::t5::onnx`).
pub fn decoder_graph(model: &T5Model, dtype: WeightDtype, opset: i64) -> Result<ModelBuilder> {
    let mut builder = new_builder("adept_t5_decoder", dtype, opset)?;
    let g = builder.graph();
    let c = &model.config;
    let layers = model.decoder.len();
    let kv = |len: &str| -> Vec<Dim> {
        vec![
            "batch".into(),
            c.num_heads.into(),
            len.into(),
            c.d_kv.into(),
        ]
    };
    let input_ids = g.input(
        INPUT_IDS,
        DataType::Int64,
        &["batch".into(), "decoder_sequence".into()],
    )?;
    let encoder_attention_mask = g.input(
        ENCODER_ATTENTION_MASK,
        DataType::Int64,
        &["batch".into(), "encoder_sequence".into()],
    )?;
    let encoder_hidden_states = g.input(
        ENCODER_HIDDEN_STATES,
        DataType::Float,
        &["batch".into(), "encoder_sequence".into(), c.d_model.into()],
    )?;
    let mut past_self = Vec::with_capacity(layers);
    let mut past_cross = Vec::with_capacity(layers);
    for i in 0..layers {
        let (k, v) = past_names(i, "decoder");
        past_self.push((
            g.input(&k, DataType::Float, &kv("past_decoder_sequence"))?,
            g.input(&v, DataType::Float, &kv("past_decoder_sequence"))?,
        ));
        let (k, v) = past_names(i, "encoder");
        past_cross.push((
            g.input(&k, DataType::Float, &kv("past_encoder_sequence"))?,
            g.input(&v, DataType::Float, &kv("past_encoder_sequence"))?,
        ));
    }
    let inputs = T5DecoderInputs {
        input_ids,
        encoder_attention_mask,
        encoder_hidden_states,
        past_self,
        past_cross,
    };
    let out = emit_decoder(g, model, &inputs)?;
    g.output_as(
        &out.logits,
        LOGITS,
        DataType::Float,
        &[
            "batch".into(),
            "decoder_sequence".into(),
            c.vocab_size.into(),
        ],
    )?;
    for i in 0..layers {
        for (kind, present, len) in [
            ("decoder", &out.present_self, "total_decoder_sequence"),
            ("encoder", &out.present_cross, "encoder_sequence"),
        ] {
            let (kn, vn) = present_names(i, kind);
            g.output_as(&present[i].0, &kn, DataType::Float, &kv(len))?;
            g.output_as(&present[i].1, &vn, DataType::Float, &kv(len))?;
        }
    }
    g.set_doc_string(format!(
        "adept T5 decoder step with self- and cross-attention cache ({} blocks, {} LM head)",
        layers,
        if model.lm_head.is_some() {
            "untied"
        } else {
            "tied"
        }
    ));
    Ok(builder)
}

/// Options of [`export_seq2seq`].
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2SeqExportOptions {
    /// `None`: the method's default (ADePT folded, the rest none).
    pub fold: Option<FoldMode>,
    pub dtype: WeightDtype,
    /// Default-domain opset (17 or later; [`crate::DEFAULT_OPSET`] unless set, as `adept
    /// export`).
    pub opset: i64,
    pub overwrite: bool,
}

impl Default for Seq2SeqExportOptions {
    fn default() -> Self {
        Self {
            fold: None,
            dtype: WeightDtype::F32,
            opset: crate::DEFAULT_OPSET,
            overwrite: false,
        }
    }
}

/// What [`export_seq2seq`] produced.
#[derive(Clone, Debug)]
pub struct Seq2SeqExportReport {
    pub manifest: Seq2SeqManifest,
    pub encoder_nodes: usize,
    pub decoder_nodes: usize,
    pub bytes: u64,
}

fn graph_names(b: &mut ModelBuilder) -> Result<(Vec<String>, Vec<String>)> {
    let p = b.graph().proto()?;
    let names = |v: &[adept_onnx::proto::ValueInfoProto]| {
        v.iter()
            .map(|x| x.name.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    Ok((names(&p.input), names(&p.output)))
}

/// Exports a T5 backbone (`backbone`, downcast to [`T5Model`]) with its `adapter` as a seq2seq
/// bundle at `out_dir` (see the module docs), atomically: everything is written into a
/// temporary folder beside `out_dir` and renamed when complete.
pub fn export_seq2seq(
    backbone: &dyn Seq2SeqLm,
    adapter: &Adapter,
    tokenizer_json: &Path,
    out_dir: &Path,
    opts: &Seq2SeqExportOptions,
) -> Result<Seq2SeqExportReport> {
    crate::bundle::refuse_existing(out_dir, opts.overwrite)?;
    let model = as_t5(backbone)?;
    let method = adapter.method();
    let fold = opts.fold.unwrap_or_else(|| default_fold(method));
    let d = model.config.d_model;
    if adapter.config.token_dim != d {
        bail!(
            "the adapter was trained for width {} but the T5 model's d_model is {d}",
            adapter.config.token_dim
        );
    }
    let mut enc = encoder_graph(model, adapter, fold, opts.dtype, opts.opset)?;
    let mut dec = decoder_graph(model, opts.dtype, opts.opset)?;
    let (enc_in, enc_out) = graph_names(&mut enc)?;
    let (dec_in, dec_out) = graph_names(&mut dec)?;
    let encoder_nodes = enc.graph().nodes().len();
    let decoder_nodes = dec.graph().nodes().len();
    let meta = |b: ModelBuilder| {
        b.producer("adept", env!("CARGO_PKG_VERSION"))
            .metadata("adept.task_kind", "seq2seq")
            .metadata("adept.model_family", "t5")
            .metadata("adept.method", &method.to_string())
            .metadata("adept.fold", &fold.to_string())
            .metadata("adept.dtype", &opts.dtype.to_string())
            .metadata("adept.prompt_length", &adapter.prompt_len().to_string())
    };
    let enc_bytes = meta(enc).to_bytes()?;
    let dec_bytes = meta(dec).to_bytes()?;

    let staging = crate::bundle::Staging::beside(out_dir)?;
    adept_bundle::write_atomic(&staging.dir.join(ENCODER_FILE), &enc_bytes)?;
    adept_bundle::write_atomic(&staging.dir.join(DECODER_FILE), &dec_bytes)?;
    drop((enc_bytes, dec_bytes));
    crate::bundle::copy_tokenizer(&staging.dir, tokenizer_json)?;
    let files =
        crate::bundle::file_entries(&staging.dir, &[ENCODER_FILE, DECODER_FILE, TOKENIZER_FILE])?;
    let c = &model.config;
    let manifest = Seq2SeqManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        adept_version: env!("CARGO_PKG_VERSION").into(),
        model_family: backbone.family().into(),
        model_type: backbone.model_type().into(),
        task_kind: adept_bundle::seq2seq_manifest::SEQ2SEQ_TASK_KIND.into(),
        method: method.to_string().parse()?,
        fold,
        dtype: opts.dtype,
        opset: opts.opset,
        hidden_size: d,
        num_encoder_layers: model.encoder.len(),
        num_decoder_layers: model.decoder.len(),
        num_heads: c.num_heads,
        d_kv: c.d_kv,
        vocab_size: c.vocab_size,
        prompt_len: adapter.prompt_len(),
        tied_embeddings: backbone.tied_embeddings(),
        decoder_start_token_id: backbone.decoder_start_token_id(),
        eos_token_id: backbone.eos_token_id(),
        pad_token_id: backbone.pad_token_id(),
        max_sequence_len: backbone.max_sequence_len(),
        encoder: GraphEntry {
            file: ENCODER_FILE.into(),
            inputs: enc_in,
            outputs: enc_out,
        },
        decoder: GraphEntry {
            file: DECODER_FILE.into(),
            inputs: dec_in,
            outputs: dec_out,
        },
        tokenizer: TOKENIZER_FILE.into(),
        files,
    };
    manifest.write(&staging.dir)?;
    let bytes = manifest.files.values().map(|f| f.bytes).sum();
    staging.commit(out_dir, opts.overwrite)?;
    Ok(Seq2SeqExportReport {
        manifest,
        encoder_nodes,
        decoder_nodes,
        bytes,
    })
}
