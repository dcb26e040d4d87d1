//! `adept bench --server --bundle DIR` on a decoder or T5 bundle: generation behind
//! `adept serve` for many clients, side by side with the same bundle in-process, one prompt at
//! a time. Every client thread sends one prompt (an SST-2 dev sentence, or the task's first
//! text field) per request and waits for the whole answer; every prompt is decoded greedily for
//! `--new-tokens` tokens (fewer where it ends at EOS). The variants take turns, round after
//! round, on the same prompts; ratios are medians of the per-round ratios of generated tokens
//! per second.
//!
//! Variants: in-process, one prompt per call (no HTTP: what a server adds to); the server with
//! `--max-batch 1` (every request its own run); the server with dynamic batching (`--max-batch`
//! = the clients: the requests queued when a worker is free run as one left-padded batch).

use crate::args::BenchArgs;
use crate::commands::load_task;
use adept_bundle::generate::GenerationConfig;
use adept_runtime::seq2seq::is_seq2seq_bundle;
use adept_runtime::{paired_time_ratio, RuntimeOptions, SessionConfig};
use adept_serve::generation::{open_generation, GenParams, GenRequest, GenRunner};
use adept_serve::metrics::percentile;
use adept_serve::{BatchOptions, ModelSpec, ServeOptions, Server};
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// Whether `dir` holds a bundle `adept serve` answers at `/generate`.
pub fn is_generation_bundle(dir: &Path) -> Result<bool> {
    if is_seq2seq_bundle(dir).unwrap_or(false) {
        return Ok(true);
    }
    Ok(adept_bundle::BundleManifest::read(dir)?.decoder.is_some())
}

/// One way of generating.
enum Route {
    InProcess(Box<dyn GenRunner>),
    Http(Server),
}

/// What a round of one route gave: seconds, each request's latency (ms), and every prompt's
/// generated ids in order.
struct Round {
    secs: f64,
    latencies_ms: Vec<f64>,
    ids: Vec<Vec<u32>>,
}

#[derive(serde::Serialize)]
struct Row {
    name: String,
    tokens_per_s: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    /// Prompts whose greedy ids equal the in-process ids of the prompt alone.
    same_ids_as_in_process: usize,
    prompts: usize,
    /// Median [quartiles] of the per-round ratios of tokens per second over the in-process loop.
    ratio_to_in_process: [f64; 3],
}

