//! Benchmarks live in `benches/`; this library holds what they share: one
//! criterion configuration for every bench, and the long samples of the
//! byte and peers benches.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use std::time::Duration;

/// Payload every long sample moves at least: one segment's worth (4 M
/// messages at 16 B). Left to itself, criterion sizes samples from a
/// warm-up dominated by a fresh channel's first page faults and ends up
/// with samples of ~0.3 M messages, which measure start-up more than
/// steady-state sending or reading; the Go benchmark's `b.N` runs are long.
pub const MIN_SAMPLE_BYTES: u64 = 64 << 20;

/// How many messages of `size` bytes a long sample runs when criterion asks
/// for `iters`: at least [`MIN_SAMPLE_BYTES`] of payload.
pub fn sample_len(iters: u64, size: usize) -> u64 {
    iters.max(MIN_SAMPLE_BYTES / size.max(1) as u64)
}

/// `elapsed` for `ran` messages, scaled to `iters` of them.
pub fn scaled(elapsed: Duration, ran: u64, iters: u64) -> Duration {
    elapsed.mul_f64(iters as f64 / ran as f64)
}

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
