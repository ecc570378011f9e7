//! Guarantees 4 and 5: segments go only when every receiver has passed (and
//! acked) them; an acking receiver sees every un-acked message after a
//! restart; disk usage stays bounded while receivers keep up.

mod common;
use common::*;
use filechannel::{AckError, FileChannel};

#[test]
fn segments_are_deleted_once_every_receiver_has_read_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut a = ch.rx();
    let mut b = ch.rx();
    for seq in 0..400 {
        tx.send(&payload(seq, 200)).unwrap();
    }
    let total = segment_files(dir.path()).len();
    assert!(total > 10);
    assert_eq!(drain(&mut a).len(), 400);
    assert_eq!(
        segment_files(dir.path()).len(),
        total,
        "b has not read anything: nothing may go"
    );
    for _ in 0..200 {
        b.recv().unwrap();
    }
    wait_for("segments b passed to go", || segment_files(dir.path()).len() < total);
    let mid = segment_files(dir.path()).len();
    assert!(mid > 1, "segments b has not passed stay ({mid} of {total})");
    assert_eq!(drain(&mut b).len(), 200);
    wait_for("only the active segment to remain", || {
        segment_files(dir.path()).len() == 1
    });
}

#[test]
fn nothing_is_deleted_while_no_receiver_exists() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    for seq in 0..300 {
        tx.send(&payload(seq, 200)).unwrap();
    }
    let n = segment_files(dir.path()).len();
    drop(tx);
    ch.close().unwrap();
    let ch = open_small(dir.path());
    assert_eq!(segment_files(dir.path()).len(), n);
    let mut rx = ch.rx();
    assert_eq!(check_payload(&rx.recv().unwrap()), 0);
}

/// Active segment, up to two spares, one segment the flusher has not
/// collected yet, the head and lock files.
const BOUND: u64 = 5 * (64 << 10) + 8192;

#[test]
fn disk_usage_stays_bounded_when_receivers_keep_up() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder().segment_size(64 << 10).open(dir.path()).unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx();
    let mut ack = ch.rx_ack();
    let mut peak = 0;
    for seq in 0..20_000u64 {
        tx.send(&payload(seq, 500)).unwrap();
        assert_eq!(check_payload(&rx.recv_ref().unwrap()), seq);
        assert_eq!(check_payload(&ack.recv_ref().unwrap()), seq);
        if seq % 10 == 9 {
            ack.ack(10).unwrap();
        }
        if seq % 1000 == 0 {
            // GC is the flusher's, which a loaded machine may hold up for
            // a time slice: the bound must hold again within a second.
            let mut usage = ch.disk_usage().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while usage > BOUND && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
                usage = ch.disk_usage().unwrap();
            }
            peak = peak.max(usage);
        }
    }
    // 10 MB flowed through 64 KiB segments.
    assert!(peak <= BOUND, "peak disk usage {peak} bytes");
    wait_for("consumed segments to go", || segment_files(dir.path()).len() <= 2);
}

#[test]
fn ack_receiver_holds_segments_until_acked() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut rx = ch.rx_ack();
    for seq in 0..300 {
        tx.send(&payload(seq, 200)).unwrap();
    }
    let total = segment_files(dir.path()).len();
    assert_eq!(drain(&mut rx).len(), 300);
    // GC runs on the flusher: a receiver dropped runs it now, so what it
    // would delete is gone before the check.
    drop(ch.rx());
    assert_eq!(segment_files(dir.path()).len(), total, "read but not acked: kept");
    rx.ack(150).unwrap();
    let mid = segment_files(dir.path()).len();
    assert!(mid < total);
    rx.ack(150).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(rx.acked_offset(), 300);
}

/// An acking receiver that has acked everything it read lets the segment
/// it leaves go as it enters the next one, not only at its next ack (until
/// then the segment stayed on disk).
#[test]
fn an_ack_receiver_that_acked_everything_lets_a_segment_go_as_it_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut rx = ch.rx_ack();
    for seq in 0..100 {
        tx.send(&payload(seq, 200)).unwrap();
    }
    tx.flush().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() > 2);
    // The second segment's first sequence number, from its header (offset
    // 24, DESIGN.md §2).
    let header = std::fs::read(&files[1]).unwrap();
    let second = u64::from_le_bytes(header[24..32].try_into().unwrap());
    for seq in 0..second {
        assert_eq!(check_payload(&rx.recv().unwrap()), seq);
    }
    rx.ack(second).unwrap();
    assert!(files[0].exists(), "the receiver is still in the first segment");
    assert_eq!(check_payload(&rx.recv().unwrap()), second);
    wait_for("the first segment to go without another ack", || !files[0].exists());
    assert!(files[1].exists(), "the message read from the second is not acked");
}

