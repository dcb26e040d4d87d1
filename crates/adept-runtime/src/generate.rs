//! Generation with a decoder bundle through ONNX Runtime: the ort [`DecoderStep`] and the
//! [`Generator`] behind `adept generate`.
//!
//! The loop, the sampling and the streaming rules are the contract crate's
//! ([`adept_bundle::generate`], shared with the browser); this module only runs the graph.
//! The bundle layout and the graph's inputs and outputs are documented on
//! [`adept_bundle::DecoderSpec`].
//!
//! [`OrtDecoderStep`] keeps the key/value cache as ONNX Runtime values between steps: the
//! `present.{i}.key|value` outputs of one run are moved, without copying, into the
//! `past_key_values.{i}.key|value` inputs of the next. It starts either from the bundle's
//! prompt cache (`prompt_cache.safetensors`, `[1, kv_heads, l, head_dim]` per layer, copied to
//! every row of the batch: the soft prompt costs nothing at run time) or, with
//! `use_prompt_cache = false`, from an empty cache with the `l` virtual ids
//! `virtual_token_base..virtual_token_base + l` fed before the prompt (the same numbers
//! computed by the graph: a check of the export's cache).

use crate::bundle::RuntimeOptions;
use crate::ortlib::{self, OrtRuntime};
use crate::session::{build_session, DeviceKind};
use adept_bundle::generate::{
    check_fits, continuation_logprobs, generate_until, DecoderStep, Detokenizer, FinishReason,
    Generation, GenerationConfig,
};
use adept_bundle::tokenize::load_tokenizer;
use adept_bundle::tokenizers::Tokenizer;
use adept_bundle::{BundleManifest, DecoderSpec, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE};
use anyhow::{anyhow, bail, ensure, Context, Result};
use ort::session::Session;
use ort::value::{DynValue, Tensor};
use serde::Serialize;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The prompt's keys and values, per layer `(key, value)`, each `[kv_heads, l, head_dim]`
/// row-major f32 (the file's leading batch dimension of 1 dropped).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptCache {
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl PromptCache {
    /// Reads `past_key_values.{i}.key|value`, f32 `[1, kv_heads, l, head_dim]`, for every layer
    /// of `spec` from `path`; errors name the file, the tensor and the shape.
    pub fn read(path: &Path, spec: &DecoderSpec) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the prompt cache {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow!(
                "{} is not a safetensors file ({e}); re-export the bundle",
                path.display()
            )
        })?;
        let want = [1, spec.kv_heads, spec.prompt_len, spec.head_dim];
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            let mut pair = Vec::with_capacity(2);
            for kind in ["key", "value"] {
                let name = format!("past_key_values.{i}.{kind}");
                let t = st.tensor(&name).map_err(|_| {
                    anyhow!(
                        "{} has no tensor {name} (a {}-layer decoder needs past_key_values.0..{}.key/value); re-export the bundle",
                        path.display(),
                        spec.num_layers,
                        spec.num_layers - 1
                    )
                })?;
                ensure!(
                    t.dtype() == safetensors::Dtype::F32 && t.shape() == want,
                    "{}: {name} is {:?} {:?}, expected F32 {want:?} ([1, kv_heads, prompt_len, head_dim] from adept.json); re-export the bundle",
                    path.display(),
                    t.dtype(),
                    t.shape()
                );
                pair.push(
                    t.data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect::<Vec<f32>>(),
                );
            }
            let v = pair.pop().unwrap_or_default();
            let k = pair.pop().unwrap_or_default();
            layers.push((k, v));
        }
        Ok(Self { layers })
    }
}

/// One forward step of a decoder bundle's graph with ONNX Runtime, keeping the key/value cache
/// as ort values between calls.
pub struct OrtDecoderStep<'a> {
    session: &'a mut Session,
    spec: &'a DecoderSpec,
    cache: Option<&'a PromptCache>,
    /// `past_key_values.{i}.key`, `.value` for each layer, in that order.
    past: Vec<DynValue>,
    batch: usize,
    model: PathBuf,
}

