//! Criterion bench of the policy engine (figure 5): one decision with 100 rules, as the workflow's
//! history grows (10 → 100,000 events) and as live workflows grow (10 → 10,000 calls in flight).
//! Criterion reports means and medians; `conductor-bench --only 5` adds the p99 per decision.

use conductor_bench::decisions::Fixture;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn by_history(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_by_history_events");
    for events in [10, 1_000, 100_000] {
        let fixture = Fixture::new(events, 10);
        group.bench_with_input(BenchmarkId::from_parameter(events), &fixture, |b, f| {
            b.iter(|| black_box(f.decide()))
        });
    }
    group.finish();
}

fn by_live_workflows(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide_by_live_workflows");
    for live in [10, 1_000, 10_000] {
        let fixture = Fixture::new(10, live);
        group.bench_with_input(BenchmarkId::from_parameter(live), &fixture, |b, f| {
            b.iter(|| black_box(f.decide()))
        });
    }
    group.finish();
}

criterion_group!(benches, by_history, by_live_workflows);
criterion_main!(benches);
