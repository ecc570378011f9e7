//! Mapped segments: the writer's one writable map of the active segment, and
//! the read-only maps (or decompressed buffers) receivers read from.
//!
//! Soundness rests on one rule, enforced here rather than by the callers:
//! bytes of a segment below its `published` mark never change again, and
//! only the single [`MapWriter`] writes, always at or above the mark. Readers
//! get slices of published bytes only, so a slice never overlaps a write.
//!
//! A receiver reading the active segment maps the file read-only itself and
//! follows the writer's mark (the two maps share the page cache). Keeping
//! readers off the writable map matters: the kernel write-protects a writable
//! map's pages whenever it writes them back, with a TLB shootdown per page,
//! which stalls the writer if any reader still holds the map.

use super::StorageMap;
use crate::sync::AtomicUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A mapped segment (or a decompressed copy of one).
pub(crate) struct SegmentMap {
    /// Start and length of the owner's region, cached to keep reads free of
    /// dynamic dispatch.
    ptr: *mut u8,
    len: usize,
    /// Bytes below this are final. Shared between the writer's map and the
    /// maps that follow it.
    published: Arc<AtomicUsize>,
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
}

impl SegmentMap {
    fn new(owner: Box<dyn StorageMap>, published: Arc<AtomicUsize>) -> Self {
        SegmentMap {
            ptr: owner.as_ptr(),
            len: owner.len(),
            published,
            owner,
        }
    }

    /// A map whose bytes are all final (a sealed segment).
    pub(crate) fn sealed(owner: impl StorageMap) -> Arc<Self> {
        let len = owner.len();
        Arc::new(Self::new(Box::new(owner), Arc::new(AtomicUsize::new(len))))
    }

    /// A read-only map of the file `leader` maps, whose published mark it
    /// shares. The caller must pass a map of that same file.
    pub(crate) fn follower(owner: impl StorageMap, leader: &SegmentMap) -> Arc<Self> {
        Arc::new(Self::new(Box::new(owner), Arc::clone(&leader.published)))
    }

    /// A writable map whose first `published` bytes are final; returns the
    /// shared map and its only writer, positioned at `published`.
    pub(crate) fn writable(owner: impl StorageMap, published: usize) -> (Arc<Self>, MapWriter) {
        let published = published.min(owner.len());
        let shared = Arc::new(Self::new(Box::new(owner), Arc::new(AtomicUsize::new(published))));
        let writer = MapWriter {
            map: Arc::clone(&shared),
            pos: published,
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

    /// Hints that `[offset, offset + len)` will be written soon.
    pub(crate) fn prefault_write(&self, offset: usize, len: usize) {
        self.owner.prefault_write(offset, len);
    }

    /// Hints that `[offset, offset + len)` will be read soon (only what is
    /// published is touched).
    pub(crate) fn prefault_read(&self, offset: usize, len: usize) {
        let end = (offset + len).min(self.published());
        if end > offset {
            self.owner.prefault_read(offset, end - offset);
        }
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
    /// position `advance` bytes on (which leaves padding untouched: it is zero
    /// already). Returns `false`, writing nothing, when the map is too short.
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
        let mut at = self.pos;
        for part in parts {
            // SAFETY: `at + part.len() <= pos + advance <= len`, so the
            // destination is inside the region, which is writable (only
            // `writable` creates a `MapWriter`, from a writable map). It lies
            // at or above `pos`, which is at or above `published`, so no
            // reader holds a slice of it, and this is the map's only writer;
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

    /// Makes every appended byte final and visible to readers.
    #[inline]
    pub(crate) fn publish(&self) {
        self.map.published.store(self.pos, Ordering::Release);
    }

    /// Makes the bytes up to `pos` (a position this writer has passed) final
    /// and visible; never moves the published mark back.
    pub(crate) fn publish_to(&self, pos: usize) {
        self.map.published.fetch_max(pos.min(self.pos), Ordering::AcqRel);
    }

    /// Erases everything appended but not published (zeroes it in the map)
    /// and moves the write position back: used when those frames' fsync
    /// failed, so that they are never delivered.
    pub(crate) fn discard_unpublished(&mut self) {
        let published = self.map.published();
        if self.pos > published {
            // SAFETY: `[published, pos)` is inside the region (pos <= len),
            // writable, not visible to any reader (above `published`), and
            // this is the map's only writer.
            unsafe {
                std::ptr::write_bytes(self.map.ptr.add(published), 0, self.pos - published);
            }
            self.pos = published;
        }
    }
}
