//! Guarantee 3 and the bad-input rules for files on disk: torn tails are
//! trimmed, damage in sealed segments is a typed error, and anything that
//! cannot be recovered stops `open` with an error naming the file, changing
//! nothing.

mod common;
use common::*;
use filechannel::{Error, FileChannel, RecvError};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

fn write_msgs(dir: &Path, n: u64, size: usize) {
    let ch = open_small(dir);
    let tx = ch.tx();
    for seq in 0..n {
        tx.send(&payload(seq, size)).unwrap();
    }
    ch.close().unwrap();
}

/// Reads every message without consuming any (an acking receiver that never
/// acks), so a second call sees the same.
fn read_all(dir: &Path) -> Vec<u64> {
    let ch = open_small(dir);
    let mut rx = ch.rx_ack();
    drain(&mut rx).iter().map(|m| check_payload(m)).collect()
}

/// Offset just past the last non-zero byte of a file.
fn data_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p as u64 + 1)
}

#[test]
fn reopen_after_close_keeps_every_message() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 500, 100);
    assert_eq!(read_all(dir.path()), (0..500).collect::<Vec<_>>());
    // And the writer continues the sequence.
    let ch = open_small(dir.path());
    assert_eq!(ch.write_offset(), 500);
}

#[test]
fn torn_tail_of_newest_segment_is_trimmed_and_writing_continues() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 10, 100);
    let seg = segment_files(dir.path()).pop().unwrap();
    let end = data_end(&seg);
    // Damage the last frame's payload: a torn write.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xFF; 7], end - 20).unwrap();
    // And leave garbage further on, as a partly persisted later frame would.
    f.write_all_at(&[0x5A; 64], end + 512).unwrap();
    drop(f);
    let got = read_all(dir.path());
    assert_eq!(
        got,
        (0..9).collect::<Vec<_>>(),
        "the torn last message is dropped, the rest kept"
    );
    // New messages go where the torn one was; nothing stale comes back.
    let ch = open_small(dir.path());
    assert_eq!(ch.write_offset(), 9);
    let tx = ch.tx();
    for seq in 9..12 {
        tx.send(&payload(seq, 100)).unwrap();
    }
    ch.close().unwrap();
    assert_eq!(read_all(dir.path()), (0..12).collect::<Vec<_>>());
}

/// A newest segment cut short right after its last frame, with no room
/// left for a seal: the reopen makes room, so the next rotation seals it,
/// and every message, old and new, reads back in order, also after another
/// reopen. (Before, the seal went missing: receivers stopped at the end of
/// the segment for good, and the next open refused the directory.)
#[test]
fn newest_segment_cut_after_its_last_frame_is_sealed_at_the_next_rotation() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 10, 100);
    let (seg, _) = newest_segment(dir.path());
    // Frames are padded to 16 bytes; the payloads end in non-zero bytes.
    let end = data_end(&seg).div_ceil(16) * 16;
    OpenOptions::new().write(true).open(&seg).unwrap().set_len(end).unwrap();
    let ch = open_small(dir.path());
    assert_eq!(ch.write_offset(), 10);
    let tx = ch.tx();
    // 4 KiB segments: several rotations, the first one right away.
    for seq in 10..100 {
        tx.send(&payload(seq, 100)).unwrap();
    }
    // Acking and never acking: the reopen below still holds everything.
    let mut rx = ch.rx_ack();
    for seq in 0..100 {
        let m = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("message {seq}: {e}"));
        assert_eq!(check_payload(&m), seq);
    }
    drop(rx);
    ch.close().unwrap();
    assert_eq!(read_all(dir.path()), (0..100).collect::<Vec<_>>());
}

/// A head slot whose generation is far beyond anything written (valid CRC,
/// generation `u64::MAX`) is ignored, not counted on from: the next head
/// store used to overflow (a panic in debug builds; in release it landed in
/// the slot that loses, so the head never moved again).
#[test]
fn a_head_slot_with_an_impossible_generation_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 10, 100);
    write_head_generations(dir.path(), 0, 1, [1, u64::MAX]);
    let ch = open_small(dir.path());
    let mut rx = ch.rx();
    assert_eq!(
        drain(&mut rx).iter().map(|m| check_payload(m)).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    drop(rx);
    ch.close().unwrap();
    // The head moved past what the plain receiver consumed.
    let ch = open_small(dir.path());
    assert!(
        ch.rx().try_recv().is_err(),
        "consumed messages came back: the head was not stored"
    );
    ch.close().unwrap();
}

