//! The candle BERT forward against Hugging Face `transformers` on the real all-MiniLM-L6-v2.
//!
//! Expected hidden states come from `tests/reference/bert_expected.py` (committed next to its
//! output, `tests/fixtures/minilm_expected.json`). The model is looked up in the adept cache
//! (`adept fetch`); without it the test skips, unless `ADEPT_REQUIRE_MODEL=1` (set by CI),
//! which turns a missing model into a failure (adept-testkit).

use adept_backbones::{Backbone, BertEncoder};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> Value {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/minilm_expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture present"))
        .expect("fixture is JSON")
}

fn u32_matrix(v: &Value, dev: &Device) -> Tensor {
    let rows: Vec<Vec<u32>> = serde_json::from_value(v.clone()).expect("integer matrix");
    Tensor::new(rows, dev).expect("rectangular")
}

/// Largest |candle − expected| over the rows where `mask` is 1.
fn max_diff_on_mask(got: &Tensor, expected: &Value, mask: &[Vec<u32>]) -> f32 {
    let got: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
    let exp: Vec<Vec<Vec<f32>>> = serde_json::from_value(expected.clone()).unwrap();
    let mut worst = 0f32;
    for (b, rows) in mask.iter().enumerate() {
        for (t, &m) in rows.iter().enumerate() {
            if m == 1 {
                for (x, y) in got[b][t].iter().zip(&exp[b][t]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

#[test]
fn minilm_hidden_states_match_transformers() {
    let Some(dir) = adept_testkit::model_dir("minilm_hidden_states_match_transformers") else {
        return;
    };
    let fx = fixture();
    let sha = adept_cache::sha256_file(&dir.join("model.safetensors")).unwrap();
    assert_eq!(
        sha,
        fx["model_safetensors_sha256"].as_str().unwrap(),
        "the cached model is not the fixture's model"
    );
    let dev = Device::Cpu;
    load_cached_blas("minilm_hidden_states_match_transformers");
    let mut enc = BertEncoder::from_dir(&dir, &dev).unwrap();
    assert!(
        enc.fused_layers(),
        "CPU f32 MiniLM runs fused layers by default"
    );
    check_against_fixture(&enc, &fx, &dev, "fused layers");
    enc.set_fused_layers(false).unwrap();
    check_against_fixture(&enc, &fx, &dev, "composite layers");
}

/// Loads the OpenBLAS that `adept fetch` caches, so the fused layers' products run on it (the
/// `gemm` crate path is covered by adept-nn's unit tests); required when CI asks for the model.
fn load_cached_blas(test: &str) {
    if let Some(lib) = adept_testkit::openblas(test) {
        adept_nn::blas::load(&lib).unwrap();
    } else {
        eprintln!("OpenBLAS not loaded: products run on the gemm crate");
    }
    eprintln!("matrix products: {}", adept_nn::blas::backend());
}

fn check_against_fixture(enc: &BertEncoder, fx: &Value, dev: &Device, label: &str) {
    let dev = dev.clone();

    // Plain sentences, padded batch.
    let case = &fx["plain"];
    let ids = u32_matrix(&case["input_ids"], &dev);
    let mask = u32_matrix(&case["attention_mask"], &dev);
    let types = u32_matrix(&case["token_type_ids"], &dev);
    let embeds = enc.word_embeddings(&ids).unwrap();
    let hidden = enc.forward_embeds(&embeds, &mask, Some(&types)).unwrap();
    let m: Vec<Vec<u32>> = mask.to_vec2().unwrap();
    let d = max_diff_on_mask(&hidden, &case["last_hidden_state"], &m);
    assert!(
        d < 1e-4,
        "{label}, plain: max |candle - transformers| = {d}"
    );

    // A 5-token prompt before [CLS], positions over prompt + input (the PEFT convention).
    let case = &fx["prompt"];
    let prompt_ids: Vec<u32> = serde_json::from_value(case["prompt_token_ids"].clone()).unwrap();
    let l = prompt_ids.len();
    let ids = u32_matrix(&case["input_ids"], &dev);
    let b = ids.dims()[0];
    let prompt = enc
        .word_embeddings(
            &Tensor::new(prompt_ids.as_slice(), &dev)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap()
        .broadcast_as((b, l, enc.hidden_size()))
        .unwrap();
    let embeds = Tensor::cat(&[&prompt, &enc.word_embeddings(&ids).unwrap()], 1).unwrap();
    let mask = u32_matrix(&case["attention_mask"], &dev);
    let types = u32_matrix(&case["token_type_ids"], &dev);
    let hidden = enc.forward_embeds(&embeds, &mask, Some(&types)).unwrap();
    let m: Vec<Vec<u32>> = mask.to_vec2().unwrap();
    let d = max_diff_on_mask(&hidden, &case["last_hidden_state"], &m);
    assert!(
        d < 1e-4,
        "{label}, prompt: max |candle - transformers| = {d}"
    );

    // Keeping only the input rows (the last layer skips the prompt's queries) changes nothing.
    let inputs = enc
        .forward_embeds_from(&embeds, &mask, Some(&types), l)
        .unwrap();
    let full_inputs = hidden.narrow(1, l, ids.dims()[1]).unwrap();
    let keep = u32_matrix(&case["input_attention_mask"], &dev)
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let diff = ((inputs - full_inputs)
        .unwrap()
        .broadcast_mul(&keep)
        .unwrap())
    .abs()
    .unwrap()
    .flatten_all()
    .unwrap()
    .max(0)
    .unwrap()
    .to_scalar::<f32>()
    .unwrap();
    assert!(
        diff < 1e-5,
        "{label}: forward_embeds_from differs from the full forward by {diff}"
    );
}

/// The gradient reaching the input embeddings (what trains the prompt and the offsets) is the
/// same through the fused layers as through the composite candle ops, on the real model.
#[test]
fn fused_layers_pass_the_same_input_gradient_as_composite_layers() {
    let Some(dir) =
        adept_testkit::model_dir("fused_layers_pass_the_same_input_gradient_as_composite_layers")
    else {
        return;
    };
    let fx = fixture();
    let dev = Device::Cpu;
    load_cached_blas("fused_layers_pass_the_same_input_gradient_as_composite_layers");
    let mut enc = BertEncoder::from_dir(&dir, &dev).unwrap();
    let case = &fx["prompt"];
    let ids = u32_matrix(&case["input_ids"], &dev);
    let mask = u32_matrix(&case["attention_mask"], &dev);
    let types = u32_matrix(&case["token_type_ids"], &dev);
    let prompt_len = mask.dims()[1] - ids.dims()[1];
    let inputs = enc.word_embeddings(&ids).unwrap();
    let prompt = Tensor::randn(0f32, 0.05, (ids.dims()[0], prompt_len, 384), &dev).unwrap();
    let embeds =
        candle_core::Var::from_tensor(&Tensor::cat(&[&prompt, &inputs], 1).unwrap()).unwrap();
    // The loss reads the unpadded input rows only, as pooling does (padded rows are not
    // computed by the fused layers).
    let keep = u32_matrix(&case["input_attention_mask"], &dev)
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let probe = Tensor::randn(0f32, 1., inputs.dims(), &dev)
        .unwrap()
        .broadcast_mul(&keep)
        .unwrap();
    let mut grads = Vec::new();
    for fused in [true, false] {
        enc.set_fused_layers(fused).unwrap();
        let out = enc
            .forward_embeds_from(embeds.as_tensor(), &mask, Some(&types), prompt_len)
            .unwrap();
        let g = (out * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        grads.push(g.get(embeds.as_tensor()).unwrap().clone());
    }
    let max_abs = |t: &Tensor| -> f32 {
        t.abs()
            .and_then(|a| a.max_all())
            .and_then(|m| m.to_scalar::<f32>())
            .unwrap()
    };
    let largest = max_abs(&grads[1]);
    let diff = max_abs(&(&grads[0] - &grads[1]).unwrap());
    assert!(
        largest > 1e-3,
        "the gradient is not trivially zero ({largest})"
    );
    assert!(
        diff <= 1e-4 * largest.max(1.0),
        "fused vs composite input gradient differs by {diff} (largest entry {largest})"
    );
}
