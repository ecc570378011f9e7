#![doc = include_str!("../../README.md")]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod catalog;
mod channel;
mod compress;
mod compressor;
mod config;
mod error;
mod format;
mod notify;
mod receiver;
mod recovery;
mod segment;
pub mod storage;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod model_tests;

pub use crate::channel::{FileChannel, Sender, Stats};
pub use crate::compress::Compression;
pub use crate::config::{Builder, Durability, MAX_MESSAGE_SIZE_LIMIT, MIN_SEGMENT_SIZE};
pub use crate::error::{AckError, Error, RecvError, RecvTimeoutError, SendError, TryRecvError};
pub use crate::receiver::{AckReceiver, Iter, MsgRef, Receiver, TryIter};
