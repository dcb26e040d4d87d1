//! Serving a seq2seq (T5) bundle written by `adept_export::seq2seq`: the encoder runs once, then
//! greedy decoding or beam search over the cached decoder graph, batched.
//!
//! The bundle: `encoder_model.onnx` (`input_ids`, `attention_mask` → `last_hidden_state`,
//! `encoder_attention_mask`: the soft prompt is prepended inside the graph),
//! `decoder_model.onnx` (`input_ids`, `encoder_attention_mask`, `encoder_hidden_states`,
//! `past_key_values.{i}.decoder|encoder.key|value` → `logits`, `present.*`), `tokenizer.json`
//! and `adept.json` (the typed [`adept_bundle::Seq2SeqManifest`], validated when opened).
//!
//! The first decoder step gets empty pasts (`[n, heads, 0, d_kv]`) and the graph computes the
//! cross-attention keys/values from the encoder output; later steps feed both presents back.
//! Search follows Hugging Face `generate` (`do_sample=False`) as `adept_backbones::t5::generate`
//! does: greedy takes the arg-max (first index on ties) and stops a row at EOS; beam search
//! keeps `num_beams` beams per row, collects finished hypotheses scored
//! `sum logp / len^length_penalty`, and stops a row by HF's `early_stopping=False` heuristic.
//! [`DecodeMode::Uncached`] runs the whole decoder prefix every step (empty pasts), for
//! checking and benchmarking the cache.
//!
//! Per-token decode time on tiny-t5-v11 (batch 1, one ONNX Runtime CPU thread, shared 2-core
//! machine; `bench_t5_decode_per_token` in adept-e2e), 8 / 32 / 128 new tokens: cached 119 /
//! 121 / 149 µs, uncached 142 / 166 / 477 µs. The cached cost stays nearly flat (what grows is
//! the attention over the past and the host copies of the cache, which this runtime makes
//! every step: outputs are copied out and fed back, and reordered on the host for beams).

use crate::ortlib::OrtRuntime;
use crate::session::{build_session, SessionConfig};
use adept_bundle::search::{BeamSearch, Greedy, Scored};
use adept_bundle::tokenizers::Tokenizer;
use anyhow::{bail, ensure, Context, Result};
use ort::session::Session;
use ort::value::{DynTensor, Tensor as OrtTensor};
use std::path::{Path, PathBuf};

/// A seq2seq bundle's `adept.json`: [`adept_bundle::Seq2SeqManifest`] (typed and validated
/// there, written by `adept_export::seq2seq`).
pub type Seq2SeqInfo = adept_bundle::Seq2SeqManifest;

/// How the decoder runs each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// One new token per row per step, with the key/value cache.
    #[default]
    Cached,
    /// The whole decoder prefix every step, empty pasts (what the cache saves).
    Uncached,
}

/// How to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seq2SeqGenerateOptions {
    /// Most tokens generated per row (EOS included).
    pub max_new_tokens: usize,
    /// 1 = greedy; more = beam search with that many beams.
    pub num_beams: usize,
    /// HF's `length_penalty` (exponent of the generated length dividing finished scores).
    pub length_penalty: f32,
    pub mode: DecodeMode,
}

impl Default for Seq2SeqGenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            num_beams: 1,
            length_penalty: 1.0,
            mode: DecodeMode::Cached,
        }
    }
}

/// One generated sequence: tokens without the decoder start token, ending with EOS when the
/// row stopped there; score = summed log probabilities (beam: divided by `len^length_penalty`).
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub score: f32,
}

/// The encoder's output for a batch: `hidden [b, len, d]` and `mask [b, len]` (prompt rows
/// included), flat.
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    pub hidden: Vec<f32>,
    pub mask: Vec<i64>,
    pub batch: usize,
    pub len: usize,
    pub d: usize,
}

