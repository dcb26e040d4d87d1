//! ADePT folding is exact: the table in the graph is `E + f(E)` row for row, and the folded
//! graph gives the unfolded graph's logits.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::emit::adapter::{B1, B2, W_DOWN, W_UP};
use adept_export::testing::{self, tiny_classifier, write_tiny_tokenizer};
use adept_export::{classifier_graph, GraphOptions};
use adept_onnx::proto::{decode_model, TensorProto};
use adept_train::{Classifier, Pooling};
use common::*;

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The model's initializers, by name.
fn initializers(model: &Classifier, fold: FoldMode) -> Vec<TensorProto> {
    let opts = GraphOptions {
        fold,
        dtype: WeightDtype::F32,
        int8_activations: Default::default(),
        int8_keep_float: Vec::new(),
        int8_per_row: None,
        opset: 17,
        attention: Default::default(),
        lean: true,
        pack_rows: true,
    };
    let bytes = classifier_graph(model, &opts).unwrap().to_bytes().unwrap();
    decode_model(&bytes).unwrap().graph.unwrap().initializer
}

fn find<'a>(inits: &'a [TensorProto], name: &str) -> Option<&'a TensorProto> {
    inits.iter().find(|t| t.name.as_deref() == Some(name))
}

/// Relative tolerance of an f32 value against its f64 reference, relative to the summed
/// magnitude of the terms that make it (|e| + |b2| + Σ_j (|b1_j| + Σ_i |e_i·W_down_ij|)·|W_up_jc|).
/// Rounding in f32 (u = 2⁻²⁴ ≈ 6e-8) errs by at most n·u of that magnitude for a sum of n terms
/// and typically by √n·u: about 1e-6 for MiniLM's n ≈ 400, 3e-7 for the tiny model's n ≈ 20.
/// 1e-5 leaves room for that; a wrong row, term or sign (an offset of order 0.1) is 10⁴ times
/// larger.
const REL_TOL: f64 = 1e-5;

