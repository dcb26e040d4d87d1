//! Readers for the official GLUE (TSV) and SuperGLUE (JSONL) files.
//!
//! GLUE files are tab-separated with **quoting disabled** (SST-2 and others contain unbalanced
//! `"`), and columns are found **by header name**:
//!
//! | task | text columns | label column | notes |
//! |---|---|---|---|
//! | SST-2 | `sentence` | `label` (0/1) | test: `index sentence` |
//! | CoLA | col 3 | col 1 (0/1) | train/dev have **no header** (`source label star sentence`); test has `index sentence` |
//! | MRPC | `#1 String`, `#2 String` | `Quality` (0/1) | header `Quality #1 ID #2 ID #1 String #2 String` (a UTF-8 BOM is stripped) |
//! | STS-B | `sentence1`, `sentence2` | `score` (float) | 10 columns (`index genre filename year old_index source1 source2 sentence1 sentence2 score`) |
//! | QQP | `question1`, `question2` | `is_duplicate` (0/1) | `id qid1 qid2 question1 question2 is_duplicate` |
//! | MNLI | `sentence1`, `sentence2` | `gold_label` (names) | `dev_matched.tsv` / `dev_mismatched.tsv` |
//! | QNLI | `question`, `sentence` | `label` (`entailment`/`not_entailment`) | |
//! | RTE | `sentence1`, `sentence2` | `label` (`entailment`/`not_entailment`) | |
//!
//! SuperGLUE files hold one JSON object per line:
//!
//! | task | fields | label |
//! |---|---|---|
//! | BoolQ | `question`, `passage` | `label` bool |
//! | CB | `premise`, `hypothesis` | `label` name |
//! | WiC | `sentence1`, `sentence2`, `word` | `label` bool |
//! | WSC | `text` (spans marked T5-style), `reference` = `"{span2} refers to {span1}"` | `label` bool |
//! | MultiRC | one line per passage: flattened to one example per answer option with fields `question`, `answer` (`answers[].text`), `paragraph` (`passage.text`) | `answers[].label` 0/1; `group` = `"{passage idx}-{question idx}"` |
//!
//! A file without a label column/key (official test files) gives [`Target::None`] labels.
//! Labels are accepted as the task's label names or as decimal ids.
//!
//! WSC: the `text` field marks the two spans the way T5 (and the authors' code) does:
//! `*` around span 1 and `#` around span 2, located by their word indices
//! (`"* Mark * told Pete … # He # should …"`); when the span is not found at its index the text
//! is left unmarked. The extra `reference` field makes a sentence pair for encoders; the T5
//! template therefore reads `text: … reference: He refers to Mark` (the authors' template has
//! only `text:`).

use std::path::Path;

use serde_json::Value;

use crate::error::{DataError, Result};
use crate::example::{Example, Target};
use crate::reader::{self, JsonCtx};
use crate::task::{Benchmark, OfficialSplit, TaskKind, TaskSpec};

/// Loads one file of a built-in task, in file order. The format (TSV or JSONL) is the task's;
/// the file name does not matter.
pub fn load_file(task: TaskKind, path: &Path) -> Result<Vec<Example>> {
    load_file_as(
        task.spec(),
        path,
        &format!("{} dataset", task.spec().dir_name),
    )
}

/// Loads one official split from a task directory (`dir/<default file name>`).
///
/// `dir` may be the task directory itself or a benchmark root holding it (see
/// [`resolve_task_dir`]).
pub fn load_official(task: TaskKind, dir: &Path, split: OfficialSplit) -> Result<Vec<Example>> {
    let spec = task.spec();
    let name = spec.file_name(split).ok_or_else(|| {
        DataError::Invalid(format!(
            "task {} has no official `{split}` split",
            spec.name
        ))
    })?;
    let path = locate_task_dir(task, dir)?.join(name);
    load_file_as(spec, &path, &format!("{} {split}", spec.dir_name))
}

