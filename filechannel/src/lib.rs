#![doc = include_str!("../../README.md")]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

// Segments are mapped whole (up to 1 TiB) and frame offsets within a map are
// `usize` sums of on-disk lengths (up to 4 GiB): both need a 64-bit address
// space, and a 32-bit build would truncate instead of failing.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("filechannel supports 64-bit targets only");

// Lets `#[derive(Message)]`'s `::filechannel::...` paths resolve in this
// crate's own tests.
extern crate self as filechannel;

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
mod registry;
mod segment;
pub mod storage;
mod sync;
mod typed;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod model_tests;
#[cfg(all(test, shuttle))]
mod shuttle_tests;

/// For tests: waits up to 10 s for `done`, which background work (the
/// flusher's next round, GC) makes true, and fails the test after that.
#[cfg(test)]
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

pub use crate::channel::{FileChannel, Sender, Stats};
pub use crate::compress::Compression;
pub use crate::config::{Builder, Durability, MAX_MESSAGE_SIZE_LIMIT, MIN_SEGMENT_SIZE};
pub use crate::error::{AckError, Error, RecvError, RecvTimeoutError, SendError, TryRecvError};
pub use crate::receiver::{AckReceiver, IntoIter, Iter, MsgRef, Receiver, TryIter};
pub use crate::registry::{REGISTRY_FILE, RegisteredSchema, SchemaError};
#[cfg(feature = "rkyv")]
pub use crate::typed::ArchivedRef;
pub use crate::typed::{
    DecodeError, Message, Migrate, RawReceiver, Schema, Shape, TYPED_HEADER_LEN, TypedAckRx, TypedIntoIter, TypedIter,
    TypedRx, TypedTx, UnknownVersion,
};
#[doc(hidden)]
pub use crate::typed::{SchemaPart, combine, name_hash, tag};
/// `#[derive(Message)]`: see the [`Message`] trait.
#[cfg(feature = "derive")]
pub use filechannel_derive::Message;

/// Codecs for typed channels, each behind the cargo feature of the same
/// name (`postcard`, on by default; `bincode`, `json`, `rkyv`), and the
/// traits to write your own. Re-exported from `filechannel-codecs`.
pub mod codec {
    pub use filechannel_codecs::*;
}

/// What `#[derive(Message)]` expands to refers to: not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{Codec, CodecError, Decode};
    pub use crate::typed::{Message, Migrate, Schema, SchemaPart, Shape, combine, name_hash};

    /// `a == b`, in a const context (for the derive's compile-time checks).
    pub const fn str_eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

// The auto traits the docs promise for the handles, checked at build time so
// that a new field cannot take them away unnoticed.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<FileChannel>();
    send_sync::<Sender>();
    send_sync::<Receiver>();
    send_sync::<AckReceiver>();
    send_sync::<TypedTx<String, ()>>();
    send_sync::<TypedRx<String, ()>>();
    send_sync::<TypedAckRx<String, ()>>();
};