impl<'a> OrtDecoderStep<'a> {
    /// A step over `session` (a bundle's `model.onnx`). With `cache`, generation starts from the
    /// prompt cache; without, the soft prompt runs as virtual tokens.
    pub fn new(
        session: &'a mut Session,
        spec: &'a DecoderSpec,
        cache: Option<&'a PromptCache>,
        model: &Path,
    ) -> Self {
        Self {
            session,
            spec,
            cache,
            past: Vec::new(),
            batch: 0,
            model: model.to_path_buf(),
        }
    }

    fn f32_tensor(shape: [usize; 4], data: Vec<f32>, what: &str) -> Result<DynValue> {
        Ok(Tensor::from_array((shape, data))
            .map_err(|e| anyhow!("cannot build the {what} tensor of shape {shape:?}: {e}"))?
            .into_dyn())
    }
}

impl DecoderStep for OrtDecoderStep<'_> {
    fn vocab_size(&self) -> usize {
        self.spec.vocab_size
    }

    fn cached_prefix_len(&self) -> usize {
        if self.cache.is_some() {
            self.spec.prompt_len
        } else {
            0
        }
    }

    fn prefix_ids(&self) -> Vec<i64> {
        if self.cache.is_some() {
            Vec::new()
        } else {
            let base = self.spec.virtual_token_base as i64;
            (0..self.spec.prompt_len as i64).map(|k| base + k).collect()
        }
    }

    /// The initial cache: the prompt cache copied to `batch` rows, or empty (`past` = 0).
    fn start(&mut self, batch: usize) -> Result<()> {
        let (h, d) = (self.spec.kv_heads, self.spec.head_dim);
        self.batch = batch;
        self.past.clear();
        for i in 0..self.spec.num_layers {
            for (j, kind) in ["key", "value"].iter().enumerate() {
                let what = format!("past_key_values.{i}.{kind}");
                let t = match self.cache {
                    Some(c) => {
                        let one = if j == 0 {
                            &c.layers[i].0
                        } else {
                            &c.layers[i].1
                        };
                        let data: Vec<f32> = (0..batch).flat_map(|_| one.iter().copied()).collect();
                        Self::f32_tensor([batch, h, self.spec.prompt_len, d], data, &what)?
                    }
                    None => Self::f32_tensor([batch, h, 0, d], Vec::new(), &what)?,
                };
                self.past.push(t);
            }
        }
        Ok(())
    }

    fn step(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>> {
        self.run(ids, mask, positions, batch, seq, false)
    }

    fn step_all(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<f32>> {
        self.run(ids, mask, positions, batch, seq, true)
    }
}

impl OrtDecoderStep<'_> {
    /// One run of the graph; returns the last position's logits `[b, vocab]`, or with `all`
    /// every position's `[b, seq, vocab]`. Keeps the `present.*` outputs as the next `past`.
    fn run(
        &mut self,
        ids: &[i64],
        mask: &[i64],
        positions: &[i64],
        batch: usize,
        seq: usize,
        all: bool,
    ) -> Result<Vec<f32>> {
        ensure!(
            batch == self.batch && self.past.len() == 2 * self.spec.num_layers,
            "the decoder step was not started for a batch of {batch} (call start first)"
        );
        ensure!(
            ids.len() == batch * seq
                && positions.len() == batch * seq
                && mask.len().is_multiple_of(batch),
            "decoder step inputs do not match batch {batch} × seq {seq}"
        );
        let total = mask.len() / batch;
        let i64_tensor = |shape: [usize; 2], v: &[i64], what: &str| -> Result<DynValue> {
            Ok(Tensor::from_array((shape, v.to_vec()))
                .map_err(|e| anyhow!("cannot build the {what} tensor of shape {shape:?}: {e}"))?
                .into_dyn())
        };
        let mut inputs: Vec<(Cow<'_, str>, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(3 + self.past.len());
        inputs.push((
            "input_ids".into(),
            i64_tensor([batch, seq], ids, "input_ids")?.into(),
        ));
        inputs.push((
            "attention_mask".into(),
            i64_tensor([batch, total], mask, "attention_mask")?.into(),
        ));
        inputs.push((
            "position_ids".into(),
            i64_tensor([batch, seq], positions, "position_ids")?.into(),
        ));
        let names = self.spec.input_names();
        for (name, v) in names[3..].iter().zip(std::mem::take(&mut self.past)) {
            inputs.push((name.clone().into(), v.into()));
        }
        let mut outputs = self.session.run(inputs).map_err(|e| {
            anyhow!(
                "ONNX Runtime failed on {} (batch {batch}, {seq} new positions, {total} in all): {e}",
                self.model.display()
            )
        })?;
        let vocab = self.spec.vocab_size;
        let last_rows = {
            let (shape, data) = outputs["logits"].try_extract_tensor::<f32>().map_err(|e| {
                anyhow!(
                    "{}: the logits output is not a float tensor: {e}",
                    self.model.display()
                )
            })?;
            ensure!(
                shape.len() == 3
                    && shape[0] as usize == batch
                    && shape[1] as usize == seq
                    && shape[2] as usize == vocab,
                "{}: logits have shape {:?}, expected [{batch}, {seq}, {vocab}] (vocab_size from adept.json)",
                self.model.display(),
                &shape[..]
            );
            if all {
                data.to_vec()
            } else {
                let mut out = Vec::with_capacity(batch * vocab);
                for b in 0..batch {
                    let start = (b * seq + seq - 1) * vocab;
                    out.extend_from_slice(&data[start..start + vocab]);
                }
                out
            }
        };
        let want = [batch, self.spec.kv_heads, total, self.spec.head_dim];
        for name in &self.spec.output_names()[1..] {
            let v = outputs
                .remove(name.as_str())
                .with_context(|| format!("{} returned no {name} output", self.model.display()))?;
            let shape: Vec<usize> = v.shape().iter().map(|&x| x.max(0) as usize).collect();
            ensure!(
                shape == want,
                "{}: {name} has shape {shape:?}, expected {want:?} ([batch, kv_heads, past + seq, head_dim])",
                self.model.display()
            );
            self.past.push(v);
        }
        Ok(last_rows)
    }
}

/// A [`DecoderStep`] wrapper that notes when the first step (the prompt's prefill) returned.
struct Timed<'s, S: DecoderStep> {
    inner: &'s mut S,
    first: Option<Instant>,
    steps: usize,
}

