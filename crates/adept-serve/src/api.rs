//! The HTTP API's bodies: reading a predict request against a bundle's text fields, and the
//! JSON error every refusal carries.

use adept_bundle::{BundleManifest, InputTemplate};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A refusal: status and a message that says what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds after which a retry may succeed (503).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "status": self.status.as_u16(), "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// A request body as a JSON object: a 400 when it is not JSON, a 422 when it is JSON of another
/// kind; both messages end with `how` (what the route takes).
pub fn json_object(body: &[u8], how: &str) -> Result<serde_json::Map<String, Value>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON ({e}); {how}"),
        )
    })?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(ApiError::unprocessable(format!(
            "the body is a JSON {}, not an object; {how}",
            kind(&other)
        ))),
    }
}

/// A 413 when a request holds more than `max_inputs` items (`what`: "inputs", "prompts").
pub fn check_count(n: usize, max_inputs: usize, what: &str) -> Result<(), ApiError> {
    if n > max_inputs {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{n} {what} in one request; this server takes at most {max_inputs} \
                 (--max-inputs): split the request"
            ),
        ));
    }
    Ok(())
}

/// The texts of a predict request body, checked against the bundle's fields:
///
/// ```json
/// {"inputs": ["a gem of a film", "dull"]}                       // single-text tasks
/// {"inputs": [["The cat sat.", "A cat was sitting."]]}          // pair tasks: [a, b]
/// {"inputs": [{"sentence1": "The cat sat.", "sentence2": "…"}]} // the bundle's field names
/// {"inputs": "one text"}                                        // one input
/// ```
pub fn read_inputs(
    body: &[u8],
    m: &InputSpec<'_>,
    max_inputs: usize,
) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let mut obj = json_object(body, "send {\"inputs\": [\"a text\", …]}")?;
    let inputs = obj.remove("inputs").ok_or_else(|| {
        ApiError::unprocessable(format!(
            "the body has no \"inputs\" (it has {:?}); send {{\"inputs\": [\"a text\", …]}}",
            obj.keys().collect::<Vec<_>>()
        ))
    })?;
    if let Some(k) = obj.keys().next() {
        return Err(ApiError::unprocessable(format!(
            "unknown field {k:?} in the body: a predict request holds only \"inputs\""
        )));
    }
    let list = match inputs {
        Value::Array(list) => list,
        one => vec![one],
    };
    if list.is_empty() {
        return Err(ApiError::unprocessable(
            "\"inputs\" is empty: send at least one input",
        ));
    }
    check_count(list.len(), max_inputs, "inputs")?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            one_input(v, m).map_err(|why| ApiError::unprocessable(format!("input {i}: {why}")))
        })
        .collect()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a bundle reads: its task's name, text fields and how they become the tokenizer's input.
#[derive(Clone, Copy, Debug)]
pub struct InputSpec<'a> {
    pub task: &'a str,
    pub text_fields: &'a [String],
    pub input_template: &'a InputTemplate,
}

impl<'a> InputSpec<'a> {
    pub fn of(m: &'a BundleManifest) -> Self {
        Self {
            task: &m.task,
            text_fields: &m.text_fields,
            input_template: &m.input_template,
        }
    }
}

fn one_input(v: &Value, m: &InputSpec<'_>) -> Result<(String, Option<String>), String> {
    let pair = !m.input_template.segment_b.is_empty();
    let expected = if pair {
        format!(
            "task {} takes a pair of texts: send [\"first\", \"second\"] or an object with the \
             fields {:?}",
            m.task, m.text_fields
        )
    } else {
        format!(
            "task {} takes one text: send a string or an object with the field(s) {:?}",
            m.task, m.text_fields
        )
    };
    match v {
        Value::String(s) if !pair => Ok((s.clone(), None)),
        Value::Array(parts) => {
            let texts = parts
                .iter()
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| format!("an array must hold strings only; {expected}"))?;
            match (pair, texts.as_slice()) {
                (false, [a]) => Ok((a.clone(), None)),
                (true, [a, b]) => Ok((a.clone(), Some(b.clone()))),
                _ => Err(format!("an array of {} texts; {expected}", texts.len())),
            }
        }
        Value::Object(record) => m
            .input_template
            .segments(|name| match record.get(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) if !v.is_null() => Some(v.to_string()),
                _ => None,
            })
            .map_err(|e| format!("{e}; {expected}")),
        other => Err(format!("a {}; {expected}", kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str, fields: &[&str]) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let fields: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        let template = InputTemplate::from_fields(&fields);
        let spec = InputSpec {
            task: "t",
            text_fields: &fields,
            input_template: &template,
        };
        read_inputs(body.as_bytes(), &spec, 4)
    }

    #[test]
    fn every_documented_form_reads_as_the_same_texts() {
        let one = ["sentence"];
        let want = vec![("a".to_string(), None), ("b".to_string(), None)];
        assert_eq!(read(r#"{"inputs": ["a", "b"]}"#, &one).unwrap(), want);
        assert_eq!(
            read(r#"{"inputs": [["a"], {"sentence": "b"}]}"#, &one).unwrap(),
            want
        );
        assert_eq!(read(r#"{"inputs": "a"}"#, &one).unwrap(), want[..1]);
        let two = ["sentence1", "sentence2"];
        let pair = vec![("a".to_string(), Some("b".to_string()))];
        assert_eq!(read(r#"{"inputs": [["a", "b"]]}"#, &two).unwrap(), pair);
        assert_eq!(
            read(r#"{"inputs": {"sentence1": "a", "sentence2": "b"}}"#, &two).unwrap(),
            pair
        );
    }

    #[test]
    fn bad_bodies_get_a_status_and_a_message_naming_the_problem() {
        let cases: [(&str, &[&str], StatusCode, &str); 10] = [
            ("not json", &["s"], StatusCode::BAD_REQUEST, "not JSON"),
            (
                "[1]",
                &["s"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "JSON array, not an object",
            ),
            (
                r#"{"texts": []}"#,
                &["s"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "no \"inputs\"",
            ),
            (
                r#"{"inputs": ["a"], "x": 1}"#,
                &["s"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown field \"x\"",
            ),
            (
                r#"{"inputs": []}"#,
                &["s"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty",
            ),
            (
                r#"{"inputs": ["a","b","c","d","e"]}"#,
                &["s"],
                StatusCode::PAYLOAD_TOO_LARGE,
                "at most 4",
            ),
            (
                r#"{"inputs": ["a", 3]}"#,
                &["s"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "input 1: a number",
            ),
            (
                r#"{"inputs": ["a"]}"#,
                &["s1", "s2"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "takes a pair",
            ),
            (
                r#"{"inputs": [["a", "b"]]}"#,
                &["s"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "array of 2 texts",
            ),
            (
                r#"{"inputs": [{"s1": "a"}]}"#,
                &["s1", "s2"],
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing text field \"s2\"",
            ),
        ];
        for (body, fields, status, says) in cases {
            let e = read(body, fields).unwrap_err();
            assert_eq!(e.status, status, "{body}: {}", e.message);
            assert!(
                e.message.contains(says),
                "{body}: {:?} lacks {says:?}",
                e.message
            );
        }
    }
}
