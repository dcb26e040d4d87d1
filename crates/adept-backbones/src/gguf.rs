//! GGUF checkpoints (llama.cpp's format) read into what the rest of the toolkit loads: Hugging
//! Face-named f32 tensors, an HF `config.json`, and an HF `tokenizer.json`.
//!
//! ## Design
//! * **Reading** uses candle's `gguf_file::Content` (header, metadata, tensor table) and
//!   `QTensor::dequantize`, so every type candle dequantizes is accepted (F32, F16, BF16, Q4_0,
//!   Q4_1, Q5_0, Q5_1, Q8_0, the k-quants). candle reverses GGUF's dimension order on reading, so a
//!   tensor comes out in torch order (`[out, in]` for a linear weight) with row-major data: no
//!   transposition is needed. A type candle does not know fails with the tensor's name and type
//!   (found by [`scan_tensor_types`], a header walk of our own, since candle's error names neither).
//! * **Names** map from llama.cpp's (`blk.{i}.attn_q.weight`) to Hugging Face's
//!   (`model.layers.{i}.self_attn.q_proj.weight`), see [`hf_tensor_name`].
//! * **Q/K rows**: llama.cpp's `convert_hf_to_gguf.py` permutes the rows of q and k so its
//!   interleaved RoPE (pairs `(2j, 2j+1)`) computes what HF's half-split RoPE (pairs `(j, j+d/2)`)
//!   does: within each head of `d` rows, HF row `s·d/2 + j` (s ∈ {0, 1}) is stored at row `2j + s`.
//!   [`unpermute_rows`] inverts that exactly (a pure row reordering, so values are unchanged), with
//!   the head count of q for q and of the key/value heads for k, as transformers'
//!   `LlamaTensorProcessor._reverse_permute_weights` does.
//! * **Config** comes from the `{arch}.*` metadata keys as transformers maps them
//!   ([`GgufFile::hf_config`]); `tie_word_embeddings` is true when `output.weight` is absent.
//! * **Tokenizer**: `tokenizer.ggml.model == "gpt2"` becomes a byte-level BPE `tokenizer.json`
//!   built like transformers' GGUF tokenizer (vocabulary, merges, ByteLevel pre-tokenizer and
//!   decoder, control tokens as special added tokens, user-defined tokens as plain added tokens,
//!   BOS only if `add_bos_token`). SentencePiece (`"llama"`) and others are refused with the list
//!   of what is supported.
//! * [`convert_to_hf_folder`] writes the lot (plus `tokenizer_config.json`,
//!   `generation_config.json` and a source note) into a temporary folder and renames it into
//!   place, so an error leaves nothing half-written.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value as Json};

/// GGUF architectures [`GgufFile::hf_config`] and [`GgufFile::hf_tensors`] understand.
pub const SUPPORTED_ARCHITECTURES: [&str; 1] = ["llama"];
/// `tokenizer.ggml.model` values [`GgufFile::tokenizer`] understands.
pub const SUPPORTED_TOKENIZERS: [&str; 1] = ["gpt2"];
/// Name of the source note [`convert_to_hf_folder`] writes.
pub const SOURCE_NOTE: &str = "gguf-source.json";
/// Files [`convert_to_hf_folder`] writes.
pub const CONVERTED_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    SOURCE_NOTE,
];

/// `tokenizer.ggml.token_type` of a control token (`<|im_start|>`): a special added token.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// `tokenizer.ggml.token_type` of a user-defined token (`<think>`): a plain added token.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The name of a ggml tensor type id (`ggml.h`'s `ggml_type`), for error messages.
pub fn ggml_type_name(id: u32) -> String {
    let name = match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("ggml type {id}"),
    };
    name.to_string()
}

/// Whether candle reads ggml type `id` (the ids its `GgmlDType` covers).
fn candle_reads(id: u32) -> bool {
    matches!(id, 0..=3 | 6..=15 | 30)
}

fn dtype_name(d: GgmlDType) -> &'static str {
    match d {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q8_1 => "Q8_1",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K",
        GgmlDType::Q4K => "Q4_K",
        GgmlDType::Q5K => "Q5_K",
        GgmlDType::Q6K => "Q6_K",
        GgmlDType::Q8K => "Q8_K",
    }
}

