//! The causal-LM path of the command line on the tiny Llama fixture (96-token vocabulary) with a
//! word-level tokenizer written here: `adept train` on prompt/completion JSONL → `adept eval
//! --run` → `adept export --run` → a decoder bundle; bad input fails cleanly, leaving no run.

use std::path::{Path, PathBuf};
use std::process::Command;

const WORDS: &[&str] = &[
    "red",
    "blue",
    "green",
    "sky",
    "grass",
    "blood",
    "is",
    "the",
    "colour",
    "of",
    "what",
    "sea",
    "fire",
    "leaf",
    "snow",
    "white",
    "coal",
    "black",
    "night",
    "day",
    "positive",
    "negative",
    "review",
    "sentiment",
    "a",
    "film",
    "good",
    "bad",
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama-gqa-tied")
}

/// A word-level tokenizer.json: `<pad>` 0, `<s>` 1, `</s>` 2 (the fixture's pad/BOS/EOS),
/// `<unk>` 3, then [`WORDS`]; whitespace pre-tokenizer.
fn tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["<pad>", "<s>", "</s>", "<unk>"]
        .iter()
        .chain(WORDS)
        .enumerate()
    {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    let added: Vec<_> = ["<pad>", "<s>", "</s>"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
    .to_string()
}

fn model_dir(root: &Path) -> PathBuf {
    let d = root.join("tiny-llama");
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(f), d.join(f)).unwrap();
    }
    std::fs::write(d.join("tokenizer.json"), tokenizer_json()).unwrap();
    d
}

fn pairs_jsonl() -> String {
    let facts = [
        ("sky", "blue"),
        ("grass", "green"),
        ("blood", "red"),
        ("sea", "blue"),
        ("fire", "red"),
        ("leaf", "green"),
        ("snow", "white"),
        ("coal", "black"),
        ("night", "black"),
        ("day", "white"),
    ];
    let mut s = String::new();
    for _ in 0..2 {
        for (thing, colour) in facts {
            s.push_str(
                &serde_json::json!({"prompt": format!("what is the colour of {thing}"),
                    "completion": format!(" {colour}")})
                .to_string(),
            );
            s.push('\n');
        }
    }
    s
}

fn adept() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adept"));
    c.env("ADEPT_LOG", "warn").env("ADEPT_PROGRESS_EVERY", "0");
    c
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `c`, which must fail; returns its stderr.
fn run_err(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap()
}

#[test]
fn jsonl_pairs_train_eval_and_export_to_a_decoder_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let data = tmp.path().join("colours.jsonl");
    std::fs::write(&data, pairs_jsonl()).unwrap();
    let run = tmp.path().join("run");
    let train = last_json(&run_ok(adept().args([
        "train",
        "--model",
        model.to_str().unwrap(),
        "--train-file",
        data.to_str().unwrap(),
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--max-len",
        "16",
        "--out",
        run.to_str().unwrap(),
    ])));
    assert_eq!(train["task_kind"], "causal-lm");
    assert_eq!(
        (train["prompt_len"].as_u64(), train["rank"].as_u64()),
        (Some(7), Some(1))
    );
    assert!(train["report"]["final_loss"].as_f64().unwrap().is_finite());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("best/run.json")).unwrap()).unwrap();
    assert_eq!(manifest["task_kind"], "causal-lm");
    assert_eq!(manifest["eos_token_ids"], serde_json::json!([2]));
    assert_eq!(manifest["max_len"], 16);
    assert!(run.join("best/adapter_model.safetensors").exists());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("peak_rss_mb") && metrics.contains("exact_match"));

    let eval = last_json(&run_ok(adept().args([
        "eval",
        "--run",
        run.to_str().unwrap(),
    ])));
    assert_eq!(eval["task_kind"], "causal-lm");
    assert_eq!(eval["examples"], 2); // 10% of 20 held out
    let em = eval["generation"]["metrics"]["exact_match"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&em), "{eval}");
    // The evaluation reproduces the best validation score of training.
    assert_eq!(
        eval["primary"].as_f64(),
        manifest["validation_metrics"]["exact_match"].as_f64()
    );

    let bundle = tmp.path().join("bundle");
    run_ok(adept().args([
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]));
    for f in [
        "model.onnx",
        "adept.json",
        "tokenizer.json",
        "prompt_cache.safetensors",
    ] {
        assert!(bundle.join(f).exists(), "{f} missing from the bundle");
    }
    let adept_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("adept.json")).unwrap()).unwrap();
    assert!(
        adept_json.to_string().contains("\"causal-lm\""),
        "{adept_json}"
    );

    // `adept eval --bundle` scores the same data as `adept eval --run` through ONNX Runtime and
    // gets the same greedy generations, hence the same exact match; a custom-data bundle without
    // data to score is refused with advice.
    if adept_testkit::ort_library("jsonl_pairs_train_eval_and_export_to_a_decoder_bundle").is_some()
    {
        let on = |flag: &str, dir: &Path| {
            last_json(&run_ok(
                adept()
                    .args(["eval", flag])
                    .arg(dir)
                    .arg("--train-file")
                    .arg(&data)
                    .arg("--validation-file")
                    .arg(&data),
            ))
        };
        let (candle, ort) = (on("--run", &run), on("--bundle", &bundle));
        assert_eq!(ort["examples"], 20);
        assert_eq!(candle["generation"], ort["generation"], "{candle}\n{ort}");
        let err = run_err(adept().args(["eval", "--bundle"]).arg(&bundle));
        assert!(
            err.contains("custom data") && err.contains("--train-file"),
            "{err}"
        );
    }
}

