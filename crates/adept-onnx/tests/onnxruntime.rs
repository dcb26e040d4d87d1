//! Builds small graphs, saves them, validates them with `onnx.checker` (full check) and runs
//! them with ONNX Runtime through `tests/check_and_run.py`, comparing against references
//! computed here with naive loops in f64.
//!
//! Needs `python3` with `onnx` and `onnxruntime` importable (override the interpreter with
//! `ADEPT_PYTHON`); without them each test skips, or fails under `ADEPT_REQUIRE_MODEL=1` (CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use adept_onnx::{DataType, Dim, ModelBuilder};
use serde_json::{json, Value};

const TOLERANCE: f64 = 1e-5;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn python() -> String {
    adept_testkit::python()
}

fn python_available(test: &str) -> bool {
    adept_testkit::python_with(test, &["onnx", "onnxruntime"]).is_some()
}

fn work_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("adept-onnx-{test}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A test input: dtype name (numpy), shape and flat data.
fn tensor_json<T: Copy + Into<Value>>(dtype: &str, shape: &[usize], data: &[T]) -> Value {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let data: Vec<Value> = data.iter().map(|&v| v.into()).collect();
    json!({ "dtype": dtype, "shape": shape, "data": data })
}

/// Saves `model`, runs the checker and ONNX Runtime on `inputs`, returns the report.
fn check_and_run(test: &str, model: &ModelBuilder, inputs: Value) -> Value {
    let dir = work_dir(test);
    let model_path = dir.join("model.onnx");
    let inputs_path = dir.join("inputs.json");
    let report_path = dir.join("report.json");
    model.save(&model_path).unwrap();
    std::fs::write(&inputs_path, serde_json::to_vec(&inputs).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_and_run.py");
    let out = Command::new(python())
        .arg(&script)
        .args([&model_path, &inputs_path, &report_path])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_and_run.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap()
}

fn output(report: &Value, name: &str) -> (Vec<usize>, Vec<f64>) {
    let o = &report["outputs"][name];
    assert!(!o.is_null(), "no output {name:?} in {}", report["outputs"]);
    let shape = o["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data = o["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (shape, data)
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let (i, diff) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold(
            (0, 0.0f64),
            |acc, (i, d)| if d > acc.1 { (i, d) } else { acc },
        );
    eprintln!("{name}: max |diff| {diff:e} over {} values", got.len());
    assert!(
        diff <= TOLERANCE,
        "{name}: max |diff| {diff:e} at {i} (got {}, want {})",
        got[i],
        want[i]
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Deterministic pseudo-random values in `[-scale, scale)` (64-bit LCG, top 24 bits).
struct Lcg(u64);

impl Lcg {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let unit = (self.0 >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * unit - 1.0) * scale
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Naive f64 reference ops on row-major [rows, cols] views
// ---------------------------------------------------------------------------------------

/// `x [rows, in] · Wᵀ + b` with PyTorch-layout `w [out, in]`.
fn ref_linear(x: &[f64], w: &[f32], b: &[f32], input: usize, out: usize) -> Vec<f64> {
    let rows = x.len() / input;
    let mut y = vec![0.0; rows * out];
    for r in 0..rows {
        for o in 0..out {
            let mut acc = f64::from(b[o]);
            for i in 0..input {
                acc += x[r * input + i] * f64::from(w[o * input + i]);
            }
            y[r * out + o] = acc;
        }
    }
    y
}

fn ref_gelu(x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| 0.5 * v * (1.0 + libm::erf(v / std::f64::consts::SQRT_2)))
        .collect()
}

fn ref_layer_norm(x: &[f64], gamma: &[f32], beta: &[f32], eps: f64) -> Vec<f64> {
    let d = gamma.len();
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter().enumerate() {
            y.push((v - mean) * inv * f64::from(gamma[i]) + f64::from(beta[i]));
        }
    }
    y
}

fn ref_softmax_rows(x: &[f64], d: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(d) {
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        y.extend(exps.iter().map(|e| e / sum));
    }
    y
}

/// Multi-head self attention over `[batch, seq, d]` q/k/v with a `[batch, seq]` key mask.
#[allow(clippy::too_many_arguments)]
fn ref_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: &[i64],
    batch: usize,
    seq: usize,
    d: usize,
    heads: usize,
) -> Vec<f64> {
    let hd = d / heads;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0; batch * seq * d];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..seq {
                let mut scores = Vec::new();
                let mut keys = Vec::new();
                for j in 0..seq {
                    if mask[b * seq + j] == 0 {
                        continue;
                    }
                    let dot: f64 = (0..hd)
                        .map(|c| {
                            q[(b * seq + i) * d + h * hd + c] * k[(b * seq + j) * d + h * hd + c]
                        })
                        .sum();
                    scores.push(dot * scale);
                    keys.push(j);
                }
                let probs = ref_softmax_rows(&scores, scores.len());
                for c in 0..hd {
                    out[(b * seq + i) * d + h * hd + c] = keys
                        .iter()
                        .zip(&probs)
                        .map(|(&j, p)| p * v[(b * seq + j) * d + h * hd + c])
                        .sum();
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// linear → GELU → LayerNorm → linear → q/k/v linears → MultiHeadAttention (2 heads, key
/// padding mask) → Softmax.
#[test]
fn tiny_encoder_block_matches_reference() {
    let test = "tiny_encoder_block";
    if !python_available(test) {
        return;
    }
    let (batch, seq, d, ff, heads) = (2usize, 5usize, 8usize, 16usize, 2usize);
    let eps = 1e-5f32;
    let mut rng = Lcg(7);
    let w1 = rng.vec(ff * d, 0.6);
    let b1 = rng.vec(ff, 0.2);
    let gamma: Vec<f32> = rng.vec(ff, 0.3).iter().map(|g| 1.0 + g).collect();
    let beta = rng.vec(ff, 0.1);
    let w2 = rng.vec(d * ff, 0.4);
    let b2 = rng.vec(d, 0.1);
    let wq = rng.vec(d * d, 0.8);
    let bq = rng.vec(d, 0.1);
    let wk = rng.vec(d * d, 0.8);
    let bk = rng.vec(d, 0.1);
    let wv = rng.vec(d * d, 0.8);
    let bv = rng.vec(d, 0.1);
    let x = rng.vec(batch * seq * d, 1.0);
    let mask: Vec<i64> = vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0];

    let bsd: Vec<Dim> = vec!["batch".into(), "sequence".into(), d.into()];
    let mut model = ModelBuilder::new("tiny_encoder_block", 17).add_opset("com.microsoft", 1);
    let g = model.graph();
    let xs = g.input("inputs_embeds", DataType::Float, &bsd).unwrap();
    let m = g
        .input(
            "attention_mask",
            DataType::Int64,
            &["batch".into(), "sequence".into()],
        )
        .unwrap();
    let probs = g
        .scope("encoder.layer.0", |g| -> anyhow::Result<String> {
            let h = g.linear("intermediate.dense", &xs, &w1, [ff, d], Some(&b1))?;
            let h = g.gelu_erf(&h);
            let h = g.layer_norm("intermediate.LayerNorm", &h, &gamma, &beta, eps)?;
            let h = g.linear("output.dense", &h, &w2, [d, ff], Some(&b2))?;
            let ctx = g.scope("attention", |g| -> anyhow::Result<String> {
                let q = g.linear("self.query", &h, &wq, [d, d], Some(&bq))?;
                let k = g.linear("self.key", &h, &wk, [d, d], Some(&bk))?;
                let v = g.linear("self.value", &h, &wv, [d, d], Some(&bv))?;
                let mask = g.cast(&m, DataType::Int32);
                Ok(g.multi_head_attention(&q, &k, &v, Some(&mask), heads))
            })?;
            Ok(g.softmax(&ctx, -1))
        })
        .unwrap();
    g.output_as(&probs, "probs", DataType::Float, &bsd).unwrap();
    let model = model
        .metadata("adept.method", "adept")
        .metadata("adept.test", test);

    let inputs = json!({
        "inputs_embeds": tensor_json("float32", &[batch, seq, d], &x),
        "attention_mask": tensor_json("int64", &[batch, seq], &mask),
    });
    let report = check_and_run(test, &model, inputs);

    // What Python read back from the file.
    assert_eq!(report["ir_version"], 8);
    assert_eq!(report["opset_import"], json!({"": 17, "com.microsoft": 1}));
    let meta = json!({"adept.method": "adept", "adept.test": test});
    assert_eq!(report["metadata"], meta);
    assert_eq!(report["session_metadata"], meta);
    assert_eq!(report["producer_name"], "adept-onnx");
    assert_eq!(
        strings(&report["inputs"]),
        ["inputs_embeds", "attention_mask"]
    );
    let inits = strings(&report["initializers"]);
    for name in [
        "encoder.layer.0.intermediate.dense.weight",
        "encoder.layer.0.intermediate.LayerNorm.bias",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.0.attention.self.value.bias",
    ] {
        assert!(inits.iter().any(|i| i == name), "{name} not in {inits:?}");
    }
    assert!(strings(&report["ops"]).contains(&"com.microsoft:MultiHeadAttention".to_owned()));

    // ONNX Runtime fuses the erf-GELU pattern: no Erf survives optimization.
    let optimized = strings(&report["optimized_ops"]);
    assert!(
        !optimized.iter().any(|op| op == ":Erf"),
        "GELU was not fused: {optimized:?}"
    );
    assert!(
        optimized.iter().any(|op| op.ends_with("Gelu")),
        "no fused Gelu in {optimized:?}"
    );

    // Reference.
    let xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let h = ref_linear(&xf, &w1, &b1, d, ff);
    let h = ref_gelu(&h);
    let h = ref_layer_norm(&h, &gamma, &beta, f64::from(eps));
    let h = ref_linear(&h, &w2, &b2, ff, d);
    let q = ref_linear(&h, &wq, &bq, d, d);
    let k = ref_linear(&h, &wk, &bk, d, d);
    let v = ref_linear(&h, &wv, &bv, d, d);
    let ctx = ref_attention(&q, &k, &v, &mask, batch, seq, d, heads);
    let want = ref_softmax_rows(&ctx, d);

    let (shape, got) = output(&report, "probs");
    assert_eq!(shape, [batch, seq, d]);
    assert_close("probs", &got, &want);
}

/// The tensor-manipulation helpers on a prompt-tuning-shaped graph, at opset 17 (ReduceMean
/// axes as attribute) and 18 (axes as input).
#[test]
fn tensor_helpers_match_reference() {
    for opset in [17, 18] {
        tensor_helpers_at_opset(opset);
    }
}

fn tensor_helpers_at_opset(opset: i64) {
    let test = format!("tensor_helpers_opset{opset}");
    if !python_available(&test) {
        return;
    }
    let (batch, seq, d, vocab, prompt_len) = (2usize, 4usize, 4usize, 10usize, 3usize);
    let total = prompt_len + seq;
    let mut rng = Lcg(11);
    let table = rng.vec(vocab * d, 1.0);
    let prompt = rng.vec(prompt_len * d, 1.0);
    let ids: Vec<i64> = vec![3, 5, 0, 0, 9, 1, 2, 0];

    let mut model = ModelBuilder::new("helpers", opset);
    let g = model.graph();
    let ids_in = g
        .input(
            "input_ids",
            DataType::Int64,
            &["batch".into(), "sequence".into()],
        )
        .unwrap();
    // Embedding lookup, and a soft prompt stored as f16, broadcast over the batch.
    let e = g
        .embedding("embeddings.word_embeddings", &ids_in, &table, [vocab, d])
        .unwrap();
    let p16 = g
        .initializer_f16("prompt_embeddings", &[prompt_len, d], &prompt)
        .unwrap();
    let p = g.cast(&p16, DataType::Float);
    let p = g.unsqueeze(&p, &[0]);
    let e_shape = g.shape(&e);
    let batch_dim = g.slice(&e_shape, &[0], &[1], &[0]);
    let rest = g.const_i64(&[prompt_len as i64, d as i64]);
    let target = g.concat(&[&batch_dim, &rest], 0);
    let p = g.expand(&p, &target);
    let cat = g.concat(&[&p, &e], 1);
    // relu(cat) * 2 - cat / 4
    let two = g.scalar_f32(2.0);
    let four = g.scalar_f32(4.0);
    let r = g.relu(&cat);
    let r = g.mul(&r, &two);
    let q = g.div(&cat, &four);
    let mixed = g.sub(&r, &q);
    // Transpose to [B, d, total], flatten to [B, d * total].
    let t = g.transpose(&mixed, &[0, 2, 1]);
    let flat = g.reshape(&t, &[0, -1]);
    // Masked mean pooling of the token embeddings (padding id 0 → weight 0).
    let zero_id = g.scalar_i64(0);
    let is_pad = g.equal(&ids_in, &zero_id);
    let zero = g.scalar_f32(0.0);
    let one = g.scalar_f32(1.0);
    let weights = g.where_(&is_pad, &zero, &one);
    let weights = g.unsqueeze(&weights, &[-1]);
    let masked = g.mul(&e, &weights);
    let pooled = g.reduce_mean(&masked, &[1], false);
    // Row means of `cat`, keepdims then squeezed.
    let row_means = g.reduce_mean(&cat, &[2], true);
    let row_means = g.squeeze(&row_means, &[2]);
    // A bias-free linear from a pre-transposed [in, out] weight.
    let w_io = g
        .initializer_f32(
            "head.weight_t",
            &[d, 2],
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 2.0],
        )
        .unwrap();
    let head = g.linear_from(&pooled, &w_io, None);
    let b_dims: Vec<Dim> = vec!["batch".into()];
    let with = |extra: &[Dim]| -> Vec<Dim> {
        b_dims
            .iter()
            .cloned()
            .chain(extra.iter().cloned())
            .collect()
    };
    g.output_as(&flat, "flat", DataType::Float, &with(&[(d * total).into()]))
        .unwrap();
    g.output_as(&pooled, "pooled", DataType::Float, &with(&[d.into()]))
        .unwrap();
    g.output_as(
        &row_means,
        "row_means",
        DataType::Float,
        &with(&[Dim::Unknown]),
    )
    .unwrap();
    g.output_as(&head, "head", DataType::Float, &with(&[2.into()]))
        .unwrap();

    let inputs = json!({ "input_ids": tensor_json("int64", &[batch, seq], &ids) });
    let report = check_and_run(&test, &model, inputs);
    assert_eq!(report["opset_import"], json!({"": opset}));
    assert_eq!(report["ir_version"], 8);

    // Reference: cat [B, total, d].
    let prompt_f16: Vec<f64> = prompt
        .iter()
        .map(|&v| f64::from(half::f16::from_f32(v).to_f32()))
        .collect();
    let mut cat = vec![0.0f64; batch * total * d];
    for b in 0..batch {
        for t in 0..total {
            for c in 0..d {
                cat[(b * total + t) * d + c] = if t < prompt_len {
                    prompt_f16[t * d + c]
                } else {
                    let id = ids[b * seq + t - prompt_len] as usize;
                    f64::from(table[id * d + c])
                };
            }
        }
    }
    let mut flat = vec![0.0; batch * d * total];
    for b in 0..batch {
        for t in 0..total {
            for c in 0..d {
                let v = cat[(b * total + t) * d + c];
                flat[(b * d + c) * total + t] = v.max(0.0) * 2.0 - v / 4.0;
            }
        }
    }
    let mut pooled = vec![0.0; batch * d];
    for b in 0..batch {
        for c in 0..d {
            let sum: f64 = (0..seq)
                .filter(|&s| ids[b * seq + s] != 0)
                .map(|s| f64::from(table[ids[b * seq + s] as usize * d + c]))
                .sum();
            pooled[b * d + c] = sum / seq as f64;
        }
    }
    let row_means: Vec<f64> = cat
        .chunks(d)
        .map(|r| r.iter().sum::<f64>() / d as f64)
        .collect();
    let head: Vec<f64> = pooled
        .chunks(d)
        .flat_map(|p| [p[0] + p[2] - p[3], p[1] + p[2] + 2.0 * p[3]])
        .collect();

    for (name, shape, want) in [
        ("flat", vec![batch, d * total], flat),
        ("pooled", vec![batch, d], pooled),
        ("row_means", vec![batch, total], row_means),
        ("head", vec![batch, 2], head),
    ] {
        let (got_shape, got) = output(&report, name);
        assert_eq!(got_shape, shape, "{name} shape");
        assert_close(&format!("{name} (opset {opset})"), &got, &want);
    }
}

/// The helpers added for the exporter: the residual LayerNorm (`Sum` with a bias +
/// `LayerNormalization`),
/// `MultiHeadAttention` with packed q/k/v bias, f16 weight storage (`set_weight_dtype`),
/// `slice_dynamic`, `reduce_sum`, `max`.
#[test]
fn fused_helpers_and_f16_weights_match_reference() {
    let test = "fused_helpers";
    if !python_available(test) {
        return;
    }
    let (batch, seq, d, heads) = (2usize, 3usize, 8usize, 2usize);
    let eps = 1e-12f32;
    let mut rng = Lcg(23);
    let x = rng.vec(batch * seq * d, 1.0);
    let w = rng.vec(d * d, 0.5);
    let b = rng.vec(d, 0.2);
    let gamma: Vec<f32> = rng.vec(d, 0.3).iter().map(|g| 1.0 + g).collect();
    let beta = rng.vec(d, 0.1);
    let qkv_bias = rng.vec(3 * d, 0.3);
    let mask: Vec<i64> = vec![1, 1, 1, 1, 1, 0];

    let bsd: Vec<Dim> = vec!["batch".into(), "sequence".into(), d.into()];
    let mut model = ModelBuilder::new("fused", 17).add_opset("com.microsoft", 1);
    let g = model.graph();
    g.set_weight_dtype(DataType::Float16).unwrap();
    let xs = g.input("x", DataType::Float, &bsd).unwrap();
    let m = g
        .input(
            "mask",
            DataType::Int64,
            &["batch".into(), "sequence".into()],
        )
        .unwrap();
    // y = x·Wᵀ (f16-stored weight, no bias), then LayerNorm(y + b + x) (Sum + LayerNormalization).
    let y = g.linear("dense", &xs, &w, [d, d], None).unwrap();
    let bias = g.weight("dense.bias", &[d], &b).unwrap();
    let h = g
        .skip_layer_norm("LayerNorm", &y, &xs, Some(&bias), &gamma, &beta, eps)
        .unwrap();
    // Attention of h over itself with the packed bias.
    let qkv_b = g.weight("qkv_bias", &[3 * d], &qkv_bias).unwrap();
    let mask32 = g.cast(&m, DataType::Int32);
    let spec = adept_onnx::MultiHeadAttention::new(&h, &h, &h, heads)
        .bias(&qkv_b)
        .key_padding_mask(&mask32);
    let ctx = g.attention(spec);
    // The first `len - 1` rows (dynamic bounds), summed over the sequence, floored at 0.5.
    let shape = g.shape(&ctx);
    let len = g.slice(&shape, &[1], &[2], &[0]);
    let one = g.const_i64(&[1]);
    let end = g.sub(&len, &one);
    let zero = g.const_i64(&[0]);
    let head_rows = g.slice_dynamic(&ctx, &zero, &end, &[1]);
    let summed = g.reduce_sum(&head_rows, &[1], false);
    let floor = g.scalar_f32(0.5);
    let floored = g.max(&summed, &floor);
    g.output_as(&h, "h", DataType::Float, &bsd).unwrap();
    g.output_as(
        &floored,
        "pooled",
        DataType::Float,
        &["batch".into(), d.into()],
    )
    .unwrap();
    assert_eq!(g.weight_dtype(), DataType::Float16);

    let inputs = json!({
        "x": tensor_json("float32", &[batch, seq, d], &x),
        "mask": tensor_json("int64", &[batch, seq], &mask),
    });
    let report = check_and_run(test, &model, inputs);
    let optimized = strings(&report["optimized_ops"]);
    // ONNX Runtime keeps the standard pair (its SkipLayerNormalization kernel is slower).
    assert!(optimized.iter().any(|o| o == ":Sum"), "{optimized:?}");
    assert!(
        optimized.iter().any(|o| o == ":LayerNormalization")
            && !optimized
                .iter()
                .any(|o| o == "com.microsoft:SkipLayerNormalization"),
        "{optimized:?}"
    );

    // Reference with the weights rounded to f16 as stored.
    let r16 =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|&a| half::f16::from_f32(a).to_f32()).collect() };
    let (w16, b16, g16, be16, qb16) = (r16(&w), r16(&b), r16(&gamma), r16(&beta), r16(&qkv_bias));
    let xf: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let y = ref_linear(&xf, &w16, &b16, d, d);
    let sum: Vec<f64> = y.iter().zip(&xf).map(|(a, b)| a + b).collect();
    let h_ref = ref_layer_norm(&sum, &g16, &be16, f64::from(eps));
    let add_bias = |v: &[f64], part: usize| -> Vec<f64> {
        v.iter()
            .enumerate()
            .map(|(i, a)| a + f64::from(qb16[part * d + i % d]))
            .collect()
    };
    let ctx = ref_attention(
        &add_bias(&h_ref, 0),
        &add_bias(&h_ref, 1),
        &add_bias(&h_ref, 2),
        &mask,
        batch,
        seq,
        d,
        heads,
    );
    let mut pooled = vec![0.0f64; batch * d];
    for bi in 0..batch {
        for c in 0..d {
            let s: f64 = (0..seq - 1).map(|t| ctx[(bi * seq + t) * d + c]).sum();
            pooled[bi * d + c] = s.max(0.5);
        }
    }
    let (_, got_h) = output(&report, "h");
    assert_close("skip layer norm (f16 weights)", &got_h, &h_ref);
    let (shape, got_p) = output(&report, "pooled");
    assert_eq!(shape, [batch, d]);
    assert_close(
        "attention with packed bias, dynamic slice, sum, max",
        &got_p,
        &pooled,
    );
}

/// The rounding error bound of one quantized dot product: with `x` (the magnitudes of the
/// inputs as quantized) rounded to steps of `s_x` and `w` to steps of `s_w`, each off by at
/// most half a step, `Σ_i (|x_i|·s_w/2 + |w_i|·s_x/2 + s_x·s_w/4)`.
fn rounding_bound(x: impl Iterator<Item = f64>, w: &[f32], s_x: f64, s_w: f64) -> f64 {
    x.zip(w)
        .map(|(xi, wi)| xi * s_w / 2.0 + f64::from(wi.abs()) * s_x / 2.0 + s_x * s_w / 4.0)
        .sum()
}

/// The int8 step of a weight row (one output channel): `max |w| / 127`, or in the per-row form
/// the largest sum of an adjacent pair `max_j (|w[2j]| + |w[2j + 1]|) / 127`
/// ([`adept_onnx::quantize_per_channel_pairs`]).
fn channel_step(wrow: &[f32], per_row_form: bool) -> f64 {
    let range = if per_row_form {
        wrow.chunks(2)
            .map(|p| p.iter().map(|v| v.abs()).sum::<f32>())
            .fold(0.0f32, f32::max)
    } else {
        wrow.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    };
    f64::from(range) / 127.0
}

/// The error bound of one output of a product whose input `row` is quantized one-sided, as
/// `x − floor` on 255 levels (zero point 0), the floor folded back through the int8 weights:
/// [`rounding_bound`] of the shifted row, plus the weights' rounding times `|floor|`, plus 1e-4
/// for f32 arithmetic.
fn one_sided_bound(row: &[f64], wrow: &[f32], floor: f64) -> f64 {
    let s_x = row.iter().fold(0.0f64, |m, v| m.max(v - floor)) / 255.0;
    let s_w = channel_step(wrow, true);
    rounding_bound(row.iter().map(|v| v - floor), wrow, s_x, s_w)
        + floor.abs() * row.len() as f64 * s_w / 2.0
        + 1e-4
}

/// Scales the weights of the odd inputs of a row-major `[out, d]` weight by 0.005, so that their
/// int8 codes are at most ±1: a product with 8-bit weights then computes exact integers on
/// every CPU, as the bounds assume. On x86 without VNNI ONNX Runtime's u8 × s8 kernel adds the
/// products of adjacent inputs (2j, 2j + 1) in a saturating int16 (`vpmaddubsw`), which
/// `255 · 127 + 255 · 127` overflows and `255 · 127 + 255` does not (see
/// `adept_onnx::quantize_per_channel_pairs`).
fn damp_odd_inputs(w: &mut [f32], d: usize) {
    w.iter_mut()
        .enumerate()
        .filter(|(i, _)| (i % d) % 2 == 1)
        .for_each(|(_, v)| *v *= 0.005);
}

/// The int8 codes of the `[in, out]` initializer `name` of `model`.
fn int8_codes(model: &ModelBuilder, name: &str) -> Vec<i8> {
    let proto = model.build().unwrap();
    let graph = proto.graph.expect("a graph");
    let t = graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer {name}"));
    let raw = t.raw_data.as_ref().expect("raw int8 data");
    raw.iter().map(|&b| b as i8).collect()
}

/// The largest |code| of the int8 `[in, out]` weight `name` of `model` (each channel's largest
/// entry maps to ±127 with plain per-channel scales), and the largest `|q[2j, o]| + |q[2j + 1,
/// o]|` over its channels `o` and input pairs: at most 128 for a weight that cannot overflow
/// `vpmaddubsw` (see `adept_onnx::quantize_per_channel_pairs`).
fn largest_code_and_pair(model: &ModelBuilder, name: &str, out: usize) -> (i32, i32) {
    let q = int8_codes(model, name);
    let largest = q.iter().map(|&c| i32::from(c).abs()).max().unwrap_or(0);
    let rows = q.len() / out;
    let pair = (0..out)
        .flat_map(|o| {
            let q = &q;
            (0..rows / 2).map(move |j| {
                i32::from(q[2 * j * out + o]).abs() + i32::from(q[(2 * j + 1) * out + o]).abs()
            })
        })
        .max()
        .unwrap_or(0);
    (largest, pair)
}

/// Asserts the per-row form's pair bound on the int8 weight `name` (`[in, out]`): every
/// adjacent pair of inputs sums to at most 128 in each channel, and some pair reaches 127 or
/// 128 (the scale is set by the largest pair).
fn assert_pair_bounded(model: &ModelBuilder, name: &str, out: usize) {
    let (_, pair) = largest_code_and_pair(model, name, out);
    assert!(
        (127..=128).contains(&pair),
        "{name}: largest pair sum {pair}"
    );
}

/// Asserts `|got − want| ≤ bound` for `what`; returns the error as a fraction of the bound.
fn within(what: impl std::fmt::Display, got: f64, want: f64, bound: f64) -> f64 {
    let err = (got - want).abs();
    assert!(
        err <= bound,
        "{what}: error {err:e} over the bound {bound:e}"
    );
    err / bound
}

/// `linear` under [`adept_onnx::MatMulQuantization`], per row and per tensor: two products of
/// the same input share one quantization, a small head stays float, and ONNX Runtime's result
/// stays within the error bound of the quantization itself: with `s_x` the uint8 step of the
/// input row (per row: `max_k |x_rk| / 127`; per tensor: `(max(x,0) − min(x,0)) / 255`) and
/// `s_w[o]` the int8 step of output channel `o`, each input and weight entry is off by at most
/// half a step, so `|y − y_ref| ≤ Σ_i (|x_i|·s_w/2 + |w_oi|·s_x/2 + s_x·s_w/4)` (plus f32
/// rounding). The query has a bias: per row it must not be fused into the product (ONNX
/// Runtime would scale it by the row scale), which the bound catches. The third case mixes the
/// forms (per tensor, the query per row through [`adept_onnx::MatMulQuantization::per_row`]):
/// the input is quantized both ways, once each, and each product keeps its own form's bound.
#[test]
fn quantized_linear_stays_within_its_bound_and_fuses() {
    use adept_onnx::ActivationQuantization::{PerRow, PerTensor};
    quantized_linear_case(PerRow, &[]);
    quantized_linear_case(PerTensor, &[]);
    quantized_linear_case(PerTensor, &["query"]);
}

fn quantized_linear_case(activations: adept_onnx::ActivationQuantization, rows: &[&str]) {
    let test = &format!("quantized_linear_{activations:?}_{}", rows.join("_"));
    if !python_available(test) {
        return;
    }
    let all_rows = activations == adept_onnx::ActivationQuantization::PerRow;
    let row_scaled = |name: &str| all_rows || rows.contains(&name);
    let (batch, seq, d, out, n) = (2usize, 5usize, 96usize, 80usize, 2usize);
    let mut rng = Lcg(11);
    let mut wq = rng.vec(out * d, 0.2);
    let bq = rng.vec(out, 0.1);
    let mut wk = rng.vec(out * d, 0.05);
    if !all_rows {
        // Plain 8-bit weights (the per-row form's pair-bounded ones cannot saturate).
        damp_odd_inputs(&mut wq, d);
        damp_odd_inputs(&mut wk, d);
    }
    let wh = rng.vec(n * out, 0.5);
    let bh = rng.vec(n, 0.1);
    let mut x = rng.vec(batch * seq * d, 1.5);
    // One row of small values: per row it keeps its own (finer) step.
    x[d..2 * d].iter_mut().for_each(|v| *v *= 0.01);

    let bsd: Vec<Dim> = vec!["batch".into(), "sequence".into(), d.into()];
    let mut model = ModelBuilder::new(test, 17);
    let g = model.graph();
    g.set_matmul_quantization(Some(adept_onnx::MatMulQuantization {
        activations,
        per_row: rows.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }));
    let xs = g.input("x", DataType::Float, &bsd).unwrap();
    let q = g.linear("query", &xs, &wq, [out, d], Some(&bq)).unwrap();
    let k = g.linear("key", &xs, &wk, [out, d], None).unwrap();
    let head = g.linear("head", &q, &wh, [n, out], Some(&bh)).unwrap();
    let dims = |last: usize| -> Vec<Dim> { vec!["batch".into(), "sequence".into(), last.into()] };
    g.output_as(&q, "q", DataType::Float, &dims(out)).unwrap();
    g.output_as(&k, "k", DataType::Float, &dims(out)).unwrap();
    g.output_as(&head, "head", DataType::Float, &dims(n))
        .unwrap();
    let count = |ops: &[adept_onnx::proto::NodeProto], op: &str| {
        ops.iter().filter(|o| o.op_type() == op).count()
    };
    let nodes = model.graph().nodes().to_vec();
    let forms = ["query", "key"].map(row_scaled);
    let per_row_products = forms.iter().filter(|&&r| r).count();
    for (quantizer, n) in [
        ("QuantizeLinear", per_row_products),
        ("DynamicQuantizeLinear", 2 - per_row_products),
    ] {
        assert_eq!(
            count(&nodes, quantizer),
            n.min(1),
            "x is quantized once per form: {quantizer}"
        );
    }
    assert_eq!(count(&nodes, "MatMulInteger"), 2);
    assert_eq!(count(&nodes, "MatMul"), 1, "the [80 → 2] head stays float");
    // Pair-bounded weights in the per-row form only, plain 8-bit ones per tensor, the per-row
    // products of the per-tensor form included.
    for name in ["query", "key"] {
        let weight = format!("{name}.weight_quantized");
        if all_rows {
            assert_pair_bounded(&model, &weight, out);
        } else {
            assert_eq!(
                largest_code_and_pair(&model, &weight, out).0,
                127,
                "{weight}"
            );
        }
    }

    let inputs = json!({ "x": tensor_json("float32", &[batch, seq, d], &x) });
    let report = check_and_run(test, &model, inputs);
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let (lo, hi) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let s_tensor = f64::from(hi - lo) / 255.0;
    for (name, w, b) in [("q", &wq, bq.clone()), ("k", &wk, vec![0.0; out])] {
        let (_, got) = output(&report, name);
        let want = ref_linear(&xd, w, &b, d, out);
        let mut worst = 0.0f64;
        for r in 0..batch * seq {
            let row = &xd[r * d..(r + 1) * d];
            let s_x = if row_scaled(if name == "q" { "query" } else { "key" }) {
                row.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 127.0
            } else {
                s_tensor
            };
            for o in 0..out {
                let wrow = &w[o * d..(o + 1) * d];
                let s_w = channel_step(wrow, all_rows);
                let bound = rounding_bound(row.iter().map(|xi| xi.abs()), wrow, s_x, s_w) + 1e-5;
                let i = r * out + o;
                worst = worst.max(within(format!("{name}[{r}, {o}]"), got[i], want[i], bound));
            }
        }
        eprintln!("{test}: {name}: largest error / bound = {worst:.3}");
    }
    // ONNX Runtime turns the pattern into its fused int8 kernels.
    let optimized = strings(&report["optimized_ops"]);
    eprintln!("{test}: optimized: {optimized:?}");
    assert!(
        !optimized.iter().any(|o| o == ":MatMulInteger"),
        "{optimized:?}"
    );
    assert!(
        optimized
            .iter()
            .any(|o| o == "com.microsoft:MatMulIntegerToFloat"
                || o == "com.microsoft:DynamicQuantizeMatMul"),
        "{optimized:?}"
    );
}

/// `linear` under [`adept_onnx::ActivationQuantization::Blocks`]: one `MatMulNBits` per
/// product (the small head stays float), and ONNX Runtime's result within the bound of block
/// quantization. Both the weight (per output channel and block) and, inside the kernel, the
/// input (per row and block) are rounded to 1/127 of their block's largest magnitude, so with
/// `s_x[b]`, `s_w[o, b]` those steps `|y − y_ref| ≤ Σ_b Σ_{i∈b} (|x_i|·s_w/2 + |w_oi|·s_x/2 +
/// s_x·s_w/4)`. The input has a block of small values and a row with one large outlier, whose
/// other blocks keep their own steps per block; `in` = 80 is not a multiple of the block (the
/// padding must not contribute).
#[test]
fn block_quantized_linear_stays_within_its_bound() {
    let test = "block_quantized_linear";
    if !python_available(test) {
        return;
    }
    let (rows, d, out, n, block) = (7usize, 80usize, 48usize, 2usize, 32usize); // head: 2 < 16
    let mut rng = Lcg(17);
    let w = rng.vec(out * d, 0.2);
    let b = rng.vec(out, 0.1);
    let wh = rng.vec(n * out, 0.5);
    let mut x = rng.vec(rows * d, 1.0);
    x[..block].iter_mut().for_each(|v| *v *= 0.01);
    x[d + 40] = 25.0;
    let dims = |last: usize| -> Vec<Dim> { vec!["rows".into(), last.into()] };
    let mut model = ModelBuilder::new(test, 17).add_opset(adept_onnx::MS_DOMAIN, 1);
    let g = model.graph();
    g.set_matmul_quantization(Some(adept_onnx::MatMulQuantization {
        activations: adept_onnx::ActivationQuantization::Blocks(block),
        min_features: 16,
        keep_float: Vec::new(),
        per_row: Vec::new(),
    }));
    let xs = g.input("x", DataType::Float, &dims(d)).unwrap();
    let y = g.linear("dense", &xs, &w, [out, d], Some(&b)).unwrap();
    let head = g.linear("head", &y, &wh, [n, out], None).unwrap();
    g.output_as(&y, "y", DataType::Float, &dims(out)).unwrap();
    g.output_as(&head, "head", DataType::Float, &dims(n))
        .unwrap();
    let nodes = model.graph().nodes().to_vec();
    let count = |op: &str| nodes.iter().filter(|o| o.op_type() == op).count();
    assert_eq!(count("MatMulNBits"), 1);
    assert_eq!(
        count("MatMul"),
        1,
        "the [48 → 2] head stays float (2 < min_features)"
    );

    let inputs = json!({ "x": tensor_json("float32", &[rows, d], &x) });
    let report = check_and_run(test, &model, inputs);
    let (_, got) = output(&report, "y");
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let want = ref_linear(&xd, &w, &b, d, out);
    let step = |v: &[f32]| f64::from(v.iter().fold(0.0f32, |m, a| m.max(a.abs()))) / 127.0;
    let mut worst = 0.0f64;
    for r in 0..rows {
        for o in 0..out {
            let mut bound = 1e-5;
            for lo in (0..d).step_by(block) {
                let hi = (lo + block).min(d);
                let xb = &x[r * d + lo..r * d + hi];
                let wb = &w[o * d + lo..o * d + hi];
                let (s_x, s_w) = (step(xb), step(wb));
                bound += rounding_bound(xb.iter().map(|xi| f64::from(xi.abs())), wb, s_x, s_w);
            }
            let err = (got[r * out + o] - want[r * out + o]).abs();
            assert!(
                err <= bound,
                "y[{r}, {o}]: error {err:e} over the bound {bound:e}"
            );
            worst = worst.max(err / bound);
        }
    }
    eprintln!("{test}: largest error / bound = {worst:.3}");
    assert!(
        worst > 1e-3,
        "the product was not quantized at all (error / bound {worst:e})"
    );
}

/// Per row, a GELU output (≥ −0.17) is quantized as `x − floor` on all 256 levels with the
/// floor folded back into the bias: the product stays within the bound of that finer step
/// (half the symmetric one), plus the weights' rounding times `|floor|`. Its weights are
/// pair-bounded, as every per-row product's (see `adept_onnx::quantize_per_channel_pairs`).
#[test]
fn a_one_sided_input_is_quantized_shifted_and_stays_within_its_bound() {
    let test = "quantized_linear_one_sided";
    if !python_available(test) {
        return;
    }
    let (rows, d, out) = (6usize, 96usize, 80usize);
    let mut rng = Lcg(5);
    let pre = rng.vec(rows * d, 2.0);
    let w = rng.vec(out * d, 0.3);
    let b = rng.vec(out, 0.1);
    let dims = |last: usize| -> Vec<Dim> { vec!["rows".into(), last.into()] };
    let mut model = ModelBuilder::new(test, 17);
    let g = model.graph();
    g.set_matmul_quantization(Some(adept_onnx::MatMulQuantization::default()));
    let xs = g.input("x", DataType::Float, &dims(d)).unwrap();
    let act = g.gelu_erf(&xs);
    let y = g.linear("output", &act, &w, [out, d], Some(&b)).unwrap();
    g.output_as(&y, "y", DataType::Float, &dims(out)).unwrap();
    let inputs = json!({ "x": tensor_json("float32", &[rows, d], &pre) });
    let report = check_and_run(test, &model, inputs);
    assert_pair_bounded(&model, "output.weight_quantized", out);
    let (_, got) = output(&report, "y");
    let gelu = |v: f64| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2));
    let x: Vec<f64> = pre.iter().map(|&v| gelu(f64::from(v))).collect();
    let want = ref_linear(&x, &w, &b, d, out);
    let floor = f64::from(adept_onnx::GELU_FLOOR);
    let mut worst = 0.0f64;
    for r in 0..rows {
        let row = &x[r * d..(r + 1) * d];
        for o in 0..out {
            let bound = one_sided_bound(row, &w[o * d..(o + 1) * d], floor);
            let i = r * out + o;
            worst = worst.max(within(format!("y[{r}, {o}]"), got[i], want[i], bound));
        }
    }
    eprintln!("{test}: largest error / bound = {worst:.3}");
    let optimized = strings(&report["optimized_ops"]);
    assert!(
        optimized
            .iter()
            .any(|o| o == "com.microsoft:MatMulIntegerToFloat"),
        "{optimized:?}"
    );
}

