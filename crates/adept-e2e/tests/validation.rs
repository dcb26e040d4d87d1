//! Broken bundles and libraries give errors that name the file and the problem.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::{BundleManifest, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use adept_runtime::ortlib;
use common::*;
use std::path::Path;

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(MANIFEST_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// Re-records the checksums after a file was replaced on purpose.
fn rehash(dir: &Path) {
    let mut m = BundleManifest::read(dir).unwrap();
    m.record_files(dir).unwrap();
    m.write(dir).unwrap();
}

#[test]
fn broken_bundles_are_reported_clearly() {
    let test = "broken_bundles_are_reported_clearly";
    if !ort_available(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let good = tiny_bundle(
        tmp.path(),
        "good",
        "sst2",
        &["negative", "positive"],
        &["sentence"],
        MethodKind::Adept,
    );
    adept_runtime::Bundle::open(&good.bundle).unwrap();
    let case = |name: &str| {
        let d = tmp.path().join(name);
        copy_bundle(&good.bundle, &d);
        d
    };

    let err = open_err(&tmp.path().join("nowhere"));
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );

    let d = case("no-model");
    std::fs::remove_file(d.join(MODEL_FILE)).unwrap();
    let err = open_err(&d);
    assert!(
        err.contains("model.onnx") && err.contains("missing"),
        "{err}"
    );

    let d = case("no-manifest");
    std::fs::remove_file(d.join(MANIFEST_FILE)).unwrap();
    let err = open_err(&d);
    assert!(
        err.contains("adept.json") && err.contains("missing"),
        "{err}"
    );

    let d = case("corrupt-manifest");
    let text = std::fs::read_to_string(d.join(MANIFEST_FILE)).unwrap();
    std::fs::write(d.join(MANIFEST_FILE), &text[..text.len() / 2]).unwrap();
    let err = open_err(&d);
    assert!(
        err.contains("adept.json") && err.contains("not a valid adept bundle manifest"),
        "{err}"
    );

    let d = case("bad-field");
    edit_manifest(&d, |v| v["fold"] = "none".into());
    let err = open_err(&d);
    assert!(err.contains("adept.json") && err.contains("fold"), "{err}");

    let d = case("model-changed");
    let mut bytes = std::fs::read(d.join(MODEL_FILE)).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x55;
    std::fs::write(d.join(MODEL_FILE), bytes).unwrap();
    let err = open_err(&d);
    assert!(
        err.contains("checksum mismatch") && err.contains("model.onnx"),
        "{err}"
    );

    let d = case("tokenizer-changed");
    std::fs::write(d.join(TOKENIZER_FILE), b"{}").unwrap();
    let err = open_err(&d);
    assert!(
        err.contains("checksum mismatch") && err.contains("tokenizer.json"),
        "{err}"
    );

    // A model.onnx that is not ONNX at all (checksums made to match).
    let d = case("not-onnx");
    std::fs::write(d.join(MODEL_FILE), b"definitely not a protobuf").unwrap();
    rehash(&d);
    let err = open_err(&d);
    assert!(
        err.contains("cannot load") && err.contains("model.onnx"),
        "{err}"
    );

    // Manifest and model disagree: another bundle's model (3 classes) under a 2-class manifest.
    let other = tiny_bundle(
        tmp.path(),
        "three",
        "mnli",
        &["a", "b", "c"],
        &["premise", "hypothesis"],
        MethodKind::Pt,
    );
    let d = case("swapped-model");
    std::fs::copy(other.bundle.join(MODEL_FILE), d.join(MODEL_FILE)).unwrap();
    rehash(&d);
    let err = open_err(&d);
    assert!(err.contains("model and manifest do not match"), "{err}");

    // The manifest claims a smaller table than the tokenizer needs.
    let d = case("small-table");
    edit_manifest(&d, |v| v["vocab_size"] = 20.into());
    let err = open_err(&d);
    assert!(err.contains("tokenizer and model do not match"), "{err}");

    // Prompt length edited: the model's metadata says otherwise.
    let d = case("prompt-length");
    edit_manifest(&d, |v| v["prompt_length"] = 7.into());
    let err = open_err(&d);
    assert!(
        err.contains("adept.prompt_length") && err.contains("do not match"),
        "{err}"
    );
}

#[test]
fn token_ids_outside_the_table_are_an_error() {
    let test = "token_ids_outside_the_table_are_an_error";
    let Some((_tmp, t)) = tiny_sst2_bundle(test) else {
        return;
    };
    let mut bundle = adept_runtime::Bundle::open(&t.bundle).unwrap();
    // Pretend the graph's table were smaller than the tokenizer ("film" has id 6).
    bundle.manifest.vocab_size = 6;
    let err = format!(
        "{:#}",
        bundle.predict(&[("the film".into(), None)]).unwrap_err()
    );
    assert!(err.contains("outside") && err.contains("6-row"), "{err}");
}

#[test]
fn wrong_onnxruntime_libraries_are_reported_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    // A path that does not exist (explicit: never silently skipped).
    let missing = tmp.path().join("libonnxruntime.so.1.31.1");
    let err = format!(
        "{:#}",
        ortlib::find_library(None, Some(&missing)).unwrap_err()
    );
    assert!(
        err.contains("libonnxruntime.so.1.31.1") && err.contains("not found"),
        "{err}"
    );
    // A file that is not a shared library.
    let text = tmp.path().join("libonnxruntime.so");
    std::fs::write(&text, b"hello").unwrap();
    let err = format!("{:#}", ortlib::probe_version(&text).unwrap_err());
    assert!(
        err.contains("cannot load") && err.contains("libonnxruntime.so"),
        "{err}"
    );
    // A real shared library that is not ONNX Runtime.
    for lib in [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ] {
        if Path::new(lib).is_file() {
            let err = format!("{:#}", ortlib::probe_version(Path::new(lib)).unwrap_err());
            assert!(err.contains("not an ONNX Runtime library"), "{err}");
            // Through `load` too, whatever was loaded before in this process.
            let err = format!("{:#}", ortlib::load(Path::new(lib)).unwrap_err());
            assert!(err.contains("not an ONNX Runtime library"), "{err}");
            break;
        }
    }
    // Versions.
    let p = Path::new("/x/libonnxruntime.so");
    let err = format!("{:#}", ortlib::check_version("1.20.1", p).unwrap_err());
    assert!(
        err.contains("1.20.1") && err.contains("needs 1.") && err.contains("/x/libonnxruntime.so"),
        "{err}"
    );
    assert!(ortlib::check_version("2.0.0", p).is_err());
    assert!(ortlib::check_version("garbage", p).is_err());
    ortlib::check_version(ortlib::TESTED_VERSION, p).unwrap();

    // Through Bundle::open: the explicit library is used and its problem reported.
    if ort_available("wrong_onnxruntime_libraries (bundle part)") {
        let t = tiny_bundle(
            tmp.path(),
            "b",
            "sst2",
            &["negative", "positive"],
            &["sentence"],
            MethodKind::Pt,
        );
        let opts = adept_runtime::RuntimeOptions {
            ort_library: Some(text.clone()),
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            adept_runtime::Bundle::open_with(&t.bundle, &opts).unwrap_err()
        );
        assert!(err.contains("libonnxruntime.so"), "{err}");
        let real = ortlib::find_library(None, None).unwrap();
        let version = ortlib::probe_version(&real).unwrap();
        eprintln!("ONNX Runtime {version} at {}", real.display());
        assert_eq!(version, ortlib::TESTED_VERSION);
    }
}

