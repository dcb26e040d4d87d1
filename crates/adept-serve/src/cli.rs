//! `adept serve`: its options (clap arguments with the `cli` feature) and run function.

use crate::batcher::{BatchOptions, MAX_WAIT_LIMIT};
use crate::server::{open_models, AppState, ModelSpec, ServeOptions, Server};
use adept_runtime::{RuntimeOptions, SessionArgs};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "cli")]
use adept_runtime::cli::positive_usize;

/// Serve exported bundles over HTTP: classifiers (`/predict`), decoder and T5 bundles
/// (`/generate`, streamed on request); dynamic batching, bounded queues, JSON metrics.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeArgs {
    /// A bundle to serve, as DIR (named after its folder) or NAME=DIR; repeat for more models
    /// (`POST /v1/models/NAME/predict`, or `/generate` for decoder and T5 bundles).
    #[cfg_attr(feature = "cli", arg(long, value_name = "[NAME=]DIR", required = true))]
    pub bundle: Vec<String>,
    /// Address to listen on (0.0.0.0 for every interface).
    #[cfg_attr(feature = "cli", arg(long, default_value = "127.0.0.1"))]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed at start).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 8080))]
    pub port: u16,
    /// Device, intra-op threads (per session) and the ONNX Runtime library.
    #[cfg_attr(feature = "cli", command(flatten))]
    pub session: SessionArgs,
    /// Sessions per model, each on its own worker thread and with its own copy of the model
    /// (e.g. 2 workers × 1 thread on two cores).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1, value_parser = positive_usize))]
    pub workers: usize,
    /// Inputs a worker takes off the queue at once (and the batch size of each run).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 32, value_parser = positive_usize))]
    pub max_batch: usize,
    /// Milliseconds a worker waits for more requests after the first (at 0 it takes only what
    /// is queued, so a lone request never waits; requests arriving during a run share the next).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 0.0, value_name = "MS"))]
    pub max_wait_ms: f64,
    /// Inputs that may wait per model; beyond, requests get 503 with Retry-After.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1024, value_parser = positive_usize))]
    pub max_queue: usize,
    /// Inputs one request may hold (413 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 256, value_parser = positive_usize))]
    pub max_inputs: usize,
    /// Largest request body in bytes (413 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1 << 20, value_parser = positive_usize))]
    pub max_body_bytes: usize,
    /// Predict requests handled at once, all models together (reading, tokenizing, queued or
    /// running); beyond, 503 with Retry-After. Bounds the memory bodies hold (× --max-body-bytes).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 256, value_parser = positive_usize))]
    pub max_pending: usize,
    /// Seconds a request body may take to arrive (408 after).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 30.0, value_name = "S"))]
    pub body_timeout: f64,
    /// On Ctrl-C or SIGTERM, seconds the requests in flight get to finish before their
    /// connections are dropped (a second Ctrl-C exits at once).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 10.0, value_name = "S"))]
    pub drain_timeout: f64,
    /// Connections open at once (idle keep-alive ones included); more wait until one closes.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 1024, value_parser = positive_usize))]
    pub max_connections: usize,
    /// Seconds a connection may stay open without sending a request (or while sending its
    /// headers), or with an answer it does not read (a write that makes no progress), before
    /// it is closed (at least 0.1).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 60.0, value_name = "S"))]
    pub idle_timeout: f64,
    /// Generation: the most new tokens a request may ask for (max_new_tokens; 422 beyond).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 512, value_parser = positive_usize))]
    pub max_new_tokens: usize,
    /// Run each round's inputs in arrival order instead of grouping similar lengths.
    #[cfg_attr(feature = "cli", arg(long))]
    pub no_length_buckets: bool,
    /// A web origin whose pages may call the server from a browser (CORS), as the browser
    /// sends it (`https://app.example`, `http://localhost:3000`), or `*` for any; repeat for more.
    #[cfg_attr(feature = "cli", arg(long, value_name = "ORIGIN"))]
    pub cors_origin: Vec<String>,
    /// A file of API keys, one per line (blank lines and lines starting with # skipped; each at
    /// least 16 characters): every route but GET /health then needs `Authorization: Bearer
    /// <key>` (401 otherwise). The environment variable ADEPT_API_KEY adds one more key.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub api_key_file: Option<PathBuf>,
    /// Append every model's counters as a JSON line to this file every --metrics-every seconds.
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub metrics_log: Option<PathBuf>,
    /// Seconds between lines of --metrics-log.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 10.0, value_name = "S"))]
    pub metrics_every: f64,
}

