//! The served models, the routes, and a server that runs on its own thread (for the command,
//! the tests and the bench alike).

use crate::api::{read_inputs, ApiError, InputSpec};
use crate::batcher::{BatchOptions, Batcher, Runner, SubmitError, MAX_WAIT_LIMIT};
use crate::metrics::{ModelStats, StatsSnapshot};
use adept_bundle::Encoded;
use adept_runtime::cli::prediction_json;
use adept_runtime::{Bundle, RuntimeOptions};
use anyhow::{bail, ensure, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::Request;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// A bundle to serve and the name its routes use (`/v1/models/{name}/predict`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub dir: PathBuf,
}

impl ModelSpec {
    /// `NAME=DIR`, or `DIR` (named after its folder).
    pub fn parse(s: &str) -> Result<Self> {
        let (name, dir) = match s.split_once('=') {
            Some((n, d)) => (n.to_owned(), PathBuf::from(d)),
            None => {
                let dir = PathBuf::from(s);
                let name = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
                    .with_context(|| {
                        format!("cannot name the bundle {s:?} after its folder: pass NAME=DIR")
                    })?;
                (name, dir)
            }
        };
        ensure!(
            !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "model name {name:?} (from {s:?}) must be letters, digits, '-', '_' or '.'; pass \
             NAME=DIR to choose one"
        );
        Ok(Self { name, dir })
    }
}

/// Server limits and batching.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeOptions {
    pub batch: BatchOptions,
    /// Sessions (and worker threads) per model; each holds its own copy of the model. With more
    /// than one, idle intra-op threads do not spin (unless the runtime options say otherwise).
    pub workers: usize,
    /// Inputs one request may hold.
    pub max_inputs: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Predict requests handled at once, all models together (reading, tokenizing, queued or
    /// running); more get 503. With `max_body_bytes` this bounds the memory requests hold.
    pub max_pending: usize,
    /// How long a request body may take to arrive (408 after).
    pub body_timeout: Duration,
    /// On stop, how long requests in flight may take to finish before their connections are
    /// dropped.
    pub drain_timeout: Duration,
    /// Web origins (`https://app.example`, or `*` for any) whose pages may call the server from
    /// a browser (CORS); empty: no CORS headers, as a server without a web front end wants.
    pub cors_origins: Vec<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            batch: BatchOptions::default(),
            workers: 1,
            max_inputs: 256,
            max_body_bytes: 1 << 20,
            max_pending: 256,
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            cors_origins: Vec::new(),
        }
    }
}

impl ServeOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.workers >= 1, "--workers must be at least 1");
        ensure!(self.batch.max_batch >= 1, "--max-batch must be at least 1");
        ensure!(self.max_inputs >= 1, "--max-inputs must be at least 1");
        ensure!(self.max_pending >= 1, "--max-pending must be at least 1");
        for o in &self.cors_origins {
            ensure!(
                o == "*"
                    || ((o.starts_with("http://") || o.starts_with("https://"))
                        && !o.ends_with('/')
                        && HeaderValue::from_str(o).is_ok()),
                "--cors-origin {o:?} is not an origin: write it as the browser sends it, \
                 scheme://host[:port] without a trailing slash (or * for any)"
            );
        }
        ensure!(
            self.batch.max_wait <= MAX_WAIT_LIMIT,
            "--max-wait-ms must be at most {} ms, not {} ms",
            MAX_WAIT_LIMIT.as_millis(),
            self.batch.max_wait.as_millis()
        );
        ensure!(
            self.batch.max_queue >= self.max_inputs,
            "--max-queue ({}) is smaller than --max-inputs ({}): a full request could never be \
             queued; raise --max-queue",
            self.batch.max_queue,
            self.max_inputs
        );
        Ok(())
    }
}

/// One served model: its bundle (tokenizer, manifest), its queue and workers, its counters.
pub struct ServedModel {
    pub name: String,
    pub bundle: Arc<Bundle>,
    pub stats: Arc<ModelStats>,
    batcher: Batcher,
}

