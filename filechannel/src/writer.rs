//! The append path: one writer per channel, behind a mutex, copying frames
//! straight into the memory map of the active segment (one copy per message,
//! no syscall), sealing and rotating segments, and group-committing fsyncs.

use crate::channel::Shared;
use crate::config::Durability;
use crate::error::{Error, SendError};
use crate::format::{self, FLAG_SEAL, FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN};
use crate::recovery::{Active, create_segment};
use crate::segment::SegMeta;
use crate::storage::{MapWriter, Storage, StorageFile};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

/// The writer's state, guarded by `Shared::writer`.
pub(crate) struct Writer<S: Storage> {
    pub id: u64,
    /// [`format::segment_seed`] of `id`.
    pub seed: u32,
    pub file: Arc<S::File>,
    pub map: MapWriter,
    pub next_seq: u64,
    /// Channel byte position of the active segment's first frame.
    pub base_pos: u64,
    /// The directory changed (a segment was created) since it was synced.
    pub dir_dirty: bool,
    /// Set by `close`; checked under the lock so no send slips in after it.
    pub closed: bool,
}

impl<S: Storage> Writer<S> {
    pub(crate) fn new(active: Active<S>, base_pos: u64, durability: Durability) -> Self {
        Writer {
            id: active.id,
            seed: format::segment_seed(active.id),
            file: active.file,
            map: writer_map(active.writer, durability),
            next_seq: active.next_seq,
            base_pos,
            dir_dirty: false,
            closed: false,
        }
    }

    /// Whether a frame of `frame_len` bytes fits, leaving room for the seal.
    #[inline]
    fn fits(&self, frame_len: u64) -> bool {
        (self.map.remaining() as u64) >= frame_len + FRAME_HEADER_LEN
    }

    /// Gives back the zero-filled pages ahead of the last frame, at close
    /// ([`StorageFile::discard`]: unwritten, still allocated blocks on ext4):
    /// they are dirty, and the close's fsync would write them out, up to
    /// 8 MiB of zeros (measured on ext4: a close after 1,000 messages of
    /// 100 B wrote 8.14 MiB to disk). The range holds zeros or stale bytes
    /// either way, past every frame. Where the file system writes the range
    /// back before zeroing it (XFS, older ext4) or cannot zero in place
    /// (tmpfs, NFS), nothing is saved. A failure only costs that write; it
    /// is logged.
    ///
    /// [`StorageFile::discard`]: crate::storage::StorageFile::discard
    pub(crate) fn drop_fill_ahead(&self) {
        let range = self.map.filled_ahead();
        if range.is_empty() {
            return;
        }
        if let Err(e) = self.file.discard(range.start as u64, range.len() as u64) {
            tracing::debug!(segment = self.id, error = %e, "could not drop the zero-filled pages ahead of the writer");
        }
    }

    /// Channel byte position of the write position.
    pub(crate) fn channel_pos(&self) -> u64 {
        self.base_pos + self.map.pos() as u64 - SEGMENT_HEADER_LEN
    }
}

impl<S: Storage> Shared<S> {
    /// Appends one message and returns its sequence number. In `Flush` mode
    /// the message is visible to receivers when this returns; in `Buffered`
    /// mode once a completer has filled in its CRC and published it
    /// ([`complete_appended`](Self::complete_appended) from the flusher,
    /// within `flush_interval`, or [`complete_written`](Self::complete_written)
    /// from `flush`); in `Sync` mode once [`sync_to`](Self::sync_to) has made
    /// it durable.
    #[inline]
    pub(crate) fn append(&self, msg: &[u8], flags: u8) -> Result<u64, SendError> {
        let max = self.config.max_message_size;
        if msg.len() > max {
            return Err(SendError::TooLarge { size: msg.len(), max });
        }
        let frame_len = format::frame_len(msg.len() as u64);
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if w.closed {
            return Err(SendError::Closed);
        }
        if let Some(e) = self.poison.get() {
            return Err(SendError::Poisoned(Arc::clone(e)));
        }
        if !w.fits(frame_len) {
            self.rotate(&mut w, msg.len() as u64)?;
        }
        let seq = w.next_seq;
        let header = FrameHeader::without_crc(msg.len(), flags, seq).to_bytes();
        let durability = self.config.durability;
        let defer = defers(durability, msg.len());
        let appended = if defer {
            // The CRC is left for a completer (the flusher, `flush`, or a
            // receiver that runs out of frames), which finishes and publishes
            // the frames behind the writer: `complete_appended`.
            w.map.append_deferred(&[&header, msg], frame_len as usize)
        } else {
            let seed = w.seed;
            // The CRC is computed over the frame as copied into the map, where
            // header and payload lie next to each other: one pass, over bytes
            // that are in the cache.
            w.map.append_with(&[&header, msg], frame_len as usize, |frame| {
                format::fill_crc(seed, frame)
            })
        };
        if !appended {
            // `fits` (or the fresh segment's capacity) guarantees room.
            let e = std::io::Error::other("segment map too short for a frame that was checked to fit");
            return Err(self.poison_with(&w, e));
        }
        w.next_seq = seq + 1;
        self.written_seq.store(seq + 1, Ordering::Release);
        match durability {
            Durability::Flush => {
                w.map.publish();
                self.published_seq.store(seq + 1, Ordering::Release);
            }
            // A large message publishes itself, and any small ones still
            // unfinished before it.
            Durability::Buffered if !defer => self.complete_written(&mut w),
            _ => {}
        }
        Ok(seq)
    }

