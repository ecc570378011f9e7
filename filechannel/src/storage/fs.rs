//! The real backend: `std::fs`, `fallocate(2)` and `memmap2`.

use super::{Storage, StorageFile, StorageMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fs;

/// A file of [`Fs`].
#[derive(Debug)]
pub struct FsFile(File);

/// The lock on a directory of [`Fs`]: an `flock(2)` on its `LOCK` file, held
/// by an open file description that is close-on-exec. The kernel drops it when
/// the owner dies, so a crash leaves no stale lock.
#[derive(Debug)]
pub struct FsLock {
    _file: File,
}

/// A memory map of an [`FsFile`].
#[derive(Debug)]
pub struct FsMap {
    map: memmap2::MmapRaw,
    /// For writable maps, the file, which [`StorageMap::prepare_write`]
    /// writes zeros to (none if the descriptor could not be duplicated: the
    /// writer then faults pages in).
    file: Option<File>,
    /// (device, inode) of the mapped file, for [`MAPPED`].
    key: (u64, u64),
}

/// How many maps this process holds of each file, by (device, inode).
static MAPPED: std::sync::Mutex<std::collections::BTreeMap<(u64, u64), usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn mapped() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<(u64, u64), usize>> {
    MAPPED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for FsMap {
    fn drop(&mut self) {
        let mut m = mapped();
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Name of the lock file in a channel directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

impl Storage for Fs {
    type File = FsFile;
    type Lock = FsLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn try_lock_dir(&self, dir: &Path) -> io::Result<Option<FsLock>> {
        // std opens every file with O_CLOEXEC; `try_lock` is flock(LOCK_EX|LOCK_NB).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FsLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 are not ours; leave them alone.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<FsFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map(FsFile)
    }

    fn open(&self, path: &Path, writable: bool) -> io::Result<FsFile> {
        OpenOptions::new().read(true).write(writable).open(path).map(FsFile)
    }

    fn open_or_create(&self, path: &Path) -> io::Result<FsFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(FsFile)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn disk_usage(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.blocks() * 512)
    }

    fn is_mapped(&self, path: &Path) -> bool {
        // Unknown counts as mapped: the file is then deleted, not recycled.
        std::fs::metadata(path).map_or(true, |m| mapped().contains_key(&(m.dev(), m.ino())))
    }
}

impl FsFile {
    /// `FALLOC_FL_ZERO_RANGE` (blocks kept, cached pages dropped); `false`
    /// where the file system does not offer it (tmpfs, NFS, ...).
    fn zero_range_in_place(&self, offset: u64, len: u64) -> io::Result<bool> {
        use rustix::fs::{FallocateFlags, fallocate};
        if len == 0 {
            return Ok(true);
        }
        match retry_interrupted(|| {
            fallocate(
                &self.0,
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                offset,
                len,
            )
        }) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::INVAL) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl StorageFile for FsFile {
    type Map = FsMap;

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        match retry_interrupted(|| fallocate(&self.0, FallocateFlags::empty(), 0, len)) {
            Ok(()) => Ok(()),
            // A file system without fallocate: fall back to writing zeros,
            // which reserves the blocks on in-place file systems (and fails
            // with ENOSPC here rather than later through the map). On
            // copy-on-write file systems (btrfs, ZFS) no reservation covers
            // later overwrites: a map store there can still meet a full disk
            // as SIGBUS. The no-SIGBUS promise holds on in-place file
            // systems (ext4, XFS); see README.
            Err(rustix::io::Errno::OPNOTSUPP) => {
                let cur = self.len()?;
                if cur < len {
                    write_zeros(&self.0, cur, len - cur)?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.zero_range_in_place(offset, len) {
            Ok(true) => Ok(()),
            Ok(false) => write_zeros(&self.0, offset, len),
            Err(e) => Err(e),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        // Writing zeros instead would dirty the pages again: the opposite of
        // what is asked.
        self.zero_range_in_place(offset, len).map(|_| ())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<bool> {
        use rustix::fs::{FlockOperation, flock};
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        match retry_interrupted(|| flock(&self.0, op)) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
            // A file system without `flock` (some FUSE and network ones):
            // receivers read as if they held the lock, and nothing is
            // recycled (an exclusive lock is never had), so no map can be
            // rewritten; rotations then make new files. (Not `ENOLCK`: out
            // of lock records, or an NFS lock service down, may hit one
            // caller and not the next, so it stays an error.)
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(!exclusive),
            Err(e) => Err(e.into()),
        }
    }

    fn unlock(&self) -> io::Result<()> {
        retry_interrupted(|| rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock)).map_err(Into::into)
    }

    fn map(&self, len: u64, writable: bool) -> io::Result<FsMap> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("segment too large to map"))?;
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        let meta = self.0.metadata()?;
        let key = (meta.dev(), meta.ino());
        let (map, file) = if writable {
            (opts.map_raw(&self.0)?, self.0.try_clone().ok())
        } else {
            (opts.map_raw_read_only(&self.0)?, None)
        };
        *mapped().entry(key).or_insert(0) += 1;
        Ok(FsMap { map, file, key })
    }
}

/// Zeros to write from: in `.bss`, so every page of it is the kernel's
/// shared zero page.
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// Runs `op` again while it fails with `EINTR`. tmpfs's `fallocate` gives
/// up with `EINTR` whenever a signal is pending (`SA_RESTART` does not
/// restart it): a profiler's `SIGPROF` or a `SIGCHLD` handler would
/// otherwise fail a rotation and poison the channel. Both of our
/// `fallocate` calls, and `flock`, can simply run again.
fn retry_interrupted<T>(mut op: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match op() {
            Err(rustix::io::Errno::INTR) => {}
            r => return r,
        }
    }
}

/// Writes `len` zero bytes at `offset`, up to 1 MiB per `pwritev(2)` call
/// (large writes let the kernel fill the page cache with large folios).
/// Allocates nothing: the writer calls it on the send path.
fn write_zeros(file: &File, mut offset: u64, len: u64) -> io::Result<()> {
    let chunk = ZEROS.len() as u64;
    let full = [std::io::IoSlice::new(&ZEROS); 16];
    let end = offset + len;
    while offset < end {
        let left = end - offset;
        let written = if left >= chunk {
            let n = (left / chunk).min(full.len() as u64) as usize;
            rustix::io::pwritev(file, &full[..n], offset)
        } else {
            rustix::io::pwrite(file, &ZEROS[..left as usize], offset)
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => offset += n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// SAFETY: `MmapRaw` keeps its region mapped, at one address, until dropped.
// `map` maps only bytes that exist in the file (the caller passes at most the
// file's length, and segment files are never truncated while mapped), so
// reading the region never touches memory outside the file (a disk read
// error on a page is still SIGBUS: inherent to memory maps); the region is
// writable exactly when mapped with `writable`.
unsafe impl StorageMap for FsMap {
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn prefault_write(&self, offset: usize, len: usize) {
        self.populate(offset, len, rustix::mm::Advice::LinuxPopulateWrite);
    }

    fn prefault_read(&self, offset: usize, len: usize) {
        self.populate(offset, len, rustix::mm::Advice::LinuxPopulateRead);
    }

    unsafe fn prepare_write(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.map.len());
        if let Some(file) = &self.file
            && end > offset
        {
            // A failed fill is harmless (the range held zeros or stale bytes
            // and still does, or zeros in part): the writer then takes page
            // faults instead, as without this step.
            let _ = write_zeros(file, offset as u64, (end - offset) as u64);
        }
    }
}

impl FsMap {
    /// Faults in the pages of `[offset, offset + len)` with `advice`
    /// (MADV_POPULATE_READ or _WRITE).
    fn populate(&self, offset: usize, len: usize, advice: rustix::mm::Advice) {
        let page = rustix::param::page_size();
        let start = offset / page * page;
        let end = (offset + len).min(self.map.len());
        if start >= end {
            return;
        }
        // SAFETY: the range lies inside our own mapping, and the populate
        // advices only fault pages in (as if read or written) without
        // changing their contents. Kernels before 5.14 answer EINVAL, and a
        // read-only map refuses POPULATE_WRITE: the hint is then not taken.
        let _ = unsafe { rustix::mm::madvise(self.map.as_mut_ptr().add(start).cast(), end - start, advice) };
    }
}

#[cfg(all(test, not(shuttle), not(loom)))]
mod tests {
    use super::*;

    /// A `flock` taken through a descriptor lasts as long as a map made
    /// through it, after the descriptor is closed: what receivers rely on.
    #[test]
    fn a_lock_lasts_as_long_as_a_map_made_under_it() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        Fs.create_new(&path)?.allocate(4096)?;
        let reader = Fs.open(&path, false)?;
        assert!(reader.try_lock(false)?);
        let map = reader.map(4096, false)?;
        drop(reader);
        let recycler = Fs.open(&path, true)?;
        assert!(!recycler.try_lock(true)?, "the shared lock went with the descriptor");
        assert!(
            Fs.open(&path, false)?.try_lock(false)?,
            "shared locks exclude each other"
        );
        drop(map);
        assert!(recycler.try_lock(true)?, "the shared lock outlived the map");
        assert!(!Fs.open(&path, false)?.try_lock(false)?);
        recycler.unlock()?;
        assert!(Fs.open(&path, false)?.try_lock(false)?);
        Ok(())
    }

    #[test]
    fn an_interrupted_call_is_run_again() {
        let mut calls = 0;
        let r = retry_interrupted(|| {
            calls += 1;
            if calls < 3 {
                Err(rustix::io::Errno::INTR)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r, Ok(3));
        let mut calls = 0;
        let r: rustix::io::Result<()> = retry_interrupted(|| {
            calls += 1;
            Err(rustix::io::Errno::NOSPC)
        });
        assert_eq!((r, calls), (Err(rustix::io::Errno::NOSPC), 1));
    }

    /// `write_zeros` zeroes exactly the range asked for, whatever its length
    /// against its 64 KiB buffer and 1 MiB calls.
    #[test]
    fn write_zeros_covers_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let file = Fs.create_new(&dir.path().join("f")).unwrap();
        let chunk = ZEROS.len() as u64;
        for (offset, len) in [
            (0, 0),
            (5, 1),
            (7, chunk - 1),
            (0, chunk),
            (3, chunk + 1),
            (1, (16 * chunk) + 3),
            (4096, 3 << 20),
        ] {
            let total = (offset + len + 10) as usize;
            file.write_all_at(&vec![0xA5; total], 0).unwrap();
            write_zeros(&file.0, offset, len).unwrap();
            let mut back = vec![0u8; total];
            file.read_exact_at(&mut back, 0).unwrap();
            let (o, l) = (offset as usize, len as usize);
            assert!(back[..o].iter().all(|&b| b == 0xA5), "before {offset}+{len}");
            assert!(back[o..o + l].iter().all(|&b| b == 0), "inside {offset}+{len}");
            assert!(back[o + l..].iter().all(|&b| b == 0xA5), "after {offset}+{len}");
        }
    }
}