impl<S: DecoderStep> DecoderStep for Timed<'_, S> {
    fn step(&mut self, i: &[i64], m: &[i64], p: &[i64], b: usize, s: usize) -> Result<Vec<f32>> {
        let out = self.inner.step(i, m, p, b, s)?;
        self.steps += 1;
        self.first.get_or_insert_with(Instant::now);
        Ok(out)
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn cached_prefix_len(&self) -> usize {
        self.inner.cached_prefix_len()
    }
    fn prefix_ids(&self) -> Vec<i64> {
        self.inner.prefix_ids()
    }
    fn start(&mut self, b: usize) -> Result<()> {
        self.inner.start(b)
    }
}

/// Timing of a generation run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GenerationStats {
    pub prompts: usize,
    pub batches: usize,
    pub prompt_tokens: usize,
    /// Generated tokens, all rows (EOS ids included).
    pub new_tokens: usize,
    /// From the start of the first batch to the first batch's first token (prefill).
    pub time_to_first_token_s: f64,
    pub total_s: f64,
    /// `new_tokens / total_s`.
    pub tokens_per_s: f64,
    /// Tokens after each batch's first, per second of the steps after the first (decode speed).
    pub decode_tokens_per_s: f64,
}

/// The most bytes of logits one scoring run of [`Generator::continuation_logprobs`] returns
/// (SmolLM2's 49k-token vocabulary: ~16 rows of 80 tokens).
const SCORE_LOGITS_BYTES: usize = 256 << 20;

