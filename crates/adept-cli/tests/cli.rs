//! End-to-end tests of the `adept` binary on the real all-MiniLM-L6-v2 and SST-2.
//!
//! They need the model in the adept cache (`adept fetch`) and GLUE in ../shared/data/glue (or
//! `ADEPT_DATA`). Without them each test prints why it is skipped; with `ADEPT_REQUIRE_MODEL=1`
//! (CI) a missing model or dataset is a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (model folder, GLUE folder) or None: a skip, or a failure under `ADEPT_REQUIRE_MODEL=1`.
fn assets(test: &str) -> Option<(PathBuf, PathBuf)> {
    let model = adept_testkit::model_dir(test)?;
    adept_testkit::glue_task(test, "SST-2", "train.tsv")?;
    Some((model, adept_testkit::glue_dir(test)?))
}

fn adept() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adept"));
    c.env("ADEPT_LOG", "warn");
    c
}

/// A small, fast training configuration on real SST-2 sentences.
fn small_run(model: &Path, data: &Path, out: &Path, steps: usize) -> Command {
    small_run_bs(model, data, out, steps, 8)
}

fn small_run_bs(model: &Path, data: &Path, out: &Path, steps: usize, batch: usize) -> Command {
    let mut c = adept();
    c.args([
        "train",
        "--task",
        "sst2",
        "--method",
        "adept",
        "--prompt-len",
        "8",
        "--rank",
        "4",
    ]);
    c.args([
        "--batch-size",
        &batch.to_string(),
        "--max-len",
        "48",
        "--train-limit",
        "400",
        "--eval-limit",
        "64",
    ]);
    c.args([
        "--steps",
        &steps.to_string(),
        "--warmup",
        "4",
        "--eval-every",
        "10",
        "--checkpoint-every",
        "3",
    ]);
    c.args(["--lr-offsets", "1e-3"]);
    c.arg("--model")
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().expect("adept runs");
    assert!(
        out.status.success(),
        "adept failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn train_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

fn checkpoint_tensors(run: &Path) -> HashMap<String, Vec<f32>> {
    let t = candle_core::safetensors::load(
        run.join("checkpoint.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    t.into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// Numeric flags are checked by the argument parser, before a model or data file is read: a
/// clear message naming the flag, not a tensor error from deep inside training.
#[test]
fn numeric_flags_are_checked_before_anything_loads() {
    for (args, flag, why) in [
        (
            &[
                "train",
                "--model",
                "/nonexistent-model",
                "--batch-size",
                "0",
            ][..],
            "--batch-size",
            "at least 1",
        ),
        (
            &["train", "--model", "/nonexistent-model", "--steps", "0"][..],
            "--steps",
            "at least 1",
        ),
        (
            &[
                "train",
                "--model",
                "/nonexistent-model",
                "--eval-every",
                "x",
            ][..],
            "--eval-every",
            "not a whole number",
        ),
        (
            &["train", "--model", "/nonexistent-model", "--lr-prompt=-0.1"][..],
            "--lr-prompt",
            "> 0",
        ),
        (
            &["train", "--model", "/nonexistent-model", "--lr-head", "nan"][..],
            "--lr-head",
            "> 0",
        ),
        (
            &["eval", "--model", "/nonexistent-model", "--batch-size", "0"][..],
            "--batch-size",
            "at least 1",
        ),
        (
            &[
                "infer",
                "--bundle",
                "/nonexistent-model",
                "--text",
                "x",
                "--batch-size",
                "0",
            ][..],
            "--batch-size",
            "at least 1",
        ),
        (&["bench", "--iters", "0"][..], "--iters", "at least 1"),
    ] {
        let out = adept().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains(why), "{args:?}: {err}");
        assert!(
            !err.contains("nonexistent-model"),
            "{args:?} loaded something: {err}"
        );
    }
}

/// `--device cuda` for candle (train, bench, eval of an adapter) on a build without the `cuda`
/// feature is a clear error naming the rebuild route, before any model is read; on a CUDA build
/// it either opens the GPU (then the missing model is the error) or says why CUDA device 0
/// cannot be opened. Never a panic.
#[test]
fn device_cuda_is_a_clear_error_without_cuda() {
    for args in [
        &["train", "--model", "/nonexistent-model", "--device", "cuda"][..],
        &[
            "bench",
            "--model",
            "/nonexistent-model",
            "--device",
            "cuda",
            "--iters",
            "1",
        ][..],
        &["eval", "--adapter", "/nonexistent-run", "--device", "cuda"][..],
        &["train", "--model", "/nonexistent-model", "--device", "tpu"][..],
    ] {
        let out = adept().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        if args.contains(&"tpu") {
            assert!(
                err.contains("unknown device") && err.contains("tpu"),
                "{args:?}: {err}"
            );
        } else if cfg!(feature = "cuda") {
            assert!(
                err.contains("cannot open CUDA device 0") || err.contains("nonexistent"),
                "{args:?}: {err}"
            );
        } else {
            assert!(
                err.contains("no CUDA support") && err.contains("build-cuda.sh"),
                "{args:?}: {err}"
            );
            assert!(
                !err.contains("nonexistent"),
                "{args:?} read the model first: {err}"
            );
        }
    }
}

#[test]
fn short_sst2_run_lowers_the_loss_and_eval_reproduces_the_best_score() {
    let Some((model, data)) =
        assets("short_sst2_run_lowers_the_loss_and_eval_reproduces_the_best_score")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = small_run_bs(&model, &data, &run, 40, 16)
        .args(["--lr-head", "3e-3", "--log-every", "1"])
        .env("ADEPT_PROGRESS_EVERY", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // stderr is a pipe here, as under nohup or CI: plain progress lines instead of a hidden bar,
    // every step (ADEPT_PROGRESS_EVERY=0), and the validation lines.
    for want in [
        "step 1/40 (2%) loss ",
        "step 40/40 (100%) loss ",
        "validation accuracy = ",
    ] {
        assert!(stderr.contains(want), "no `{want}` in stderr:\n{stderr}");
    }
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["report"]["steps"], 40);
    let losses = train_losses(&run);
    assert!(losses.len() >= 4, "{losses:?}");
    let k = losses.len() / 4;
    let first: f64 = losses[..k].iter().sum::<f64>() / k as f64;
    let last: f64 = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    assert!(
        last < first,
        "loss did not go down: first {first:.4}, last {last:.4} ({losses:?})"
    );

    // The saved best adapter, evaluated on its own, gives the score recorded for it.
    let best = summary["report"]["best_metric"].as_f64().unwrap();
    let eval = run_ok(
        adept()
            .arg("eval")
            .arg("--adapter")
            .arg(&run)
            .arg("--data")
            .arg(&data)
            .args(["--eval-limit", "64"]),
    );
    let e: serde_json::Value = serde_json::from_str(eval.lines().last().unwrap()).unwrap();
    assert!(
        (e["primary"].as_f64().unwrap() - best).abs() < 1e-9,
        "eval {e} vs best {best}"
    );
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "head.safetensors",
        "run.json",
    ] {
        assert!(run.join("best").join(f).exists(), "best/{f} missing");
    }
}

#[test]
fn resume_after_a_kill_gives_the_uninterrupted_result() {
    let Some((model, data)) = assets("resume_after_a_kill_gives_the_uninterrupted_result") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let steps = 24;

    let straight = tmp.path().join("straight");
    run_ok(&mut small_run(&model, &data, &straight, steps));

    // Kill the second run (SIGKILL, no chance to clean up) once it has written a checkpoint.
    let killed = tmp.path().join("killed");
    let mut child = small_run(&model, &data, &killed, steps)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = killed.join("checkpoint.safetensors");
    let start = Instant::now();
    while !ckpt.exists() && start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed; make it longer"
    );
    // No temporary file survives as the checkpoint: it loads.
    let (_, state) = adept_train::checkpoint::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    assert!(
        state.step > 0 && state.step < steps,
        "killed at step {}",
        state.step
    );

    // Resuming with other settings is refused.
    let out = small_run(&model, &data, &killed, steps + 1)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("differs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    run_ok(small_run(&model, &data, &killed, steps).arg("--resume"));
    let a = checkpoint_tensors(&straight);
    let b = checkpoint_tensors(&killed);
    assert_eq!(a.keys().len(), b.keys().len());
    for (name, va) in &a {
        assert_eq!(va, &b[name], "tensor {name} differs after resume");
    }
    assert_eq!(
        train_losses(&straight),
        train_losses(&killed),
        "logged losses differ after resume"
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // A model folder without weights.
    let empty = tmp.path().join("empty-model");
    std::fs::create_dir_all(&empty).unwrap();
    let out = adept()
        .args(["train", "--train-file"])
        .arg(tmp.path().join("none.csv"))
        .arg("--model")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none.csv") || err.contains("empty-model"),
        "{err}"
    );

    let Some((model, data)) = assets("bad_input_gives_clear_errors") else {
        return;
    };
    // Unknown task.
    let out = adept()
        .args(["train", "--task", "sst3"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sst3"));

    // A custom file with a header only.
    let csv = tmp.path().join("reviews.csv");
    std::fs::write(&csv, "text,label\n").unwrap();
    let out = adept()
        .args(["train", "--train-file"])
        .arg(&csv)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reviews.csv"), "{err}");

    // Over-long text with --error-on-overlength.
    let mut rows = String::from("text,label\n");
    for i in 0..20 {
        let text = if i == 3 {
            "word ".repeat(200)
        } else {
            format!("short text {i}")
        };
        rows.push_str(&format!(
            "{text},{}\n",
            if i % 2 == 0 { "pos" } else { "neg" }
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    let out = adept()
        .args(["train", "--train-file"])
        .arg(&csv)
        .arg("--model")
        .arg(&model)
        .args([
            "--max-len",
            "32",
            "--error-on-overlength",
            "--steps",
            "1",
            "--prompt-len",
            "4",
            "--rank",
            "2",
        ])
        .arg("--out")
        .arg(tmp.path().join("r"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("32") && err.to_lowercase().contains("long"),
        "{err}"
    );
}

#[test]
fn custom_csv_trains_and_lists_its_labels() {
    let Some((model, _)) = assets("custom_csv_trains_and_lists_its_labels") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("tickets.csv");
    let mut rows = String::from("subject,body,queue\n");
    for i in 0..40 {
        let (q, body) = match i % 3 {
            0 => ("billing", "my invoice was charged twice"),
            1 => ("tech", "the app crashes when I log in"),
            _ => ("sales", "I would like a quote for ten seats"),
        };
        rows.push_str(&format!("ticket {i},\"{body}, please help\",{q}\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let run = tmp.path().join("run");
    let out = adept()
        .env("ADEPT_LOG", "info")
        .args(["train", "--train-file"])
        .arg(&csv)
        .args(["--text-fields", "subject,body", "--label-field", "queue"])
        .arg("--model")
        .arg(&model)
        .args([
            "--steps",
            "6",
            "--batch-size",
            "8",
            "--prompt-len",
            "4",
            "--rank",
            "2",
            "--eval-every",
            "3",
        ])
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 labels"), "{err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best/run.json")).unwrap()).unwrap();
    let mut labels: Vec<String> = serde_json::from_value(manifest["label_names"].clone()).unwrap();
    labels.sort();
    assert_eq!(labels, ["billing", "sales", "tech"]);
    assert_eq!(
        manifest["text_fields"],
        serde_json::json!(["subject", "body"])
    );
}

#[test]
fn train_export_and_serve_from_the_cli() {
    let Some((model, data)) = assets("train_export_and_serve_from_the_cli") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    run_ok(&mut small_run(&model, &data, &run, 6));
    let bundle = tmp.path().join("bundle");
    let out = run_ok(
        adept()
            .args(["export", "--fold-offsets", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&bundle),
    );
    assert!(!out.is_empty());
    for f in ["model.onnx", "tokenizer.json", "adept.json"] {
        assert!(bundle.join(f).exists(), "{f} missing from the bundle");
    }
    // Exporting again into the same folder needs --overwrite, and leaves the bundle intact.
    let again = adept()
        .args(["export", "--adapter"])
        .arg(&run)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(bundle.join("model.onnx").exists());

    // The same dev-set accuracy through candle and through ONNX Runtime.
    let candle = run_ok(
        adept()
            .arg("eval")
            .arg("--adapter")
            .arg(&run)
            .arg("--data")
            .arg(&data),
    );
    let ort = run_ok(
        adept()
            .arg("eval")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--data")
            .arg(&data),
    );
    let c: serde_json::Value = serde_json::from_str(candle.lines().last().unwrap()).unwrap();
    let o: serde_json::Value = serde_json::from_str(ort.lines().last().unwrap()).unwrap();
    assert_eq!(c["examples"], o["examples"]);
    assert!(
        (c["primary"].as_f64().unwrap() - o["primary"].as_f64().unwrap()).abs() < 1e-9,
        "candle {c} vs ort {o}"
    );

    // One sentence through `adept infer`.
    let out = run_ok(
        adept()
            .args([
                "infer",
                "--text",
                "a gorgeous, witty, seductive movie",
                "--bundle",
            ])
            .arg(&bundle),
    );
    // One JSON line: the text, the label that is the argmax of the probabilities, the
    // probabilities the softmax of the logits.
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), 1, "{out}");
    let p: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(p["sentence"], "a gorgeous, witty, seductive movie", "{p}");
    let logits: Vec<f64> = serde_json::from_value(p["logits"].clone()).unwrap();
    assert_eq!(logits.len(), 2, "{p}");
    let names = ["negative", "positive"];
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
    for (name, l) in names.iter().zip(&logits) {
        let got = p["probabilities"][name].as_f64().unwrap();
        let want = (l - m).exp() / z;
        assert!((got - want).abs() < 1e-6, "{name}: {got} vs softmax {want}");
    }
    let best = if logits[1] > logits[0] { 1 } else { 0 };
    assert_eq!(p["label_id"], best, "{p}");
    assert_eq!(p["label"], names[best], "{p}");

    // `--device cuda` for ONNX Runtime: where CUDA cannot be used (a CPU-only build, no
    // onnxruntime-gpu, no GPU) infer and eval fall back to the CPU with a warning saying why,
    // and give the same answers; with --require-device they fail with the reason instead.
    let on_cuda = adept()
        .args([
            "infer",
            "--device",
            "cuda",
            "--text",
            "a gorgeous, witty, seductive movie",
            "--bundle",
        ])
        .arg(&bundle)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&on_cuda.stderr);
    assert!(on_cuda.status.success(), "{err}");
    let fell_back = err.contains("running on the CPU");
    assert!(
        fell_back || !cfg!(not(feature = "cuda")),
        "a CPU-only build did not say it fell back: {err}"
    );
    let line = String::from_utf8_lossy(&on_cuda.stdout);
    let q: serde_json::Value =
        serde_json::from_str(line.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    let cuda_logits: Vec<f64> = serde_json::from_value(q["logits"].clone()).unwrap();
    for (a, b) in cuda_logits.iter().zip(&logits) {
        assert!(
            (a - b).abs() < 1e-4,
            "--device cuda logits {cuda_logits:?} vs cpu {logits:?}"
        );
    }
    let eval_cuda = run_ok(
        adept()
            .args(["eval", "--device", "cuda", "--bundle"])
            .arg(&bundle)
            .arg("--data")
            .arg(&data),
    );
    let e: serde_json::Value = serde_json::from_str(eval_cuda.lines().last().unwrap()).unwrap();
    assert_eq!(e["examples"], o["examples"], "{e}");
    assert!(
        (e["primary"].as_f64().unwrap() - o["primary"].as_f64().unwrap()).abs() < 1e-9,
        "{e} vs {o}"
    );
    if fell_back {
        let (b, d) = (bundle.to_str().unwrap(), data.to_str().unwrap());
        for args in [
            &[
                "infer",
                "--device",
                "cuda",
                "--require-device",
                "--text",
                "x",
                "--bundle",
                b,
            ][..],
            &[
                "eval",
                "--device",
                "cuda",
                "--require-device",
                "--bundle",
                b,
                "--data",
                d,
            ][..],
        ] {
            let out = adept().args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} succeeded without CUDA");
            assert!(
                err.contains("CUDA") && err.contains("required") && !err.contains("panicked"),
                "{args:?}: {err}"
            );
        }
    }

    // A corrupted bundle is refused with the file named.
    std::fs::write(bundle.join("adept.json"), "{ not json").unwrap();
    let bad = adept()
        .args(["infer", "--text", "x", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("adept.json"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// A second encoder family through the same commands: the tiny random RoBERTa of
/// `tests/fixtures/tiny-roberta/` (registry: `model_type: roberta`, no token types) trains on a
/// custom CSV, is scored by `adept eval`, exports to a bundle whose graph takes no
/// `token_type_ids`, and serves through ONNX Runtime.
#[test]
fn roberta_trains_exports_and_serves_through_the_same_commands() {
    let test = "roberta_trains_exports_and_serves_through_the_same_commands";
    if adept_testkit::ort_library(test).is_none() {
        return;
    }
    let model = adept_testkit::repo_file("tests/fixtures/tiny-roberta");
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("moods.csv");
    let mut rows = String::from("text,mood\n");
    for i in 0..48 {
        let (text, mood) = if i % 2 == 0 {
            (format!("a happy sunny day number {i}"), "up")
        } else {
            (format!("a sad grey night number {i}"), "down")
        };
        rows.push_str(&format!("{text},{mood}\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let run = tmp.path().join("run");
    run_ok(
        adept()
            .args(["train", "--train-file"])
            .arg(&csv)
            .args(["--label-field", "mood", "--method", "adept"])
            .args(["--prompt-len", "4", "--rank", "2", "--max-len", "24"])
            .args(["--steps", "8", "--batch-size", "8", "--eval-every", "4"])
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&run),
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best/run.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_family"], "bert");

    let bundle = tmp.path().join("bundle");
    run_ok(
        adept()
            .args(["export", "--adapter"])
            .arg(&run)
            .arg("--out")
            .arg(&bundle),
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("adept.json")).unwrap()).unwrap();
    assert_eq!(
        m["inputs"],
        serde_json::json!(["input_ids", "attention_mask"])
    );
    assert_eq!(m["fold"], "folded");

    // candle scores the held-out part of the same file; the bundle's logits equal candle's
    // (tests/roberta_bundle.rs in adept-e2e), here it must serve.
    let candle = run_ok(
        adept()
            .args(["eval", "--adapter"])
            .arg(&run)
            .arg("--train-file")
            .arg(&csv)
            .args(["--label-field", "mood"]),
    );
    let c: serde_json::Value = serde_json::from_str(candle.lines().last().unwrap()).unwrap();
    assert!(c["primary"].as_f64().is_some(), "{c}");
    let out = run_ok(
        adept()
            .args(["infer", "--text", "a happy sunny day", "--bundle"])
            .arg(&bundle),
    );
    let p: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(
        ["up", "down"].contains(&p["label"].as_str().unwrap()),
        "{p}"
    );
}
