//! The channel handle, the sender, and the state they share.

use crate::catalog::{Catalog, HEAD_FILE, HeadFile};
use crate::config::{Builder, Durability};
use crate::error::{Error, SendError};
use crate::format;
use crate::notify::Notifier;
use crate::receiver::{AckReceiver, Receiver};
use crate::recovery::recover;
use crate::storage::{Fs, SegmentMap, Storage};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex};
use crate::writer::{SyncState, Writer};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

/// A snapshot of the channel's segments (see [`FileChannel::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Segments holding messages (the active one included).
    pub segments: usize,
    /// Of those, plain segment files.
    pub plain_segments: usize,
    /// Of those, compressed segment files.
    pub compressed_segments: usize,
    /// Consumed segment files kept for reuse.
    pub spare_segments: usize,
    /// Bytes the compressed segments held before compression.
    pub compressed_plain_bytes: u64,
    /// Bytes the compressed segment files take.
    pub compressed_bytes: u64,
    /// How many times receivers decompressed a compressed segment to read
    /// it, since the channel was opened. Receivers in the same segment share
    /// one copy, and one that arrives while another is decompressing waits
    /// for that copy, so fan-out receivers reading together decompress each
    /// segment once.
    pub decompressions: u64,
}

impl Stats {
    /// How many times smaller the compressed segments are than the plain
    /// bytes they hold; `None` when there are none.
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.compressed_bytes > 0).then(|| self.compressed_plain_bytes as f64 / self.compressed_bytes as f64)
    }
}

/// State shared by the channel, its senders and its receivers.
pub(crate) struct Shared<S: Storage> {
    pub storage: S,
    pub dir: PathBuf,
    pub config: Builder,
    pub writer: Mutex<Writer<S>>,
    pub catalog: Mutex<Catalog<S>>,
    pub notify: Notifier,
    /// Sequence number after the last appended message.
    pub written_seq: AtomicU64,
    /// Sequence number after the last published (visible) message.
    pub published_seq: AtomicU64,
    /// Sequence number after the last fsynced message.
    pub synced_seq: AtomicU64,
    pub sync_state: Mutex<SyncState>,
    pub sync_cv: Condvar,
    /// Held around every fsync of the segments and the directory by the
    /// writer side (a group-commit leader, a `Sync`-mode rotation), together
    /// with recording a failure as the poison: see
    /// [`Shared::fsync_segments`].
    pub fsync_lock: Mutex<()>,
    /// How often `sync()` is called: it sets the flusher's zero-fill
    /// granule.
    pub sync_pace: SyncPace,
    /// Held for the whole of `close`: a second (or concurrent) call waits
    /// for the first and reports how it ended.
    close_lock: Mutex<()>,
    /// Paired with `catalog`: notified when a receiver is done decompressing
    /// a segment (`Catalog::loading`).
    pub segment_loaded: Condvar,
    /// The first write or fsync failure; sends refuse to go on after it.
    pub poison: OnceLock<Arc<std::io::Error>>,
    /// Set (before `poison`) when an fsync failed: from then on no fsync's
    /// success is trusted. Other failures poison too, but leave fsyncs that
    /// succeed meaning what they say.
    pub fsync_failed: AtomicBool,
    /// Set once the sender side is closed (after the last publish):
    /// receivers that see it drain what is published, then disconnect.
    pub closed: AtomicBool,
    /// Set when `close` starts (sends are refused from then on):
    /// `is_closed`.
    pub closing: AtomicBool,
    /// `FileChannel` and `Sender` handles alive; the last one closes.
    handles: AtomicUsize,
    pub flusher: Flusher,
    pub compressor: crate::compressor::Compressor,
    lock: Mutex<Option<S::Lock>>,
    /// The schema registry, loaded on first use by a typed handle.
    pub registry: Mutex<Option<crate::registry::Registry>>,
}

/// How often `sync()` is called, in bytes: the flusher zero-fills ahead of
/// the writer in stretches of about that size.
///
/// The kernel sizes page-cache folios by the write that creates them (large
/// folios: ext4 since Linux 6.16, XFS), and an fsync writes every folio with
/// a dirty byte in full. Filled a megabyte at a time, a segment is made of
/// megabyte folios, and a `sync()` after a few small sends wrote out about
/// 300 KiB (64-byte sends, `sync()` every 10: 30,274 bytes reached the disk
/// per send, against 1,520 with 16 KiB stretches). Small stretches cost the
/// writer more (64-byte `send` 45-50 ns against 30-33 ns with 16 KiB): they
/// are used only while `sync()` comes every few kilobytes, where its fsync
/// dwarfs that.
pub(crate) struct SyncPace {
    /// Channel position and sequence number at the last `sync()`.
    pos: AtomicU64,
    seq: AtomicU64,
    /// Bytes and messages between the last two (`u64::MAX` bytes: fewer
    /// than two so far).
    gap_bytes: AtomicU64,
    gap_msgs: AtomicU64,
}

/// The smallest zero-fill stretch.
const MIN_FILL_GRANULE: usize = 16 << 10;

impl SyncPace {
    fn new() -> Self {
        SyncPace {
            pos: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            gap_bytes: AtomicU64::new(u64::MAX),
            gap_msgs: AtomicU64::new(0),
        }
    }

    /// A `sync()` returned at channel position `pos`, before message `seq`.
    fn record(&self, pos: u64, seq: u64) {
        let (last_pos, last_seq) = (
            self.pos.swap(pos, Ordering::Relaxed),
            self.seq.swap(seq, Ordering::Relaxed),
        );
        self.gap_bytes.store(pos.saturating_sub(last_pos), Ordering::Relaxed);
        self.gap_msgs.store(seq.saturating_sub(last_seq), Ordering::Relaxed);
    }

    /// The zero-fill granule while `written` messages have been sent:
    /// whole fills (`usize::MAX`) unless `sync()` comes at least every
    /// `FILL_STEP` bytes, and again once it has not come for four of its
    /// gaps.
    fn granule(&self, written: u64) -> usize {
        let gap = self.gap_bytes.load(Ordering::Relaxed);
        let since = written.saturating_sub(self.seq.load(Ordering::Relaxed));
        let stopped = since > self.gap_msgs.load(Ordering::Relaxed).max(1).saturating_mul(4);
        match usize::try_from(gap) {
            Ok(gap) if gap < FILL_STEP && !stopped => gap.clamp(MIN_FILL_GRANULE, FILL_STEP).next_power_of_two(),
            _ => usize::MAX,
        }
    }
}

/// The background thread: in `Buffered` mode, finishes (fills in the CRCs
/// of) and publishes what senders appended, and wakes blocked receivers,
/// within `flush_interval`; prepares pages ahead of the writer, maps
/// pages in ahead of receivers and deletes or recycles segments receivers
/// have passed. It parks when there is
/// nothing to do.
///
/// Aligned to its own cache lines: senders only read `idle`, and must not
/// share a line with what the flusher writes.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Flusher {
    idle: AtomicBool,
    stop: AtomicBool,
    /// A receiver moved on: segments may be collectable.
    pub gc_pending: AtomicBool,
    /// Id of the active segment (the flusher re-reads the catalog when it
    /// changes).
    pub active_seg: AtomicU64,
    /// Stretches of receivers' maps to map in ahead of them (map, offset,
    /// length), so that a receiver does not pay for it on its own thread.
    read_ahead: Mutex<Vec<(Arc<SegmentMap>, usize, usize)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// At most this many read-ahead requests wait for the flusher; more are
/// dropped (the receivers then take page faults, as without them).
const READ_AHEAD_QUEUE: usize = 64;

