//! The emitted models pass `onnx.checker.check_model(full_check=True)` (Python `onnx`; skipped
//! when not importable, failed then under `ADEPT_REQUIRE_MODEL=1`), load in ONNX Runtime, and get ONNX Runtime's fused kernels.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::testing::{self, tiny_classifier, write_tiny_tokenizer};
use adept_train::Pooling;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn python() -> String {
    adept_testkit::python()
}

fn python_available(test: &str) -> bool {
    adept_testkit::python_with(test, &["onnx", "onnxruntime"]).is_some()
}

/// Runs tests/scripts/inspect_model.py on `model`.
fn inspect(model: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/inspect_model.py");
    let report = model.with_extension("report.json");
    let out = Command::new(python())
        .arg(&script)
        .arg(model)
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnx.checker / onnxruntime rejected {}:\n{}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

fn count(ops: &Value, op: &str) -> u64 {
    ops.get(op).and_then(Value::as_u64).unwrap_or(0)
}

/// The packed export's two paths (inspect_model.py: `ops`/`optimized` along the `If`'s padded
/// `then_branch`, `ops_packed`/`optimized_packed` along the packed `else_branch`): one `If`,
/// the row indices (`NonZero`) on the packed path only, which ONNX Runtime takes for a batch
/// with padding and only then, and it fuses the same
/// kernels on both, `fused` (e.g. `com.microsoft:MultiHeadAttention`), as many of each.
fn check_both_paths(report: &Value, name: &str, fused: &[&str]) {
    assert_eq!(report["if_nodes"], 1, "{name}: one If");
    assert_eq!(
        report["routing"],
        serde_json::json!({"no_padding": false, "padding": true}),
        "{name}: which path ran (whether NonZero did)"
    );
    assert_eq!(count(&report["ops"], ":NonZero"), 0, "{name}: padded path");
    assert_eq!(
        count(&report["ops_packed"], ":NonZero"),
        1,
        "{name}: packed path"
    );
    let (opt, packed) = (
        &report["optimized"]["all"],
        &report["optimized_packed"]["all"],
    );
    for op in fused {
        assert!(count(opt, op) > 0, "{name}: no {op} on the padded path");
        assert_eq!(
            count(opt, op),
            count(packed, op),
            "{name}: {op} on the two paths"
        );
    }
}

#[test]
fn every_variant_passes_the_checker_and_fuses() {
    let test = "every_variant_passes_the_checker_and_fuses";
    if !python_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("tiny", &["a", "b"], &["sentence1", "sentence2"]);
    // Every method at the default opset (23: ONNX's own `Attention`), and two at opset 17
    // (`com.microsoft:MultiHeadAttention`, and `com.microsoft:Attention` over the packed q/k/v
    // weights where a layer's queries are all its rows) for runtimes before ONNX Runtime 1.23.
    let d = adept_export::DEFAULT_OPSET;
    let cases = [
        (
            MethodKind::Adept,
            Some(FoldMode::Folded),
            Pooling::Mean,
            WeightDtype::F32,
            d,
        ),
        (
            MethodKind::Adept,
            Some(FoldMode::Folded),
            Pooling::Mean,
            WeightDtype::F32,
            17,
        ),
        (
            MethodKind::HeadOnly,
            None,
            Pooling::Mean,
            WeightDtype::F16,
            17,
        ),
        (
            MethodKind::Adept,
            Some(FoldMode::Unfolded),
            Pooling::Mean,
            WeightDtype::F32,
            d,
        ),
        (
            MethodKind::Adept,
            Some(FoldMode::Folded),
            Pooling::Cls,
            WeightDtype::F16,
            d,
        ),
        (MethodKind::Dept, None, Pooling::Mean, WeightDtype::F32, d),
        (MethodKind::Pt, None, Pooling::Cls, WeightDtype::F32, d),
        (
            MethodKind::HeadOnly,
            None,
            Pooling::Mean,
            WeightDtype::F16,
            d,
        ),
    ];
    for (i, (method, fold, pooling, dtype, opset)) in cases.into_iter().enumerate() {
        let model = tiny_classifier(method, pooling, 2, 11).unwrap();
        let dir = tmp.path().join(format!("b{i}"));
        let opts = adept_export::ExportOptions {
            fold,
            dtype,
            opset,
            overwrite: true,
            ..Default::default()
        };
        adept_export::export_classifier(&model, &enc, &tok, &info, &opts, &dir).unwrap();
        let report = inspect(&dir.join("model.onnx"));
        let name = format!("{method} {fold:?} {pooling:?} {dtype} opset {opset}");
        eprintln!("{name}: written {}", report["ops"]);
        eprintln!("{name}: optimized (all) {}", report["optimized"]["all"]);
        assert_eq!(report["opset_import"][""], opset);
        assert_eq!(report["opset_import"]["com.microsoft"], 1);
        assert_eq!(
            report["inputs"],
            serde_json::json!(["input_ids", "attention_mask", "token_type_ids"])
        );
        assert_eq!(report["outputs"], serde_json::json!(["logits"]));
        // Standard tools read the graph: every value has a type after shape inference (the
        // com.microsoft nodes' outputs are declared), and quantize_dynamic runs with defaults.
        assert_eq!(report["untyped"], serde_json::json!([]), "{name}");
        assert_eq!(report["quantize_dynamic"], "ok", "{name}");
        let ops = &report["ops"];
        let opt = &report["optimized"]["all"];
        let layers = 2;
        let onnx_attention = opset >= adept_onnx::ONNX_ATTENTION_OPSET;
        // Fused attention we emit ourselves: ONNX's own `Attention` from opset 23 on (three
        // products before it); below, `MultiHeadAttention`, or `com.microsoft:Attention` (one
        // product for q/k/v) where a layer's queries are all its rows: not beside a constant
        // prompt, not in a last layer that keeps the input rows only. Each residual connection
        // is a `Sum` and a standard LayerNormalization (faster than
        // SkipLayerNormalization's CPU kernel), plus the embeddings' LayerNorm:
        let attention = |ops: &Value| {
            count(ops, "com.microsoft:MultiHeadAttention")
                + count(ops, "com.microsoft:Attention")
                + count(ops, ":Attention")
        };
        assert_eq!(attention(ops), layers, "{name}");
        assert_eq!(
            count(ops, ":Attention"),
            if onnx_attention { layers } else { 0 },
            "{name}: ONNX Attention nodes"
        );
        let prompt = !matches!(method, MethodKind::HeadOnly);
        // One q/k/v product where there is no prompt (and so no lean first layer).
        let packed_qkv = !prompt && !onnx_attention;
        assert_eq!(
            count(ops, "com.microsoft:Attention"),
            if packed_qkv { layers } else { 0 },
            "{name}: Attention nodes"
        );
        // (and from opset 23 on the query bias, a `Sum` before ONNX's `Attention`, which has
        // no bias input)
        assert_eq!(
            count(ops, ":Sum"),
            (if onnx_attention { 3 } else { 2 }) * layers,
            "{name}: Sum"
        );
        assert_eq!(count(ops, ":LayerNormalization"), 2 * layers + 1);
        // Fusions ONNX Runtime performs on our graph (CPU, ORT_ENABLE_ALL), and what it keeps:
        assert_eq!(attention(opt), layers, "{name}: attention");
        assert_eq!(
            count(opt, "com.microsoft:BiasGelu"),
            layers,
            "{name}: bias + erf-GELU"
        );
        assert_eq!(count(opt, ":Erf"), 0, "{name}: an unfused GELU is left");
        assert_eq!(
            count(opt, ":LayerNormalization"),
            2 * layers + 1,
            "{name}: residual + LayerNorm"
        );
        assert_eq!(
            count(opt, "com.microsoft:SkipLayerNormalization"),
            0,
            "{name}: ONNX Runtime fused a residual into its slow SkipLayerNormalization"
        );
        assert_eq!(
            count(opt, ":MatMul"),
            (if packed_qkv { 3 } else { 6 }) * layers
                + u64::from(fold == Some(FoldMode::Unfolded)) * 2,
            "{name}: MatMuls"
        );
        // f16 casts are folded at session creation.
        assert!(
            count(opt, ":Cast") <= 3,
            "{name}: casts left {}",
            count(opt, ":Cast")
        );
        let fused: &[&str] = if onnx_attention {
            &[
                ":Attention",
                "com.microsoft:BiasGelu",
                ":LayerNormalization",
                ":MatMul",
                ":Sum",
            ]
        } else if prompt {
            &[
                "com.microsoft:MultiHeadAttention",
                "com.microsoft:BiasGelu",
                ":LayerNormalization",
                ":MatMul",
                ":Sum",
            ]
        } else {
            // Without a prompt the padded path's layers are `Attention` nodes; the packed
            // path's are three products and `MultiHeadAttention`, as with a prompt.
            &["com.microsoft:BiasGelu", ":LayerNormalization", ":Sum"]
        };
        check_both_paths(&report, &name, fused);
        let packed = &report["optimized_packed"]["all"];
        assert_eq!(attention(packed), layers, "{name}: packed path attention");
        assert_eq!(
            count(packed, "com.microsoft:Attention"),
            0,
            "{name}: packed path"
        );
        assert_eq!(
            count(packed, ":MatMul"),
            6 * layers + u64::from(fold == Some(FoldMode::Unfolded)) * 2,
            "{name}: packed path MatMuls"
        );
        // The `Attention` nodes' weights are constants once ONNX Runtime has folded the
        // `Concat` of the three (and, in f16, their casts) at session creation.
        assert_eq!(report["attention_weights_folded"], true, "{name}");
        assert!(
            count(packed, ":Cast") <= 3,
            "{name}: casts left on the packed path {}",
            count(packed, ":Cast")
        );
        if fold == Some(FoldMode::Folded) {
            assert_eq!(count(ops, ":Relu"), 0, "{name}: folded graphs have no MLP");
        }
        if fold == Some(FoldMode::Unfolded) {
            assert_eq!(count(ops, ":Relu"), 1, "{name}: the unfolded MLP");
        }
    }
}

/// The RoBERTa-style graph (the tiny random RoBERTa of `tests/fixtures/tiny-roberta/`): two
/// inputs, the single token-type row as an initializer; it passes the checker and gets the same
/// fused kernels.
#[test]
fn a_graph_without_token_types_passes_the_checker_and_fuses() {
    let test = "a_graph_without_token_types_passes_the_checker_and_fuses";
    if !python_available(test) {
        return;
    }
    let dir = adept_testkit::repo_file("tests/fixtures/tiny-roberta");
    let backbone = adept_backbones::load_encoder(&dir, &candle_core::Device::Cpu).unwrap();
    let tok = dir.join("tokenizer.json");
    let enc = testing::text_encoder(&tok, 24).unwrap();
    let info = testing::task_info("tiny", &["a", "b"], &["sentence"]);
    let tmp = tempfile::tempdir().unwrap();
    for (i, (method, fold, dtype)) in [
        (MethodKind::Adept, Some(FoldMode::Folded), WeightDtype::F32),
        (MethodKind::Dept, None, WeightDtype::F16),
    ]
    .into_iter()
    .enumerate()
    {
        let model = adept_train::Classifier {
            backbone: backbone.clone(),
            adapter: testing::random_adapter(&*backbone, method, 4, 2, 24, 3, 0.5).unwrap(),
            head: testing::random_head(32, 2, 4).unwrap(),
            pooling: Pooling::Mean,
        };
        let out = common::export(
            &model,
            &enc,
            &tok,
            &info,
            fold,
            dtype,
            tmp.path(),
            &format!("r{i}"),
        );
        let report = inspect(&out.join("model.onnx"));
        let name = format!("roberta {method} {fold:?} {dtype}");
        assert_eq!(
            report["inputs"],
            serde_json::json!(["input_ids", "attention_mask"]),
            "{name}"
        );
        let opt = &report["optimized"]["all"];
        assert_eq!(count(opt, ":Attention"), 2, "{name}");
        assert_eq!(count(opt, ":LayerNormalization"), 5, "{name}");
        assert_eq!(
            count(opt, "com.microsoft:SkipLayerNormalization"),
            0,
            "{name}"
        );
        assert_eq!(count(opt, "com.microsoft:BiasGelu"), 2, "{name}");
        check_both_paths(
            &report,
            &name,
            &[
                ":Attention",
                "com.microsoft:BiasGelu",
                ":LayerNormalization",
            ],
        );
    }
}

/// `--dtype int8`: the checker passes, shape inference types every value, and ONNX Runtime
/// fuses every encoder product but the first layer's feed-forward output (kept float by
/// default) into its int8 kernels; the head stays float. The word table
/// (folded or plain) is `int8 [vocab, d]` with `float [vocab, 1]` row scales and no float copy;
/// the token-type table stays float.
#[test]
fn int8_bundles_pass_the_checker_and_fuse() {
    let test = "int8_bundles_pass_the_checker_and_fuse";
    if !python_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tok = write_tiny_tokenizer(tmp.path()).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = testing::task_info("tiny", &["a", "b"], &["sentence1", "sentence2"]);
    for (i, (method, fold)) in [
        (MethodKind::Adept, Some(FoldMode::Folded)),
        (MethodKind::Adept, Some(FoldMode::Unfolded)),
        (MethodKind::Pt, None),
    ]
    .into_iter()
    .enumerate()
    {
        let model = tiny_classifier(method, Pooling::Mean, 2, 11).unwrap();
        let dir = common::export(
            &model,
            &enc,
            &tok,
            &info,
            fold,
            WeightDtype::Int8,
            tmp.path(),
            &format!("q{i}"),
        );
        let manifest = adept_bundle::BundleManifest::read(&dir).unwrap();
        assert_eq!(manifest.dtype, WeightDtype::Int8);
        let report = inspect(&dir.join("model.onnx"));
        let name = format!("int8 {method} {fold:?}");
        check_int8_table(&dir.join("model.onnx"), fold, &name);
        eprintln!("{name}: written {}", report["ops"]);
        eprintln!("{name}: optimized (all) {}", report["optimized"]["all"]);
        assert_eq!(report["untyped"], serde_json::json!([]), "{name}");
        let (ops, opt) = (&report["ops"], &report["optimized"]["all"]);
        let layers = 2;
        // q, k, v, attention output, intermediate, output per layer, less the first layer's
        // feed-forward output, which the default keeps float (`INT8_KEEP_FLOAT_DEFAULT`); q/k/v
        // share one quantized input (two in the last layer: its queries read the input rows
        // only), quantized per row (QuantizeLinear with one scale per token).
        assert_eq!(count(ops, ":MatMulInteger"), 6 * layers - 1, "{name}");
        assert_eq!(
            count(ops, ":QuantizeLinear"),
            4 * layers - 1 + u64::from(method != MethodKind::HeadOnly),
            "{name}"
        );
        let fused = count(opt, "com.microsoft:MatMulIntegerToFloat")
            + count(opt, "com.microsoft:DynamicQuantizeMatMul");
        assert_eq!(fused, 6 * layers - 1, "{name}: fused int8 products");
        assert_eq!(count(opt, ":MatMulInteger"), 0, "{name}");
        // Float products left: the head, the kept one, and the unfolded MLP's two.
        assert_eq!(
            count(opt, ":MatMul") + count(opt, ":Gemm"),
            2 + 2 * u64::from(fold == Some(FoldMode::Unfolded)),
            "{name}: float products"
        );
        assert_eq!(count(opt, ":Attention"), layers);
        assert_eq!(count(opt, ":LayerNormalization"), 2 * layers + 1);
        assert_eq!(count(opt, "com.microsoft:SkipLayerNormalization"), 0);
        check_both_paths(
            &report,
            &name,
            &[
                "com.microsoft:MatMulIntegerToFloat",
                ":Attention",
                ":LayerNormalization",
            ],
        );
    }

    // Per tensor (`--int8-activations per-tensor`, every product int8): one
    // DynamicQuantizeLinear per quantized value, no per-row ops, and ONNX Runtime fuses the
    // products into DynamicQuantizeMatMul / MatMulIntegerToFloat with the feed-forward's
    // first bias inside the kernel and a plain Gelu after it.
    let model = tiny_classifier(MethodKind::Adept, Pooling::Mean, 2, 11).unwrap();
    let out = tmp.path().join("q-tensor");
    let opts = adept_export::ExportOptions {
        fold: Some(FoldMode::Folded),
        dtype: WeightDtype::Int8,
        int8_activations: adept_bundle::Int8Activations::PerTensor,
        int8_keep_float: Vec::new(),
        int8_per_row: Some(Vec::new()),
        overwrite: true,
        ..Default::default()
    };
    adept_export::export_classifier(&model, &enc, &tok, &info, &opts, &out).unwrap();
    let manifest = adept_bundle::BundleManifest::read(&out).unwrap();
    assert_eq!(
        manifest.int8_activations,
        Some(adept_bundle::Int8Activations::PerTensor)
    );
    let model_proto =
        adept_onnx::proto::decode_model(&std::fs::read(out.join("model.onnx")).unwrap()).unwrap();
    let meta: Vec<(String, String)> = model_proto
        .metadata_props
        .iter()
        .map(|p| {
            (
                p.key.clone().unwrap_or_default(),
                p.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        meta.contains(&("adept.int8_activations".into(), "per-tensor".into())),
        "{meta:?}"
    );
    let report = inspect(&out.join("model.onnx"));
    let name = "int8 per tensor";
    eprintln!("{name}: optimized (all) {}", report["optimized"]["all"]);
    assert_eq!(report["untyped"], serde_json::json!([]), "{name}");
    let (ops, opt) = (&report["ops"], &report["optimized"]["all"]);
    let layers = 2;
    assert_eq!(count(ops, ":MatMulInteger"), 6 * layers, "{name}");
    // q/k/v share one quantized input; two in the last layer (its queries read the input
    // rows only).
    assert_eq!(
        count(ops, ":DynamicQuantizeLinear"),
        4 * layers + 1,
        "{name}"
    );
    for per_row in [":QuantizeLinear", ":ReduceMax", ":Abs"] {
        assert_eq!(count(ops, per_row), 0, "{name}: {per_row}");
    }
    // A product with an input of its own becomes one DynamicQuantizeMatMul (attention
    // output, feed-forward in and out, and the last layer's queries); products that share an
    // input (q/k/v, k/v in the last layer) share one DynamicQuantizeLinear and are each a
    // MatMulIntegerToFloat.
    assert_eq!(
        count(opt, "com.microsoft:DynamicQuantizeMatMul"),
        3 * layers + 1,
        "{name}: DynamicQuantizeMatMul"
    );
    assert_eq!(
        count(opt, "com.microsoft:MatMulIntegerToFloat"),
        2 * layers + 1,
        "{name}: MatMulIntegerToFloat"
    );
    assert_eq!(count(opt, ":MatMulInteger"), 0, "{name}");
    // (ONNX Runtime writes ONNX's own `Gelu` at opset 20 and later)
    assert_eq!(
        count(opt, "com.microsoft:Gelu") + count(opt, ":Gelu"),
        layers,
        "{name}: Gelu"
    );
    assert_eq!(count(opt, "com.microsoft:BiasGelu"), 0, "{name}: BiasGelu");
    assert_eq!(
        count(opt, ":MatMul") + count(opt, ":Gemm"),
        1,
        "{name}: the head"
    );
}

/// The int8 bundle's word table (`adapter.folded_word_embeddings` folded, else
/// `embeddings.word_embeddings`) is `int8 [TINY_VOCAB, 16]` + `float [TINY_VOCAB, 1]` scales, with
/// no float `.weight`; the 2-row token-type table stays float.
fn check_int8_table(model: &Path, fold: Option<FoldMode>, name: &str) {
    use adept_onnx::{proto::decode_model, DataType};
    let graph = decode_model(&std::fs::read(model).unwrap())
        .unwrap()
        .graph
        .unwrap();
    let find = |n: &str| {
        graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(n))
    };
    let table = if fold == Some(FoldMode::Folded) {
        adept_export::emit::adapter::FOLDED_TABLE
    } else {
        adept_export::emit::adapter::WORD_TABLE
    };
    let vocab = testing::TINY_VOCAB as i64;
    let q = find(&format!("{table}.weight_quantized"))
        .unwrap_or_else(|| panic!("{name}: no int8 {table}"));
    assert_eq!(q.data_type, Some(DataType::Int8 as i32), "{name}");
    assert_eq!(q.dims, [vocab, 16], "{name}");
    let s = find(&format!("{table}.weight_scale")).unwrap_or_else(|| panic!("{name}: no scales"));
    assert_eq!(s.dims, [vocab, 1], "{name}");
    assert!(
        find(&format!("{table}.weight")).is_none(),
        "{name}: float {table} left"
    );
    let types = find("embeddings.token_type_embeddings.weight").expect("float token types");
    assert_eq!(types.data_type, Some(DataType::Float as i32), "{name}");
}
