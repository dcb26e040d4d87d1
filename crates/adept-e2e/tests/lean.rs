//! The lean graph (the default: the soft prompt's embedding output and first-layer q/k/v
//! projections precomputed at export, `bert::onnx::prompt_rows`) against the full graph
//! (`ExportOptions::lean = false`: the prompt concatenated in the graph and run through
//! everything), both in ONNX Runtime on the same padded batch, and both against candle's
//! `Classifier::forward`.
//!
//! Bounds: lean vs full ≤ 1e-5 (the same functions in f32; only the summation order of the
//! prompt rows' projections differs, candle's gemm at export vs ONNX Runtime's at run time, a
//! few ulps of values of order 1 that later layers carry to the logits); lean vs candle ≤ 1e-4
//! (the parity bound of parity.rs).
//!
//! * tiny random BERT (2 layers, token types), every method, both attention layouts;
//! * edge depths: one layer (the first layer is also the last, whose queries are the input
//!   rows only) and no layers;
//! * the tiny RoBERTa fixture (positions from `pad_token_id + 1`, no token types);
//! * all-MiniLM-L6-v2 on SST-2 dev sentences with a 60-row prompt (ADePT folded, DePT, PT;
//!   int8 too), when the model is cached.

mod common;

use adept_adapters::MethodKind;
use adept_backbones::bert::onnx::{PROMPT_OUTPUT, PROMPT_PROJECTIONS};
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::testing;
use adept_export::{export_classifier, AttentionKind, ExportOptions, TaskInfo};
use adept_onnx::proto::{decode_model, TensorProto};
use adept_train::tokenize::Encoded;
use adept_train::{Classifier, Pooling, TextEncoder};
use common::*;
use std::path::{Path, PathBuf};

const LEAN_TOL: f32 = 1e-5;
const CANDLE_TOL: f32 = 1e-4;

/// Exports `model` twice into `dir`, lean and full: `(lean, full)` bundle folders.
#[allow(clippy::too_many_arguments)]
fn export_both(
    model: &Classifier,
    enc: &TextEncoder,
    tok: &Path,
    info: &TaskInfo,
    fold: Option<FoldMode>,
    dtype: WeightDtype,
    attention: AttentionKind,
    opset: i64,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    let mut out = Vec::new();
    for lean in [true, false] {
        let path = dir.join(format!("{name}-{}", if lean { "lean" } else { "full" }));
        let opts = ExportOptions {
            fold,
            dtype,
            attention,
            opset,
            lean,
            overwrite: true,
            ..Default::default()
        };
        export_classifier(model, enc, tok, info, &opts, &path).unwrap();
        out.push(path);
    }
    let full = out.pop().unwrap();
    (out.pop().unwrap(), full)
}

fn initializers(bundle: &Path) -> Vec<TensorProto> {
    let bytes = std::fs::read(bundle.join("model.onnx")).unwrap();
    decode_model(&bytes).unwrap().graph.unwrap().initializer
}

fn dims_of(inits: &[TensorProto], name: &str) -> Option<Vec<i64>> {
    inits
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .map(|t| t.dims.clone())
}

/// The graphs hold what each form says: the lean one the precomputed prompt rows (`[l, d]`) and
/// not the prompt, the full one the prompt and none of the precomputed rows.
fn check_initializers(lean: &Path, full: &Path, l: usize, d: usize, attention: AttentionKind) {
    let (lean, full) = (initializers(lean), initializers(full));
    let rows = [l as i64, d as i64].to_vec();
    let projections = PROMPT_PROJECTIONS.map(|n| format!("encoder.layer.0.attention.self.{n}"));
    if l == 0 {
        assert_eq!(dims_of(&lean, PROMPT_OUTPUT), None);
    } else {
        assert_eq!(dims_of(&lean, PROMPT_OUTPUT), Some(rows.clone()));
        assert_eq!(
            dims_of(&lean, adept_adapters::PROMPT),
            None,
            "lean: no prompt"
        );
        assert_eq!(dims_of(&full, adept_adapters::PROMPT), Some(rows.clone()));
        for p in &projections {
            let want = (attention == AttentionKind::MultiHead).then(|| rows.clone());
            assert_eq!(dims_of(&lean, p), want, "{p}");
        }
    }
    assert_eq!(dims_of(&full, PROMPT_OUTPUT), None);
    for p in &projections {
        assert_eq!(dims_of(&full, p), None, "full: {p}");
    }
}

/// Runs both bundles and candle on `items`; asserts lean = full (`LEAN_TOL`) and lean = candle
/// (`CANDLE_TOL`), same labels; returns `(|lean - full|, |lean - candle|)`.
fn compare(
    label: &str,
    model: &Classifier,
    lean: &Path,
    full: &Path,
    items: &[Encoded],
    pad_id: u32,
) -> (f32, f32) {
    let forms = [("lean", lean), ("full", full)];
    compare_forms(label, model, forms, items, pad_id, [LEAN_TOL, CANDLE_TOL])
}

