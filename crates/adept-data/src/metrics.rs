//! Evaluation metrics.
//!
//! **Scale**: every value is a fraction — accuracy and F1 scores in `[0, 1]`, correlations
//! (Pearson, Spearman, Matthews) in `[-1, 1]`. Multiply by 100 to compare with the paper's
//! tables.
//!
//! **Conventions** (documented deviations from NaN-producing libraries):
//! * empty input is an error ([`MetricError::Empty`]), as are length mismatches;
//! * a correlation whose denominator is zero (a constant prediction or gold vector in Pearson
//!   or Spearman, or an MCC confusion matrix with an empty row/column margin) is **0**;
//!   scipy would return NaN, scikit-learn's MCC also returns 0;
//! * an F1 whose denominator `2·TP + FP + FN` is zero is 0 (scikit-learn's `zero_division=0`).
//!
//! **Invalid predictions** (a generated string that is not a label, [`Target::None`]) in
//! [`score_with`]: for binary tasks they are replaced by the opposite of the gold label, as in
//! the authors' `f1_score_with_invalid`, so they count as wrong in every metric; for multiclass
//! tasks they become a class that matches nothing (a false negative for the gold class, no
//! false positive). For regression an invalid prediction scores −1, the authors'
//! `string_to_float` default.
//!
//! **Task metrics** (see [`crate::task`]): CoLA Matthews correlation; STS-B Pearson (primary)
//! and Spearman; MRPC/QQP accuracy (primary) and binary F1; CB accuracy (primary) and macro-F1
//! over the three classes; MultiRC F1a (binary F1 over all answer options, primary) and exact
//! match per question; everything else accuracy.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::MetricError;
use crate::example::{Example, Target};
use crate::task::TaskKind;

type Result<T> = std::result::Result<T, MetricError>;

/// A metric and its name in [`Scores::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `accuracy`: fraction of exact matches.
    Accuracy,
    /// `f1`: binary F1 with class 1 positive.
    F1,
    /// `macro_f1`: unweighted mean of per-class F1 over classes `0..num_labels`.
    MacroF1,
    /// `mcc`: Matthews correlation coefficient (multiclass: Gorodkin's R_K).
    Mcc,
    /// `pearson`: Pearson correlation.
    Pearson,
    /// `spearman`: Spearman rank correlation (ties get average ranks).
    Spearman,
    /// `f1a`: MultiRC binary F1 over all answer options.
    F1a,
    /// `em`: MultiRC exact match, fraction of questions with every option right.
    Em,
}

impl Metric {
    /// The key used in [`Scores::values`].
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::MacroF1 => "macro_f1",
            Metric::Mcc => "mcc",
            Metric::Pearson => "pearson",
            Metric::Spearman => "spearman",
            Metric::F1a => "f1a",
            Metric::Em => "em",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to compute for a task or custom dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSpec {
    pub metrics: Vec<Metric>,
    pub primary: Metric,
    /// Number of classes (1 for regression).
    pub num_labels: usize,
    pub regression: bool,
}

/// Metric values by name, plus which one is primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub values: BTreeMap<String, f64>,
    pub primary: Metric,
}

impl Scores {
    /// The primary metric's value.
    pub fn primary_value(&self) -> f64 {
        self.values
            .get(self.primary.name())
            .copied()
            .unwrap_or(f64::NAN)
    }

    /// A metric's value, if computed.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.values.get(metric.name()).copied()
    }
}

/// Scores a built-in task: `score_with(&task.spec().metric_spec(), preds, golds)`.
pub fn score(task: TaskKind, preds: &[Target], golds: &[Example]) -> Result<Scores> {
    score_with(&task.spec().metric_spec(), preds, golds)
}