/// Checks `rows` rows of the folded table in the graph against `E + ReLU(E·W_down + b1)·W_up + b2`
/// computed here in f64, in plain loops, from the raw table and the adapter's tensors (not from
/// `fold_table` or `token_offsets`). Returns the mean |f(E)| (to show the offsets are not
/// trivially zero).
fn check_folded_table(model: &Classifier, rows: impl Iterator<Item = usize>) -> f64 {
    let inits = initializers(model, FoldMode::Folded);
    let table =
        find(&inits, "adapter.folded_word_embeddings.weight").expect("folded table in the graph");
    assert!(
        find(&inits, "embeddings.word_embeddings.weight").is_none(),
        "the raw table must not be in a folded graph"
    );
    assert!(
        find(&inits, W_DOWN).is_none(),
        "the MLP must not be in a folded graph"
    );
    let (vocab, d) = model.backbone.word_embedding_table().dims2().unwrap();
    assert_eq!(table.dims, [vocab as i64, d as i64]);
    let got = table.to_f32_vec().unwrap();
    // Bit-for-bit what the adapter's own fold computes (so `fold_table`, checked against the
    // reference below through the graph, is what export writes).
    assert_eq!(
        got,
        flat(
            &model
                .adapter
                .fold_table(model.backbone.word_embedding_table())
                .unwrap()
        )
    );

    let ts = model.adapter.tensors();
    let r = model.adapter.config.rank;
    let (w_down, b1, w_up, b2) = (
        flat(&ts[W_DOWN]),
        flat(&ts[B1]),
        flat(&ts[W_UP]),
        flat(&ts[B2]),
    );
    assert_eq!(
        (w_down.len(), b1.len(), w_up.len(), b2.len()),
        (d * r, r, r * d, d)
    );
    // ADePT initialises W_up = b2 = 0 (f ≡ 0, folding trivially exact): the test needs them set.
    assert!(
        w_up.iter().any(|&v| v != 0.0) && b2.iter().any(|&v| v != 0.0),
        "W_up and b2 must be non-zero for this check to mean anything"
    );
    let e = flat(model.backbone.word_embedding_table());
    let (mut worst_abs, mut worst_rel, mut offset_sum, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    let (mut active, mut inactive) = (0usize, 0usize);
    for row in rows {
        let x = &e[row * d..(row + 1) * d];
        let mut hidden = vec![0.0f64; r];
        let mut hidden_mag = vec![0.0f64; r];
        for j in 0..r {
            let mut z = b1[j] as f64;
            let mut mag = (b1[j] as f64).abs();
            for i in 0..d {
                let term = x[i] as f64 * w_down[i * r + j] as f64;
                z += term;
                mag += term.abs();
            }
            if z > 0.0 {
                active += 1;
            } else {
                inactive += 1;
            }
            hidden[j] = z.max(0.0);
            hidden_mag[j] = mag;
        }
        for c in 0..d {
            let mut f = b2[c] as f64;
            let mut mag = (x[c] as f64).abs() + (b2[c] as f64).abs();
            for j in 0..r {
                f += hidden[j] * w_up[j * d + c] as f64;
                // The hidden unit at its pre-activation terms' size: its own rounding error
                // passes through W_up.
                mag += hidden_mag[j] * (w_up[j * d + c] as f64).abs();
            }
            let want = x[c] as f64 + f;
            let value = got[row * d + c] as f64;
            let err = (value - want).abs();
            assert!(
                err <= REL_TOL * mag,
                "folded table row {row} col {c}: {value} vs E + f(E) = {want} \
                 (error {err:e}, terms' magnitude {mag})"
            );
            worst_abs = worst_abs.max(err);
            worst_rel = worst_rel.max(err / mag);
            offset_sum += f.abs();
            n += 1;
        }
    }
    eprintln!(
        "folded table: max |table - (E + f(E))| = {worst_abs:e} (relative {worst_rel:e}) \
         over {n} values; hidden units active/inactive {active}/{inactive}"
    );
    // The ReLU must both pass and block many units, or dropping it (or W_up) would go unnoticed.
    assert!(
        active * 10 >= active + inactive && inactive * 10 >= active + inactive,
        "ReLU not exercised: {active} active, {inactive} inactive"
    );
    offset_sum / n as f64
}

#[test]
fn tiny_folded_table_is_e_plus_f_of_e() {
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 5).unwrap();
    let vocab = model.backbone.vocab_size();
    let d = model.backbone.hidden_size();
    assert_eq!(
        model.backbone.word_embedding_table().dims2().unwrap(),
        (vocab, d)
    );
    // The tiny table's rows are small next to the random b1, so with the helper's values the
    // ReLU blocks almost every hidden unit (2 of 144) and W_up hardly enters f. Centre b1 on the
    // median pre-activation of each unit over the table, so each unit is active for half the rows.
    let r = model.adapter.config.rank;
    // Copies: a Var cannot be set from its own storage.
    let mut tensors: std::collections::HashMap<String, candle_core::Tensor> = model
        .adapter
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy().unwrap()))
        .collect();
    let (e, w_down) = (
        flat(model.backbone.word_embedding_table()),
        flat(&tensors[W_DOWN]),
    );
    let b1: Vec<f32> = (0..r)
        .map(|j| {
            let mut z: Vec<f64> = (0..vocab)
                .map(|row| {
                    (0..d)
                        .map(|i| e[row * d + i] as f64 * w_down[i * r + j] as f64)
                        .sum()
                })
                .collect();
            z.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (-(z[vocab / 2 - 1] + z[vocab / 2]) / 2.0) as f32
        })
        .collect();
    tensors.insert(
        B1.to_string(),
        candle_core::Tensor::from_vec(b1, r, &candle_core::Device::Cpu).unwrap(),
    );
    model.adapter.set_values(&tensors).unwrap();
    // Every row of the table.
    let mean_offset = check_folded_table(&model, 0..vocab);
    assert!(
        mean_offset > 0.05,
        "offsets too small to test anything: {mean_offset}"
    );

    // The unfolded graph carries the raw table and the MLP under their PEFT names.
    let inits = initializers(&model, FoldMode::Unfolded);
    for name in [
        "embeddings.word_embeddings.weight",
        W_DOWN,
        B1,
        W_UP,
        B2,
        // The lean graph (default) holds the prompt rows' precomputed embedding output, not
        // the prompt itself (tests/lean.rs).
        adept_backbones::bert::onnx::PROMPT_OUTPUT,
    ] {
        assert!(
            find(&inits, name).is_some(),
            "{name} missing from the unfolded graph"
        );
    }
    assert!(find(&inits, "adapter.folded_word_embeddings.weight").is_none());
}

