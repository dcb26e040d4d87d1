//! Low-level file reading shared by the task loaders and custom datasets: delimited rows with
//! their line numbers, JSON lines, and label/score parsing with file:line errors.

use std::cell::RefCell;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::error::{DataError, Result};
use crate::example::Target;

/// One delimited record and the (1-based) line it starts on.
pub(crate) struct Row {
    pub line: u64,
    pub cells: csv::StringRecord,
}

impl Row {
    /// Cell `idx`, or a parse error saying how many columns the row has.
    pub fn cell(&self, idx: usize, path: &Path, sep: &str) -> Result<&str> {
        self.cells.get(idx).ok_or_else(|| DataError::Parse {
            path: path.to_path_buf(),
            line: self.line,
            message: format!(
                "expected at least {} {sep}-separated columns, found {}",
                idx + 1,
                self.cells.len()
            ),
        })
    }
}

/// Fails with [`DataError::MissingFile`] when `path` is not a file.
pub(crate) fn require_file(path: &Path, role: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(DataError::MissingFile {
            path: path.to_path_buf(),
            role: role.to_string(),
        })
    }
}

/// Reads every record (the header line too) of a delimited file. `quoting: false` treats `"`
/// as an ordinary character (GLUE TSVs); rows may differ in length (callers check).
pub(crate) fn read_delimited(
    path: &Path,
    role: &str,
    delimiter: u8,
    quoting: bool,
) -> Result<Vec<Row>> {
    require_file(path, role)?;
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // File lines are counted here from each record's byte offset (the csv crate's own line
    // count is off for CRLF files: it reported the first row after the header as line 1). The
    // file is streamed; only the offsets of its line-end bytes are kept.
    let eols = Rc::new(RefCell::new(Vec::new()));
    let source = EolRecorder {
        inner: std::io::BufReader::new(file),
        offset: 0,
        eols: Rc::clone(&eols),
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(quoting)
        .has_headers(false)
        .flexible(true)
        .from_reader(source);
    let mut lines = LineCounter::new(eols);
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
                // A lone empty line in a TSV is read as one empty cell: skip it.
                if record.len() == 1 && record.get(0).is_some_and(|c| c.trim().is_empty()) {
                    continue;
                }
                rows.push(Row {
                    line,
                    cells: record.clone(),
                });
            }
            Err(e) => return Err(csv_error(path, e, &mut lines)),
        }
    }
    if let Some(first) = rows.first_mut() {
        strip_bom(&mut first.cells);
    }
    Ok(rows)
}

fn strip_bom(record: &mut csv::StringRecord) {
    if record.get(0).is_some_and(|c| c.starts_with('\u{feff}')) {
        let cells: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    c.trim_start_matches('\u{feff}').to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        let pos = record.position().cloned();
        *record = csv::StringRecord::from(cells);
        record.set_position(pos);
    }
}

/// A reader that records the offset of every `\r` and `\n` byte passing through it.
struct EolRecorder<R> {
    inner: R,
    offset: u64,
    eols: Rc<RefCell<Vec<(u64, u8)>>>,
}

impl<R: Read> Read for EolRecorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut eols = self.eols.borrow_mut();
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == b'\n' || b == b'\r' {
                eols.push((self.offset + i as u64, b));
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// 1-based file line of a byte offset, from the recorded line ends; offsets are asked for in
/// increasing order.
struct LineCounter {
    eols: Rc<RefCell<Vec<(u64, u8)>>>,
    /// Line ends before `next` have been counted into `line`.
    next: usize,
    line: u64,
}

impl LineCounter {
    fn new(eols: Rc<RefCell<Vec<(u64, u8)>>>) -> Self {
        LineCounter {
            eols,
            next: 0,
            line: 1,
        }
    }

    /// The line of the first byte at or after `byte` that is not a line end: for a CRLF file
    /// the csv crate starts a record's position at the `\n` of the previous line's end.
    fn line_at(&mut self, byte: u64) -> u64 {
        let eols = self.eols.borrow();
        if self.next > 0 && eols[self.next - 1].0 >= byte {
            // Asked out of order: count again from the start.
            self.next = 0;
            self.line = 1;
        }
        while self.next < eols.len() && eols[self.next].0 < byte {
            self.line += u64::from(eols[self.next].1 == b'\n');
            self.next += 1;
        }
        // Line ends right at `byte` (a run of them) belong before the record.
        let extra: u64 = eols[self.next..]
            .iter()
            .zip(byte..)
            .take_while(|((pos, _), at)| pos == at)
            .map(|((_, b), _)| u64::from(*b == b'\n'))
            .sum();
        self.line + extra
    }
}

fn csv_error(path: &Path, e: csv::Error, lines: &mut LineCounter) -> DataError {
    let line = e.position().map(|p| lines.line_at(p.byte()));
    match (e.into_kind(), line) {
        (csv::ErrorKind::Io(source), _) => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
        (kind, Some(line)) => DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: describe_csv_kind(kind),
        },
        (kind, None) => DataError::Parse {
            path: path.to_path_buf(),
            line: 0,
            message: describe_csv_kind(kind),
        },
    }
}

