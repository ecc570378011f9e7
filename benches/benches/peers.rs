//! filechannel against the Rust crates a user would pick instead, in one
//! criterion run, same shapes, same directory type (`/tmp` or `TMPDIR`):
//! `Write_N` (send N-byte messages), `Read_N` (consume what was written) and
//! `ReadWrite_N` (write then consume), N = 16, 64, 512.
//!
//! - `peer/filechannel/...`: this crate, `Buffered` (the OS gets every
//!   message within `flush_interval`; no fsync per message).
//! - `peer/filechannel-sync/Write_N`: `Sync` mode, an fsync per send.
//! - `peer/queue-file/...`: `queue-file` with `set_sync_writes(false)`;
//!   `peer/queue-file-sync/Write_N` with its default fsync per write.
//! - `peer/yaque/...`: `yaque`'s async sender and receiver driven by
//!   `pollster::block_on`; each receive is committed.
//! - `peer/commitlog/...`: `commitlog`, appending, and reading back in
//!   batches of up to 64 KiB (`flush` at the end of writing).
//!
//! filechannel and commitlog, the two within 2x of each other, get long
//! samples: each moves at least 64 MiB of payload (4 M messages at 16 B) and
//! reports its time scaled to criterion's iteration count, as the byte
//! bench does (criterion left to itself picks samples short enough to
//! measure start-up). queue-file and yaque, 10-100x slower, keep criterion's
//! own sample sizes: 64 MiB samples of them would take minutes each.
//!
//! Behind the bench crate's `peers` feature:
//! `cargo bench -p filechannel-benches --features peers --bench peers`.

use commitlog::message::MessageSet;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use filechannel::{Durability, FileChannel};
use filechannel_benches::{sample_len, scaled};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [16, 64, 512];

/// One peer's operations, each on a fresh directory.
trait Peer {
    const NAME: &'static str;
    /// Whether every sample moves at least
    /// [`MIN_SAMPLE_BYTES`](filechannel_benches::MIN_SAMPLE_BYTES) of
    /// payload (see the module docs).
    const LONG_SAMPLES: bool = false;
    fn open(dir: &Path) -> Self;
    fn write(&mut self, msg: &[u8], n: u64);
    fn read(&mut self, n: u64);
}

struct Fc(FileChannel, filechannel::Receiver);
impl Peer for Fc {
    const NAME: &'static str = "filechannel";
    const LONG_SAMPLES: bool = true;
    fn open(dir: &Path) -> Self {
        let ch = FileChannel::open(dir).expect("open");
        let rx = ch.rx();
        Fc(ch, rx)
    }
    fn write(&mut self, msg: &[u8], n: u64) {
        let tx = self.0.tx();
        for _ in 0..n {
            tx.send(black_box(msg)).expect("send");
        }
        tx.flush().expect("flush");
    }
    fn read(&mut self, n: u64) {
        for _ in 0..n {
            black_box(self.1.recv_ref().expect("recv").len());
        }
    }
}

struct FcSync(FileChannel);
impl Peer for FcSync {
    const NAME: &'static str = "filechannel-sync";
    fn open(dir: &Path) -> Self {
        FcSync(
            FileChannel::builder()
                .durability(Durability::Sync)
                .open(dir)
                .expect("open"),
        )
    }
    fn write(&mut self, msg: &[u8], n: u64) {
        let tx = self.0.tx();
        for _ in 0..n {
            tx.send(black_box(msg)).expect("send");
        }
    }
    fn read(&mut self, _: u64) {}
}

struct Qf(queue_file::QueueFile, Vec<u8>);
impl Peer for Qf {
    const NAME: &'static str = "queue-file";
    fn open(dir: &Path) -> Self {
        let mut q = queue_file::QueueFile::open(dir.join("q")).expect("open");
        q.set_sync_writes(false);
        Qf(q, Vec::new())
    }
    fn write(&mut self, msg: &[u8], n: u64) {
        for _ in 0..n {
            self.0.add(black_box(msg)).expect("add");
        }
    }
    fn read(&mut self, n: u64) {
        for _ in 0..n {
            assert!(self.0.peek_into(&mut self.1).expect("peek"));
            black_box(self.1.len());
            self.0.remove().expect("remove");
        }
    }
}

