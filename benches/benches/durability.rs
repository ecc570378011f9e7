//! `send` in each durability mode, and group commit under `Sync`.
//!
//! - `durability/Send_64/<mode>`: one sender, 64-byte messages, in
//!   `Buffered`, `Flush` and `Sync` mode: the time a `send` takes to return.
//! - `durability/SyncSenders_64/<n>`: `n` threads (1, 4, 16) each sending
//!   with `Sync`; the time is wall time divided by all messages sent, so a
//!   lower figure with more senders is group commit at work (one fsync makes
//!   every waiting sender's message durable). Target: 16 senders at least 5x
//!   the 1-sender rate.
//!
//! Fresh channel under `/tmp` (or `TMPDIR`) per sample.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filechannel::{Durability, FileChannel};
use std::hint::black_box;
use std::time::Instant;

fn channel(mode: Durability) -> (tempfile::TempDir, FileChannel) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = FileChannel::builder().durability(mode).open(dir.path()).expect("open");
    (dir, ch)
}

fn durability_benches(c: &mut Criterion) {
    let msg = [0x5Au8; 64];
    let mut g = c.benchmark_group("durability");
    filechannel_benches::flat(&mut g);
    g.throughput(Throughput::Elements(1));
    for (name, mode) in [
        ("Buffered", Durability::Buffered),
        ("Flush", Durability::Flush),
        ("Sync", Durability::Sync),
    ] {
        g.bench_function(format!("Send_64/{name}"), |b| {
            b.iter_custom(|iters| {
                let (_dir, ch) = channel(mode);
                let tx = ch.tx();
                let start = Instant::now();
                for _ in 0..iters {
                    tx.send(black_box(&msg)).expect("send");
                }
                start.elapsed()
            })
        });
    }
    for senders in [1u64, 4, 16] {
        g.bench_function(format!("SyncSenders_64/{senders}"), |b| {
            b.iter_custom(|iters| {
                let (_dir, ch) = channel(Durability::Sync);
                let per = iters.div_ceil(senders);
                let txs: Vec<_> = (0..senders).map(|_| ch.tx()).collect();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for tx in &txs {
                        s.spawn(move || {
                            for _ in 0..per {
                                tx.send(black_box(&msg)).expect("send");
                            }
                        });
                    }
                });
                // Per message actually sent.
                start.elapsed().mul_f64(iters as f64 / (per * senders) as f64)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = filechannel_benches::config();
    targets = durability_benches
}
criterion_main!(benches);