/// A spare file with no blocks (a sparse copy of the directory) gets them
/// reserved when a rotation reuses it, as a fresh segment does, so that a
/// full disk is an error and not a SIGBUS in a store through the map. In
/// `Sync` mode nothing zero-fills ahead of the writer, so only that
/// reservation covers the pages not yet written.
#[test]
fn a_sparse_spare_gets_its_blocks_reserved_when_reused() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let open = |durability| {
        FileChannel::builder()
            .segment_size(64 << 10)
            .compression(filechannel::Compression::None)
            .durability(durability)
            .open(dir.path())
            .unwrap()
    };
    let ch = open(filechannel::Durability::Flush);
    ch.tx().send(&payload(0, 100)).unwrap();
    ch.close().unwrap();
    let (seg, id) = newest_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len > 4096, "a segment of one page proves nothing: {len} bytes");
    let spare = dir.path().join(format!("spare.{:020}", 0));
    std::fs::File::create(&spare).unwrap().set_len(len).unwrap();
    assert_eq!(
        std::fs::metadata(&spare).unwrap().blocks(),
        0,
        "the file system filled a sparse file"
    );
    let ch = open(filechannel::Durability::Sync);
    let tx = ch.tx();
    let next = dir.path().join(format!("segment.{:020}", id + 1));
    let mut seq = 1;
    while !next.exists() {
        assert!(seq < 2000, "no rotation");
        tx.send(&payload(seq, 100)).unwrap();
        seq += 1;
    }
    assert!(!spare.exists(), "the rotation did not take the spare");
    // Only the header and a frame or two are written in it yet.
    let reused = std::fs::metadata(&next).unwrap();
    assert!(
        reused.blocks() * 512 >= reused.len(),
        "{} of {} bytes reserved",
        reused.blocks() * 512,
        reused.len()
    );
    ch.close().unwrap();
    assert_eq!(read_all(dir.path()), (0..seq).collect::<Vec<_>>());
}

#[test]
fn corrupt_frame_in_sealed_segment_is_a_typed_error_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 200, 100);
    let segs = segment_files(dir.path());
    assert!(segs.len() > 3);
    let victim = &segs[1];
    // Flip a bit in the payload of the first frame of the second segment.
    let f = OpenOptions::new().write(true).read(true).open(victim).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 64 + 16 + 10).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], 64 + 16 + 10).unwrap();
    drop(f);
    let ch = open_small(dir.path());
    let mut rx = ch.rx();
    let mut ok = 0;
    let err = loop {
        match rx.recv_ref() {
            Ok(m) => {
                assert_eq!(check_payload(&m), ok);
                ok += 1;
            }
            Err(e) => break e,
        }
    };
    match &err {
        RecvError::Corrupted { segment, offset, .. } => {
            assert_eq!(segment, victim);
            assert_eq!(*offset, 64);
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert!(err.to_string().contains("checksum"), "{err}");
    // The receiver stays at the bad frame: asking again gives the same error.
    assert!(rx.recv().unwrap_err().is_corrupted());
}

#[test]
fn missing_middle_segment_fails_open_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 200, 100);
    let segs = segment_files(dir.path());
    std::fs::remove_file(&segs[2]).unwrap();
    let err = FileChannel::open(dir.path()).unwrap_err();
    match err {
        Error::MissingSegment {
            missing, before, after, ..
        } => {
            assert_eq!((missing, before, after), (3, 2, 4));
        }
        other => panic!("expected MissingSegment, got {other:?}"),
    }
    // Nothing was deleted.
    assert_eq!(segment_files(dir.path()).len(), segs.len() - 1);
}

#[test]
fn garbage_segment_header_fails_open_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 200, 100);
    let segs = segment_files(dir.path());
    let mut f = OpenOptions::new().write(true).open(&segs[1]).unwrap();
    f.write_all(b"this is not a segment").unwrap();
    drop(f);
    let before = std::fs::read(&segs[1]).unwrap();
    let err = FileChannel::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::BadSegment { path, .. } if path == &segs[1]),
        "{err:?}"
    );
    assert!(err.to_string().contains(&*segs[1].to_string_lossy()));
    // Left exactly as it was (not trimmed, rewritten or renamed).
    assert!(std::fs::read(&segs[1]).unwrap() == before, "the file changed");
}

