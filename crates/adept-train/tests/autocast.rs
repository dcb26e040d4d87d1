//! Training with the frozen backbone under bf16 autocast (`TrainConfig::autocast`) against f32,
//! same seed, same batches: the tiny RoBERTa and Llama fixtures, and (gated by adept-testkit)
//! the real all-MiniLM-L6-v2.
//!
//! What is checked, and the bounds:
//! - the training losses of each step agree within `LOSS_REL` (relative). bf16 rounds each
//!   product's operands and result to 8 significant bits (u = 2⁻⁸ ≈ 3.9e-3 relative); the
//!   layer norms keep the per-layer error at a few u, and the cross-entropy's slope in the
//!   logits is at most 1, so the loss moves by ~u·|logits|: ≲ 1e-2 of the loss at the first
//!   step. The adapter then trains on slightly different gradients, so later steps drift a
//!   little more: 2e-2 over the steps run here.
//! - the adapter's gradients at the same parameters point the same way: cosine ≥ `GRAD_COS` =
//!   0.99 per trainable tensor (a relative error ε gives cos ≈ 1 − ε²/2; 0.99 allows ε ≈ 0.14,
//!   several times what u over a handful of layers gives (measured: ≥ 0.9996 on MiniLM), and
//!   still fails for a wrong path). See `compare_gradients` for near-zero gradients.
//! - the adapter and head stay f32, every trainable tensor gets a gradient, and no frozen
//!   tensor does (the bf16 weights are captured by the frozen-linear op).

use adept_adapters::MethodKind;
use adept_backbones::{Backbone, BertEncoder, LlamaModel};
use adept_nn::Autocast;
use adept_train::batch::Batch;
use adept_train::lm_train::{build_causal_lm, build_lm_optimizer, lm_defaults};
use adept_train::model::cross_entropy;
use adept_train::trainer::{build_optimizer, dropout_rng, train_step, Targets};
use adept_train::{Classifier, OverLength, TextEncoder, TrainConfig};
use candle_core::{DType, Device, Tensor, Var};
use std::path::{Path, PathBuf};

const LOSS_REL: f64 = 2e-2;
const GRAD_COS: f32 = 0.99;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let s = |t: &Tensor| t.sum_all().unwrap().to_scalar::<f32>().unwrap();
    let (na, nb) = (s(&a.sqr().unwrap()), s(&b.sqr().unwrap()));
    if na == 0.0 && nb == 0.0 {
        return 1.0;
    }
    s(&(a * b).unwrap()) / (na * nb).sqrt()
}

fn config(method: MethodKind, autocast: Autocast) -> TrainConfig {
    let mut cfg = TrainConfig::defaults(method);
    cfg.adapter.prompt_len = 6;
    cfg.adapter.rank = 4;
    cfg.adapter.budget = 1;
    cfg.adapter.max_length = 32;
    cfg.lr_prompt = 3e-2;
    cfg.autocast = autocast;
    cfg
}

fn classifier(model_dir: &Path, cfg: &TrainConfig, enc: &TextEncoder) -> Classifier {
    let backbone = adept_backbones::load_encoder(model_dir, &Device::Cpu).unwrap();
    let mut cfg = cfg.clone();
    cfg.adapter.token_dim = backbone.hidden_size();
    adept_train::build_classifier(backbone, enc, &cfg, 2).unwrap()
}

