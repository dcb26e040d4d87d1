//! Custom datasets: CSV, TSV or JSONL files with named text fields and a label field.
//!
//! * **Format**: [`CustomSpec::format`], or from the extension (`.csv`, `.tsv`, `.jsonl` /
//!   `.json` / `.ndjson`). CSV uses RFC 4180 quoting; TSV is read **without quoting** (like
//!   GLUE; a tab cannot appear inside a field). Both need a header line naming the columns.
//!   JSONL: one object per line; a field may be a dotted path into nested objects
//!   (`meta.title`), and numbers/booleans are turned into text as JSON writes them.
//! * **Texts**: [`CustomSpec::text_fields`] (one or more, usually `[a]` or `[a, b]`) become the
//!   example's fields under the same names, so the T5 template reads `"a: … b: …"`.
//! * **Labels**, classification: class ids index [`CustomDataset::labels`]. Without an
//!   explicit list the labels found in the file are sorted: **numerically** when every label
//!   is an integer (`"2" < "10"`), otherwise **lexicographically by Unicode code point**
//!   (`"False" < "True"`, `"neg" < "pos"`). To give a validation/test file the training ids,
//!   pass the training labels as [`CustomSpec::labels`]; then a label outside the list is an
//!   error naming file, line and label. Labels are trimmed of surrounding whitespace.
//! * **Regression** ([`CustomSpec::regression`]): the label is parsed as a finite float.
//! * **No label field** (`label_field: None`): every example is [`Target::None`] (inputs to
//!   predict on).
//!
//! Errors name the file and, where relevant, the line: missing file, missing column (listing
//! those available), unparsable row, empty dataset, unknown label.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::example::{Example, Target};
use crate::metrics::{Metric, MetricSpec};
use crate::reader::{self, JsonCtx};
use crate::task::FileFormat;

/// How to read a custom dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomSpec {
    /// File format; `None` = from the file extension.
    pub format: Option<FileFormat>,
    /// Column names (or JSON keys) of the texts, in template order.
    pub text_fields: Vec<String>,
    /// Column name (or JSON key) of the label; `None` for unlabelled data.
    pub label_field: Option<String>,
    /// Parse labels as floats instead of classes.
    pub regression: bool,
    /// Explicit class list (id = position); `None` = discover from the file.
    pub labels: Option<Vec<String>>,
}

impl CustomSpec {
    /// Classification with labels discovered from the file.
    pub fn classification(text_fields: &[&str], label_field: &str) -> Self {
        Self {
            format: None,
            text_fields: text_fields.iter().map(|s| s.to_string()).collect(),
            label_field: Some(label_field.to_string()),
            regression: false,
            labels: None,
        }
    }

    /// Regression on a float label.
    pub fn regression(text_fields: &[&str], label_field: &str) -> Self {
        Self {
            regression: true,
            ..Self::classification(text_fields, label_field)
        }
    }

    /// Uses an explicit class list (e.g. the training set's [`CustomDataset::labels`]).
    pub fn with_labels(mut self, labels: Vec<String>) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Forces a file format instead of guessing from the extension.
    pub fn with_format(mut self, format: FileFormat) -> Self {
        self.format = Some(format);
        self
    }
}

/// A loaded custom dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomDataset {
    /// The file it came from.
    pub path: PathBuf,
    pub examples: Vec<Example>,
    /// Class names by id (empty for regression).
    pub labels: Vec<String>,
    pub regression: bool,
}

impl CustomDataset {
    /// Number of classes (1 for regression).
    pub fn num_labels(&self) -> usize {
        if self.regression {
            1
        } else {
            self.labels.len()
        }
    }

    /// Metrics for this dataset: classification → accuracy (primary) and macro-F1, plus binary
    /// F1 (class 1 positive) when there are two classes; regression → Pearson (primary) and
    /// Spearman.
    pub fn metric_spec(&self) -> MetricSpec {
        let (metrics, primary) = if self.regression {
            (vec![Metric::Pearson, Metric::Spearman], Metric::Pearson)
        } else if self.labels.len() == 2 {
            (
                vec![Metric::Accuracy, Metric::MacroF1, Metric::F1],
                Metric::Accuracy,
            )
        } else {
            (vec![Metric::Accuracy, Metric::MacroF1], Metric::Accuracy)
        };
        MetricSpec {
            metrics,
            primary,
            num_labels: self.num_labels(),
            regression: self.regression,
        }
    }
}

