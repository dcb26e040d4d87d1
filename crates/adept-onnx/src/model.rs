//! [`ModelBuilder`]: wraps a graph into a `ModelProto` (opsets, IR version, metadata) and
//! writes it to disk atomically.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{ensure, Context, Result};
use prost::Message;

use crate::graph::{GraphBuilder, MIN_OPSET};
use crate::proto::{ModelProto, OperatorSetIdProto, StringStringEntryProto};

/// The ONNX IR version that the ONNX release introducing default-domain `opset` wrote
/// (opset 17–18 → IR 8, 19–20 → 9, 21–22 → 10, 23 → 11, 24 → 12, 25+ → 13).
pub fn ir_version_for_opset(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        21..=22 => 10,
        23 => 11,
        24 => 12,
        _ => 13,
    }
}

/// Builds an ONNX model: one graph plus opset imports, IR version and metadata.
///
/// ```
/// use adept_onnx::{DataType, ModelBuilder};
/// let mut model = ModelBuilder::new("tiny", 17).add_opset("com.microsoft", 1);
/// let g = model.graph();
/// let x = g.input("x", DataType::Float, &["batch".into(), 4.into()])?;
/// let y = g.relu(&x);
/// g.output_as(&y, "y", DataType::Float, &["batch".into(), 4.into()])?;
/// let bytes = model.metadata("adept.kind", "example").to_bytes()?;
/// # anyhow::Ok(())
/// ```
#[derive(Debug, Clone)]
pub struct ModelBuilder {
    graph: GraphBuilder,
    opsets: Vec<(String, i64)>,
    ir_version: Option<i64>,
    producer_name: String,
    producer_version: String,
    domain: Option<String>,
    model_version: Option<i64>,
    doc_string: Option<String>,
    metadata: Vec<(String, String)>,
}

impl ModelBuilder {
    /// A model whose graph is called `graph_name` and imports default-domain opset `opset`.
    pub fn new(graph_name: impl Into<String>, opset: i64) -> Self {
        Self::from_graph(GraphBuilder::new(graph_name, opset))
    }

    /// A model around an existing graph builder (importing its opset).
    pub fn from_graph(graph: GraphBuilder) -> Self {
        let opset = graph.opset();
        Self {
            graph,
            opsets: vec![(String::new(), opset)],
            ir_version: None,
            producer_name: env!("CARGO_PKG_NAME").to_owned(),
            producer_version: env!("CARGO_PKG_VERSION").to_owned(),
            domain: None,
            model_version: None,
            doc_string: None,
            metadata: Vec::new(),
        }
    }

    /// The graph, to add inputs, weights and nodes to.
    pub fn graph(&mut self) -> &mut GraphBuilder {
        &mut self.graph
    }

    /// Imports `version` of operator set `domain` (e.g. `"com.microsoft"`, 1); replaces an
    /// earlier import of the same domain.
    pub fn add_opset(mut self, domain: &str, version: i64) -> Self {
        self.opsets.retain(|(d, _)| d != domain);
        self.opsets.push((domain.to_owned(), version));
        self
    }

    /// Overrides the IR version (default: [`ir_version_for_opset`]).
    pub fn ir_version(mut self, version: i64) -> Self {
        self.ir_version = Some(version);
        self
    }

    /// Sets `producer_name`/`producer_version` (default: this crate's name and version).
    pub fn producer(mut self, name: &str, version: &str) -> Self {
        self.producer_name = name.to_owned();
        self.producer_version = version.to_owned();
        self
    }

    /// Sets the model's reverse-DNS `domain` and integer `model_version`.
    pub fn model_version(mut self, domain: &str, version: i64) -> Self {
        self.domain = Some(domain.to_owned());
        self.model_version = Some(version);
        self
    }

    /// Sets the model's doc string.
    pub fn doc_string(mut self, doc: &str) -> Self {
        self.doc_string = Some(doc.to_owned());
        self
    }

    /// Adds (or replaces) a `metadata_props` entry; ONNX Runtime exposes these as custom
    /// metadata of the session.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_owned(),
            None => self.metadata.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    /// The model's fields other than the graph, after checking the opsets.
    fn header(&self) -> Result<ModelProto> {
        let opset = self.graph.opset();
        ensure!(
            opset >= MIN_OPSET,
            "default-domain opset {opset} is below the supported minimum {MIN_OPSET}"
        );
        for domain in self.graph.domains() {
            let domain = if domain == "ai.onnx" { "" } else { domain };
            ensure!(
                self.opsets.iter().any(|(d, _)| d == domain),
                "the graph uses operators of domain {domain:?}, which the model does not \
                 import (ModelBuilder::add_opset)"
            );
        }
        Ok(ModelProto {
            ir_version: Some(
                self.ir_version
                    .unwrap_or_else(|| ir_version_for_opset(opset)),
            ),
            opset_import: self
                .opsets
                .iter()
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: Some(domain.clone()),
                    version: Some(*version),
                })
                .collect(),
            producer_name: Some(self.producer_name.clone()),
            producer_version: Some(self.producer_version.clone()),
            domain: self.domain.clone(),
            model_version: self.model_version,
            doc_string: self.doc_string.clone(),
            graph: None,
            metadata_props: self
                .metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto::new(k, v))
                .collect(),
        })
    }

    /// The finished `ModelProto` (a copy; see [`into_proto`](Self::into_proto)).
    ///
    /// Fails if the default opset is below [`MIN_OPSET`], a node uses a domain that is not
    /// imported, or the graph does not validate ([`GraphBuilder::validate`]).
    pub fn build(&self) -> Result<ModelProto> {
        let mut model = self.header()?;
        model.graph = Some(self.graph.proto()?.clone());
        Ok(model)
    }

    /// The finished `ModelProto`, moving the graph (and its weights) instead of copying.
    pub fn into_proto(self) -> Result<ModelProto> {
        let mut model = self.header()?;
        model.graph = Some(self.graph.build()?);
        Ok(model)
    }

    /// The serialized model, encoded straight from the builder (weights are not copied
    /// into an intermediate `ModelProto`).
    ///
    /// Protobuf caps a message at 2 GiB; larger models need external data (not supported).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = self.header()?;
        let graph = self.graph.proto()?;
        let graph_len = graph.encoded_len();
        let len = header.encoded_len() + 1 + prost::length_delimiter_len(graph_len) + graph_len;
        ensure!(
            len < i32::MAX as usize,
            "model is {len} bytes, over protobuf's 2 GiB limit"
        );
        let mut buf = Vec::with_capacity(len);
        header.encode(&mut buf)?;
        // Field 7 (`graph`), wire type 2 (length-delimited). Protobuf parsers accept
        // fields in any order, so the graph may follow the metadata.
        buf.push((7 << 3) | 2);
        prost::encode_length_delimiter(graph_len, &mut buf)?;
        graph.encode(&mut buf)?;
        debug_assert_eq!(buf.len(), len);
        Ok(buf)
    }

    /// Writes the model to `path` atomically (see [`write_atomic`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed to disk (`fsync`) and renamed over `path`, so readers see the old file or the
/// complete new one, never a partial write. The directory is synced afterwards (best
/// effort) so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> Result<()> {
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(())
    };
    if let Err(err) = write().and_then(|()| {
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    }) {
        let _ = fs::remove_file(&tmp);
        return Err(err.context(format!("writing {}", path.display())));
    }
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