/// A decoder bundle ready to generate.
pub struct Generator {
    pub dir: PathBuf,
    pub manifest: BundleManifest,
    pub spec: DecoderSpec,
    pub tokenizer: Tokenizer,
    pub device: DeviceKind,
    pub device_fallback: Option<String>,
    pub batch_size: usize,
    pub runtime: &'static OrtRuntime,
    prompt_cache: Option<PromptCache>,
    session: Session,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("dir", &self.dir)
            .field("device", &self.device)
            .finish()
    }
}

/// Token ids → text with the bundle's tokenizer (special tokens skipped).
struct Tok<'t>(&'t Tokenizer);
impl Detokenizer for Tok<'_> {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Detokenizer::decode(self.0, ids)
    }
}

impl Generator {
    /// Validates a decoder bundle (manifest, checksums, prompt cache, model inputs/outputs) and
    /// creates the session.
    pub fn open(dir: &Path, opts: &RuntimeOptions) -> Result<Self> {
        ensure!(opts.batch_size > 0, "batch size must be at least 1");
        let manifest = BundleManifest::read(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let spec = manifest.decoder.clone().with_context(|| {
            format!(
                "{} is an encoder bundle (task {}); `adept generate` needs a decoder bundle (use `adept infer` for this one)",
                manifest_path.display(),
                manifest.task
            )
        })?;
        manifest.verify_files(dir)?;
        let tok_path = dir.join(TOKENIZER_FILE);
        let tokenizer = load_tokenizer(&tok_path)?;
        let tsize = tokenizer.get_vocab_size(true);
        ensure!(
            tsize <= spec.vocab_size,
            "{} has {tsize} tokens, more than decoder.vocab_size {} in {}: tokenizer and model do not match",
            tok_path.display(),
            spec.vocab_size,
            manifest_path.display()
        );
        let prompt_cache = if spec.prompt_len > 0 {
            Some(PromptCache::read(
                &dir.join(&spec.prompt_cache_file),
                &spec,
            )?)
        } else {
            None
        };
        let model_path = dir.join(MODEL_FILE);
        let runtime = ortlib::find_and_load_for(
            opts.cache.as_deref(),
            opts.ort_library.as_deref(),
            opts.session.device,
        )?;
        let built = build_session(runtime, &model_path, &opts.session)?;
        let inputs: Vec<String> = built
            .session
            .inputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let outputs: Vec<String> = built
            .session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        ensure!(
            sorted(&inputs) == sorted(&spec.input_names()),
            "{} takes inputs {inputs:?}, but {} describes a {}-layer decoder taking {:?}: model and manifest do not match",
            model_path.display(),
            manifest_path.display(),
            spec.num_layers,
            spec.input_names()
        );
        ensure!(
            sorted(&outputs) == sorted(&spec.output_names()),
            "{} has outputs {outputs:?}, but {} lists {:?}: model and manifest do not match",
            model_path.display(),
            manifest_path.display(),
            spec.output_names()
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            spec,
            tokenizer,
            device: built.device,
            device_fallback: built.fallback_reason,
            batch_size: opts.batch_size,
            runtime,
            prompt_cache,
            session: built.session,
        })
    }

