//! Which segments exist, who is reading where, and garbage collection.
//!
//! Each receiver owns a [`Cursor`]: the segment it still needs (`floor`) and
//! the sequence number of the first message it has not consumed (read, or for
//! an acking receiver, acked). A segment is deleted once it is older than
//! every cursor's floor and is not the active one; with no receivers, nothing
//! is deleted. The lowest consumed sequence number over all receivers is the
//! channel's *head*, kept in the `head` file: a new receiver, also after a
//! restart, starts there.

use crate::config::Builder;
use crate::error::Error;
use crate::error::RecvError;
use crate::format::{HEAD_SLOT_LEN, HeadSlot, compressed_file_name, segment_file_name, spare_file_name};
use crate::segment::SegMeta;
use crate::storage::{SegmentMap, Storage, StorageFile, remove_if_present};
use crate::sync::{AtomicU64, Condvar, Mutex};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};

/// Name of the head file in a channel directory.
pub(crate) const HEAD_FILE: &str = "head";

/// Consumed segment files kept for reuse. A reused file's pages are usually
/// still in the page cache, so writing it again skips the page allocation
/// that dominates writing fresh files.
const MAX_SPARES: usize = 2;

/// A receiver's position, as far as garbage collection is concerned.
/// Receivers store `consumed` on every message: each cursor gets its own
/// cache lines, so two receivers on two cores do not slow each other down.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Cursor {
    /// The oldest segment this receiver may still read.
    pub floor: AtomicU64,
    /// The segment it reads now: `floor` for a plain receiver; an acking
    /// one may be past its floor (the oldest segment with un-acked
    /// messages).
    pub reading: AtomicU64,
    /// Sequence number of its first message not yet consumed.
    pub consumed: AtomicU64,
}

/// The on-disk head: the lowest sequence number any receiver still needs.
pub(crate) struct HeadFile<S: Storage> {
    file: S::File,
    path: PathBuf,
    generation: u64,
    pub seq: u64,
    /// What the file says now: see [`HeadSlot::clean`].
    pub clean: bool,
    /// Written since its last fsync.
    dirty: bool,
}

/// The newest valid slot of a head file, if any.
/// `len` is the file's length.
fn read_head<F: StorageFile>(file: &F, path: &Path, len: u64) -> Result<Option<HeadSlot>, Error> {
    let mut best: Option<HeadSlot> = None;
    for slot in 0..2u64 {
        if len < (slot + 1) * HEAD_SLOT_LEN {
            continue;
        }
        let mut raw = [0u8; HEAD_SLOT_LEN as usize];
        file.read_exact_at(&mut raw, slot * HEAD_SLOT_LEN)
            .map_err(|e| Error::io(path, e))?;
        // A generation this high was never written here (one a head store:
        // 2^62 stores take centuries); counting on from it would overflow.
        match HeadSlot::from_bytes(&raw).filter(|s| s.generation < 1 << 62) {
            Some(s) if best.is_none_or(|b| s.generation > b.generation) => best = Some(s),
            Some(_) => {}
            None if raw != [0; HEAD_SLOT_LEN as usize] => {
                tracing::warn!(path = %path.display(), slot, "ignoring a damaged head slot (a torn write); the other slot is used")
            }
            None => {}
        }
    }
    Ok(best)
}

/// Whether the channel in `dir` was last closed cleanly (the head says so),
/// read before recovery changes anything. Anything unreadable counts as
/// not clean: recovery then scans every older segment, which is slower,
/// never wrong.
pub(crate) fn last_close_was_clean<S: Storage>(storage: &S, dir: &Path) -> bool {
    let path = dir.join(HEAD_FILE);
    let Ok(file) = storage.open(&path, false) else {
        return false;
    };
    let Ok(len) = file.len() else { return false };
    matches!(read_head(&file, &path, len), Ok(Some(slot)) if slot.clean)
}

