//! The task as training sees it: examples per split, label names, and how predictions are scored.
//! Built from `adept-data` (GLUE/SuperGLUE tasks or a custom file) by the caller.

use adept_data::Example;
use anyhow::Result;
use std::collections::BTreeMap;

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
