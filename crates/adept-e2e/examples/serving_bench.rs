//! Serving latency of the adapter methods side by side (ONNX Runtime, CPU), on all-MiniLM-L6-v2
//! with SST-2 dev sentences, plus the same prompt classifier exported the usual way
//! (`torch.onnx.export`, tests/reference/torch_onnx_export.py) when Python torch is available.
//!
//! ```sh
//! cargo run --release -p adept-e2e --example serving_bench -- [--out DIR] [--threads N] \
//!     [--iters1 N] [--iters32 N] [--prompt L] [--no-torch]
//! ```
//!
//! Writes `<out>/results.json` and prints a table. The adapters are random (latency depends
//! on shapes only); the torch-exported model is checked against adept's `frozen-prompt{l}`
//! bundle (same prompt, same head) to 1e-4 before it is timed.

use adept_adapters::{default_budget, solve_rank, MethodKind};
use adept_bundle::{BundleManifest, FoldMode, WeightDtype, MODEL_FILE, TOKENIZER_FILE};
use adept_export::testing;
use adept_export::{export_bench_variants, TaskInfo};
use adept_runtime::{bench_interleaved, BenchStats, Bundle, RuntimeOptions, SessionConfig};
use adept_train::{Classifier, Pooling};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Opts {
    out: PathBuf,
    threads: usize,
    iters1: usize,
    iters32: usize,
    prompt: usize,
    torch: bool,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        out: PathBuf::from("target/serving-bench"),
        threads: 2,
        iters1: 100,
        iters32: 10,
        prompt: 60,
        torch: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--out" => o.out = PathBuf::from(val()?),
            "--threads" => o.threads = val()?.parse()?,
            "--iters1" => o.iters1 = val()?.parse()?,
            "--iters32" => o.iters32 = val()?.parse()?,
            "--prompt" => o.prompt = val()?.parse()?,
            "--no-torch" => o.torch = false,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn sst2_sentences() -> Result<Vec<(String, Option<String>)>> {
    let data = std::env::var("ADEPT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/glue")
        });
    let path = data.join("SST-2/dev.tsv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(|s| (s.to_owned(), None))
        .collect())
}

