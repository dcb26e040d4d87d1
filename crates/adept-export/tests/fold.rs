//! ADePT folding is exact: the table in the graph is `E + f(E)` row for row, and the folded
//! graph gives the unfolded graph's logits.

mod common;

use adept_adapters::MethodKind;
use adept_backbones::Backbone;
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
        opset: 17,
        attention: Default::default(),
    };
    let bytes = classifier_graph(model, &opts).unwrap().to_bytes().unwrap();
    decode_model(&bytes).unwrap().graph.unwrap().initializer
}

fn find<'a>(inits: &'a [TensorProto], name: &str) -> Option<&'a TensorProto> {
    inits.iter().find(|t| t.name.as_deref() == Some(name))
}

/// Checks `rows` rows of the folded table in the graph against `E + ReLU(E·W_down + b1)·W_up + b2`
/// computed here in f64 from the adapter's tensors. Returns the mean |f(E)| (to show the
/// offsets are not trivially zero).
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
    // Bit-for-bit what the adapter's own fold computes.
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
    let e = flat(model.backbone.word_embedding_table());
    let (mut worst, mut offset_sum, mut n) = (0.0f64, 0.0f64, 0usize);
    for row in rows {
        let x = &e[row * d..(row + 1) * d];
        let hidden: Vec<f64> = (0..r)
            .map(|j| {
                let z = b1[j] as f64
                    + (0..d)
                        .map(|i| x[i] as f64 * w_down[i * r + j] as f64)
                        .sum::<f64>();
                z.max(0.0)
            })
            .collect();
        for c in 0..d {
            let f = b2[c] as f64
                + (0..r)
                    .map(|j| hidden[j] * w_up[j * d + c] as f64)
                    .sum::<f64>();
            let want = x[c] as f64 + f;
            worst = worst.max((got[row * d + c] as f64 - want).abs());
            offset_sum += f.abs();
            n += 1;
        }
    }
    eprintln!("folded table: max |table - (E + f(E))| = {worst:e} over {n} values");
    assert!(
        worst <= 1e-5,
        "folded table differs from E + f(E) by {worst:e}"
    );
    offset_sum / n as f64
}

#[test]
fn tiny_folded_table_is_e_plus_f_of_e() {
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 5).unwrap();
    let vocab = model.backbone.vocab_size();
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
        "prompt_embeddings",
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
    let root = adept_cache::cache_root(None).unwrap();
    let dir = adept_cache::default_model_dir(&root);
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "SKIP minilm_folded_table_is_e_plus_f_of_e: {} not in the cache",
            dir.display()
        );
        return;
    }
    let backbone = adept_backbones::BertEncoder::from_dir(&dir, &candle_core::Device::Cpu).unwrap();
    let adapter = testing::random_adapter(&backbone, MethodKind::Adept, 4, 19, 64, 3, 0.1).unwrap();
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
