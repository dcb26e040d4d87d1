//! Dynamic batching. Requests from all connections wait in one queue per model, bounded in
//! inputs. A worker thread (one per session) takes every request queued when it is free until
//! it holds at least `max_batch` inputs, waiting at most `max_wait` for more after the first (0:
//! take only what is already there, so a lone request waits for nothing). It runs them together through the
//! [`Runner`] (a [`Bundle`]: length-sorted batches of `batch_size`, outputs in input order) and
//! answers each request with its own rows. A runner that fails or panics fails the requests of
//! that round only; the worker goes on.

use crate::metrics::ModelStats;
use adept_bundle::Encoded;
use adept_runtime::{Bundle, PaddingStats};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Turns encoded inputs into logits, in order.
pub trait Runner: Send + Sync + 'static {
    /// The logits of `items` in order, and the padding the runs carried.
    fn run(&self, items: &[Encoded]) -> anyhow::Result<(Vec<Vec<f32>>, PaddingStats)>;
}

impl Runner for Bundle {
    fn run(&self, items: &[Encoded]) -> anyhow::Result<(Vec<Vec<f32>>, PaddingStats)> {
        self.logits_with_padding(items)
    }
}

/// How requests are queued and grouped.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOptions {
    /// A worker stops taking requests once it holds at least this many inputs (the runner
    /// splits them into its own batches).
    pub max_batch: usize,
    /// How long a worker waits for more requests after the first (0: no wait; at most
    /// [`MAX_WAIT_LIMIT`]).
    pub max_wait: Duration,
    /// Inputs that may wait in the queue; a request that would exceed it is refused (busy).
    pub max_queue: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::ZERO,
            max_queue: 1024,
        }
    }
}

/// The longest `max_wait` accepted.
pub const MAX_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Why a request was not queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds `queued` inputs and `wanted` more would exceed `capacity`.
    Busy {
        queued: usize,
        wanted: usize,
        capacity: usize,
    },
    /// The request alone needs `wanted` places (inputs, or prompts × beams), more than the
    /// whole queue holds: it could never be queued, so retrying is no use.
    TooLarge { wanted: usize, capacity: usize },
    /// The workers have stopped (the server is shutting down).
    Stopped,
    /// Every worker of the model has died (a bug: the server log says why).
    NoWorker,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy {
                queued,
                wanted,
                capacity,
            } => write!(
                f,
                "the server is busy: {queued} inputs are queued and {wanted} more would exceed \
                 the queue of {capacity}; retry later or send fewer inputs per request"
            ),
            Self::TooLarge { wanted, capacity } => write!(
                f,
                "this request needs {wanted} places in the queue (its inputs, or prompts × \
                 beams) and the whole queue holds {capacity} (--max-queue): send fewer inputs, \
                 prompts or beams per request"
            ),
            Self::Stopped => f.write_str("the server is shutting down"),
            Self::NoWorker => f.write_str(
                "no worker of this model is running (see the server log); restart the server",
            ),
        }
    }
}

/// What a queued request gets back: its logits in order, or why the run failed.
pub type Reply = Result<Vec<Vec<f32>>, String>;

/// A queued predict request.
pub struct Job {
    items: Vec<Encoded>,
    reply: oneshot::Sender<Reply>,
}

/// What the queue counts a job as: its inputs (texts, pairs or prompts), and whether anybody
/// still waits for it.
pub trait Queued: Send + 'static {
    fn inputs(&self) -> usize;
    /// Its client went away (the handler, dropped, counted it as cancelled): not to be run.
    fn cancelled(&self) -> bool {
        false
    }
}

impl Queued for Job {
    fn inputs(&self) -> usize {
        self.items.len()
    }
    fn cancelled(&self) -> bool {
        self.reply.is_closed()
    }
}

/// One model's queue of jobs `J`, bounded in inputs, and the worker threads that take rounds
/// of jobs off it. [`Batcher`] is the queue of predict requests; the generation queue
/// (`crate::generation`) is another.
pub struct Queue<J> {
    tx: Mutex<Option<Sender<J>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<ModelStats>,
    opts: BatchOptions,
}

