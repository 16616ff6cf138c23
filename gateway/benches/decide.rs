//! How fast a sharing decision is: the indexed engine (`decide`) against a linear scan of every rule
//! (`decide_linear`), measured in the same run on a synthetic network of 10,000 organizations and
//! 1,000 rules. The target is a median under 2 µs per decision on one core.
//!
//! `cargo bench -p haven-gateway --bench decide` runs criterion's measurements, then prints the median
//! time per decision of both, sampled alternately so they see the same machine conditions.

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use haven_gateway::policy::synthetic::{self, SyntheticNetwork};
use haven_gateway::policy::{Decision, decide, decide_linear};

const ORGS: usize = 10_000;
const RULES: usize = 1_000;
const REQUESTS: usize = 4_096;

type Engine = fn(
    &haven_gateway::policy::DecisionRequest<'_>,
    &haven_gateway::policy::Bundle,
    Option<haven_trust::receipt::ConsentView<'_>>,
    time::OffsetDateTime,
) -> Decision;

fn criterion_runs(c: &mut Criterion, net: &SyntheticNetwork) {
    let mut group = c.benchmark_group(format!("decide/{ORGS}_orgs_{RULES}_rules"));
    for (name, engine) in [("indexed", decide as Engine), ("linear_scan", decide_linear as Engine)] {
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                let r = &net.requests[i % REQUESTS];
                i += 1;
                black_box(engine(black_box(&r.request()), &net.bundle, r.consent(), net.now))
            })
        });
    }
    group.finish();
}

/// Nanoseconds per decision over one pass through every request.
fn one_pass(net: &SyntheticNetwork, engine: Engine) -> f64 {
    let start = Instant::now();
    for r in &net.requests {
        black_box(engine(black_box(&r.request()), &net.bundle, r.consent(), net.now));
    }
    start.elapsed().as_nanos() as f64 / net.requests.len() as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn medians(net: &SyntheticNetwork) {
    let (mut indexed, mut linear) = (Vec::new(), Vec::new());
    one_pass(net, decide);
    one_pass(net, decide_linear);
    for _ in 0..51 {
        indexed.push(one_pass(net, decide));
        linear.push(one_pass(net, decide_linear));
    }
    let (i, l) = (median(indexed), median(linear));
    let allowed =
        net.requests.iter().filter(|r| decide(&r.request(), &net.bundle, r.consent(), net.now).allowed()).count();
    println!();
    println!(
        "median time per decision, {ORGS} organizations, {RULES} rules, {REQUESTS} requests ({allowed} allowed), 51 passes each:"
    );
    println!("  decide (indexed)      {i:>9.0} ns");
    println!("  decide_linear (scan)  {l:>9.0} ns   ({:.0}x the indexed time)", l / i);
    println!("  target                     2000 ns   {}", if i < 2000.0 { "met" } else { "NOT met" });
}

fn main() {
    let net = synthetic::network(ORGS, RULES, REQUESTS, 42).unwrap_or_else(|problems| {
        for p in &problems {
            eprintln!("{p}");
        }
        std::process::exit(1);
    });
    let mut c = Criterion::default().configure_from_args();
    criterion_runs(&mut c, &net);
    c.final_summary();
    // `cargo test --benches` runs this binary without `--bench`, to check it works; only a real
    // benchmark run spends time on the medians.
    if std::env::args().any(|a| a == "--bench") {
        medians(&net);
    }
}