#[test]
fn minilm_folded_table_is_e_plus_f_of_e() {
    let Some(dir) = adept_testkit::model_dir("minilm_folded_table_is_e_plus_f_of_e") else {
        return;
    };
    let backbone = adept_backbones::load_encoder(&dir, &candle_core::Device::Cpu).unwrap();
    let adapter =
        testing::random_adapter(&*backbone, MethodKind::Adept, 4, 19, 64, 3, 0.1).unwrap();
    let head = testing::random_head(384, 2, 1).unwrap();
    let model = Classifier {
        backbone,
        adapter,
        head,
        pooling: Pooling::Mean,
    };
    // Every 13th row and the last one (all 30,522 rows are checked bit for bit above).
    let vocab = model.backbone.vocab_size();
    let mean_offset = check_folded_table(&model, (0..vocab).step_by(13).chain([vocab - 1]));
    assert!(mean_offset > 0.01, "offsets too small: {mean_offset}");
}

#[test]
fn folded_and_unfolded_graphs_agree_in_onnx_runtime() {
    let test = "folded_and_unfolded_graphs_agree_in_onnx_runtime";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("tiny", &["a", "b", "c"], &["sentence1", "sentence2"]);
    for (seed, pooling) in [(1, Pooling::Mean), (2, Pooling::Cls)] {
        let model = tiny_classifier(MethodKind::Adept, pooling, 3, seed).unwrap();
        let folded = open(&export(
            &model,
            &enc,
            &tok,
            &info,
            Some(FoldMode::Folded),
            WeightDtype::F32,
            tmp.path(),
            "f",
        ));
        let unfolded = open(&export(
            &model,
            &enc,
            &tok,
            &info,
            Some(FoldMode::Unfolded),
            WeightDtype::F32,
            tmp.path(),
            "u",
        ));
        assert_eq!(folded.manifest.fold, FoldMode::Folded);
        assert_eq!(unfolded.manifest.fold, FoldMode::Unfolded);
        for pairs in [false, true] {
            let items = encode_varied(&enc, TINY_SENTENCES, pairs);
            let a = ort_logits(&folded, &items);
            let b = ort_logits(&unfolded, &items);
            let diff = max_abs_diff(&a, &b);
            eprintln!("{test} seed {seed} pairs {pairs}: max |folded - unfolded| = {diff:e}");
            assert!(diff <= 1e-5, "folded vs unfolded: {diff:e}");
            assert_eq!(labels(&a), labels(&b));
        }
    }
}

#[test]
fn fold_flags_are_checked_against_the_method() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("tiny", &["a", "b"], &["sentence"]);
    let pt = tiny_classifier(MethodKind::Pt, Pooling::Mean, 2, 1).unwrap();
    let opts = adept_export::ExportOptions {
        fold: Some(FoldMode::Folded),
        ..Default::default()
    };
    let err = adept_export::export_classifier(&pt, &enc, &tok, &info, &opts, &tmp.path().join("x"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("only ADePT"), "{err:#}");
    let adept = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 1).unwrap();
    let opts = adept_export::ExportOptions {
        fold: Some(FoldMode::None),
        ..Default::default()
    };
    let err =
        adept_export::export_classifier(&adept, &enc, &tok, &info, &opts, &tmp.path().join("y"))
            .unwrap_err();
    assert!(format!("{err:#}").contains("folded or unfolded"), "{err:#}");
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("y").exists());
}
