//! The served models, the routes, and a server that runs on its own thread (for the command,
//! the tests and the bench alike).

use crate::api::{read_inputs, ApiError, InputSpec};
use crate::batcher::{BatchOptions, Batcher, Runner, SubmitError, MAX_WAIT_LIMIT};
use crate::conn::WriteTimeout;
use crate::generation::{open_generation, read_request, GenEvent, GenModel, GenQueue, GenRunner};
use crate::metrics::{ModelStats, StatsSnapshot};
use crate::openai::{Answering, Shape};
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
use axum::response::sse::{Event, KeepAlive, Sse};
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
    /// Generation models: the most `max_new_tokens` a request may ask for (it bounds how long
    /// one request holds a worker).
    pub max_new_tokens: usize,
    /// Connections open at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
    /// A connection that sends no request (or not its whole head), or reads nothing of its
    /// answer, for this long is closed: idle keep-alive connections and clients that stop
    /// reading do not pile up.
    pub idle_timeout: Duration,
    /// API keys (`--api-key-file`, `ADEPT_API_KEY`): when any is set, every route but
    /// `GET /health` (and CORS preflights) needs `Authorization: Bearer <key>` (401 otherwise).
    /// Empty: no authentication (a server behind a gateway, or on localhost).
    pub api_keys: ApiKeys,
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
            max_new_tokens: 512,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            api_keys: ApiKeys::default(),
        }
    }
}

impl ServeOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.workers >= 1, "--workers must be at least 1");
        ensure!(self.batch.max_batch >= 1, "--max-batch must be at least 1");
        ensure!(self.max_inputs >= 1, "--max-inputs must be at least 1");
        ensure!(self.max_pending >= 1, "--max-pending must be at least 1");
        ensure!(
            self.max_new_tokens >= 1,
            "--max-new-tokens must be at least 1"
        );
        ensure!(
            self.max_connections >= 1,
            "--max-connections must be at least 1"
        );
        ensure!(
            self.idle_timeout >= Duration::from_millis(100),
            "--idle-timeout must be at least 0.1 s, not {} s (it also bounds a stalled write)",
            self.idle_timeout.as_secs_f64()
        );
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

/// One served model: its bundle, its queue and workers, its counters.
pub struct ServedModel {
    pub name: String,
    pub stats: Arc<ModelStats>,
    kind: Kind,
}

/// What a model does: classify inputs (`/predict`) or generate text (`/generate`).
enum Kind {
    Classify {
        bundle: Arc<Bundle>,
        batcher: Batcher,
    },
    Generate {
        model: Arc<GenModel>,
        queue: GenQueue,
    },
}

impl ServedModel {
    /// Opens `spec.dir` `opts.workers` times (one session per worker) and starts the workers:
    /// a classifier bundle is served at `/predict`, a decoder or T5 bundle at `/generate`.
    pub fn open(spec: &ModelSpec, runtime: &RuntimeOptions, opts: &ServeOptions) -> Result<Self> {
        opts.validate()?;
        let mut runtime = runtime.clone();
        runtime.batch_size = opts.batch.max_batch;
        if opts.workers > 1 {
            // Idle threads of one session spinning would take the cores from another's run.
            runtime.session.intra_op_spinning.get_or_insert(false);
        }
        let context = || format!("cannot serve {} as {:?}", spec.dir.display(), spec.name);
        if let Some((model, runners)) =
            open_generation(&spec.dir, &runtime, opts.workers).with_context(context)?
        {
            return Self::with_generators(&spec.name, model, runners, opts);
        }
        let mut bundles = Vec::with_capacity(opts.workers);
        for _ in 0..opts.workers {
            bundles.push(Arc::new(
                Bundle::open_with(&spec.dir, &runtime).with_context(context)?,
            ));
        }
        let m = &bundles[0].manifest;
        if m.int8_activations.is_some_and(|a| !a.batch_independent()) && opts.batch.max_batch > 1 {
            tracing::warn!(
                "{}: {} quantizes activations per tensor: requests batched together share one \
                 scale, so an answer's logits move slightly with the requests it was batched \
                 with; export with --int8-activations per-row, or serve with --max-batch 1, for \
                 answers independent of other requests",
                spec.name,
                spec.dir.display()
            );
        }
        let runners = bundles
            .iter()
            .map(|b| b.clone() as Arc<dyn Runner>)
            .collect();
        Self::with_runners(&spec.name, bundles[0].clone(), runners, opts)
    }

