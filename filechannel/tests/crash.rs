//! Guarantees 2 and 6 with real processes: a child sending in `Flush` mode is
//! killed with SIGKILL mid-stream, 200 times on the same directory (10,000
//! with `FILECHANNEL_KILL_ITERATIONS=10000`); every message whose `send`
//! returned must be there after reopening, in order and uncorrupted. And the
//! directory lock, 5 times: held against other processes (`Locked` within
//! 1 s: `open` retries for 25 ms, and the bound leaves room for a loaded CI
//! machine), free as soon as its holder is killed.
//!
//! The child is this same test binary, re-run with an environment variable
//! that tells the test function to play the child's part.

mod common;
use common::*;
use filechannel::{Durability, FileChannel};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "FILECHANNEL_TEST_CHILD_DIR";

fn spawn_child(test: &str, dir: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The child's part: open, then send forever, reporting each confirmed
/// sequence number on stdout.
fn sender_child(dir: &str) -> ! {
    println!("opening");
    let ch = FileChannel::builder()
        .segment_size(64 << 10)
        .durability(Durability::Flush)
        .open(dir)
        .unwrap();
    let tx = ch.tx();
    let mut out = std::io::stdout().lock();
    writeln!(out, "open").unwrap();
    let mut seq = ch.write_offset();
    loop {
        tx.send(&payload(seq, size_for(seq, 3000))).unwrap();
        writeln!(out, "{seq}").unwrap();
        seq += 1;
    }
}

#[test]
fn reopen_after_sigkill_keeps_every_confirmed_message() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        sender_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rng = 0x1234_5678_u64;
    let (mut total_confirmed, mut productive) = (0, 0);
    let iterations = std::env::var("FILECHANNEL_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for iteration in 0..iterations {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut child = spawn_child("reopen_after_sigkill_keeps_every_confirmed_message", dir.path());
        let stdout = child.stdout.take().unwrap();
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut confirmed: Option<u64> = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(seq) = line.parse::<u64>() {
                    confirmed = Some(seq);
                } else if line.ends_with("opening") {
                    let _ = opened_tx.send("opening");
                } else if line.ends_with("open") {
                    let _ = opened_tx.send("open");
                }
            }
            confirmed
        });
        // One kill in ten lands 0-2 ms after the child says it is opening
        // the channel (in the open and its recovery scan, or just after);
        // the others 0-60 ms after it has opened it (measured from then, so
        // a slow start on a loaded machine still leaves time to send).
        let wait_for = |what| while opened.recv_timeout(Duration::from_secs(30)).is_ok_and(|l| l != what) {};
        if iteration % 10 == 0 {
            wait_for("opening");
            std::thread::sleep(Duration::from_millis(rng % 3));
        } else {
            wait_for("open");
            std::thread::sleep(Duration::from_millis(rng % 61));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let confirmed = reader.join().unwrap();

        let ch = FileChannel::builder().segment_size(64 << 10).open(dir.path()).unwrap();
        let mut rx = ch.rx_ack(); // never acks: the next iteration re-reads all
        let mut next = 0;
        for m in drain(&mut rx) {
            assert_eq!(check_payload(&m), next, "iteration {iteration}: out of order");
            next += 1;
        }
        if let Some(c) = confirmed {
            assert!(
                next > c,
                "iteration {iteration}: confirmed message {c} lost; only {next} recovered"
            );
            if c + 1 > total_confirmed {
                productive += 1;
            }
            total_confirmed = c + 1;
        }
        assert_eq!(ch.write_offset(), next);
        drop(rx);
        ch.close().unwrap();
    }
    // Most kills must land while the child is sending, not before.
    assert!(
        total_confirmed > 100 && productive >= iterations / 2,
        "the children should have confirmed messages ({total_confirmed} in all, new ones in {productive} of {iterations} runs)"
    );
}

/// The child's part: take the lock, say so, wait to be killed.
fn lock_holder_child(dir: &str) -> ! {
    let _ch = FileChannel::open(dir).unwrap();
    println!("locked");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn second_process_gets_locked_and_lock_is_free_after_holder_is_killed() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        lock_holder_child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..5 {
        let mut child = spawn_child(
            "second_process_gets_locked_and_lock_is_free_after_holder_is_killed",
            dir.path(),
        );
        // The test harness prints its own lines first; ours ends one of them.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(
            lines.any(|l| l.unwrap().ends_with("locked")),
            "the child did not take the lock"
        );
        let start = Instant::now();
        let err = FileChannel::open(dir.path()).unwrap_err();
        assert!(err.is_locked(), "{err:?}");
        assert!(err.to_string().contains(&*dir.path().to_string_lossy()));
        assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
        child.kill().unwrap();
        child.wait().unwrap();
        let ch = FileChannel::open(dir.path()).unwrap();
        ch.close().unwrap();
    }
}

#[test]
fn same_process_second_open_is_locked_and_reopen_after_close_works() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::open(dir.path()).unwrap();
    ch.tx().send(b"one").unwrap();
    assert!(FileChannel::open(dir.path()).unwrap_err().is_locked());
    ch.close().unwrap();
    // Sending after close is refused.
    assert!(ch.tx().send(b"late").unwrap_err().is_closed());
    let again = FileChannel::open(dir.path()).unwrap();
    assert_eq!(again.rx().recv().unwrap(), b"one");
    drop(ch);
}
