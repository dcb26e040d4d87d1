//! Tasks as source → target strings for encoder–decoder (T5) training, the way the ADePT / DePT
//! authors run them.
//!
//! # Templates
//!
//! The source is the example's fields joined as `"name1: text1 name2: text2 …"` (no task prefix,
//! single spaces); the target is the label's class **index** as text (`"0"`, `"1"`, `"2"`), or for
//! STS-B the score rounded to one decimal (`"3.8"`). The field order per task ([`template`]):
//!
//! | task | source template |
//! |---|---|
//! | rte, mrpc, stsb | `sentence1: … sentence2: …` |
//! | sst2, cola | `sentence: …` |
//! | qnli | `question: … sentence: …` |
//! | mnli, cb | `premise: … hypothesis: …` |
//! | boolq | `question: … passage: …` |
//! | multirc | `question: … answer: … paragraph: …` |
//! | wic | `sentence1: … sentence2: … word: …` |
//! | qqp | `question1: … question2: …` |
//! | wsc | `text: … reference: …` (adept's WSC fields; not one of the authors' listed templates) |
//!
//! # Evaluation
//!
//! The model's output is decoded greedily and compared **as a string** ([`score_generated`]):
//! for classification the trimmed output must be exactly one of the index strings `"0"`, `"1"`,
//! …; anything else (a label name, `"01"`, an empty string) is an invalid prediction and counts
//! as wrong under the metrics module's rule (binary: the opposite of the gold label; multiclass:
//! a class matching nothing). STS-B parses the output as a float; an unparsable output scores
//! −1 (the metrics module's rule, the authors' `string_to_float` default).
//!
//! A target string that the tokenizer splits into several pieces (`"3.8"` → `▁3 . 8`) is fine:
//! training teaches every piece and greedy decoding generates all of them before EOS.
//!
//! # Custom files
//!
//! [`load_text2text`] reads JSONL or CSV/TSV files with a source and a target column
//! ([`Text2TextSpec`], `--source-field` / `--target-field`); every error names the file and the
//! line. Custom data is scored by exact match of the trimmed strings ([`exact_match_score`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, MetricError, Result};
use crate::example::{Example, Target};
use crate::metrics::{score_with, MetricSpec, Scores};
use crate::reader::{self, JsonCtx};
use crate::task::{FileFormat, TaskKind};

/// One source → target pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Text2TextExample {
    /// The encoder's input text.
    pub source: String,
    /// The text the decoder is trained to produce (empty for unlabelled examples).
    pub target: String,
    /// The gold label, for the task's metrics (`Target::None` for custom data).
    pub label: Target,
    /// MultiRC question group (exact match per question).
    pub group: Option<String>,
    /// Where it came from, for error messages: `file:line` or `split example i`.
    pub origin: String,
}

/// The field names of a built-in task's source template, in order (see the module table).
pub fn template(kind: TaskKind) -> &'static [&'static str] {
    kind.spec().fields
}

