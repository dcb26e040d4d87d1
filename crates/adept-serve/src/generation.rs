//! Text generation behind the server: causal-LM (Llama-family decoder) bundles and T5
//! (seq2seq) bundles, `POST /v1/models/{name}/generate`.
//!
//! The request path: JSON body → prompts and parameters ([`read_request`]) → ids (the bundle's
//! tokenizer, and its chat template when asked; each prompt checked to fit the model, so a bad
//! prompt fails its own request only) → the model's queue ([`GenQueue`], bounded in prompts)
//! → a worker thread holding its own session ([`GenRunner`]). A worker takes every queued
//! request up to `max_batch` prompts; requests of a round with equal parameters run as one
//! left-padded batch (the rows advance together), the others one after another. Each request
//! gets its pieces of text as they are decoded ([`GenEvent::Piece`], streamed as server-sent
//! events when it asks) and then its generations in order.

use crate::api::ApiError;
use crate::batcher::{panic_message, BatchOptions, Queue, Queued};
use crate::metrics::ModelStats;
use adept_bundle::generate::{encode_prompt, Cancelled, FinishReason, GenerationConfig};
use adept_bundle::tokenizers::Tokenizer;
use adept_bundle::{BundleManifest, DecoderSpec};
use adept_runtime::generate::{apply_chat_messages, apply_chat_template};
use adept_runtime::seq2seq::{
    encode_source, is_seq2seq_bundle, DecodeMode, Seq2SeqBundle, Seq2SeqGenerateOptions,
    Seq2SeqInfo,
};
use adept_runtime::{ortlib, Generator, RuntimeOptions};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// The `max_new_tokens` of a request that names none (capped by the server's limit).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 64;

/// How to generate one request's prompts.
#[derive(Clone, Debug, PartialEq)]
pub struct GenParams {
    /// Sampling, stop strings and `max_new_tokens` (T5 bundles use `max_new_tokens` only).
    pub config: GenerationConfig,
    /// T5 bundles: beams of the search (1: greedy).
    pub num_beams: usize,
    /// T5 bundles: exponent of the length dividing finished beams' scores.
    pub length_penalty: f32,
}

/// A generate request, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    pub prompts: Vec<String>,
    pub params: GenParams,
    /// Wrap each prompt as a user message in the bundle's chat template.
    pub chat_template: bool,
    /// Answer as server-sent events: a `token` event per piece of text, then `done`.
    pub stream: bool,
    /// `max_new_tokens` was not given: [`GenModel::encode`] lowers the default to what the
    /// longest prompt leaves room for.
    pub default_max_new_tokens: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Parameters {
    max_new_tokens: Option<usize>,
    do_sample: Option<bool>,
    temperature: Option<f32>,
    top_k: Option<usize>,
    top_p: Option<f32>,
    repetition_penalty: Option<f32>,
    seed: Option<u64>,
    #[serde(default)]
    stop: Vec<String>,
    #[serde(default)]
    chat_template: bool,
    num_beams: Option<usize>,
    length_penalty: Option<f32>,
}

/// The most beams a T5 request may ask for (each beam is a row of the batch).
pub const MAX_BEAMS: usize = 16;
/// The most stop strings a request may give, and their longest length in bytes.
pub const MAX_STOP_STRINGS: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;
/// The lowest sampling temperature (below it the scaled logits overflow; decode greedily).
pub const MIN_TEMPERATURE: f32 = 1e-2;

const GENERATE_SHAPE: &str = "send {\"inputs\": \"a prompt\" or [\"a prompt\", …], \
     \"parameters\": {\"max_new_tokens\": 32, …}, \"stream\": false}";

