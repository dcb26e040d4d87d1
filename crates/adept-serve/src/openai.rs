//! OpenAI-compatible routes over the generation models: `POST /v1/completions` and
//! `POST /v1/chat/completions`, what the `openai` client libraries and most LLM tools speak.
//! They are answered by the same queues and workers as `/v1/models/{name}/generate`; this
//! module only reads their requests and writes their answers and stream chunks.
//!
//! Supported: `model` (a served name; optional when one model is served), `prompt` (a string
//! or a list) or `messages` (roles and text, through the bundle's chat template),
//! `max_tokens` / `max_completion_tokens` (default 16, as OpenAI), `temperature` (default 1:
//! sampling; 0: greedy), `top_p`, `stop` (a string or a list), `seed`, `stream`, and the
//! common extensions `top_k` and `repetition_penalty`. Refused with a 422 that says so: `n` or
//! `best_of` above 1, `logprobs`, `echo`, `suffix`, non-zero `presence_penalty` /
//! `frequency_penalty`, `logit_bias`, tools and response formats. Unknown fields are refused
//! too (as OpenAI's API does).

use crate::api::ApiError;
use crate::generation::{GenKind, GenModel, GenOutput, GenParams, GenRequest};
use adept_bundle::generate::{FinishReason, GenerationConfig};
use axum::response::sse::Event;
use serde_json::{json, Map, Value};

/// How a generate request was asked, so its answer comes back in the same shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/models/{name}/generate`: adept's own (`generations`, `token` / `done` events).
    Native,
    /// `/v1/completions`.
    Completions,
    /// `/v1/chat/completions`.
    Chat,
}

/// The shape of an answer, and (OpenAI) its id and creation time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answering {
    pub shape: Shape,
    pub id: String,
    pub created: u64,
}

impl Answering {
    pub fn native() -> Self {
        Self {
            shape: Shape::Native,
            id: String::new(),
            created: 0,
        }
    }

    /// An OpenAI answer numbered `n` (`cmpl-…` / `chatcmpl-…`).
    pub fn openai(shape: Shape, n: u64) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prefix = if shape == Shape::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        };
        Self {
            id: format!("{prefix}-{created:x}{n:06x}"),
            shape,
            created,
        }
    }

    /// The whole answer of a request that did not stream.
    pub fn answer(&self, model: &str, outs: &[GenOutput]) -> Value {
        match self.shape {
            Shape::Native => {
                let gens: Vec<Value> = outs
                    .iter()
                    .map(|o| {
                        json!({
                            "text": o.text,
                            "finish_reason": o.finish_reason,
                            "prompt_tokens": o.prompt_tokens,
                            "new_tokens": o.token_ids.len(),
                            "token_ids": o.token_ids,
                        })
                    })
                    .collect();
                json!({ "model": model, "generations": gens })
            }
            Shape::Completions | Shape::Chat => {
                let choices: Vec<Value> = outs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        let mut c = json!({
                            "index": i,
                            "logprobs": null,
                            "finish_reason": finish_reason(o.finish_reason),
                        });
                        if self.shape == Shape::Chat {
                            c["message"] = json!({ "role": "assistant", "content": o.text });
                        } else {
                            c["text"] = json!(o.text);
                        }
                        c
                    })
                    .collect();
                let prompt: usize = outs.iter().map(|o| o.prompt_tokens).sum();
                let completion: usize = outs.iter().map(|o| o.token_ids.len()).sum();
                let mut v = self.head(model);
                v["choices"] = json!(choices);
                v["usage"] = json!({
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                });
                v
            }
        }
    }

    /// What a stream starts with: a chat stream tells each choice's role first.
    pub fn start(&self, model: &str, prompts: usize) -> Vec<Event> {
        if self.shape != Shape::Chat {
            return Vec::new();
        }
        (0..prompts)
            .map(|i| {
                self.chunk(
                    model,
                    i,
                    json!({ "role": "assistant", "content": "" }),
                    None,
                )
            })
            .collect()
    }

    /// One piece of prompt `index`'s text.
    pub fn piece(&self, model: &str, index: usize, text: &str) -> Event {
        match self.shape {
            Shape::Native => {
                let body = json!({ "index": index, "text": text });
                Event::default().event("token").data(body.to_string())
            }
            Shape::Completions => self.chunk(model, index, json!(text), None),
            Shape::Chat => self.chunk(model, index, json!({ "content": text }), None),
        }
    }

    /// The events ending a stream whose run answered `outs`.
    pub fn done(&self, model: &str, outs: &[GenOutput]) -> Vec<Event> {
        match self.shape {
            Shape::Native => {
                let body = self.answer(model, outs);
                vec![Event::default().event("done").data(body.to_string())]
            }
            Shape::Completions | Shape::Chat => {
                let empty = if self.shape == Shape::Chat {
                    json!({})
                } else {
                    json!("")
                };
                let mut events: Vec<Event> = outs
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        let reason = finish_reason(o.finish_reason);
                        self.chunk(model, i, empty.clone(), Some(reason))
                    })
                    .collect();
                events.push(Event::default().data("[DONE]"));
                events
            }
        }
    }

    /// The event ending a stream whose run failed.
    pub fn error(&self, message: &str) -> Event {
        match self.shape {
            Shape::Native => {
                let body = json!({ "error": { "status": 500, "message": message } });
                Event::default().event("error").data(body.to_string())
            }
            Shape::Completions | Shape::Chat => {
                let body = json!({ "error": {
                    "message": message, "type": "server_error", "param": null, "code": null
                } });
                Event::default().data(body.to_string())
            }
        }
    }

    fn head(&self, model: &str) -> Value {
        let object = match (&self.shape, self.shape == Shape::Chat) {
            (_, true) => "chat.completion",
            _ => "text_completion",
        };
        json!({ "id": self.id, "object": object, "created": self.created, "model": model })
    }

    /// A stream chunk for choice `index`: `text` is the completion's piece (a string) or the
    /// chat delta (an object).
    fn chunk(&self, model: &str, index: usize, text: Value, finish: Option<&str>) -> Event {
        let mut v = self.head(model);
        let mut choice = json!({ "index": index, "logprobs": null, "finish_reason": finish });
        if self.shape == Shape::Chat {
            v["object"] = json!("chat.completion.chunk");
            choice["delta"] = text;
        } else {
            choice["text"] = text;
        }
        v["choices"] = json!([choice]);
        Event::default().data(v.to_string())
    }
}