impl EncoderOutput {
    /// Rows `rows` of the batch (repeats allowed: beam expansion).
    pub fn select(&self, rows: &[usize]) -> Self {
        let (l, d) = (self.len, self.d);
        let mut hidden = Vec::with_capacity(rows.len() * l * d);
        let mut mask = Vec::with_capacity(rows.len() * l);
        for &r in rows {
            hidden.extend_from_slice(&self.hidden[r * l * d..(r + 1) * l * d]);
            mask.extend_from_slice(&self.mask[r * l..(r + 1) * l]);
        }
        Self {
            hidden,
            mask,
            batch: rows.len(),
            len: l,
            d,
        }
    }
}

/// The decoder cache on the host, per layer `(key, value)` flat `[n, heads, len, d_kv]`.
#[derive(Clone, Debug, Default)]
pub struct DecoderCache {
    pub self_kv: Vec<(Vec<f32>, Vec<f32>)>,
    pub cross_kv: Vec<(Vec<f32>, Vec<f32>)>,
    /// Decoder positions held.
    pub past: usize,
    /// Encoder rows held (0 before the first step).
    pub enc_len: usize,
}

/// Logits of one decoder run: `[n, t, vocab]` flat.
pub struct StepOutput {
    pub logits: Vec<f32>,
    pub t: usize,
    pub cache: DecoderCache,
}

/// An opened seq2seq bundle.
pub struct Seq2SeqBundle {
    pub dir: PathBuf,
    pub info: Seq2SeqInfo,
    pub encoder: Session,
    pub decoder: Session,
    pub tokenizer: Tokenizer,
}