/// Scores predictions against gold examples (labels from `golds[i].label`, MultiRC groups from
/// `golds[i].group`). See the module docs for how invalid predictions count.
pub fn score_with(spec: &MetricSpec, preds: &[Target], golds: &[Example]) -> Result<Scores> {
    check_lengths(preds.len(), golds.len())?;
    let mut values = BTreeMap::new();
    if spec.regression {
        let g: Vec<f64> = golds
            .iter()
            .enumerate()
            .map(|(i, e)| match e.label {
                Target::Score(s) => Ok(f64::from(s)),
                _ => Err(MetricError::MissingGold {
                    index: i,
                    expected: "score",
                }),
            })
            .collect::<Result<_>>()?;
        let p: Vec<f64> = preds
            .iter()
            .map(|t| match *t {
                Target::Score(s) => f64::from(s),
                Target::Class(c) => c as f64,
                Target::None => -1.0,
            })
            .collect();
        for &m in &spec.metrics {
            let v = match m {
                Metric::Pearson => pearson(&p, &g)?,
                Metric::Spearman => spearman(&p, &g)?,
                other => {
                    return Err(MetricError::Unsupported {
                        metric: other.name(),
                        reason: "a regression task",
                    })
                }
            };
            values.insert(m.name().to_string(), v);
        }
    } else {
        let g: Vec<usize> = golds
            .iter()
            .enumerate()
            .map(|(i, e)| match e.label {
                Target::Class(c) => Ok(c),
                _ => Err(MetricError::MissingGold {
                    index: i,
                    expected: "class",
                }),
            })
            .collect::<Result<_>>()?;
        let binary = spec.num_labels == 2;
        let p: Vec<usize> = preds
            .iter()
            .zip(&g)
            .map(|(t, &gold)| match *t {
                Target::Class(c) if c < spec.num_labels => c,
                _ if binary => 1 - gold.min(1),
                _ => INVALID,
            })
            .collect();
        for &m in &spec.metrics {
            let v = match m {
                Metric::Accuracy => accuracy(&p, &g)?,
                Metric::F1 | Metric::F1a => f1_binary(&p, &g)?,
                Metric::MacroF1 => macro_f1(&p, &g, spec.num_labels)?,
                Metric::Mcc => matthews_corrcoef(&p, &g)?,
                Metric::Pearson | Metric::Spearman => {
                    let pf: Vec<f64> = p.iter().map(|&c| c as f64).collect();
                    let gf: Vec<f64> = g.iter().map(|&c| c as f64).collect();
                    if m == Metric::Pearson {
                        pearson(&pf, &gf)?
                    } else {
                        spearman(&pf, &gf)?
                    }
                }
                Metric::Em => {
                    let groups: Vec<&str> = golds
                        .iter()
                        .enumerate()
                        .map(|(i, e)| {
                            e.group
                                .as_deref()
                                .ok_or(MetricError::MissingGroup { index: i })
                        })
                        .collect::<Result<_>>()?;
                    exact_match_by_group(&p, &g, &groups)?
                }
            };
            values.insert(m.name().to_string(), v);
        }
    }
    Ok(Scores {
        values,
        primary: spec.primary,
    })
}

/// Stand-in for an invalid multiclass prediction: equals no class.
const INVALID: usize = usize::MAX;

fn check_lengths(preds: usize, golds: usize) -> Result<()> {
    if preds != golds {
        return Err(MetricError::LengthMismatch { preds, golds });
    }
    if preds == 0 {
        return Err(MetricError::Empty);
    }
    Ok(())
}

/// Fraction of positions where `preds[i] == golds[i]`.
pub fn accuracy(preds: &[usize], golds: &[usize]) -> Result<f64> {
    check_lengths(preds.len(), golds.len())?;
    let correct = preds.iter().zip(golds).filter(|(p, g)| p == g).count();
    Ok(correct as f64 / preds.len() as f64)
}

/// `2·TP / (2·TP + FP + FN)` for one class taken as positive; 0 when the denominator is 0.
fn f1_for_class(preds: &[usize], golds: &[usize], positive: usize) -> f64 {
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&p, &g) in preds.iter().zip(golds) {
        match (p == positive, g == positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fn_;
    if denom == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denom as f64
    }
}

/// Binary F1 with class 1 as the positive class (any other value is negative).
pub fn f1_binary(preds: &[usize], golds: &[usize]) -> Result<f64> {
    check_lengths(preds.len(), golds.len())?;
    Ok(f1_for_class(preds, golds, 1))
}

/// MultiRC F1a: binary F1 over all answer options (class 1 = "true answer").
pub fn f1a(preds: &[usize], golds: &[usize]) -> Result<f64> {
    f1_binary(preds, golds)
}

