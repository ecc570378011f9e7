//! Guarantee 1: every receiver sees messages in the one order in which `send`
//! calls completed, and fan-out receivers do not affect each other.

mod common;
use common::*;
use filechannel::FileChannel;
use std::thread;

#[test]
fn single_sender_order_is_kept_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut rx = ch.rx();
    for seq in 0..3000 {
        tx.send(&payload(seq, size_for(seq, 300))).unwrap();
    }
    assert!(segment_files(dir.path()).len() > 50, "the test should rotate a lot");
    for seq in 0..3000 {
        assert_eq!(check_payload(&rx.recv_ref().unwrap()), seq);
    }
    assert!(rx.try_recv().unwrap_err().is_empty());
}

#[test]
fn zero_length_and_max_length_messages_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .segment_size(4096)
        .max_message_size(10_000)
        .open(dir.path())
        .unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx();
    let big = vec![0xAB; 10_000];
    tx.send(b"").unwrap();
    tx.send(&big).unwrap();
    tx.send(b"").unwrap();
    assert_eq!(rx.recv().unwrap(), b"");
    assert_eq!(rx.recv().unwrap(), big);
    assert_eq!(rx.recv().unwrap(), b"");
}

#[test]
fn fan_out_receivers_each_see_everything_independently() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    let mut fast = ch.rx();
    let mut slow = ch.rx();
    for seq in 0..500 {
        tx.send(&payload(seq, 100)).unwrap();
        assert_eq!(check_payload(&fast.recv().unwrap()), seq);
    }
    assert_eq!(fast.read_offset(), 500);
    assert_eq!(slow.read_offset(), 0);
    for seq in 0..500 {
        assert_eq!(check_payload(&slow.recv().unwrap()), seq);
    }
}

#[test]
fn concurrent_senders_are_seen_in_one_order_by_all_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let per_sender = 2000u64;
    let senders = 4u64;
    let mut a = ch.rx();
    let mut b = ch.rx();
    let handles: Vec<_> = (0..senders)
        .map(|s| {
            let tx = ch.tx();
            thread::spawn(move || {
                for i in 0..per_sender {
                    // Sender id in the top bits, its own counter below.
                    tx.send(&payload(s << 32 | i, 40)).unwrap();
                }
            })
        })
        .collect();
    let reader = thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..per_sender * senders {
            seen.push(check_payload(&b.recv().unwrap()));
        }
        seen
    });
    for h in handles {
        h.join().unwrap();
    }
    let mut first = Vec::new();
    for _ in 0..per_sender * senders {
        first.push(check_payload(&a.recv().unwrap()));
    }
    let second = reader.join().unwrap();
    assert_eq!(first, second, "both receivers must see the same order");
    let mut next = vec![0u64; senders as usize];
    for v in first {
        let (s, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
        assert_eq!(i, next[s], "sender {s}'s messages out of order");
        next[s] += 1;
    }
}

#[test]
fn receiver_created_later_starts_at_the_oldest_retained_message() {
    let dir = tempfile::tempdir().unwrap();
    let ch = open_small(dir.path());
    let tx = ch.tx();
    for seq in 0..10 {
        tx.send(&payload(seq, 20)).unwrap();
    }
    let mut rx = ch.rx();
    assert_eq!(check_payload(&rx.recv().unwrap()), 0);
}

