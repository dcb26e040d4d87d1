//! The packed graph (the default: the encoder's projections, feed-forward and LayerNorms run on
//! the positions that hold tokens, `bert::onnx::encoder_packed`) against the padded graph
//! (`ExportOptions::pack_rows = false`: every position of the padded batch), both in ONNX
//! Runtime on the same padded batch of sentences of unequal lengths, and both against candle's
//! `Classifier::forward`.
//!
//! Bounds: packed vs padded ≤ 1e-5 in f32 (every token row goes through the same functions;
//! only the products' row blocking differs); packed vs candle ≤ 1e-4 (parity.rs's bound). int8
//! per row: ≤ 1e-3 (the same per-row scales and integer products; a value on a rounding edge
//! of its row's quantization may land one level apart); per tensor the scale is taken over the
//! token rows alone (the padded graph's includes the padding rows), so the two are held to the
//! same distance from f32, as lean.rs holds lean and full.
//!
//! * tiny random BERT (2 layers, token types), every method, lean and full, ONNX's `Attention`
//!   (the default opset 23) and `MultiHeadAttention` (opset 17), and the packed attention layout
//!   (one `com.microsoft:Attention` node over all rows, opset 17: emitted padded);
//! * one layer (emitted padded) and three;
//! * the tiny RoBERTa fixture (no token types);
//! * all-MiniLM-L6-v2 on 32 SST-2 dev sentences with a 60-row prompt, f32 and int8, when the
//!   model is cached.
//!
//! The packed export holds both encoders under an `If`: a batch without padding runs the
//! padded one, without a mask. So every comparison runs twice: on the batch that pads (the
//! packed branch) and on the same sentences cut to the shortest one's length (no padding: the
//! padded branch), each against the padded graph and candle.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, Int8Activations, WeightDtype};
use adept_export::testing;
use adept_export::{export_classifier, AttentionKind, ExportOptions, TaskInfo};
use adept_onnx::proto::decode_model;
use adept_train::tokenize::Encoded;
use adept_train::{Classifier, Pooling, TextEncoder};
use common::*;
use std::path::{Path, PathBuf};

const PACK_TOL: f32 = 1e-5;
const CANDLE_TOL: f32 = 1e-4;
const INT8_ROW_TOL: f32 = 1e-3;

/// Exports `model` with `opts` into `dir`, packed and padded: `(packed, padded)`.
fn export_both(
    model: &Classifier,
    enc: &TextEncoder,
    tok: &Path,
    info: &TaskInfo,
    opts: &ExportOptions,
    dir: &Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    let [packed, padded] = [true, false].map(|pack_rows| {
        let path = dir.join(format!(
            "{name}-{}",
            if pack_rows { "packed" } else { "padded" }
        ));
        let opts = ExportOptions {
            pack_rows,
            overwrite: true,
            ..opts.clone()
        };
        let report = export_classifier(model, enc, tok, info, &opts, &path).unwrap();
        // The summary `adept export` prints says which graph it wrote: packed exactly when the
        // graph gathers its rows (which `check_structure` ties to the layouts that pack).
        let said = if count_ops(&path, "NonZero") > 0 {
            "packed graph"
        } else {
            "padded graph"
        };
        assert!(report.to_string().contains(said), "{name}: {report}");
        assert!(
            pack_rows || !report.packed,
            "{name}: --no-pack wrote {report}"
        );
        path
    });
    (packed, padded)
}

/// How many nodes of `op` the bundle's graph has, its `If`'s branches included (`op`: a type
/// in any domain, or `domain:type`).
fn count_ops(bundle: &Path, op: &str) -> usize {
    let bytes = std::fs::read(bundle.join("model.onnx")).unwrap();
    let graph = decode_model(&bytes).unwrap().graph.unwrap();
    let (domain, op) = match op.split_once(':') {
        Some((d, o)) => (Some(d), o),
        None => (None, op),
    };
    adept_onnx::all_nodes(&graph)
        .into_iter()
        .filter(|n| n.op_type.as_deref() == Some(op))
        .filter(|n| domain.is_none_or(|d| n.domain.as_deref().unwrap_or("") == d))
        .count()
}

/// The packed bundle gathers its rows when `packs` (one `If`, one `NonZero` of the mask in its
/// packed branch; `GatherND`s: the first layer's residual and context, each middle layer's
/// query, key, value and context, the last layer's input), and the padded one never does.
fn check_structure(label: &str, packed: &Path, padded: &Path, layers: usize, packs: bool) {
    assert_eq!(count_ops(padded, "NonZero"), 0, "{label}: padded graph");
    assert_eq!(count_ops(padded, "GatherND"), 0, "{label}: padded graph");
    assert_eq!(count_ops(padded, "If"), 0, "{label}: padded graph");
    if packs {
        assert_eq!(count_ops(packed, "If"), 1, "{label}: packed graph");
        assert_eq!(count_ops(packed, "NonZero"), 1, "{label}: packed graph");
        let gathers = count_ops(packed, "GatherND");
        assert_eq!(
            gathers,
            2 + 4 * (layers - 2) + 1,
            "{label}: {gathers} GatherND for {layers} layers"
        );
    } else {
        assert_eq!(count_ops(packed, "NonZero"), 0, "{label}: emitted padded");
        assert_eq!(count_ops(packed, "If"), 0, "{label}: emitted padded");
    }
}

