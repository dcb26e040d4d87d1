//! Causal-LM training through `LmJob` on the tiny Llama fixture (GQA, tied head, 96 tokens):
//! gradients reach every trainable tensor and no frozen one, a short synthetic run lowers the
//! loss and raises label-word accuracy, and a killed-then-resumed run equals the uninterrupted
//! one.

use adept_adapters::MethodKind;
use adept_train::lm_train::{
    build_causal_lm, build_lm_optimizer, lm_defaults, manifest_skeleton, train_lm, LmEval, LmJob,
    SpecialTokens,
};
use adept_train::trainer::{dropout_rng, TrainJob};
use adept_train::{CausalLmModel, LmFeatures, Predictions, RunDir, Scores, TrainConfig};
use candle_core::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-llama-gqa-tied")
}

/// A copy of the fixture with a stand-in tokenizer.json (the run folder records its checksum).
fn model_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(f), d.path().join(f)).unwrap();
    }
    std::fs::write(d.path().join("tokenizer.json"), "{}").unwrap();
    d
}

fn cfg(method: MethodKind, steps: usize) -> TrainConfig {
    let mut c = lm_defaults(method);
    c.adapter.max_length = 16;
    c.adapter.budget = 1000;
    c.lr_prompt = 3e-2;
    c.lr_offsets = 3e-2;
    c.batch_size = 4;
    c.steps = steps;
    c.warmup = 0;
    c.eval_every = steps;
    c.checkpoint_every = 1000;
    c.log_every = 1;
    c.adapter.dropout = 0.0;
    c
}

fn model(c: &TrainConfig) -> CausalLmModel {
    let bb = adept_backbones::load_causal_lm(&fixture(), &Device::Cpu).unwrap();
    build_causal_lm(bb, c, None).unwrap()
}

/// Prompt `[10, 11, a]` → completion `b`: a ∈ {20..24} maps to 30 (even) or 31 (odd).
fn pairs() -> (Vec<LmFeatures>, Vec<usize>) {
    let mut f = Vec::new();
    let mut gold = Vec::new();
    for a in 20u32..28 {
        let c = (a % 2) as usize;
        f.push(LmFeatures {
            ids: vec![10, 11, a, 30 + c as u32],
            target_start: 3,
            truncated: 0,
        });
        gold.push(c);
    }
    (f, gold)
}

fn scoring_eval(gold: Vec<usize>) -> LmEval {
    let mut rows = Vec::new();
    for a in 20u32..28 {
        for w in [30u32, 31] {
            rows.push(LmFeatures {
                ids: vec![10, 11, a, w],
                target_start: 3,
                truncated: 0,
            });
        }
    }
    LmEval::Scoring {
        rows,
        num_labels: 2,
        score: Box::new(move |p: &Predictions| {
            let Predictions::Classes(c) = p else {
                anyhow::bail!("expected classes")
            };
            let acc = c.iter().zip(&gold).filter(|(a, b)| a == b).count() as f64 / c.len() as f64;
            Ok(Scores {
                primary: acc,
                metrics: BTreeMap::from([("accuracy".to_string(), acc)]),
            })
        }),
    }
}

fn job<'a>(m: &'a CausalLmModel, c: &TrainConfig) -> LmJob<'a> {
    let (train, gold) = pairs();
    let special = SpecialTokens::from_model_dir(&fixture()).unwrap();
    assert_eq!(
        (special.bos, special.eos.clone(), special.pad),
        (Some(1), vec![2], Some(0))
    );
    let manifest = manifest_skeleton(m, "synthetic", c.max_len(), &special, c);
    LmJob::from_features(
        m,
        train,
        scoring_eval(gold),
        0,
        vec![2],
        "accuracy",
        manifest,
    )
}