    /// A classifier whose inputs `bundle` encodes and `runners` run (tests put a stand-in here).
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
            stats,
            kind: Kind::Classify { bundle, batcher },
        })
    }

    /// A generation model whose prompts `model` encodes and `runners` (one session each)
    /// complete.
    pub fn with_generators(
        name: &str,
        model: GenModel,
        runners: Vec<Box<dyn GenRunner>>,
        opts: &ServeOptions,
    ) -> Result<Self> {
        opts.validate()?;
        ensure!(
            !runners.is_empty(),
            "model {name:?} has no worker to run it"
        );
        let stats = Arc::new(ModelStats::default());
        let queue = GenQueue::start_generation(name, runners, opts.batch.clone(), stats.clone())
            .context("cannot start the worker threads")?;
        Ok(Self {
            name: name.to_owned(),
            stats,
            kind: Kind::Generate {
                model: Arc::new(model),
                queue,
            },
        })
    }

    /// The classifier bundle (`None` for a generation model).
    pub fn bundle(&self) -> Option<&Arc<Bundle>> {
        match &self.kind {
            Kind::Classify { bundle, .. } => Some(bundle),
            Kind::Generate { .. } => None,
        }
    }

    /// The generation model (`None` for a classifier).
    pub fn generation(&self) -> Option<&Arc<GenModel>> {
        match &self.kind {
            Kind::Generate { model, .. } => Some(model),
            Kind::Classify { .. } => None,
        }
    }

    /// Stops the workers after they answer what is queued.
    pub fn shutdown(&self) {
        match &self.kind {
            Kind::Classify { batcher, .. } => batcher.shutdown(),
            Kind::Generate { queue, .. } => queue.shutdown(),
        }
    }

    /// What `/v1/models` says of this model.
    pub fn info(&self, workers: usize) -> Value {
        let mut v = match &self.kind {
            Kind::Classify { bundle, .. } => {
                let m = &bundle.manifest;
                json!({
                    "task": m.task,
                    "route": format!("/v1/models/{}/predict", self.name),
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
                    "int8_keep_float": m.int8_keep_float,
                    "int8_per_row": m.int8_per_row,
                    "int8_activations": m.int8_activations,
                    "fold": m.fold,
                    "device": bundle.device,
                    "bundle": bundle.dir,
                })
            }
            Kind::Generate { model, .. } => {
                let mut v = model.info.clone();
                v["route"] = json!(format!("/v1/models/{}/generate", self.name));
                v
            }
        };
        v["name"] = json!(self.name);
        v["workers"] = json!(workers);
        v
    }
}

/// What the handlers share.
pub struct AppState {
    pub models: BTreeMap<String, Arc<ServedModel>>,
    pub opts: ServeOptions,
    pub started: Instant,
    /// One permit per request being handled, predict or generate (`opts.max_pending`).
    pending: Arc<Semaphore>,
    /// OpenAI answers so far (their ids).
    answers: std::sync::atomic::AtomicU64,
    /// One permit per open connection (`opts.max_connections`; the accept loop holds one
    /// while it waits for the next connection).
    connections: Arc<Semaphore>,
    /// Connections open now.
    open: Arc<std::sync::atomic::AtomicUsize>,
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
            connections: Arc::new(Semaphore::new(opts.max_connections)),
            open: Arc::default(),
            answers: Default::default(),
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

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
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
            m.shutdown();
        }
    }
}

/// Least length of an API key: shorter ones are too easy to guess.
pub const MIN_API_KEY_LEN: usize = 16;

