//! What each durability mode promises, as far as a test in one process can
//! see it: offsets, visibility, group commit. (Crash behaviour is in
//! `crash.rs`.)

mod common;
use common::*;
use filechannel::{Durability, FileChannel};
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn sync_mode_send_returns_only_after_the_message_is_fsynced() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .durability(Durability::Sync)
        .segment_size(4096)
        .open(dir.path())
        .unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx();
    for seq in 0..50 {
        tx.send(&payload(seq, 300)).unwrap();
        assert_eq!(ch.sync_offset(), seq + 1);
        assert_eq!(ch.flush_offset(), seq + 1);
        assert_eq!(check_payload(&rx.try_recv().unwrap()), seq);
    }
}

#[test]
fn concurrent_sync_senders_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .durability(Durability::Sync)
        .open(dir.path())
        .unwrap();
    let mut rx = ch.rx();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let tx = ch.tx();
            thread::spawn(move || {
                for i in 0..40 {
                    tx.send(&payload(t << 32 | i, 64)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(ch.sync_offset(), 320);
    let mut per = [0u64; 8];
    for m in drain(&mut rx) {
        let v = check_payload(&m);
        assert_eq!(v & 0xFFFF_FFFF, per[(v >> 32) as usize]);
        per[(v >> 32) as usize] += 1;
    }
    assert_eq!(per, [40; 8]);
}

#[test]
fn buffered_sync_call_makes_everything_durable() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    for seq in 0..500 {
        tx.send(&payload(seq, 100)).unwrap();
    }
    assert_eq!(ch.write_offset(), 500);
    // Finished and published behind the writer: by the flusher within
    // `flush_interval`, or at once by `flush`.
    assert!(ch.flush_offset() <= 500);
    tx.flush().unwrap();
    assert_eq!(ch.flush_offset(), 500, "flush publishes every buffered send");
    tx.sync().unwrap();
    assert_eq!(ch.sync_offset(), 500);
}

/// `Buffered` mode leaves small messages' CRCs to a completer: the flusher
/// publishes them within `flush_interval` with nobody asking, a receiver
/// that runs out of frames finishes them itself (so a message is there
/// once its `send` has returned, as with `std::sync::mpsc`), and a large
/// message publishes itself and every small one before it.
#[test]
fn buffered_sends_are_finished_behind_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    for seq in 0..300 {
        tx.send(&payload(seq, 40)).unwrap();
    }
    assert_eq!(ch.write_offset(), 300);
    wait_for("the flusher to publish every send", || ch.flush_offset() == 300);

    let mut rx = ch.rx();
    assert_eq!(drain(&mut rx).len(), 300);
    for seq in 300..600 {
        tx.send(&payload(seq, size_for(seq, 100))).unwrap();
        assert_eq!(rx.len(), 1);
        assert_eq!(check_payload(&rx.try_recv().unwrap()), seq);
    }

    let (small, large) = (payload(600, 16), payload(601, 2000));
    tx.send(&small).unwrap();
    tx.send(&small).unwrap();
    tx.send(&large).unwrap();
    assert_eq!(
        ch.flush_offset(),
        603,
        "the large send publishes the small ones before it"
    );
    ch.close().unwrap();
    drop((tx, rx, ch));
    let ch = open_small(dir.path());
    let mut rx = ch.rx();
    // The first 600 were consumed; all three after them survive the close.
    let got = drain(&mut rx);
    assert!(got.ends_with(&[small.clone(), small, large]), "{} messages", got.len());
}

#[test]
fn close_fsyncs_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let tx = ch.tx();
    for seq in 0..100 {
        tx.send(&payload(seq, 100)).unwrap();
    }
    ch.close().unwrap();
    assert_eq!(ch.sync_offset(), 100);
    ch.close().unwrap(); // twice is fine
}

#[test]
fn too_large_message_is_refused_and_the_channel_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder().max_message_size(100).open(dir.path()).unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx();
    tx.send(&[1; 100]).unwrap();
    let err = tx.send(&[2; 101]).unwrap_err();
    assert!(
        err.to_string().contains("101 bytes exceeds max_message_size of 100"),
        "{err}"
    );
    tx.send(&[3; 5]).unwrap();
    assert_eq!(rx.recv().unwrap(), [1; 100]);
    assert_eq!(rx.recv().unwrap(), [3; 5]);
    assert!(rx.try_recv().unwrap_err().is_empty());
}