/// One record before label mapping.
struct RawRecord {
    line: u64,
    fields: Vec<(String, String)>,
    label: Option<String>,
}

/// Loads a custom dataset (see the module docs).
pub fn load_custom(path: &Path, spec: &CustomSpec) -> Result<CustomDataset> {
    if spec.text_fields.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no text fields given",
            path.display()
        )));
    }
    if spec.regression && spec.labels.is_some() {
        return Err(DataError::Invalid(format!(
            "{}: an explicit label list only applies to classification, not regression",
            path.display()
        )));
    }
    if let Some(labels) = &spec.labels {
        let unique: BTreeSet<&String> = labels.iter().collect();
        if labels.is_empty() || unique.len() != labels.len() {
            return Err(DataError::Invalid(format!(
                "{}: the label list must be non-empty and without duplicates (got [{}])",
                path.display(),
                labels.join(", ")
            )));
        }
    }
    let format = match spec.format {
        Some(f) => f,
        None => FileFormat::from_path(path).ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: cannot tell the format from the extension; use .csv, .tsv or .jsonl or give the format",
                path.display()
            ))
        })?,
    };
    let records = match format {
        FileFormat::Csv => read_delimited_records(path, spec, b',', true)?,
        FileFormat::Tsv => read_delimited_records(path, spec, b'\t', false)?,
        FileFormat::Jsonl => read_json_records(path, spec)?,
    };
    if records.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }

    let labels: Vec<String> = match (&spec.labels, spec.regression, &spec.label_field) {
        (Some(explicit), _, _) => explicit.clone(),
        (None, false, Some(field)) => {
            let found = discover_labels(records.iter().filter_map(|r| r.label.as_deref()));
            if found.len() < 2 {
                return Err(DataError::Invalid(format!(
                    "{}: the label column `{field}` holds a single label ({}) in all {} rows; a \
                     classification task needs at least two. Check --label-field, or pass \
                     --regression for a numeric target",
                    path.display(),
                    found.first().map_or("none".into(), |l| format!("`{l}`")),
                    records.len()
                )));
            }
            found
        }
        _ => Vec::new(),
    };
    let discovered = spec.labels.is_none() && !labels.is_empty();

    let mut examples = Vec::with_capacity(records.len());
    for r in records {
        let label = match r.label {
            None => Target::None,
            Some(raw) if spec.regression => reader::parse_score(&raw, path, r.line)?,
            Some(raw) => match labels.iter().position(|l| *l == raw) {
                Some(i) => Target::Class(i),
                None => {
                    return Err(DataError::UnknownLabel {
                        path: path.to_path_buf(),
                        line: r.line,
                        label: raw,
                        known: labels,
                    })
                }
            },
        };
        examples.push(Example::new(r.fields, label));
    }
    if discovered {
        warn_on_rare_labels(path, &labels, &examples);
    }
    Ok(CustomDataset {
        path: path.to_path_buf(),
        examples,
        labels,
        regression: spec.regression,
    })
}

/// Fewer examples than this of a label gets a warning: the model can hardly learn it, and a
/// held-out split may not contain it at all.
pub const FEW_EXAMPLES: usize = 10;

/// Labels with fewer than [`FEW_EXAMPLES`] examples, as `(label, count)`.
pub fn rare_labels(labels: &[String], examples: &[Example]) -> Vec<(String, usize)> {
    let mut counts = vec![0usize; labels.len()];
    for e in examples {
        if let Target::Class(i) = e.label {
            counts[i] += 1;
        }
    }
    labels
        .iter()
        .zip(counts)
        .filter(|&(_, n)| n < FEW_EXAMPLES)
        .map(|(l, n)| (l.clone(), n))
        .collect()
}