/// Every tensor's name and ggml type id, in file order, read from the header by a walk of our own
/// (GGUF v2/v3). Used to name the tensor when candle refuses a file for a type it does not know.
pub fn scan_tensor_types(path: &Path) -> Result<Vec<(String, u32)>> {
    let f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(f);
    let bad = |what: &str| anyhow!("{}: malformed GGUF header ({what})", path.display());
    let u32_ = |r: &mut BufReader<fs::File>| -> Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    };
    fn u64_(r: &mut BufReader<fs::File>) -> Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    let magic = u32_(&mut r)?;
    if magic != 0x4655_4747 {
        bail!("{} is not a GGUF file (bad magic)", path.display());
    }
    let version = u32_(&mut r)?;
    if !(2..=3).contains(&version) {
        bail!(
            "{}: GGUF version {version} is not readable here (2 and 3 are)",
            path.display()
        );
    }
    let n_tensors = u64_(&mut r)?;
    let n_kv = u64_(&mut r)?;
    if n_tensors > len || n_kv > len {
        return Err(bad("counts exceed the file size"));
    }
    let skip = |r: &mut BufReader<fs::File>, n: u64| -> Result<()> {
        if n > len {
            return Err(bad("length exceeds the file size"));
        }
        r.seek_relative(n as i64)?;
        Ok(())
    };
    fn scalar_size(t: u32) -> Option<u64> {
        match t {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }
    for _ in 0..n_kv {
        let klen = u64_(&mut r)?;
        skip(&mut r, klen)?;
        let t = u32_(&mut r)?;
        match t {
            8 => {
                let n = u64_(&mut r)?;
                skip(&mut r, n)?;
            }
            9 => {
                let et = u32_(&mut r)?;
                let n = u64_(&mut r)?;
                if et == 8 {
                    for _ in 0..n {
                        let sl = u64_(&mut r)?;
                        skip(&mut r, sl)?;
                    }
                } else {
                    let s = scalar_size(et).ok_or_else(|| bad("nested or unknown array type"))?;
                    skip(&mut r, n.saturating_mul(s))?;
                }
            }
            t => {
                let s = scalar_size(t).ok_or_else(|| bad("unknown value type"))?;
                skip(&mut r, s)?;
            }
        }
    }
    let mut out = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let nlen = u64_(&mut r)?;
        if nlen > 1 << 16 {
            return Err(bad("tensor name too long"));
        }
        let mut name = vec![0u8; nlen as usize];
        r.read_exact(&mut name)?;
        let dims = u32_(&mut r)?;
        skip(&mut r, 8 * dims as u64)?;
        let t = u32_(&mut r)?;
        let _offset = u64_(&mut r)?;
        out.push((String::from_utf8_lossy(&name).into_owned(), t));
    }
    Ok(out)
}

/// An open GGUF file: its metadata and tensor table (tensor data is read on demand).
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

fn meta_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn meta_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I8(x) => Some(*x as i64),
        Value::I16(x) => Some(*x as i64),
        Value::I32(x) => Some(*x as i64),
        Value::I64(x) => Some(*x),
        other => meta_u64(other).and_then(|x| i64::try_from(x).ok()),
    }
}

fn meta_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => meta_u64(other).map(|x| x as f64),
    }
}

