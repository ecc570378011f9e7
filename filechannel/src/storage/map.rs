//! Mapped segments: the writer's one writable map of the active segment, and
//! the read-only maps (or decompressed buffers) receivers read from.
//!
//! Soundness rests on one rule, enforced here rather than by the callers:
//! bytes of a segment below its `published` mark never change again, and
//! only the single [`MapWriter`] writes, always at or above the mark. Readers
//! get slices of published bytes only, so a slice never overlaps a write.
//!
//! A second rule keeps the flusher's zero-filling (see
//! [`SegmentMap::prepare_ahead`]) apart from the writer: the writer writes
//! only below the map's `granted` frontier, and the flusher writes only above
//! it, while it holds the frontier's `FILLING` bit. Both move the frontier
//! up, never down.
//!
//! A third rule lets a writer defer finishing its frames (`Buffered` mode:
//! the CRCs are filled in behind the writer, off the send path; see
//! [`SegmentMap::try_complete`]): in a deferring map the bytes in
//! `[published, written)` are whole frames the writer has left behind, and
//! only the holder of the map's `completing` flag writes them or moves the
//! published mark (except the writer when that range is empty: then no
//! completer writes or stores anything).
//!
//! Receivers reading the active segment map the file read-only (one map,
//! shared by all of them) and follow the writer's mark (the two maps share
//! the page cache). Keeping readers off the writable map matters: the kernel
//! write-protects a writable map's pages whenever it writes them back, with a
//! TLB shootdown per page, which stalls the writer if any reader still holds
//! the map.

use super::StorageMap;
use crate::sync::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The CPU's cache line, the unit of [`SegmentMap::prefetch`].
pub(crate) const CACHE_LINE: usize = 64;

/// A mapped segment (or a decompressed copy of one).
pub(crate) struct SegmentMap {
    /// Start and length of the owner's region, cached to keep reads free of
    /// dynamic dispatch.
    ptr: *mut u8,
    len: usize,
    /// Bytes below this are final. Shared between the writer's map and the
    /// maps that follow it.
    published: Arc<AtomicUsize>,
    /// The writer may write below this; the flusher zero-fills above it, with
    /// [`FILLING`] set while it does. `len` for maps nobody writes.
    granted: AtomicUsize,
    /// The writer's position after its last deferred append
    /// ([`MapWriter::append_deferred`]): it never writes below it again
    /// (except in `discard_unpublished`, under `completing`). On a cache
    /// line of its own: the writer stores it on every deferred append, and
    /// the flusher must not pull `granted` away from it.
    written: Line<AtomicUsize>,
    /// The writer leaves its frames for a completer to finish and publish
    /// ([`MapWriter::defer`]).
    deferred: AtomicBool,
    /// Held (deferring maps only) by whoever writes in `[published,
    /// written)` or moves the published mark: a completer, or the writer
    /// publishing or discarding. Also on a line of its own.
    completing: Line<AtomicBool>,
    /// Zero-fills write at most this many bytes at a time, each stretch
    /// aligned to it (`usize::MAX`: the whole range at once). The kernel
    /// sizes page-cache folios by the write (large folios: ext4 since Linux
    /// 6.16, XFS), and one dirty byte makes a whole folio dirty: an fsync
    /// writes the folio out. Set by the flusher from how often `sync()` is
    /// called; see `Shared::fill_granule`.
    fill_granule: AtomicUsize,
    /// Keeps the region alive.
    owner: Box<dyn StorageMap>,
}

// SAFETY: `ptr` points into `owner`'s region, which is `Send + Sync` and lives
// as long as `self`. All access through `ptr` follows the published rule
// above: shared reads below the mark, a single writer above it.
unsafe impl Send for SegmentMap {}
// SAFETY: as for `Send`.
unsafe impl Sync for SegmentMap {}

impl std::fmt::Debug for SegmentMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentMap")
            .field("len", &self.len)
            .field("published", &self.published())
            .finish_non_exhaustive()
    }
}