impl Seq2SeqBundle {
    /// Opens the bundle at `dir`: reads and validates `adept.json` (errors name the file and
    /// the field), checks the files' sha256, loads the tokenizer and creates both sessions with `cfg`.
    pub fn open(dir: &Path, rt: &OrtRuntime, cfg: &SessionConfig) -> Result<Self> {
        let info = Seq2SeqInfo::read(dir)?;
        info.verify_files(dir)?;
        let tok_path = dir.join(&info.tokenizer);
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| {
            anyhow::anyhow!("cannot load the tokenizer {}: {e}", tok_path.display())
        })?;
        let encoder = build_session(rt, &dir.join(&info.encoder.file), cfg)?.session;
        let decoder = build_session(rt, &dir.join(&info.decoder.file), cfg)?.session;
        Ok(Self {
            dir: dir.to_owned(),
            info,
            encoder,
            decoder,
            tokenizer,
        })
    }

    /// Runs the encoder on token rows (right-padded with the pad id here; the prompt is
    /// prepended by the graph).
    pub fn encode(&mut self, ids: &[Vec<u32>]) -> Result<EncoderOutput> {
        ensure!(!ids.is_empty(), "no inputs to encode");
        let b = ids.len();
        let s = ids.iter().map(Vec::len).max().unwrap_or(0);
        ensure!(
            s > 0,
            "every input is empty (tokenize with the special tokens)"
        );
        let l = self.info.prompt_len;
        ensure!(
            l + s <= self.info.max_sequence_len,
            "the longest input has {s} tokens; with the {l}-row prompt that exceeds the model's \
             {} positions: truncate the inputs",
            self.info.max_sequence_len
        );
        let vocab = self.info.vocab_size as u32;
        let mut flat = vec![self.info.pad_token_id as i64; b * s];
        let mut mask = vec![0i64; b * s];
        for (r, row) in ids.iter().enumerate() {
            for (j, &t) in row.iter().enumerate() {
                ensure!(
                    t < vocab,
                    "token id {t} (row {r}) is outside the vocabulary ({vocab})"
                );
                flat[r * s + j] = t as i64;
                mask[r * s + j] = 1;
            }
        }
        let out = self.encoder.run(vec![
            ("input_ids", OrtTensor::from_array(([b, s], flat))?.upcast()),
            (
                "attention_mask",
                OrtTensor::from_array(([b, s], mask))?.upcast(),
            ),
        ])?;
        let (shape, hidden) = out["last_hidden_state"].try_extract_tensor::<f32>()?;
        ensure!(
            shape.len() == 3 && shape[0] as usize == b,
            "the encoder returned last_hidden_state {shape:?}, expected [{b}, {}, d]",
            l + s
        );
        let (len, d) = (shape[1] as usize, shape[2] as usize);
        let hidden = hidden.to_vec();
        let (_, m) = out["encoder_attention_mask"].try_extract_tensor::<i64>()?;
        Ok(EncoderOutput {
            hidden,
            mask: m.to_vec(),
            batch: b,
            len,
            d,
        })
    }

    /// One decoder run over `ids [n, t]` (flat) with `cache` (empty: first step); returns the
    /// logits and the new cache.
    pub fn decoder_step(
        &mut self,
        enc: &EncoderOutput,
        ids: &[i64],
        cache: &DecoderCache,
    ) -> Result<StepOutput> {
        let n = enc.batch;
        ensure!(
            n > 0 && ids.len().is_multiple_of(n),
            "{} decoder ids for {n} rows",
            ids.len()
        );
        let t = ids.len() / n;
        let (h, dk, layers) = (
            self.info.num_heads,
            self.info.d_kv,
            self.info.num_decoder_layers,
        );
        let mut inputs: Vec<(String, DynTensor)> = vec![
            (
                "input_ids".into(),
                OrtTensor::from_array(([n, t], ids.to_vec()))?.upcast(),
            ),
            (
                "encoder_attention_mask".into(),
                OrtTensor::from_array(([n, enc.len], enc.mask.clone()))?.upcast(),
            ),
            (
                "encoder_hidden_states".into(),
                OrtTensor::from_array(([n, enc.len, enc.d], enc.hidden.clone()))?.upcast(),
            ),
        ];
        let kv = |v: Option<&Vec<f32>>, len: usize| -> Result<DynTensor> {
            Ok(OrtTensor::from_array(([n, h, len, dk], v.cloned().unwrap_or_default()))?.upcast())
        };
        for i in 0..layers {
            for (kind, list, len) in [
                ("decoder", &cache.self_kv, cache.past),
                ("encoder", &cache.cross_kv, cache.enc_len),
            ] {
                let pair = list.get(i);
                inputs.push((
                    format!("past_key_values.{i}.{kind}.key"),
                    kv(pair.map(|p| &p.0), len)?,
                ));
                inputs.push((
                    format!("past_key_values.{i}.{kind}.value"),
                    kv(pair.map(|p| &p.1), len)?,
                ));
            }
        }
        let out = self.decoder.run(inputs)?;
        let (shape, logits) = out["logits"].try_extract_tensor::<f32>()?;
        ensure!(
            shape[..] == [n as i64, t as i64, self.info.vocab_size as i64],
            "the decoder returned logits {shape:?}, expected [{n}, {t}, {}]",
            self.info.vocab_size
        );
        let logits = logits.to_vec();
        let mut next = DecoderCache {
            past: cache.past + t,
            enc_len: enc.len,
            ..Default::default()
        };
        for i in 0..layers {
            let get = |name: String| -> Result<Vec<f32>> {
                Ok(out[name.as_str()].try_extract_tensor::<f32>()?.1.to_vec())
            };
            next.self_kv.push((
                get(format!("present.{i}.decoder.key"))?,
                get(format!("present.{i}.decoder.value"))?,
            ));
            next.cross_kv.push((
                get(format!("present.{i}.encoder.key"))?,
                get(format!("present.{i}.encoder.value"))?,
            ));
        }
        Ok(StepOutput {
            logits,
            t,
            cache: next,
        })
    }

    /// Tokenizes `texts` (with the tokenizer's special tokens: T5 appends `</s>`), generates,
    /// and decodes each hypothesis (special tokens skipped). Returns `(tokens, text)` per input.
    pub fn generate_text(
        &mut self,
        texts: &[&str],
        opts: &Seq2SeqGenerateOptions,
    ) -> Result<Vec<(Generated, String)>> {
        let ids = texts
            .iter()
            .map(|t| encode_source(&self.tokenizer, &self.info, t))
            .collect::<Result<Vec<_>>>()?;
        let gens = self.generate(&ids, opts)?;
        gens.into_iter()
            .map(|g| {
                let text = self
                    .tokenizer
                    .decode(&g.tokens, true)
                    .map_err(|e| anyhow::anyhow!("cannot decode {:?}: {e}", g.tokens))?;
                Ok((g, text))
            })
            .collect()
    }

    /// Encodes `ids` (token rows) and generates one hypothesis per row.
    pub fn generate(
        &mut self,
        ids: &[Vec<u32>],
        opts: &Seq2SeqGenerateOptions,
    ) -> Result<Vec<Generated>> {
        Ok(self
            .generate_until(ids, opts, &|| false)?
            .expect("a search that is never stopped finishes"))
    }

    /// [`generate`](Self::generate), asking `stop()` before the encoder and before each decoder
    /// step: `None` as soon as it says true (a server whose clients left stops the batch there,
    /// not after `max_new_tokens` steps).
    pub fn generate_until(
        &mut self,
        ids: &[Vec<u32>],
        opts: &Seq2SeqGenerateOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<Generated>>> {
        self.generate_streaming(ids, opts, stop, &mut |_| {})
    }

    /// [`generate_until`](Self::generate_until) that also hands each greedy step's tokens to
    /// `on_tokens` (`[rows]`: the token each row appended, or, for a row already closed by EOS,
    /// the pad id it is fed), as they are chosen. Beam search calls it never: its hypotheses
    /// reorder until the end.
    pub fn generate_streaming(
        &mut self,
        ids: &[Vec<u32>],
        opts: &Seq2SeqGenerateOptions,
        stop: &dyn Fn() -> bool,
        on_tokens: &mut dyn FnMut(&[u32]),
    ) -> Result<Option<Vec<Generated>>> {
        if stop() {
            return Ok(None);
        }
        let enc = self.encode(ids)?;
        if opts.num_beams <= 1 {
            self.greedy(&enc, opts, stop, on_tokens)
        } else {
            self.beam_search(&enc, opts, stop)
        }
    }

    /// Log-probabilities of the next token of each row after appending `next` (one token per
    /// row), updating `state`.
    fn step(
        &mut self,
        enc: &EncoderOutput,
        next: &[u32],
        state: &mut SearchState,
    ) -> Result<Vec<Vec<f32>>> {
        for (seq, &t) in state.seqs.iter_mut().zip(next) {
            seq.push(t as i64);
        }
        let v = self.info.vocab_size;
        let (out, keep) = match state.mode {
            DecodeMode::Cached => {
                let ids: Vec<i64> = next.iter().map(|&t| t as i64).collect();
                let out = self.decoder_step(enc, &ids, &state.cache)?;
                (out, true)
            }
            DecodeMode::Uncached => {
                let ids: Vec<i64> = state.seqs.concat();
                (
                    self.decoder_step(enc, &ids, &DecoderCache::default())?,
                    false,
                )
            }
        };
        let t = out.t;
        let rows = (0..enc.batch)
            .map(|r| {
                let last = &out.logits[(r * t + t - 1) * v..(r * t + t) * v];
                log_softmax(last)
            })
            .collect();
        if keep {
            state.cache = out.cache;
        }
        Ok(rows)
    }

    fn greedy(
        &mut self,
        enc: &EncoderOutput,
        opts: &Seq2SeqGenerateOptions,
        stop: &dyn Fn() -> bool,
        on_tokens: &mut dyn FnMut(&[u32]),
    ) -> Result<Option<Vec<Generated>>> {
        let info = &self.info;
        let start = info.decoder_start_token_id;
        let mut search = Greedy::new(enc.batch, start, info.eos_token_id, info.pad_token_id);
        let mut state = SearchState::new(opts.mode, enc.batch);
        for _ in 0..opts.max_new_tokens {
            if stop() {
                return Ok(None);
            }
            let logp = self.step(enc, search.next_tokens(), &mut state)?;
            let all_done = search.step(&logp);
            on_tokens(search.next_tokens());
            if all_done {
                break;
            }
        }
        Ok(Some(generated(search.finish())))
    }

    fn beam_search(
        &mut self,
        enc: &EncoderOutput,
        opts: &Seq2SeqGenerateOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<Generated>>> {
        let b = enc.batch;
        let k = opts.num_beams.max(1);
        let lp = opts.length_penalty;
        if opts.max_new_tokens == 0 {
            return Ok(Some(vec![
                Generated {
                    tokens: Vec::new(),
                    score: 0.0
                };
                b
            ]));
        }
        let rows: Vec<usize> = (0..b * k).map(|i| i / k).collect();
        let enc = enc.select(&rows);
        let start = self.info.decoder_start_token_id;
        let eos = self.info.eos_token_id;
        let mut search = BeamSearch::new(b, k, start, eos, opts.max_new_tokens, lp);
        let mut state = SearchState::new(opts.mode, b * k);
        for _ in 0..opts.max_new_tokens {
            if stop() {
                return Ok(None);
            }
            let logp = self.step(&enc, search.next_tokens(), &mut state)?;
            let Some(reorder) = search.step(&logp) else {
                break;
            };
            state.reorder(&reorder, self.info.num_heads * self.info.d_kv);
        }
        Ok(Some(generated(search.finish())))
    }
}

fn generated(found: Vec<Scored>) -> Vec<Generated> {
    found
        .into_iter()
        .map(|(tokens, score)| Generated { tokens, score })
        .collect()
}

/// The decoder side of a search: the cache (cached mode) and every row's decoder inputs so far.
struct SearchState {
    mode: DecodeMode,
    cache: DecoderCache,
    seqs: Vec<Vec<i64>>,
}

impl SearchState {
    fn new(mode: DecodeMode, n: usize) -> Self {
        Self {
            mode,
            cache: DecoderCache::default(),
            seqs: vec![Vec::new(); n],
        }
    }

    /// Keeps rows `rows` (beam reordering) of the sequences and the self-attention cache
    /// (`row_width = heads · d_kv` values per position). The cross-attention cache is the same
    /// for every beam of a row, so it stays.
    fn reorder(&mut self, rows: &[usize], row_width: usize) {
        self.seqs = rows.iter().map(|&r| self.seqs[r].clone()).collect();
        let per_row = self.cache.past * row_width;
        let pick = |v: &Vec<f32>| -> Vec<f32> {
            rows.iter()
                .flat_map(|&r| v[r * per_row..(r + 1) * per_row].iter().copied())
                .collect()
        };
        for (k, v) in &mut self.cache.self_kv {
            *k = pick(k);
            *v = pick(v);
        }
    }
}

/// `log_softmax` of one row.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    row.iter().map(|x| x - max - lse).collect()
}

