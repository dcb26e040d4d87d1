//! `run_export` on a trained-run folder, and the atomicity of the bundle directory.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{BundleManifest, FoldMode, WeightDtype};
use adept_export::testing::{
    self, tiny_backbone, tiny_classifier, write_model_dir, write_run_dir, write_tiny_tokenizer,
};
use adept_export::{export_classifier, run_export, ExportArgs, ExportOptions};
use adept_train::Pooling;
use common::*;
use std::path::Path;

fn args(adapter: &Path, out: &Path) -> ExportArgs {
    ExportArgs {
        adapter: adapter.to_path_buf(),
        model: None,
        out: Some(out.to_path_buf()),
        fold_offsets: false,
        no_fold: false,
        dtype: WeightDtype::F32,
        int8_blocks: None,
        int8_activations: None,
        int8_keep_float: None,
        int8_per_row: None,
        opset: 17,
        no_lean: false,
        no_pack: false,
        overwrite: false,
    }
}

/// Names in `dir` other than the expected ones (leftover temporary directories).
fn leftovers(dir: &Path, expected: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect()
}

#[test]
fn exports_a_trained_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_classifier(MethodKind::Adept, Pooling::Cls, 3, 9).unwrap();
    let model_dir = tmp.path().join("model");
    write_model_dir(&*model.backbone, &model_dir).unwrap();
    let run = tmp.path().join("runs/mnli-adept");
    let best = write_run_dir(
        &model,
        &model_dir,
        &run,
        "mnli",
        &["entailment", "neutral", "contradiction"],
        &["premise", "hypothesis"],
        16,
    )
    .unwrap();

    // The run folder (best/ found inside) and the best/ folder itself both work.
    let out = tmp.path().join("exports/a");
    let report = run_export(&args(&run, &out)).unwrap();
    eprintln!("{report}");
    let m = BundleManifest::read(&out).unwrap();
    m.verify_files(&out).unwrap();
    assert_eq!(m.method, "adept");
    assert_eq!(m.fold, FoldMode::Folded, "ADePT folds by default");
    assert_eq!(m.task, "mnli");
    assert_eq!(m.label_names, ["entailment", "neutral", "contradiction"]);
    assert_eq!(m.text_fields, ["premise", "hypothesis"]);
    assert_eq!(m.input_template.segment_b, ["hypothesis"]);
    assert_eq!(m.prompt_length, 5);
    assert_eq!(m.max_length, 16);
    assert_eq!(m.pooling, "cls");
    assert_eq!(m.provenance.step, 100);
    assert_eq!(
        std::fs::read(out.join("tokenizer.json")).unwrap(),
        std::fs::read(model_dir.join("tokenizer.json")).unwrap(),
        "the tokenizer is copied byte for byte"
    );
    assert_eq!(
        leftovers(&tmp.path().join("exports"), &["a"]),
        Vec::<String>::new()
    );

    let mut a = args(&best, &tmp.path().join("exports/b"));
    a.no_fold = true;
    a.dtype = WeightDtype::F16;
    run_export(&a).unwrap();
    let m = BundleManifest::read(&tmp.path().join("exports/b")).unwrap();
    assert_eq!((m.fold, m.dtype), (FoldMode::Unfolded, WeightDtype::F16));

    // The exported graph reproduces the trained model as load_trained sees it.
    if ort_available("exports_a_trained_run_folder (parity)") {
        let (loaded, enc, _) =
            adept_train::load_trained(&best, None, &candle_core::Device::Cpu).unwrap();
        let items = encode_varied(&enc, TINY_SENTENCES, true);
        let want = candle_logits(&loaded, &items, enc.pad_id);
        let got = ort_logits(&open(&out), &items);
        assert!(max_abs_diff(&got, &want) <= 1e-4);
    }

    // Existing bundle: refused without --overwrite, replaced with it.
    let err = format!("{:#}", run_export(&args(&run, &out)).unwrap_err());
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    let mut a = args(&run, &out);
    a.overwrite = true;
    a.no_fold = true;
    run_export(&a).unwrap();
    assert_eq!(BundleManifest::read(&out).unwrap().fold, FoldMode::Unfolded);
    assert_eq!(
        leftovers(&tmp.path().join("exports"), &["a", "b"]),
        Vec::<String>::new()
    );

    // Flag misuse and wrong folders.
    let err = format!(
        "{:#}",
        run_export(&args(&tmp.path().join("nope"), &out)).unwrap_err()
    );
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
    let err = format!("{:#}", run_export(&args(&model_dir, &out)).unwrap_err());
    assert!(err.contains("run.json"), "{err}");
    let other_model = tmp.path().join("other-model");
    write_model_dir(&tiny_backbone(99).unwrap(), &other_model).unwrap();
    let mut a = args(&run, &tmp.path().join("exports/c"));
    a.model = Some(other_model);
    let err = format!("{:#}", run_export(&a).unwrap_err());
    assert!(
        err.contains("not the model this adapter was trained on"),
        "{err}"
    );
    assert!(!tmp.path().join("exports/c").exists());

    let pt = tiny_classifier(MethodKind::Pt, Pooling::Mean, 2, 9).unwrap();
    let pt_run = tmp.path().join("runs/pt");
    write_run_dir(
        &pt,
        &model_dir,
        &pt_run,
        "sst2",
        &["negative", "positive"],
        &["sentence"],
        16,
    )
    .unwrap();
    let mut a = args(&pt_run, &tmp.path().join("exports/d"));
    a.fold_offsets = true;
    let err = format!("{:#}", run_export(&a).unwrap_err());
    assert!(
        err.contains("--fold-offsets") && err.contains("pt"),
        "{err}"
    );
    a.fold_offsets = false;
    a.no_fold = true; // harmless for PT: nothing to fold
    run_export(&a).unwrap();
    assert_eq!(
        BundleManifest::read(&tmp.path().join("exports/d"))
            .unwrap()
            .fold,
        FoldMode::None
    );
}