impl GgufFile {
    /// Reads the header, metadata and tensor table of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let f = fs::File::open(path)
            .with_context(|| format!("cannot open GGUF file {}", path.display()))?;
        let mut r = BufReader::new(f);
        let content = match Content::read(&mut r) {
            Ok(c) => c,
            Err(e) => {
                // candle's error for a type it does not know names neither tensor nor type.
                if let Ok(types) = scan_tensor_types(path) {
                    if let Some((name, t)) = types.iter().find(|(_, t)| !candle_reads(*t)) {
                        bail!(
                            "{}: tensor {name} has type {}, which cannot be dequantized here \
                             (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q8_K); \
                             re-quantize the model to one of those (e.g. llama.cpp's \
                             `llama-quantize --allow-requantize in.gguf out.gguf Q8_0`)",
                            path.display(),
                            ggml_type_name(*t)
                        );
                    }
                }
                return Err(anyhow!(e).context(format!(
                    "cannot read {} as GGUF (corrupt or truncated file?)",
                    path.display()
                )));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            content,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// `general.architecture` (`llama`).
    pub fn architecture(&self) -> Result<&str> {
        self.meta_str("general.architecture")?.ok_or_else(|| {
            anyhow!(
                "{}: metadata general.architecture is missing; is this a model GGUF?",
                self.path.display()
            )
        })
    }

    /// Tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        v.sort();
        v
    }

    /// The stored type of a tensor (`Q4_1`, `F32`, …).
    pub fn tensor_type(&self, name: &str) -> Option<&'static str> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| dtype_name(i.ggml_dtype))
    }

