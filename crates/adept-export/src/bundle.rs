//! Writing a bundle directory atomically: everything goes into a temporary directory beside the
//! target, which is renamed into place only when complete. A failure at any step removes the
//! temporary directory, so no partial bundle is ever visible under the target name.

use crate::emit::{self, AttentionKind, GraphOptions};
use adept_bundle::{
    write_atomic, BundleManifest, FileEntry, FoldMode, InputTemplate, Int8Activations, Provenance,
    WeightDtype, FORMAT, FORMAT_VERSION, MODEL_FILE, OUTPUT_NAME, TOKENIZER_FILE,
};
use adept_train::{Classifier, RunManifest, TextEncoder};
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the task side contributes to the manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    pub task: String,
    pub label_names: Vec<String>,
    pub regression: bool,
    pub text_fields: Vec<String>,
    pub provenance: Provenance,
}

impl TaskInfo {
    /// From a trained run's `run.json`.
    pub fn from_run(run: &RunManifest, adapter_dir: &Path) -> Self {
        Self {
            task: run.task.clone(),
            label_names: run.label_names.clone(),
            regression: run.regression,
            text_fields: run.text_fields.clone(),
            provenance: Provenance {
                model_dir: run.model_dir.clone(),
                model_sha256: run.model_sha256.clone(),
                adapter_dir: adapter_dir.display().to_string(),
                step: run.step,
                validation_metrics: run.validation_metrics.clone(),
            },
        }
    }
}

/// Export options below the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportOptions {
    /// `None`: the method's default (ADePT folded, others none).
    pub fold: Option<FoldMode>,
    pub dtype: WeightDtype,
    /// int8 only: how the products' inputs are quantized at run time (per row by default; per
    /// tensor; or in blocks, `MatMulNBits`); see `emit::int8_quantization`.
    pub int8_activations: Int8Activations,
    /// int8 only: products whose weight name contains one of these stay float (default:
    /// [`crate::emit::INT8_KEEP_FLOAT_DEFAULT`], as `adept export`; see
    /// `emit::int8_quantization`).
    pub int8_keep_float: Vec<String>,
    /// int8 per tensor only: products whose weight name contains one of these quantize their
    /// input per row instead; `None`: [`crate::emit::int8_per_row_default`] (as `adept export`).
    pub int8_per_row: Option<Vec<String>>,
    pub opset: i64,
    /// How self-attention is emitted (both run the same kernels' math; see `AttentionKind`).
    pub attention: AttentionKind,
    /// The lean graph (default; see `GraphOptions::lean`); `false` emits the full graph.
    pub lean: bool,
    /// The packed graph (default; see `GraphOptions::pack_rows`); `false` runs every position
    /// of the padded batch.
    pub pack_rows: bool,
    /// Replace an existing bundle at the target.
    pub overwrite: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            fold: None,
            dtype: WeightDtype::F32,
            int8_activations: Int8Activations::PerRow,
            int8_keep_float: crate::emit::INT8_KEEP_FLOAT_DEFAULT
                .iter()
                .map(|s| s.to_string())
                .collect(),
            int8_per_row: None,
            opset: crate::DEFAULT_OPSET,
            attention: AttentionKind::default(),
            lean: true,
            pack_rows: true,
            overwrite: false,
        }
    }
}

/// What an export produced.
#[derive(Clone, Debug)]
pub struct ExportReport {
    pub bundle_dir: PathBuf,
    pub manifest: BundleManifest,
    pub model_bytes: u64,
    pub nodes: usize,
    /// Whether the encoder was emitted packed (its row-wise work on the token rows only; see
    /// `GraphOptions::pack_rows`): asked for and supported by the family and attention layout.
    pub packed: bool,
    pub seconds: f64,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.manifest;
        // An int8 bundle says how it quantizes its activations (per row, per tensor, blocks).
        let dtype = match m.int8_activations {
            Some(a) => format!("{} ({a} activations)", m.dtype),
            None => m.dtype.to_string(),
        };
        write!(
            f,
            "exported {} ({} {}, {}-token prompt, offsets {}, {}, {} graph, {} nodes, {:.1} MB) to {} in {:.1}s",
            m.task,
            m.model_family,
            m.method,
            m.prompt_length,
            m.fold,
            dtype,
            if self.packed { "packed" } else { "padded" },
            self.nodes,
            self.model_bytes as f64 / 1e6,
            self.bundle_dir.display(),
            self.seconds
        )
    }
}

