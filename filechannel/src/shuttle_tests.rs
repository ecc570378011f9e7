//! Reliability test I, the shuttle half: the real channel (writer, catalog,
//! notifier, flusher and compressor threads) on the in-memory backend, driven
//! through randomized thread schedules by `shuttle`. Built only with
//! `RUSTFLAGS="--cfg shuttle"`, which swaps the crate's primitives for
//! shuttle's (see `sync`); `.ci/run` runs it.
//!
//! Two senders and two receivers (one plain, one acking every message) share
//! a channel of 4 KiB segments, so that the run rotates, compresses and
//! collects segments under the readers. Checked in every schedule: each
//! receiver gets every message exactly once, each sender's messages in the
//! order it sent them, with the right bytes; no thread deadlocks (shuttle
//! fails a schedule where every thread is blocked) or panics; `close`
//! wakes the receiver blocked in `recv`, and the reopened channel holds
//! nothing that was acked. The same runs in `Buffered` mode, where small
//! messages are finished behind the senders. A second scenario races `close` against
//! `Sync`-mode sends: every send that returned `Ok` reaches a receiver
//! draining the closed channel before `Disconnected`. A third fails one
//! storage operation (picked per schedule) under two rotating `Sync`-mode
//! senders: exactly the sends that returned `Ok` are delivered, also when
//! `close` races them. A fourth
//! checks that in `Buffered` mode `try_recv` and `len` see a message as soon
//! as its `send` has returned.
//!
//! `SHUTTLE_ITERATIONS` (default 10,000: half random schedules, half PCT)
//! sets the size; `scripts/soak` runs a larger one.

use crate::storage::sim::{OpKind, SimStorage};
use crate::sync::thread;
use crate::{Compression, Durability, FileChannel, RecvError};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Over all schedules: segments created, compressed (renamed to `.z`) and
/// removed, so the test shows it does reach rotation, compression and
/// collection (`std` atomics: bookkeeping outside the model).
static CREATED: AtomicU64 = AtomicU64::new(0);
static COMPRESSED: AtomicU64 = AtomicU64::new(0);
static REMOVED: AtomicU64 = AtomicU64::new(0);

const DIR: &str = "/shuttle";
/// Messages per sender.
const PER_SENDER: u32 = 20;
const SENDERS: u32 = 2;

/// Message `i` of sender `s`: every other one 300–1,000 bytes, so 4 KiB
/// segments rotate every few messages, the others 8–127 bytes, which a
/// `Buffered` send leaves for a completer to finish (`DEFER_MAX_LEN`).
fn payload(s: u32, i: u32) -> Vec<u8> {
    let len = if (s + i) % 2 == 0 {
        8 + ((s * 7 + i * 13) % 120) as usize
    } else {
        300 + ((s * 7 + i * 131) % 700) as usize
    };
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&s.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.resize(len, (s * 31 + i) as u8);
    v
}

/// Checks one received message against what its sender sent and returns
/// (sender, index).
fn check(msg: &[u8]) -> (u32, u32) {
    let s = u32::from_le_bytes(msg[..4].try_into().expect("4 bytes"));
    let i = u32::from_le_bytes(msg[4..8].try_into().expect("4 bytes"));
    assert!(s < SENDERS && i < PER_SENDER, "message from nowhere: ({s}, {i})");
    assert_eq!(msg, payload(s, i), "wrong bytes for ({s}, {i})");
    (s, i)
}

/// Every sender's messages, each once, in its order.
fn check_stream(got: &[(u32, u32)]) {
    let mut next = [0u32; SENDERS as usize];
    for &(s, i) in got {
        assert_eq!(
            i, next[s as usize],
            "sender {s}: got {i}, expected {}",
            next[s as usize]
        );
        next[s as usize] += 1;
    }
    assert!(next.iter().all(|&n| n == PER_SENDER), "messages missing: {next:?}");
}