#[test]
fn tiny_lean_equals_full_every_method() {
    let test = "tiny_lean_equals_full_every_method";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, items) = tiny_pair_sentences(tmp.path());
    assert!(items.iter().any(|e| e.type_ids.contains(&1)), "type 1 rows");
    for (i, (method, fold, pooling)) in [
        (MethodKind::Adept, Some(FoldMode::Folded), Pooling::Mean),
        (MethodKind::Adept, Some(FoldMode::Unfolded), Pooling::Cls),
        (MethodKind::Dept, None, Pooling::Mean),
        (MethodKind::Pt, None, Pooling::Cls),
        (MethodKind::HeadOnly, None, Pooling::Mean),
    ]
    .into_iter()
    .enumerate()
    {
        let model = testing::tiny_classifier(method, pooling, 3, 11 + i as u64).unwrap();
        // ONNX's `Attention` (the default opset), and below opset 23 `MultiHeadAttention` and
        // the packed `com.microsoft:Attention`.
        for (attention, opset) in [
            (AttentionKind::MultiHead, adept_export::DEFAULT_OPSET),
            (AttentionKind::MultiHead, 17),
            (AttentionKind::Packed, 17),
        ] {
            let name = format!("{method}-{fold:?}-{attention:?}-opset{opset}");
            let (lean, full) = export_both(
                &model,
                &enc,
                &tok,
                &info,
                fold,
                WeightDtype::F32,
                attention,
                opset,
                tmp.path(),
                &name,
            );
            check_initializers(&lean, &full, model.adapter.prompt_len(), 16, attention);
            compare(&name, &model, &lean, &full, &items, enc.pad_id);
        }
    }
}

/// The padded graph (`pack_rows: false`; the other tests here export the default, packed):
/// lean equals full there too.
#[test]
fn tiny_lean_equals_full_padded_graph() {
    let test = "tiny_lean_equals_full_padded_graph";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, items) = tiny_pair_sentences(tmp.path());
    for (i, (method, fold)) in [
        (MethodKind::Adept, Some(FoldMode::Folded)),
        (MethodKind::Pt, None),
    ]
    .into_iter()
    .enumerate()
    {
        let model = testing::tiny_classifier(method, Pooling::Mean, 3, 31 + i as u64).unwrap();
        let [lean, full] = [true, false].map(|lean| {
            let path = tmp.path().join(format!("{method}-padded-lean{lean}"));
            let opts = ExportOptions {
                fold,
                lean,
                pack_rows: false,
                overwrite: true,
                ..Default::default()
            };
            export_classifier(&model, &enc, &tok, &info, &opts, &path).unwrap();
            path
        });
        let name = format!("{method}-padded");
        check_initializers(
            &lean,
            &full,
            model.adapter.prompt_len(),
            16,
            AttentionKind::MultiHead,
        );
        compare(&name, &model, &lean, &full, &items, enc.pad_id);
    }
}

/// One layer (the first layer is the last: queries from the input rows only, keys and values
/// from the constant prompt rows and the input rows) and no layers (only the embedding output).
#[test]
fn lean_one_layer_and_no_layers() {
    let test = "lean_one_layer_and_no_layers";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, items) = tiny_single_sentences(tmp.path());
    for layers in [1, 0] {
        // No layers: the first input row is the same token for every sentence, so CLS pooling
        // would give equal logits; mean pooling there.
        let cls = if layers > 0 {
            Pooling::Cls
        } else {
            Pooling::Mean
        };
        for (method, pooling) in [(MethodKind::Adept, Pooling::Mean), (MethodKind::Pt, cls)] {
            let model = tiny_depth_classifier(layers, 3, method, pooling);
            let name = format!("{layers}-layers-{method}");
            let (lean, full) = export_both(
                &model,
                &enc,
                &tok,
                &info,
                None,
                WeightDtype::F32,
                AttentionKind::MultiHead,
                adept_export::DEFAULT_OPSET,
                tmp.path(),
                &name,
            );
            compare(&name, &model, &lean, &full, &items, enc.pad_id);
        }
    }
}

/// RoBERTa-style positions (`pad_token_id + 1` on) and no token types: the prompt rows'
/// positions are still constant, the lean graph still equals the full one.
#[test]
fn tiny_roberta_lean_equals_full() {
    let test = "tiny_roberta_lean_equals_full";
    if !ort_available(test) {
        return;
    }
    let r = TinyRoberta::load();
    let roberta = r
        .backbone
        .as_any()
        .downcast_ref::<adept_backbones::BertEncoder>()
        .unwrap();
    assert!(roberta.config.position_offset() > 0, "RoBERTa-style offset");
    let tmp = tempfile::tempdir().unwrap();
    for (method, fold) in TinyRoberta::METHODS {
        let model = r.classifier(method);
        let name = format!("roberta-{method}");
        let (lean, full) = export_both(
            &model,
            &r.enc,
            &r.tokenizer,
            &r.info,
            fold,
            WeightDtype::F32,
            AttentionKind::MultiHead,
            adept_export::DEFAULT_OPSET,
            tmp.path(),
            &name,
        );
        compare(&name, &model, &lean, &full, &r.items, r.enc.pad_id);
    }
}

