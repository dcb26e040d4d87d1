//! `adept serve` as a user runs it: on a tiny exported bundle, port 0, a request over HTTP, then
//! SIGTERM, which must end the process cleanly; and bad options refused before anything loads.

use adept_adapters::MethodKind;
use adept_export::testing::{self, tiny_classifier, write_tiny_tokenizer};
use adept_export::{export_classifier, ExportOptions};
use adept_train::Pooling;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn adept() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adept"));
    c.env("ADEPT_LOG", "warn");
    c
}

/// A tiny SST-2 ADePT bundle in `dir/bundle`.
fn tiny_bundle(dir: &Path) -> PathBuf {
    tiny_bundle_with(dir, ExportOptions::default())
}

/// [`tiny_bundle`] exported with `opts`.
fn tiny_bundle_with(dir: &Path, opts: ExportOptions) -> PathBuf {
    let tok = write_tiny_tokenizer(&dir.join("tokenizer")).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 3).unwrap();
    let info = testing::task_info("sst2", &["negative", "positive"], &["sentence"]);
    let out = dir.join("bundle");
    let opts = ExportOptions {
        overwrite: true,
        ..opts
    };
    export_classifier(&model, &enc, &tok, &info, &opts, &out).unwrap();
    out
}

#[test]
fn serve_answers_over_http_and_stops_cleanly_on_sigterm() {
    let test = "serve_answers_over_http_and_stops_cleanly_on_sigterm";
    let Some(ort) = adept_testkit::ort_library(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle(tmp.path());
    let log = tmp.path().join("metrics.jsonl");
    let mut child = adept()
        .args([
            "serve",
            "--port",
            "0",
            "--threads",
            "1",
            "--metrics-every",
            "0.2",
        ])
        .arg("--bundle")
        .arg(format!("tiny={}", bundle.display()))
        .arg("--metrics-log")
        .arg(&log)
        .arg("--ort-lib")
        .arg(&ort)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address is on the line that says it listens.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let addr = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("adept serve ended before listening:\n{said}");
        }
        said.push_str(&line);
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    assert!(said.contains("serving \"tiny\": sst2"), "{said}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(format!("http://{addr}/v1/models/tiny/predict"))
        .content_type("application/json")
        .send(r#"{"inputs": ["good", "the worst film of the year"]}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
    assert_eq!(body["predictions"].as_array().unwrap().len(), 2, "{body}");
    // The metrics log gets a line within a few periods, counting the request.
    let t = Instant::now();
    let counted = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(last) = text.lines().last() {
            let v: serde_json::Value = serde_json::from_str(last).unwrap();
            if v["models"]["tiny"]["requests"] == 1 {
                break true;
            }
        }
        if t.elapsed() > Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        counted,
        "no metrics line counted the request in {}",
        log.display()
    );
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("adept serve did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "exit {status}: {said}{rest}");
    assert!(rest.contains("stopping"), "{rest}");
}

#[test]
fn serve_refuses_bad_options_and_missing_bundles_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-bundle");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--bundle".into(), missing.display().to_string()],
            "no-such-bundle",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--max-queue".into(),
                "4".into(),
                "--max-inputs".into(),
                "8".into(),
            ],
            "--max-queue (4) is smaller than --max-inputs (8)",
        ),
        (
            vec!["--bundle".into(), "bad name=x".into()],
            "model name \"bad name\"",
        ),
        (vec!["--bundle".into(), "..=x".into()], "model name \"..\""),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--cors-origin".into(),
                "https://app.example/".into(),
            ],
            "--cors-origin \"https://app.example/\" is not an origin",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--workers".into(),
                "0".into(),
            ],
            "at least 1",
        ),
        (
            vec!["--bundle".into(), "x".into(), "--max-wait-ms=-1".into()],
            "--max-wait-ms must be a number ≥ 0 and at most 60000, not -1",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--max-wait-ms".into(),
                "1e30".into(),
            ],
            "at most 60000, not 1000000000000000000000000000000",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--metrics-every".into(),
                "0".into(),
            ],
            "--metrics-every must be a number > 0",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--idle-timeout".into(),
                "0".into(),
            ],
            "--idle-timeout must be a number > 0",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--idle-timeout".into(),
                "0.01".into(),
            ],
            "at least 0.1 s",
        ),
        (
            vec![
                "--bundle".into(),
                "x".into(),
                "--max-connections".into(),
                "0".into(),
            ],
            "at least 1",
        ),
    ];
    for (args, says) in cases {
        let out = adept()
            .arg("serve")
            .args(&args)
            .args(["--port", "0"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err:?} lacks {says:?}");
    }
}

/// `adept bench --server` on a decoder bundle (the tiny fixture): every variant generates every
/// prompt; the unbatched server gives the in-process ids exactly (the bench refuses to report
/// otherwise), and the JSON rows say so.
#[test]
fn bench_server_times_generation_on_a_decoder_bundle() {
    let test = "bench_server_times_generation_on_a_decoder_bundle";
    let Some(ort) = adept_testkit::ort_library(test) else {
        return;
    };
    let Some(glue) = adept_testkit::glue_dir(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = adept()
        .env("ORT_DYLIB_PATH", &ort)
        .args(["bench", "--server", "--bundle"])
        .arg(adept_testkit::repo_file("tests/fixtures/tiny-decoder"))
        .args(["--threads", "1", "--clients", "3", "--requests", "5"])
        .args(["--new-tokens", "4", "--iters", "2", "--data"])
        .arg(&glue)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("dynamic batching / no batching: x"),
        "{stdout}"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert_eq!(r["prompts"], 5, "{r}");
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Unbatched runs are the in-process runs; on this model batched greedy rows agree too.
    assert_eq!(rows[1]["same_ids_as_in_process"], 5, "{}", rows[1]);
    assert_eq!(rows[2]["same_ids_as_in_process"], 5, "{}", rows[2]);
}

/// `adept bench --server` on a per-tensor int8 bundle, whose answers move with their
/// batch-mates: the reference is each sentence alone (the unbatched routes must match it), and
/// the batching routes are measured, not refused as a serving bug.
#[test]
fn bench_server_takes_a_per_tensor_bundle_sentence_by_sentence() {
    let test = "bench_server_takes_a_per_tensor_bundle_sentence_by_sentence";
    let Some(ort) = adept_testkit::ort_library(test) else {
        return;
    };
    let Some(glue) = adept_testkit::glue_dir(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tiny_bundle_with(
        tmp.path(),
        ExportOptions {
            dtype: adept_bundle::WeightDtype::Int8,
            int8_activations: adept_bundle::Int8Activations::PerTensor,
            // As `adept export --int8-activations per-tensor`: every product int8.
            int8_keep_float: Vec::new(),
            ..Default::default()
        },
    );
    let out = adept()
        .env("ORT_DYLIB_PATH", &ort)
        .args(["bench", "--server", "--bundle"])
        .arg(&bundle)
        .args([
            "--threads",
            "2",
            "--clients",
            "4",
            "--requests",
            "24",
            "--iters",
            "1",
        ])
        .arg("--data")
        .arg(&glue)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("HTTP, dynamic batching, 2 thread(s) / no batching: x"),
        "{stdout}"
    );
    // Both batching routes were measured against each sentence alone.
    assert_eq!(
        stderr.matches("of each sentence alone").count(),
        2,
        "{stderr}"
    );
}