#[test]
fn unknown_format_version_fails_open_with_unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 5, 10);
    let seg = segment_files(dir.path()).pop().unwrap();
    let mut header = std::fs::read(&seg).unwrap()[..64].to_vec();
    header[8] = 9;
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&header, 0)
        .unwrap();
    match FileChannel::open(dir.path()).unwrap_err() {
        Error::UnsupportedVersion {
            version,
            supported,
            path,
        } => {
            assert_eq!((version, supported), (9, 2));
            assert_eq!(path, seg);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn files_that_are_not_the_channels_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.txt"), b"mine").unwrap();
    std::fs::write(dir.path().join("segment.notes"), b"also mine").unwrap();
    write_msgs(dir.path(), 300, 100);
    // Consume everything so GC deletes segments.
    {
        let ch = open_small(dir.path());
        let mut rx = ch.rx();
        assert_eq!(drain(&mut rx).len(), 300);
    }
    assert_eq!(std::fs::read(dir.path().join("README.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(dir.path().join("segment.notes")).unwrap(), b"also mine");
}

#[test]
fn interrupted_segment_creation_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 20, 100);
    let (_, id) = newest_segment(dir.path());
    // A crash right after creating the next file, before its header.
    let next = dir.path().join(format!("segment.{:020}", id + 1));
    std::fs::File::create(&next).unwrap().set_len(4096).unwrap();
    assert_eq!(read_all(dir.path()), (0..20).collect::<Vec<_>>());
    assert!(!next.exists());
}

#[test]
fn older_segment_that_lost_its_seal_is_resealed_after_its_last_valid_frame() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 200, 100);
    let segs = segment_files(dir.path());
    // Zero the last frame and the seal of segment 2, as a power loss before
    // that segment was synced would.
    let victim = &segs[1];
    let end = data_end(victim);
    overwrite(victim, end - 16 - 112 - 16, &[0u8; 16 + 16 + 112]);
    let got = read_all(dir.path());
    // One message is lost (unconfirmed data, power loss); everything else
    // is delivered in order, nothing corrupt.
    assert_eq!(got.len(), 199);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    // The repair is on disk: a second open reads the same, and takes the
    // segment as it is (before, every open repaired it again: rewrote the
    // seal, zeroed the rest, logged the same loss).
    let repaired = std::fs::metadata(victim).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(read_all(dir.path()), got);
    assert_eq!(std::fs::metadata(victim).unwrap().modified().unwrap(), repaired);
}

/// A power loss can keep the page holding an older segment's seal and lose
/// an earlier one. After a clean close the seal is trusted (everything was
/// fsynced, so a hole is damage: a typed error, guarantee 3); after a crash
/// open scans older segments and re-seals at the hole, so that receivers go
/// on past it (a gap, logged) instead of stopping there for good.
#[test]
fn a_hole_before_an_intact_seal_is_resealed_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 200, 100);
    let segs = segment_files(dir.path());
    let victim = &segs[1];
    overwrite(victim, 64 + 128, &[0u8; 128]);
    let seal_area = std::fs::read(victim).unwrap()[(data_end(victim) - 16) as usize..].to_vec();
    {
        let ch = open_small(dir.path());
        let mut rx = ch.rx_ack();
        let err = loop {
            if let Err(e) = rx.recv() {
                break e;
            }
        };
        assert!(matches!(err, RecvError::Corrupted { .. }), "{err:?}");
    }
    // The seal is still there: the clean open left the segment alone.
    assert_eq!(
        std::fs::read(victim).unwrap()[(data_end(victim) - 16) as usize..],
        seal_area[..]
    );
    write_head(dir.path(), 0, 0);
    let got = read_all(dir.path());
    assert!(got.len() < 200, "the hole and what follows it in that segment are gone");
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(got.last(), Some(&199), "receivers go on past the hole");
    // The channel takes new messages and delivers them after the rest.
    {
        let ch = open_small(dir.path());
        ch.tx().send(&payload(200, 100)).unwrap();
    }
    let again = read_all(dir.path());
    assert_eq!(again[..got.len()], got[..]);
    assert_eq!(again.last(), Some(&200));
}

#[test]
fn bad_configuration_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for b in [
        FileChannel::builder().segment_size(100),
        FileChannel::builder().flush_interval(std::time::Duration::ZERO),
        FileChannel::builder().max_message_size(usize::MAX),
    ] {
        assert!(matches!(b.open(dir.path()), Err(Error::Config(_))));
    }
}

