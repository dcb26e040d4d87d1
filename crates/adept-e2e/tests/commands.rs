//! `run_infer` (text and JSONL), `run_bundle_eval` and `bench_session` on tiny bundles, checked
//! against candle.

mod common;

use adept_adapters::MethodKind;
use adept_runtime::{run_bundle_eval, run_infer, BundleEvalArgs, InferArgs, RuntimeArgs};
use adept_train::batch::Batch;
use adept_train::SplitChoice;
use common::*;
use std::path::{Path, PathBuf};

fn runtime_args(bundle: &Path) -> RuntimeArgs {
    RuntimeArgs {
        bundle: bundle.to_path_buf(),
        session: adept_runtime::SessionArgs {
            threads: Some(1),
            ..Default::default()
        },
        batch_size: 2,
        no_length_buckets: false,
    }
}

fn candle_logits(t: &Tiny, texts: &[(&str, Option<&str>)]) -> Vec<Vec<f32>> {
    let enc: Vec<_> = texts
        .iter()
        .map(|(a, b)| t.encoder.encode(a, *b).unwrap())
        .collect();
    let refs: Vec<_> = enc.iter().collect();
    let batch = Batch::collate(&refs, t.encoder.pad_id, &candle_core::Device::Cpu).unwrap();
    t.model
        .forward(&batch, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn argmax(r: &[f32]) -> usize {
    r.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../adept-data/tests/fixtures/glue")
}

#[test]
fn infer_jsonl_and_single_text() {
    let test = "infer_jsonl_and_single_text";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_bundle(
        tmp.path(),
        "rte",
        "rte",
        &["entailment", "not_entailment"],
        &["sentence1", "sentence2"],
        MethodKind::Adept,
    );
    let pairs = [
        ("the film was good .", "it was great"),
        ("i hated this movie , it was too long", "the plot was dull"),
        ("best", "worst"),
    ];
    let input = tmp.path().join("in.jsonl");
    let lines: Vec<String> = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, b))| serde_json::json!({"id": i, "sentence1": a, "sentence2": b}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n\n").unwrap();
    let output = tmp.path().join("out.jsonl");
    let args = InferArgs {
        runtime: runtime_args(&t.bundle),
        text: None,
        text_b: None,
        input: Some(input.clone()),
        output: Some(output.clone()),
    };
    let report = run_infer(&args).unwrap();
    assert_eq!(report.predictions, 3);
    let want = candle_logits(
        &t,
        &pairs
            .iter()
            .map(|(a, b)| (*a, Some(*b)))
            .collect::<Vec<_>>(),
    );
    let out: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 3);
    for (i, (rec, w)) in out.iter().zip(&want).enumerate() {
        assert_eq!(rec["id"], i, "input fields are kept, in order");
        assert_eq!(rec["sentence1"], pairs[i].0);
        let label_id = argmax(w);
        assert_eq!(rec["label_id"], label_id);
        assert_eq!(rec["label"], ["entailment", "not_entailment"][label_id]);
        let logits: Vec<f32> = serde_json::from_value(rec["logits"].clone()).unwrap();
        for (g, e) in logits.iter().zip(w) {
            assert!((g - e).abs() < 1e-4, "{logits:?} vs {w:?}");
        }
        let p = rec["probabilities"]["entailment"].as_f64().unwrap()
            + rec["probabilities"]["not_entailment"].as_f64().unwrap();
        assert!((p - 1.0).abs() < 1e-5);
    }

    // A record without a field: the error names the file, the line and the field.
    std::fs::write(
        &input,
        "{\"sentence1\": \"good\", \"sentence2\": \"bad\"}\n{\"sentence1\": \"good\"}\n",
    )
    .unwrap();
    let err = format!("{:#}", run_infer(&args).unwrap_err());
    assert!(
        err.contains("in.jsonl:2") && err.contains("sentence2"),
        "{err}"
    );
    std::fs::write(&input, "not json\n").unwrap();
    let err = format!("{:#}", run_infer(&args).unwrap_err());
    assert!(err.contains("in.jsonl:1") && err.contains("JSON"), "{err}");

    // --text for a pair task needs --text-b.
    let single = InferArgs {
        text: Some("good".into()),
        input: None,
        ..args.clone()
    };
    let err = format!("{:#}", run_infer(&single).unwrap_err());
    assert!(err.contains("--text-b"), "{err}");
    let pair = InferArgs {
        text: Some(pairs[0].0.into()),
        text_b: Some(pairs[0].1.into()),
        input: None,
        ..args
    };
    let report = run_infer(&pair).unwrap();
    assert_eq!(report.predictions, 1);
    let out: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&output).unwrap().trim()).unwrap();
    assert_eq!(out["label_id"], argmax(&want[0]));
}

#[test]
fn regression_bundles_return_scores() {
    let test = "regression_bundles_return_scores";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_bundle(
        tmp.path(),
        "stsb",
        "stsb",
        &[],
        &["sentence1", "sentence2"],
        MethodKind::Dept,
    );
    let bundle = adept_runtime::Bundle::open(&t.bundle).unwrap();
    let texts = [("a good film".to_string(), Some("a great movie".to_string()))];
    let p = &bundle.predict(&texts).unwrap()[0];
    let want = candle_logits(&t, &[("a good film", Some("a great movie"))])[0][0];
    assert!(p.label.is_none() && p.label_id.is_none() && p.probabilities.is_empty());
    assert!((p.score.unwrap() - want).abs() < 1e-4);
}