    /// The prompt's ids: the tokenizer without its special tokens, then `bos_token_id` in front
    /// (unless the text already starts with it, e.g. from a chat template).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        adept_bundle::generate::encode_prompt(
            &self.tokenizer,
            self.spec.bos_token_id,
            self.spec.vocab_size,
            text,
        )
    }

    /// Renders the bundle's chat template for one user message (`add_generation_prompt` true).
    pub fn apply_chat_template(&self, user: &str) -> Result<String> {
        apply_chat_template(&self.tokenizer, &self.spec, &self.dir, user)
    }

    /// Generates a completion for every prompt (texts), `batch_size` prompts per batch (left
    /// padded). `on_token(prompt_index, piece)` streams each prompt's text; returns the
    /// generations in prompt order and the timing. `cfg.eos_token_ids` empty means the
    /// bundle's.
    pub fn generate(
        &mut self,
        prompts: &[String],
        cfg: &GenerationConfig,
        use_prompt_cache: bool,
        on_token: &mut dyn FnMut(usize, &str),
    ) -> Result<(Vec<Generation>, GenerationStats)> {
        let encoded = prompts
            .iter()
            .map(|p| self.encode_prompt(p))
            .collect::<Result<Vec<_>>>()?;
        self.generate_ids(&encoded, cfg, use_prompt_cache, on_token)
    }

    /// [`Generator::generate`] for prompts already tokenised (ids as the model takes them, BOS
    /// included where the bundle wants one).
    pub fn generate_ids(
        &mut self,
        encoded: &[Vec<u32>],
        cfg: &GenerationConfig,
        use_prompt_cache: bool,
        on_token: &mut dyn FnMut(usize, &str),
    ) -> Result<(Vec<Generation>, GenerationStats)> {
        self.generate_ids_until(encoded, cfg, use_prompt_cache, on_token, &|| false)
    }

    /// [`Generator::generate_ids`], checking `stop` before every decoder step: `true` ends the
    /// run with [`adept_bundle::generate::Cancelled`].
    pub fn generate_ids_until(
        &mut self,
        encoded: &[Vec<u32>],
        cfg: &GenerationConfig,
        use_prompt_cache: bool,
        on_token: &mut dyn FnMut(usize, &str),
        stop: &dyn Fn() -> bool,
    ) -> Result<(Vec<Generation>, GenerationStats)> {
        let mut cfg = cfg.clone();
        if cfg.eos_token_ids.is_empty() {
            cfg.eos_token_ids = self.spec.eos_token_ids.clone();
        }
        cfg.validate()?;
        for (i, ids) in encoded.iter().enumerate() {
            check_fits(
                ids.len(),
                self.spec.prompt_len,
                cfg.max_new_tokens,
                self.spec.max_sequence_len,
                i,
            )?;
        }
        let model = self.dir.join(MODEL_FILE);
        let cache = if use_prompt_cache {
            self.prompt_cache.as_ref()
        } else {
            None
        };
        let mut stats = GenerationStats {
            prompts: encoded.len(),
            prompt_tokens: encoded.iter().map(Vec::len).sum(),
            ..Default::default()
        };
        let start = Instant::now();
        let mut decode_s = 0.0;
        let mut decode_tokens = 0usize;
        let mut out = Vec::with_capacity(encoded.len());
        for (chunk_index, chunk) in encoded.chunks(self.batch_size).enumerate() {
            let offset = chunk_index * self.batch_size;
            let mut inner = OrtDecoderStep::new(&mut self.session, &self.spec, cache, &model);
            let mut timed = Timed {
                inner: &mut inner,
                first: None,
                steps: 0,
            };
            let batch_start = Instant::now();
            let gens = generate_until(
                &mut timed,
                chunk,
                self.spec.pad_token_id,
                &cfg,
                &Tok(&self.tokenizer),
                &mut |row, piece| on_token(offset + row, piece),
                stop,
            )?;
            let end = Instant::now();
            if let Some(first) = timed.first {
                if chunk_index == 0 {
                    stats.time_to_first_token_s = (first - batch_start).as_secs_f64();
                }
                decode_s += (end - first).as_secs_f64();
            }
            let n: usize = gens.iter().map(|g| g.token_ids.len()).sum();
            stats.new_tokens += n;
            decode_tokens += n.saturating_sub(chunk.len());
            stats.batches += 1;
            out.extend(gens);
        }
        stats.total_s = start.elapsed().as_secs_f64();
        stats.tokens_per_s = stats.new_tokens as f64 / stats.total_s.max(1e-9);
        stats.decode_tokens_per_s = if decode_s > 0.0 {
            decode_tokens as f64 / decode_s
        } else {
            0.0
        };
        Ok((out, stats))
    }

    /// Per row `(ids, target_start)`, the summed log-probability of `ids[target_start..]` after
    /// the ids before them (label-word scoring, as training scores validation), `batch_size` rows
    /// per run of the graph, from the prompt cache (or the virtual prompt tokens without one).
    pub fn continuation_logprobs(&mut self, rows: &[(&[u32], usize)]) -> Result<Vec<f32>> {
        for (i, (ids, _)) in rows.iter().enumerate() {
            check_fits(
                ids.len(),
                self.spec.prompt_len,
                0,
                self.spec.max_sequence_len,
                i,
            )?;
        }
        let model = self.dir.join(MODEL_FILE);
        // Every position's logits come back ([rows, seq, vocab] f32, and a copy): at most
        // `SCORE_LOGITS_BYTES` of them per run, however large the batch asked for.
        let longest = rows.iter().map(|(r, _)| r.len()).max().unwrap_or(1).max(1);
        let per_row = 4 * (longest + self.spec.prompt_len) * self.spec.vocab_size;
        let chunk_rows = self.batch_size.min(SCORE_LOGITS_BYTES / per_row).max(1);
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(chunk_rows) {
            let mut step = OrtDecoderStep::new(
                &mut self.session,
                &self.spec,
                self.prompt_cache.as_ref(),
                &model,
            );
            out.extend(continuation_logprobs(
                &mut step,
                chunk,
                self.spec.pad_token_id,
            )?);
        }
        Ok(out)
    }
}

