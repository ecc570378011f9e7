//! A 16-byte aligned heap buffer that stands in for a memory map: receivers
//! read decompressed segments from it exactly as from a mapped file.

use super::StorageMap;

/// An owned, zero-initialised, 16-byte aligned buffer.
pub(crate) struct HeapMap {
    /// 16-byte aligned elements give the alignment archived rkyv data may
    /// need, on every target (`u128`, used before, is aligned as the
    /// target says, which is not 16 everywhere).
    buf: Box<[Chunk]>,
    len: usize,
}

/// Sixteen bytes, aligned to sixteen.
#[repr(C, align(16))]
struct Chunk([u8; 16]);

impl std::fmt::Debug for HeapMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapMap").field("len", &self.len).finish()
    }
}

impl HeapMap {
    /// A zeroed buffer of `len` bytes; an error rather than an abort when
    /// the memory cannot be had (the length comes from a file).
    ///
    /// The memory comes from the allocator's zeroed path (`calloc`), which
    /// for large buffers maps fresh pages instead of writing zeros: pages
    /// nobody writes cost no memory. A compressed segment whose header claims
    /// far more bytes than its body holds therefore costs only what the body
    /// decompresses to before the length check refuses it.
    pub(crate) fn zeroed(len: usize) -> std::io::Result<Self> {
        let words = len.div_ceil(16);
        if words == 0 {
            return Ok(Self::empty());
        }
        let oom = || std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("cannot allocate {len} bytes"));
        let layout = std::alloc::Layout::array::<Chunk>(words).map_err(|_| oom())?;
        // SAFETY: the layout has a non-zero size (`words > 0`).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Chunk>();
        if ptr.is_null() {
            return Err(oom());
        }
        // SAFETY: `ptr` was allocated by the global allocator with the layout
        // of `[Chunk; words]`, which is what `Box<[Chunk]>` frees it with; all
        // bytes are zero, a valid `Chunk`; nothing else owns the allocation.
        let buf = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, words)) };
        Ok(HeapMap { buf, len })
    }

    /// An empty buffer (a placeholder map).
    pub(crate) fn empty() -> Self {
        HeapMap {
            buf: Box::new([]),
            len: 0,
        }
    }

    /// The bytes, for filling the buffer before it is shared.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the boxed slice holds `16 * buf.len() >= len` initialised
        // bytes; `u8` has no alignment or validity requirements; the borrow of
        // `self` keeps the buffer alive and unaliased.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

// SAFETY: the boxed slice never moves or reallocates while `self` lives, so
// `as_ptr` is stable; it points to `len` initialised bytes. Writing through
// the pointer is allowed by the `StorageMap` contract only for writable maps,
// which a `HeapMap` never becomes (it is only ever `SegmentMap::sealed`).
unsafe impl StorageMap for HeapMap {
    fn as_ptr(&self) -> *mut u8 {
        self.buf.as_ptr().cast::<u8>().cast_mut()
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every buffer starts on 16 bytes, whatever its length.
    #[test]
    fn buffers_are_16_byte_aligned() -> std::io::Result<()> {
        for len in [1, 15, 16, 17, 4096, 1 << 20] {
            let map = HeapMap::zeroed(len)?;
            assert_eq!(map.as_ptr() as usize % 16, 0, "{len} bytes");
            assert_eq!(map.len(), len);
        }
        Ok(())
    }
}
