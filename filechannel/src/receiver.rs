//! Receivers: independent cursors over the segments.
//!
//! A receiver reads straight out of a memory map of the segment it is in:
//! `recv_ref` checks the frame's CRC and hands back a slice of the map, with
//! no copy and no allocation, and for most messages no syscall and no
//! lock: in `Buffered` mode a receiver that runs out of finished frames
//! finishes the senders' frames itself, under the catalog lock; a segment's
//! first read-ahead is an `madvise`, and each later one (per MiB read) a
//! request queued under a mutex that may wake the flusher, as entering a
//! segment does (for GC).
//! At a seal frame it maps the next
//! segment (or takes the map another receiver made of it) and tells the
//! catalog, which may then delete the one it left.

use crate::catalog::Cursor;
use crate::channel::Shared;
use crate::error::{AckError, RecvError, RecvTimeoutError, TryRecvError};
use crate::format::{SEGMENT_HEADER_LEN, segment_file_name, segment_seed};
use crate::segment::read_frame;
use crate::storage::{CACHE_LINE, Fs, SegmentMap, Storage};
use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

/// The receiving side of a channel: an independent cursor that sees every
/// message in send order. It can move between threads; receiving takes
/// `&mut self`.
///
/// Dropping a receiver releases the segments it was holding back.
pub struct Receiver<S: Storage = Fs> {
    shared: Arc<Shared<S>>,
    cursor: Arc<Cursor>,
    seg_id: u64,
    /// [`segment_seed`] of `seg_id`: where its frame CRCs start.
    seed: u32,
    map: Arc<SegmentMap>,
    pos: usize,
    /// Sequence number of the next message.
    seq: u64,
    /// Messages below this sequence number are skipped (consumed before this
    /// receiver existed).
    skip_below: u64,
    /// For an acking receiver: consumption is moved by `ack`, not by reading.
    acking: bool,
    /// For an acking receiver: (segment, its first sequence number) for every
    /// segment entered since the oldest un-acked message.
    entered: VecDeque<(u64, u64)>,
    /// Mapping the start segment failed at creation; retried on first use.
    needs_enter: bool,
    /// Pages of the map below this are mapped in already (or the flusher
    /// was asked to, or the receiver reads close behind the writer).
    populated: usize,
    /// The flusher was asked to map pages in up to here.
    requested: usize,
    /// The CPU was asked to load the bytes up to here into its cache.
    prefetched: usize,
}

/// How long [`Receiver::next_ready`] waits.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    No,
    Forever,
    Until(Instant),
}

/// How far ahead of its position a receiver maps pages in, in one syscall,
/// rather than taking a page fault every few pages.
const READ_AHEAD: usize = 1 << 20;

/// Closer than this behind the published mark, a receiver maps nothing in
/// ahead of time.
const TAIL: usize = 64 << 10;

/// How far ahead of the frame it has just read a receiver has the CPU load
/// the map's bytes into its cache. Each frame is found from the length in
/// the last one's header, so the loads cannot run ahead by themselves, and
/// the hardware prefetcher starts over at every 4 KiB page: without this a
/// receiver waits for memory several times per page (`DESIGN.md` §4). 8 KiB
/// did best of 8, 16 and 32 KiB in a criterion run (`Read_512`,
/// `Read_4096`, `ParallelRead_512`).
const PREFETCH_DISTANCE: usize = 8 << 10;

/// For an acking receiver reading segment `reading`, whose `entered` queue
/// holds `(segment, first sequence number)` for each segment entered since
/// its oldest un-acked message: forgets the segments whose messages are all
/// below `acked`, and returns its floor, the oldest segment that still holds
/// an un-acked message (or the one it reads).
fn acked_floor(entered: &mut VecDeque<(u64, u64)>, reading: u64, acked: u64) -> u64 {
    while entered.len() > 1 && entered[1].1 <= acked {
        entered.pop_front();
    }
    entered.front().map_or(reading, |e| e.0)
}

/// A received message, borrowed from the segment's memory map: no copy. It is
/// valid until the next call on the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgRef<'a> {
    bytes: &'a [u8],
    offset: u64,
    typed: bool,
}

