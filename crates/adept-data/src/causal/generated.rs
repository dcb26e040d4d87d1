//! Generated text → predictions → the task's metrics.

use crate::error::MetricError;
use crate::example::{Example, Target};
use crate::metrics::{score_with, MetricSpec, Scores};

use super::Verbalizer;

/// The first line of a generation, trimmed: what is compared with label words and parsed as a
/// score. A model that goes on after its answer (`" yes\nQuestion: …"`) is judged on `"yes"`.
fn first_line(generated: &str) -> &str {
    generated.split('\n').next().unwrap_or("").trim()
}

/// The class of a generated completion: its first line, trimmed, compared case-insensitively
/// with each label word, trimmed. `None` when it is no label word (counted wrong by
/// [`score_generated`]). `" Positive\nmore"` → `Some(1)` for `[" negative", " positive"]`;
/// `" positively"` → `None`.
pub fn parse_generated(generated: &str, label_words: &[String]) -> Option<usize> {
    let g = first_line(generated).to_lowercase();
    label_words
        .iter()
        .position(|w| w.trim().to_lowercase() == g)
}

/// The score of a generated regression completion: its first line, trimmed, as a finite
/// float (`" 3.8"` → 3.8, `"4"` → 4.0); `None` when unparsable (`"high"`, `"3.8 out of 5"`,
/// `"NaN"`).
pub fn parse_generated_score(generated: &str) -> Option<f32> {
    first_line(generated)
        .parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
}

/// Scores generated completions against the gold examples with the crate's metrics
/// ([`score_with`]`(spec, …)`, e.g. `task.spec().metric_spec()`).
///
/// Each generation becomes a [`Target`]: the class of [`parse_generated`], the score of
/// [`parse_generated_score`], or [`Target::None`] when it is neither. As the metrics module
/// documents, a `None` counts **wrong**: in a binary task it becomes the opposite of the gold
/// class, in a multiclass task a class that matches nothing; in regression (STS-B) it scores
/// **−1** (the authors' `string_to_float` default), below every valid score, so it lowers
/// Pearson and Spearman. `golds` are the original examples (labels, and MultiRC's groups).
pub fn score_generated(
    verbalizer: &Verbalizer,
    spec: &MetricSpec,
    generated: &[String],
    golds: &[Example],
) -> Result<Scores, MetricError> {
    let preds: Vec<Target> = generated
        .iter()
        .map(|g| {
            if verbalizer.is_regression() {
                parse_generated_score(g).map_or(Target::None, Target::Score)
            } else {
                parse_generated(g, &verbalizer.label_words).map_or(Target::None, Target::Class)
            }
        })
        .collect();
    score_with(spec, &preds, golds)
}

/// Fraction of generations whose first line, trimmed, equals the reference completion's first
/// line, trimmed (case-sensitive): the metric for custom prompt/completion data, which has no
/// classes.
pub fn exact_match(generated: &[String], references: &[String]) -> Result<f64, MetricError> {
    if generated.len() != references.len() {
        return Err(MetricError::LengthMismatch {
            preds: generated.len(),
            golds: references.len(),
        });
    }
    if generated.is_empty() {
        return Err(MetricError::Empty);
    }
    let hits = generated
        .iter()
        .zip(references)
        .filter(|(g, r)| first_line(g) == first_line(r))
        .count();
    Ok(hits as f64 / generated.len() as f64)
}