/// The directory holding a task's files: `root/<dir_name>` (e.g. `glue/SST-2`) or
/// `root/<name>` (`glue/sst2`) when such a directory exists, else `root` itself.
pub fn resolve_task_dir(task: TaskKind, root: &Path) -> std::path::PathBuf {
    let spec = task.spec();
    for candidate in [spec.dir_name, spec.name] {
        let p = root.join(candidate);
        if p.is_dir() {
            return p;
        }
    }
    root.to_path_buf()
}

/// [`resolve_task_dir`], failing when `root` has neither the task's folder nor any of its files,
/// so the error names the folders looked for rather than one file in the wrong place.
pub(crate) fn locate_task_dir(task: TaskKind, root: &Path) -> Result<std::path::PathBuf> {
    let spec = task.spec();
    let dir = resolve_task_dir(task, root);
    let f = &spec.files;
    let has_files = [f.train, f.dev, f.test]
        .into_iter()
        .chain(f.dev_mismatched)
        .any(|name| dir.join(name).exists());
    if dir == root && !has_files {
        return Err(DataError::Invalid(format!(
            "no {} data in {}: looked for {}/ and {}/ there and for {} in it; pass the folder \
             that holds {}/ (or the task folder itself)",
            spec.dir_name,
            root.display(),
            spec.dir_name,
            spec.name,
            f.train,
            spec.dir_name
        )));
    }
    Ok(dir)
}