fn open(sim: &SimStorage, durability: Durability) -> FileChannel<SimStorage> {
    FileChannel::builder()
        .segment_size(4096)
        .durability(durability)
        .compression(Compression::Snappy)
        .open_with(sim.clone(), Path::new(DIR))
        .expect("open")
}

/// A `Sync`-mode channel of 4 KiB segments, uncompressed.
fn open_sync(sim: &SimStorage) -> FileChannel<SimStorage> {
    FileChannel::builder()
        .segment_size(4096)
        .durability(Durability::Sync)
        .compression(Compression::None)
        .open_with(sim.clone(), Path::new(DIR))
        .expect("open")
}

fn scenario() {
    scenario_in(Durability::Flush);
}

/// The same in `Buffered` mode: the small messages' CRCs are filled in
/// behind the senders, by the flusher, by receivers that run out of
/// frames, and by rotations and large sends, all racing.
fn scenario_buffered() {
    scenario_in(Durability::Buffered);
}

fn scenario_in(durability: Durability) {
    let sim = SimStorage::new();
    let ch = open(&sim, durability);
    let total = (SENDERS * PER_SENDER) as usize;

    let mut rx = ch.rx();
    let (read_all, plain_done) = shuttle::sync::mpsc::channel();
    let plain = thread::spawn(move || {
        let mut got = Vec::with_capacity(total);
        while got.len() < total {
            got.push(check(&rx.recv().expect("recv")));
        }
        read_all.send(()).expect("main thread waits");
        // Closed by the main thread once everyone else is done: nothing is
        // left, and the receiver learns it.
        assert!(matches!(rx.recv(), Err(RecvError::Disconnected)));
        got
    });
    let mut arx = ch.rx_ack();
    let acking = thread::spawn(move || {
        let mut got = Vec::with_capacity(total);
        while got.len() < total {
            // The acking receiver reads without allocating, then acks: the
            // collector may delete the segment right after.
            got.push(check(&arx.recv_ref().expect("recv_ref")));
            arx.ack(1).expect("ack");
        }
        got
    });
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let tx = ch.tx();
            thread::spawn(move || {
                for i in 0..PER_SENDER {
                    tx.send(&payload(s, i)).expect("send");
                }
                // Shuttle does not model timeouts, so the flusher's timed
                // rounds never come: in `Buffered` mode a receiver blocked in
                // `recv` would wait forever for what a send left unfinished
                // after its last look. A flush finishes it and wakes it.
                tx.flush().expect("flush");
            })
        })
        .collect();
    for t in senders {
        t.join().expect("sender");
    }
    // A live receiver holds back the head, and acks after `close` are not
    // persisted (at-least-once): close once both receivers read everything.
    check_stream(&acking.join().expect("acking receiver"));
    plain_done.recv().expect("plain receiver read everything");
    ch.close().expect("close");
    check_stream(&plain.join().expect("plain receiver"));

    // Counted for the `Flush` run, which prints them.
    for (_, op) in sim.log().into_iter().filter(|_| durability == Durability::Flush) {
        let counter = match op {
            OpKind::Create(p) if p.to_string_lossy().contains("segment.") => &CREATED,
            OpKind::Rename(_, to) if to.to_string_lossy().ends_with(".z") => &COMPRESSED,
            OpKind::Remove(_) => &REMOVED,
            _ => continue,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    // The acking receiver acked everything: a reopened channel starts empty.
    let ch = open(&sim, durability);
    let mut rx = ch.rx_ack();
    assert!(rx.try_recv().is_err(), "an acked message came back");
    assert_eq!(ch.write_offset(), u64::from(SENDERS * PER_SENDER));
    ch.close().expect("close");
}

/// Messages the `Buffered` visibility scenario sends.
const VISIBLE: u32 = 8;

/// `Buffered` mode's promise to receivers, as with `std::sync::mpsc`: once a
/// `send` has returned, `try_recv` gets the message and `len` counts it,
/// whoever finishes it (the flusher, either receiver, or the next large
/// send), however their steps interleave. Two receivers, so that each races
/// the other's finishing as well as the flusher's.
fn visible_once_sent() {
    use shuttle::sync::atomic::AtomicU32;
    use std::sync::Arc;
    let ch = open(&SimStorage::new(), Durability::Buffered);
    let (mut rx, counter) = (ch.rx(), ch.rx());
    let tx = ch.tx();
    let sent = Arc::new(AtomicU32::new(0));
    let sender = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            for i in 0..VISIBLE {
                tx.send(&payload(0, i)).expect("send");
                sent.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let counting = {
        let sent = Arc::clone(&sent);
        thread::spawn(move || {
            while sent.load(Ordering::SeqCst) < VISIBLE {
                let confirmed = sent.load(Ordering::SeqCst);
                let len = counter.len();
                assert!(
                    len >= u64::from(confirmed),
                    "len() is {len} after {confirmed} returned sends"
                );
                thread::yield_now();
            }
        })
    };
    let mut got = 0;
    while got < VISIBLE {
        if got < sent.load(Ordering::SeqCst) {
            match rx.try_recv() {
                Ok(m) => assert_eq!(check(&m), (0, got)),
                Err(e) => panic!("message {got} was sent, but try_recv says {e:?}"),
            }
            got += 1;
        } else {
            thread::yield_now();
        }
    }
    sender.join().expect("sender");
    counting.join().expect("counting receiver");
    ch.close().expect("close");
}

/// Over all schedules of [`close_races_sync_sends`]: how many had 0, 1, 2
/// or 3 sends confirmed before `close` stopped them.
static CONFIRMED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// `close` racing `Sync`-mode sends: a send that returned `Ok` appended its
/// message before `close` stopped sends, and a receiver that drains the
/// closed channel gets it before `Disconnected` (before the fix, `close` let
/// receivers disconnect while such a message waited for its group commit).
fn close_races_sync_sends() {
    let ch = open_sync(&SimStorage::new());
    let mut rx = ch.rx();
    let tx = ch.tx();
    let sender = thread::spawn(move || (0..3).take_while(|&i| tx.send(&payload(0, i)).is_ok()).count());
    ch.close().expect("close");
    let got: Vec<_> = rx.iter().map(|m| check(&m.expect("recv"))).collect();
    let confirmed = sender.join().expect("sender");
    assert_eq!(
        got.len(),
        confirmed,
        "confirmed sends missing before Disconnected: {got:?}"
    );
    CONFIRMED[confirmed].fetch_add(1, Ordering::Relaxed);
    assert!(got.iter().enumerate().all(|(k, &(s, i))| s == 0 && i as usize == k));
}

/// Over all schedules of [`failure_during_sync_sends`]: schedules where some
/// send failed, and where the injected failure hit an fsync.
static FAILED_SENDS: AtomicU64 = AtomicU64::new(0);
static FAILED_FSYNCS: AtomicU64 = AtomicU64::new(0);

/// Two `Sync`-mode senders rotating 4 KiB segments while one storage
/// operation, picked by the schedule, fails: a group-commit leader and a
/// rotation may fsync the same segment at once. Checked: a send that
/// returned `Ok` is delivered, one that returned an error never is.
fn failure_during_sync_sends() {
    use shuttle::rand::Rng;
    let sim = SimStorage::new();
    let ch = open_sync(&sim);
    let from_op = sim.ops() + shuttle::rand::thread_rng().gen_range(1..120);
    sim.fail(crate::storage::sim::FailPlan {
        from_op,
        once: true,
        kind: std::io::ErrorKind::Other,
        only: None,
    });
    let mut rx = ch.rx();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let tx = ch.tx();
            thread::spawn(move || (0..8).map(|i| tx.send(&payload(s, i)).is_ok()).collect::<Vec<bool>>())
        })
        .collect();
    let outcomes: Vec<Vec<bool>> = senders.into_iter().map(|t| t.join().expect("sender")).collect();
    // What a power loss would leave now, before the receiver consumes
    // anything (consumed segments go).
    let now = sim.peek();
    let (power_loss, process_crash) = (now.durable_image(), now.process_crash_image());
    let mut delivered = vec![vec![false; 8]; SENDERS as usize];
    // The failure may hit the receiver instead (mapping the next segment):
    // it reports it and tries again at its next receive.
    let mut errors = 0;
    loop {
        match rx.try_recv() {
            Ok(m) => {
                let (s, i) = check(&m);
                delivered[s as usize][i as usize] = true;
            }
            Err(crate::TryRecvError::Empty) => break,
            Err(e) => {
                errors += 1;
                assert!(errors < 3, "receiver keeps failing: {e}");
            }
        }
    }
    assert_eq!(
        delivered,
        outcomes,
        "delivered messages differ from the confirmed ones (failed: {:?})",
        sim.failed()
    );
    if outcomes.iter().flatten().any(|ok| !ok) {
        FAILED_SENDS.fetch_add(1, Ordering::Relaxed);
    }
    if sim.failed().iter().any(|(_, op)| matches!(op, OpKind::SyncData(_))) {
        FAILED_FSYNCS.fetch_add(1, Ordering::Relaxed);
    }
    // What a power loss now leaves (the durable bytes and names) holds the
    // same messages: a send that failed on anything but an fsync (whose
    // pages' fate is unknown) must not be on disk, where a crash would bring
    // it back.
    drop(rx);
    let _ = ch.close();
    let fsync_failed = sim
        .failed()
        .iter()
        .any(|(_, op)| matches!(op, OpKind::SyncData(_) | OpKind::SyncDir(_)));
    for (image, name) in [(&power_loss, "power loss"), (&process_crash, "process crash")] {
        let reopened = open_sync(&SimStorage::from_image(Path::new(DIR), image));
        let mut on_disk = vec![vec![false; 8]; SENDERS as usize];
        for m in reopened.rx().try_iter() {
            let (s, i) = check(&m.expect("the crash image reads cleanly"));
            on_disk[s as usize][i as usize] = true;
        }
        for (s, (sent, kept)) in outcomes.iter().zip(&on_disk).enumerate() {
            for (i, (&ok, &there)) in sent.iter().zip(kept).enumerate() {
                assert!(!ok || there, "confirmed send {s}/{i} lost at a {name}");
                assert!(
                    ok || !there || (fsync_failed && name == "power loss"),
                    "failed send {s}/{i} is back after a {name} (failed: {:?})",
                    sim.failed()
                );
            }
        }
    }
}

