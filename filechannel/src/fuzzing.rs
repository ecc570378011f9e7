//! Entry points for the fuzz targets in `fuzz/` (and for replaying their
//! corpus in `cargo test`): each takes arbitrary bytes and must never panic,
//! hang or allocate without bound. Behind the `testing` feature.
//!
//! A fuzz target reports a broken property by panicking, so panics and
//! `expect` are this module's assertions (never reached by the channel's own
//! code).
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use crate::storage::sim::SimStorage;
use crate::{Compression, Durability, FileChannel, TryRecvError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DIR: &str = "/fuzz/channel";

fn open(sim: &SimStorage) -> Result<FileChannel<SimStorage>, crate::Error> {
    FileChannel::builder()
        .segment_size(4096)
        .max_message_size(64 << 10)
        .durability(Durability::Flush)
        .compression(Compression::Snappy)
        .open_with(sim.clone(), DIR)
}

/// Reads everything a channel in `sim` holds; stops at the first error.
fn read_all(ch: &FileChannel<SimStorage>) -> usize {
    let mut rx = ch.rx_ack();
    let mut n = 0;
    loop {
        match rx.try_recv_ref() {
            Ok(m) => n += m.len().min(1),
            Err(TryRecvError::Empty) | Err(_) => return n,
        }
    }
}

/// Target D1: `data` describes a directory (files named like the channel's,
/// with arbitrary contents, often mutations of real ones); open it, read
/// everything and the schema registry. Layout: repeated `[kind u8][number
/// u8][len u16 LE][bytes]`. With the kind's top bit set, the file's
/// checksums are made right (`fix_checksums`), so that mutated bytes get
/// past them to what lies behind: frame lengths, flags and sequence numbers,
/// compressed bodies and their declared lengths.
pub fn open_arbitrary_directory(data: &[u8]) {
    let mut files = BTreeMap::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let (kind, n, len) = (
            rest[0],
            u64::from(rest[1]),
            u16::from_le_bytes([rest[2], rest[3]]) as usize,
        );
        let body = &rest[4..(4 + len).min(rest.len())];
        rest = &rest[(4 + len).min(rest.len())..];
        let name = match kind % 6 {
            0 => format!("segment.{n:020}"),
            1 => format!("segment.{n:020}.z"),
            2 => format!("segment.{n:020}.z.tmp"),
            3 => format!("spare.{n:020}"),
            4 => "head".to_string(),
            _ => crate::REGISTRY_FILE.to_string(),
        };
        let mut body = body.to_vec();
        if kind & 0x80 != 0 {
            fix_checksums(kind % 6, n, &mut body);
        }
        files.insert(Path::new(DIR).join(name), body);
    }
    let sim = SimStorage::from_image(Path::new(DIR), &files);
    if let Ok(ch) = open(&sim) {
        read_all(&ch);
        let _ = ch.tx().send(b"still writable");
        read_all(&ch);
        // A registry that does not parse is an error, never a panic.
        let _ = ch.schemas();
    }
}

/// Rewrites the checksums of a file of kind `kind` (as in
/// [`open_arbitrary_directory`]) numbered `n` to match its bytes: a
/// segment's (or spare's) header CRC and every whole frame's CRC, walking
/// the frames by their lengths; a compressed segment's body length, body CRC
/// and header CRC.
fn fix_checksums(kind: u8, n: u64, bytes: &mut [u8]) {
    use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, fill_crc, frame_len, segment_seed};
    let header = SEGMENT_HEADER_LEN as usize;
    match kind {
        0 | 3 if bytes.len() >= header => {
            let crc = crc32fast::hash(&bytes[..60]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
            let seed = segment_seed(n);
            let mut at = header;
            while let Some(head) = bytes.get(at..at + FRAME_HEADER_LEN as usize) {
                let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
                let end = at as u64 + FRAME_HEADER_LEN + len;
                let Some(frame) = usize::try_from(end).ok().and_then(|end| bytes.get_mut(at..end)) else {
                    break;
                };
                fill_crc(seed, frame);
                at += frame_len(len) as usize;
            }
        }
        1 if bytes.len() >= crate::compress::COMPRESSED_HEADER_LEN => {
            let (head, body) = bytes.split_at_mut(crate::compress::COMPRESSED_HEADER_LEN);
            head[64..72].copy_from_slice(&(body.len() as u64).to_le_bytes());
            head[72..76].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
            let crc = crc32fast::hash(&head[..92]);
            head[92..96].copy_from_slice(&crc.to_le_bytes());
        }
        _ => {}
    }
}

