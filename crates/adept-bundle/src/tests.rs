use super::*;

fn sample(dir: &Path) -> BundleManifest {
    std::fs::write(dir.join(MODEL_FILE), b"not really onnx").unwrap();
    std::fs::write(dir.join(TOKENIZER_FILE), b"{}").unwrap();
    let mut m = BundleManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        adept_version: "0.1.0".into(),
        model_family: "bert".into(),
        task: "rte".into(),
        label_names: vec!["entailment".into(), "not_entailment".into()],
        regression: false,
        text_fields: vec!["sentence1".into(), "sentence2".into()],
        input_template: InputTemplate::from_fields(&["sentence1".into(), "sentence2".into()]),
        prompt_length: 4,
        max_length: 32,
        over_length: "truncate".into(),
        pad_token_id: 0,
        vocab_size: 100,
        hidden_size: 16,
        num_outputs: 2,
        opset: 17,
        dtype: WeightDtype::F32,
        fold: FoldMode::Folded,
        method: "adept".into(),
        pooling: "mean".into(),
        inputs: INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        outputs: vec![OUTPUT_NAME.into()],
        files: BTreeMap::new(),
        provenance: Provenance::default(),
    };
    m.record_files(dir).unwrap();
    m
}

#[test]
fn roundtrip_and_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample(dir.path());
    m.write(dir.path()).unwrap();
    let back = BundleManifest::read(dir.path()).unwrap();
    assert_eq!(back, m);
    back.verify_files(dir.path()).unwrap();

    // One changed byte in the model is caught and the message names the file.
    std::fs::write(dir.path().join(MODEL_FILE), b"not really onnX").unwrap();
    let err = format!("{:#}", back.verify_files(dir.path()).unwrap_err());
    assert!(
        err.contains("checksum mismatch") && err.contains("model.onnx"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join(TOKENIZER_FILE)).unwrap();
    std::fs::write(dir.path().join(MODEL_FILE), b"not really onnx").unwrap();
    let err = format!("{:#}", back.verify_files(dir.path()).unwrap_err());
    assert!(
        err.contains("tokenizer.json") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn corrupt_or_inconsistent_manifests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample(dir.path());

    let err = format!("{:#}", BundleManifest::read(dir.path()).unwrap_err());
    assert!(
        err.contains("adept.json") && err.contains("missing"),
        "{err}"
    );

    std::fs::write(
        dir.path().join(MANIFEST_FILE),
        b"{\"format\": \"adept-bundle\", ",
    )
    .unwrap();
    let err = format!("{:#}", BundleManifest::read(dir.path()).unwrap_err());
    assert!(
        err.contains("adept.json") && err.contains("not a valid"),
        "{err}"
    );

    type Breaker = Box<dyn Fn(&mut BundleManifest)>;
    let cases: Vec<(&str, Breaker)> = vec![
        ("format_version", Box::new(|m| m.format_version = 99)),
        ("label names", Box::new(|m| m.num_outputs = 3)),
        ("fold", Box::new(|m| m.fold = FoldMode::None)),
        (
            "input_template",
            Box::new(|m| m.input_template.segment_b = vec!["premise".into()]),
        ),
        ("pad_token_id", Box::new(|m| m.pad_token_id = 100)),
        ("outputs", Box::new(|m| m.outputs = vec!["probs".into()])),
        (
            "model.onnx",
            Box::new(|m| {
                m.files.remove(MODEL_FILE);
            }),
        ),
        ("method", Box::new(|m| m.method = "lora".into())),
    ];
    for (needle, break_it) in cases {
        let mut bad = m.clone();
        break_it(&mut bad);
        let text = serde_json::to_string(&bad).unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), text).unwrap();
        let err = format!("{:#}", BundleManifest::read(dir.path()).unwrap_err());
        assert!(
            err.contains(needle) && err.contains("adept.json"),
            "{needle}: {err}"
        );
    }
}

#[test]
fn template_builds_segments_like_training() {
    let t = InputTemplate::from_fields(&["question".into(), "answer".into(), "paragraph".into()]);
    let rec = |n: &str| match n {
        "question" => Some("q?".to_string()),
        "answer" => Some("a".to_string()),
        "paragraph" => Some("p.".to_string()),
        _ => None,
    };
    assert_eq!(t.segments(rec).unwrap(), ("q?".into(), Some("a p.".into())));
    let err = t
        .segments(|n| (n == "question").then(|| "q".to_string()))
        .unwrap_err();
    assert!(err.to_string().contains("answer"), "{err}");
}

#[test]
fn inputs_are_ids_and_mask_with_or_without_token_types() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample(dir.path());
    assert!(m.takes_token_types());
    m.validate().unwrap();
    m.inputs = input_names(false);
    assert_eq!(m.inputs, ["input_ids", "attention_mask"]);
    assert!(!m.takes_token_types());
    m.validate().unwrap();
    for bad in [
        vec!["input_ids"],
        vec!["attention_mask", "input_ids"],
        vec!["input_ids", "attention_mask", "position_ids"],
        vec!["input_ids", "token_type_ids", "attention_mask"],
    ] {
        m.inputs = bad.iter().map(|s| s.to_string()).collect();
        let err = m.validate().unwrap_err().to_string();
        assert!(
            err.contains("inputs") && err.contains("neither"),
            "{bad:?}: {err}"
        );
    }
}