/// The int8 feed-forward as BERT emits it: `linear_unbiased` products whose biases go to the
/// next kernel. The first product's bias is a `Sub` of its negation before the GELU
/// (`bias_gelu`; its output is then quantized one-sided); the second product returns the shift
/// correction its consumer must add. Checked: `bias_gelu(product)` equals `GELU(x·W₁ᵀ + b₁)`
/// within GELU's slope (≤ 1.13) times the product's rounding bound; `product₂ + correction + b`
/// equals the float product of ONNX Runtime's own GELU output within the one-sided bound of the
/// test above; no bias `Add` is left in the graph (only that `Sub` and the shift), and ONNX
/// Runtime keeps both products fused.
#[test]
fn unbiased_products_with_bias_gelu_and_a_returned_correction_stay_within_their_bounds() {
    let test = "quantized_feed_forward_unbiased";
    if !python_available(test) {
        return;
    }
    let (rows, d, hidden, out) = (6usize, 64usize, 96usize, 64usize); // all ≥ min_features
    let mut rng = Lcg(23);
    let x = rng.vec(rows * d, 1.5);
    let w1 = rng.vec(hidden * d, 0.3);
    let b1 = rng.vec(hidden, 0.2);
    let w2 = rng.vec(out * hidden, 0.3);
    let b2 = rng.vec(out, 0.1);
    let dims = |last: usize| -> Vec<Dim> { vec!["rows".into(), last.into()] };
    let mut model = ModelBuilder::new(test, 17).add_opset(adept_onnx::MS_DOMAIN, 1);
    let g = model.graph();
    g.set_matmul_quantization(Some(adept_onnx::MatMulQuantization::default()));
    let xs = g.input("x", DataType::Float, &dims(d)).unwrap();
    let (p1, c1) = g.linear_unbiased("inter", &xs, &w1, [hidden, d]).unwrap();
    assert!(c1.is_none(), "x is not bounded below: nothing to correct");
    let h = g.scope("inter", |g| g.bias_gelu(&p1, &b1)).unwrap();
    let (p2, c2) = g.linear_unbiased("output", &h, &w2, [out, hidden]).unwrap();
    let c2 = c2.expect("the GELU output is quantized shifted: a correction comes back");
    g.output_as(&h, "h", DataType::Float, &dims(hidden))
        .unwrap();
    g.output_as(&p2, "p2", DataType::Float, &dims(out)).unwrap();
    let nodes = model.graph().nodes().to_vec();
    for op in ["Add", "Sub"] {
        let n = nodes.iter().filter(|o| o.op_type() == op).count();
        // the one Sub is the first bias, the Adds the shift `h − floor` before quantization
        // and gelu_erf's `1 + erf`
        let allowed = if op == "Add" { 2 } else { 1 };
        assert!(n <= allowed, "{n} × {op} in the graph");
    }
    let inputs = json!({ "x": tensor_json("float32", &[rows, d], &x) });
    let report = check_and_run(test, &model, inputs);
    assert_pair_bounded(&model, "inter.weight_quantized", hidden);
    assert_pair_bounded(&model, "output.weight_quantized", out);
    let gelu = |v: f64| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2));
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let pre = ref_linear(&xd, &w1, &b1, d, hidden);
    let (_, got_h) = output(&report, "h");
    let (_, got_p2) = output(&report, "p2");
    let floor = f64::from(adept_onnx::GELU_FLOOR);
    let (mut worst1, mut worst2) = (0.0f64, 0.0f64);
    for r in 0..rows {
        let row = &xd[r * d..(r + 1) * d];
        let s_x = row.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 127.0;
        for o in 0..hidden {
            let wrow = &w1[o * d..(o + 1) * d];
            let s_w = channel_step(wrow, true);
            let bound = 1.13 * rounding_bound(row.iter().map(|v| v.abs()), wrow, s_x, s_w) + 1e-4;
            let i = r * hidden + o;
            worst1 = worst1.max(within(
                format!("h[{r}, {o}]"),
                got_h[i],
                gelu(pre[i]),
                bound,
            ));
        }
        let hrow = &got_h[r * hidden..(r + 1) * hidden];
        let want = ref_linear(hrow, &w2, &b2, hidden, out);
        for o in 0..out {
            let bound = one_sided_bound(hrow, &w2[o * hidden..(o + 1) * hidden], floor);
            let got = got_p2[r * out + o] + f64::from(c2[o]) + f64::from(b2[o]);
            worst2 = worst2.max(within(format!("y[{r}, {o}]"), got, want[o], bound));
        }
    }
    eprintln!(
        "{test}: largest error / bound: bias_gelu {worst1:.3}, corrected product {worst2:.3}"
    );
    let optimized = strings(&report["optimized_ops"]);
    // The Sub stays a Sub (not fused into the product) and the GELU becomes one Gelu.
    assert!(
        optimized.iter().any(|o| o == "com.microsoft:Gelu")
            && !optimized
                .iter()
                .any(|o| o == "com.microsoft:BiasGelu" || o == ":Erf"),
        "{optimized:?}"
    );
    let fused = optimized
        .iter()
        .filter(|o| *o == "com.microsoft:MatMulIntegerToFloat")
        .count();
    assert!(
        fused >= 1 && !optimized.iter().any(|o| o == ":MatMulInteger"),
        "{optimized:?}"
    );
}