/// A temporary directory under the build's target directory: on the disk
/// the project lives on, where `/tmp` may be a tmpfs (whose pages are never
/// written out, and which cannot zero a range in place).
fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `Rss` and dirty pages (`Shared_Dirty` plus `Private_Dirty`: a page mapped
/// by this process alone counts as private) in kB of this process's map of
/// `file`, from `/proc/self/smaps`.
fn mapped_kb(file: &std::path::Path) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    // smaps names the file by its resolved path.
    let resolved = file.canonicalize().unwrap();
    let name = resolved.to_str().unwrap();
    let mut lines = smaps.lines();
    while let Some(line) = lines.next() {
        if !line.ends_with(name) {
            continue;
        }
        let (mut rss, mut dirty) = (None, Some(0));
        for field in lines.by_ref().take_while(|l| !l.starts_with("VmFlags")) {
            let kb = || field.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok());
            match field.split(':').next() {
                Some("Rss") => rss = kb(),
                Some("Shared_Dirty" | "Private_Dirty") => dirty = dirty.zip(kb()).map(|(a, b)| a + b),
                _ => {}
            }
        }
        return rss.zip(dirty);
    }
    None
}

/// In `Sync` mode the flusher maps the pages ahead of the writer in clean:
/// dirty pages ahead of the data would be written out, zeros, by every
/// group commit's fsync.
#[test]
fn sync_mode_maps_pages_ahead_of_the_writer_without_dirtying_them() {
    let dir = disk_dir();
    let ch = FileChannel::builder()
        .durability(Durability::Sync)
        .open(dir.path())
        .unwrap();
    let tx = ch.tx();
    tx.send(&payload(0, 100)).unwrap();
    let segment = segment_files(dir.path()).remove(0);
    // The flusher maps up to 8 MiB ahead, 256 KiB a round; most of it after
    // the one send's fsync, which would have cleaned what it found dirty.
    wait_for("pages mapped ahead", || {
        mapped_kb(&segment).is_some_and(|(rss, _)| rss >= 2048)
    });
    let (rss, dirty) = mapped_kb(&segment).unwrap();
    assert!(dirty <= 16, "{dirty} kB of {rss} kB mapped are dirty after an fsync");
    tx.send(b"more").unwrap();
    assert_eq!(ch.sync_offset(), 2);
}

/// Where the first byte of data at or after `from` lies in `file`; `None`
/// when only holes and unwritten blocks follow. With `uncached`, clean
/// cached pages are dropped first: ext4 counts an unwritten block whose page
/// is cached (read ahead, say) as data.
fn next_data(file: &std::path::Path, from: u64, uncached: bool) -> Option<u64> {
    let f = std::fs::File::open(file).unwrap();
    if uncached {
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
    match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(from)) {
        Ok(at) => Some(at),
        Err(rustix::io::Errno::NXIO) => None,
        Err(e) => panic!("SEEK_DATA: {e}"),
    }
}

/// In `Buffered` and `Flush` mode the flusher zero-fills pages ahead of the
/// writer, which makes them dirty; `close` gives them back (unwritten
/// blocks, still allocated) so that its fsync does not write megabytes of
/// zeros, and the channel reopens and goes on as before.
#[test]
fn close_does_not_write_out_the_zero_filled_pages_ahead_of_the_writer() {
    let dir = disk_dir();
    let ch = FileChannel::open(dir.path()).unwrap();
    let tx = ch.tx();
    for seq in 0..100 {
        tx.send(&payload(seq, 100)).unwrap();
    }
    tx.flush().unwrap();
    let segment = segment_files(dir.path()).remove(0);
    // SEEK_DATA reports unwritten blocks as data once their pages are
    // cached: the fill ahead of the writer has begun.
    wait_for("the fill ahead", || {
        next_data(&segment, 1 << 20, false) == Some(1 << 20)
    });
    ch.close().unwrap();
    drop((tx, ch));
    // Pages the close's fsync wrote out are written blocks now: data. (The
    // channel's maps are gone, so every clean page can be dropped.)
    assert_eq!(
        next_data(&segment, 1 << 20, true),
        None,
        "zeros ahead of the writer were written out"
    );
    let ch = FileChannel::open(dir.path()).unwrap();
    let mut rx = ch.rx();
    let tx = ch.tx();
    for seq in 100..200 {
        tx.send(&payload(seq, 100)).unwrap();
    }
    for seq in 0..200 {
        assert_eq!(check_payload(&rx.recv_ref().unwrap()), seq);
    }
    assert!(rx.try_recv().unwrap_err().is_empty());
}