pub(crate) fn load_file_as(spec: &TaskSpec, path: &Path, role: &str) -> Result<Vec<Example>> {
    let examples = match spec.benchmark {
        Benchmark::Glue => load_glue(spec, path, role)?,
        Benchmark::SuperGlue => load_superglue(spec, path, role)?,
    };
    if examples.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

/// Where to find a column: by header name, or by position in header-less files.
#[derive(Clone, Copy)]
enum Col {
    Name(&'static str),
    Index(usize),
}

struct GluePlan {
    texts: Vec<Col>,
    label: Col,
    has_header: bool,
}

fn glue_plan(kind: TaskKind, first_row: Option<&csv::StringRecord>) -> GluePlan {
    use Col::{Index, Name};
    let named = |texts: Vec<&'static str>, label: &'static str| GluePlan {
        texts: texts.into_iter().map(Name).collect(),
        label: Name(label),
        has_header: true,
    };
    match kind {
        TaskKind::Sst2 => named(vec!["sentence"], "label"),
        TaskKind::Cola => {
            // Train/dev: no header (`source label star sentence`); test: `index sentence`.
            let is_header = first_row.and_then(|r| r.get(0)) == Some("index");
            if is_header {
                named(vec!["sentence"], "label")
            } else {
                GluePlan {
                    texts: vec![Index(3)],
                    label: Index(1),
                    has_header: false,
                }
            }
        }
        TaskKind::Mrpc => named(vec!["#1 String", "#2 String"], "Quality"),
        TaskKind::Stsb => named(vec!["sentence1", "sentence2"], "score"),
        TaskKind::Qqp => named(vec!["question1", "question2"], "is_duplicate"),
        TaskKind::Mnli => named(vec!["sentence1", "sentence2"], "gold_label"),
        TaskKind::Qnli => named(vec!["question", "sentence"], "label"),
        TaskKind::Rte => named(vec!["sentence1", "sentence2"], "label"),
        // SuperGLUE tasks never reach here.
        _ => named(vec![], "label"),
    }
}

fn load_glue(spec: &TaskSpec, path: &Path, role: &str) -> Result<Vec<Example>> {
    let rows = reader::read_delimited(path, role, b'\t', false)?;
    let plan = glue_plan(spec.kind, rows.first().map(|r| &r.cells));
    let (header, data) = if plan.has_header {
        match rows.split_first() {
            Some((h, rest)) => (Some(h), rest),
            None => (None, &rows[..]),
        }
    } else {
        (None, &rows[..])
    };
    let header_names: Vec<String> = header
        .map(|h| h.cells.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let find = |col: Col| -> Option<usize> {
        match col {
            Col::Index(i) => Some(i),
            Col::Name(n) => header_names.iter().position(|h| h == n),
        }
    };
    let mut text_idx = Vec::with_capacity(plan.texts.len());
    for col in &plan.texts {
        match find(*col) {
            Some(i) => text_idx.push(i),
            None => {
                let Col::Name(name) = col else { unreachable!() };
                return Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    line: header.map(|h| h.line),
                    column: name.to_string(),
                    available: header_names.clone(),
                });
            }
        }
    }
    // No label column: an unlabelled (test) file.
    let label_idx = find(plan.label);

    let mut out = Vec::with_capacity(data.len());
    for row in data {
        let mut fields = Vec::with_capacity(text_idx.len());
        for (name, &i) in spec.fields.iter().zip(&text_idx) {
            fields.push((name.to_string(), row.cell(i, path, "tab")?.to_string()));
        }
        let label = match label_idx {
            None => Target::None,
            Some(i) => {
                let raw = row.cell(i, path, "tab")?;
                if spec.is_regression {
                    reader::parse_score(raw, path, row.line)?
                } else {
                    reader::parse_class(raw, spec.label_names, path, row.line)?
                }
            }
        };
        out.push(Example::new(fields, label));
    }
    Ok(out)
}

fn load_superglue(spec: &TaskSpec, path: &Path, role: &str) -> Result<Vec<Example>> {
    let rows = reader::read_jsonl(path, role)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let ctx = JsonCtx {
            path,
            line: row.line,
        };
        let obj = &row.obj;
        match spec.kind {
            TaskKind::Multirc => multirc_examples(spec, ctx, obj, &mut out)?,
            TaskKind::Wsc => {
                let text = ctx.get_str(obj, "text")?;
                let target = ctx.get_object(obj, "target")?;
                let span1 = ctx.get_str(target, "span1_text")?;
                let span2 = ctx.get_str(target, "span2_text")?;
                let idx1 = target.get("span1_index").and_then(Value::as_u64);
                let idx2 = target.get("span2_index").and_then(Value::as_u64);
                let marked = match (idx1, idx2) {
                    (Some(i1), Some(i2)) => mark_wsc(text, span1, i1 as usize, span2, i2 as usize),
                    _ => text.to_string(),
                };
                let fields = vec![
                    ("text".to_string(), marked),
                    (
                        "reference".to_string(),
                        format!("{span2} refers to {span1}"),
                    ),
                ];
                out.push(Example::new(
                    fields,
                    json_label(spec, ctx, obj.get("label"))?,
                ));
            }
            _ => {
                // BoolQ, CB, WiC: fields are top-level string keys named like the template.
                let mut fields = Vec::with_capacity(spec.fields.len());
                for name in spec.fields {
                    fields.push((name.to_string(), ctx.get_str(obj, name)?.to_string()));
                }
                out.push(Example::new(
                    fields,
                    json_label(spec, ctx, obj.get("label"))?,
                ));
            }
        }
    }
    Ok(out)
}

/// A SuperGLUE label: absent/null → unlabelled; bool → 0/1; string → label name or id;
/// integer → id.
fn json_label(spec: &TaskSpec, ctx: JsonCtx<'_>, value: Option<&Value>) -> Result<Target> {
    match value {
        None | Some(Value::Null) => Ok(Target::None),
        Some(Value::Bool(b)) => Ok(Target::Class(usize::from(*b))),
        Some(Value::String(s)) => reader::parse_class(s, spec.label_names, ctx.path, ctx.line),
        Some(Value::Number(n)) => {
            reader::parse_class(&n.to_string(), spec.label_names, ctx.path, ctx.line)
        }
        Some(other) => Err(ctx.parse_error(format!(
            "label should be a boolean, string or integer, found {}",
            reader::json_kind(other)
        ))),
    }
}

