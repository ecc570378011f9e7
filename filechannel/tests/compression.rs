//! Sealed segments are compressed in the background, crash-safely, and read
//! back transparently and in order.

mod common;
use common::*;
use filechannel::{Compression, FileChannel, RecvError};
use std::path::{Path, PathBuf};

/// A JSON-like line that compresses the way real events do.
fn event(seq: u64) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.extend_from_slice(
        format!(
            r#"{{"seq":{seq},"kind":"order","user":"u{}","qty":{},"note":"all good"}}"#,
            seq % 97,
            seq % 13
        )
        .as_bytes(),
    );
    v
}

fn check_event(m: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
    assert_eq!(m, event(seq), "message {seq} is corrupt");
    seq
}

fn open_with(dir: &Path, method: Compression) -> FileChannel {
    FileChannel::builder()
        .segment_size(4096)
        .compression(method)
        .open(dir)
        .unwrap()
}

fn compressed_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "z"))
        .collect();
    v.sort();
    v
}

/// Reads everything without consuming anything.
fn read_all(ch: &FileChannel) -> Vec<u64> {
    let mut rx = ch.rx_ack();
    rx.try_iter().map(|m| check_event(&m.unwrap())).collect()
}

fn fill(ch: &FileChannel, range: std::ops::Range<u64>) {
    let tx = ch.tx();
    for seq in range {
        tx.send(&event(seq)).unwrap();
    }
}

/// A Zstd channel holding events 0..400 with every segment but the last two
/// compressed, and its number of segments.
fn compressed_zstd(dir: &Path) -> (FileChannel, usize) {
    let ch = open_with(dir, Compression::Zstd);
    fill(&ch, 0..400);
    let segments = ch.stats().segments;
    wait_for("compression", || ch.stats().compressed_segments == segments - 2);
    (ch, segments)
}

#[test]
fn every_method_round_trips_through_compressed_segments_and_a_reopen() {
    for method in [Compression::Snappy, Compression::Gzip, Compression::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let ch = open_with(dir.path(), method);
        fill(&ch, 0..600);
        let segments = ch.stats().segments;
        assert!(segments > 10, "{method:?}: should rotate a lot");
        // All but the active segment and the one behind it get compressed.
        wait_for("compression", || ch.stats().compressed_segments == segments - 2);
        let stats = ch.stats();
        assert_eq!(stats.plain_segments, 2);
        assert!(stats.compression_ratio().unwrap() > 2.0, "{method:?}: {stats:?}");
        assert_eq!(compressed_files(dir.path()).len(), segments - 2);
        assert_eq!(read_all(&ch), (0..600).collect::<Vec<_>>(), "{method:?}");
        ch.close().unwrap();
        drop(ch);
        let ch = open_with(dir.path(), method);
        assert_eq!(ch.stats().compressed_segments, segments - 2);
        assert_eq!(read_all(&ch), (0..600).collect::<Vec<_>>(), "{method:?} after reopen");
    }
}

#[test]
fn receiver_in_the_middle_of_a_segment_reads_on_after_it_is_swapped_for_its_compressed_form() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_with(dir.path(), Compression::Zstd);
    let plain = |id: u64| dir.path().join(format!("segment.{id:020}"));
    let packed = |id: u64| dir.path().join(format!("segment.{id:020}.z"));
    // `slow` stays in segment 1 (which is then not compressed: it goes
    // next), so the swap happens under `rx`, in segment 2.
    let mut slow = ch.rx();
    let mut rx = ch.rx();
    fill(&ch, 0..60);
    let first = rx.mapped_range();
    let mut seq = 0;
    while rx.mapped_range() == first {
        assert_eq!(check_event(&rx.recv().unwrap()), seq);
        seq += 1;
    }
    // rx is now inside segment 2, holding its plain map.
    assert!(seq < 58, "segment 1 should hold fewer than 58 events");
    assert_eq!(check_event(&rx.recv().unwrap()), seq);
    seq += 1;
    fill(&ch, 60..400);
    wait_for("segment 2 to be compressed", || packed(2).exists());
    wait_for("its plain file to go", || !plain(2).exists());
    assert!(
        plain(1).exists() && !packed(1).exists(),
        "the slowest receiver's segment stays plain"
    );
    for seq in seq..400 {
        assert_eq!(check_event(&rx.recv().unwrap()), seq);
    }
    assert!(rx.try_recv().unwrap_err().is_empty());
    for seq in 0..400 {
        assert_eq!(check_event(&slow.recv().unwrap()), seq);
    }
}

#[test]
fn receivers_in_one_segment_share_one_map_or_one_decompressed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (ch, _) = compressed_zstd(dir.path());
    let (mut a, mut b) = (ch.rx(), ch.rx());
    for seq in 0..400 {
        assert_eq!(check_event(&a.recv().unwrap()), seq);
        assert_eq!(check_event(&b.recv().unwrap()), seq);
        // Compressed segments, the sealed plain one and the active one alike.
        assert_eq!(a.mapped_range(), b.mapped_range(), "message {seq}");
    }
}