/// The unique writing end of a [`SegmentMap`]. Not `Clone`: there is one per
/// map, so appends never race.
#[derive(Debug)]
pub(crate) struct MapWriter {
    map: Arc<SegmentMap>,
    pos: usize,
    /// The last `granted` frontier this writer saw (without [`FILLING`]):
    /// appends below it need no synchronisation with the flusher.
    granted: usize,
    /// [`defer`](Self::defer) was called: publishing takes the map's
    /// `completing` flag.
    deferred: bool,
}

/// Set in `granted` while the flusher zero-fills the bytes above it.
/// Segments are far smaller than `usize::MAX / 2`, so the bit is free.
const FILLING: usize = 1 << (usize::BITS - 1);

/// How much the writer zero-fills at a time when it has caught up with the
/// flusher (or the flusher has not started on a new segment yet): enough to
/// make the syscall worth it, little enough to keep the send that does it
/// short (~10 µs).
const WRITER_FILL_STEP: usize = 64 << 10;

impl SegmentMap {
    fn new(owner: Box<dyn StorageMap>, published: Arc<AtomicUsize>, granted: usize) -> Self {
        SegmentMap {
            ptr: owner.as_ptr(),
            len: owner.len(),
            published,
            granted: AtomicUsize::new(granted),
            written: Line(AtomicUsize::new(0)),
            deferred: AtomicBool::new(false),
            completing: Line(AtomicBool::new(false)),
            fill_granule: AtomicUsize::new(usize::MAX),
            owner,
        }
    }

    /// A map whose bytes are all final (a sealed segment).
    pub(crate) fn sealed(owner: impl StorageMap) -> Arc<Self> {
        let len = owner.len();
        Arc::new(Self::new(Box::new(owner), Arc::new(AtomicUsize::new(len)), len))
    }

    /// A read-only map of the file `leader` maps, whose published mark it
    /// shares. The caller must pass a map of that same file.
    pub(crate) fn follower(owner: impl StorageMap, leader: &SegmentMap) -> Arc<Self> {
        let len = owner.len();
        Arc::new(Self::new(Box::new(owner), Arc::clone(&leader.published), len))
    }

    /// A writable map whose first `published` bytes are final; returns the
    /// shared map and its only writer, positioned at `published`.
    pub(crate) fn writable(owner: impl StorageMap, published: usize) -> (Arc<Self>, MapWriter) {
        let published = published.min(owner.len());
        let shared = Arc::new(Self::new(
            Box::new(owner),
            Arc::new(AtomicUsize::new(published)),
            published,
        ));
        shared.written.0.store(published, Ordering::Relaxed);
        let writer = MapWriter {
            map: Arc::clone(&shared),
            pos: published,
            granted: published,
            deferred: false,
        };
        (shared, writer)
    }

    /// How many bytes from the start are final and readable.
    #[inline]
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Every published byte, from the start of the segment.
    #[inline]
    pub(crate) fn published_bytes(&self) -> &[u8] {
        let end = self.published().min(self.len);
        // SAFETY: `end <= len`, so the range is inside the owner's region,
        // which lives as long as `self`; `end <= published`, and published
        // bytes are never written again (see the module docs), through this
        // map or any other, so nothing writes the slice while it lives.
        unsafe { std::slice::from_raw_parts(self.ptr, end) }
    }