impl ServedModel {
    /// Opens `spec.dir` `opts.workers` times (one session per worker) and starts the workers.
    pub fn open(spec: &ModelSpec, runtime: &RuntimeOptions, opts: &ServeOptions) -> Result<Self> {
        opts.validate()?;
        let mut runtime = runtime.clone();
        runtime.batch_size = opts.batch.max_batch;
        if opts.workers > 1 {
            // Idle threads of one session spinning would take the cores from another's run.
            runtime.session.intra_op_spinning.get_or_insert(false);
        }
        let mut bundles = Vec::with_capacity(opts.workers);
        for _ in 0..opts.workers {
            let b = Bundle::open_with(&spec.dir, &runtime).with_context(|| {
                format!("cannot serve {} as {:?}", spec.dir.display(), spec.name)
            })?;
            if b.manifest.decoder.is_some() {
                bail!(
                    "{} is a decoder bundle: `adept serve` serves classifier bundles; run it with \
                     `adept generate`",
                    spec.dir.display()
                );
            }
            bundles.push(Arc::new(b));
        }
        let runners = bundles
            .iter()
            .map(|b| b.clone() as Arc<dyn Runner>)
            .collect();
        Self::with_runners(&spec.name, bundles[0].clone(), runners, opts)
    }

    /// A model whose inputs `bundle` encodes and `runners` run (tests put a stand-in here).
    pub fn with_runners(
        name: &str,
        bundle: Arc<Bundle>,
        runners: Vec<Arc<dyn Runner>>,
        opts: &ServeOptions,
    ) -> Result<Self> {
        opts.validate()?;
        ensure!(
            !runners.is_empty(),
            "model {name:?} has no worker to run it"
        );
        let stats = Arc::new(ModelStats::default());
        let batcher = Batcher::start(name, runners, opts.batch.clone(), stats.clone())
            .context("cannot start the worker threads")?;
        Ok(Self {
            name: name.to_owned(),
            bundle,
            stats,
            batcher,
        })
    }

    /// What `/v1/models` says of this model.
    pub fn info(&self, workers: usize) -> Value {
        let m = &self.bundle.manifest;
        json!({
            "name": self.name,
            "task": m.task,
            "labels": m.label_names,
            "regression": m.regression,
            "text_fields": m.text_fields,
            "takes_pair": !m.input_template.segment_b.is_empty(),
            "max_length": m.max_length,
            "over_length": m.over_length,
            "model_family": m.model_family,
            "method": m.method,
            "prompt_length": m.prompt_length,
            "dtype": m.dtype,
            "fold": m.fold,
            "device": self.bundle.device,
            "workers": workers,
            "bundle": self.bundle.dir,
        })
    }
}

/// What the handlers share.
pub struct AppState {
    pub models: BTreeMap<String, Arc<ServedModel>>,
    pub opts: ServeOptions,
    pub started: Instant,
    /// One permit per predict request being handled (`opts.max_pending`).
    pending: Arc<Semaphore>,
}

impl AppState {
    pub fn new(models: Vec<ServedModel>, opts: ServeOptions) -> Result<Self> {
        ensure!(!models.is_empty(), "no model to serve: pass --bundle DIR");
        let mut map = BTreeMap::new();
        for m in models {
            let name = m.name.clone();
            ensure!(
                map.insert(name.clone(), Arc::new(m)).is_none(),
                "two bundles are named {name:?}: pass NAME=DIR to tell them apart"
            );
        }
        Ok(Self {
            models: map,
            pending: Arc::new(Semaphore::new(opts.max_pending)),
            opts,
            started: Instant::now(),
        })
    }