struct QfSync(queue_file::QueueFile);
impl Peer for QfSync {
    const NAME: &'static str = "queue-file-sync";
    fn open(dir: &Path) -> Self {
        let mut q = queue_file::QueueFile::open(dir.join("q")).expect("open");
        q.set_sync_writes(true);
        QfSync(q)
    }
    fn write(&mut self, msg: &[u8], n: u64) {
        for _ in 0..n {
            self.0.add(black_box(msg)).expect("add");
        }
    }
    fn read(&mut self, _: u64) {}
}

struct Yq(yaque::Sender, yaque::Receiver);
impl Peer for Yq {
    const NAME: &'static str = "yaque";
    fn open(dir: &Path) -> Self {
        let (tx, rx) = yaque::channel(dir.join("q")).expect("open");
        Yq(tx, rx)
    }
    fn write(&mut self, msg: &[u8], n: u64) {
        for _ in 0..n {
            pollster::block_on(self.0.send(black_box(msg))).expect("send");
        }
    }
    fn read(&mut self, n: u64) {
        for _ in 0..n {
            let g = pollster::block_on(self.1.recv()).expect("recv");
            black_box(g.len());
            g.commit().expect("commit");
        }
    }
}

struct Cl(commitlog::CommitLog, u64);
impl Peer for Cl {
    const NAME: &'static str = "commitlog";
    const LONG_SAMPLES: bool = true;
    fn open(dir: &Path) -> Self {
        Cl(
            commitlog::CommitLog::new(commitlog::LogOptions::new(dir.join("log"))).expect("open"),
            0,
        )
    }
    fn write(&mut self, msg: &[u8], n: u64) {
        for _ in 0..n {
            self.0.append_msg(black_box(msg)).expect("append");
        }
        self.0.flush().expect("flush");
    }
    fn read(&mut self, n: u64) {
        let end = self.1 + n;
        while self.1 < end {
            let buf = self
                .0
                .read(self.1, commitlog::ReadLimit::max_bytes(64 << 10))
                .expect("read");
            for m in buf.iter() {
                black_box(m.payload().len());
                self.1 = m.offset() + 1;
            }
        }
    }
}

/// Runs `op` on a fresh peer for a sample of `iters` messages of `size`
/// bytes (more for a peer with long samples) and returns the time it took,
/// scaled to `iters`. `setup` runs untimed first.
fn sample<P: Peer>(iters: u64, size: usize, setup: impl Fn(&mut P, u64), op: impl Fn(&mut P, u64)) -> Duration {
    let ran = if P::LONG_SAMPLES {
        sample_len(iters, size)
    } else {
        iters
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut p = P::open(dir.path());
    setup(&mut p, ran);
    let start = Instant::now();
    op(&mut p, ran);
    scaled(start.elapsed(), ran, iters)
}

fn shapes<P: Peer>(g: &mut BenchmarkGroup<'_, WallTime>, read: bool) {
    for n in SIZES {
        let msg = vec![0x5Au8; n];
        let msg = &msg[..];
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("{}/Write_{n}", P::NAME), |b| {
            b.iter_custom(|iters| sample::<P>(iters, n, |_, _| {}, |p, k| p.write(msg, k)))
        });
        if !read {
            continue;
        }
        g.bench_function(format!("{}/Read_{n}", P::NAME), |b| {
            b.iter_custom(|iters| sample::<P>(iters, n, |p, k| p.write(msg, k), |p, k| p.read(k)))
        });
        g.bench_function(format!("{}/ReadWrite_{n}", P::NAME), |b| {
            b.iter_custom(|iters| {
                sample::<P>(
                    iters,
                    n,
                    |_, _| {},
                    |p, k| {
                        p.write(msg, k);
                        p.read(k);
                    },
                )
            })
        });
    }
}

fn peer_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("peer");
    filechannel_benches::flat(&mut g);
    shapes::<Fc>(&mut g, true);
    shapes::<Qf>(&mut g, true);
    shapes::<Yq>(&mut g, true);
    shapes::<Cl>(&mut g, true);
    g.sample_size(10);
    shapes::<FcSync>(&mut g, false);
    shapes::<QfSync>(&mut g, false);
    g.finish();
}

criterion_group! {
    name = benches;
    config = filechannel_benches::config();
    targets = peer_benches
}
criterion_main!(benches);