    /// Asks the CPU to start loading the published bytes `[from, to)` into
    /// its cache (a hint: nothing is read, no page fault is taken for a page
    /// not mapped in), one prefetch per 64 bytes counted from the map's start
    /// (a cache line for a mapped file, which starts on a page; a
    /// decompressed copy starts on 16 bytes). Returns where it stopped: `to`
    /// or the published mark, whichever is lower, and `from` when that is
    /// past both. Only on x86_64; elsewhere it does nothing.
    #[inline]
    pub(crate) fn prefetch(&self, from: usize, to: usize) -> usize {
        let bytes = self.published_bytes();
        let to = to.min(bytes.len());
        let Some(range) = bytes.get(from & !(CACHE_LINE - 1)..to) else {
            return from;
        };
        #[cfg(target_arch = "x86_64")]
        for line in range.chunks(CACHE_LINE) {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: `line` points into a published slice of the map; a
            // prefetch reads nothing the program sees and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = range;
        to
    }

    /// The published bytes `[offset, offset + len)`, or `None` if any of them
    /// is not published yet.
    #[inline]
    pub(crate) fn read(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.published_bytes().get(offset..offset.checked_add(len)?)
    }

    /// Total length of the region.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Maps `[offset, offset + len)` in ahead of the writer without dirtying
    /// it (`Sync` mode): the writer's first store to each page then costs a
    /// write-protect fault, not a page allocation. Write-faulting the pages
    /// in instead would dirty them, and each group commit's fsync would
    /// write them out, zeros, ahead of their data (3.5× the bytes to disk
    /// with 16 senders of 64 B messages, measured).
    pub(crate) fn map_in_ahead(&self, offset: usize, len: usize) {
        self.owner.prefault_read(offset, len);
    }

    /// Hints that `[offset, offset + len)` will be read soon (only what is
    /// published is touched).
    pub(crate) fn prefault_read(&self, offset: usize, len: usize) {
        let end = (offset + len).min(self.published());
        if end > offset {
            self.owner.prefault_read(offset, end - offset);
        }
    }

    /// The flusher's step ahead of the writer: zero-fills (through the
    /// file, see [`StorageMap::prepare_write`]) up to `step` bytes above the
    /// writer's frontier, unless the frontier is at `until` already. When the
    /// fill starts at least `slack` bytes past the published mark (the
    /// flusher is well ahead), it also faults the filled pages in, which
    /// spares the writer a minor fault per page. Returns whether there is
    /// more to do before `until`.
    pub(crate) fn prepare_ahead(&self, until: usize, step: usize, slack: usize) -> bool {
        let until = until.min(self.len);
        let from = self.granted.load(Ordering::Acquire);
        if from & FILLING != 0 {
            // The writer is filling: it has caught up. Go on right after.
            crate::sync::thread::yield_now();
            return true;
        }
        if from >= until {
            return false;
        }
        let to = from.saturating_add(step).min(until);
        if !self.fill(from, to) {
            // The writer moved the frontier: go on from there.
            return true;
        }
        if from >= self.published().saturating_add(slack) {
            self.owner.prefault_write(from, to - from);
        }
        to < until
    }

    /// Finishes and publishes what the writer of a deferring map has
    /// appended: hands `complete` the bytes `[published, written)` (whole
    /// frames, as the writer left them) to finish in place, publishes as
    /// many of their leading bytes as it returns, and then runs `published`
    /// (the caller's bookkeeping of what is now visible) before letting the
    /// next completer in, so that whoever takes the flag after us sees it.
    /// Does nothing when the map does not defer or, unless `wait`, when
    /// another completer (or the writer publishing) is at work.
    pub(crate) fn try_complete(&self, wait: bool, complete: impl FnOnce(&mut [u8]) -> usize, published: impl FnOnce()) {
        if !self.deferred.load(Ordering::Acquire) {
            return;
        }
        let flag = if wait {
            CompletingFlag::take(&self.completing.0)
        } else {
            let Some(flag) = CompletingFlag::try_take(&self.completing.0) else {
                return;
            };
            flag
        };
        self.complete_held(self.written.0.load(Ordering::Acquire), complete);
        published();
        drop(flag);
    }

    /// Holds the `completing` flag until the guard is dropped, as a
    /// completer at work would.
    #[cfg(test)]
    pub(crate) fn hold_completing(&self) -> impl Drop + '_ {
        CompletingFlag::take(&self.completing.0)
    }

    /// [`try_complete`](Self::try_complete)'s work up to `to` (at most
    /// `written`, or the writer's own position when the writer calls), with
    /// `completing` held by the caller.
    fn complete_held(&self, to: usize, complete: impl FnOnce(&mut [u8]) -> usize) {
        let from = self.published();
        let to = to.min(self.len);
        if to <= from {
            return;
        }
        // SAFETY: `[from, to)` lies inside the region (`to <= len`). It is
        // below `written` or, when the writer itself calls, its position: the
        // writer has finished writing it and writes only at or above its
        // position, which is at or above `written`, except
        // when it discards, which takes `completing`, as every completer does
        // and as our caller did: nobody else writes these bytes. The flusher
        // fills only above the writer's position. It is at or above
        // `published`, which only a holder of `completing` moves in a
        // deferring map, so no reader holds a slice of it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(from), to - from) };
        let done = complete(bytes).min(to - from);
        self.published.store(from + done, Ordering::Release);
    }

