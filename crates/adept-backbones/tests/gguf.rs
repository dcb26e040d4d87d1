//! GGUF reading against references from gguf-py and transformers.
//!
//! * `tests/fixtures/gguf/tiny-llama.gguf` + `tiny-llama.expected.json` (made by
//!   `tests/reference/gguf_fixture.py`): each tensor type (Q4_0, Q4_1, Q8_0, F16, F32) dequantizes to
//!   gguf-py's values; names map to HF; q/k rows come out in transformers' un-permuted order; the
//!   config and tokenizer agree with what transformers builds from the same file.
//! * `tests/fixtures/smollm2_reference.json` (made by `tests/reference/smollm2_reference.py`):
//!   the converted SmolLM2 folder (`adept fetch --model smollm2`) against transformers' GGUF load.

use std::collections::HashMap;
use std::path::PathBuf;

use adept_backbones::gguf::{self, GgufFile};
use candle_core::{Device, Tensor};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tiny() -> PathBuf {
    fixtures().join("gguf/tiny-llama.gguf")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("gguf/tiny-llama.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn every_type_dequantizes_like_gguf_py() {
    let f = GgufFile::open(&tiny()).unwrap();
    let exp = expected();
    let tensors = exp["tensors"].as_object().unwrap();
    assert_eq!(f.tensor_names().len(), tensors.len());
    let mut seen_types = std::collections::BTreeSet::new();
    for (name, e) in tensors {
        let ty = e["type"].as_str().unwrap();
        assert_eq!(f.tensor_type(name), Some(ty), "{name}");
        seen_types.insert(ty.to_string());
        let t = f.dequantize(name).unwrap();
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}: torch-order shape");
        let got = flat(&t);
        let want = floats(&e["values"]);
        let diff = max_abs_diff(&got, &want);
        if ty == "F32" || ty == "F16" {
            assert_eq!(got, want, "{name} ({ty}) must be exact");
        } else {
            assert!(diff <= 1e-6, "{name} ({ty}): max |diff| {diff}");
        }
    }
    for ty in ["Q4_0", "Q4_1", "Q8_0", "F16", "F32"] {
        assert!(seen_types.contains(ty), "fixture lacks {ty}");
    }
}

#[test]
fn hf_names_and_unpermuted_q_k_match_transformers() {
    let f = GgufFile::open(&tiny()).unwrap();
    let exp = expected();
    let tensors: HashMap<String, Tensor> = f.hf_tensors().unwrap().into_iter().collect();
    let names: std::collections::BTreeSet<&str> = tensors.keys().map(String::as_str).collect();
    let want: std::collections::BTreeSet<&str> = [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.norm.weight",
    ]
    .into();
    assert_eq!(names, want);
    for (gname, e) in exp["tensors"].as_object().unwrap() {
        let hf = gguf::hf_tensor_name(gname).unwrap();
        let got = flat(&tensors[&hf]);
        let vals = floats(&e["values"]);
        let want: Vec<f32> = match e.get("hf_row_order") {
            None => vals,
            Some(order) => {
                let cols = e["shape"][1].as_u64().unwrap() as usize;
                let order: Vec<usize> = order
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect();
                assert_ne!(
                    order,
                    (0..order.len()).collect::<Vec<_>>(),
                    "a real permutation"
                );
                order
                    .iter()
                    .flat_map(|&r| vals[r * cols..(r + 1) * cols].to_vec())
                    .collect()
            }
        };
        assert!(max_abs_diff(&got, &want) <= 1e-6, "{gname} -> {hf}");
    }
}

#[test]
fn unpermute_inverts_llama_cpp_permutation() {
    // llama.cpp: permuted row h*d + 2j + s holds HF row h*d + s*d/2 + j.
    let (heads, d, cols) = (3usize, 8usize, 2usize);
    let rows = heads * d;
    let mut stored = vec![0f32; rows * cols];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..d / 2 {
                let hf_row = h * d + s * d / 2 + j;
                let gguf_row = h * d + 2 * j + s;
                for c in 0..cols {
                    stored[gguf_row * cols + c] = (hf_row * cols + c) as f32;
                }
            }
        }
    }
    let t = Tensor::from_vec(stored, (rows, cols), &Device::Cpu).unwrap();
    let back = flat(&gguf::unpermute_rows(&t, heads).unwrap());
    let ident: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    assert_eq!(back, ident);
    // A bias (1-D) too, and a head count that does not divide the rows is an error.
    let b = Tensor::arange(0f32, 16., &Device::Cpu).unwrap();
    assert_eq!(
        flat(&gguf::unpermute_rows(&b, 2).unwrap()),
        vec![0., 2., 4., 6., 1., 3., 5., 7., 8., 10., 12., 14., 9., 11., 13., 15.]
    );
    let err = gguf::unpermute_rows(&b, 3).unwrap_err().to_string();
    assert!(err.contains("16 rows into 3 heads"), "{err}");
}