/// Fan-out receivers that cross into a compressed segment at the same
/// moment decompress it once: the first makes the copy, the others wait for
/// it instead of making their own.
#[test]
fn receivers_entering_a_compressed_segment_together_decompress_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ch, segments) = compressed_zstd(dir.path());
    assert!(segments >= 4, "segments 1 and 2 must be compressed: {segments}");
    // How many messages segment 1 holds (the probe copies segments 1 and 2;
    // it acks nothing, so the receivers below start at message 0).
    let mut probe = ch.rx_ack();
    let first = probe.mapped_range();
    let mut in_first = 0;
    while {
        check_event(&probe.recv().unwrap());
        probe.mapped_range() == first
    } {
        in_first += 1;
    }
    drop(probe);
    assert_eq!(ch.stats().decompressions, 2);
    // Four receivers read segment 1 (one copy, made by the first) up to its
    // end, then all cross into segment 2 at once, each on its own thread.
    let mut rxs: Vec<_> = (0..4).map(|_| ch.rx()).collect();
    for rx in &mut rxs {
        for seq in 0..in_first {
            assert_eq!(check_event(&rx.recv().unwrap()), seq);
        }
    }
    assert_eq!(ch.stats().decompressions, 3);
    let start = std::sync::Barrier::new(rxs.len());
    std::thread::scope(|s| {
        for rx in &mut rxs {
            let start = &start;
            s.spawn(move || {
                start.wait();
                assert_eq!(check_event(&rx.recv().unwrap()), in_first);
            });
        }
    });
    assert_eq!(ch.stats().decompressions, 4, "segment 2 decompressed more than once");
    let range = rxs[0].mapped_range();
    assert!(rxs.iter().all(|rx| rx.mapped_range() == range), "one shared copy");
}

#[test]
fn a_segment_held_only_by_unacked_messages_is_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_with(dir.path(), Compression::Snappy);
    let mut rx = ch.rx_ack();
    fill(&ch, 0..400);
    // rx reads on without acking: segment 1 stays for it, but nobody is
    // reading it, so it is not the one consumed next.
    for seq in 0..400 {
        assert_eq!(check_event(&rx.recv().unwrap()), seq);
    }
    let packed = dir.path().join(format!("segment.{:020}.z", 1));
    wait_for("segment 1 to be compressed", || packed.exists());
    drop(rx);
    assert_eq!(read_all(&ch), (0..400).collect::<Vec<_>>());
}

#[test]
fn reopening_with_another_method_reads_old_segments_and_compresses_new_ones_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_with(dir.path(), Compression::Gzip);
    fill(&ch, 0..300);
    wait_for("gzip", || ch.stats().compressed_segments + 2 == ch.stats().segments);
    ch.close().unwrap();
    drop(ch);
    let ch = open_with(dir.path(), Compression::Zstd);
    fill(&ch, 300..600);
    wait_for("zstd", || ch.stats().compressed_segments + 2 == ch.stats().segments);
    let methods: Vec<u8> = compressed_files(dir.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap()[12])
        .collect();
    assert!(methods.contains(&2) && methods.contains(&3), "{methods:?}");
    assert_eq!(read_all(&ch), (0..600).collect::<Vec<_>>());
}

#[test]
fn no_compression_leaves_segments_plain() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_with(dir.path(), Compression::None);
    fill(&ch, 0..300);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(ch.stats().compressed_segments, 0);
    assert!(compressed_files(dir.path()).is_empty());
}

#[test]
fn segments_receivers_have_passed_are_deleted_not_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_with(dir.path(), Compression::Snappy);
    let tx = ch.tx();
    let mut rx = ch.rx();
    for seq in 0..400 {
        tx.send(&event(seq)).unwrap();
        assert_eq!(check_event(&rx.recv().unwrap()), seq);
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(ch.stats().compressed_segments, 0, "{:?}", ch.stats());
}

#[test]
fn corrupted_compressed_body_is_a_typed_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_with(dir.path(), Compression::Snappy);
    fill(&ch, 0..200);
    wait_for("compression", || {
        ch.stats().compressed_segments + 2 == ch.stats().segments
    });
    ch.close().unwrap();
    drop(ch);
    let victim = compressed_files(dir.path())[1].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let ch = open_with(dir.path(), Compression::Snappy);
    let mut rx = ch.rx_ack();
    let mut next = 0;
    let err = loop {
        match rx.recv_ref() {
            Ok(m) => {
                assert_eq!(check_event(&m), next);
                next += 1;
            }
            Err(e) => break e,
        }
    };
    match &err {
        RecvError::BadCompressedSegment { segment, reason } => {
            assert_eq!(segment, &victim);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected BadCompressedSegment, got {other:?}"),
    }
    assert!(err.is_corrupted());
    // Nothing is skipped: the receiver stays before the damaged segment.
    assert!(rx.recv().unwrap_err().is_corrupted());
}

