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
        over_length: OverLength::Truncate,
        pad_token_id: 0,
        vocab_size: 100,
        hidden_size: 16,
        num_outputs: 2,
        opset: 17,
        dtype: WeightDtype::F32,
        int8_keep_float: Vec::new(),
        int8_per_row: Vec::new(),
        int8_activations: None,
        fold: FoldMode::Folded,
        method: Method::Adept,
        pooling: Pooling::Mean,
        inputs: INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        outputs: vec![OUTPUT_NAME.into()],
        files: BTreeMap::new(),
        provenance: Provenance::default(),
        decoder: None,
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
        ("method", Box::new(|m| m.method = Method::Dept)),
        (
            "only int8 bundles keep products float",
            Box::new(|m| m.int8_keep_float = vec!["layer.0.output.dense".into()]),
        ),
        (
            "only int8 bundles quantize activations",
            Box::new(|m| m.int8_activations = Some(Int8Activations::PerTensor)),
        ),
        (
            "only per-tensor int8 bundles quantize some products per row",
            Box::new(|m| m.int8_per_row = vec!["encoder.layer.0.output.dense".into()]),
        ),
        (
            "is set but the bundle is int8 with per-row activations",
            Box::new(|m| {
                m.dtype = WeightDtype::Int8;
                m.int8_activations = Some(Int8Activations::PerRow);
                m.int8_per_row = vec!["encoder.layer.0.output.dense".into()];
            }),
        ),
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
fn int8_activations_are_written_as_names_and_read_back() {
    for (a, text) in [
        (Int8Activations::PerRow, "per-row"),
        (Int8Activations::PerTensor, "per-tensor"),
        (Int8Activations::Blocks(32), "blocks-32"),
    ] {
        assert_eq!(a.to_string(), text);
        assert_eq!(text.parse::<Int8Activations>().unwrap(), a);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{text}\""));
    }
    assert!(!Int8Activations::PerTensor.batch_independent());
    assert!(
        Int8Activations::PerRow.batch_independent()
            && Int8Activations::Blocks(32).batch_independent()
    );
    for bad in ["per-column", "blocks-12", "blocks-8", "blocks-"] {
        let e = bad.parse::<Int8Activations>().unwrap_err().to_string();
        assert!(e.contains("per-row, per-tensor"), "{bad}: {e}");
    }
    // In a manifest: absent when not int8, written and read back when set.
    let dir = tempfile::tempdir().unwrap();
    let mut m = sample(dir.path());
    assert!(!serde_json::to_string(&m)
        .unwrap()
        .contains("int8_activations"));
    m.dtype = WeightDtype::Int8;
    m.int8_activations = Some(Int8Activations::PerTensor);
    m.write(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
    assert!(
        text.contains("\"int8_activations\": \"per-tensor\""),
        "{text}"
    );
    assert_eq!(BundleManifest::read(dir.path()).unwrap(), m);
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

/// `adept.json` as `adept export` wrote it before the contract crate (sst2, ADePT folded; the
/// provenance paths made relative): it still reads, and writes back byte for byte.
const V1_SST2: &str = include_str!("../../tests/fixtures/adept-v1-sst2.json");

#[test]
fn manifests_written_before_still_read_and_write_back_identically() {
    let m = BundleManifest::from_json(V1_SST2, "adept.json").unwrap();
    assert_eq!(m.method, Method::Adept);
    assert_eq!(m.pooling, Pooling::Mean);
    assert_eq!(m.over_length, OverLength::Truncate);
    assert_eq!(m.fold, FoldMode::Folded);
    assert!(m.takes_token_types());
    let mut text = serde_json::to_string_pretty(&m).unwrap();
    text.push('\n');
    assert_eq!(text, V1_SST2);
}

#[test]
fn enums_are_written_as_before() {
    // The strings of format_version 1: the enums must keep them.
    let names = |v: Vec<String>| v;
    assert_eq!(
        names(Method::ALL.iter().map(|m| m.to_string()).collect()),
        ["adept", "dept", "pt", "head-only", "frozen"]
    );
    assert_eq!(METHODS, ["adept", "dept", "pt", "head-only", "frozen"]);
    assert_eq!(POOLINGS, ["mean", "cls"]);
    for m in Method::ALL {
        let json = serde_json::to_string(m).unwrap();
        assert_eq!(json, format!("\"{}\"", m.as_str()));
        assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), *m);
        assert_eq!(m.as_str().parse::<Method>().unwrap(), *m);
        assert_eq!(*m, m.as_str());
    }
    for (p, s) in [(Pooling::Mean, "mean"), (Pooling::Cls, "cls")] {
        assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{s}\""));
        assert_eq!(
            serde_json::from_str::<Pooling>(&format!("\"{s}\"")).unwrap(),
            p
        );
    }
    for (o, s) in [
        (OverLength::Truncate, "truncate"),
        (OverLength::Error, "error"),
    ] {
        assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{s}\""));
        assert_eq!(s.parse::<OverLength>().unwrap(), o);
    }
    let err = serde_json::from_str::<Method>("\"lora\"").unwrap_err();
    assert!(err.to_string().contains("unknown method \"lora\""), "{err}");
    let err = "Mean".parse::<Pooling>().unwrap_err();
    assert!(err.to_string().contains("pooling"), "{err}");
    assert!(Method::Adept.has_offsets() && !Method::Dept.has_offsets());
    assert!(
        Method::Pt.has_prompt() && !Method::HeadOnly.has_prompt() && !Method::Frozen.has_prompt()
    );
}