/// A temporary directory removed on drop unless [`commit`](Staging::commit)ted.
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
    committed: bool,
}

impl Staging {
    pub(crate) fn beside(target: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let name = target
            .file_name()
            .with_context(|| format!("bundle path {} has no directory name", target.display()))?
            .to_string_lossy();
        let dir = parent.join(format!(
            ".{name}.partial-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir,
            committed: false,
        })
    }

    /// Renames the staging directory to `target` (replacing an existing bundle if `overwrite`).
    pub(crate) fn commit(mut self, target: &Path, overwrite: bool) -> Result<()> {
        let old = if target.exists() {
            ensure!(
                overwrite,
                "{} already exists; pass --overwrite to replace it",
                target.display()
            );
            let old = self.dir.with_extension("old");
            std::fs::rename(target, &old)
                .with_context(|| format!("cannot move the existing {} aside", target.display()))?;
            Some(old)
        } else {
            None
        };
        if let Err(e) = std::fs::rename(&self.dir, target) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, target);
            }
            return Err(e).with_context(|| {
                format!(
                    "cannot rename {} to {}",
                    self.dir.display(),
                    target.display()
                )
            });
        }
        self.committed = true;
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The fold mode `opts` asks for, checked against the method.
pub fn resolve_fold(model: &Classifier, opts: &ExportOptions) -> Result<FoldMode> {
    let method = model.adapter.method();
    let fold = opts
        .fold
        .unwrap_or_else(|| emit::adapter::default_fold(method));
    emit::adapter::check_fold(method, fold)?;
    Ok(fold)
}

/// The manifest for `model` (files not yet recorded).
pub fn manifest_for(
    model: &Classifier,
    enc: &TextEncoder,
    info: &TaskInfo,
    fold: FoldMode,
    opts: &ExportOptions,
) -> Result<BundleManifest> {
    let (vocab, d) = model.backbone.word_embedding_table().dims2()?;
    let n = model.head.weight.as_tensor().dims()[0];
    let expected = if info.regression {
        1
    } else {
        info.label_names.len()
    };
    ensure!(
        n == expected,
        "the head has {n} outputs but task {} has {expected} ({} labels, regression {})",
        info.task,
        info.label_names.len(),
        info.regression
    );
    ensure!(
        enc.vocab_size() <= vocab,
        "the tokenizer has {} tokens but the embedding table only {vocab} rows",
        enc.vocab_size()
    );
    let l = model.adapter.prompt_len();
    let max_positions = model.backbone.max_sequence_len();
    ensure!(
        enc.max_len + l <= max_positions,
        "max length {} plus a {l}-token prompt exceeds the model's {max_positions} positions",
        enc.max_len
    );
    Ok(BundleManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        adept_version: env!("CARGO_PKG_VERSION").into(),
        model_family: model.backbone.family().into(),
        task: info.task.clone(),
        label_names: info.label_names.clone(),
        regression: info.regression,
        text_fields: info.text_fields.clone(),
        input_template: InputTemplate::from_fields(&info.text_fields),
        prompt_length: l,
        max_length: enc.max_len,
        over_length: enc.over_length,
        pad_token_id: enc.pad_id,
        vocab_size: vocab,
        hidden_size: d,
        num_outputs: n,
        opset: opts.opset,
        dtype: opts.dtype,
        // Filled in from what `model_bytes` kept float or quantized per row.
        int8_keep_float: Vec::new(),
        int8_per_row: Vec::new(),
        int8_activations: (opts.dtype == WeightDtype::Int8).then_some(opts.int8_activations),
        fold,
        method: model.adapter.method().to_string().parse()?,
        pooling: model.pooling,
        inputs: adept_bundle::input_names(model.backbone.uses_token_types()),
        outputs: vec![OUTPUT_NAME.into()],
        files: Default::default(),
        provenance: info.provenance.clone(),
        decoder: None,
    })
}

/// What [`model_bytes`] emitted.
pub struct EmittedModel {
    /// The serialized ONNX model.
    pub bytes: Vec<u8>,
    pub nodes: usize,
    /// With int8: the products kept float beside the head (full names, as the model's metadata
    /// `adept.int8_keep_float` and the manifest record them).
    pub kept_float: Vec<String>,
    /// With int8 per tensor: the products whose input is quantized per row (full names, as the
    /// metadata `adept.int8_per_row` and the manifest record them).
    pub per_row: Vec<String>,
    /// Whether the encoder was emitted packed ([`emit::is_packed`]).
    pub packed: bool,
}