/// The API keys of `--api-key-file` (one per line; blank lines and `#` comments skipped) and
/// `ADEPT_API_KEY` (`env`), each checked; an error names the file, the line and what is wrong
/// with it. A file that holds no key, or an `ADEPT_API_KEY` that is set but empty or not text,
/// is an error: either would leave the server open while its owner thinks it is not.
pub fn api_keys(
    file: Option<&std::path::Path>,
    env: Option<&std::ffi::OsStr>,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the --api-key-file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            crate::server::check_api_key(line)
                .with_context(|| format!("{} line {}", path.display(), i + 1))?;
            keys.push(line.to_owned());
        }
        anyhow::ensure!(
            !keys.is_empty(),
            "the --api-key-file {} holds no key (one per line; # starts a comment)",
            path.display()
        );
    }
    if let Some(k) = env {
        let k = k
            .to_str()
            .context("ADEPT_API_KEY is set but is not valid text (UTF-8): set it to the key")?
            .trim();
        anyhow::ensure!(
            !k.is_empty(),
            "ADEPT_API_KEY is set but empty: set it to the key, or unset it to serve without one"
        );
        crate::server::check_api_key(k).context("ADEPT_API_KEY")?;
        keys.push(k.to_owned());
    }
    Ok(keys)
}

impl ServeArgs {
    pub fn runtime_options(&self) -> RuntimeOptions {
        self.session
            .options(self.max_batch, !self.no_length_buckets)
    }

    pub fn serve_options(&self) -> Result<ServeOptions> {
        let most = MAX_WAIT_LIMIT.as_millis();
        anyhow::ensure!(
            self.max_wait_ms.is_finite()
                && self.max_wait_ms >= 0.0
                && self.max_wait_ms <= most as f64,
            "--max-wait-ms must be a number ≥ 0 and at most {most}, not {}",
            self.max_wait_ms
        );
        let opts = ServeOptions {
            batch: BatchOptions {
                max_batch: self.max_batch,
                max_wait: seconds(
                    "--max-wait-ms",
                    self.max_wait_ms / 1e3,
                    MAX_WAIT_LIMIT.as_secs_f64(),
                    true,
                )?,
                max_queue: self.max_queue,
            },
            workers: self.workers,
            max_inputs: self.max_inputs,
            max_body_bytes: self.max_body_bytes,
            max_pending: self.max_pending,
            body_timeout: seconds("--body-timeout", self.body_timeout, 3600.0, false)?,
            drain_timeout: seconds("--drain-timeout", self.drain_timeout, 3600.0, true)?,
            cors_origins: self.cors_origin.clone(),
            max_new_tokens: self.max_new_tokens,
            max_connections: self.max_connections,
            idle_timeout: seconds("--idle-timeout", self.idle_timeout, 86400.0, false)?,
            api_keys: crate::server::ApiKeys::new(&api_keys(
                self.api_key_file.as_deref(),
                std::env::var_os("ADEPT_API_KEY").as_deref(),
            )?)?,
        };
        seconds("--metrics-every", self.metrics_every, 86400.0, false)?;
        opts.validate()?;
        Ok(opts)
    }

    /// Opens the bundles and starts the server (it runs until [`Server::stop`]).
    pub fn start(&self) -> Result<Server> {
        let opts = self.serve_options()?;
        let specs = self
            .bundle
            .iter()
            .map(|s| ModelSpec::parse(s))
            .collect::<Result<Vec<_>>>()?;
        let models = open_models(&specs, &self.runtime_options(), &opts)?;
        for m in &models {
            if let Some(b) = m.bundle() {
                if let Some(why) = &b.device_fallback {
                    eprintln!("note: {} runs on the CPU: {why}", m.name);
                }
                eprintln!(
                    "serving {:?}: {} ({}, {} labels, {} dtype, {}-token prompt) from {}, {} worker(s) on {}",
                    m.name,
                    b.manifest.task,
                    b.manifest.method,
                    b.manifest.label_names.len(),
                    match b.manifest.int8_activations {
                        Some(a) => format!("{} {a}", b.manifest.dtype),
                        None => b.manifest.dtype.to_string(),
                    },
                    b.manifest.prompt_length,
                    b.dir.display(),
                    opts.workers,
                    b.device
                );
            } else if let Some(g) = m.generation() {
                let i = &g.info;
                eprintln!(
                    "serving {:?}: {} generation ({}, {} dtype, {}-token prompt) from {}, {} worker(s), POST /v1/models/{}/generate",
                    m.name,
                    i["model_family"].as_str().unwrap_or("?"),
                    i["method"].as_str().unwrap_or("?"),
                    i["dtype"].as_str().unwrap_or("?"),
                    i["prompt_length"],
                    g.dir.display(),
                    opts.workers,
                    m.name
                );
            }
        }
        let state = AppState::new(models, opts)?;
        let io_threads = std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(2);
        let every = seconds("--metrics-every", self.metrics_every, 86400.0, false)?;
        let log = self.metrics_log.clone().map(|p| (p, every));
        Server::start(
            state,
            SocketAddr::new(self.host, self.port),
            io_threads,
            log,
        )
    }
}