/// How far ahead of the writer the flusher prepares pages: zero-fills them
/// through the file (and, past half this far ahead, faults them in too) or,
/// in `Sync` mode, only faults them in.
const PREFAULT_WINDOW: usize = 8 << 20;
/// How much it faults in at a time in `Sync` mode, between its other duties.
const PREFAULT_STEP: usize = 256 << 10;
/// How much it zero-fills at a time in the other modes (large writes let the
/// kernel use large folios; the writer waits for a fill in progress when it
/// catches up).
const FILL_STEP: usize = 1 << 20;

/// A durable channel of byte messages in a directory.
///
/// Any number of [`Sender`]s append; each [`Receiver`] independently reads
/// every message in send order; an [`AckReceiver`] keeps messages on disk
/// until it acks them. One `FileChannel` at a time owns a directory.
///
/// ```
/// use filechannel::FileChannel;
/// let dir = tempfile::tempdir()?;
/// let ch = FileChannel::open(dir.path())?;
/// let tx = ch.tx();
/// let mut rx = ch.rx();
/// tx.send(b"hello")?;
/// assert_eq!(rx.recv()?, b"hello");
/// assert_eq!(ch.write_offset(), 1);
/// ch.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FileChannel<S: Storage = Fs> {
    shared: Arc<Shared<S>>,
}

/// The sending side of a channel. `Clone + Send + Sync`; a `send` from any
/// clone is ordered with all others.
pub struct Sender<S: Storage = Fs> {
    shared: Arc<Shared<S>>,
}

