//! `adept serve` over real HTTP on tiny exported bundles: answers equal what the bundle predicts
//! in-process, in each request's order, with many clients at once; two models side by side;
//! bad requests, a busy queue and a failing model get JSON errors while the server keeps
//! serving.

mod common;

use adept_adapters::MethodKind;
use adept_bundle::Encoded;
use adept_runtime::{Bundle, PaddingStats, RuntimeOptions, SessionConfig};
use adept_serve::{
    request_body, response_logits, AppState, BatchOptions, ModelSpec, Runner, ServeOptions,
    ServedModel, Server,
};
use common::{max_abs_diff, tiny_bundle, tiny_sst2_bundle, TINY_SENTENCES};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Logits from HTTP and in-process runs of one bundle differ only by batch composition.
const TOL: f32 = 1e-5;

fn runtime() -> RuntimeOptions {
    RuntimeOptions {
        session: SessionConfig {
            intra_threads: Some(1),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn serve(specs: &[(&str, &Path)], opts: ServeOptions) -> Server {
    let specs: Vec<ModelSpec> = specs
        .iter()
        .map(|(n, d)| ModelSpec {
            name: n.to_string(),
            dir: d.to_path_buf(),
        })
        .collect();
    let models = adept_serve::open_models(&specs, &runtime(), &opts).unwrap();
    start(models, opts)
}

fn start(models: Vec<ServedModel>, opts: ServeOptions) -> Server {
    let state = AppState::new(models, opts).unwrap();
    Server::start(state, "127.0.0.1:0".parse().unwrap(), 2, None).unwrap()
}

struct Reply {
    status: u16,
    json: Value,
    body: Vec<u8>,
    retry_after: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A server that never answers fails the test instead of hanging it.
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn call(server: &Server, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
    let url = format!("http://{}{path}", server.addr());
    let a = agent();
    let mut resp = match (method, body) {
        ("GET", _) => a.get(&url).call(),
        ("POST", Some(b)) => a.post(&url).content_type("application/json").send(b),
        ("POST", None) => a.post(&url).send_empty(),
        _ => unreachable!(),
    }
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.body_mut().read_to_vec().unwrap();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: the answer is not JSON ({e})"));
    Reply {
        status,
        json,
        body,
        retry_after,
    }
}

fn predict(server: &Server, model: &str, texts: &[(String, Option<String>)]) -> Reply {
    let path = format!("/v1/models/{model}/predict");
    call(server, "POST", &path, Some(&request_body(texts)))
}

fn singles(texts: &[&str]) -> Vec<(String, Option<String>)> {
    texts.iter().map(|t| (t.to_string(), None)).collect()
}

/// What the bundle predicts in-process for each text alone.
fn alone(bundle: &Path, texts: &[(String, Option<String>)]) -> Vec<Vec<f32>> {
    let b = Bundle::open_with(bundle, &runtime()).unwrap();
    texts
        .iter()
        .map(|t| {
            b.predict(std::slice::from_ref(t)).unwrap()[0]
                .logits
                .clone()
        })
        .collect()
}

fn error_message(r: &Reply) -> String {
    r.json["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {}", r.json))
        .to_owned()
}

#[test]
fn the_server_answers_what_the_bundle_predicts_in_each_requests_order() {
    let test = "the_server_answers_what_the_bundle_predicts_in_each_requests_order";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let server = serve(&[("sst2", &tiny.bundle)], ServeOptions::default());
    let texts = singles(TINY_SENTENCES);
    let want = alone(&tiny.bundle, &texts);
    let r = predict(&server, "sst2", &texts);
    assert_eq!(r.status, 200, "{}", r.json);
    let got = response_logits(&r.body).unwrap();
    let diff = max_abs_diff(&got, &want);
    assert!(
        diff <= TOL,
        "HTTP logits differ from in-process ones by {diff}"
    );
    // Labels and probabilities are the bundle's.
    for (p, w) in r.json["predictions"].as_array().unwrap().iter().zip(&want) {
        let id = usize::from(w[1] > w[0]);
        assert_eq!(p["label_id"], json!(id));
        assert_eq!(p["label"], json!(["negative", "positive"][id]));
        let sum: f64 = ["negative", "positive"]
            .iter()
            .map(|l| p["probabilities"][l].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
    }
    assert_eq!(r.json["model"], "sst2");
    // With one model, /v1/predict is the same route.
    let only = call(&server, "POST", "/v1/predict", Some(&request_body(&texts)));
    assert_eq!(response_logits(&only.body).unwrap(), got);
    let m = call(&server, "GET", "/metrics", None).json;
    let s = &m["models"]["sst2"];
    assert_eq!(
        (s["requests"].as_u64(), s["inputs"].as_u64()),
        (Some(2), Some(16))
    );
    assert!(s["latency_ms_p50"].as_f64().unwrap() > 0.0, "{s}");
    let h = call(&server, "GET", "/health", None);
    assert_eq!((h.status, h.json["status"].as_str()), (200, Some("ok")));
    server.stop().unwrap();
}

#[test]
fn concurrent_clients_each_get_their_own_answers() {
    let test = "concurrent_clients_each_get_their_own_answers";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let server = Arc::new(serve(&[("sst2", &tiny.bundle)], ServeOptions::default()));
    let texts = singles(TINY_SENTENCES);
    let want = Arc::new(alone(&tiny.bundle, &texts));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (server, want, texts) = (server.clone(), want.clone(), texts.clone());
            std::thread::spawn(move || {
                for k in 0..12 {
                    // Each request asks for one or two sentences, different per client and turn.
                    let i = (c * 5 + k) % texts.len();
                    let j = (i + 1 + k % 3) % texts.len();
                    let ask = if k % 2 == 0 {
                        vec![texts[i].clone()]
                    } else {
                        vec![texts[i].clone(), texts[j].clone()]
                    };
                    let r = predict(&server, "sst2", &ask);
                    assert_eq!(r.status, 200, "{}", r.json);
                    let got = response_logits(&r.body).unwrap();
                    let expect: Vec<Vec<f32>> = if k % 2 == 0 {
                        vec![want[i].clone()]
                    } else {
                        vec![want[i].clone(), want[j].clone()]
                    };
                    let diff = max_abs_diff(&got, &expect);
                    assert!(diff <= TOL, "client {c}, request {k}: off by {diff}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let m = call(&server, "GET", "/metrics", None).json;
    let s = &m["models"]["sst2"];
    assert_eq!(s["requests"].as_u64(), Some(96));
    assert_eq!(s["inputs"].as_u64(), Some(8 * (6 + 12)));
    assert_eq!(s["queued_inputs"].as_u64(), Some(0));
    // How many shared a round depends on timing (the batcher's unit tests pin it down).
    eprintln!(
        "{test}: 96 requests in {} rounds ({} per round)",
        s["rounds"], s["requests_per_round"]
    );
}

#[test]
fn two_models_side_by_side_and_a_pair_task_takes_pairs() {
    let test = "two_models_side_by_side_and_a_pair_task_takes_pairs";
    let Some((tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let pair = tiny_bundle(
        tmp.path(),
        "mrpc",
        "mrpc",
        &["not_equivalent", "equivalent"],
        &["sentence1", "sentence2"],
        MethodKind::Adept,
    );
    let server = serve(
        &[("sst2", &tiny.bundle), ("mrpc", &pair.bundle)],
        ServeOptions::default(),
    );
    let listed = call(&server, "GET", "/v1/models", None).json;
    let names: Vec<&str> = listed["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mrpc", "sst2"]);
    let info = call(&server, "GET", "/v1/models/mrpc", None).json;
    assert_eq!(info["takes_pair"], json!(true));
    assert_eq!(info["text_fields"], json!(["sentence1", "sentence2"]));
    // Pairs as arrays and as records of the bundle's fields give the in-process answers.
    let pairs: Vec<(String, Option<String>)> = TINY_SENTENCES
        .iter()
        .zip(TINY_SENTENCES.iter().rev())
        .map(|(a, b)| (a.to_string(), Some(b.to_string())))
        .collect();
    let want = alone(&pair.bundle, &pairs);
    let as_arrays = predict(&server, "mrpc", &pairs);
    assert_eq!(as_arrays.status, 200, "{}", as_arrays.json);
    assert!(max_abs_diff(&response_logits(&as_arrays.body).unwrap(), &want) <= TOL);
    let records: Vec<Value> = pairs
        .iter()
        .map(|(a, b)| json!({"sentence1": a, "sentence2": b}))
        .collect();
    let body = serde_json::to_vec(&json!({ "inputs": records })).unwrap();
    let as_records = call(&server, "POST", "/v1/models/mrpc/predict", Some(&body));
    assert_eq!(
        response_logits(&as_records.body).unwrap(),
        response_logits(&as_arrays.body).unwrap()
    );
    // One text where a pair is needed; the single route with two models; an unknown model.
    let one = predict(&server, "mrpc", &singles(&["just one"]));
    assert_eq!(one.status, 422);
    assert!(error_message(&one).contains("takes a pair"), "{}", one.json);
    let ambiguous = call(
        &server,
        "POST",
        "/v1/predict",
        Some(b"{\"inputs\": [\"x\"]}"),
    );
    assert_eq!(ambiguous.status, 404);
    assert!(
        error_message(&ambiguous).contains("[\"mrpc\", \"sst2\"]"),
        "{}",
        ambiguous.json
    );
    let unknown = predict(&server, "qnli", &singles(&["x"]));
    assert_eq!(unknown.status, 404);
    assert!(
        error_message(&unknown).contains("no model named \"qnli\""),
        "{}",
        unknown.json
    );
    server.stop().unwrap();
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let test = "bad_requests_get_json_errors_and_the_server_keeps_serving";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let opts = ServeOptions {
        max_inputs: 4,
        max_body_bytes: 1000,
        ..Default::default()
    };
    let server = serve(&[("sst2", &tiny.bundle)], opts);
    let long = format!("{{\"inputs\": [\"{}\"]}}", "a ".repeat(600));
    // (method, path, body, status, what the message says)
    type Case<'a> = (&'a str, &'a str, Option<&'a [u8]>, u16, &'a str);
    let cases: [Case; 7] = [
        (
            "POST",
            "/v1/models/sst2/predict",
            Some(b"{not json"),
            400,
            "not JSON",
        ),
        (
            "POST",
            "/v1/models/sst2/predict",
            Some(b"{\"inputs\": []}"),
            422,
            "empty",
        ),
        (
            "POST",
            "/v1/models/sst2/predict",
            Some(b"{\"inputs\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}"),
            413,
            "at most 4",
        ),
        (
            "POST",
            "/v1/models/sst2/predict",
            Some(long.as_bytes()),
            413,
            "larger than 1000 bytes",
        ),
        (
            "POST",
            "/v1/models/sst2/predict",
            Some(b"{\"inputs\": [null]}"),
            422,
            "input 0: a null",
        ),
        ("GET", "/v1/models/sst2/predict", None, 405, "POST"),
        ("GET", "/v2/anything", None, 404, "no such route"),
    ];
    for (method, path, body, status, says) in cases {
        let r = call(&server, method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.json);
        let msg = error_message(&r);
        assert!(
            msg.contains(says),
            "{method} {path}: {msg:?} lacks {says:?}"
        );
        assert_eq!(r.json["error"]["status"], json!(status));
    }
    let ok = predict(&server, "sst2", &singles(&["good"]));
    assert_eq!(ok.status, 200, "{}", ok.json);
    let s = &call(&server, "GET", "/metrics", None).json["models"]["sst2"];
    // The five predict-route refusals that reached the model's handler are counted.
    assert_eq!(s["rejected_invalid"].as_u64(), Some(5), "{s}");
    assert_eq!(s["requests"].as_u64(), Some(1), "{s}");
}

/// Runs the bundle, but holds every run until released, and panics on the tiny tokenizer's
/// id of "worst".
struct Gate {
    bundle: Arc<Bundle>,
    panic_on: u32,
    held: Mutex<bool>,
    entered: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    fn new(bundle: Arc<Bundle>, panic_on: u32) -> Arc<Self> {
        Arc::new(Self {
            bundle,
            panic_on,
            held: Mutex::new(true),
            entered: Mutex::new(0),
            cv: Condvar::new(),
        })
    }
    fn wait_entered(&self, n: usize) {
        let e = self.entered.lock().unwrap();
        let (e, _) = self
            .cv
            .wait_timeout_while(e, Duration::from_secs(60), |e| *e < n)
            .unwrap();
        assert!(*e >= n, "the runner was not entered {n} times within 60 s");
    }
    fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.cv.notify_all();
    }
}

impl Runner for Gate {
    fn run(&self, items: &[Encoded]) -> anyhow::Result<(Vec<Vec<f32>>, PaddingStats)> {
        *self.entered.lock().unwrap() += 1;
        self.cv.notify_all();
        let held = self.held.lock().unwrap();
        drop(self.cv.wait_while(held, |h| *h).unwrap());
        assert!(
            !items.iter().any(|e| e.ids.contains(&self.panic_on)),
            "a run that panics"
        );
        self.bundle.logits_with_padding(items)
    }
}

#[test]
fn a_busy_queue_answers_503_and_a_panicking_run_500_while_the_server_keeps_serving() {
    let test = "a_busy_queue_answers_503_and_a_panicking_run_500_while_the_server_keeps_serving";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let bundle = Arc::new(Bundle::open_with(&tiny.bundle, &runtime()).unwrap());
    let worst = tiny.encoder.encode("worst", None).unwrap().ids[1];
    let gate = Gate::new(bundle.clone(), worst);
    let opts = ServeOptions {
        max_inputs: 2,
        batch: BatchOptions {
            max_queue: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let runner: Arc<dyn Runner> = gate.clone();
    let model = ServedModel::with_runners("sst2", bundle, vec![runner], &opts).unwrap();
    let stats = model.stats.clone();
    let server = Arc::new(start(vec![model], opts));
    let send = |texts: Vec<&'static str>| {
        let server = server.clone();
        std::thread::spawn(move || predict(&server, "sst2", &singles(&texts)))
    };
    // The first request holds the worker; the second fills the queue (2 inputs).
    let first = send(vec!["good"]);
    gate.wait_entered(1);
    let second = send(vec!["not bad", "best movie"]);
    wait_until("the second request is queued", || {
        stats
            .queued_inputs
            .load(std::sync::atomic::Ordering::Relaxed)
            == 2
    });
    let busy = predict(&server, "sst2", &singles(&["funny"]));
    assert_eq!(busy.status, 503, "{}", busy.json);
    assert_eq!(busy.retry_after.as_deref(), Some("1"));
    assert!(error_message(&busy).contains("busy"), "{}", busy.json);
    gate.release();
    for (r, n) in [(first.join().unwrap(), 1), (second.join().unwrap(), 2)] {
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(response_logits(&r.body).unwrap().len(), n);
    }
    // A run that panics fails its request with 500; the next one is served.
    let failed = predict(&server, "sst2", &singles(&["the worst film"]));
    assert_eq!(failed.status, 500, "{}", failed.json);
    assert!(
        error_message(&failed).contains("panicked"),
        "{}",
        failed.json
    );
    let after = predict(&server, "sst2", &singles(&["funny"]));
    assert_eq!(after.status, 200, "{}", after.json);
    let s = stats.snapshot();
    assert_eq!((s.rejected_busy, s.failed, s.requests), (1, 1, 3), "{s:?}");
}

/// Polls `cond` every 10 ms for up to 60 s; fails the test naming `what` if it never holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tiny bundle served through a held [`Gate`] with `opts`.
fn gated(test: &str, opts: ServeOptions) -> Option<(tempfile::TempDir, Arc<Gate>, Server)> {
    let (tmp, tiny) = tiny_sst2_bundle(test)?;
    let bundle = Arc::new(Bundle::open_with(&tiny.bundle, &runtime()).unwrap());
    let gate = Gate::new(bundle.clone(), u32::MAX);
    let runner: Arc<dyn Runner> = gate.clone();
    let model = ServedModel::with_runners("sst2", bundle, vec![runner], &opts).unwrap();
    Some((tmp, gate, start(vec![model], opts)))
}

#[test]
fn stopping_answers_the_request_in_flight_before_it_returns() {
    let test = "stopping_answers_the_request_in_flight_before_it_returns";
    let Some((_tmp, gate, server)) = gated(test, ServeOptions::default()) else {
        return;
    };
    let url = format!("http://{}/v1/models/sst2/predict", server.addr());
    let client = std::thread::spawn(move || {
        let mut r = agent()
            .post(&url)
            .send(&request_body(&singles(&["good"]))[..])
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
    });
    gate.wait_entered(1);
    let stopper = std::thread::spawn(move || server.stop());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !stopper.is_finished(),
        "stop returned with a request in flight"
    );
    gate.release();
    let (status, body) = client.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(response_logits(&body).unwrap().len(), 1);
    stopper.join().unwrap().unwrap();
}

/// Sends the head of a request announcing a 100-byte body, and 5 bytes of it; keeps the socket.
fn stalled_client(server: &Server) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(server.addr()).unwrap();
    c.write_all(
        b"POST /v1/models/sst2/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"inp",
    )
    .unwrap();
    c
}

#[test]
fn a_stalled_body_gets_408_and_does_not_hold_up_a_stop() {
    let test = "a_stalled_body_gets_408_and_does_not_hold_up_a_stop";
    let opts = ServeOptions {
        body_timeout: Duration::from_millis(300),
        drain_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let Some((_tmp, gate, server)) = gated(test, opts) else {
        return;
    };
    gate.release();
    // The body never completes: 408 after the body timeout, as JSON.
    let mut c = stalled_client(&server);
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("--body-timeout") {
        match std::io::Read::read(&mut c, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout"), "{answer}");
    server.stop().unwrap();
    // A client that stalls while the server stops holds it up for the drain timeout only (here
    // the body timeout is long, so only the drain deadline can end the wait).
    let opts = ServeOptions {
        body_timeout: Duration::from_secs(120),
        drain_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (_tmp2, gate, server) = gated(test, opts).unwrap();
    gate.release();
    let _stalled = stalled_client(&server);
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    server.stop().unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        "stop took {took:?} with a stalled client (drain timeout 0.5 s)"
    );
}

#[test]
fn requests_beyond_max_pending_get_503_before_their_body_is_read() {
    let test = "requests_beyond_max_pending_get_503_before_their_body_is_read";
    let opts = ServeOptions {
        max_pending: 1,
        ..Default::default()
    };
    let Some((_tmp, gate, server)) = gated(test, opts) else {
        return;
    };
    let server = Arc::new(server);
    let first = {
        let server = server.clone();
        std::thread::spawn(move || predict(&server, "sst2", &singles(&["good"])))
    };
    gate.wait_entered(1);
    let busy = predict(&server, "sst2", &singles(&["funny"]));
    assert_eq!(busy.status, 503, "{}", busy.json);
    assert_eq!(busy.retry_after.as_deref(), Some("1"));
    assert!(
        error_message(&busy).contains("--max-pending"),
        "{}",
        busy.json
    );
    // A bad URL is a JSON 400 too.
    let bad = call(&server, "GET", "/v1/models/%FF", None);
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert!(error_message(&bad).contains("bad URL"), "{}", bad.json);
    gate.release();
    assert_eq!(first.join().unwrap().status, 200);
    let again = predict(&server, "sst2", &singles(&["funny"]));
    assert_eq!(again.status, 200, "{}", again.json);
}

#[test]
fn cors_answers_preflights_and_marks_answers_for_allowed_origins_only() {
    let test = "cors_answers_preflights_and_marks_answers_for_allowed_origins_only";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let app = "http://app.example:3000";
    let opts = ServeOptions {
        cors_origins: vec![app.to_string()],
        ..Default::default()
    };
    let server = serve(&[("sst2", &tiny.bundle)], opts);
    let url = format!("http://{}/v1/models/sst2/predict", server.addr());
    let allow_origin = |r: &ureq::http::Response<ureq::Body>| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    // The browser's preflight for a JSON POST.
    let pre = agent()
        .options(&url)
        .header("origin", app)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .call()
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    assert_eq!(allow_origin(&pre).as_deref(), Some(app));
    let methods = pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    assert!(pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    // The POST itself, from the allowed origin and from another one.
    let body = request_body(&singles(&["good"]));
    let post = |origin: &str| {
        agent()
            .post(&url)
            .header("origin", origin)
            .content_type("application/json")
            .send(&body[..])
            .unwrap()
    };
    let ok = post(app);
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(allow_origin(&ok).as_deref(), Some(app));
    assert!(ok.headers()["vary"].to_str().unwrap().contains("origin"));
    let other = post("http://elsewhere.example");
    assert_eq!(other.status().as_u16(), 200);
    assert_eq!(
        allow_origin(&other),
        None,
        "an origin not listed got CORS headers"
    );
    server.stop().unwrap();
    // Without --cors-origin there are no CORS headers, and OPTIONS is not a route.
    let plain = serve(&[("sst2", &tiny.bundle)], ServeOptions::default());
    let url = format!("http://{}/v1/models/sst2/predict", plain.addr());
    let pre = agent().options(&url).header("origin", app).call().unwrap();
    assert_eq!(pre.status().as_u16(), 405);
    assert_eq!(allow_origin(&pre), None);
}
