//! `adept export` / `adept-export`: the command-line arguments and their run function.

use crate::bundle::{export_classifier, ExportOptions, ExportReport, TaskInfo};
use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, Int8Activations, WeightDtype};
use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Export a trained adapter as an ONNX bundle (model.onnx, tokenizer.json, adept.json).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ExportArgs {
    /// A trained run's `best/` folder, or a run folder that contains `best/` (alias `--run`).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR", alias = "run"))]
    pub adapter: PathBuf,
    /// Model folder (default: the folder recorded in the run's run.json).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub model: Option<PathBuf>,
    /// Bundle directory to write (default: exports/<run-name>).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub out: Option<PathBuf>,
    /// Fold ADePT's offsets into the vocabulary table (the default for ADePT).
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "no_fold"))]
    pub fold_offsets: bool,
    /// Keep ADePT's MLP in the graph instead of folding it.
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_fold: bool,
    /// Weight storage: f32; f16 (half the file; computation stays f32); int8 (encoder
    /// classifiers: the encoder's products dynamically quantized, per-channel int8 weights).
    #[cfg_attr(
        feature = "cli",
        arg(long, default_value = "f32", value_name = "f32|f16|int8")
    )]
    pub dtype: WeightDtype,
    /// With `--dtype int8`: quantize each product in blocks of N inputs
    /// (`com.microsoft:MatMulNBits`, 8 bits; a power of two ≥ 16, e.g. 128) instead of per
    /// row: logits closer to f32, somewhat slower on CPU (see docs/serving.md).
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub int8_blocks: Option<usize>,
    /// With `--dtype int8`: how the products' inputs are quantized at run time. `per-row`
    /// (default): one scale per token, a sentence's logits independent of its batch-mates.
    /// `per-tensor`: one scale per input tensor (ONNX Runtime's fused `DynamicQuantizeMatMul`),
    /// the fastest (1.2-1.3x per row on CPU), but the sentences of a batch share the scale, so
    /// their logits move a little with their batch-mates, and further from f32 (see
    /// docs/serving.md).
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            value_name = "per-row|per-tensor|blocks-N",
            conflicts_with = "int8_blocks"
        )
    )]
    pub int8_activations: Option<Int8Activations>,
    /// With `--dtype int8`: keep the products whose weight name contains NAME in float
    /// (repeatable; `none` keeps none) [default per row: `layer.0.output.dense`, the first
    /// layer's feed-forward output, the largest single source of MiniLM's int8 error (a fifth
    /// of it on an l = 60 adapter; see docs/serving.md); per tensor and in blocks: none].
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME"))]
    pub int8_keep_float: Option<Vec<String>>,
    /// With `--int8-activations per-tensor`: quantize the input of the products whose weight
    /// name contains NAME per row instead (repeatable; `none`: every product per tensor)
    /// [default: the feed-forward products of every layer but the last two, where most of the
    /// per-tensor error comes from: about the per-row error for 5-8 % of the per-tensor speed
    /// (see docs/serving.md)].
    #[cfg_attr(feature = "cli", arg(long, value_name = "NAME"))]
    pub int8_per_row: Option<Vec<String>>,
    /// Default-domain ONNX opset (17 or later; from 23 on an encoder's attention is ONNX's own
    /// `Attention`, faster in ONNX Runtime ≥ 1.23 than the `com.microsoft` kernel it replaces;
    /// 17 for older runtimes).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = crate::DEFAULT_OPSET))]
    pub opset: i64,
    /// Emit the full graph: the soft prompt runs through the embeddings and the first layer's
    /// projections at serving time instead of being precomputed at export (same logits).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_lean: bool,
    /// Emit the padded graph alone: the encoder's products and LayerNorms run on every position
    /// of the padded batch, padding included, instead of on the positions that hold tokens (same
    /// logits, but for per-tensor int8 scales; slower on batches of unequal lengths, about as
    /// fast on batches sorted by length; one sentence at a time both run the padded encoder,
    /// but the default graph holds two, a larger session to create: the browser page's choice).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_pack: bool,
    /// Replace an existing bundle directory.
    #[cfg_attr(feature = "cli", arg(long))]
    pub overwrite: bool,
}

