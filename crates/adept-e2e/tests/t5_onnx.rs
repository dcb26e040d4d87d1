//! T5 as ONNX (`adept_export::seq2seq`: encoder with the adapter stage, decoder with the
//! self/cross-attention cache) served by `adept_runtime::seq2seq`, against candle's `T5Model`
//! and transformers' outputs (tests/fixtures/tiny-t5-v1: relu, tied head; tiny-t5-v11:
//! gated-gelu, untied head, 3 decoder blocks; tests/reference/tiny_t5.py). Skipped without ONNX
//! Runtime (failed under `ADEPT_REQUIRE_MODEL=1`).

mod common;

use adept_adapters::adept::{B1, B2, W_DOWN, W_UP};
use adept_adapters::{Adapter, AdapterConfig, MethodKind, PROMPT};
use adept_backbones::t5::generate::{generate, GenerateOptions};
use adept_backbones::{Backbone, Seq2SeqLm, T5Model};
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::seq2seq::{encoder_graph, export_seq2seq, Seq2SeqExportOptions};
use adept_runtime::seq2seq::{
    DecodeMode, DecoderCache, EncoderOutput, Seq2SeqBundle, Seq2SeqGenerateOptions,
};
use adept_runtime::{build_session, SessionConfig};
use candle_core::{Device, Tensor};
use ort::value::Tensor as OrtTensor;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-4;
const FIXTURES: [&str; 2] = ["tiny-t5-v1", "tiny-t5-v11"];

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn expected(name: &str) -> Value {
    let p = fixture_dir(name).join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn model(name: &str) -> T5Model {
    T5Model::from_dir(&fixture_dir(name), &Device::Cpu).unwrap()
}

fn matrix_u32(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Deterministic values in `[-scale, scale]`.
fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// An adapter of `method` with a 3-row prompt and (ADePT) non-zero random MLP tensors.
fn adapter(m: &T5Model, method: MethodKind, seed: u64) -> Adapter {
    let d = m.config.d_model;
    let a = Adapter::init(AdapterConfig::new(method, d, 3, 4), &m.shared, seed).unwrap();
    if method == MethodKind::Adept {
        let mut vals: HashMap<String, Tensor> = a
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.copy().unwrap()))
            .collect();
        for (i, name) in [W_DOWN, B1, W_UP, B2].into_iter().enumerate() {
            let t = &vals[name];
            let v = lcg(seed * 10 + i as u64, t.elem_count(), 0.5);
            let nt = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            vals.insert(name.to_string(), nt);
        }
        a.set_values(&vals).unwrap();
    }
    if let Some(p) = a.prompt() {
        assert!(a.tensors().contains_key(PROMPT) && p.dims()[0] == 3);
    }
    a
}

fn rt(test: &str) -> Option<&'static adept_runtime::ortlib::OrtRuntime> {
    if !common::ort_available(test) {
        return None;
    }
    let lib = adept_testkit::ort_library(test)?;
    Some(adept_runtime::ortlib::load(&lib).unwrap())
}

fn cfg() -> SessionConfig {
    SessionConfig {
        intra_threads: Some(1),
        ..Default::default()
    }
}