    /// Seals the active segment and starts the next one, sized for a first
    /// frame of `first_len` payload bytes.
    #[cold]
    fn rotate(&self, w: &mut Writer<S>, first_len: u64) -> Result<(), SendError> {
        // Every frame of the old segment gets its CRC before anything else
        // happens: only the newest segment may hold unfinished frames (a
        // crash leaves them as a torn tail, which recovery trims).
        self.complete_written(w);
        if w.map.remaining() < FRAME_HEADER_LEN as usize {
            // `fits` keeps room for the seal and recovery makes room in a
            // segment cut short after its last frame, so this cannot happen;
            // if it did, going on would leave the segment unsealed, which
            // receivers could not read past: stop before creating anything.
            let e = std::io::Error::other(format!("no room left to seal segment {}", w.id));
            return Err(self.poison_with(w, e));
        }
        let sync = self.config.durability == Durability::Sync;
        let new_id = w.id + 1;
        let seal_pos = w.channel_pos() + FRAME_HEADER_LEN;
        let mut spare = self
            .catalog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_spare(&self.config, first_len);
        let created = create_segment(
            &self.storage,
            &self.dir,
            &self.config,
            &mut spare,
            new_id,
            w.next_seq,
            seal_pos,
            first_len,
            sync,
        );
        if let Some(spare) = spare {
            // Not renamed: still a spare (its reuse failed on a full disk,
            // say), counted and tried again at the next rotation.
            let mut cat = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            cat.spares.push(spare);
        }
        let active = match created {
            Ok(a) => a,
            Err(Error::Io { path, source }) if is_disk_full(&source) => {
                // Nothing was written: the sender stays usable and the next
                // send tries again (once receivers let segments go).
                return Err(SendError::DiskFull { path });
            }
            Err(Error::Io { source, .. }) => return Err(self.poison_with(w, source)),
            Err(other) => return Err(self.poison_with(w, std::io::Error::other(other.to_string()))),
        };
        let old_file = std::mem::replace(&mut w.file, Arc::clone(&active.file));
        let new_map = Arc::clone(&active.map);
        let mut old = std::mem::replace(&mut w.map, writer_map(active.writer, self.config.durability));
        let seal = FrameHeader::new(&[], FLAG_SEAL, w.next_seq, w.id).to_bytes();
        // Room was checked above.
        let sealed = old.append(&[&seal], FRAME_HEADER_LEN as usize);
        debug_assert!(sealed, "the seal did not fit after the room check");
        // Nothing is written after the seal: the flusher stops filling.
        old.claim_all();
        w.id = new_id;
        w.seed = format::segment_seed(new_id);
        w.base_pos = seal_pos;
        if sync {
            // Everything in the old segment becomes visible only once durable.
            if let Err(e) = self.fsync_segments(|| old_file.sync_data().and_then(|()| self.storage.sync_dir(&self.dir)))
            {
                old.discard_unpublished();
                return Err(self.poison_with(w, e));
            }
        } else {
            w.dir_dirty = true;
        }
        let overdue = {
            // Under the catalog lock: a receiver that reads the seal finds the
            // next segment registered.
            let mut cat = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            if !sync {
                cat.unsynced.insert(new_id - 1, old_file);
            }
            cat.segments.insert(
                new_id,
                SegMeta {
                    base_seq: w.next_seq,
                    base_pos: seal_pos,
                    packed: None,
                },
            );
            cat.active_id = new_id;
            cat.active_map = new_map;
            old.publish();
            if cat.unsynced.len() > crate::catalog::MAX_UNSYNCED {
                cat.unsynced.pop_first()
            } else {
                None
            }
        };
        self.flusher.active_seg.store(new_id, Ordering::Release);
        self.compressor.kick();
        self.published_seq.fetch_max(w.next_seq, Ordering::AcqRel);
        if let Some((old_id, file)) = overdue {
            // Sealed several segments ago: its pages have most likely been
            // written back already, and this fsync finds little to do. (After
            // the rotation's bookkeeping: the rotation itself is done.)
            if let Err(e) = self.fsync_segments(|| file.sync_data()) {
                return Err(self.poison_segment(old_id, e));
            }
        }
        if sync {
            // The old segment was fsynced whole and published: its messages'
            // sends are done, even if a group commit covering them fails.
            let mut st = self.sync_state.lock().unwrap_or_else(PoisonError::into_inner);
            self.record_synced(&mut st, w.next_seq);
            drop(st);
            self.sync_cv.notify_all();
        }
        Ok(())
    }

