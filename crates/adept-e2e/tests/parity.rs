//! ONNX Runtime logits of the exported graph against candle's `Classifier::forward`, on the
//! same padded batch of inputs of varied lengths.
//!
//! * tiny random BERT, every method (ADePT folded and unfolded, DePT, PT, head-only), both
//!   poolings, classification and regression: f32 within 1e-4, identical labels;
//! * f16 weights (computation in f32): within 2e-2, identical labels (see `f16_weights`);
//! * the real all-MiniLM-L6-v2 on SST-2 dev sentences, when it is in the cache.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::testing::{self, tiny_classifier, write_tiny_tokenizer};
use adept_train::Pooling;
use common::*;

const F32_TOL: f32 = 1e-4;

fn tiny_case(
    method: MethodKind,
    fold: Option<FoldMode>,
    pooling: Pooling,
    labels_: &[&str],
    pairs: bool,
) {
    let test = format!(
        "tiny_parity_{method}_{fold:?}_{pooling:?}_{}",
        labels_.len()
    );
    if !ort_available(&test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let n = labels_.len().max(1);
    let model = tiny_classifier(method, pooling, n, 7).unwrap();
    let fields: &[&str] = if pairs {
        &["sentence1", "sentence2"]
    } else {
        &["sentence"]
    };
    let info = testing::task_info("tiny", labels_, fields);
    let dir = export(
        &model,
        &enc,
        &tok,
        &info,
        fold,
        WeightDtype::F32,
        tmp.path(),
        "bundle",
    );
    let bundle = open(&dir);

    let items = encode_varied(&enc, TINY_SENTENCES, pairs);
    let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
    assert!(
        lens.iter().min() < lens.iter().max(),
        "the batch must need padding: {lens:?}"
    );
    if pairs {
        assert!(
            items.iter().any(|e| e.type_ids.contains(&1)),
            "pairs must have type 1 tokens"
        );
    }
    let want = candle_logits(&model, &items, enc.pad_id);
    let got = ort_logits(&bundle, &items);
    let diff = max_abs_diff(&got, &want);
    eprintln!("{test}: max |ort - candle| = {diff:e}");
    assert!(
        diff <= F32_TOL,
        "{test}: max |diff| {diff:e} > {F32_TOL:e}\nort {got:?}\ncandle {want:?}"
    );
    if n > 1 {
        assert_eq!(labels(&got), labels(&want), "{test}: labels differ");
    }
    // The logits are not degenerate (a broken graph that outputs the head bias would pass a
    // loose check): rows must differ from each other.
    assert!(
        max_abs_diff(&want[..1], &want[1..2]) > 1e-3,
        "{test}: degenerate logits"
    );

    // predict() sorts by length and batches by 3: the same numbers come back in input order.
    let texts: Vec<(String, Option<String>)> = TINY_SENTENCES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.to_string(),
                pairs.then(|| TINY_SENTENCES[(i + 1) % TINY_SENTENCES.len()].to_string()),
            )
        })
        .collect();
    let mut b3 = open(&dir);
    b3.batch_size = 3;
    let preds = b3.predict(&texts).unwrap();
    let rows: Vec<Vec<f32>> = preds.iter().map(|p| p.logits.clone()).collect();
    let diff = max_abs_diff(&rows, &want);
    assert!(diff <= F32_TOL, "{test}: predict() max |diff| {diff:e}");
    for (p, w) in preds.iter().zip(&want) {
        if labels_.is_empty() {
            assert_eq!(p.score, Some(p.logits[0]));
            assert!(p.label.is_none() && p.probabilities.is_empty());
        } else {
            assert_eq!(p.label_id, Some(argmax(w)));
            assert_eq!(p.label.as_deref(), Some(labels_[argmax(w)]));
            let s: f32 = p.probabilities.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn adept_folded_mean() {
    tiny_case(
        MethodKind::Adept,
        None,
        Pooling::Mean,
        &["neg", "neu", "pos"],
        false,
    );
}

#[test]
fn adept_unfolded_cls_pairs() {
    tiny_case(
        MethodKind::Adept,
        Some(FoldMode::Unfolded),
        Pooling::Cls,
        &["a", "b"],
        true,
    );
}

#[test]
fn dept_mean_pairs() {
    tiny_case(
        MethodKind::Dept,
        None,
        Pooling::Mean,
        &["a", "b", "c"],
        true,
    );
}

#[test]
fn pt_cls() {
    tiny_case(MethodKind::Pt, None, Pooling::Cls, &["a", "b"], false);
}

#[test]
fn head_only_mean() {
    tiny_case(
        MethodKind::HeadOnly,
        None,
        Pooling::Mean,
        &["a", "b"],
        false,
    );
}

#[test]
fn adept_folded_regression() {
    tiny_case(
        MethodKind::Adept,
        Some(FoldMode::Folded),
        Pooling::Mean,
        &[],
        true,
    );
}

/// f16 storage: every weight is rounded to binary16 (relative error ≤ 2⁻¹¹ ≈ 4.9e-4), the
/// arithmetic stays f32. Propagated through the layers and the head, the logits (O(1) here)
/// moved by 6.6e-4 on the tiny model and 2.5e-3 on MiniLM (printed below), i.e. a few times the
/// per-weight rounding, as expected for errors that partly cancel over ~400-term dot products
/// and are renormalised by every LayerNorm. 2e-2 absolute keeps an 8× margin over the worst
/// measured value while still catching a wrong graph (rows differ by far more). Labels must not
/// change wherever the logit gap exceeds twice the error.
#[test]
fn f16_weights() {
    let test = "f16_weights";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 3).unwrap();
    let info = testing::task_info("tiny", &["a", "b"], &["sentence"]);
    let f32_dir = export(
        &model,
        &enc,
        &tok,
        &info,
        None,
        WeightDtype::F32,
        tmp.path(),
        "f32",
    );
    let f16_dir = export(
        &model,
        &enc,
        &tok,
        &info,
        None,
        WeightDtype::F16,
        tmp.path(),
        "f16",
    );
    // The weights take half the bytes (the tiny model's file is mostly names and nodes, so
    // compare the initializers' data rather than the file sizes).
    let weight_bytes = |dir: &std::path::Path, ty: adept_onnx::DataType| -> usize {
        let m = adept_onnx::proto::decode_model(&std::fs::read(dir.join("model.onnx")).unwrap())
            .unwrap();
        m.graph
            .unwrap()
            .initializer
            .iter()
            .filter(|t| t.data_type == Some(ty as i32) && t.dims.iter().product::<i64>() > 1)
            .map(|t| t.raw_data.as_ref().map_or(0, Vec::len))
            .sum()
    };
    let f32_bytes = weight_bytes(&f32_dir, adept_onnx::DataType::Float);
    let f16_bytes = weight_bytes(&f16_dir, adept_onnx::DataType::Float16);
    assert!(
        f16_bytes > 0 && f16_bytes * 2 == f32_bytes,
        "f16 weights {f16_bytes} B vs f32 {f32_bytes} B"
    );
    assert_eq!(
        weight_bytes(&f16_dir, adept_onnx::DataType::Float),
        0,
        "f32 weights left in the f16 model"
    );
    let items = encode_varied(&enc, TINY_SENTENCES, false);
    let want = candle_logits(&model, &items, enc.pad_id);
    let got = ort_logits(&open(&f16_dir), &items);
    let diff = max_abs_diff(&got, &want);
    eprintln!("{test}: max |ort f16 - candle f32| = {diff:e}");
    assert!(diff > 0.0, "f16 weights should change the logits a little");
    assert!(diff <= 2e-2, "{test}: {diff:e}");
    let margin = want
        .iter()
        .map(|r| (r[0] - r[1]).abs())
        .fold(f32::INFINITY, f32::min);
    if margin > 2.0 * diff {
        assert_eq!(labels(&got), labels(&want));
    }
}

/// The real all-MiniLM-L6-v2 with random adapters of every method, on SST-2 dev sentences.
#[test]
fn minilm_parity_on_sst2() {
    let test = "minilm_parity_on_sst2";
    if !ort_available(test) {
        return;
    }
    let Some(m) = MiniLmSst2::load(test, 12) else {
        return;
    };
    let (tok, enc, items, info) = (&m.tokenizer, &m.enc, &m.items, &m.info);
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (MethodKind::Adept, Some(FoldMode::Folded), 20),
        (MethodKind::Adept, Some(FoldMode::Unfolded), 20),
        (MethodKind::Dept, None, 20),
        (MethodKind::Pt, None, 20),
        (MethodKind::HeadOnly, None, 0),
    ];
    let mut folded_vs_unfolded = Vec::new();
    for (i, (method, fold, l)) in cases.into_iter().enumerate() {
        let model = m.classifier(method, l, 64);
        let dir = export(
            &model,
            enc,
            tok,
            info,
            fold,
            WeightDtype::F32,
            tmp.path(),
            &format!("b{i}"),
        );
        let bundle = open(&dir);
        let want = candle_logits(&model, items, enc.pad_id);
        let got = ort_logits(&bundle, items);
        let diff = max_abs_diff(&got, &want);
        eprintln!("{test}: {method} {fold:?}: max |ort - candle| = {diff:e}");
        assert!(diff <= F32_TOL, "{method} {fold:?}: {diff:e}");
        assert_eq!(labels(&got), labels(&want), "{method} {fold:?}: labels");
        if method == MethodKind::Adept {
            folded_vs_unfolded.push(got);
        }
        drop(bundle);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // f16 weights on the real model (same tolerance argument as `f16_weights`).
    {
        let model = m.classifier(MethodKind::Adept, 20, 64);
        let dir = export(
            &model,
            enc,
            tok,
            info,
            None,
            WeightDtype::F16,
            tmp.path(),
            "f16",
        );
        let want = candle_logits(&model, items, enc.pad_id);
        let got = ort_logits(&open(&dir), items);
        let diff = max_abs_diff(&got, &want);
        eprintln!("{test}: f16 weights: max |ort - candle f32| = {diff:e}");
        assert!(diff <= 2e-2, "f16: {diff:e}");
        let margin = want
            .iter()
            .map(|r| (r[0] - r[1]).abs())
            .fold(f32::INFINITY, f32::min);
        eprintln!("{test}: smallest logit gap {margin:e}");
        if margin > 2.0 * diff {
            assert_eq!(labels(&got), labels(&want), "f16 labels");
        }
    }
    let diff = max_abs_diff(&folded_vs_unfolded[0], &folded_vs_unfolded[1]);
    eprintln!("{test}: MiniLM folded vs unfolded (both ONNX Runtime): {diff:e}");
    assert!(diff <= 1e-5, "folded vs unfolded {diff:e}");
}

/// `AttentionKind::Packed` (one `com.microsoft:Attention` with packed q/k/v; below opset 23,
/// where an encoder's attention is not ONNX's own) computes the same.
#[test]
fn packed_attention_matches_candle() {
    let test = "packed_attention_matches_candle";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    for (method, pooling) in [
        (MethodKind::Adept, Pooling::Mean),
        (MethodKind::HeadOnly, Pooling::Cls),
    ] {
        let model = tiny_classifier(method, pooling, 2, 4).unwrap();
        let info = testing::task_info("tiny", &["a", "b"], &["sentence1", "sentence2"]);
        let opts = adept_export::ExportOptions {
            attention: adept_export::AttentionKind::Packed,
            opset: 17,
            overwrite: true,
            ..Default::default()
        };
        let dir = tmp.path().join(format!("packed-{method}"));
        adept_export::export_classifier(&model, &enc, &tok, &info, &opts, &dir).unwrap();
        let items = encode_varied(&enc, TINY_SENTENCES, true);
        let want = candle_logits(&model, &items, enc.pad_id);
        let got = ort_logits(&open(&dir), &items);
        let diff = max_abs_diff(&got, &want);
        eprintln!("{test} {method}: {diff:e}");
        assert!(diff <= F32_TOL, "{test} {method}: {diff:e}");
        assert_eq!(labels(&got), labels(&want));
        // At the default opset the layout does not exist: a clear error, nothing written.
        let at_default = adept_export::ExportOptions {
            opset: adept_export::DEFAULT_OPSET,
            ..opts
        };
        let refused = tmp.path().join(format!("packed-default-{method}"));
        let err = adept_export::export_classifier(&model, &enc, &tok, &info, &at_default, &refused)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("AttentionKind::MultiHead"),
            "{err:#}"
        );
        assert!(
            !refused.exists(),
            "a refused export left {}",
            refused.display()
        );
    }
}