/// Renders the chat template of the decoder bundle at `bundle` (its `spec` and tokenizer) for
/// one user message (`add_generation_prompt` true); an error says so when it has none.
pub fn apply_chat_template(
    tokenizer: &Tokenizer,
    spec: &DecoderSpec,
    bundle: &Path,
    user: &str,
) -> Result<String> {
    apply_chat_messages(tokenizer, spec, bundle, &[("user", user)])
}

/// [`apply_chat_template`] for a conversation of `(role, content)` messages.
pub fn apply_chat_messages(
    tokenizer: &Tokenizer,
    spec: &DecoderSpec,
    bundle: &Path,
    messages: &[(&str, &str)],
) -> Result<String> {
    let template = spec.chat_template.as_deref().with_context(|| {
        format!(
            "the bundle {} has no chat template (decoder.chat_template in adept.json); send the prompt as plain text (without `--chat-template` or `\"chat_template\": true`)",
            bundle.display()
        )
    })?;
    let tok = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    render_chat_messages(
        template,
        messages,
        &tok(spec.bos_token_id),
        &tok(spec.eos_token_ids.first().copied()),
    )
}

/// Renders a Hugging Face chat template (Jinja) for one user message with
/// `add_generation_prompt = true`, `bos_token`, `eos_token` and `raise_exception`, and Python
/// string methods (`strip`, `startswith`, …) as transformers' Jinja sandbox allows.
pub fn render_chat_template(template: &str, user: &str, bos: &str, eos: &str) -> Result<String> {
    render_chat_messages(template, &[("user", user)], bos, eos)
}

/// [`render_chat_template`] for a conversation: `(role, content)` messages in order (`system`,
/// `user`, `assistant`, as the template knows them), then the generation prompt.
pub fn render_chat_messages(
    template: &str,
    messages: &[(&str, &str)],
    bos: &str,
    eos: &str,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    let ctx = minijinja::context! {
        messages => messages
            .iter()
            .map(|&(role, content)| minijinja::context! { role => role, content => content })
            .collect::<Vec<_>>(),
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    };
    env.render_str(template, ctx)
        .map_err(|e| anyhow!("cannot render the bundle's chat template: {e:#}"))
}

