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

/// The tiny random RoBERTa of `tests/fixtures/tiny-roberta/` (2 layers, positions from
/// `pad_token_id + 1`, no token types), its tokenizer at 24 tokens, four sentences of unequal
/// lengths and a 3-class task.
pub struct TinyRoberta {
    pub backbone: Box<dyn adept_backbones::Encoder>,
    pub tokenizer: PathBuf,
    pub enc: TextEncoder,
    pub items: Vec<Encoded>,
    pub info: TaskInfo,
}

impl TinyRoberta {
    /// The methods (and folds) the RoBERTa graph tests export.
    pub const METHODS: [(MethodKind, Option<FoldMode>); 2] = [
        (MethodKind::Adept, Some(FoldMode::Folded)),
        (MethodKind::Dept, None),
    ];

    pub fn load() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-roberta");
        let backbone = adept_backbones::load_encoder(&dir, &Device::Cpu).unwrap();
        assert!(!backbone.uses_token_types());
        let tokenizer = dir.join("tokenizer.json");
        let enc = testing::text_encoder(&tokenizer, 24).unwrap();
        let sentences = [
            "a good film",
            "the plot was thin but the acting was warm and the music was lovely",
            "bad",
            "I would not watch it again.",
        ];
        let items = encode_varied(&enc, &sentences, false);
        let info = testing::task_info("tiny", &["neg", "neu", "pos"], &["sentence"]);
        Self {
            backbone,
            tokenizer,
            enc,
            items,
            info,
        }
    }

    /// A mean-pooled classifier: a random `method` adapter (6-row prompt, rank 3) and a random
    /// 3-class head.
    pub fn classifier(&self, method: MethodKind) -> Classifier {
        let adapter = testing::random_adapter(&*self.backbone, method, 6, 3, 24, 5, 0.5).unwrap();
        Classifier {
            backbone: self.backbone.clone(),
            adapter,
            head: testing::random_head(32, 3, 9).unwrap(),
            pooling: Pooling::Mean,
        }
    }
}

/// A tiny random BERT (`bert::tiny_config`, hidden size 16) of `layers` layers, its weights from
/// `seed`, under a random `method` adapter (4-row prompt, rank 3) and a random 2-class head.
pub fn tiny_depth_classifier(
    layers: usize,
    seed: u64,
    method: MethodKind,
    pooling: Pooling,
) -> Classifier {
    let mut cfg = adept_backbones::bert::tiny_config(testing::TINY_VOCAB);
    cfg.num_hidden_layers = layers;
    let backbone = adept_backbones::bert::random_encoder(cfg, seed, &Device::Cpu).unwrap();
    let adapter = testing::random_adapter(&backbone, method, 4, 3, 24, 5, 0.5).unwrap();
    Classifier {
        backbone: Box::new(backbone),
        adapter,
        head: testing::random_head(16, 2, 9).unwrap(),
        pooling,
    }
}

/// The tiny tokenizer written into `dir`, its encoder at 16 tokens, a binary single-sentence
/// task and [`TINY_SENTENCES`] encoded (unequal lengths).
pub fn tiny_single_sentences(dir: &Path) -> (PathBuf, TextEncoder, TaskInfo, Vec<Encoded>) {
    tiny_sentences(dir, false)
}

/// [`tiny_single_sentences`] as sentence pairs (token types 1 after the first `[SEP]`) of a
/// 3-class two-field task.
pub fn tiny_pair_sentences(dir: &Path) -> (PathBuf, TextEncoder, TaskInfo, Vec<Encoded>) {
    tiny_sentences(dir, true)
}

fn tiny_sentences(dir: &Path, pairs: bool) -> (PathBuf, TextEncoder, TaskInfo, Vec<Encoded>) {
    let tok = write_tiny_tokenizer(dir).unwrap();
    let enc = testing::text_encoder(&tok, 16).unwrap();
    let info = if pairs {
        testing::task_info("tiny", &["a", "b", "c"], &["sentence1", "sentence2"])
    } else {
        testing::task_info("tiny", &["a", "b"], &["sentence"])
    };
    let items = encode_varied(&enc, TINY_SENTENCES, pairs);
    (tok, enc, info, items)
}

/// Two exports of one model that must compute the same function (`forms`: each one's name and
/// bundle, the first the one under test), run by ONNX Runtime on the padded batch of `items`,
/// and candle's `Classifier::forward`: asserts the first equals the second within `tol` and
/// candle within `candle_tol` with candle's labels, and that the logits depend on the input (a
/// graph that ignored it would agree with itself). Returns `(|first − second|, |first −
/// candle|)`.
pub fn compare_forms(
    label: &str,
    model: &Classifier,
    [(a, a_dir), (b, b_dir)]: [(&str, &Path); 2],
    items: &[Encoded],
    pad_id: u32,
    [tol, candle_tol]: [f32; 2],
) -> (f32, f32) {
    let got = ort_logits(&open(a_dir), items);
    let other = ort_logits(&open(b_dir), items);
    let want = candle_logits(model, items, pad_id);
    let d_other = max_abs_diff(&got, &other);
    let d_candle = max_abs_diff(&got, &want);
    eprintln!("{label}: max |{a} - {b}| = {d_other:e}, max |{a} - candle| = {d_candle:e}");
    assert!(
        d_other <= tol,
        "{label}: {a} vs {b} {d_other:e} > {tol:e}\n{a} {got:?}\n{b} {other:?}"
    );
    assert!(
        d_candle <= candle_tol,
        "{label}: {a} vs candle {d_candle:e} > {candle_tol:e}"
    );
    if want[0].len() > 1 {
        assert_eq!(labels(&got), labels(&want), "{label}: labels");
    }
    let spread = got
        .iter()
        .map(|r| (r[0] - got[0][0]).abs())
        .fold(0.0, f32::max);
    assert!(spread > 1e-3, "{label}: logits do not depend on the input");
    (d_other, d_candle)
}
