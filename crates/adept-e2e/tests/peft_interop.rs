//! Python PEFT reads adept's adapter folders honestly: a PT adapter is a PEFT `PROMPT_TUNING`
//! adapter that PEFT runs exactly as adept does, and ADePT / DePT adapters, which PEFT has no
//! method for, are refused by PEFT (their own `peft_type`) instead of being loaded as plain
//! prompt tuning with the offsets silently dropped.
//!
//! PEFT runs through `tests/reference/peft_check.py` on the tiny random RoBERTa of
//! `tests/fixtures/tiny-roberta/` (needs Python with torch, transformers and peft:
//! `tests/requirements.txt`).

use adept_adapters::{Adapter, AdapterConfig, MethodKind, PROMPT};
use adept_export::testing::{randomize_adapter, Lcg};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOLERANCE: f32 = 1e-4;

fn fixture() -> PathBuf {
    adept_testkit::repo_file("tests/fixtures/tiny-roberta")
}

fn expected() -> Value {
    let p = fixture().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture present")).expect("JSON")
}

fn matrix_u32(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("integer matrix")
}

fn peft_check(py: &str, adapter: &Path, ids: &Value, mask: &Value) -> Output {
    Command::new(py)
        .arg(adept_testkit::repo_file("tests/reference/peft_check.py"))
        .arg("--base")
        .arg(fixture())
        .arg("--adapter")
        .arg(adapter)
        .args(["--ids", &ids.to_string(), "--mask", &mask.to_string()])
        .output()
        .expect("python runs")
}

fn tensor3(v: &Value) -> Vec<Vec<Vec<f32>>> {
    serde_json::from_value(v.clone()).expect("float [b][t][d]")
}

/// Largest |ours − PEFT's| over the rows `keep` selects.
fn max_diff(
    ours: &Tensor,
    theirs: &Value,
    mut keep: impl FnMut(usize, usize) -> bool,
) -> (f32, usize) {
    let ours: Vec<Vec<Vec<f32>>> = ours.to_vec3().unwrap();
    let theirs = tensor3(theirs);
    assert_eq!(ours.len(), theirs.len(), "batch");
    let (mut worst, mut rows) = (0f32, 0usize);
    for (b, (x, y)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(x.len(), y.len(), "rows of sequence {b}");
        for (t, (xr, yr)) in x.iter().zip(y).enumerate() {
            if keep(b, t) {
                assert_eq!(xr.len(), yr.len());
                rows += 1;
                for (p, q) in xr.iter().zip(yr) {
                    worst = worst.max((p - q).abs());
                }
            }
        }
    }
    (worst, rows)
}

