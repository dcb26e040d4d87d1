//! Decoder bundles in the browser: the generation loop of the native runtime, driven one ONNX step
//! at a time from JavaScript.
//!
//! onnxruntime-web runs a graph asynchronously, so the loop cannot call the graph the way
//! `adept generate` does ([`adept_bundle::generate::generate`] over a synchronous
//! `DecoderStep`). It is the same loop, though: [`adept_bundle::generate::GenerationLoop`],
//! which the native `generate` drives too. [`DecoderEngine`] holds what a bundle fixes (the
//! validated manifest and its `decoder` section, the tokenizer); [`DecoderRun`] is one
//! completion: [`DecoderRun::inputs`] gives the next step's feeds, JavaScript runs `model.onnx`
//! on them (keeping `present.*` as the next step's `past_key_values.*`) and hands the last row's
//! logits to [`DecoderRun::push_logits`], which samples (Hugging Face semantics), checks EOS and
//! stop strings and returns the newly final text. Prompt encoding (BOS, vocabulary check), the
//! length check and the default EOS ids are the runtime's rules.
//!
//! The prompt cache (`prompt_cache.safetensors`, `past_key_values.{i}.key|value` f32
//! `[1, kv_heads, l, head_dim]`) is parsed here with the `safetensors` crate and checked against
//! the manifest; JavaScript turns each tensor into the first step's `past_key_values` input.

use adept_bundle::generate::{
    check_fits, encode_prompt, Detokenizer, Generation, GenerationConfig, GenerationLoop,
    StepInputs,
};
use adept_bundle::tokenize::tokenizer_from_json;
use adept_bundle::tokenizers::Tokenizer;
use adept_bundle::{BundleManifest, DecoderSpec, MANIFEST_FILE, TOKENIZER_FILE};
use anyhow::{anyhow, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// One tensor of the prompt cache: its graph input name, shape and f32 data (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// Generation options as the page sends them (JSON); every field is optional. Without
/// `temperature`, `top_k` or `top_p` decoding is greedy, as with `adept generate`'s flags;
/// `do_sample` overrides that. `eos_token_ids` empty: the manifest's.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateOptions {
    pub max_new_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop_strings: Vec<String>,
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
    pub do_sample: Option<bool>,
    /// Start from the bundle's prompt cache (default) or feed the soft prompt as virtual tokens.
    pub use_prompt_cache: Option<bool>,
}

impl GenerateOptions {
    /// Parses the page's options (`""` or `"{}"`: defaults); errors name the bad field.
    pub fn from_json(text: &str) -> Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).with_context(|| {
            format!(
                "invalid generation options {text}: expected a JSON object with max_new_tokens, \
                 temperature, top_k, top_p, repetition_penalty, seed, stop_strings, \
                 eos_token_ids, do_sample, use_prompt_cache"
            )
        })
    }

    /// The loop's configuration (`adept generate`'s defaults: 128 new tokens, greedy unless a
    /// sampling option is given, the manifest's EOS ids).
    pub fn config(&self, spec: &DecoderSpec) -> GenerationConfig {
        let sampling = self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some();
        GenerationConfig {
            max_new_tokens: self.max_new_tokens.unwrap_or(128),
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            seed: self.seed.unwrap_or(0),
            stop_strings: self.stop_strings.clone(),
            eos_token_ids: if self.eos_token_ids.is_empty() {
                spec.eos_token_ids.clone()
            } else {
                self.eos_token_ids.clone()
            },
            do_sample: self.do_sample.unwrap_or(sampling),
        }
    }
}

/// The bundle's tokenizer as the loop's detokenizer (special tokens skipped).
struct Tok<'t>(&'t Tokenizer);
impl Detokenizer for Tok<'_> {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Detokenizer::decode(self.0, ids)
    }
}

/// A decoder bundle's manifest and tokenizer.
pub struct DecoderEngine {
    pub manifest: BundleManifest,
    pub spec: DecoderSpec,
    tokenizer: Tokenizer,
}

impl DecoderEngine {
    /// Validates `adept.json` (it must have a `decoder` section) and loads `tokenizer.json`
    /// (both as text), with the checks of the runtime's `Generator::open`.
    pub fn new(manifest_json: &str, tokenizer_json: &str) -> Result<Self> {
        let manifest = BundleManifest::from_json(manifest_json, MANIFEST_FILE)?;
        let spec = manifest.decoder.clone().with_context(|| {
            format!(
                "{MANIFEST_FILE} is an encoder bundle (task {}), not a decoder bundle: load it as a classifier",
                manifest.task
            )
        })?;
        let tokenizer = tokenizer_from_json(tokenizer_json, TOKENIZER_FILE)?;
        let tsize = tokenizer.get_vocab_size(true);
        ensure!(
            tsize <= spec.vocab_size,
            "{TOKENIZER_FILE} has {tsize} tokens, more than decoder.vocab_size {} in {MANIFEST_FILE}: tokenizer and model do not match",
            spec.vocab_size
        );
        Ok(Self {
            manifest,
            spec,
            tokenizer,
        })
    }

