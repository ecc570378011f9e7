//! Typed channels per codec: `Write_<shape>/<codec>` (typed `send`) and
//! `Read_<shape>/<codec>` (typed `recv`, decoding to an owned value), for a
//! ~64-byte and a ~512-byte struct, in `Buffered` mode; and, for the big
//! struct, rkyv read in place (`recv_ref`, validated and unchecked) against
//! the raw-byte `recv_ref` of the very same frames and against decoding;
//! the same for a ~512-byte struct of integers only (`Numeric`), whose
//! validation has no strings to check. `Access_Large/rkyv` and
//! `IsAscii_Large_note` take `Large`'s validation apart (see
//! `validation_parts`), and `RecvRef_Large_note128` reads `Large` with a
//! 128-byte note instead of 120, whose ASCII check is 20x cheaper.
//!
//! `raw/Write_<shape>` sends the postcard encoding (typed header included)
//! as raw bytes: the target is typed postcard `send` within 2x of it.
//! `raw/Write_Small_body` sends it without the 16-byte typed header (tag,
//! version, codec id): the difference is what the header costs.
//! `Encode_<shape>/postcard` encodes alone with our `Postcard` codec,
//! `Encode_<shape>/postcard-crate` with the postcard crate's serializer
//! (the same bytes).
//! Every sample gets a fresh channel under `/tmp` (or `TMPDIR`).

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use filechannel::codec::{Bincode, Decode, Encode, Json, Postcard, Rkyv};
use filechannel::{FileChannel, Message, Migrate};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use std::hint::black_box;
use std::time::Instant;

/// About 64 bytes encoded (postcard 50, rkyv 80).
#[derive(
    Message, serde::Serialize, serde::Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug,
)]
struct Small {
    id: u64,
    ts: u64,
    user: u32,
    qty: u32,
    price_cents: i64,
    sku: String,
}

/// About 512 bytes encoded.
#[derive(
    Message, serde::Serialize, serde::Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug,
)]
struct Large {
    id: u64,
    ts: u64,
    readings: Vec<u32>,
    note: String,
    tags: Vec<String>,
}

/// About 512 bytes too, integers only: nothing for bytecheck to check inside
/// the vector.
#[derive(Message, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
struct Numeric {
    id: u64,
    ts: u64,
    values: Vec<u64>,
}

fn small() -> Small {
    Small {
        id: 0x0123_4567_89ab_cdef,
        ts: 1_764_000_000_000,
        user: 4_000_001,
        qty: 12,
        price_cents: -123_456,
        sku: "SKU-2026-ABCDEF".into(),
    }
}

fn large() -> Large {
    large_with_note(120)
}

/// `Large` with a note of `len` bytes.
fn large_with_note(len: usize) -> Large {
    Large {
        id: 0x0123_4567_89ab_cdef,
        ts: 1_764_000_000_000,
        readings: (0..64).map(|i| 0x1234_5678 + i * 7919).collect(),
        note: "x".repeat(len),
        tags: (0..4).map(|i| format!("tag-{i}-{}", "y".repeat(10))).collect(),
    }
}

fn numeric() -> Numeric {
    Numeric {
        id: 0x0123_4567_89ab_cdef,
        ts: 1_764_000_000_000,
        values: (0..60).map(|i| 0x1234_5678_9abc + i * 7919).collect(),
    }
}

fn channel() -> (tempfile::TempDir, FileChannel) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = FileChannel::open(dir.path()).expect("open");
    (dir, ch)
}

fn fill<T: Message, C: Encode<T>>(ch: &FileChannel, v: &T, n: u64) {
    let tx = ch.typed_tx::<T, C>().expect("tx");
    for _ in 0..n {
        tx.send(v).expect("send");
    }
    tx.flush().expect("flush");
}

/// The frame a typed send writes: header and encoding.
fn frame_of<T: Message, C: Encode<T>>(v: &T) -> Vec<u8> {
    let (_dir, ch) = channel();
    let mut rx = ch.rx();
    fill::<T, C>(&ch, v, 1);
    rx.recv().expect("recv")
}

