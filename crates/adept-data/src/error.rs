//! Error types. Every loader error names the file (and, where there is one, the line) and the
//! problem, so a user can fix the input without reading the source.

use std::path::PathBuf;

/// Errors from reading task files and custom datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file the caller asked for (or a split needs) does not exist.
    #[error("missing {role} file: {} does not exist", .path.display())]
    MissingFile {
        /// The path that was looked for.
        path: PathBuf,
        /// What the file was for, e.g. "BoolQ train" or "dataset".
        role: String,
    },
    /// The file exists but could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A column (TSV/CSV header name) or key (JSONL) the task needs is absent.
    #[error(
        "{}{}: missing column `{column}` (available: {})",
        .path.display(),
        line_suffix(*.line),
        join_or_none(.available)
    )]
    MissingColumn {
        path: PathBuf,
        /// Line of the record (JSONL) or `None` for a header-level problem.
        line: Option<u64>,
        column: String,
        available: Vec<String>,
    },
    /// A row that cannot be parsed: too few columns, invalid JSON, a non-numeric score, ...
    #[error("{}:{line}: {message}", .path.display())]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
    /// The file holds no examples (after the header, if any).
    #[error("{}: empty dataset (no examples after the header)", .path.display())]
    Empty { path: PathBuf },
    /// A label that is not in the task's (or the caller's) label list.
    #[error(
        "{}:{line}: unknown label `{label}` (known labels: {})",
        .path.display(),
        join_or_none(.known)
    )]
    UnknownLabel {
        path: PathBuf,
        line: u64,
        label: String,
        known: Vec<String>,
    },
    /// A split that must be labelled (train / validation) came from a file without labels.
    #[error("{}: {role} file has no labels (is it an unlabelled test file?)", .path.display())]
    Unlabelled { path: PathBuf, role: String },
    /// A task name that none of the built-in tasks answers to.
    #[error("unknown task `{name}` (known: {known})")]
    UnknownTask { name: String, known: String },
    /// A dataset too small for the split rule, an unknown format name, an empty field list, ...
    #[error("{0}")]
    Invalid(String),
}

fn line_suffix(line: Option<u64>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

fn join_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Errors from the metric functions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// No predictions: every metric is undefined on empty input.
    #[error("cannot score an empty set of predictions")]
    Empty,
    /// Predictions and gold labels differ in length.
    #[error("{preds} predictions but {golds} gold labels")]
    LengthMismatch { preds: usize, golds: usize },
    /// A gold example has no usable label (e.g. it came from an unlabelled test file).
    #[error("gold example {index} has no {expected} label")]
    MissingGold {
        index: usize,
        expected: &'static str,
    },
    /// Exact match per group needs every gold example to carry a group id.
    #[error("gold example {index} has no group (MultiRC question id) for exact match")]
    MissingGroup { index: usize },
    /// A metric that does not apply to the data (e.g. accuracy on a regression task).
    #[error("metric `{metric}` does not apply to {reason}")]
    Unsupported {
        metric: &'static str,
        reason: &'static str,
    },
}

/// Result alias for loaders.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