/// An API key as `Authorization: Bearer` carries it: at least [`MIN_API_KEY_LEN`] visible
/// ASCII characters, no spaces.
pub fn check_api_key(key: &str) -> Result<()> {
    let len = key.chars().count();
    ensure!(
        len >= MIN_API_KEY_LEN,
        "an API key must be at least {MIN_API_KEY_LEN} characters long, not {len}; make one \
         with e.g. `openssl rand -hex 32`"
    );
    ensure!(
        key.bytes().all(|b| b.is_ascii_graphic()),
        "an API key must be visible ASCII characters, without spaces; make one with e.g. \
         `openssl rand -hex 32`"
    );
    Ok(())
}

/// The server's API keys, held as their SHA-256 digests (hashed once, at start): a request's
/// key is hashed and looked up, so the time that takes says nothing about how much of a key a
/// guess got right, and the keys themselves are not kept (`Debug` shows how many there are).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    digests: std::collections::HashSet<String>,
}

impl ApiKeys {
    /// Each key checked by [`check_api_key`].
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Result<Self> {
        let mut digests = std::collections::HashSet::new();
        for k in keys {
            check_api_key(k.as_ref())?;
            digests.insert(adept_bundle::sha256_hex(k.as_ref().as_bytes()));
        }
        Ok(Self { digests })
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether `token` is one of the keys.
    fn allows(&self, token: &str) -> bool {
        self.digests
            .contains(&adept_bundle::sha256_hex(token.as_bytes()))
    }
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
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
                HeaderValue::from_static("content-type, authorization"),
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

/// With API keys set, a request needs `Authorization: Bearer <key>`; `GET /health` (for load
/// balancers) does not. A 401 names the header to send, and says `WWW-Authenticate: Bearer`.
async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match token {
        Some(t) if st.opts.api_keys.allows(t) => next.run(req).await,
        _ => {
            let why = match req.headers().get(header::AUTHORIZATION) {
                None => "this server needs an API key",
                Some(_) if token.is_none() => "the Authorization header is not `Bearer <key>`",
                Some(_) => "the API key is not valid",
            };
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{why}: send the header `Authorization: Bearer <key>` with one of the keys \
                     the server was started with (--api-key-file, ADEPT_API_KEY)"
                ),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

/// The routes:
///
/// | route | |
/// |---|---|
/// | `GET /health` | `{"status": "ok", "models": [...]}` |
/// | `GET /v1/models`, `GET /v1/models/{name}` | task, labels, text fields, dtype, … |
/// | `POST /v1/models/{name}/predict` | `{"inputs": [...]}` → `{"model", "predictions": [...]}` |
/// | `POST /v1/predict` | the same, when one model is served |
/// | `POST /v1/models/{name}/generate` | decoder and T5 bundles: `{"inputs": "…", "parameters": {…}, "stream": false}` → `{"model", "generations": [...]}`, or server-sent events |
/// | `POST /v1/generate` | the same, when one model is served |
/// | `POST /v1/completions`, `POST /v1/chat/completions` | OpenAI-compatible generation (see [`crate::openai`]) |
/// | `GET /metrics` | per-model counters, padding, latency percentiles |
///
/// With API keys ([`ServeOptions::api_keys`]) every route but `GET /health` needs one.
pub fn router(state: Arc<AppState>) -> Router {
    let cors_layer = (!state.opts.cors_origins.is_empty())
        .then(|| axum::middleware::from_fn_with_state(state.clone(), cors));
    let key_layer = (!state.opts.api_keys.is_empty())
        .then(|| axum::middleware::from_fn_with_state(state.clone(), require_key));
    let routes = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", get(model_info))
        .route("/v1/models/{name}/predict", post(predict_named))
        .route("/v1/predict", post(predict_only))
        .route("/v1/models/{name}/generate", post(generate_named))
        .route("/v1/generate", post(generate_only))
        .route("/v1/completions", post(openai_completions))
        .route("/v1/chat/completions", post(openai_chat))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // The key check inside CORS: a browser's preflight carries no key, and a 401 still gets
    // the CORS headers its page needs to read it.
    let routes = match key_layer {
        Some(layer) => routes.layer(layer),
        None => routes,
    };
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

/// `{"models": [...]}` with each model's details, and the same list in OpenAI's shape
/// (`"object": "list", "data": [{"id", "object": "model", …}]`) for OpenAI clients.
async fn list_models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<Value> = st
        .models
        .values()
        .map(|m| m.info(st.opts.workers))
        .collect();
    let data: Vec<Value> = st
        .models
        .keys()
        .map(|name| json!({ "id": name, "object": "model", "created": 0, "owned_by": "adept" }))
        .collect();
    Json(json!({ "models": models, "object": "list", "data": data }))
}

/// The model a `/v1/models/{name}/…` URL names.
fn named(
    st: &AppState,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Arc<ServedModel>, ApiError> {
    let UrlPath(name) = name.map_err(bad_path)?;
    st.model(&name).cloned()
}

async fn model_info(
    State(st): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(named(&st, name)?.info(st.opts.workers)))
}

async fn metrics(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(st.metrics_json())
}

impl AppState {
    /// What `/metrics` and the metrics log say: uptime, connections, every model's counters.
    pub fn metrics_json(&self) -> Value {
        json!({
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "connections": {
                "open": self.open_connections(),
                "limit": self.opts.max_connections,
            },
            "models": self.snapshot(),
        })
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route: see GET /v1/models, POST /v1/models/{name}/predict (classifiers), \
         POST /v1/models/{name}/generate (decoder and T5 bundles), POST /v1/completions and \
         /v1/chat/completions (OpenAI-compatible), GET /health, GET /metrics",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method: predict and generate routes take POST, the \
         others GET",
    )
}

async fn predict_named(
    State(st): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
    body: Body,
) -> Response {
    match named(&st, name) {
        Ok(m) => predict(m, &st, body).await,
        Err(e) => e.into_response(),
    }
}

async fn predict_only(State(st): State<Arc<AppState>>, body: Body) -> Response {
    match st.only_model("predict") {
        Ok(m) => predict(m, &st, body).await,
        Err(e) => e.into_response(),
    }
}

/// Counts a refusal against `model` and logs it (server errors as warnings).
fn refuse(model: &ServedModel, e: ApiError) -> Response {
    let stats = &model.stats;
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
}

/// The refusal for a request the queue did not take.
fn submit_refusal(e: SubmitError) -> ApiError {
    match e {
        SubmitError::Busy { .. } => {
            let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            err.retry_after = Some(1);
            err
        }
        SubmitError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        SubmitError::NoWorker => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        SubmitError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

impl AppState {
    /// The model `/v1/predict` and `/v1/generate` mean: the only one served.
    fn only_model(&self, route: &str) -> Result<Arc<ServedModel>, ApiError> {
        if self.models.len() != 1 {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "this server serves {} models ({:?}): POST to /v1/models/{{name}}/{route}",
                    self.models.len(),
                    self.models.keys().collect::<Vec<_>>()
                ),
            ));
        }
        Ok(self.models.values().next().cloned().expect("one model"))
    }

    /// A permit to handle one request (`max_pending`), or the 503 that refuses it.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.pending.clone().try_acquire_owned().map_err(|_| {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is busy: {} requests are being handled (--max-pending); retry later",
                    self.opts.max_pending
                ),
            );
            err.retry_after = Some(1);
            err
        })
    }
}