#[test]
fn blocking_recv_wakes_for_a_send_from_another_thread_in_every_mode() {
    use filechannel::Durability::*;
    for mode in [Buffered, Flush, Sync] {
        let dir = tempfile::tempdir().unwrap();
        let ch = FileChannel::builder().durability(mode).open(dir.path()).unwrap();
        let mut rx = ch.rx();
        let tx = ch.tx();
        let t = thread::spawn(move || {
            for seq in 0..200 {
                tx.send(&payload(seq, 30)).unwrap();
                if seq % 50 == 0 {
                    thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        for seq in 0..200 {
            assert_eq!(check_payload(&rx.recv().unwrap()), seq, "{mode:?}");
        }
        t.join().unwrap();
    }
}

#[test]
fn iter_ends_when_the_channel_is_closed_and_drained() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let mut rx = ch.rx();
    let tx = ch.tx();
    let t = thread::spawn(move || {
        for seq in 0..100 {
            tx.send(&payload(seq, 16)).unwrap();
        }
    });
    t.join().unwrap();
    let closer = thread::spawn(move || {
        thread::sleep(std::time::Duration::from_millis(20));
        ch.close().unwrap();
    });
    let got: Vec<u64> = rx.iter().map(|m| check_payload(&m.unwrap())).collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    closer.join().unwrap();
}

#[test]
fn dropping_every_sender_handle_disconnects_receivers_after_they_drain() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let mut rx = ch.rx();
    let tx = ch.tx();
    tx.send(b"last words").unwrap();
    drop(ch);
    assert!(!tx.is_closed());
    drop(tx);
    assert_eq!(rx.recv().unwrap(), b"last words");
    assert!(rx.recv().unwrap_err().is_disconnected());
    assert!(rx.try_recv().unwrap_err().is_disconnected());
}

#[test]
fn recv_timeout_times_out_then_receives() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let mut rx = ch.rx();
    let start = Instant::now();
    assert!(rx.recv_timeout(Duration::from_millis(30)).unwrap_err().is_timeout());
    assert!(start.elapsed() >= Duration::from_millis(30));
    ch.tx().send(b"x").unwrap();
    assert_eq!(rx.recv_deadline(Instant::now() + Duration::from_secs(5)).unwrap(), b"x");
}

#[test]
fn len_counts_each_receivers_own_backlog_also_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ch = open_small(dir.path());
        let tx = ch.tx();
        let mut fast = ch.rx();
        let slow = ch.rx();
        let mut arx = ch.rx_ack();
        assert!(fast.is_empty() && slow.is_empty() && arx.is_empty());
        for seq in 0..200 {
            tx.send(&payload(seq, size_for(seq, 300))).unwrap();
        }
        tx.flush().unwrap();
        assert_eq!((fast.len(), slow.len(), arx.len()), (200, 200, 200));
        for _ in 0..150 {
            fast.recv_ref().unwrap();
        }
        for _ in 0..40 {
            arx.recv_ref().unwrap();
        }
        arx.ack(30).unwrap();
        // Fan-out: each receiver's backlog is its own.
        assert_eq!((fast.len(), slow.len(), arx.len()), (50, 200, 160));
        drop((fast, slow));
        ch.close().unwrap();
    }
    // After a reopen, an acking receiver's backlog starts at the first
    // un-acked message: 10 received but not acked come again.
    let ch = open_small(dir.path());
    let mut arx = ch.rx_ack();
    assert_eq!(arx.len(), 170);
    assert_eq!(check_payload(&arx.recv_ref().unwrap()), 30);
    assert_eq!(arx.len(), 169);
}

#[test]
fn a_receiver_by_mutable_reference_is_an_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let mut rx = ch.rx();
    let mut arx = ch.rx_ack();
    for seq in 0..10 {
        ch.tx().send(&payload(seq, 16)).unwrap();
    }
    ch.close().unwrap();
    let mut got = Vec::new();
    for m in &mut rx {
        got.push(check_payload(&m.unwrap()));
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!((&mut arx).into_iter().count(), 10);
    assert!(rx.is_empty() && arx.is_empty());
}

/// `for m in rx` with the receiver moved in, as with `std::sync::mpsc`: a
/// thread owns it, reads every message and ends at close.
#[test]
fn a_receiver_by_value_is_an_iterator() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    let rx = ch.rx();
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        for m in rx {
            got.push(check_payload(&m.unwrap()));
        }
        got
    });
    let tx = ch.tx();
    for seq in 0..50 {
        tx.send(&payload(seq, 16)).unwrap();
    }
    ch.close().unwrap();
    assert_eq!(reader.join().unwrap(), (0..50).collect::<Vec<_>>());
}