/// Over all schedules of [`close_races_failing_sync_sends`]: schedules
/// where a send failed (the injected failure poisoned the channel).
static POISONED_BEFORE_CLOSE: AtomicU64 = AtomicU64::new(0);

/// Not an fsync: a failure there poisons the channel, but `Sync` sends
/// waiting for their group commit still get it.
fn not_an_fsync(op: &OpKind) -> bool {
    !matches!(op, OpKind::SyncData(_) | OpKind::SyncDir(_))
}

/// `close` racing two rotating `Sync`-mode senders while one storage
/// operation other than an fsync fails: every send that returned `Ok` is
/// delivered before `Disconnected`. (Before the fix, `close` on a channel
/// poisoned that way skipped the final sync: a send waiting for its group
/// commit then led its own after `close` had let receivers disconnect, and
/// its confirmed message was published after `closed`.)
fn close_races_failing_sync_sends() {
    use shuttle::rand::Rng;
    let sim = SimStorage::new();
    let ch = open_sync(&sim);
    sim.fail(crate::storage::sim::FailPlan {
        from_op: shuttle::rand::thread_rng().gen_range(1..30),
        once: true,
        kind: std::io::ErrorKind::Other,
        only: Some(not_an_fsync),
    });
    let mut rx = ch.rx();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let tx = ch.tx();
            thread::spawn(move || (0..6).map(|i| tx.send(&payload(s, i)).is_ok()).collect::<Vec<bool>>())
        })
        .collect();
    let _ = ch.close();
    let mut delivered = vec![vec![false; 6]; SENDERS as usize];
    let mut errors = 0;
    loop {
        match rx.recv() {
            Ok(m) => {
                let (s, i) = check(&m);
                delivered[s as usize][i as usize] = true;
            }
            Err(RecvError::Disconnected) => break,
            // The failure may hit the receiver (mapping the next segment):
            // it tries again at its next receive.
            Err(e) => {
                errors += 1;
                assert!(errors < 3, "receiver keeps failing: {e}");
            }
        }
    }
    let outcomes: Vec<Vec<bool>> = senders.into_iter().map(|t| t.join().expect("sender")).collect();
    for (s, (sent, got)) in outcomes.iter().zip(&delivered).enumerate() {
        for (i, (&ok, &there)) in sent.iter().zip(got).enumerate() {
            assert!(
                !ok || there,
                "confirmed send {s}/{i} missing before Disconnected (failed: {:?})",
                sim.failed()
            );
        }
    }
    if outcomes.iter().flatten().any(|ok| !ok) && !sim.failed().is_empty() {
        POISONED_BEFORE_CLOSE.fetch_add(1, Ordering::Relaxed);
    }
}