/// Runs `work` off the async threads (reading and tokenizing are CPU work). The work holds the
/// request's `max_pending` permit too: a client that leaves drops its handler at once, but its
/// place is not free until the work that still holds its body has ended (otherwise clients
/// that send large bodies and leave could pile up work and memory without bound).
async fn blocking<T: Send + 'static>(
    permit: &Arc<OwnedSemaphorePermit>,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let held = permit.clone();
    let work = move || {
        let _held = held;
        work()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the request failed: {e}"),
        )),
    }
}

async fn predict(model: Arc<ServedModel>, st: &AppState, body: Body) -> Response {
    let start = Instant::now();
    let refused = |e: ApiError| refuse(&model, e);
    // Admission first: a request beyond `max_pending` costs nothing but this answer.
    let permit = match st.admit() {
        Ok(p) => Arc::new(p),
        Err(e) => return refused(e),
    };
    let (bundle, batcher) = match &model.kind {
        Kind::Classify { bundle, batcher } => (bundle.clone(), batcher),
        Kind::Generate { model: g, .. } => {
            return refused(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "model {:?} generates text (a {} bundle): POST to /v1/models/{}/generate",
                    model.name, g.kind, model.name
                ),
            ))
        }
    };
    let reading = read_body(body, st.opts.max_body_bytes, st.opts.body_timeout);
    let body = match or_cancelled(&model.stats, reading).await {
        Ok(b) => b,
        Err(e) => return refused(e),
    };
    let max_inputs = st.opts.max_inputs;
    let b = bundle.clone();
    let encoding = blocking(&permit, move || encode(&b, &body, max_inputs));
    let encoded = match or_cancelled(&model.stats, encoding).await {
        Ok(e) => e,
        Err(e) => return refused(e),
    };
    let n = encoded.len();
    let rx = match batcher.submit(encoded) {
        Ok(rx) => rx,
        Err(e) => return refused(submit_refusal(e)),
    };
    // A client that goes away drops this future: the request counts as cancelled, and
    // dropping `rx` tells the worker not to run it.
    let rows = match or_cancelled(&model.stats, rx).await {
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
        .map(|l| Value::Object(prediction_json(&bundle, &bundle.prediction(l))))
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

async fn generate_named(
    State(st): State<Arc<AppState>>,
    name: Result<UrlPath<String>, PathRejection>,
    body: Body,
) -> Response {
    match named(&st, name) {
        Ok(m) => generate(m, &st, body).await,
        Err(e) => e.into_response(),
    }
}

async fn generate_only(State(st): State<Arc<AppState>>, body: Body) -> Response {
    match st.only_model("generate") {
        Ok(m) => generate(m, &st, body).await,
        Err(e) => e.into_response(),
    }
}

async fn generate(model: Arc<ServedModel>, st: &AppState, body: Body) -> Response {
    let start = Instant::now();
    let permit = match st.admit() {
        Ok(p) => Arc::new(p),
        Err(e) => return refuse(&model, e),
    };
    let reading = read_body(body, st.opts.max_body_bytes, st.opts.body_timeout);
    let body = match or_cancelled(&model.stats, reading).await {
        Ok(b) => b,
        Err(e) => return refuse(&model, e),
    };
    generate_body(model, st, permit, start, body, Answering::native()).await
}

/// `POST /v1/completions` and `POST /v1/chat/completions` (`chat`): the OpenAI requests, for
/// the model their `model` field names (or the only one served).
async fn openai(st: Arc<AppState>, body: Body, chat: bool) -> Response {
    let start = Instant::now();
    let permit = match st.admit() {
        Ok(p) => Arc::new(p),
        Err(e) => return e.into_response(),
    };
    let body = match read_body(body, st.opts.max_body_bytes, st.opts.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let route = if chat {
        "chat/completions"
    } else {
        "completions"
    };
    let model = match crate::openai::model_field(&body) {
        Some(name) => st.model(&name).cloned(),
        None => st.only_model(route),
    };
    let model = match model {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let shape = if chat {
        Shape::Chat
    } else {
        Shape::Completions
    };
    let n = st.answers.fetch_add(1, Ordering::Relaxed);
    generate_body(model, &st, permit, start, body, Answering::openai(shape, n)).await
}

async fn openai_completions(State(st): State<Arc<AppState>>, body: Body) -> Response {
    openai(st, body, false).await
}

async fn openai_chat(State(st): State<Arc<AppState>>, body: Body) -> Response {
    openai(st, body, true).await
}

/// A generate request whose body has arrived: read (in `answering`'s shape), encoded,
/// queued, and answered whole or streamed.
async fn generate_body(
    model: Arc<ServedModel>,
    st: &AppState,
    permit: Arc<OwnedSemaphorePermit>,
    start: Instant,
    body: Bytes,
    answering: Answering,
) -> Response {
    let refused = |e: ApiError| refuse(&model, e);
    let (gen, queue) = match &model.kind {
        Kind::Generate { model, queue } => (model.clone(), queue),
        Kind::Classify { bundle, .. } => {
            return refused(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "model {:?} is a classifier (task {}): POST to /v1/models/{}/predict",
                    model.name, bundle.manifest.task, model.name
                ),
            ))
        }
    };
    let (max_inputs, max_new) = (st.opts.max_inputs, st.opts.max_new_tokens);
    let shape = answering.shape.clone();
    let reading = blocking(&permit, move || {
        let mut req = match shape {
            Shape::Native => read_request(&body, gen.kind, max_inputs, max_new)?,
            Shape::Completions | Shape::Chat => {
                crate::openai::read_request(&body, &gen, shape == Shape::Chat, max_inputs, max_new)?
            }
        };
        let rows = gen.encode(&mut req)?;
        Ok((req, rows))
    });
    let (req, rows) = match or_cancelled(&model.stats, reading).await {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let n = rows.len();
    let mut rx = match queue.submit_generation(rows, req.params, req.stream) {
        Ok(rx) => rx,
        Err(e) => return refused(submit_refusal(e)),
    };
    if req.stream {
        return stream_events(model.clone(), rx, permit, start, n, answering).into_response();
    }
    // Dropped with this future when the client goes away: counts the request as cancelled
    // (and dropping `rx` tells the worker not to run it, or to stop).
    let mut waiting = Waiting::new(model.stats.clone());
    loop {
        let event = rx.recv().await;
        waiting.answered = !matches!(event, Some(GenEvent::Piece { .. }));
        match event {
            Some(GenEvent::Piece { .. }) => continue,
            Some(GenEvent::Done(outs)) => {
                let took = start.elapsed();
                model.stats.record_answer(n, took);
                tracing::debug!(
                    "{}: 200, {n} prompts in {:.1} ms",
                    model.name,
                    took.as_secs_f64() * 1e3
                );
                return Json(answering.answer(&model.name, &outs)).into_response();
            }
            Some(GenEvent::Failed(why)) => {
                return refused(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the model failed on this request: {why}"),
                ))
            }
            None => {
                return refused(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model's worker stopped before answering",
                ))
            }
        }
    }
}

