//! What a served model has done: counters, padding and recent latencies, in bounded memory
//! (the latencies are the last [`LATENCY_WINDOW`] requests, not all of them).

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How many recent request latencies the percentiles are computed over.
pub const LATENCY_WINDOW: usize = 2048;

/// Counters of one served model, shared by its HTTP handlers and its batch workers.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Predict requests answered with predictions.
    pub requests: AtomicU64,
    /// Inputs (texts or pairs) in those requests.
    pub inputs: AtomicU64,
    /// Requests refused because the queue was full (503).
    pub rejected_busy: AtomicU64,
    /// Requests refused as malformed (400, 413, 422).
    pub rejected_invalid: AtomicU64,
    /// Requests that reached the model and failed there (500).
    pub failed: AtomicU64,
    /// Requests whose client went away before the answer (not run if still queued; a
    /// generation also stopped mid-run).
    pub cancelled: AtomicU64,
    /// Times a worker took requests off the queue (each such round may hold several requests).
    pub rounds: AtomicU64,
    /// Requests those rounds held, summed (rounds < requests means requests were batched together).
    pub round_requests: AtomicU64,
    /// ONNX Runtime runs (padded batches).
    pub runs: AtomicU64,
    /// Token positions of the inputs themselves, and those added as padding (generation: the
    /// prompts of each answered run, padded to its longest prompt).
    pub real_tokens: AtomicU64,
    pub padded_tokens: AtomicU64,
    /// Tokens generated (generation models; EOS ids included).
    pub new_tokens: AtomicU64,
    /// Time spent in ONNX Runtime, microseconds.
    pub run_micros: AtomicU64,
    /// Inputs waiting in the queue now.
    pub queued_inputs: AtomicUsize,
    /// Worker threads running now.
    pub workers_alive: AtomicUsize,
    latencies: Mutex<VecDeque<f32>>,
}

/// A point-in-time view of [`ModelStats`], as `/metrics` and the metrics log write it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub inputs: u64,
    pub rejected_busy: u64,
    pub rejected_invalid: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub rounds: u64,
    /// Requests per worker round (> 1: concurrent requests shared batches).
    pub requests_per_round: f64,
    pub runs: u64,
    pub real_tokens: u64,
    pub padded_tokens: u64,
    /// Padding as a fraction of all positions computed.
    pub padding_fraction: f64,
    /// Generation models: tokens generated, and per second of run time.
    pub new_tokens: u64,
    pub new_tokens_per_run_second: f64,
    pub run_seconds: f64,
    pub queued_inputs: usize,
    pub workers_alive: usize,
    /// Request latency percentiles in milliseconds over the last [`LATENCY_WINDOW`] answered
    /// requests (from the body read to the answer); `None` before the first one.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p90: Option<f64>,
    pub latency_ms_p99: Option<f64>,
}

impl ModelStats {
    /// Records an answered request of `inputs` inputs that took `latency`.
    pub fn record_answer(&self, inputs: usize, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inputs.fetch_add(inputs as u64, Ordering::Relaxed);
        let mut window = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(latency.as_secs_f32() * 1e3);
    }

    /// How many latencies are kept now (never more than [`LATENCY_WINDOW`]).
    pub fn latency_samples(&self) -> usize {
        self.latencies.lock().map(|w| w.len()).unwrap_or(0)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut lat: Vec<f32> = self
            .latencies
            .lock()
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default();
        lat.sort_by(f32::total_cmp);
        let (real, padded) = (get(&self.real_tokens), get(&self.padded_tokens));
        let rounds = get(&self.rounds);
        StatsSnapshot {
            requests: get(&self.requests),
            inputs: get(&self.inputs),
            rejected_busy: get(&self.rejected_busy),
            rejected_invalid: get(&self.rejected_invalid),
            failed: get(&self.failed),
            cancelled: get(&self.cancelled),
            rounds,
            requests_per_round: ratio(get(&self.round_requests), rounds),
            runs: get(&self.runs),
            real_tokens: real,
            padded_tokens: padded,
            padding_fraction: ratio(padded, real + padded),
            new_tokens: get(&self.new_tokens),
            new_tokens_per_run_second: ratio(
                get(&self.new_tokens) * 1_000_000,
                get(&self.run_micros),
            ),
            run_seconds: get(&self.run_micros) as f64 / 1e6,
            queued_inputs: self.queued_inputs.load(Ordering::Relaxed),
            workers_alive: self.workers_alive.load(Ordering::Relaxed),
            latency_ms_p50: percentile(&lat, 0.50),
            latency_ms_p90: percentile(&lat, 0.90),
            latency_ms_p99: percentile(&lat, 0.99),
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The nearest-rank percentile `q` (0–1) of sorted `values`: the smallest value with at least
/// `q` of the values at or below it.
pub fn percentile<T: Copy + Into<f64>>(sorted: &[T], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_match_hand_computed_values() {
        let v: Vec<f32> = (1..=10).map(|x| x as f32).collect();
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&v, 0.99), Some(10.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
        assert_eq!(percentile::<f32>(&[], 0.5), None);
    }

    #[test]
    fn the_latency_window_stays_bounded_and_keeps_the_newest() {
        let s = ModelStats::default();
        for i in 0..(LATENCY_WINDOW + 500) {
            s.record_answer(2, Duration::from_millis(i as u64));
        }
        assert_eq!(s.latency_samples(), LATENCY_WINDOW);
        let snap = s.snapshot();
        assert_eq!(snap.requests, (LATENCY_WINDOW + 500) as u64);
        assert_eq!(snap.inputs, 2 * (LATENCY_WINDOW + 500) as u64);
        // The window holds 500 .. 500 + LATENCY_WINDOW - 1 ms: its median is 500 + 1023.
        assert_eq!(snap.latency_ms_p50, Some(1523.0));
    }

    #[test]
    fn padding_fraction_and_requests_per_round_are_ratios_of_the_counters() {
        let s = ModelStats::default();
        s.real_tokens.store(30, Ordering::Relaxed);
        s.padded_tokens.store(10, Ordering::Relaxed);
        s.rounds.store(4, Ordering::Relaxed);
        s.round_requests.store(10, Ordering::Relaxed);
        s.new_tokens.store(30, Ordering::Relaxed);
        s.run_micros.store(1_500_000, Ordering::Relaxed);
        let snap = s.snapshot();
        assert_eq!(snap.new_tokens_per_run_second, 20.0);
        assert_eq!(snap.padding_fraction, 0.25);
        assert_eq!(snap.requests_per_round, 2.5);
        assert_eq!(ModelStats::default().snapshot().padding_fraction, 0.0);
    }
}
