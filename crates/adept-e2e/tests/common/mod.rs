//! Helpers shared by the end-to-end tests: finding ONNX Runtime, exporting into a temporary
//! folder (tiny bundles from a random tiny BERT), running candle and ONNX Runtime on the same
//! padded batch.
#![allow(dead_code)]

use adept_adapters::MethodKind;
use adept_bundle::{FoldMode, WeightDtype};
use adept_export::testing::{self, tiny_classifier, write_tiny_tokenizer};
use adept_export::{export_classifier, ExportOptions, TaskInfo};
use adept_runtime::{Bundle, PaddedBatch, RuntimeOptions, SessionConfig};
use adept_train::batch::Batch;
use adept_train::tokenize::Encoded;
use adept_train::{Classifier, Pooling, TextEncoder};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Whether the ONNX Runtime library can be found; a missing one skips the test, or fails it
/// under `ADEPT_REQUIRE_MODEL=1` (adept-testkit); a wrong `ORT_DYLIB_PATH` always fails.
pub fn ort_available(test: &str) -> bool {
    adept_testkit::ort_library(test).is_some()
}

/// Exports `model` into `dir/name` and returns the bundle path.
#[allow(clippy::too_many_arguments)]
pub fn export(
    model: &Classifier,
    enc: &TextEncoder,
    tokenizer: &Path,
    info: &TaskInfo,
    fold: Option<FoldMode>,
    dtype: WeightDtype,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let out = dir.join(name);
    let opts = ExportOptions {
        fold,
        dtype,
        overwrite: true,
        ..Default::default()
    };
    let report = export_classifier(model, enc, tokenizer, info, &opts, &out).unwrap();
    eprintln!("{report}");
    out
}

/// Opens a bundle on the CPU with one thread.
pub fn open(bundle: &Path) -> Bundle {
    let opts = RuntimeOptions {
        session: SessionConfig {
            intra_threads: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    Bundle::open_with(bundle, &opts).unwrap()
}

/// The real all-MiniLM-L6-v2 (adept-testkit's cached model) with the first SST-2 dev sentences,
/// encoded at 64 tokens, a binary task and a random `[384 → 2]` head: the set-up of the tests
/// that run the serving model.
pub struct MiniLmSst2 {
    pub backbone: Box<dyn adept_backbones::Encoder>,
    pub tokenizer: PathBuf,
    pub enc: TextEncoder,
    pub items: Vec<Encoded>,
    pub info: TaskInfo,
    pub head: adept_train::Head,
}

impl MiniLmSst2 {
    /// The first `n` sentences of SST-2 dev; `None` when the model or the GLUE folder is missing
    /// (adept-testkit says so, and fails the test under `ADEPT_REQUIRE_MODEL=1`).
    pub fn load(test: &str, n: usize) -> Option<Self> {
        let model_dir = adept_testkit::model_dir(test)?;
        let sst2 = adept_testkit::glue_task(test, "SST-2", "dev.tsv")?;
        let dev = sst2.join("dev.tsv");
        let text = std::fs::read_to_string(&dev)
            .unwrap_or_else(|e| panic!("{test}: cannot read {}: {e}", dev.display()));
        let sentences: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next())
            .take(n)
            .collect();
        let backbone = adept_backbones::load_encoder(&model_dir, &Device::Cpu).unwrap();
        let tokenizer = model_dir.join("tokenizer.json");
        let enc = testing::text_encoder(&tokenizer, 64).unwrap();
        let items = encode_varied(&enc, &sentences, false);
        Some(Self {
            backbone,
            tokenizer,
            enc,
            items,
            info: testing::task_info("sst2", &["negative", "positive"], &["sentence"]),
            head: testing::random_head(384, 2, 5).unwrap(),
        })
    }

    /// A mean-pooled classifier of the model, the head and a random adapter of `method` with
    /// an `l`-row prompt (rank 8, `max_len` positions, seed 21, scale 0.1: offsets comparable
    /// to MiniLM's embedding rows, |e| ~ 0.05).
    pub fn classifier(&self, method: MethodKind, l: usize, max_len: usize) -> Classifier {
        let adapter =
            testing::random_adapter(&*self.backbone, method, l, 8, max_len, 21, 0.1).unwrap();
        Classifier {
            backbone: self.backbone.clone(),
            adapter,
            head: self.head.clone(),
            pooling: Pooling::Mean,
        }
    }
}

/// Sentences of varied lengths (single texts, or pairs when `pairs`).
pub fn encode_varied(enc: &TextEncoder, sentences: &[&str], pairs: bool) -> Vec<Encoded> {
    sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let b = if pairs {
                Some(sentences[(i + 1) % sentences.len()])
            } else {
                None
            };
            enc.encode(s, b).unwrap()
        })
        .collect()
}

/// Logits of candle's `Classifier::forward` on the padded batch of `items`.
pub fn candle_logits(model: &Classifier, items: &[Encoded], pad_id: u32) -> Vec<Vec<f32>> {
    let refs: Vec<&Encoded> = items.iter().collect();
    let batch = Batch::collate(&refs, pad_id, &Device::Cpu).unwrap();
    model
        .forward(&batch, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

/// Logits of ONNX Runtime on the same padded batch.
pub fn ort_logits(bundle: &Bundle, items: &[Encoded]) -> Vec<Vec<f32>> {
    let refs: Vec<&Encoded> = items.iter().collect();
    bundle
        .run_batch(&PaddedBatch::collate(&refs, bundle.manifest.pad_token_id))
        .unwrap()
}

pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row width");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

pub fn labels(rows: &[Vec<f32>]) -> Vec<usize> {
    rows.iter().map(|r| argmax(r)).collect()
}

/// Tiny-tokenizer sentences of 1 to 12 words.
pub const TINY_SENTENCES: &[&str] = &[
    "good",
    "the film was very good .",
    "i hated this movie , it was too long and the plot was dull !",
    "not bad",
    "the acting is warm but the story is cold .",
    "best movie",
    "this is the worst film of the year",
    "funny , smart and short .",
];

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

/// A tiny ADePT bundle for binary SST-2 (`negative`, `positive`; field `sentence`) in a fresh
/// temporary folder (kept alive by the returned `TempDir`), or `None` when ONNX Runtime is
/// missing (a skip, or a failure under `ADEPT_REQUIRE_MODEL=1`).
pub fn tiny_sst2_bundle(test: &str) -> Option<(tempfile::TempDir, Tiny)> {
    if !ort_available(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tiny_bundle(
        tmp.path(),
        "b",
        "sst2",
        &["negative", "positive"],
        &["sentence"],
        MethodKind::Adept,
    );
    Some((tmp, t))
}