/// candle: `[P; E + f(E)]` and the extended mask for token rows `ids` / `mask` (u32).
fn candle_inputs(
    m: &T5Model,
    a: &Adapter,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
) -> (Tensor, Tensor) {
    let ids = Tensor::new(ids.to_vec(), &Device::Cpu).unwrap();
    let mask = Tensor::new(mask.to_vec(), &Device::Cpu).unwrap();
    let embeds = a.apply(&m.word_embeddings(&ids).unwrap(), None).unwrap();
    (embeds, a.extend(&mask, 1).unwrap())
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs an encoder graph on `ids`/`mask` (padded rows), returning hidden states and mask.
fn run_encoder(
    rt: &adept_runtime::ortlib::OrtRuntime,
    path: &Path,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
) -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let mut sess = build_session(rt, path, &cfg()).unwrap().session;
    let (b, s) = (ids.len(), ids[0].len());
    let i: Vec<i64> = ids.concat().iter().map(|&x| x as i64).collect();
    let m: Vec<i64> = mask.concat().iter().map(|&x| x as i64).collect();
    let out = sess
        .run(vec![
            (
                "input_ids",
                OrtTensor::from_array(([b, s], i)).unwrap().upcast(),
            ),
            (
                "attention_mask",
                OrtTensor::from_array(([b, s], m)).unwrap().upcast(),
            ),
        ])
        .unwrap();
    let (shape, h) = out["last_hidden_state"]
        .try_extract_tensor::<f32>()
        .unwrap();
    let (_, em) = out["encoder_attention_mask"]
        .try_extract_tensor::<i64>()
        .unwrap();
    (h.to_vec(), em.to_vec(), shape.to_vec())
}

/// The ORT encoder equals candle's `T5Model::encode` (ADePT folded and unfolded with random
/// offsets and a 3-row prompt; PT; DePT; no adapter = transformers' encoder output), and the
/// folded encoder equals the unfolded one.
#[test]
fn t5_encoder_graph_matches_candle_and_transformers() {
    let test = "t5_encoder_graph_matches_candle_and_transformers";
    let Some(rt) = rt(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let m = model(name);
        let fx = expected(name);
        let ids = matrix_u32(&fx["input_ids"]);
        let mask = matrix_u32(&fx["attention_mask"]);
        let mut folded_unfolded = Vec::new();
        for (method, fold) in [
            (MethodKind::Adept, FoldMode::Folded),
            (MethodKind::Adept, FoldMode::Unfolded),
            (MethodKind::Pt, FoldMode::None),
            (MethodKind::Dept, FoldMode::None),
            (MethodKind::HeadOnly, FoldMode::None),
        ] {
            let a = adapter(&m, method, 7);
            let path = tmp.path().join(format!("{name}-{method}-{fold}.onnx"));
            encoder_graph(&m, &a, fold, WeightDtype::F32, 17)
                .unwrap()
                .save(&path)
                .unwrap();
            let (got, got_mask, shape) = run_encoder(rt, &path, &ids, &mask);
            let (embeds, ext) = candle_inputs(&m, &a, &ids, &mask);
            let want = m.encode(&embeds, &ext).unwrap();
            assert_eq!(
                shape.iter().map(|&x| x as usize).collect::<Vec<_>>(),
                want.dims()
            );
            let want_mask: Vec<i64> = flat(&ext.to_dtype(candle_core::DType::F32).unwrap())
                .iter()
                .map(|&x| x as i64)
                .collect();
            assert_eq!(got_mask, want_mask, "{name} {method} {fold}: encoder mask");
            let diff = max_diff(&got, &flat(&want));
            eprintln!("{name} {method} {fold}: |ORT - candle| = {diff:e}");
            assert!(diff < TOL, "{name} {method} {fold}: ORT vs candle {diff}");
            if matches!(method, MethodKind::Adept | MethodKind::Pt) {
                folded_unfolded.push(got.clone());
            }
            if method == MethodKind::HeadOnly {
                // transformers' encoder output (attended rows; padded rows are undefined)
                let hf: Vec<Vec<Vec<f32>>> =
                    serde_json::from_value(fx["encoder_last_hidden_state"].clone()).unwrap();
                let d = m.config.d_model;
                let s = ids[0].len();
                let mut worst = 0f32;
                for (b, rows) in hf.iter().enumerate() {
                    for (t, row) in rows.iter().enumerate() {
                        if mask[b][t] == 1 {
                            let o = (b * s + t) * d;
                            worst = worst.max(max_diff(&got[o..o + d], row));
                        }
                    }
                }
                eprintln!("{name}: |ORT - transformers| = {worst:e}");
                assert!(worst < TOL, "{name}: ORT encoder vs transformers {worst}");
            }
        }
        let diff = max_diff(&folded_unfolded[0], &folded_unfolded[1]);
        assert!(diff < 1e-5, "{name}: folded vs unfolded encoder {diff}");
        // The same prompt without the offsets (PT) gives other states: the offsets are live.
        let diff = max_diff(&folded_unfolded[0], &folded_unfolded[2]);
        assert!(
            diff > 1e-2,
            "{name}: ADePT's offsets change nothing ({diff})"
        );
    }
}