#[test]
fn cuda_falls_back_to_cpu_or_fails_when_required() {
    let test = "cuda_falls_back_to_cpu_or_fails_when_required";
    let Some((_tmp, t)) = tiny_sst2_bundle(test) else {
        return;
    };
    let mut opts = adept_runtime::RuntimeOptions::default();
    opts.session.device = adept_runtime::DeviceKind::Cuda;
    match adept_runtime::Bundle::open_with(&t.bundle, &opts) {
        Ok(b) if b.device == adept_runtime::DeviceKind::Cuda => {
            // A machine with CUDA: the bundle runs there, also when the device is required.
            assert!(b.device_fallback.is_none());
            b.predict(&[("good film".into(), None)]).unwrap();
            opts.session.require_device = true;
            let b = adept_runtime::Bundle::open_with(&t.bundle, &opts).unwrap();
            assert_eq!(b.device, adept_runtime::DeviceKind::Cuda);
            eprintln!(
                "{test}: CUDA is available here: checked the CUDA path, not the CPU fallback"
            );
            return;
        }
        Ok(b) => {
            assert_eq!(b.device, adept_runtime::DeviceKind::Cpu);
            let why = b.device_fallback.clone().expect("the fallback says why");
            eprintln!("{test}: fell back to the CPU: {why}");
            assert!(why.contains("CUDA"), "{why}");
            b.predict(&[("good film".into(), None)]).unwrap();
        }
        Err(e) => panic!("CUDA without require_device must fall back, got {e:#}"),
    }
    opts.session.require_device = true;
    let err = format!(
        "{:#}",
        adept_runtime::Bundle::open_with(&t.bundle, &opts).unwrap_err()
    );
    assert!(err.contains("CUDA") && err.contains("required"), "{err}");
}
