//! `adept infer` / `adept eval --bundle` as a stand-alone example, until the `adept` CLI wires
//! them (same Args structs and run functions).
//!
//! ```sh
//! cargo run -p adept-runtime --example serve -- infer --bundle exports/sst2-adept --text "a gem"
//! cargo run -p adept-runtime --example serve -- eval --bundle exports/sst2-adept
//! ```

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "serve")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Predict with a bundle.
    Infer(adept_runtime::InferArgs),
    /// Score a bundle on a task's validation split.
    Eval(adept_runtime::BundleEvalArgs),
}

fn main() {
    let result = match Cli::parse().command {
        Cmd::Infer(a) => adept_runtime::run_infer(&a).map(|r| {
            if let Some(why) = &r.device_fallback {
                eprintln!("note: running on the CPU: {why}");
            }
            eprintln!(
                "{} predictions on {} in {:.2}s",
                r.predictions, r.device, r.seconds
            )
        }),
        Cmd::Eval(a) => adept_runtime::run_bundle_eval(&a).map(|r| {
            println!("{}", serde_json::to_string_pretty(&r).unwrap());
        }),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
