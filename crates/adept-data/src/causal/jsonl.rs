//! Custom prompt → completion files: JSON lines `{"prompt": "…", "completion": "…"}`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DataError, Result};
use crate::reader::{json_kind, json_lookup, require_file};

use super::LmExample;

/// Which keys hold the prompt and the completion (`--prompt-field` / `--completion-field`).
/// A key with dots that is not present verbatim is followed into nested objects (`meta.input`),
/// as in [`crate::custom`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptCompletionSpec {
    pub prompt_field: String,
    pub completion_field: String,
}

impl Default for PromptCompletionSpec {
    /// `prompt` and `completion`.
    fn default() -> Self {
        Self {
            prompt_field: "prompt".into(),
            completion_field: "completion".into(),
        }
    }
}

/// Reads a JSONL file of prompt/completion objects into [`LmExample`]s (no class, no score), in
/// file order.
///
/// Rules, each violation an error naming the file and the 1-based line:
/// * every non-blank line is one JSON object (`invalid JSON: …`, `expected a JSON object`);
/// * both fields present ([`DataError::MissingColumn`], listing the keys the line has) and
///   strings (`field `completion` should be a string, found a number`);
/// * the completion is not empty or whitespace only (there would be nothing to learn); the
///   prompt may be empty;
/// * the bytes are UTF-8 (`invalid UTF-8 …` with the line).
///
/// Lines may end in `\n` or `\r\n`; blank lines are skipped; a UTF-8 byte-order mark at the
/// start is ignored. Texts are kept verbatim (no trimming: a completion's leading space
/// matters to the tokenizer). An empty file is [`DataError::Empty`].
pub fn load_prompt_completion(path: &Path, spec: &PromptCompletionSpec) -> Result<Vec<LmExample>> {
    require_file(path, "prompt/completion")?;
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let err = |line: u64, message: String| DataError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if i == 0 {
            raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw)
        } else {
            raw
        };
        let text = std::str::from_utf8(raw).map_err(|e| {
            err(
                line,
                format!(
                    "invalid UTF-8 at byte {} of the line ({e}); save the file as UTF-8",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| err(line, format!("invalid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(err(
                line,
                format!("expected a JSON object, found {}", json_kind(&value)),
            ));
        };
        let get = |key: &str| -> Result<String> {
            let v = json_lookup(&obj, key).ok_or_else(|| DataError::MissingColumn {
                path: path.to_path_buf(),
                line: Some(line),
                column: key.to_string(),
                available: obj.keys().cloned().collect(),
            })?;
            v.as_str().map(str::to_string).ok_or_else(|| {
                err(
                    line,
                    format!("field `{key}` should be a string, found {}", json_kind(v)),
                )
            })
        };
        let prompt = get(&spec.prompt_field)?;
        let completion = get(&spec.completion_field)?;
        if completion.trim().is_empty() {
            return Err(err(
                line,
                format!(
                    "empty completion (field `{}`): there is nothing to train on; remove the line \
                     or fill it in",
                    spec.completion_field
                ),
            ));
        }
        out.push(LmExample::new(prompt, completion));
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}