    fn model(&self, name: &str) -> Result<&Arc<ServedModel>, ApiError> {
        self.models.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no model named {name:?}; this server serves {:?}",
                    self.models.keys().collect::<Vec<_>>()
                ),
            )
        })
    }

    /// Per-model counters, as `/metrics` returns them.
    pub fn snapshot(&self) -> BTreeMap<String, StatsSnapshot> {
        self.models
            .iter()
            .map(|(n, m)| (n.clone(), m.stats.snapshot()))
            .collect()
    }

    /// The models with no worker running (empty when healthy).
    pub fn models_without_workers(&self) -> Vec<&String> {
        self.models
            .iter()
            .filter(|(_, m)| m.stats.workers_alive.load(Ordering::Acquire) == 0)
            .map(|(n, _)| n)
            .collect()
    }

    /// Stops every model's workers after they answer what is queued.
    pub fn shutdown(&self) {
        for m in self.models.values() {
            m.batcher.shutdown();
        }
    }
}

impl ServeOptions {
    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if allowed.
    fn cors_allow(&self, origin: &str) -> Option<HeaderValue> {
        if self.cors_origins.iter().any(|o| o == "*") {
            Some(HeaderValue::from_static("*"))
        } else if self.cors_origins.iter().any(|o| o == origin) {
            HeaderValue::from_str(origin).ok()
        } else {
            None
        }
    }
}

/// CORS for the origins in `--cors-origin`: answers preflight requests (`OPTIONS`) and marks
/// the answers to allowed origins; other origins get no CORS headers (their browsers refuse).
async fn cors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let allow = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .and_then(|o| st.opts.cors_allow(o));
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if allow.is_some() {
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        r
    } else {
        next.run(req).await
    };
    if let Some(value) = allow {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

/// The routes:
///
/// | route | |
/// |---|---|
/// | `GET /health` | `{"status": "ok", "models": [...]}` |
/// | `GET /v1/models`, `GET /v1/models/{name}` | task, labels, text fields, dtype, … |
/// | `POST /v1/models/{name}/predict` | `{"inputs": [...]}` → `{"model", "predictions": [...]}` |
/// | `POST /v1/predict` | the same, when one model is served |
/// | `GET /metrics` | per-model counters, padding, latency percentiles |
pub fn router(state: Arc<AppState>) -> Router {
    let cors_layer = (!state.opts.cors_origins.is_empty())
        .then(|| axum::middleware::from_fn_with_state(state.clone(), cors));
    let routes = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(model_info))
        .route("/v1/models/{name}/predict", post(predict_named))
        .route("/v1/predict", post(predict_only))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    match cors_layer {
        Some(layer) => routes.layer(layer).with_state(state),
        None => routes.with_state(state),
    }
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let models = st.models.keys().collect::<Vec<_>>();
    let down = st.models_without_workers();
    if down.is_empty() {
        Json(json!({ "status": "ok", "models": models })).into_response()
    } else {
        let body = json!({ "status": "degraded", "models": models, "without_workers": down });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// A URL the router could not read (e.g. invalid percent-encoding), as a JSON 400.
fn bad_path(r: PathRejection) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("bad URL: {}", r.body_text()),
    )
}

async fn list_models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<Value> = st
        .models
        .values()
        .map(|m| m.info(st.opts.workers))
        .collect();
    Json(json!({ "models": models }))
}

async fn model_info(
    State(st): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let UrlPath(name) = name.map_err(bad_path)?;
    Ok(Json(st.model(&name)?.info(st.opts.workers)))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "uptime_seconds": st.started.elapsed().as_secs_f64(),
        "models": st.snapshot(),
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route: see GET /v1/models, POST /v1/models/{name}/predict, GET /health, GET /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method: predict routes take POST, the others GET",
    )
}

async fn predict_named(
    State(st): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
    body: Body,
) -> Response {
    let name = match name {
        Ok(UrlPath(n)) => n,
        Err(r) => return bad_path(r).into_response(),
    };
    match st.model(&name) {
        Ok(m) => predict(m.clone(), &st, body).await,
        Err(e) => e.into_response(),
    }
}