fn iterations() -> usize {
    std::env::var("SHUTTLE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Runs `scenario` under `n` schedules, half random, half PCT, and returns
/// `n`. PCT finds bugs that need a few specific preemptions (depth 3): it is
/// the scheduler that catches a lost wake-up planted in
/// `Notifier::notify_all` (random schedules did not, in 1,000 runs).
fn explore(scenario: fn(), n: usize) -> usize {
    shuttle::check_random(scenario, n / 2);
    shuttle::check_pct(scenario, n - n / 2, 3);
    n
}

#[test]
fn two_senders_two_receivers() {
    let n = explore(scenario, iterations());
    let (c, z, r) = (
        CREATED.load(Ordering::Relaxed),
        COMPRESSED.load(Ordering::Relaxed),
        REMOVED.load(Ordering::Relaxed),
    );
    println!("{n} schedules; segments over all of them: {c} created, {z} compressed, {r} removed");
    assert!(
        c > 0 && z > 0 && r > 0,
        "the schedules never rotated, compressed or collected"
    );
}

#[test]
fn two_senders_two_receivers_buffered() {
    let n = explore(scenario_buffered, iterations() / 2);
    println!("{n} schedules in Buffered mode");
}

#[test]
fn a_returned_buffered_send_is_visible_to_try_recv_and_len() {
    let n = explore(visible_once_sent, iterations() / 5);
    println!("{n} schedules of Buffered sends read as they return");
}

#[test]
fn an_fsync_failure_during_sync_sends_confirms_exactly_what_is_delivered() {
    let n = explore(failure_during_sync_sends, iterations() / 5);
    let (sends, fsyncs) = (
        FAILED_SENDS.load(Ordering::Relaxed),
        FAILED_FSYNCS.load(Ordering::Relaxed),
    );
    println!("{n} schedules; a send failed in {sends}, the failure hit an fsync in {fsyncs}");
    assert!(
        sends > 0 && fsyncs > 0,
        "the injected failures never reached a send or an fsync"
    );
}

#[test]
fn close_races_sync_sends_without_losing_a_confirmed_message() {
    let n = explore(close_races_sync_sends, iterations() / 5);
    let seen: Vec<u64> = CONFIRMED.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    println!("{n} schedules; by sends confirmed before close (0, 1, 2, 3): {seen:?}");
    assert!(seen[1] + seen[2] > 0, "close never landed between two sends");
}

#[test]
fn close_after_a_failed_rotation_delivers_every_confirmed_sync_send() {
    let n = explore(close_races_failing_sync_sends, iterations() / 5);
    let poisoned = POISONED_BEFORE_CLOSE.load(Ordering::Relaxed);
    println!("{n} schedules; a send failed after an injected failure in {poisoned}");
    assert!(poisoned > 0, "the injected failures never failed a send");
}
