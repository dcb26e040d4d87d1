//! A RoBERTa-style bundle (the tiny random RoBERTa of `tests/fixtures/tiny-roberta/`, loaded
//! through the backbone registry): the graph takes no `token_type_ids` (the manifest says so and
//! ONNX Runtime gets exactly the listed inputs), and its logits equal candle's for every method.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::testing;
use adept_train::{Classifier, Pooling};
use common::*;

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-roberta")
}

const SENTENCES: &[&str] = &[
    "a good film",
    "the plot was thin but the acting was warm and the music was lovely",
    "bad",
    "I would not watch it again, not even for the soundtrack.",
    "é à ü — unknown bytes 😍",
];

#[test]
fn tiny_roberta_bundles_match_candle_without_token_types() {
    let test = "tiny_roberta_bundles_match_candle_without_token_types";
    if !ort_available(test) {
        return;
    }
    let dir = fixture();
    let backbone = adept_backbones::load_encoder(&dir, &candle_core::Device::Cpu).unwrap();
    assert!(!backbone.uses_token_types());
    let tok = dir.join("tokenizer.json");
    let enc = testing::text_encoder(&tok, 24).unwrap();
    let items = encode_varied(&enc, SENTENCES, false);
    let lens: Vec<usize> = items.iter().map(|e| e.ids.len()).collect();
    assert!(
        lens.iter().min() < lens.iter().max(),
        "needs padding: {lens:?}"
    );
    let info = testing::task_info("tiny", &["neg", "neu", "pos"], &["sentence"]);
    let tmp = tempfile::tempdir().unwrap();
    for (i, (method, fold, l)) in [
        (MethodKind::Adept, Some(FoldMode::Folded), 6),
        (MethodKind::Adept, Some(FoldMode::Unfolded), 6),
        (MethodKind::Dept, None, 6),
        (MethodKind::Pt, None, 8),
        (MethodKind::HeadOnly, None, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let adapter = testing::random_adapter(&*backbone, method, l, 3, 24, 5, 0.5).unwrap();
        let model = Classifier {
            backbone: backbone.clone(),
            adapter,
            head: testing::random_head(32, 3, 9).unwrap(),
            pooling: Pooling::Mean,
        };
        let out = export(
            &model,
            &enc,
            &tok,
            &info,
            fold,
            WeightDtype::F32,
            tmp.path(),
            &format!("b{i}"),
        );
        let bundle = open(&out);
        assert_eq!(bundle.manifest.model_family, "bert");
        assert_eq!(bundle.manifest.inputs, ["input_ids", "attention_mask"]);
        assert!(!bundle.manifest.takes_token_types());
        let want = candle_logits(&model, &items, enc.pad_id);
        let got = ort_logits(&bundle, &items);
        let diff = max_abs_diff(&got, &want);
        eprintln!("{test}: {method} {fold:?}: max |ort - candle| = {diff:e}");
        assert!(diff <= 1e-4, "{method} {fold:?}: {diff:e}");
        assert_eq!(labels(&got), labels(&want), "{method} {fold:?}");
    }
}