/// all-MiniLM-L6-v2, a 60-row prompt (the serving setting), 32 SST-2 dev sentences padded
/// together. int8: the lean graph quantizes the first layer's input from the input rows alone
/// (the prompt rows' projections are float constants), so lean and full int8 differ by
/// quantization, not rounding; both are held to the same distance from candle f32 and to the
/// f32 labels.
#[test]
fn minilm_lean_equals_full_on_sst2() {
    let test = "minilm_lean_equals_full_on_sst2";
    if !ort_available(test) {
        return;
    }
    let Some(m) = MiniLmSst2::load(test, 32) else {
        return;
    };
    let (tok, enc, items, info) = (&m.tokenizer, &m.enc, &m.items, &m.info);
    let tmp = tempfile::tempdir().unwrap();
    for (method, fold) in [
        (MethodKind::Adept, Some(FoldMode::Folded)),
        (MethodKind::Dept, None),
        (MethodKind::Pt, None),
    ] {
        let model = m.classifier(method, 60, 128);
        let name = format!("minilm-{method}");
        let (lean, full) = export_both(
            &model,
            enc,
            tok,
            info,
            fold,
            WeightDtype::F32,
            AttentionKind::MultiHead,
            adept_export::DEFAULT_OPSET,
            tmp.path(),
            &name,
        );
        check_initializers(&lean, &full, 60, 384, AttentionKind::MultiHead);
        compare(&name, &model, &lean, &full, items, enc.pad_id);
        std::fs::remove_dir_all(&lean).unwrap();
        std::fs::remove_dir_all(&full).unwrap();
        if method != MethodKind::Adept {
            continue;
        }
        let (lean, full) = export_both(
            &model,
            enc,
            tok,
            info,
            fold,
            WeightDtype::Int8,
            AttentionKind::MultiHead,
            adept_export::DEFAULT_OPSET,
            tmp.path(),
            "minilm-int8",
        );
        let want = candle_logits(&model, items, enc.pad_id);
        let got_lean = ort_logits(&open(&lean), items);
        let got_full = ort_logits(&open(&full), items);
        let (d_lean, d_full) = (
            max_abs_diff(&got_lean, &want),
            max_abs_diff(&got_full, &want),
        );
        let d_both = max_abs_diff(&got_lean, &got_full);
        eprintln!(
            "{test}: int8: max |lean - candle f32| = {d_lean:e}, |full - candle f32| = {d_full:e}, |lean - full| = {d_both:e}"
        );
        let scale = want.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!("{test}: int8: largest |logit| {scale:e}");
        let mean_err = |got: &[Vec<f32>]| {
            let d: Vec<f32> = got
                .iter()
                .flatten()
                .zip(want.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .collect();
            d.iter().sum::<f32>() / d.len() as f32
        };
        let (m_lean, m_full) = (mean_err(&got_lean), mean_err(&got_full));
        eprintln!(
            "{test}: int8: mean |lean - candle f32| = {m_lean:e}, |full - candle f32| = {m_full:e}"
        );
        // int8 error relative to the logits' scale, and the lean graph no further from f32 than
        // the full one on average (beyond a margin: the two quantize different first-layer
        // inputs; the largest errors over 32 sentences swap places with the rounding of the
        // step: 0.116 / 0.101 dividing by the row maximum, 0.143 / 0.087 with the step).
        assert!(d_lean <= INT8_REL * scale, "int8 lean vs f32 {d_lean:e}");
        assert!(d_full <= INT8_REL * scale, "int8 full vs f32 {d_full:e}");
        assert!(
            m_lean <= 1.5 * m_full,
            "int8 lean {m_lean:e} vs full {m_full:e} (mean errors)"
        );
        let agree = |got: &[Vec<f32>]| {
            labels(got)
                .iter()
                .zip(labels(&want))
                .filter(|(a, b)| **a == *b)
                .count()
        };
        eprintln!(
            "{test}: int8 labels equal to f32: lean {}, full {} of {}",
            agree(&got_lean),
            agree(&got_full),
            want.len()
        );
        assert!(agree(&got_lean) >= agree(&got_full).saturating_sub(1));
    }
}

/// int8 logits against candle f32, relative to the largest |logit| (a random head on MiniLM:
/// largest |logit| 1.6 here; the int8 graph errs by 0.16 (lean) and 0.23 (full) on these 32
/// sentences).
const INT8_REL: f32 = 0.2;