pub fn run(a: &BenchArgs, dir: &Path, threads: usize) -> Result<()> {
    let runtime = |max_batch: usize| RuntimeOptions {
        session: SessionConfig {
            intra_threads: Some(threads),
            ..Default::default()
        },
        cache: a.model.cache.cache.clone(),
        batch_size: max_batch,
        ..Default::default()
    };
    let (model, mut runners) = open_generation(dir, &runtime(1), 1)?
        .with_context(|| format!("{} is not a decoder or T5 bundle", dir.display()))?;
    let mut data = a.data.clone();
    data.task.get_or_insert_with(|| "sst2".into());
    data.train_limit = Some(1);
    let task = load_task(&data, 42)?;
    let prompts: Vec<String> = task
        .validation
        .iter()
        .take(a.requests.unwrap_or(16))
        .map(|e| e.text_a().to_string())
        .collect();
    ensure!(
        !prompts.is_empty(),
        "task {} has no validation texts",
        task.name
    );
    let params = GenParams {
        config: GenerationConfig {
            max_new_tokens: a.new_tokens,
            ..Default::default()
        },
        num_beams: 1,
        length_penalty: 1.0,
    };
    let mut request = GenRequest {
        prompts: prompts.clone(),
        params: params.clone(),
        chat_template: false,
        stream: false,
        default_max_new_tokens: false,
    };
    let rows = model
        .encode(&mut request)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let spec = ModelSpec {
        name: "bench".into(),
        dir: dir.to_path_buf(),
    };
    let server = |max_batch: usize| -> Result<Route> {
        let opts = ServeOptions {
            batch: BatchOptions {
                max_batch,
                ..Default::default()
            },
            max_new_tokens: a.new_tokens,
            ..Default::default()
        };
        Ok(Route::Http(crate::bench_server::local_server(
            &spec,
            &runtime(max_batch),
            opts,
        )?))
    };
    let clients = a.clients.min(prompts.len());
    let mut variants: Vec<(String, Route)> = vec![
        (
            "in-process, one prompt per call".into(),
            Route::InProcess(runners.remove(0)),
        ),
        (
            format!("HTTP, no batching (--max-batch 1), {threads} thread(s)"),
            server(1)?,
        ),
        (
            format!("HTTP, dynamic batching (--max-batch {clients}), {threads} thread(s)"),
            server(clients)?,
        ),
    ];
    eprintln!(
        "{} prompts of {} per variant and round, {} new tokens each (greedy), {clients} clients, \
         {} rounds, bundle {} ({})",
        prompts.len(),
        task.name,
        a.new_tokens,
        a.iters,
        dir.display(),
        model.kind
    );
    let body =
        |p: &str| json!({"inputs": p, "parameters": {"max_new_tokens": a.new_tokens}}).to_string();
    // Warm-up: every route generates every prompt once; the unbatched routes must give the
    // in-process ids exactly (the same run of the same prompt).
    let mut first: Vec<Vec<Vec<u32>>> = Vec::new();
    for (name, route) in &mut variants {
        let r = generate(route, &rows, &prompts, &params, clients, &body)?;
        if !first.is_empty() && name.contains("no batching") {
            ensure!(
                r.ids == first[0],
                "{name} generated other ids than the bundle in-process: a serving bug"
            );
        }
        first.push(r.ids);
    }
    let mut rounds: Vec<Vec<Round>> = variants.iter().map(|_| Vec::new()).collect();
    for round in 0..a.iters {
        for (v, (_, route)) in variants.iter_mut().enumerate() {
            rounds[v].push(generate(route, &rows, &prompts, &params, clients, &body)?);
        }
        eprintln!("round {}/{} done", round + 1, a.iters);
    }
    // Seconds per generated token, per round: the ratios compare tokens per second.
    let per_token = |rs: &[Round]| -> Vec<f64> {
        rs.iter()
            .map(|r| r.secs / r.ids.iter().map(Vec::len).sum::<usize>().max(1) as f64)
            .collect()
    };
    let base = per_token(&rounds[0]);
    println!(
        "adept serve, generation: {} single-prompt requests per round from {clients} clients, \
         {} new tokens each, {} rounds (ratios: median [quartiles] of the per-round ratios of \
         tokens per second):",
        prompts.len(),
        a.new_tokens,
        a.iters
    );
    let mut table = Vec::new();
    for (v, (name, _)) in variants.iter().enumerate() {
        let rs = &rounds[v];
        let tokens: usize = rs.iter().flat_map(|r| &r.ids).map(Vec::len).sum();
        let secs: f64 = rs.iter().map(|r| r.secs).sum();
        let mut lat: Vec<f64> = rs.iter().flat_map(|r| r.latencies_ms.clone()).collect();
        lat.sort_by(f64::total_cmp);
        let pct = |q: f64| percentile(&lat, q).unwrap_or(f64::NAN);
        let r = paired_time_ratio(&per_token(rs), &base).context("rounds differ")?;
        let same = first[v]
            .iter()
            .zip(&first[0])
            .filter(|(x, y)| x == y)
            .count();
        println!(
            "  {name:<52} {:>7.1} tokens/s  p50 {:>7.0} ms  p99 {:>7.0} ms  x{:.2} [{:.2}, {:.2}] of in-process  (ids as in-process: {same}/{})",
            tokens as f64 / secs,
            pct(0.5),
            pct(0.99),
            r.median,
            r.q25,
            r.q75,
            prompts.len()
        );
        table.push(Row {
            name: name.clone(),
            tokens_per_s: tokens as f64 / secs,
            latency_ms_p50: pct(0.5),
            latency_ms_p99: pct(0.99),
            same_ids_as_in_process: same,
            prompts: prompts.len(),
            ratio_to_in_process: [r.median, r.q25, r.q75],
        });
    }
    if let Some(r) = paired_time_ratio(&per_token(&rounds[2]), &per_token(&rounds[1])) {
        println!(
            "  dynamic batching / no batching: x{:.2} [{:.2}, {:.2}]",
            r.median, r.q25, r.q75
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&table)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for (_, route) in variants {
        if let Route::Http(s) = route {
            s.stop()?;
        }
    }
    Ok(())
}

/// Generates every prompt once through `route` (HTTP: `clients` threads, one prompt per
/// request).
fn generate(
    route: &mut Route,
    rows: &[Vec<u32>],
    prompts: &[String],
    params: &GenParams,
    clients: usize,
    body: &(dyn Fn(&str) -> String + Sync),
) -> Result<Round> {
    let start = Instant::now();
    match route {
        Route::InProcess(runner) => {
            let mut latencies_ms = Vec::with_capacity(rows.len());
            let mut ids = Vec::with_capacity(rows.len());
            for r in rows {
                let t0 = Instant::now();
                let mut out = runner.generate(std::slice::from_ref(r), params, None, &|| false)?;
                latencies_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                ids.push(out.remove(0).token_ids);
            }
            Ok(Round {
                secs: start.elapsed().as_secs_f64(),
                latencies_ms,
                ids,
            })
        }
        Route::Http(server) => {
            let url = format!("http://{}/v1/models/bench/generate", server.addr());
            let (ids, latencies_ms) =
                crate::bench_server::fan_out(clients, prompts.len(), &url, |agent, i| {
                    post(agent, &url, &body(&prompts[i]))
                })?;
            Ok(Round {
                secs: start.elapsed().as_secs_f64(),
                latencies_ms,
                ids,
            })
        }
    }
}

/// The generated ids of a one-prompt generate request.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<Vec<u32>> {
    let mut resp = agent
        .post(url)
        .content_type("application/json")
        .send(body.as_bytes())?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_vec()?;
    ensure!(
        status == 200,
        "HTTP {status}: {}",
        String::from_utf8_lossy(&text)
    );
    let v: Value = serde_json::from_slice(&text).context("the answer is not JSON")?;
    serde_json::from_value(v["generations"][0]["token_ids"].clone())
        .with_context(|| format!("no token ids in {v}"))
}