/// The ONNX model for `model`: the graph, its metadata, and what int8 kept float or quantized
/// per row.
pub fn model_bytes(
    model: &Classifier,
    fold: FoldMode,
    opts: &ExportOptions,
    manifest: &BundleManifest,
) -> Result<EmittedModel> {
    let mut builder = emit::classifier_graph(
        model,
        &GraphOptions {
            fold,
            dtype: opts.dtype,
            int8_activations: opts.int8_activations,
            int8_keep_float: opts.int8_keep_float.clone(),
            int8_per_row: opts.int8_per_row.clone(),
            opset: opts.opset,
            attention: opts.attention,
            lean: opts.lean,
            pack_rows: opts.pack_rows,
        },
    )?;
    let nodes = builder.graph().all_nodes().len();
    let packed = crate::emit::is_packed(builder.graph());
    let kept = kept_float_products(builder.graph(), opts)?;
    let per_row = per_row_products(builder.graph(), opts)?;
    let builder = builder
        .producer("adept", env!("CARGO_PKG_VERSION"))
        .metadata("adept.task", &manifest.task)
        .metadata("adept.method", manifest.method.as_str())
        .metadata("adept.fold", &manifest.fold.to_string())
        .metadata("adept.dtype", &manifest.dtype.to_string())
        .metadata("adept.prompt_length", &manifest.prompt_length.to_string())
        .metadata("adept.vocab_size", &manifest.vocab_size.to_string())
        .metadata("adept.num_outputs", &manifest.num_outputs.to_string());
    let builder = match manifest.int8_activations {
        Some(a) => builder.metadata("adept.int8_activations", &a.to_string()),
        None => builder,
    };
    let builder = if kept.is_empty() {
        builder
    } else {
        builder.metadata("adept.int8_keep_float", &kept.join(","))
    };
    let builder = if per_row.is_empty() {
        builder
    } else {
        builder.metadata("adept.int8_per_row", &per_row.join(","))
    };
    Ok(EmittedModel {
        bytes: builder.to_bytes()?,
        nodes,
        kept_float: kept,
        per_row,
        packed,
    })
}

/// The int8 products of `graph` (full names): an int8 weight (`.weight_quantized`, blocks
/// `.weight_q8`) that a `MatMulInteger` or `MatMulNBits` reads, in any (sub)graph; not the
/// int8 vocabulary table, which a gather reads under the same suffix.
fn quantized_products(graph: &adept_onnx::GraphBuilder) -> Vec<String> {
    let read_by_products: std::collections::BTreeSet<&str> = graph
        .all_nodes()
        .into_iter()
        .filter(|n| matches!(n.op_type.as_deref(), Some("MatMulInteger" | "MatMulNBits")))
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    graph
        .initializer_names()
        .filter(|n| read_by_products.contains(n))
        .filter_map(|n| {
            n.strip_suffix(".weight_quantized")
                .or_else(|| n.strip_suffix(".weight_q8"))
                .map(str::to_owned)
        })
        .collect()
}

/// With int8 per tensor: the products quantized per row (`opts.int8_per_row`, or its default
/// for the model); an error names a name the user gave that matches no int8 product, and what
/// they are called.
fn per_row_products(graph: &adept_onnx::GraphBuilder, opts: &ExportOptions) -> Result<Vec<String>> {
    if opts.dtype != WeightDtype::Int8 || opts.int8_activations != Int8Activations::PerTensor {
        return Ok(Vec::new());
    }
    let Some(q) = graph.matmul_quantization() else {
        return Ok(Vec::new());
    };
    let quantized = quantized_products(graph);
    let per_row: Vec<String> = quantized
        .iter()
        .filter(|p| q.row_scaled(p))
        .cloned()
        .collect();
    for k in opts.int8_per_row.iter().flatten() {
        ensure!(
            per_row.iter().any(|p| adept_onnx::names_part(p, k)),
            "--int8-per-row {k:?} matches no int8 product of this model: name them as the graph \
             does, in whole dot-separated parts (e.g. layer.0.intermediate.dense, \
             layer.3.attention.self, output.dense), and not one kept float; its int8 products \
             are {}",
            quantized.join(", ")
        );
    }
    Ok(per_row)
}