#[test]
fn bundle_eval_matches_candle_scoring() {
    let test = "bundle_eval_matches_candle_scoring";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let spec = adept_data::TaskKind::Sst2.spec();
    let labels: Vec<&str> = spec.label_names.to_vec();
    let t = tiny_bundle(
        tmp.path(),
        "sst2",
        "sst2",
        &labels,
        &["sentence"],
        MethodKind::Adept,
    );
    let args = BundleEvalArgs {
        runtime: runtime_args(&t.bundle),
        task: None,
        data: Some(fixtures()),
        splits: SplitChoice::Official,
        seed: 1,
    };
    let report = run_bundle_eval(&args).unwrap();
    eprintln!("{report:?}");
    // The same examples through candle, scored by the same scorer.
    let task = adept_train::TaskData::builtin(
        adept_data::TaskKind::Sst2,
        &fixtures(),
        SplitChoice::Official,
        1,
    )
    .unwrap();
    let texts: Vec<(String, Option<String>)> = task
        .validation
        .iter()
        .map(|e| (e.text_a().to_owned(), e.text_b()))
        .collect();
    let refs: Vec<(&str, Option<&str>)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_deref()))
        .collect();
    let preds = adept_train::Predictions::Classes(
        candle_logits(&t, &refs).iter().map(|r| argmax(r)).collect(),
    );
    let want = task.score(&preds, &task.validation).unwrap();
    assert_eq!(report.examples, task.validation.len());
    assert_eq!(report.metrics, want.metrics);
    assert_eq!(report.primary_metric, task.primary_metric);

    // Another task's labels are refused.
    let err = format!(
        "{:#}",
        run_bundle_eval(&BundleEvalArgs {
            task: Some("rte".into()),
            ..args.clone()
        })
        .unwrap_err()
    );
    assert!(err.contains("labels"), "{err}");
    let err = format!(
        "{:#}",
        run_bundle_eval(&BundleEvalArgs {
            task: Some("nope".into()),
            ..args
        })
        .unwrap_err()
    );
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn bench_session_reports_latency() {
    let test = "bench_session_reports_latency";
    let Some((_tmp, t)) = tiny_sst2_bundle(test) else {
        return;
    };
    let inputs: Vec<(String, Option<String>)> = ["good", "the film was very good .", "bad plot"]
        .iter()
        .map(|s| (s.to_string(), None))
        .collect();
    let stats = adept_runtime::bench_session(&t.bundle, 4, &inputs, 5).unwrap();
    eprintln!("{stats:?}");
    assert_eq!(stats.iters, 5);
    assert_eq!(stats.batch_size, 4);
    assert!(stats.mean_ms > 0.0 && stats.min_ms <= stats.p50_ms && stats.p50_ms <= stats.max_ms);
    assert!(stats.examples_per_s > 0.0);
    assert_eq!(stats.method, "adept");
    assert_eq!(stats.prompt_length, 5);
}

/// Length buckets: inputs of similar length are batched together and the outputs come back in
/// input order, equal to batching in input order and to one input at a time; they carry less
/// padding, and the report counts it.
#[test]
fn length_buckets_keep_the_order_and_the_outputs_and_cut_padding() {
    let test = "length_buckets_keep_the_order_and_the_outputs_and_cut_padding";
    let Some((_tmp, t)) = tiny_sst2_bundle(test) else {
        return;
    };
    // Long and short inputs interleaved, so input-order batches of 3 pad a lot.
    let texts: Vec<(String, Option<String>)> = (0..12)
        .map(|i| {
            let words = if i % 2 == 0 { 1 + i % 3 } else { 9 + i % 4 };
            let s: Vec<&str> = TINY_SENTENCES[i % TINY_SENTENCES.len()]
                .split(' ')
                .cycle()
                .take(words)
                .collect();
            (s.join(" "), None)
        })
        .collect();
    let open = |buckets: bool, batch: usize| {
        let opts = adept_runtime::RuntimeOptions {
            batch_size: batch,
            length_buckets: buckets,
            session: adept_runtime::SessionConfig {
                intra_threads: Some(1),
                ..Default::default()
            },
            ..Default::default()
        };
        adept_runtime::Bundle::open_with(&t.bundle, &opts).unwrap()
    };
    let (bucketed, pb) = open(true, 3).predict_with_padding(&texts).unwrap();
    let (ordered, po) = open(false, 3).predict_with_padding(&texts).unwrap();
    let (single, ps) = open(true, 1).predict_with_padding(&texts).unwrap();
    assert_eq!(ps.padded_tokens, 0, "one input per batch needs no padding");
    assert_eq!(pb.real_tokens, po.real_tokens);
    assert_eq!(pb.batches, 4);
    assert!(
        pb.padded_tokens < po.padded_tokens,
        "buckets {pb:?} vs input order {po:?}"
    );
    eprintln!(
        "{test}: padding {:.0}% bucketed, {:.0}% in input order",
        100.0 * pb.padding_fraction(),
        100.0 * po.padding_fraction()
    );
    for (i, ((b, o), s)) in bucketed.iter().zip(&ordered).zip(&single).enumerate() {
        for ((x, y), z) in b.logits.iter().zip(&o.logits).zip(&s.logits) {
            assert!(
                (x - z).abs() < 1e-5 && (y - z).abs() < 1e-5,
                "input {i}: {b:?} {o:?} {s:?}"
            );
        }
        assert_eq!(b.label, s.label, "input {i}");
    }
}