/// OpenAI's finish reasons: an EOS or a stop string is `stop`, the token limit `length`.
fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// The `model` a request body names, if it is a JSON object with a string `model`.
pub fn model_field(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("model")?.as_str().map(str::to_owned)
}

fn unprocessable(msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(msg)
}

/// Reads a `/v1/completions` (`chat` false) or `/v1/chat/completions` body for `model`: the
/// prompts (chat: the conversation through the bundle's chat template) and the parameters.
pub fn read_request(
    body: &[u8],
    model: &GenModel,
    chat: bool,
    max_inputs: usize,
    max_new_tokens_limit: usize,
) -> Result<GenRequest, ApiError> {
    let route = if chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let mut obj = crate::api::json_object(body, &format!("{route} takes an OpenAI request"))?;
    let mut take = |k: &str| obj.remove(k).filter(|v| !v.is_null());
    let prompts: Vec<String> = if chat {
        let messages = take("messages").ok_or_else(|| {
            unprocessable(
                "the body has no \"messages\": send [{\"role\": \"user\", \"content\": \"…\"}]",
            )
        })?;
        vec![render_messages(model, &messages)?]
    } else {
        match take("prompt") {
            Some(Value::String(p)) => vec![p],
            Some(Value::Array(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(p) => Ok(p),
                    _ => Err(unprocessable(format!(
                        "prompt {i} is not a string (token-id prompts are not supported)"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(unprocessable(
                    "\"prompt\" must be a string or a list of strings",
                ))
            }
            None => return Err(unprocessable("the body has no \"prompt\"")),
        }
    };
    if prompts.is_empty() {
        return Err(unprocessable("\"prompt\" is empty: send at least one"));
    }
    crate::api::check_count(prompts.len(), max_inputs, "prompts")?;
    let _ = take("model");
    let _ = take("user");
    let _ = take("stream_options");
    let number = |v: &Value, name: &str| {
        v.as_f64()
            .ok_or_else(|| unprocessable(format!("\"{name}\" must be a number")))
    };
    let count = |v: &Value, name: &str| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| unprocessable(format!("\"{name}\" must be a whole number")))
    };
    let max_tokens = match take("max_completion_tokens").or_else(|| take("max_tokens")) {
        Some(v) => Some(count(&v, "max_tokens")?),
        None => None,
    };
    let temperature = match take("temperature") {
        Some(v) => number(&v, "temperature")? as f32,
        None => 1.0,
    };
    // OpenAI's range; a negative value is not "greedy", it is a mistake.
    if !(0.0..=2.0).contains(&temperature) {
        return Err(unprocessable(format!(
            "\"temperature\": {temperature} is outside 0..2 (0: greedy decoding)"
        )));
    }
    let top_p = match take("top_p") {
        Some(v) => number(&v, "top_p")? as f32,
        None => 1.0,
    };
    let top_k = match take("top_k") {
        Some(v) => count(&v, "top_k")?,
        None => 0,
    };
    let repetition_penalty = match take("repetition_penalty") {
        Some(v) => number(&v, "repetition_penalty")? as f32,
        None => 1.0,
    };
    let seed = match take("seed") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| unprocessable("\"seed\" must be a whole number ≥ 0"))?,
        None => 0,
    };
    let stop: Vec<String> = match take("stop") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(unprocessable(
                    "\"stop\" must be a string or a list of strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(unprocessable(
                "\"stop\" must be a string or a list of strings",
            ))
        }
        None => Vec::new(),
    };
    let stream = match take("stream") {
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(unprocessable("\"stream\" must be true or false")),
        None => false,
    };
    // Accepted at their neutral values only.
    for (name, neutral) in [
        ("n", json!(1)),
        ("best_of", json!(1)),
        ("presence_penalty", json!(0)),
        ("frequency_penalty", json!(0)),
        ("logprobs", json!(false)),
        ("echo", json!(false)),
    ] {
        if let Some(v) = take(name) {
            let same = v == neutral || (v.as_f64().is_some() && v.as_f64() == neutral.as_f64());
            if !same {
                return Err(unprocessable(format!(
                    "\"{name}\": {v} is not supported by this server (only {neutral})"
                )));
            }
        }
    }
    if let Some(k) = obj.keys().next() {
        return Err(unprocessable(format!(
            "\"{k}\" is not supported by this server's {route} (it takes model, {}, max_tokens, \
             temperature, top_p, top_k, repetition_penalty, stop, seed, stream)",
            if chat { "messages" } else { "prompt" }
        )));
    }
    if model.kind == GenKind::Seq2Seq {
        // T5 bundles decode greedily (OpenAI's default temperature is 1: sampling).
        if temperature != 0.0 {
            return Err(unprocessable(
                "T5 bundles decode greedily: send \"temperature\": 0 (sampling is for causal-LM \
                 bundles)",
            ));
        }
        if top_k > 0 || top_p != 1.0 || repetition_penalty != 1.0 || !stop.is_empty() {
            return Err(unprocessable(
                "T5 bundles take only max_tokens and temperature 0 (greedy decoding)",
            ));
        }
    }
    let max_new_tokens = max_tokens.unwrap_or(16.min(max_new_tokens_limit));
    if max_new_tokens > max_new_tokens_limit {
        return Err(unprocessable(format!(
            "max_tokens {max_new_tokens} is above this server's limit of {max_new_tokens_limit} \
             (its --max-new-tokens): ask for fewer"
        )));
    }
    let do_sample = temperature > 0.0;
    let config = GenerationConfig {
        max_new_tokens,
        temperature: if do_sample { temperature } else { 1.0 },
        top_k,
        top_p,
        repetition_penalty,
        seed,
        stop_strings: stop,
        eos_token_ids: Vec::new(),
        do_sample,
    };
    crate::generation::check_config(&config, "send 0 for greedy decoding")?;
    Ok(GenRequest {
        prompts,
        params: GenParams {
            config,
            num_beams: 1,
            length_penalty: 1.0,
        },
        chat_template: false,
        stream,
        default_max_new_tokens: max_tokens.is_none(),
    })
}

