//! The candle Llama causal LM against Hugging Face `transformers` on two tiny random checkpoints
//! (grouped-query attention with tied embeddings; multi-head attention with a separate head and
//! another rope_theta). Expected values come from `tests/reference/tiny_llama.py`, committed with
//! its outputs `tests/fixtures/tiny-llama-*`.

use adept_backbones::generate::{greedy, GreedyOptions};
use adept_backbones::llama::{read_checkpoint, LlamaConfig, LlamaModel};
use adept_backbones::{load_causal_lm, Backbone, CausalLm, KvCache};
use candle_core::{DType, Device, Tensor, Var, D};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MODELS: [&str; 2] = ["tiny-llama-gqa-tied", "tiny-llama-mha-untied"];
const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn expected() -> Value {
    let p = fixtures().join("tiny-llama-expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture present")).expect("JSON")
}

fn model(name: &str) -> Box<dyn CausalLm> {
    load_causal_lm(&fixtures().join(name), &Device::Cpu).expect("fixture model loads")
}

fn u32_matrix(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("integer matrix")
}

fn tensor_u32(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

/// Largest |candle − expected| over attended rows, at the fixture's vocabulary columns.
fn max_diff(logits: &Tensor, mask: &[Vec<u32>], expected: &Value, cols: &[usize]) -> f32 {
    let got: Vec<Vec<Vec<f32>>> = logits.to_vec3().unwrap();
    let exp: Vec<Vec<Vec<f32>>> = serde_json::from_value(expected.clone()).unwrap();
    let mut worst = 0f32;
    for (b, row) in mask.iter().enumerate() {
        let attended: Vec<usize> = (0..row.len()).filter(|&t| row[t] == 1).collect();
        assert_eq!(attended.len(), exp[b].len(), "row {b}: attended positions");
        for (e, &t) in exp[b].iter().zip(&attended) {
            for (j, &c) in cols.iter().enumerate() {
                worst = worst.max((got[b][t][c] - e[j]).abs());
            }
        }
    }
    worst
}

fn logits_of(m: &dyn CausalLm, ids: &[Vec<u32>], mask: &[Vec<u32>]) -> Tensor {
    let emb = m.word_embeddings(&tensor_u32(ids)).unwrap();
    let h = m.forward_embeds(&emb, &tensor_u32(mask), None).unwrap();
    m.logits(&h).unwrap()
}

#[test]
fn logits_match_transformers_for_left_and_right_padding() {
    let fx = expected();
    let cols: Vec<usize> = serde_json::from_value(fx["vocab_cols"].clone()).unwrap();
    for name in MODELS {
        let m = model(name);
        for pad in ["right", "left"] {
            let e = &fx[name][pad];
            let ids = u32_matrix(&e["input_ids"]);
            let mask = u32_matrix(&e["attention_mask"]);
            let diff = max_diff(
                &logits_of(m.as_ref(), &ids, &mask),
                &mask,
                &e["logits"],
                &cols,
            );
            assert!(diff < TOL, "{name} {pad}-padded: logits differ by {diff}");
        }
    }
}

#[test]
fn inputs_embeds_path_matches_transformers() {
    let fx = expected();
    let cols: Vec<usize> = serde_json::from_value(fx["vocab_cols"].clone()).unwrap();
    for name in MODELS {
        let m = model(name);
        let e = &fx[name]["embeds"];
        let emb: Vec<Vec<Vec<f32>>> = serde_json::from_value(e["inputs_embeds"].clone()).unwrap();
        let emb = Tensor::new(emb, &Device::Cpu).unwrap();
        let mask = u32_matrix(&e["attention_mask"]);
        let h = m.forward_embeds(&emb, &tensor_u32(&mask), None).unwrap();
        let diff = max_diff(&m.logits(&h).unwrap(), &mask, &e["logits"], &cols);
        assert!(diff < TOL, "{name}: inputs_embeds logits differ by {diff}");
    }
}

#[test]
fn greedy_generation_matches_transformers_generate() {
    let fx = expected();
    for name in MODELS {
        let m = model(name);
        let g = &fx[name]["generate"];
        let prompts = u32_matrix(&g["prompts"]);
        let embed = |ids: &Tensor| m.word_embeddings(ids);
        let got = greedy(
            m.as_ref(),
            &embed,
            None,
            &prompts,
            &GreedyOptions::new(8, &[]),
        )
        .unwrap();
        assert_eq!(got, u32_matrix(&g["new_tokens"]), "{name}: greedy tokens");

        let e = &fx[name]["generate_eos"];
        let eos = e["eos"].as_u64().unwrap() as u32;
        let got = greedy(
            m.as_ref(),
            &embed,
            None,
            &prompts,
            &GreedyOptions::new(8, &[eos]),
        )
        .unwrap();
        assert_eq!(
            got,
            u32_matrix(&e["new_tokens"]),
            "{name}: greedy tokens with EOS {eos}"
        );
    }
}

/// Feeding a left-padded batch in chunks through the cache gives the logits of one full pass.
#[test]
fn cached_steps_equal_one_uncached_pass() {
    let fx = expected();
    for name in MODELS {
        let m = model(name);
        let e = &fx[name]["left"];
        let ids = u32_matrix(&e["input_ids"]);
        let mask = u32_matrix(&e["attention_mask"]);
        let full = logits_of(m.as_ref(), &ids, &mask);
        let n = ids[0].len();
        let emb = m.word_embeddings(&tensor_u32(&ids)).unwrap();
        let mask_t = tensor_u32(&mask);
        let mut cache = KvCache::new();
        // chunks: 3 positions, then 2 (several new positions after a past), then one at a time
        let mut bounds = vec![0, 3, 5];
        bounds.extend(6..=n);
        let mut pieces = vec![];
        for w in bounds.windows(2) {
            let (a, z) = (w[0], w[1]);
            let x = emb.narrow(1, a, z - a).unwrap();
            let h = m.forward_embeds(&x, &mask_t.narrow(1, 0, z).unwrap(), Some(&mut cache));
            pieces.push(m.logits(&h.unwrap()).unwrap());
            assert_eq!(cache.past_len(), z);
        }
        let shape = m.cache_shape();
        assert_eq!(cache.layers.len(), shape.layers);
        assert_eq!(
            cache.layers[0].0.dims(),
            [2, shape.kv_heads, n, shape.head_dim]
        );
        let stepped = Tensor::cat(&pieces, 1).unwrap();
        let f: Vec<Vec<Vec<f32>>> = full.to_vec3().unwrap();
        let s: Vec<Vec<Vec<f32>>> = stepped.to_vec3().unwrap();
        let mut worst = 0f32;
        for (b, row) in mask.iter().enumerate() {
            for t in (0..n).filter(|&t| row[t] == 1) {
                for (x, y) in f[b][t].iter().zip(&s[b][t]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
        assert!(
            worst < TOL,
            "{name}: cached logits differ from uncached by {worst}"
        );
    }
}

/// A soft prompt held in the cache gives the same logits as the same rows prepended.
#[test]
fn soft_prompt_in_cache_equals_prepended_rows() {
    let m = model("tiny-llama-gqa-tied");
    let dev = Device::Cpu;
    let ids = vec![vec![0u32, 7, 9, 11], vec![5, 6, 8, 10]];
    let mask = vec![vec![0u32, 1, 1, 1], vec![1, 1, 1, 1]];
    let p = Tensor::randn(0f32, 1., (3, 32), &dev).unwrap();
    let pb = p
        .unsqueeze(0)
        .unwrap()
        .broadcast_as((2, 3, 32))
        .unwrap()
        .contiguous()
        .unwrap();
    let emb = m.word_embeddings(&tensor_u32(&ids)).unwrap();
    let full_mask = Tensor::cat(
        &[
            &Tensor::ones((2, 3), DType::U32, &dev).unwrap(),
            &tensor_u32(&mask),
        ],
        1,
    )
    .unwrap();
    let joined = Tensor::cat(&[&pb, &emb], 1).unwrap();
    let whole = m
        .forward_embeds(&joined, &full_mask, None)
        .unwrap()
        .narrow(1, 3, 4)
        .unwrap();
    let mut cache = KvCache::new();
    m.forward_embeds(&pb, &full_mask.narrow(1, 0, 3).unwrap(), Some(&mut cache))
        .unwrap();
    let after = m
        .forward_embeds(&emb, &full_mask, Some(&mut cache))
        .unwrap();
    let diff = (m.logits(&whole).unwrap() - m.logits(&after).unwrap())
        .unwrap()
        .narrow(1, 1, 3)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < TOL, "soft prompt in cache vs prepended: {diff}");
    // And greedy with a prefix runs, the prefix changing the output of a random model.
    let embed = |ids: &Tensor| m.word_embeddings(ids);
    let prompts = vec![vec![7u32, 9, 11]];
    let with = greedy(
        m.as_ref(),
        &embed,
        Some(&(p * 3.0).unwrap()),
        &prompts,
        &GreedyOptions::new(6, &[]),
    )
    .unwrap();
    let without = greedy(
        m.as_ref(),
        &embed,
        None,
        &prompts,
        &GreedyOptions::new(6, &[]),
    )
    .unwrap();
    assert_eq!(with[0].len(), 6);
    assert_ne!(with, without, "the soft prompt must reach the model");
}

#[test]
fn gradient_reaches_inputs_embeds_and_not_the_weights() {
    for name in MODELS {
        let m = model(name);
        let llama = m
            .as_any()
            .downcast_ref::<LlamaModel>()
            .expect("a LlamaModel");
        let ids = vec![vec![0u32, 0, 7, 9, 11], vec![5, 6, 8, 10, 12]];
        let mask = vec![vec![0u32, 0, 1, 1, 1], vec![1, 1, 1, 1, 1]];
        let emb = Var::from_tensor(&m.word_embeddings(&tensor_u32(&ids)).unwrap()).unwrap();
        let h = m
            .forward_embeds(emb.as_tensor(), &tensor_u32(&mask), None)
            .unwrap();
        // loss on the last row only (an attended row in both sequences)
        let last = h.narrow(1, 4, 1).unwrap();
        let loss = m.logits(&last).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(emb.as_tensor())
            .expect("gradient reaches inputs_embeds");
        let g: Vec<Vec<Vec<f32>>> = g.to_vec3().unwrap();
        assert!(
            g.iter().flatten().flatten().all(|v| v.is_finite()),
            "{name}: finite grad"
        );
        // every attended position influences the last row; padded ones do not
        for (b, row) in mask.iter().enumerate() {
            for (t, &mk) in row.iter().enumerate() {
                let norm: f32 = g[b][t].iter().map(|v| v.abs()).sum();
                if mk == 1 {
                    assert!(norm > 0.0, "{name}: no gradient at attended ({b}, {t})");
                } else {
                    assert!(norm == 0.0, "{name}: gradient {norm} at padded ({b}, {t})");
                }
            }
        }
        let mut weights: Vec<&Tensor> = vec![&llama.embed_tokens, &llama.norm, m.lm_head_table()];
        for l in &llama.layers {
            weights.extend([
                l.q_proj.weight(),
                l.k_proj.weight(),
                l.v_proj.weight(),
                l.o_proj.weight(),
                l.gate_proj.weight(),
                l.up_proj.weight(),
                l.down_proj.weight(),
                &l.input_norm,
                &l.post_attention_norm,
            ]);
        }
        for w in weights {
            assert!(!w.is_variable(), "{name}: a model weight is a Var");
            assert!(
                grads.get(w).is_none(),
                "{name}: a model weight got a gradient"
            );
        }
    }
}

#[test]
fn tied_and_untied_heads() {
    let tied = model("tiny-llama-gqa-tied");
    assert!(tied.tied_embeddings());
    let diff = (tied.lm_head_table() - tied.word_embedding_table())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    let untied = model("tiny-llama-mha-untied");
    assert!(!untied.tied_embeddings());
    assert_eq!(untied.lm_head_table().dims(), [96, 32]);
    assert_eq!(untied.family(), "llama");
    assert_eq!(untied.cache_shape().kv_heads, 4);
    assert_eq!(tied.cache_shape().kv_heads, 2);
    assert_eq!(tied.max_sequence_len(), 64);
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join(name).join(f), d.path().join(f)).unwrap();
    }
    d
}

fn edit_config(dir: &Path, edit: impl Fn(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> String {
    format!(
        "{:#}",
        load_causal_lm(dir, &Device::Cpu).err().expect("load fails")
    )
}

#[test]
fn loading_errors_name_the_file_tensor_and_field() {
    let name = "tiny-llama-mha-untied";
    let (_, tensors) = read_checkpoint(&fixtures().join(name)).unwrap();

    let d = copy_fixture(name);
    let mut t = tensors.clone();
    t.remove("model.layers.1.mlp.up_proj.weight");
    candle_core::safetensors::save(&t, d.path().join("model.safetensors")).unwrap();
    let err = load_err(d.path());
    assert!(
        err.contains("model.safetensors")
            && err.contains("missing tensor model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );

    let mut t = tensors.clone();
    t.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        Tensor::zeros((16, 32), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, d.path().join("model.safetensors")).unwrap();
    let err = load_err(d.path());
    assert!(
        err.contains("model.safetensors")
            && err.contains("model.layers.0.self_attn.k_proj.weight")
            && err.contains("[16, 32]")
            && err.contains("[32, 32]"),
        "{err}"
    );

    let mut t = tensors.clone();
    t.remove("lm_head.weight");
    candle_core::safetensors::save(&t, d.path().join("model.safetensors")).unwrap();
    let err = load_err(d.path());
    assert!(
        err.contains("lm_head.weight") && err.contains("tie_word_embeddings"),
        "{err}"
    );

    let d = copy_fixture(name);
    edit_config(d.path(), |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}),
        );
    });
    let err = load_err(d.path());
    assert!(
        err.contains("config.json") && err.contains("\"llama3\""),
        "{err}"
    );

    let d = copy_fixture(name);
    edit_config(d.path(), |c| {
        c.insert("attention_bias".into(), Value::Bool(true));
    });
    let err = load_err(d.path());
    assert!(
        err.contains("config.json") && err.contains("attention_bias"),
        "{err}"
    );

    let d = copy_fixture(name);
    edit_config(d.path(), |c| {
        c.insert("hidden_act".into(), Value::String("gelu".into()));
    });
    assert!(load_err(d.path()).contains("hidden_act \"gelu\""));
}

#[test]
fn config_accepts_transformers_4_and_5_layouts() {
    let v5 = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
        "num_hidden_layers":1,"num_attention_heads":2,"rope_parameters":{"rope_theta":5e5,"rope_type":"default"},
        "eos_token_id":[2,3]}"#;
    let c = LlamaConfig::from_json_str(v5).unwrap();
    assert_eq!(
        (c.rope_theta, c.num_key_value_heads, c.head_dim),
        (5e5, 2, 4)
    );
    assert_eq!(c.eos_token_ids, vec![2, 3]);
    let v4 = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
        "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":6,
        "rope_theta":1e6,"rope_scaling":null,"eos_token_id":2}"#;
    let c = LlamaConfig::from_json_str(v4).unwrap();
    assert_eq!(
        (c.rope_theta, c.num_key_value_heads, c.head_dim),
        (1e6, 1, 6)
    );
    assert_eq!(c.eos_token_ids, vec![2]);
    let scaled = v4.replace(
        "\"rope_scaling\":null",
        "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}",
    );
    let err = format!("{:#}", LlamaConfig::from_json_str(&scaled).unwrap_err());
    assert!(err.contains("\"linear\""), "{err}");
}

