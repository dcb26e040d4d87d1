//! An opened bundle: validated manifest, tokenizer, ONNX Runtime session; text → predictions.

use crate::ortlib::{self, OrtRuntime};
use crate::session::{build_session, DeviceKind, SessionConfig};
use adept_bundle::tokenize::load_tokenizer;
use adept_bundle::{
    BundleManifest, Encoded, TextEncoder, MANIFEST_FILE, MODEL_FILE, OUTPUT_NAME, TOKENIZER_FILE,
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use ort::session::Session;
use ort::value::Tensor;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How to open a bundle.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeOptions {
    pub session: SessionConfig,
    /// Examples per `run` (dynamic padding to the longest in each batch).
    pub batch_size: usize,
    /// The ONNX Runtime library (a file or its folder); default: `$ORT_DYLIB_PATH`, then the cache.
    pub ort_library: Option<PathBuf>,
    /// Cache root (default: `$ADEPT_CACHE`, `~/.cache/adept`).
    pub cache: Option<PathBuf>,
    /// Batch inputs of similar length together (sorted by length, outputs returned in input
    /// order), so that little padding is computed. On by default.
    pub length_buckets: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            session: SessionConfig::default(),
            batch_size: 32,
            ort_library: None,
            cache: None,
            length_buckets: true,
        }
    }
}

/// How much padding the batches of a run carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PaddingStats {
    pub batches: usize,
    /// Token positions of the inputs themselves.
    pub real_tokens: usize,
    /// Positions added to pad each batch to its longest input.
    pub padded_tokens: usize,
}

impl PaddingStats {
    /// Padding as a fraction of all positions computed.
    pub fn padding_fraction(&self) -> f64 {
        let all = self.real_tokens + self.padded_tokens;
        if all == 0 {
            0.0
        } else {
            self.padded_tokens as f64 / all as f64
        }
    }
}

/// One prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// Class name (classification) or `None` (regression).
    pub label: Option<String>,
    /// Class id (argmax of the logits) or `None` (regression).
    pub label_id: Option<usize>,
    /// Softmax of the logits (classification; empty for regression).
    pub probabilities: Vec<f32>,
    /// The raw outputs of the head.
    pub logits: Vec<f32>,
    /// The predicted score (regression; `None` for classification).
    pub score: Option<f32>,
}

/// A padded batch as the graph takes it: `int64 [batch, seq]` each, row-major (the contract's
/// layout, the one training pads with).
pub type PaddedBatch = adept_bundle::PaddedBatch<i64>;

/// A bundle ready to serve.
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: BundleManifest,
    pub encoder: TextEncoder,
    /// The device the session runs on (after any fallback).
    pub device: DeviceKind,
    /// Why the requested device is not the one used (`None` when it is).
    pub device_fallback: Option<String>,
    pub batch_size: usize,
    /// See [`RuntimeOptions::length_buckets`].
    pub length_buckets: bool,
    pub runtime: &'static OrtRuntime,
    session: Mutex<Session>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("dir", &self.dir)
            .field("task", &self.manifest.task)
            .field("method", &self.manifest.method)
            .field("device", &self.device)
            .finish()
    }
}

use adept_bundle::{argmax, softmax};

