//! Memory check (issue: benchmarks): send and receive `N` 64-byte messages
//! with one sender and 2 receivers, sampling `/proc/self/status` every
//! 100 ms, for N = 1 M and 10 M. Reports the peak of `RssAnon` (heap and
//! other private memory) above the process baseline, and the peak of
//! `RssFile` (mapped segment pages).
//!
//! `cargo run --release -p filechannel-benches --example memory [N...]`
//! (the channel lives under `/tmp`, or `TMPDIR`).

use filechannel::FileChannel;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `(RssAnon, RssFile)` in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn run(n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (base_anon, base_file) = rss();
    let ch = FileChannel::open(dir.path())?;
    let mut rxs = [ch.rx(), ch.rx()];
    let tx = ch.tx();
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let (peak_anon, peak_file) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let (a, f) = rss();
                peak = (peak.0.max(a), peak.1.max(f));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let readers: Vec<_> = rxs
            .iter_mut()
            .map(|rx| {
                s.spawn(move || -> Result<(), filechannel::RecvError> {
                    for i in 0..n {
                        let m = rx.recv_ref()?;
                        if m.len() != 64 || m[..8] != i.to_le_bytes() {
                            eprintln!("message {i} is wrong");
                            std::process::exit(1);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        let mut msg = [0x5Au8; 64];
        for i in 0..n {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            if let Err(e) = tx.send(&msg) {
                eprintln!("send: {e}");
                std::process::exit(1);
            }
        }
        let _ = tx.flush();
        for r in readers {
            if !matches!(r.join(), Ok(Ok(()))) {
                eprintln!("a receiver failed");
                std::process::exit(1);
            }
        }
        done.store(true, Ordering::Relaxed);
        sampler.join().unwrap_or((0, 0))
    });
    let elapsed = start.elapsed();
    println!(
        "{n:>10} messages x 64 B, 2 receivers: {:.2} s; peak RssAnon +{} KiB over a baseline of {} KiB; peak RssFile {} KiB (baseline {} KiB)",
        elapsed.as_secs_f64(),
        peak_anon.saturating_sub(base_anon),
        base_anon,
        peak_file,
        base_file,
    );
    ch.close()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counts: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1_000_000, 10_000_000]
    } else {
        counts
    };
    for n in counts {
        run(n)?;
    }
    Ok(())
}