impl<'a> MsgRef<'a> {
    /// The message's bytes, for as long as the view is valid.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The message's sequence number: how many messages came before it in
    /// the channel's history.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a typed sender wrote it (its bytes then start with the typed
    /// header; see `DESIGN.md`).
    pub fn is_typed(&self) -> bool {
        self.typed
    }
}

impl Deref for MsgRef<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl AsRef<[u8]> for MsgRef<'_> {
    fn as_ref(&self) -> &[u8] {
        self.bytes
    }
}

/// Where a ready message lies in the current map.
#[derive(Clone, Copy)]
pub(crate) struct Ready {
    at: usize,
    len: usize,
    seq: u64,
    typed: bool,
}

impl Ready {
    /// The message's sequence number.
    pub(crate) fn seq(self) -> u64 {
        self.seq
    }
}

impl<S: Storage> Receiver<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>, acking: bool) -> Self {
        let (cursor, seg_id, head) = {
            let mut cat = shared.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            let head = cat.needed_seq();
            let id = cat.start_segment(head);
            // A head behind the oldest segment (written without an fsync
            // before a power loss took it back, while the deletions it allowed
            // were synced) starts at that segment's first message: an acking
            // receiver must not count the missing ones as received.
            let head = cat.segments.get(&id).map_or(head, |m| head.max(m.base_seq));
            let cursor = Arc::new(Cursor {
                floor: id.into(),
                reading: id.into(),
                consumed: head.into(),
            });
            cat.cursors.push(Arc::clone(&cursor));
            if acking {
                // This receiver starts at or before every dropped acking
                // receiver's position, so it takes over what they left.
                cat.ghosts.clear();
            }
            (cursor, id, head)
        };
        let entered = crate::catalog::enter(
            &shared.catalog,
            &shared.segment_loaded,
            &shared.storage,
            &shared.dir,
            seg_id,
        );
        let (map, seq, needs_enter) = match entered {
            Ok(Some(e)) => (e.map, e.meta.base_seq, false),
            // Mapping failed (out of memory maps, a damaged compressed
            // segment): the first receive tries again and reports the error.
            _ => (
                crate::storage::SegmentMap::sealed(crate::storage::HeapMap::empty()),
                head,
                true,
            ),
        };
        let mut entered_q = VecDeque::new();
        if acking {
            entered_q.push_back((seg_id, seq.min(head)));
        }
        Receiver {
            shared,
            cursor,
            seg_id,
            seed: segment_seed(seg_id),
            map,
            pos: SEGMENT_HEADER_LEN as usize,
            seq,
            skip_below: head,
            acking,
            entered: entered_q,
            needs_enter,
            populated: 0,
            requested: 0,
            prefetched: 0,
        }
    }

    pub(crate) fn shared(&self) -> &Shared<S> {
        &self.shared
    }

    /// Sequence number of the next message this receiver will return (the
    /// number of messages before it in the channel's history).
    pub fn read_offset(&self) -> u64 {
        self.seq.max(self.skip_below)
    }

    /// Number of messages visible to receivers that this one has not
    /// received yet: its backlog, [`FileChannel::flush_offset`] minus
    /// [`read_offset`](Self::read_offset). After a power loss took messages
    /// that were never fsynced, it counts them until the receiver passes
    /// the gap.
    ///
    /// [`FileChannel::flush_offset`]: crate::FileChannel::flush_offset
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// let tx = ch.tx();
    /// tx.send(b"a")?;
    /// tx.send(b"b")?;
    /// tx.flush()?;
    /// assert_eq!(rx.len(), 2);
    /// rx.recv()?;
    /// assert_eq!(rx.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn len(&self) -> u64 {
        self.shared.catch_up();
        let published = self.shared.published_seq.load(Ordering::Acquire);
        published.saturating_sub(self.read_offset())
    }

    /// Whether [`len`](Self::len) is 0: nothing visible is waiting for this
    /// receiver.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next message if one is ready.
    fn poll(&mut self) -> Result<Option<Ready>, RecvError> {
        if self.needs_enter {
            self.enter(self.seg_id)?;
        }
        let mut looked_again = false;
        // Whether the writer had moved past this segment (so its seal was
        // published) before the second look, which must then find a frame.
        let mut sealed = false;
        loop {
            let frame = match read_frame(&self.map, self.seed, self.pos, self.seq) {
                Ok(Some(f)) => f,
                // Look again once. In `Buffered` mode what senders appended
                // may be waiting for the flusher to finish it: finish it here
                // (somebody else may also just have done so).
                Ok(None) if !looked_again => {
                    sealed = self.shared.flusher.active_seg.load(Ordering::Acquire) > self.seg_id;
                    self.shared.catch_up();
                    looked_again = true;
                    continue;
                }
                // The frames of a sealed segment end without its seal (a file
                // cut short, a compressed copy without one): nothing after it
                // could ever be read.
                Ok(None) if sealed => {
                    return Err(RecvError::Corrupted {
                        segment: self.shared.dir.join(segment_file_name(self.seg_id)),
                        offset: self.pos as u64,
                        reason: "the segment's frames end without a seal",
                    });
                }
                Ok(None) => return Ok(None),
                Err(reason) => {
                    return Err(RecvError::Corrupted {
                        segment: self.shared.dir.join(segment_file_name(self.seg_id)),
                        offset: self.pos as u64,
                        reason,
                    });
                }
            };
            if frame.header.is_seal() {
                self.enter(self.seg_id + 1)?;
                sealed = false;
                continue;
            }
            let seq = self.seq;
            let ahead = frame.next.saturating_add(PREFETCH_DISTANCE);
            if ahead >= self.prefetched + CACHE_LINE {
                // Close behind the writer it stops at the published mark,
                // and goes on from there at the next message. (Not the frame
                // just read: its CRC brought it in.)
                self.prefetched = self.map.prefetch(self.prefetched.max(frame.next), ahead);
            }
            self.pos = frame.next;
            if frame.next > self.populated {
                self.read_ahead();
            }
            self.seq = seq + 1;
            if seq < self.skip_below {
                continue;
            }
            if !self.acking {
                self.cursor.consumed.store(seq + 1, Ordering::Release);
            }
            return Ok(Some(Ready {
                at: frame.payload_at,
                len: frame.header.len as usize,
                seq,
                typed: frame.header.is_typed(),
            }));
        }
    }

    /// Maps the pages ahead of the receiver in: the next stretch is asked of
    /// the flusher, which maps it in on the other core while this receiver
    /// reads the current one. Only the first stretch of a segment (or one
    /// the flusher was not asked for) is mapped in here.
    #[cold]
    fn read_ahead(&mut self) {
        let from = self.populated.max(self.pos);
        let published = self.map.published();
        if published < from + TAIL {
            // Close behind the writer: page faults (which map 16 pages each)
            // do better than a syscall every few messages.
            self.populated = from + TAIL;
            return;
        }
        if self.requested <= from {
            self.map.prefault_read(from, READ_AHEAD);
            self.requested = from + READ_AHEAD;
        }
        // Never past what is published: the rest is mapped in once written.
        self.populated = self.requested.min(published);
        self.shared.request_read_ahead(&self.map, self.populated, READ_AHEAD);
        self.requested = self.populated + READ_AHEAD;
    }

    /// Moves to segment `id` and lets the catalog collect the one left.
    #[cold]
    fn enter(&mut self, id: u64) -> Result<(), RecvError> {
        let path = || self.shared.dir.join(segment_file_name(id));
        let sh = &self.shared;
        let Some(entered) = crate::catalog::enter(&sh.catalog, &sh.segment_loaded, &sh.storage, &sh.dir, id)? else {
            return Err(RecvError::Corrupted {
                segment: path(),
                offset: 0,
                reason: "the next segment does not exist (deleted or never written)",
            });
        };
        let base = entered.meta.base_seq;
        if !self.needs_enter && base < self.seq {
            return Err(RecvError::Corrupted {
                segment: path(),
                offset: 0,
                reason: "segment starts at a sequence number already delivered",
            });
        }
        // (Counted from where this receiver starts: the messages below
        // that it would have passed over anyway.)
        let from = self.seq.max(self.skip_below);
        if !self.needs_enter && base > from {
            tracing::warn!(
                segment = id,
                lost = base - from,
                "messages lost before this segment (recovered after power loss)"
            );
        }
        self.map = entered.map;
        self.seg_id = id;
        self.seed = segment_seed(id);
        self.pos = SEGMENT_HEADER_LEN as usize;
        self.seq = base;
        self.needs_enter = false;
        self.populated = 0;
        self.requested = 0;
        self.prefetched = 0;
        self.cursor.reading.store(id, Ordering::Release);
        if self.acking {
            self.entered.push_back((id, base));
            // Everything before this segment may be acked already: then the
            // floor moves now, not at the next ack (until then the segments
            // left behind stayed on disk, and the compressor packed them).
            let floor = acked_floor(&mut self.entered, id, self.cursor.consumed.load(Ordering::Acquire));
            if floor != self.cursor.floor.load(Ordering::Acquire) {
                self.cursor.floor.store(floor, Ordering::Release);
                self.collect();
            }
        } else {
            self.cursor.floor.store(id, Ordering::Release);
            self.collect();
        }
        Ok(())
    }

    /// Asks the flusher to delete (or recycle) segments no receiver needs:
    /// file operations and directory fsyncs stay off the receive path.
    fn collect(&self) {
        self.shared.request_gc();
    }

    /// The next message, waiting as `wait` says: `Ok(None)` when none is
    /// ready (`Wait::No`) or the deadline passed. For layers that decide
    /// what to do with a message before borrowing it ([`view`](Self::view)).
    #[inline]
    pub(crate) fn next_ready(&mut self, wait: Wait) -> Result<Option<Ready>, RecvError> {
        if let Some(r) = self.poll()? {
            return Ok(Some(r));
        }
        match wait {
            Wait::No if self.shared.closed.load(Ordering::Acquire) => {
                self.poll()?.ok_or(RecvError::Disconnected).map(Some)
            }
            Wait::No => Ok(None),
            Wait::Forever => self.wait(None)?.ok_or(RecvError::Disconnected).map(Some),
            Wait::Until(deadline) => self.wait(Some(deadline)),
        }
    }

    #[inline]
    pub(crate) fn view(&self, r: Ready) -> MsgRef<'_> {
        // `poll` checked the range against what is published, in this map
        // (callers view a `Ready` before polling again).
        let bytes = self.map.read(r.at, r.len);
        debug_assert!(bytes.is_some(), "a Ready viewed outside its map's published bytes");
        MsgRef {
            bytes: bytes.unwrap_or_default(),
            offset: r.seq,
            typed: r.typed,
        }
    }

    /// Waits for a message until `deadline`; `Ok(None)` on timeout.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<Option<Ready>, RecvError> {
        loop {
            if let Some(r) = self.poll()? {
                return Ok(Some(r));
            }
            if self.shared.closed.load(Ordering::Acquire) {
                // Everything published before `closed` is visible now.
                return match self.poll()? {
                    Some(r) => Ok(Some(r)),
                    None => Err(RecvError::Disconnected),
                };
            }
            let sh = &*self.shared;
            let seq = self.seq;
            let ready = sh.notify.wait_while(
                deadline,
                || sh.published_seq.load(Ordering::Acquire) <= seq && !sh.closed.load(Ordering::Acquire),
                || sh.arm_flusher(),
            );
            if !ready {
                return self.poll();
            }
        }
    }

    /// Blocks until a message is ready and returns a view of it, without
    /// copying or allocating. The view is valid until the next call.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the channel is closed and drained;
    /// [`RecvError::Corrupted`] for a damaged frame (nothing is skipped);
    /// [`RecvError::BadCompressedSegment`] for a compressed segment that does
    /// not decompress; [`RecvError::Io`] if a segment cannot be opened or
    /// mapped.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// ch.tx().send(b"zero-copy")?;
    /// let msg = rx.recv_ref()?;
    /// assert_eq!(&*msg, b"zero-copy");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn recv_ref(&mut self) -> Result<MsgRef<'_>, RecvError> {
        let r = match self.poll()? {
            Some(r) => r,
            None => self.wait(None)?.ok_or(RecvError::Disconnected)?,
        };
        Ok(self.view(r))
    }

    /// Blocks until a message is ready and returns a copy of it.
    ///
    /// # Errors
    /// As [`recv_ref`](Self::recv_ref).
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// let tx = ch.tx();
    /// tx.send(b"a")?;
    /// tx.send(b"b")?;
    /// drop(tx);
    /// ch.close()?;
    /// assert_eq!(rx.recv()?, b"a");
    /// assert_eq!(rx.recv()?, b"b");
    /// assert!(rx.recv().unwrap_err().is_disconnected());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.recv_ref().map(|m| m.to_vec())
    }

    /// Returns a view of the next message if one is ready, without blocking
    /// for messages. Like every receive, it does wait for the segment I/O a
    /// message needs: a receiver entering a compressed segment decompresses
    /// it (or waits for another receiver doing so), which takes
    /// milliseconds for a large segment; so do the timed receives, whose
    /// deadline bounds only the wait for a message.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is ready;
    /// [`TryRecvError::Disconnected`] once closed and drained;
    /// [`TryRecvError::Failed`] with any other error of
    /// [`recv_ref`](Self::recv_ref).
    pub fn try_recv_ref(&mut self) -> Result<MsgRef<'_>, TryRecvError> {
        let r = match self.poll()? {
            Some(r) => r,
            None if self.shared.closed.load(Ordering::Acquire) => self.poll()?.ok_or(TryRecvError::Disconnected)?,
            None => return Err(TryRecvError::Empty),
        };
        Ok(self.view(r))
    }

    /// Returns the next message if one is ready, without blocking.
    ///
    /// # Errors
    /// As [`try_recv_ref`](Self::try_recv_ref).
    ///
    /// ```
    /// use filechannel::TryRecvError;
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    /// ch.tx().send(b"now")?;
    /// assert_eq!(rx.try_recv()?, b"now");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv(&mut self) -> Result<Vec<u8>, TryRecvError> {
        self.try_recv_ref().map(|m| m.to_vec())
    }

    /// Waits at most `timeout` for a message (the timeout does not cut
    /// short the segment I/O a message needs: see
    /// [`try_recv_ref`](Self::try_recv_ref)).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] if none came in time;
    /// [`RecvTimeoutError::Disconnected`] once closed and drained;
    /// [`RecvTimeoutError::Failed`] with any other error of
    /// [`recv_ref`](Self::recv_ref).
    ///
    /// ```
    /// use std::time::Duration;
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// assert!(rx.recv_timeout(Duration::from_millis(5)).unwrap_err().is_timeout());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self.recv().map_err(RecvTimeoutError::from),
        }
    }

    /// Waits until `deadline` for a message.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] if none came in time;
    /// [`RecvTimeoutError::Disconnected`] once closed and drained;
    /// [`RecvTimeoutError::Failed`] with any other error of
    /// [`recv_ref`](Self::recv_ref).
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>, RecvTimeoutError> {
        self.recv_ref_deadline(deadline).map(|m| m.to_vec())
    }

    /// Waits until `deadline` for a message and returns a view of it.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] if none came in time;
    /// [`RecvTimeoutError::Disconnected`] once closed and drained;
    /// [`RecvTimeoutError::Failed`] with any other error of
    /// [`recv_ref`](Self::recv_ref).
    pub fn recv_ref_deadline(&mut self, deadline: Instant) -> Result<MsgRef<'_>, RecvTimeoutError> {
        let r = match self.poll()? {
            Some(r) => r,
            None => self.wait(Some(deadline))?.ok_or(RecvTimeoutError::Timeout)?,
        };
        Ok(self.view(r))
    }

    /// The address range of the published bytes of the segment this
    /// receiver is reading: for tests that check a view points into the
    /// memory map (no copy).
    #[doc(hidden)]
    pub fn mapped_range(&self) -> std::ops::Range<usize> {
        let b = self.map.published_bytes();
        b.as_ptr().addr()..b.as_ptr().addr() + b.len()
    }

    /// A blocking iterator over messages; it ends when the channel is closed
    /// and drained. A read error is yielded once, then the iterator ends.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// for m in [b"1", b"2", b"3"] { ch.tx().send(m)?; }
    /// ch.close()?;
    /// let all: Vec<Vec<u8>> = rx.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(all, [b"1", b"2", b"3"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_, S> {
        Iter { rx: self, done: false }
    }

    /// An iterator over the messages ready now; it ends when none is ready.
    ///
    /// ```
    /// let dir = tempfile::tempdir()?;
    /// let ch = filechannel::FileChannel::open(dir.path())?;
    /// let mut rx = ch.rx();
    /// ch.tx().send(b"x")?;
    /// assert_eq!(rx.try_iter().count(), 1);
    /// assert_eq!(rx.try_iter().count(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_iter(&mut self) -> TryIter<'_, S> {
        TryIter { rx: self, done: false }
    }
}

