//! Tasks as prompt → completion pairs for decoder-only (causal) language models such as
//! SmolLM2-135M-Instruct.
//!
//! # Design
//!
//! A causal LM is trained teacher-forced on `prompt ‖ completion` with the loss on the
//! completion tokens only, and evaluated either by **label-word log-likelihood** (score every
//! label word as the completion, take the argmax) or by **generation** (decode greedily, map the
//! text back to a label). Everything here is plain text; tokenisation, the token boundary and the
//! tensors are `adept_train::lm_batch`'s.
//!
//! * [`LmExample`] is the unit: a prompt, a completion, and the gold class index or score.
//! * [`Verbalizer`] turns a built-in GLUE/SuperGLUE [`Example`](crate::Example) (loaded by the
//!   existing loaders and split rules) into an [`LmExample`]: a prompt template with `{field}`
//!   placeholders and one label word per class, taken from a table ([`Verbalizer::for_task`]),
//!   or given by the caller ([`Verbalizer::new`], [`Verbalizer::for_custom`]). STS-B's
//!   completion is the score with one decimal (`" 3.8"`).
//! * [`load_prompt_completion`] reads custom JSONL files of `{"prompt": …, "completion": …}`
//!   (field names configurable), with file:line errors in the style of [`crate::custom`].
//! * [`ChatTemplate`] renders Hugging Face chat templates (Jinja, via `minijinja`) so a prompt
//!   becomes the user turn plus the generation prompt and the completion the assistant's reply
//!   plus the template's end-of-turn marker.
//! * [`parse_generated`] / [`score_generated`] map generated strings back to classes or scores
//!   and score them with the crate's [`metrics`](crate::metrics).
//!
//! Label words carry their leading space (`" positive"`): a byte-level BPE (GPT-2 style)
//! pre-tokenizer starts a new word at a space, so prompt and completion tokenised separately
//! give the same tokens as the concatenation, and the prompt/completion boundary falls between
//! tokens.

mod chat;
mod generated;
mod jsonl;
mod verbalizer;

pub use chat::{ChatError, ChatMessage, ChatTemplate};
pub use generated::{exact_match, parse_generated, parse_generated_score, score_generated};
pub use jsonl::{load_prompt_completion, PromptCompletionSpec};
pub use verbalizer::{Verbalizer, VERBALIZERS};

use serde::{Deserialize, Serialize};

/// One prompt → completion pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmExample {
    /// The text the model conditions on (no loss).
    pub prompt: String,
    /// The text the model is trained to produce (loss on its tokens); for classification the
    /// gold label word; empty for unlabelled examples.
    pub completion: String,
    /// Gold class index (into the verbaliser's label words), for classification.
    pub label: Option<usize>,
    /// Gold score, for regression (STS-B).
    pub target: Option<f32>,
}

impl LmExample {
    /// A pair without a class or score (custom prompt/completion data).
    pub fn new(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            completion: completion.into(),
            label: None,
            target: None,
        }
    }
}