/// Reads a generate body for a model of `kind`:
///
/// ```json
/// {"inputs": "Translate to German: the house",
///  "parameters": {"max_new_tokens": 32, "temperature": 0.7, "top_p": 0.9, "seed": 1,
///                 "stop": ["\n"], "repetition_penalty": 1.1, "chat_template": true},
///  "stream": true}
/// ```
///
/// `inputs` is one prompt or a list. Greedy unless `do_sample` is true or one of
/// `temperature` / `top_k` / `top_p` is given (as `adept generate`). T5 bundles take
/// `num_beams` and `length_penalty` instead of the sampling parameters.
pub fn read_request(
    body: &[u8],
    kind: GenKind,
    max_inputs: usize,
    max_new_tokens_limit: usize,
) -> Result<GenRequest, ApiError> {
    let mut obj = crate::api::json_object(body, GENERATE_SHAPE)?;
    let inputs = obj.remove("inputs").ok_or_else(|| {
        ApiError::unprocessable(format!(
            "the body has no \"inputs\" (it has {:?}); {GENERATE_SHAPE}",
            obj.keys().collect::<Vec<_>>()
        ))
    })?;
    let stream = match obj.remove("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ApiError::unprocessable("\"stream\" must be true or false")),
    };
    let p: Parameters = match obj.remove("parameters") {
        None | Some(Value::Null) => Parameters::default(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ApiError::unprocessable(format!("\"parameters\": {e}")))?,
    };
    if let Some(k) = obj.keys().next() {
        return Err(ApiError::unprocessable(format!(
            "unknown field {k:?} in the body: a generate request holds \"inputs\", \
             \"parameters\" and \"stream\" (generation settings go in \"parameters\")"
        )));
    }
    let not_a_prompt = |what: &str| {
        ApiError::unprocessable(format!(
            "\"inputs\" must be a prompt (a string) or a list of prompts; {what}"
        ))
    };
    let prompts: Vec<String> = match inputs {
        Value::String(p) => vec![p],
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(p) => Ok(p),
                other => Err(not_a_prompt(&format!("input {i} is {}", json_kind(&other)))),
            })
            .collect::<Result<_, _>>()?,
        other => return Err(not_a_prompt(&format!("got {}", json_kind(&other)))),
    };
    if prompts.is_empty() {
        return Err(ApiError::unprocessable(
            "\"inputs\" is empty: send at least one prompt",
        ));
    }
    crate::api::check_count(prompts.len(), max_inputs, "prompts")?;
    let max_new_tokens = p
        .max_new_tokens
        .unwrap_or(DEFAULT_MAX_NEW_TOKENS.min(max_new_tokens_limit));
    if max_new_tokens > max_new_tokens_limit {
        return Err(ApiError::unprocessable(format!(
            "max_new_tokens {max_new_tokens} is above this server's limit of \
             {max_new_tokens_limit} (its --max-new-tokens): ask for fewer"
        )));
    }
    let sampling = p.temperature.is_some() || p.top_k.is_some() || p.top_p.is_some();
    match kind {
        GenKind::Seq2Seq => {
            let given: Vec<&str> = [
                ("do_sample", p.do_sample == Some(true)),
                ("temperature", p.temperature.is_some()),
                ("top_k", p.top_k.is_some()),
                ("top_p", p.top_p.is_some()),
                ("repetition_penalty", p.repetition_penalty.is_some()),
                ("seed", p.seed.is_some()),
                ("stop", !p.stop.is_empty()),
                ("chat_template", p.chat_template),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            if !given.is_empty() {
                return Err(ApiError::unprocessable(format!(
                    "{given:?}: T5 bundles decode greedily or by beam search and take only \
                     max_new_tokens, num_beams and length_penalty"
                )));
            }
        }
        GenKind::CausalLm => {
            if p.num_beams.is_some() || p.length_penalty.is_some() {
                return Err(ApiError::unprocessable(
                    "num_beams and length_penalty apply to T5 bundles; a causal-LM bundle \
                     decodes greedily or samples (temperature, top_k, top_p)",
                ));
            }
        }
    }
    let config = GenerationConfig {
        max_new_tokens,
        temperature: p.temperature.unwrap_or(1.0),
        top_k: p.top_k.unwrap_or(0),
        top_p: p.top_p.unwrap_or(1.0),
        repetition_penalty: p.repetition_penalty.unwrap_or(1.0),
        seed: p.seed.unwrap_or(0),
        stop_strings: p.stop,
        eos_token_ids: Vec::new(),
        do_sample: p.do_sample.unwrap_or(sampling),
    };
    check_config(
        &config,
        "sampling that cold overflows; decode greedily instead (\"do_sample\": false)",
    )?;
    let num_beams = p.num_beams.unwrap_or(1);
    if num_beams == 0 || num_beams > MAX_BEAMS {
        return Err(ApiError::unprocessable(format!(
            "num_beams {num_beams} must be 1 (greedy) to {MAX_BEAMS} (beam search)"
        )));
    }
    let length_penalty = p.length_penalty.unwrap_or(1.0);
    if !length_penalty.is_finite() {
        return Err(ApiError::unprocessable(
            "length_penalty must be a finite number",
        ));
    }
    Ok(GenRequest {
        prompts,
        params: GenParams {
            config,
            num_beams,
            length_penalty,
        },
        chat_template: p.chat_template,
        stream,
        default_max_new_tokens: p.max_new_tokens.is_none(),
    })
}

/// The checks every generate route makes of a request's [`GenerationConfig`]: its own
/// `validate`, the sampling temperature's floor ([`MIN_TEMPERATURE`]; `greedy_hint` says how
/// the route asks for greedy decoding) and the stop strings' limits.
pub(crate) fn check_config(config: &GenerationConfig, greedy_hint: &str) -> Result<(), ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::unprocessable(format!("parameters: {e:#}")))?;
    if config.do_sample && config.temperature < MIN_TEMPERATURE {
        return Err(ApiError::unprocessable(format!(
            "temperature {} is below {MIN_TEMPERATURE}: {greedy_hint}",
            config.temperature
        )));
    }
    if config.stop_strings.len() > MAX_STOP_STRINGS
        || config.stop_strings.iter().any(|s| s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::unprocessable(format!(
            "\"stop\" takes at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_BYTES} bytes"
        )));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Which kind of generation bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenKind {
    /// A Llama-family decoder (`adept_export::decoder`).
    CausalLm,
    /// A T5 encoder–decoder (`adept_export::seq2seq`).
    #[serde(rename = "seq2seq")]
    Seq2Seq,
}

impl std::fmt::Display for GenKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CausalLm => "causal-lm",
            Self::Seq2Seq => "seq2seq",
        })
    }
}

/// What the handlers need of a generation bundle: its tokenizer and limits (the sessions stay
/// with the workers).
pub struct GenModel {
    pub kind: GenKind,
    pub dir: PathBuf,
    pub tokenizer: Tokenizer,
    detail: GenDetail,
    /// What `/v1/models` says of it (without the name and workers).
    pub info: Value,
}

enum GenDetail {
    Decoder(DecoderSpec),
    Seq2Seq(Box<Seq2SeqInfo>),
}

impl GenModel {
    /// From an opened decoder bundle.
    pub fn of_decoder(g: &Generator) -> Self {
        let s = &g.spec;
        let info = json!({
            "task": g.manifest.task,
            "kind": GenKind::CausalLm,
            "model_family": g.manifest.model_family,
            "method": g.manifest.method,
            "prompt_length": s.prompt_len,
            "fold": g.manifest.fold,
            "dtype": g.manifest.dtype,
            "vocab_size": s.vocab_size,
            "max_sequence_len": s.max_sequence_len,
            "eos_token_ids": s.eos_token_ids,
            "chat_template": s.chat_template.is_some(),
            "device": g.device,
            "bundle": g.dir,
        });
        Self {
            kind: GenKind::CausalLm,
            dir: g.dir.clone(),
            tokenizer: g.tokenizer.clone(),
            detail: GenDetail::Decoder(s.clone()),
            info,
        }
    }

