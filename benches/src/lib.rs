//! Benchmarks live in `benches/`; this library holds what they share: one
//! criterion configuration for every bench.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use std::time::Duration;

/// The configuration of every bench: 20 samples over 3 s, after 1 s of
/// warm-up.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

/// Flat sampling: every sample sends the same, large number of messages, so
/// a fresh channel's start-up (its first page faults, the flusher's first
/// prefault) is amortised as in the Go benchmark's b.N runs rather than
/// dominating the short samples of linear sampling.
pub fn flat(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sampling_mode(SamplingMode::Flat);
}