    /// Count of tensors per stored type.
    pub fn type_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for i in self.content.tensor_infos.values() {
            *m.entry(dtype_name(i.ggml_dtype).to_string()).or_insert(0) += 1;
        }
        m
    }

    /// The GGUF tensor `name` dequantized to f32 on the CPU, in torch order (GGUF's dims
    /// reversed): a linear weight is `[out, in]`, an embedding `[vocab, d]`.
    pub fn dequantize(&self, name: &str) -> Result<Tensor> {
        let info = self.content.tensor_infos.get(name).ok_or_else(|| {
            anyhow!(
                "{}: no tensor named {name} in the GGUF file",
                self.path.display()
            )
        })?;
        let ty = dtype_name(info.ggml_dtype);
        let f = fs::File::open(&self.path)
            .with_context(|| format!("cannot open GGUF file {}", self.path.display()))?;
        let mut r = BufReader::new(f);
        let q = info
            .read(&mut r, self.content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| {
                anyhow!(
                    "{}: cannot read tensor {name} ({ty}, shape {:?}): {e} (truncated file?)",
                    self.path.display(),
                    info.shape.dims()
                )
            })?;
        let t = q.dequantize(&Device::Cpu).map_err(|e| {
            anyhow!(
                "{}: cannot dequantize tensor {name} of type {ty} (shape {:?}): {e}; \
                 re-quantize the model to Q4_0, Q4_1, Q8_0, F16 or F32",
                self.path.display(),
                info.shape.dims()
            )
        })?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_str(&self, key: &str) -> Result<Option<&str>> {
        match self.meta(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => bail!(
                "{}: metadata {key} should be a string, is {:?}",
                self.path.display(),
                v.value_type()
            ),
        }
    }

    fn meta_uint(&self, key: &str) -> Result<Option<u64>> {
        match self.meta(key) {
            None => Ok(None),
            Some(v) => meta_u64(v).map(Some).ok_or_else(|| {
                anyhow!(
                    "{}: metadata {key} should be a non-negative integer, is {v:?}",
                    self.path.display()
                )
            }),
        }
    }

    fn meta_float(&self, key: &str) -> Result<Option<f64>> {
        match self.meta(key) {
            None => Ok(None),
            Some(v) => meta_f64(v).map(Some).ok_or_else(|| {
                anyhow!(
                    "{}: metadata {key} should be a number, is {v:?}",
                    self.path.display()
                )
            }),
        }
    }

    fn meta_bool(&self, key: &str) -> Option<bool> {
        match self.meta(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn required_uint(&self, key: &str) -> Result<u64> {
        self.meta_uint(key)?.ok_or_else(|| {
            anyhow!(
                "{}: metadata {key} is missing; the file cannot be mapped to a Hugging Face config",
                self.path.display()
            )
        })
    }

    fn meta_array(&self, key: &str) -> Result<Option<&Vec<Value>>> {
        match self.meta(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => bail!(
                "{}: metadata {key} should be an array, is {:?}",
                self.path.display(),
                v.value_type()
            ),
        }
    }

    fn string_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(a) = self.meta_array(key)? else {
            return Ok(None);
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => bail!(
                    "{}: metadata {key}[{i}] should be a string, is {:?}",
                    self.path.display(),
                    other.value_type()
                ),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn llama_arch(&self) -> Result<&str> {
        let arch = self.architecture()?;
        if !SUPPORTED_ARCHITECTURES.contains(&arch) {
            bail!(
                "{}: GGUF architecture {arch:?} is not supported (supported: {}); \
                 use a llama-architecture model such as SmolLM2",
                self.path.display(),
                SUPPORTED_ARCHITECTURES.join(", ")
            );
        }
        Ok(arch)
    }

    /// The Hugging Face `config.json` (model_type `llama`) the metadata describes, with the keys
    /// transformers derives from a GGUF file: vocab_size, hidden_size, intermediate_size,
    /// num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps,
    /// rope_theta (also as `rope_parameters`), max_position_embeddings, tie_word_embeddings,
    /// bos/eos/pad token ids, hidden_act `silu`.
    pub fn hf_config(&self) -> Result<Json> {
        let a = self.llama_arch()?;
        let k = |s: &str| format!("{a}.{s}");
        if let Some(t) = self.meta_str(&k("rope.scaling.type"))? {
            if t != "none" {
                bail!(
                    "{}: RoPE scaling {t:?} ({}) is not supported; only unscaled RoPE converts",
                    self.path.display(),
                    k("rope.scaling.type")
                );
            }
        }
        let layers = self.required_uint(&k("block_count"))?;
        let hidden = self.required_uint(&k("embedding_length"))?;
        let ffn = self.required_uint(&k("feed_forward_length"))?;
        let heads = self.required_uint(&k("attention.head_count"))?;
        if heads == 0 || hidden == 0 {
            bail!(
                "{}: {} or {} is 0",
                self.path.display(),
                k("attention.head_count"),
                k("embedding_length")
            );
        }
        let kv_heads = self
            .meta_uint(&k("attention.head_count_kv"))?
            .unwrap_or(heads);
        let head_dim = match self.meta_uint(&k("rope.dimension_count"))? {
            Some(d) => d,
            None => self
                .meta_uint(&k("attention.key_length"))?
                .unwrap_or(hidden / heads),
        };
        let eps = self
            .meta_float(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let theta = self.meta_float(&k("rope.freq_base"))?.unwrap_or(10000.0);
        let ctx = self.meta_uint(&k("context_length"))?.unwrap_or(2048);
        let vocab = match self.meta_uint(&k("vocab_size"))? {
            Some(v) => v,
            None => match self.meta_array("tokenizer.ggml.tokens")? {
                Some(t) => t.len() as u64,
                None => self
                    .content
                    .tensor_infos
                    .get("token_embd.weight")
                    .map(|i| i.shape.dims()[0] as u64)
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: neither {} nor a token list nor token_embd.weight gives the vocabulary size",
                            self.path.display(),
                            k("vocab_size")
                        )
                    })?,
            },
        };
        let tied = !self.content.tensor_infos.contains_key("output.weight");
        let bias = self.content.tensor_infos.contains_key("blk.0.attn_q.bias");
        let mut c = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": ffn,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": eps,
            "rope_theta": theta,
            "rope_parameters": {"rope_theta": theta, "rope_type": "default"},
            "max_position_embeddings": ctx,
            "tie_word_embeddings": tied,
            "attention_bias": bias,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "use_cache": true,
            "torch_dtype": "float32",
        });
        for (gguf, hf) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
            ("tokenizer.ggml.unknown_token_id", "unk_token_id"),
        ] {
            if let Some(id) = self.meta_uint(gguf)? {
                c[hf] = json!(id);
            }
        }
        Ok(c)
    }

    /// Every tensor dequantized to f32 under its Hugging Face name (sorted by name), q and k
    /// rows un-permuted, each shape checked against [`Self::hf_config`]. `rope_freqs.weight`
    /// (derived from the config) is left out; any other tensor without an HF name is an error.
    pub fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let c = self.hf_config()?;
        let u = |k: &str| c[k].as_u64().unwrap_or(0) as usize;
        let (vocab, d, ffn, layers) = (
            u("vocab_size"),
            u("hidden_size"),
            u("intermediate_size"),
            u("num_hidden_layers"),
        );
        let (heads, kv, hd) = (
            u("num_attention_heads"),
            u("num_key_value_heads"),
            u("head_dim"),
        );
        if kv == 0 || hd % 2 != 0 {
            bail!(
                "{}: num_key_value_heads {kv} / head_dim {hd} cannot be right (head_dim must be even, kv heads > 0)",
                self.path.display()
            );
        }
        let mut out = Vec::new();
        for name in self.tensor_names() {
            if name == "rope_freqs.weight" {
                continue;
            }
            let hf = hf_tensor_name(name).ok_or_else(|| {
                anyhow!(
                    "{}: tensor {name} has no Hugging Face llama name (expected token_embd, output, \
                     output_norm and blk.N.{{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, \
                     ffn_gate, ffn_up, ffn_down}}); is this a plain llama model?",
                    self.path.display()
                )
            })?;
            let mut t = self.dequantize(name)?;
            let is_bias = name.ends_with(".bias");
            let expected: Vec<usize> = {
                let w = |o: usize, i: usize| if is_bias { vec![o] } else { vec![o, i] };
                if name == "token_embd.weight" || name == "output.weight" {
                    vec![vocab, d]
                } else if name == "output_norm.weight"
                    || name.ends_with("attn_norm.weight")
                    || name.ends_with("ffn_norm.weight")
                {
                    vec![d]
                } else if name.contains(".attn_q.") {
                    w(heads * hd, d)
                } else if name.contains(".attn_k.") || name.contains(".attn_v.") {
                    w(kv * hd, d)
                } else if name.contains(".attn_output.") {
                    w(d, heads * hd)
                } else if name.contains(".ffn_gate.") || name.contains(".ffn_up.") {
                    w(ffn, d)
                } else {
                    w(d, ffn) // ffn_down
                }
            };
            if t.dims() != expected.as_slice() {
                bail!(
                    "{}: tensor {name} ({hf}) has shape {:?}, the metadata implies {:?}; \
                     the file's metadata and tensors disagree",
                    self.path.display(),
                    t.dims(),
                    expected
                );
            }
            if name.contains(".attn_q.") {
                t = unpermute_rows(&t, heads)?;
            } else if name.contains(".attn_k.") {
                t = unpermute_rows(&t, kv)?;
            }
            out.push((hf, t));
        }
        // Every layer complete?
        let have: std::collections::HashSet<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        let mut missing = Vec::new();
        for n in ["model.embed_tokens.weight", "model.norm.weight"] {
            if !have.contains(n) {
                missing.push(n.to_string());
            }
        }
        for i in 0..layers {
            for leaf in [
                "input_layernorm",
                "post_attention_layernorm",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            ] {
                let n = format!("model.layers.{i}.{leaf}.weight");
                if !have.contains(n.as_str()) {
                    missing.push(n);
                }
            }
        }
        if !missing.is_empty() {
            bail!(
                "{}: the GGUF file lacks the tensors for {} (of {layers} layers); truncated or not a llama model",
                self.path.display(),
                missing.join(", ")
            );
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The token strings, spelled in the byte-level alphabet (a token holding any other character
    /// is re-spelled from its UTF-8 bytes, as transformers does).
    fn byte_level_tokens(&self) -> Result<Vec<String>> {
        let tokens = self.string_array("tokenizer.ggml.tokens")?.ok_or_else(|| {
            anyhow!(
                "{}: metadata tokenizer.ggml.tokens is missing: the file carries no tokenizer",
                self.path.display()
            )
        })?;
        let table = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
        Ok(tokens
            .iter()
            .map(|t| {
                if t.chars().all(|c| alphabet.contains(&c)) {
                    t.to_string()
                } else {
                    t.bytes().map(|b| table[b as usize]).collect()
                }
            })
            .collect())
    }

    fn token_types(&self, n: usize) -> Result<Vec<i64>> {
        match self.meta_array("tokenizer.ggml.token_type")? {
            None => Ok(vec![1; n]),
            Some(a) => {
                if a.len() != n {
                    bail!(
                        "{}: tokenizer.ggml.token_type has {} entries for {n} tokens",
                        self.path.display(),
                        a.len()
                    );
                }
                a.iter()
                    .map(|v| {
                        meta_i64(v).ok_or_else(|| {
                            anyhow!(
                                "{}: tokenizer.ggml.token_type holds a non-integer {v:?}",
                                self.path.display()
                            )
                        })
                    })
                    .collect()
            }
        }
    }

    fn tokenizer_model(&self) -> Result<&str> {
        let model = self.meta_str("tokenizer.ggml.model")?.ok_or_else(|| {
            anyhow!(
                "{}: metadata tokenizer.ggml.model is missing: the file carries no tokenizer",
                self.path.display()
            )
        })?;
        if !SUPPORTED_TOKENIZERS.contains(&model) {
            let kind = match model {
                "llama" => " (SentencePiece)",
                "bert" => " (WordPiece)",
                "t5" => " (Unigram)",
                _ => "",
            };
            bail!(
                "{}: tokenizer.ggml.model {model:?}{kind} is not supported; supported: {} \
                 (byte-level BPE). Use the model's own tokenizer.json instead",
                self.path.display(),
                SUPPORTED_TOKENIZERS.join(", ")
            );
        }
        Ok(model)
    }

    fn token_at(&self, tokens: &[String], key: &str) -> Result<Option<String>> {
        match self.meta_uint(key)? {
            None => Ok(None),
            Some(id) => tokens.get(id as usize).cloned().map(Some).ok_or_else(|| {
                anyhow!(
                    "{}: {key} = {id} is outside the vocabulary of {} tokens",
                    self.path.display(),
                    tokens.len()
                )
            }),
        }
    }

    /// The Hugging Face `tokenizer.json` for a `gpt2` (byte-level BPE) tokenizer, as a
    /// `tokenizers::Tokenizer`: the vocabulary and merges of the metadata, the ByteLevel
    /// pre-tokenizer (with llama3's split regex where `tokenizer.ggml.pre` asks for it) and
    /// decoder, control tokens (type 3) as special added tokens and user-defined tokens (type 4)
    /// as plain added tokens, BOS/EOS added only if `add_bos_token`/`add_eos_token`.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        self.tokenizer_model()?;
        let tokens = self.byte_level_tokens()?;
        let types = self.token_types(tokens.len())?;
        let merges = self
            .string_array("tokenizer.ggml.merges")?
            .ok_or_else(|| {
                anyhow!(
                    "{}: metadata tokenizer.ggml.merges is missing; a byte-level BPE tokenizer needs its merges",
                    self.path.display()
                )
            })?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| json!([a, b]))
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space",
                            self.path.display()
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // A duplicate token keeps its first id (as the HF vocabulary dict would its last;
            // duplicates do not occur in real files).
            vocab.entry(t.clone()).or_insert(json!(i));
        }
        let alphabet: std::collections::HashSet<char> = bytes_to_unicode().into_iter().collect();
        let mut added = Vec::new();
        for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
            let special = *ty == TOKEN_TYPE_CONTROL && t.chars().all(|c| alphabet.contains(&c));
            let user = *ty == TOKEN_TYPE_USER_DEFINED;
            if special || user {
                added.push(json!({
                    "id": i, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": special,
                }));
            }
        }
        let pre = self.meta_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
        let pre_tokenizer = match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                    byte_level(false),
                ]
            }),
            "qwen2" | "deepseek-r1-qwen" | "tekken" | "gpt-4o" | "llama4" | "qwen35" => bail!(
                "{}: tokenizer.ggml.pre {pre:?} needs a split regex not implemented here \
                 (supported: the default byte-level split and llama3's)",
                self.path.display()
            ),
            _ => byte_level(true),
        };
        let bos = self.token_at(&tokens, "tokenizer.ggml.bos_token_id")?;
        let eos = self.token_at(&tokens, "tokenizer.ggml.eos_token_id")?;
        let add_bos = self
            .meta_bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(false);
        let add_eos = self
            .meta_bool("tokenizer.ggml.add_eos_token")
            .unwrap_or(false);
        let mut specials = serde_json::Map::new();
        let mut special_piece = |tok: &Option<String>, key: &str| -> Result<String> {
            let t = tok.clone().ok_or_else(|| {
                anyhow!(
                    "{}: tokenizer.ggml.add_{key}_token is true but tokenizer.ggml.{key}_token_id is missing",
                    self.path.display()
                )
            })?;
            let id = vocab.get(&t).cloned().unwrap_or(json!(0));
            specials.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
            Ok(t)
        };
        let bos_piece = if add_bos {
            Some(special_piece(&bos, "bos")?)
        } else {
            None
        };
        let eos_piece = if add_eos {
            Some(special_piece(&eos, "eos")?)
        } else {
            None
        };
        let template = |seqs: &[(&str, u32)]| -> Vec<Json> {
            let mut v = Vec::new();
            for (seq, type_id) in seqs {
                if let Some(b) = &bos_piece {
                    v.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
                }
                v.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
                if let Some(e) = &eos_piece {
                    v.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
                }
            }
            v
        };
        let single = template(&[("A", 0)]);
        let pair = template(&[("A", 0), ("B", 1)]);
        let j = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        });
        j.to_string().parse::<tokenizers::Tokenizer>().map_err(|e| {
            anyhow!(
                "{}: the tokenizer built from the GGUF metadata is invalid: {e}",
                self.path.display()
            )
        })
    }

    /// `tokenizer_config.json`: BOS/EOS/PAD/UNK tokens, whether BOS/EOS are added, the chat
    /// template, and the context length as `model_max_length`.
    pub fn tokenizer_config(&self) -> Result<Json> {
        self.tokenizer_model()?;
        let tokens = self.byte_level_tokens()?;
        let mut c = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.meta_bool("tokenizer.ggml.add_bos_token").unwrap_or(false),
            "add_eos_token": self.meta_bool("tokenizer.ggml.add_eos_token").unwrap_or(false),
            "clean_up_tokenization_spaces": false,
        });
        for (key, hf) in [
            ("tokenizer.ggml.bos_token_id", "bos_token"),
            ("tokenizer.ggml.eos_token_id", "eos_token"),
            ("tokenizer.ggml.padding_token_id", "pad_token"),
            ("tokenizer.ggml.unknown_token_id", "unk_token"),
        ] {
            if let Some(t) = self.token_at(&tokens, key)? {
                c[hf] = json!(t);
            }
        }
        if let Some(t) = self.meta_str("tokenizer.chat_template")? {
            c["chat_template"] = json!(t);
        }
        if let Ok(a) = self.architecture() {
            if let Some(n) = self.meta_uint(&format!("{a}.context_length"))? {
                c["model_max_length"] = json!(n);
            }
        }
        Ok(c)
    }

    /// `generation_config.json`: the BOS, EOS and PAD ids.
    pub fn generation_config(&self) -> Result<Json> {
        let mut c = json!({"_from_model_config": true});
        for (key, hf) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = self.meta_uint(key)? {
                c[hf] = json!(id);
            }
        }
        Ok(c)
    }
}

