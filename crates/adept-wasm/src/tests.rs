use super::*;
use adept_bundle::{OverLength, TextEncoder};
use std::path::PathBuf;

/// Strings where tokenizers tend to disagree: accents, emoji, CJK, control characters,
/// whitespace runs, very long and empty inputs.
pub fn tricky() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "a",
        "Crème brûlée à la façon de Zoë, naïve café!",
        "ÀÉÎÕÜ ñ ß Ø å",
        "I loved it 😍🔥👍🏽 — 10/10!!!",
        "👨‍👩‍👧‍👦 family emoji ZWJ",
        "日本語のテキストと中文字符",
        "tabs\tand\nnewlines\r\nand   runs   of spaces",
        "control\u{0}chars\u{7}\u{200b}zero width",
        "don't, won't, can't; it's \"quoted\" (parenthesised) [bracketed]",
        "UPPER lower MiXeD 12345 3.14159 $100 @user #tag http://example.com/a?b=c",
        "unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("a very long review that keeps going ".repeat(60));
    v.push("é".repeat(700));
    v
}

/// `(adept.json, tokenizer.json, tokenizer path)`: the exported bundle `ADEPT_WASM_BUNDLE`
/// (which must then exist) or `exports/qs-test` if present, else the default model's tokenizer
/// from the adept cache (adept-testkit: a skip, or a failure under `ADEPT_REQUIRE_MODEL=1`) with
/// a manifest like the quickstart's (max 128 tokens, 30522-row table).
fn real_tokenizer(test: &str) -> Option<(String, String, PathBuf)> {
    let given = std::env::var_os("ADEPT_WASM_BUNDLE").map(PathBuf::from);
    let dir = given
        .clone()
        .unwrap_or_else(|| adept_testkit::repo_file("exports/qs-test"));
    if given.is_some() || dir.join("adept.json").is_file() {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{test}: cannot read {}: {e}", dir.join(f).display()))
        };
        return Some((
            read("adept.json"),
            read("tokenizer.json"),
            dir.join("tokenizer.json"),
        ));
    }
    let tok = adept_testkit::model_dir(test)?.join("tokenizer.json");
    let t = std::fs::read_to_string(&tok).unwrap();
    let m = manifest_text(false, "truncate")
        .replace("\"max_length\":8", "\"max_length\":128")
        .replace("\"vocab_size\":10,", "\"vocab_size\":30522,");
    Some((m, t, tok))
}

/// The engine (tokenizer.json as text, the bundle's rules) gives what the encoder training and
/// `adept infer` load from the file gives. Natively both use onig; the browser test
/// (web/test) compares the wasm build's pure-Rust regex backend with `native_ids`.
#[test]
fn same_ids_as_the_native_encoder() {
    let Some((manifest, tok, tok_path)) = real_tokenizer("same_ids_as_the_native_encoder") else {
        return;
    };
    let engine = Engine::new(&manifest, &tok).unwrap();
    let native =
        TextEncoder::from_file(&tok_path, engine.manifest.max_length, OverLength::Truncate)
            .unwrap();
    assert_eq!(native.pad_id, engine.pad_id);
    let texts = tricky();
    for a in &texts {
        for b in [None, Some("and a second segment é😍")] {
            let n = native.encode(a, b).unwrap();
            let w = engine.encode(a, b).unwrap();
            assert_eq!(n.ids, w.ids, "{a:?} / {b:?}");
            assert_eq!(n.type_ids, w.type_ids, "{a:?} / {b:?}");
            assert_eq!(n.truncated, w.truncated, "{a:?} / {b:?}");
            assert!(w.ids.len() <= engine.manifest.max_length);
        }
    }
}

fn manifest_text(regression: bool, over_length: &str) -> String {
    let labels = if regression { "[]" } else { r#"["neg","pos"]"# };
    let n = if regression { 1 } else { 2 };
    format!(
        r#"{{"format":"adept-bundle","format_version":1,"adept_version":"0.1.0","model_family":"bert",
        "task":"t","label_names":{labels},"regression":{regression},"text_fields":["sentence"],
        "input_template":{{"segment_a":["sentence"],"segment_b":[],"joiner":" "}},
        "prompt_length":0,"max_length":8,"over_length":"{over_length}","pad_token_id":0,"vocab_size":10,
        "hidden_size":4,"num_outputs":{n},"opset":17,"dtype":"f32","fold":"none","method":"head-only",
        "pooling":"mean","inputs":["input_ids","attention_mask","token_type_ids"],"outputs":["logits"],
        "files":{{"model.onnx":{{"sha256":"{h}","bytes":3}},"tokenizer.json":{{"sha256":"{h}","bytes":3}}}}}}"#,
        h = sha256_hex(b"abc")
    )
}