fn export(m: &T5Model, a: &Adapter, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let opts = Seq2SeqExportOptions {
        overwrite: true,
        ..Default::default()
    };
    let tok = fixture_dir("tiny-t5-v1").join("tokenizer.json");
    let report = export_seq2seq(m, a, &tok, &out, &opts).unwrap();
    assert_eq!(report.manifest.task_kind, "seq2seq");
    out
}

/// Decoder logits: one uncached run over 5 decoder tokens equals candle's `decode` +
/// `logits` and transformers' logits; five cached single-token steps equal the uncached run;
/// the cache has the documented shapes.
#[test]
fn t5_decoder_cache_matches_uncached_candle_and_transformers() {
    let test = "t5_decoder_cache_matches_uncached_candle_and_transformers";
    let Some(rt) = rt(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let m = model(name);
        let fx = expected(name);
        let ids = matrix_u32(&fx["input_ids"]);
        let mask = matrix_u32(&fx["attention_mask"]);
        let dec = matrix_u32(&fx["decoder_input_ids"]);
        for method in [MethodKind::HeadOnly, MethodKind::Adept] {
            let a = adapter(&m, method, 11);
            let dir = export(&m, &a, tmp.path(), &format!("{name}-{method}"));
            let mut bundle = Seq2SeqBundle::open(&dir, rt, &cfg()).unwrap();
            // trim the padding the ORT encoder's caller adds: rows are given unpadded
            let rows: Vec<Vec<u32>> = ids
                .iter()
                .zip(&mask)
                .map(|(r, mk)| {
                    r.iter()
                        .zip(mk)
                        .filter(|(_, &k)| k == 1)
                        .map(|(&t, _)| t)
                        .collect()
                })
                .collect();
            let enc = bundle.encode(&rows).unwrap();
            let (embeds, ext) = candle_inputs(&m, &a, &ids, &mask);
            let enc_c = m.encode(&embeds, &ext).unwrap();
            let (b, t) = (dec.len(), dec[0].len());
            let dec_t = Tensor::new(dec.clone(), &Device::Cpu).unwrap();
            let want = m
                .logits(&m.decode(&dec_t, &enc_c, &ext, None).unwrap())
                .unwrap();
            let want = flat(&want);
            let flat_ids: Vec<i64> = dec.concat().iter().map(|&x| x as i64).collect();
            let full = bundle
                .decoder_step(&enc, &flat_ids, &DecoderCache::default())
                .unwrap();
            let diff = max_diff(&full.logits, &want);
            eprintln!("{name} {method}: uncached |ORT - candle| = {diff:e}");
            assert!(
                diff < TOL,
                "{name} {method}: uncached logits vs candle {diff}"
            );
            if method == MethodKind::HeadOnly {
                let hf: Vec<Vec<Vec<f32>>> = serde_json::from_value(fx["logits"].clone()).unwrap();
                let hf: Vec<f32> = hf.concat().concat();
                let diff = max_diff(&full.logits, &hf);
                eprintln!("{name}: |ORT - transformers| logits = {diff:e}");
                assert!(diff < TOL, "{name}: logits vs transformers {diff}");
            }
            // cached, one token at a time
            let v = m.config.vocab_size;
            let mut cache = DecoderCache::default();
            for step in 0..t {
                let ids: Vec<i64> = dec.iter().map(|r| r[step] as i64).collect();
                let out = bundle.decoder_step(&enc, &ids, &cache).unwrap();
                for r in 0..b {
                    let got = &out.logits[r * v..(r + 1) * v];
                    let w = &full.logits[(r * t + step) * v..(r * t + step + 1) * v];
                    let diff = max_diff(got, w);
                    assert!(diff < TOL, "{name} {method}: step {step} row {r}: {diff}");
                }
                cache = out.cache;
                assert_eq!(cache.past, step + 1);
                assert_eq!(cache.enc_len, enc.len);
                let hk = m.config.num_heads * m.config.d_kv;
                assert_eq!(cache.self_kv[0].0.len(), b * hk * (step + 1));
                assert_eq!(cache.cross_kv[0].0.len(), b * hk * enc.len);
                assert_eq!(cache.self_kv.len(), m.decoder.len());
            }
        }
    }
}

