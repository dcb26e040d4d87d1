use super::*;
use crate::manifest::{FoldMode, InputTemplate, Method, Pooling, WeightDtype};

/// A word-level tokenizer with `[CLS] a [SEP] (b [SEP])` around the input; `pad` is the name of
/// its id-7 token and `padding` its own padding setting.
fn tiny(pad: &str, padding: &str) -> Tokenizer {
    let json = format!(
        r#"{{"version":"1.0","truncation":{{"direction":"Left","max_length":3,"strategy":"OnlyFirst","stride":0}},
     "padding":{padding},"added_tokens":[
      {{"id":7,"special":true,"content":"{pad}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false}},
      {{"id":1,"special":true,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false}},
      {{"id":2,"special":true,"content":"[CLS]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false}},
      {{"id":3,"special":true,"content":"[SEP]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false}}],
     "normalizer":null,"pre_tokenizer":{{"type":"Whitespace"}},
     "post_processor":{{"type":"TemplateProcessing",
       "single":[{{"SpecialToken":{{"id":"[CLS]","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":0}}}}],
       "pair":[{{"SpecialToken":{{"id":"[CLS]","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":0}}}},{{"Sequence":{{"id":"B","type_id":1}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":1}}}}],
       "special_tokens":{{"[CLS]":{{"id":"[CLS]","ids":[2],"tokens":["[CLS]"]}},"[SEP]":{{"id":"[SEP]","ids":[3],"tokens":["[SEP]"]}}}}}},
     "decoder":null,
     "model":{{"type":"WordLevel","vocab":{{"very":0,"[UNK]":1,"[CLS]":2,"[SEP]":3,"good":4,"bad":5,"movie":6,"{pad}":7}},"unk_token":"[UNK]"}}}}"#
    );
    tokenizer_from_json(&json, "tokenizer.json").unwrap()
}

fn manifest(max_length: usize, over_length: &str, vocab_size: usize) -> BundleManifest {
    let h = crate::sha256_hex(b"abc");
    BundleManifest {
        format: crate::FORMAT.into(),
        format_version: crate::FORMAT_VERSION,
        adept_version: "0.1.0".into(),
        model_family: "bert".into(),
        task: "t".into(),
        label_names: vec!["neg".into(), "pos".into()],
        regression: false,
        text_fields: vec!["sentence".into()],
        input_template: InputTemplate::from_fields(&["sentence".into()]),
        prompt_length: 0,
        max_length,
        over_length: over_length.parse().unwrap(),
        pad_token_id: 7,
        vocab_size,
        hidden_size: 4,
        num_outputs: 2,
        opset: 17,
        dtype: WeightDtype::F32,
        int8_keep_float: Vec::new(),
        int8_per_row: Vec::new(),
        int8_activations: None,
        fold: FoldMode::None,
        method: Method::HeadOnly,
        pooling: Pooling::Mean,
        inputs: crate::input_names(true),
        outputs: vec![crate::OUTPUT_NAME.into()],
        files: [crate::MODEL_FILE, crate::TOKENIZER_FILE]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    crate::FileEntry {
                        sha256: h.clone(),
                        bytes: 3,
                    },
                )
            })
            .collect(),
        provenance: Default::default(),
        decoder: None,
    }
}

#[test]
fn the_tokenizers_own_truncation_and_padding_are_replaced() {
    // tokenizer.json says: truncate the first segment on the left at 3, pad to a fixed length.
    let padding = r#"{"strategy":{"Fixed":12},"direction":"Right","pad_to_multiple_of":null,"pad_id":7,"pad_type_id":0,"pad_token":"[PAD]"}"#;
    let e = TextEncoder::new(tiny("[PAD]", padding), 8, OverLength::Truncate).unwrap();
    let x = e.encode("good movie", Some("bad")).unwrap();
    assert_eq!(x.ids, [2, 4, 6, 3, 5, 3]);
    assert_eq!(x.type_ids, [0, 0, 0, 0, 1, 1]);
    assert!(!x.truncated);
    assert_eq!(e.encode("", None).unwrap().ids, [2, 3]);

    // Longest first, on the right, to max_len tokens with the special tokens.
    let x = e
        .encode("good good good good good good", Some("bad bad"))
        .unwrap();
    assert_eq!(x.ids, [2, 4, 4, 4, 3, 5, 5, 3]);
    assert_eq!(x.type_ids, [0, 0, 0, 0, 0, 1, 1, 1]);
    assert!(x.truncated);
    let x = e.encode(&"very ".repeat(20), None).unwrap();
    assert_eq!(x.ids.len(), 8);
    assert_eq!((x.ids[0], x.ids[7]), (2, 3));
    assert!(x.truncated);

    assert_eq!(e.ids_without_special("good movie").unwrap(), [4, 6]);
    assert_eq!(e.vocab_size(), 8);
}

#[test]
fn the_padding_id_is_the_tokenizers_then_pad_then_angle_pad_then_zero() {
    let padding = r#"{"strategy":"BatchLongest","direction":"Right","pad_to_multiple_of":null,"pad_id":5,"pad_type_id":0,"pad_token":"bad"}"#;
    let own = TextEncoder::new(tiny("[PAD]", padding), 8, OverLength::Truncate).unwrap();
    assert_eq!(own.pad_id, 5);
    let pad = TextEncoder::new(tiny("[PAD]", "null"), 8, OverLength::Truncate).unwrap();
    assert_eq!(pad.pad_id, 7);
    let angle = TextEncoder::new(tiny("<pad>", "null"), 8, OverLength::Truncate).unwrap();
    assert_eq!(angle.pad_id, 7);
    // Neither: 0.
    let none = TextEncoder::new(tiny("[NOPAD]", "null"), 8, OverLength::Truncate).unwrap();
    assert_eq!(none.pad_id, 0);

    let err = TextEncoder::new(tiny("[PAD]", "null"), 3, OverLength::Truncate)
        .err()
        .unwrap();
    assert!(err.to_string().contains("too short"), "{err}");
}

#[test]
fn over_long_inputs_are_refused_with_the_right_hint() {
    let long = "good ".repeat(20);
    let train = TextEncoder::new(tiny("[PAD]", "null"), 8, OverLength::Error).unwrap();
    let err = train.encode(&long, None).unwrap_err().to_string();
    assert!(
        err.contains("longer than the maximum of 8 tokens") && err.contains("--over-length"),
        "{err}"
    );
    // Short enough: fine.
    assert!(!train.encode("good movie", None).unwrap().truncated);

    let m = manifest(8, "error", 8);
    let served = TextEncoder::for_bundle(tiny("[PAD]", "null"), &m, "t.json", "m.json").unwrap();
    assert_eq!(served.over_length, OverLength::Error);
    assert_eq!(served.max_len, 8);
    let err = served.encode(&long, None).unwrap_err().to_string();
    assert!(
        err.contains("longer than the maximum of 8 tokens")
            && err.contains("the bundle refuses longer inputs"),
        "{err}"
    );
}

#[test]
fn a_bundles_tokenizer_is_checked_against_its_manifest() {
    let ok = manifest(8, "truncate", 8);
    let e = TextEncoder::for_bundle(tiny("[PAD]", "null"), &ok, "t.json", "m.json").unwrap();
    assert_eq!(e.over_length, OverLength::Truncate);
    assert!(e.encode(&"good ".repeat(20), None).unwrap().truncated);

    let small = manifest(8, "truncate", 7);
    let err = TextEncoder::for_bundle(tiny("[PAD]", "null"), &small, "t.json", "m.json")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("t.json has 8 tokens") && err.contains("tokenizer and model do not match"),
        "{err}"
    );

    let mut pad = manifest(8, "truncate", 8);
    pad.pad_token_id = 1;
    let err = TextEncoder::for_bundle(tiny("[PAD]", "null"), &pad, "t.json", "m.json")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("t.json pads with id 7, but m.json records 1"),
        "{err}"
    );
}

#[test]
fn ids_outside_the_table_are_an_error() {
    let e = TextEncoder::new(tiny("[PAD]", "null"), 8, OverLength::Truncate).unwrap();
    assert_eq!(
        e.encode_within("good movie", None, 8).unwrap().ids,
        [2, 4, 6, 3]
    );
    let err = e
        .encode_within("good movie", None, 6)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 6 is outside the model's 6-row vocabulary table"),
        "{err}"
    );
}

#[test]
fn bad_tokenizer_files_are_named() {
    let err = tokenizer_from_json("not json", "tokenizer.json")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot load tokenizer.json"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tokenizer.json");
    let err = TextEncoder::from_file(&missing, 8, OverLength::Truncate)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tokenizer not found") && err.contains("tokenizer.json"),
        "{err}"
    );
    std::fs::write(&missing, "{}").unwrap();
    let err = TextEncoder::from_file(&missing, 8, OverLength::Truncate)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot load tokenizer"), "{err}");
}
