//! The file layer. Every file operation of the channel goes through the
//! [`Storage`] trait, so that a test backend can record operations and build
//! crash images; the real backend, [`Fs`], is plain `std::fs` plus `memmap2`.
//! The channel is generic over the backend (static dispatch), so the seam costs
//! nothing at run time.
//!
//! All `unsafe` code of the crate lives below this module, the memory maps,
//! except the unchecked rkyv access behind `TypedRx::recv_ref_unchecked`
//! (an `unsafe` API by request) in `typed.rs`.

mod fs;
mod heap;
mod map;
#[cfg(any(test, feature = "testing"))]
pub mod sim;

pub(crate) use fs::LOCK_FILE;
pub use fs::{Fs, FsFile, FsLock, FsMap};
pub(crate) use heap::HeapMap;
pub(crate) use map::{CACHE_LINE, MapWriter, SegmentMap};

use std::io;
use std::path::Path;

/// A file system the channel can live in.
///
/// Paths are always inside the channel directory. Implementations must be
/// cheap to share between threads.
pub trait Storage: Send + Sync + 'static {
    /// An open file.
    type File: StorageFile;
    /// The exclusive lock on a directory; dropping it releases the lock.
    type Lock: Send + Sync + 'static;

    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `dir` without waiting; `Ok(None)` when
    /// another owner holds it.
    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<Self::Lock>>;
    /// The names of the entries in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new file for reading and writing; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file, for reading and, with `writable`, writing.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Self::File>;
    /// Creates the file if missing and opens it for reading and writing.
    fn open_or_create(&self, path: &Path) -> io::Result<Self::File>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes the file really occupies on disk.
    fn disk_usage(&self, path: &Path) -> io::Result<u64>;
    /// Whether this process holds a memory map of the file at `path` (a
    /// mapped file is never recycled: rewriting it would change bytes under
    /// a reader).
    fn is_mapped(&self, _path: &Path) -> bool {
        false
    }
}

/// An open file of a [`Storage`].
#[allow(clippy::len_without_is_empty)] // a file length, not a collection
pub trait StorageFile: Send + Sync + 'static {
    /// A memory map of this file.
    type Map: StorageMap;

    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Reserves disk blocks for the first `len` bytes and makes the file at
    /// least that long, so that later writes through a map cannot meet a full
    /// disk (which would be a SIGBUS, not an error). Where the file system
    /// has no `fallocate`, the disk backend writes zeros past the current
    /// length only: holes below it (a recycled spare that was sparse) stay
    /// holes there.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Sets `len` bytes from `offset` to zero, keeping them allocated.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Gives back the cached pages of `len` bytes from `offset`, which hold
    /// nothing the caller needs, so that no fsync writes them out: they
    /// read as zeros afterwards and stay allocated. Where the backend cannot
    /// do that without writing, it does nothing (the bytes are unchanged).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }
    /// Makes the file's data (written by any path, maps included) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Takes an advisory lock on the file without waiting (`flock`: shared,
    /// or with `exclusive` exclusive), held through this handle and every
    /// map made from it until [`unlock`](Self::unlock) or until the last of
    /// them goes, by any process. `Ok(false)` when a conflicting lock is
    /// held. Receivers hold a shared lock on each sealed segment they map;
    /// a segment file is recycled only under an exclusive one (see
    /// `DESIGN.md` §3). The default takes every lock at once.
    fn try_lock(&self, _exclusive: bool) -> io::Result<bool> {
        Ok(true)
    }
    /// Releases the lock taken through this handle (for every map made from
    /// it too).
    fn unlock(&self) -> io::Result<()> {
        Ok(())
    }
    /// Maps the first `len` bytes, which must exist; writable maps are shared
    /// with the file.
    fn map(&self, len: u64, writable: bool) -> io::Result<Self::Map>;
}

/// A memory map: a fixed region of bytes that stays valid while the value
/// lives (also after the file is unlinked).
///
/// # Safety
/// `as_ptr()` must point to `len()` bytes that stay valid, and at the same
/// address, until the value is dropped; the region must be readable, and
/// writable when the map was created writable.
#[allow(clippy::len_without_is_empty)] // a region length, not a collection
pub unsafe trait StorageMap: Send + Sync + 'static {
    /// Start of the region: page-aligned for a mapped file, 16-byte
    /// aligned for a decompressed copy (`HeapMap`).
    fn as_ptr(&self) -> *mut u8;
    /// Length of the region in bytes.
    fn len(&self) -> usize;
    /// A hint that `[offset, offset + len)` will be written soon; the backend
    /// may fault the pages in ahead of time. Never changes the bytes.
    fn prefault_write(&self, _offset: usize, _len: usize) {}
    /// Gets `[offset, offset + len)` ready to be written soon. Unlike
    /// [`prefault_write`](Self::prefault_write) (the default), a backend may
    /// rewrite the range with zeros through the file: the kernel fills the
    /// page cache several times faster from `write(2)` than one page fault at
    /// a time, and the writer's faults on such pages are cheap.
    ///
    /// # Safety
    /// The range must lie in the map and be free: nothing reads it, and
    /// nothing writes it, through any map or file, until this returns; and
    /// its bytes must not matter (they may become zero).
    unsafe fn prepare_write(&self, offset: usize, len: usize) {
        self.prefault_write(offset, len);
    }
    /// A hint that `[offset, offset + len)` will be read soon; the backend may
    /// map the (cached) pages in ahead of time.
    fn prefault_read(&self, _offset: usize, _len: usize) {}
}

/// Removes `path`; `Ok(false)` if it was not there (somebody else, or an
/// earlier attempt, removed it).
pub(crate) fn remove_if_present<S: Storage>(storage: &S, path: &Path) -> io::Result<bool> {
    match storage.remove(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