/// A built-in classification task on a decoder: `adept eval --bundle` scores SST-2's label words
/// through the exported graph (every position's logits, from the prompt cache) and generates
/// greedily, and both metrics equal `adept eval --run`'s candle scores on the same examples.
#[test]
fn decoder_bundle_eval_equals_candle_eval_on_a_builtin_task() {
    let test = "decoder_bundle_eval_equals_candle_eval_on_a_builtin_task";
    let Some(glue) = adept_testkit::glue_dir(test) else {
        return;
    };
    if adept_testkit::ort_library(test).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let run = tmp.path().join("run");
    let common = |c: &mut Command| {
        c.arg("--data")
            .arg(&glue)
            .args(["--task", "sst2", "--eval-limit", "24"]);
    };
    let mut train = adept();
    train.args(["train", "--model"]).arg(&model).args([
        "--train-limit",
        "64",
        "--steps",
        "3",
        "--eval-every",
        "3",
        "--batch-size",
        "4",
        "--max-len",
        "24",
        "--out",
    ]);
    train.arg(&run);
    common(&mut train);
    run_ok(&mut train);
    let bundle = tmp.path().join("bundle");
    run_ok(
        adept()
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&bundle),
    );
    let mut by_run = adept();
    by_run.args(["eval", "--run"]).arg(&run);
    common(&mut by_run);
    let mut by_bundle = adept();
    by_bundle.args(["eval", "--bundle"]).arg(&bundle);
    common(&mut by_bundle);
    let (candle, ort) = (
        last_json(&run_ok(&mut by_run)),
        last_json(&run_ok(&mut by_bundle)),
    );
    assert_eq!(ort["task"], "sst2");
    assert_eq!(ort["examples"], 24);
    let acc = ort["label_word_scoring"]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&acc), "{ort}");
    assert_eq!(
        candle["label_word_scoring"], ort["label_word_scoring"],
        "{candle}\n{ort}"
    );
    assert_eq!(candle["generation"], ort["generation"], "{candle}\n{ort}");
}

#[test]
fn bad_lm_input_fails_cleanly_without_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model_dir(tmp.path());
    let train = |file: &Path, extra: &[&str], out: &Path| {
        let mut c = adept();
        c.args([
            "train",
            "--model",
            model.to_str().unwrap(),
            "--train-file",
            file.to_str().unwrap(),
            "--steps",
            "2",
            "--max-len",
            "16",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra);
        c.output().unwrap()
    };

    // A line without "completion": the error names file:line; no run folder.
    let bad = tmp.path().join("bad.jsonl");
    let mut text = pairs_jsonl();
    text.push_str("{\"prompt\": \"what is the colour of sky\"}\n");
    std::fs::write(&bad, text).unwrap();
    let out_dir = tmp.path().join("run-bad");
    let o = train(&bad, &[], &out_dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("bad.jsonl:21"), "{err}");
    assert!(err.contains("completion"), "{err}");
    assert!(!out_dir.exists(), "a failed run left {}", out_dir.display());

    // A CSV file is for encoders.
    let csv = tmp.path().join("data.csv");
    std::fs::write(&csv, "text,label\nsky,blue\n").unwrap();
    let o = train(&csv, &[], &out_dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("JSONL"), "{err}");
    assert!(!out_dir.exists());

    // --chat-template without a template in the model folder.
    let good = tmp.path().join("good.jsonl");
    std::fs::write(&good, pairs_jsonl()).unwrap();
    let o = train(&good, &["--chat-template"], &out_dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("tokenizer_config.json"),
        "{err}"
    );
    assert!(!out_dir.exists());
}

