//! Native reference for the browser test: reads JSONL `{"a": text, "b": text|null}` on stdin
//! and writes `{"ids": [...], "type_ids": [...], "truncated": bool}` per line with the native
//! build of the bundle's encoder (`adept_bundle::TextEncoder::for_bundle`, exactly as
//! `adept infer` opens it; tokenizers with onig, where the browser has the pure-Rust backend).
//!
//! `cargo run -p adept-wasm --example native_ids -- <bundle dir> < in.jsonl > out.jsonl`

use adept_bundle::tokenize::load_tokenizer;
use adept_bundle::{BundleManifest, TextEncoder, MANIFEST_FILE, TOKENIZER_FILE};
use std::io::{BufRead, Write};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: native_ids <bundle dir>"),
    );
    let m = BundleManifest::read(&dir)?;
    let tok = dir.join(TOKENIZER_FILE);
    let enc = TextEncoder::for_bundle(
        load_tokenizer(&tok)?,
        &m,
        &tok.display().to_string(),
        &dir.join(MANIFEST_FILE).display().to_string(),
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let a = v["a"].as_str().unwrap_or_default();
        let b = v["b"].as_str();
        let e = enc.encode_within(a, b, m.vocab_size)?;
        writeln!(
            out,
            "{}",
            serde_json::json!({"ids": e.ids, "type_ids": e.type_ids, "truncated": e.truncated})
        )?;
    }
    Ok(())
}