impl FileChannel<Fs> {
    /// Opens the channel in `dir` with default settings, creating the
    /// directory if it is missing and recovering from a crash if needed.
    ///
    /// # Errors
    /// [`Error::Locked`] if another owner holds the directory, and an error
    /// naming the file for anything on disk that cannot be recovered.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path().join("spool"))?;
    /// assert!(filechannel::FileChannel::open(dir.path().join("spool")).unwrap_err().is_locked());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        Builder::new().open(dir)
    }

    /// A builder for non-default settings.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<S: Storage> FileChannel<S> {
    pub(crate) fn open_inner(storage: S, dir: &Path, config: Builder) -> Result<Self, Error> {
        let existed = storage.list(dir).is_ok();
        storage.create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if !existed && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The new directory's entry must be durable too.
            storage.sync_dir(parent).map_err(|e| Error::io(parent, e))?;
        }
        let lock = lock_dir(&storage, dir)?;
        let sync = config.durability == Durability::Sync;
        // After a clean close every older segment was fsynced whole, so its
        // seal is proof enough; after a crash (a power loss, maybe) recovery
        // scans their frames for holes.
        let clean = crate::catalog::last_close_was_clean(&storage, dir);
        let mut head = HeadFile::open(&storage, dir, sync)?;
        let recovered = recover(&storage, dir, &config, clean, head.seq)?;
        let active = recovered.active;
        let next_seq = active.next_seq;
        // A head past the last message (a power loss kept the head file's
        // write but not the frames it acked) is lowered on disk too, fsynced
        // before anything is sent: new messages take the sequence numbers
        // below the old head, and a crash that left the old head in place
        // would make the next open skip them unacked.
        let clamped = head.seq > next_seq;
        if clamped {
            tracing::warn!(
                head = head.seq,
                next_seq,
                "head file is ahead of the last message; clamping it"
            );
        }
        if clamped || head.clean {
            // In use from now on: a crash before the next clean close must
            // make the next open scan.
            let seq = head.seq.min(next_seq);
            head.store(seq, true).map_err(|e| Error::io(head.path(), e))?;
        }
        let base_pos = recovered.segments.get(&active.id).map_or(0, |m| m.base_pos);
        let active_id = active.id;
        let catalog = Catalog {
            segments: recovered.segments,
            active_id: active.id,
            active_map: Arc::clone(&active.map),
            read_maps: std::collections::BTreeMap::new(),
            cursors: Vec::new(),
            ghosts: Vec::new(),
            head,
            spares: recovered.spares,
            closed: false,
            compressing: None,
            loading: std::collections::BTreeSet::new(),
            decompressions: 0,
            dir_unsynced: false,
            unsynced: std::collections::BTreeMap::new(),
        };
        let shared = Arc::new(Shared {
            writer: Mutex::new(Writer::new(active, base_pos, config.durability)),
            catalog: Mutex::new(catalog),
            notify: Notifier::default(),
            written_seq: AtomicU64::new(next_seq),
            published_seq: AtomicU64::new(next_seq),
            // Recovery synced everything it kept.
            synced_seq: AtomicU64::new(next_seq),
            sync_state: Mutex::new(SyncState {
                synced: next_seq,
                in_progress: false,
            }),
            sync_cv: Condvar::new(),
            fsync_lock: Mutex::new(()),
            close_lock: Mutex::new(()),
            sync_pace: SyncPace::new(),
            segment_loaded: Condvar::new(),
            poison: OnceLock::new(),
            fsync_failed: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            handles: AtomicUsize::new(1),
            compressor: Default::default(),
            flusher: Flusher {
                active_seg: AtomicU64::new(active_id),
                read_ahead: Mutex::new(Vec::with_capacity(READ_AHEAD_QUEUE)),
                ..Flusher::default()
            },
            lock: Mutex::new(Some(lock)),
            registry: Mutex::new(None),
            storage,
            dir: dir.to_path_buf(),
            config,
        });
        start_flusher(&shared)?;
        crate::compressor::start(&shared).map_err(|e| Error::io(dir, e))?;
        Ok(FileChannel { shared })
    }

    /// A new sender.
    pub fn tx(&self) -> Sender<S> {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A new independent receiver. It starts at the oldest message some
    /// receiver still needs: not yet read by a live receiver, not yet acked
    /// by an acking one (live, or dropped since), and, with no receivers at
    /// all, not consumed before. After a restart that is the oldest message
    /// not acked. It holds back deletion of everything it has not read.
    pub fn rx(&self) -> Receiver<S> {
        Receiver::new(Arc::clone(&self.shared), false)
    }

    /// A new acknowledging receiver: like [`rx`](Self::rx), but messages stay
    /// on disk until acked with [`AckReceiver::ack`], and a receiver opened
    /// after a restart sees every message that was not acked.
    pub fn rx_ack(&self) -> AckReceiver<S> {
        AckReceiver::new(Receiver::new(Arc::clone(&self.shared), true))
    }

    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.shared
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Number of messages sent into the channel since it was created.
    pub fn write_offset(&self) -> u64 {
        self.shared.written_seq.load(Ordering::Acquire)
    }

    /// Number of messages finished, visible to receivers and handed to the
    /// OS (they survive a crash of this process). In `Flush` mode this
    /// equals [`write_offset`](Self::write_offset) once `send` has returned;
    /// in `Buffered` mode it catches up within `flush_interval`, at a
    /// [`Sender::flush`], or when a receiver reads; in `Sync` mode messages
    /// count once fsynced.
    pub fn flush_offset(&self) -> u64 {
        self.shared.published_seq.load(Ordering::Acquire)
    }

    /// Number of messages known to be fsynced (durable across power loss).
    pub fn sync_offset(&self) -> u64 {
        self.shared.synced_seq.load(Ordering::Acquire)
    }

    /// Bytes the channel's files occupy on disk (allocated blocks).
    ///
    /// # Errors
    /// An I/O error listing the directory or reading a file's metadata.
    pub fn disk_usage(&self) -> Result<u64, Error> {
        let sh = &self.shared;
        let names = sh.storage.list(&sh.dir).map_err(|e| Error::io(&sh.dir, e))?;
        let mut total = 0;
        for name in names {
            let ours = format::parse_segment_file_name(&name).is_some()
                || format::parse_compressed_file_name(&name).is_some()
                || format::parse_spare_file_name(&name)
                || name == HEAD_FILE
                || name == crate::storage::LOCK_FILE;
            if !ours {
                continue;
            }
            let path = sh.dir.join(&name);
            match sh.storage.disk_usage(&path) {
                Ok(n) => total += n,
                // Deleted by GC between listing and looking.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
        Ok(total)
    }

    /// How many segments the channel holds, in which form, and how well the
    /// compressed ones compress.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let s = ch.stats();
    /// assert_eq!((s.segments, s.plain_segments, s.compressed_segments), (1, 1, 0));
    /// assert_eq!(s.compression_ratio(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.shared
            .catalog
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats()
    }

    /// The channel's directory.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// Closes the channel: later sends fail with [`SendError::Closed`], every
    /// message is fsynced, background work stops and the directory lock is
    /// released (the directory can be opened again, also by this process).
    /// Receivers keep reading what is on disk, then get `Disconnected`.
    /// Closing twice is fine: a later (or concurrent) call waits for the
    /// first to finish, then returns `Ok` or, if the first failed,
    /// [`Error::Poisoned`] with the first failure: a failed fsync is never
    /// reported as success by calling again.
    ///
    /// # Errors
    /// The fsync failed (or failed earlier: the channel was poisoned).
    pub fn close(&self) -> Result<(), Error> {
        self.shared.close()
    }
}

impl<S: Storage> Shared<S> {
    pub(crate) fn close(&self) -> Result<(), Error> {
        let _one_at_a_time = self.close_lock.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            if w.closed {
                // Closed already, by an earlier call that has finished: a
                // failure then (a failed fsync poisons) is reported again,
                // never turned into success by retrying.
                return match self.poison.get() {
                    Some(e) => Err(Error::Poisoned(Arc::clone(e))),
                    None => Ok(()),
                };
            }
            w.closed = true;
            self.closing.store(true, Ordering::Release);
        }
        self.compressor.stop();
        self.flusher.stop.store(true, Ordering::Release);
        let thread = self
            .flusher
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            t.thread().unpark();
            if t.join().is_err() {
                tracing::error!("the channel's flusher thread panicked");
            }
        }
        // Requests the flusher will never serve would keep their segments
        // mapped, and then the collection below deletes them instead of
        // recycling them. (The maps are dropped after the lock is released.)
        let unserved = std::mem::take(&mut *self.flusher.read_ahead.lock().unwrap_or_else(PoisonError::into_inner));
        drop(unserved);
        {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            // `Buffered` mode: what the flusher left unfinished.
            self.complete_written(&mut w);
            // The flusher is gone: nothing fills ahead any more. (`Sync`
            // mode fills nothing: its pages ahead are clean.)
            if !self.is_sync() {
                w.drop_fill_ahead();
            }
        }
        // Everything appended, not just what is published: in `Sync` mode a
        // sender may have appended and still be waiting for its group
        // commit, and this sync publishes its message too.
        // Also when poisoned: `sync_to` then waits for a group commit at
        // work and, in `Sync` mode after a failure other than an fsync's,
        // leads one, so that a send waiting for it is published before
        // `closed`, never after; otherwise it fails at once without an fsync.
        let target = self.written_seq.load(Ordering::Acquire);
        let synced = self.sync_to(target);
        // Only now may receivers conclude that nothing more is coming: once
        // they see `closed` they drain what is published, then disconnect.
        self.closed.store(true, Ordering::Release);
        {
            let mut cat = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            cat.collect(&self.storage, &self.dir, true);
            // Everything is synced: say so, so that the next open can trust
            // the seals. (This also syncs a head written earlier without an
            // fsync and not rewritten since.) Not after a failure: then the
            // next open scans.
            let head = if synced.is_ok() && self.poison.get().is_none() {
                cat.head.store_clean()
            } else {
                cat.head.sync()
            };
            if let Err(e) = head {
                tracing::warn!(path = %cat.head.path().display(), error = %e, "could not record the head at close");
            }
            // The lock goes next: from now on nothing may change files. The
            // spares' descriptors go too, and their exclusive locks with
            // them: a receiver kept after `close` keeps the channel alive,
            // and the next owner would find its spares locked and delete
            // them while these descriptors still held their blocks.
            cat.spares.clear();
            cat.closed = true;
        }
        self.notify.notify_all();
        // A typed handle's registry check that started before `closing` may
        // still be writing the registry file: not past the directory lock.
        // (Later ones see `closing` under this lock and do nothing.)
        drop(self.registry.lock().unwrap_or_else(PoisonError::into_inner));
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner).take());
        match (synced, self.poison.get()) {
            (Err(SendError::Io { path, source }), _) => Err(Error::Io {
                path,
                source: Arc::try_unwrap(source).unwrap_or_else(|a| std::io::Error::new(a.kind(), a.to_string())),
            }),
            (_, Some(e)) => Err(Error::Poisoned(Arc::clone(e))),
            _ => Ok(()),
        }
    }

    pub(crate) fn is_sync(&self) -> bool {
        self.config.durability == Durability::Sync
    }

    /// Called by a receiver that is about to sleep: make sure the flusher is
    /// awake to wake it.
    pub(crate) fn arm_flusher(&self) {
        if self.flusher.idle.swap(false, Ordering::SeqCst) {
            self.unpark_flusher();
        }
    }

    /// Asks the flusher to collect consumed segments now, whatever it is
    /// doing: a busy flusher parks a whole `flush_interval` between rounds,
    /// and a long interval must not hold segments on disk for as long.
    pub(crate) fn request_gc(&self) {
        self.flusher.gc_pending.store(true, Ordering::Release);
        // Not idle: else a flusher woken from its short idle park would
        // still take the 50 ms one before the next round.
        self.flusher.idle.store(false, Ordering::SeqCst);
        self.unpark_flusher();
    }

    fn unpark_flusher(&self) {
        if let Some(t) = self
            .flusher
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            t.thread().unpark();
        }
    }

    /// Asks the flusher to map `[from, from + len)` of a receiver's map in
    /// (only what is published by then).
    pub(crate) fn request_read_ahead(&self, map: &Arc<SegmentMap>, from: usize, len: usize) {
        let mut queue = self.flusher.read_ahead.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the queue's lock, which `close` takes to empty the
        // queue after setting `stop`: no request (and no map it holds) stays
        // queued once the flusher is gone.
        if self.flusher.stop.load(Ordering::Acquire) {
            return;
        }
        if queue.len() < READ_AHEAD_QUEUE {
            queue.push((Arc::clone(map), from, len));
        }
        drop(queue);
        self.arm_flusher();
    }

    fn release_handle(&self) {
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1
            && let Err(e) = self.close()
        {
            tracing::error!(dir = %self.dir.display(), error = %e, "closing the channel on drop failed");
        }
    }
}

/// How long `open` keeps trying a lock that is held. A child process spawned
/// by another thread holds a copy of the lock's descriptor between `fork` and
/// `exec` (close-on-exec only closes it at `exec`), so a lock just released
/// can look held for a moment.
const LOCK_RETRY: Duration = Duration::from_millis(25);

fn lock_dir<S: Storage>(storage: &S, dir: &Path) -> Result<S::Lock, Error> {
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    loop {
        if let Some(lock) = storage.try_lock_dir(dir).map_err(|e| Error::io(dir, e))? {
            return Ok(lock);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Locked { dir: dir.to_path_buf() });
        }
        thread::sleep(Duration::from_millis(1));
    }
}

fn start_flusher<S: Storage>(shared: &Arc<Shared<S>>) -> Result<(), Error> {
    let weak = Arc::downgrade(shared);
    let interval = shared.config.flush_interval;
    let handle = thread::Builder::new()
        .name("filechannel-flusher".into())
        .spawn(move || flusher_loop(weak, interval))
        .map_err(|e| Error::io(&shared.dir, e))?;
    *shared.flusher.thread.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    Ok(())
}

