//! Installs the default model and ONNX Runtime into the cache root.
//! Usage: `cargo run -p adept-cache --example fetch [-- CACHE_DIR]`.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let cli = std::env::args_os().nth(1).map(PathBuf::from);
    let root = adept_cache::cache_root(cli.as_deref())?;
    println!("cache root: {}", root.display());
    println!(
        "model: {}",
        adept_cache::fetch_default_model(&root)?.display()
    );
    println!(
        "onnxruntime: {}",
        adept_cache::fetch_onnxruntime(&root)?.display()
    );
    Ok(())
}
