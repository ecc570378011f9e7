//! The background compressor: replaces sealed segments with compressed
//! copies, never on the send path.
//!
//! A segment is compressed when it is sealed, is not the one right behind the
//! writer (receivers most likely still read it), and is not about to be
//! deleted: some receiver still needs it (or there are no receivers), and it
//! is not the oldest one needed while a receiver reads it. The swap is
//! crash-safe:
//!
//! ```text
//! segment.N                      plain, the only copy
//! segment.N + segment.N.z.tmp    compressing; on open the .tmp is deleted
//! segment.N + segment.N.z        written, fsynced, renamed, directory fsynced;
//!                                on open the .z wins if complete and valid,
//!                                else it is deleted and the plain file stays
//! segment.N.z                    plain file deleted, directory fsynced
//! ```
//! A receiver in the middle of the plain file keeps its map (the inode lives
//! on after the unlink) and so its exact position.

use crate::channel::Shared;
use crate::compress::{COMPRESSED_HEADER_LEN, CompressedHeader, Packed};
use crate::format::{SEGMENT_HEADER_LEN, compressed_file_name, segment_file_name};
use crate::segment::SegMeta;
use crate::storage::{Storage, StorageFile};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{AtomicBool, Condvar, Mutex};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{PoisonError, Weak};
use std::time::Duration;

/// The compressor thread's controls.
#[derive(Default)]
pub(crate) struct Compressor {
    work: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Segments whose compression failed; not tried again in this run.
    failed: Mutex<HashSet<u64>>,
    /// Makes the next compression panic (tests of the unwinding path).
    #[cfg(test)]
    pub(crate) panic_next: std::sync::atomic::AtomicBool,
}

/// One segment to compress.
struct Job {
    id: u64,
    meta: SegMeta,
    next: SegMeta,
}

impl Compressor {
    /// Tells the thread to look for work (a segment was sealed).
    pub(crate) fn kick(&self) {
        *self.work.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }

    /// Stops the thread, after the segment it is compressing (if any).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.kick();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the channel's compressor thread panicked");
        }
    }
}

/// Starts the compressor thread (if the channel compresses at all).
pub(crate) fn start<S: Storage>(shared: &std::sync::Arc<Shared<S>>) -> std::io::Result<()> {
    if shared.config.compression == crate::Compression::None {
        return Ok(());
    }
    let weak = std::sync::Arc::downgrade(shared);
    let handle = thread::Builder::new()
        .name("filechannel-compress".into())
        .spawn(move || run(weak))?;
    *shared.compressor.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    shared.compressor.kick();
    Ok(())
}

fn run<S: Storage>(shared: Weak<Shared<S>>) {
    // Lowest priority (on Linux this affects only the calling thread):
    // compression must take no CPU time that senders, receivers or the
    // flusher could use. If it is refused, compression still works.
    if let Err(e) = rustix::process::setpriority_process(None, 19) {
        tracing::debug!(error = %e, "could not lower the compressor thread's priority");
    }
    loop {
        let Some(sh) = shared.upgrade() else { return };
        if sh.compressor.stop.load(Ordering::Acquire) {
            return;
        }
        if let Some(job) = next_job(&sh) {
            compress(&sh, &job);
            continue;
        }
        let c = &sh.compressor;
        let mut work = c.work.lock().unwrap_or_else(PoisonError::into_inner);
        if !*work && !c.stop.load(Ordering::Acquire) {
            work =
                c.cv.wait_timeout(work, Duration::from_secs(1))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
        }
        *work = false;
    }
}

/// The newest segment worth compressing now, claimed: GC leaves it alone
/// until [`compress`] is done with it.
fn next_job<S: Storage>(sh: &Shared<S>) -> Option<Job> {
    let failed = sh
        .compressor
        .failed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut cat = sh.catalog.lock().unwrap_or_else(PoisonError::into_inner);
    if cat.closed {
        return None;
    }
    let job = find_job(&cat, &failed)?;
    cat.compressing = Some(job.id);
    Some(job)
}

fn find_job<S: Storage>(cat: &crate::catalog::Catalog<S>, failed: &HashSet<u64>) -> Option<Job> {
    // Below the lowest floor, GC deletes; with no receivers it deletes
    // nothing.
    let floor = cat.min_floor().unwrap_or(0);
    // The segment at the lowest floor goes next if a live receiver is
    // reading it (not just holding it un-acked): compressing it would take
    // CPU from that receiver, and its plain file stays on disk as long as
    // the receiver maps it anyway.
    let consumed_next = cat
        .cursors
        .iter()
        .any(|c| c.reading.load(Ordering::Acquire) == floor)
        .then_some(floor);
    pick(&cat.segments, cat.active_id, floor, consumed_next, failed)
}