    /// Sets how many bytes a zero-fill writes at a time (see
    /// `fill_granule`).
    pub(crate) fn set_fill_granule(&self, granule: usize) {
        self.fill_granule.store(granule.max(1), Ordering::Relaxed);
    }

    /// Zero-fills `[from, to)` and moves the frontier from `from` to `to`,
    /// if the frontier is at `from` and nobody is filling; returns whether it
    /// did.
    fn fill(&self, from: usize, to: usize) -> bool {
        if self
            .granted
            .compare_exchange(from, from | FILLING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let bit = FillingBit {
            granted: &self.granted,
            from,
        };
        let granule = self.fill_granule.load(Ordering::Relaxed).max(1);
        let mut at = from;
        while at < to {
            let next = at.saturating_add(granule - at % granule).min(to);
            // SAFETY: `[from, to)` lies inside the region (`to <= len`) and above
            // the frontier, which nobody else passes or fills while `FILLING` is
            // set, so nothing writes it; it is above `published` too (published
            // <= the writer's position <= the frontier), so no reader holds a
            // slice of it. It holds zeros or (in a recycled segment) stale bytes
            // past every frame: zeroing it changes nothing anyone reads. The
            // same holds for each stretch of it.
            unsafe { self.owner.prepare_write(at, next - at) };
            at = next;
        }
        std::mem::forget(bit);
        self.granted.store(to, Ordering::Release);
        true
    }
}

/// Gives the frontier back at `from` if a fill unwinds: a `FILLING` bit
/// left set would keep the writer waiting for a fill that never ends (in
/// `claim`, and `close` in `filled_ahead`). The range may be part zeroed,
/// which is harmless: its bytes never mattered.
struct FillingBit<'a> {
    granted: &'a AtomicUsize,
    from: usize,
}

impl Drop for FillingBit<'_> {
    fn drop(&mut self) {
        self.granted.store(self.from, Ordering::Release);
    }
}

/// Calls `ready` until it gives a value: 64 spins, then yielding the CPU
/// between tries (what it waits for, a fill or a batch of CRCs, takes tens of
/// microseconds at most).
fn spin_until<T>(mut ready: impl FnMut() -> Option<T>) -> T {
    let mut spins = 0u32;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            crate::sync::thread::yield_now();
        }
    }
}

/// Keeps its value on a cache line of its own.
#[repr(align(128))]
struct Line<T>(T);

/// A deferring map's `completing` flag, held; released on drop (also when a
/// completer unwinds).
struct CompletingFlag<'a>(&'a AtomicBool);

impl<'a> CompletingFlag<'a> {
    fn try_take(flag: &'a AtomicBool) -> Option<Self> {
        // Look before trying: waiters spin here, and a failing swap would
        // still take the line from the holder.
        if flag.load(Ordering::Relaxed) {
            return None;
        }
        // Lazily built (`then`, not `then_some`): a guard built and dropped
        // on failure would release the holder's flag.
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| CompletingFlag(flag))
    }

    /// Waits for a completer at work (it finishes at most one flush
    /// interval's frames) and takes the flag.
    fn take(flag: &'a AtomicBool) -> Self {
        spin_until(|| Self::try_take(flag))
    }
}