/// `value` seconds as a duration, refused unless finite, ≤ `max` and > 0 (≥ 0 with `zero_ok`).
fn seconds(flag: &str, value: f64, max: f64, zero_ok: bool) -> Result<Duration> {
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    anyhow::ensure!(
        value.is_finite() && low_ok && value <= max,
        "{flag} must be a number {} and at most {max} s, not {value} s",
        if zero_ok { "≥ 0" } else { "> 0" }
    );
    Ok(Duration::from_secs_f64(value))
}

/// Runs `adept serve` until Ctrl-C or SIGTERM; then lets open requests finish and returns.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    let server = args.start()?;
    eprintln!(
        "listening on http://{} (POST /v1/models/{{name}}/predict or /generate, GET /v1/models, \
         /health, /metrics); Ctrl-C stops",
        server.addr()
    );
    if !server.state().opts.api_keys.is_empty() {
        eprintln!("requests need an API key (Authorization: Bearer <key>), except GET /health");
    } else if !args.host.is_loopback() {
        eprintln!(
            "note: no API key (--api-key-file, ADEPT_API_KEY): anyone who reaches {} can use \
             the models",
            server.addr()
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    rt.block_on(shutdown_signal());
    eprintln!(
        "stopping: answering the requests in flight (up to {} s; Ctrl-C again exits now)",
        args.drain_timeout
    );
    std::thread::spawn(move || {
        rt.block_on(shutdown_signal());
        eprintln!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    server.stop()
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::api_keys;

    #[test]
    fn api_keys_come_from_the_file_and_the_environment_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.txt");
        std::fs::write(
            &file,
            "# the team's keys\n\n  key-aaaaaaaaaaaaaaaa  \nkey-bbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(
            api_keys(Some(&file), None).unwrap(),
            ["key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb"]
        );
        let os = |s: &str| std::ffi::OsString::from(s);
        let both = api_keys(Some(&file), Some(&os("key-cccccccccccccccc"))).unwrap();
        assert_eq!(both.len(), 3);
        assert!(api_keys(None, None).unwrap().is_empty());
        // Set but empty, or not text: an error, not a server without keys.
        let e = format!("{:#}", api_keys(None, Some(&os("  "))).unwrap_err());
        assert!(e.contains("ADEPT_API_KEY is set but empty"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = std::ffi::OsStr::from_bytes(b"\xffkey-aaaaaaaaaaaaaaaa");
            let e = format!("{:#}", api_keys(None, Some(bad)).unwrap_err());
            assert!(e.contains("not valid text"), "{e}");
        }
        // Errors name the file (and line) and what is wrong.
        std::fs::write(&file, "key-aaaaaaaaaaaaaaaa\nshort\n").unwrap();
        let e = format!("{:#}", api_keys(Some(&file), None).unwrap_err());
        assert!(
            e.contains("keys.txt line 2") && e.contains("at least 16"),
            "{e}"
        );
        std::fs::write(&file, "# nothing here\n\n").unwrap();
        let e = format!("{:#}", api_keys(Some(&file), None).unwrap_err());
        assert!(e.contains("keys.txt") && e.contains("holds no key"), "{e}");
        let e = format!(
            "{:#}",
            api_keys(Some(&dir.path().join("none.txt")), None).unwrap_err()
        );
        assert!(e.contains("none.txt") && e.contains("cannot read"), "{e}");
        let e = format!(
            "{:#}",
            api_keys(None, Some(&os("with space in the key!"))).unwrap_err()
        );
        assert!(
            e.contains("ADEPT_API_KEY") && e.contains("without spaces"),
            "{e}"
        );
    }
}