/// A template as text with placeholders: `"sentence1: {sentence1} sentence2: {sentence2}"`
/// (what `run.json` records).
pub fn template_string(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("{f}: {{{f}}}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders `"name1: text1 name2: text2 …"` from `example`'s fields named in `fields`, in that
/// order. A field the example lacks is an error naming it and the fields present.
pub fn render_source(example: &Example, fields: &[&str]) -> std::result::Result<String, String> {
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        let v = example.field(f).ok_or_else(|| {
            format!(
                "the example has no field `{f}` (it has: {})",
                example
                    .fields
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        parts.push(format!("{f}: {v}"));
    }
    Ok(parts.join(" "))
}

/// The target string of a label: the class index as text, or the score rounded to one decimal;
/// empty for an unlabelled example.
pub fn target_text(label: &Target) -> String {
    label.to_text().unwrap_or_default()
}

/// A built-in task's example as a source → target pair; `origin` names it in errors.
pub fn to_text2text(
    kind: TaskKind,
    example: &Example,
    origin: impl Into<String>,
) -> Result<Text2TextExample> {
    let origin = origin.into();
    let source = render_source(example, template(kind))
        .map_err(|e| DataError::Invalid(format!("{origin} ({}): {e}", kind.name())))?;
    Ok(Text2TextExample {
        source,
        target: target_text(&example.label),
        label: example.label,
        group: example.group.clone(),
        origin,
    })
}

/// All examples of a split as pairs (`split` names them in errors: `"train example 3"`).
pub fn split_to_text2text(
    kind: TaskKind,
    examples: &[Example],
    split: &str,
) -> Result<Vec<Text2TextExample>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, e)| to_text2text(kind, e, format!("{} {split} example {i}", kind.name())))
        .collect()
}

/// Parses a generated string strictly: classification needs exactly an index string
/// `"0"`..`"{n-1}"` (surrounding whitespace ignored), regression any finite float; anything
/// else is [`Target::None`] (an invalid prediction).
pub fn parse_generated(text: &str, spec: &MetricSpec) -> Target {
    let t = text.trim();
    if spec.regression {
        return match t.parse::<f32>() {
            Ok(v) if v.is_finite() => Target::Score(v),
            _ => Target::None,
        };
    }
    (0..spec.num_labels)
        .find(|c| c.to_string() == t)
        .map_or(Target::None, Target::Class)
}

/// Scores generated strings against gold examples with the task's metrics (see the module docs
/// for invalid outputs). Gold labels come from `golds[i].label`, MultiRC groups from
/// `golds[i].group`.
pub fn score_generated(
    spec: &MetricSpec,
    generated: &[String],
    golds: &[Text2TextExample],
) -> std::result::Result<Scores, MetricError> {
    let preds: Vec<Target> = generated.iter().map(|g| parse_generated(g, spec)).collect();
    let gold_examples: Vec<Example> = golds
        .iter()
        .map(|g| Example {
            fields: Vec::new(),
            label: g.label,
            group: g.group.clone(),
        })
        .collect();
    score_with(spec, &preds, &gold_examples)
}

/// Fraction of outputs equal to their target, both trimmed (custom text-to-text data).
pub fn exact_match_score(
    generated: &[String],
    golds: &[Text2TextExample],
) -> std::result::Result<f64, MetricError> {
    if generated.len() != golds.len() {
        return Err(MetricError::LengthMismatch {
            preds: generated.len(),
            golds: golds.len(),
        });
    }
    if generated.is_empty() {
        return Err(MetricError::Empty);
    }
    let hits = generated
        .iter()
        .zip(golds)
        .filter(|(g, t)| g.trim() == t.target.trim())
        .count();
    Ok(hits as f64 / generated.len() as f64)
}

/// Which columns (CSV/TSV header names) or keys (JSONL; dotted paths reach nested objects) hold
/// the source and the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text2TextSpec {
    pub format: Option<FileFormat>,
    pub source_field: String,
    pub target_field: String,
}

impl Default for Text2TextSpec {
    /// `source` and `target`, format from the extension.
    fn default() -> Self {
        Self {
            format: None,
            source_field: "source".into(),
            target_field: "target".into(),
        }
    }
}

/// Reads a custom text-to-text file (JSONL, CSV or TSV with a header) into pairs in file order.
///
/// Each violation is an error naming the file and the 1-based line: invalid JSON / not an
/// object, a missing field (listing those present), a field that is not a string, number or
/// boolean, an empty (or whitespace-only) target. Empty files are [`DataError::Empty`]. Texts
/// are kept verbatim; numbers and booleans become text as JSON writes them.
pub fn load_text2text(path: &Path, spec: &Text2TextSpec) -> Result<Vec<Text2TextExample>> {
    let format = match spec.format {
        Some(f) => f,
        None => FileFormat::from_path(path).ok_or_else(|| {
            DataError::Invalid(format!(
                "{}: cannot tell the format from the extension; use .csv, .tsv or .jsonl or give \
                 the format",
                path.display()
            ))
        })?,
    };
    let mut out = Vec::new();
    let mut push = |line: u64, source: String, target: String| -> Result<()> {
        if target.trim().is_empty() {
            return Err(DataError::Parse {
                path: path.to_path_buf(),
                line,
                message: format!(
                    "empty target (field `{}`): there is nothing to train on; remove the line or \
                     fill it in",
                    spec.target_field
                ),
            });
        }
        out.push(Text2TextExample {
            source,
            target,
            label: Target::None,
            group: None,
            origin: format!("{}:{line}", path.display()),
        });
        Ok(())
    };
    match format {
        FileFormat::Jsonl => {
            for row in reader::read_jsonl(path, "text-to-text dataset")? {
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
                let source = text_of(&spec.source_field)?;
                let target = text_of(&spec.target_field)?;
                push(row.line, source, target)?;
            }
        }
        FileFormat::Csv | FileFormat::Tsv => {
            let (delim, quoting, sep) = if format == FileFormat::Csv {
                (b',', true, "comma")
            } else {
                (b'\t', false, "tab")
            };
            let rows = reader::read_delimited(path, "text-to-text dataset", delim, quoting)?;
            if let Some((header, data)) = rows.split_first() {
                let names: Vec<String> =
                    header.cells.iter().map(|c| c.trim().to_string()).collect();
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
                let (si, ti) = (find(&spec.source_field)?, find(&spec.target_field)?);
                for row in data {
                    let source = row.cell(si, path, sep)?.to_string();
                    let target = row.cell(ti, path, sep)?.to_string();
                    push(row.line, source, target)?;
                }
            }
        }
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}