/// Trains f32 and bf16 classifiers side by side for `steps` steps on one batch of `texts`
/// (returns the two loss curves), then puts the f32 model's trained adapter and head into the
/// bf16 model and compares the gradients both compute there (same parameters, same dropout):
/// the bf16 numerics alone, not the drift of two trajectories (Adam's normalised steps move
/// every coordinate by ~lr whatever its gradient's size, so near-zero gradient coordinates
/// of the two runs part ways within a few steps).
fn encoder_side_by_side(model_dir: &Path, texts: &[&str], steps: usize) -> (Vec<f64>, Vec<f64>) {
    let enc = TextEncoder::from_file(&model_dir.join("tokenizer.json"), 32, OverLength::Truncate)
        .unwrap();
    let dev = Device::Cpu;
    let items: Vec<_> = texts.iter().map(|t| enc.encode(t, None).unwrap()).collect();
    let batch = Batch::collate(&items.iter().collect::<Vec<_>>(), enc.pad_id, &dev).unwrap();
    let classes: Vec<u32> = (0..texts.len() as u32).map(|i| i % 2).collect();
    let targets = Targets::Classes(classes.clone());
    let labels = Tensor::new(classes.as_slice(), &dev).unwrap();

    let mut curves = Vec::new();
    let mut models = Vec::new();
    for autocast in [Autocast::F32, Autocast::Bf16] {
        let cfg = config(MethodKind::Adept, autocast);
        let model = classifier(model_dir, &cfg, &enc);
        assert_eq!(model.backbone.autocast(), autocast);
        let bert = model
            .backbone
            .as_any()
            .downcast_ref::<BertEncoder>()
            .unwrap();
        let want = if autocast.is_on() {
            DType::BF16
        } else {
            DType::F32
        };
        assert_eq!(bert.layers[0].value.weight_dtype(), want);
        let mut opt = build_optimizer(&model, &cfg).unwrap();
        let losses: Vec<f64> = (0..steps)
            .map(|s| train_step(&model, &mut opt, &batch, &targets, cfg.seed, s, 1.0).unwrap())
            .collect();
        curves.push(losses);
        models.push((model, cfg.seed));
    }
    // The f32 run's trained parameters into the bf16 model.
    for ((_, f), (_, b)) in models[0].0.trainable().iter().zip(models[1].0.trainable()) {
        b.set(f.as_tensor()).unwrap();
    }
    let mut grads_of = Vec::new();
    for (model, seed) in &models {
        let autocast = model.backbone.autocast();
        let bert = model
            .backbone
            .as_any()
            .downcast_ref::<BertEncoder>()
            .unwrap();
        let mut rng = dropout_rng(*seed, steps);
        let loss = cross_entropy(&model.forward(&batch, Some(&mut rng)).unwrap(), &labels).unwrap();
        let grads = loss.backward().unwrap();
        let mut g = Vec::new();
        for (name, var) in model.trainable() {
            assert_eq!(var.dtype(), DType::F32, "{name} stays f32");
            let t = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{autocast}: no gradient for {name}"));
            assert_eq!(t.dtype(), DType::F32);
            assert!(
                t.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
            g.push((name, t.clone()));
        }
        let frozen = [
            bert.word_embedding_table(),
            &bert.embeddings.position,
            bert.layers[0].query.weight(),
            bert.layers[0].intermediate.weight(),
            &bert.layers[0].output_norm.weight,
            bert.layers.last().unwrap().output.weight(),
        ];
        for t in frozen {
            assert!(
                grads.get(t).is_none(),
                "{autocast}: a frozen tensor got a gradient"
            );
        }
        grads_of.push(g);
    }
    compare_gradients(&grads_of[0], &grads_of[1]);
    (curves.remove(0), curves.remove(0))
}

fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

/// Per trainable tensor: cosine ≥ `GRAD_COS`. A tensor whose f32 gradient is under 1% of the
/// whole gradient's norm (the classifier bias on a balanced batch: `Σ(p − y)` ≈ 0, whose sign
/// any rounding flips) is held instead to a difference under 1% of that whole norm.
fn compare_gradients(f32_grads: &[(String, Tensor)], bf16_grads: &[(String, Tensor)]) {
    let total = f32_grads
        .iter()
        .map(|(_, g)| norm(g).powi(2))
        .sum::<f32>()
        .sqrt();
    for ((name, a), (_, b)) in f32_grads.iter().zip(bf16_grads) {
        let c = cosine(a, b);
        let diff = norm(&(a - b).unwrap());
        eprintln!(
            "gradient of {name}: bf16 vs f32 cosine {c:.5}, |Δ| {diff:.2e} (|g| {:.2e}, all {total:.2e})",
            norm(a)
        );
        if norm(a) < 1e-2 * total {
            assert!(
                diff < 1e-2 * total,
                "gradient of {name}: |Δ| {diff} vs all {total}"
            );
        } else {
            assert!(c > GRAD_COS, "gradient of {name}: bf16 vs f32 cosine {c}");
        }
    }
}

fn check_losses(label: &str, f32_losses: &[f64], bf16_losses: &[f64]) {
    for (s, (a, b)) in f32_losses.iter().zip(bf16_losses).enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-6);
        eprintln!("{label} step {s}: loss f32 {a:.6}, bf16 {b:.6}, rel. diff {rel:.2e}");
        assert!(
            rel < LOSS_REL,
            "{label} step {s}: loss {a} vs {b} (rel {rel})"
        );
    }
    assert_ne!(
        f32_losses, bf16_losses,
        "bf16 gave identical losses: nothing was cast"
    );
}

#[test]
fn bf16_training_steps_track_f32_on_the_tiny_roberta() {
    let texts = [
        "a happy sunny day",
        "a sad grey night",
        "the film was wonderful and moving",
        "dull boring and far too long",
    ];
    let (a, b) = encoder_side_by_side(&fixture("tiny-roberta"), &texts, 4);
    check_losses("tiny-roberta", &a, &b);
}