    /// The prompt's ids (the runtime's rule: no special tokens, BOS in front).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        encode_prompt(
            &self.tokenizer,
            self.spec.bos_token_id,
            self.spec.vocab_size,
            text,
        )
    }

    /// Ids → text (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Detokenizer::decode(&self.tokenizer, ids)
    }

    /// Parses `prompt_cache.safetensors`: for every layer `past_key_values.{i}.key` then
    /// `.value`, each f32 `[1, kv_heads, prompt_len, head_dim]`. Errors name the tensor, its
    /// shape and dtype and the expected ones.
    pub fn prompt_cache(&self, bytes: &[u8]) -> Result<Vec<CacheTensor>> {
        let file = &self.spec.prompt_cache_file;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow!("{file} is not a safetensors file ({e}); re-export the bundle"))?;
        let want = [
            1,
            self.spec.kv_heads,
            self.spec.prompt_len,
            self.spec.head_dim,
        ];
        let mut out = Vec::with_capacity(2 * self.spec.num_layers);
        for i in 0..self.spec.num_layers {
            for kind in ["key", "value"] {
                let name = format!("past_key_values.{i}.{kind}");
                let t = st.tensor(&name).map_err(|_| {
                    anyhow!(
                        "{file} has no tensor {name} (a {}-layer decoder needs past_key_values.0..{}.key/value); re-export the bundle",
                        self.spec.num_layers,
                        self.spec.num_layers - 1
                    )
                })?;
                ensure!(
                    t.dtype() == safetensors::Dtype::F32 && t.shape() == want,
                    "{file}: {name} is {:?} {:?}, expected F32 {want:?} ([1, kv_heads, prompt_len, head_dim] from {MANIFEST_FILE}); re-export the bundle",
                    t.dtype(),
                    t.shape()
                );
                let data = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.push(CacheTensor {
                    name,
                    dims: want.to_vec(),
                    data,
                });
            }
        }
        Ok(out)
    }

    /// Starts one completion of `prompt` (batch of one). With `use_prompt_cache` (and a soft
    /// prompt) the first step's cache must be the prompt cache (past length `l`), otherwise it
    /// is empty and the soft prompt is fed as the virtual ids `vocab_size..vocab_size + l`.
    pub fn start(&self, prompt: &str, opts: &GenerateOptions) -> Result<DecoderRun> {
        let cfg = opts.config(&self.spec);
        cfg.validate()?;
        let ids = self.encode_prompt(prompt)?;
        let l = self.spec.prompt_len;
        check_fits(
            ids.len(),
            l,
            cfg.max_new_tokens,
            self.spec.max_sequence_len,
            0,
        )?;
        let cached = opts.use_prompt_cache.unwrap_or(true) && l > 0;
        let prefix: Vec<i64> = if cached {
            Vec::new()
        } else {
            let base = self.spec.virtual_token_base as i64;
            (0..l as i64).map(|k| base + k).collect()
        };
        let lp = GenerationLoop::new(
            std::slice::from_ref(&ids),
            self.spec.pad_token_id,
            &cfg,
            self.spec.vocab_size,
            if cached { l } else { 0 },
            &prefix,
        )?;
        Ok(DecoderRun {
            lp: Some(lp),
            prompt_ids: ids,
            past_len: if cached { l } else { 0 },
        })
    }
}

/// What one [`DecoderRun::push_logits`] produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pushed {
    /// The chosen token.
    pub token_id: u32,
    /// Newly final text (possibly empty: a partial character or a possible stop string is held
    /// back until it is decided).
    pub piece: String,
    /// Whether generation has ended (EOS, stop string or `max_new_tokens`).
    pub done: bool,
}

/// One completion in progress (batch of one); its methods take the engine that started it.
pub struct DecoderRun {
    /// `None` once finished.
    lp: Option<GenerationLoop>,
    pub prompt_ids: Vec<u32>,
    /// Past length of the first step's cache (`l` with the prompt cache, else 0).
    pub past_len: usize,
}

impl DecoderRun {
    fn lp(&self) -> Result<&GenerationLoop> {
        self.lp
            .as_ref()
            .context("this generation has finished; start a new one")
    }

    /// The next step's inputs (`[1, seq]` ids and positions, `[1, past + seq]` mask).
    pub fn inputs(&self) -> Result<StepInputs> {
        Ok(self.lp()?.inputs())
    }

    /// Whether generation has ended.
    pub fn is_done(&self) -> bool {
        self.lp.as_ref().is_none_or(GenerationLoop::is_done)
    }

    /// Takes the step's logits: either the last row (`[vocab]`) or every row (`[seq, vocab]`,
    /// the graph's `logits` output for a batch of one; the last row is used).
    pub fn push_logits(&mut self, engine: &DecoderEngine, logits: &[f32]) -> Result<Pushed> {
        let vocab = engine.spec.vocab_size;
        ensure!(
            !logits.is_empty() && logits.len().is_multiple_of(vocab),
            "the model returned {} logits, not a multiple of the vocabulary ({vocab}, decoder.vocab_size in {MANIFEST_FILE})",
            logits.len()
        );
        let last = &logits[logits.len() - vocab..];
        let tok = Tok(&engine.tokenizer);
        let lp = self
            .lp
            .as_mut()
            .context("this generation has finished; start a new one")?;
        let mut piece = String::new();
        let done = lp.push_logits(last, &tok, &mut |_, p| piece.push_str(p))?;
        let token_id = *lp.generated(0).last().context("no token was generated")?;
        Ok(Pushed {
            token_id,
            piece,
            done,
        })
    }

    /// Ends the run: the text still held back (emit it) and the completion, as `adept generate
    /// --json` reports it.
    pub fn finish(&mut self, engine: &DecoderEngine) -> Result<(String, Generation)> {
        let lp = self
            .lp
            .take()
            .context("this generation has already finished")?;
        let mut rest = String::new();
        let mut gens = lp.finish(&Tok(&engine.tokenizer), &mut |_, p| rest.push_str(p))?;
        let g = gens.pop().context("no generation")?;
        Ok((rest, g))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