/// The queue of predict requests, run by [`Runner`]s.
pub type Batcher = Queue<Job>;

impl<J: Queued> Queue<J> {
    /// Starts one worker thread per entry of `workers`, named after `model`; each calls its
    /// function with every round of jobs ([`BatchOptions`]: `max_batch` inputs, `max_wait`).
    /// A function that panics loses its round (their requests see the worker stop before
    /// answering) and goes on with the next.
    pub fn start_with<W>(
        model: &str,
        workers: Vec<W>,
        opts: BatchOptions,
        stats: Arc<ModelStats>,
    ) -> std::io::Result<Self>
    where
        W: FnMut(Vec<J>) + Send + 'static,
    {
        assert!(opts.max_batch >= 1, "max_batch must be at least 1");
        let (tx, rx) = mpsc::channel::<J>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        for (i, mut round) in workers.into_iter().enumerate() {
            let (rx, stats, opts) = (rx.clone(), stats.clone(), opts.clone());
            // Counted before the thread starts, uncounted when it ends for any reason.
            stats.workers_alive.fetch_add(1, Ordering::AcqRel);
            let alive = Alive(stats.clone());
            // A thread that cannot start drops its closure (and `Alive`); the ones started end
            // when `tx` is dropped on the way out.
            handles.push(
                std::thread::Builder::new()
                    .name(format!("adept-serve-{model}-{i}"))
                    .spawn(move || {
                        let _alive = alive;
                        while let Some(mut jobs) = next_round(&rx, &opts) {
                            let total: usize = jobs.iter().map(Queued::inputs).sum();
                            stats.queued_inputs.fetch_sub(total, Ordering::AcqRel);
                            // Requests whose clients left while queued are neither run nor
                            // counted in the round.
                            jobs.retain(|j| !j.cancelled());
                            if jobs.is_empty() {
                                continue;
                            }
                            stats.rounds.fetch_add(1, Ordering::Relaxed);
                            stats
                                .round_requests
                                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
                            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| round(jobs))) {
                                tracing::error!(
                                    "a round of model {:?} panicked: {}",
                                    std::thread::current().name().unwrap_or("?"),
                                    panic_message(panic.as_ref())
                                );
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            stats,
            opts,
        })
    }

    /// Queues `job`, or refuses it: busy when its inputs would overflow `max_queue` now, too
    /// large when they exceed it alone.
    pub fn push(&self, job: J) -> Result<(), SubmitError> {
        if self.stats.workers_alive.load(Ordering::Acquire) == 0 {
            return Err(if self.tx.lock().map(|t| t.is_none()).unwrap_or(true) {
                SubmitError::Stopped
            } else {
                SubmitError::NoWorker
            });
        }
        let wanted = job.inputs();
        let capacity = self.opts.max_queue;
        if wanted > capacity {
            return Err(SubmitError::TooLarge { wanted, capacity });
        }
        // Reserve room in the queue, or refuse: the queue never holds more than `capacity`.
        self.stats
            .queued_inputs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + wanted <= capacity).then_some(queued + wanted)
            })
            .map_err(|queued| SubmitError::Busy {
                queued,
                wanted,
                capacity,
            })?;
        let sent = match self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            self.stats.queued_inputs.fetch_sub(wanted, Ordering::AcqRel);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }
}

impl Batcher {
    /// Starts one worker thread per runner (each runner is one session), named after `model`.
    pub fn start(
        model: &str,
        runners: Vec<Arc<dyn Runner>>,
        opts: BatchOptions,
        stats: Arc<ModelStats>,
    ) -> std::io::Result<Self> {
        let workers = runners
            .into_iter()
            .map(|runner| {
                let stats = stats.clone();
                move |jobs: Vec<Job>| run_round(runner.as_ref(), jobs, &stats)
            })
            .collect();
        Self::start_with(model, workers, opts, stats)
    }