impl Drop for CompletingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl MapWriter {
    /// The position of the next append.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left in the map after the write position.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.map.len - self.pos
    }

    /// Copies `parts` one after another to the write position, then moves the
    /// position `advance` bytes on, leaving the padding as it is: zero in a
    /// new or zero-filled segment, old bytes in a recycled spare of `Sync`
    /// mode (which fills nothing ahead; no reader looks at padding, and the
    /// frames' CRCs do not cover it). Returns `false`, writing nothing, when
    /// the map is too short.
    #[inline]
    pub(crate) fn append(&mut self, parts: &[&[u8]], advance: usize) -> bool {
        self.append_with(parts, advance, |_| {})
    }

    /// As [`append`](Self::append), and before moving the position on,
    /// hands `finish` the bytes just copied to complete in place (the writer
    /// fills in a CRC computed over them).
    #[inline]
    pub(crate) fn append_with(&mut self, parts: &[&[u8]], advance: usize, finish: impl FnOnce(&mut [u8])) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > advance || advance > self.remaining() {
            return false;
        }
        if self.pos + advance > self.granted {
            self.claim(self.pos + advance);
        }
        let mut at = self.pos;
        for part in parts {
            // SAFETY: `at + part.len() <= pos + advance <= len`, so the
            // destination is inside the region, which is writable (only
            // `writable` creates a `MapWriter`, from a writable map). It lies
            // at or above `pos`, which is at or above `published`, so no
            // reader holds a slice of it; it is below `granted`, so the
            // flusher does not fill it; and this is the map's only writer;
            // `part` is our caller's memory, which cannot overlap the map's
            // unpublished bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), self.map.ptr.add(at), part.len());
            }
            at += part.len();
        }
        // SAFETY: `[pos, pos + total)` is inside the region and was just
        // written; it lies at or above `published`, so no reader holds a
        // slice of it, and `&mut self` (the map's only writer) keeps any
        // other write out while `finish` runs.
        let written = unsafe { std::slice::from_raw_parts_mut(self.map.ptr.add(self.pos), total) };
        finish(written);
        self.pos += advance;
        true
    }

    /// As [`append`](Self::append), in a deferring map, for a frame left for
    /// a completer to finish: it becomes part of what
    /// [`SegmentMap::try_complete`] hands out.
    #[inline]
    pub(crate) fn append_deferred(&mut self, parts: &[&[u8]], advance: usize) -> bool {
        let appended = self.append(parts, advance);
        self.map.written.0.store(self.pos, Ordering::Release);
        appended
    }

    /// Takes the frontier up to at least `end` (at most the map's length).
    /// When the flusher is not ahead, zero-fills the next stretch itself:
    /// far cheaper than taking its pages one fault at a time.
    #[cold]
    fn claim(&mut self, end: usize) {
        loop {
            let cur = self.wait_for_fill();
            if cur >= end {
                self.granted = cur;
                return;
            }
            let to = end.max(cur.saturating_add(WRITER_FILL_STEP)).min(self.map.len);
            // Fails only if the flusher started a fill meanwhile.
            self.map.fill(cur, to);
        }
    }

    /// The pages ahead of the write position up to the frontier, which the
    /// writer holds (zero-filled, unless it took the whole map without
    /// filling it, as in `Sync` mode): from the first page boundary at or
    /// after the position to the one at or after the frontier (the rest of
    /// that last page holds zeros or stale bytes, past every frame, too).
    /// Waits for a fill under way to end; the caller must have stopped the
    /// flusher, or it may fill further.
    pub(crate) fn filled_ahead(&self) -> std::ops::Range<usize> {
        const PAGE: usize = 4096;
        let end = self.wait_for_fill().next_multiple_of(PAGE).min(self.map.len);
        self.pos.next_multiple_of(PAGE).min(end)..end
    }

    /// Takes the whole map without filling it: nothing is written to it
    /// after the seal, and the flusher stops filling it.
    pub(crate) fn claim_all(&mut self) {
        let len = self.map.len;
        loop {
            let cur = self.wait_for_fill();
            if cur >= len
                || self
                    .map
                    .granted
                    .compare_exchange(cur, len, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.granted = len;
                return;
            }
        }
    }

    /// Waits until nobody fills (fills take tens of microseconds), and
    /// returns the frontier.
    fn wait_for_fill(&self) -> usize {
        spin_until(|| {
            let cur = self.map.granted.load(Ordering::Acquire);
            (cur & FILLING == 0).then_some(cur)
        })
    }

    /// Leaves the frames appended from now on for a completer to finish and
    /// publish ([`SegmentMap::try_complete`], or [`complete`](Self::complete)
    /// from this side): appends no longer make them visible, and publishing
    /// takes the map's `completing` flag.
    pub(crate) fn defer(&mut self) {
        self.deferred = true;
        self.map.deferred.store(true, Ordering::Release);
    }

    /// As [`SegmentMap::try_complete`], from the writer's side: waits for a
    /// completer at work rather than giving up, and runs `published` in
    /// every case (in a map that does not defer, whose frames are finished
    /// as they are appended, it is all there is to do).
    pub(crate) fn complete(&mut self, complete: impl FnOnce(&mut [u8]) -> usize, published: impl FnOnce()) {
        if !self.deferred {
            published();
            return;
        }
        // Nothing left unfinished (the frames since `written` are finished
        // as appended): publish without the flag. Only this writer raises
        // `written`, and while it is at or below `published` no completer
        // has anything to do or to store.
        if self.map.written.0.load(Ordering::Relaxed) <= self.map.published() {
            self.map.published.store(self.pos, Ordering::Release);
            published();
            return;
        }
        let flag = CompletingFlag::take(&self.map.completing.0);
        self.map.complete_held(self.pos, complete);
        published();
        drop(flag);
    }

    /// Makes every appended byte final and visible to readers (in a
    /// deferring map, only once the frames are finished: see
    /// [`complete`](Self::complete)).
    #[inline]
    pub(crate) fn publish(&self) {
        let _flag = self.deferred.then(|| CompletingFlag::take(&self.map.completing.0));
        self.map.published.store(self.pos, Ordering::Release);
    }

    /// Makes the bytes up to `pos` (a position this writer has passed) final
    /// and visible; never moves the published mark back.
    pub(crate) fn publish_to(&self, pos: usize) {
        let _flag = self.deferred.then(|| CompletingFlag::take(&self.map.completing.0));
        self.map.published.fetch_max(pos.min(self.pos), Ordering::AcqRel);
    }

    /// Erases everything appended but not published (zeroes it in the map)
    /// and moves the write position back: used when those frames' fsync
    /// failed, so that they are never delivered.
    pub(crate) fn discard_unpublished(&mut self) {
        let _flag = self.deferred.then(|| CompletingFlag::take(&self.map.completing.0));
        let published = self.map.published();
        if self.pos > published {
            // SAFETY: `[published, pos)` is inside the region (pos <= len),
            // writable, not visible to any reader (above `published`), and
            // this is the map's only writer; in a deferring map, the flag
            // keeps completers out.
            unsafe {
                std::ptr::write_bytes(self.map.ptr.add(published), 0, self.pos - published);
            }
            self.pos = published;
            self.map.written.0.store(published, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(shuttle), not(loom)))]
