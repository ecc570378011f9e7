//! Helpers shared by the integration tests.
#![allow(dead_code)]

use filechannel::{FileChannel, Receiver};
use std::path::Path;

/// A message whose content can be checked from its sequence number alone:
/// 8 bytes of `seq`, then `len - 8` bytes derived from it.
pub fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(8));
    v.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// A size between 0 and `max` that varies with `seq` (at least 8, so the
/// sequence number fits).
pub fn size_for(seq: u64, max: usize) -> usize {
    8 + (seq.wrapping_mul(2_654_435_761) % (max as u64 - 7)) as usize
}

/// The sequence number a [`payload`] carries, after checking all its bytes.
pub fn check_payload(msg: &[u8]) -> u64 {
    assert!(msg.len() >= 8, "message of {} bytes is too short to be ours", msg.len());
    let seq = u64::from_le_bytes(msg[..8].try_into().unwrap());
    assert_eq!(msg, payload(seq, msg.len()), "payload of message {seq} is corrupt");
    seq
}

/// Reads every message that is ready now.
pub fn drain(rx: &mut Receiver) -> Vec<Vec<u8>> {
    rx.try_iter().collect::<Result<_, _>>().unwrap()
}

/// Opens `dir` with small segments so that tests rotate often, and without
/// compression so that segment files stay countable (compression has its own
/// tests).
pub fn open_small(dir: &Path) -> FileChannel {
    FileChannel::builder()
        .segment_size(4096)
        .compression(filechannel::Compression::None)
        .open(dir)
        .unwrap()
}

/// Segment files in `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("segment."))
        .collect();
    v.sort();
    v
}

/// Waits up to 10 s for `cond` (background work such as segment deletion
/// happens on the channel's flusher thread).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Rewrites `dir`'s head file by its documented layout (two 32-byte slots:
/// magic `FCHD`, version 1, generation, head sequence number, flags, CRC-32
/// of bytes 0..28): both slots say `head_seq` with `flags` (bit 0: the last
/// close was clean). Flags 0 is what a crash leaves.
pub fn write_head(dir: &Path, head_seq: u64, flags: u32) {
    write_head_generations(dir, head_seq, flags, [1, 2]);
}

/// [`write_head`] with the two slots' generations given.
pub fn write_head_generations(dir: &Path, head_seq: u64, flags: u32, generations: [u64; 2]) {
    let mut slots = Vec::new();
    for generation in generations {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(b"FCHD");
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&generation.to_le_bytes());
        b[16..24].copy_from_slice(&head_seq.to_le_bytes());
        b[24..28].copy_from_slice(&flags.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        slots.extend_from_slice(&b);
    }
    std::fs::write(dir.join("head"), &slots).unwrap();
}