impl<S: Storage> Drop for Receiver<S> {
    fn drop(&mut self) {
        let sh = &self.shared;
        let mut cat = sh.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        // Move the head up with this receiver still counted (what it consumed
        // stays consumed), then free what the others no longer need. What an
        // acking receiver has not acked stays needed (a ghost cursor) until
        // another acking receiver takes over.
        cat.collect(&sh.storage, &sh.dir, sh.is_sync());
        cat.cursors.retain(|c| !Arc::ptr_eq(c, &self.cursor));
        if self.acking {
            cat.ghosts.push(Arc::clone(&self.cursor));
        }
        cat.collect(&sh.storage, &sh.dir, sh.is_sync());
    }
}

impl<S: Storage> std::fmt::Debug for Receiver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("segment", &self.seg_id)
            .field("read_offset", &self.read_offset())
            .finish_non_exhaustive()
    }
}

impl<'a, S: Storage> IntoIterator for &'a mut Receiver<S> {
    type Item = Result<Vec<u8>, RecvError>;
    type IntoIter = Iter<'a, S>;
    /// As [`Receiver::iter`]: `for m in &mut rx` blocks for each message.
    fn into_iter(self) -> Iter<'a, S> {
        self.iter()
    }
}

impl<'a, S: Storage> IntoIterator for &'a mut AckReceiver<S> {
    type Item = Result<Vec<u8>, RecvError>;
    type IntoIter = Iter<'a, S>;
    /// As [`Receiver::iter`]: `for m in &mut rx` blocks for each message.
    fn into_iter(self) -> Iter<'a, S> {
        self.iter()
    }
}