/// A sharded checkpoint (index + two files) loads to the same model.
#[test]
fn sharded_checkpoint_loads() {
    let name = "tiny-llama-gqa-tied";
    let (_, tensors) = read_checkpoint(&fixtures().join(name)).unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join(name).join("config.json"),
        d.path().join("config.json"),
    )
    .unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (k, v) in tensors {
        let file = if k.contains("layers.1") {
            "model-00002-of-00002.safetensors"
        } else {
            "model-00001-of-00002.safetensors"
        };
        map.insert(k.clone(), Value::String(file.into()));
        if file.contains("00001-") {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    candle_core::safetensors::save(&a, d.path().join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, d.path().join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        serde_json::to_string(&serde_json::json!({"metadata": {}, "weight_map": map})).unwrap(),
    )
    .unwrap();
    let m = load_causal_lm(d.path(), &Device::Cpu).unwrap();
    let ids = vec![vec![3u32, 4, 5]];
    let mask = vec![vec![1u32, 1, 1]];
    let diff = (logits_of(m.as_ref(), &ids, &mask) - logits_of(model(name).as_ref(), &ids, &mask))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    // the same tensors through from_tensors, the GGUF loader's entry point
    let (src, t) = read_checkpoint(&fixtures().join(name)).unwrap();
    let cfg = LlamaConfig::from_file(&fixtures().join(name).join("config.json")).unwrap();
    let direct = LlamaModel::from_tensors(cfg, t, &src, &Device::Cpu).unwrap();
    let h = direct
        .forward_embeds(
            &direct.word_embeddings(&tensor_u32(&ids)).unwrap(),
            &tensor_u32(&mask),
            None,
        )
        .unwrap();
    assert_eq!(CausalLm::logits(&direct, &h).unwrap().dims(), [1, 3, 96]);
    let _ = D::Minus1;
}

/// A SmolLM2-135M-shaped model with random weights (30 layers, d 576, 9 heads / 3 KV heads,
/// ffn 1536, vocab 49152, tied).
fn smollm2_shaped() -> LlamaModel {
    let cfg = LlamaConfig::from_json_str(
        r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
        "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"head_dim":64,
        "rms_norm_eps":1e-5,"rope_theta":100000,"max_position_embeddings":8192,
        "tie_word_embeddings":true}"#,
    )
    .unwrap();
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let mut add = |name: String, shape: &[usize]| {
        let v = if shape.len() == 1 {
            Tensor::ones(shape, DType::F32, &dev).unwrap()
        } else {
            (Tensor::randn(0f32, 1., shape, &dev).unwrap() * 0.02).unwrap()
        };
        t.insert(name, v);
    };
    add("model.embed_tokens.weight".into(), &[49152, 576]);
    add("model.norm.weight".into(), &[576]);
    for i in 0..30 {
        let p = format!("model.layers.{i}");
        for (n, s) in [
            ("self_attn.q_proj.weight", vec![576, 576]),
            ("self_attn.k_proj.weight", vec![192, 576]),
            ("self_attn.v_proj.weight", vec![192, 576]),
            ("self_attn.o_proj.weight", vec![576, 576]),
            ("mlp.gate_proj.weight", vec![1536, 576]),
            ("mlp.up_proj.weight", vec![1536, 576]),
            ("mlp.down_proj.weight", vec![576, 1536]),
            ("input_layernorm.weight", vec![576]),
            ("post_attention_layernorm.weight", vec![576]),
        ] {
            add(format!("{p}.{n}"), &s);
        }
    }
    LlamaModel::from_tensors(cfg, t, Path::new("<random>"), &dev).unwrap()
}

