//! Compressed segments: read throughput per method from compressed segments,
//! the ratio each method achieves on JSON-like event lines, and `Write_64`
//! with compression on and off (compression runs on its own thread and must
//! not slow `send`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filechannel::{Compression, FileChannel};
use filechannel_benches::{sample_len, scaled};
use std::hint::black_box;
use std::time::{Duration, Instant};

const METHODS: [Compression; 4] = [
    Compression::None,
    Compression::Snappy,
    Compression::Gzip,
    Compression::Zstd,
];

/// A realistic ~200-byte event: a JSON object with repeated keys and
/// varying values.
fn event(i: u64) -> Vec<u8> {
    format!(
        r#"{{"ts":"2026-11-26T15:{:02}:{:02}.{:03}Z","level":"info","service":"checkout","user_id":{},"order_id":"o-{:08}","amount_cents":{},"currency":"EUR","items":{},"msg":"order placed"}}"#,
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1000,
        i % 10_007,
        i,
        (i * 7919) % 100_000,
        1 + i % 5
    )
    .into_bytes()
}

fn open(dir: &std::path::Path, method: Compression) -> FileChannel {
    FileChannel::builder()
        .segment_size(4 << 20)
        .compression(method)
        .open(dir)
        .expect("open")
}

fn wait_compressed(ch: &FileChannel, method: Compression) {
    if method == Compression::None {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ch.stats().compressed_segments + 2 < ch.stats().segments {
        assert!(Instant::now() < deadline, "compression did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn name(m: Compression) -> &'static str {
    match m {
        Compression::None => "none",
        Compression::Snappy => "snappy",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        _ => "other",
    }
}

fn compressed_read(c: &mut Criterion) {
    let events: Vec<Vec<u8>> = (0..10_000).map(event).collect();
    let avg = events.iter().map(Vec::len).sum::<usize>() as u64 / events.len() as u64;

    // The ratio, once per method, on 64 MiB of events.
    for method in METHODS.into_iter().skip(1) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ch = open(dir.path(), method);
        let tx = ch.tx();
        for i in 0..(64 << 20) / avg {
            tx.send(&events[(i % 10_000) as usize]).expect("send");
        }
        wait_compressed(&ch, method);
        let ratio = ch.stats().compression_ratio().unwrap_or(1.0);
        println!(
            "compression ratio {}: {ratio:.2} on JSON-like events of ~{avg} bytes",
            name(method)
        );
    }

    let mut g = c.benchmark_group("compressed");
    filechannel_benches::flat(&mut g);
    g.throughput(Throughput::Bytes(avg));
    for method in METHODS {
        g.bench_function(format!("Read_event/{}", name(method)), |b| {
            b.iter_custom(|iters| {
                // At least 64 MiB (16 segments of 4 MiB, all but the last
                // two compressed): criterion's own samples of ~30,000
                // events fill two segments, which are never compressed.
                let ran = sample_len(iters, avg as usize);
                let dir = tempfile::tempdir().expect("temp dir");
                let ch = open(dir.path(), method);
                let tx = ch.tx();
                for i in 0..ran {
                    tx.send(&events[(i % 10_000) as usize]).expect("send");
                }
                wait_compressed(&ch, method);
                let stats = ch.stats();
                assert!(
                    method == Compression::None || stats.compressed_segments * 2 > stats.segments,
                    "{method:?}: most of what is read must be compressed: {stats:?}"
                );
                // Created after the compression: a receiver reading the
                // oldest segment keeps it plain (it is deleted next). With
                // no receiver nothing is deleted, and this one starts at
                // the first message.
                let mut rx = ch.rx_ack();
                let start = Instant::now();
                for _ in 0..ran {
                    black_box(&*rx.recv_ref().expect("recv"));
                }
                scaled(start.elapsed(), ran, iters)
            })
        });
    }
    g.finish();

    // One channel per method for the whole run, with the default 64 MiB
    // segments as in `byte/Write_64`: a sample writes about a segment, so
    // segments are sealed and compressed while the measured sends go on
    // (the steady state of a long-running service). The run is kept short
    // (~25 M messages, ~2 GB) so that it stays under the kernel's
    // background writeback threshold (10 % of RAM here): beyond it,
    // writeback throttling of the plain files would dominate, and it would
    // favour compression, whose plain files are deleted unwritten.
    let mut g = c.benchmark_group("compression_write");
    filechannel_benches::flat(&mut g);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_millis(1500));
    let msg = [0x5Au8; 64];
    g.throughput(Throughput::Bytes(64));
    for method in [Compression::None, Compression::Snappy, Compression::Zstd] {
        let dir = tempfile::tempdir().expect("temp dir");
        let ch = FileChannel::builder()
            .compression(method)
            .open(dir.path())
            .expect("open");
        let tx = ch.tx();
        g.bench_function(format!("Write_64/{}", name(method)), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    tx.send(black_box(&msg)).expect("send");
                }
                start.elapsed()
            })
        });
        let st = ch.stats();
        // Shows that compression ran during the measurement.
        eprintln!(
            "Write_64/{}: {} segments written, {} compressed meanwhile",
            name(method),
            st.segments,
            st.compressed_segments
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = filechannel_benches::config();
    targets = compressed_read
}
criterion_main!(benches);
