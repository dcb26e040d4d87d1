//! The Llama decoder step as ONNX (`adept_backbones::llama::onnx`, inside
//! `adept_export::decoder::decoder_graph` with a plain `Gather` of the table as the adapter
//! stage), run by ONNX Runtime against a tiny random `transformers.LlamaForCausalLM`
//! (tests/reference/llama_onnx_reference.py → tests/fixtures/llama-onnx/): a left-padded batch,
//! one cached step, a soft prompt as virtual tokens vs. as a cache, f16 weights, and
//! `onnx.checker`. Skipped without ONNX Runtime (failed under `ADEPT_REQUIRE_MODEL=1`).

mod common;

use adept_backbones::llama::onnx::{emit_decoder_with, DecoderAttention, LlamaDims};
use adept_backbones::CacheShape;
use adept_bundle::WeightDtype;
use adept_export::decoder::{decoder_graph, past_names, present_names, InputStage};
use adept_runtime::{build_session, SessionConfig};
use candle_core::{DType, Device, Tensor};
use ort::session::Session;
use ort::value::{DynTensor, Tensor as OrtTensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama-onnx")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).unwrap()
}

fn dims() -> LlamaDims {
    LlamaDims {
        layers: 2,
        hidden: 32,
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        ffn: 64,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        vocab: 96,
    }
}

fn cache_shape() -> CacheShape {
    CacheShape {
        layers: 2,
        kv_heads: 2,
        head_dim: 8,
    }
}

/// Writes the decoder graph for `table` (token rows then extra rows) to `dir/name`.
fn write_graph(
    dir: &Path,
    name: &str,
    table: &Tensor,
    dtype: WeightDtype,
    attention: DecoderAttention,
) -> PathBuf {
    let w = load("model.safetensors");
    let lm_head = w["model.embed_tokens.weight"].clone();
    let weight = |n: &str| -> anyhow::Result<Tensor> {
        w.get(n)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{n} is not in the fixture"))
    };
    let stage = InputStage {
        table: table.clone(),
        vocab: 96,
        mlp: None,
    };
    let builder = decoder_graph(&stage, cache_shape(), 96, dtype, 17, &mut |g, inputs| {
        emit_decoder_with(g, &dims(), &weight, &lm_head, inputs, attention)
    })
    .unwrap();
    let path = dir.join(name);
    builder.save(&path).unwrap();
    path
}

fn session(model: &Path) -> Session {
    let lib = adept_testkit::ort_library("decoder_onnx").unwrap();
    let rt = adept_runtime::ortlib::load(&lib).unwrap();
    let cfg = SessionConfig {
        intra_threads: Some(1),
        ..Default::default()
    };
    build_session(rt, model, &cfg).unwrap().session
}

type Kv = Vec<(Vec<f32>, Vec<f32>)>;

struct StepOut {
    /// `[b, s, vocab]` flat.
    logits: Vec<f32>,
    /// Per layer, flat `[b, kv, total, hd]`, and `total`.
    present: Kv,
    present_shape: Vec<i64>,
}