/// Timing, not a check: one forward + backward w.r.t. `inputs_embeds` at batch 8 × 64 on a
/// SmolLM2-shaped model, the head on the last 8 rows of each sequence. Run with
/// `cargo test --release -p adept-backbones --test llama -- --ignored --nocapture timing`;
/// `tests/reference/tiny_llama.py --bench` times PyTorch on the same shapes.
#[test]
#[ignore]
fn timing_smollm2_shaped_train_step() {
    let m = smollm2_shaped();
    let dev = Device::Cpu;
    let (b, s, keep) = (8, 64, 8);
    // process CPU seconds (user + system), from /proc/self/stat: on a shared machine wall time
    // measures the neighbours
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    };
    let mut times = vec![];
    for _ in 0..4 {
        let c0 = cpu();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (b, s, 576), &dev).unwrap()).unwrap();
        let mask = Tensor::ones((b, s), DType::U32, &dev).unwrap();
        let t0 = std::time::Instant::now();
        let h = m.forward_embeds(x.as_tensor(), &mask, None).unwrap();
        let t1 = t0.elapsed();
        let logits = CausalLm::logits(&m, &h.narrow(1, s - keep, keep).unwrap()).unwrap();
        let loss = logits.sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        let total = t0.elapsed();
        println!(
            "forward {:.3}s, forward+backward {:.3}s wall, {:.2}s CPU",
            t1.as_secs_f64(),
            total.as_secs_f64(),
            cpu() - c0
        );
        times.push(total.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("candle fwd+bwd median of 4: {:.3}s", times[times.len() / 2]);
}

