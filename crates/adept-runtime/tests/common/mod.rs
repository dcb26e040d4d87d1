//! Tiny bundles for the runtime tests (exported with adept-export from a random tiny BERT).
#![allow(dead_code)]

use adept_adapters::MethodKind;
use adept_bundle::WeightDtype;
use adept_export::testing::{self, tiny_classifier, write_tiny_tokenizer};
use adept_export::{export_classifier, ExportOptions};
use adept_train::{Classifier, Pooling, TextEncoder};
use std::path::{Path, PathBuf};

pub fn ort_available(test: &str) -> bool {
    adept_testkit::ort_library(test).is_some()
}

pub struct Tiny {
    pub model: Classifier,
    pub encoder: TextEncoder,
    pub bundle: PathBuf,
}

/// Exports a tiny classifier for `task` with `labels` (empty: regression) into `dir/name`.
pub fn tiny_bundle(
    dir: &Path,
    name: &str,
    task: &str,
    labels: &[&str],
    fields: &[&str],
    method: MethodKind,
) -> Tiny {
    let tok = write_tiny_tokenizer(&dir.join(format!("{name}-tokenizer"))).unwrap();
    let encoder = testing::text_encoder(&tok, 16).unwrap();
    let model = tiny_classifier(method, Pooling::Mean, labels.len().max(1), 3).unwrap();
    let info = testing::task_info(task, labels, fields);
    let bundle = dir.join(name);
    let opts = ExportOptions {
        dtype: WeightDtype::F32,
        overwrite: true,
        ..Default::default()
    };
    export_classifier(&model, &encoder, &tok, &info, &opts, &bundle).unwrap();
    Tiny {
        model,
        encoder,
        bundle,
    }
}

/// Copies a bundle directory (to break the copy).
pub fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The error chain of a failed open, as one string.
pub fn open_err(dir: &Path) -> String {
    format!("{:#}", adept_runtime::Bundle::open(dir).unwrap_err())
}