/// The trained adapter folder (`…/best`) for `--adapter`, and the run's name.
pub fn resolve_adapter_dir(path: &Path) -> Result<(PathBuf, String)> {
    let dir = if path.join("run.json").is_file() {
        path.to_path_buf()
    } else if path.join("best").join("run.json").is_file() {
        path.join("best")
    } else if !path.exists() {
        bail!("adapter folder {} does not exist", path.display());
    } else {
        bail!(
            "{} is not a trained adapter: neither {} nor {} exists",
            path.display(),
            path.join("run.json").display(),
            path.join("best").join("run.json").display()
        );
    };
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = match name_of(&canonical).as_deref() {
        Some("best") => canonical.parent().and_then(name_of),
        other => other.map(str::to_owned),
    }
    .unwrap_or_else(|| "bundle".into());
    Ok((dir, name))
}

/// `--fold-offsets` / `--no-fold` for a method (`None`: the method's default).
pub fn fold_choice(args: &ExportArgs, method: MethodKind) -> Result<Option<FoldMode>> {
    let fold = match (args.fold_offsets, args.no_fold) {
        (true, _) => FoldMode::Folded,
        (_, true) if method.imp().folds() => FoldMode::Unfolded,
        (_, true) => FoldMode::None,
        _ => return Ok(None),
    };
    crate::emit::adapter::check_fold(method, fold).context("--fold-offsets")?;
    Ok(Some(fold))
}

/// `--int8-blocks` and `--int8-keep-float` are for encoder classifiers: an error for a `kind`
/// run that was given them.
fn refuse_int8_options(args: &ExportArgs, kind: &str) -> Result<()> {
    ensure!(
        args.int8_blocks.is_none()
            && args.int8_keep_float.is_none()
            && args.int8_activations.is_none()
            && args.int8_per_row.is_none(),
        "--int8-blocks, --int8-activations, --int8-keep-float and --int8-per-row apply to \
         encoder classifier runs; {} is a {kind} run: drop them",
        args.adapter.display()
    );
    Ok(())
}

/// `--int8-keep-float`, checked: only with `--dtype int8`, names not empty, `none` alone;
/// absent: [`crate::emit::INT8_KEEP_FLOAT_DEFAULT`] for int8 per row, nothing otherwise
/// (blocks and per tensor included).
pub fn int8_keep_float(args: &ExportArgs) -> Result<Vec<String>> {
    let Some(names) = &args.int8_keep_float else {
        // Measured per row; blocks of N keep their own (already closer) rounding everywhere,
        // and per tensor is the fast choice, every product int8.
        return Ok(
            if args.dtype == WeightDtype::Int8 && int8_activations(args)? == Int8Activations::PerRow
            {
                crate::emit::INT8_KEEP_FLOAT_DEFAULT
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                Vec::new()
            },
        );
    };
    ensure!(
        args.dtype == WeightDtype::Int8,
        "--int8-keep-float needs --dtype int8 (the bundle is {})",
        args.dtype
    );
    if names.iter().any(|n| n == "none") {
        ensure!(
            names.len() == 1,
            "--int8-keep-float none keeps no product float: do not combine it with names ({names:?})"
        );
        return Ok(Vec::new());
    }
    for n in names {
        ensure!(
            !n.trim().is_empty(),
            "--int8-keep-float takes a weight name or part of one (e.g. layer.0.output.dense), not an empty string"
        );
    }
    Ok(names.clone())
}

/// `--int8-per-row`, checked: only with `--dtype int8 --int8-activations per-tensor`, names not
/// empty, `none` alone (→ `Some([])`); absent: `None`, the default for the model
/// ([`crate::emit::int8_per_row_default`]).
pub fn int8_per_row(args: &ExportArgs) -> Result<Option<Vec<String>>> {
    let Some(names) = &args.int8_per_row else {
        return Ok(None);
    };
    ensure!(
        args.dtype == WeightDtype::Int8,
        "--int8-per-row needs --dtype int8 --int8-activations per-tensor (the bundle is {})",
        args.dtype
    );
    let activations = int8_activations(args)?;
    ensure!(
        activations == Int8Activations::PerTensor,
        "--int8-per-row picks products to quantize per row in a per-tensor bundle; with \
         --int8-activations {activations} it does nothing: add --int8-activations per-tensor or \
         drop it"
    );
    if names.iter().any(|n| n == "none") {
        ensure!(
            names.len() == 1,
            "--int8-per-row none quantizes every product per tensor: do not combine it with \
             names ({names:?})"
        );
        return Ok(Some(Vec::new()));
    }
    for n in names {
        ensure!(
            !n.trim().is_empty(),
            "--int8-per-row takes a weight name or part of one (e.g. layer.0.intermediate.dense), \
             not an empty string"
        );
    }
    Ok(Some(names.clone()))
}

