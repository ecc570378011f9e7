//! The Go library's benchmark shapes, one to one, on the byte API in
//! `Buffered` mode: `Write_N`, `Read_N` (`recv_ref`), `ReadWrite_N` and
//! `ParallelRead_N` (two receivers), for N = 16, 64, 512 and 4096 bytes, plus
//! `WriteRecycled_N`, the steady state of a spool whose consumer keeps up,
//! and 64 KiB messages for throughput.
//!
//! Physical-limit rows give the ceiling on this machine: `Limit_BufWriter_512`
//! writes the same 512-byte messages through a plain `std::fs::File` and
//! `BufWriter` (no framing, no CRC, no index); `Limit_MmapFresh_N` copies
//! N-byte records, one thread, into a fresh `fallocate`d and mapped file (no
//! CRC, no lock, nothing prepared ahead: what the kernel charges for new
//! page-cache pages taken by page faults); `Limit_ZeroFill_512` writes zeros
//! into such a file, 1 MiB per `write(2)` (what the flusher does ahead of the
//! writer, per 512 bytes); `Limit_MmapCrc_512` scans a warm,
//! memory-mapped file of 512-byte records computing each one's CRC; and
//! `Limit_ParallelCrc_512` does that on two threads over the same first half
//! of the records, as `ParallelRead_512` reads them: the floor of any reader
//! that checks a CRC per message.
//!
//! Each sample gets a fresh channel in a temporary directory (under `/tmp`
//! unless `TMPDIR` says otherwise); setup and teardown are not timed.
//!
//! Every channel-shape sample moves at least 64 MiB of payload (one
//! segment's worth; 4 M messages at 16 B) and reports its time scaled to
//! the iterations criterion asked for. Left to itself, criterion sizes
//! samples from a warm-up dominated by a fresh channel's first page faults
//! and ends up with samples of ~0.3 M messages, which measure start-up more
//! than sending; the Go benchmark's `b.N` runs are long too.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use filechannel::{FileChannel, Receiver};
use filechannel_benches::{sample_len, scaled};
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 5] = [16, 64, 512, 4096, 65536];

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
    filechannel_benches::flat(&mut g);
    for n in SIZES {
        let msg = vec![0x5Au8; n];
        g.throughput(Throughput::Bytes(n as u64));

        g.bench_function(format!("Write_{n}"), |b| {
            b.iter_custom(|iters| {
                let ran = sample_len(iters, n);
                let (_dir, ch) = channel();
                let tx = ch.tx();
                let start = Instant::now();
                for _ in 0..ran {
                    tx.send(black_box(&msg)).expect("send");
                }
                tx.flush().expect("flush");
                scaled(start.elapsed(), ran, iters)
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
                let ran = sample_len(iters, n);
                let tx = ch.tx();
                let start = Instant::now();
                for _ in 0..ran {
                    tx.send(black_box(&msg)).expect("send");
                }
                tx.flush().expect("flush");
                let elapsed = start.elapsed();
                read_n(&mut rx, ran);
                scaled(elapsed, ran, iters)
            })
        });

        g.bench_function(format!("Read_{n}"), |b| {
            b.iter_custom(|iters| {
                let ran = sample_len(iters, n);
                let (_dir, ch) = channel();
                let mut rx = ch.rx();
                fill(&ch, &msg, ran);
                let start = Instant::now();
                read_n(&mut rx, ran);
                scaled(start.elapsed(), ran, iters)
            })
        });

        g.bench_function(format!("ReadWrite_{n}"), |b| {
            b.iter_custom(|iters| {
                let ran = sample_len(iters, n);
                let (_dir, ch) = channel();
                let mut rx = ch.rx();
                let start = Instant::now();
                fill(&ch, &msg, ran);
                read_n(&mut rx, ran);
                scaled(start.elapsed(), ran, iters)
            })
        });

        g.bench_function(format!("ParallelRead_{n}"), |b| {
            b.iter_custom(|iters| {
                let ran = sample_len(iters, n);
                let (_dir, ch) = channel();
                let readers = 2u64;
                let mut rxs: Vec<Receiver> = (0..readers).map(|_| ch.rx()).collect();
                fill(&ch, &msg, ran);
                // As in the Go benchmark, `ran` reads in all, shared out
                // among the readers, each with its own receiver.
                let per = ran.div_ceil(readers);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for rx in &mut rxs {
                        s.spawn(move || read_n(rx, per));
                    }
                });
                scaled(start.elapsed(), ran, iters)
            })
        });
    }
    limit_benches(&mut g);
    g.finish();
}