#[test]
fn typed_fields_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample(dir.path());
    for (field, bad) in [
        ("pooling", "max"),
        ("over_length", "wrap"),
        ("method", "head_only"),
    ] {
        let mut v = serde_json::to_value(&m).unwrap();
        v[field] = bad.into();
        let err = format!(
            "{:#}",
            BundleManifest::from_json(&v.to_string(), "x/adept.json").unwrap_err()
        );
        assert!(
            err.contains(field) && err.contains(bad) && err.contains("x/adept.json"),
            "{field}: {err}"
        );
    }
    // head-only and frozen have no prompt.
    let mut v = m.clone();
    v.method = Method::HeadOnly;
    v.fold = FoldMode::None;
    let err = v.validate().unwrap_err().to_string();
    assert!(err.contains("no prompt"), "{err}");
    v.prompt_length = 0;
    v.validate().unwrap();
}

#[test]
fn file_checks_from_outside_the_file_system() {
    // The browser hashes the bytes itself and asks the manifest.
    let dir = tempfile::tempdir().unwrap();
    let m = sample(dir.path());
    let model = std::fs::read(dir.path().join(MODEL_FILE)).unwrap();
    let got = FileEntry {
        sha256: crate::sha256_hex(&model).to_uppercase(),
        bytes: model.len() as u64,
    };
    m.check_file(MODEL_FILE, &got, MODEL_FILE, MANIFEST_FILE)
        .unwrap();
    let short = FileEntry {
        bytes: got.bytes - 1,
        ..got.clone()
    };
    let err = m
        .check_file(MODEL_FILE, &short, MODEL_FILE, MANIFEST_FILE)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bytes") && err.contains("adept.json"), "{err}");
    let other = FileEntry {
        sha256: crate::sha256_hex(b"other"),
        ..got
    };
    let err = m
        .check_file(MODEL_FILE, &other, MODEL_FILE, MANIFEST_FILE)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checksum mismatch for model.onnx") && err.contains("adept.json records"),
        "{err}"
    );
    let err = m
        .check_file("weights.bin", &other, "weights.bin", MANIFEST_FILE)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lists no file weights.bin"), "{err}");
}

#[test]
fn the_manifest_is_written_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample(dir.path());
    m.write(dir.path()).unwrap();
    m.write(dir.path()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE]);
    // An invalid manifest is refused and the written one stays.
    let mut bad = m.clone();
    bad.num_outputs = 5;
    assert!(bad.write(dir.path()).is_err());
    assert_eq!(BundleManifest::read(dir.path()).unwrap(), m);
}

/// A decoder bundle as the export writes it (2 layers, 4-row prompt, 100-token vocabulary).
fn decoder_sample(dir: &Path) -> BundleManifest {
    let mut m = sample(dir);
    std::fs::write(dir.join(PROMPT_CACHE_FILE), b"cache").unwrap();
    let d = DecoderSpec {
        task_kind: DecoderTask::CausalLm,
        num_layers: 2,
        kv_heads: 1,
        head_dim: 8,
        vocab_size: 100,
        prompt_len: 4,
        bos_token_id: Some(1),
        eos_token_ids: vec![2, 3],
        pad_token_id: 0,
        max_sequence_len: 64,
        chat_template: Some("{{ messages[0]['content'] }}".into()),
        prompt_cache_file: PROMPT_CACHE_FILE.into(),
        virtual_token_base: 100,
    };
    m.model_family = "llama".into();
    m.task = "causal-lm".into();
    m.label_names.clear();
    m.num_outputs = 100;
    m.text_fields = vec!["prompt".into()];
    m.input_template = InputTemplate::from_fields(&["prompt".into()]);
    m.inputs = d.input_names();
    m.outputs = d.output_names();
    m.decoder = Some(d);
    m.record_files(dir).unwrap();
    m
}