/// A receiver blocked in `recv` gets a small `Buffered` send at once, also
/// with a long `flush_interval`: it used to wait the whole interval (the
/// flusher, counting the waiter as work, parked that long and no send
/// woke it), for ever with `Duration::MAX`.
#[test]
fn blocked_recv_wakes_for_a_small_buffered_send_with_a_long_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .flush_interval(Duration::from_secs(3600)) // Duration::MAX: recv() never returns
        .open(dir.path())
        .unwrap();
    let mut rx = ch.rx();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let m = rx.recv_timeout(Duration::from_secs(10));
        (m, t.elapsed())
    });
    // Let the receiver block (the flusher used to count it as work, park a
    // whole `flush_interval`, and miss the send below).
    std::thread::sleep(Duration::from_millis(500));
    ch.tx().send(b"x").unwrap(); // <= 128 B: left for a completer, nobody notified
    let (m, waited) = waiter.join().unwrap();
    assert_eq!(m.unwrap(), b"x");
    assert!(waited < Duration::from_secs(3), "woken only after {waited:?}");
    ch.close().unwrap();
}

/// Once the flusher has had work, it parks a whole `flush_interval` between
/// rounds, and a send did not wake it: a receiver that fell asleep after
/// that got neither a large message (published by the sender itself, with
/// nobody notified) nor a small one (left for the flusher) before the
/// interval ran out.
#[test]
fn blocked_recv_wakes_for_sends_while_the_flusher_is_parked_busy() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .flush_interval(Duration::from_secs(3600))
        .open(dir.path())
        .unwrap();
    let mut rx = ch.rx();
    let tx = ch.tx();
    for (i, msg) in [vec![1u8; 8], vec![2u8; 1000], vec![3u8; 8], vec![4u8; 1000]]
        .into_iter()
        .enumerate()
    {
        let (got, waited) = std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let t = Instant::now();
                let m = rx.recv_timeout(Duration::from_secs(10));
                (m, t.elapsed())
            });
            // The receiver falls asleep; the flusher, which had work in the
            // previous round, is parked for the interval.
            std::thread::sleep(Duration::from_millis(300));
            tx.send(&msg).unwrap();
            waiter.join().unwrap()
        });
        assert_eq!(got.unwrap(), msg, "message {i}");
        assert!(
            waited < Duration::from_secs(3),
            "message {i} ({} B) woke it only after {waited:?}",
            msg.len()
        );
    }
    ch.close().unwrap();
}

#[test]
fn huge_timeouts_and_deadlines_neither_panic_nor_time_out_early() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .flush_interval(Duration::MAX)
        .open(dir.path())
        .unwrap();
    let mut rx = ch.rx();
    let tx = ch.tx();
    tx.send(b"a").unwrap();
    tx.send(b"b").unwrap();
    assert_eq!(rx.recv_timeout(Duration::MAX).unwrap(), b"a");
    let far = Instant::now()
        .checked_add(Duration::from_secs(100 * 365 * 86_400))
        .unwrap();
    assert_eq!(rx.recv_deadline(far).unwrap(), b"b");
    drop(tx);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            ch.close().unwrap();
        });
        let t = Instant::now();
        assert!(rx.recv_timeout(Duration::MAX).unwrap_err().is_disconnected());
        assert!(t.elapsed() < Duration::from_secs(5));
    });
}
