//! Error types, one per family of operations, in the style of
//! `std::sync::mpsc` and crossbeam-channel. Every variant says which file and,
//! where it matters, which offset, so a user can act on it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Opening, closing or inspecting a channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another owner (this process or another) holds the directory.
    #[error("channel directory {dir} is locked by another owner (one process and one open channel at a time)")]
    Locked {
        /// The channel directory.
        dir: PathBuf,
    },
    /// A typed handle's message type does not match the channel's schema
    /// registry, or the registry cannot be read or written.
    #[error(transparent)]
    Schema(#[from] crate::registry::SchemaError),
    /// The channel is closed: no new typed sender or receiver can be made.
    #[error("the channel is closed")]
    Closed,
    /// A file or directory operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A file named like a segment is not a segment this build can read.
    #[error("{path}: {reason}; the file was left untouched, move it away or restore it")]
    BadSegment {
        /// The segment file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The segment format version is not one this build understands.
    #[error("{path}: segment format version {version} is not supported by this build (it reads version {supported})")]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// The version in the file.
        version: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A segment between the oldest and the newest is missing, with
    /// messages before it that receivers still need. (Segments before a gap
    /// that every receiver has consumed, left behind by a failed removal,
    /// are deleted by the open instead.)
    #[error(
        "segment {missing} is missing from {dir} (segments {before} and {after} exist); restore it, nothing was changed"
    )]
    MissingSegment {
        /// The channel directory.
        dir: PathBuf,
        /// The id of the missing segment.
        missing: u64,
        /// The segment before the gap.
        before: u64,
        /// The segment after the gap.
        after: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The sender side failed earlier and was poisoned.
    #[error("the channel's writer failed earlier and is poisoned: {0}; reopen the channel to recover")]
    Poisoned(Arc<io::Error>),
}

impl Error {
    /// Whether this is [`Error::Locked`].
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Locked { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// A [`send`](crate::Sender::send) failed. A failed send leaves the channel as
/// it was: its message is never delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel was closed.
    #[error("the channel is closed")]
    Closed,
    /// The message is larger than the configured `max_message_size`.
    #[error("message of {size} bytes exceeds max_message_size of {max} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// There is no space left for a new segment. Nothing was written and the
    /// sender is still usable: the next send tries again, and succeeds once
    /// receivers have consumed enough for segments to be deleted.
    #[error("disk full: cannot allocate segment {path}; free space or let receivers drain and retry")]
    DiskFull {
        /// The segment that could not be allocated.
        path: PathBuf,
    },
    /// A file operation failed; the sender side is now poisoned.
    #[error("I/O error on {path}: {source}; the sender is poisoned, reopen the channel to recover")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// An earlier write or fsync failed, so the sender side refuses further
    /// sends (a failed fsync cannot be retried safely). Receivers still read
    /// everything that was written; reopen the channel to recover.
    #[error("the sender is poisoned by an earlier failure: {0}; reopen the channel to recover")]
    Poisoned(Arc<io::Error>),
    /// A typed send could not encode its value; nothing was written and the
    /// sender is still usable.
    #[error(transparent)]
    Encode(#[from] crate::codec::CodecError),
}

impl SendError {
    /// Whether this is [`SendError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed)
    }
    /// Whether this is [`SendError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SendError::DiskFull { .. })
    }
}

/// A blocking receive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The channel is closed and every message has been received.
    #[error("the channel is closed and drained")]
    Disconnected,
    /// A frame failed its checksum or does not parse. Nothing is skipped: the
    /// receiver stays at this frame.
    #[error("segment {} at offset {offset}: {reason}; the data there is damaged", segment.display())]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad frame in the file.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A compressed segment is damaged or incomplete (its checksum or its
    /// decompression failed). Nothing is skipped.
    #[error("compressed segment {}: {reason}", segment.display())]
    BadCompressedSegment {
        /// The compressed segment file.
        segment: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading a segment failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// A typed receiver could not decode the message at `offset` (another
    /// type, another codec, a raw frame, bytes that are not a `T`). The
    /// receiver has moved past it and stays usable: the caller decides
    /// whether to stop.
    #[error("message {offset}: {source}")]
    Decode {
        /// The message's sequence number (see
        /// [`Receiver::read_offset`](crate::Receiver::read_offset)).
        offset: u64,
        /// What did not match.
        #[source]
        source: crate::typed::DecodeError,
    },
}

impl RecvError {
    /// Whether this is [`RecvError::Decode`]: one message could not be
    /// decoded, the receiver is past it and still usable.
    pub fn is_decode(&self) -> bool {
        matches!(self, RecvError::Decode { .. })
    }
    /// Whether this is [`RecvError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvError::Disconnected)
    }
    /// Whether this is [`RecvError::Corrupted`] or
    /// [`RecvError::BadCompressedSegment`]: damaged data on disk.
    pub fn is_corrupted(&self) -> bool {
        matches!(
            self,
            RecvError::Corrupted { .. } | RecvError::BadCompressedSegment { .. }
        )
    }
}

/// A non-blocking receive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is ready now.
    #[error("no message is ready")]
    Empty,
    /// The channel is closed and every message has been received.
    #[error("the channel is closed and drained")]
    Disconnected,
    /// Reading failed; see [`RecvError`].
    #[error(transparent)]
    Failed(RecvError),
}

impl TryRecvError {
    /// Whether this is [`TryRecvError::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
    /// Whether this is [`TryRecvError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TryRecvError::Disconnected)
    }
}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => TryRecvError::Disconnected,
            other => TryRecvError::Failed(other),
        }
    }
}

/// A receive with a timeout or deadline failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No message arrived in time.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The channel is closed and every message has been received.
    #[error("the channel is closed and drained")]
    Disconnected,
    /// Reading failed; see [`RecvError`].
    #[error(transparent)]
    Failed(RecvError),
}

impl RecvTimeoutError {
    /// Whether this is [`RecvTimeoutError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
    /// Whether this is [`RecvTimeoutError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvTimeoutError::Disconnected)
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
            other => RecvTimeoutError::Failed(other),
        }
    }
}

/// An [`ack`](crate::AckReceiver::ack) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// More messages were acked than have been received and not yet acked.
    #[error("cannot ack {requested} messages: only {unacked} received messages are un-acked")]
    TooMany {
        /// What was asked.
        requested: u64,
        /// How many received messages are not acked yet.
        unacked: u64,
    },
    /// The channel was closed (explicitly, or when its last handle went):
    /// acks can no longer be recorded, so the un-acked messages will be
    /// delivered again after the directory is reopened.
    #[error("cannot ack: the channel is closed; the un-acked messages will be delivered again after a reopen")]
    Closed,
}

impl AckError {
    /// Whether this is [`AckError::TooMany`].
    pub fn is_too_many(&self) -> bool {
        matches!(self, AckError::TooMany { .. })
    }
    /// Whether this is [`AckError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, AckError::Closed)
    }
}
