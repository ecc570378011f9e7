use filechannel::{Durability, FileChannel};
use std::time::Instant;

fn write_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/io").unwrap();
    s.lines()
        .find(|l| l.starts_with("write_bytes:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

fn main() {
    for (name, mode) in [
        ("Buffered", Durability::Buffered),
        ("Flush", Durability::Flush),
        ("Sync", Durability::Sync),
    ] {
        for every in [10u64, 100, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let ch = FileChannel::builder().durability(mode).open(dir.path()).unwrap();
            let tx = ch.tx();
            let msg = [5u8; 64];
            let n = 20_000u64;
            let w0 = write_bytes();
            let t = Instant::now();
            for i in 0..n {
                tx.send(&msg).unwrap();
                if (i + 1) % every == 0 && mode != Durability::Sync {
                    tx.sync().unwrap();
                }
            }
            let el = t.elapsed();
            let w = write_bytes() - w0;
            println!(
                "{name} sync every {every}: {:.1} us/msg, {:.0} B written per msg (payload+frame 80)",
                el.as_secs_f64() * 1e6 / n as f64,
                w as f64 / n as f64
            );
            if mode == Durability::Sync {
                break;
            }
        }
    }
}