async fn predict_only(State(st): State<Arc<AppState>>, body: Body) -> Response {
    if st.models.len() != 1 {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "this server serves {} models ({:?}): POST to /v1/models/{{name}}/predict",
                st.models.len(),
                st.models.keys().collect::<Vec<_>>()
            ),
        )
        .into_response();
    }
    let m = st.models.values().next().cloned().expect("one model");
    predict(m, &st, body).await
}

async fn predict(model: Arc<ServedModel>, st: &AppState, body: Body) -> Response {
    let start = Instant::now();
    let stats = model.stats.clone();
    let refused = |e: ApiError| {
        let counter = match e.status {
            StatusCode::SERVICE_UNAVAILABLE => &stats.rejected_busy,
            s if s.is_server_error() => &stats.failed,
            _ => &stats.rejected_invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!("{}: {} {}", model.name, e.status.as_u16(), e.message);
        } else {
            tracing::debug!("{}: {} {}", model.name, e.status.as_u16(), e.message);
        }
        e.into_response()
    };
    // Admission first: a request beyond `max_pending` costs nothing but this answer.
    let _permit: OwnedSemaphorePermit = match st.pending.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: {} requests are being handled (--max-pending); retry later",
                    st.opts.max_pending
                ),
            );
            err.retry_after = Some(1);
            return refused(err);
        }
    };
    let body = match read_body(body, st.opts.max_body_bytes, st.opts.body_timeout).await {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    // Reading and tokenizing are CPU work: off the async threads.
    let max_inputs = st.opts.max_inputs;
    let m = model.clone();
    let encoded = tokio::task::spawn_blocking(move || encode(&m.bundle, &body, max_inputs)).await;
    let encoded = match encoded {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => return refused(e),
        Err(e) => {
            return refused(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the request failed: {e}"),
            ))
        }
    };
    let n = encoded.len();
    let rx = match model.batcher.submit(encoded) {
        Ok(rx) => rx,
        Err(e @ SubmitError::Busy { .. }) => {
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            err.retry_after = Some(1);
            return refused(err);
        }
        Err(e @ SubmitError::NoWorker) => {
            return refused(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.to_string(),
            ))
        }
        Err(e @ SubmitError::Stopped) => {
            return refused(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ))
        }
    };
    let rows = match rx.await {
        Ok(Ok(rows)) => rows,
        Ok(Err(why)) => {
            return refused(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the model failed on this request: {why}"),
            ))
        }
        Err(_) => {
            return refused(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the model's worker stopped before answering",
            ))
        }
    };
    let predictions: Vec<Value> = rows
        .into_iter()
        .map(|l| Value::Object(prediction_json(&model.bundle, &model.bundle.prediction(l))))
        .collect();
    let took = start.elapsed();
    model.stats.record_answer(n, took);
    tracing::debug!(
        "{}: 200, {n} inputs in {:.1} ms",
        model.name,
        took.as_secs_f64() * 1e3
    );
    Json(json!({ "model": model.name, "predictions": predictions })).into_response()
}

/// The whole body, at most `limit` bytes, within `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    let read = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(read) => read,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (--body-timeout); send it whole",
                    timeout.as_secs_f64()
                ),
            ))
        }
    };
    read.map_err(|e| {
        let inner = e.into_inner();
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(err) = src {
            if err.is::<http_body_util::LengthLimitError>() {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is larger than {limit} bytes (--max-body-bytes): split the request"
                    ),
                );
            }
            src = err.source();
        }
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {inner}"),
        )
    })
}

fn encode(bundle: &Bundle, body: &[u8], max_inputs: usize) -> Result<Vec<Encoded>, ApiError> {
    let texts = read_inputs(body, &InputSpec::of(&bundle.manifest), max_inputs)?;
    texts
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            bundle
                .encode(a, b.as_deref())
                .map_err(|e| ApiError::unprocessable(format!("input {i}: {e:#}")))
        })
        .collect()
}