/// Wakes receivers blocked in `recv` when messages were published since the
/// last time.
fn wake_receivers<S: Storage>(sh: &Shared<S>, notified_seq: &mut u64) {
    let seq = sh.published_seq.load(Ordering::Acquire);
    // Pairs with the waiter's fence (`Notifier::wait_while`): either we see
    // it registered or it sees what was published.
    crate::sync::fence(Ordering::SeqCst);
    if seq != *notified_seq && sh.notify.has_waiters() {
        sh.notify.notify_all();
        *notified_seq = seq;
    }
}

fn flusher_loop<S: Storage>(shared: std::sync::Weak<Shared<S>>, interval: Duration) {
    let mut notified_seq = 0;
    let mut last_seq = 0;
    // The active segment's map, and how far its pages have been faulted in.
    let mut active: Option<(u64, Arc<SegmentMap>)> = None;
    let mut prefaulted = 0;
    let mut reads = Vec::with_capacity(READ_AHEAD_QUEUE);
    loop {
        let Some(sh) = shared.upgrade() else { return };
        if sh.flusher.stop.load(Ordering::Acquire) {
            return;
        }
        // No lock is taken here that senders take on every send.
        let seg = sh.flusher.active_seg.load(Ordering::Acquire);
        if active.as_ref().is_none_or(|(id, _)| *id != seg) {
            let cat = sh.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            active = Some((cat.active_id, Arc::clone(&cat.active_map)));
            prefaulted = 0;
        }
        // `Buffered` mode: finish (fill in the CRCs of) and publish what
        // senders appended since the last round, off their path (a rotation
        // finishes the segment it seals itself), and again after each of the
        // round's longer steps, so that they do not hold it back.
        let buffered = sh.config.durability == Durability::Buffered;
        let finish = || {
            if let Some((id, map)) = active.as_ref().filter(|_| buffered) {
                sh.complete_appended(*id, map, false);
            }
        };
        finish();
        wake_receivers(&sh, &mut notified_seq);
        // Swapped with a buffer of the same capacity: the receivers' pushes
        // never allocate.
        std::mem::swap(
            &mut reads,
            &mut *sh.flusher.read_ahead.lock().unwrap_or_else(PoisonError::into_inner),
        );
        for (map, from, len) in reads.drain(..) {
            map.prefault_read(from, len);
            finish();
        }
        if sh.flusher.gc_pending.swap(false, Ordering::AcqRel) {
            let mut cat = sh.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            cat.collect(&sh.storage, &sh.dir, sh.is_sync());
        }
        // Zero-filling and faulting pages in ahead of the writer takes the
        // kernel's page allocation off the send path.
        let mut behind = false;
        if let Some((_, map)) = &active {
            let pos = map.published();
            let want = (pos + PREFAULT_WINDOW).min(map.len());
            if sh.is_sync() {
                // Zero-filled or write-faulted pages are dirty: every group
                // commit's fsync would write them out ahead of the data.
                // Only map them in, clean.
                prefaulted = prefaulted.max(pos);
                if prefaulted < want {
                    let step = (want - prefaulted).min(PREFAULT_STEP);
                    map.map_in_ahead(prefaulted, step);
                    prefaulted += step;
                    behind = prefaulted < want;
                }
            } else {
                map.set_fill_granule(sh.sync_pace.granule(sh.written_seq.load(Ordering::Relaxed)));
                behind = map.prepare_ahead(want, FILL_STEP, PREFAULT_WINDOW / 2);
            }
        }
        finish();
        wake_receivers(&sh, &mut notified_seq);
        let written = sh.written_seq.load(Ordering::Acquire);
        // Appended but not yet published (another completer held the flag
        // this round): not idle until it is, or a crash could take it long
        // after its `flush_interval`.
        let unfinished = buffered && written > sh.published_seq.load(Ordering::Acquire);
        // Waiting receivers do not keep it busy: a busy flusher parks a
        // whole `flush_interval`, so a receiver blocked in `recv` waited
        // that long for a small `Buffered` send (for ever with
        // `Duration::MAX`), and an idle channel with a blocked receiver
        // woke the flusher every interval. Idle, it is woken by the next
        // send; parked busy, by a send that sees sleeping receivers
        // (`Sender::send_frame`).
        let busy = behind || unfinished || written != last_seq;
        last_seq = written;
        if !busy {
            sh.flusher.idle.store(true, Ordering::SeqCst);
            // Re-check after announcing idleness: a sender that wrote since
            // has seen `idle` (and will unpark us) or is seen here.
            if sh.written_seq.load(Ordering::SeqCst) != last_seq {
                sh.flusher.idle.store(false, Ordering::SeqCst);
            }
        }
        let idle = sh.flusher.idle.load(Ordering::SeqCst);
        drop(sh);
        if idle {
            // A sender checks `idle` without a fence after storing
            // `written_seq`, so its store may still have been on its way
            // when we looked: look once more after an interval before the
            // long park, or its message could wait 50 ms to be published.
            // An unpark meanwhile (a receiver arming us, `close`) ends the
            // wait: that is what `idle` or `stop` then say.
            thread::park_timeout(interval);
            let still_idle = shared.upgrade().is_some_and(|sh| {
                sh.written_seq.load(Ordering::SeqCst) == last_seq
                    && sh.flusher.idle.load(Ordering::SeqCst)
                    && !sh.flusher.stop.load(Ordering::Acquire)
            });
            if still_idle {
                thread::park_timeout(Duration::from_millis(50));
            }
            if let Some(sh) = shared.upgrade() {
                sh.flusher.idle.store(false, Ordering::SeqCst);
            }
        } else if !behind {
            thread::park_timeout(interval);
        }
    }
}

