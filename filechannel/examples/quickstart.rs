//! Send a million small messages and time them, read them back with two
//! independent receivers, and reopen the channel to show that an acking
//! receiver keeps what it has not acked. (The README's quickstart is the
//! short version of the API; this is the example its first set-up command
//! runs.)
//!
//! ```sh
//! cargo run --release --example quickstart            # uses a temp directory
//! cargo run --release --example quickstart -- ./spool # or a directory of yours
//! ```

use filechannel::{Durability, FileChannel};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().join("spool"), Into::into);

    let ch = FileChannel::builder().durability(Durability::Buffered).open(&dir)?;
    let tx = ch.tx();
    let mut audit = ch.rx();
    let mut worker = ch.rx_ack();

    let n = 1_000_000u64;
    let started = Instant::now();
    for i in 0..n {
        tx.send(format!("event {i}").as_bytes())?;
    }
    tx.flush()?;
    let sent = started.elapsed();

    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += audit.recv_ref()?.len();
    }
    let read = started.elapsed();
    println!(
        "sent {n} messages in {sent:?} ({:.0} ns/msg), read them back in {read:?} ({:.0} ns/msg, {bytes} bytes)",
        sent.as_nanos() as f64 / n as f64,
        read.as_nanos() as f64 / n as f64,
    );

    // The acking worker handles half of the messages, then "crashes".
    for _ in 0..n / 2 {
        worker.recv_ref()?;
    }
    worker.ack(n / 2)?;
    drop((tx, audit, worker));
    ch.close()?;

    let ch = FileChannel::open(&dir)?;
    let mut worker = ch.rx_ack();
    let first = worker.recv()?;
    println!(
        "after reopening, the worker resumes at message {:?} (offset {}), disk usage {} KiB",
        String::from_utf8_lossy(&first),
        worker.read_offset() - 1,
        ch.disk_usage()? / 1024
    );
    assert_eq!(first, format!("event {}", n / 2).as_bytes());
    ch.close()?;
    Ok(())
}