#[test]
fn name_mapping() {
    assert_eq!(
        gguf::hf_tensor_name("blk.12.ffn_down.weight").as_deref(),
        Some("model.layers.12.mlp.down_proj.weight")
    );
    assert_eq!(
        gguf::hf_tensor_name("blk.0.attn_q.bias").as_deref(),
        Some("model.layers.0.self_attn.q_proj.bias")
    );
    assert_eq!(
        gguf::hf_tensor_name("output.weight").as_deref(),
        Some("lm_head.weight")
    );
    assert_eq!(gguf::hf_tensor_name("blk.x.attn_q.weight"), None);
    assert_eq!(gguf::hf_tensor_name("blk.0.ssm_a"), None);
    assert_eq!(gguf::hf_tensor_name("rope_freqs.weight"), None);
}

#[test]
fn config_matches_transformers() {
    let f = GgufFile::open(&tiny()).unwrap();
    let c = f.hf_config().unwrap();
    let exp = expected();
    for (k, v) in exp["config"].as_object().unwrap() {
        assert_eq!(&c[k], v, "config key {k}");
    }
    assert_eq!(c["rope_parameters"]["rope_theta"], c["rope_theta"]);
    let g = f.generation_config().unwrap();
    assert_eq!(
        (g["bos_token_id"].as_u64(), g["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    let t = f.tokenizer_config().unwrap();
    assert_eq!(t["bos_token"], "<|im_start|>");
    assert_eq!(t["eos_token"], "<|im_end|>");
    assert_eq!(t["pad_token"], "<|im_end|>");
    assert_eq!(t["add_bos_token"], false);
    assert!(t["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
}

#[test]
fn tokenizer_matches_transformers() {
    let f = GgufFile::open(&tiny()).unwrap();
    let tok = f.tokenizer().unwrap();
    let exp = &expected()["tokenizer"];
    let texts = exp["texts"].as_array().unwrap();
    let ids = exp["ids"].as_array().unwrap();
    for (text, want) in texts.iter().zip(ids) {
        let text = text.as_str().unwrap();
        let enc = tok.encode(text, true).unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.get_ids(), want.as_slice(), "{text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), text, "decode {text:?}");
    }
    let j: Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
    assert_eq!(j["pre_tokenizer"], exp["pre_tokenizer"]);
    let mut specials: Vec<&str> = j["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["special"] == true)
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    specials.sort();
    let want: Vec<&str> = exp["special_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(specials, want);
    // The user-defined token is added whole but not special.
    assert!(j["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["content"] == "<think>" && t["special"] == false));
}

#[test]
fn byte_level_alphabet_has_256_distinct_chars() {
    let t = gguf::bytes_to_unicode();
    assert_eq!(t.len(), 256);
    assert_eq!(t[b' ' as usize], 'Ġ');
    assert_eq!(t[b'\n' as usize], 'Ċ');
    assert_eq!(t[b'a' as usize], 'a');
    let set: std::collections::HashSet<char> = t.iter().copied().collect();
    assert_eq!(set.len(), 256);
}

#[test]
fn convert_writes_a_loadable_folder_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-hf");
    let s = gguf::convert_to_hf_folder(&tiny(), &out).unwrap();
    assert_eq!(s.tensors, 12);
    assert_eq!(s.gguf_types.values().sum::<usize>(), 12);
    for f in gguf::CONVERTED_FILES {
        assert!(out.join(f).is_file(), "{f}");
    }
    let st = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let f = GgufFile::open(&tiny()).unwrap();
    for (name, t) in f.hf_tensors().unwrap() {
        assert_eq!(flat(&st[&name]), flat(&t), "{name}");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "llama");
    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.get_vocab_size(true), 32);
    // The temporary folder is gone; a second conversion into the same place refuses.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
    let err = gguf::convert_to_hf_folder(&tiny(), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
}

/// Offset of the ggml type field of tensor `name` in a GGUF file's bytes.
fn type_field_offset(bytes: &[u8], name: &str) -> usize {
    let needle = name.as_bytes();
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("tensor name in header");
    let after = pos + needle.len();
    let dims = u32::from_le_bytes(bytes[after..after + 4].try_into().unwrap()) as usize;
    after + 4 + 8 * dims
}

#[test]
fn unknown_type_names_the_tensor() {
    let mut bytes = std::fs::read(tiny()).unwrap();
    let off = type_field_offset(&bytes, "blk.0.ffn_up.weight");
    assert_eq!(
        u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()),
        2
    ); // Q4_0
    bytes[off..off + 4].copy_from_slice(&20u32.to_le_bytes()); // IQ4_NL
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let err = GgufFile::open(&p).err().unwrap().to_string();
    assert!(
        err.contains("blk.0.ffn_up.weight") && err.contains("IQ4_NL") && err.contains("bad.gguf"),
        "{err}"
    );
    // Nothing is written when conversion fails.
    let out = dir.path().join("out");
    assert!(gguf::convert_to_hf_folder(&p, &out).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn unsupported_tokenizer_model_is_refused() {
    let mut bytes = std::fs::read(tiny()).unwrap();
    let key = b"tokenizer.ggml.model";
    let pos = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    // value type (u32 = 8, string), length (u64 = 4), "gpt2"
    let val = pos + 4 + 8;
    assert_eq!(&bytes[val..val + 4], b"gpt2");
    bytes[val..val + 4].copy_from_slice(b"bert");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bert-tok.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let f = GgufFile::open(&p).unwrap();
    let err = f.tokenizer().err().unwrap().to_string();
    assert!(
        err.contains("\"bert\"") && err.contains("supported: gpt2"),
        "{err}"
    );
    assert!(f.hf_config().is_ok());
}

#[test]
fn smollm2_conversion_matches_transformers() {
    const TEST: &str = "smollm2_conversion_matches_transformers";
    let Some(dir) = adept_testkit::smollm2_dir(TEST) else {
        return;
    };
    let text = std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap();
    let exp: Value = serde_json::from_str(&text).unwrap();
    let st = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(
        st.contains_key("lm_head.weight"),
        !exp["tied"].as_bool().unwrap()
    );
    for s in exp["slices"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let t = st.get(name).unwrap_or_else(|| panic!("{name} missing"));
        let shape: Vec<usize> = s["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        let (c0, c1) = (
            s["cols"][0].as_u64().unwrap() as usize,
            s["cols"][1].as_u64().unwrap() as usize,
        );
        let got: Vec<f32> = match s["rows"].as_array() {
            None => flat(&t.narrow(0, c0, c1 - c0).unwrap()),
            Some(rows) => rows
                .iter()
                .flat_map(|r| {
                    let r = r.as_u64().unwrap() as usize;
                    flat(&t.get(r).unwrap().narrow(0, c0, c1 - c0).unwrap())
                })
                .collect(),
        };
        let want = floats(&s["values"]);
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-6, "{name}: max |diff| {diff}");
    }
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    for case in exp["tokens"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            tok.encode(text, true).unwrap().get_ids(),
            want.as_slice(),
            "{text:?}"
        );
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        (
            cfg["num_hidden_layers"].as_u64(),
            cfg["hidden_size"].as_u64(),
            cfg["num_key_value_heads"].as_u64()
        ),
        (Some(30), Some(576), Some(3))
    );
    assert_eq!(cfg["tie_word_embeddings"], true);

    // The converted folder through the candle Llama: last-position logits of two chat prompts
    // equal transformers' (its own GGUF load) on the top 5 tokens, within 1e-3 on logits of
    // size ~30 (f32 over 30 layers).
    let model = adept_backbones::load_causal_lm(&dir, &Device::Cpu).unwrap();
    for case in exp["top5"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let n = ids.len();
        let ids = candle_core::Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = ids.ones_like().unwrap();
        let embeds = model.word_embeddings(&ids).unwrap();
        let h = model.forward_embeds(&embeds, &mask, None).unwrap();
        let logits = flat(&model.logits(&h.narrow(1, n - 1, 1).unwrap()).unwrap());
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let want_ids: Vec<usize> = case["top_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let want_logits = floats(&case["top_logits"]);
        assert_eq!(&order[..5], want_ids.as_slice(), "top-5 ids");
        let got: Vec<f32> = want_ids.iter().map(|&i| logits[i]).collect();
        let diff = max_abs_diff(&got, &want_logits);
        eprintln!("SmolLM2 top-5 logits vs transformers: max |diff| {diff:.2e}");
        assert!(diff < 1e-3, "top-5 logits differ by {diff}");
    }
}