/// Blocking iterator returned by [`Receiver::iter`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Iter<'a, S: Storage = Fs> {
    rx: &'a mut Receiver<S>,
    done: bool,
}

impl<S: Storage> Iterator for Iter<'_, S> {
    type Item = Result<Vec<u8>, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        next_blocking(self.rx, &mut self.done)
    }
}

impl<S: Storage> std::iter::FusedIterator for Iter<'_, S> {}

/// The next item of a blocking iterator over `rx`: a message, or a read
/// error once (then `done`), or `None` once disconnected and drained.
fn next_blocking<S: Storage>(rx: &mut Receiver<S>, done: &mut bool) -> Option<Result<Vec<u8>, RecvError>> {
    if *done {
        return None;
    }
    match rx.recv() {
        Ok(m) => Some(Ok(m)),
        Err(RecvError::Disconnected) => {
            *done = true;
            None
        }
        Err(e) => {
            *done = true;
            Some(Err(e))
        }
    }
}

/// Blocking iterator that owns its receiver: `for m in rx`, as with
/// `std::sync::mpsc` and crossbeam-channel. Items and end as
/// [`Receiver::iter`]'s.
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct IntoIter<S: Storage = Fs> {
    rx: Receiver<S>,
    done: bool,
}

impl<S: Storage> Iterator for IntoIter<S> {
    type Item = Result<Vec<u8>, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        next_blocking(&mut self.rx, &mut self.done)
    }
}

