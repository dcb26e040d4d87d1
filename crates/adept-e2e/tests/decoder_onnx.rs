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
        OrtTensor::from_array(([b, n], v.to_vec()))
            .unwrap()
            .upcast()
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
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
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
    assert_eq!(
        full.present_shape,
        vec![2, 2, 5, 8],
        "present after 5 tokens"
    );
    let d_full = max_diff_attended(&full.logits, &f32s(&e["logits"]), &mask, 96);

    let (sids, smask, spos) = (
        i64s(&e["step_ids"]),
        i64s(&e["step_mask"]),
        i64s(&e["step_position_ids"]),
    );
    let step = run(&mut sess, 2, &sids, &smask, &spos, &full.present);
    assert_eq!(
        step.present_shape,
        vec![2, 2, 6, 8],
        "present after the step"
    );
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
        for (a, b) in [
            (&un.present[i].0, &step.present[i].0),
            (&un.present[i].1, &step.present[i].1),
        ] {
            for (n, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                let (row, pos) = (n / (2 * 6 * 8), (n / 8) % 6);
                if smask[row * 6 + pos] == 1 {
                    assert!(
                        (x - y).abs() < TOL,
                        "present.{i} at batch {row}, position {pos}: {x} vs {y}"
                    );
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
        eprintln!(
            "{attention:?}: full {d_full:.2e}, step {d_step:.2e}, cached vs uncached {d_cache:.2e}"
        );
        assert!(
            d_full < TOL,
            "{attention:?}: full-sequence logits off by {d_full}"
        );
        assert!(
            d_step < TOL,
            "{attention:?}: cached-step logits off by {d_step}"
        );
        assert!(
            d_cache < TOL,
            "{attention:?}: cached vs uncached off by {d_cache}"
        );
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
    let f32_model = write_graph(
        tmp.path(),
        "f32.onnx",
        &table(),
        WeightDtype::F32,
        DecoderAttention::Plain,
    );
    let model = write_graph(
        tmp.path(),
        "f16.onnx",
        &table(),
        WeightDtype::F16,
        DecoderAttention::Plain,
    );
    let small = std::fs::metadata(&model).unwrap().len();
    let big = std::fs::metadata(&f32_model).unwrap().len();
    assert!(
        (small as f64) < 0.6 * big as f64,
        "f16 file {small} B vs f32 {big} B"
    );
    let (d_full, d_step, d_cache) = batch_and_step(&model);
    eprintln!("f16: full {d_full:.2e}, step {d_step:.2e}, cached vs uncached {d_cache:.2e}");
    assert!(
        d_full < 2e-2 && d_step < 2e-2,
        "f16 logits off by {d_full} / {d_step}"
    );
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
        let model = write_graph(
            tmp.path(),
            &format!("p{attention:?}.onnx"),
            &table,
            WeightDtype::F32,
            attention,
        );
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
        assert!(
            d_hf < TOL,
            "{attention:?}: prompt as virtual tokens vs transformers: {d_hf}"
        );

        // As a cache: the two virtual tokens alone (batch 1), repeated for the batch.
        let pc = run(&mut sess, 1, &[96, 97], &[1, 1], &[0, 1], &Vec::new());
        assert_eq!(pc.present_shape, vec![1, 2, 2, 8]);
        let past: Kv = pc
            .present
            .iter()
            .map(|(k, v)| {
                (
                    [k.clone(), k.clone()].concat(),
                    [v.clone(), v.clone()].concat(),
                )
            })
            .collect();
        let pos_new: Vec<i64> = ppos.chunks(7).flat_map(|row| row[2..].to_vec()).collect();
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
        let model = write_graph(
            tmp.path(),
            &format!("c{i}.onnx"),
            &table(),
            dtype,
            attention,
        );
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

/// Decode time per token at SmolLM2-135M size (30 layers, d 576, 9 heads, 3 kv heads, hd 64,
/// ffn 1536, vocab 49152; random weights stored f16, f32 arithmetic), batch 1, for each
/// attention form: a 32-token prefill, then 32 cached steps; prints the median step time.
/// `ADEPT_BENCH_THREADS` sets ONNX Runtime's intra-op threads (default 1). Run with
/// `cargo test -p adept-e2e --test decoder_onnx -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: writes two ~330 MB graphs"]
fn bench_decode_smollm2_size() {
    if !common::ort_available("bench_decode_smollm2_size") {
        return;
    }
    let dims = LlamaDims {
        layers: 30,
        hidden: 576,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        ffn: 1536,
        rms_eps: 1e-5,
        rope_theta: 100000.0,
        vocab: 49152,
    };
    let cache = CacheShape {
        layers: 30,
        kv_heads: 3,
        head_dim: 64,
    };
    let threads: usize = std::env::var("ADEPT_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let table = Tensor::randn(0f32, 0.02, (49152, 576), &Device::Cpu).unwrap();
    let weight = |n: &str| -> anyhow::Result<Tensor> {
        let shape: Vec<usize> = if n.ends_with("layernorm.weight") || n == "model.norm.weight" {
            vec![576]
        } else if n.contains("q_proj") || n.contains("o_proj") {
            vec![576, 576]
        } else if n.contains("k_proj") || n.contains("v_proj") {
            vec![192, 576]
        } else if n.contains("gate_proj") || n.contains("up_proj") {
            vec![1536, 576]
        } else if n.contains("down_proj") {
            vec![576, 1536]
        } else {
            anyhow::bail!("unknown tensor {n}")
        };
        if shape.len() == 1 {
            return Ok(Tensor::ones(576, DType::F32, &Device::Cpu)?);
        }
        Ok(Tensor::randn(0f32, 0.02, shape, &Device::Cpu)?)
    };
    let tmp = tempfile::tempdir().unwrap();
    for attention in [DecoderAttention::Plain, DecoderAttention::MultiHead] {
        let stage = InputStage {
            table: table.clone(),
            vocab: 49152,
            mlp: None,
        };
        let builder = decoder_graph(
            &stage,
            cache,
            49152,
            WeightDtype::F16,
            17,
            &mut |g, inputs| emit_decoder_with(g, &dims, &weight, &table, inputs, attention),
        )
        .unwrap();
        let path = tmp.path().join(format!("{attention:?}.onnx"));
        builder.save(&path).unwrap();
        drop(builder);
        let lib = adept_testkit::ort_library("bench").unwrap();
        let rt = adept_runtime::ortlib::load(&lib).unwrap();
        let cfg = SessionConfig {
            intra_threads: Some(threads),
            intra_op_spinning: Some(false),
            ..Default::default()
        };
        let mut sess = build_session(rt, &path, &cfg).unwrap().session;
        let prefill = 32usize;
        let ids: Vec<i64> = (0..prefill as i64).map(|i| 100 + 7 * i).collect();
        let pos: Vec<i64> = (0..prefill as i64).collect();
        let run_big = |sess: &mut Session, ids: &[i64], pos: &[i64], total: usize, past: &Kv| {
            let s = ids.len();
            let p = total - s;
            let mut inputs: Vec<(String, DynTensor)> = vec![
                (
                    "input_ids".into(),
                    OrtTensor::from_array(([1, s], ids.to_vec()))
                        .unwrap()
                        .upcast(),
                ),
                (
                    "attention_mask".into(),
                    OrtTensor::from_array(([1, total], vec![1i64; total]))
                        .unwrap()
                        .upcast(),
                ),
                (
                    "position_ids".into(),
                    OrtTensor::from_array(([1, s], pos.to_vec()))
                        .unwrap()
                        .upcast(),
                ),
            ];
            for i in 0..30 {
                let (kn, vn) = past_names(i);
                let (k, v) = past.get(i).cloned().unwrap_or_default();
                inputs.push((
                    kn,
                    OrtTensor::from_array(([1, 3, p, 64], k)).unwrap().upcast(),
                ));
                inputs.push((
                    vn,
                    OrtTensor::from_array(([1, 3, p, 64], v)).unwrap().upcast(),
                ));
            }
            let out = sess.run(inputs).unwrap();
            let (_, logits) = out["logits"].try_extract_tensor::<f32>().unwrap();
            let last = &logits[(s - 1) * 49152..s * 49152];
            let next = last
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as i64;
            let present: Kv = (0..30)
                .map(|i| {
                    let (kn, vn) = present_names(i);
                    let k = out[kn.as_str()]
                        .try_extract_tensor::<f32>()
                        .unwrap()
                        .1
                        .to_vec();
                    let v = out[vn.as_str()]
                        .try_extract_tensor::<f32>()
                        .unwrap()
                        .1
                        .to_vec();
                    (k, v)
                })
                .collect();
            (next, present)
        };
        let t0 = std::time::Instant::now();
        let (mut next, mut past) = run_big(&mut sess, &ids, &pos, prefill, &Vec::new());
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut times = Vec::new();
        for step in 0..32 {
            let t = std::time::Instant::now();
            let total = prefill + step + 1;
            let (n, p) = run_big(&mut sess, &[next], &[(total - 1) as i64], total, &past);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            next = n;
            past = p;
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "{attention:?}: prefill {prefill} tokens {:.1} ms, decode median {:.2} ms/token (min {:.2}, max {:.2}), {threads} thread(s), file {:.0} MB",
            prefill_s * 1e3,
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            std::fs::metadata(&path).unwrap().len() as f64 / 1e6
        );
    }
}

// ------------------------------------------------------------------------------------------
// export_causal_lm with a stand-in CausalLm (the candle Llama arrives separately): it emits
// itself with `llama::onnx::emit_decoder` from the fixture weights, and its `forward_embeds`
// only serves the prompt cache, answering with transformers' keys/values for the fixture
// prompt (after checking it was asked for exactly that prompt).
// ------------------------------------------------------------------------------------------

use adept_adapters::{Adapter, AdapterConfig, MethodKind};
use adept_backbones::llama::{LlamaConfig, LlamaModel};
use adept_backbones::Backbone;
use adept_export::decoder::{export_causal_lm, DecoderExportOptions, GenerationInfo};
use adept_train::CausalLmModel;

/// The fixture's weights as a real candle [`LlamaModel`] (the config
/// tests/reference/llama_onnx_reference.py builds).
fn fixture_llama() -> LlamaModel {
    let cfg = LlamaConfig::from_json_str(
        r#"{"model_type": "llama", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "tie_word_embeddings": true, "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu"}"#,
    )
    .unwrap();
    LlamaModel::from_tensors(
        cfg,
        load("model.safetensors"),
        &fixtures().join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

/// A `method` adapter over the fixture model with the fixture prompt and (ADePT) non-zero,
/// deterministic MLP weights.
fn fixture_model(method: MethodKind) -> CausalLmModel {
    let backbone = fixture_llama();
    let expected = load("expected.safetensors");
    let cfg = AdapterConfig::new(method, 32, 2, 4);
    let adapter = Adapter::init(cfg, backbone.word_embedding_table(), 7).unwrap();
    let mut values = HashMap::new();
    for (name, t) in adapter.tensors() {
        let v = if name == adept_adapters::PROMPT {
            expected["prompt"].clone()
        } else {
            let n = t.elem_count();
            let data: Vec<f32> = (0..n).map(|i| 0.3 * (i as f32 * 0.7 + 0.1).sin()).collect();
            Tensor::from_vec(data, t.dims(), &Device::Cpu).unwrap()
        };
        values.insert(name, v);
    }
    adapter.set_values(&values).unwrap();
    CausalLmModel {
        backbone: Box::new(backbone),
        adapter,
    }
}

fn export(
    model: &CausalLmModel,
    dir: &Path,
    name: &str,
    fold: Option<adept_bundle::FoldMode>,
) -> PathBuf {
    let tok = dir.join("tokenizer.json");
    std::fs::write(&tok, b"{\"fixture\": true}").unwrap();
    let out = dir.join(name);
    let opts = DecoderExportOptions {
        fold,
        generation: GenerationInfo {
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: Some(0),
            chat_template: None,
        },
        ..Default::default()
    };
    export_causal_lm(model, &tok, &out, &opts).unwrap();
    out
}

/// Logits of the bundle for the fixture batch with the prompt (a) as virtual tokens and (b)
/// from `prompt_cache.safetensors`; rows of the input tokens only, `[2, 5, 96]` flat each.
fn bundle_logits(bundle: &Path) -> (Vec<f32>, Vec<f32>) {
    let e = load("expected.safetensors");
    let mut sess = session(&bundle.join("model.onnx"));
    let (ids, mask) = (i64s(&e["input_ids"]), i64s(&e["attention_mask"]));
    let mut pids = Vec::new();
    let mut pmask = Vec::new();
    let mut ppos = Vec::new();
    for r in 0..2 {
        pids.extend([96, 97]);
        pids.extend_from_slice(&ids[r * 5..r * 5 + 5]);
        pmask.extend([1, 1]);
        pmask.extend_from_slice(&mask[r * 5..r * 5 + 5]);
        let mut c = 0;
        for &m in &pmask[r * 7..r * 7 + 7] {
            c += m;
            ppos.push(if m == 1 { c - 1 } else { 1 });
        }
    }
    let tokens = run(&mut sess, 2, &pids, &pmask, &ppos, &Vec::new());
    let pc = load_cache(bundle);
    let past: Kv = pc
        .into_iter()
        .map(|(k, v)| ([k.clone(), k].concat(), [v.clone(), v].concat()))
        .collect();
    let pos_new: Vec<i64> = ppos.chunks(7).flat_map(|row| row[2..].to_vec()).collect();
    let cached = run(&mut sess, 2, &ids, &pmask, &pos_new, &past);
    let mut token_rows = Vec::new();
    for r in 0..2 {
        token_rows.extend_from_slice(&tokens.logits[(r * 7 + 2) * 96..(r * 7 + 7) * 96]);
    }
    (token_rows, cached.logits)
}

fn load_cache(bundle: &Path) -> Kv {
    let t = candle_core::safetensors::load(bundle.join("prompt_cache.safetensors"), &Device::Cpu)
        .unwrap();
    (0..2)
        .map(|i| {
            let (kn, vn) = past_names(i);
            assert_eq!(t[&kn].dims(), &[1, 2, 2, 8], "{kn}");
            assert_eq!(t[&vn].dims(), &[1, 2, 2, 8], "{vn}");
            (f32s(&t[&kn]), f32s(&t[&vn]))
        })
        .collect()
}

fn input_rows_of(logits: &Tensor) -> Vec<f32> {
    // prompt_logits [2, 7, 96] → rows 2.. of each sequence.
    f32s(&logits.narrow(1, 2, 5).unwrap())
}

/// PT: the bundle's files and manifest, and its logits (prompt as virtual tokens, prompt
/// from the shipped cache) equal transformers' `inputs_embeds = [P; E]` logits.
#[test]
fn export_causal_lm_pt_bundle_matches_transformers() {
    if !common::ort_available("export_causal_lm_pt_bundle_matches_transformers") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model(MethodKind::Pt);
    let bundle = export(&model, tmp.path(), "pt", None);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("adept.json")).unwrap()).unwrap();
    for (k, v) in [
        ("model_family", serde_json::json!("llama")),
        ("method", serde_json::json!("pt")),
        ("fold", serde_json::json!("none")),
        ("prompt_length", serde_json::json!(2)),
        ("vocab_size", serde_json::json!(96)),
        ("num_outputs", serde_json::json!(96)),
    ] {
        assert_eq!(m[k], v, "adept.json {k}");
    }
    for (k, v) in [
        ("task_kind", serde_json::json!("causal-lm")),
        ("num_layers", serde_json::json!(2)),
        ("kv_heads", serde_json::json!(2)),
        ("head_dim", serde_json::json!(8)),
        ("vocab_size", serde_json::json!(96)),
        ("prompt_len", serde_json::json!(2)),
        ("virtual_token_base", serde_json::json!(96)),
        ("bos_token_id", serde_json::json!(1)),
        ("eos_token_ids", serde_json::json!([2])),
        ("pad_token_id", serde_json::json!(0)),
        ("max_sequence_len", serde_json::json!(64)),
        (
            "prompt_cache_file",
            serde_json::json!("prompt_cache.safetensors"),
        ),
    ] {
        assert_eq!(m["decoder"][k], v, "adept.json decoder.{k}");
    }
    // The typed manifest reads it back and the checksums hold.
    let typed = adept_bundle::BundleManifest::read(&bundle).unwrap();
    typed.verify_files(&bundle).unwrap();
    assert!(typed.is_decoder());
    for f in ["model.onnx", "tokenizer.json", "prompt_cache.safetensors"] {
        let sha = m["files"][f]["sha256"].as_str().unwrap();
        assert_eq!(
            sha,
            adept_bundle::sha256_file(&bundle.join(f)).unwrap(),
            "{f}"
        );
    }
    let e = load("expected.safetensors");
    let want = input_rows_of(&e["prompt_logits"]);
    let mask = i64s(&e["attention_mask"]);
    let (tokens, cached) = bundle_logits(&bundle);
    let d_tokens = max_diff_attended(&tokens, &want, &mask, 96);
    let d_cached = max_diff_attended(&cached, &want, &mask, 96);
    eprintln!(
        "PT bundle: virtual tokens {d_tokens:.2e}, prompt cache {d_cached:.2e} vs transformers"
    );
    assert!(d_tokens < TOL && d_cached < TOL, "{d_tokens} / {d_cached}");
    // A second export to the same folder needs overwrite.
    let tok = tmp.path().join("tokenizer.json");
    let err =
        export_causal_lm(&model, &tok, &bundle, &DecoderExportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

/// ADePT folded and unfolded give the same logits, as virtual tokens and from the shipped
/// prompt cache (so the unfolded MLP leaves the prompt rows alone); DePT is refused.
#[test]
fn export_causal_lm_adept_folded_equals_unfolded_and_dept_is_refused() {
    if !common::ort_available("export_causal_lm_adept_folded_equals_unfolded_and_dept_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model(MethodKind::Adept);
    let folded = export(&model, tmp.path(), "folded", None);
    let unfolded = export(
        &model,
        tmp.path(),
        "unfolded",
        Some(adept_bundle::FoldMode::Unfolded),
    );
    // The unfolded graph runs the MLP (a Relu between two MatMuls); the folded one does not.
    let relus = |b: &Path| {
        let bytes = std::fs::read(b.join("model.onnx")).unwrap();
        let m = adept_onnx::proto::decode_model(&bytes).unwrap();
        let g = m.graph.unwrap();
        g.node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Relu"))
            .count()
    };
    assert_eq!((relus(&folded), relus(&unfolded)), (0, 1));
    let (ft, fc) = bundle_logits(&folded);
    let (ut, uc) = bundle_logits(&unfolded);
    let mask = i64s(&load("expected.safetensors")["attention_mask"]);
    let d_fold = max_diff_attended(&ft, &ut, &mask, 96);
    let d_fc = max_diff_attended(&ft, &fc, &mask, 96);
    let d_uc = max_diff_attended(&ut, &uc, &mask, 96);
    // The offsets matter: ADePT's logits differ from PT's (the transformers reference).
    let pt = input_rows_of(&load("expected.safetensors")["prompt_logits"]);
    let d_pt = max_diff_attended(&ft, &pt, &mask, 96);
    eprintln!("ADePT: folded vs unfolded {d_fold:.2e}; tokens vs cache {d_fc:.2e} / {d_uc:.2e}; vs PT {d_pt:.2e}");
    assert!(
        d_fold < TOL && d_fc < TOL && d_uc < TOL,
        "{d_fold} {d_fc} {d_uc}"
    );
    assert!(d_pt > 1e-2, "the offsets changed nothing ({d_pt})");

    let dept = fixture_model(MethodKind::Dept);
    let tok = tmp.path().join("tokenizer.json");
    let err = export_causal_lm(
        &dept,
        &tok,
        &tmp.path().join("dept"),
        &DecoderExportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("DePT cannot be exported"), "{err}");
    assert!(!tmp.path().join("dept").exists());
}

/// The exported ADePT bundle (folded) against candle's own `CausalLmModel` on the same weights:
/// logits of every attended input row within 1e-4 (prompt from the shipped cache), and ORT
/// greedy decoding (cache fed back step by step, offsets folded into the table for generated
/// tokens too) equal to candle's `generate::greedy` token for token.
#[test]
fn adept_bundle_matches_candle_logits_and_greedy_tokens() {
    if !common::ort_available("adept_bundle_matches_candle_logits_and_greedy_tokens") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model(MethodKind::Adept);
    let bundle = export(&model, tmp.path(), "adept", None);
    let e = load("expected.safetensors");
    let ids_t = e["input_ids"].to_dtype(DType::U32).unwrap();
    let mask_t = e["attention_mask"].to_dtype(DType::U32).unwrap();
    let want = f32s(&model.logits(&ids_t, &mask_t).unwrap());
    let mask = i64s(&e["attention_mask"]);
    let (tokens, cached) = bundle_logits(&bundle);
    let d_tokens = max_diff_attended(&tokens, &want, &mask, 96);
    let d_cached = max_diff_attended(&cached, &want, &mask, 96);
    eprintln!("ADePT bundle vs candle: virtual tokens {d_tokens:.2e}, prompt cache {d_cached:.2e}");
    assert!(d_tokens < TOL && d_cached < TOL, "{d_tokens} / {d_cached}");

    // Greedy: candle (offsets applied to every token by the embed closure, prompt as prefix).
    let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 33, 9], vec![40, 3]];
    let embed = |ids: &Tensor| model.embed_tokens(ids, None);
    let opts = adept_backbones::generate::GreedyOptions::new(10, &[]);
    let candle_out = adept_backbones::generate::greedy(
        model.backbone.as_ref(),
        &embed,
        model.adapter.prompt(),
        &prompts,
        &opts,
    )
    .unwrap();
    // ORT: left-padded batch after the prompt cache, then one token per row per step.
    let mut sess = session(&bundle.join("model.onnx"));
    let pc = load_cache(&bundle);
    let l = 2usize;
    let s = prompts.iter().map(Vec::len).max().unwrap();
    let mut past: Kv = pc
        .into_iter()
        .map(|(k, v)| ([k.clone(), k].concat(), [v.clone(), v].concat()))
        .collect();
    let mut ids = Vec::new();
    let mut m: Vec<Vec<i64>> = Vec::new();
    let mut pos = Vec::new();
    for p in &prompts {
        let pad = s - p.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(p.iter().map(|&t| t as i64)));
        let row: Vec<i64> = std::iter::repeat_n(1, l)
            .chain(std::iter::repeat_n(0, pad))
            .chain(std::iter::repeat_n(1, p.len()))
            .collect();
        pos.extend(
            (0..pad)
                .map(|_| 1i64)
                .chain((0..p.len() as i64).map(|i| l as i64 + i)),
        );
        m.push(row);
    }
    let mut ort_out = vec![Vec::new(); 2];
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| (l + p.len()) as i64).collect();
    let mut step_ids = ids;
    let mut step_pos = pos;
    for _ in 0..10 {
        let flat_mask: Vec<i64> = m.iter().flatten().copied().collect();
        let out = run(&mut sess, 2, &step_ids, &flat_mask, &step_pos, &past);
        let steps = step_ids.len() / 2;
        let mut next = Vec::new();
        for (r, ids) in ort_out.iter_mut().enumerate().take(2) {
            let row = &out.logits[((r + 1) * steps - 1) * 96..(r + 1) * steps * 96];
            let arg = adept_bundle::argmax(row) as i64;
            ids.push(arg as u32);
            next.push(arg);
        }
        past = out.present;
        step_ids = next;
        step_pos = next_pos.clone();
        for (row, p) in m.iter_mut().zip(next_pos.iter_mut()) {
            row.push(1);
            *p += 1;
        }
    }
    assert_eq!(ort_out, candle_out, "ORT greedy vs candle greedy");

    // The runtime's own loop (adept_runtime::OrtDecoderStep + adept_bundle::generate::generate,
    // what `adept generate` runs), from the shipped prompt cache and from virtual tokens.
    struct Ids;
    impl adept_bundle::generate::Detokenizer for Ids {
        fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
            Ok(ids.iter().map(|i| format!("<{i}>")).collect())
        }
    }
    let manifest = adept_bundle::BundleManifest::read(&bundle).unwrap();
    let spec = manifest.decoder.clone().unwrap();
    let cache =
        adept_runtime::PromptCache::read(&bundle.join(&spec.prompt_cache_file), &spec).unwrap();
    let cfg = adept_bundle::generate::GenerationConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    for use_cache in [true, false] {
        let mut sess = session(&bundle.join("model.onnx"));
        let mut step = adept_runtime::OrtDecoderStep::new(
            &mut sess,
            &spec,
            use_cache.then_some(&cache),
            &bundle.join("model.onnx"),
        );
        let gens =
            adept_bundle::generate::generate(&mut step, &prompts, 0, &cfg, &Ids, &mut |_, _| {})
                .unwrap();
        let got: Vec<Vec<u32>> = gens.into_iter().map(|g| g.token_ids).collect();
        assert_eq!(
            got, candle_out,
            "runtime generate (prompt cache {use_cache}) vs candle"
        );
    }
}