impl<S: Storage> HeadFile<S> {
    /// Opens (or creates) the head file and reads the newest valid slot.
    pub(crate) fn open(storage: &S, dir: &Path, sync: bool) -> Result<Self, Error> {
        let path = dir.join(HEAD_FILE);
        let file = storage.open_or_create(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.len().map_err(|e| Error::io(&path, e))?;
        let best = read_head(&file, &path, len)?;
        if len == 0 && sync {
            storage.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        Ok(HeadFile {
            file,
            path,
            generation: best.map_or(0, |b| b.generation),
            seq: best.map_or(0, |b| b.head_seq),
            clean: best.is_some_and(|b| b.clean),
            dirty: false,
        })
    }

    /// Records a new head in the slot not holding the current one.
    /// The file then says "not clean": the channel is in use.
    pub(crate) fn store(&mut self, seq: u64, sync: bool) -> std::io::Result<()> {
        self.write(seq, false, sync)
    }

    /// Records, fsynced, that the channel was closed with everything synced.
    pub(crate) fn store_clean(&mut self) -> std::io::Result<()> {
        self.write(self.seq, true, true)
    }

    fn write(&mut self, seq: u64, clean: bool, sync: bool) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let slot = HeadSlot {
            generation,
            head_seq: seq,
            clean,
        };
        self.file
            .write_all_at(&slot.to_bytes(), (generation % 2) * HEAD_SLOT_LEN)?;
        self.dirty = true;
        self.generation = generation;
        self.seq = seq;
        self.clean = clean;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    /// Fsyncs the file if it was written since its last fsync.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Everything that changes when segments come and go or receivers move.
pub(crate) struct Catalog<S: Storage> {
    pub segments: BTreeMap<u64, SegMeta>,
    pub active_id: u64,
    /// The writer's map of the active segment (for its published mark and the
    /// flusher's prefaulting; receivers read through `read_maps`).
    pub active_map: Arc<SegmentMap>,
    /// The receivers' read-only map (or decompressed copy) of each segment
    /// some receiver is in: receivers of one segment share it, so its pages
    /// are mapped in (and a compressed segment decompressed) once, not once
    /// per receiver. Weak: the map goes when its last receiver leaves.
    pub read_maps: BTreeMap<u64, Weak<SegmentMap>>,
    /// Cursors of live receivers.
    pub cursors: Vec<Arc<Cursor>>,
    /// Cursors of dropped acking receivers: what they had not acked stays
    /// until a new acking receiver takes over (it starts at or before them).
    pub ghosts: Vec<Arc<Cursor>>,
    pub head: HeadFile<S>,
    /// Spare segment files, each locked exclusively through its handle.
    pub spares: Vec<Spare<S>>,
    /// Set when the channel is closed: the directory lock is gone, so
    /// nothing may change files any more.
    pub closed: bool,
    /// The segment the compressor is working on: GC leaves it (and what
    /// follows) alone until the swap is done, so the compressor never reads
    /// a recycled file or leaves a copy of a deleted segment behind.
    pub compressing: Option<u64>,
    /// Compressed segments a receiver is decompressing now. Another receiver
    /// entering one waits on `Shared::segment_loaded` for that copy instead
    /// of making a second (fan-out receivers reach a segment together).
    pub loading: BTreeSet<u64>,
    /// How many times a compressed segment was decompressed for reading.
    pub decompressions: u64,
    /// A retired segment's removal is not known to be on disk (the directory
    /// fsync after it failed): nothing more is retired until one succeeds.
    pub dir_unsynced: bool,
    /// Sealed segments not fsynced yet (modes other than `Sync`), with the
    /// descriptor they were written through: the next `sync()` or `close()`
    /// fsyncs them through it. A descriptor opened later could miss a
    /// writeback error (once the kernel has evicted the inode, the error is
    /// gone). A segment leaves the list when it is retired (consumed: its
    /// durability no longer matters, and its space must go) or compressed
    /// (its `.z` was fsynced); `rotate` fsyncs the oldest beyond
    /// [`MAX_UNSYNCED`].
    pub unsynced: BTreeMap<u64, Arc<S::File>>,
}

/// How many sealed segments may wait for an fsync, holding descriptors,
/// before a rotation fsyncs the oldest of them.
pub(crate) const MAX_UNSYNCED: usize = 8;

/// A consumed segment file kept for reuse. Its handle holds an exclusive
/// `flock` from when it was kept (taken without waiting: nobody, in any
/// process, held a lock on it, so no receiver mapped it) until a rotation has
/// rewritten its header and renamed it: a receiver that opened the file by its old segment
/// name (one of a closed channel, in this process or another) cannot take
/// its shared lock meanwhile, and once it can, the header names another
/// segment and it maps nothing more (`enter`).
pub(crate) struct Spare<S: Storage> {
    pub path: PathBuf,
    pub len: u64,
    pub file: S::File,
}

/// What a receiver gets when it enters a segment.
pub(crate) struct Entered {
    pub map: Arc<SegmentMap>,
    pub meta: SegMeta,
}

impl<S: Storage> Catalog<S> {
    /// The receivers' shared map of segment `id`, if a receiver holds one.
    fn read_map(&self, id: u64) -> Option<Arc<SegmentMap>> {
        self.read_maps.get(&id).and_then(Weak::upgrade)
    }

    /// A spare file big enough for a segment whose first message has
    /// `first_len` bytes, if there is one, with its length. None while a
    /// retirement's directory fsync has not succeeded: the spare's name may
    /// not be on disk yet, and after a power loss the next segment's header
    /// would sit in a file still named as the old segment (an open that
    /// fails on the mismatch).
    pub(crate) fn take_spare(&mut self, config: &Builder, first_len: u64) -> Option<Spare<S>> {
        if self.dir_unsynced {
            return None;
        }
        let need = config.segment_capacity(first_len);
        let i = self.spares.iter().position(|s| s.len >= need)?;
        Some(self.spares.swap_remove(i))
    }

    /// The oldest segment some receiver (live, or a dropped acking one) still
    /// needs; `None` without receivers (then nothing is deleted).
    pub(crate) fn min_floor(&self) -> Option<u64> {
        self.cursors
            .iter()
            .chain(&self.ghosts)
            .map(|c| c.floor.load(Ordering::Acquire))
            .min()
    }

    /// Counts of segments by form, and the bytes of compressed ones.
    pub(crate) fn stats(&self) -> crate::Stats {
        let mut s = crate::Stats {
            segments: self.segments.len(),
            spare_segments: self.spares.len(),
            decompressions: self.decompressions,
            ..crate::Stats::default()
        };
        for meta in self.segments.values() {
            match meta.packed {
                Some(p) => {
                    s.compressed_segments += 1;
                    s.compressed_plain_bytes += p.plain_len;
                    s.compressed_bytes += p.file_len;
                }
                None => s.plain_segments += 1,
            }
        }
        s
    }

    /// The lowest sequence number some receiver (live, or a dropped acking
    /// one) still needs; the head when there are none.
    pub(crate) fn needed_seq(&self) -> u64 {
        self.cursors
            .iter()
            .chain(&self.ghosts)
            .map(|c| c.consumed.load(Ordering::Acquire))
            .min()
            .map_or(self.head.seq, |m| m.max(self.head.seq))
    }

    /// The segment a new receiver starting at `seq` starts in: the newest one
    /// whose first message is at or before it.
    pub(crate) fn start_segment(&self, seq: u64) -> u64 {
        self.segments
            .iter()
            .take_while(|(_, m)| m.base_seq <= seq)
            .last()
            .or_else(|| self.segments.iter().next())
            .map_or(self.active_id, |(&id, _)| id)
    }

    /// Deletes every segment that all receivers have passed, oldest first,
    /// and moves the head up. Runs under the catalog lock, so deletions never
    /// interleave: a crash leaves an unbroken chain of segments.
    pub(crate) fn collect(&mut self, storage: &S, dir: &Path, sync: bool) {
        if self.closed {
            return;
        }
        let Some(min_floor) = self.min_floor() else {
            return;
        };
        let needed = self.needed_seq();
        if needed > self.head.seq
            && let Err(e) = self.head.store(needed, sync)
        {
            // The head only spares a new receiver messages already consumed;
            // a stale head means redelivery, never loss.
            tracing::warn!(path = %self.head.path().display(), error = %e, "could not record the head");
        }
        if self.dir_unsynced {
            match storage.sync_dir(dir) {
                Ok(()) => self.dir_unsynced = false,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not sync the directory; retiring no more segments until it can be");
                    return;
                }
            }
        }
        let limit = min_floor.min(self.active_id).min(self.compressing.unwrap_or(u64::MAX));
        while let Some((&id, _)) = self.segments.first_key_value() {
            if id >= limit {
                break;
            }
            if let Err(e) = self.retire(storage, dir, id) {
                tracing::warn!(segment = id, error = %e, "could not delete a consumed segment; will retry");
                break;
            }
            self.segments.remove(&id);
            self.read_maps.remove(&id);
            if self.dir_unsynced {
                break;
            }
        }
    }

    /// Deletes consumed segment `id`, or keeps its file as a spare. The
    /// directory is synced after each one, so that a power loss cannot bring
    /// back an older segment after a newer one went: the chain stays
    /// unbroken. A file already gone (deleted by somebody else) counts as
    /// deleted. After a failure the segment stays in the chain, and in
    /// `unsynced` for the next `sync()` or `close`.
    fn retire(&mut self, storage: &S, dir: &Path, id: u64) -> std::io::Result<()> {
        let path = dir.join(segment_file_name(id));
        if self.segments.get(&id).is_some_and(|m| m.packed.is_some()) {
            remove_unless_gone(storage, &dir.join(compressed_file_name(id)))?;
        } else if let Some(file) = (self.spares.len() < MAX_SPARES && !storage.is_mapped(&path))
            .then(|| lock_for_reuse(storage, &path))
            .flatten()
        {
            let len = file.len()?;
            let spare = dir.join(spare_file_name(id));
            storage.rename(&path, &spare)?;
            self.spares.push(Spare { path: spare, len, file });
        } else {
            remove_unless_gone(storage, &path)?;
        }
        self.unsynced.remove(&id);
        // A compressed copy and its plain file can both exist for a moment
        // (the compressor deletes the plain file after the swap): neither may
        // outlive the segment.
        for leftover in [path, dir.join(compressed_file_name(id))] {
            if let Err(e) = remove_if_present(storage, &leftover) {
                tracing::warn!(path = %leftover.display(), error = %e, "could not delete a retired segment's leftover file");
            }
        }
        // The file is gone from the chain either way; a failed directory
        // fsync must not make GC retry a file that no longer exists. But
        // the next segment must not go before this removal is on disk (a
        // power loss could bring this one back after a newer one went, a
        // hole in the chain): `collect` stops, and retries the fsync first.
        if let Err(e) = storage.sync_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not sync the directory after retiring a segment");
            self.dir_unsynced = true;
        }
        Ok(())
    }
}

/// Removes `path`; one that is not there is as good as removed.
fn remove_unless_gone<S: Storage>(storage: &S, path: &Path) -> std::io::Result<()> {
    if !remove_if_present(storage, path)? {
        tracing::warn!(path = %path.display(), "a consumed segment's file was already gone");
    }
    Ok(())
}

/// Opens `path` for writing and locks it exclusively, without waiting, for
/// reuse as a spare; `None` if someone, in any process, holds a lock on it
/// (a receiver mapping it: it is deleted, never rewritten) or it cannot be
/// opened or locked.
pub(crate) fn lock_for_reuse<S: Storage>(storage: &S, path: &Path) -> Option<S::File> {
    let file = storage.open(path, true).ok()?;
    matches!(file.try_lock(true), Ok(true)).then_some(file)
}

/// Maps segment `id` read-only for a receiver (for the active segment the map
/// follows the writer's published mark), or decompresses it if it is
/// compressed. `None` if the segment does not exist. File work happens
/// outside the catalog lock; the caller's cursor keeps the segment from being
/// deleted meanwhile, and a plain file swapped for its compressed form just
/// then is looked up again.
pub(crate) fn enter<S: Storage>(
    catalog: &Mutex<Catalog<S>>,
    loaded: &Condvar,
    storage: &S,
    dir: &Path,
    id: u64,
) -> Result<Option<Entered>, RecvError> {
    let path = dir.join(segment_file_name(id));
    let mut tries = 0;
    loop {
        let (meta, leader) = {
            let mut cat = catalog.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                let Some(&meta) = cat.segments.get(&id) else {
                    return Ok(None);
                };
                if let Some(map) = cat.read_map(id) {
                    return Ok(Some(Entered { map, meta }));
                }
                if meta.packed.is_some() && !cat.loading.insert(id) {
                    // Another receiver is decompressing it: wait for its copy
                    // (or, if it fails, to try ourselves).
                    cat = loaded.wait(cat).unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                break (meta, (id == cat.active_id).then(|| Arc::clone(&cat.active_map)));
            }
        };
        if let Some(expected) = meta.packed {
            // Off `loading` (waking the waiters) when this returns, after
            // `share` has offered the copy.
            let _loading = Loading { catalog, loaded, id };
            let packed = dir.join(compressed_file_name(id));
            return match crate::compress::load_compressed(storage, &packed, expected) {
                Ok(map) => {
                    catalog.lock().unwrap_or_else(PoisonError::into_inner).decompressions += 1;
                    Ok(Some(Entered {
                        map: share(catalog, id, map),
                        meta,
                    }))
                }
                Err(reason) => Err(RecvError::BadCompressedSegment {
                    segment: packed,
                    reason,
                }),
            };
        }
        let mapped = storage.open(&path, false).and_then(|file| {
            // Mapped under a shared lock, which the map keeps: no owner of
            // the directory, in any process, recycles the file meanwhile. A
            // file locked exclusively is being recycled, and one whose header
            // names another segment has been: both are as good as gone (a
            // receiver of a closed channel that opened it by its old name).
            let gone = || {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the segment file has been recycled by the directory's owner",
                )
            };
            if !file.try_lock(false)? {
                return Err(gone());
            }
            match crate::recovery::read_segment_header(&file)? {
                Ok(h) if h.id == id => {}
                Ok(_) => return Err(gone()),
                Err(problem) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the segment header does not check out ({problem:?})"),
                    ));
                }
            }
            let len = file.len()?;
            file.map(len, false)
        });
        match mapped {
            Ok(map) => {
                let map = match leader {
                    Some(leader) => SegmentMap::follower(map, &leader),
                    None => SegmentMap::sealed(map),
                };
                return Ok(Some(Entered {
                    map: share(catalog, id, map),
                    meta,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 2 => tries += 1,
            Err(e) => {
                return Err(RecvError::Io {
                    path,
                    source: Arc::new(e),
                });
            }
        }
    }
}

/// A receiver's claim on decompressing segment `id`: dropping it (also on
/// unwinding) takes `id` off [`Catalog::loading`] and wakes the receivers
/// waiting for the copy.
struct Loading<'a, S: Storage> {
    catalog: &'a Mutex<Catalog<S>>,
    loaded: &'a Condvar,
    id: u64,
}

impl<S: Storage> Drop for Loading<'_, S> {
    fn drop(&mut self) {
        self.catalog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .loading
            .remove(&self.id);
        self.loaded.notify_all();
    }
}

/// Offers `map`, just made for segment `id`, as the segment's shared read
/// map; returns the one to use: a map another receiver made meanwhile (both
/// hold the same bytes; ours is dropped), else `map`.
fn share<S: Storage>(catalog: &Mutex<Catalog<S>>, id: u64, map: Arc<SegmentMap>) -> Arc<SegmentMap> {
    let mut cat = catalog.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = cat.read_map(id) {
        return existing;
    }
    // Only segments still in the chain: GC forgets a retired one's entry.
    if cat.segments.contains_key(&id) {
        cat.read_maps.insert(id, Arc::downgrade(&map));
    }
    map
}