#[test]
fn acking_more_than_was_received_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx_ack();
    tx.send(b"a").unwrap();
    tx.send(b"b").unwrap();
    rx.recv().unwrap();
    match rx.ack(2) {
        Err(AckError::TooMany {
            requested: 2,
            unacked: 1,
        }) => {}
        other => panic!("expected TooMany, got {other:?}"),
    }
    assert_eq!(rx.acked_offset(), 0);
    rx.ack(1).unwrap();
    assert_eq!(rx.acked_offset(), 1);
}

#[test]
fn ack_receiver_after_restart_sees_every_unacked_message() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open_small(dir.path());
        let tx = ch.tx();
        let mut rx = ch.rx_ack();
        for seq in 0..500 {
            tx.send(&payload(seq, 100)).unwrap();
        }
        // Buffered: on disk (and past a crash) only once flushed, or after
        // the flusher's next round, which a loaded machine may delay.
        tx.flush().unwrap();
        for _ in 0..400 {
            rx.recv().unwrap();
        }
        rx.ack(321).unwrap();
        // Dropped without close, as a crash would leave it (the head file
        // is written at ack time).
        std::mem::forget(rx);
        std::mem::forget(tx);
        std::mem::forget(ch);
    }
    // The forgotten channel still holds the lock in this process; a real
    // restart is another process. Release it by closing a reopen attempt is
    // impossible, so copy the directory instead.
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    let ch = open_small(copy.path());
    let mut rx = ch.rx_ack();
    let got: Vec<u64> = drain(&mut rx).iter().map(|m| check_payload(m)).collect();
    assert_eq!(got, (321..500).collect::<Vec<_>>());
}

#[test]
fn plain_receivers_consumption_moves_the_start_of_new_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let tx = ch.tx();
    for seq in 0..10 {
        tx.send(&payload(seq, 16)).unwrap();
    }
    {
        let mut rx = ch.rx();
        for _ in 0..4 {
            rx.recv().unwrap();
        }
    }
    let mut rx = ch.rx();
    assert_eq!(rx.read_offset(), 4);
    assert_eq!(check_payload(&rx.recv().unwrap()), 4);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn dropped_ack_receivers_unacked_messages_stay_for_the_next_ack_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut fast = ch.rx();
    for seq in 0..300 {
        tx.send(&payload(seq, 200)).unwrap();
    }
    {
        let mut worker = ch.rx_ack();
        for _ in 0..100 {
            worker.recv().unwrap();
        }
        worker.ack(40).unwrap();
    }
    // The plain receiver races ahead and moves on; the worker's un-acked
    // messages must not go with it.
    assert_eq!(drain(&mut fast).len(), 300);
    let mut next_worker = ch.rx_ack();
    assert_eq!(check_payload(&next_worker.recv().unwrap()), 40);
    // Once the new worker acks, segments go as usual.
    let rest = drain(&mut next_worker).len() as u64;
    next_worker.ack(rest + 1).unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
}

/// A head behind the oldest segment (a power loss took back a head write
/// that was not fsynced, while the segment deletions it allowed were): a new
/// acking receiver starts at the oldest message there is, and cannot ack
/// messages it never received.
#[test]
fn a_stale_head_does_not_count_missing_messages_as_received() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open_small(dir.path());
        let tx = ch.tx();
        for seq in 0..300 {
            tx.send(&payload(seq, 200)).unwrap();
        }
        let mut worker = ch.rx_ack();
        for _ in 0..200 {
            worker.recv().unwrap();
        }
        worker.ack(200).unwrap();
        ch.close().unwrap();
    }
    // Both head slots say 0, as the file was before any head reached the
    // disk.
    write_head(dir.path(), 0, 0);
    let ch = open_small(dir.path());
    let mut rx = ch.rx_ack();
    let start = rx.read_offset();
    assert!(start > 0 && start <= 200, "starts at the oldest kept message, {start}");
    assert_eq!(rx.acked_offset(), start);
    let refused = rx.ack(1).unwrap_err();
    assert!(matches!(refused, AckError::TooMany { unacked: 0, .. }));
    assert!(refused.is_too_many() && !refused.is_closed());
    let first = rx.recv().unwrap();
    assert_eq!(check_payload(&first), start);
    rx.ack(1).unwrap();
}