/// `--int8-blocks`, checked: only with `--dtype int8`, a power of two of at least 16.
pub fn int8_blocks(args: &ExportArgs) -> Result<Option<usize>> {
    let Some(n) = args.int8_blocks else {
        return Ok(None);
    };
    if args.dtype != WeightDtype::Int8 {
        bail!(
            "--int8-blocks {n} needs --dtype int8 (the bundle is {})",
            args.dtype
        );
    }
    if n < 16 || !n.is_power_of_two() {
        bail!(
            "--int8-blocks {n}: the block must be a power of two of at least 16 (e.g. 32, 64, 128)"
        );
    }
    Ok(Some(n))
}

/// `--int8-activations` and `--int8-blocks N` together, checked: only with `--dtype int8`;
/// per row when neither is given.
pub fn int8_activations(args: &ExportArgs) -> Result<Int8Activations> {
    if let Some(n) = int8_blocks(args)? {
        return Ok(Int8Activations::Blocks(n));
    }
    let Some(a) = args.int8_activations else {
        return Ok(Int8Activations::PerRow);
    };
    ensure!(
        args.dtype == WeightDtype::Int8,
        "--int8-activations {a} needs --dtype int8 (the bundle is {})",
        args.dtype
    );
    if let Int8Activations::Blocks(n) = a {
        ensure!(
            n >= 16 && n.is_power_of_two(),
            "--int8-activations {a}: the block must be a power of two of at least 16 (e.g. \
             blocks-32, blocks-128)"
        );
    }
    Ok(a)
}

/// Runs `adept export`: loads the trained adapter on its frozen model (checking the model's
/// checksum), builds the graph and writes the bundle atomically.
pub fn run_export(args: &ExportArgs) -> Result<ExportReport> {
    let (adapter_dir, run_name) = resolve_adapter_dir(&args.adapter)?;
    let (model, enc, run) =
        adept_train::load_trained(&adapter_dir, args.model.as_deref(), &Device::Cpu).with_context(
            || format!("cannot load the trained adapter {}", adapter_dir.display()),
        )?;
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(&run.model_dir));
    let tokenizer = model_dir.join("tokenizer.json");
    let opts = ExportOptions {
        fold: fold_choice(args, model.adapter.method())?,
        dtype: args.dtype,
        int8_activations: int8_activations(args)?,
        int8_keep_float: int8_keep_float(args)?,
        int8_per_row: int8_per_row(args)?,
        opset: args.opset,
        overwrite: args.overwrite,
        lean: !args.no_lean,
        pack_rows: !args.no_pack,
        ..Default::default()
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("exports").join(&run_name));
    let info = TaskInfo::from_run(&run, &adapter_dir);
    export_classifier(&model, &enc, &tokenizer, &info, &opts, &out)
        .with_context(|| format!("exporting {} to {}", adapter_dir.display(), out.display()))
}

/// Runs `adept export` for a causal-LM run (`run.json` with `"task_kind": "causal-lm"`): loads
/// the adapter on its decoder (checking the checksum) and writes a decoder bundle with
/// [`crate::decoder::export_causal_lm`] (f32/f16, `--no-fold` keeps ADePT's MLP in the graph;
/// DePT is refused there). Returns `None` when the run is not a causal-LM run.
pub fn run_export_causal_lm(
    args: &ExportArgs,
) -> Result<Option<crate::decoder::DecoderExportReport>> {
    let (adapter_dir, run_name) = resolve_adapter_dir(&args.adapter)?;
    if adept_train::run::run_task_kind(&adapter_dir)? != adept_train::run::CAUSAL_LM_TASK_KIND {
        return Ok(None);
    }
    refuse_int8_options(args, "causal-LM")?;
    let (model, run) =
        adept_train::lm_train::load_trained_lm(&adapter_dir, args.model.as_deref(), &Device::Cpu)
            .with_context(|| format!("cannot load the trained adapter {}", adapter_dir.display()))?;
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(&run.model_dir));
    let opts = crate::decoder::DecoderExportOptions {
        fold: fold_choice(args, model.adapter.method())?,
        dtype: args.dtype,
        opset: args.opset,
        overwrite: args.overwrite,
        generation: crate::decoder::GenerationInfo {
            bos_token_id: run.bos_token_id,
            eos_token_ids: run.eos_token_ids.clone(),
            pad_token_id: run.pad_token_id,
            chat_template: run.chat_template.clone(),
        },
        task: run.task.clone(),
        max_prompt_len: run.max_len,
        provenance: adept_bundle::Provenance {
            model_dir: run.model_dir.clone(),
            model_sha256: run.model_sha256.clone(),
            adapter_dir: adapter_dir.display().to_string(),
            step: run.step,
            validation_metrics: run.validation_metrics.clone(),
        },
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("exports").join(&run_name));
    crate::decoder::export_causal_lm(&model, &model_dir.join("tokenizer.json"), &out, &opts)
        .map(Some)
        .with_context(|| format!("exporting {} to {}", adapter_dir.display(), out.display()))
}