/// Builds a channel whose segment 2 exists both plain (saved before
/// compression) and compressed; returns the saved plain bytes and the
/// compressed file's bytes.
fn both_forms(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let plain = dir.join(format!("segment.{:020}", 2));
    let packed = dir.join(format!("segment.{:020}.z", 2));
    let ch = open_with(dir, Compression::None);
    fill(&ch, 0..300);
    ch.close().unwrap();
    drop(ch);
    let plain_bytes = std::fs::read(&plain).unwrap();
    let ch = open_with(dir, Compression::Snappy);
    wait_for("segment 2 compressed", || !plain.exists() && packed.exists());
    ch.close().unwrap();
    drop(ch);
    (plain_bytes, std::fs::read(&packed).unwrap())
}

#[test]
fn crash_in_each_step_of_the_swap_reads_everything_exactly_once() {
    let z = |d: &Path| d.join(format!("segment.{:020}.z", 2));
    let p = |d: &Path| d.join(format!("segment.{:020}", 2));
    let tmp = |d: &Path| d.join(format!("segment.{:020}.z.tmp", 2));

    // 1. Crash while writing the compressed copy: plain + partial .tmp.
    let dir = tempfile::tempdir().unwrap();
    let (plain, packed) = both_forms(dir.path());
    std::fs::remove_file(z(dir.path())).unwrap();
    std::fs::write(p(dir.path()), &plain).unwrap();
    std::fs::write(tmp(dir.path()), &packed[..packed.len() / 2]).unwrap();
    let ch = open_with(dir.path(), Compression::None);
    assert!(!tmp(dir.path()).exists(), "the unfinished copy is removed");
    assert!(p(dir.path()).exists());
    assert_eq!(read_all(&ch), (0..300).collect::<Vec<_>>());
    drop(ch);

    // 2. Crash after the rename, before the plain file went: both, .z valid.
    let dir = tempfile::tempdir().unwrap();
    let (plain, _) = both_forms(dir.path());
    std::fs::write(p(dir.path()), &plain).unwrap();
    let ch = open_with(dir.path(), Compression::None);
    assert!(!p(dir.path()).exists(), "the valid compressed copy wins");
    assert!(z(dir.path()).exists());
    assert_eq!(read_all(&ch), (0..300).collect::<Vec<_>>());
    drop(ch);

    // 3. Both, but the .z is incomplete (a rename of an unsynced file after
    // power loss): the plain file stays, the broken copy goes.
    let dir = tempfile::tempdir().unwrap();
    let (plain, packed) = both_forms(dir.path());
    std::fs::write(p(dir.path()), &plain).unwrap();
    std::fs::write(z(dir.path()), &packed[..packed.len() - 10]).unwrap();
    let ch = open_with(dir.path(), Compression::None);
    assert!(p(dir.path()).exists());
    assert!(!z(dir.path()).exists());
    assert_eq!(read_all(&ch), (0..300).collect::<Vec<_>>());
    drop(ch);

    // 4. Swap finished: only the .z.
    let dir = tempfile::tempdir().unwrap();
    both_forms(dir.path());
    let ch = open_with(dir.path(), Compression::None);
    assert_eq!(read_all(&ch), (0..300).collect::<Vec<_>>());
}

#[test]
fn disk_usage_counts_compressed_files() {
    let plain_dir = tempfile::tempdir().unwrap();
    // Segments large enough that compression saves whole disk blocks.
    let open = |d: &Path, m| {
        FileChannel::builder()
            .segment_size(64 << 10)
            .compression(m)
            .open(d)
            .unwrap()
    };
    let plain = open(plain_dir.path(), Compression::None);
    fill(&plain, 0..20_000);
    let dir = tempfile::tempdir().unwrap();
    let ch = open(dir.path(), Compression::Zstd);
    fill(&ch, 0..20_000);
    wait_for("compression", || {
        ch.stats().compressed_segments + 2 == ch.stats().segments
    });
    let (before, after) = (plain.disk_usage().unwrap(), ch.disk_usage().unwrap());
    assert!(after < before / 2, "disk usage {before} plain, {after} compressed");
    let on_disk: u64 = compressed_files(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, ch.stats().compressed_bytes);
}

#[test]
fn compressed_segments_of_larger_settings_open_under_smaller_ones() {
    // Written with 64 KiB segments and 4 KiB messages, reopened with the
    // smallest settings: the old compressed segments hold 16 times the new
    // segment size, and they are valid. (The open used to refuse a
    // compressed segment over four times the new segment capacity.)
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .segment_size(64 << 10)
        .max_message_size(4096)
        .compression(Compression::Zstd)
        .open(dir.path())
        .unwrap();
    fill(&ch, 0..3000);
    wait_for("compression", || {
        ch.stats().compressed_segments >= 2 && ch.stats().compressed_segments + 2 >= ch.stats().segments
    });
    ch.close().unwrap();
    drop(ch);
    let ch = FileChannel::builder()
        .segment_size(4096)
        .max_message_size(256)
        .compression(Compression::Zstd)
        .open(dir.path())
        .unwrap();
    fill(&ch, 3000..3100);
    assert_eq!(read_all(&ch), (0..3100).collect::<Vec<_>>());
    ch.close().unwrap();
}