fn hf_tokens(seqs: &Value, eos: u32) -> Vec<Vec<u32>> {
    matrix_u32(seqs)
        .into_iter()
        .map(|row| {
            let mut out = Vec::new();
            for &t in &row[1..] {
                out.push(t);
                if t == eos {
                    break;
                }
            }
            out
        })
        .collect()
}

fn unpadded(fx: &Value) -> Vec<Vec<u32>> {
    let ids = matrix_u32(&fx["input_ids"]);
    let mask = matrix_u32(&fx["attention_mask"]);
    ids.iter()
        .zip(&mask)
        .map(|(r, mk)| {
            r.iter()
                .zip(mk)
                .filter(|(_, &k)| k == 1)
                .map(|(&t, _)| t)
                .collect()
        })
        .collect()
}

/// ORT greedy and beam search (cached and uncached) give transformers' generations with no
/// adapter, and candle's `t5::generate` with an ADePT adapter (folded, 3-row prompt).
#[test]
fn t5_bundle_generation_matches_transformers_and_candle() {
    let test = "t5_bundle_generation_matches_transformers_and_candle";
    let Some(rt) = rt(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let m = model(name);
        let fx = expected(name);
        let eos = m.eos_token_id();
        let rows = unpadded(&fx);
        let a = adapter(&m, MethodKind::HeadOnly, 1);
        let dir = export(&m, &a, tmp.path(), &format!("{name}-plain"));
        let mut bundle = Seq2SeqBundle::open(&dir, rt, &cfg()).unwrap();
        let bl = &fx["beam_lp"];
        let cases = [
            ("greedy", 1, 1.0, 8),
            ("beam", 3, 1.0, 8),
            (
                "beam_lp",
                bl["num_beams"].as_u64().unwrap() as usize,
                bl["length_penalty"].as_f64().unwrap() as f32,
                bl["max_new_tokens"].as_u64().unwrap() as usize,
            ),
        ];
        for (case, k, lp, max_new) in cases {
            for mode in [DecodeMode::Cached, DecodeMode::Uncached] {
                let opts = Seq2SeqGenerateOptions {
                    max_new_tokens: max_new,
                    num_beams: k,
                    length_penalty: lp,
                    mode,
                };
                let got: Vec<Vec<u32>> = bundle
                    .generate(&rows, &opts)
                    .unwrap()
                    .into_iter()
                    .map(|g| g.tokens)
                    .collect();
                let want = hf_tokens(&fx[case]["sequences"], eos);
                assert_eq!(got, want, "{name} {case} {mode:?}: ORT vs transformers");
            }
        }
        // With an ADePT adapter: ORT = candle's generate on [P; E + f(E)].
        let a = adapter(&m, MethodKind::Adept, 5);
        let dir = export(&m, &a, tmp.path(), &format!("{name}-adept"));
        let mut bundle = Seq2SeqBundle::open(&dir, rt, &cfg()).unwrap();
        let ids = matrix_u32(&fx["input_ids"]);
        let mask = matrix_u32(&fx["attention_mask"]);
        let (embeds, ext) = candle_inputs(&m, &a, &ids, &mask);
        for (k, lp) in [(1usize, 1.0f32), (3, 1.0), (4, 0.5)] {
            let want: Vec<Vec<u32>> = generate(
                &m,
                &embeds,
                &ext,
                &GenerateOptions {
                    max_new_tokens: 10,
                    num_beams: k,
                    length_penalty: lp,
                },
            )
            .unwrap()
            .into_iter()
            .map(|h| h.tokens)
            .collect();
            let got: Vec<Vec<u32>> = bundle
                .generate(
                    &rows,
                    &Seq2SeqGenerateOptions {
                        max_new_tokens: 10,
                        num_beams: k,
                        length_penalty: lp,
                        mode: DecodeMode::Cached,
                    },
                )
                .unwrap()
                .into_iter()
                .map(|g| g.tokens)
                .collect();
            eprintln!("{name} adept beams {k}: {got:?}");
            assert_eq!(got, want, "{name} ADePT beams {k}: ORT vs candle");
        }
        // text in, text out through the bundle's tokenizer
        let out = bundle
            .generate_text(&["sentence: the movie was great!"], &Default::default())
            .unwrap();
        assert_eq!(out.len(), 1);
        assert!(!out[0].0.tokens.is_empty());
    }
}

