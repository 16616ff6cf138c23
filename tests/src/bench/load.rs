//! Load drivers. Each runs an operation repeatedly for a warm-up and then a measured window, records
//! the latency of every operation that completes inside the window in an HDR histogram, and samples
//! the server process's CPU time at the window's edges.
//!
//! An operation returns the instant it completed: for a plain call that is when the reply came back,
//! for an end-to-end delivery it is when the recipient had stored the message.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::report::{CpuSample, Probe};

/// Warm-up, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What a driver saw inside the window.
pub struct Load {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Histogram<u64>,
    pub window: Duration,
    /// CPU seconds the server process used over the window.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds the database's backends used over the window (PostgreSQL only).
    pub database_cpu_s: Option<f64>,
    /// Operations a fixed-rate driver could not start because too many were in flight.
    pub dropped: u64,
}

/// A latency histogram from 1 µs to 10 minutes at 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds that hdrhistogram accepts")
}

/// Counts shared by the workers of one run.
struct Tally {
    latency: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    dropped: u64,
}

impl Tally {
    fn new() -> Self {
        Tally { latency: histogram(), ops: 0, errors: 0, first_error: None, dropped: 0 }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.ops += other.ops;
        self.errors += other.errors;
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, started: Instant, result: Result<Instant, String>, from: Instant, until: Instant) {
        match result {
            Ok(done) if done >= from && done <= until => {
                let us = u64::try_from(done.saturating_duration_since(started).as_micros()).unwrap_or(u64::MAX);
                let _ = self.latency.record(us.max(1));
                self.ops += 1;
            }
            Ok(_) => {}
            Err(e) => {
                let now = Instant::now();
                if now >= from && now <= until {
                    self.errors += 1;
                    if self.first_error.is_none() {
                        self.first_error = Some(e);
                    }
                }
            }
        }
    }
}

/// Samples the server's (and database's) CPU time at the window's start and end.
fn cpu_sampler(probe: &Probe, from: Instant, until: Instant) -> tokio::task::JoinHandle<CpuSample> {
    let probe = probe.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let start = probe.sample().await;
        tokio::time::sleep_until(until).await;
        let end = probe.sample().await;
        let delta = |a: Option<f64>, z: Option<f64>| Some(z? - a?);
        CpuSample { server: delta(start.server, end.server), database: delta(start.database, end.database) }
    })
}

/// Runs `concurrency` workers, each calling `op` again as soon as its previous call completes, for the
/// warm-up and the window. Each completion inside the window counts once.
pub async fn closed_loop<F, Fut>(concurrency: usize, window: Window, probe: &Probe, op: F) -> Load
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Instant, String>> + Send + 'static,
{
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let cpu = cpu_sampler(probe, from, until);
    let op = Arc::new(op);
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let op = op.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut n: u64 = 0;
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let r = op(w as u64 + n * concurrency as u64).await;
                n += 1;
                let failed = r.is_err();
                tally.record(started, r, from, until);
                if failed {
                    // A failing call returns at once; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tally
        }));
    }
    let mut total = Tally::new();
    for w in workers {
        if let Ok(t) = w.await {
            total.merge(t);
        }
    }
    finish(total, window, cpu.await.unwrap_or_default())
}

/// Starts `op` at a fixed rate for the warm-up and the window, whatever the replies do (open loop), so
/// a slow reply cannot hide the delay of the calls behind it. Latency runs from each call's scheduled
/// start. At most `max_in_flight` calls are outstanding; a call that cannot start counts as dropped.
pub async fn fixed_rate<F, Fut>(rate: f64, max_in_flight: usize, window: Window, probe: &Probe, op: F) -> Load
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Instant, String>> + Send + 'static,
{
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.measure;
    let cpu = cpu_sampler(probe, from, until);
    let op = Arc::new(op);
    let tally = Arc::new(Mutex::new(Tally::new()));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval_at(start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let scheduled = tick.tick().await;
        if scheduled >= until {
            break;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if scheduled >= from
                && let Ok(mut t) = tally.lock()
            {
                t.dropped += 1;
            }
            continue;
        };
        let (op, tally) = (op.clone(), tally.clone());
        let i = n;
        n += 1;
        tasks.spawn(async move {
            let r = op(i).await;
            drop(permit);
            if let Ok(mut t) = tally.lock() {
                t.record(scheduled, r, from, until);
            }
        });
        // Reap finished tasks as we go, so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    // Every call has finished, so the tally is complete.
    let total = std::mem::replace(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()), Tally::new());
    finish(total, window, cpu.await.unwrap_or_default())
}

fn finish(t: Tally, window: Window, cpu: CpuSample) -> Load {
    Load {
        ops: t.ops,
        errors: t.errors,
        first_error: t.first_error,
        latency: t.latency,
        window: window.measure,
        server_cpu_s: cpu.server,
        database_cpu_s: cpu.database,
        dropped: t.dropped,
    }
}