fn warn_on_rare_labels(path: &Path, labels: &[String], examples: &[Example]) {
    for (label, n) in rare_labels(labels, examples) {
        tracing::warn!(
            "{}: label `{label}` has only {n} example(s) of {}; it will be hard to learn and may \
             be missing from a held-out split",
            path.display(),
            examples.len()
        );
    }
}

/// Sorted distinct labels: numeric order when all parse as integers, else code-point order.
pub fn discover_labels<'a>(raw: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = raw.into_iter().collect();
    let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
    let numeric: Option<Vec<i128>> = labels.iter().map(|l| l.parse::<i128>().ok()).collect();
    if let Some(values) = numeric {
        let mut pairs: Vec<(i128, String)> = values.into_iter().zip(labels).collect();
        pairs.sort();
        labels = pairs.into_iter().map(|(_, l)| l).collect();
    }
    labels
}

fn read_delimited_records(
    path: &Path,
    spec: &CustomSpec,
    delimiter: u8,
    quoting: bool,
) -> Result<Vec<RawRecord>> {
    let rows = reader::read_delimited(path, "dataset", delimiter, quoting)?;
    let Some((header, data)) = rows.split_first() else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = header.cells.iter().map(|c| c.trim().to_string()).collect();
    let find = |col: &str| -> Result<usize> {
        names
            .iter()
            .position(|n| n == col)
            .ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                line: Some(header.line),
                column: col.to_string(),
                available: names.clone(),
            })
    };
    let text_idx: Vec<usize> = spec
        .text_fields
        .iter()
        .map(|f| find(f))
        .collect::<Result<_>>()?;
    let label_idx = spec.label_field.as_deref().map(find).transpose()?;
    let sep = if delimiter == b'\t' { "tab" } else { "comma" };

    let mut out = Vec::with_capacity(data.len());
    for row in data {
        let mut fields = Vec::with_capacity(text_idx.len());
        for (name, &i) in spec.text_fields.iter().zip(&text_idx) {
            fields.push((name.clone(), row.cell(i, path, sep)?.to_string()));
        }
        let label = match label_idx {
            None => None,
            Some(i) => Some(non_empty_label(row.cell(i, path, sep)?, path, row.line)?),
        };
        out.push(RawRecord {
            line: row.line,
            fields,
            label,
        });
    }
    Ok(out)
}

fn read_json_records(path: &Path, spec: &CustomSpec) -> Result<Vec<RawRecord>> {
    let rows = reader::read_jsonl(path, "dataset")?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let ctx = JsonCtx {
            path,
            line: row.line,
        };
        let text_of = |key: &str| -> Result<String> {
            let v = ctx.get(&row.obj, key)?;
            reader::json_scalar_text(v).ok_or_else(|| {
                ctx.parse_error(format!(
                    "field `{key}` should be a string, number or boolean, found {}",
                    reader::json_kind(v)
                ))
            })
        };
        let mut fields = Vec::with_capacity(spec.text_fields.len());
        for name in &spec.text_fields {
            fields.push((name.clone(), text_of(name)?));
        }
        let label = match &spec.label_field {
            None => None,
            Some(key) => Some(non_empty_label(&text_of(key)?, path, row.line)?),
        };
        out.push(RawRecord {
            line: row.line,
            fields,
            label,
        });
    }
    Ok(out)
}

fn non_empty_label(raw: &str, path: &Path, line: u64) -> Result<String> {
    let label = raw.trim();
    if label.is_empty() {
        Err(DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: "empty label".to_string(),
        })
    } else {
        Ok(label.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_discovery_order() {
        assert_eq!(discover_labels(["10", "2", "1", "2"]), ["1", "2", "10"]);
        assert_eq!(discover_labels(["-1", "1", "0"]), ["-1", "0", "1"]);
        assert_eq!(discover_labels(["pos", "neg", "pos"]), ["neg", "pos"]);
        assert_eq!(discover_labels(["True", "False"]), ["False", "True"]);
        // Mixed: lexicographic.
        assert_eq!(discover_labels(["b", "10", "9"]), ["10", "9", "b"]);
    }
}