/// `onnx.checker.check_model(full_check=True)` accepts both graphs (f32 and f16 weights), and
/// their input/output names are optimum's.
#[test]
fn t5_graphs_pass_onnx_checker() {
    let test = "t5_graphs_pass_onnx_checker";
    let Some(py) = adept_testkit::python_with(test, &["onnx"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let m = model(name);
        let a = adapter(&m, MethodKind::Adept, 3);
        for dtype in [WeightDtype::F32, WeightDtype::F16] {
            let out = tmp.path().join(format!("{name}-{dtype}"));
            let opts = Seq2SeqExportOptions {
                dtype,
                overwrite: true,
                ..Default::default()
            };
            export_seq2seq(
                &m,
                &a,
                &fixture_dir(name).join("tokenizer.json"),
                &out,
                &opts,
            )
            .unwrap();
            let layers = m.decoder.len();
            let res = std::process::Command::new(&py)
                .arg("-c")
                .arg(
                    "import sys, onnx\n\
                     n = int(sys.argv[3])\n\
                     e = onnx.load(sys.argv[1]); onnx.checker.check_model(e, full_check=True)\n\
                     d = onnx.load(sys.argv[2]); onnx.checker.check_model(d, full_check=True)\n\
                     assert [i.name for i in e.graph.input] == ['input_ids', 'attention_mask']\n\
                     assert [o.name for o in e.graph.output] == ['last_hidden_state', 'encoder_attention_mask']\n\
                     kv = lambda p: [f'{p}.{i}.{s}.{x}' for i in range(n) for s in ('decoder', 'encoder') for x in ('key', 'value')]\n\
                     ins = [i.name for i in d.graph.input]\n\
                     assert ins == ['input_ids', 'encoder_attention_mask', 'encoder_hidden_states'] + kv('past_key_values'), ins\n\
                     outs = [o.name for o in d.graph.output]\n\
                     assert outs == ['logits'] + kv('present'), outs\n",
                )
                .arg(out.join("encoder_model.onnx"))
                .arg(out.join("decoder_model.onnx"))
                .arg(layers.to_string())
                .output()
                .unwrap();
            assert!(
                res.status.success(),
                "onnx.checker rejected {name} {dtype}:\n{}",
                String::from_utf8_lossy(&res.stderr)
            );
        }
    }
}

/// Per-token decode latency in ONNX Runtime (one thread) on tiny-t5-v11, batch 1, with and
/// without the cache, at 8, 32 and 128 new tokens (a fixed token fed every step, no EOS stop).
/// Run with `cargo test -p adept-e2e --test t5_onnx -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_t5_decode_per_token() {
    let test = "bench_t5_decode_per_token";
    let Some(rt) = rt(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let name = "tiny-t5-v11";
    let m = model(name);
    let a = adapter(&m, MethodKind::Adept, 2);
    let dir = export(&m, &a, tmp.path(), "bench");
    let mut bundle = Seq2SeqBundle::open(&dir, rt, &cfg()).unwrap();
    let enc: EncoderOutput = bundle.encode(&[vec![12, 57, 33, 8, 91, 40, 1]]).unwrap();
    for n in [8usize, 32, 128] {
        for mode in [DecodeMode::Cached, DecodeMode::Uncached] {
            let mut times = Vec::new();
            for _rep in 0..3 {
                let start = std::time::Instant::now();
                let mut cache = DecoderCache::default();
                let mut seq: Vec<i64> = Vec::new();
                for step in 0..n {
                    let tok = if step == 0 { 0 } else { 5 };
                    seq.push(tok);
                    match mode {
                        DecodeMode::Cached => {
                            cache = bundle.decoder_step(&enc, &[tok], &cache).unwrap().cache;
                        }
                        DecodeMode::Uncached => {
                            bundle
                                .decoder_step(&enc, &seq, &DecoderCache::default())
                                .unwrap();
                        }
                    }
                }
                times.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
            }
            times.sort_by(f64::total_cmp);
            eprintln!(
                "{name} {mode:?} {n} new tokens: {:.0} us/token (median of 3)",
                times[1]
            );
        }
    }
}

/// The encoder/decoder graphs store the relative bias per distance clamped to
/// `D = max(max_distance, num_buckets)` (`adept_backbones::t5::onnx::clamp_distance`): exact
/// only if every distance beyond `D` has the bucket of `±D`. Checked for the fixtures' and the
/// released T5 configs, both directions, up to 5000 positions.
#[test]
fn t5_relative_bucket_clamp_is_exact() {
    use adept_backbones::t5::relative_position_bucket;
    for name in FIXTURES {
        let m = model(name);
        let d = adept_backbones::t5::onnx::clamp_distance(&m) as i64;
        let c = &m.config;
        for bidi in [true, false] {
            for r in -5000i64..5000 {
                let cl = r.clamp(-d, d);
                assert_eq!(
                    relative_position_bucket(
                        r,
                        bidi,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance
                    ),
                    relative_position_bucket(
                        cl,
                        bidi,
                        c.relative_attention_num_buckets,
                        c.relative_attention_max_distance
                    ),
                    "{name}: r {r} bidirectional {bidi}"
                );
            }
        }
    }
    for (nb, md) in [(32usize, 128usize), (64, 256), (16, 64), (32, 40)] {
        let d = md.max(nb) as i64;
        for bidi in [true, false] {
            for r in -5000i64..5000 {
                assert_eq!(
                    relative_position_bucket(r, bidi, nb, md),
                    relative_position_bucket(r.clamp(-d, d), bidi, nb, md),
                    "buckets {nb} max distance {md}: r {r} bidirectional {bidi}"
                );
            }
        }
    }
}

/// Clear errors: an existing folder without `overwrite`, a token id outside the vocabulary, a
/// bundle file changed after export (sha256), and a non-T5 path through `as_t5` is covered by
/// the type (the export takes any `dyn Seq2SeqLm`).
#[test]
fn t5_bundle_rejects_bad_input() {
    let test = "t5_bundle_rejects_bad_input";
    let Some(rt) = rt(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-t5-v1");
    let a = adapter(&m, MethodKind::Pt, 4);
    let dir = export(&m, &a, tmp.path(), "b");
    let err = export_seq2seq(
        &m,
        &a,
        &fixture_dir("tiny-t5-v1").join("tokenizer.json"),
        &dir,
        &Seq2SeqExportOptions::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    let mut bundle = Seq2SeqBundle::open(&dir, rt, &cfg()).unwrap();
    let err = bundle
        .generate(&[vec![5, 100, 1]], &Default::default())
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("outside the vocabulary"),
        "{err:#}"
    );
    drop(bundle);
    let dec = dir.join("decoder_model.onnx");
    let mut bytes = std::fs::read(&dec).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&dec, bytes).unwrap();
    let err = Seq2SeqBundle::open(&dir, rt, &cfg()).err().unwrap();
    assert!(format!("{err:#}").contains("sha256"), "{err:#}");
}