/// A source text's ids for the encoder of a bundle described by `info` (with the tokenizer's
/// special tokens: T5 appends `</s>`). Sources longer than the model takes (prompt rows
/// included) are cut from the right, keeping their last token (the `</s>`), as training
/// truncates them.
pub fn encode_source(tokenizer: &Tokenizer, info: &Seq2SeqInfo, text: &str) -> Result<Vec<u32>> {
    let limit = info.max_sequence_len.saturating_sub(info.prompt_len).max(1);
    let enc = tokenizer
        .encode(text, true)
        .map_err(|e| anyhow::anyhow!("cannot tokenize {text:?}: {e}"))?;
    let mut ids = enc.get_ids().to_vec();
    if ids.len() > limit {
        let last = ids[ids.len() - 1];
        ids.truncate(limit - 1);
        ids.push(last);
    }
    Ok(ids)
}

/// Fails unless `dir` holds a seq2seq bundle (`task_kind: "seq2seq"`).
pub fn is_seq2seq_bundle(dir: &Path) -> Result<bool> {
    let p = dir.join(adept_bundle::MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
    match v.get("task_kind").and_then(|t| t.as_str()) {
        Some(t) => Ok(t == "seq2seq"),
        None => bail!("{} has no task_kind", p.display()),
    }
}