/// With int8: the products `opts.int8_keep_float` kept float (recorded in the model's
/// metadata); an error names a name that matches no product, and what the products are called.
fn kept_float_products(
    graph: &adept_onnx::GraphBuilder,
    opts: &ExportOptions,
) -> Result<Vec<String>> {
    if opts.dtype != WeightDtype::Int8 || opts.int8_keep_float.is_empty() {
        return Ok(Vec::new());
    }
    let quantized = quantized_products(graph);
    // Float products: a `.weight` a MatMul or Gemm reads (or a Concat, as the float
    // `Attention` node's q/k/v weight).
    let float_products: std::collections::BTreeSet<&str> = graph
        .all_nodes()
        .into_iter()
        .filter(|n| matches!(n.op_type.as_deref(), Some("MatMul" | "Gemm" | "Concat")))
        .flat_map(|n| n.input.iter())
        .filter_map(|i| i.strip_suffix(".weight"))
        .collect();
    let kept: Vec<String> = float_products
        .into_iter()
        .filter(|p| {
            opts.int8_keep_float
                .iter()
                .any(|k| adept_onnx::names_part(p, k))
        })
        .map(str::to_owned)
        .collect();
    for k in &opts.int8_keep_float {
        ensure!(
            kept.iter().any(|p| adept_onnx::names_part(p, k)),
            "--int8-keep-float {k:?} matches no product of this model: name them as the graph \
             does, in whole dot-separated parts (e.g. layer.0.output.dense, \
             layer.4.attention.self, intermediate.dense); its int8 products are {}",
            quantized.join(", ")
        );
    }
    Ok(kept)
}

/// Fails (naming the fix) when `out_dir` exists and `overwrite` is off: checked before any work.
pub(crate) fn refuse_existing(out_dir: &Path, overwrite: bool) -> Result<()> {
    if out_dir.exists() && !overwrite {
        bail!(
            "{} already exists; pass --overwrite to replace it",
            out_dir.display()
        );
    }
    Ok(())
}

/// Copies `tokenizer_json` byte for byte to `<staging>/tokenizer.json` and flushes it to disk.
pub(crate) fn copy_tokenizer(staging: &Path, tokenizer_json: &Path) -> Result<()> {
    let tok = staging.join(TOKENIZER_FILE);
    std::fs::copy(tokenizer_json, &tok)
        .and_then(|_| std::fs::File::open(&tok)?.sync_all())
        .with_context(|| {
            format!(
                "cannot copy the tokenizer {} into the bundle",
                tokenizer_json.display()
            )
        })?;
    Ok(())
}

/// The manifest's `files` map (size and SHA-256) for the files `names` in `dir`.
pub(crate) fn file_entries(dir: &Path, names: &[&str]) -> Result<BTreeMap<String, FileEntry>> {
    names
        .iter()
        .map(|f| Ok((f.to_string(), FileEntry::of(&dir.join(f))?)))
        .collect()
}

/// Exports `model` as a bundle at `out_dir`: `model.onnx`, a byte-for-byte copy of
/// `tokenizer_json`, and `adept.json` with both checksums. Atomic: the directory appears
/// complete or not at all.
pub fn export_classifier(
    model: &Classifier,
    enc: &TextEncoder,
    tokenizer_json: &Path,
    info: &TaskInfo,
    opts: &ExportOptions,
    out_dir: &Path,
) -> Result<ExportReport> {
    let start = Instant::now();
    refuse_existing(out_dir, opts.overwrite)?;
    let fold = resolve_fold(model, opts)?;
    let mut manifest = manifest_for(model, enc, info, fold, opts)?;
    let staging = Staging::beside(out_dir)?;
    let EmittedModel {
        bytes,
        nodes,
        kept_float,
        per_row,
        packed,
    } = model_bytes(model, fold, opts, &manifest)?;
    manifest.int8_keep_float = kept_float;
    manifest.int8_per_row = per_row;
    let model_path = staging.dir.join(MODEL_FILE);
    // Flushed to disk (`fsync`) before the folder is renamed into place: a crash must not leave
    // a complete-looking bundle with a truncated model.
    write_atomic(&model_path, &bytes)?;
    drop(bytes);
    copy_tokenizer(&staging.dir, tokenizer_json)?;
    manifest.record_files(&staging.dir)?;
    manifest.write(&staging.dir)?;
    let model_bytes = manifest.files[MODEL_FILE].bytes;
    staging.commit(out_dir, opts.overwrite)?;
    Ok(ExportReport {
        bundle_dir: out_dir.to_path_buf(),
        manifest,
        model_bytes,
        nodes,
        packed,
        seconds: start.elapsed().as_secs_f64(),
    })
}