#[test]
fn a_failed_export_leaves_no_bundle_and_keeps_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(&tmp.path().join("tok")).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("sst2", &["negative", "positive"], &["sentence"]);
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 1).unwrap();
    let root = tmp.path().join("exports");
    std::fs::create_dir_all(&root).unwrap();

    // The tokenizer is copied after model.onnx is written: a missing tokenizer fails midway.
    let missing = tmp.path().join("missing/tokenizer.json");
    let out = root.join("new");
    let err = export_classifier(
        &model,
        &enc,
        &missing,
        &info,
        &ExportOptions::default(),
        &out,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("missing/tokenizer.json"),
        "{err:#}"
    );
    assert!(!out.exists(), "a failed export must not leave a bundle");
    assert_eq!(
        leftovers(&root, &[]),
        Vec::<String>::new(),
        "temporary directories left behind"
    );

    // The same failure while replacing a bundle leaves the old bundle as it was.
    let old = root.join("old");
    export_classifier(&model, &enc, &tok, &info, &ExportOptions::default(), &old).unwrap();
    let before = std::fs::read(old.join("adept.json")).unwrap();
    let opts = ExportOptions {
        overwrite: true,
        fold: Some(FoldMode::Unfolded),
        ..Default::default()
    };
    export_classifier(&model, &enc, &missing, &info, &opts, &old).unwrap_err();
    assert_eq!(std::fs::read(old.join("adept.json")).unwrap(), before);
    BundleManifest::read(&old)
        .unwrap()
        .verify_files(&old)
        .unwrap();
    assert_eq!(leftovers(&root, &["old"]), Vec::<String>::new());

    // A head that does not match the task is refused before anything is written.
    let bad = testing::task_info("mnli", &["a", "b", "c"], &["premise", "hypothesis"]);
    let err = export_classifier(
        &model,
        &enc,
        &tok,
        &bad,
        &ExportOptions::default(),
        &root.join("x"),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("the head has 2 outputs"),
        "{err:#}"
    );
    assert_eq!(leftovers(&root, &["old"]), Vec::<String>::new());
}

/// `int8_keep_float` names whole dot-separated parts of the graph's product names: the kept
/// products are recorded in the model's metadata (`adept.int8_keep_float`), and a name that
/// matches no product (a Hugging Face path, a typo) fails the export naming the products,
/// leaving no bundle.
#[test]
fn int8_keep_float_names_products_and_refuses_names_that_match_none() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("sst2", &["negative", "positive"], &["sentence"]);
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 5).unwrap();
    let export = |keep: &[&str], name: &str| {
        let opts = ExportOptions {
            dtype: WeightDtype::Int8,
            int8_keep_float: keep.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        export_classifier(&model, &enc, &tok, &info, &opts, &tmp.path().join(name))
    };
    let metadata = |name: &str| -> String {
        let bytes = std::fs::read(tmp.path().join(name).join("model.onnx")).unwrap();
        let m = adept_onnx::proto::decode_model(&bytes).unwrap();
        m.metadata_props
            .iter()
            .find(|p| p.key.as_deref() == Some("adept.int8_keep_float"))
            .and_then(|p| p.value.clone())
            .unwrap_or_default()
    };
    let report = export(&["layer.0.output.dense"], "default").unwrap();
    assert_eq!(metadata("default"), "encoder.layer.0.output.dense");
    // The manifest lists them too, and reads back.
    let manifest = adept_bundle::BundleManifest::read(&tmp.path().join("default")).unwrap();
    assert_eq!(manifest.int8_keep_float, ["encoder.layer.0.output.dense"]);
    assert_eq!(report.manifest, manifest);
    // Every product int8: nothing listed (and the field is left out of adept.json).
    export(&[], "none").unwrap();
    let text = std::fs::read_to_string(tmp.path().join("none").join("adept.json")).unwrap();
    assert!(!text.contains("int8_keep_float"), "{text}");
    assert_eq!(metadata("none"), "");
    // `layer.1` is every product of layer 1 (and would not be layer 11's).
    export(&["layer.1"], "layer1").unwrap();
    let kept = metadata("layer1");
    assert_eq!(kept.split(',').count(), 6, "{kept}");
    assert!(
        kept.split(',').all(|p| p.starts_with("encoder.layer.1.")),
        "{kept}"
    );
    for bad in [
        "bert.encoder.layer.0.output.dense",
        "layer.0.output.dense.weight",
        "layer.0.out",
    ] {
        let e = export(&[bad], "bad").unwrap_err().to_string();
        assert!(
            e.contains("matches no product") && e.contains("encoder.layer.1.intermediate.dense"),
            "{e}"
        );
        assert!(!tmp.path().join("bad").exists(), "{bad}: a bundle was left");
    }
}

