//! `adept infer` and `adept eval --bundle`: their options (clap arguments with the `cli` feature,
//! plain structs without) and run functions.

use crate::bundle::{Bundle, PaddingStats, Prediction, RuntimeOptions};
use crate::session::{DeviceKind, SessionConfig};
use adept_data::{SplitChoice, Target};
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where and how a session runs, and where ONNX Runtime comes from: the options every command
/// that runs a bundle shares (`adept infer`, `eval --bundle`, `generate`, `serve`).
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct SessionArgs {
    /// Execution device.
    #[cfg_attr(feature = "cli", arg(long, value_enum, default_value = "cpu"))]
    pub device: DeviceKind,
    /// Fail when the device cannot be used instead of falling back to the CPU.
    #[cfg_attr(feature = "cli", arg(long))]
    pub require_device: bool,
    /// Intra-op threads [default: ONNX Runtime's, one per physical core].
    #[cfg_attr(feature = "cli", arg(long, value_parser = positive_usize))]
    pub threads: Option<usize>,
    /// ONNX Runtime shared library (file or folder) [env ORT_DYLIB_PATH; default: the cache].
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub ort_lib: Option<PathBuf>,
    /// Cache folder [env ADEPT_CACHE; default ~/.cache/adept].
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub cache: Option<PathBuf>,
}

impl SessionArgs {
    /// Runtime options with these session settings, `batch_size` and length grouping.
    pub fn options(&self, batch_size: usize, length_buckets: bool) -> RuntimeOptions {
        RuntimeOptions {
            session: SessionConfig {
                device: self.device,
                require_device: self.require_device,
                intra_threads: self.threads,
                ..Default::default()
            },
            batch_size,
            ort_library: self.ort_lib.clone(),
            cache: self.cache.clone(),
            length_buckets,
        }
    }
}

/// Options shared by every command that serves one bundle.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct RuntimeArgs {
    /// Bundle directory written by `adept export` (model.onnx, tokenizer.json, adept.json).
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub bundle: PathBuf,
    #[cfg_attr(feature = "cli", command(flatten))]
    pub session: SessionArgs,
    /// Inputs per batch (each batch is padded to its longest input).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 32, value_parser = positive_usize))]
    pub batch_size: usize,
    /// Batch inputs in input order instead of grouping similar lengths (more padding; for
    /// measuring what the grouping saves).
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_length_buckets: bool,
}

impl RuntimeArgs {
    pub fn options(&self) -> RuntimeOptions {
        self.session
            .options(self.batch_size, !self.no_length_buckets)
    }

    /// Opens the bundle.
    pub fn open(&self) -> Result<Bundle> {
        Bundle::open_with(&self.bundle, &self.options())
    }
}

/// Predict with an exported bundle: one text (`--text`, `--text-b`) or a JSONL file.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct InferArgs {
    #[cfg_attr(feature = "cli", command(flatten))]
    pub runtime: RuntimeArgs,
    /// The input text (the first text field).
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "input"))]
    pub text: Option<String>,
    /// The second text of a sentence-pair task.
    #[cfg_attr(feature = "cli", arg(long, requires = "text"))]
    pub text_b: Option<String>,
    /// JSONL file of records with the bundle's text fields (see its adept.json).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "FILE", required_unless_present = "text")
    )]
    pub input: Option<PathBuf>,
    /// Where to write the predictions as JSONL [default: standard output].
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub output: Option<PathBuf>,
}

/// A command-line value that must be a whole number ≥ 1 (batch sizes, steps, threads, …):
/// refused by the argument parser, before anything loads.
pub fn positive_usize(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number ≥ 1")),
    }
}

/// A command-line value that must be a finite number > 0 (learning rates).
pub fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err(format!("`{s}` must be a finite number > 0")),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

/// What `run_infer` did.
#[derive(Clone, Debug)]
pub struct InferReport {
    pub predictions: usize,
    pub padding: PaddingStats,
    pub output: Option<PathBuf>,
    pub device: DeviceKind,
    /// Why the requested device was not used (it fell back to the CPU).
    pub device_fallback: Option<String>,
    pub seconds: f64,
}

/// The JSON written for one prediction (merged into the input record for JSONL).
pub fn prediction_json(bundle: &Bundle, p: &Prediction) -> Map<String, Value> {
    let mut m = Map::new();
    if bundle.manifest.regression {
        m.insert("score".into(), json!(p.score));
    } else {
        m.insert("label".into(), json!(p.label));
        m.insert("label_id".into(), json!(p.label_id));
        let probs: Map<String, Value> = bundle
            .manifest
            .label_names
            .iter()
            .zip(&p.probabilities)
            .map(|(n, &v)| (n.clone(), json!(v)))
            .collect();
        m.insert("probabilities".into(), Value::Object(probs));
    }
    m.insert("logits".into(), json!(p.logits));
    m
}

/// An input text: `(text_a, text_b)`.
pub type TextPair = (String, Option<String>);

/// Reads a JSONL file of records; returns each record and its `(text_a, text_b)`.
pub fn read_jsonl_inputs(
    path: &Path,
    bundle: &Bundle,
) -> Result<Vec<(Map<String, Value>, TextPair)>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Map<String, Value> = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let texts = bundle
            .manifest
            .input_template
            .segments(|name| match record.get(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) if !v.is_null() => Some(v.to_string()),
                _ => None,
            })
            .with_context(|| {
                format!(
                    "{}:{}: the bundle expects the fields {:?}",
                    path.display(),
                    i + 1,
                    bundle.manifest.text_fields
                )
            })?;
        out.push((record, texts));
    }
    ensure!(!out.is_empty(), "{} holds no records", path.display());
    Ok(out)
}

