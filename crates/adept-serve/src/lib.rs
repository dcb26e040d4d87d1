//! `adept serve`: exported classifier bundles behind an HTTP server.
//!
//! One job: take requests over HTTP and answer them with a bundle's predictions, as fast as the
//! session allows and in bounded memory. The request path is the data flow of the rest of the
//! project: JSON body → texts ([`api::read_inputs`], checked against the bundle's text fields)
//! → tokens (the bundle's `TextEncoder`, the training rules) → one bounded queue per model
//! ([`batcher`]: concurrent requests share length-sorted batches) → ONNX Runtime
//! ([`adept_runtime::Bundle`]) → predictions in each request's order.
//!
//! * [`server`]: the routes ([`server::router`]), [`ServedModel`] (one bundle, its sessions and
//!   workers), [`Server`] (a server on its own thread, for the command, tests and benches).
//! * [`batcher`]: the queue, dynamic batching, busy refusals (503 + `Retry-After`), a failing or
//!   panicking run failing only its own requests.
//! * [`metrics`]: counters, padding and latency percentiles over a bounded window (`/metrics`,
//!   and a JSON-lines log with `--metrics-log`).
//! * [`cli`]: `ServeArgs` / `run_serve` (`adept serve`).

pub mod api;
pub mod batcher;
pub mod cli;
pub mod conn;
pub mod generation;
pub mod metrics;
pub mod openai;
pub mod server;

pub use batcher::{BatchOptions, Batcher, Runner, SubmitError};
pub use cli::{run_serve, ServeArgs};
pub use generation::{GenEvent, GenKind, GenModel, GenOutput, GenParams, GenRunner, PieceSink};
pub use metrics::{ModelStats, StatsSnapshot};
pub use server::{
    open_models, request_body, response_logits, router, ApiKeys, AppState, ModelSpec, ServeOptions,
    ServedModel, Server,
};