fn describe_csv_kind(kind: csv::ErrorKind) -> String {
    match kind {
        csv::ErrorKind::Utf8 { err, .. } => format!("invalid UTF-8 ({err})"),
        other => format!("{other:?}"),
    }
}

/// A parsed JSON object and its line.
pub(crate) struct JsonRow {
    pub line: u64,
    pub obj: Map<String, Value>,
}

/// Reads a JSON-lines file; blank lines are skipped, every other line must be a JSON object.
pub(crate) fn read_jsonl(path: &Path, role: &str) -> Result<Vec<JsonRow>> {
    require_file(path, role)?;
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let raw = raw.trim_start_matches('\u{feff}');
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("invalid JSON: {e}"),
        })?;
        match value {
            Value::Object(obj) => rows.push(JsonRow { line, obj }),
            other => {
                return Err(DataError::Parse {
                    path: path.to_path_buf(),
                    line,
                    message: format!("expected a JSON object, found {}", json_kind(&other)),
                })
            }
        }
    }
    Ok(rows)
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Looks up `key` in `obj`; a key with dots (`target.span1_text`) that is not present verbatim
/// is followed through nested objects.
pub(crate) fn json_lookup<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(key) {
        return Some(v);
    }
    let mut parts = key.split('.');
    let mut cur = obj.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// Context for JSON field errors: file and line.
#[derive(Clone, Copy)]
pub(crate) struct JsonCtx<'a> {
    pub path: &'a Path,
    pub line: u64,
}

impl JsonCtx<'_> {
    pub fn missing(&self, key: &str, obj: &Map<String, Value>) -> DataError {
        DataError::MissingColumn {
            path: self.path.to_path_buf(),
            line: Some(self.line),
            column: key.to_string(),
            available: obj.keys().cloned().collect(),
        }
    }

    pub fn parse_error(&self, message: String) -> DataError {
        DataError::Parse {
            path: self.path.to_path_buf(),
            line: self.line,
            message,
        }
    }

    /// `obj[key]` which must exist.
    pub fn get<'v>(&self, obj: &'v Map<String, Value>, key: &str) -> Result<&'v Value> {
        json_lookup(obj, key).ok_or_else(|| self.missing(key, obj))
    }

    /// `obj[key]` which must be a string.
    pub fn get_str<'v>(&self, obj: &'v Map<String, Value>, key: &str) -> Result<&'v str> {
        let v = self.get(obj, key)?;
        v.as_str().ok_or_else(|| {
            self.parse_error(format!(
                "field `{key}` should be a string, found {}",
                json_kind(v)
            ))
        })
    }

    /// `obj[key]` which must be an array.
    pub fn get_array<'v>(&self, obj: &'v Map<String, Value>, key: &str) -> Result<&'v [Value]> {
        let v = self.get(obj, key)?;
        v.as_array().map(Vec::as_slice).ok_or_else(|| {
            self.parse_error(format!(
                "field `{key}` should be an array, found {}",
                json_kind(v)
            ))
        })
    }

    /// `obj[key]` which must be an object.
    pub fn get_object<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
    ) -> Result<&'v Map<String, Value>> {
        let v = self.get(obj, key)?;
        v.as_object().ok_or_else(|| {
            self.parse_error(format!(
                "field `{key}` should be an object, found {}",
                json_kind(v)
            ))
        })
    }
}

/// Renders a scalar JSON value as text (strings verbatim, numbers and booleans as JSON
/// writes them); `None` for null, arrays and objects.
pub(crate) fn json_scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Maps a raw label to a class id of a built-in task: an exact label name, or a decimal id
/// below the number of labels. Boolean-labelled tasks (`["False", "True"]`) also take
/// `true`/`false` in any case.
pub(crate) fn parse_class(raw: &str, names: &[&str], path: &Path, line: u64) -> Result<Target> {
    let raw = raw.trim();
    if let Some(i) = names.iter().position(|n| *n == raw) {
        return Ok(Target::Class(i));
    }
    if names == ["False", "True"] {
        if raw.eq_ignore_ascii_case("false") {
            return Ok(Target::Class(0));
        }
        if raw.eq_ignore_ascii_case("true") {
            return Ok(Target::Class(1));
        }
    }
    if let Ok(i) = raw.parse::<usize>() {
        if i < names.len() {
            return Ok(Target::Class(i));
        }
    }
    Err(DataError::UnknownLabel {
        path: path.to_path_buf(),
        line,
        label: raw.to_string(),
        known: names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} ({i})"))
            .collect(),
    })
}

/// Parses a regression score (finite float).
pub(crate) fn parse_score(raw: &str, path: &Path, line: u64) -> Result<Target> {
    match raw.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(Target::Score(v)),
        _ => Err(DataError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("score `{raw}` is not a finite number"),
        }),
    }
}