    /// Finishes (fills in the CRCs of) and publishes every frame appended so
    /// far, in `Buffered` mode (in the others, frames are finished as they
    /// are appended): what `flush`, `sync`, `close` and a rotation need. Waits
    /// for the flusher if it is completing a batch.
    pub(crate) fn complete_written(&self, w: &mut Writer<S>) {
        if self.config.durability == Durability::Buffered {
            let (seed, next_seq) = (w.seed, w.next_seq);
            // Under the writer lock nobody publishes past `next_seq`: a store
            // cannot move the mark back.
            w.map.complete(
                |frames| format::complete_frames(seed, frames).0,
                || self.published_seq.store(next_seq, Ordering::Release),
            );
        }
    }

    /// [`complete_written`](Self::complete_written) without the writer lock
    /// (senders keep appending meanwhile), for the flusher and for receivers
    /// that find nothing to read: finishes and publishes the frames appended
    /// to `map`, the map of segment `id`. Unless `wait`, gives up when
    /// somebody else is completing them.
    pub(crate) fn complete_appended(&self, id: u64, map: &crate::storage::SegmentMap, wait: bool) {
        // A lower bound of every unpublished frame's sequence number, taken
        // before the frames: the last one's is rebuilt from its low 32 bits.
        let floor = self.published_seq.load(Ordering::Acquire);
        let last = std::cell::Cell::new(None);
        map.try_complete(
            wait,
            |frames| {
                let (done, seq_lo) = format::complete_frames(format::segment_seed(id), frames);
                last.set(seq_lo);
                done
            },
            // Counted before the next completer comes in: one that finds
            // nothing left to finish must find the count up to date.
            || {
                // A frame below the floor (counted already) changes nothing;
                // the frames a completer sees are fewer than 2^31 apart.
                let ahead = last.get().map(|seq_lo: u32| seq_lo.wrapping_sub(floor as u32));
                if let Some(ahead) = ahead.filter(|&a| a < 1 << 31) {
                    self.published_seq
                        .fetch_max(floor + u64::from(ahead) + 1, Ordering::AcqRel);
                }
            },
        );
    }

    /// Called by a receiver that finds nothing to read: in `Buffered` mode,
    /// finishes and publishes what senders have appended, rather than
    /// leaving it to the flusher, so that a message is there for any
    /// receiver once its `send` has returned (as with `std::sync::mpsc`).
    /// Another completer may have published them since the receiver looked:
    /// it must look again whatever this finds.
    pub(crate) fn catch_up(&self) {
        if self.config.durability != Durability::Buffered
            || self.written_seq.load(Ordering::Acquire) <= self.published_seq.load(Ordering::Acquire)
        {
            return;
        }
        let (id, map) = {
            let cat = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            (cat.active_id, Arc::clone(&cat.active_map))
        };
        self.complete_appended(id, &map, true);
        self.notify.notify_if_waiting();
    }

    /// Every message below `upto` is durable: the group commit's mark (under
    /// `sync_state`, which `st` is) and `synced_seq`.
    fn record_synced(&self, st: &mut SyncState, upto: u64) {
        st.synced = st.synced.max(upto);
        self.synced_seq.fetch_max(upto, Ordering::AcqRel);
    }