/// One run: `ids`/`pos [b, s]`, `mask [b, past + s]`, `past` per layer `[b, kv, past, hd]`.
fn run(sess: &mut Session, b: usize, ids: &[i64], mask: &[i64], pos: &[i64], past: &Kv) -> StepOut {
    let s = ids.len() / b;
    let t = mask.len() / b;
    let p = t - s;
    let i64t = |v: &[i64], n: usize| -> DynTensor {
        OrtTensor::from_array(([b, n], v.to_vec())).unwrap().upcast()
    };
    let mut inputs: Vec<(String, DynTensor)> = vec![
        ("input_ids".into(), i64t(ids, s)),
        ("attention_mask".into(), i64t(mask, t)),
        ("position_ids".into(), i64t(pos, s)),
    ];
    for i in 0..2 {
        let (kn, vn) = past_names(i);
        let (k, v) = past
            .get(i)
            .cloned()
            .unwrap_or_else(|| (Vec::new(), Vec::new()));
        let f = |x: Vec<f32>| -> DynTensor {
            OrtTensor::from_array(([b, 2, p, 8], x)).unwrap().upcast()
        };
        inputs.push((kn, f(k)));
        inputs.push((vn, f(v)));
    }
    let out = sess.run(inputs).unwrap();
    let (shape, logits) = out["logits"].try_extract_tensor::<f32>().unwrap();
    assert_eq!(&shape[..], &[b as i64, s as i64, 96]);
    let logits = logits.to_vec();
    let mut present = Vec::new();
    let mut present_shape = Vec::new();
    for i in 0..2 {
        let (kn, vn) = present_names(i);
        let (ks, k) = out[kn.as_str()].try_extract_tensor::<f32>().unwrap();
        let (vs, v) = out[vn.as_str()].try_extract_tensor::<f32>().unwrap();
        assert_eq!(&ks[..], &vs[..]);
        present_shape = ks.to_vec();
        present.push((k.to_vec(), v.to_vec()));
    }
    StepOut {
        logits,
        present,
        present_shape,
    }
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.flatten_all().unwrap().to_vec1::<i64>().unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Largest |a - b| over the rows `(batch, row)` where `mask` (`[b, s]`) is 1.
fn max_diff_attended(a: &[f32], b: &[f32], mask: &[i64], vocab: usize) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut m = 0f32;
    for (r, &keep) in mask.iter().enumerate() {
        if keep == 1 {
            for c in 0..vocab {
                m = m.max((a[r * vocab + c] - b[r * vocab + c]).abs());
            }
        }
    }
    m
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Full batch, then one cached step; returns (full diff, step diff, cached vs uncached diff).
fn batch_and_step(model: &Path) -> (f32, f32, f32) {
    let e = load("expected.safetensors");
    let mut sess = session(model);
    let (ids, mask, pos) = (
        i64s(&e["input_ids"]),
        i64s(&e["attention_mask"]),
        i64s(&e["position_ids"]),
    );
    let full = run(&mut sess, 2, &ids, &mask, &pos, &Vec::new());
    assert_eq!(full.present_shape, vec![2, 2, 5, 8], "present after 5 tokens");
    let d_full = max_diff_attended(&full.logits, &f32s(&e["logits"]), &mask, 96);

    let (sids, smask, spos) = (
        i64s(&e["step_ids"]),
        i64s(&e["step_mask"]),
        i64s(&e["step_position_ids"]),
    );
    let step = run(&mut sess, 2, &sids, &smask, &spos, &full.present);
    assert_eq!(step.present_shape, vec![2, 2, 6, 8], "present after the step");
    let d_step = max_diff(&step.logits, &f32s(&e["step_logits"]));

    // The same 6 tokens without a cache: the last row must equal the cached step.
    let mut ids6 = Vec::new();
    let mut pos6 = Vec::new();
    for r in 0..2 {
        ids6.extend_from_slice(&ids[r * 5..r * 5 + 5]);
        ids6.push(sids[r]);
        pos6.extend_from_slice(&pos[r * 5..r * 5 + 5]);
        pos6.push(spos[r]);
    }
    let un = run(&mut sess, 2, &ids6, &smask, &pos6, &Vec::new());
    let mut last = Vec::new();
    for r in 0..2 {
        last.extend_from_slice(&un.logits[(r * 6 + 5) * 96..(r * 6 + 6) * 96]);
    }
    let d_cache = max_diff(&last, &step.logits);
    // The present keys/values of the uncached run equal past + step at attended positions
    // (padded positions hold whatever their undefined rows gave).
    for i in 0..2 {
        for (a, b) in [(&un.present[i].0, &step.present[i].0), (&un.present[i].1, &step.present[i].1)] {
            for (n, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                let (row, pos) = (n / (2 * 6 * 8), (n / 8) % 6);
                if smask[row * 6 + pos] == 1 {
                    assert!((x - y).abs() < TOL, "present.{i} at batch {row}, position {pos}: {x} vs {y}");
                }
            }
        }
    }
    (d_full, d_step, d_cache)
}

fn table() -> Tensor {
    load("model.safetensors")["model.embed_tokens.weight"].clone()
}

#[test]
fn decoder_matches_transformers_with_and_without_cache() {
    if !common::ort_available("decoder_matches_transformers_with_and_without_cache") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for attention in [DecoderAttention::Plain, DecoderAttention::MultiHead] {
        let model = write_graph(
            tmp.path(),
            &format!("{attention:?}.onnx"),
            &table(),
            WeightDtype::F32,
            attention,
        );
        let (d_full, d_step, d_cache) = batch_and_step(&model);
        eprintln!("{attention:?}: full {d_full:.2e}, step {d_step:.2e}, cached vs uncached {d_cache:.2e}");
        assert!(d_full < TOL, "{attention:?}: full-sequence logits off by {d_full}");
        assert!(d_step < TOL, "{attention:?}: cached-step logits off by {d_step}");
        assert!(d_cache < TOL, "{attention:?}: cached vs uncached off by {d_cache}");
    }
}

/// f16 weights: only the weights are rounded (relative 2^-11); the logits move by less than
/// 2e-2 (measured 4.9e-3), and the cached step still equals the uncached run exactly.
#[test]
fn decoder_with_f16_weights_stays_close() {
    if !common::ort_available("decoder_with_f16_weights_stays_close") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f32_model = write_graph(tmp.path(), "f32.onnx", &table(), WeightDtype::F32, DecoderAttention::Plain);
    let model = write_graph(tmp.path(), "f16.onnx", &table(), WeightDtype::F16, DecoderAttention::Plain);
    let small = std::fs::metadata(&model).unwrap().len();
    let big = std::fs::metadata(&f32_model).unwrap().len();
    assert!((small as f64) < 0.6 * big as f64, "f16 file {small} B vs f32 {big} B");
    let (d_full, d_step, d_cache) = batch_and_step(&model);
    eprintln!("f16: full {d_full:.2e}, step {d_step:.2e}, cached vs uncached {d_cache:.2e}");
    assert!(d_full < 2e-2 && d_step < 2e-2, "f16 logits off by {d_full} / {d_step}");
    assert!(d_cache < TOL, "f16 cached vs uncached off by {d_cache}");
}

/// A soft prompt appended to the table as virtual tokens 96, 97: run as tokens in one call,
/// it gives transformers' logits for `inputs_embeds = [P; E]`; fed instead as a past cache
/// (ORT's presents of the two virtual tokens alone, batch 1, repeated), it gives the same
/// logits for the input rows.
#[test]
fn virtual_prompt_as_tokens_equals_prompt_as_cache() {
    if !common::ort_available("virtual_prompt_as_tokens_equals_prompt_as_cache") {
        return;
    }
    let e = load("expected.safetensors");
    let prompt = e["prompt"].clone();
    let table = Tensor::cat(&[&table(), &prompt], 0).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for attention in [DecoderAttention::Plain, DecoderAttention::MultiHead] {
        let model = write_graph(tmp.path(), &format!("p{attention:?}.onnx"), &table, WeightDtype::F32, attention);
        let mut sess = session(&model);
        let (ids, mask) = (i64s(&e["input_ids"]), i64s(&e["attention_mask"]));
        // As tokens: [96, 97, ids...], mask [1, 1, mask...], positions cumsum - 1.
        let mut pids = Vec::new();
        let mut pmask = Vec::new();
        for r in 0..2 {
            pids.extend([96, 97]);
            pids.extend_from_slice(&ids[r * 5..r * 5 + 5]);
            pmask.extend([1, 1]);
            pmask.extend_from_slice(&mask[r * 5..r * 5 + 5]);
        }
        let positions = |m: &[i64], width: usize| -> Vec<i64> {
            let mut out = Vec::new();
            for row in m.chunks(width) {
                let mut c = 0;
                for &x in row {
                    c += x;
                    out.push(if x == 1 { c - 1 } else { 1 });
                }
            }
            out
        };
        let ppos = positions(&pmask, 7);
        let as_tokens = run(&mut sess, 2, &pids, &pmask, &ppos, &Vec::new());
        let d_hf = max_diff_attended(&as_tokens.logits, &f32s(&e["prompt_logits"]), &pmask, 96);
        assert!(d_hf < TOL, "{attention:?}: prompt as virtual tokens vs transformers: {d_hf}");

        // As a cache: the two virtual tokens alone (batch 1), repeated for the batch.
        let pc = run(&mut sess, 1, &[96, 97], &[1, 1], &[0, 1], &Vec::new());
        assert_eq!(pc.present_shape, vec![1, 2, 2, 8]);
        let past: Kv = pc
            .present
            .iter()
            .map(|(k, v)| ([k.clone(), k.clone()].concat(), [v.clone(), v.clone()].concat()))
            .collect();
        let pos_new: Vec<i64> = ppos
            .chunks(7)
            .flat_map(|row| row[2..].to_vec())
            .collect();
        let cached = run(&mut sess, 2, &ids, &pmask, &pos_new, &past);
        let mut token_rows = Vec::new();
        for r in 0..2 {
            token_rows.extend_from_slice(&as_tokens.logits[(r * 7 + 2) * 96..(r * 7 + 7) * 96]);
        }
        let d = max_diff_attended(&cached.logits, &token_rows, &mask, 96);
        eprintln!("{attention:?}: prompt as tokens vs transformers {d_hf:.2e}, as cache vs as tokens {d:.2e}");
        assert!(d < TOL, "{attention:?}: prompt as cache vs as tokens: {d}");
    }
}

/// `onnx.checker.check_model(full_check=True)` accepts the graph (f32 and f16, both attention
/// forms), and ONNX's shape inference types every output.
#[test]
fn decoder_graph_passes_onnx_checker() {
    let test = "decoder_graph_passes_onnx_checker";
    let Some(py) = adept_testkit::python_with(test, &["onnx"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (i, (dtype, attention)) in [
        (WeightDtype::F32, DecoderAttention::Plain),
        (WeightDtype::F16, DecoderAttention::Plain),
        (WeightDtype::F32, DecoderAttention::MultiHead),
    ]
    .into_iter()
    .enumerate()
    {
        let model = write_graph(tmp.path(), &format!("c{i}.onnx"), &table(), dtype, attention);
        let out = std::process::Command::new(&py)
            .arg("-c")
            .arg(
                "import sys, onnx\n\
                 m = onnx.load(sys.argv[1])\n\
                 onnx.checker.check_model(m, full_check=True)\n\
                 names = [o.name for o in m.graph.output]\n\
                 assert names[0] == 'logits' and names[1:] == [f'present.{i}.{kv}' for i in range(2) for kv in ('key', 'value')], names\n",
            )
            .arg(&model)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "onnx.checker rejected {} ({dtype:?}, {attention:?}):\n{}",
            model.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
