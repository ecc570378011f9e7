//! What each durability mode promises, as far as a test in one process can
//! see it: offsets, visibility, group commit. (Crash behaviour is in
//! `crash.rs`.)

mod common;
use common::*;
use filechannel::{Durability, FileChannel};
use std::thread;

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
    assert_eq!(ch.flush_offset(), 500, "buffered sends are visible at once");
    tx.sync().unwrap();
    assert_eq!(ch.sync_offset(), 500);
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
