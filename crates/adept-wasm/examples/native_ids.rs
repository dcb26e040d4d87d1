//! Native reference for the browser test: reads JSONL `{"a": text, "b": text|null}` on stdin
//! and writes `{"ids": [...], "type_ids": [...], "truncated": bool}` per line with the native
//! encoder (`adept_train::TextEncoder`, exactly as `adept infer` uses it).
//!
//! `cargo run -p adept-wasm --example native_ids -- <bundle dir> < in.jsonl > out.jsonl`

use adept_bundle::BundleManifest;
use adept_train::{OverLength, TextEncoder};
use std::io::{BufRead, Write};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: native_ids <bundle dir>"),
    );
    let m = BundleManifest::read(&dir)?;
    let over = if m.over_length == "error" {
        OverLength::Error
    } else {
        OverLength::Truncate
    };
    let enc = TextEncoder::from_file(&dir.join("tokenizer.json"), m.max_length, over)?;
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
        let e = enc.encode(a, b)?;
        writeln!(
            out,
            "{}",
            serde_json::json!({"ids": e.ids, "type_ids": e.type_ids, "truncated": e.truncated})
        )?;
    }
    Ok(())
}