/// The bytes [`open_arbitrary_directory`] reads for a real channel: the
/// seed of its corpus.
pub fn encode_directory(files: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, bytes) in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (kind, number) = if let Some(rest) = name.strip_prefix("spare.") {
            (3, rest.parse::<u64>().unwrap_or(0))
        } else if let Some(rest) = name.strip_prefix("segment.") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let kind = if rest.ends_with(".z.tmp") {
                2
            } else if rest.ends_with(".z") {
                1
            } else {
                0
            };
            (kind, digits.parse().unwrap_or(0))
        } else if name == "head" {
            (4, 0)
        } else if name == crate::REGISTRY_FILE {
            (5, 0)
        } else {
            continue;
        };
        let len = bytes.len().min(u16::MAX as usize);
        out.extend_from_slice(&[kind, number as u8]);
        out.extend_from_slice(&(len as u16).to_le_bytes());
        out.extend_from_slice(&bytes[..len]);
    }
    out
}

/// Target D2: `data` is a sequence of operations run against a channel on
/// the in-memory backend (`Flush` mode), with a crash after the number of
/// storage operations its first two bytes say (redb's countdown). Then the
/// process-crash image and a power-loss image are reopened and read. Each
/// message carries its send's index, so that the read is checked exactly:
/// - no message read is one whose `send` failed, and they come in send
///   order without a repeat; after a process crash without a gap either
///   (failed sends aside). After a power loss, messages not synced may be
///   missing in the middle (each segment recovers to a valid prefix, and a
///   later segment may have reached the disk when an earlier one's end did
///   not: `DESIGN.md` §9);
/// - nothing confirmed is missing but an acked prefix: after a process
///   crash, every message confirmed before the crash and above the highest
///   index any receiver acked is there; after a power loss, the same for
///   messages confirmed before the last `sync()` that returned `Ok`;
/// - the image reads cleanly to its end (no `Corrupted`, no I/O error).
pub fn ops_with_crash(data: &[u8]) {
    let Some((&a, rest)) = data.split_first() else { return };
    let Some((&b, ops)) = rest.split_first() else { return };
    let sim = SimStorage::new();
    sim.crash_at(1 + u64::from(u16::from_le_bytes([a, b])));
    // Per send attempt (its index): whether it returned `Ok` before the
    // crash (`Some(true)`), failed (`Some(false)`), or returned `Ok` with
    // the crash already past, in another thread maybe before its append
    // (`None`: it may or may not be there).
    let mut confirmed: Vec<Option<bool>> = Vec::new();
    // Attempts before the last `sync()` that returned `Ok` before the crash.
    let mut synced = 0usize;
    // The highest index any receiver acked, if any.
    let mut acked: Option<u32> = None;
    if let Ok(ch) = open(&sim) {
        let tx = ch.tx();
        // Each receiver with the indices it took and has not acked.
        let mut rxs = vec![(ch.rx_ack(), std::collections::VecDeque::new())];
        for op in ops.chunks(2) {
            let (code, arg) = (op[0], *op.get(1).unwrap_or(&0));
            match code % 6 {
                0 | 1 => {
                    let index = confirmed.len() as u32;
                    let mut msg = index.to_le_bytes().to_vec();
                    msg.extend((0..usize::from(arg) * 23).map(|i| (i as u8) ^ arg));
                    let ok = tx.send(&msg).is_ok();
                    confirmed.push(if !ok {
                        Some(false)
                    } else if sim.crashed() {
                        None
                    } else {
                        Some(true)
                    });
                }
                2 => {
                    if let Some((rx, taken)) = rxs.get_mut(usize::from(arg) % 3)
                        && let Ok(m) = rx.try_recv()
                    {
                        taken.push_back(index_of(&m));
                    }
                }
                3 => {
                    if let Some((rx, taken)) = rxs.get_mut(usize::from(arg) % 3) {
                        let n = usize::from(arg % 4);
                        // Recorded whether or not the crash came first: an
                        // ack may reach the disk without our knowing.
                        if rx.ack(n as u64).is_ok() {
                            for i in taken.drain(..n.min(taken.len())) {
                                acked = acked.max(Some(i));
                            }
                        }
                    }
                }
                4 if rxs.len() < 3 => rxs.push((ch.rx_ack(), std::collections::VecDeque::new())),
                4 => drop(rxs.remove(0)),
                _ => {
                    let before = confirmed.len();
                    if tx.sync().is_ok() && !sim.crashed() {
                        synced = before;
                    }
                }
            }
        }
    }
    sim.crash_now();
    let Some(snapshot) = sim.snapshot() else { return };
    let crashed_confirmed = confirmed.len();
    for (image, kept_upto, gaps_allowed, what) in [
        (
            snapshot.process_crash_image(),
            crashed_confirmed,
            false,
            "process crash",
        ),
        (snapshot.power_loss_image(u64::from(a)), synced, true, "power loss"),
    ] {
        let sim = SimStorage::from_image(Path::new(DIR), &image);
        let Ok(ch) = open(&sim) else {
            panic!("a {what} image did not reopen");
        };
        let mut rx = ch.rx_ack();
        let mut read: Vec<u32> = Vec::new();
        let end = loop {
            match rx.try_recv() {
                Ok(m) => read.push(index_of(&m)),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(end, TryRecvError::Empty),
            "the {what} image does not read cleanly: {end}"
        );
        // The sends that may have appended, in order: what is read is a run
        // of consecutive ones.
        let appended: Vec<u32> = (0..confirmed.len() as u32)
            .filter(|&i| confirmed[i as usize] != Some(false))
            .collect();
        if let Some(&first) = read.first() {
            let at = appended.iter().position(|&i| i == first).unwrap_or_else(|| {
                panic!("after a {what}: message {first} is there but its send failed or never happened")
            });
            let in_order = if gaps_allowed {
                let mut rest = appended[at..].iter();
                read.iter().all(|i| rest.any(|j| j == i))
            } else {
                appended[at..].starts_with(&read)
            };
            assert!(
                in_order,
                "after a {what}: messages out of order, repeated, missing or failed: read {read:?}"
            );
        }
        let must_from = acked.map_or(0, |i| i as usize + 1);
        for (i, &state) in confirmed.iter().enumerate().take(kept_upto).skip(must_from) {
            assert!(
                state != Some(true) || read.contains(&(i as u32)),
                "after a {what}: confirmed message {i} is lost (read {read:?}, acked up to {acked:?})"
            );
        }
    }
}

/// The send index a message of [`ops_with_crash`] carries.
fn index_of(m: &[u8]) -> u32 {
    let b: [u8; 4] = m
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .expect("a message without its index");
    u32::from_le_bytes(b)
}

/// Target D3's value types and entry point (every codec, and the derive).
#[cfg(all(
    feature = "postcard",
    feature = "bincode",
    feature = "json",
    feature = "rkyv",
    feature = "derive"
))]
mod typed {
    use super::*;

