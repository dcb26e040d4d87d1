//! Serving latency of a bundle: fixed batches of real inputs, timed `run`s.

use crate::bundle::{Bundle, PaddedBatch, RuntimeOptions};
use adept_bundle::Encoded;
use anyhow::{ensure, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// Latency and throughput of one bundle at one batch size.
#[derive(Clone, Debug, Serialize)]
pub struct BenchStats {
    pub bundle: String,
    pub method: String,
    pub fold: String,
    pub prompt_length: usize,
    pub batch_size: usize,
    pub iters: usize,
    /// Mean input length (tokens, prompt excluded) and mean padded length of the batches.
    pub mean_tokens: f64,
    pub mean_padded_len: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Examples per second at the mean latency.
    pub examples_per_s: f64,
    /// Seconds to open the bundle (checksums, tokenizer, session with graph optimisation).
    pub open_s: f64,
    /// Each timed batch's latency in run order (batch `i` holds the same inputs for every
    /// bundle of one [`bench_interleaved`] call), for [`paired_ratio`].
    pub times_ms: Vec<f64>,
}

/// How much faster one bundle ran than another on the same batches: the per-batch ratios
/// `t_other[i] / t_this[i]` of one [`bench_interleaved`] run (each batch timed for both within
/// moments of each other, so a burst of load hits a pair, not a whole column), their median and
/// quartiles. Steadier than the ratio of mean throughputs, which one slow stretch can move.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PairedRatio {
    pub median: f64,
    pub q25: f64,
    pub q75: f64,
}

/// [`PairedRatio`] of `this` over `other` (throughput: above 1 when `this` is faster); `None`
/// when they were not timed on the same batches (different counts, or no times).
pub fn paired_ratio(this: &BenchStats, other: &BenchStats) -> Option<PairedRatio> {
    if this.batch_size != other.batch_size {
        return None;
    }
    paired_time_ratio(&this.times_ms, &other.times_ms)
}

/// [`PairedRatio`] of the times `other[i] / this[i]` (pass `i` of both timed the same work):
/// above 1 when `this` is faster; `None` for different or zero counts.
pub fn paired_time_ratio(this: &[f64], other: &[f64]) -> Option<PairedRatio> {
    let n = this.len();
    if n == 0 || n != other.len() {
        return None;
    }
    let mut r: Vec<f64> = other.iter().zip(this).map(|(o, t)| o / t).collect();
    r.sort_by(f64::total_cmp);
    Some(PairedRatio {
        median: median_sorted(&r),
        q25: percentile(&r, 0.25),
        q75: percentile(&r, 0.75),
    })
}

/// The median of a sorted, non-empty slice (the mean of the middle two for an even count).
fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// The batches a bench runs: consecutive `batch_size` slices of `encoded`, wrapping around,
/// one per iteration (so every variant sees the same batches in the same order).
pub fn bench_batches(
    encoded: &[Encoded],
    batch_size: usize,
    iters: usize,
    pad_id: u32,
) -> Vec<PaddedBatch> {
    (0..iters)
        .map(|it| {
            let refs: Vec<&Encoded> = (0..batch_size)
                .map(|j| &encoded[(it * batch_size + j) % encoded.len()])
                .collect();
            PaddedBatch::collate(&refs, pad_id)
        })
        .collect()
}

fn stats(bundle: &Bundle, batches: &[PaddedBatch], times: &[f64]) -> BenchStats {
    let iters = times.len();
    let batch_size = batches[0].batch;
    let mean = times.iter().sum::<f64>() / iters as f64;
    let mut sorted = times.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let tokens: usize = batches
        .iter()
        .map(|b| b.attention_mask.iter().filter(|&&m| m == 1).count())
        .sum();
    let m = &bundle.manifest;
    BenchStats {
        bundle: bundle.dir.display().to_string(),
        method: m.method.to_string(),
        fold: m.fold.to_string(),
        prompt_length: m.prompt_length,
        batch_size,
        iters,
        mean_tokens: tokens as f64 / (iters * batch_size) as f64,
        mean_padded_len: batches.iter().map(|b| b.seq as f64).sum::<f64>() / iters as f64,
        mean_ms: mean,
        p50_ms: percentile(&sorted, 0.5),
        p90_ms: percentile(&sorted, 0.9),
        min_ms: sorted[0],
        max_ms: sorted[sorted.len() - 1],
        examples_per_s: batch_size as f64 / (mean / 1e3),
        open_s: 0.0,
        times_ms: times.to_vec(),
    }
}