#[test]
fn a_pt_adapter_runs_in_peft_as_in_adept_and_adept_dept_are_refused() {
    let test = "a_pt_adapter_runs_in_peft_as_in_adept_and_adept_dept_are_refused";
    let Some(py) = adept_testkit::python_with(test, &["torch", "transformers", "peft"]) else {
        return;
    };
    let dev = Device::Cpu;
    let enc = adept_backbones::load_encoder(&fixture(), &dev).unwrap();
    let (vocab, d) = enc.word_embedding_table().dims2().unwrap();
    assert_eq!((vocab, d), (400, 32));
    let tmp = tempfile::tempdir().unwrap();

    // A PT adapter with l = 4 random prompt rows (not rows of the table: the prompt PEFT reads
    // must be ours, not one it could have made itself).
    let l = 4;
    let pt = Adapter::init(
        AdapterConfig::new(MethodKind::Pt, d, l, 0),
        enc.word_embedding_table(),
        3,
    )
    .unwrap();
    let prompt = Tensor::from_vec(Lcg(17).vec(l * d, 1.0), (l, d), &dev).unwrap();
    pt.set_values(&HashMap::from([(PROMPT.to_string(), prompt)]))
        .unwrap();
    let pt_dir = tmp.path().join("pt");
    pt.save(&pt_dir).unwrap();

    let fx = expected();
    let (ids_v, mask_v) = (&fx["input_ids"], &fx["attention_mask"]);
    let out = peft_check(&py, &pt_dir, ids_v, mask_v);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "PEFT refused the PT adapter:\n{stderr}"
    );
    let peft: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    eprintln!(
        "PEFT {} / transformers {} / torch {}: {} as {}",
        peft["peft_version"],
        peft["transformers_version"],
        peft["torch_version"],
        peft["peft_type"],
        peft["peft_model_class"]
    );
    assert_eq!(peft["peft_type"], "PROMPT_TUNING");
    assert_eq!(peft["task_type"], "FEATURE_EXTRACTION");
    assert_eq!(peft["num_virtual_tokens"], l);
    // PEFT lets the model number the positions over prompt + input and passes no token types,
    // as adept's encoder does with `None`.
    assert!(peft["position_ids"].is_null(), "{}", peft["position_ids"]);
    assert!(
        peft["token_type_ids"].is_null(),
        "{}",
        peft["token_type_ids"]
    );

    // Ours: [P; E], the mask with l leading ones, the encoder's hidden states.
    let ids = matrix_u32(ids_v);
    let mask = matrix_u32(mask_v);
    let ids_t = Tensor::new(ids.clone(), &dev).unwrap();
    let mask_t = Tensor::new(mask.clone(), &dev).unwrap();
    let embeds = pt
        .apply(&enc.word_embeddings(&ids_t).unwrap(), None)
        .unwrap();
    let ext_mask = pt.extend(&mask_t, 1).unwrap();
    let ext: Vec<Vec<u32>> = ext_mask.to_vec2().unwrap();
    assert_eq!(
        matrix_u32(&peft["attention_mask"]),
        ext,
        "PEFT's extended mask"
    );
    let hidden = enc
        .forward_embeds_from(&embeds, &ext_mask, None, 0)
        .unwrap();

    let (prompt_diff, _) = max_diff(
        &pt.prompt().unwrap().unsqueeze(0).unwrap(),
        &serde_json::json!([peft["prompt_embeddings"]]),
        |_, _| true,
    );
    let (embeds_diff, n_all) = max_diff(&embeds, &peft["inputs_embeds"], |_, _| true);
    let (hidden_diff, n_attended) =
        max_diff(&hidden, &peft["last_hidden_state"], |b, t| ext[b][t] == 1);
    eprintln!(
        "PT l = {l}: max |Δ| prompt {prompt_diff:.2e}, inputs_embeds {embeds_diff:.2e} ({n_all} rows), \
         last_hidden_state {hidden_diff:.2e} ({n_attended} attended rows)"
    );
    assert_eq!(prompt_diff, 0.0, "PEFT read other prompt values");
    assert!(
        embeds_diff <= TOLERANCE,
        "inputs_embeds differ by {embeds_diff}"
    );
    assert!(
        hidden_diff <= TOLERANCE,
        "hidden states differ by {hidden_diff}"
    );
    assert_eq!(n_all, ids.len() * (l + ids[0].len()));

    // ADePT and DePT carry tensors PEFT has no method for: PEFT must refuse them by their
    // peft_type, not load the prompt and drop the rest.
    for (method, peft_type) in [(MethodKind::Adept, "ADEPT"), (MethodKind::Dept, "DEPT")] {
        let mut cfg = AdapterConfig::new(method, d, l, 3);
        cfg.max_length = 60;
        let a = Adapter::init(cfg, enc.word_embedding_table(), 5).unwrap();
        randomize_adapter(&a, 9, 0.5).unwrap();
        let dir = tmp.path().join(method.to_string());
        a.save(&dir).unwrap();
        let out = peft_check(&py, &dir, ids_v, mask_v);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "PEFT loaded a {method} adapter:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(out.stdout.is_empty());
        assert!(
            stderr.contains(&format!("KeyError: '{peft_type}'")),
            "PEFT's error does not name {peft_type}:\n{stderr}"
        );
        eprintln!(
            "{method}: PEFT refuses it ({})",
            stderr.lines().last().unwrap_or_default()
        );
        // adept itself reads it back.
        let back = Adapter::load(&dir, &dev).unwrap();
        assert_eq!(back.config, a.config);
    }
}
