//! Hugging Face chat templates (Jinja) rendered with `minijinja`, set up like transformers'
//! `apply_chat_template`.
//!
//! transformers renders `tokenizer.chat_template` in a sandboxed Jinja2 environment with
//! `trim_blocks` and `lstrip_blocks` on, the `loopcontrols` extension (`break`/`continue`), a
//! `raise_exception(message)` global, and `messages`, `add_generation_prompt`, and the
//! tokenizer's special tokens (`bos_token`, `eos_token`) as variables. [`ChatTemplate`] does the
//! same with minijinja: the same whitespace rules, loop variables (`loop.first`, `loop.last`,
//! `loop.index0`, …), `raise_exception` (its message becomes a [`ChatError::Render`]), Python
//! string methods (`.strip()`, `.startswith()`, `.split()`, … via `minijinja-contrib`'s
//! `pycompat`), `tojson`, and a trailing newline dropped like Jinja2's default.
//! Checked against transformers on SmolLM2-135M-Instruct's template and two others
//! (`tests/reference/chat_template_reference.py`).
//!
//! Not provided: `strftime_now` (templates that print today's date fail with an unknown
//! function error), and `tojson` writes minijinja's JSON (compact separators, HTML-safe escapes)
//! rather than Python's `json.dumps` (`", "`, `": "`): tool-calling templates may differ.
//!
//! # Prompt and completion
//!
//! For an [`LmExample`] `(prompt, completion)` ([`ChatTemplate::apply`]):
//! * the **prompt** is the rendering of `[{"role": "user", "content": prompt}]` (after an
//!   optional system message) with `add_generation_prompt = true`;
//! * the **completion** is what the rendering of the conversation with the assistant's reply
//!   `{"role": "assistant", "content": completion}` (and no generation prompt) adds after that
//!   prompt, up to and including the template's **end-of-turn** text (SmolLM2: `<|im_end|>`),
//!   without the whitespace that only separates turns (SmolLM2: the `\n` after `<|im_end|>`).
//!
//! The end-of-turn text is derived once, in [`ChatTemplate::new`], by rendering with and
//! without a probe reply: what follows the probe is the end of the turn; its trailing
//! whitespace is the gap between turns. The reply's leading whitespace is dropped
//! (`" positive"` → `"positive"`): in a chat turn the reply starts its own line, and the
//! leading space of plain-text label words has no purpose there.

use std::path::Path;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, Value};

use super::LmExample;

/// Errors from loading or rendering a chat template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    /// The template does not compile.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// Rendering failed, e.g. the template's `raise_exception` fired.
    #[error("chat template failed to render: {0}")]
    Render(String),
    /// The template is not usable for prompt → completion training.
    #[error("chat template unusable for prompt/completion pairs: {0}")]
    Shape(String),
    /// A `tokenizer_config.json` without a usable template, or unreadable.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template with its special tokens and its derived end-of-turn text.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    end_of_turn: String,
    turn_gap: String,
}

const NAME: &str = "chat_template";
/// A reply no template alters (no surrounding whitespace, no markup).
const PROBE: &str = "ADEPTPROBEREPLY";

