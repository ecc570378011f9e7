//! Memory maps of segments: the writer's one writable map of the active
//! segment, and the read-only maps receivers read from.
//!
//! Soundness rests on one rule, enforced here rather than by the callers:
//! bytes of a segment file below its `published` mark never change again, and
//! only the single [`MapWriter`] writes, always at or above the mark. Readers
//! get slices of published bytes only, so a slice never overlaps a write.
//!
//! A receiver reading the active segment maps the file read-only itself and
//! follows the writer's mark (the two maps share the page cache). Keeping
//! readers off the writable map matters: the kernel write-protects a writable
//! map's pages whenever it writes them back, with a TLB shootdown per page,
//! which stalls the writer if any reader still holds the map.

use super::StorageMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A mapped segment.
#[derive(Debug)]
pub(crate) struct SegmentMap<M> {
    map: M,
    /// Bytes of the file below this are final. Shared between the writer's
    /// map and the maps that follow it.
    published: Arc<AtomicUsize>,
}

/// The unique writing end of a [`SegmentMap`]. Not `Clone`: there is one per
/// map, so appends never race.
#[derive(Debug)]
pub(crate) struct MapWriter<M> {
    map: Arc<SegmentMap<M>>,
    pos: usize,
}

impl<M: StorageMap> SegmentMap<M> {
    /// A map whose bytes are all final (a sealed segment, mapped read-only).
    pub(crate) fn sealed(map: M) -> Arc<Self> {
        let len = map.len();
        Arc::new(SegmentMap {
            map,
            published: Arc::new(AtomicUsize::new(len)),
        })
    }

    /// A read-only map of the file `leader` maps, whose published mark it
    /// shares. The caller must pass a map of that same file.
    pub(crate) fn follower(map: M, leader: &SegmentMap<M>) -> Arc<Self> {
        Arc::new(SegmentMap {
            map,
            published: Arc::clone(&leader.published),
        })
    }

    /// A writable map whose first `published` bytes are final; returns the
    /// shared map and its only writer, positioned at `published`.
    pub(crate) fn writable(map: M, published: usize) -> (Arc<Self>, MapWriter<M>) {
        let published = published.min(map.len());
        let shared = Arc::new(SegmentMap {
            map,
            published: Arc::new(AtomicUsize::new(published)),
        });
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

    /// The published bytes `[offset, offset + len)`, or `None` if any of them
    /// is not published yet.
    #[inline]
    pub(crate) fn read(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.published().min(self.map.len()) {
            return None;
        }
        // SAFETY: `end <= map.len()`, so the range is inside the mapping,
        // which lives as long as `self`; `end <= published`, and published
        // bytes of the file are never written again (see the module docs),
        // through this map or any other, so nothing writes the slice while
        // it lives.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) })
    }

    /// Every published byte, from the start of the file.
    #[inline]
    pub(crate) fn published_bytes(&self) -> &[u8] {
        let end = self.published().min(self.map.len());
        // SAFETY: as in `read`, for the range `[0, end)`.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), end) }
    }

    /// Total mapped length.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Hints that `[offset, offset + len)` will be written soon.
    pub(crate) fn prefault_write(&self, offset: usize, len: usize) {
        self.map.prefault_write(offset, len);
    }

    /// Hints that `[offset, offset + len)` will be read soon (only what is
    /// published is touched).
    pub(crate) fn prefault_read(&self, offset: usize, len: usize) {
        let end = (offset + len).min(self.published());
        if end > offset {
            self.map.prefault_read(offset, end - offset);
        }
    }

    /// Whether `ptr` points into this mapping (for zero-copy checks in tests).
    #[allow(dead_code)]
    pub(crate) fn contains(&self, ptr: *const u8) -> bool {
        let start = self.map.as_ptr() as usize;
        (start..start + self.map.len()).contains(&(ptr as usize))
    }
}

impl<M: StorageMap> MapWriter<M> {
    /// The position of the next append.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left in the map after the write position.
    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.map.len() - self.pos
    }

    /// Copies `parts` one after another to the write position, then moves the
    /// position to `advance_to` bytes past where it started (which leaves
    /// padding untouched: it is zero already). Returns `false`, writing
    /// nothing, when the map is too short.
    #[inline]
    pub(crate) fn append(&mut self, parts: &[&[u8]], advance: usize) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > advance || advance > self.remaining() {
            return false;
        }
        let mut at = self.pos;
        for part in parts {
            // SAFETY: `at + part.len() <= pos + advance <= map.len()`, so the
            // destination is inside the mapping, which is writable (only
            // `writable` creates a `MapWriter`). It lies at or above `pos`,
            // which is at or above `published`, so no reader holds a slice of
            // it, and this is the map's only writer; `part` is our caller's
            // memory, which cannot overlap the map's unpublished bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(part.as_ptr(), self.map.map.as_ptr().add(at), part.len());
            }
            at += part.len();
        }
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
            // SAFETY: `[published, pos)` is inside the mapping (pos <= len),
            // writable, not visible to any reader (above `published`), and
            // this is the map's only writer.
            unsafe {
                std::ptr::write_bytes(self.map.map.as_ptr().add(published), 0, self.pos - published);
            }
            self.pos = published;
        }
    }
}
