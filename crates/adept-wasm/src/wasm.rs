//! The JavaScript API (wasm-bindgen).

use crate::Engine;
use js_sys::{Array, BigInt64Array, Float32Array, Object, Reflect, Uint32Array};
use wasm_bindgen::prelude::*;

fn js_err(e: anyhow::Error) -> JsError {
    JsError::new(&format!("{e:#}"))
}

fn set(obj: &Object, key: &str, value: &JsValue) -> Result<(), JsError> {
    Reflect::set(obj, &JsValue::from_str(key), value)
        .map_err(|_| JsError::new(&format!("cannot set {key}")))?;
    Ok(())
}

fn i64_array(v: impl ExactSizeIterator<Item = i64>) -> BigInt64Array {
    let out = BigInt64Array::new_with_length(v.len() as u32);
    for (i, x) in v.enumerate() {
        out.set_index(i as u32, x);
    }
    out
}

/// A bundle's tokenizer and post-processing.
#[wasm_bindgen]
pub struct Classifier {
    engine: Engine,
}

#[wasm_bindgen]
impl Classifier {
    /// Validates `adept.json` and loads `tokenizer.json` (both as text).
    #[wasm_bindgen(constructor)]
    pub fn new(manifest_json: &str, tokenizer_json: &str) -> Result<Classifier, JsError> {
        Ok(Self {
            engine: Engine::new(manifest_json, tokenizer_json).map_err(js_err)?,
        })
    }

    /// The graph's inputs for one text (or pair): `{input_ids, attention_mask, token_type_ids}`
    /// as `BigInt64Array` (shape `[1, length]`, the contract's padded layout for a batch of
    /// one), plus `ids` (`Uint32Array`), `length` and `truncated`.
    pub fn encode(&self, text: &str, text_b: Option<String>) -> Result<Object, JsError> {
        let e = self
            .engine
            .encode(text, text_b.as_deref())
            .map_err(js_err)?;
        let b = self.engine.inputs(&e);
        let obj = Object::new();
        set(
            &obj,
            "input_ids",
            &i64_array(b.input_ids.iter().copied()).into(),
        )?;
        set(
            &obj,
            "attention_mask",
            &i64_array(b.attention_mask.iter().copied()).into(),
        )?;
        set(
            &obj,
            "token_type_ids",
            &i64_array(b.token_type_ids.iter().copied()).into(),
        )?;
        set(&obj, "ids", &Uint32Array::from(&e.ids[..]).into())?;
        set(&obj, "length", &JsValue::from(b.seq as u32))?;
        set(&obj, "truncated", &JsValue::from_bool(e.truncated))?;
        Ok(obj)
    }

    /// One row of logits → `{label, label_id, probabilities: {name: p}, probability_list,
    /// logits, score}` (the fields of `adept infer`'s output).
    pub fn postprocess(&self, logits: &[f32]) -> Result<JsValue, JsError> {
        let p = self.engine.postprocess(logits).map_err(js_err)?;
        let probs = serde_json::Map::from_iter(
            p.probabilities
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v))),
        );
        let v = serde_json::json!({
            "label": p.label,
            "label_id": p.label_id,
            "probabilities": probs,
            "probability_list": p.probabilities.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "logits": p.logits,
            "score": p.score,
        });
        js_sys::JSON::parse(&v.to_string()).map_err(|_| JsError::new("cannot build the result"))
    }

    /// `(text_a, text_b)` from a record of named fields (`{sentence: "..."}`), with the
    /// manifest's input template; `text_b` is `undefined` for single-text tasks.
    pub fn segments(&self, record: &JsValue) -> Result<Array, JsError> {
        let get = |k: &str| {
            Reflect::get(record, &JsValue::from_str(k))
                .ok()
                .and_then(|v| v.as_string())
        };
        let (a, b) = self.engine.segments(get).map_err(js_err)?;
        let out = Array::new();
        out.push(&JsValue::from_str(&a));
        out.push(
            &b.map(|b| JsValue::from_str(&b))
                .unwrap_or(JsValue::UNDEFINED),
        );
        Ok(out)
    }

    /// Checks a file's sha256 (hex) and size against `adept.json`; throws a clear message.
    pub fn check_file(&self, name: &str, sha256_hex: &str, bytes: f64) -> Result<(), JsError> {
        self.engine
            .check_file(name, sha256_hex, bytes as u64)
            .map_err(js_err)
    }

    /// Text fields of an input record, in order.
    pub fn text_fields(&self) -> Vec<String> {
        self.engine.manifest.text_fields.clone()
    }

    pub fn label_names(&self) -> Vec<String> {
        self.engine.manifest.label_names.clone()
    }

    pub fn regression(&self) -> bool {
        self.engine.manifest.regression
    }

    pub fn max_length(&self) -> usize {
        self.engine.manifest.max_length
    }

    pub fn pad_id(&self) -> u32 {
        self.engine.pad_id
    }

    /// The validated manifest, as JSON text.
    pub fn manifest_json(&self) -> String {
        serde_json::to_string(&self.engine.manifest).unwrap_or_default()
    }
}