impl<S: Storage> std::iter::FusedIterator for IntoIter<S> {}

impl<S: Storage> IntoIterator for Receiver<S> {
    type Item = Result<Vec<u8>, RecvError>;
    type IntoIter = IntoIter<S>;
    /// `for m in rx` blocks for each message and ends once the channel is
    /// closed and drained (or after a read error). (An [`AckReceiver`] has
    /// no owning iterator: nothing could ack what it yields.)
    fn into_iter(self) -> IntoIter<S> {
        IntoIter { rx: self, done: false }
    }
}

/// Non-blocking iterator returned by [`Receiver::try_iter`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct TryIter<'a, S: Storage = Fs> {
    rx: &'a mut Receiver<S>,
    done: bool,
}

impl<S: Storage> Iterator for TryIter<'_, S> {
    type Item = Result<Vec<u8>, RecvError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.rx.try_recv() {
            Ok(m) => Some(Ok(m)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                self.done = true;
                None
            }
            Err(TryRecvError::Failed(e)) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<S: Storage> std::iter::FusedIterator for TryIter<'_, S> {}

/// A receiver whose messages stay on disk until acked: after a crash or
/// restart, a new `AckReceiver` sees every message not acked before.
///
/// It has every receiving method of [`Receiver`] (through `Deref`), plus
/// [`ack`](Self::ack).
///
/// ```
/// let dir = tempfile::tempdir()?;
/// {
///     let ch = filechannel::FileChannel::open(dir.path())?;
///     let tx = ch.tx();
///     for m in [b"a", b"b", b"c"] { tx.send(m)?; }
///     let mut rx = ch.rx_ack();
///     assert_eq!(rx.recv()?, b"a");
///     assert_eq!(rx.recv()?, b"b");
///     rx.ack(1)?; // "a" is done; "b" was received but not acked
/// }
/// let ch = filechannel::FileChannel::open(dir.path())?;
/// let mut rx = ch.rx_ack();
/// assert_eq!(rx.recv()?, b"b");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AckReceiver<S: Storage = Fs> {
    rx: Receiver<S>,
}