fn encoded_batches(
    bundle: &Bundle,
    batch_size: usize,
    inputs: &[(String, Option<String>)],
    iters: usize,
) -> Result<Vec<PaddedBatch>> {
    ensure!(!inputs.is_empty(), "no inputs to benchmark with");
    ensure!(
        batch_size > 0 && iters > 0,
        "batch size and iterations must be positive"
    );
    let encoded = inputs
        .iter()
        .map(|(a, b)| bundle.encode(a, b.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    Ok(bench_batches(
        &encoded,
        batch_size,
        iters,
        bundle.manifest.pad_token_id,
    ))
}

/// Times `iters` runs of `bundle` (after 2 warm-up runs).
pub fn bench_bundle(
    bundle: &Bundle,
    batch_size: usize,
    inputs: &[(String, Option<String>)],
    iters: usize,
) -> Result<BenchStats> {
    Ok(bench_interleaved(&[bundle], batch_size, inputs, iters)?.remove(0))
}

/// Times several bundles on the same batches, **interleaved**: iteration `i` runs every
/// bundle once on batch `i`, starting from a different bundle each time. On a shared or
/// throttling machine this spreads load changes evenly over the variants being compared,
/// which timing them one after the other does not. Two warm-up runs per bundle come first.
#[allow(clippy::needless_range_loop)] // `it` indexes every bundle's batches
pub fn bench_interleaved(
    bundles: &[&Bundle],
    batch_size: usize,
    inputs: &[(String, Option<String>)],
    iters: usize,
) -> Result<Vec<BenchStats>> {
    ensure!(!bundles.is_empty(), "no bundles to benchmark");
    let batches = bundles
        .iter()
        .map(|b| encoded_batches(b, batch_size, inputs, iters))
        .collect::<Result<Vec<_>>>()?;
    for (b, bs) in bundles.iter().zip(&batches) {
        for batch in bs.iter().take(2) {
            b.run_batch(batch)?;
        }
    }
    let n = bundles.len();
    let mut times = vec![Vec::with_capacity(iters); n];
    for it in 0..iters {
        for k in 0..n {
            let j = (it + k) % n;
            let t = Instant::now();
            bundles[j].run_batch(&batches[j][it])?;
            times[j].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(bundles
        .iter()
        .zip(&batches)
        .zip(&times)
        .map(|((b, bs), ts)| stats(b, bs, ts))
        .collect())
}

/// Opens `bundle_dir` (CPU, default threads) and times `iters` batches of `batch_size` drawn
/// from `inputs`.
pub fn bench_session(
    bundle_dir: &Path,
    batch_size: usize,
    inputs: &[(String, Option<String>)],
    iters: usize,
) -> Result<BenchStats> {
    bench_session_with(
        bundle_dir,
        &RuntimeOptions::default(),
        batch_size,
        inputs,
        iters,
    )
}

/// [`bench_session`] with explicit runtime options (threads, device, library).
pub fn bench_session_with(
    bundle_dir: &Path,
    opts: &RuntimeOptions,
    batch_size: usize,
    inputs: &[(String, Option<String>)],
    iters: usize,
) -> Result<BenchStats> {
    let t = Instant::now();
    let mut opts = opts.clone();
    opts.batch_size = batch_size;
    let bundle = Bundle::open_with(bundle_dir, &opts)?;
    let open_s = t.elapsed().as_secs_f64();
    let mut stats = bench_bundle(&bundle, batch_size, inputs, iters)?;
    stats.open_s = open_s;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(batch_size: usize, times_ms: &[f64]) -> BenchStats {
        BenchStats {
            bundle: String::new(),
            method: String::new(),
            fold: String::new(),
            prompt_length: 0,
            batch_size,
            iters: times_ms.len(),
            mean_tokens: 0.0,
            mean_padded_len: 0.0,
            mean_ms: 0.0,
            p50_ms: 0.0,
            p90_ms: 0.0,
            min_ms: 0.0,
            max_ms: 0.0,
            examples_per_s: 0.0,
            open_s: 0.0,
            times_ms: times_ms.to_vec(),
        }
    }

    #[test]
    fn paired_ratio_is_the_median_of_per_batch_ratios() {
        // per-batch ratios other/this: 2, 1, 3, 1.5 → sorted 1, 1.5, 2, 3: median 1.75; the
        // quartiles are the nearest ranks (index round(3 · q)): 1.5 and 2.
        let this = timed(1, &[1.0, 4.0, 2.0, 2.0]);
        let other = timed(1, &[2.0, 4.0, 6.0, 3.0]);
        let r = paired_ratio(&this, &other).unwrap();
        assert_eq!((r.median, r.q25, r.q75), (1.75, 1.5, 2.0));
        // One slow batch of `this` (10×) turns the ratio of mean throughputs from 15/9 = 1.67
        // to 15/27 = 0.56; the paired ratios become 2, 1, 3, 0.15: median 1.5.
        let this = timed(1, &[1.0, 4.0, 2.0, 20.0]);
        let r = paired_ratio(&this, &other).unwrap();
        assert_eq!(r.median, 1.5);
        // An odd count takes the middle ratio.
        let r = paired_ratio(&timed(1, &[1.0, 1.0, 1.0]), &timed(1, &[3.0, 1.0, 2.0])).unwrap();
        assert_eq!(r.median, 2.0);
    }

    #[test]
    fn paired_ratio_needs_the_same_batches() {
        assert!(paired_ratio(&timed(1, &[1.0, 2.0]), &timed(1, &[1.0])).is_none());
        assert!(paired_ratio(&timed(1, &[1.0]), &timed(32, &[1.0])).is_none());
        assert!(paired_ratio(&timed(1, &[]), &timed(1, &[])).is_none());
    }
}