fn json_id(v: Option<&Value>, fallback: usize) -> String {
    v.and_then(reader::json_scalar_text)
        .unwrap_or_else(|| fallback.to_string())
}

fn multirc_examples(
    spec: &TaskSpec,
    ctx: JsonCtx<'_>,
    obj: &serde_json::Map<String, Value>,
    out: &mut Vec<Example>,
) -> Result<()> {
    let passage_id = json_id(obj.get("idx"), ctx.line as usize);
    let passage = ctx.get_object(obj, "passage")?;
    let paragraph = ctx.get_str(passage, "text")?;
    for (qi, q) in ctx.get_array(passage, "questions")?.iter().enumerate() {
        let q = q
            .as_object()
            .ok_or_else(|| ctx.parse_error(format!("passage.questions[{qi}] is not an object")))?;
        let question = ctx.get_str(q, "question")?;
        let group = format!("{passage_id}-{}", json_id(q.get("idx"), qi));
        for (ai, a) in ctx.get_array(q, "answers")?.iter().enumerate() {
            let a = a.as_object().ok_or_else(|| {
                ctx.parse_error(format!(
                    "passage.questions[{qi}].answers[{ai}] is not an object"
                ))
            })?;
            let answer = ctx.get_str(a, "text")?;
            let fields = vec![
                ("question".to_string(), question.to_string()),
                ("answer".to_string(), answer.to_string()),
                ("paragraph".to_string(), paragraph.to_string()),
            ];
            let label = json_label(spec, ctx, a.get("label"))?;
            out.push(Example::new(fields, label).with_group(group.clone()));
        }
    }
    Ok(())
}

/// T5's WSC span marking: `*` around span 1, then `#` around span 2 (its word index shifted
/// by the two marker words when span 1 comes first). A span not found at its index is left
/// unmarked.
pub(crate) fn mark_wsc(text: &str, span1: &str, idx1: usize, span2: &str, idx2: usize) -> String {
    let marked = mark_span(text, span1, idx1, '*');
    let shift = if idx1 < idx2 && marked != text { 2 } else { 0 };
    mark_span(&marked, span2, idx2 + shift, '#')
}

/// Emulates `re.sub(r'^((?:\S+\s){N})(W)', r'\1M \2 M', text)`: skip `n` words, each made of
/// non-space characters followed by exactly one whitespace character, then require `span`.
fn mark_span(text: &str, span: &str, n: usize, mark: char) -> String {
    let mut pos = 0;
    for _ in 0..n {
        let rest = &text[pos..];
        let word_len = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map_or(rest.len(), |(i, _)| i);
        if word_len == 0 {
            return text.to_string();
        }
        pos += word_len;
        match text[pos..].chars().next() {
            Some(c) if c.is_whitespace() => pos += c.len_utf8(),
            _ => return text.to_string(),
        }
    }
    if span.is_empty() || !text[pos..].starts_with(span) {
        return text.to_string();
    }
    let end = pos + span.len();
    format!("{}{mark} {span} {mark}{}", &text[..pos], &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wsc_marking_matches_t5() {
        // From WSC train line 1: span1 "Mark" at word 0, span2 "He" at word 13.
        let text = "Mark told Pete many lies about himself, which Pete included in his book. He should have been more skeptical.";
        assert_eq!(
            mark_wsc(text, "Mark", 0, "He", 13),
            "* Mark * told Pete many lies about himself, which Pete included in his book. # He # should have been more skeptical."
        );
        // Span 2 before span 1: no shift.
        assert_eq!(mark_wsc("a b c", "c", 2, "a", 0), "# a # b * c *");
        // Wrong index: unmarked.
        assert_eq!(mark_wsc("a b c", "x", 1, "y", 2), "a b c");
        // Double spaces break the T5 regex too.
        assert_eq!(mark_span("a  b", "b", 1, '*'), "a  b");
    }
}
