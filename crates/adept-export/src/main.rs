//! `adept-export`: the exporter as a stand-alone binary (`adept export` runs the same code).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "adept-export",
    version,
    about = "Export a trained adept adapter as an ONNX bundle"
)]
struct Cli {
    #[command(flatten)]
    args: adept_export::ExportArgs,
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ADEPT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    match adept_export::run_export(&cli.args) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