/// erf by Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7), for the GELU reference.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

#[test]
fn per_channel_quantization_round_trips_within_half_a_step() {
    let (out, inp) = (7usize, 13usize);
    let mut w = Lcg(3).vec(out * inp, 2.0);
    w[inp..2 * inp].iter_mut().for_each(|v| *v = 0.0); // an all-zero channel
    assert_eq!(
        adept_onnx::quantize_per_channel(&w, [out, inp]),
        adept_onnx::quantize_per_channel_to(&w, [out, inp], 127)
    );
    for levels in [127i8, 63] {
        let lv = f32::from(levels);
        let (q, scales) = adept_onnx::quantize_per_channel_to(&w, [out, inp], levels);
        assert_eq!(scales[1], 1.0, "a zero channel keeps scale 1");
        for o in 0..out {
            let row = &w[o * inp..(o + 1) * inp];
            let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if max > 0.0 {
                assert!((scales[o] - max / lv).abs() <= 1e-7 * max);
                // the largest entry maps to ±levels exactly, none beyond
                assert!(row
                    .iter()
                    .enumerate()
                    .any(|(i, _)| q[i * out + o].unsigned_abs() == levels as u8));
                assert!((0..inp).all(|i| q[i * out + o].unsigned_abs() <= levels as u8));
            }
            for (i, v) in row.iter().enumerate() {
                let back = f32::from(q[i * out + o]) * scales[o];
                assert!(
                    (back - v).abs() <= scales[o] / 2.0 + 1e-6,
                    "[{o}, {i}]: {v} -> {back}"
                );
            }
        }
    }
}