/// Wraps the torch-exported ONNX file into a bundle (manifest of the prompt variant).
fn torch_bundle(
    o: &Opts,
    model: &Classifier,
    model_dir: &Path,
    template: &Path,
) -> Result<Option<PathBuf>> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference/torch_onnx_export.py");
    let params = o.out.join("torch-params.safetensors");
    let prompt = model
        .adapter
        .prompt()
        .context("the model has no prompt")?
        .clone();
    let mut t = model.head.tensors();
    t.insert("prompt_embeddings".into(), prompt);
    candle_core::safetensors::save(&t, &params)?;
    let dir = o.out.join(format!("torch-onnx-prompt{}", o.prompt));
    std::fs::create_dir_all(&dir)?;
    let out = Command::new(std::env::var("ADEPT_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(&script)
        .args([
            "--model",
            &model_dir.display().to_string(),
            "--params",
            &params.display().to_string(),
        ])
        .args([
            "--out",
            &dir.join(MODEL_FILE).display().to_string(),
            "--opset",
            "17",
        ])
        .output()?;
    if !out.status.success() {
        eprintln!(
            "torch.onnx.export route skipped: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return Ok(None);
    }
    println!(
        "torch.onnx.export: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    std::fs::copy(template.join(TOKENIZER_FILE), dir.join(TOKENIZER_FILE))?;
    let mut m = BundleManifest::read(template)?;
    m.record_files(&dir)?;
    m.write(&dir)?;
    Ok(Some(dir))
}

fn main() -> Result<()> {
    let o = parse()?;
    std::fs::create_dir_all(&o.out)?;
    let root = adept_cache::cache_root(None)?;
    let model_dir = adept_cache::default_model_dir(&root);
    let backbone = adept_backbones::load_encoder(&model_dir, &candle_core::Device::Cpu)?;
    let tok = model_dir.join("tokenizer.json");
    let enc = testing::text_encoder(&tok, 128)?;
    let r = solve_rank(MethodKind::Adept, 384, o.prompt, default_budget(384), 128)?;
    let adapter =
        testing::random_adapter(&*backbone, MethodKind::Adept, o.prompt, r, 128, 1, 0.05)?;
    let model = Classifier {
        backbone,
        adapter,
        head: testing::random_head(384, 2, 2)?,
        pooling: Pooling::Mean,
    };
    let info: TaskInfo = testing::task_info("sst2", &["negative", "positive"], &["sentence"]);
    println!(
        "ADePT l = {}, r = {r}; exporting variants to {}",
        o.prompt,
        o.out.display()
    );
    let t = std::time::Instant::now();
    let mut variants: Vec<(String, PathBuf)> = export_bench_variants(
        &model,
        &enc,
        &tok,
        &info,
        &o.out,
        o.prompt,
        WeightDtype::F32,
    )?
    .into_iter()
    .map(|v| (v.name, v.dir))
    .collect();
    // The same ADePT-folded model with the other attention layout, to choose the default.
    for (name, clf, _) in adept_export::bench_classifiers(&model, o.prompt, 128)?
        .into_iter()
        .filter(|(n, _, _)| n == "adept-folded" || n == "frozen")
    {
        let dir = o.out.join(format!("{name}-packed"));
        let opts = adept_export::ExportOptions {
            attention: adept_export::AttentionKind::Packed,
            // The packed `com.microsoft:Attention` layout exists below opset 23 only.
            opset: 17,
            overwrite: true,
            ..Default::default()
        };
        adept_export::export_classifier(&clf, &enc, &tok, &info, &opts, &dir)?;
        variants.push((format!("{name}-packed"), dir));
    }
    println!(
        "exported {} variants in {:.1}s",
        variants.len(),
        t.elapsed().as_secs_f64()
    );

    let ropts = RuntimeOptions {
        session: SessionConfig {
            intra_threads: Some(o.threads),
            // Interleaved sessions: no thread may spin while another session runs.
            intra_op_spinning: Some(false),
            ..Default::default()
        },
        ..Default::default()
    };
    let inputs = sst2_sentences()?;
    if o.torch {
        let prompt_dir = o.out.join(format!("frozen-prompt{}", o.prompt));
        if let Some(dir) = torch_bundle(&o, &model, &model_dir, &prompt_dir)? {
            // Same function: adept's prompt bundle and the torch export must agree.
            let a = Bundle::open_with(&prompt_dir, &ropts)?;
            let b = Bundle::open_with(&dir, &ropts)?;
            let sample = &inputs[..16];
            let pa = a.predict(sample)?;
            let pb = b.predict(sample)?;
            let diff = pa
                .iter()
                .zip(&pb)
                .flat_map(|(x, y)| x.logits.iter().zip(&y.logits).map(|(p, q)| (p - q).abs()))
                .fold(0.0f32, f32::max);
            println!(
                "adept frozen-prompt{} vs torch.onnx.export: max |logit diff| = {diff:e}",
                o.prompt
            );
            if diff > 1e-4 {
                bail!("the torch export does not compute the same function ({diff:e})");
            }
            variants.push((format!("torch-onnx-prompt{}", o.prompt), dir));
        }
    }

    // All bundles open at once, timed interleaved on the same batches (see bench_interleaved).
    let bundles = variants
        .iter()
        .map(|(_, dir)| Bundle::open_with(dir, &ropts))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Bundle> = bundles.iter().collect();
    let mut results: Vec<(String, BenchStats)> = Vec::new();
    for (batch, iters) in [(1usize, o.iters1), (32, o.iters32)] {
        let stats = bench_interleaved(&refs, batch, &inputs, iters)?;
        for ((name, _), s) in variants.iter().zip(stats) {
            println!(
                "{name:<22} batch {batch:>2}: mean {:>8.2} ms  p50 {:>8.2}  p90 {:>8.2}  min {:>8.2}  {:>7.1} ex/s  (padded len {:.0})",
                s.mean_ms, s.p50_ms, s.p90_ms, s.min_ms, s.examples_per_s, s.mean_padded_len
            );
            results.push((name.clone(), s));
        }
    }
    println!("\nratios (mean latency):");
    for batch in [1usize, 32] {
        let get = |n: &str| {
            results
                .iter()
                .find(|(m, s)| m == n && s.batch_size == batch)
                .map(|(_, s)| (s.mean_ms, s.p50_ms))
        };
        let frozen = get("frozen").unwrap();
        let floor = get(&format!("frozen-prompt{}", o.prompt)).unwrap();
        for (name, s) in results.iter().filter(|(_, s)| s.batch_size == batch) {
            println!(
                "  batch {batch:>2} {name:<22} {:>6.3}x frozen  {:>6.3}x prompt floor  (p50: {:>6.3}x, {:>6.3}x)",
                s.mean_ms / frozen.0,
                s.mean_ms / floor.0,
                s.p50_ms / frozen.1,
                s.p50_ms / floor.1
            );
        }
    }
    let json: Vec<_> = results
        .iter()
        .map(|(n, s)| serde_json::json!({"variant": n, "stats": s}))
        .collect();
    let meta = serde_json::json!({
        "model": model_dir.display().to_string(),
        "threads": o.threads,
        "prompt": o.prompt,
        "rank": r,
        "fold_modes": [FoldMode::Folded.to_string(), FoldMode::Unfolded.to_string()],
        "results": json,
    });
    std::fs::write(
        o.out.join("results.json"),
        serde_json::to_vec_pretty(&meta)?,
    )?;
    println!("wrote {}", o.out.join("results.json").display());
    Ok(())
}
