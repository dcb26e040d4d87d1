//! Tasks, dataset loaders, input templates, splits and metrics for adept — plain data, no
//! tensors and no tokenizer.
//!
//! # Data flow
//!
//! ```text
//! files ──► examples ──► splits ──► (tokenizer, elsewhere) ──► model ──► predictions ──► metrics
//! ```
//!
//! 1. **Files → examples.** A built-in task ([`TaskKind`], described by its static
//!    [`TaskSpec`]) reads its official GLUE TSV or SuperGLUE JSONL files
//!    ([`load_file`], [`load_official`]); a custom CSV/TSV/JSONL file is read with
//!    [`load_custom`] and a [`CustomSpec`]. Either way the result is a list of [`Example`]s:
//!    ordered named text fields, a [`Target`] (class id, score, or none for unlabelled test
//!    files) and, for MultiRC, a question group. Columns are found by header name; every error
//!    names the file, the line and the problem ([`DataError`]).
//! 2. **Examples → model inputs.** [`Example::template_text`] / [`Example::target_text`] give
//!    the T5 text-to-text pair (`"premise: … hypothesis: …"` → `"2"`), and
//!    [`Example::text_a`] / [`Example::text_b`] the sentence pair for BERT-style encoders.
//!    Truncation is the tokenizer's business.
//! 3. **Splits.** [`load_task`] applies the paper's seeded rule (halve the official dev set
//!    for small tasks, hold out 1,000 training examples for large ones, MNLI
//!    mismatched/matched); [`load_splits`] with [`SplitMode::Official`] returns the official
//!    train/dev/test unchanged. See [`split`] for the exact rule and the paper's numbers.
//! 4. **Metrics.** [`metrics::score`] turns predictions ([`Target`]s, e.g. parsed from
//!    generated text with [`TaskSpec::parse_prediction`]) into named fractions plus the
//!    task's primary metric.

pub mod causal;
pub mod custom;
pub mod error;
pub mod example;
pub mod metrics;
pub mod official;
mod reader;
pub mod split;
pub mod task;
pub mod text2text;

pub use causal::{LmExample, Verbalizer};
pub use custom::{load_custom, CustomDataset, CustomSpec};
pub use error::{DataError, MetricError};
pub use example::{Example, Target};
pub use metrics::{score, score_with, Metric, MetricSpec, Scores};
pub use official::{load_file, load_official, resolve_task_dir};
pub use split::{load_splits, load_task, SplitChoice, SplitMode, Splits};
pub use task::{Benchmark, FileFormat, OfficialSplit, SplitRule, TaskKind, TaskSpec};