/// [`adept_onnx::quantize_per_channel_pairs`]: each channel's step is its largest adjacent pair
/// sum / 127, every pair of codes sums to at most 128 (so `255 · (|q0| + |q1|)` fits an int16 on
/// every CPU), the largest pair reaches 127 or 128, an odd last input stands alone, an all-zero
/// channel keeps scale 1, and every entry comes back within half a step.
#[test]
fn pair_bounded_quantization_round_trips_and_keeps_pairs_in_range() {
    let (out, inp) = (9usize, 15usize); // odd: the last input has no partner
    let mut w = Lcg(7).vec(out * inp, 2.0);
    // An all-zero channel, one whose largest weights sit side by side, and one whose largest
    // is the lone last input.
    w[inp..2 * inp].iter_mut().for_each(|v| *v = 0.0);
    w[2 * inp] = 3.0;
    w[2 * inp + 1] = -3.0;
    w[4 * inp - 1] = 9.0;
    let (q, scales) = adept_onnx::quantize_per_channel_pairs(&w, [out, inp]);
    assert_eq!(scales[1], 1.0, "a zero channel keeps scale 1");
    let levels = f32::from(adept_onnx::PAIR_SUM_LEVELS);
    for o in 0..out {
        let row = &w[o * inp..(o + 1) * inp];
        // The per-row form's step (channel_step) times the levels: the largest pair sum.
        let pair_max = (channel_step(row, true) * 127.0) as f32;
        let code = |i: usize| i32::from(q[i * out + o]).abs();
        let pairs: Vec<i32> = (0..inp.div_ceil(2))
            .map(|j| code(2 * j) + if 2 * j + 1 < inp { code(2 * j + 1) } else { 0 })
            .collect();
        if pair_max > 0.0 {
            assert!((scales[o] - pair_max / levels).abs() <= 1e-6 * pair_max);
            let top = pairs.iter().copied().max().unwrap();
            assert!(
                (127..=128).contains(&top),
                "channel {o}: largest pair {top}"
            );
        }
        assert!(pairs.iter().all(|&p| p <= 128), "channel {o}: {pairs:?}");
        for (i, v) in row.iter().enumerate() {
            let back = f32::from(q[i * out + o]) * scales[o];
            assert!(
                (back - v).abs() <= scales[o] / 2.0 + 1e-6,
                "[{o}, {i}]: {v} -> {back}"
            );
        }
    }
    assert_eq!(
        i32::from(q[(inp - 1) * out + 3]).abs(),
        127,
        "the lone last input sets its scale"
    );
}