impl<S: Storage> AckReceiver<S> {
    pub(crate) fn new(rx: Receiver<S>) -> Self {
        AckReceiver { rx }
    }

    /// Marks the `n` oldest received, un-acked messages as done: they may now
    /// be deleted once every other receiver is past them too, and an
    /// acking receiver created after a restart starts after them (unless
    /// another receiver still needed them: the channel's head is the oldest
    /// message any receiver needs).
    ///
    /// The ack is recorded in the `head` file (fsynced in `Sync` mode); if
    /// that write fails, it is logged and the messages may be delivered again
    /// after a restart (at least once, never lost).
    ///
    /// # Errors
    /// [`AckError::Closed`] once the channel is closed, whatever `n` (the
    /// directory is no longer this process's to write: the messages will be
    /// delivered again after a reopen); else [`AckError::TooMany`] if fewer
    /// than `n` received messages are un-acked. Nothing is acked then.
    pub fn ack(&mut self, n: u64) -> Result<(), AckError> {
        // Closed comes first, whatever `n` (also 0, or too many).
        if self.rx.shared.closed.load(Ordering::Acquire) {
            return Err(AckError::Closed);
        }
        let acked = self.acked_offset();
        let unacked = self.rx.read_offset() - acked;
        if n > unacked {
            return Err(AckError::TooMany { requested: n, unacked });
        }
        if n == 0 {
            return Ok(());
        }
        let acked = acked + n;
        let rx = &mut self.rx;
        let sh = &rx.shared;
        let mut cat = sh.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the catalog lock, which `close` holds while it
        // records the head for the last time: an ack either makes it into
        // that record or is refused.
        if cat.closed {
            return Err(AckError::Closed);
        }
        let floor = acked_floor(&mut rx.entered, rx.seg_id, acked);
        rx.cursor.floor.store(floor, Ordering::Release);
        rx.cursor.consumed.store(acked, Ordering::Release);
        cat.collect(&sh.storage, &sh.dir, sh.is_sync());
        Ok(())
    }

    /// Sequence number of the oldest received message not acked yet.
    pub fn acked_offset(&self) -> u64 {
        self.rx.cursor.consumed.load(Ordering::Acquire)
    }
}

impl<S: Storage> Deref for AckReceiver<S> {
    type Target = Receiver<S>;
    fn deref(&self) -> &Receiver<S> {
        &self.rx
    }
}

impl<S: Storage> std::ops::DerefMut for AckReceiver<S> {
    fn deref_mut(&mut self) -> &mut Receiver<S> {
        &mut self.rx
    }
}

impl<S: Storage> std::fmt::Debug for AckReceiver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckReceiver")
            .field("read_offset", &self.rx.read_offset())
            .field("acked_offset", &self.acked_offset())
            .finish_non_exhaustive()
    }
}
