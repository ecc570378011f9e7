use filechannel::{Durability, FileChannel};
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
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .durability(Durability::Flush)
        .open(dir.path())
        .unwrap();
    let tx = ch.tx();
    let msg = [5u8; 64];
    let start = write_bytes();
    let mut in_sync = 0;
    for i in 0..20000u64 {
        tx.send(&msg).unwrap();
        if std::env::var("EVERY")
            .map(|e| (i + 1) % e.parse::<u64>().unwrap() == 0)
            .unwrap_or(false)
        {
            let w0 = write_bytes();
            tx.sync().unwrap();
            in_sync += write_bytes() - w0;
        }
        if i % 4000 == 3999 {
            eprintln!(
                "{i}: total {} KiB, during sync {} KiB",
                (write_bytes() - start) / 1024,
                in_sync / 1024
            );
        }
    }
}
