//! The corruption matrix: every bit of every segment header and of the first
//! four frames of a middle segment flipped in turn, a middle segment deleted,
//! headers truncated to every length. Each case must give correct data or a
//! typed error: never a wrong payload, never a panic.
//!
//! Runs on `/dev/shm` (tmpfs) when there is one, so the thousands of opens
//! don't wait for fsyncs.

mod common;
use common::*;
use filechannel::{Compression, FileChannel};
use std::collections::BTreeMap;
use std::path::Path;

type Image = BTreeMap<String, Vec<u8>>;

fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn open(dir: &Path) -> Result<FileChannel, filechannel::Error> {
    FileChannel::builder()
        .segment_size(4096)
        .compression(Compression::None)
        .open(dir)
}

/// A closed channel of 60 messages over several segments, as file contents.
fn base_image() -> Image {
    let dir = scratch();
    let ch = open(dir.path()).unwrap();
    let tx = ch.tx();
    for seq in 0..60 {
        tx.send(&payload(seq, size_for(seq, 400))).unwrap();
    }
    drop(tx);
    ch.close().unwrap();
    drop(ch);
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap()))
        .collect()
}

fn write_image(dir: &Path, image: &Image) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap() != "LOCK" {
            std::fs::remove_file(p).unwrap();
        }
    }
    for (name, bytes) in image {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    open_errors: u64,
    read_errors: u64,
    clean: u64,
}

/// Opens the image and reads everything; panics (failing the test) on a
/// wrong payload or an out-of-order message.
fn check(dir: &Path, image: &Image, tally: &mut Tally, what: &str) {
    write_image(dir, image);
    tally.cases += 1;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ch = match open(dir) {
            Ok(ch) => ch,
            Err(e) => {
                // A typed error, with a message that names something.
                assert!(!e.to_string().is_empty());
                return 1;
            }
        };
        let mut rx = ch.rx_ack();
        let mut last: Option<u64> = None;
        loop {
            match rx.try_recv() {
                Ok(m) => {
                    let seq = check_payload(&m);
                    assert!(last.is_none_or(|l| seq > l), "{what}: {seq} after {last:?}");
                    last = Some(seq);
                }
                Err(filechannel::TryRecvError::Empty) => return 0,
                Err(filechannel::TryRecvError::Failed(e)) => {
                    assert!(
                        e.is_corrupted() || matches!(e, filechannel::RecvError::Io { .. }),
                        "{what}: {e:?}"
                    );
                    return 2;
                }
                Err(e) => panic!("{what}: unexpected {e:?}"),
            }
        }
    }));
    match outcome {
        Ok(0) => tally.clean += 1,
        Ok(1) => tally.open_errors += 1,
        Ok(_) => tally.read_errors += 1,
        Err(_) => panic!("{what}: panicked or delivered a wrong payload"),
    }
}

fn segment_names(image: &Image) -> Vec<String> {
    image.keys().filter(|n| n.starts_with("segment.")).cloned().collect()
}

#[test]
fn every_header_bit_flip_gives_correct_data_or_a_typed_error() {
    let base = base_image();
    let names = segment_names(&base);
    assert!(names.len() >= 4, "{names:?}");
    let dir = scratch();
    let mut tally = Tally::default();
    for name in &names {
        for byte in 0..64 {
            for bit in 0..8 {
                let mut image = base.clone();
                image.get_mut(name).unwrap()[byte] ^= 1 << bit;
                check(dir.path(), &image, &mut tally, &format!("{name} byte {byte} bit {bit}"));
            }
        }
    }
    eprintln!("header flips: {tally:?}");
    assert_eq!(tally.cases, names.len() as u64 * 512);
    // A header flip is always caught (the CRC covers the whole header).
    assert_eq!(tally.clean, 0, "{tally:?}");
}

#[test]
fn every_bit_flip_in_the_first_four_frames_of_a_middle_segment_is_caught_or_harmless() {
    let base = base_image();
    let names = segment_names(&base);
    let middle = &names[names.len() / 2];
    // The first four frames: walk their headers.
    let bytes = &base[middle];
    let mut end = 64usize;
    for _ in 0..4 {
        let len = u32::from_le_bytes(bytes[end + 4..end + 8].try_into().unwrap()) as usize;
        end += 16 + len.div_ceil(16) * 16;
    }
    let dir = scratch();
    let mut tally = Tally::default();
    for byte in 64..end {
        for bit in 0..8 {
            let mut image = base.clone();
            image.get_mut(middle).unwrap()[byte] ^= 1 << bit;
            check(
                dir.path(),
                &image,
                &mut tally,
                &format!("{middle} byte {byte} bit {bit}"),
            );
        }
    }
    eprintln!("frame flips in {middle} (bytes 64..{end}): {tally:?}");
    // Only flips in padding (not covered by the CRC) read clean.
    assert!(tally.read_errors > tally.clean, "{tally:?}");
}

#[test]
fn deleting_a_middle_segment_is_a_missing_segment_error() {
    let base = base_image();
    let names = segment_names(&base);
    let mut image = base.clone();
    image.remove(&names[names.len() / 2]);
    let dir = scratch();
    write_image(dir.path(), &image);
    assert!(matches!(
        open(dir.path()),
        Err(filechannel::Error::MissingSegment { .. })
    ));
}

#[test]
fn truncating_a_header_to_every_length_gives_correct_data_or_a_typed_error() {
    let base = base_image();
    let names = segment_names(&base);
    let dir = scratch();
    let mut tally = Tally::default();
    for name in [&names[1], names.last().unwrap()] {
        for len in 0..64 {
            let mut image = base.clone();
            image.get_mut(name).unwrap().truncate(len);
            check(dir.path(), &image, &mut tally, &format!("{name} truncated to {len}"));
        }
    }
    eprintln!("truncated headers: {tally:?}");
    assert_eq!(tally.cases, 128);
}
