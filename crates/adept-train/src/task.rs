//! The task as training sees it: examples per split, label names, and how predictions are scored.
//! Built from `adept-data` (GLUE/SuperGLUE tasks or a custom file) by the caller.

use adept_data::Example;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Model outputs for a split: class ids or regression scores.
#[derive(Clone, Debug, PartialEq)]
pub enum Predictions {
    Classes(Vec<usize>),
    Scores(Vec<f32>),
}

/// Metrics of one evaluation and the one that picks the best checkpoint.
#[derive(Clone, Debug)]
pub struct Scores {
    pub metrics: BTreeMap<String, f64>,
    pub primary: f64,
}

pub type Scorer = Box<dyn Fn(&Predictions, &[Example]) -> Result<Scores> + Send + Sync>;

pub struct TaskData {
    pub name: String,
    /// Class names in id order (empty for regression).
    pub label_names: Vec<String>,
    pub regression: bool,
    /// Names of the text fields, in the order they are fed to the tokenizer (a[, b]).
    pub text_fields: Vec<String>,
    pub primary_metric: String,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
    pub scorer: Scorer,
}

impl TaskData {
    /// Outputs of the head: classes, or 1 for regression.
    pub fn num_outputs(&self) -> usize {
        if self.regression {
            1
        } else {
            self.label_names.len()
        }
    }

    pub fn score(&self, preds: &Predictions, gold: &[Example]) -> Result<Scores> {
        (self.scorer)(preds, gold)
    }
}

fn to_targets(preds: &Predictions) -> Vec<adept_data::Target> {
    match preds {
        Predictions::Classes(c) => c.iter().map(|&c| adept_data::Target::Class(c)).collect(),
        Predictions::Scores(s) => s.iter().map(|&s| adept_data::Target::Score(s)).collect(),
    }
}

fn scorer_for(spec: adept_data::MetricSpec) -> Scorer {
    Box::new(move |preds, gold| {
        let s = adept_data::score_with(&spec, &to_targets(preds), gold)?;
        Ok(Scores {
            primary: s.primary_value(),
            metrics: s.values,
        })
    })
}

/// How the validation set of a built-in task is chosen (defined in adept-data, so that
/// `adept eval --bundle` in adept-runtime takes the same choice without depending on training).
pub use adept_data::SplitChoice;

impl TaskData {
    /// A GLUE/SuperGLUE task read from `data_dir` (the benchmark root or the task's folder).
    pub fn builtin(
        kind: adept_data::TaskKind,
        data_dir: &Path,
        splits: SplitChoice,
        seed: u64,
    ) -> Result<Self> {
        let mode = match splits {
            SplitChoice::Official => adept_data::SplitMode::Official,
            SplitChoice::Paper => adept_data::SplitMode::Paper { seed },
        };
        let spec = kind.spec();
        let s = adept_data::load_splits(kind, data_dir, mode).with_context(|| {
            format!("cannot load task {} from {}", spec.name, data_dir.display())
        })?;
        Ok(Self {
            name: spec.name.to_string(),
            label_names: spec.label_names.iter().map(|s| s.to_string()).collect(),
            regression: spec.is_regression,
            text_fields: spec.fields.iter().map(|s| s.to_string()).collect(),
            primary_metric: spec.primary_metric.name().to_string(),
            train: s.train,
            validation: s.validation,
            test: s.test,
            scorer: scorer_for(spec.metric_spec()),
        })
    }

    /// A user's labelled file (CSV, TSV or JSONL). Labels are discovered in the training file;
    /// without a validation file, a seeded 10% (at least one example) is held out.
    pub fn custom(
        train_path: &Path,
        validation_path: Option<&Path>,
        spec: &adept_data::CustomSpec,
        seed: u64,
    ) -> Result<Self> {
        let train = adept_data::load_custom(train_path, spec)?;
        if train.examples.is_empty() {
            anyhow::bail!("{} holds no examples", train_path.display());
        }
        let (train_examples, validation) = match validation_path {
            Some(p) => {
                let vspec = if spec.regression {
                    spec.clone()
                } else {
                    spec.clone().with_labels(train.labels.clone())
                };
                let v = adept_data::load_custom(p, &vspec)?;
                (train.examples.clone(), v.examples)
            }
            None => {
                if train.examples.len() < 2 {
                    anyhow::bail!(
                        "{} has {} example(s): at least 2 are needed to hold out a validation set (or pass a validation file)",
                        train_path.display(),
                        train.examples.len()
                    );
                }
                let k = (train.examples.len() / 10).max(1);
                let (val, rest) = adept_data::split::take_random(train.examples.clone(), k, seed);
                (rest, val)
            }
        };
        let name = train_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        let metric_spec = train.metric_spec();
        Ok(Self {
            name,
            label_names: train.labels.clone(),
            regression: train.regression,
            text_fields: spec.text_fields.clone(),
            primary_metric: metric_spec.primary.name().to_string(),
            train: train_examples,
            validation,
            test: Vec::new(),
            scorer: scorer_for(metric_spec),
        })
    }
}