/// `int8_per_row` (per-tensor int8) picks products by whole dot-separated name parts, as
/// `int8_keep_float` does: they are recorded in the model's metadata (`adept.int8_per_row`) and
/// the manifest, quantize their input per row (`QuantizeLinear` of the row-scaled input) while
/// the rest keep `DynamicQuantizeLinear`, and a name that matches no int8 product (the int8
/// vocabulary table is none) fails the export naming the products, leaving no bundle. The
/// default for this two-layer model (every layer but the last two) is none.
#[test]
fn int8_per_row_names_products_and_refuses_names_that_match_none() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("sst2", &["negative", "positive"], &["sentence"]);
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 5).unwrap();
    let export = |per_row: Option<&[&str]>, name: &str| {
        let opts = ExportOptions {
            dtype: WeightDtype::Int8,
            int8_activations: adept_bundle::Int8Activations::PerTensor,
            int8_keep_float: Vec::new(),
            int8_per_row: per_row.map(|p| p.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        export_classifier(&model, &enc, &tok, &info, &opts, &tmp.path().join(name))
    };
    let model_of = |name: &str| {
        let bytes = std::fs::read(tmp.path().join(name).join("model.onnx")).unwrap();
        adept_onnx::proto::decode_model(&bytes).unwrap()
    };
    let metadata = |name: &str| -> String {
        model_of(name)
            .metadata_props
            .iter()
            .find(|p| p.key.as_deref() == Some("adept.int8_per_row"))
            .and_then(|p| p.value.clone())
            .unwrap_or_default()
    };
    // Which quantizer each int8 product's input comes from, over every (sub)graph.
    let quantizers = |name: &str| -> std::collections::BTreeSet<(String, String)> {
        let m = model_of(name);
        let mut nodes = Vec::new();
        let mut stack = vec![m.graph.clone().unwrap()];
        while let Some(g) = stack.pop() {
            for n in &g.node {
                for a in &n.attribute {
                    stack.extend(a.g.clone().map(|g| *g));
                }
                nodes.push(n.clone());
            }
        }
        let producer = |out: &str| {
            nodes
                .iter()
                .find(|n| n.output.iter().any(|o| o == out))
                .and_then(|n| n.op_type.clone())
                .unwrap_or_default()
        };
        nodes
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("MatMulInteger"))
            .map(|n| {
                let product = n.input[1].trim_end_matches(".weight_quantized").to_string();
                (product, producer(&n.input[0]))
            })
            .collect()
    };
    // The default for two layers: every product per tensor, nothing recorded.
    export(None, "default").unwrap();
    assert_eq!(metadata("default"), "");
    let text = std::fs::read_to_string(tmp.path().join("default").join("adept.json")).unwrap();
    assert!(!text.contains("int8_per_row"), "{text}");
    assert!(quantizers("default")
        .iter()
        .all(|(_, q)| q == "DynamicQuantizeLinear"));

    export(
        Some(&["layer.0.intermediate.dense", "layer.1.attention.self"]),
        "mixed",
    )
    .unwrap();
    let listed = metadata("mixed");
    assert_eq!(
        listed,
        "encoder.layer.0.intermediate.dense,encoder.layer.1.attention.self.query,\
         encoder.layer.1.attention.self.key,encoder.layer.1.attention.self.value",
    );
    let manifest = adept_bundle::BundleManifest::read(&tmp.path().join("mixed")).unwrap();
    assert_eq!(manifest.int8_per_row.join(","), listed);
    let q = quantizers("mixed");
    assert!(q.len() >= 12, "{q:?}");
    for (product, quantizer) in &q {
        let row = listed.split(',').any(|p| p == product);
        let want = if row {
            "QuantizeLinear"
        } else {
            "DynamicQuantizeLinear"
        };
        assert_eq!(quantizer, want, "{product}");
    }

    // The int8 vocabulary table is read by a gather, not a product: naming it (or its
    // `adapter` prefix) is refused too, and the list of products leaves it out.
    for bad in [
        "layer.0.inter",
        "layer.7",
        "classifier",
        "adapter",
        "folded_word_embeddings",
    ] {
        let e = format!("{:#}", export(Some(&[bad]), "bad").unwrap_err());
        assert!(
            e.contains("--int8-per-row") && e.contains("matches no int8 product"),
            "{bad}: {e}"
        );
        assert!(
            e.contains("encoder.layer.1.output.dense")
                && !e.contains("adapter.folded_word_embeddings"),
            "{bad}: {e}"
        );
        assert!(!tmp.path().join("bad").exists(), "{bad}: a bundle was left");
    }
}