impl Bundle {
    /// Opens `dir` with default options (CPU).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, &RuntimeOptions::default())
    }

    /// Validates the bundle (manifest fields, file checksums, tokenizer against the table,
    /// model inputs/outputs and metadata against the manifest) and creates the session.
    pub fn open_with(dir: &Path, opts: &RuntimeOptions) -> Result<Self> {
        ensure!(opts.batch_size > 0, "batch size must be at least 1");
        let manifest = BundleManifest::read(dir)?;
        let model_path = dir.join(MODEL_FILE);
        ensure!(
            model_path.is_file(),
            "the bundle's model {} is missing",
            model_path.display()
        );
        manifest.verify_files(dir)?;

        // The training rules, checked against the manifest (the browser runs the same code).
        let tok_path = dir.join(TOKENIZER_FILE);
        let encoder = load_tokenizer(&tok_path)
            .and_then(|tok| {
                TextEncoder::for_bundle(
                    tok,
                    &manifest,
                    &tok_path.display().to_string(),
                    &dir.join(MANIFEST_FILE).display().to_string(),
                )
            })
            .with_context(|| format!("bundle {}", dir.display()))?;

        let runtime = ortlib::find_and_load_for(
            opts.cache.as_deref(),
            opts.ort_library.as_deref(),
            opts.session.device,
        )?;
        let built = build_session(runtime, &model_path, &opts.session)?;
        check_model_against_manifest(&built.session, &manifest, &model_path)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            encoder,
            device: built.device,
            device_fallback: built.fallback_reason,
            batch_size: opts.batch_size,
            length_buckets: opts.length_buckets,
            runtime,
            session: Mutex::new(built.session),
        })
    }

    /// Tokenizes `(text_a, text_b)` with the training rules and checks every id against the table.
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Encoded> {
        self.encoder.encode_within(a, b, self.manifest.vocab_size)
    }

    /// Runs one padded batch; returns the logits row by row.
    pub fn run_batch(&self, batch: &PaddedBatch) -> Result<Vec<Vec<f32>>> {
        let shape = [batch.batch, batch.seq];
        let t = |v: &Vec<i64>, name: &str| {
            Tensor::from_array((shape, v.clone()))
                .map_err(|e| anyhow!("cannot build the {name} tensor: {e}"))
        };
        let mut inputs = ort::inputs![
            "input_ids" => t(&batch.input_ids, "input_ids")?,
            "attention_mask" => t(&batch.attention_mask, "attention_mask")?,
        ];
        // The manifest says whether the graph reads token types (RoBERTa-style bundles do not).
        if self.manifest.takes_token_types() {
            inputs.push((
                "token_type_ids".into(),
                t(&batch.token_type_ids, "token_type_ids")?.into(),
            ));
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(inputs).map_err(|e| {
            anyhow!(
                "ONNX Runtime failed on {}: {e}",
                self.dir.join(MODEL_FILE).display()
            )
        })?;
        let (out_shape, data) = outputs[OUTPUT_NAME]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("the model's {OUTPUT_NAME} output is not a float tensor: {e}"))?;
        let n = self.manifest.num_outputs;
        ensure!(
            out_shape.len() == 2
                && out_shape[0] as usize == batch.batch
                && out_shape[1] as usize == n,
            "the model returned {OUTPUT_NAME} of shape {:?}, expected [{}, {n}]",
            &out_shape[..],
            batch.batch
        );
        Ok(data.chunks(n).map(<[f32]>::to_vec).collect())
    }

    /// Logits for already-encoded inputs, in order, `batch_size` at a time. Inputs are grouped
    /// by length (longest first) so that each batch pads as little as possible.
    pub fn logits_encoded(&self, items: &[Encoded]) -> Result<Vec<Vec<f32>>> {
        Ok(self.logits_with_padding(items)?.0)
    }

    /// [`logits_encoded`](Self::logits_encoded) and the padding its batches carried.
    pub fn logits_with_padding(&self, items: &[Encoded]) -> Result<(Vec<Vec<f32>>, PaddingStats)> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        if self.length_buckets {
            // Stable: inputs of equal length keep their order.
            order.sort_by_key(|&i| std::cmp::Reverse(items[i].ids.len()));
        }
        let mut out = vec![Vec::new(); items.len()];
        let mut stats = PaddingStats::default();
        for chunk in order.chunks(self.batch_size) {
            let refs: Vec<&Encoded> = chunk.iter().map(|&i| &items[i]).collect();
            let padded = PaddedBatch::collate(&refs, self.manifest.pad_token_id);
            let real: usize = refs.iter().map(|e| e.ids.len()).sum();
            stats.batches += 1;
            stats.real_tokens += real;
            stats.padded_tokens += padded.batch * padded.seq - real;
            let rows = self.run_batch(&padded)?;
            for (&i, row) in chunk.iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok((out, stats))
    }

    /// Predictions for `(text_a, text_b)` pairs, in input order.
    pub fn predict(&self, texts: &[(String, Option<String>)]) -> Result<Vec<Prediction>> {
        Ok(self.predict_with_padding(texts)?.0)
    }

    /// [`predict`](Self::predict) and the padding its batches carried.
    pub fn predict_with_padding(
        &self,
        texts: &[(String, Option<String>)],
    ) -> Result<(Vec<Prediction>, PaddingStats)> {
        let encoded = texts
            .iter()
            .enumerate()
            .map(|(i, (a, b))| {
                self.encode(a, b.as_deref())
                    .with_context(|| format!("input {i}"))
            })
            .collect::<Result<Vec<_>>>()?;
        let truncated = encoded.iter().filter(|e| e.truncated).count();
        if truncated > 0 {
            tracing::warn!(
                "{truncated} of {} inputs were longer than {} tokens and were truncated",
                encoded.len(),
                self.manifest.max_length
            );
        }
        let (logits, padding) = self.logits_with_padding(&encoded)?;
        let preds = logits.into_iter().map(|l| self.prediction(l)).collect();
        Ok((preds, padding))
    }

    /// Turns one row of logits into a [`Prediction`].
    pub fn prediction(&self, logits: Vec<f32>) -> Prediction {
        if self.manifest.regression {
            Prediction {
                label: None,
                label_id: None,
                probabilities: Vec::new(),
                score: logits.first().copied(),
                logits,
            }
        } else {
            let id = argmax(&logits);
            Prediction {
                label: self.manifest.label(id).map(str::to_owned),
                label_id: Some(id),
                probabilities: softmax(&logits),
                score: None,
                logits,
            }
        }
    }
}

