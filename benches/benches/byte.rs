//! The Go library's benchmark shapes, one to one, on the byte API in
//! `Buffered` mode: `Write_N`, `Read_N` (`recv_ref`), `ReadWrite_N` and
//! `ParallelRead_N` (two receivers), for N = 16, 64, 512 and 4096 bytes, plus
//! `WriteRecycled_N`, the steady state of a spool whose consumer keeps up.
//!
//! Each sample gets a fresh channel in a temporary directory (under `/tmp`
//! unless `TMPDIR` says otherwise); setup and teardown are not timed.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filechannel::{FileChannel, Receiver};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [16, 64, 512, 4096];

fn channel() -> (tempfile::TempDir, FileChannel) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = FileChannel::open(dir.path()).expect("open");
    (dir, ch)
}

fn fill(ch: &FileChannel, msg: &[u8], n: u64) {
    let tx = ch.tx();
    for _ in 0..n {
        tx.send(msg).expect("send");
    }
    tx.flush().expect("flush");
}

fn read_n(rx: &mut Receiver, n: u64) {
    for _ in 0..n {
        black_box(&*rx.recv_ref().expect("recv"));
    }
}

fn byte_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("byte");
    for n in SIZES {
        let msg = vec![0x5Au8; n];
        g.throughput(Throughput::Bytes(n as u64));

        g.bench_function(format!("Write_{n}"), |b| {
            b.iter_custom(|iters| {
                let (_dir, ch) = channel();
                let tx = ch.tx();
                let start = Instant::now();
                for _ in 0..iters {
                    tx.send(black_box(&msg)).expect("send");
                }
                tx.flush().expect("flush");
                start.elapsed()
            })
        });

        // Steady state of a spool whose consumer keeps up: one channel for
        // the whole benchmark, drained (untimed) after every sample, so its
        // segments are recycled and their pages are already in the page
        // cache. `Write_N` above pays for fresh pages, as the Go benchmark
        // does.
        g.bench_function(format!("WriteRecycled_{n}"), |b| {
            let (_dir, ch) = channel();
            let mut rx = ch.rx();
            b.iter_custom(|iters| {
                let tx = ch.tx();
                let start = Instant::now();
                for _ in 0..iters {
                    tx.send(black_box(&msg)).expect("send");
                }
                tx.flush().expect("flush");
                let elapsed = start.elapsed();
                read_n(&mut rx, iters);
                elapsed
            })
        });

        g.bench_function(format!("Read_{n}"), |b| {
            b.iter_custom(|iters| {
                let (_dir, ch) = channel();
                let mut rx = ch.rx();
                fill(&ch, &msg, iters);
                let start = Instant::now();
                read_n(&mut rx, iters);
                start.elapsed()
            })
        });

        g.bench_function(format!("ReadWrite_{n}"), |b| {
            b.iter_custom(|iters| {
                let (_dir, ch) = channel();
                let mut rx = ch.rx();
                let start = Instant::now();
                fill(&ch, &msg, iters);
                read_n(&mut rx, iters);
                start.elapsed()
            })
        });

        g.bench_function(format!("ParallelRead_{n}"), |b| {
            b.iter_custom(|iters| {
                let (_dir, ch) = channel();
                let readers = 2u64;
                let mut rxs: Vec<Receiver> = (0..readers).map(|_| ch.rx()).collect();
                fill(&ch, &msg, iters);
                // As in the Go benchmark, `iters` reads in all, shared out
                // among the readers, each with its own receiver.
                let per = iters.div_ceil(readers);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for rx in &mut rxs {
                        s.spawn(move || read_n(rx, per));
                    }
                });
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = byte_benches
}
criterion_main!(benches);