/// Appends one JSON line per `every` to `path`: the time and every model's counters.
async fn log_metrics(state: Arc<AppState>, path: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let line = json!({
            "uptime_seconds": state.started.elapsed().as_secs_f64(),
            "models": state.snapshot(),
        });
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            writeln!(f, "{line}")
        };
        if let Err(e) = write() {
            tracing::warn!("cannot append to the metrics log {}: {e}", path.display());
        }
    }
}

/// A running server: its address, and a way to stop it.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Binds `addr` (port 0: any free port) and serves `state` on a thread of its own with a
    /// tokio runtime of `io_threads` threads. `metrics_log`: a JSON-lines file and its period.
    pub fn start(
        state: AppState,
        addr: SocketAddr,
        io_threads: usize,
        metrics_log: Option<(PathBuf, Duration)>,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(io_threads.max(1))
            // Tokenizing runs here; `max_pending` bounds how much waits for these threads.
            .max_blocking_threads(2 * io_threads.max(1))
            .thread_name("adept-serve-io")
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .with_context(|| format!("cannot listen on {addr}: is the port taken? pass --port"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(state);
        let app = router(state.clone());
        let (stop, stopped) = watch::channel(false);
        let log_state = state.clone();
        let drain = state.opts.drain_timeout;
        let thread = std::thread::Builder::new()
            .name("adept-serve".into())
            .spawn(move || {
                let result = rt.block_on(async move {
                    if let Some((path, every)) = metrics_log {
                        tokio::spawn(log_metrics(log_state, path, every));
                    }
                    let mut graceful = stopped.clone();
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = graceful.wait_for(|s| *s).await;
                    });
                    // Once stopping, requests in flight get `drain` to finish; a connection that
                    // never completes its request does not hold the server up past that.
                    let mut deadline = stopped;
                    tokio::select! {
                        r = serve => r,
                        _ = async move {
                            let _ = deadline.wait_for(|s| *s).await;
                            tokio::time::sleep(drain).await;
                        } => {
                            tracing::warn!(
                                "requests still open {} s after the stop were dropped",
                                drain.as_secs_f64()
                            );
                            Ok(())
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
                result
            })
            .context("cannot start the server thread")?;
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting connections, lets open requests finish, then stops the workers.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        let result = match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r.context("the server stopped with an error"),
                Err(_) => bail!("the server thread panicked"),
            },
            None => Ok(()),
        };
        self.state.shutdown();
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Opens every bundle of `specs` for serving.
pub fn open_models(
    specs: &[ModelSpec],
    runtime: &RuntimeOptions,
    opts: &ServeOptions,
) -> Result<Vec<ServedModel>> {
    // `ServedModel::open` checks `opts` before it opens anything.
    specs
        .iter()
        .map(|s| ServedModel::open(s, runtime, opts))
        .collect()
}

/// `{"inputs": [...]}` for `texts` (a request body; the bench and the tests send these).
pub fn request_body(texts: &[(String, Option<String>)]) -> Vec<u8> {
    let inputs: Vec<Value> = texts
        .iter()
        .map(|(a, b)| match b {
            Some(b) => json!([a, b]),
            None => json!(a),
        })
        .collect();
    serde_json::to_vec(&json!({ "inputs": inputs })).expect("JSON")
}

/// The logits of a predict response body, in order.
pub fn response_logits(body: &[u8]) -> Result<Vec<Vec<f32>>> {
    let v: Map<String, Value> = serde_json::from_slice(body).context("the answer is not JSON")?;
    let preds = v
        .get("predictions")
        .and_then(Value::as_array)
        .context("the answer has no predictions")?;
    preds
        .iter()
        .map(|p| {
            p.get("logits")
                .and_then(Value::as_array)
                .context("a prediction has no logits")?
                .iter()
                .map(|x| {
                    x.as_f64()
                        .map(|x| x as f32)
                        .context("a logit is not a number")
                })
                .collect()
        })
        .collect()
}