    /// Derives what a fuzzed value type needs: `Message` and the traits of
    /// every codec (serde, and rkyv through the codecs crate's re-export).
    macro_rules! fuzz_type {
        ($($item:tt)*) => {
            #[derive(
                crate::Message,
                serde::Serialize,
                serde::Deserialize,
                filechannel_codecs::rkyv::Archive,
                filechannel_codecs::rkyv::Serialize,
                filechannel_codecs::rkyv::Deserialize,
                Debug,
            )]
            #[rkyv(crate = filechannel_codecs::rkyv)]
            $($item)*
        };
    }

    /// The first value type of [`typed_decode`]: std types only, with strings,
    /// vectors, options and a map, which is what the decoders and rkyv's
    /// validator have to get right.
    pub type FuzzValue = (u64, String, Vec<u32>, Option<BTreeMap<String, i16>>);

    fuzz_type! {
        /// An enum inside [`FuzzEvent`]: unit, tuple and struct variants, for the
        /// decoders' and the validator's discriminant handling.
        #[message(name = "fuzz.Kind", version = 1)]
        pub enum FuzzKind {
            /// No data.
            Empty,
            /// A number.
            Num(i64),
            /// A string.
            Text(String),
            /// Named fields.
            Pair {
                /// A number.
                a: u32,
                /// Bytes.
                b: Vec<u8>,
            },
        }
    }

    fuzz_type! {
        /// Version 1 of [`FuzzEvent`]: a frame tagged with it is migrated.
        #[message(name = "fuzz.Event", version = 1)]
        pub struct FuzzEventV1 {
            /// An id.
            pub id: u64,
            /// What happened.
            pub kind: FuzzKind,
        }
    }

    fuzz_type! {
        /// The second value type of [`typed_decode`]: a derived, versioned type
        /// with an enum inside, whose version 1 frames go through the `previous`
        /// chain (decoded as [`FuzzEventV1`], converted, and for rkyv's `recv_ref`
        /// archived again).
        #[message(name = "fuzz.Event", version = 2, previous = FuzzEventV1)]
        pub struct FuzzEvent {
            /// An id.
            pub id: u64,
            /// What happened.
            pub kind: FuzzKind,
            /// Labels.
            pub tags: Vec<String>,
            /// Anything else.
            pub extra: Option<BTreeMap<String, i16>>,
        }
    }

    impl From<FuzzEventV1> for FuzzEvent {
        fn from(v: FuzzEventV1) -> Self {
            FuzzEvent {
                id: v.id,
                kind: v.kind,
                tags: Vec::new(),
                extra: None,
            }
        }
    }

    /// Target D3: typed frames with arbitrary bodies, decoded by every codec.
    /// Layout: repeated `[selector u8][len u8][body]`. The selector's low two
    /// bits pick the codec whose correct header goes in front of the body (so
    /// the body reaches that codec's decoder, or rkyv's validator); bit 2 sends
    /// the bytes raw instead, bit 3 sends them typed with no header fix-up.
    /// Bits 4–5 pick the header's type: [`FuzzValue`] (0), [`FuzzEvent`]
    /// version 2 (1) or version 1 (2, migrated on receipt), or a version 3
    /// nobody knows (3). Receivers of both types read every message, each with
    /// every codec (rkyv twice: `recv` and `recv_ref`). Each must return a value
    /// or a typed error, never panic, and stay usable: each gets exactly one
    /// result per message.
    pub fn typed_decode(data: &[u8]) {
        use crate::codec::{Bincode, Codec, Json, Postcard, Rkyv};
        use crate::typed::TypedRx;
        use crate::{Message, RecvError};
        fn header<T: Message>(version: u32, codec: u32) -> [u8; crate::TYPED_HEADER_LEN] {
            crate::typed::header_bytes(T::NAME_HASH, version, codec)
        }
        /// One result per message, and never a panic.
        fn check<T>(r: Result<T, TryRecvError>, i: u64) {
            match r {
                Ok(_) | Err(TryRecvError::Failed(RecvError::Decode { .. })) => {}
                Err(e) => panic!("message {i}: {e:?}"),
            }
        }
        let sim = SimStorage::new();
        let Ok(ch) = open(&sim) else { return };
        // Per type, a receiver per codec, rkyv's twice (`recv` and
        // `recv_ref`); `check_next!` takes one result from each.
        macro_rules! readers {
            ($t:ty) => {
                match (
                    TypedRx::<$t, Postcard, _>::new(ch.rx()),
                    TypedRx::<$t, Bincode, _>::new(ch.rx()),
                    TypedRx::<$t, Json, _>::new(ch.rx()),
                    TypedRx::<$t, Rkyv, _>::new(ch.rx()),
                    TypedRx::<$t, Rkyv, _>::new(ch.rx()),
                ) {
                    (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
                    // A fresh channel has nothing to refuse them with; a
                    // silent return here would skip the whole target.
                    _ => panic!("a typed receiver of {} could not be made", stringify!($t)),
                }
            };
        }
        macro_rules! check_next {
            ($r:expr, $i:expr) => {
                check($r.0.try_recv(), $i);
                check($r.1.try_recv(), $i);
                check($r.2.try_recv(), $i);
                check($r.3.try_recv(), $i);
                check($r.4.try_recv_ref().map(|a| a.offset()), $i);
            };
        }
        let (mut values, mut events) = (readers!(FuzzValue), readers!(FuzzEvent));
        let tx = ch.tx();
        let mut sent = 0u64;
        let mut rest = data;
        while rest.len() >= 2 {
            let (sel, len) = (rest[0], usize::from(rest[1]));
            let body = &rest[2..(2 + len).min(rest.len())];
            rest = &rest[(2 + len).min(rest.len())..];
            let codec = [Postcard::ID, Bincode::ID, Json::ID, Rkyv::ID][usize::from(sel & 3)];
            let mut frame = Vec::with_capacity(16 + body.len());
            if sel & 8 == 0 {
                frame.extend_from_slice(&match (sel >> 4) & 3 {
                    0 => header::<FuzzValue>(FuzzValue::VERSION, codec),
                    1 => header::<FuzzEvent>(FuzzEvent::VERSION, codec),
                    2 => header::<FuzzEvent>(FuzzEventV1::VERSION, codec),
                    _ => header::<FuzzEvent>(FuzzEvent::VERSION + 1, codec),
                });
            }
            frame.extend_from_slice(body);
            let flags = if sel & 4 == 0 { crate::format::FLAG_TYPED } else { 0 };
            if tx.send_frame(&frame, flags).is_ok() {
                sent += 1;
            }
        }
        for i in 0..sent {
            check_next!(values, i);
            check_next!(events, i);
        }
        assert!(matches!(values.0.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(events.4.try_recv_ref(), Err(TryRecvError::Empty)));
    }
}

#[cfg(all(
    feature = "postcard",
    feature = "bincode",
    feature = "json",
    feature = "rkyv",
    feature = "derive"
))]
pub use typed::{FuzzEvent, FuzzEventV1, FuzzKind, FuzzValue, typed_decode};

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_dir(target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target)
    }

    /// Every input in the checked-in corpus and every crash the fuzzer ever
    /// found (`fuzz/artifacts`) runs in a normal `cargo test`.
    #[test]
    fn fuzz_corpus_and_past_crashes_replay_without_panics() {
        let mut ran = 0;
        for (target, run) in [
            ("open_arbitrary_directory", open_arbitrary_directory as fn(&[u8])),
            ("ops_with_crash", ops_with_crash as fn(&[u8])),
            #[cfg(all(
                feature = "postcard",
                feature = "bincode",
                feature = "json",
                feature = "rkyv",
                feature = "derive"
            ))]
            ("typed_decode", typed_decode as fn(&[u8])),
        ] {
            let artifacts = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz/artifacts")
                .join(target);
            for dir in [corpus_dir(target), artifacts] {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                for entry in entries {
                    let path = entry.unwrap().path();
                    run(&std::fs::read(&path).unwrap());
                    ran += 1;
                }
            }
        }
        assert!(ran >= 4, "the corpus should hold seeds ({ran} inputs)");
    }

    /// Writes the seed inputs (a real channel's directory; a few op
    /// sequences). Run by hand: `cargo test -p filechannel --lib
    /// write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let sim = SimStorage::new();
        let ch = open(&sim).unwrap();
        let tx = ch.tx();
        for i in 0..40u8 {
            tx.send(&vec![i; 20 + usize::from(i) * 13]).unwrap();
        }
        let mut rx = ch.rx_ack();
        for _ in 0..5 {
            rx.try_recv().unwrap();
        }
        rx.ack(3).unwrap();
        sim.crash_now();
        let image = sim.snapshot().unwrap().process_crash_image();
        std::fs::create_dir_all(corpus_dir("open_arbitrary_directory")).unwrap();
        std::fs::write(
            corpus_dir("open_arbitrary_directory").join("seed-real-channel"),
            encode_directory(&image),
        )
        .unwrap();
        // The same with the checksum fix-up on for every file: mutations of
        // it reach what the checksums guard.
        let mut fixed = encode_directory(&image);
        let mut at = 0;
        while at + 4 <= fixed.len() {
            fixed[at] |= 0x80;
            at += 4 + usize::from(u16::from_le_bytes([fixed[at + 2], fixed[at + 3]]));
        }
        std::fs::write(
            corpus_dir("open_arbitrary_directory").join("seed-real-channel-fixed"),
            fixed,
        )
        .unwrap();
        std::fs::write(corpus_dir("open_arbitrary_directory").join("seed-empty"), b"").unwrap();
        let registry = "# filechannel schema registry v1: name-hash version fingerprint name<TAB>shape\n\
                        0123456789abcdef 1 fedcba9876543210 shop.Order\tstruct{id:u64}\n";
        let files = BTreeMap::from([(Path::new(DIR).join(crate::REGISTRY_FILE), registry.as_bytes().to_vec())]);
        std::fs::write(
            corpus_dir("open_arbitrary_directory").join("seed-registry"),
            encode_directory(&files),
        )
        .unwrap();
        std::fs::create_dir_all(corpus_dir("ops_with_crash")).unwrap();
        let ops: Vec<u8> = [200u8, 0]
            .into_iter()
            .chain((0..120u8).flat_map(|i| [i % 6, i.wrapping_mul(7)]))
            .collect();
        std::fs::write(corpus_dir("ops_with_crash").join("seed-mixed"), ops).unwrap();
        std::fs::write(
            corpus_dir("ops_with_crash").join("seed-early-crash"),
            [3u8, 0, 0, 40, 0, 90, 5, 0],
        )
        .unwrap();
        write_typed_seeds();
    }

    /// Seeds for `typed_decode`: one valid encoding per codec of each type
    /// (and of `FuzzEvent`'s version 1).
    #[cfg(all(
        feature = "postcard",
        feature = "bincode",
        feature = "json",
        feature = "rkyv",
        feature = "derive"
    ))]
    fn write_typed_seeds() {
        use crate::codec::{Bincode, Encode, Json, Postcard, Rkyv};
        let v: FuzzValue = (
            7,
            "seven".into(),
            vec![1, 2, 3],
            Some(BTreeMap::from([("k".into(), -3)])),
        );
        let dir = corpus_dir("typed_decode");
        std::fs::create_dir_all(&dir).unwrap();
        let mut all = Vec::new();
        for (sel, enc) in [
            (
                0u8,
                <Postcard as Encode<FuzzValue>>::encode as fn(&FuzzValue, &mut Vec<u8>) -> _,
            ),
            (1, <Bincode as Encode<FuzzValue>>::encode),
            (2, <Json as Encode<FuzzValue>>::encode),
            (3, <Rkyv as Encode<FuzzValue>>::encode),
        ] {
            let mut body = Vec::new();
            enc(&v, &mut body).unwrap();
            let mut input = vec![sel, body.len() as u8];
            input.extend_from_slice(&body);
            std::fs::write(dir.join(format!("seed-codec-{sel}")), &input).unwrap();
            all.extend_from_slice(&input);
        }
        all.extend_from_slice(&[4, 3, 1, 2, 3, 8, 2, 0, 0]);
        std::fs::write(dir.join("seed-mixed"), all).unwrap();
        let v2 = FuzzEvent {
            id: 9,
            kind: FuzzKind::Pair { a: 5, b: vec![1, 2] },
            tags: vec!["t".into()],
            extra: Some(BTreeMap::from([("x".into(), 1)])),
        };
        let v1 = FuzzEventV1 {
            id: 8,
            kind: FuzzKind::Text("old".into()),
        };
        for codec in 0u8..4 {
            for (name, sel, body) in [
                ("event", codec | 1 << 4, encoded(codec, &v2)),
                ("event-v1", codec | 2 << 4, encoded(codec, &v1)),
            ] {
                let mut input = vec![sel, u8::try_from(body.len()).unwrap()];
                input.extend_from_slice(&body);
                std::fs::write(dir.join(format!("seed-{name}-{codec}")), input).unwrap();
            }
        }
    }

    /// `v` encoded by the codec `typed_decode`'s selector `codec` picks.
    #[cfg(all(
        feature = "postcard",
        feature = "bincode",
        feature = "json",
        feature = "rkyv",
        feature = "derive"
    ))]
    fn encoded<T>(codec: u8, v: &T) -> Vec<u8>
    where
        T: crate::Message,
        crate::codec::Postcard: crate::codec::Encode<T>,
        crate::codec::Bincode: crate::codec::Encode<T>,
        crate::codec::Json: crate::codec::Encode<T>,
        crate::codec::Rkyv: crate::codec::Encode<T>,
    {
        use crate::codec::{Bincode, Encode, Json, Postcard, Rkyv};
        let mut body = Vec::new();
        match codec {
            0 => Postcard::encode(v, &mut body),
            1 => Bincode::encode(v, &mut body),
            2 => Json::encode(v, &mut body),
            _ => Rkyv::encode(v, &mut body),
        }
        .unwrap();
        body
    }

    #[cfg(not(all(
        feature = "postcard",
        feature = "bincode",
        feature = "json",
        feature = "rkyv",
        feature = "derive"
    )))]
    fn write_typed_seeds() {}
}