fn codec_pair<T, C>(g: &mut BenchmarkGroup<'_, WallTime>, shape: &str, v: &T)
where
    T: Message + Migrate<C>,
    C: Encode<T> + Decode<T>,
{
    let size = frame_of::<T, C>(v).len();
    eprintln!("typed/{shape}/{}: {size} bytes a frame payload", C::NAME);
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function(format!("Write_{shape}/{}", C::NAME), |b| {
        b.iter_custom(|iters| {
            let (_dir, ch) = channel();
            let tx = ch.typed_tx::<T, C>().expect("tx");
            let start = Instant::now();
            for _ in 0..iters {
                tx.send(black_box(v)).expect("send");
            }
            tx.flush().expect("flush");
            start.elapsed()
        })
    });
    g.bench_function(format!("Read_{shape}/{}", C::NAME), |b| {
        b.iter_custom(|iters| {
            let (_dir, ch) = channel();
            let mut rx = ch.typed_rx::<T, C>().expect("rx");
            fill::<T, C>(&ch, v, iters);
            let start = Instant::now();
            for _ in 0..iters {
                black_box(rx.recv().expect("recv"));
            }
            start.elapsed()
        })
    });
}

fn raw_write(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, frame: &[u8]) {
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function(format!("raw/Write_{name}"), |b| {
        b.iter_custom(|iters| {
            let (_dir, ch) = channel();
            let tx = ch.tx();
            let start = Instant::now();
            for _ in 0..iters {
                tx.send(black_box(frame)).expect("send");
            }
            tx.flush().expect("flush");
            start.elapsed()
        })
    });
}

/// Reads `v`'s rkyv frames in place, validated and unchecked, and the raw
/// bytes of the very same frames.
fn recv_ref_trio<T>(g: &mut BenchmarkGroup<'_, WallTime>, shape: &str, v: &T)
where
    T: Migrate<Rkyv> + rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    Rkyv: Encode<T>,
{
    let size = frame_of::<T, Rkyv>(v).len();
    eprintln!("typed/RecvRef_{shape}: {size} bytes a frame payload");
    g.throughput(Throughput::Bytes(size as u64));
    g.bench_function(format!("RecvRef_{shape}/rkyv"), |b| {
        b.iter_custom(|iters| {
            let (_dir, ch) = channel();
            let mut rx = ch.typed_rx::<T, Rkyv>().expect("rx");
            fill::<T, Rkyv>(&ch, v, iters);
            let start = Instant::now();
            for _ in 0..iters {
                black_box(&*rx.recv_ref().expect("recv_ref"));
            }
            start.elapsed()
        })
    });
    g.bench_function(format!("RecvRefUnchecked_{shape}/rkyv"), |b| {
        b.iter_custom(|iters| {
            let (_dir, ch) = channel();
            let mut rx = ch.typed_rx::<T, Rkyv>().expect("rx");
            fill::<T, Rkyv>(&ch, v, iters);
            let start = Instant::now();
            for _ in 0..iters {
                // SAFETY: this benchmark wrote every frame with
                // `TypedTx<T, Rkyv>`.
                black_box(&*unsafe { rx.recv_ref_unchecked() }.expect("recv_ref"));
            }
            start.elapsed()
        })
    });
    g.bench_function(format!("RecvRef_{shape}/raw"), |b| {
        b.iter_custom(|iters| {
            let (_dir, ch) = channel();
            let mut rx = ch.rx();
            fill::<T, Rkyv>(&ch, v, iters);
            let start = Instant::now();
            for _ in 0..iters {
                black_box(rx.recv_ref().expect("recv_ref").len());
            }
            start.elapsed()
        })
    });
}

/// Encoding alone, into a reused buffer: our `Postcard` codec against the
/// postcard crate's own serializer writing the same bytes.
fn encode_pair<T: serde::Serialize>(g: &mut BenchmarkGroup<'_, WallTime>, shape: &str, v: &T)
where
    Postcard: Encode<T>,
{
    let mut buf = Vec::new();
    Postcard::encode(v, &mut buf).expect("encode");
    assert_eq!(
        buf,
        postcard::to_allocvec(v).expect("postcard"),
        "the two encoders disagree"
    );
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(format!("Encode_{shape}/postcard"), |b| {
        b.iter(|| {
            buf.clear();
            Postcard::encode(black_box(v), &mut buf).expect("encode");
            black_box(buf.len())
        })
    });
    g.bench_function(format!("Encode_{shape}/postcard-crate"), |b| {
        b.iter(|| {
            buf.clear();
            postcard::to_io(black_box(v), &mut buf).expect("encode");
            black_box(buf.len())
        })
    });
}

/// What `RecvRef_Large/rkyv` spends on validation, outside the channel:
/// `Access_Large/rkyv` is the codec's validated access alone over the
/// archived bytes, `IsAscii_Large_note` the standard library's
/// `[u8]::is_ascii` over the 120-byte note, which bytecheck runs on every
/// string before it would try UTF-8. `IsAscii_128` runs it over 128 bytes:
/// on x86_64 the standard library checks 64-byte chunks with SIMD and what
/// is left one byte at a time, so 120 bytes cost far more than 128.
fn validation_parts(g: &mut BenchmarkGroup<'_, WallTime>, v: &Large) {
    let archived = rkyv::to_bytes::<rancor::Error>(v).expect("archive");
    g.throughput(Throughput::Bytes(archived.len() as u64));
    g.bench_function("Access_Large/rkyv", |b| {
        b.iter(|| black_box(filechannel::codec::access::<Large>(black_box(&archived)).is_ok()))
    });
    g.throughput(Throughput::Bytes(v.note.len() as u64));
    g.bench_function("IsAscii_Large_note", |b| {
        b.iter(|| black_box(black_box(v.note.as_bytes()).is_ascii()))
    });
    let note128 = "x".repeat(128);
    g.throughput(Throughput::Bytes(note128.len() as u64));
    g.bench_function("IsAscii_128", |b| {
        b.iter(|| black_box(black_box(note128.as_bytes()).is_ascii()))
    });
}

fn typed_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("typed");
    filechannel_benches::flat(&mut g);
    let (s, l) = (small(), large());
    let small_frame = frame_of::<Small, Postcard>(&s);
    raw_write(&mut g, "Small", &small_frame);
    // The same body without the 16-byte typed header: the header's cost.
    raw_write(&mut g, "Small_body", &small_frame[filechannel::TYPED_HEADER_LEN..]);
    codec_pair::<Small, Postcard>(&mut g, "Small", &s);
    codec_pair::<Small, Bincode>(&mut g, "Small", &s);
    codec_pair::<Small, Json>(&mut g, "Small", &s);
    codec_pair::<Small, Rkyv>(&mut g, "Small", &s);
    raw_write(&mut g, "Large", &frame_of::<Large, Postcard>(&l));
    codec_pair::<Large, Postcard>(&mut g, "Large", &l);
    codec_pair::<Large, Bincode>(&mut g, "Large", &l);
    codec_pair::<Large, Json>(&mut g, "Large", &l);
    codec_pair::<Large, Rkyv>(&mut g, "Large", &l);
    encode_pair(&mut g, "Small", &s);
    encode_pair(&mut g, "Large", &l);

    // Reading 512 B structs' rkyv frames: in place vs raw bytes. What
    // bytecheck costs depends on the content: every string's bytes are
    // checked (ASCII, else UTF-8) and its range claimed, plain integers are
    // not checked at all.
    recv_ref_trio::<Large>(&mut g, "Large", &l);
    validation_parts(&mut g, &l);
    // The same with a 128-byte note, which the standard library's
    // `is_ascii` checks without a byte-at-a-time tail (see
    // `validation_parts`): what the 120-byte note's check costs on its own.
    recv_ref_trio::<Large>(&mut g, "Large_note128", &large_with_note(128));
    recv_ref_trio::<Numeric>(&mut g, "Numeric", &numeric());
    g.finish();
}

criterion_group! {
    name = benches;
    config = filechannel_benches::config();
    targets = typed_benches
}
criterion_main!(benches);
