//! Llama-family decoders (Llama, SmolLM2, …). Placeholder holding the ONNX emission only; the
//! candle model arrives at merge.
#[cfg(feature = "onnx")]
pub mod onnx;
