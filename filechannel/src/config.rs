//! Channel configuration: a by-value builder that validates.

use crate::compress::Compression;
use crate::error::Error;
use crate::storage::{Fs, Storage};
use crate::{FileChannel, format};
use std::path::Path;
use std::time::Duration;

/// What a returned [`send`](crate::Sender::send) promises.
///
/// Senders write into a shared memory map of the segment file, so in every
/// mode a sent message is in the OS page cache once `send` returns. The
/// modes differ in when it is finished (checksummed; only finished frames
/// survive a crash of the process), how fast blocked receivers are woken and
/// whether the data is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// The default. `send` returns as soon as the message is in the segment;
    /// a message of up to 128 bytes leaves its CRC to be filled in behind
    /// the sender (by a background flusher within `flush_interval`, by
    /// [`Sender::flush`](crate::Sender::flush), or by a receiver that has
    /// read everything else), which is what keeps small sends fast. Any
    /// receiver sees the message once `send` has returned; one blocked in
    /// `recv` is woken within `flush_interval`. A process crash keeps
    /// everything flushed (by `flush`, `sync`, `close` or the flusher): at
    /// most about the last `flush_interval` of small sends is lost with the
    /// process (plus one step of the flusher's other work, a 1 MiB zero-fill
    /// or read-ahead, while it is busy). Not a power loss unless followed by
    /// [`Sender::sync`](crate::Sender::sync).
    #[default]
    Buffered,
    /// Every message is finished (its CRC computed) and handed to the OS
    /// before `send` returns, which also wakes blocked receivers: survives a
    /// process crash; not a power loss.
    Flush,
    /// Every `send` is fsynced (file, and directory after a new segment)
    /// before it returns: survives power loss. Concurrent senders share
    /// fsyncs (group commit).
    Sync,
}

/// Builds a [`FileChannel`] with non-default settings.
///
/// ```
/// use filechannel::{Durability, FileChannel};
/// use std::time::Duration;
/// let dir = tempfile::tempdir()?;
/// let ch = FileChannel::builder()
///     .segment_size(1 << 20)
///     .flush_interval(Duration::from_millis(1))
///     .durability(Durability::Flush)
///     .max_message_size(64 << 10)
///     .open(dir.path())?;
/// ch.tx().send(b"configured")?;
/// assert_eq!(ch.rx().recv()?, b"configured");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct Builder {
    pub(crate) segment_size: u64,
    pub(crate) flush_interval: Duration,
    pub(crate) durability: Durability,
    pub(crate) max_message_size: usize,
    pub(crate) compression: Compression,
    pub(crate) compression_level: Option<i32>,
}

/// Smallest accepted `segment_size`.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest accepted `max_message_size` (a frame length is a `u32`).
pub const MAX_MESSAGE_SIZE_LIMIT: usize = (u32::MAX as usize) - 4096;
/// Largest accepted `segment_size`.
const MAX_SEGMENT_SIZE: u64 = 1 << 40;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            segment_size: 64 << 20,
            flush_interval: Duration::from_micros(100),
            durability: Durability::Buffered,
            max_message_size: 16 << 20,
            compression: Compression::Snappy,
            compression_level: None,
        }
    }
}

impl Builder {
    /// Starts from the defaults: `segment_size` 64 MiB, `flush_interval`
    /// 100 µs, `durability` [`Durability::Buffered`], `max_message_size`
    /// 16 MiB, `compression` [`Compression::Snappy`] at the method's default
    /// level.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size at which the active segment is sealed and a new one started
    /// (default 64 MiB, at least 4 KiB). Each segment's space is reserved on
    /// disk when it is created. A message larger than this goes into a
    /// segment sized to hold it (at least its frame, rounded up to 4 KiB),
    /// which other messages may share.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// In [`Durability::Buffered`] mode, the longest a send waits to be
    /// finished and handed to the OS, and a receiver blocked in `recv` to be
    /// woken after it (default 100 µs, more than zero).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// What a returned `send` promises (default [`Durability::Buffered`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Largest accepted message in bytes (default 16 MiB); larger sends fail
    /// with [`SendError::TooLarge`](crate::SendError::TooLarge).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How sealed segments are compressed, in the background (default
    /// [`Compression::Snappy`]). The segment right behind the writer, which
    /// receivers most likely still read, stays plain, and so do the segments
    /// deleted next: those every receiver has passed, and the oldest one
    /// still needed while a receiver is reading it.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Level for [`Compression::Gzip`] (0–9, default 6) or
    /// [`Compression::Zstd`] (1–22, default 3); ignored by the others.
    pub fn compression_level(mut self, level: i32) -> Self {
        self.compression_level = Some(level);
        self
    }

    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.segment_size < MIN_SEGMENT_SIZE {
            return Err(Error::Config(format!(
                "segment_size {} is below the minimum of {MIN_SEGMENT_SIZE} bytes",
                self.segment_size
            )));
        }
        if self.segment_size > MAX_SEGMENT_SIZE {
            return Err(Error::Config(format!(
                "segment_size {} is above 1 TiB",
                self.segment_size
            )));
        }
        if self.max_message_size > MAX_MESSAGE_SIZE_LIMIT {
            return Err(Error::Config(format!(
                "max_message_size {} is above the limit of {MAX_MESSAGE_SIZE_LIMIT} bytes",
                self.max_message_size
            )));
        }
        if let Some(level) = self.compression_level {
            self.compression.check_level(level).map_err(Error::Config)?;
        }
        if self.flush_interval.is_zero() {
            return Err(Error::Config("flush_interval must be more than zero".into()));
        }
        Ok(())
    }

    /// Bytes to reserve for a segment whose first message has `first_len`
    /// bytes: room for the header, that frame and the closing seal frame.
    pub(crate) fn segment_capacity(&self, first_len: u64) -> u64 {
        capacity(self.segment_size, first_len)
    }

    /// The largest segment any accepted settings can make: what a segment
    /// written under other settings (a larger `segment_size`, a larger
    /// `max_message_size`) may hold.
    pub(crate) fn largest_segment_capacity() -> u64 {
        capacity(MAX_SEGMENT_SIZE, MAX_MESSAGE_SIZE_LIMIT as u64)
    }

    /// Opens (creating if missing) the channel in `dir` with these settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad setting, [`Error::Locked`] if another owner
    /// holds the directory, and an error naming the file for anything on disk
    /// that cannot be recovered.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<FileChannel, Error> {
        self.open_with(Fs, dir)
    }

    /// Opens the channel on another storage backend (tests use an in-memory,
    /// crash-simulating one).
    #[doc(hidden)]
    pub fn open_with<S: Storage>(self, storage: S, dir: impl AsRef<Path>) -> Result<FileChannel<S>, Error> {
        self.validate()?;
        FileChannel::open_inner(storage, dir.as_ref(), self)
    }
}

/// Bytes to reserve for a segment of `segment_size` whose first message has
/// `first_len` bytes.
fn capacity(segment_size: u64, first_len: u64) -> u64 {
    let need = format::SEGMENT_HEADER_LEN + format::frame_len(first_len) + format::FRAME_HEADER_LEN;
    need.max(segment_size).next_multiple_of(4096)
}
