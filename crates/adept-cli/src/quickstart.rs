//! `adept quickstart`: the README's main command. Fetches the default model and ONNX Runtime,
//! trains ADePT on SST-2 for a few minutes, exports the folded bundle, scores the dev set with
//! candle and with ONNX Runtime, and prints one report (also written as `<run>/quickstart.json`).

use crate::args::{Cli, QuickstartArgs};
use anyhow::{Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

pub fn run(a: &QuickstartArgs) -> Result<()> {
    // The data first: a clone outside the repository's parent folder learns at once how to
    // point at GLUE, before minutes of downloads.
    let data = crate::commands::data_dir(&crate::args::DataArgs {
        data: a.data.clone(),
        ..default_data()
    })?;
    let root = crate::commands::cache_root(&a.cache)?;
    eprintln!(
        "[1/5] fetching the default model and ONNX Runtime into {}",
        root.display()
    );
    let model_dir = adept_cache::fetch_default_model(&root)?;
    let ort_lib = adept_cache::fetch_onnxruntime(&root)?;
    adept_cache::fetch_openblas(&root)?;
    crate::commands::use_blas(a.cache.cache.as_deref())?;

    eprintln!(
        "[2/5] training ADePT on SST-2 ({} steps) into {}",
        a.steps,
        a.out.display()
    );
    let t = Instant::now();
    let mut train = vec![
        "adept".to_string(),
        "train".into(),
        "--task".into(),
        "sst2".into(),
        "--method".into(),
        "adept".into(),
        "--steps".into(),
        a.steps.to_string(),
        "--eval-every".into(),
        "50".into(),
        "--checkpoint-every".into(),
        "50".into(),
        "--model".into(),
        model_dir.display().to_string(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        a.out.display().to_string(),
    ];
    train.push(if a.resume { "--resume" } else { "--overwrite" }.into());
    crate::commands::dispatch(Cli::try_parse_from(&train)?)?;
    let train_s = t.elapsed().as_secs_f64();

    eprintln!("[3/5] exporting the folded bundle");
    let name = a
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "quickstart".into());
    let bundle_dir = PathBuf::from("exports").join(&name);
    let export_args = adept_export::ExportArgs {
        adapter: a.out.clone(),
        model: Some(model_dir.clone()),
        out: Some(bundle_dir.clone()),
        fold_offsets: true,
        no_fold: false,
        dtype: adept_bundle::WeightDtype::F32,
        int8_blocks: None,
        int8_activations: None,
        int8_keep_float: None,
        int8_per_row: None,
        opset: adept_export::DEFAULT_OPSET,
        no_lean: false,
        no_pack: false,
        overwrite: true,
    };
    let export = adept_export::run_export(&export_args)?;

    eprintln!("[4/5] scoring SST-2 dev with candle and with ONNX Runtime");
    let dev = candle_core::Device::Cpu;
    let best = crate::commands::adapter_dir(&a.out)?;
    let (model, enc, manifest) = adept_train::load_trained(&best, Some(&model_dir), &dev)?;
    let task = adept_train::TaskData::builtin(
        adept_data::TaskKind::parse("sst2")?,
        &data,
        adept_train::SplitChoice::Official,
        manifest.train_config.seed,
    )?;
    let set = adept_train::trainer::encode_set(&enc, &task, &task.validation, "validation")?;
    let (candle_preds, candle_logits) =
        adept_train::predict(&model, &set.items, 64, enc.pad_id, false, &dev)?;
    let candle_scores = task.score(&candle_preds, &task.validation)?;

    let opts = adept_runtime::RuntimeOptions {
        ort_library: Some(ort_lib.clone()),
        cache: Some(root.clone()),
        ..Default::default()
    };
    let bundle = adept_runtime::Bundle::open_with(&bundle_dir, &opts)?;
    let texts: Vec<(String, Option<String>)> = task
        .validation
        .iter()
        .map(|e| (e.text_a().to_string(), e.text_b()))
        .collect();
    let ort_out = bundle.predict(&texts)?;
    let ort_classes: Vec<usize> = ort_out.iter().map(|p| p.label_id.unwrap_or(0)).collect();
    let ort_scores = task.score(
        &adept_train::Predictions::Classes(ort_classes.clone()),
        &task.validation,
    )?;
    let mut max_diff = 0f32;
    for (c, o) in candle_logits.iter().zip(&ort_out) {
        for (x, y) in c.iter().zip(&o.logits) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    let adept_train::Predictions::Classes(cc) = &candle_preds else {
        unreachable!("classification")
    };
    let label_agreement =
        cc.iter().zip(&ort_classes).filter(|(a, b)| a == b).count() as f64 / cc.len() as f64;

    eprintln!("[5/5] latency (ONNX Runtime, CPU)");
    let b1 = adept_runtime::bench_session_with(&bundle_dir, &opts, 1, &texts, 50)?;
    let b32 = adept_runtime::bench_session_with(&bundle_dir, &opts, 32, &texts, 8)?;

    let report = serde_json::json!({
        "run": a.out.display().to_string(),
        "bundle": bundle_dir.display().to_string(),
        "train_seconds": train_s,
        "dev_accuracy_candle": candle_scores.primary,
        "dev_accuracy_ort": ort_scores.primary,
        "max_abs_logit_diff": max_diff,
        "label_agreement": label_agreement,
        "latency_ms_batch1_p50": b1.p50_ms,
        "throughput_batch32_per_s": b32.examples_per_s,
        "export_seconds": export.seconds,
        "bundle_model_bytes": export.model_bytes,
    });
    let path = a.out.join("quickstart.json");
    adept_bundle::write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("quickstart report ({})", path.display());
    println!(
        "  SST-2 dev accuracy   candle {:.4}   ONNX Runtime {:.4}",
        candle_scores.primary, ort_scores.primary
    );
    println!(
        "  max |logit diff|     {max_diff:.2e}   (labels agree on {:.2}% of {} sentences)",
        100.0 * label_agreement,
        cc.len()
    );
    println!(
        "  latency              batch 1: {:.1} ms (p50)   batch 32: {:.0} sentences/s",
        b1.p50_ms, b32.examples_per_s
    );
    println!(
        "  bundle               {} ({:.1} MB, exported in {:.1} s)",
        bundle_dir.display(),
        export.model_bytes as f64 / 1e6,
        export.seconds
    );
    Ok(())
}

fn default_data() -> crate::args::DataArgs {
    crate::args::DataArgs {
        task: Some("sst2".into()),
        data: None,
        splits: adept_train::SplitChoice::Official,
        train_file: None,
        validation_file: None,
        text_fields: vec!["text".into()],
        label_field: "label".into(),
        regression: false,
        train_limit: None,
        eval_limit: None,
    }
}