/// `items` cut to the shortest one's length: a batch without padding (the packed export's
/// padded branch), still of different sentences.
fn unpadded(items: &[Encoded]) -> Vec<Encoded> {
    let len = items.iter().map(|e| e.ids.len()).min().unwrap();
    let cut: Vec<Encoded> = items
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.ids.truncate(len);
            e.type_ids.truncate(len);
            e
        })
        .collect();
    assert!(cut
        .iter()
        .all(|e| e.ids.len() == len && e.type_ids.len() == len));
    cut
}

/// The batch pads: its sentences are of unequal lengths (else packing changes nothing).
fn assert_padded(items: &[Encoded]) {
    let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
    let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
    assert!(hi > lo, "sentences of one length: {lens:?}");
}

/// Runs both bundles and candle on `items` (a batch that pads); asserts packed = padded
/// (`PACK_TOL`) and packed = candle (`CANDLE_TOL`) with the same labels, and that the logits
/// depend on the input.
fn compare(
    label: &str,
    model: &Classifier,
    packed: &Path,
    padded: &Path,
    items: &[Encoded],
    pad_id: u32,
) {
    assert_padded(items);
    let forms = [("packed", packed), ("padded", padded)];
    compare_forms(label, model, forms, items, pad_id, [PACK_TOL, CANDLE_TOL]);
    let label = format!("{label}, no padding");
    compare_forms(
        &label,
        model,
        forms,
        &unpadded(items),
        pad_id,
        [PACK_TOL, CANDLE_TOL],
    );
}

/// The attention mask's values beyond 0/1: a position below 0 is padding and one above 1 a
/// token, in the packed and the padded encoder alike and at both opsets (CLS pooling, so only
/// the encoder reads the mask): the logits equal those of the 0/1 mask.
#[test]
fn mask_values_below_0_are_padding_and_above_1_tokens() {
    let test = "mask_values_below_0_are_padding_and_above_1_tokens";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, _) = tiny_pair_sentences(tmp.path());
    let items = encode_varied(&enc, TINY_SENTENCES, true);
    assert_padded(&items);
    let model = testing::tiny_classifier(MethodKind::Adept, Pooling::Cls, 3, 5).unwrap();
    for opset in [adept_export::DEFAULT_OPSET, 17] {
        let opts = ExportOptions {
            fold: Some(FoldMode::Folded),
            opset,
            ..Default::default()
        };
        let name = format!("mask-values-opset{opset}");
        let (packed, padded) = export_both(&model, &enc, &tok, &info, &opts, tmp.path(), &name);
        for (form, path) in [("packed", &packed), ("padded", &padded)] {
            let bundle = open(path);
            let refs: Vec<&Encoded> = items.iter().collect();
            let batch = adept_runtime::PaddedBatch::collate(&refs, enc.pad_id);
            let want = bundle.run_batch(&batch).unwrap();
            let mut odd = batch.clone();
            for m in &mut odd.attention_mask {
                *m = if *m == 0 { -1 } else { 2 };
            }
            let got = bundle.run_batch(&odd).unwrap();
            let d = max_abs_diff(&got, &want);
            eprintln!("{name} {form}: mask -1/2 vs 0/1: {d:e}");
            assert!(d <= PACK_TOL, "{name} {form}: mask -1/2 vs 0/1: {d:e}");
        }
    }
}

#[test]
fn tiny_packed_equals_padded_every_method() {
    let test = "tiny_packed_equals_padded_every_method";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, _) = tiny_pair_sentences(tmp.path());
    // Pairs (token types 1) and single sentences, both padded.
    for pairs in [true, false] {
        let items = encode_varied(&enc, TINY_SENTENCES, pairs);
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
            // tiny_config: 2 layers.
            let layers = 2;
            let d = adept_export::DEFAULT_OPSET;
            for (lean, attention, opset) in [
                (true, AttentionKind::MultiHead, d),
                (false, AttentionKind::MultiHead, d),
                (true, AttentionKind::MultiHead, 17),
                (true, AttentionKind::Packed, 17),
            ] {
                let name = format!(
                    "{method}-{fold:?}-{pooling:?}-lean{lean}-{attention:?}-opset{opset}-pairs{pairs}"
                );
                let opts = ExportOptions {
                    fold,
                    lean,
                    attention,
                    opset,
                    ..Default::default()
                };
                let (packed, padded) =
                    export_both(&model, &enc, &tok, &info, &opts, tmp.path(), &name);
                let packs = attention == AttentionKind::MultiHead;
                check_structure(&name, &packed, &padded, layers, packs);
                compare(&name, &model, &packed, &padded, &items, enc.pad_id);
            }
        }
    }
}