#[test]
fn encoder_manifests_have_no_decoder_key() {
    let dir = tempfile::tempdir().unwrap();
    let m = sample(dir.path());
    let text = serde_json::to_string(&m).unwrap();
    assert!(!text.contains("decoder"), "{text}");
    assert_eq!(BundleManifest::from_json(&text, "x").unwrap().decoder, None);
}

#[test]
fn decoder_manifest_roundtrips_and_checks_the_prompt_cache() {
    let dir = tempfile::tempdir().unwrap();
    let m = decoder_sample(dir.path());
    assert_eq!(
        m.inputs[..4],
        [
            "input_ids",
            "attention_mask",
            "position_ids",
            "past_key_values.0.key"
        ]
    );
    assert_eq!(
        m.outputs[..3],
        ["logits", "present.0.key", "present.0.value"]
    );
    m.write(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
    assert!(text.contains("\"task_kind\": \"causal-lm\""), "{text}");
    let back = BundleManifest::read(dir.path()).unwrap();
    assert_eq!(back, m);
    assert!(back.is_decoder());
    back.verify_files(dir.path()).unwrap();
    std::fs::write(dir.path().join(PROMPT_CACHE_FILE), b"cachE").unwrap();
    let err = format!("{:#}", back.verify_files(dir.path()).unwrap_err());
    assert!(
        err.contains(PROMPT_CACHE_FILE) && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn inconsistent_decoder_manifests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = decoder_sample(dir.path());
    type Edit = Box<dyn Fn(&mut BundleManifest)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|m| m.decoder.as_mut().unwrap().virtual_token_base = 104),
            "virtual_token_base",
        ),
        (
            Box::new(|m| m.decoder.as_mut().unwrap().eos_token_ids.clear()),
            "eos_token_ids is empty",
        ),
        (
            Box::new(|m| m.decoder.as_mut().unwrap().eos_token_ids.push(100)),
            "eos_token_ids 100",
        ),
        (
            Box::new(|m| m.decoder.as_mut().unwrap().bos_token_id = Some(500)),
            "bos_token_id 500",
        ),
        (
            Box::new(|m| m.decoder.as_mut().unwrap().max_sequence_len = 4),
            "max_sequence_len",
        ),
        (
            Box::new(|m| m.decoder.as_mut().unwrap().prompt_cache_file = "../x".into()),
            "plain file name",
        ),
        (
            Box::new(|m| m.decoder.as_mut().unwrap().prompt_len = 5),
            "prompt_len 5",
        ),
        (Box::new(|m| m.num_outputs = 2), "num_outputs 2"),
        (Box::new(|m| m.model_family = "bert".into()), "llama"),
        (
            Box::new(|m| m.inputs.pop().map(|_| ()).unwrap_or(())),
            "takes inputs",
        ),
        (
            Box::new(|m| m.outputs = vec![OUTPUT_NAME.into()]),
            "has outputs",
        ),
        (
            Box::new(|m| {
                m.files.remove(PROMPT_CACHE_FILE);
            }),
            "prompt_cache.safetensors",
        ),
        (
            Box::new(|m| m.label_names = vec!["a".into()]),
            "label_names",
        ),
    ];
    for (edit, want) in cases {
        let mut m = good.clone();
        edit(&mut m);
        let text = serde_json::to_string(&m).unwrap();
        let err = format!(
            "{:#}",
            BundleManifest::from_json(&text, "adept.json").unwrap_err()
        );
        assert!(
            err.contains(want) && err.contains("adept.json"),
            "want {want:?} in: {err}"
        );
    }
    let text = serde_json::to_string(&good)
        .unwrap()
        .replace("causal-lm\"", "seq2seq\"");
    let err = format!(
        "{:#}",
        BundleManifest::from_json(&text, "adept.json").unwrap_err()
    );
    assert!(err.contains("seq2seq"), "{err}");
}
