//! `adept bench`: training-step time (forward + backward + AdamW step) on one batch size of
//! real SST-2 sentences, for each method, measured side by side in one process. Optionally the
//! PyTorch reference step (tests/reference/pytorch_train_step.py) runs right after on the same
//! sentences, and the ratios are printed.

use crate::args::BenchArgs;
use crate::commands::{device, load_task, model_dir};

use adept_train::batch::Batch;
use adept_train::optim::linear_schedule;
use adept_train::trainer::{build_optimizer, train_step, Targets};
use adept_train::{TextEncoder, TrainConfig};
use anyhow::{bail, Context, Result};
use std::time::Instant;

#[derive(serde::Serialize)]
struct Row {
    name: String,
    step_s_mean: f64,
    step_s_median: f64,
    steps: usize,
}

/// One way of running the training step.
struct Variant {
    name: String,
    method: adept_adapters::MethodKind,
    /// Encoder layers as one fused op each (else composite candle ops).
    fused: bool,
    /// Products on the loaded BLAS (else the gemm crate).
    blas: bool,
    /// candle's plain matmul backward in the composite layers.
    plain: bool,
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite times"));
    let n = v.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (mean, median)
}

pub fn run(a: &BenchArgs) -> Result<()> {
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let dev = device(&a.model.device)?;
    let mdir = model_dir(&a.model)?;
    if crate::lm_commands::is_causal_lm(&mdir)? {
        return run_causal_lm(a, &mdir, &dev);
    }
    let batch_size = a.batch_size.unwrap_or(32);
    let mut data = a.data.clone();
    data.train_limit = None;
    data.eval_limit = Some(1);
    let mut task = load_task(&data, 42)?;
    let need = batch_size * (a.warmup_iters + a.iters);
    if task.train.len() < need {
        bail!(
            "the task has {} training examples; the bench needs {need}",
            task.train.len()
        );
    }
    // Consecutive rows from the start of the file, like the PyTorch reference.
    task.train.truncate(need);
    let max_len = 128;
    let enc = TextEncoder::from_file(
        &mdir.join("tokenizer.json"),
        max_len,
        adept_train::OverLength::Truncate,
    )?;
    let set = adept_train::trainer::encode_set(&enc, &task, &task.train, "train")?;
    let batches: Vec<(Batch, Targets)> = set
        .items
        .chunks(batch_size)
        .zip(set.classes.chunks(batch_size))
        .map(|(items, classes)| {
            let refs: Vec<_> = items.iter().collect();
            Ok((
                Batch::collate(&refs, enc.pad_id, &dev)?,
                Targets::Classes(classes.to_vec()),
            ))
        })
        .collect::<Result<_>>()?;
    let mean_len: f64 = batches
        .iter()
        .map(|(b, _)| b.ids.dims()[1] as f64)
        .sum::<f64>()
        / batches.len() as f64;

    let mut rows = Vec::new();
    let mut variants: Vec<Variant> = Vec::new();
    for m in &a.methods {
        let v = |label: &str, fused: bool, blas: bool, plain: bool| Variant {
            name: format!("candle {m}{label}"),
            method: *m,
            fused,
            blas,
            plain,
        };
        variants.push(v("", true, true, false));
        if a.ablation && adept_nn::blas::blas_loaded() {
            variants.push(v(", gemm crate", true, false, false));
        }
        if a.ablation {
            variants.push(v(", composite layers", false, false, false));
        }
        if a.ablation || a.plain_matmul {
            variants.push(v(", composite + plain matmul", false, false, true));
        }
    }
    eprintln!("matrix products: {}", adept_nn::blas::backend());
    for var in variants {
        let name = var.name;
        let mut cfg = TrainConfig::defaults(var.method);
        cfg.batch_size = batch_size;
        cfg.adapter.max_length = max_len;
        let mut backbone = adept_backbones::load_encoder(&mdir, &dev)?;
        backbone.set_fused_layers(var.fused)?;
        adept_train::resolve_budget(&mut cfg, backbone.hidden_size())?;
        let model = adept_train::build_classifier(backbone, &enc, &cfg, task.num_outputs())?;
        let mut opt = build_optimizer(&model, &cfg)?;
        adept_nn::use_plain_matmul_backward(var.plain);
        adept_nn::blas::bypass_blas(!var.blas);
        let mut times = Vec::new();
        for (step, (batch, targets)) in batches.iter().enumerate() {
            let t = Instant::now();
            let lr = linear_schedule(step, 10, 1000);
            train_step(&model, &mut opt, batch, targets, cfg.seed, step, lr)?;
            if step >= a.warmup_iters {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        adept_nn::use_plain_matmul_backward(false);
        adept_nn::blas::bypass_blas(false);
        let (mean, median) = stats(times);
        eprintln!("{name}: {median:.3} s/step (median of {})", a.iters);
        rows.push(Row {
            name: format!("{name} (l={}, r={})", cfg.prompt_len(), cfg.adapter.rank),
            step_s_mean: mean,
            step_s_median: median,
            steps: a.iters,
        });
    }

    if a.pytorch {
        match pytorch_step(a, &mdir) {
            Ok(r) => rows.push(r),
            Err(e) => eprintln!("PyTorch reference skipped: {e:#}"),
        }
    }

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "training step, batch {} of SST-2 (mean padded length {:.1} tokens + prompt), {} threads, {} timed steps after {} warm-up",
        batch_size, mean_len, threads, a.iters, a.warmup_iters
    );
    println!("{:<55} {:>10} {:>10}", "variant", "median s", "mean s");
    for r in &rows {
        println!(
            "{:<55} {:>10.3} {:>10.3}",
            r.name, r.step_s_median, r.step_s_mean
        );
    }
    if let Some(torch) = rows.iter().find(|r| r.name.starts_with("pytorch")) {
        for r in rows.iter().filter(|r| !r.name.starts_with("pytorch")) {
            println!(
                "ratio {} / pytorch: {:.2}",
                r.name,
                r.step_s_median / torch.step_s_median
            );
        }
    }
    if let Some(p) = &a.json {
        let doc = serde_json::json!({"batch_size": batch_size, "threads": threads, "mean_padded_len": mean_len, "rows": rows});
        adept_bundle::write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

fn pytorch_step(a: &BenchArgs, mdir: &std::path::Path) -> Result<Row> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference/pytorch_train_step.py");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let python = std::env::var("ADEPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let data_dir = crate::commands::data_dir(&a.data)?;
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--model", &mdir.display().to_string()])
        .args([
            "--data",
            &data_dir.join("SST-2/train.tsv").display().to_string(),
        ])
        .args([
            "--steps",
            &a.iters.to_string(),
            "--warmup",
            &a.warmup_iters.to_string(),
        ])
        .args([
            "--batch",
            &a.batch_size.unwrap_or(32).to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args(["--device", &a.model.device])
        .output()
        .with_context(|| format!("cannot run {python}"))?;
    let v = result_line(&script, &out)?;
    Ok(Row {
        name: format!(
            "pytorch (tests/reference/pytorch_train_step.py, {})",
            a.model.device
        ),
        step_s_mean: v["step_s_mean"].as_f64().context("step_s_mean")?,
        step_s_median: v["step_s_median"].as_f64().context("step_s_median")?,
        steps: a.iters,
    })
}

/// `adept bench --serving`: the serving variants side by side in ONNX Runtime (batch 1 latency,
/// batch 32 throughput, same SST-2 dev sentences, interleaved so load drifts hit all alike),
/// plus candle's forward of the ADePT classifier on the same batch-32 inputs.
pub fn serving(a: &BenchArgs) -> Result<()> {
    let dev = device(&a.model.device)?;
    let mdir = model_dir(&a.model)?;
    let tok = mdir.join("tokenizer.json");
    let (model, enc) = match &a.adapter {
        Some(p) => {
            let dir = crate::commands::adapter_dir(p)?;
            let (m, e, _) = adept_train::load_trained(&dir, Some(&mdir), &dev)?;
            (m, e)
        }
        None => {
            let mut cfg = TrainConfig::defaults(adept_adapters::MethodKind::Adept);
            let backbone = adept_backbones::load_encoder(&mdir, &dev)?;
            adept_train::resolve_budget(&mut cfg, backbone.hidden_size())?;
            let enc =
                TextEncoder::from_file(&tok, cfg.max_len(), adept_train::OverLength::Truncate)?;
            let m = adept_train::build_classifier(backbone, &enc, &cfg, 2)?;
            (m, enc)
        }
    };
    let l = model.adapter.prompt_len().max(1);
    let mut data = a.data.clone();
    data.train_limit = Some(1);
    let task = load_task(&data, 42)?;
    let texts: Vec<(String, Option<String>)> = task
        .validation
        .iter()
        .map(|e| (e.text_a().to_string(), e.text_b()))
        .collect();
    let info = adept_export::TaskInfo {
        task: task.name.clone(),
        label_names: task.label_names.clone(),
        regression: task.regression,
        text_fields: task.text_fields.clone(),
        provenance: Default::default(),
    };
    let tmp = tempfile::tempdir()?;
    let t = Instant::now();
    let variants = adept_export::export_bench_variants(
        &model,
        &enc,
        &tok,
        &info,
        tmp.path(),
        l,
        adept_bundle::WeightDtype::F32,
    )?;
    eprintln!(
        "exported {} variants in {:.1} s",
        variants.len(),
        t.elapsed().as_secs_f64()
    );
    let opts = adept_runtime::RuntimeOptions {
        session: adept_runtime::SessionConfig {
            intra_threads: a.threads,
            // Several sessions run interleaved: idle threads of one spinning while the next
            // runs took the cores from it (batch-1 p50 of a folded bundle 36 ms spinning, 13 ms
            // not, the latter what a single session gives in `adept infer` and Python).
            intra_op_spinning: Some(false),
            ..Default::default()
        },
        cache: a.model.cache.cache.clone(),
        ..Default::default()
    };
    let bundles: Vec<adept_runtime::Bundle> = variants
        .iter()
        .map(|v| adept_runtime::Bundle::open_with(&v.dir, &opts))
        .collect::<Result<_>>()?;
    let refs: Vec<&adept_runtime::Bundle> = bundles.iter().collect();
    let iters1 = (a.iters * 10).max(20);
    let b1 = adept_runtime::bench_interleaved(&refs, 1, &texts, iters1)?;
    let b32 = adept_runtime::bench_interleaved(&refs, 32, &texts, a.iters.max(3))?;

    // candle forward, batch 32, same sentences.
    let set: Vec<_> = texts
        .iter()
        .take(32 * a.iters.max(3))
        .map(|(x, y)| enc.encode(x, y.as_deref()))
        .collect::<Result<_>>()?;
    let t = Instant::now();
    adept_train::predict(&model, &set, 32, enc.pad_id, false, &dev)?;
    let candle_per_s = set.len() as f64 / t.elapsed().as_secs_f64();

    println!(
        "serving, SST-2 dev sentences, l = {l}, ONNX Runtime on CPU ({} intra-op threads)",
        a.threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "default".into())
    );
    println!(
        "{:<22} {:>14} {:>18}",
        "variant", "batch 1 p50 ms", "batch 32 sent/s"
    );
    for (v, (s1, s32)) in variants.iter().zip(b1.iter().zip(&b32)) {
        println!(
            "{:<22} {:>14.2} {:>18.1}",
            v.name, s1.p50_ms, s32.examples_per_s
        );
    }
    println!(
        "{:<22} {:>14} {:>18.1}",
        "candle forward", "-", candle_per_s
    );
    let find = |n: &str| variants.iter().position(|v| v.name == n);
    let floor = find(&format!("frozen-prompt{l}"));
    if let (Some(f), Some(fl), Some(un), Some(pt)) = (
        find("adept-folded"),
        floor,
        find("adept-unfolded"),
        find("pt100"),
    ) {
        println!("ratios (throughput, higher is better):");
        println!(
            "  ADePT folded / frozen+{l}-prompt floor: batch 1 {:.3}, batch 32 {:.3}",
            b1[fl].p50_ms / b1[f].p50_ms,
            b32[f].examples_per_s / b32[fl].examples_per_s
        );
        println!(
            "  ADePT folded / PT-100:                 batch 1 {:.2}, batch 32 {:.2}",
            b1[pt].p50_ms / b1[f].p50_ms,
            b32[f].examples_per_s / b32[pt].examples_per_s
        );
        println!(
            "  ADePT folded / unfolded:               batch 1 {:.3}, batch 32 {:.3}",
            b1[un].p50_ms / b1[f].p50_ms,
            b32[f].examples_per_s / b32[un].examples_per_s
        );
        println!(
            "  ort ADePT folded / candle forward:     batch 32 {:.2}",
            b32[f].examples_per_s / candle_per_s
        );
    }
    if let Some(p) = &a.json {
        let doc =
            serde_json::json!({"batch1": b1, "batch32": b32, "candle_forward_per_s": candle_per_s});
        adept_bundle::write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

/// Sets this process's peak resident set (`VmHWM`) back to the current one (Linux: writes `5` to
/// `/proc/self/clear_refs`), so each method's peak is its own; false where unsupported.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[derive(serde::Serialize)]
struct LmRow {
    name: String,
    method: String,
    step_s_mean: f64,
    step_s_median: f64,
    peak_rss_mb: Option<f64>,
    steps: usize,
}

/// `adept bench` on a causal LM: for each method, the training step (forward with the adapter's
/// dropout, loss on the completion tokens, backward, AdamW; the `GradStore` dropped right after
/// the step) on batches of SST-2 verbalised (`"Review: {sentence}\nSentiment:"` → `" positive"` /
/// `" negative"`, consecutive rows from the start of train.tsv, no BOS, max 128 tokens), the
/// decoder's fused layers, and the paper's decoder settings (ADePT l=7 r=1, PT l=10, DePT l=7
/// r=3). With `--pytorch`, `tests/reference/pytorch_lm_step.py` times the same step. One JSON
/// line per variant on stdout, then the table and ratios (stderr).
fn run_causal_lm(a: &BenchArgs, mdir: &std::path::Path, dev: &candle_core::Device) -> Result<()> {
    use adept_train::lm_train::{build_causal_lm, build_lm_optimizer, lm_defaults, SpecialTokens};
    use adept_train::{LmBatch, LmFeatures};
    let batch_size = a.batch_size.unwrap_or(8);
    let max_len = 128;
    let special = SpecialTokens::for_prompts(mdir)?;
    let enc = crate::lm_commands::lm_encoder(mdir, max_len, &special)?.with_append_eos(false);
    let mut data = a.data.clone();
    data.task = Some("sst2".into());
    data.train_file = None;
    data.train_limit = None;
    data.eval_limit = Some(1);
    let mut task = load_task(&data, 42)?;
    let need = batch_size * (a.warmup_iters + a.iters);
    if task.train.len() < need {
        bail!(
            "SST-2 has {} training examples; the bench needs {need}",
            task.train.len()
        );
    }
    task.train.truncate(need);
    let verb = adept_data::causal::Verbalizer::new(
        "Review: {sentence}\nSentiment:",
        vec![" negative".into(), " positive".into()],
    )?;
    let pairs = verb.verbalize_all(&task.train)?;
    let feats: Vec<LmFeatures> = pairs
        .iter()
        .enumerate()
        .map(|(i, e)| enc.encode(e, &format!("SST-2 train example {i}")))
        .collect::<Result<_>>()?;
    let batches: Vec<LmBatch> = feats
        .chunks(batch_size)
        .map(|c| LmBatch::collate(&c.iter().collect::<Vec<_>>(), enc.pad_id, dev))
        .collect::<Result<_>>()?;
    let mean_len =
        batches.iter().map(|b| b.ids.dims()[1] as f64).sum::<f64>() / batches.len() as f64;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut rows = Vec::new();
    eprintln!("matrix products: {}", adept_nn::blas::backend());
    for &m in &a.methods {
        let mut cfg = lm_defaults(m);
        cfg.batch_size = batch_size;
        cfg.adapter.max_length = max_len;
        let backbone = adept_backbones::load_causal_lm(mdir, dev)?;
        adept_train::resolve_budget(&mut cfg, backbone.hidden_size())?;
        let model = build_causal_lm(backbone, &cfg, None)?;
        let mut opt = build_lm_optimizer(&model.adapter, &cfg)?;
        reset_peak_rss();
        let mut times = Vec::new();
        for (step, b) in batches.iter().enumerate() {
            let t = Instant::now();
            let mut rng = adept_train::trainer::dropout_rng(cfg.seed, step);
            let loss = model.loss(&b.ids, &b.mask, &b.target_mask, Some(&mut rng))?;
            let grads = loss.backward()?;
            opt.step(&grads, linear_schedule(step, 10, 1000))?;
            drop(grads);
            drop(loss);
            if step >= a.warmup_iters {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        let (mean, median) = stats(times);
        let row = LmRow {
            name: format!(
                "candle {m} (l={}, r={})",
                cfg.prompt_len(),
                cfg.adapter.rank
            ),
            method: m.to_string(),
            step_s_mean: mean,
            step_s_median: median,
            peak_rss_mb: adept_train::lm_train::peak_rss_mb(),
            steps: a.iters,
        };
        println!("{}", serde_json::to_string(&row)?);
        rows.push(row);
        if a.pytorch {
            match pytorch_lm_step(a, mdir, &cfg, batch_size, threads) {
                Ok(r) => {
                    println!("{}", serde_json::to_string(&r)?);
                    rows.push(r)
                }
                Err(e) => eprintln!("PyTorch reference for {m} skipped: {e:#}"),
            }
        }
    }
    eprintln!(
        "causal-LM training step, batch {batch_size} of SST-2 verbalised (mean padded length {mean_len:.1} tokens + prompt), {threads} threads, {} timed steps after {} warm-up",
        a.iters, a.warmup_iters
    );
    eprintln!(
        "{:<45} {:>10} {:>10} {:>12}",
        "variant", "median s", "mean s", "peak RSS MB"
    );
    for r in &rows {
        eprintln!(
            "{:<45} {:>10.3} {:>10.3} {:>12.0}",
            r.name,
            r.step_s_median,
            r.step_s_mean,
            r.peak_rss_mb.unwrap_or(f64::NAN)
        );
    }
    for r in rows.iter().filter(|r| r.name.starts_with("candle")) {
        if let Some(t) = rows
            .iter()
            .find(|t| t.name.starts_with("pytorch") && t.method == r.method)
        {
            let ratio = r.step_s_median / t.step_s_median;
            eprintln!("ratio {} / pytorch: {ratio:.2}", r.name);
            println!(
                "{}",
                serde_json::json!({"method": r.method, "candle_over_pytorch": ratio})
            );
        }
    }
    if let Some(p) = &a.json {
        let doc = serde_json::json!({"task_kind": "causal-lm", "batch_size": batch_size,
            "threads": threads, "mean_padded_len": mean_len, "rows": rows});
        adept_bundle::write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

/// `tests/reference/pytorch_lm_step.py` for one method, with the same batch, lengths, prompt
/// length and rank.
fn pytorch_lm_step(
    a: &BenchArgs,
    mdir: &std::path::Path,
    cfg: &TrainConfig,
    batch_size: usize,
    threads: usize,
) -> Result<LmRow> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference/pytorch_lm_step.py");
    let python = std::env::var("ADEPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let data_dir = crate::commands::data_dir(&a.data)?;
    let method = cfg.method().to_string();
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args(["--model", &mdir.display().to_string()])
        .args([
            "--data",
            &data_dir.join("SST-2/train.tsv").display().to_string(),
        ])
        .args(["--method", &method])
        .args([
            "--steps",
            &a.iters.to_string(),
            "--warmup",
            &a.warmup_iters.to_string(),
        ])
        .args([
            "--batch",
            &batch_size.to_string(),
            "--max-len",
            &cfg.max_len().to_string(),
        ])
        .args(["--prompt-len", &cfg.prompt_len().to_string()])
        .args(["--rank", &cfg.adapter.rank.max(1).to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .with_context(|| format!("cannot run {python} (set ADEPT_PYTHON)"))?;
    let v = result_line(&script, &out)?;
    Ok(LmRow {
        name: format!("pytorch {method} (pytorch_lm_step.py)"),
        method,
        step_s_mean: v["step_s_mean"].as_f64().context("step_s_mean")?,
        step_s_median: v["step_s_median"].as_f64().context("step_s_median")?,
        peak_rss_mb: v["peak_rss_mb"].as_f64(),
        steps: a.iters,
    })
}

/// The result of a reference script: its last stdout line holding `"impl"` (both PyTorch step
/// scripts print one JSON line `{"impl": "pytorch", ...}`), or the script's last stderr line as
/// the error when it failed.
fn result_line(script: &std::path::Path, out: &std::process::Output) -> Result<serde_json::Value> {
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("\"impl\""))
        .with_context(|| format!("no result line from {}", script.display()))?;
    Ok(serde_json::from_str(line)?)
}