/// sha256 of `data`, lowercase hex (fallback where `crypto.subtle` is unavailable).
#[wasm_bindgen]
pub fn sha256_hex(data: &[u8]) -> String {
    crate::sha256_hex(data)
}

/// A decoder bundle's generation loop (sampling, EOS, stop strings, streaming detokenisation:
/// `adept_bundle::generate`, the native runtime's); JavaScript runs each ONNX step.
///
/// ```js
/// const d = new Decoder(manifestText, tokenizerText);
/// const cache = d.prompt_cache(bytes);            // [{name, dims, data: Float32Array}]
/// let x = d.start(prompt, JSON.stringify({max_new_tokens: 32}));
/// while (!x.done) { // run the graph on x.input_ids, x.attention_mask, x.position_ids + past
///   const r = d.push_logits(logits);             // {token_id, piece, done}
///   x = r.done ? {done: true} : d.inputs(); }
/// const g = d.finish();                           // {text, token_ids, finish_reason, prompt_tokens, rest}
/// ```
#[wasm_bindgen]
pub struct Decoder {
    engine: crate::decoder::DecoderEngine,
    run: Option<crate::decoder::DecoderRun>,
}

impl Decoder {
    fn run_mut(&mut self) -> Result<&mut crate::decoder::DecoderRun, JsError> {
        self.run.as_mut().ok_or_else(|| {
            JsError::new("no generation in progress: call start(prompt, options) first")
        })
    }

    fn feeds(&self) -> Result<Object, JsError> {
        let run = self
            .run
            .as_ref()
            .ok_or_else(|| JsError::new("no generation in progress"))?;
        let x = run.inputs().map_err(js_err)?;
        let obj = Object::new();
        set(&obj, "input_ids", &i64_array(x.ids.iter().copied()).into())?;
        set(
            &obj,
            "attention_mask",
            &i64_array(x.mask.iter().copied()).into(),
        )?;
        set(
            &obj,
            "position_ids",
            &i64_array(x.positions.iter().copied()).into(),
        )?;
        set(&obj, "seq", &JsValue::from(x.seq as u32))?;
        set(
            &obj,
            "total",
            &JsValue::from((x.mask.len() / x.batch.max(1)) as u32),
        )?;
        set(&obj, "done", &JsValue::from_bool(run.is_done()))?;
        Ok(obj)
    }
}

#[wasm_bindgen]
impl Decoder {
    /// Validates `adept.json` (a decoder bundle) and loads `tokenizer.json` (both as text).
    #[wasm_bindgen(constructor)]
    pub fn new(manifest_json: &str, tokenizer_json: &str) -> Result<Decoder, JsError> {
        Ok(Self {
            engine: crate::decoder::DecoderEngine::new(manifest_json, tokenizer_json)
                .map_err(js_err)?,
            run: None,
        })
    }

    /// `prompt_cache.safetensors` → `[{name, dims, data: Float32Array}]`, the first step's
    /// `past_key_values.{i}.key|value` (f32 `[1, kv_heads, l, head_dim]`), checked against the
    /// manifest.
    pub fn prompt_cache(&self, bytes: &[u8]) -> Result<Array, JsError> {
        let out = Array::new();
        for t in self.engine.prompt_cache(bytes).map_err(js_err)? {
            let obj = Object::new();
            set(&obj, "name", &JsValue::from_str(&t.name))?;
            let dims = Array::new();
            for d in &t.dims {
                dims.push(&JsValue::from(*d as u32));
            }
            set(&obj, "dims", &dims.into())?;
            set(&obj, "data", &Float32Array::from(&t.data[..]).into())?;
            out.push(&obj);
        }
        Ok(out)
    }