    /// From an opened T5 bundle.
    pub fn of_seq2seq(b: &Seq2SeqBundle) -> Self {
        let i = &b.info;
        let info = json!({
            "task": i.task_kind,
            "kind": GenKind::Seq2Seq,
            "model_family": i.model_family,
            "method": i.method,
            "prompt_length": i.prompt_len,
            "fold": i.fold,
            "dtype": i.dtype,
            "vocab_size": i.vocab_size,
            "max_sequence_len": i.max_sequence_len,
            "eos_token_ids": [i.eos_token_id],
            "chat_template": false,
            "bundle": b.dir,
        });
        Self {
            kind: GenKind::Seq2Seq,
            dir: b.dir.clone(),
            tokenizer: b.tokenizer.clone(),
            detail: GenDetail::Seq2Seq(Box::new(i.clone())),
            info,
        }
    }

    /// The ids of every prompt of `req`. Decoder prompts must hold a token and fit the model
    /// with their `max_new_tokens` (a default one is lowered, in `req`, to what the longest
    /// prompt leaves room for); an error (422) names the prompt and what to change.
    pub fn encode(&self, req: &mut GenRequest) -> Result<Vec<Vec<u32>>, ApiError> {
        let rows = req
            .prompts
            .iter()
            .enumerate()
            .map(|(i, text)| {
                self.encode_one(text, req.chat_template)
                    .map_err(|e| ApiError::unprocessable(format!("prompt {i}: {e:#}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let GenDetail::Decoder(spec) = &self.detail {
            let room = |ids: &[u32]| {
                spec.max_sequence_len
                    .saturating_sub(spec.prompt_len + ids.len())
            };
            if req.default_max_new_tokens {
                let least = rows.iter().map(|r| room(r)).min().unwrap_or(0);
                let n = &mut req.params.config.max_new_tokens;
                *n = (*n).min(least).max(1);
            }
            let n = req.params.config.max_new_tokens;
            for (i, ids) in rows.iter().enumerate() {
                if ids.is_empty() {
                    return Err(ApiError::unprocessable(format!(
                        "prompt {i} is empty (this bundle adds no BOS token): send some text"
                    )));
                }
                if room(ids) < n {
                    let fix = if req.default_max_new_tokens {
                        "shorten the prompt: it leaves no room for a new token"
                    } else {
                        "shorten the prompt or ask for fewer new tokens"
                    };
                    return Err(ApiError::unprocessable(format!(
                        "prompt {i} has {} tokens; with the {}-row soft prompt and {n} new \
                         tokens that is {} positions, above the model's max_sequence_len {}: \
                         {fix}",
                        ids.len(),
                        spec.prompt_len,
                        spec.prompt_len + ids.len() + n,
                        spec.max_sequence_len
                    )));
                }
            }
        }
        Ok(rows)
    }

    /// A conversation of `(role, content)` turns through the bundle's chat template (decoder
    /// bundles that ship one).
    pub fn render_chat(&self, turns: &[(&str, &str)]) -> Result<String> {
        match &self.detail {
            GenDetail::Decoder(spec) => {
                apply_chat_messages(&self.tokenizer, spec, &self.dir, turns)
            }
            GenDetail::Seq2Seq(_) => anyhow::bail!(
                "T5 bundles have no chat template: send the source text to /v1/completions"
            ),
        }
    }

    fn encode_one(&self, text: &str, chat_template: bool) -> Result<Vec<u32>> {
        match &self.detail {
            GenDetail::Decoder(spec) => {
                let text = if chat_template {
                    apply_chat_template(&self.tokenizer, spec, &self.dir, text)?
                } else {
                    text.to_owned()
                };
                encode_prompt(&self.tokenizer, spec.bos_token_id, spec.vocab_size, &text)
            }
            // Long sources are cut as training cuts them; the decoder has no length limit.
            GenDetail::Seq2Seq(info) => encode_source(&self.tokenizer, info, text),
        }
    }
}

/// A generation model and its runners, one per worker.
pub type Opened = (GenModel, Vec<Box<dyn GenRunner>>);

/// Opens the bundle at `dir` `workers` times if it generates text (a decoder or T5 bundle):
/// what the handlers need of it, and one runner (session) per worker. `None` for a classifier
/// bundle.
pub fn open_generation(
    dir: &Path,
    runtime: &RuntimeOptions,
    workers: usize,
) -> Result<Option<Opened>> {
    let mut runners: Vec<Box<dyn GenRunner>> = Vec::with_capacity(workers);
    let mut model = None;
    if is_seq2seq_bundle(dir).unwrap_or(false) {
        let rt = ortlib::find_and_load_for(
            runtime.cache.as_deref(),
            runtime.ort_library.as_deref(),
            runtime.session.device,
        )?;
        for _ in 0..workers.max(1) {
            let bundle = Seq2SeqBundle::open(dir, rt, &runtime.session)?;
            model.get_or_insert_with(|| GenModel::of_seq2seq(&bundle));
            runners.push(Box::new(Seq2SeqRunner::new(bundle, runtime.batch_size)));
        }
    } else if BundleManifest::read(dir)?.decoder.is_some() {
        for _ in 0..workers.max(1) {
            let g = Generator::open(dir, runtime)?;
            if let Some(why) = &g.device_fallback {
                tracing::warn!("{}: {why}", dir.display());
            }
            model.get_or_insert_with(|| GenModel::of_decoder(&g));
            runners.push(Box::new(g));
        }
    }
    Ok(model.map(|m| (m, runners)))
}

/// One generated completion.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenOutput {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// Generated ids (an EOS that ended the row included).
    pub token_ids: Vec<u32>,
}

/// Where a run sends each row's text as it is decoded: `(row, piece)`.
pub type PieceSink<'a> = &'a mut dyn FnMut(usize, &str);

/// Generates with one session (each worker holds its own).
pub trait GenRunner: Send + 'static {
    /// The completions of `rows` (prompt ids, checked to fit) in order. With `Some(on_piece)`
    /// (some caller streams), `on_piece(row, text)` is called with each row's text as it is
    /// decoded (its pieces concatenate to the row's text); with `None` nobody listens, and a
    /// runner may skip decoding text step by step. When `stop()` turns true the run may end
    /// early with a [`Cancelled`] error.
    fn generate(
        &mut self,
        rows: &[Vec<u32>],
        params: &GenParams,
        on_piece: Option<PieceSink<'_>>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<GenOutput>>;
}

impl GenRunner for Generator {
    fn generate(
        &mut self,
        rows: &[Vec<u32>],
        params: &GenParams,
        on_piece: Option<PieceSink<'_>>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<GenOutput>> {
        // The generation loop decodes each step's text anyway (stop strings), so the pieces
        // cost nothing extra; with no listener they go nowhere.
        let mut nobody = |_: usize, _: &str| {};
        let on_piece = on_piece.unwrap_or(&mut nobody);
        let (gens, _) = self.generate_ids_until(rows, &params.config, true, on_piece, stop)?;
        Ok(gens
            .into_iter()
            .map(|g| GenOutput {
                text: g.text,
                finish_reason: g.finish_reason,
                prompt_tokens: g.prompt_tokens,
                token_ids: g.token_ids,
            })
            .collect())
    }
}

/// T5: greedy runs stream each row's text as its tokens are chosen (incremental detokenisation,
/// as for decoders); beam search, whose hypotheses reorder until the end, sends each row's
/// whole text once its batch is done. A run whose requests all left stops before the next
/// decoder step.
pub struct Seq2SeqRunner {
    bundle: Seq2SeqBundle,
    batch_size: usize,
    /// The bundle's tokenizer, for the streams (the bundle is borrowed by the search).
    tokenizer: adept_bundle::tokenizers::Tokenizer,
}

impl Seq2SeqRunner {
    /// Runs `bundle` in batches of `batch_size` rows.
    pub fn new(bundle: Seq2SeqBundle, batch_size: usize) -> Self {
        let tokenizer = bundle.tokenizer.clone();
        Self {
            bundle,
            batch_size,
            tokenizer,
        }
    }
}

impl GenRunner for Seq2SeqRunner {
    fn generate(
        &mut self,
        rows: &[Vec<u32>],
        params: &GenParams,
        mut on_piece: Option<PieceSink<'_>>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Vec<GenOutput>> {
        let opts = Seq2SeqGenerateOptions {
            max_new_tokens: params.config.max_new_tokens,
            num_beams: params.num_beams,
            length_penalty: params.length_penalty,
            mode: DecodeMode::Cached,
        };
        // Greedy text is decoded step by step only for a listener.
        let stream_steps = opts.num_beams <= 1 && on_piece.is_some();
        let eos = self.bundle.info.eos_token_id;
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.batch_size.max(1)) {
            let first = out.len();
            let tokenizer = &self.tokenizer;
            let mut streams = vec![adept_bundle::generate::StreamDecoder::new(&[]); chunk.len()];
            let mut closed = vec![false; chunk.len()];
            // A row whose text cannot be decoded fails the run at the next step.
            let failed = std::cell::RefCell::new(None);
            let mut on_tokens = |tokens: &[u32]| {
                let Some(sink) = on_piece.as_mut().filter(|_| stream_steps) else {
                    return;
                };
                for (r, &t) in tokens.iter().enumerate() {
                    // A row closed by EOS is fed the pad id from then on: not its text.
                    if closed[r] || failed.borrow().is_some() {
                        continue;
                    }
                    closed[r] = t == eos;
                    match streams[r].push(t, tokenizer) {
                        Ok((piece, _)) if !piece.is_empty() => sink(first + r, &piece),
                        Ok(_) => {}
                        Err(e) => *failed.borrow_mut() = Some(e),
                    }
                }
            };
            let stop_or_failed = || stop() || failed.borrow().is_some();
            let gens =
                self.bundle
                    .generate_streaming(chunk, &opts, &stop_or_failed, &mut on_tokens)?;
            if let Some(e) = failed.take() {
                return Err(e);
            }
            let Some(gens) = gens else {
                return Err(Cancelled.into());
            };
            for ((g, ids), stream) in gens.into_iter().zip(chunk).zip(&mut streams) {
                let text = self
                    .bundle
                    .tokenizer
                    .decode(&g.tokens, true)
                    .map_err(|e| anyhow::anyhow!("cannot decode {:?}: {e}", g.tokens))?;
                if let Some(sink) = on_piece.as_mut() {
                    if stream_steps {
                        // Whatever the stream held back (an incomplete character at the end).
                        let rest = stream.finish(&self.tokenizer)?;
                        if !rest.is_empty() {
                            sink(out.len(), &rest);
                        }
                    } else {
                        sink(out.len(), &text);
                    }
                }
                out.push(GenOutput {
                    text,
                    finish_reason: if g.tokens.last() == Some(&eos) {
                        FinishReason::Eos
                    } else {
                        FinishReason::Length
                    },
                    prompt_tokens: ids.len(),
                    token_ids: g.tokens,
                });
            }
        }
        Ok(out)
    }
}

/// What a queued generate request hears from its worker.
#[derive(Clone, Debug, PartialEq)]
pub enum GenEvent {
    /// More text of prompt `index`.
    Piece { index: usize, text: String },
    /// Every prompt's completion, in order (the last event).
    Done(Vec<GenOutput>),
    /// The run failed (the last event).
    Failed(String),
}

/// A queued generate request: its prompts' ids, its parameters and where its events go. The
/// events are unbounded but finite: at most `max_new_tokens` pieces per prompt (only when
/// `stream`) and one end.
pub struct GenJob {
    pub rows: Vec<Vec<u32>>,
    pub params: GenParams,
    pub stream: bool,
    pub events: UnboundedSender<GenEvent>,
}

impl Queued for GenJob {
    /// Rows of the batch: prompts × beams.
    fn inputs(&self) -> usize {
        self.rows.len() * self.params.num_beams.max(1)
    }
    fn cancelled(&self) -> bool {
        self.events.is_closed()
    }
}

/// The queue of one generation model and its workers.
pub type GenQueue = Queue<GenJob>;

impl GenQueue {
    /// Starts one worker thread per runner (one session each).
    pub fn start_generation(
        model: &str,
        runners: Vec<Box<dyn GenRunner>>,
        opts: BatchOptions,
        stats: Arc<ModelStats>,
    ) -> std::io::Result<Self> {
        let workers = runners
            .into_iter()
            .map(|mut runner| {
                let stats = stats.clone();
                move |jobs: Vec<GenJob>| generate_round(runner.as_mut(), jobs, &stats)
            })
            .collect();
        Self::start_with(model, workers, opts, stats)
    }

    /// Queues a request; the receiver gets its pieces (with `stream`), then `Done` or
    /// `Failed`. Dropping the receiver cancels the request: it is not run if still queued, and
    /// its run stops once no request in it is listening.
    pub fn submit_generation(
        &self,
        rows: Vec<Vec<u32>>,
        params: GenParams,
        stream: bool,
    ) -> Result<UnboundedReceiver<GenEvent>, crate::batcher::SubmitError> {
        let (events, rx) = unbounded_channel();
        self.push(GenJob {
            rows,
            params,
            stream,
            events,
        })?;
        Ok(rx)
    }
}

/// Runs one round: requests whose clients went away are dropped; the others with equal
/// parameters run together (in the order they came), each group as one call of the runner.
fn generate_round(runner: &mut dyn GenRunner, jobs: Vec<GenJob>, stats: &ModelStats) {
    let mut groups: Vec<Vec<GenJob>> = Vec::new();
    for job in jobs {
        // Its client went away while it was queued (the handler counted it).
        if job.cancelled() {
            continue;
        }
        match groups.iter_mut().find(|g| g[0].params == job.params) {
            Some(g) => g.push(job),
            None => groups.push(vec![job]),
        }
    }
    for group in groups {
        run_group(runner, group, stats, true);
    }
}

/// Runs `group` as one call and answers each job with its rows. The run stops when no job
/// is listening any more. If it fails, each job that has not been sent a piece yet is run
/// alone (`retry_alone`), so one bad request fails only itself; once a job alone fails the
/// same way, the failure is the model's, and the rest fail without a run. Returns the
/// failure, if any.
fn run_group(
    runner: &mut dyn GenRunner,
    group: Vec<GenJob>,
    stats: &ModelStats,
    retry_alone: bool,
) -> Option<String> {
    // Row r of the call is prompt k of job j: owner[r] = (j, k).
    let mut owner = Vec::new();
    let mut rows = Vec::new();
    for (j, job) in group.iter().enumerate() {
        for (k, r) in job.rows.iter().enumerate() {
            owner.push((j, k));
            rows.push(r.clone());
        }
    }
    let mut sent = vec![false; group.len()];
    let stop = || group.iter().all(|j| j.events.is_closed());
    let streams = group.iter().any(|j| j.stream);
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut on_piece = |row: usize, piece: &str| {
            if let Some(&(j, k)) = owner.get(row) {
                if group[j].stream {
                    sent[j] = true;
                    // A client that went away dropped its receiver: nothing to send.
                    let _ = group[j].events.send(GenEvent::Piece {
                        index: k,
                        text: piece.to_owned(),
                    });
                }
            }
        };
        let on_piece: Option<PieceSink<'_>> = if streams { Some(&mut on_piece) } else { None };
        runner.generate(&rows, &group[0].params, on_piece, &stop)
    }));
    stats
        .run_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    stats.runs.fetch_add(1, Ordering::Relaxed);
    let outcome = match result {
        Ok(Ok(outs)) if outs.len() == rows.len() => Ok(outs),
        Ok(Ok(outs)) => Err(format!(
            "the model returned {} completions for {} prompts",
            outs.len(),
            rows.len()
        )),
        // Every client of the group went away (the handlers count them).
        Ok(Err(e)) if e.downcast_ref::<Cancelled>().is_some() => return None,
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(format!(
            "the model panicked: {}",
            panic_message(panic.as_ref())
        )),
    };
    match outcome {
        Ok(outs) => {
            // The run's prompts are padded to its longest (left for a decoder, right for a
            // T5 encoder) and prefilled together.
            let prompt_tokens: usize = rows.iter().map(Vec::len).sum();
            let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
            let new_tokens: usize = outs.iter().map(|o| o.token_ids.len()).sum();
            stats
                .real_tokens
                .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
            stats.padded_tokens.fetch_add(
                (longest * rows.len() - prompt_tokens) as u64,
                Ordering::Relaxed,
            );
            stats
                .new_tokens
                .fetch_add(new_tokens as u64, Ordering::Relaxed);
            let mut outs = outs.into_iter();
            for job in group {
                let mine = outs.by_ref().take(job.rows.len()).collect();
                let _ = job.events.send(GenEvent::Done(mine));
            }
            None
        }
        Err(why) if retry_alone && group.len() > 1 => {
            tracing::warn!(
                "a generation run of {} requests failed ({why}); running them one by one",
                group.len()
            );
            let mut systemic = false;
            for (job, was_sent) in group.into_iter().zip(sent) {
                if was_sent || systemic {
                    // Its client has text of the failed run already (it cannot start again),
                    // or the model fails whatever it runs.
                    let _ = job.events.send(GenEvent::Failed(why.clone()));
                } else if run_group(runner, vec![job], stats, false).as_deref() == Some(&why) {
                    systemic = true;
                }
            }
            Some(why)
        }
        Err(why) => {
            tracing::error!("a generation run failed: {why}");
            for job in group {
                let _ = job.events.send(GenEvent::Failed(why.clone()));
            }
            Some(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn read(body: &str, kind: GenKind) -> Result<GenRequest, ApiError> {
        read_request(body.as_bytes(), kind, 4, 100)
    }

    #[test]
    fn requests_read_with_defaults_sampling_and_limits() {
        let r = read(r#"{"inputs": "hello"}"#, GenKind::CausalLm).unwrap();
        assert_eq!(r.prompts, vec!["hello"]);
        assert_eq!(r.params.config.max_new_tokens, DEFAULT_MAX_NEW_TOKENS);
        assert!(r.default_max_new_tokens);
        assert!(!r.params.config.do_sample && !r.stream && !r.chat_template);
        let r = read(
            r#"{"inputs": ["a", "b"], "parameters": {"temperature": 0.5, "seed": 3,
                "stop": ["\n"], "max_new_tokens": 7, "chat_template": true}, "stream": true}"#,
            GenKind::CausalLm,
        )
        .unwrap();
        assert_eq!(r.prompts.len(), 2);
        let c = &r.params.config;
        assert!(c.do_sample && c.temperature == 0.5 && c.seed == 3 && c.max_new_tokens == 7);
        assert_eq!(c.stop_strings, vec!["\n"]);
        assert!(r.stream && r.chat_template && !r.default_max_new_tokens);
        // An explicit do_sample false wins over the sampling parameters.
        let r = read(
            r#"{"inputs": "a", "parameters": {"top_k": 5, "do_sample": false}}"#,
            GenKind::CausalLm,
        )
        .unwrap();
        assert!(!r.params.config.do_sample);
        let r = read(
            r#"{"inputs": "a", "parameters": {"num_beams": 3, "length_penalty": 0.5}}"#,
            GenKind::Seq2Seq,
        )
        .unwrap();
        assert_eq!((r.params.num_beams, r.params.length_penalty), (3, 0.5));
        // The default is capped by a lower server limit.
        let r = read_request(br#"{"inputs": "a"}"#, GenKind::CausalLm, 4, 10).unwrap();
        assert_eq!(r.params.config.max_new_tokens, 10);
    }

    #[test]
    fn bad_requests_are_refused_with_what_to_do() {
        let lm = GenKind::CausalLm;
        let cases: [(&str, GenKind, u16, &str); 17] = [
            ("not json", lm, 400, "not JSON"),
            (r#"["a"]"#, lm, 422, "a JSON array, not an object"),
            (r#"{"prompt": "a"}"#, lm, 422, "has no \"inputs\""),
            (
                r#"{"inputs": "a", "max_new_tokens": 2}"#,
                lm,
                422,
                "go in \"parameters\"",
            ),
            (r#"{"inputs": []}"#, lm, 422, "empty"),
            (
                r#"{"inputs": ["a","b","c","d","e"]}"#,
                lm,
                413,
                "--max-inputs",
            ),
            (r#"{"inputs": 3}"#, lm, 422, "got a number"),
            (
                r#"{"inputs": ["a", {"text": "b"}]}"#,
                lm,
                422,
                "input 1 is an object",
            ),
            (
                r#"{"inputs": "a", "stream": "yes"}"#,
                lm,
                422,
                "true or false",
            ),
            (
                r#"{"inputs": "a", "parameters": {"max_new_tokens": 101}}"#,
                lm,
                422,
                "limit of 100",
            ),
            (
                r#"{"inputs": "a", "parameters": {"max_new_tokens": 0}}"#,
                lm,
                422,
                "max_new_tokens",
            ),
            (
                r#"{"inputs": "a", "parameters": {"temperature": 1e-30}}"#,
                lm,
                422,
                "greedily",
            ),
            (
                r#"{"inputs": "a", "parameters": {"top_p": 1.5}}"#,
                lm,
                422,
                "top_p",
            ),
            (
                r#"{"inputs": "a", "parameters": {"tmperature": 1}}"#,
                lm,
                422,
                "tmperature",
            ),
            (
                r#"{"inputs": "a", "parameters": {"num_beams": 2}}"#,
                lm,
                422,
                "T5",
            ),
            (
                r#"{"inputs": "a", "parameters": {"num_beams": 17}}"#,
                GenKind::Seq2Seq,
                422,
                "1 (greedy) to 16",
            ),
            (
                r#"{"inputs": "a", "parameters": {"temperature": 0.7}}"#,
                GenKind::Seq2Seq,
                422,
                "temperature",
            ),
        ];
        for (body, kind, status, says) in cases {
            let e = read(body, kind).unwrap_err();
            assert_eq!(e.status.as_u16(), status, "{body}: {e:?}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
        let many_stops = format!(
            r#"{{"inputs": "a", "parameters": {{"stop": {:?}}}}}"#,
            vec!["x"; 17]
        );
        assert!(read(&many_stops, lm)
            .unwrap_err()
            .message
            .contains("at most 16"));
    }

    /// Completes each row with its own first id repeated `max_new_tokens` times, one piece per
    /// token; records the rows of each call; fails a call holding a row that starts with 666,
    /// panics on 777; checks `stop` before every token and ends with `Cancelled` when it says
    /// so (after waiting for `gate`, when set).
    #[derive(Default)]
    struct Echo {
        calls: Arc<Mutex<Vec<usize>>>,
        /// Per call: whether it was given a piece listener.
        listened: Arc<Mutex<Vec<bool>>>,
        gate: Option<Arc<std::sync::Barrier>>,
        /// Tokens produced, all calls.
        tokens: Arc<Mutex<usize>>,
    }

    impl GenRunner for Echo {
        fn generate(
            &mut self,
            rows: &[Vec<u32>],
            params: &GenParams,
            mut on_piece: Option<PieceSink<'_>>,
            stop: &dyn Fn() -> bool,
        ) -> Result<Vec<GenOutput>> {
            self.calls.lock().unwrap().push(rows.len());
            self.listened.lock().unwrap().push(on_piece.is_some());
            if rows.iter().any(|r| r[0] == 777) {
                panic!("row 777");
            }
            anyhow::ensure!(rows.iter().all(|r| r[0] != 666), "row 666 is bad");
            if let Some(g) = &self.gate {
                g.wait();
                g.wait();
            }
            let n = params.config.max_new_tokens;
            for _ in 0..n {
                if stop() {
                    return Err(Cancelled.into());
                }
                *self.tokens.lock().unwrap() += 1;
                if let Some(sink) = on_piece.as_mut() {
                    for (i, r) in rows.iter().enumerate() {
                        sink(i, &format!("{} ", r[0]));
                    }
                }
            }
            Ok(rows
                .iter()
                .map(|r| GenOutput {
                    text: format!("{} ", r[0]).repeat(n),
                    finish_reason: FinishReason::Length,
                    prompt_tokens: r.len(),
                    token_ids: vec![r[0]; n],
                })
                .collect())
        }
    }

    fn params(n: usize) -> GenParams {
        GenParams {
            config: GenerationConfig {
                max_new_tokens: n,
                ..Default::default()
            },
            num_beams: 1,
            length_penalty: 1.0,
        }
    }

    fn drain(mut rx: UnboundedReceiver<GenEvent>) -> (Vec<(usize, String)>, GenEvent) {
        let mut pieces = Vec::new();
        loop {
            match rx.blocking_recv().expect("an end event") {
                GenEvent::Piece { index, text } => pieces.push((index, text)),
                end => return (pieces, end),
            }
        }
    }

    fn job(rows: Vec<Vec<u32>>, n: usize, stream: bool) -> (GenJob, UnboundedReceiver<GenEvent>) {
        let (events, rx) = unbounded_channel();
        let job = GenJob {
            rows,
            params: params(n),
            stream,
            events,
        };
        (job, rx)
    }

    #[test]
    fn a_round_groups_equal_parameters_streams_each_request_its_rows_and_isolates_failures() {
        let stats = Arc::new(ModelStats::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut echo = Echo {
            calls: calls.clone(),
            ..Default::default()
        };
        // Run one round by hand (the queue's thread does the same).
        let mut rxs = Vec::new();
        let mut jobs = Vec::new();
        for (rows, n, stream) in [
            (vec![vec![1, 9], vec![2]], 2, true),
            (vec![vec![3]], 3, true),
            (vec![vec![4, 4, 4]], 2, false),
            (vec![vec![666]], 3, true),
        ] {
            let (j, rx) = job(rows, n, stream);
            jobs.push(j);
            rxs.push(rx);
        }
        generate_round(&mut echo, jobs, &stats);
        // Two groups: max_new_tokens 2 (jobs 0 and 2: 3 rows), 3 (jobs 1 and 3: 2 rows); the
        // second fails before any piece, so its jobs run again one by one.
        assert_eq!(*calls.lock().unwrap(), vec![3, 2, 1, 1]);
        let ends: Vec<_> = rxs.into_iter().map(drain).collect();
        let (pieces, end) = &ends[0];
        assert_eq!(
            pieces,
            &vec![
                (0, "1 ".into()),
                (1, "2 ".into()),
                (0, "1 ".into()),
                (1, "2 ".into())
            ]
        );
        let GenEvent::Done(outs) = end else {
            panic!("{end:?}")
        };
        assert_eq!(outs.len(), 2);
        assert_eq!((outs[0].text.as_str(), outs[0].prompt_tokens), ("1 1 ", 2));
        assert_eq!(outs[1].token_ids, vec![2, 2]);
        // Job 2 did not ask to stream: no pieces, only its answer.
        assert!(ends[2].0.is_empty());
        assert!(matches!(&ends[2].1, GenEvent::Done(o) if o[0].text == "4 4 "));
        // Job 1 shared its group with the failing job 3 and is answered on its own run.
        assert_eq!(ends[1].0.len(), 3);
        assert!(matches!(&ends[1].1, GenEvent::Done(o) if o[0].text == "3 3 3 "));
        assert!(ends[3].0.is_empty());
        assert_eq!(ends[3].1, GenEvent::Failed("row 666 is bad".into()));
        assert_eq!(stats.runs.load(Ordering::Relaxed), 4);
        assert_eq!(stats.new_tokens.load(Ordering::Relaxed), 3 * 2 + 3);
        // Prompts of the answered runs: [1, 9], [2], [4, 4, 4] padded to 3 (6 real, 3 padding),
        // then [3] alone; the failed runs count nothing.
        let s = stats.snapshot();
        assert_eq!((s.real_tokens, s.padded_tokens), (7, 3));
        assert_eq!(s.padding_fraction, 0.3);
    }

    #[test]
    fn a_runner_gets_a_piece_listener_only_when_a_request_of_its_run_streams() {
        let stats = Arc::new(ModelStats::default());
        let listened = Arc::new(Mutex::new(Vec::new()));
        let mut echo = Echo {
            listened: listened.clone(),
            ..Default::default()
        };
        // One run of two requests neither of which streams, then one of two where one does.
        for streams in [[false, false], [false, true]] {
            let mut rxs = Vec::new();
            let mut jobs = Vec::new();
            for (i, stream) in streams.into_iter().enumerate() {
                let (j, rx) = job(vec![vec![i as u32 + 1]], 2, stream);
                jobs.push(j);
                rxs.push(rx);
            }
            generate_round(&mut echo, jobs, &stats);
            for (rx, stream) in rxs.into_iter().zip(streams) {
                let (pieces, end) = drain(rx);
                assert_eq!(pieces.len(), if stream { 2 } else { 0 });
                assert!(matches!(end, GenEvent::Done(_)), "{end:?}");
            }
        }
        assert_eq!(*listened.lock().unwrap(), vec![false, true]);
    }

    #[test]
    fn a_failure_every_request_meets_alone_is_not_retried_for_each() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut echo = Echo {
            calls: calls.clone(),
            ..Default::default()
        };
        let (jobs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| job(vec![vec![666]], 2, true)).unzip();
        generate_round(&mut echo, jobs, &ModelStats::default());
        // The batch, then the first request alone: the same failure, so the model's.
        assert_eq!(*calls.lock().unwrap(), vec![4, 1]);
        for rx in rxs {
            assert_eq!(drain(rx).1, GenEvent::Failed("row 666 is bad".into()));
        }
    }

    #[test]
    fn requests_whose_clients_left_are_not_run_and_a_run_nobody_listens_to_stops() {
        let stats = Arc::new(ModelStats::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut echo = Echo {
            calls: calls.clone(),
            ..Default::default()
        };
        let (gone, rx) = job(vec![vec![1]], 2, true);
        drop(rx);
        let (kept, rx) = job(vec![vec![2]], 2, true);
        generate_round(&mut echo, vec![gone, kept], &stats);
        assert_eq!(
            *calls.lock().unwrap(),
            vec![1],
            "only the listened-to job ran"
        );
        assert!(matches!(drain(rx).1, GenEvent::Done(_)));
        // A run whose only client leaves mid-run ends at the next token, answering nobody.
        let gate = Arc::new(std::sync::Barrier::new(2));
        let tokens = Arc::new(Mutex::new(0));
        let mut held = Echo {
            calls: calls.clone(),
            gate: Some(gate.clone()),
            tokens: tokens.clone(),
            ..Default::default()
        };
        let (j, rx) = job(vec![vec![3]], 1000, true);
        let t = std::thread::spawn(move || generate_round(&mut held, vec![j], &stats));
        gate.wait(); // inside the run
        drop(rx);
        gate.wait();
        t.join().unwrap();
        assert_eq!(
            *tokens.lock().unwrap(),
            0,
            "the run went on after its client left"
        );
    }

    #[test]
    fn the_queue_answers_through_its_worker_and_a_panic_fails_only_its_round() {
        let stats = Arc::new(ModelStats::default());
        let opts = BatchOptions {
            max_batch: 8,
            max_queue: 4,
            ..Default::default()
        };
        let q =
            GenQueue::start_generation("t", vec![Box::new(Echo::default())], opts, stats.clone())
                .unwrap();
        let (_, end) = drain(
            q.submit_generation(vec![vec![777]], params(1), true)
                .unwrap(),
        );
        assert!(
            matches!(&end, GenEvent::Failed(m) if m.contains("panicked") && m.contains("777")),
            "{end:?}"
        );
        let (pieces, end) = drain(q.submit_generation(vec![vec![5]], params(2), true).unwrap());
        assert_eq!(pieces.len(), 2);
        assert!(
            matches!(&end, GenEvent::Done(o) if o[0].text == "5 5 "),
            "{end:?}"
        );
        // Five prompts never fit a queue of four, nor two prompts of three beams: too large
        // (not busy, which a client would retry forever); four prompts fit.
        assert_eq!(
            q.submit_generation(vec![vec![1]; 5], params(1), false)
                .unwrap_err(),
            crate::batcher::SubmitError::TooLarge {
                wanted: 5,
                capacity: 4,
            }
        );
        let mut beams = params(1);
        beams.num_beams = 3;
        assert_eq!(
            q.submit_generation(vec![vec![1]; 2], beams, false)
                .unwrap_err(),
            crate::batcher::SubmitError::TooLarge {
                wanted: 6,
                capacity: 4,
            }
        );
        let (_, end) = drain(
            q.submit_generation(vec![vec![1]; 4], params(1), false)
                .unwrap(),
        );
        assert!(matches!(&end, GenEvent::Done(o) if o.len() == 4), "{end:?}");
        q.shutdown();
        assert_eq!(
            q.submit_generation(vec![vec![1]], params(1), false)
                .unwrap_err(),
            crate::batcher::SubmitError::Stopped
        );
        assert_eq!(stats.workers_alive.load(Ordering::Relaxed), 0);
    }
}