    /// Queues `items` (one request); the receiver gets its logits in order.
    pub fn submit(&self, items: Vec<Encoded>) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.push(Job { items, reply })?;
        Ok(rx)
    }
}

impl<J> Queue<J> {
    pub fn options(&self) -> &BatchOptions {
        &self.opts
    }

    /// Stops taking requests, lets the workers answer what is queued, and waits for them.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl<J> Drop for Queue<J> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes the next round of jobs: blocks for the first, then adds queued ones until `max_batch`
/// inputs or `max_wait` after the first. Cancelled jobs come along (their inputs leave the
/// queue's count with the round) but do not count towards `max_batch`. `None` when the queue
/// is closed and empty.
fn next_round<J: Queued>(rx: &Mutex<Receiver<J>>, opts: &BatchOptions) -> Option<Vec<J>> {
    let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
    let first = rx.recv().ok()?;
    let now = Instant::now();
    let deadline = now.checked_add(opts.max_wait).unwrap_or(now);
    let live = |j: &J| if j.cancelled() { 0 } else { j.inputs() };
    let mut inputs = live(&first);
    let mut jobs = vec![first];
    while inputs < opts.max_batch {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = if left.is_zero() {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(left).ok()
        };
        match next {
            Some(job) => {
                inputs += live(&job);
                jobs.push(job);
            }
            None => break,
        }
    }
    Some(jobs)
}

/// Keeps a worker counted in `workers_alive` while it lives (also when it unwinds).
struct Alive(Arc<ModelStats>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.workers_alive.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs one round of predict requests as one call of `runner` and answers each with its rows;
/// requests nobody waits for any more are left out.
fn run_round(runner: &dyn Runner, mut jobs: Vec<Job>, stats: &ModelStats) {
    // Requests whose clients went away while queued are not run (their handlers counted them
    // as cancelled when they were dropped).
    jobs.retain(|j| !j.cancelled());
    if jobs.is_empty() {
        return;
    }
    let sizes: Vec<usize> = jobs.iter().map(|j| j.items.len()).collect();
    let total: usize = sizes.iter().sum();
    let items: Vec<Encoded> = jobs
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.items))
        .collect();
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| runner.run(&items)));
    stats
        .run_micros
        .fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    let outcome = match result {
        Ok(Ok((rows, padding))) if rows.len() == total => {
            stats
                .runs
                .fetch_add(padding.batches as u64, Ordering::Relaxed);
            stats
                .real_tokens
                .fetch_add(padding.real_tokens as u64, Ordering::Relaxed);
            stats
                .padded_tokens
                .fetch_add(padding.padded_tokens as u64, Ordering::Relaxed);
            Ok(rows)
        }
        Ok(Ok((rows, _))) => Err(format!(
            "the model returned {} rows for {total} inputs",
            rows.len()
        )),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(format!(
            "the model panicked: {}",
            panic_message(panic.as_ref())
        )),
    };
    match outcome {
        Ok(rows) => {
            let mut rows = rows.into_iter();
            for (job, n) in jobs.into_iter().zip(sizes) {
                // A client that went away dropped its receiver: nothing to answer.
                let _ = job.reply.send(Ok(rows.by_ref().take(n).collect()));
            }
        }
        Err(why) => {
            tracing::error!("a round of {} requests failed: {why}", jobs.len());
            for job in jobs {
                let _ = job.reply.send(Err(why.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;

    fn item(id: u32, len: usize) -> Encoded {
        Encoded {
            ids: vec![id; len],
            type_ids: vec![0; len],
            truncated: false,
        }
    }

    /// Answers each input with `[first id, length]`; records the sizes of the calls; can be
    /// held at its first call until released, and panics on an input whose first id is 666.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<usize>>,
        hold: Mutex<bool>,
        entered: Condvar,
        released: Condvar,
    }

    impl Fake {
        fn held() -> Arc<Self> {
            let f = Arc::new(Self::default());
            *f.hold.lock().unwrap() = true;
            f
        }
        fn wait_until_entered(&self) {
            let calls = self.calls.lock().unwrap();
            drop(self.entered.wait_while(calls, |c| c.is_empty()).unwrap());
        }
        fn release(&self) {
            *self.hold.lock().unwrap() = false;
            self.released.notify_all();
        }
    }

    impl Runner for Fake {
        fn run(&self, items: &[Encoded]) -> anyhow::Result<(Vec<Vec<f32>>, PaddingStats)> {
            self.calls.lock().unwrap().push(items.len());
            self.entered.notify_all();
            let hold = self.hold.lock().unwrap();
            drop(self.released.wait_while(hold, |h| *h).unwrap());
            if items.iter().any(|e| e.ids[0] == 666) {
                panic!("input 666");
            }
            if items.iter().any(|e| e.ids[0] == 404) {
                anyhow::bail!("no such thing");
            }
            let rows = items
                .iter()
                .map(|e| vec![e.ids[0] as f32, e.ids.len() as f32])
                .collect();
            let longest = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
            let real: usize = items.iter().map(|e| e.ids.len()).sum();
            let padding = PaddingStats {
                batches: 1,
                real_tokens: real,
                padded_tokens: longest * items.len() - real,
            };
            Ok((rows, padding))
        }
    }

    fn start(fake: &Arc<Fake>, opts: BatchOptions) -> (Batcher, Arc<ModelStats>) {
        let stats = Arc::new(ModelStats::default());
        let runner: Arc<dyn Runner> = fake.clone();
        let b = Batcher::start("test", vec![runner], opts, stats.clone()).unwrap();
        (b, stats)
    }

    fn answer(rx: oneshot::Receiver<Reply>) -> Reply {
        rx.blocking_recv().expect("the worker dropped the reply")
    }

    #[test]
    fn requests_queued_while_the_worker_runs_share_the_next_round_and_get_their_own_rows() {
        let fake = Fake::held();
        let (b, stats) = start(&fake, BatchOptions::default());
        let first = b.submit(vec![item(1, 3)]).unwrap();
        fake.wait_until_entered();
        // While the first round runs, five requests of different sizes queue up.
        let later: Vec<_> = (0..5u32)
            .map(|r| {
                let items = (0..=r)
                    .map(|k| item(10 * (r + 1) + k, 2 + k as usize))
                    .collect();
                b.submit(items).unwrap()
            })
            .collect();
        assert_eq!(stats.queued_inputs.load(Ordering::Relaxed), 15);
        fake.release();
        assert_eq!(answer(first).unwrap(), vec![vec![1.0, 3.0]]);
        for (r, rx) in later.into_iter().enumerate() {
            let want: Vec<Vec<f32>> = (0..=r as u32)
                .map(|k| vec![(10 * (r as u32 + 1) + k) as f32, (2 + k) as f32])
                .collect();
            assert_eq!(answer(rx).unwrap(), want, "request {r}");
        }
        // Two rounds: the lone first request, then all five together (15 inputs).
        assert_eq!(*fake.calls.lock().unwrap(), vec![1, 15]);
        let snap = stats.snapshot();
        assert_eq!((snap.rounds, snap.requests_per_round), (2, 3.0));
        assert_eq!(snap.queued_inputs, 0);
        assert_eq!(
            snap.real_tokens,
            3 + (2 + 2 + 3 + 2 + 3 + 4 + 2 + 3 + 4 + 5 + 2 + 3 + 4 + 5 + 6)
        );
    }

    #[test]
    fn a_round_stops_taking_requests_at_max_batch_inputs() {
        let fake = Fake::held();
        let opts = BatchOptions {
            max_batch: 4,
            ..Default::default()
        };
        let (b, _) = start(&fake, opts);
        let first = b.submit(vec![item(1, 1)]).unwrap();
        fake.wait_until_entered();
        let rest: Vec<_> = (0..5)
            .map(|i| b.submit(vec![item(i, 1); 2]).unwrap())
            .collect();
        fake.release();
        answer(first).unwrap();
        for rx in rest {
            assert_eq!(answer(rx).unwrap().len(), 2);
        }
        // 2 + 2 reaches 4: the five requests take three rounds.
        assert_eq!(*fake.calls.lock().unwrap(), vec![1, 4, 4, 2]);
    }

    #[test]
    fn requests_whose_clients_left_while_queued_are_not_run() {
        let fake = Fake::held();
        let (b, stats) = start(&fake, BatchOptions::default());
        let first = b.submit(vec![item(1, 1)]).unwrap();
        fake.wait_until_entered();
        let left = b.submit(vec![item(2, 1); 3]).unwrap();
        let stays = b.submit(vec![item(3, 1)]).unwrap();
        let left_too = b.submit(vec![item(4, 1); 2]).unwrap();
        drop(left);
        drop(left_too);
        fake.release();
        answer(first).unwrap();
        assert_eq!(answer(stays).unwrap(), vec![vec![3.0, 1.0]]);
        // The second round ran the one input still wanted, not six, and counts one request.
        assert_eq!(*fake.calls.lock().unwrap(), vec![1, 1]);
        let snap = stats.snapshot();
        assert_eq!((snap.rounds, snap.requests_per_round), (2, 1.0));
        assert_eq!(snap.queued_inputs, 0);
        // A round whose every request left runs nothing and is not counted; and requests that
        // left do not fill a round: with max_batch 2, two live requests queued behind two dead
        // ones still run together.
        let fake = Fake::held();
        let opts = BatchOptions {
            max_batch: 2,
            ..Default::default()
        };
        let (b, stats) = start(&fake, opts);
        let first = b.submit(vec![item(1, 1)]).unwrap();
        fake.wait_until_entered();
        drop(b.submit(vec![item(2, 1)]).unwrap());
        drop(b.submit(vec![item(3, 1)]).unwrap());
        let live = [
            b.submit(vec![item(4, 1)]).unwrap(),
            b.submit(vec![item(5, 1)]).unwrap(),
        ];
        fake.release();
        answer(first).unwrap();
        for rx in live {
            answer(rx).unwrap();
        }
        b.shutdown();
        assert_eq!(*fake.calls.lock().unwrap(), vec![1, 2]);
        assert_eq!(stats.snapshot().rounds, 2);
    }

    #[test]
    fn a_request_larger_than_the_whole_queue_is_too_large_not_busy() {
        let fake = Arc::new(Fake::default());
        let opts = BatchOptions {
            max_queue: 3,
            ..Default::default()
        };
        let (b, stats) = start(&fake, opts);
        let e = b.submit(vec![item(1, 1); 4]).unwrap_err();
        assert_eq!(
            e,
            SubmitError::TooLarge {
                wanted: 4,
                capacity: 3
            }
        );
        assert!(e.to_string().contains("--max-queue"), "{e}");
        assert_eq!(stats.queued_inputs.load(Ordering::Relaxed), 0);
        assert_eq!(
            answer(b.submit(vec![item(1, 1); 3]).unwrap())
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn a_full_queue_refuses_with_busy_and_accepts_again_once_drained() {
        let fake = Fake::held();
        let opts = BatchOptions {
            max_queue: 5,
            ..Default::default()
        };
        let (b, stats) = start(&fake, opts);
        let first = b.submit(vec![item(1, 1)]).unwrap();
        fake.wait_until_entered();
        let queued = b.submit(vec![item(2, 1); 4]).unwrap();
        let refused = b.submit(vec![item(3, 1); 2]).unwrap_err();
        assert_eq!(
            refused,
            SubmitError::Busy {
                queued: 4,
                wanted: 2,
                capacity: 5
            }
        );
        assert!(refused.to_string().contains("retry later"), "{refused}");
        // One more input still fits.
        let fits = b.submit(vec![item(4, 1)]).unwrap();
        assert_eq!(stats.queued_inputs.load(Ordering::Relaxed), 5);
        fake.release();
        answer(first).unwrap();
        answer(queued).unwrap();
        answer(fits).unwrap();
        assert_eq!(stats.queued_inputs.load(Ordering::Relaxed), 0);
        assert!(b.submit(vec![item(5, 1); 5]).is_ok());
    }

    #[test]
    fn a_failing_or_panicking_round_fails_only_its_requests_and_the_worker_goes_on() {
        let fake = Fake::held();
        let (b, _) = start(&fake, BatchOptions::default());
        let first = b.submit(vec![item(1, 1)]).unwrap();
        fake.wait_until_entered();
        let bad = b.submit(vec![item(666, 1)]).unwrap();
        let with_bad = b.submit(vec![item(7, 1)]).unwrap();
        fake.release();
        answer(first).unwrap();
        let why = answer(bad).unwrap_err();
        assert!(
            why.contains("panicked") && why.contains("input 666"),
            "{why}"
        );
        assert_eq!(answer(with_bad).unwrap_err(), why);
        let err = answer(b.submit(vec![item(404, 1)]).unwrap()).unwrap_err();
        assert!(err.contains("no such thing"), "{err}");
        // The worker survived both.
        assert_eq!(
            answer(b.submit(vec![item(8, 2)]).unwrap()).unwrap(),
            vec![vec![8.0, 2.0]]
        );
    }

    #[test]
    fn shutdown_answers_what_is_queued_then_refuses() {
        let fake = Fake::held();
        let (b, _) = start(&fake, BatchOptions::default());
        let first = b.submit(vec![item(1, 1)]).unwrap();
        fake.wait_until_entered();
        let queued = b.submit(vec![item(2, 1)]).unwrap();
        let releaser = {
            let fake = fake.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                fake.release();
            })
        };
        b.shutdown();
        releaser.join().unwrap();
        answer(first).unwrap();
        assert_eq!(answer(queued).unwrap(), vec![vec![2.0, 1.0]]);
        assert_eq!(
            b.submit(vec![item(3, 1)]).unwrap_err(),
            SubmitError::Stopped
        );
    }

    /// Submits three requests 100 ms apart; returns the sizes of the runner's calls.
    fn spaced_rounds(max_wait: Duration) -> Vec<usize> {
        let fake = Arc::new(Fake::default());
        let opts = BatchOptions {
            max_wait,
            max_batch: 3,
            ..Default::default()
        };
        let (b, _) = start(&fake, opts);
        let mut rxs = Vec::new();
        for i in 0..3 {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            rxs.push(b.submit(vec![item(i, 1)]).unwrap());
        }
        for rx in rxs {
            answer(rx).unwrap();
        }
        let calls = fake.calls.lock().unwrap().clone();
        calls
    }

    #[test]
    fn max_wait_gathers_requests_that_arrive_after_the_first_and_zero_waits_for_none() {
        // Waiting up to 10 s, the worker holds the first until max_batch inputs are there.
        assert_eq!(spaced_rounds(Duration::from_secs(10)), vec![3]);
        // Not waiting, each request 100 ms after the last finds the worker idle.
        assert_eq!(spaced_rounds(Duration::ZERO), vec![1, 1, 1]);
    }

    #[test]
    fn a_worker_that_died_is_reported_not_taken_for_a_shutdown() {
        let fake = Arc::new(Fake::default());
        let (b, stats) = start(&fake, BatchOptions::default());
        assert_eq!(stats.workers_alive.load(Ordering::Relaxed), 1);
        // A runner that panics outside the guarded run cannot be staged from here; a worker
        // whose thread ended while the queue is open is what remains.
        stats.workers_alive.store(0, Ordering::Relaxed);
        assert_eq!(
            b.submit(vec![item(1, 1)]).unwrap_err(),
            SubmitError::NoWorker
        );
        stats.workers_alive.store(1, Ordering::Relaxed);
        b.shutdown();
        assert_eq!(stats.workers_alive.load(Ordering::Relaxed), 0);
        assert_eq!(
            b.submit(vec![item(1, 1)]).unwrap_err(),
            SubmitError::Stopped
        );
    }
}
