//! Named tensors from a safetensors checkpoint, with prefix resolution and shape checks that name
//! the file and the tensor on error.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Weights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Weights {
    /// Loads every tensor of a `.safetensors` file as f32 on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.exists() {
            bail!("model weights not found: {} does not exist", path.display());
        }
        let raw = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
            format!(
                "cannot read {} as safetensors (corrupt or truncated file?)",
                path.display()
            )
        })?;
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, t) in raw {
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            tensors.insert(name, t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            prefix: String::new(),
        })
    }

    /// Uses the first prefix among `candidates` under which `probe` exists (e.g. `bert.` or none).
    pub fn with_prefix_detected(mut self, candidates: &[&str], probe: &str) -> Result<Self> {
        for p in candidates {
            if self.tensors.contains_key(&format!("{p}{probe}")) {
                self.prefix = p.to_string();
                return Ok(self);
            }
        }
        bail!(
            "{}: no tensor named {probe} under any of the prefixes {:?}; is this the right model family?",
            self.path.display(),
            candidates
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor `prefix + name`, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .get(&full)
            .with_context(|| format!("{}: missing tensor {full}", self.path.display()))?;
        if t.dims() != shape {
            bail!(
                "{}: tensor {full} has shape {:?}, the config implies {:?}",
                self.path.display(),
                t.dims(),
                shape
            );
        }
        Ok(t.clone())
    }

    /// The first of several alternative names that exists (old checkpoints use `gamma`/`beta`).
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor> {
        for n in names {
            if self.tensors.contains_key(&format!("{}{n}", self.prefix)) {
                return self.get(n, shape);
            }
        }
        bail!(
            "{}: none of the tensors {:?} (prefix {:?}) is present",
            self.path.display(),
            names,
            self.prefix
        )
    }
}

impl Weights {
    /// Wraps tensors already in memory (`origin` is shown in error messages).
    pub fn from_tensors(origin: PathBuf, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            path: origin,
            tensors,
            prefix: String::new(),
        }
    }
}
