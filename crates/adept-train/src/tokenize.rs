//! Text → token ids with the model's own `tokenizer.json` (special tokens, pair layout, token
//! types), truncated to `max_len` input tokens; the soft prompt is counted separately.
//!
//! The rules live in the candle-free contract crate (`adept_bundle::tokenize`), so that training,
//! `adept infer` (adept-runtime) and the browser (adept-wasm) run the same code.

pub use adept_bundle::tokenize::{
    load_tokenizer, tokenizer_from_json, Encoded, OverLength, TextEncoder,
};
pub use adept_bundle::tokenizers::Tokenizer;
