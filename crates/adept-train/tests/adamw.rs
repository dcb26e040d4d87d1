//! The project's AdamW against `torch.optim.AdamW` over several steps, with weight decay, two
//! parameter groups at different learning rates, and the linear warm-up/decay schedule.
//!
//! The fixture `tests/fixtures/adamw_expected.json` is written by
//! `tests/reference/adamw_reference.py` (PyTorch in float64, from float32 initial values and
//! gradients); see that script for the set-up.

use adept_train::optim::{linear_schedule, AdamW, AdamWParams};
use candle_core::{Device, Tensor, Var};
use serde_json::Value;
use std::collections::HashMap;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/adamw_expected.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shape(fx: &Value, name: &str) -> Vec<usize> {
    fx["shapes"][name]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// A tensor of float32 values stored exactly in the JSON (as their f64 expansions).
fn tensor(values: &Value, shape: &[usize]) -> Tensor {
    let v: Vec<f32> = f64s(values).into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The optimiser with the fixture's settings and groups over `vars`.
fn optimiser(fx: &Value, vars: &HashMap<String, Var>) -> AdamW {
    let betas = f64s(&fx["betas"]);
    let mut opt = AdamW::new(AdamWParams {
        beta1: betas[0],
        beta2: betas[1],
        eps: fx["eps"].as_f64().unwrap(),
        weight_decay: fx["weight_decay"].as_f64().unwrap(),
    });
    for g in fx["groups"].as_array().unwrap() {
        let members = g["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let n = n.as_str().unwrap();
                (n.to_string(), vars[n].clone())
            })
            .collect();
        opt.add_group(
            g["name"].as_str().unwrap(),
            g["lr"].as_f64().unwrap(),
            members,
        )
        .unwrap();
    }
    opt
}

/// Runs the fixture's steps under `schedule` ("constant" or "linear"); with `resume_at = Some(k)`
/// the optimiser is rebuilt after step k from its saved moments (as a checkpoint resume does).
/// Returns the largest |param − PyTorch| over all steps and values.
fn run(fx: &Value, schedule: &str, resume_at: Option<usize>) -> f64 {
    let names = ["p", "w", "b"];
    let mut vars: HashMap<String, Var> = names
        .iter()
        .map(|&n| {
            let t = tensor(&fx["initial"][n], &shape(fx, n));
            (n.to_string(), Var::from_tensor(&t).unwrap())
        })
        .collect();
    let mut opt = optimiser(fx, &vars);
    let sched = fx["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == schedule)
        .unwrap();
    let scales = f64s(&sched["lr_scale"]);
    let (warmup, total) = (
        fx["warmup"].as_u64().unwrap() as usize,
        fx["total_steps"].as_u64().unwrap() as usize,
    );
    let grads_per_step = fx["grads"].as_array().unwrap();
    let expected = sched["params_after_step"].as_array().unwrap();
    assert!(expected.len() >= 5 && expected.len() == grads_per_step.len());
    let mut worst = 0.0f64;
    for (step, (grads, want)) in grads_per_step.iter().zip(expected).enumerate() {
        if resume_at == Some(step) {
            // New vars holding the current values, a new optimiser, the saved moments and step.
            let state = opt.state();
            vars = vars
                .iter()
                .map(|(n, v)| (n.clone(), Var::from_tensor(v.as_tensor()).unwrap()))
                .collect();
            opt = optimiser(fx, &vars);
            opt.load_state(&state, step).unwrap();
        }
        let lr_scale = match schedule {
            "linear" => {
                let s = linear_schedule(step, warmup, total);
                assert!(
                    (s - scales[step]).abs() < 1e-12,
                    "step {step}: linear_schedule {s} vs PyTorch LambdaLR {}",
                    scales[step]
                );
                s
            }
            _ => scales[step],
        };
        worst = worst.max(one_step(fx, &mut opt, &vars, grads, want, lr_scale, step));
    }
    worst
}

/// One optimiser step with the fixture's gradients (as the gradient store of
/// `Σ sum(var ⊙ g)`, whose gradient is exactly `g`), then the comparison with PyTorch.
fn one_step(
    fx: &Value,
    opt: &mut AdamW,
    vars: &HashMap<String, Var>,
    grads: &Value,
    want: &Value,
    lr_scale: f64,
    step: usize,
) -> f64 {
    let mut loss: Option<Tensor> = None;
    for (n, v) in vars {
        let g = tensor(&grads[n.as_str()], &shape(fx, n));
        let term = (v.as_tensor() * g).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => (l + term).unwrap(),
            None => term,
        });
    }
    let store = loss.unwrap().backward().unwrap();
    opt.step(&store, lr_scale).unwrap();
    let mut worst = 0.0f64;
    for (n, v) in vars {
        let got = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = f64s(&want[n.as_str()]);
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let err = (g as f64 - w).abs();
            // f32 holds these values (|w| < 2) to 1.2e-7; five steps of a few f32 roundings
            // each stay well inside 1e-6 (PyTorch's own float32 run deviates by 2.5e-7).
            assert!(
                err <= 1e-6 * w.abs().max(1.0),
                "step {} {n}[{i}]: {g} vs PyTorch {w} (error {err:e}, lr_scale {lr_scale})",
                step + 1
            );
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn adamw_matches_pytorch_over_five_steps_with_weight_decay_and_two_groups() {
    let fx = fixture();
    assert!(fx["weight_decay"].as_f64().unwrap() > 0.0);
    let lrs: Vec<f64> = fx["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["lr"].as_f64().unwrap())
        .collect();
    assert!(lrs.len() == 2 && lrs[0] != lrs[1]);
    for schedule in ["constant", "linear"] {
        let worst = run(&fx, schedule, None);
        eprintln!(
            "AdamW vs torch {} ({schedule}): max |Δparam| = {worst:e}",
            fx["torch_version"]
        );
    }
}

#[test]
fn adamw_resumed_from_its_state_continues_the_pytorch_trajectory() {
    let fx = fixture();
    for schedule in ["constant", "linear"] {
        let worst = run(&fx, schedule, Some(2));
        eprintln!("AdamW resumed after step 2 ({schedule}): max |Δparam| = {worst:e}");
    }
}