/// T5 (text-to-text) through `adept train`: the tiny random v1 fixture on a JSONL copy task
/// writes a complete run (adapter in PEFT layout, run.json saying seq2seq, metrics lines with
/// validation exact match); a missing target column fails naming file:line, leaving no run.
#[test]
fn t5_trains_on_source_target_jsonl_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let t5 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-t5-v1");
    let words = ["cat", "dog"];
    let mut lines = String::new();
    for i in 0..30usize {
        let a: Vec<&str> = (0..3).map(|j| words[(i * 7 + j * 3 + i / 3) % 2]).collect();
        lines.push_str(&format!(
            "{{\"source\": \"{}\", \"target\": \"{}\"}}\n",
            a.join(" "),
            a[2]
        ));
    }
    let train = tmp.path().join("copy.jsonl");
    std::fs::write(&train, lines).unwrap();
    let run = tmp.path().join("run");
    let stdout = run_ok(
        adept()
            .args(["train", "--model"])
            .arg(&t5)
            .arg("--train-file")
            .arg(&train)
            .args([
                "--prompt-len",
                "4",
                "--rank",
                "2",
                "--steps",
                "6",
                "--batch-size",
                "8",
            ])
            .args(["--eval-every", "3", "--out"])
            .arg(&run),
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["task_kind"], "seq2seq");
    assert_eq!(summary["steps"], 6);
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "run.json",
    ] {
        assert!(run.join("best").join(f).exists(), "{f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("best/run.json")).unwrap()).unwrap();
    assert_eq!(manifest["task_kind"], "seq2seq");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("exact_match"), "{metrics}");

    // `adept eval --run` (candle) reproduces the best validation score: the same held-out 10%
    // of the custom file (the run's seed), decoded as validation decodes. Without the data
    // files the custom run cannot be scored, and the error says what to pass.
    let preds = tmp.path().join("preds.jsonl");
    let stdout = run_ok(
        adept()
            .args(["eval", "--run"])
            .arg(&run)
            .arg("--train-file")
            .arg(&train)
            .arg("--predictions")
            .arg(&preds),
    );
    let e = last_json(&stdout);
    assert_eq!(e["task_kind"], "seq2seq", "{e}");
    assert_eq!(e["examples"], 3, "{e}");
    let best = summary["best_metric"].as_f64().unwrap();
    assert!(
        (e["primary"].as_f64().unwrap() - best).abs() < 1e-9,
        "eval {e} vs best {best}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["output"].is_string() && l["target"].is_string()));
    let err = run_err(adept().args(["eval", "--run"]).arg(&run));
    assert!(
        err.contains("copy") && err.contains("--train-file"),
        "{err}"
    );

    // export → encoder + cached decoder, and `adept generate` on it (beam search through ONNX
    // Runtime; token-level parity with candle is tested in adept-e2e/tests/t5_onnx.rs).
    let bundle = tmp.path().join("bundle");
    run_ok(
        adept()
            .args(["export", "--run"])
            .arg(&run)
            .arg("--out")
            .arg(&bundle),
    );
    for f in [
        "encoder_model.onnx",
        "decoder_model.onnx",
        "tokenizer.json",
        "adept.json",
    ] {
        assert!(bundle.join(f).exists(), "{f}");
    }
    if adept_testkit::ort_library("t5_trains_on_source_target_jsonl_from_the_cli").is_some() {
        let stdout = run_ok(
            adept()
                .args(["generate", "--bundle"])
                .arg(&bundle)
                .args([
                    "--prompt",
                    "cat dog cat",
                    "--prompt",
                    "dog dog dog",
                    "--json",
                ])
                .args(["--max-new-tokens", "4", "--num-beams", "2"]),
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l["new_tokens"].as_u64().unwrap() >= 1));
        let stdout = run_ok(
            adept()
                .args(["infer", "--bundle"])
                .arg(&bundle)
                .args(["--text", "cat dog cat"]),
        );
        let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(r["text"], "cat dog cat");
        assert!(r["output"].is_string(), "{r}");
        // `adept eval --bundle` on a built-in task through the exported graphs: the authors'
        // template, greedy decoding, metrics on the strings (this random model emits no label
        // string, so accuracy is a well-defined 0 or more, over exactly the examples asked for).
        if let Some(glue) = adept_testkit::glue_dir("t5_trains_on_source_target_jsonl_from_the_cli")
        {
            let stdout = run_ok(
                adept()
                    .args(["eval", "--bundle"])
                    .arg(&bundle)
                    .args(["--task", "rte", "--eval-limit", "4", "--data"])
                    .arg(&glue),
            );
            let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
            assert_eq!(r["task_kind"], "seq2seq");
            assert_eq!(r["examples"], 4);
            let acc = r["metrics"]["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc), "{r}");
        }
    }

    let bad_run = tmp.path().join("bad");
    let err = run_err(
        adept()
            .args(["train", "--model"])
            .arg(&t5)
            .arg("--train-file")
            .arg(&train)
            .args(["--target-field", "label", "--steps", "2", "--out"])
            .arg(&bad_run),
    );
    assert!(
        err.contains("copy.jsonl:1") && err.contains("label"),
        "{err}"
    );
    assert!(!bad_run.exists(), "no run folder after bad input");
}