/// A word-level tokenizer with [CLS]/[SEP] around the input.
fn tiny_tokenizer() -> String {
    r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[
      {"id":0,"special":true,"content":"[PAD]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false},
      {"id":1,"special":true,"content":"[UNK]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false},
      {"id":2,"special":true,"content":"[CLS]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false},
      {"id":3,"special":true,"content":"[SEP]","single_word":false,"lstrip":false,"rstrip":false,"normalized":false}],
     "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},
     "post_processor":{"type":"TemplateProcessing",
       "single":[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}}],
       "pair":[{"SpecialToken":{"id":"[CLS]","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"[SEP]","type_id":0}},{"Sequence":{"id":"B","type_id":1}},{"SpecialToken":{"id":"[SEP]","type_id":1}}],
       "special_tokens":{"[CLS]":{"id":"[CLS]","ids":[2],"tokens":["[CLS]"]},"[SEP]":{"id":"[SEP]","ids":[3],"tokens":["[SEP]"]}}},
     "decoder":null,
     "model":{"type":"WordLevel","vocab":{"[PAD]":0,"[UNK]":1,"[CLS]":2,"[SEP]":3,"good":4,"bad":5,"movie":6},"unk_token":"[UNK]"}}"#
        .to_string()
}

#[test]
fn truncation_types_and_postprocess() {
    let e = Engine::new(&manifest_text(false, "truncate"), &tiny_tokenizer()).unwrap();
    let x = e.encode("good movie", Some("bad")).unwrap();
    assert_eq!(x.ids, vec![2, 4, 6, 3, 5, 3]);
    assert_eq!(x.type_ids, vec![0, 0, 0, 0, 1, 1]);
    assert!(!x.truncated);
    let long = e.encode(&"good ".repeat(20), None).unwrap();
    assert_eq!(long.ids.len(), 8);
    assert!(long.truncated);
    assert_eq!(e.encode("", None).unwrap().ids, vec![2, 3]);

    // The graph's inputs: one unpadded row of the contract's layout.
    let b = e.inputs(&x);
    assert_eq!(b.shape(), (1, 6));
    assert_eq!(b.input_ids, [2, 4, 6, 3, 5, 3]);
    assert_eq!(b.attention_mask, [1; 6]);
    assert_eq!(b.token_type_ids, [0, 0, 0, 0, 1, 1]);
    assert_eq!(e.pad_id, 0);

    let p = e.postprocess(&[0.0, 2.0]).unwrap();
    assert_eq!(p.label.as_deref(), Some("pos"));
    assert_eq!(p.label_id, Some(1));
    let s: f32 = p.probabilities.iter().map(|(_, v)| v).sum();
    assert!((s - 1.0).abs() < 1e-6);
    assert!((p.probabilities[1].1 - 0.880797).abs() < 1e-5);
    assert!(e.postprocess(&[1.0]).is_err());
    e.check_file("model.onnx", &sha256_hex(b"abc"), 3).unwrap();
    let err = e
        .check_file("model.onnx", &sha256_hex(b"abd"), 3)
        .unwrap_err();
    assert!(format!("{err:#}").contains("checksum mismatch"));

    let r = Engine::new(&manifest_text(true, "error"), &tiny_tokenizer()).unwrap();
    assert_eq!(r.postprocess(&[0.25]).unwrap().score, Some(0.25));
    let err = r.encode(&"good ".repeat(20), None).unwrap_err();
    assert!(format!("{err:#}").contains("longer than the maximum"));
}

#[test]
fn clear_errors_for_bad_bundles() {
    let err = Engine::new("{}", &tiny_tokenizer()).err().unwrap();
    assert!(
        format!("{err:#}").contains("not a valid adept bundle manifest"),
        "{err:#}"
    );
    let err = Engine::new(&manifest_text(false, "truncate"), "not json")
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("cannot load tokenizer.json"),
        "{err:#}"
    );
    let bad =
        manifest_text(false, "truncate").replace("\"format_version\":1", "\"format_version\":9");
    let err = Engine::new(&bad, &tiny_tokenizer()).err().unwrap();
    assert!(format!("{err:#}").contains("format_version 9"), "{err:#}");
}