/// `embedding` under [`adept_onnx::EmbeddingQuantization`]: a 50-row table (rows of very
/// different ranges, one all zero) is stored as `int8 [50, 24]` plus `float [50, 1]` row scales
/// and no float copy, a 2-row table below `min_rows` stays float, and ONNX Runtime's lookup of
/// every id (some twice) equals the float table within half a quantization step of its row
/// (`max |row| / 254`, plus f32 rounding), with each row's largest entry exact.
///
/// The same per row and block of 8 columns (`block: Some(8)`, scales `[50, 3]`, each entry
/// within half its block's step).
#[test]
fn quantized_embedding_is_within_half_a_step_per_row() {
    quantized_embedding_case(None);
    quantized_embedding_case(Some(8));
}

fn quantized_embedding_case(block: Option<usize>) {
    let test = &format!("quantized_embedding_{block:?}");
    if !python_available(test) {
        return;
    }
    let (vocab, d, types) = (50usize, 24usize, 2usize);
    let mut rng = Lcg(17);
    let mut table = rng.vec(vocab * d, 0.5);
    for (r, row) in table.chunks_exact_mut(d).enumerate() {
        // Row ranges from 0.5 down to ~1e-4: one scale per row keeps the small rows exact.
        let f = 0.8f32.powi(r as i32);
        row.iter_mut().for_each(|v| *v *= f);
    }
    table[3 * d..4 * d].iter_mut().for_each(|v| *v = 0.0); // a padding row
                                                           // Row 5's middle 8 columns are 1000× smaller: per block they keep their own step (one
                                                           // scale per row would round them to 0, far over their block's half step).
    table[5 * d + 8..5 * d + 16]
        .iter_mut()
        .for_each(|v| *v *= 1e-3);
    let type_table = rng.vec(types * d, 0.5);
    let mut ids: Vec<i64> = (0..vocab as i64).collect();
    ids.extend([3, 0, 49, 7, 7, 12]);
    let type_ids: Vec<i64> = (0..ids.len() as i64).map(|i| i % 2).collect();
    let (batch, seq) = (2usize, ids.len() / 2);

    let mut model = ModelBuilder::new(test, 17);
    let g = model.graph();
    g.set_embedding_quantization(Some(adept_onnx::EmbeddingQuantization {
        min_rows: 16,
        block,
    }));
    let seq_dims: Vec<Dim> = vec!["batch".into(), "sequence".into()];
    let ids_in = g.input("input_ids", DataType::Int64, &seq_dims).unwrap();
    let types_in = g
        .input("token_type_ids", DataType::Int64, &seq_dims)
        .unwrap();
    let e = g
        .embedding("embeddings.word_embeddings", &ids_in, &table, [vocab, d])
        .unwrap();
    let t = g
        .embedding(
            "embeddings.token_type_embeddings",
            &types_in,
            &type_table,
            [types, d],
        )
        .unwrap();
    let out_dims: Vec<Dim> = vec!["batch".into(), "sequence".into(), d.into()];
    g.output_as(&e, "words", DataType::Float, &out_dims)
        .unwrap();
    g.output_as(&t, "types", DataType::Float, &out_dims)
        .unwrap();
    // A wrong table shape is an error naming the tensor, not a panic.
    let err = g
        .embedding("bad", &ids_in, &table[1..], [vocab, d])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.weight") && err.contains("[50, 24]"),
        "{err}"
    );

    let inputs = json!({
        "input_ids": tensor_json("int64", &[batch, seq], &ids),
        "token_type_ids": tensor_json("int64", &[batch, seq], &type_ids),
    });
    let report = check_and_run(test, &model, inputs);
    let inits = strings(&report["initializers"]);
    for name in [
        "embeddings.word_embeddings.weight_quantized",
        "embeddings.word_embeddings.weight_scale",
        "embeddings.token_type_embeddings.weight",
    ] {
        assert!(inits.iter().any(|i| i == name), "{name} not in {inits:?}");
    }
    assert!(
        !inits
            .iter()
            .any(|i| i == "embeddings.word_embeddings.weight"),
        "no float vocabulary table: {inits:?}"
    );

    let (shape, got) = output(&report, "words");
    assert_eq!(shape, [batch, seq, d]);
    let mut worst = 0.0f64;
    let mut moved = 0usize;
    let width = block.unwrap_or(d);
    for (pos, &id) in ids.iter().enumerate() {
        let row = &table[id as usize * d..(id as usize + 1) * d];
        for (c, &want) in row.iter().enumerate() {
            let lo = c / width * width;
            let max = row[lo..(lo + width).min(d)]
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()));
            let half_step = f64::from(max) / 254.0;
            let err = (got[pos * d + c] - f64::from(want)).abs();
            assert!(
                err <= half_step * (1.0 + 1e-5) + 1e-12,
                "id {id}, column {c}: {} vs {want}: error {err:e} over half a step {half_step:e}",
                got[pos * d + c]
            );
            if want.abs() == max {
                assert!(
                    err <= 1e-6 * f64::from(max),
                    "id {id}: the block's largest entry moved"
                );
            }
            moved += usize::from(err > 0.0);
            if max > 0.0 {
                worst = worst.max(err / half_step);
            }
        }
    }
    eprintln!("{test}: largest error / half step = {worst:.3}; {moved} entries rounded");
    assert!(moved > 0, "nothing was quantized");
    // The small table is the float one, exactly.
    let (_, got_types) = output(&report, "types");
    for (pos, &t) in type_ids.iter().enumerate() {
        for c in 0..d {
            // (as f32: serde_json's f64 parsing may miss the last bit of the report's values)
            assert_eq!(
                got_types[pos * d + c] as f32,
                type_table[t as usize * d + c]
            );
        }
    }
}

#[test]
fn per_row_quantization_round_trips_within_half_a_step() {
    let (rows, dim) = (6usize, 11usize);
    let mut t = Lcg(9).vec(rows * dim, 3.0);
    t[2 * dim..3 * dim].iter_mut().for_each(|v| *v = 0.0); // an all-zero row
    let (q, scales) = adept_onnx::quantize_per_row(&t, [rows, dim]);
    assert_eq!(scales[2], 1.0, "a zero row keeps scale 1");
    for r in 0..rows {
        let row = &t[r * dim..(r + 1) * dim];
        let qrow = &q[r * dim..(r + 1) * dim];
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if max > 0.0 {
            assert!((scales[r] - max / 127.0).abs() <= 1e-7 * max);
            assert!(qrow.iter().any(|v| v.unsigned_abs() == 127), "row {r}");
        }
        for (c, (v, qv)) in row.iter().zip(qrow).enumerate() {
            let back = f32::from(*qv) * scales[r];
            assert!(
                (back - v).abs() <= scales[r] / 2.0 + 1e-6,
                "[{r}, {c}]: {v} -> {back}"
            );
        }
    }
}