    /// Runs `fsyncs` (of segment files and the directory) under the fsync
    /// lock; a failure poisons the sender side before the lock is released,
    /// and a success after an fsync failed is a failure too. (A success
    /// while the side is poisoned by something else, a rotation that could
    /// not create its segment, say, is a success: those bytes are durable.)
    ///
    /// A group-commit leader and a `Sync`-mode rotation may fsync the same
    /// segment file (one descriptor) at the same time, and Linux reports a
    /// writeback error to only one `fsync` of a descriptor. Without the lock,
    /// one could see the error and the other succeed on the same lost pages,
    /// and publish them (or report them durable) before the first recorded
    /// the poison. With it, whichever runs second sees the poison.
    pub(crate) fn fsync_segments(&self, fsyncs: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let _serial = self.fsync_lock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = fsyncs() {
            self.fsync_failed.store(true, Ordering::Release);
            let _ = self.poison.set(Arc::new(std::io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
        match self.fsync_poison() {
            Some(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Ok(()),
        }
    }

    /// The poison, if an fsync failure set it: from then on no fsync's
    /// success is trusted.
    fn fsync_poison(&self) -> Option<&Arc<std::io::Error>> {
        self.poison.get().filter(|_| self.fsync_failed.load(Ordering::Acquire))
    }

    /// Poisons the sender side with `e` and returns the error for the caller.
    pub(crate) fn poison_with(&self, w: &Writer<S>, e: std::io::Error) -> SendError {
        self.poison_segment(w.id, e)
    }

    /// [`poison_with`](Self::poison_with) for a failure on segment `id`
    /// (not necessarily the active one).
    fn poison_segment(&self, id: u64, e: std::io::Error) -> SendError {
        let source = Arc::new(e);
        let _ = self.poison.set(Arc::clone(&source));
        tracing::error!(segment = id, error = %source, "channel writer poisoned");
        SendError::Io {
            path: self.dir.join(format::segment_file_name(id)),
            source,
        }
    }

    /// Makes every message up to `target` (a sequence number, exclusive)
    /// durable. Concurrent callers share one fsync: the first becomes the
    /// leader and syncs everything written so far; the others wait for it.
    /// In `Sync` mode the leader then publishes what it synced.
    pub(crate) fn sync_to(&self, target: u64) -> Result<(), SendError> {
        let mut st = self.sync_state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Durable before anything failed (and, in `Sync` mode, published):
            // done, whatever failed since.
            if st.synced >= target {
                return Ok(());
            }
            // A leader at work may still cover us, even once the channel is
            // poisoned (by something other than an fsync): wait for it.
            if st.in_progress {
                st = self.sync_cv.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Poisoned: fail, except in `Sync` mode when something other
            // than an fsync did it (a rotation that could not create its
            // segment); then lead a sync as usual. Nothing more is
            // appended, but what was appended is synced and its sends
            // succeed. Failing them instead is no option: an earlier
            // leader's fsync of the file may already have made their frames
            // durable, and a power loss would bring them back.
            if let Some(e) = self.poison.get()
                && (!self.is_sync() || self.fsync_poison().is_some())
            {
                drop(st);
                if self.is_sync() {
                    // No sync will come: the `Sync` sends whose frames wait
                    // unpublished fail, so their frames go, or a crash
                    // (which keeps what the process wrote) would bring them
                    // back. Nobody appends or leads a sync once an fsync has
                    // failed.
                    self.writer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .map
                        .discard_unpublished();
                }
                return Err(SendError::Poisoned(Arc::clone(e)));
            }
            break;
        }
        st.in_progress = true;
        drop(st);

        let (file, dir_dirty, upto, id, pos) = {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            // Only finished frames may count as durable: a frame fsynced
            // before its CRC is filled in is a torn frame on disk.
            self.complete_written(&mut w);
            let dir_dirty = std::mem::take(&mut w.dir_dirty);
            (Arc::clone(&w.file), dir_dirty, w.next_seq, w.id, w.map.pos())
        };
        // Every segment sealed before the snapshot above is in `unsynced`
        // (a rotation registers it under the writer lock); one sealed since
        // may be taken too, and is fsynced a little early. Taken after the
        // writer lock is let go, so that senders never wait for the catalog
        // (where GC may be fsyncing) behind a sync. `Sync` mode keeps
        // nothing there.
        let sealed: Vec<Arc<S::File>> = if self.is_sync() {
            Vec::new()
        } else {
            std::mem::take(&mut self.catalog.lock().unwrap_or_else(PoisonError::into_inner).unsynced)
                .into_values()
                .collect()
        };
        // A concurrent rotation's fsync of the same file may have failed
        // (and been reported) even though ours succeeded: trust neither.
        let result = self.fsync_segments(|| {
            sealed
                .iter()
                .try_for_each(|sealed| sealed.sync_data())
                .and_then(|()| file.sync_data())
                .and_then(|()| {
                    if dir_dirty {
                        self.storage.sync_dir(&self.dir)
                    } else {
                        Ok(())
                    }
                })
        });
        let outcome = match result {
            Ok(()) if self.config.durability == Durability::Sync => {
                let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
                // Checked again under the writer lock: a rotation whose fsync
                // failed after ours succeeded has discarded the unpublished
                // frames of this segment, ours among them, and poisoned the
                // channel before releasing the lock. Then they are gone, and
                // so must the rest be: their sends fail.
                match self.fsync_poison() {
                    Some(e) => {
                        // Every unpublished frame of the active segment
                        // belongs to a send still waiting for a sync, which
                        // now fails.
                        w.map.discard_unpublished();
                        Err(SendError::Poisoned(Arc::clone(e)))
                    }
                    None => {
                        // Our fsync covered the frames up to `pos` (or, if a
                        // rotation moved on, the rotation's did and published
                        // them): durable, so their sends succeed, also when
                        // something other than an fsync has poisoned the
                        // channel meanwhile (failing them would zero frames
                        // that a power loss then brings back). Frames
                        // appended after our snapshot are their senders'
                        // next leader's, poisoned or not.
                        if w.id == id {
                            w.map.publish_to(pos);
                        }
                        drop(w);
                        self.published_seq.fetch_max(upto, Ordering::AcqRel);
                        self.notify.notify_if_waiting();
                        Ok(upto)
                    }
                }
            }
            Ok(()) => Ok(upto),
            Err(e) => {
                // Never retried: after a failed fsync the kernel may have
                // dropped the dirty pages, so a later success would lie. The
                // frames it covered are erased, so they are never delivered.
                let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
                if self.config.durability == Durability::Sync {
                    // The active segment's unpublished frames, whichever
                    // segment that is now: their sends fail.
                    w.map.discard_unpublished();
                }
                Err(self.poison_with(&w, e))
            }
        };
        let mut st = self.sync_state.lock().unwrap_or_else(PoisonError::into_inner);
        st.in_progress = false;
        if let Ok(upto) = outcome {
            self.record_synced(&mut st, upto);
        }
        // A `Sync`-mode rotation may have made (and published) this caller's
        // message durable before the failure: then its send succeeded.
        let covered = st.synced >= target;
        drop(st);
        self.sync_cv.notify_all();
        if covered { Ok(()) } else { outcome.map(drop) }
    }
}

/// The writer's end of a new active segment's map. In `Buffered` mode it
/// defers finishing frames to a completer. In `Sync` mode the writer
/// takes the whole segment at once, so nothing in it is ever zero-filled
/// ahead (neither by the flusher nor by the writer catching up): filled pages
/// are dirty, and every group commit's fsync would write them out ahead of
/// the data.
fn writer_map(mut map: MapWriter, durability: Durability) -> MapWriter {
    match durability {
        Durability::Sync => map.claim_all(),
        Durability::Buffered => map.defer(),
        Durability::Flush => {}
    }
    map
}

/// The largest message whose CRC a `Buffered` send leaves to a completer.
/// Below it, the CRC is a chain of dependent carry-less multiplies that costs
/// the sender as much as the rest of its work (16 B: `Write_16` 47 → 33 ns);
/// above it, checksumming the bytes just copied is cheap for the sender,
/// and the flusher needs its time for the zero-fill ahead of the writer
/// (deferred at 512 B, `Write_512` went from 152 to 205 ns, and `Write_4096`
/// from 1.03 to 1.36 µs, as the sender took the page faults).
const DEFER_MAX_LEN: usize = 128;

/// Whether a send of `len` bytes leaves its CRC (and its publication) to a
/// completer, rather than publishing the message itself.
pub(crate) fn defers(durability: Durability, len: usize) -> bool {
    durability == Durability::Buffered && len <= DEFER_MAX_LEN
}

/// Whether an I/O error means the disk (or quota) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// State of the group commit.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Every message below this sequence number is durable.
    pub synced: u64,
    /// A leader (a `sync_to` caller: a sender, `sync()` or `close()`) is
    /// syncing now.
    pub in_progress: bool,
}