/// The weight forms on the tiny model (3 layers, so a middle layer is packed too): f16 weights
/// and int8 per row and in blocks equal the padded graph (every row's scale is its own); per
/// tensor the scale is the whole tensor's, so packed and padded are each held to f32. And one
/// sentence at a time (no padding: packing is the identity) equals the padded graph.
#[test]
fn tiny_packed_dtypes_and_single_sentences() {
    let test = "tiny_packed_dtypes_and_single_sentences";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, items) = tiny_single_sentences(tmp.path());
    let model = tiny_depth_classifier(3, 5, MethodKind::Adept, Pooling::Mean);
    let want = candle_logits(&model, &items, enc.pad_id);
    let keep_qkv = || Some(vec!["attention.self".to_string()]);
    let d = adept_export::DEFAULT_OPSET;
    for (name, dtype, activations, keep_float, tol, opset) in [
        (
            "f16",
            WeightDtype::F16,
            Int8Activations::PerRow,
            None,
            PACK_TOL,
            d,
        ),
        (
            "int8-per-row",
            WeightDtype::Int8,
            Int8Activations::PerRow,
            None,
            INT8_ROW_TOL,
            d,
        ),
        // Below opset 23 (`MultiHeadAttention`) int8's padded branch keeps the key mask.
        (
            "int8-per-row-opset17",
            WeightDtype::Int8,
            Int8Activations::PerRow,
            None,
            INT8_ROW_TOL,
            17,
        ),
        // q/k/v kept float in an int8 graph: three products on both paths (and at opset 17 no
        // packed `com.microsoft:Attention` node), as the export's check of kept products sees
        // them.
        (
            "int8-per-row-qkv-float",
            WeightDtype::Int8,
            Int8Activations::PerRow,
            keep_qkv(),
            INT8_ROW_TOL,
            d,
        ),
        (
            "int8-per-row-qkv-float-opset17",
            WeightDtype::Int8,
            Int8Activations::PerRow,
            keep_qkv(),
            INT8_ROW_TOL,
            17,
        ),
        (
            "int8-blocks",
            WeightDtype::Int8,
            Int8Activations::Blocks(16),
            None,
            INT8_ROW_TOL,
            d,
        ),
        (
            "int8-per-tensor",
            WeightDtype::Int8,
            Int8Activations::PerTensor,
            None,
            f32::INFINITY,
            d,
        ),
    ] {
        let opts = ExportOptions {
            fold: Some(FoldMode::Folded),
            dtype,
            int8_activations: activations,
            int8_keep_float: keep_float.unwrap_or_else(|| ExportOptions::default().int8_keep_float),
            opset,
            ..Default::default()
        };
        let (packed, padded) = export_both(&model, &enc, &tok, &info, &opts, tmp.path(), name);
        check_structure(name, &packed, &padded, 3, true);
        assert_padded(&items);
        let got = ort_logits(&open(&packed), &items);
        let base = ort_logits(&open(&padded), &items);
        let d_both = max_abs_diff(&got, &base);
        let (d_packed, d_padded) = (max_abs_diff(&got, &want), max_abs_diff(&base, &want));
        eprintln!(
            "{name}: max |packed - padded| = {d_both:e}; from candle f32: packed {d_packed:e}, padded {d_padded:e}"
        );
        assert!(
            d_both <= tol,
            "{name}: packed vs padded {d_both:e} > {tol:e}"
        );
        // Per tensor: both quantizations about as far from f32 (a broken packing would be off
        // by the size of the logits).
        let scale = want.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            d_packed <= 2.0 * d_padded.max(0.01 * scale),
            "{name}: packed {d_packed:e} vs padded {d_padded:e} from f32"
        );
        // One sentence at a time: no padding, the packing gathers every row in order (per
        // tensor too: the same rows set the scale).
        if dtype == WeightDtype::Int8 {
            assert_eq!(
                count_ops(&packed, "com.microsoft:Attention"),
                0,
                "{name}: int8 keeps the products"
            );
        }
        let (packed, padded) = (open(&packed), open(&padded));
        // Several sentences without padding (the packed export's padded branch: below opset 23
        // int8 keeps the mask there, so the same kernels as the padded graph; ONNX's
        // `Attention` gives the same bits without it): equal, per tensor too.
        let cut = unpadded(&items);
        let d = max_abs_diff(&ort_logits(&packed, &cut), &ort_logits(&padded, &cut));
        let bound = tol.min(INT8_ROW_TOL);
        eprintln!("{name}: no padding, max |packed - padded| = {d:e}");
        assert!(
            d <= bound,
            "{name}: no padding, packed vs padded {d:e} > {bound:e}"
        );
        for item in items.iter().take(3) {
            let one = std::slice::from_ref(item);
            let d = max_abs_diff(&ort_logits(&packed, one), &ort_logits(&padded, one));
            assert!(
                d <= INT8_ROW_TOL,
                "{name}: one sentence, packed vs padded {d:e}"
            );
        }
    }
}