#[test]
fn every_trainable_tensor_gets_a_gradient_and_no_frozen_weight() {
    for method in [MethodKind::Adept, MethodKind::Pt, MethodKind::Dept] {
        let c = cfg(method, 1);
        let m = model(&c);
        let j = job(&m, &c);
        let mut opt = build_lm_optimizer(&m.adapter, &c).unwrap();
        // ADePT's W_up, b2 and DePT's B start at zero, which zeroes the gradient of the tensors
        // before them: one step first, then every tensor must receive a gradient.
        for step in 0..2 {
            let mut rng = dropout_rng(1, step);
            let loss = j.loss(&[0, 1, 2, 3], &mut rng).unwrap();
            let grads = loss.backward().unwrap();
            if step == 1 {
                let vars = m.adapter.vars();
                let names: Vec<&str> = vars.iter().map(|v| v.0.as_str()).collect();
                match method {
                    MethodKind::Adept => assert_eq!(vars.len(), 5, "{names:?}"),
                    MethodKind::Pt => assert_eq!(vars.len(), 1, "{names:?}"),
                    _ => assert_eq!(vars.len(), 3, "{names:?}"),
                }
                for (name, _, var) in &vars {
                    let g = grads
                        .get(var.as_tensor())
                        .unwrap_or_else(|| panic!("{method}: no gradient for {name}"));
                    let n = g
                        .abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(n > 0.0 && n.is_finite(), "{method}: |grad {name}| = {n}");
                }
                let table = m.backbone.word_embedding_table();
                assert!(
                    grads.get(table).is_none(),
                    "the frozen table got a gradient"
                );
                assert!(grads.get(m.backbone.lm_head_table()).is_none());
            }
            opt.step(&grads, 1.0).unwrap();
        }
    }
}

#[test]
fn a_short_run_lowers_the_loss_and_raises_label_word_accuracy() {
    let mut c = cfg(MethodKind::Adept, 150);
    c.adapter.rank = 4;
    c.lr_offsets = 1e-1;
    let m = model(&c);
    let j = job(&m, &c);
    let before = j.validate(&c).unwrap().primary;
    let mut rng = dropout_rng(0, 0);
    let loss0 = j
        .loss(&[0, 1, 2, 3, 4, 5, 6, 7], &mut rng)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let mdir = model_dir();
    let out = tempfile::tempdir().unwrap();
    let run = RunDir::create(out.path(), mdir.path(), &c, false, false).unwrap();
    let report = train_lm(&j, &c, &run, false, None).unwrap();
    let loss1 = j
        .loss(&[0, 1, 2, 3, 4, 5, 6, 7], &mut rng)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let after = report.best_metric.unwrap();
    eprintln!("loss {loss0:.4} -> {loss1:.4}; label-word accuracy {before:.3} -> {after:.3}");
    assert!(loss1 < 0.5 * loss0, "loss {loss0} -> {loss1}");
    assert!(
        after > before && after >= 0.99,
        "accuracy {before} -> {after}"
    );
    // best/ holds the PEFT adapter and a causal-LM manifest; train lines carry peak memory.
    let best = out.path().join("best");
    assert!(best.join("adapter_model.safetensors").exists());
    let man = adept_train::run::read_lm_manifest(&best).unwrap();
    assert_eq!(man.task_kind, "causal-lm");
    assert_eq!(man.model_family, "llama");
    assert_eq!(man.eos_token_ids, vec![2]);
    assert_eq!(adept_train::run::run_task_kind(&best).unwrap(), "causal-lm");
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().next().unwrap().contains("peak_rss_mb"),
        "{metrics}"
    );
}