/// Runs `adept infer`.
pub fn run_infer(args: &InferArgs) -> Result<InferReport> {
    let start = Instant::now();
    let bundle = args.runtime.open()?;
    let (records, texts): (Vec<Map<String, Value>>, Vec<TextPair>) = match (&args.text, &args.input)
    {
        (Some(a), _) => {
            let fields = &bundle.manifest.text_fields;
            if args.text_b.is_none() && !bundle.manifest.input_template.segment_b.is_empty() {
                bail!(
                    "task {} takes a pair of texts ({fields:?}); pass --text-b too",
                    bundle.manifest.task
                );
            }
            let mut rec = Map::new();
            rec.insert(fields[0].clone(), json!(a));
            if let (Some(b), Some(name)) = (&args.text_b, fields.get(1)) {
                rec.insert(name.clone(), json!(b));
            }
            (vec![rec], vec![(a.clone(), args.text_b.clone())])
        }
        (None, Some(path)) => read_jsonl_inputs(path, &bundle)?.into_iter().unzip(),
        (None, None) => bail!("pass --text or --input"),
    };
    let (preds, padding) = bundle.predict_with_padding(&texts)?;
    let mut sink: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    for (mut rec, p) in records.into_iter().zip(&preds) {
        rec.extend(prediction_json(&bundle, p));
        writeln!(sink, "{}", Value::Object(rec))?;
    }
    sink.flush()?;
    Ok(InferReport {
        predictions: preds.len(),
        padding,
        output: args.output.clone(),
        device: bundle.device,
        device_fallback: bundle.device_fallback.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Score an exported bundle on a task's validation split (ONNX Runtime).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct BundleEvalArgs {
    #[cfg_attr(feature = "cli", command(flatten))]
    pub runtime: RuntimeArgs,
    /// GLUE/SuperGLUE task [default: the bundle's task].
    #[cfg_attr(feature = "cli", arg(long))]
    pub task: Option<String>,
    /// Benchmark folder holding the task folders [env ADEPT_DATA; default ../shared/data/glue].
    #[cfg_attr(feature = "cli", arg(long, value_name = "DIR"))]
    pub data: Option<PathBuf>,
    /// official: the official dev file; paper: the paper's seeded validation split.
    #[cfg_attr(feature = "cli", arg(long, default_value = "official"))]
    pub splits: SplitChoice,
    /// Seed of the paper split.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 42))]
    pub seed: u64,
}

/// What `run_bundle_eval` measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BundleEvalReport {
    pub task: String,
    pub examples: usize,
    pub padding: PaddingStats,
    pub metrics: BTreeMap<String, f64>,
    pub primary_metric: String,
    pub primary: f64,
    pub device: DeviceKind,
    /// Why the requested device was not used (it fell back to the CPU).
    pub device_fallback: Option<String>,
    pub seconds: f64,
}

/// The benchmark folder: `--data`, `$ADEPT_DATA`, or `../shared/data/glue`.
pub fn data_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = explicit {
        ensure!(d.is_dir(), "data folder {} does not exist", d.display());
        return Ok(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("ADEPT_DATA").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let default = PathBuf::from("../shared/data/glue");
    ensure!(
        default.is_dir(),
        "no benchmark data: pass --data DIR or set ADEPT_DATA (looked for {})",
        default.display()
    );
    Ok(default)
}

/// Runs `adept eval --bundle`: predictions through ONNX Runtime, the validation split and the
/// metrics through adept-data (the split and scorer training evaluates with).
pub fn run_bundle_eval(args: &BundleEvalArgs) -> Result<BundleEvalReport> {
    let start = Instant::now();
    let bundle = args.runtime.open()?;
    let name = args
        .task
        .clone()
        .unwrap_or_else(|| bundle.manifest.task.clone());
    let kind: adept_data::TaskKind = name
        .parse()
        .with_context(|| format!("{name:?} is not a built-in task"))?;
    let data = data_dir(args.data.as_deref())?;
    let spec = kind.spec();
    let splits = adept_data::load_splits(kind, &data, args.splits.mode(args.seed))
        .with_context(|| format!("cannot load task {} from {}", spec.name, data.display()))?;
    let label_names: Vec<String> = spec.label_names.iter().map(|s| s.to_string()).collect();
    ensure!(
        spec.is_regression == bundle.manifest.regression
            && label_names == bundle.manifest.label_names,
        "the bundle was exported for task {} with labels {:?}, but task {} has labels {:?}",
        bundle.manifest.task,
        bundle.manifest.label_names,
        spec.name,
        label_names
    );
    let gold = &splits.validation;
    ensure!(
        !gold.is_empty(),
        "the validation split of {} is empty",
        spec.name
    );
    let texts: Vec<(String, Option<String>)> = gold
        .iter()
        .map(|ex| (ex.text_a().to_owned(), ex.text_b()))
        .collect();
    let (preds, padding) = bundle.predict_with_padding(&texts)?;
    let targets: Vec<Target> = preds
        .iter()
        .map(|p| {
            if spec.is_regression {
                Target::Score(p.score.unwrap_or(f32::NAN))
            } else {
                Target::Class(p.label_id.unwrap_or(0))
            }
        })
        .collect();
    let scores = adept_data::score_with(&spec.metric_spec(), &targets, gold)?;
    Ok(BundleEvalReport {
        task: spec.name.to_string(),
        examples: gold.len(),
        padding,
        primary: scores.primary_value(),
        metrics: scores.values,
        primary_metric: spec.primary_metric.name().to_string(),
        device: bundle.device,
        device_fallback: bundle.device_fallback.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
