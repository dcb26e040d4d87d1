//! The contract between training, export, the native runtime and the browser. Everything here
//! is candle-free and builds for `wasm32-unknown-unknown`, so that what they must agree on is
//! written once:
//!
//! * [`tokenize`]: text → token ids with the model's own `tokenizer.json` ([`TextEncoder`]),
//!   truncation to `max_length` tokens ([`OverLength`]) — what `adept train`, `adept infer` and
//!   the browser page all run;
//! * [`padding`]: encoded inputs → a right-padded `[batch, seq]` batch ([`PaddedBatch`]): the
//!   graph's `int64` inputs natively, candle's `u32` tensors in training;
//! * [`manifest`]: the bundle directory and its `adept.json` ([`BundleManifest`]), with the one
//!   reader/validator every runtime calls;
//! * [`files`]: [`write_atomic`] (temporary file, `fsync`, rename, `fsync` of the folder) and
//!   sha256 checksums of files and bytes;
//! * [`generate`]: decoding with a decoder bundle (sampling, stop strings, streaming, the
//!   generic loop over a `DecoderStep`), shared by the native runtime and the browser;
//! * [`softmax`] and [`argmax`]: the post-processing of logits.
//!
//! ```text
//! <bundle>/model.onnx       input_ids, attention_mask[, token_type_ids]: int64 [batch, sequence]
//!                           -> logits: float [batch, num_outputs]
//! <bundle>/tokenizer.json   the model's Hugging Face tokenizer, copied byte for byte
//! <bundle>/adept.json       a [`BundleManifest`]
//! ```
//!
//! There is exactly one manifest reader ([`BundleManifest::read`], or
//! [`BundleManifest::from_json`] where there is no file system); runtimes call it and
//! [`BundleManifest::verify_files`] before touching the model, so a missing file, a corrupt
//! manifest or a file that changed after export is reported with the file's path and the
//! problem, not as an obscure failure later.
//!
//! Everything a runtime needs to turn text into the graph's inputs is in the manifest: the
//! text fields and how they form the tokenizer's segment pair ([`InputTemplate`]), the
//! longest input (`max_length`, counted in tokens *without* the soft prompt, which lives in
//! the graph), what to do with longer inputs, the padding id and the size of the graph's
//! vocabulary table (token ids at or above it are an error, not a silent out-of-range
//! `Gather`). [`TextEncoder::for_bundle`] turns a manifest and its tokenizer into the encoder.

/// A fieldless enum that is written as one of a fixed set of strings (in JSON, on the command
/// line, in ONNX metadata): `as_str`, `Display`, `FromStr` (with an error naming the field and
/// the choices), serde through those strings, and comparison with `&str`.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as written in files and on the command line.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> anyhow::Result<Self> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => anyhow::bail!(
                        "unknown {} {other:?} (one of {:?})",
                        $what,
                        [$($text),+]
                    ),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub mod files;
pub mod generate;
pub mod manifest;
pub mod padding;
pub mod search;
pub mod seq2seq_manifest;
pub mod tokenize;

pub use files::{sha256_file, sha256_hex, write_atomic};
pub use manifest::*;
pub use padding::PaddedBatch;
pub use seq2seq_manifest::{GraphEntry, Seq2SeqManifest};
pub use tokenize::{Encoded, OverLength, TextEncoder};
/// The tokenizers crate the contract is built on (the native build uses `onig`, the wasm build
/// the pure-Rust regex backend).
pub use tokenizers;

/// Class probabilities from logits (numerically stable softmax). The one post-processing rule
/// shared by the native runtime, the browser and training-time evaluation.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// The predicted class: index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}