/// The fused CPU ops (RMSNorm, rotary embedding, SwiGLU) give the composite ops' values and
/// input gradients.
#[test]
fn fused_ops_match_composite_values_and_gradients() {
    for name in MODELS {
        let fused = LlamaModel::from_dir(&fixtures().join(name), &Device::Cpu).unwrap();
        assert!(fused.fused_layers());
        let mut plain = fused.clone();
        plain.set_fused_layers(false);
        let ids = vec![vec![0u32, 0, 7, 9, 11, 13], vec![5, 6, 8, 10, 12, 14]];
        let mask = tensor_u32(&[vec![0u32, 0, 1, 1, 1, 1], vec![1, 1, 1, 1, 1, 1]]);
        let emb = fused.word_embeddings(&tensor_u32(&ids)).unwrap();
        let run = |m: &LlamaModel| {
            let x = Var::from_tensor(&emb).unwrap();
            let h = m.forward_embeds(x.as_tensor(), &mask, None).unwrap();
            let logits = CausalLm::logits(m, &h.narrow(1, 2, 4).unwrap()).unwrap();
            let loss = logits.sqr().unwrap().mean_all().unwrap();
            let g = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
            (logits, g)
        };
        let (lf, gf) = run(&fused);
        let (lp, gp) = run(&plain);
        let d = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let scale = gp
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            d(&lf, &lp) < 1e-4,
            "{name}: fused logits differ by {}",
            d(&lf, &lp)
        );
        assert!(
            d(&gf, &gp) < 1e-4 * scale.max(1.0),
            "{name}: fused gradient differs by {} (max {scale})",
            d(&gf, &gp)
        );
        assert!(scale > 0.0);
    }
}