/// The segment to compress next among `segments` (all retained ones, by id):
/// the newest that is sealed and not right behind the writer (its successor
/// is not `active_id` or later), plain, not below `floor` (GC deletes those),
/// not `consumed_next` and not in `failed`.
///
/// The newest goes first: receivers read oldest first, so the segments they
/// reach last are compressed first, and the ones they are about to read are
/// not compressed under them only to be decompressed again (the Go library
/// likewise compresses the second-newest sealed segment at each rotation).
fn pick(
    segments: &std::collections::BTreeMap<u64, SegMeta>,
    active_id: u64,
    floor: u64,
    consumed_next: Option<u64>,
    failed: &HashSet<u64>,
) -> Option<Job> {
    let mut newest = None;
    let mut it = segments.iter().peekable();
    while let Some((&id, &meta)) = it.next() {
        let Some(&(&next_id, &next)) = it.peek() else {
            break;
        };
        if next_id >= active_id {
            // `id` is the segment right behind the writer, or the active one.
            break;
        }
        if meta.packed.is_none() && id >= floor && Some(id) != consumed_next && !failed.contains(&id) {
            newest = Some(Job { id, meta, next });
        }
    }
    newest
}

fn compress<S: Storage>(sh: &Shared<S>, job: &Job) {
    // A panic below (in a compression library, say) must not keep the claim:
    // GC stops at a claimed segment, so the channel's disk use would grow
    // for ever. It counts as a failure of this segment, which stays plain.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write_compressed(sh, job)))
        .unwrap_or_else(|_| Err(std::io::Error::other("the compressor panicked")));
    let mut cat = sh.catalog.lock().unwrap_or_else(PoisonError::into_inner);
    cat.compressing = None;
    // GC may have skipped this segment while it was claimed.
    sh.request_gc();
    let packed = match outcome {
        Ok(packed) => packed,
        Err(e) => {
            drop(cat);
            tracing::warn!(segment = job.id, error = %e, "compressing a sealed segment failed; it stays plain");
            sh.compressor
                .failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(job.id);
            return;
        }
    };
    // The claim kept the segment registered. From here on receivers load the
    // compressed copy; the plain file can go.
    if let Some(meta) = cat.segments.get_mut(&job.id) {
        meta.packed = Some(packed);
    }
    // The `.z` is durable: the plain file needs no fsync (and its descriptor
    // must not keep its space after the unlink).
    cat.unsynced.remove(&job.id);
    drop(cat);
    let plain = sh.dir.join(segment_file_name(job.id));
    // Not there: GC retired the segment once the claim was released, and
    // removed this leftover (and synced the directory) itself.
    let removed = crate::storage::remove_if_present(&sh.storage, &plain)
        .and_then(|removed| if removed { sh.storage.sync_dir(&sh.dir) } else { Ok(()) });
    if let Err(e) = removed {
        // Both files stay; the next open keeps the valid compressed one.
        tracing::warn!(segment = job.id, error = %e, "could not delete a plain segment after compressing it");
    }
}