/// Unweighted mean of the per-class F1 over classes `0..num_classes` (scikit-learn
/// `f1_score(average="macro", labels=range(num_classes))`). A class that is neither predicted
/// nor present contributes 0.
pub fn macro_f1(preds: &[usize], golds: &[usize], num_classes: usize) -> Result<f64> {
    check_lengths(preds.len(), golds.len())?;
    if num_classes == 0 {
        return Err(MetricError::Unsupported {
            metric: "macro_f1",
            reason: "zero classes",
        });
    }
    let sum: f64 = (0..num_classes)
        .map(|c| f1_for_class(preds, golds, c))
        .sum();
    Ok(sum / num_classes as f64)
}

/// Matthews correlation coefficient.
///
/// Binary labels (all values in {0, 1}): the exact 2×2 formula
/// `(TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN))`. Otherwise Gorodkin's multiclass
/// generalisation (as scikit-learn): `(c·s − Σ p_k t_k) / √((s² − Σ p_k²)(s² − Σ t_k²))` with
/// `c` correct, `s` total, `p_k` / `t_k` the predicted / true counts of class `k`. A zero
/// denominator gives 0.
pub fn matthews_corrcoef(preds: &[usize], golds: &[usize]) -> Result<f64> {
    check_lengths(preds.len(), golds.len())?;
    if preds.iter().chain(golds).all(|&v| v <= 1) {
        let (mut tp, mut tn, mut fp, mut fn_) = (0f64, 0f64, 0f64, 0f64);
        for (&p, &g) in preds.iter().zip(golds) {
            match (p, g) {
                (1, 1) => tp += 1.0,
                (0, 0) => tn += 1.0,
                (1, 0) => fp += 1.0,
                _ => fn_ += 1.0,
            }
        }
        let denom = ((tp + fp) * (tp + fn_) * (tn + fp) * (tn + fn_)).sqrt();
        return Ok(if denom == 0.0 {
            0.0
        } else {
            (tp * tn - fp * fn_) / denom
        });
    }
    let mut counts: HashMap<usize, (f64, f64)> = HashMap::new();
    let mut correct = 0f64;
    for (&p, &g) in preds.iter().zip(golds) {
        counts.entry(p).or_default().0 += 1.0;
        counts.entry(g).or_default().1 += 1.0;
        if p == g {
            correct += 1.0;
        }
    }
    let s = preds.len() as f64;
    let (mut pt, mut pp, mut tt) = (0f64, 0f64, 0f64);
    for &(p, t) in counts.values() {
        pt += p * t;
        pp += p * p;
        tt += t * t;
    }
    let denom = ((s * s - pp) * (s * s - tt)).sqrt();
    Ok(if denom == 0.0 {
        0.0
    } else {
        (correct * s - pt) / denom
    })
}

/// Pearson correlation; 0 when either vector is constant.
pub fn pearson(xs: &[f64], ys: &[f64]) -> Result<f64> {
    check_lengths(xs.len(), ys.len())?;
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0f64, 0f64, 0f64);
    for (&x, &y) in xs.iter().zip(ys) {
        let (dx, dy) = (x - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let denom = (sxx * syy).sqrt();
    if denom == 0.0 {
        return Ok(0.0);
    }
    // Rounding can push |r| a hair above 1.
    Ok((sxy / denom).clamp(-1.0, 1.0))
}

/// 1-based ranks, ties sharing the average of the ranks they span (`[10, 20, 20, 30]` →
/// `[1, 2.5, 2.5, 4]`). NaNs sort last.
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        // Positions i..=j (0-based) hold ranks i+1..=j+1; their mean is (i + j) / 2 + 1.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman rank correlation: Pearson of the average ranks; 0 when either side is constant.
pub fn spearman(xs: &[f64], ys: &[f64]) -> Result<f64> {
    check_lengths(xs.len(), ys.len())?;
    pearson(&average_ranks(xs), &average_ranks(ys))
}

/// Fraction of groups (MultiRC questions) whose every prediction is right. Groups need not
/// be contiguous.
pub fn exact_match_by_group(preds: &[usize], golds: &[usize], groups: &[&str]) -> Result<f64> {
    check_lengths(preds.len(), golds.len())?;
    check_lengths(groups.len(), golds.len())?;
    let mut all_right: HashMap<&str, bool> = HashMap::new();
    for ((&p, &g), &grp) in preds.iter().zip(golds).zip(groups) {
        let e = all_right.entry(grp).or_insert(true);
        *e &= p == g;
    }
    let exact = all_right.values().filter(|&&ok| ok).count();
    Ok(exact as f64 / all_right.len() as f64)
}
