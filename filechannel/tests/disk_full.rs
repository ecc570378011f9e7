//! A full disk is a typed error that loses nothing: sends fail with
//! `DiskFull`, receivers drain everything confirmed, consumed segments are
//! deleted, and sending works again — without and with a reopen.
//!
//! Uses a real 2 MiB tmpfs, which needs root (CI runs as root); elsewhere the
//! test says why it did not run.

mod common;
use common::*;
use filechannel::{FileChannel, SendError};
use std::path::Path;
use std::process::Command;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(at.to_path_buf()))
}

fn open(dir: &Path) -> FileChannel {
    FileChannel::builder().segment_size(256 << 10).open(dir).unwrap()
}

#[test]
fn disk_full_is_reported_nothing_confirmed_is_lost_and_sending_resumes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED disk_full: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_tmpfs(base.path(), "2m") else {
        panic!(
            "running as root but could not mount a tmpfs at {}",
            base.path().display()
        );
    };
    let dir = base.path().join("ch");
    let mut ch = open(&dir);
    let mut next_send = 0u64;
    let mut next_recv = 0u64;
    for cycle in 0..20 {
        let tx = ch.tx();
        let mut rx = ch.rx();
        let err = loop {
            match tx.send(&payload(next_send, 1000)) {
                Ok(()) => next_send += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, SendError::DiskFull { .. }), "cycle {cycle}: {err:?}");
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(err.is_disk_full());
        assert!(next_send > next_recv + 1000, "cycle {cycle}: should have filled ~2 MiB");
        // Everything confirmed is there, in order.
        for m in drain(&mut rx) {
            assert_eq!(check_payload(&m), next_recv);
            next_recv += 1;
        }
        assert_eq!(next_recv, next_send, "cycle {cycle}");
        // Consumed segments are gone: at most the active one is left.
        wait_for(
            &format!(
                "consumed segments to go: {:?}",
                std::fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect::<Vec<_>>()
            ),
            || segment_files(&dir).len() <= 2,
        );
        // Sending works again right away...
        tx.send(&payload(next_send, 1000)).unwrap();
        next_send += 1;
        assert_eq!(check_payload(&rx.recv().unwrap()), next_recv);
        next_recv += 1;
        drop((tx, rx));
        // ...and after a reopen.
        if cycle % 4 == 3 {
            ch.close().unwrap();
            drop(ch);
            ch = open(&dir);
            assert_eq!(ch.write_offset(), next_send);
        }
    }
    ch.close().unwrap();
}