/// One layer (the first layer is the last: emitted padded) and three (two middle layers
/// between the lean first and the last).
#[test]
fn packed_one_and_three_layers() {
    let test = "packed_one_and_three_layers";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tok, enc, info, items) = tiny_single_sentences(tmp.path());
    for layers in [1, 3] {
        for (method, pooling) in [
            (MethodKind::Adept, Pooling::Mean),
            (MethodKind::Pt, Pooling::Cls),
        ] {
            let model = tiny_depth_classifier(layers, 3, method, pooling);
            let name = format!("{layers}-layers-{method}");
            let (packed, padded) = export_both(
                &model,
                &enc,
                &tok,
                &info,
                &ExportOptions::default(),
                tmp.path(),
                &name,
            );
            check_structure(&name, &packed, &padded, layers, layers >= 2);
            compare(&name, &model, &packed, &padded, &items, enc.pad_id);
        }
    }
}

/// RoBERTa-style positions and no token types.
#[test]
fn tiny_roberta_packed_equals_padded() {
    let test = "tiny_roberta_packed_equals_padded";
    if !ort_available(test) {
        return;
    }
    let r = TinyRoberta::load();
    let tmp = tempfile::tempdir().unwrap();
    for (method, fold) in TinyRoberta::METHODS {
        let model = r.classifier(method);
        let name = format!("roberta-{method}");
        let opts = ExportOptions {
            fold,
            ..Default::default()
        };
        let (packed, padded) = export_both(
            &model,
            &r.enc,
            &r.tokenizer,
            &r.info,
            &opts,
            tmp.path(),
            &name,
        );
        // The fixture has 2 layers.
        check_structure(&name, &packed, &padded, 2, true);
        compare(&name, &model, &packed, &padded, &r.items, r.enc.pad_id);
    }
}

/// all-MiniLM-L6-v2, a 60-row prompt, 32 SST-2 dev sentences padded together: f32 (ADePT
/// folded, PT), int8 per row (equal to the padded int8 graph but for rounding edges) and per
/// tensor (held to the padded graph's distance from f32).
#[test]
fn minilm_packed_equals_padded_on_sst2() {
    let test = "minilm_packed_equals_padded_on_sst2";
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
        (MethodKind::Pt, None),
    ] {
        let model = m.classifier(method, 60, 128);
        let name = format!("minilm-{method}");
        let opts = ExportOptions {
            fold,
            ..Default::default()
        };
        let (packed, padded) = export_both(&model, enc, tok, info, &opts, tmp.path(), &name);
        check_structure(&name, &packed, &padded, 6, true);
        compare(&name, &model, &packed, &padded, items, enc.pad_id);
        if method != MethodKind::Adept {
            continue;
        }
        let want = candle_logits(&model, items, enc.pad_id);
        let scale = want.iter().flatten().fold(0.0f32, |m, v| m.max(v.abs()));
        for activations in [Int8Activations::PerRow, Int8Activations::PerTensor] {
            let name = format!("minilm-int8-{activations}");
            let opts = ExportOptions {
                fold,
                dtype: WeightDtype::Int8,
                int8_activations: activations,
                ..Default::default()
            };
            let (packed, padded) = export_both(&model, enc, tok, info, &opts, tmp.path(), &name);
            let got = ort_logits(&open(&packed), items);
            let base = ort_logits(&open(&padded), items);
            let (d_both, d_packed, d_padded) = (
                max_abs_diff(&got, &base),
                max_abs_diff(&got, &want),
                max_abs_diff(&base, &want),
            );
            eprintln!(
                "{name}: max |packed - padded| = {d_both:e}, |packed - candle f32| = {d_packed:e}, |padded - candle f32| = {d_padded:e} (largest |logit| {scale:e})"
            );
            match activations {
                Int8Activations::PerRow => assert!(
                    d_both <= INT8_ROW_TOL,
                    "{name}: packed vs padded {d_both:e} > {INT8_ROW_TOL:e}"
                ),
                _ => {
                    assert!(
                        d_packed <= 0.2 * scale,
                        "{name}: packed vs f32 {d_packed:e}"
                    );
                    assert!(
                        d_packed <= 1.5 * d_padded,
                        "{name}: packed {d_packed:e} vs padded {d_padded:e} from f32"
                    );
                }
            }
        }
    }
}