#[test]
fn bf16_training_steps_track_f32_on_minilm() {
    let Some(dir) = adept_testkit::model_dir("bf16_training_steps_track_f32_on_minilm") else {
        return;
    };
    let texts = [
        "it 's a charming and often affecting journey .",
        "unflinchingly bleak and desperate",
        "allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker .",
        "the acting , costumes , music , cinematography and sound are all astounding given the production 's austere locales .",
        "it 's slow -- very , very slow .",
        "although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young women .",
        "a sometimes tedious film .",
        "you do n't have to know about music to appreciate the film 's easygoing blend of comedy and romance .",
    ];
    let (a, b) = encoder_side_by_side(&dir, &texts, 4);
    check_losses("all-MiniLM-L6-v2", &a, &b);
}

#[test]
fn bf16_causal_lm_steps_track_f32_on_the_tiny_llama() {
    let dev = Device::Cpu;
    let dir = fixture("tiny-llama-gqa-tied");
    // Two rows, right-padded; the loss reads the last two positions of each.
    let ids = Tensor::new(&[[5u32, 9, 14, 22, 31, 40], [7, 12, 3, 19, 0, 0]], &dev).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &dev).unwrap();
    let target = Tensor::new(&[[0u32, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0]], &dev).unwrap();
    let mut curves = Vec::new();
    let mut grads_of = Vec::new();
    for autocast in [Autocast::F32, Autocast::Bf16] {
        let mut cfg = lm_defaults(MethodKind::Adept);
        cfg.adapter.prompt_len = 4;
        cfg.adapter.rank = 2;
        cfg.adapter.budget = 1;
        cfg.adapter.max_length = 16;
        cfg.autocast = autocast;
        let backbone = adept_backbones::load_causal_lm(&dir, &dev).unwrap();
        cfg.adapter.token_dim = backbone.hidden_size();
        let model = build_causal_lm(backbone, &cfg, None).unwrap();
        let llama = model
            .backbone
            .as_any()
            .downcast_ref::<LlamaModel>()
            .unwrap();
        let want = if autocast.is_on() {
            DType::BF16
        } else {
            DType::F32
        };
        assert_eq!(llama.layers[0].gate_proj.weight_dtype(), want);
        let mut opt = build_lm_optimizer(&model.adapter, &cfg).unwrap();
        let mut losses = Vec::new();
        let mut last = None;
        for step in 0..4 {
            let mut rng = dropout_rng(cfg.seed, step);
            let loss = model.loss(&ids, &mask, &target, Some(&mut rng)).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap() as f64);
            let grads = loss.backward().unwrap();
            for t in [
                llama.layers[0].q_proj.weight(),
                llama.layers[1].down_proj.weight(),
                &llama.embed_tokens,
                model.backbone.lm_head_table(),
                &llama.norm,
            ] {
                assert!(
                    grads.get(t).is_none(),
                    "{autocast}: a frozen tensor got a gradient"
                );
            }
            let g: Vec<(String, Tensor)> = model
                .adapter
                .vars()
                .into_iter()
                .map(|(n, _, v): (String, _, Var)| {
                    let g = grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("no gradient for {n}"));
                    (n, g.clone())
                })
                .collect();
            opt.step(&grads, 1.0).unwrap();
            last = Some(g);
        }
        curves.push(losses);
        grads_of.push(last.unwrap());
    }
    check_losses("tiny-llama", &curves[0], &curves[1]);
    compare_gradients(&grads_of[0], &grads_of[1]);
}

#[test]
fn the_autocast_setting_round_trips_through_train_config_and_keeps_f32_hashes() {
    let f32_cfg = TrainConfig::defaults(MethodKind::Adept);
    let json = serde_json::to_value(&f32_cfg).unwrap();
    assert!(
        json.get("autocast").is_none(),
        "f32 runs keep their old bytes: {json}"
    );
    let mut bf16_cfg = f32_cfg.clone();
    bf16_cfg.autocast = Autocast::Bf16;
    let json = serde_json::to_value(&bf16_cfg).unwrap();
    assert_eq!(json["autocast"], "bf16");
    let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.autocast, Autocast::Bf16);
    // A different precision is a different run: resume refuses it.
    assert_ne!(f32_cfg.hash(), bf16_cfg.hash());
    let mut bad = json;
    bad["autocast"] = "fp16".into();
    let err = serde_json::from_value::<TrainConfig>(bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fp16") && err.contains("bf16"), "{err}");
}