fn limit_benches(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use std::io::Write;
    let msg = [0x5Au8; 512];
    g.throughput(Throughput::Bytes(512));
    g.bench_function("Limit_BufWriter_512", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = std::fs::File::create(dir.path().join("plain")).expect("create");
            let mut w = std::io::BufWriter::new(file);
            let start = Instant::now();
            for _ in 0..iters {
                w.write_all(black_box(&msg)).expect("write");
            }
            w.flush().expect("flush");
            start.elapsed()
        })
    });
    for n in [16usize, 64, 512] {
        let rec = vec![0x5Au8; n];
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("Limit_MmapFresh_{n}"), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("temp dir");
                let file = fresh_file(dir.path(), iters as usize * n);
                // SAFETY: the file is private to this benchmark and not
                // truncated while mapped.
                let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map");
                let start = Instant::now();
                for slot in map.chunks_exact_mut(n) {
                    slot.copy_from_slice(black_box(&rec));
                }
                let elapsed = start.elapsed();
                black_box(&map);
                elapsed
            })
        });
    }
    g.throughput(Throughput::Bytes(512));
    g.bench_function("Limit_ZeroFill_512", |b| {
        use std::os::unix::fs::FileExt;
        let zeros = vec![0u8; 1 << 20];
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = fresh_file(dir.path(), iters as usize * 512);
            let len = iters * 512;
            let start = Instant::now();
            let mut at = 0;
            while at < len {
                let n = (len - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at).expect("write");
                at += n as u64;
            }
            start.elapsed()
        })
    });
    g.bench_function("Limit_MmapCrc_512", |b| {
        b.iter_custom(|iters| {
            let (_dir, map) = written_records(&msg, iters);
            let start = Instant::now();
            for rec in map.chunks_exact(512) {
                black_box(crc32fast::hash(rec));
            }
            start.elapsed()
        })
    });
    g.bench_function("Limit_ParallelCrc_512", |b| {
        b.iter_custom(|iters| {
            // `ParallelRead_512`'s shape without the channel: two threads
            // each check the CRCs of the first half of the records.
            let ran = sample_len(iters, 512);
            let (_dir, map) = written_records(&msg, ran);
            let half = &map[..ran.div_ceil(2) as usize * 512];
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for rec in half.chunks_exact(512) {
                            black_box(crc32fast::hash(rec));
                        }
                    });
                }
            });
            scaled(start.elapsed(), ran, iters)
        })
    });
}

/// `n` copies of `msg` written through the page cache into a new file, and
/// the file mapped with its pages populated.
fn written_records(msg: &[u8], n: u64) -> (tempfile::TempDir, memmap2::Mmap) {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for _ in 0..n {
        w.write_all(msg).expect("write");
    }
    w.flush().expect("flush");
    drop(w);
    let file = std::fs::File::open(&path).expect("open");
    // SAFETY: the file is private to this benchmark and not modified while
    // mapped.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.expect("map");
    (dir, map)
}

/// A new file of `len` bytes (at least 1), `fallocate`d as segments are.
fn fresh_file(dir: &std::path::Path, len: usize) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join("plain"))
        .expect("create");
    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len.max(1) as u64).expect("fallocate");
    file
}

criterion_group! {
    name = benches;
    config = filechannel_benches::config();
    targets = byte_benches
}
criterion_main!(benches);