/// Writes `segment.N.z` (as `.tmp`, fsynced, renamed, directory fsynced).
/// The segment is claimed (`Catalog::compressing`), so GC does not touch it
/// meanwhile and no lock is held during the file work.
fn write_compressed<S: Storage>(sh: &Shared<S>, job: &Job) -> std::io::Result<Packed> {
    #[cfg(test)]
    if sh.compressor.panic_next.swap(false, Ordering::AcqRel) {
        panic!("injected compressor panic");
    }
    let dir = &sh.dir;
    let plain = dir.join(segment_file_name(job.id));
    let packed = dir.join(compressed_file_name(job.id));
    let tmp = dir.join(format!("{}.tmp", compressed_file_name(job.id)));
    let method = sh.config.compression;
    let plain_len = (job.next.base_pos - job.meta.base_pos)
        .checked_add(SEGMENT_HEADER_LEN)
        .ok_or_else(|| std::io::Error::other("segment length overflows"))?;
    let written = (|| -> std::io::Result<u64> {
        let file = sh.storage.open(&plain, false)?;
        if plain_len > file.len()? {
            return Err(std::io::Error::other(
                "the segment is shorter than the next segment's header says",
            ));
        }
        // Read, not mapped: mapping and unmapping take the process's
        // address-space lock for writing, which would stall the sender's and
        // the flusher's page faults.
        let mut data = Vec::new();
        let len = usize::try_from(plain_len).map_err(std::io::Error::other)?;
        data.try_reserve_exact(len)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::OutOfMemory, "segment too large to compress"))?;
        data.resize(len, 0);
        file.read_exact_at(&mut data, 0)?;
        let body = method.compress(sh.config.compression_level, &data)?;
        drop(data);
        let header = CompressedHeader {
            method,
            id: job.id,
            base_seq: job.meta.base_seq,
            base_pos: job.meta.base_pos,
            end_seq: job.next.base_seq,
            plain_len,
            body_len: body.len() as u64,
            body_crc: crc32fast::hash(&body),
        };
        let _ = sh.storage.remove(&tmp);
        let out = sh.storage.create_new(&tmp)?;
        out.write_all_at(&header.to_bytes(), 0)?;
        out.write_all_at(&body, COMPRESSED_HEADER_LEN as u64)?;
        out.sync_data()?;
        Ok(COMPRESSED_HEADER_LEN as u64 + body.len() as u64)
    })();
    let file_len = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = sh.storage.remove(&tmp);
            return Err(e);
        }
    };
    // From the rename on, open() settles any crash (the valid copy wins). If
    // the directory fsync fails, the copy goes again: a compressed file the
    // catalog does not know of must not outlive the plain segment.
    if let Err(e) = sh.storage.rename(&tmp, &packed) {
        let _ = sh.storage.remove(&tmp);
        return Err(e);
    }
    if let Err(e) = sh.storage.sync_dir(dir) {
        let _ = sh.storage.remove(&packed);
        return Err(e);
    }
    Ok(Packed {
        method,
        plain_len,
        file_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Compression;
    use crate::compress::Packed;
    use std::collections::BTreeMap;

    /// Segments `ids`, plain except those in `packed`, each 100 positions long.
    fn chain(ids: std::ops::RangeInclusive<u64>, packed: &[u64]) -> BTreeMap<u64, SegMeta> {
        ids.map(|id| {
            let meta = SegMeta {
                base_seq: id * 10,
                base_pos: id * 100,
                packed: packed.contains(&id).then_some(Packed {
                    method: Compression::Snappy,
                    plain_len: 100,
                    file_len: 50,
                }),
            };
            (id, meta)
        })
        .collect()
    }

    fn picked(
        segments: &BTreeMap<u64, SegMeta>,
        active: u64,
        floor: u64,
        next: Option<u64>,
        failed: &[u64],
    ) -> Option<u64> {
        let failed = failed.iter().copied().collect();
        pick(segments, active, floor, next, &failed).map(|job| job.id)
    }

    /// Waits up to 20 s for `done`.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        done()
    }

    /// A compression that panics counts as a failed one: the thread goes on
    /// with other segments, and the claim is released, so GC still deletes
    /// the segment once it is consumed (before, the claim stayed and GC
    /// stopped there for good).
    #[test]
    fn a_panicking_compression_releases_its_claim() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ch = crate::FileChannel::builder()
            .segment_size(64 << 10)
            .durability(crate::Durability::Flush)
            .compression(Compression::Snappy)
            .open(dir.path())?;
        ch.shared().compressor.panic_next.store(true, Ordering::Release);
        let tx = ch.tx();
        let msg = [0x5Au8; 1000];
        for _ in 0..400 {
            tx.send(&msg)?;
        }
        assert!(ch.stats().segments >= 6, "setup: {:?}", ch.stats());
        assert!(
            eventually(|| ch.stats().compressed_segments >= 1),
            "the compressor stopped after the panic: {:?}",
            ch.stats()
        );
        assert!(
            !ch.shared().compressor.panic_next.load(Ordering::Acquire),
            "setup: no panic"
        );
        let mut rx = ch.rx();
        for _ in 0..400 {
            assert_eq!(rx.recv()?, msg);
        }
        assert!(
            eventually(|| ch.stats().segments <= 2),
            "GC stopped at the claimed segment: {:?}",
            ch.stats()
        );
        ch.close()?;
        Ok(())
    }

    #[test]
    fn the_newest_eligible_segment_goes_first() {
        // Segments 1..=6, 6 active: 5 is right behind the writer.
        let segs = chain(1..=6, &[]);
        assert_eq!(picked(&segs, 6, 1, Some(1), &[]), Some(4));
        // Its successor is handed over with it.
        let failed = HashSet::new();
        let job = pick(&segs, 6, 1, Some(1), &failed);
        assert_eq!(job.map(|j| (j.meta.base_pos, j.next.base_pos)), Some((400, 500)));
        // Compressed or failed ones are passed over, newest first still.
        assert_eq!(picked(&chain(1..=6, &[4]), 6, 1, Some(1), &[]), Some(3));
        assert_eq!(picked(&chain(1..=6, &[4]), 6, 1, Some(1), &[3]), Some(2));
        // Below the floor GC deletes; the segment being consumed is left.
        assert_eq!(picked(&chain(1..=6, &[4]), 6, 3, Some(3), &[]), None);
        assert_eq!(picked(&chain(1..=6, &[4]), 6, 3, None, &[]), Some(3));
        // Only the active segment and the one behind it: nothing to do.
        assert_eq!(picked(&chain(5..=6, &[]), 6, 0, None, &[]), None);
        assert_eq!(picked(&chain(6..=6, &[]), 6, 0, None, &[]), None);
    }
}