/// Counts a request (predict or generate) as cancelled when dropped before its answer came.
struct Waiting {
    stats: Arc<ModelStats>,
    answered: bool,
}

impl Waiting {
    fn new(stats: Arc<ModelStats>) -> Self {
        Self {
            stats,
            answered: false,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.answered {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Awaits `work` (reading or tokenizing a request's body) and counts the request as cancelled
/// if the handler is dropped before it ends: its client went away.
async fn or_cancelled<T>(stats: &Arc<ModelStats>, work: impl std::future::Future<Output = T>) -> T {
    let mut waiting = Waiting::new(stats.clone());
    let out = work.await;
    waiting.answered = true;
    out
}

/// The events of a streamed generation: `token` (`{"index", "text"}`) for each piece as it is
/// decoded, then `done` (the whole answer, as without streaming) or `error`
/// (`{"error": {"status", "message"}}`). A task takes the worker's events as they come and
/// hands them to the response, so the request's `max_pending` permit is released when the
/// answer is complete, whether or not the client has read it (a client that stops reading is
/// cut off by the connection's write timeout). A client that goes away drops the events: the
/// task stops, and the worker stops the run once nobody in it listens.
fn stream_events(
    model: Arc<ServedModel>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<GenEvent>,
    permit: Arc<OwnedSemaphorePermit>,
    start: Instant,
    n: usize,
    answering: Answering,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel::<Event>();
    for e in answering.start(&model.name, n) {
        let _ = tx.send(e);
    }
    tokio::spawn(async move {
        let mut waiting = Waiting::new(model.stats.clone());
        // Released before the answer is counted, and (declared after `waiting`, so dropped
        // before it) before a cancellation is: whoever sees the count finds the slot free.
        let mut permit = Some(permit);
        let failed = |message: String| {
            model.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{}: a streamed generation failed: {message}", model.name);
            answering.error(&message)
        };
        loop {
            // A client that leaves is noticed at once, not at the next piece: dropping `rx`
            // tells the worker (a queued request is then skipped, a run stopped).
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = tx.closed() => return,
            };
            let event = match next {
                Some(GenEvent::Piece { index, text }) => answering.piece(&model.name, index, &text),
                Some(GenEvent::Done(outs)) => {
                    waiting.answered = true;
                    permit.take();
                    model.stats.record_answer(n, start.elapsed());
                    for e in answering.done(&model.name, &outs) {
                        let _ = tx.send(e);
                    }
                    return;
                }
                Some(GenEvent::Failed(why)) => {
                    waiting.answered = true;
                    let _ = tx.send(failed(format!("the model failed on this request: {why}")));
                    return;
                }
                None => {
                    waiting.answered = true;
                    let _ = tx.send(failed("the model's worker stopped before answering".into()));
                    return;
                }
            };
            if tx.send(event).is_err() {
                // The client went away: `waiting` counts it, dropping `rx` stops the worker.
                return;
            }
        }
    });
    let events = futures_util::stream::unfold(events, |mut events| async move {
        events.recv().await.map(|e| (Ok(e), events))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
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
        let line = state.metrics_json();
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

/// Accepts connections until `stopped`, at most `max_connections` open at once, each served
/// as HTTP/1 with keep-alive and closed after `idle_timeout` without a request; then stops
/// taking requests, lets the ones in flight finish (at most `drain` more) and returns.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<AppState>,
    mut stopped: watch::Receiver<bool>,
    drain: Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.opts.idle_timeout)
        .keep_alive(true);
    loop {
        // A free connection slot first: beyond `max_connections`, clients wait in the backlog.
        let permit = tokio::select! {
            p = state.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then try again.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        // Reads are bounded by the header timeout and --body-timeout; writes by this.
        let io = TokioIo::new(WriteTimeout::new(tcp, state.opts.idle_timeout));
        let conn = graceful.watch(http.serve_connection(io, service));
        let open = Open::new(state.open.clone(), permit);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
            drop(open);
        });
    }
    drop(listener);
    // Idle connections close now; requests in flight get `drain` to finish, so a client that
    // never completes its request does not hold the server up past that.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(
                "requests still open {} s after the stop were dropped",
                drain.as_secs_f64()
            );
        }
    }
}

/// An open connection: counted, and holding its slot, until dropped.
struct Open {
    count: Arc<std::sync::atomic::AtomicUsize>,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(count: Arc<std::sync::atomic::AtomicUsize>, slot: OwnedSemaphorePermit) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self { count, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
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
                        tokio::spawn(log_metrics(log_state.clone(), path, every));
                    }
                    accept_loop(listener, app, log_state, stopped, drain).await;
                    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_whose_client_left_keeps_its_place_until_its_blocking_work_ends() {
        let pending = Arc::new(Semaphore::new(1));
        let permit = Arc::new(pending.clone().try_acquire_owned().unwrap());
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        // The handler: its blocking work (reading a body) waits until released.
        let handler = tokio::spawn(async move {
            blocking(&permit, move || {
                started_tx.send(()).ok();
                held.recv().ok();
                done_tx.send(()).ok();
                Ok(())
            })
            .await
        });
        started.await.unwrap();
        // The client goes away: its handler is dropped; the work still runs.
        handler.abort();
        assert!(handler.await.unwrap_err().is_cancelled());
        assert_eq!(
            pending.available_permits(),
            0,
            "the place was freed while the request's work still ran"
        );
        release.send(()).unwrap();
        tokio::task::spawn_blocking(move || done.recv().unwrap())
            .await
            .unwrap();
        // The work's closure (and its permit) is dropped just after it returns.
        for _ in 0..200 {
            if pending.available_permits() == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the place was not freed once the work ended");
    }

    #[tokio::test]
    async fn a_handler_dropped_while_reading_counts_its_request_as_cancelled() {
        let stats = Arc::new(ModelStats::default());
        // Finished: not cancelled.
        assert_eq!(or_cancelled(&stats, async { 7 }).await, 7);
        assert_eq!(stats.cancelled.load(Ordering::Relaxed), 0);
        // Dropped while the body is still being read: cancelled, once.
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let s = stats.clone();
        let handler = tokio::spawn(async move {
            or_cancelled(&s, async move {
                started_tx.send(()).ok();
                std::future::pending::<()>().await
            })
            .await
        });
        started.await.unwrap();
        handler.abort();
        assert!(handler.await.unwrap_err().is_cancelled());
        assert_eq!(stats.cancelled.load(Ordering::Relaxed), 1);
    }
}