impl<S: Storage> Sender<S> {
    /// Appends `msg` to the channel. What a returned `send` promises depends
    /// on the channel's [`Durability`]; in every mode the message is ordered
    /// after every send that returned before this one started.
    ///
    /// A failed send changes nothing: its message is never delivered. (One
    /// exception, after a power loss: a `Sync` send failed by an fsync
    /// error may come back, because that fsync's outcome is unknown; see
    /// `DESIGN.md` §3.)
    ///
    /// # Errors
    /// [`SendError::TooLarge`] (the channel stays usable),
    /// [`SendError::Closed`], [`SendError::DiskFull`] (retry later),
    /// [`SendError::Io`] / [`SendError::Poisoned`] after a write or fsync
    /// failure (reopen the channel).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::builder().max_message_size(4).open(dir.path())?;
    /// let tx = ch.tx();
    /// tx.send(b"")?; // empty messages are fine
    /// assert!(matches!(tx.send(b"too long"), Err(filechannel::SendError::TooLarge { size: 8, max: 4 })));
    /// assert_eq!(ch.write_offset(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn send(&self, msg: &[u8]) -> Result<(), SendError> {
        self.send_frame(msg, 0)
    }

    #[inline]
    pub(crate) fn send_frame(&self, msg: &[u8], flags: u8) -> Result<(), SendError> {
        let sh = &*self.shared;
        let seq = sh.append(msg, flags)?;
        let durability = sh.config.durability;
        if sh.flusher.idle.load(Ordering::Relaxed) {
            sh.arm_flusher();
        } else if durability == Durability::Buffered && sh.notify.may_have_waiters() {
            // A sleeping receiver gets this message now, not at the busy
            // flusher's next round (a whole `flush_interval` away): a large
            // message published itself, a small one waits for the flusher
            // to finish it. Best effort (no fence): a receiver that falls
            // asleep at this very moment is left to that round, within
            // `flush_interval` as documented.
            if crate::writer::defers(durability, msg.len()) {
                sh.unpark_flusher();
            } else {
                sh.notify.notify_all();
            }
        }
        match durability {
            Durability::Buffered => Ok(()),
            Durability::Flush => {
                sh.notify.notify_if_waiting();
                Ok(())
            }
            Durability::Sync => {
                sh.notify.notify_if_waiting();
                sh.sync_to(seq + 1)
            }
        }
    }

    /// Makes every message sent so far visible to receivers, waking those
    /// blocked in `recv`, and hands it to the OS (it survives a crash of this
    /// process). In `Buffered` mode this finishes (fills in the CRCs of) the
    /// small messages the flusher has not reached yet, under the writer
    /// lock.
    ///
    /// # Errors
    /// [`SendError::Poisoned`] after an earlier failure.
    pub fn flush(&self) -> Result<(), SendError> {
        let sh = &*self.shared;
        if let Some(e) = sh.poison.get() {
            return Err(SendError::Poisoned(Arc::clone(e)));
        }
        if sh.config.durability == Durability::Buffered {
            sh.complete_written(&mut sh.writer.lock().unwrap_or_else(PoisonError::into_inner));
        }
        sh.notify.notify_if_waiting();
        Ok(())
    }

    /// Flushes, then fsyncs every message sent so far (and the directory
    /// entries of new segments): they survive power loss. Concurrent calls
    /// share fsyncs.
    ///
    /// In `Buffered` and `Flush` mode the fsync also writes out the pages
    /// the flusher zero-fills ahead of the writer (that is what keeps
    /// `send` fast): up to 8 MiB the first time, then about as many bytes
    /// as were sent since the previous `sync`. On kernels with large
    /// page-cache folios (ext4 since Linux 6.16, XFS) an fsync writes every
    /// folio holding a changed byte in full; the flusher therefore fills in
    /// stretches about the size of the gap between `sync` calls (16 KiB to
    /// 1 MiB), so that frequent calls write little more than the data. The
    /// 8 MiB filled before the first call stay in large folios: there a
    /// `sync` every 10 sends of 64 bytes wrote about 300 KiB each, after
    /// them about 9 KiB. [`Durability::Sync`] never zero-fills, but fsyncs
    /// on every send; [`FileChannel::close`] gives the filled pages back
    /// first.
    ///
    /// # Errors
    /// [`SendError::Io`] if the fsync failed (the sender is then poisoned: a
    /// failed fsync is never retried), [`SendError::Poisoned`] after an
    /// earlier failure.
    pub fn sync(&self) -> Result<(), SendError> {
        self.flush()?;
        let target = self.shared.written_seq.load(Ordering::Acquire);
        self.shared.sync_to(target)?;
        if !self.shared.is_sync() {
            let w = self.shared.writer.lock().unwrap_or_else(PoisonError::into_inner);
            self.shared.sync_pace.record(w.channel_pos(), w.next_seq);
        }
        Ok(())
    }

    /// Whether [`FileChannel::close`] was called (or every handle dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.shared
    }
}

impl<S: Storage> Clone for Sender<S> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Storage> Drop for Sender<S> {
    fn drop(&mut self) {
        self.shared.release_handle();
    }
}

impl<S: Storage> Drop for FileChannel<S> {
    fn drop(&mut self) {
        self.shared.release_handle();
    }
}

impl<S: Storage> std::fmt::Debug for FileChannel<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileChannel")
            .field("dir", &self.shared.dir)
            .field("write_offset", &self.write_offset())
            .finish_non_exhaustive()
    }
}