mod tests {
    use super::*;
    use crate::storage::{Fs, FsFile, Storage, StorageFile};
    use std::sync::atomic::AtomicBool;

    /// A segment file of `len` allocated bytes in a fresh directory (kept
    /// alive by the returned guard), for a test to map.
    fn allocated(len: usize) -> (tempfile::TempDir, FsFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = Fs.create_new(&dir.path().join("segment")).unwrap();
        file.allocate(len as u64).unwrap();
        (dir, file)
    }

    /// Records the stretches a fill writes.
    struct Stretches<M> {
        inner: M,
        seen: Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
    }

    // SAFETY: the region is `inner`'s, which upholds the contract.
    unsafe impl<M: StorageMap> StorageMap for Stretches<M> {
        fn as_ptr(&self) -> *mut u8 {
            self.inner.as_ptr()
        }

        fn len(&self) -> usize {
            self.inner.len()
        }

        unsafe fn prepare_write(&self, offset: usize, len: usize) {
            self.seen.lock().unwrap().push((offset, len));
            // SAFETY: our caller's promise, passed on.
            unsafe { self.inner.prepare_write(offset, len) }
        }
    }

    /// With a fill granule set, a fill writes stretches of at most that
    /// many bytes, each ending on a multiple of it (the kernel sizes folios
    /// by the write); without one, the whole range at once.
    #[test]
    fn a_fill_writes_in_aligned_stretches_of_its_granule() {
        let len = 1usize << 20;
        let (_dir, file) = allocated(len);
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let owner = Stretches {
            inner: file.map(len as u64, true).unwrap(),
            seen: Arc::clone(&seen),
        };
        let (map, _writer) = SegmentMap::writable(owner, 100);
        map.prepare_ahead(200 << 10, 100 << 10, usize::MAX);
        map.set_fill_granule(16 << 10);
        map.prepare_ahead(300 << 10, 100 << 10, usize::MAX);
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let (whole, split) = seen.split_at(1);
        assert_eq!(whole, &[(100, 100 << 10)]);
        let mut at = 100 + (100 << 10);
        for &(offset, n) in split {
            assert_eq!(offset, at, "stretches are contiguous");
            assert!(n <= 16 << 10 && n > 0, "{n} bytes");
            assert!((offset + n) % (16 << 10) == 0 || offset + n == 100 + (200 << 10));
            at += n;
        }
        assert_eq!(at, 100 + (200 << 10));
    }