/// The session's inputs, outputs and metadata must be what the manifest says.
fn check_model_against_manifest(session: &Session, m: &BundleManifest, path: &Path) -> Result<()> {
    let names = |outlets: &[ort::value::Outlet]| -> Vec<String> {
        outlets.iter().map(|o| o.name().to_owned()).collect()
    };
    let inputs = names(session.inputs());
    let mut sorted_inputs = inputs.clone();
    sorted_inputs.sort();
    let mut want_inputs = m.inputs.clone();
    want_inputs.sort();
    ensure!(
        sorted_inputs == want_inputs,
        "{} takes inputs {inputs:?}, but the manifest lists {:?}: model and manifest do not match",
        path.display(),
        m.inputs
    );
    let outputs = names(session.outputs());
    ensure!(
        outputs == m.outputs,
        "{} has outputs {outputs:?}, but the manifest lists {:?}: model and manifest do not match",
        path.display(),
        m.outputs
    );
    if let Some(shape) = session.outputs()[0].dtype().tensor_shape() {
        if shape.len() == 2 && shape[1] >= 0 {
            ensure!(
                shape[1] as usize == m.num_outputs,
                "{} outputs {} logits per input, but the manifest has {} outputs: model and manifest do not match",
                path.display(),
                shape[1],
                m.num_outputs
            );
        }
    }
    let meta = session
        .metadata()
        .map_err(|e| anyhow!("cannot read the metadata of {}: {e}", path.display()))?;
    for (key, want) in [
        ("adept.vocab_size", m.vocab_size.to_string()),
        ("adept.num_outputs", m.num_outputs.to_string()),
        ("adept.prompt_length", m.prompt_length.to_string()),
        ("adept.method", m.method.to_string()),
        ("adept.fold", m.fold.to_string()),
    ] {
        match meta.custom(key) {
            Some(got) if got != want => bail!(
                "{} says {key} = {got}, but the manifest says {want}: model and manifest do not match",
                path.display()
            ),
            _ => {}
        }
    }
    Ok(())
}