/// Generate text with a decoder bundle (streams to standard output).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct GenerateArgs {
    #[cfg_attr(feature = "cli", command(flatten))]
    pub runtime: crate::cli::RuntimeArgs,
    /// A prompt (repeatable: the prompts run as one left-padded batch of up to --batch-size).
    #[cfg_attr(feature = "cli", arg(long, conflicts_with = "input"))]
    pub prompt: Vec<String>,
    /// File of prompts: one per line, or JSONL records {"prompt": ...} when it ends in .jsonl/.json.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "FILE", required_unless_present = "prompt")
    )]
    pub input: Option<PathBuf>,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 128, value_parser = crate::cli::positive_usize))]
    pub max_new_tokens: usize,
    /// Sampling temperature (giving any of --temperature/--top-k/--top-p samples; none: greedy).
    #[cfg_attr(feature = "cli", arg(long))]
    pub temperature: Option<f32>,
    /// Keep the k most likely tokens when sampling.
    #[cfg_attr(feature = "cli", arg(long))]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (0, 1].
    #[cfg_attr(feature = "cli", arg(long))]
    pub top_p: Option<f32>,
    /// Hugging Face repetition penalty (1 = off).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1.0))]
    pub repetition_penalty: f32,
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0))]
    pub seed: u64,
    /// Stop a completion at this text (repeatable; the text is cut there).
    #[cfg_attr(feature = "cli", arg(long))]
    pub stop: Vec<String>,
    /// Wrap each prompt as a user message in the bundle's chat template.
    #[cfg_attr(feature = "cli", arg(long))]
    pub chat_template: bool,
    /// Run the soft prompt as virtual tokens instead of loading its key/value cache.
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_prompt_cache: bool,
    /// One JSON line per prompt (text, finish reason, token counts, timing) instead of streaming.
    #[cfg_attr(feature = "cli", arg(long))]
    pub json: bool,
    /// T5 bundles: beams of the search (1 = greedy).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, value_parser = crate::cli::positive_usize))]
    pub num_beams: usize,
}

impl GenerateArgs {
    /// The generation settings the flags ask for.
    pub fn config(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0),
            top_p: self.top_p.unwrap_or(1.0),
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop_strings: self.stop.clone(),
            eos_token_ids: Vec::new(),
            do_sample: self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some(),
        }
    }
}

/// Reads prompts: plain lines (empty lines skipped), or JSONL records with a `prompt` string
/// when the file ends in `.jsonl` / `.json`.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompts file {}", path.display()))?;
    let jsonl = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jsonl" | "json")
    );
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if jsonl {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
            let p = v.get("prompt").and_then(|p| p.as_str()).with_context(|| {
                format!(
                    "{}:{}: the record has no \"prompt\" string",
                    path.display(),
                    i + 1
                )
            })?;
            out.push(p.to_owned());
        } else {
            out.push(line.to_owned());
        }
    }
    ensure!(!out.is_empty(), "{} holds no prompts", path.display());
    Ok(out)
}

/// Runs `adept generate`: streams the completion of one prompt to standard output as it comes
/// (several prompts: each after a `### prompt i` line once the batch is done), or one JSON line
/// per prompt with `--json`; timing on standard error. Returns the generations and the timing.
pub fn run_generate(args: &GenerateArgs) -> Result<(Vec<Generation>, GenerationStats)> {
    use std::io::Write;
    let prompts = match &args.input {
        Some(p) => read_prompts(p)?,
        None if !args.prompt.is_empty() => args.prompt.clone(),
        None => bail!("pass --prompt TEXT or --input FILE"),
    };
    if is_seq2seq_bundle(&args.runtime.bundle) {
        return run_generate_seq2seq(args, &prompts);
    }
    let mut generator = Generator::open(&args.runtime.bundle, &args.runtime.options())?;
    if let Some(why) = &generator.device_fallback {
        tracing::warn!("{why}");
    }
    let texts = if args.chat_template {
        prompts
            .iter()
            .map(|p| generator.apply_chat_template(p))
            .collect::<Result<Vec<_>>>()?
    } else {
        prompts.clone()
    };
    let cfg = args.config();
    let stdout = std::io::stdout();
    // One prompt streams live; several (generated as a batch, whose rows advance together)
    // are printed one after another once done.
    let live = prompts.len() == 1 && !args.json;
    let (gens, stats) =
        generator.generate(&texts, &cfg, !args.no_prompt_cache, &mut |_, piece| {
            if live {
                let mut out = stdout.lock();
                let _ = write!(out, "{piece}");
                let _ = out.flush();
            }
        })?;
    let mut out = stdout.lock();
    if args.json {
        for (i, g) in gens.iter().enumerate() {
            let rec = serde_json::json!({
                "prompt": prompts[i],
                "text": g.text,
                "finish_reason": g.finish_reason,
                "prompt_tokens": g.prompt_tokens,
                "new_tokens": g.token_ids.len(),
                "token_ids": g.token_ids,
                "timing": stats,
            });
            writeln!(out, "{rec}")?;
        }
    } else if live {
        writeln!(out)?;
    } else {
        for (i, g) in gens.iter().enumerate() {
            writeln!(out, "### prompt {i}\n{}\n", g.text)?;
        }
    }
    out.flush()?;
    eprintln!(
        "{} prompts, {} new tokens in {:.2} s: time to first token {:.1} ms, {:.1} tokens/s ({:.1} tokens/s after the first){}",
        stats.prompts,
        stats.new_tokens,
        stats.total_s,
        stats.time_to_first_token_s * 1e3,
        stats.tokens_per_s,
        stats.decode_tokens_per_s,
        if args.no_prompt_cache { ", soft prompt as virtual tokens" } else { "" }
    );
    Ok((gens, stats))
}