/// Runs `adept export` for a T5 (text-to-text) run (`run.json` with `"task_kind": "seq2seq"`):
/// loads the run's model and adapter (checking the model checksum) and writes the encoder and
/// cached decoder graphs with [`crate::seq2seq::export_seq2seq`]. Returns `None` when the run is
/// not a seq2seq run.
pub fn run_export_seq2seq(
    args: &ExportArgs,
) -> Result<Option<crate::seq2seq::Seq2SeqExportReport>> {
    let (adapter_dir, run_name) = resolve_adapter_dir(&args.adapter)?;
    if adept_train::run::run_task_kind(&adapter_dir)? != "seq2seq" {
        return Ok(None);
    }
    refuse_int8_options(args, "T5")?;
    let run = adept_train::seq2seq::read_seq2seq_manifest(&adapter_dir)?;
    let model_dir = args
        .model
        .clone()
        .unwrap_or_else(|| PathBuf::from(&run.model_dir));
    let sha = adept_bundle::sha256_file(&model_dir.join("model.safetensors"))?;
    if sha != run.model_sha256 {
        anyhow::bail!(
            "{} is not the model {} was trained on (model.safetensors checksum differs); pass \
             --model with the run's model folder",
            model_dir.display(),
            adapter_dir.display()
        );
    }
    let backbone = adept_backbones::load_seq2seq(&model_dir, &Device::Cpu)?;
    let adapter = adept_adapters::Adapter::load(&adapter_dir, &Device::Cpu)?;
    let opts = crate::seq2seq::Seq2SeqExportOptions {
        fold: fold_choice(args, adapter.method())?,
        dtype: args.dtype,
        opset: args.opset,
        overwrite: args.overwrite,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("exports").join(&run_name));
    crate::seq2seq::export_seq2seq(
        backbone.as_ref(),
        &adapter,
        &model_dir.join("tokenizer.json"),
        &out,
        &opts,
    )
    .map(Some)
    .with_context(|| format!("exporting {} to {}", adapter_dir.display(), out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dtype: WeightDtype, blocks: Option<usize>) -> ExportArgs {
        ExportArgs {
            adapter: PathBuf::from("run"),
            model: None,
            out: None,
            fold_offsets: false,
            no_fold: false,
            dtype,
            int8_blocks: blocks,
            int8_activations: None,
            int8_keep_float: None,
            int8_per_row: None,
            opset: crate::DEFAULT_OPSET,
            no_lean: false,
            no_pack: false,
            overwrite: false,
        }
    }

    #[test]
    fn int8_per_row_default_is_the_feed_forward_of_all_but_the_last_two_layers() {
        let six = crate::emit::int8_per_row_default(6);
        assert_eq!(six.len(), 8);
        assert_eq!(six[0], "layer.0.intermediate.dense");
        assert_eq!(six[1], "layer.0.output.dense");
        assert_eq!(six[7], "layer.3.output.dense");
        assert!(crate::emit::int8_per_row_default(2).is_empty());
        assert!(crate::emit::int8_per_row_default(0).is_empty());
    }

    #[test]
    fn int8_per_row_is_for_per_tensor_bundles_and_is_checked() {
        let mut a = args(WeightDtype::Int8, None);
        assert_eq!(int8_per_row(&a).unwrap(), None);
        a.int8_per_row = Some(vec!["layer.0.intermediate.dense".into()]);
        // Per row (the default form) every product is already per row.
        let err = format!("{:#}", int8_per_row(&a).unwrap_err());
        assert!(err.contains("--int8-activations per-tensor"), "{err}");
        a.int8_activations = Some(Int8Activations::PerTensor);
        assert_eq!(
            int8_per_row(&a).unwrap(),
            Some(vec!["layer.0.intermediate.dense".to_string()])
        );
        a.int8_per_row = Some(vec!["none".into()]);
        assert_eq!(int8_per_row(&a).unwrap(), Some(Vec::new()));
        a.int8_per_row = Some(vec!["none".into(), "x".into()]);
        assert!(format!("{:#}", int8_per_row(&a).unwrap_err()).contains("do not combine"));
        a.int8_per_row = Some(vec!["".into()]);
        assert!(format!("{:#}", int8_per_row(&a).unwrap_err()).contains("not an empty string"));
        let mut f = args(WeightDtype::F32, None);
        f.int8_per_row = Some(vec!["x".into()]);
        assert!(format!("{:#}", int8_per_row(&f).unwrap_err()).contains("needs --dtype int8"));
    }

    #[test]
    fn int8_keep_float_defaults_for_int8_and_is_checked() {
        let mut a = args(WeightDtype::Int8, None);
        assert_eq!(int8_keep_float(&a).unwrap(), vec!["layer.0.output.dense"]);
        // In blocks there is no default.
        assert!(int8_keep_float(&args(WeightDtype::Int8, Some(32)))
            .unwrap()
            .is_empty());
        a.int8_keep_float = Some(vec!["none".into()]);
        assert!(int8_keep_float(&a).unwrap().is_empty());
        a.int8_keep_float = Some(vec!["layer.4.attention.self".into(), "intermediate".into()]);
        assert_eq!(int8_keep_float(&a).unwrap().len(), 2);
        a.int8_keep_float = Some(vec!["none".into(), "x".into()]);
        assert!(int8_keep_float(&a)
            .unwrap_err()
            .to_string()
            .contains("do not combine"));
        a.int8_keep_float = Some(vec![" ".into()]);
        assert!(int8_keep_float(&a)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let mut f = args(WeightDtype::F32, None);
        assert!(int8_keep_float(&f).unwrap().is_empty());
        f.int8_keep_float = Some(vec!["x".into()]);
        assert!(int8_keep_float(&f)
            .unwrap_err()
            .to_string()
            .contains("needs --dtype int8"));
    }

    #[test]
    fn int8_activations_are_checked() {
        assert_eq!(
            int8_activations(&args(WeightDtype::Int8, None)).unwrap(),
            Int8Activations::PerRow
        );
        assert_eq!(
            int8_activations(&args(WeightDtype::Int8, Some(64))).unwrap(),
            Int8Activations::Blocks(64)
        );
        let mut a = args(WeightDtype::Int8, None);
        a.int8_activations = Some(Int8Activations::PerTensor);
        assert_eq!(int8_activations(&a).unwrap(), Int8Activations::PerTensor);
        // Per tensor is the fast choice: no product kept float unless named.
        assert!(int8_keep_float(&a).unwrap().is_empty());
        a.int8_keep_float = Some(vec!["layer.0.output.dense".into()]);
        assert_eq!(int8_keep_float(&a).unwrap().len(), 1);
        a.int8_activations = Some(Int8Activations::Blocks(12));
        let e = int8_activations(&a).unwrap_err();
        assert!(e.to_string().contains("power of two of at least 16"), "{e}");
        let mut f = args(WeightDtype::F32, None);
        f.int8_activations = Some(Int8Activations::PerTensor);
        let e = int8_activations(&f).unwrap_err();
        assert!(e.to_string().contains("needs --dtype int8"), "{e}");
        // Decoder and T5 exports have no int8 products: the option is refused by name.
        let e = refuse_int8_options(&f, "causal-LM")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--int8-activations") && e.contains("causal-LM"),
            "{e}"
        );
        assert!(refuse_int8_options(&args(WeightDtype::F32, None), "T5").is_ok());
    }

    #[test]
    fn int8_blocks_are_checked() {
        assert_eq!(int8_blocks(&args(WeightDtype::Int8, None)).unwrap(), None);
        assert_eq!(
            int8_blocks(&args(WeightDtype::Int8, Some(128))).unwrap(),
            Some(128)
        );
        let e = int8_blocks(&args(WeightDtype::F32, Some(128))).unwrap_err();
        assert!(e.to_string().contains("needs --dtype int8"), "{e}");
        for bad in [8, 48, 100] {
            let e = int8_blocks(&args(WeightDtype::Int8, Some(bad))).unwrap_err();
            assert!(e.to_string().contains("power of two of at least 16"), "{e}");
        }
    }
}