    /// A prefetch stops at the published mark, whatever it is asked for,
    /// and says where: nothing unpublished is touched, and out-of-range
    /// requests are no error.
    #[test]
    fn a_prefetch_stops_at_the_published_mark() {
        let len = 64usize << 10;
        let (_dir, file) = allocated(len);
        let (map, mut writer) = SegmentMap::writable(file.map(len as u64, true).unwrap(), 64);
        assert_eq!(map.prefetch(0, 4096), 64, "only the header is published");
        assert!(writer.append(&[&[7u8; 1000]], 1000));
        writer.publish();
        assert_eq!(map.published(), 1064);
        assert_eq!(map.prefetch(100, 1000), 1000);
        assert_eq!(map.prefetch(100, 1 << 20), 1064);
        assert_eq!(map.prefetch(5000, 9000), 5000, "nothing published there");
        assert_eq!(map.prefetch(usize::MAX - 10, usize::MAX), usize::MAX - 10);
    }

    /// The flusher's zero-fill and the writer's appends never overlap: a
    /// thread filling ahead in small steps, as fast as it can, beside a
    /// writer appending records of many sizes (which catches up with it and
    /// fills for itself too), leaves every appended byte intact, in the map
    /// and in the file.
    #[test]
    fn fill_ahead_never_touches_written_bytes() {
        let len = 16usize << 20;
        let (_dir, file) = allocated(len);
        let (map, mut writer) = SegmentMap::writable(file.map(len as u64, true).unwrap(), 64);
        let done = AtomicBool::new(false);
        let started = AtomicBool::new(false);
        let mut records = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                started.store(true, Ordering::Release);
                while !done.load(Ordering::Acquire) {
                    if !map.prepare_ahead(map.published() + (128 << 10), 12 << 10, 64 << 10) {
                        std::thread::yield_now();
                    }
                }
            });
            while !started.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            let mut i = 0u32;
            loop {
                let size = 1 + (i as usize * 7919) % 3000;
                let fill = (i % 251) as u8 + 1;
                let start = writer.pos();
                if !writer.append(&[&vec![fill; size]], size) {
                    break;
                }
                writer.publish();
                records.push((start, size, fill));
                i += 1;
            }
            done.store(true, Ordering::Release);
        });
        assert!(records.len() > 5000, "{} records", records.len());
        let mut from_file = vec![0u8; len];
        file.read_exact_at(&mut from_file, 0).unwrap();
        for &(start, size, fill) in &records {
            let in_map = map.read(start, size).unwrap();
            assert!(
                in_map.iter().all(|&b| b == fill),
                "record at {start} changed in the map"
            );
            assert!(
                from_file[start..start + size].iter().all(|&b| b == fill),
                "record at {start} changed in the file"
            );
        }
    }

    /// A failed try for the completing flag leaves its holder's flag held
    /// (a guard built on failure and dropped would release it).
    #[test]
    fn a_failed_take_leaves_the_flag_held() {
        let flag = AtomicBool::new(false);
        let held = CompletingFlag::take(&flag);
        assert!(CompletingFlag::try_take(&flag).is_none());
        assert!(
            CompletingFlag::try_take(&flag).is_none(),
            "the failed try released the flag"
        );
        drop(held);
        assert!(CompletingFlag::try_take(&flag).is_some());
    }

    /// A completer finishing frames behind a deferring writer, as fast as
    /// it can, beside the writer appending deferred frames of many sizes
    /// and now and then a finished one that publishes everything: every
    /// frame ends up with its CRC, and nothing is published unfinished.
    #[test]
    fn a_completer_behind_a_deferring_writer_finishes_every_frame() {
        use crate::format::{self, FrameHeader, SEGMENT_HEADER_LEN};
        let len = 8usize << 20;
        let (_dir, file) = allocated(len);
        let start = SEGMENT_HEADER_LEN as usize;
        let (map, mut writer) = SegmentMap::writable(file.map(len as u64, true).unwrap(), start);
        writer.defer();
        let seed = format::segment_seed(7);
        let finish = |frames: &mut [u8]| format::complete_frames(seed, frames).0;
        let done = AtomicBool::new(false);
        let mut frames = 0u64;
        std::thread::scope(|s| {
            s.spawn(|| {
                // What is published is always whole, finished frames: read
                // them as a receiver would, as they come.
                let (mut at, mut seq) = (start, 0);
                while !done.load(Ordering::Acquire) {
                    map.try_complete(false, finish, || {});
                    while let Some(frame) = crate::segment::read_frame(&map, seed, at, seq)
                        .unwrap_or_else(|e| panic!("published frame {seq} at {at}: {e}"))
                    {
                        (at, seq) = (frame.next, seq + 1);
                    }
                }
            });
            loop {
                let size = (frames as usize * 7919) % 300;
                let payload = vec![frames as u8; size];
                let header = FrameHeader::without_crc(size, 0, frames).to_bytes();
                let advance = format::frame_len(size as u64) as usize;
                let appended = if frames.is_multiple_of(97) {
                    let ok = writer.append_with(&[&header, &payload], advance, |frame| format::fill_crc(seed, frame));
                    writer.complete(finish, || {});
                    ok
                } else {
                    writer.append_deferred(&[&header, &payload], advance)
                };
                if !appended || writer.remaining() < 4096 {
                    break;
                }
                frames += 1;
            }
            done.store(true, Ordering::Release);
        });
        writer.complete(finish, || {});
        assert_eq!(map.published(), writer.pos());
        let mut at = start;
        for seq in 0..=frames {
            let frame = crate::segment::read_frame(&map, seed, at, seq)
                .unwrap_or_else(|e| panic!("frame {seq} at {at}: {e}"))
                .unwrap_or_else(|| panic!("frame {seq} at {at} is not published"));
            at = frame.next;
        }
        assert!(frames > 10_000, "{frames} frames");
    }

    /// A writable map whose first zero-fill panics.
    struct FillPanics<M> {
        inner: M,
        panicked: AtomicBool,
    }

    // SAFETY: the region is `inner`'s, which upholds the contract.
    unsafe impl<M: StorageMap> StorageMap for FillPanics<M> {
        fn as_ptr(&self) -> *mut u8 {
            self.inner.as_ptr()
        }

        fn len(&self) -> usize {
            self.inner.len()
        }

        unsafe fn prepare_write(&self, offset: usize, len: usize) {
            assert!(self.panicked.swap(true, Ordering::Relaxed), "the fill panics");
            // SAFETY: our caller's promise, passed on.
            unsafe { self.inner.prepare_write(offset, len) }
        }
    }

    /// A fill that unwinds gives the frontier back: the writer then fills
    /// for itself and appends, where a `FILLING` bit left behind would keep
    /// it (and `close`) waiting forever.
    #[test]
    fn a_fill_that_panics_leaves_no_filling_bit_behind() {
        let len = 1usize << 20;
        let (_dir, file) = allocated(len);
        let owner = FillPanics {
            inner: file.map(len as u64, true).unwrap(),
            panicked: AtomicBool::new(false),
        };
        let (map, mut writer) = SegmentMap::writable(owner, 64);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map.prepare_ahead(len, 64 << 10, usize::MAX)
        }));
        assert!(unwound.is_err(), "the fill did not panic");
        assert_eq!(map.granted.load(Ordering::Acquire), 64);
        let record = vec![7u8; 100 << 10];
        assert!(writer.append(&[&record], record.len()));
        writer.publish();
        assert_eq!(map.read(64, record.len()), Some(&record[..]));
        assert!(writer.filled_ahead().end >= 64 + record.len());
    }
}
