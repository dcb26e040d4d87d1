//! The JavaScript API (wasm-bindgen).

use crate::Engine;
use js_sys::{Array, BigInt64Array, Object, Reflect, Uint32Array};
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
