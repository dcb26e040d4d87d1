//! `adept train --autocast bf16` through the binary on the tiny RoBERTa fixture: the run
//! records the precision, a resume under another precision is refused, a bad name is a clear
//! error, and `adept export` of the bf16 run writes the same f32 bundle as the same run marked
//! f32 (the export reads the original checkpoint; the training precision never reaches the
//! deployed model).

use std::path::{Path, PathBuf};
use std::process::Command;

fn adept() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adept"));
    c.env("ADEPT_LOG", "warn");
    c
}

fn run(c: &mut Command) -> (bool, String) {
    let out = c.output().expect("adept runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "adept panicked: {text}");
    (out.status.success(), text)
}

fn run_ok(c: &mut Command) -> String {
    let (ok, text) = run(c);
    assert!(ok, "adept failed: {text}");
    text
}

fn model() -> PathBuf {
    adept_testkit::repo_file("tests/fixtures/tiny-roberta")
}

fn train(csv: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = adept();
    c.args(["train", "--train-file"])
        .arg(csv)
        .args(["--label-field", "mood", "--method", "adept"])
        .args(["--prompt-len", "4", "--rank", "2", "--max-len", "24"])
        .args(["--steps", "6", "--batch-size", "8", "--eval-every", "3"])
        .args(["--checkpoint-every", "2", "--seed", "5"])
        .arg("--model")
        .arg(model())
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file of a bundle folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bf16_runs_are_recorded_refused_on_mismatch_and_export_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("moods.csv");
    let mut rows = String::from("text,mood\n");
    for i in 0..40 {
        let (text, mood) = if i % 2 == 0 {
            (format!("a happy sunny day number {i}"), "up")
        } else {
            (format!("a sad grey night number {i}"), "down")
        };
        rows.push_str(&format!("{text},{mood}\n"));
    }
    std::fs::write(&csv, rows).unwrap();

    // A name that is not a precision: the parser says what to use.
    let (ok, text) = run(&mut train(
        &csv,
        &tmp.path().join("bad"),
        &["--autocast", "fp16"],
    ));
    assert!(!ok);
    assert!(
        text.contains("--autocast") && text.contains("fp16") && text.contains("bf16"),
        "{text}"
    );

    // A bf16 run, stopped after 2 steps, then resumed without the flag: refused.
    let bf16 = tmp.path().join("bf16");
    run_ok(&mut train(
        &csv,
        &bf16,
        &["--autocast", "bf16", "--stop-after", "2"],
    ));
    assert_eq!(json(&bf16.join("train_config.json"))["autocast"], "bf16");
    let (ok, text) = run(&mut train(&csv, &bf16, &["--resume"]));
    assert!(!ok, "a resume in f32 of a bf16 run must be refused");
    assert!(
        text.contains("trained with --autocast bf16")
            && text.contains("resume it with --autocast bf16"),
        "{text}"
    );
    // Under its own precision it finishes.
    run_ok(&mut train(&csv, &bf16, &["--autocast", "bf16", "--resume"]));
    let manifest = json(&bf16.join("best/run.json"));
    assert_eq!(manifest["train_config"]["autocast"], "bf16", "{manifest}");

    // An f32 run records nothing (its config bytes are what they always were).
    let f32_run = tmp.path().join("f32");
    run_ok(&mut train(&csv, &f32_run, &[]));
    assert!(json(&f32_run.join("best/run.json"))["train_config"]
        .get("autocast")
        .is_none());

    // The bf16 run's export equals the export of the same adapter marked f32: byte for byte.
    let marked = tmp.path().join("marked-f32");
    std::fs::create_dir_all(&marked).unwrap();
    for (name, bytes) in files(&bf16.join("best")) {
        let bytes = if name == "run.json" {
            let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            m["train_config"]
                .as_object_mut()
                .unwrap()
                .remove("autocast");
            serde_json::to_vec_pretty(&m).unwrap()
        } else {
            bytes
        };
        std::fs::write(marked.join(name), bytes).unwrap();
    }
    let export = |adapter: &Path, out: &Path| {
        run_ok(
            adept()
                .args(["export", "--adapter"])
                .arg(adapter)
                .arg("--out")
                .arg(out),
        )
    };
    let (a, b) = (
        tmp.path().join("bundle-bf16"),
        tmp.path().join("bundle-f32"),
    );
    export(&bf16.join("best"), &a);
    export(&marked, &b);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(
        fa.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        fb.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    let mut onnx = 0;
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        if name.ends_with(".onnx") || name.ends_with(".data") || name.ends_with(".safetensors") {
            onnx += 1;
            assert!(
                x == y,
                "{name} differs between the bf16 run's export and f32's"
            );
        }
    }
    assert!(
        onnx > 0,
        "the bundle has a model file: {:?}",
        fa.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}