#[test]
fn resume_after_a_kill_equals_the_uninterrupted_run() {
    let mut c = cfg(MethodKind::Adept, 6);
    c.adapter.dropout = 0.1;
    c.checkpoint_every = 1;
    c.eval_every = 3;
    let mdir = model_dir();
    let run_to_end = |stop: Option<usize>| {
        let out = tempfile::tempdir().unwrap();
        let m = model(&c);
        let j = job(&m, &c);
        let run = RunDir::create(out.path(), mdir.path(), &c, false, false).unwrap();
        if let Some(k) = stop {
            train_lm(&j, &c, &run, false, Some(k)).unwrap();
            // A fresh process: a new model (fresh adapter init) resumed from the checkpoint.
            let m2 = model(&c);
            let j2 = job(&m2, &c);
            let run = RunDir::create(out.path(), mdir.path(), &c, true, false).unwrap();
            train_lm(&j2, &c, &run, true, None).unwrap();
            (m2.adapter.tensors(), out)
        } else {
            train_lm(&j, &c, &run, false, None).unwrap();
            (m.adapter.tensors(), out)
        }
    };
    let (full, _a) = run_to_end(None);
    let (resumed, _b) = run_to_end(Some(4));
    for (name, t) in &full {
        let d = (t - &resumed[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d == 0.0, "{name}: resumed differs by {d}");
    }
}

/// The real default decoder: ADePT (the paper's decoder setting, l = 7, r = 1) on SmolLM2-135M
/// with 8 verbalised SST-2 training sentences lowers the completion loss on those sentences in
/// a few steps (the adapter moves the frozen model towards the label words), and the initial
/// loss is that of the frozen model reading the label words (finite, below ln(vocab)).
#[test]
fn adept_on_smollm2_lowers_the_sst2_completion_loss() {
    const TEST: &str = "adept_on_smollm2_lowers_the_sst2_completion_loss";
    let Some(dir) = adept_testkit::smollm2_dir(TEST) else {
        return;
    };
    let Some(glue) = adept_testkit::glue_dir(TEST) else {
        return;
    };
    let sst2 = adept_data::load_official(
        adept_data::TaskKind::Sst2,
        &glue,
        adept_data::OfficialSplit::Train,
    )
    .unwrap();
    let verbalizer = adept_data::Verbalizer::for_task(adept_data::TaskKind::Sst2);
    let examples = verbalizer.verbalize_all(&sst2[..8]).unwrap();
    let tok = adept_bundle::tokenize::load_tokenizer(&dir.join("tokenizer.json")).unwrap();
    let special = SpecialTokens::from_model_dir(&dir).unwrap();
    let enc = adept_train::LmEncoder::new(tok, 64, special.eos.first().copied()).unwrap();
    let feats: Vec<LmFeatures> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| enc.encode(e, &format!("sst2 {i}")).unwrap())
        .collect();
    let refs: Vec<&LmFeatures> = feats.iter().collect();
    let pad = special.pad.unwrap_or(special.eos[0]);
    let batch = adept_train::LmBatch::collate(&refs, pad, &Device::Cpu).unwrap();
    let mut c = lm_defaults(MethodKind::Adept);
    c.lr_prompt = 3e-2;
    c.lr_offsets = 1e-3;
    c.adapter.dropout = 0.0;
    let bb = adept_backbones::load_causal_lm(&dir, &Device::Cpu).unwrap();
    let m = build_causal_lm(bb, &c, None).unwrap();
    assert_eq!((m.adapter.prompt_len(), m.adapter.config.rank), (7, 1));
    let mut opt = build_lm_optimizer(&m.adapter, &c).unwrap();
    let mut losses = Vec::new();
    for step in 0..6 {
        let mut rng = dropout_rng(0, step);
        let loss = m
            .loss(&batch.ids, &batch.mask, &batch.target_mask, Some(&mut rng))
            .unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        let grads = loss.backward().unwrap();
        opt.step(&grads, 1.0).unwrap();
    }
    eprintln!("SmolLM2 ADePT SST-2 completion loss by step: {losses:?}");
    assert!(
        losses[0].is_finite() && losses[0] < (49152f32).ln(),
        "{losses:?}"
    );
    assert!(
        losses[5] < 0.8 * losses[0],
        "the loss did not fall: {losses:?}"
    );
}