/// llama3's pre-tokenizer split (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-2's byte → printable character table (the byte-level alphabet): printable Latin-1 bytes
/// map to themselves, the rest to 256, 257, … in byte order.
pub fn bytes_to_unicode() -> Vec<char> {
    let keep =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if keep(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next += 1;
                c
            }
        })
        .collect()
}

/// The Hugging Face name of a llama GGUF tensor (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), or `None` for names outside the llama layout.
pub fn hf_tensor_name(gguf_name: &str) -> Option<String> {
    match gguf_name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (leaf, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf = match leaf {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    if kind == "bias" && hf.ends_with("norm") {
        return None;
    }
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's q/k row permutation: `t` is `[n_head · d, ..]` (a weight `[rows, in]` or a
/// bias `[rows]`) as stored in GGUF; returns the same shape in Hugging Face row order, where HF
/// row `h·d + s·d/2 + j` is GGUF row `h·d + 2j + s` (`d` the head dimension, `s` ∈ {0, 1}).
/// `n_head` is the query head count for q and the key/value head count for k.
pub fn unpermute_rows(t: &Tensor, n_head: usize) -> Result<Tensor> {
    let dims = t.dims().to_vec();
    let rows = *dims
        .first()
        .ok_or_else(|| anyhow!("cannot un-permute a scalar"))?;
    if n_head == 0 || rows % (2 * n_head) != 0 {
        bail!(
            "cannot un-permute {rows} rows into {n_head} heads of an even size: the head counts in the metadata do not fit the tensor (shape {dims:?})"
        );
    }
    let half = rows / n_head / 2;
    let rest: usize = dims[1..].iter().product();
    let r = t
        .reshape((n_head, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)?;
    Ok(r)
}

/// What [`convert_to_hf_folder`] did.
#[derive(Debug, Clone)]
pub struct ConversionSummary {
    /// The folder written.
    pub out: PathBuf,
    /// Tensors written to `model.safetensors`.
    pub tensors: usize,
    /// Tensors per stored GGUF type (`{"Q4_1": 210, …}`).
    pub gguf_types: BTreeMap<String, usize>,
    /// Total bytes of the files written.
    pub bytes: u64,
}

fn write_json(dir: &Path, name: &str, v: &Json) -> Result<()> {
    let p = dir.join(name);
    fs::write(&p, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("cannot write {}", p.display()))
}

/// Converts a llama GGUF file into a Hugging Face-layout folder `out`: `config.json`,
/// `model.safetensors` (f32, HF names, q/k un-permuted; no `lm_head.weight` when tied),
/// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` and `gguf-source.json`
/// (the GGUF file's name, size, `general.name` and tensor types). Everything is written into a
/// temporary folder beside `out` and renamed into place: on error nothing is left behind.
/// `out` must not exist yet.
pub fn convert_to_hf_folder(gguf: &Path, out: &Path) -> Result<ConversionSummary> {
    if out.exists() {
        bail!(
            "{} already exists; remove it or choose another output folder",
            out.display()
        );
    }
    let file = GgufFile::open(gguf)?;
    // Everything that can fail on the file's content is checked before anything is written.
    let config = file.hf_config()?;
    let tokenizer = file.tokenizer()?;
    let tok_config = file.tokenizer_config()?;
    let gen_config = file.generation_config()?;
    let tensors = file.hf_tensors()?;

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let leaf = adept_cache::leaf_name(out, "model");
    let (tmp, mut guard) = adept_cache::staging_dir(&parent, &leaf)?;

    write_json(&tmp, "config.json", &config)?;
    let st = tmp.join("model.safetensors");
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(meta),
        &st,
    )
    .with_context(|| format!("cannot write {}", st.display()))?;
    let tj = tmp.join("tokenizer.json");
    tokenizer
        .save(&tj, true)
        .map_err(|e| anyhow!("cannot write {}: {e}", tj.display()))?;
    write_json(&tmp, "tokenizer_config.json", &tok_config)?;
    write_json(&tmp, "generation_config.json", &gen_config)?;
    let gguf_types = file.type_counts();
    let note = json!({
        "gguf_file": gguf.file_name().map(|n| n.to_string_lossy().into_owned()),
        "gguf_bytes": fs::metadata(gguf).map(|m| m.len()).unwrap_or(0),
        "general.name": file.meta_str("general.name").ok().flatten(),
        "architecture": file.architecture()?,
        "gguf_tensor_types": gguf_types,
        "converted_by": concat!("adept-backbones ", env!("CARGO_PKG_VERSION"), " gguf::convert_to_hf_folder"),
        "dtype": "float32",
        "notes": "dequantized to f32; q/k rows un-permuted from llama.cpp's interleaved-RoPE order",
    });
    write_json(&tmp, SOURCE_NOTE, &note)?;
    let mut bytes = 0;
    for f in CONVERTED_FILES {
        bytes += fs::metadata(tmp.join(f))
            .with_context(|| format!("{} was not written", tmp.join(f).display()))?
            .len();
    }
    fs::rename(&tmp, out).with_context(|| {
        format!(
            "cannot move {} into place at {}",
            tmp.display(),
            out.display()
        )
    })?;
    guard.0 = None;
    Ok(ConversionSummary {
        out: out.to_path_buf(),
        tensors: tensors.len(),
        gguf_types,
        bytes,
    })
}
