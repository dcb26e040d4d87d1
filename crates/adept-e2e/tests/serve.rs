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

/// [`gated`] with one predict request ("good") sent and held in the run: the server, its gate
/// and the thread of that request.
#[allow(clippy::type_complexity)]
fn gated_with_one_held(
    test: &str,
    opts: ServeOptions,
) -> Option<(
    tempfile::TempDir,
    Arc<Gate>,
    Arc<Server>,
    std::thread::JoinHandle<Reply>,
)> {
    let (tmp, gate, server) = gated(test, opts)?;
    let server = Arc::new(server);
    let first = {
        let server = server.clone();
        std::thread::spawn(move || predict(&server, "sst2", &singles(&["good"])))
    };
    gate.wait_entered(1);
    Some((tmp, gate, server, first))
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
    let Some((_tmp, gate, server, first)) = gated_with_one_held(test, opts) else {
        return;
    };
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

/// Predict requests whose clients leave while they are queued are counted as cancelled and
/// not run: the round after the held one runs only the request still wanted.
#[test]
fn predict_requests_whose_clients_left_are_cancelled_not_run() {
    let test = "predict_requests_whose_clients_left_are_cancelled_not_run";
    let Some((_tmp, gate, server, first)) = gated_with_one_held(test, ServeOptions::default())
    else {
        return;
    };
    let body = json!({"inputs": ["funny", "dull"]});
    let leaving: Vec<_> = (0..3)
        .map(|_| raw_post(&server, "/v1/models/sst2/predict", &body))
        .collect();
    wait_until("three requests queued", || {
        server.state().snapshot()["sst2"].queued_inputs == 6
    });
    drop(leaving);
    wait_until("the three counted as cancelled", || {
        server.state().snapshot()["sst2"].cancelled == 3
    });
    gate.release();
    assert_eq!(first.join().unwrap().status, 200);
    let after = predict(&server, "sst2", &singles(&["funny"]));
    assert_eq!(after.status, 200, "{}", after.json);
    // The held run and the last one: the round of the three that left ran nothing.
    assert_eq!(*gate.entered.lock().unwrap(), 2);
    let s = server.state().snapshot()["sst2"].clone();
    assert_eq!((s.cancelled, s.queued_inputs), (3, 0), "{s:?}");
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

#[test]
fn api_keys_guard_every_route_but_health() {
    let test = "api_keys_guard_every_route_but_health";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let (key, other) = ("k3y-0123456789abcdef", "k3y-fedcba9876543210");
    let app = "http://app.example:3000";
    let opts = ServeOptions {
        api_keys: adept_serve::ApiKeys::new(&[key, other]).unwrap(),
        cors_origins: vec![app.to_string()],
        ..Default::default()
    };
    let server = serve(&[("sst2", &tiny.bundle)], opts);
    let base = format!("http://{}", server.addr());
    let body = request_body(&singles(&["good"]));
    let post = |auth: Option<&str>| {
        let mut r = agent()
            .post(format!("{base}/v1/models/sst2/predict"))
            .content_type("application/json");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let mut resp = r.send(&body[..]).unwrap();
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let json: serde_json::Value =
            serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        (status, www, json)
    };
    // No key, a wrong key, another scheme: 401 with a JSON message that names the header.
    for (auth, why) in [
        (None, "needs an API key"),
        (Some("Bearer k3y-not-the-right-one"), "not valid"),
        (Some(&format!("Basic {key}") as &str), "not `Bearer <key>`"),
    ] {
        let (status, www, json) = post(auth);
        assert_eq!(status, 401, "{auth:?}: {json}");
        assert_eq!(www.as_deref(), Some("Bearer"), "{auth:?}");
        let msg = json["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(why) && msg.contains("Authorization: Bearer <key>"),
            "{auth:?}: {msg}"
        );
        assert!(!msg.contains(key), "the message shows a key: {msg}");
    }
    // Either key, the scheme in any case.
    for auth in [format!("Bearer {key}"), format!("bearer {other}")] {
        let (status, _, json) = post(Some(&auth));
        assert_eq!(status, 200, "{auth}: {json}");
        assert_eq!(json["predictions"].as_array().unwrap().len(), 1);
    }
    // /health stays open for load balancers; /metrics and the model list need the key.
    assert_eq!(call(&server, "GET", "/health", None).status, 200);
    // Only /health itself is open: not its encodings or neighbours.
    for path in ["/%68ealth", "/health/", "//health", "/HEALTH"] {
        assert_eq!(call(&server, "GET", path, None).status, 401, "{path}");
    }
    for path in [
        "/metrics",
        "/v1/models",
        "/v1/models/sst2",
        "/no/such/route",
    ] {
        assert_eq!(call(&server, "GET", path, None).status, 401, "{path}");
        let with_key = agent()
            .get(format!("{base}{path}"))
            .header("authorization", format!("Bearer {key}"))
            .call()
            .unwrap();
        let want = if path == "/no/such/route" { 404 } else { 200 };
        assert_eq!(with_key.status().as_u16(), want, "{path}");
    }
    // A browser's preflight carries no key: answered, and it allows the Authorization header.
    let pre = agent()
        .options(format!("{base}/v1/models/sst2/predict"))
        .header("origin", app)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .call()
        .unwrap();
    assert_eq!(pre.status().as_u16(), 204);
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    // A 401 to that origin carries the CORS header, so its page can read why.
    let denied = agent()
        .post(format!("{base}/v1/models/sst2/predict"))
        .header("origin", app)
        .content_type("application/json")
        .send(&body[..])
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    assert_eq!(
        denied.headers()["access-control-allow-origin"]
            .to_str()
            .unwrap(),
        app
    );
    server.stop().unwrap();
}

// ---- Generation: decoder and T5 bundles at /v1/models/{name}/generate ----

/// The tiny decoder bundle (tests/reference/tiny_decoder.py: 2 layers, 40-word vocabulary, a
/// 3-row ADePT prompt cache, a chat template that strips the message).
fn tiny_decoder() -> std::path::PathBuf {
    adept_testkit::repo_file("tests/fixtures/tiny-decoder")
}

const LM_PROMPTS: [&str; 4] = ["w5 w9 w12", "w30", "w7 w7 w8 w21 w3 w17", "w11 w4"];

/// What the in-process generator makes of each prompt alone.
fn generate_alone(cfg: &adept_bundle::generate::GenerationConfig) -> Vec<(String, Vec<u32>)> {
    let mut g = adept_runtime::Generator::open(&tiny_decoder(), &runtime()).unwrap();
    LM_PROMPTS
        .iter()
        .map(|p| {
            let (gens, _) = g
                .generate(&[p.to_string()], cfg, true, &mut |_, _| {})
                .unwrap();
            (gens[0].text.clone(), gens[0].token_ids.clone())
        })
        .collect()
}

fn texts_and_ids(answer: &Value) -> Vec<(String, Vec<u32>)> {
    answer["generations"]
        .as_array()
        .unwrap_or_else(|| panic!("no generations in {answer}"))
        .iter()
        .map(|g| {
            let ids: Vec<u32> = serde_json::from_value(g["token_ids"].clone()).unwrap();
            assert_eq!(g["new_tokens"].as_u64().unwrap() as usize, ids.len(), "{g}");
            (g["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

/// Posts `body` with `"stream": true` and reads the server-sent events: `(event, data)`.
fn stream(server: &Server, path: &str, body: &Value) -> Vec<(String, Value)> {
    let url = format!("http://{}{path}", server.addr());
    let mut resp = agent()
        .post(&url)
        .content_type("application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let text = resp.body_mut().read_to_string().unwrap();
    text.split("\n\n")
        .filter(|block| block.lines().any(|l| l.starts_with("data:")))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_owned())
                    .unwrap_or_default()
            };
            let data = serde_json::from_str(&field("data:")).unwrap();
            (field("event:"), data)
        })
        .collect()
}

/// Greedy completions over HTTP equal the in-process generator's for each prompt alone (ids
/// and text), whether the prompts come in one request, in four concurrent requests that share
/// one run, or streamed (the pieces concatenate to the text, and `done` carries the answer).
#[test]
fn a_decoder_bundle_generates_what_the_generator_does_whole_concurrent_or_streamed() {
    let test = "a_decoder_bundle_generates_what_the_generator_does_whole_concurrent_or_streamed";
    if !common::ort_available(test) {
        return;
    }
    let cfg = adept_bundle::generate::GenerationConfig {
        max_new_tokens: 6,
        ..Default::default()
    };
    let want = generate_alone(&cfg);
    let opts = ServeOptions {
        batch: BatchOptions {
            max_batch: 4,
            // Four requests sent at once are gathered into one round (4 prompts end it).
            max_wait: Duration::from_secs(10),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = Arc::new(serve(&[("lm", &tiny_decoder())], opts));
    let info = call(&server, "GET", "/v1/models/lm", None);
    assert_eq!(info.status, 200);
    assert_eq!(info.json["kind"], "causal-lm", "{}", info.json);
    assert_eq!(info.json["route"], "/v1/models/lm/generate");
    assert_eq!(info.json["chat_template"], true);

    let body = json!({"inputs": LM_PROMPTS, "parameters": {"max_new_tokens": 6}});
    let r = call(
        &server,
        "POST",
        "/v1/generate",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["model"], "lm");
    assert_eq!(texts_and_ids(&r.json), want);
    assert!(want.iter().any(|(t, _)| !t.is_empty()), "{want:?}");

    // Without max_new_tokens the default (64) is lowered to the room the prompt leaves: the
    // tiny model takes 64 positions, 3 of them the soft prompt, 2 the prompt with its BOS.
    let r = call(
        &server,
        "POST",
        "/v1/generate",
        Some(br#"{"inputs": "w3"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["generations"][0]["prompt_tokens"], 2);
    assert!(
        r.json["generations"][0]["new_tokens"].as_u64().unwrap() <= 59,
        "{}",
        r.json
    );
    let before = server.state().snapshot()["lm"].clone();
    let threads: Vec<_> = (0..LM_PROMPTS.len())
        .map(|i| {
            let server = server.clone();
            std::thread::spawn(move || {
                let body = json!({"inputs": LM_PROMPTS[i], "parameters": {"max_new_tokens": 6}});
                let path = "/v1/models/lm/generate";
                call(&server, "POST", path, Some(body.to_string().as_bytes()))
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(texts_and_ids(&r.json), vec![want[i].clone()], "prompt {i}");
    }
    let snap = server.state().snapshot()["lm"].clone();
    assert_eq!(
        snap.rounds - before.rounds,
        1,
        "the four requests share one round"
    );
    assert_eq!(snap.requests, 6);
    let new: usize = want.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!((snap.new_tokens - before.new_tokens) as usize, new);

    let body = json!({"inputs": [LM_PROMPTS[0], LM_PROMPTS[2]],
        "parameters": {"max_new_tokens": 6}, "stream": true});
    let events = stream(&server, "/v1/models/lm/generate", &body);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    assert_eq!(texts_and_ids(data), vec![want[0].clone(), want[2].clone()]);
    let mut pieces = [String::new(), String::new()];
    for (event, data) in &events[..events.len() - 1] {
        assert_eq!(event, "token", "{data}");
        pieces[data["index"].as_u64().unwrap() as usize] += data["text"].as_str().unwrap();
    }
    assert_eq!(pieces, [want[0].0.clone(), want[2].0.clone()]);
}

/// Sampling with a seed repeats itself and follows the in-process generator; the chat template
/// and stop strings apply; bad requests get JSON errors naming the problem; a classifier and a
/// generator refuse each other's route.
#[test]
fn generation_parameters_and_bad_generate_requests() {
    let test = "generation_parameters_and_bad_generate_requests";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let cfg = adept_bundle::generate::GenerationConfig {
        max_new_tokens: 8,
        temperature: 1.5,
        top_k: 20,
        seed: 7,
        do_sample: true,
        ..Default::default()
    };
    let want = generate_alone(&cfg);
    let server = serve(
        &[("lm", &tiny_decoder()), ("sst2", &tiny.bundle)],
        ServeOptions {
            max_new_tokens: 16,
            ..Default::default()
        },
    );
    let post =
        |path: &str, body: Value| call(&server, "POST", path, Some(body.to_string().as_bytes()));
    let sampled = json!({"inputs": LM_PROMPTS[0],
        "parameters": {"max_new_tokens": 8, "temperature": 1.5, "top_k": 20, "seed": 7}});
    let a = post("/v1/models/lm/generate", sampled.clone());
    let b = post("/v1/models/lm/generate", sampled);
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json, b.json);
    assert_eq!(texts_and_ids(&a.json), vec![want[0].clone()]);
    // The template strips the message, so padding the prompt with spaces changes nothing.
    let plain = post("/v1/models/lm/generate", json!({"inputs": "w5 w9 w12"}));
    let chat = post(
        "/v1/models/lm/generate",
        json!({"inputs": "   w5 w9 w12  ", "parameters": {"chat_template": true}}),
    );
    assert_eq!(chat.status, 200, "{}", chat.json);
    assert_eq!(texts_and_ids(&chat.json), texts_and_ids(&plain.json));
    // A stop string cuts the text where it first appears.
    let (text, _) = &texts_and_ids(&plain.json)[0];
    let word = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{text:?}"));
    let stopped = post(
        "/v1/models/lm/generate",
        json!({"inputs": "w5 w9 w12", "parameters": {"stop": [word]}}),
    );
    let g = &stopped.json["generations"][0];
    assert_eq!(g["finish_reason"], "stop", "{g}");
    assert!(!g["text"].as_str().unwrap().contains(word), "{g}");
    assert!(
        text.starts_with(g["text"].as_str().unwrap()),
        "{g} vs {text:?}"
    );

    let long = vec!["w3"; 60].join(" ");
    for (path, body, status, says) in [
        (
            "/v1/models/lm/predict",
            json!({"inputs": ["w3"]}),
            400,
            "/v1/models/lm/generate",
        ),
        (
            "/v1/models/sst2/generate",
            json!({"inputs": "a"}),
            400,
            "/v1/models/sst2/predict",
        ),
        ("/v1/generate", json!({"inputs": "w3"}), 404, "2 models"),
        (
            "/v1/models/lm/generate",
            json!({"inputs": long}),
            422,
            "max_sequence_len",
        ),
        (
            "/v1/models/lm/generate",
            json!({"inputs": "w3", "parameters": {"max_new_tokens": 17}}),
            422,
            "--max-new-tokens",
        ),
        (
            "/v1/models/lm/generate",
            json!({"inputs": "w3", "parameters": {"top_p": 0}}),
            422,
            "top_p",
        ),
        (
            "/v1/models/lm/generate",
            json!({"inputs": "w3", "parameters": {"num_beams": 2}}),
            422,
            "T5",
        ),
        (
            "/v1/models/lm/generate",
            json!({"inputs": "w3", "max_new_tokens": 2}),
            422,
            "unknown field",
        ),
        (
            "/v1/models/nope/generate",
            json!({"inputs": "w3"}),
            404,
            "\"lm\"",
        ),
    ] {
        let r = post(path, body.clone());
        assert_eq!(r.status, status, "{path} {body}: {}", r.json);
        let msg = error_message(&r);
        assert!(msg.contains(says), "{path} {body}: {msg}");
    }
    let snap = server.state().snapshot();
    // The six refusals of a known model (the 404s name no served model).
    assert_eq!(snap["lm"].rejected_invalid, 6, "{:?}", snap["lm"]);
    // Still serving both.
    assert_eq!(
        post("/v1/models/lm/generate", json!({"inputs": "w3"})).status,
        200
    );
    assert_eq!(predict(&server, "sst2", &singles(&["a film"])).status, 200);
}

/// A T5 bundle (the tiny fixture with an ADePT adapter) answers what `Seq2SeqBundle` generates
/// in-process, greedy and by beam search; streamed, greedy text comes as its tokens are chosen
/// and beam-search text as one piece per prompt, the pieces adding up to the answer.
#[test]
fn a_t5_bundle_generates_what_the_seq2seq_runtime_does() {
    use adept_adapters::{Adapter, AdapterConfig};
    use adept_runtime::seq2seq::{Seq2SeqBundle, Seq2SeqGenerateOptions};
    let test = "a_t5_bundle_generates_what_the_seq2seq_runtime_does";
    let Some(lib) = adept_testkit::ort_library(test) else {
        return;
    };
    let fixture = adept_testkit::repo_file("tests/fixtures/tiny-t5-v1");
    let m = adept_backbones::T5Model::from_dir(&fixture, &candle_core::Device::Cpu).unwrap();
    let a = Adapter::init(
        AdapterConfig::new(MethodKind::Adept, m.config.d_model, 3, 4),
        &m.shared,
        5,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t5");
    let opts = adept_export::seq2seq::Seq2SeqExportOptions {
        overwrite: true,
        ..Default::default()
    };
    adept_export::seq2seq::export_seq2seq(&m, &a, &fixture.join("tokenizer.json"), &dir, &opts)
        .unwrap();
    let sources = ["translate: the cat sat", "summarize: a b c d e f", "x"];
    let rt =
        adept_runtime::ortlib::find_and_load_for(None, Some(&lib), Default::default()).unwrap();
    let mut bundle = Seq2SeqBundle::open(&dir, rt, &runtime().session).unwrap();
    let server = serve(&[("t5", &dir)], ServeOptions::default());
    let info = call(&server, "GET", "/v1/models", None);
    assert_eq!(info.json["models"][0]["kind"], "seq2seq", "{}", info.json);
    for beams in [1usize, 3] {
        let gen_opts = Seq2SeqGenerateOptions {
            max_new_tokens: 5,
            num_beams: beams,
            ..Default::default()
        };
        let want: Vec<(String, Vec<u32>)> = sources
            .iter()
            .map(|s| {
                let (g, text) = bundle.generate_text(&[s], &gen_opts).unwrap().remove(0);
                (text, g.tokens)
            })
            .collect();
        let body =
            json!({"inputs": sources, "parameters": {"max_new_tokens": 5, "num_beams": beams}});
        let r = call(
            &server,
            "POST",
            "/v1/generate",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(texts_and_ids(&r.json), want, "{beams} beams");
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = stream(&server, "/v1/generate", &streamed);
        let ((last, answer), pieces) = events.split_last().unwrap();
        assert_eq!(last, "done", "{events:?}");
        let mut texts = vec![String::new(); sources.len()];
        let mut count = vec![0usize; sources.len()];
        for (event, data) in pieces {
            assert_eq!(event, "token", "{events:?}");
            let i = data["index"].as_u64().unwrap() as usize;
            texts[i] += data["text"].as_str().unwrap();
            count[i] += 1;
        }
        for (i, (text, _)) in want.iter().enumerate() {
            assert_eq!(&texts[i], text, "{beams} beams, prompt {i}: the pieces");
        }
        eprintln!("T5, {beams} beam(s): pieces per prompt {count:?} for {want:?}");
        if beams == 1 {
            // Greedy streams as the tokens are chosen: a text of several tokens comes in
            // several pieces.
            for (i, (text, ids)) in want.iter().enumerate() {
                if ids.len() > 2 && !text.is_empty() {
                    assert!(
                        count[i] > 1,
                        "prompt {i}: {text:?} in {} piece(s)",
                        count[i]
                    );
                }
            }
        } else {
            // Beams reorder until the end: one piece per prompt.
            assert_eq!(count, vec![1; sources.len()], "{events:?}");
        }
        assert_eq!(texts_and_ids(answer), want);
    }
    let r = call(
        &server,
        "POST",
        "/v1/generate",
        Some(
            json!({"inputs": "x", "parameters": {"temperature": 0.5}})
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(r.status, 422);
    assert!(error_message(&r).contains("beam search"), "{}", r.json);
    // A longer greedy run through the server: each row's pieces still add up to its text.
    // (This random fixture reaches no EOS within 40 tokens, as printed; the EOS path follows.)
    let body = json!({"inputs": sources, "parameters": {"max_new_tokens": 40}, "stream": true});
    let events = stream(&server, "/v1/generate", &body);
    let ((last, answer), pieces) = events.split_last().unwrap();
    assert_eq!(last, "done");
    let mut texts = vec![String::new(); sources.len()];
    for (_, data) in pieces {
        texts[data["index"].as_u64().unwrap() as usize] += data["text"].as_str().unwrap();
    }
    let whole = texts_and_ids(answer);
    let eos = bundle.info.eos_token_id;
    let lens: Vec<(usize, bool)> = whole
        .iter()
        .map(|(_, ids)| (ids.len(), ids.last() == Some(&eos)))
        .collect();
    eprintln!("T5, 40 new tokens: (length, ended at EOS) per prompt {lens:?}");
    for (i, (text, _)) in whole.iter().enumerate() {
        assert_eq!(&texts[i], text, "prompt {i}");
    }
    // A row that ends at EOS while the others go on. The fixture's own EOS never comes, so a
    // copy of the bundle names as EOS a token that prompt 0 first emits a few tokens in (so
    // its row streams some text before it closes) and some other prompt never does. The
    // answer is the same search cut after that token's first occurrence (finish_reason "eos";
    // rows without it run to the limit), streamed or not, and streamed, every row's pieces
    // still add up to its text. (The closed row is then fed the pad id, a special token that
    // decodes to nothing, so this cannot tell whether the runner skips it.)
    let long: Vec<Vec<u32>> = whole.iter().map(|(_, ids)| ids.clone()).collect();
    let pad = bundle.info.pad_token_id;
    let (pos, new_eos) = long[0]
        .iter()
        .enumerate()
        .take(20)
        .find(|&(i, t)| {
            i >= 2
                && *t != pad
                && !long[0][..i].contains(t)
                && long[1..].iter().any(|row| !row.contains(t))
        })
        .map(|(i, &t)| (i, t))
        .unwrap_or_else(|| panic!("no token of prompt 0 missing from another prompt: {long:?}"));
    let eos_dir = tmp.path().join("t5-eos");
    std::fs::create_dir_all(&eos_dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, eos_dir.join(path.file_name().unwrap())).unwrap();
    }
    let manifest_path = eos_dir.join("adept.json");
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["eos_token_id"] = json!(new_eos);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let want: Vec<Vec<u32>> = long
        .iter()
        .map(|row| match row.iter().position(|&t| t == new_eos) {
            Some(i) => row[..=i].to_vec(),
            None => row.clone(),
        })
        .collect();
    assert_eq!(want[0].len(), pos + 1);
    assert!(want.iter().any(|row| row.len() == 40), "{want:?}");
    let eos_server = serve(&[("t5", &eos_dir)], ServeOptions::default());
    let events = stream(&eos_server, "/v1/generate", &body);
    let ((last, answer), pieces) = events.split_last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let mut texts = vec![String::new(); sources.len()];
    for (_, data) in pieces {
        texts[data["index"].as_u64().unwrap() as usize] += data["text"].as_str().unwrap();
    }
    let got = texts_and_ids(answer);
    for (i, (text, ids)) in got.iter().enumerate() {
        assert_eq!(ids, &want[i], "prompt {i}: the search cut at EOS {new_eos}");
        let reason = if ids.last() == Some(&new_eos) {
            "eos"
        } else {
            "length"
        };
        assert_eq!(
            answer["generations"][i]["finish_reason"], reason,
            "prompt {i}: {answer}"
        );
        assert_eq!(
            text,
            &bundle.tokenizer.decode(ids, true).unwrap(),
            "prompt {i}"
        );
        assert_eq!(&texts[i], text, "prompt {i}: the pieces");
    }
    eprintln!(
        "T5 with EOS = {new_eos}: lengths {:?}",
        got.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>()
    );
    // Not streamed (the runner gets no piece listener): the same answer.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let r = call(
        &eos_server,
        "POST",
        "/v1/generate",
        Some(plain.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(texts_and_ids(&r.json), got);
    for i in 0..sources.len() {
        assert_eq!(
            r.json["generations"][i]["finish_reason"],
            answer["generations"][i]["finish_reason"]
        );
    }
    // Prompts × beams beyond the whole queue: a 413 naming the limit (a 503 would be retried
    // forever); the same prompts with fewer beams fit.
    let small = ServeOptions {
        max_inputs: 2,
        batch: BatchOptions {
            max_queue: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let small_server = serve(&[("t5", &dir)], small);
    let two_prompts = |beams: usize| {
        let body = json!({"inputs": &sources[..2],
            "parameters": {"max_new_tokens": 2, "num_beams": beams}});
        call(
            &small_server,
            "POST",
            "/v1/generate",
            Some(body.to_string().as_bytes()),
        )
    };
    let too_big = two_prompts(3);
    assert_eq!(too_big.status, 413, "{}", too_big.json);
    let msg = error_message(&too_big);
    assert!(
        msg.contains("needs 6 places") && msg.contains("--max-queue"),
        "{msg}"
    );
    let fits = two_prompts(2);
    assert_eq!(fits.status, 200, "{}", fits.json);
    assert_eq!(
        small_server.state().snapshot()["t5"].rejected_invalid,
        1,
        "the 413 counts as an invalid request, not a busy one"
    );
    // What the server's worker does when a run's clients leave: the search asks before each
    // decoder step and stops there (greedy and beams); never asked to stop, it equals generate.
    let ids: Vec<Vec<u32>> = sources
        .iter()
        .map(|s| adept_runtime::seq2seq::encode_source(&bundle.tokenizer, &bundle.info, s).unwrap())
        .collect();
    for beams in [1usize, 3] {
        let gen_opts = Seq2SeqGenerateOptions {
            max_new_tokens: 50,
            num_beams: beams,
            ..Default::default()
        };
        let asked = std::cell::Cell::new(0usize);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() >= 3
        };
        assert!(bundle
            .generate_until(&ids, &gen_opts, &stop)
            .unwrap()
            .is_none());
        assert_eq!(asked.get(), 3, "{beams} beams: stopped at the third step");
        let whole = bundle.generate_until(&ids, &gen_opts, &|| false).unwrap();
        let want: Vec<Vec<u32>> = bundle
            .generate(&ids, &gen_opts)
            .unwrap()
            .into_iter()
            .map(|g| g.tokens)
            .collect();
        let got: Vec<Vec<u32>> = whole.unwrap().into_iter().map(|g| g.tokens).collect();
        assert_eq!(got, want, "{beams} beams");
    }
}

// ---- Connections: idle timeout and cap ----

/// Reads one response to a request without a body (`GET`) off `s`: its status line.
fn read_response(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "the connection closed mid-answer"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head.lines().next().unwrap().to_owned()
}

/// Waits for the server to close `s` (reading whatever it sends first); how long it took.
fn closed_after(s: &mut std::net::TcpStream) -> Duration {
    use std::io::Read;
    let t = std::time::Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    // EOF (or a reset) ends the read; a timeout would fail the test.
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
    t.elapsed()
}

/// A connection that sends nothing, and a kept-alive one after its answer, are closed after
/// `--idle-timeout`; a request in progress is not cut by it.
#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    use std::io::Write;
    let test = "idle_connections_are_closed_after_the_idle_timeout";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let idle = Duration::from_millis(600);
    let opts = ServeOptions {
        idle_timeout: idle,
        ..Default::default()
    };
    let server = serve(&[("sst2", &tiny.bundle)], opts);
    let mut silent = std::net::TcpStream::connect(server.addr()).unwrap();
    let took = closed_after(&mut silent);
    assert!(
        took >= idle / 2 && took < Duration::from_secs(10),
        "{took:?}"
    );

    let mut kept = std::net::TcpStream::connect(server.addr()).unwrap();
    for _ in 0..2 {
        // Two requests on one connection, less than the idle time apart: both answered.
        kept.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut kept), "HTTP/1.1 200 OK");
        std::thread::sleep(idle / 3);
    }
    let took = closed_after(&mut kept);
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A body slower than the idle time but within --body-timeout is still read.
    let mut slow = std::net::TcpStream::connect(server.addr()).unwrap();
    let body = request_body(&singles(&["a fine film"]));
    write!(
        slow,
        "POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    std::thread::sleep(idle * 2);
    slow.write_all(&body).unwrap();
    assert_eq!(read_response(&mut slow), "HTTP/1.1 200 OK");
    eprintln!("idle connection closed after {took:?}");
}

/// Beyond `--max-connections`, a client waits until a connection closes, then is served;
/// `/metrics` counts the open connections.
#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let test = "connections_beyond_the_cap_wait_for_a_free_slot";
    let Some((_tmp, tiny)) = tiny_sst2_bundle(test) else {
        return;
    };
    let opts = ServeOptions {
        max_connections: 2,
        ..Default::default()
    };
    let server = serve(&[("sst2", &tiny.bundle)], opts);
    let a = std::net::TcpStream::connect(server.addr()).unwrap();
    let b = std::net::TcpStream::connect(server.addr()).unwrap();
    wait_until("two connections open", || {
        server.state().open_connections() == 2
    });
    let addr = server.addr();
    let waiting = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let mut resp = agent()
            .get(format!("http://{addr}/metrics"))
            .call()
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        (t.elapsed(), v)
    });
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !waiting.is_finished(),
        "a third connection was served past the cap"
    );
    drop(a);
    let (took, metrics) = waiting.join().unwrap();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert_eq!(metrics["connections"]["limit"], 2, "{metrics}");
    assert_eq!(metrics["connections"]["open"], 2, "{metrics}");
    drop(b);
}

// ---- Generation under pressure: clients that stop reading or leave, stops, busy queues ----

/// Opens a connection with a small receive buffer and sends `body` to `path` (the answer is
/// left unread).
fn raw_post(server: &Server, path: &str, body: &Value) -> std::net::TcpStream {
    use std::io::Write;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&server.addr().into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// 4000 prompts × 50 tokens: ~9 MB of events, more than the socket buffers hold.
fn big_generation(stream: bool) -> Value {
    json!({"inputs": vec!["w5 w9 w12"; 4000], "parameters": {"max_new_tokens": 50},
        "stream": stream})
}

fn generation_server(opts: ServeOptions) -> Server {
    let opts = ServeOptions {
        max_inputs: 4000,
        batch: BatchOptions {
            max_queue: 8000,
            ..opts.batch.clone()
        },
        ..opts
    };
    serve(&[("lm", &tiny_decoder())], opts)
}

/// A client that stops reading its stream: its `--max-pending` permit comes back when the
/// answer is complete (other requests are served while its connection is still open), and
/// with a short `--idle-timeout` the connection is closed by the write timeout, its answer cut
/// short (and its generation cancelled), instead of being held forever.
#[test]
fn a_client_that_stops_reading_a_stream_holds_neither_its_permit_nor_its_connection() {
    use std::io::Read;
    let test = "a_client_that_stops_reading_a_stream_holds_neither_its_permit_nor_its_connection";
    if !common::ort_available(test) {
        return;
    }
    let small = br#"{"inputs": "w3", "parameters": {"max_new_tokens": 2}}"#;
    let server = generation_server(ServeOptions {
        max_pending: 1,
        ..Default::default()
    });
    let stalled = raw_post(&server, "/v1/models/lm/generate", &big_generation(true));
    wait_until("the stalled stream's answer is complete", || {
        server.state().snapshot()["lm"].requests == 1
    });
    let r = call(&server, "POST", "/v1/models/lm/generate", Some(small));
    assert_eq!(r.status, 200, "{}", r.json);
    assert!(
        server.state().open_connections() >= 1,
        "the stalled client is still connected"
    );
    drop(stalled);
    server.stop().unwrap();

    // A generation that never ends on its own (until its client leaves): the write timeout
    // must cut the client off, whatever this machine's speed and socket buffers.
    let server = endless_server(ServeOptions {
        max_pending: 1,
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let mut stalled = raw_post(
        &server,
        "/v1/generate",
        &json!({"inputs": "w39", "stream": true}),
    );
    wait_until(
        "the stalled connection is closed and its request cancelled",
        || server.state().open_connections() == 0 && server.state().snapshot()["lm"].cancelled == 1,
    );
    let r = call(&server, "POST", "/v1/generate", Some(small));
    assert_eq!(r.status, 200, "{}", r.json);
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("event: token"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(!text.contains("event: done"), "{} bytes", got.len());
}

/// Stands in for a decoder: prompts holding `w39` generate 16 KB pieces, one a millisecond,
/// until their clients leave (`stop`) or 60 s pass; others answer at once.
struct Endless;

impl adept_serve::GenRunner for Endless {
    fn generate(
        &mut self,
        rows: &[Vec<u32>],
        _params: &adept_serve::GenParams,
        mut on_piece: Option<adept_serve::PieceSink<'_>>,
        stop: &dyn Fn() -> bool,
    ) -> anyhow::Result<Vec<adept_serve::GenOutput>> {
        if rows.iter().any(|r| r.contains(&39)) {
            let piece = "x".repeat(16 << 10);
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_secs(60) {
                if stop() {
                    return Err(adept_bundle::generate::Cancelled.into());
                }
                if let Some(sink) = on_piece.as_mut() {
                    for i in 0..rows.len() {
                        sink(i, &piece);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(rows
            .iter()
            .map(|r| adept_serve::GenOutput {
                text: "x".into(),
                finish_reason: adept_bundle::generate::FinishReason::Length,
                prompt_tokens: r.len(),
                token_ids: vec![3],
            })
            .collect())
    }
}

/// A server whose model `lm` reads prompts as the tiny decoder does and runs [`Endless`].
fn endless_server(opts: ServeOptions) -> Server {
    let g = adept_runtime::Generator::open(&tiny_decoder(), &runtime()).unwrap();
    let model = adept_serve::GenModel::of_decoder(&g);
    let served = ServedModel::with_generators("lm", model, vec![Box::new(Endless)], &opts).unwrap();
    start(vec![served], opts)
}

/// Requests whose clients go away are not generated for: a stream closed after its first
/// events stops its run (counted as cancelled; the next request is served), and a stop with a
/// request running and one queued ends within the drain timeout, both cancelled. The model
/// runs until told to stop, so nothing here passes by finishing on its own.
#[test]
fn clients_that_leave_cancel_their_generation_and_a_stop_is_bounded_by_the_drain() {
    use std::io::Read;
    let test = "clients_that_leave_cancel_their_generation_and_a_stop_is_bounded_by_the_drain";
    if !common::ort_available(test) {
        return;
    }
    let drain = Duration::from_secs(1);
    let server = endless_server(ServeOptions {
        max_pending: 4,
        drain_timeout: drain,
        ..Default::default()
    });
    let mut leaving = raw_post(
        &server,
        "/v1/generate",
        &json!({"inputs": "w39", "stream": true}),
    );
    let mut first = [0u8; 512];
    leaving.read_exact(&mut first).unwrap();
    drop(leaving);
    wait_until("the stream counted as cancelled", || {
        server.state().snapshot()["lm"].cancelled == 1
    });
    // Served only if the endless run stopped (the worker is free again).
    let quick: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut r = quick
        .post(format!("http://{}/v1/generate", server.addr()))
        .content_type("application/json")
        .send(br#"{"inputs": "w3"}"#.as_slice())
        .expect("the run of the client that left went on");
    assert_eq!(r.status().as_u16(), 200);
    let _ = r.body_mut().read_to_vec();

    // One request running and one queued, both endless, then a stop. The second is sent only
    // once the first runs: sent together, one round could take both.
    let addr = server.addr();
    let endless = move || {
        std::thread::spawn(move || {
            let _ = agent()
                .post(format!("http://{addr}/v1/generate"))
                .content_type("application/json")
                .send(br#"{"inputs": "w39"}"#.as_slice());
        })
    };
    let mut clients = vec![endless()];
    wait_until("the first endless request running", || {
        server.state().snapshot()["lm"].rounds >= 3
    });
    clients.push(endless());
    wait_until("the second endless request queued", || {
        server.state().snapshot()["lm"].queued_inputs == 1
    });
    let state = server.state().clone();
    let t = std::time::Instant::now();
    server.stop().unwrap();
    let took = t.elapsed();
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        took < drain + Duration::from_secs(3),
        "the stop took {took:?}"
    );
    assert_eq!(state.snapshot()["lm"].cancelled, 3);
}

/// A fake generation runner held at its first call until released; fails a prompt whose first
/// id is 666 (the tiny decoder's BOS is 1, so the first id is 1: rows are matched on their
/// second id).
struct HeldGen {
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl adept_serve::GenRunner for HeldGen {
    fn generate(
        &mut self,
        rows: &[Vec<u32>],
        params: &adept_serve::GenParams,
        mut on_piece: Option<adept_serve::PieceSink<'_>>,
        _stop: &dyn Fn() -> bool,
    ) -> anyhow::Result<Vec<adept_serve::GenOutput>> {
        let (held, cv) = &*self.gate;
        let g = cv.wait_while(held.lock().unwrap(), |h| *h).unwrap();
        drop(g);
        anyhow::ensure!(
            rows.iter().all(|r| r.len() < 3),
            "this fake fails prompts of 2 words"
        );
        if let Some(sink) = on_piece.as_mut() {
            for i in 0..rows.len() {
                sink(i, "x");
            }
        }
        Ok(rows
            .iter()
            .map(|r| adept_serve::GenOutput {
                text: "x".into(),
                finish_reason: adept_bundle::generate::FinishReason::Length,
                prompt_tokens: r.len(),
                token_ids: vec![3; params.config.max_new_tokens.min(1)],
            })
            .collect())
    }
}

/// A busy generation queue answers 503 with Retry-After; a failing run ends a stream with an
/// `error` event and a plain request with a 500; the server goes on.
#[test]
fn a_busy_generation_queue_answers_503_and_a_failing_stream_ends_with_an_error_event() {
    let test = "a_busy_generation_queue_answers_503_and_a_failing_stream_ends_with_an_error_event";
    if !common::ort_available(test) {
        return;
    }
    let g = adept_runtime::Generator::open(&tiny_decoder(), &runtime()).unwrap();
    let model = adept_serve::GenModel::of_decoder(&g);
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let opts = ServeOptions {
        max_inputs: 2,
        batch: BatchOptions {
            max_batch: 1,
            max_queue: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let runner = Box::new(HeldGen { gate: gate.clone() });
    let served = ServedModel::with_generators("lm", model, vec![runner], &opts).unwrap();
    let server = Arc::new(start(vec![served], opts));
    let post = |server: &Server, body: Value| {
        call(
            server,
            "POST",
            "/v1/generate",
            Some(body.to_string().as_bytes()),
        )
    };
    // One request held in the run, one queued (the queue holds 2 prompts), the third refused.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || post(&server, json!({"inputs": ["w3"]})))
        })
        .collect();
    wait_until("one running, one queued", || {
        let s = server.state().snapshot()["lm"].clone();
        s.rounds == 1 && s.queued_inputs == 1
    });
    let busy = post(&server, json!({"inputs": ["w3", "w4"]}));
    assert_eq!(busy.status, 503, "{}", busy.json);
    assert_eq!(busy.retry_after.as_deref(), Some("1"));
    assert!(error_message(&busy).contains("busy"), "{}", busy.json);
    {
        let (h, cv) = &*gate;
        *h.lock().unwrap() = false;
        cv.notify_all();
    }
    for t in held {
        assert_eq!(t.join().unwrap().status, 200);
    }
    let events = stream(
        &server,
        "/v1/generate",
        &json!({"inputs": "w3 w4", "stream": true}),
    );
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "error");
    let msg = events[0].1["error"]["message"].as_str().unwrap();
    assert!(msg.contains("fails prompts of 2 words"), "{msg}");
    let plain = post(&server, json!({"inputs": "w3 w4"}));
    assert_eq!(plain.status, 500);
    assert!(
        error_message(&plain).contains("fails prompts"),
        "{}",
        plain.json
    );
    assert_eq!(post(&server, json!({"inputs": "w3"})).status, 200);
    let snap = server.state().snapshot()["lm"].clone();
    assert_eq!((snap.failed, snap.rejected_busy), (2, 1), "{snap:?}");
}

// ---- OpenAI-compatible routes ----

/// Posts an OpenAI request with `"stream": true` and reads its chunks up to `data: [DONE]`.
fn openai_stream(server: &Server, path: &str, body: &Value) -> Vec<Value> {
    let url = format!("http://{}{path}", server.addr());
    let mut resp = agent()
        .post(&url)
        .content_type("application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    let data: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:").map(str::trim))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// `/v1/completions` and `/v1/chat/completions` answer in OpenAI's shapes what `/generate`
/// answers (temperature 0 = greedy; the tiny decoder's chat template strips the message),
/// streamed or whole; unsupported options and unknown models get errors that say so.
#[test]
fn openai_compatible_completions_and_chat() {
    let test = "openai_compatible_completions_and_chat";
    if !common::ort_available(test) {
        return;
    }
    let server = serve(&[("lm", &tiny_decoder())], ServeOptions::default());
    let post =
        |path: &str, body: Value| call(&server, "POST", path, Some(body.to_string().as_bytes()));
    let native = post(
        "/v1/generate",
        json!({"inputs": ["w5 w9 w12", "w30"], "parameters": {"max_new_tokens": 6}}),
    );
    let want = texts_and_ids(&native.json);

    let r = post(
        "/v1/completions",
        json!({"model": "lm", "prompt": ["w5 w9 w12", "w30"], "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.json);
    let v = &r.json;
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    assert_eq!(v["model"], "lm");
    for (i, (text, ids)) in want.iter().enumerate() {
        let c = &v["choices"][i];
        assert_eq!(c["index"], i);
        assert_eq!(c["text"].as_str().unwrap(), text);
        let reason = native.json["generations"][i]["finish_reason"]
            .as_str()
            .unwrap();
        let openai_reason = if reason == "length" { "length" } else { "stop" };
        assert_eq!(c["finish_reason"], openai_reason, "{c}");
        let _ = ids;
    }
    let completion: usize = want.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(v["usage"]["completion_tokens"], completion);
    assert_eq!(v["usage"]["prompt_tokens"], 4 + 2);
    assert_eq!(v["usage"]["total_tokens"], completion + 6);

    // Streamed: the pieces of each choice concatenate to its text; each choice ends with its
    // finish reason.
    let chunks = openai_stream(
        &server,
        "/v1/completions",
        &json!({"prompt": ["w5 w9 w12", "w30"], "max_tokens": 6, "temperature": 0,
            "stream": true}),
    );
    let mut texts = [String::new(), String::new()];
    let mut reasons = [None, None];
    for c in &chunks {
        assert_eq!(c["object"], "text_completion");
        let choice = &c["choices"][0];
        let i = choice["index"].as_u64().unwrap() as usize;
        texts[i] += choice["text"].as_str().unwrap();
        if let Some(r) = choice["finish_reason"].as_str() {
            reasons[i] = Some(r.to_owned());
        }
    }
    assert_eq!(texts, [want[0].0.clone(), want[1].0.clone()]);
    assert!(reasons.iter().all(Option::is_some), "{chunks:?}");

    // Chat: the template turns the conversation into the prompt.
    let chat = json!({"model": "lm", "messages": [{"role": "user", "content": "  w5 w9 w12 "}],
        "max_tokens": 6, "temperature": 0});
    let r = post("/v1/chat/completions", chat.clone());
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["object"], "chat.completion");
    assert!(r.json["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let m = &r.json["choices"][0]["message"];
    assert_eq!(
        (m["role"].as_str(), m["content"].as_str()),
        (Some("assistant"), Some(want[0].0.as_str()))
    );
    let mut streamed = chat.clone();
    streamed["stream"] = json!(true);
    let chunks = openai_stream(&server, "/v1/chat/completions", &streamed);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, want[0].0);
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());

    // Seeded sampling (the default temperature 1) repeats itself.
    let sampled = json!({"prompt": "w5", "max_tokens": 8, "seed": 3});
    assert_eq!(
        post("/v1/completions", sampled.clone()).json["choices"],
        post("/v1/completions", sampled).json["choices"]
    );

    let models = call(&server, "GET", "/v1/models", None);
    assert_eq!(models.json["object"], "list");
    assert_eq!(models.json["data"][0]["id"], "lm");

    for (path, body, status, says) in [
        (
            "/v1/completions",
            json!({"prompt": "w3", "n": 2}),
            422,
            "\"n\"",
        ),
        (
            "/v1/completions",
            json!({"prompt": "w3", "logprobs": 2}),
            422,
            "logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "w3", "suffix": "x"}),
            422,
            "suffix",
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 2]}),
            422,
            "token-id",
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-4", "prompt": "w3"}),
            404,
            "\"lm\"",
        ),
        (
            "/v1/completions",
            json!({"prompt": "w3", "max_tokens": 100000}),
            422,
            "max_tokens",
        ),
        (
            "/v1/completions",
            json!({"prompt": "w3", "temperature": -0.5}),
            422,
            "outside 0..2",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": 2.5}),
            422,
            "outside 0..2",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}),
            422,
            "non-empty",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "tool", "content": "x"}]}),
            422,
            "role",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "tools": []}),
            422,
            "tools",
        ),
    ] {
        let r = post(path, body.clone());
        assert_eq!(r.status, status, "{path} {body}: {}", r.json);
        assert!(
            error_message(&r).contains(says),
            "{path} {body}: {}",
            r.json
        );
    }
}

/// The official `openai` Python client (tests/reference/openai_client.py) lists the model and
/// gets, through completions and chat completions, whole and streamed, the greedy text that
/// `/generate` gives; an unsupported option reaches it as a 422 with the server's message. The
/// server wants an API key, which the client sends as OpenAI's; a wrong one is the client's
/// `AuthenticationError` (401).
#[test]
fn the_openai_python_client_talks_to_the_server() {
    let test = "the_openai_python_client_talks_to_the_server";
    if !common::ort_available(test) {
        return;
    }
    let Some(py) = adept_testkit::python_with(test, &["openai"]) else {
        return;
    };
    let key = "sk-adept-test-0123456789";
    let opts = ServeOptions {
        api_keys: adept_serve::ApiKeys::new(&[key]).unwrap(),
        ..Default::default()
    };
    let server = serve(&[("lm", &tiny_decoder())], opts);
    let mut native = agent()
        .post(format!("http://{}/v1/generate", server.addr()))
        .header("authorization", format!("Bearer {key}"))
        .content_type("application/json")
        .send(&br#"{"inputs": "w5 w9 w12", "parameters": {"max_new_tokens": 6}}"#[..])
        .unwrap();
    assert_eq!(native.status().as_u16(), 200);
    let native: Value = serde_json::from_str(&native.body_mut().read_to_string().unwrap()).unwrap();
    let (text, ids) = texts_and_ids(&native).remove(0);
    let out = std::process::Command::new(py)
        .env("OPENAI_API_KEY", key)
        .arg(adept_testkit::repo_file("tests/reference/openai_client.py"))
        .arg(format!("http://{}/v1", server.addr()))
        .args(["lm", "w5 w9 w12", "6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["models"], json!(["lm"]));
    for key in ["completion", "completion_streamed", "chat", "chat_streamed"] {
        assert_eq!(v[key].as_str(), Some(text.as_str()), "{key}: {v}");
    }
    assert_eq!(v["usage"], json!([4, ids.len(), 4 + ids.len()]));
    assert_eq!(v["n2"][0], 422, "{v}");
    assert!(
        v["n2"][1].as_str().unwrap().contains("not supported"),
        "{v}"
    );
    assert_eq!(v["wrong_key"][0], 401, "{v}");
    assert_eq!(v["wrong_key"][1], "AuthenticationError", "{v}");
    assert!(
        v["wrong_key"][2]
            .as_str()
            .unwrap()
            .contains("API key is not valid"),
        "{v}"
    );
}