#[test]
fn a_file_in_place_of_the_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    std::fs::File::create(&path).unwrap().seek(SeekFrom::Start(0)).unwrap();
    assert!(matches!(FileChannel::open(&path), Err(Error::Io { .. })));
}

/// The newest segment file and its id.
fn newest_segment(dir: &Path) -> (std::path::PathBuf, u64) {
    let last = segment_files(dir).pop().unwrap();
    let id = segment_id(&last);
    (last, id)
}

/// The id in a segment file's name.
fn segment_id(path: &Path) -> u64 {
    path.file_name().unwrap().to_str().unwrap()["segment.".len()..]
        .parse()
        .unwrap()
}

/// Writes `bytes` over a file at `at`.
fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

/// A valid segment header, built from the documented layout.
fn segment_header(id: u64, base_seq: u64, base_pos: u64) -> [u8; 64] {
    let mut header = [0u8; 64];
    header[0..8].copy_from_slice(b"FCHANSEG");
    header[8] = 2;
    header[16..24].copy_from_slice(&id.to_le_bytes());
    header[24..32].copy_from_slice(&base_seq.to_le_bytes());
    header[32..40].copy_from_slice(&base_pos.to_le_bytes());
    let crc = crc32fast::hash(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Regression (found by the I/O-error injection test): a rotation whose new
/// segment could be neither finished nor removed left an empty `segment.N+1`
/// behind, while the sender carried on in segment N with smaller messages
/// that still fit. The next open refused the channel ("holds messages up to
/// sequence 24 but the next segment starts at 22"). An empty newest segment
/// after an unsealed one is now removed as an unfinished rotation.
#[test]
fn unfinished_rotation_leaving_an_empty_segment_after_an_unsealed_one_reopens() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 10, 100);
    let (_, id) = newest_segment(dir.path());
    // A valid header for the next segment claiming an earlier start, no frames.
    let header = segment_header(id + 1, 5, 1 << 40);
    let next = dir.path().join(format!("segment.{:020}", id + 1));
    let mut file = header.to_vec();
    file.resize(4096, 0);
    std::fs::write(&next, file).unwrap();
    assert_eq!(read_all(dir.path()), (0..10).collect::<Vec<_>>());
    assert!(!next.exists());
}

/// A header with a valid CRC whose numbers are near `u64::MAX` (only a
/// crafted file has one) is refused at open: counting on from it would
/// overflow.
#[test]
fn out_of_range_header_numbers_fail_open() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 200, 100);
    let first = segment_files(dir.path())[0].clone();
    let id = segment_id(&first);
    let before = std::fs::read(&first).unwrap();
    for (base_seq, base_pos) in [(u64::MAX - 1, 0), (0, u64::MAX - 100)] {
        overwrite(&first, 0, &segment_header(id, base_seq, base_pos));
        match FileChannel::open(dir.path()) {
            Err(Error::BadSegment { path, reason }) => {
                assert_eq!(path, first);
                assert!(reason.contains("out of range"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    overwrite(&first, 0, &before[..64]);
    assert_eq!(std::fs::read(&first).unwrap(), before, "open changed nothing");
    assert_eq!(read_all(dir.path()), (0..200).collect::<Vec<_>>());
}

/// Regression (found by the I/O-error injection test, once in a few runs): a
/// rotation that reused a spare file renamed it into place, then failed to
/// fsync the directory and reported "disk full", so the sender carried on in
/// the old segment. The next open saw an "empty" newest segment full of the
/// spare's stale frames and refused the channel. Such a failure now poisons
/// the writer, and open treats a newest segment without a *valid* first frame
/// after an unsealed one as an unfinished rotation.
#[test]
fn unfinished_rotation_into_a_recycled_file_with_stale_frames_reopens() {
    let dir = tempfile::tempdir().unwrap();
    write_msgs(dir.path(), 10, 100);
    let (last, id) = newest_segment(dir.path());
    // The recycled file: a copy of a real segment (valid frames of another
    // segment id) with a fresh header for the next id.
    let mut file = std::fs::read(&last).unwrap();
    file[..64].copy_from_slice(&segment_header(id + 1, 5, 1 << 40));
    let next = dir.path().join(format!("segment.{:020}", id + 1));
    std::fs::write(&next, file).unwrap();
    assert_eq!(read_all(dir.path()), (0..10).collect::<Vec<_>>());
    assert!(!next.exists());
}