#[cfg(test)]
mod tests;

/// Whether `dir/adept.json` describes a T5 (encoder–decoder) bundle.
fn is_seq2seq_bundle(dir: &Path) -> bool {
    std::fs::read(dir.join(adept_bundle::MANIFEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|m| m["task_kind"] == "seq2seq")
}

/// `adept generate` on a T5 bundle: the encoder once, then the cached decoder, greedy or (with
/// `--num-beams`) beam search; sampling options do not apply and are refused.
fn run_generate_seq2seq(
    args: &GenerateArgs,
    prompts: &[String],
) -> Result<(Vec<Generation>, GenerationStats)> {
    use crate::seq2seq::{DecodeMode, Seq2SeqBundle, Seq2SeqGenerateOptions};
    use std::io::Write;
    ensure!(
        args.temperature.is_none() && args.top_k.is_none() && args.top_p.is_none(),
        "T5 bundles decode greedily or with beam search (--num-beams); --temperature, --top-k \
         and --top-p apply to causal-LM bundles"
    );
    let opts = args.runtime.options();
    let runtime = ortlib::find_and_load_for(
        opts.cache.as_deref(),
        opts.ort_library.as_deref(),
        opts.session.device,
    )?;
    let mut bundle = Seq2SeqBundle::open(&args.runtime.bundle, runtime, &opts.session)?;
    let gen_opts = Seq2SeqGenerateOptions {
        max_new_tokens: args.max_new_tokens,
        num_beams: args.num_beams,
        length_penalty: 1.0,
        mode: DecodeMode::Cached,
    };
    let started = std::time::Instant::now();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut gens = Vec::new();
    for chunk in texts.chunks(opts.batch_size.max(1)) {
        gens.extend(bundle.generate_text(chunk, &gen_opts)?);
    }
    let total_s = started.elapsed().as_secs_f64();
    let new_tokens: usize = gens.iter().map(|(g, _)| g.tokens.len()).sum();
    let mut out = std::io::stdout().lock();
    let mut results = Vec::new();
    for (i, (g, text)) in gens.into_iter().enumerate() {
        if args.json {
            let rec = serde_json::json!({"prompt": prompts[i], "text": text,
                "new_tokens": g.tokens.len(), "score": g.score});
            writeln!(out, "{rec}")?;
        } else if prompts.len() == 1 {
            writeln!(out, "{text}")?;
        } else {
            writeln!(out, "### prompt {i}\n{text}")?;
        }
        results.push(Generation {
            text,
            prompt_tokens: 0,
            finish_reason: if g.tokens.len() >= args.max_new_tokens {
                FinishReason::Length
            } else {
                FinishReason::Eos
            },
            token_ids: g.tokens,
        });
    }
    let stats = GenerationStats {
        prompts: prompts.len(),
        batches: prompts.len().div_ceil(opts.batch_size.max(1)),
        prompt_tokens: 0,
        new_tokens,
        time_to_first_token_s: f64::NAN,
        total_s,
        tokens_per_s: new_tokens as f64 / total_s.max(1e-9),
        decode_tokens_per_s: f64::NAN,
    };
    Ok((results, stats))
}
