//! A RoBERTa-style encoder through the same seam as BERT: the registry picks the family from
//! `config.json` (`model_type: roberta`), positions start after the padding index, and no token
//! types are read. Expected hidden states come from Hugging Face `transformers` on a tiny random
//! RoBERTa built by `tests/reference/tiny_roberta.py` (committed with its output,
//! `tests/fixtures/tiny-roberta/`): from token ids, and from input embeddings with four soft-prompt
//! rows in front (what prompt tuning feeds the encoder).

use adept_backbones::{load_encoder, Encoder};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::path::PathBuf;

const TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-roberta")
}

fn expected() -> Value {
    let p = fixture_dir().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture present")).expect("JSON")
}

fn matrix_u32(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("integer matrix")
}

/// Largest |got − expected| over the rows whose mask is 1 (padded rows are undefined here).
fn max_diff(got: &Tensor, want: &Value, mask: &[Vec<u32>]) -> f32 {
    let got: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
    let want: Vec<Vec<Vec<f32>>> = serde_json::from_value(want.clone()).unwrap();
    let mut worst = 0f32;
    for (b, rows) in mask.iter().enumerate() {
        for (t, &m) in rows.iter().enumerate() {
            if m == 1 {
                assert_eq!(got[b][t].len(), want[b][t].len());
                for (x, y) in got[b][t].iter().zip(&want[b][t]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

fn check(enc: &dyn Encoder, fx: &Value, label: &str) {
    let dev = Device::Cpu;
    let ids = matrix_u32(&fx["input_ids"]);
    let mask = matrix_u32(&fx["attention_mask"]);
    let ids_t = Tensor::new(ids.clone(), &dev).unwrap();
    let mask_t = Tensor::new(mask.clone(), &dev).unwrap();
    let embeds = enc.word_embeddings(&ids_t).unwrap();

    // From ids: positions 2, 3, … over the real tokens, no token types.
    let hidden = enc.forward_embeds_from(&embeds, &mask_t, None, 0).unwrap();
    let d = max_diff(&hidden, &fx["ids"]["last_hidden_state"], &mask);
    eprintln!("{label}: from ids, max |Δ| = {d:.2e}");
    assert!(d < TOLERANCE, "{label}: from ids, max |Δ| = {d}");

    // Four prompt rows in front; positions count over prompt + input (PEFT's convention).
    let p = &fx["prompt"];
    let rows: Vec<Vec<f32>> = serde_json::from_value(p["prompt_embeddings"].clone()).unwrap();
    let l = rows.len();
    let prompt = Tensor::new(rows, &dev).unwrap().unsqueeze(0).unwrap();
    let prompt = prompt.repeat((ids.len(), 1, 1)).unwrap();
    let full = Tensor::cat(&[&prompt, &embeds], 1).unwrap();
    let pmask = matrix_u32(&p["attention_mask"]);
    let pmask_t = Tensor::new(pmask.clone(), &dev).unwrap();
    let hidden = enc.forward_embeds_from(&full, &pmask_t, None, 0).unwrap();
    let d = max_diff(&hidden, &p["last_hidden_state"], &pmask);
    eprintln!("{label}: with a {l}-row prompt, max |Δ| = {d:.2e}");
    assert!(d < TOLERANCE, "{label}: with prompt, max |Δ| = {d}");

    // The rows after the prompt alone (what a classifier pools) are the same rows.
    let inputs = enc.forward_embeds_from(&full, &pmask_t, None, l).unwrap();
    let tail = hidden.narrow(1, l, ids[0].len()).unwrap();
    let inner: Vec<Vec<u32>> = pmask.iter().map(|r| r[l..].to_vec()).collect();
    let diff = max_diff(
        &inputs,
        &serde_json::to_value(tail.to_vec3::<f32>().unwrap()).unwrap(),
        &inner,
    );
    assert!(
        diff < 1e-5,
        "{label}: keep_from differs from the full forward by {diff}"
    );
}

#[test]
fn tiny_roberta_matches_transformers_through_the_registry() {
    let fx = expected();
    let mut enc = load_encoder(&fixture_dir(), &Device::Cpu).unwrap();
    assert_eq!(enc.family(), "bert");
    assert_eq!(enc.model_type(), "roberta");
    assert!(!enc.uses_token_types(), "RoBERTa has one token type");
    assert_eq!(
        enc.max_sequence_len(),
        64,
        "66 positions minus the padding offset 2"
    );
    assert_eq!(enc.vocab_size(), 400);
    assert!(
        enc.fused_layers(),
        "CPU f32 with the erf GELU runs fused layers"
    );
    check(&*enc, &fx, "fused layers");
    enc.set_fused_layers(false).unwrap();
    check(&*enc, &fx, "composite layers");
}

#[test]
fn a_sequence_longer_than_the_positions_is_refused() {
    let enc = load_encoder(&fixture_dir(), &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 65, 32), candle_core::DType::F32, &dev).unwrap();
    let m = Tensor::ones((1, 65), candle_core::DType::U32, &dev).unwrap();
    let err = enc
        .forward_embeds_from(&x, &m, None, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("64 positions"), "{err}");
}