/// Once the channel is closed an ack cannot be recorded: it is refused, not
/// silently dropped.
#[test]
fn ack_after_close_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    for seq in 0..3 {
        tx.send(&payload(seq, 10)).unwrap();
    }
    let mut rx = ch.rx_ack();
    rx.recv().unwrap();
    rx.ack(1).unwrap();
    rx.recv().unwrap();
    drop(tx);
    drop(ch);
    // Dropping the last handle closed the channel; the receiver drains.
    rx.recv().unwrap();
    let refused = rx.ack(1).unwrap_err();
    assert!(matches!(refused, AckError::Closed));
    assert!(refused.is_closed() && !refused.is_too_many());
    assert_eq!(rx.acked_offset(), 1);
    drop(rx);
    let ch = open_small(dir.path());
    let mut rx = ch.rx_ack();
    assert_eq!(
        check_payload(&rx.recv().unwrap()),
        1,
        "the refused ack's messages come again"
    );
}

#[test]
fn new_receiver_starts_where_live_receivers_are() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let tx = ch.tx();
    for seq in 0..10 {
        tx.send(&payload(seq, 16)).unwrap();
    }
    let mut a = ch.rx();
    let mut b = ch.rx();
    for _ in 0..6 {
        a.recv().unwrap();
    }
    for _ in 0..3 {
        b.recv().unwrap();
    }
    let mut c = ch.rx();
    assert_eq!(c.read_offset(), 3, "the oldest message some receiver still needs");
    assert_eq!(check_payload(&c.recv().unwrap()), 3);
}

#[test]
fn consumed_segments_are_recycled_and_stale_frames_never_resurface() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut rx = ch.rx();
    let mut next = 0;
    for round in 0..20 {
        for _ in 0..40 {
            tx.send(&payload(next, 200)).unwrap();
            next += 1;
        }
        for m in drain(&mut rx) {
            check_payload(&m);
        }
        wait_for("consumed segments to go", || segment_files(dir.path()).len() == 1);
        let spares = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("spare."))
            .count();
        assert!(spares <= 2, "round {round}: {spares} spares");
        if round > 2 {
            assert!(spares > 0, "round {round}: consumed segments should be kept as spares");
        }
    }
    // Write a few short messages into a recycled file, then take a crash
    // image: the tail of the file still holds the old segment's frames.
    let mut rx2 = ch.rx_ack();
    for _ in 0..3 {
        tx.send(&payload(next, 10)).unwrap();
        next += 1;
    }
    // What a process crash keeps in `Buffered` mode: what was flushed.
    tx.flush().unwrap();
    let image = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), image.path());
    let expected: Vec<u64> = drain(&mut rx2).iter().map(|m| check_payload(m)).collect();
    assert_eq!(expected.len(), 3);
    let ch2 = open_small(image.path());
    let mut rx3 = ch2.rx_ack();
    let got: Vec<u64> = drain(&mut rx3).iter().map(|m| check_payload(m)).collect();
    // The head file lags a little (at least once), so the image may deliver
    // a few already-consumed messages first, but only real ones, in order.
    assert!(got.ends_with(&expected), "{got:?}");
    assert_eq!(got, (got[0]..next).collect::<Vec<_>>());
    assert_eq!(ch2.write_offset(), next);
}

/// A long `flush_interval` does not hold consumed segments on disk: a
/// receiver passing a segment wakes the flusher to collect it, whatever the
/// flusher is doing (busy, it parks a whole interval between rounds).
#[test]
fn consumed_segments_go_even_with_a_long_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .segment_size(4096)
        .compression(filechannel::Compression::None)
        .flush_interval(std::time::Duration::from_secs(3600))
        // Receivers are woken by the sends themselves, not by the flusher.
        .durability(filechannel::Durability::Flush)
        .open(dir.path())
        .unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx();
    for seq in 0..200 {
        tx.send(&payload(seq, 100)).unwrap();
        assert_eq!(check_payload(&rx.recv().unwrap()), seq);
    }
    wait_for("the consumed segments to go", || segment_files(dir.path()).len() <= 2);
}

/// After `close`, every `ack` is `Closed`, whatever `n` (`ack(0)` returned
/// `Ok` and an `n` past the un-acked count `TooMany`).
#[test]
fn ack_after_close_is_refused_whatever_n() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let mut rx = ch.rx_ack();
    ch.tx().send(b"a").unwrap();
    rx.recv().unwrap();
    ch.close().unwrap();
    assert!(rx.ack(1).unwrap_err().is_closed());
    assert!(rx.ack(0).unwrap_err().is_closed());
    assert!(rx.ack(u64::MAX).unwrap_err().is_closed());
}