impl ChatTemplate {
    /// Compiles `source` (a `tokenizer.chat_template` string) with the tokens the template may
    /// print as `bos_token` / `eos_token` (undefined when `None`), and derives the end-of-turn
    /// text (see the module docs). Fails when the template does not compile, raises on a
    /// single user turn, or does not render a user turn's generation prompt as a prefix of
    /// the same conversation with the reply.
    pub fn new(
        source: &str,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| ChatError::Syntax(e.to_string()))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(|e| ChatError::Syntax(describe(&e)))?;
        let mut t = Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.map(str::to_string),
            eos_token: eos_token.map(str::to_string),
            end_of_turn: String::new(),
            turn_gap: String::new(),
        };
        let user = [ChatMessage::new("user", "Hello")];
        let rest = t.reply_rest(&user, PROBE)?;
        let at = rest.find(PROBE).ok_or_else(|| {
            ChatError::Shape(format!(
                "the assistant's reply does not appear verbatim in the rendering ({rest:?})"
            ))
        })?;
        let after = &rest[at + PROBE.len()..];
        let end = after.trim_end();
        t.turn_gap = after[end.len()..].to_string();
        t.end_of_turn = end.to_string();
        Ok(t)
    }

    /// The template of a Hugging Face `tokenizer_config.json`: its `chat_template` (a string,
    /// or a list of `{"name", "template"}` from which `default` is taken) and its `bos_token` /
    /// `eos_token` (strings or `{"content": …}` objects).
    pub fn from_tokenizer_config(path: &Path) -> Result<Self, ChatError> {
        let config_err = |message: String| ChatError::Config {
            path: path.display().to_string(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| config_err(format!("cannot read: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| config_err(format!("invalid JSON: {e}")))?;
        let template = match json.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .ok_or_else(|| {
                    config_err("`chat_template` is a list without a `default` entry".into())
                })?
                .to_string(),
            _ => {
                return Err(config_err(
                    "no `chat_template` string: this tokenizer has no chat template; train \
                     without one (plain prompts)"
                        .into(),
                ))
            }
        };
        let token = |key: &str| -> Option<String> {
            match json.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                v => v.get("content")?.as_str().map(str::to_string),
            }
        };
        let (bos, eos) = (token("bos_token"), token("eos_token"));
        Self::new(&template, bos.as_deref(), eos.as_deref())
    }

    /// The template's source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The text that closes an assistant turn (SmolLM2: `<|im_end|>`; `""` when none).
    pub fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }

    /// Renders a conversation, as `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=…)` does.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([
                    ("role", Value::from(m.role.as_str())),
                    ("content", Value::from(m.content.as_str())),
                ])
            })
            .collect();
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", Value::from(msgs)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
        ];
        if let Some(b) = &self.bos_token {
            ctx.push(("bos_token", Value::from(b.as_str())));
        }
        if let Some(e) = &self.eos_token {
            ctx.push(("eos_token", Value::from(e.as_str())));
        }
        let tmpl = self
            .env
            .get_template(NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        tmpl.render(Value::from_pairs(ctx))
            .map_err(|e| ChatError::Render(describe(&e)))
    }

    /// The prompt for a user message: the conversation (an optional system message, then the
    /// user's) with the generation prompt.
    pub fn prompt(&self, system: Option<&str>, user: &str) -> Result<String, ChatError> {
        self.render(&conversation(system, user), true)
    }

    /// The assistant's reply as the template renders it after [`prompt`](Self::prompt):
    /// `content` (leading whitespace dropped), then the end-of-turn text when `end_turn`.
    /// With `end_turn = false` this is the label word to score: the model's next tokens
    /// before it closes its turn.
    pub fn reply(
        &self,
        system: Option<&str>,
        user: &str,
        content: &str,
        end_turn: bool,
    ) -> Result<String, ChatError> {
        let rest = self.reply_rest(&conversation(system, user), content.trim_start())?;
        let tail = format!("{}{}", self.end_of_turn, self.turn_gap);
        let body = rest.strip_suffix(&tail).ok_or_else(|| {
            ChatError::Shape(format!(
                "the reply {content:?} rendered as {rest:?}, which does not end with the \
                 template's end of turn {tail:?}"
            ))
        })?;
        Ok(if end_turn {
            format!("{body}{}", self.end_of_turn)
        } else {
            body.to_string()
        })
    }

    /// The chat form of a pair: prompt = user turn + generation prompt, completion = reply +
    /// end of turn (see the module docs); an empty completion (unlabelled) stays empty. Class
    /// and score are kept.
    pub fn apply(&self, example: &LmExample, system: Option<&str>) -> Result<LmExample, ChatError> {
        let prompt = self.prompt(system, &example.prompt)?;
        let completion = if example.completion.is_empty() {
            String::new()
        } else {
            self.reply(system, &example.prompt, &example.completion, true)?
        };
        Ok(LmExample {
            prompt,
            completion,
            label: example.label,
            target: example.target,
        })
    }

    /// Label words as chat replies without the end of turn (what label-word scoring sums the
    /// log-probabilities of after the chat prompt).
    pub fn label_words(&self, words: &[String]) -> Result<Vec<String>, ChatError> {
        words
            .iter()
            .map(|w| self.reply(None, "Hello", w, false))
            .collect()
    }

    /// What the conversation with the reply `content` renders after the conversation's
    /// generation prompt.
    fn reply_rest(&self, messages: &[ChatMessage], content: &str) -> Result<String, ChatError> {
        let prompt = self.render(messages, true)?;
        let mut with_reply = messages.to_vec();
        with_reply.push(ChatMessage::new("assistant", content));
        let full = self.render(&with_reply, false)?;
        full.strip_prefix(&prompt)
            .map(str::to_string)
            .ok_or_else(|| {
                ChatError::Shape(format!(
                    "the prompt with the generation prompt ({prompt:?}) is not a prefix of the \
                     conversation with the reply ({full:?}); the completion boundary would be \
                     undefined"
                ))
            })
    }
}

fn conversation(system: Option<&str>, user: &str) -> Vec<ChatMessage> {
    let mut m = Vec::with_capacity(2);
    if let Some(s) = system {
        m.push(ChatMessage::new("system", s));
    }
    m.push(ChatMessage::new("user", user));
    m
}

/// minijinja's error with its detail (the `raise_exception` message, the line).
fn describe(e: &minijinja::Error) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.to_string(),
    };
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}
