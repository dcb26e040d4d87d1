//! Training checkpoints: one safetensors file holding the trainable tensors, the optimiser moments
//! and (as header metadata) the loop's position, written to a temporary file and renamed, so a
//! run killed at any moment leaves either the previous checkpoint or the new one, never half.

use adept_bundle::write_atomic;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Where the loop stood when the checkpoint was taken.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoopState {
    /// Optimiser steps completed.
    pub step: usize,
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// Evaluations since the best one (for early stopping).
    pub evals_since_best: usize,
    /// Hash of the training config the run started with; resuming under another config is refused.
    pub config_hash: String,
}

const STATE_KEY: &str = "adept.loop_state";

pub fn save(path: &Path, tensors: &HashMap<String, Tensor>, state: &LoopState) -> Result<()> {
    let meta = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
    let mut items: Vec<(&String, &Tensor)> = tensors.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(items, Some(meta))
        .with_context(|| format!("cannot serialise checkpoint {}", path.display()))?;
    write_atomic(path, &bytes)
}

pub fn load(path: &Path, device: &Device) -> Result<(HashMap<String, Tensor>, LoopState)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("checkpoint {} is corrupt", path.display()))?;
    let state: LoopState = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .with_context(|| {
            format!(
                "{} is not an adept checkpoint (no loop state)",
                path.display()
            )
        })
        .and_then(|s| serde_json::from_str(s).context("bad loop state"))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("checkpoint {} is corrupt", path.display()))?;
    Ok((tensors, state))
}