/// The conversation of a chat request through the bundle's chat template.
fn render_messages(model: &GenModel, messages: &Value) -> Result<String, ApiError> {
    let list = messages
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| unprocessable("\"messages\" must be a non-empty list"))?;
    let mut turns: Vec<(String, String)> = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let m: &Map<String, Value> = m
            .as_object()
            .ok_or_else(|| unprocessable(format!("message {i} is not an object")))?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .filter(|r| ["system", "developer", "user", "assistant"].contains(r))
            .ok_or_else(|| {
                unprocessable(format!(
                    "message {i} needs a \"role\" of system, user or assistant"
                ))
            })?;
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            // Content parts: text ones are joined; images and audio are not supported.
            Some(Value::Array(parts)) => parts
                .iter()
                .map(
                    |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                        _ => Err(unprocessable(format!(
                            "message {i}: only text content parts are supported"
                        ))),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?
                .join(""),
            _ => {
                return Err(unprocessable(format!(
                    "message {i} needs a \"content\" string"
                )))
            }
        };
        let role = if role == "developer" { "system" } else { role };
        turns.push((role.to_owned(), content));
    }
    let turns: Vec<(&str, &str)> = turns
        .iter()
        .map(|(r, c)| (r.as_str(), c.as_str()))
        .collect();
    model
        .render_chat(&turns)
        .map_err(|e| unprocessable(format!("{e:#}")))
}