    /// Starts a completion of `prompt`; `options_json` holds any of `max_new_tokens`,
    /// `temperature`, `top_k`, `top_p`, `repetition_penalty`, `seed`, `stop_strings`,
    /// `eos_token_ids`, `do_sample`, `use_prompt_cache` (greedy unless a sampling option is
    /// given). Returns the first step's feeds `{input_ids, attention_mask, position_ids}`
    /// (`BigInt64Array`; shapes `[1, seq]`, `[1, total]`, `[1, seq]`), `seq`, `total`, `done`,
    /// `past_len` (the cache's length before the step: `l` with the prompt cache, else 0),
    /// `prompt_ids`.
    pub fn start(&mut self, prompt: &str, options_json: &str) -> Result<Object, JsError> {
        let opts = crate::decoder::GenerateOptions::from_json(options_json).map_err(js_err)?;
        self.run = Some(self.engine.start(prompt, &opts).map_err(js_err)?);
        let obj = self.feeds()?;
        let run = self.run_mut()?;
        let (past, ids) = (run.past_len, run.prompt_ids.clone());
        set(&obj, "past_len", &JsValue::from(past as u32))?;
        set(&obj, "prompt_ids", &Uint32Array::from(&ids[..]).into())?;
        Ok(obj)
    }

    /// The next step's feeds (as `start` returns them).
    pub fn inputs(&self) -> Result<Object, JsError> {
        self.feeds()
    }

    /// The step's `logits` (`[1, seq, vocab]` or just the last row) → `{token_id, piece, done}`:
    /// the chosen token, the newly final text, whether generation has ended.
    pub fn push_logits(&mut self, logits: &[f32]) -> Result<Object, JsError> {
        let engine = &self.engine;
        let run = self.run.as_mut().ok_or_else(|| {
            JsError::new("no generation in progress: call start(prompt, options) first")
        })?;
        let p = run.push_logits(engine, logits).map_err(js_err)?;
        let obj = Object::new();
        set(&obj, "token_id", &JsValue::from(p.token_id))?;
        set(&obj, "piece", &JsValue::from_str(&p.piece))?;
        set(&obj, "done", &JsValue::from_bool(p.done))?;
        Ok(obj)
    }

    /// Ends the completion: `{text, token_ids, finish_reason, prompt_tokens, rest}` (`rest`:
    /// text held back until now, to append to the streamed pieces).
    pub fn finish(&mut self) -> Result<JsValue, JsError> {
        let engine = &self.engine;
        let mut run = self
            .run
            .take()
            .ok_or_else(|| JsError::new("no generation in progress"))?;
        let (rest, g) = run.finish(engine).map_err(js_err)?;
        let v = serde_json::json!({
            "text": g.text,
            "token_ids": g.token_ids,
            "finish_reason": g.finish_reason,
            "prompt_tokens": g.prompt_tokens,
            "rest": rest,
        });
        js_sys::JSON::parse(&v.to_string()).map_err(|_| JsError::new("cannot build the result"))
    }

    /// Token ids of a prompt (BOS added, as `adept generate` does).
    pub fn encode_prompt(&self, text: &str) -> Result<Uint32Array, JsError> {
        let ids = self.engine.encode_prompt(text).map_err(js_err)?;
        Ok(Uint32Array::from(&ids[..]))
    }

    /// Checks a file's sha256 (hex) and size against `adept.json`.
    pub fn check_file(&self, name: &str, sha256_hex: &str, bytes: f64) -> Result<(), JsError> {
        let got = adept_bundle::FileEntry {
            sha256: sha256_hex.to_string(),
            bytes: bytes as u64,
        };
        self.engine
            .manifest
            .check_file(name, &got, name, adept_bundle::MANIFEST_FILE)
            .map_err(js_err)
    }

    /// The validated manifest, as JSON text.
    pub fn manifest_json(&self) -> String {
        serde_json::to_string(&self.engine.manifest).unwrap_or_default()
    }
}

/// Whether `adept.json` (text) describes a decoder bundle (it has a `decoder` section).
#[wasm_bindgen]
pub fn is_decoder_manifest(manifest_json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(manifest_json)
        .map(|v| v.get("decoder").is_some_and(|d| !d.is_null()))
        .unwrap_or(false)
}