impl<S: Storage> std::fmt::Debug for Sender<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::FileChannel;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, PoisonError};
    use std::time::{Duration, Instant};

    /// A round of the flusher whose finishing finds the `completing` flag
    /// taken (a receiver at work, here the test) stays busy while anything
    /// appended is unpublished: gone idle, it would park 50 ms with the
    /// frame unfinished, which a process crash would then take.
    #[test]
    fn the_flusher_stays_awake_while_a_small_send_is_unfinished() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ch = FileChannel::open(dir.path())?;
        let sh = ch.shared();
        let map = Arc::clone(&sh.catalog.lock().unwrap_or_else(PoisonError::into_inner).active_map);
        let held = map.hold_completing();
        ch.tx().send(b"small")?;
        // Hundreds of the flusher's rounds, its zero-fill ahead done.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            sh.published_seq.load(Ordering::Acquire),
            0,
            "finished under a held flag"
        );
        assert!(
            !sh.flusher.idle.load(Ordering::SeqCst),
            "the flusher went idle with a send unfinished"
        );
        drop(held);
        // Nobody else is there to finish it.
        crate::wait_until("the flusher to finish the send", || {
            sh.published_seq.load(Ordering::Acquire) >= 1
        });
        ch.close()?;
        Ok(())
    }

    /// A `Flush`-mode channel of 4 KiB segments, uncompressed, on `sim`.
    fn sim_channel(
        sim: &crate::storage::sim::SimStorage,
    ) -> Result<FileChannel<crate::storage::sim::SimStorage>, crate::Error> {
        sim_channel_of(sim, 4096)
    }

    /// As [`sim_channel`], with segments of `segment_size` bytes.
    fn sim_channel_of(
        sim: &crate::storage::sim::SimStorage,
        segment_size: u64,
    ) -> Result<FileChannel<crate::storage::sim::SimStorage>, crate::Error> {
        FileChannel::builder()
            .segment_size(segment_size)
            .durability(crate::Durability::Flush)
            .compression(crate::Compression::None)
            .open_with(sim.clone(), std::path::Path::new("/ch"))
    }

    /// The spare files in a [`sim_channel`]'s directory.
    fn spare_files(sim: &crate::storage::sim::SimStorage) -> Result<Vec<std::path::PathBuf>, crate::Error> {
        use crate::storage::Storage as _;
        let dir = std::path::Path::new("/ch");
        let names = sim.list(dir).map_err(|e| crate::Error::io(dir, e))?;
        Ok(names
            .into_iter()
            .filter(|n| crate::format::parse_spare_file_name(n))
            .map(|n| dir.join(n))
            .collect())
    }

    /// Fills a 4 KiB segment: every send of it rotates.
    const FILLER: [u8; 2000] = [7; 2000];

    /// Sends `n` [`FILLER`]s (each in a segment of its own, the last one
    /// active), then receives them, then waits (GC is the flusher's) until `until`
    /// holds of the channel's stats. No rotation runs once GC can start, so
    /// none takes a spare GC has just made, and GC starts only after the
    /// flusher has let go of the sealed segments' maps (it keeps the map of
    /// the segment that was active at its last round until its next one,
    /// and a segment mapped at its retirement is deleted, not kept): on a
    /// loaded machine, either used to leave fewer spares than a test set up.
    fn rotate_through(
        ch: &FileChannel<crate::storage::sim::SimStorage>,
        rx: &mut crate::Receiver<crate::storage::sim::SimStorage>,
        n: usize,
        until: impl Fn(&crate::Stats) -> bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tx = ch.tx();
        for _ in 0..n {
            tx.send(&FILLER)?;
        }
        // The receiver maps the segment it is in; the flusher none of the
        // sealed ones after it once it has looked again. (Not "all but the
        // oldest": a consumed segment GC has not retired yet may still be
        // the oldest, and then the receiver's own was waited for, for
        // ever; seen once in CI.)
        let sealed: Vec<u64> = {
            let cat = ch.shared.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            let (active, reader) = (cat.active_id, cat.start_segment(rx.read_offset()));
            cat.segments
                .keys()
                .copied()
                .filter(|&id| id > reader && id != active)
                .collect()
        };
        crate::wait_until("the flusher to let go of the sealed segments", || {
            use crate::storage::Storage as _;
            sealed.iter().all(|&id| {
                !ch.shared
                    .storage
                    .is_mapped(&ch.shared.dir.join(crate::format::segment_file_name(id)))
            })
        });
        for _ in 0..n {
            assert_eq!(rx.recv()?, FILLER);
        }
        crate::wait_until("GC to get there", || until(&ch.stats()));
        Ok(())
    }

    /// Spares too small for a segment under the current settings (a reopen
    /// with a larger `segment_size`) are deleted at the open: never reused,
    /// they held both spare slots, and their disk space, for good.
    #[test]
    fn a_reopen_with_larger_segments_deletes_spares_too_small() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::SimStorage;
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        rotate_through(&ch, &mut ch.rx(), 6, |s| s.spare_segments >= 2)?;
        ch.close()?;
        drop(ch);
        let ch = sim_channel_of(&sim, 64 << 10)?;
        assert_eq!(ch.stats().spare_segments, 0);
        let left = spare_files(&sim)?;
        assert!(left.is_empty(), "spare files left: {left:?}");
        // Spares of the right size stay.
        ch.close()?;
        drop(ch);
        let ch = sim_channel(&sim)?;
        rotate_through(&ch, &mut ch.rx(), 40, |s| s.spare_segments >= 2)?;
        ch.close()?;
        drop(ch);
        assert_eq!(sim_channel(&sim)?.stats().spare_segments, 2);
        Ok(())
    }

    /// A consumed segment on which somebody else holds a shared lock (a
    /// receiver in another process maps it: `is_mapped` cannot see that) is
    /// deleted, never kept as a spare to be rewritten.
    #[test]
    fn a_segment_locked_elsewhere_is_deleted_not_recycled() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::{OpKind, SimStorage};
        use crate::storage::{Storage as _, StorageFile as _};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let mut rx = ch.rx();
        let first = std::path::Path::new("/ch").join(crate::format::segment_file_name(1));
        let elsewhere = sim.open(&first, false)?;
        assert!(elsewhere.try_lock(false)?);
        // Segments 1 to 3 consumed: 1 is deleted, 2 and 3 kept as spares.
        rotate_through(&ch, &mut rx, 4, |s| s.spare_segments >= 2)?;
        let recycled = sim
            .log()
            .iter()
            .any(|(_, op)| matches!(op, OpKind::Rename(from, _) if *from == first));
        assert!(!recycled, "a segment locked by someone else became a spare");
        assert!(
            !sim.list(std::path::Path::new("/ch"))?
                .contains(&crate::format::segment_file_name(1))
        );
        ch.close()?;
        Ok(())
    }

    /// A channel whose first segment holds `a` and a [`FILLER`], the second
    /// another [`FILLER`], and a receiver that has read `a`.
    fn two_segments_one_read(
        sim: &crate::storage::sim::SimStorage,
    ) -> Result<
        (
            FileChannel<crate::storage::sim::SimStorage>,
            crate::Receiver<crate::storage::sim::SimStorage>,
        ),
        Box<dyn std::error::Error>,
    > {
        let ch = sim_channel(sim)?;
        let (tx, mut rx) = (ch.tx(), ch.rx());
        tx.send(b"a")?;
        tx.send(&FILLER)?;
        tx.send(&FILLER)?;
        assert_eq!(rx.recv()?, b"a");
        Ok((ch, rx))
    }

    /// A channel on `sim`, a receiver that has read its `n` [`FILLER`]s,
    /// and one that has read nothing: it holds every segment (and the map
    /// of the first) until it is dropped. (With no receiver left, GC
    /// deletes nothing: keep the first.)
    #[allow(clippy::type_complexity)]
    fn consumed_but_held(
        sim: &crate::storage::sim::SimStorage,
        n: usize,
    ) -> Result<
        (
            FileChannel<crate::storage::sim::SimStorage>,
            crate::Receiver<crate::storage::sim::SimStorage>,
            crate::Receiver<crate::storage::sim::SimStorage>,
        ),
        Box<dyn std::error::Error>,
    > {
        let ch = sim_channel(sim)?;
        let (tx, mut rx, holder) = (ch.tx(), ch.rx(), ch.rx());
        for _ in 0..n {
            tx.send(&FILLER)?;
        }
        for _ in 0..n {
            rx.recv()?;
        }
        Ok((ch, rx, holder))
    }

    /// GC goes on past a consumed segment whose file somebody else
    /// deleted: the removal's `NotFound` used to count as a failure, and GC
    /// stopped at that segment at every later pass, keeping everything
    /// after it (from a read-only review).
    #[test]
    fn gc_goes_on_past_a_segment_file_deleted_behind_its_back() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::Storage as _;
        let sim = crate::storage::sim::SimStorage::new();
        let (ch, _rx, holder) = consumed_but_held(&sim, 6)?;
        assert!(ch.stats().segments >= 6, "{:?}", ch.stats());
        sim.remove(&std::path::Path::new("/ch").join(crate::format::segment_file_name(1)))?;
        drop(holder);
        crate::wait_until("GC to pass the deleted file", || ch.stats().segments == 1);
        ch.close()?;
        Ok(())
    }

    /// A consumed segment whose deletion fails stays in the chain and
    /// among the segments `close` fsyncs: it used to leave that list
    /// before the deletion was tried, and `close` then recorded a clean
    /// shutdown over a segment never fsynced (from a read-only review).
    #[test]
    fn a_segment_whose_deletion_fails_is_still_fsynced_at_close() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::{FailPlan, OpKind};
        let sim = crate::storage::sim::SimStorage::new();
        let (ch, _rx, holder) = consumed_but_held(&sim, 3)?;
        let first = std::path::Path::new("/ch").join(crate::format::segment_file_name(1));
        sim.fail(FailPlan {
            from_op: 1,
            once: false,
            kind: std::io::ErrorKind::Other,
            // Deleting and keeping as a spare fail alike.
            only: Some(|op| matches!(op, OpKind::Remove(_) | OpKind::Rename(..))),
        });
        // Its map keeps segment 1 from becoming a spare: GC deletes it
        // (later passes may try to keep it as a spare).
        drop(holder);
        assert!(
            sim.failed().iter().any(|(_, op)| *op == OpKind::Remove(first.clone())),
            "{:?}",
            sim.failed()
        );
        // (Its header was fsynced when it was made.)
        let fsyncs = || {
            sim.log()
                .iter()
                .filter(|(_, op)| *op == OpKind::SyncData(first.clone()))
                .count()
        };
        let before = fsyncs();
        ch.close()?;
        assert!(fsyncs() > before, "close did not fsync the segment it could not delete");
        Ok(())
    }

    /// A receiver maps a segment under a shared lock, which lasts as long as
    /// its map: nobody can take the exclusive lock that recycling needs.
    #[test]
    fn a_receiver_holds_a_shared_lock_on_what_it_maps() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::SimStorage;
        use crate::storage::{Storage as _, StorageFile as _};
        let sim = SimStorage::new();
        let (ch, rx) = two_segments_one_read(&sim)?;
        let first = std::path::Path::new("/ch").join(crate::format::segment_file_name(1));
        let recycler = sim.open(&first, true)?;
        assert!(
            !recycler.try_lock(true)?,
            "segment 1 is mapped by a receiver without a lock"
        );
        drop(rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !recycler.try_lock(true)? {
            assert!(Instant::now() < deadline, "the lock outlived the receiver's map");
            std::thread::sleep(Duration::from_millis(1));
        }
        ch.close()?;
        Ok(())
    }

    /// A spare stays locked exclusively until a rotation has rewritten its
    /// header; then anyone may lock it, and finds the new segment's header.
    #[test]
    fn a_spare_is_locked_until_its_header_is_rewritten() -> Result<(), Box<dyn std::error::Error>> {
        use crate::format::segment_file_name;
        use crate::storage::sim::{OpKind, SimStorage};
        use crate::storage::{Storage as _, StorageFile as _};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let mut rx = ch.rx();
        rotate_through(&ch, &mut rx, 4, |s| s.spare_segments >= 2)?;
        let spares = spare_files(&sim)?;
        assert!(!spares.is_empty());
        for path in &spares {
            let stale = sim.open(path, false)?;
            assert!(!stale.try_lock(false)?, "{} is not locked", path.display());
        }
        let logged = sim.log().len();
        rotate_through(&ch, &mut rx, 1, |_| true)?;
        let reused: Vec<_> = sim.log()[logged..]
            .iter()
            .filter_map(|(_, op)| match op {
                OpKind::Rename(from, to) if spares.contains(from) => Some(to.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(reused.len(), 1, "the rotation reused no spare");
        let segment = sim.open(&reused[0], false)?;
        assert!(segment.try_lock(false)?, "the reused spare is still locked");
        let id = crate::recovery::read_segment_header(&segment)?
            .map_err(|e| format!("{e:?}"))?
            .id;
        assert_eq!(
            reused[0].file_name(),
            Some(std::ffi::OsStr::new(&segment_file_name(id)))
        );
        ch.close()?;
        Ok(())
    }

    /// A receiver that finds another segment's header in the file it opened
    /// (recycled under it: it opened the file by its old name) maps nothing
    /// and reports the segment gone; before, it read on from the new bytes.
    #[test]
    fn a_receiver_maps_nothing_from_a_file_with_another_segments_header() -> Result<(), Box<dyn std::error::Error>> {
        use crate::format::{SegmentHeader, segment_file_name};
        use crate::storage::sim::SimStorage;
        use crate::storage::{Storage as _, StorageFile as _};
        let sim = SimStorage::new();
        let (ch, mut rx) = two_segments_one_read(&sim)?;
        assert_eq!(rx.recv()?, FILLER);
        // Segment 2, not entered yet, now says it is segment 9.
        let second = std::path::Path::new("/ch").join(segment_file_name(2));
        let file = sim.open(&second, true)?;
        let header = SegmentHeader {
            id: 9,
            base_seq: 1,
            base_pos: 0,
        };
        file.write_all_at(&header.to_bytes(), 0)?;
        match rx.try_recv() {
            Err(crate::TryRecvError::Failed(crate::RecvError::Io { source, .. })) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}")
            }
            other => panic!("expected the segment to count as gone: {:?}", other.map(|m| m.len())),
        }
        drop(rx);
        ch.close()?;
        Ok(())
    }

    /// `close` lets its spares go (descriptors and locks) even while a
    /// receiver keeps the closed channel alive: the next owner reuses them.
    /// They used to stay locked, and the next open deleted them.
    #[test]
    fn a_closed_channel_lets_its_spares_go() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::SimStorage;
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let mut rx = ch.rx();
        rotate_through(&ch, &mut rx, 4, |s| s.spare_segments >= 2)?;
        ch.close()?;
        let next = sim_channel(&sim)?;
        assert_eq!(next.stats().spare_segments, 2, "the next owner lost the spares");
        assert!(matches!(rx.try_recv(), Err(crate::TryRecvError::Disconnected)));
        next.close()?;
        Ok(())
    }

    /// A spare whose rename into a segment fails (a full directory) stays a
    /// spare and stays locked.
    #[test]
    fn a_spare_whose_rename_fails_stays_locked() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::{FailPlan, OpKind, SimStorage};
        use crate::storage::{Storage as _, StorageFile as _};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let (tx, mut rx) = (ch.tx(), ch.rx());
        rotate_through(&ch, &mut rx, 4, |s| s.segments <= 1 && s.spare_segments >= 2)?;
        fn renames(op: &OpKind) -> bool {
            matches!(op, OpKind::Rename(..))
        }
        sim.fail(FailPlan {
            from_op: 1,
            once: true,
            kind: std::io::ErrorKind::StorageFull,
            only: Some(renames),
        });
        assert!(matches!(tx.send(&FILLER), Err(crate::SendError::DiskFull { .. })));
        assert_eq!(ch.stats().spare_segments, 2);
        for path in spare_files(&sim)? {
            assert!(
                !sim.open(&path, false)?.try_lock(false)?,
                "{} is unlocked",
                path.display()
            );
        }
        tx.send(&FILLER)?;
        ch.close()?;
        Ok(())
    }

    /// At open, a spare somebody holds a lock on (a receiver of an earlier
    /// owner may map it) is deleted, not kept for reuse.
    #[test]
    fn a_reopen_deletes_a_spare_someone_locks() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::SimStorage;
        use crate::storage::{Storage as _, StorageFile as _};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        rotate_through(&ch, &mut ch.rx(), 4, |s| s.spare_segments >= 2)?;
        ch.close()?;
        drop(ch);
        let spares = spare_files(&sim)?;
        let elsewhere = sim.open(&spares[0], false)?;
        assert!(elsewhere.try_lock(false)?, "the closed channel kept its spare locked");
        let ch = sim_channel(&sim)?;
        assert_eq!(ch.stats().spare_segments, spares.len() - 1);
        assert!(!spare_files(&sim)?.contains(&spares[0]), "the locked spare was kept");
        ch.close()?;
        Ok(())
    }

    /// A spare that somebody maps when a rotation would reuse it (a receiver
    /// of an earlier, closed channel on this directory that opened it by its
    /// segment name just before GC renamed it) is not rewritten: the
    /// rotation makes a new file.
    #[test]
    fn a_spare_mapped_by_someone_is_not_reused() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::{OpKind, SimStorage};
        use crate::storage::{Storage as _, StorageFile as _, StorageMap as _};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let mut rx = ch.rx();
        rotate_through(&ch, &mut rx, 6, |s| s.spare_segments >= 2)?;
        std::thread::sleep(Duration::from_millis(20));
        let spares = spare_files(&sim)?;
        let mut held = Vec::new();
        for path in &spares {
            let f = sim.open(path, false)?;
            let map = f.map(f.len()?, false)?;
            // SAFETY: the map lives in `held` until the end of the test.
            let before = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) }.to_vec();
            held.push((map, before));
        }
        let logged = sim.log().len();
        rotate_through(&ch, &mut rx, 4, |_| true)?;
        let reused = sim.log()[logged..]
            .iter()
            .any(|(_, op)| matches!(op, OpKind::Rename(from, _) if spares.contains(from)));
        assert!(!reused, "a mapped spare was renamed into a segment");
        for (map, before) in &held {
            // SAFETY: as above.
            let now = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
            assert!(now == &before[..], "a mapped spare was rewritten");
        }
        ch.close()?;
        Ok(())
    }

    /// A rotation whose reuse of a spare file fails before the rename (a
    /// full disk) leaves the spare a spare: counted, and reused by the next
    /// rotation. It used to drop out of the list until the next open, its
    /// file still on disk.
    #[test]
    fn a_spare_whose_reuse_fails_stays_a_spare() -> Result<(), Box<dyn std::error::Error>> {
        use crate::SendError;
        use crate::storage::sim::{FailPlan, OpKind, SimStorage};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let (tx, mut rx) = (ch.tx(), ch.rx());
        let msg = FILLER;
        // Every consumed segment retired (no storage work left behind) and
        // one of them kept as a spare.
        rotate_through(&ch, &mut rx, 4, |s| s.segments <= 1 && s.spare_segments > 0)?;
        // The next storage operation must be the rotation's: wait for the
        // flusher to finish its last round (the receiver asked it for GC
        // again, and it writes the head) and park.
        let flusher = &ch.shared.flusher;
        crate::wait_until("the flusher to go idle", || {
            flusher.idle.load(Ordering::SeqCst) && !flusher.gc_pending.load(Ordering::Acquire)
        });
        let spares = ch.stats().spare_segments;
        sim.fail(FailPlan {
            from_op: sim.ops() + 1,
            once: true,
            kind: std::io::ErrorKind::StorageFull,
            only: None,
        });
        assert!(matches!(tx.send(&msg), Err(SendError::DiskFull { .. })));
        let failed = sim.failed();
        assert!(
            matches!(failed.as_slice(), [(_, OpKind::Other)]),
            "the spare's first operation (its length) should have failed: {failed:?}"
        );
        assert_eq!(ch.stats().spare_segments, spares, "the spare dropped out of the list");
        let logged = sim.log().len();
        tx.send(&msg)?;
        assert_eq!(ch.stats().spare_segments, spares - 1, "the next rotation reused it");
        assert!(
            !sim.log()[logged..]
                .iter()
                .any(|(_, op)| matches!(op, OpKind::Create(_))),
            "a segment was created instead of reusing the spare"
        );
        assert_eq!(rx.recv()?, msg);
        ch.close()?;
        Ok(())
    }

    /// `close()` after a `close()` whose fsync failed reports the failure again
    /// (it used to return `Ok`, as if retrying an fsync could make it succeed).
    #[test]
    fn a_second_close_after_a_failed_one_reports_the_failure() -> Result<(), Box<dyn std::error::Error>> {
        use crate::storage::sim::{FailPlan, SimStorage};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        ch.tx().send(b"x")?;
        sim.fail(FailPlan {
            from_op: sim.ops() + 1,
            once: false,
            kind: std::io::ErrorKind::Other,
            only: None,
        });
        assert!(ch.close().is_err(), "setup: the final fsync fails");
        assert!(
            matches!(ch.close(), Err(crate::Error::Poisoned(_))),
            "a retried close reported success after the fsync failed"
        );
        Ok(())
    }

    /// Outside `Sync` mode sealed segments wait for the next `sync()` with
    /// the descriptor they were written through, at most `MAX_UNSYNCED` of
    /// them (a rotation fsyncs the oldest beyond), and a consumed segment's
    /// descriptor goes when the segment does (its space must be freed).
    #[test]
    fn sealed_segments_wait_for_sync_with_their_descriptors_within_a_bound() -> Result<(), Box<dyn std::error::Error>> {
        use crate::catalog::MAX_UNSYNCED;
        use crate::storage::sim::{OpKind, SimStorage};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let unsynced = || {
            let cat = ch.shared().catalog.lock().unwrap_or_else(PoisonError::into_inner);
            cat.unsynced.keys().copied().collect::<Vec<u64>>()
        };
        // Creating a segment fsyncs it once (its header); a second fsync is
        // one of its data.
        let fsynced = |id: u64| {
            let name = format!("segment.{id:020}");
            let syncs = sim
                .log()
                .iter()
                .filter(
                    |(_, op)| matches!(op, OpKind::SyncData(p) if p.file_name().is_some_and(|n| n == name.as_str())),
                )
                .count();
            syncs > 1
        };
        let tx = ch.tx();
        let mut rx = ch.rx();
        // One 2,000-byte message fills a 4 KiB segment: every send after
        // the first rotates. 12 sends: segments 1..=11 sealed.
        for _ in 0..12 {
            tx.send(&[1u8; 2000])?;
        }
        let waiting = unsynced();
        assert_eq!(waiting, (4..=11).collect::<Vec<_>>(), "the newest {MAX_UNSYNCED} wait");
        for id in 1..=3 {
            assert!(fsynced(id), "segment {id}, beyond the bound, was not fsynced");
        }
        assert!(!fsynced(4), "segment 4 was fsynced before any sync()");
        // Consumed segments leave the list with their descriptors.
        for _ in 0..12 {
            rx.recv()?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !unsynced().is_empty() {
            assert!(
                Instant::now() < deadline,
                "retired segments kept their descriptors: {:?}",
                unsynced()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        tx.send(&[2u8; 2000])?;
        assert_eq!(unsynced(), vec![12]);
        tx.sync()?;
        assert!(unsynced().is_empty() && fsynced(12));
        ch.close()?;
        Ok(())
    }

    /// A rotation's fsync of the oldest sealed segment past `MAX_UNSYNCED`
    /// that fails names that segment (it named the new active one), and the
    /// rotation itself stands: the last message of the sealed segment is
    /// still delivered.
    #[test]
    fn a_failed_overdue_fsync_names_its_segment() -> Result<(), Box<dyn std::error::Error>> {
        use crate::SendError;
        use crate::storage::sim::{FailPlan, OpKind, SimStorage};
        let sim = SimStorage::new();
        let ch = sim_channel(&sim)?;
        let (tx, mut rx) = (ch.tx(), ch.rx());
        // As above: every send after the first rotates. Nine sends seal
        // segments 1..=8, all waiting; the tenth seals segment 9, which
        // puts segment 1 over the bound.
        for _ in 0..9 {
            tx.send(&[1u8; 2000])?;
        }
        fn data_of_segment_1(op: &OpKind) -> bool {
            matches!(op, OpKind::SyncData(p) if p.ends_with(crate::format::segment_file_name(1)))
        }
        sim.fail(FailPlan {
            from_op: 1,
            once: true,
            kind: std::io::ErrorKind::Other,
            only: Some(data_of_segment_1),
        });
        match tx.send(&[2u8; 2000]) {
            Err(SendError::Io { path, .. }) => {
                assert!(
                    path.ends_with(crate::format::segment_file_name(1)),
                    "{}",
                    path.display()
                )
            }
            other => panic!("expected the overdue fsync to fail: {other:?}"),
        }
        for _ in 0..9 {
            assert_eq!(rx.try_recv()?, [1u8; 2000]);
        }
        assert!(ch.close().is_err());
        Ok(())
    }

    /// The zero-fill granule follows how often `sync()` comes: whole fills
    /// until two syncs show a gap under `FILL_STEP`, the gap (at least 16
    /// KiB, a power of two) while they keep coming, whole fills again once
    /// they stop for four gaps.
    #[test]
    fn the_fill_granule_follows_the_sync_pace() {
        let pace = super::SyncPace::new();
        assert_eq!(pace.granule(0), usize::MAX, "no sync yet");
        pace.record(800, 10);
        assert_eq!(pace.granule(12), 16 << 10, "every 800 bytes");
        pace.record(800 + (100 << 10), 1000);
        assert_eq!(pace.granule(1500), 128 << 10, "every 100 KiB");
        pace.record(800 + (100 << 10) + (2 << 20), 30_000);
        assert_eq!(pace.granule(30_001), usize::MAX, "every 2 MiB");
        pace.record(800 + (100 << 10) + (2 << 20) + 4000, 30_050);
        assert_eq!(pace.granule(30_100), 16 << 10);
        assert_eq!(pace.granule(30_050 + 201), usize::MAX, "stopped for four gaps");
    }

    fn queued(ch: &FileChannel) -> usize {
        let sh = ch.shared();
        sh.flusher.read_ahead.lock().map(|q| q.len()).unwrap_or(usize::MAX)
    }

    #[test]
    fn no_read_ahead_request_outlives_the_flusher() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ch = FileChannel::builder().segment_size(1 << 20).open(dir.path())?;
        let mut rx = ch.rx();
        let tx = ch.tx();
        let msg = [7u8; 1000];
        let n = 4 * 1024;
        for _ in 0..n {
            tx.send(&msg)?;
        }
        tx.flush()?;
        // Reading the first message asks the flusher for the next stretch.
        assert_eq!(rx.recv_ref()?.len(), msg.len());
        ch.close()?;
        assert_eq!(queued(&ch), 0, "close left requests queued");
        // Draining after close crosses several segments, each of which
        // would ask for read-ahead: nobody would serve it now.
        for _ in 1..n {
            assert_eq!(rx.recv_ref()?.len(), msg.len());
        }
        assert!(rx.recv_ref().is_err_and(|e| e.is_disconnected()));
        assert_eq!(queued(&ch), 0, "a receiver queued requests after close");
        Ok(())
    }
}
