//! Typed channels: values of a [`Message`] type, encoded by a codec, in
//! frames that say which type, version and codec wrote them.
//!
//! A typed frame is an ordinary frame with the `TYPED` flag whose payload
//! starts with a 16-byte header (see `DESIGN.md`, "Typed frames"):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | tag: a 64-bit hash of the type's name hash, its version and the codec's id (LE) |
//! | 8..12 | the type's version (LE) |
//! | 12..16 | the codec's id (LE) |
//! | 16.. | the codec's encoding of the value |
//!
//! The payload of every frame starts at a 16-byte boundary of the segment,
//! so the body does too: rkyv archives are read in place.

use crate::channel::Sender;
use crate::codec::{Codec, CodecError, Decode, Encode};
use crate::error::{Error, RecvError, RecvTimeoutError, SendError, TryRecvError};
use crate::format::FLAG_TYPED;
use crate::receiver::{AckReceiver, MsgRef, Ready, Receiver, Wait};
use crate::storage::{Fs, Storage};
use crate::{AckError, FileChannel};
use std::borrow::Cow;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Length of the typed header in front of a typed frame's body.
pub const TYPED_HEADER_LEN: usize = 16;

/// A type that may travel on a typed channel: a stable name and a version.
///
/// Derive it with `#[derive(filechannel::Message)]` (feature `derive`):
/// without attributes the name is the type's identifier and the version 1;
/// `#[message(name = "orders.Order", version = 2)]` sets them, and
/// `previous = OrderV1` names the type of the version before, whose frames
/// a receiver migrates with `From` (see [`Migrate`]). The name and version,
/// hashed with the codec's id, tag every frame, so a receiver of another
/// type, a newer version or another codec gets a typed error instead of
/// garbage. The derive also fills in [`SCHEMA`](Message::SCHEMA), the shape
/// the channel's schema registry checks.
///
/// `Message` says nothing about encoding: the codec bounds (`serde`,
/// `rkyv`) sit on the send and receive methods. The crate implements it for
/// the integers, `bool`, `char`, floats, `()`, `String`, and for `Vec<T>`,
/// `Option<T>`, `Box<T>`, maps and tuples (up to 8) of `Message` types;
/// their name hash folds in the parts', in order, so `(u32, String)` and
/// `(String, u32)` differ.
///
/// # Implementing it by hand
///
/// Only `NAME` and `VERSION` are required: `NAME_HASH` defaults to a hash
/// of `NAME`, and `SCHEMA` to `None`, which means no schema registry check
/// (the type is neither registered nor checked). To be received, the type
/// also needs [`Migrate`] for the codec. With no older versions to read,
/// that is one line, `impl<C: Codec> Migrate<C> for T {}`: an older frame
/// is then [`DecodeError::OlderVersion`]. A hand-written type has no
/// [`Shape`], so as a field of a derived type it needs
/// `#[message(opaque)]` (or an `impl Shape` of its own).
///
/// ```
/// use filechannel::codec::Codec;
/// use filechannel::{Message, Migrate};
///
/// #[derive(Message)]
/// #[message(name = "orders.Order", version = 2)]
/// struct Order { id: u64 }
///
/// assert_eq!(Order::NAME, "orders.Order");
/// assert_eq!(Order::VERSION, 2);
/// assert!(Order::SCHEMA.is_some());
/// assert_ne!(<(u32, String)>::NAME_HASH, <(String, u32)>::NAME_HASH);
///
/// // By hand: a name, a version and the one-line `Migrate`.
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Ping(u64);
///
/// impl Message for Ping {
///     const NAME: &'static str = "net.Ping";
///     const VERSION: u32 = 1;
/// }
/// impl<C: Codec> Migrate<C> for Ping {}
///
/// assert!(Ping::SCHEMA.is_none()); // no schema registry check
/// ```
pub trait Message {
    /// The type's stable name: keep it when renaming the Rust type.
    const NAME: &'static str;
    /// The schema version, 1 or more. Raise it when the encoding changes.
    const VERSION: u32;
    /// A 64-bit identity of the name (for composite types: of the name and
    /// every part's name and version). Written into frames through the tag;
    /// never change it for a type that has frames on disk.
    const NAME_HASH: u64 = name_hash(Self::NAME);

    /// The shape's fingerprint and description, checked against the
    /// channel's schema registry when a typed sender or receiver is made.
    /// `#[derive(Message)]` fills it in; `None` (the default, and for the
    /// std types) skips the check.
    const SCHEMA: Option<Schema> = None;

    /// The name for error messages (`Vec<orders.Order>` for composites).
    fn type_name() -> Cow<'static, str> {
        Cow::Borrowed(Self::NAME)
    }

    /// Calls `f` with every part of this type that has a
    /// [`SCHEMA`](Self::SCHEMA): the type itself, and for the std
    /// composites (`Vec<T>`, `Option<T>`, `Box<T>`, maps, tuples) their
    /// parts, recursively. A typed sender or receiver checks each against
    /// the schema registry, so `Vec<Order>` is checked as `Order` is.
    #[doc(hidden)]
    fn for_each_schema(f: &mut dyn FnMut(SchemaPart)) {
        if let Some(schema) = Self::SCHEMA {
            f(SchemaPart {
                name: Self::NAME,
                name_hash: Self::NAME_HASH,
                version: Self::VERSION,
                schema,
            });
        }
    }

    /// Calls `f` with the schema of every older version this type reads
    /// frames of (`#[derive(Message)]`'s `previous` chain, newest first). A
    /// typed receiver checks each against the schema registry where that
    /// (name, version) is recorded, so an older type changed after its
    /// frames were written is refused rather than decoded into the wrong
    /// fields. They are never recorded: this type does not write them.
    #[doc(hidden)]
    fn for_each_previous_schema(f: &mut dyn FnMut(SchemaPart)) {
        let _ = f;
    }
}

/// A part of a message type with a registered shape
/// ([`Message::for_each_schema`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct SchemaPart {
    /// The part's [`Message::NAME`].
    pub name: &'static str,
    /// Its [`Message::NAME_HASH`].
    pub name_hash: u64,
    /// Its [`Message::VERSION`].
    pub version: u32,
    /// Its [`Message::SCHEMA`].
    pub schema: Schema,
}

/// A message type's shape, as recorded in the channel's schema registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// A 64-bit fingerprint of the shape ([`Shape::FINGERPRINT`]).
    pub fingerprint: u64,
    /// A readable description: field names and type tokens, e.g.
    /// `struct{id:u64,note:Option<String>}`.
    pub shape: &'static str,
}

/// A type whose shape has a fingerprint: field names, their order, their
/// type tokens and, recursively, the fingerprints of the field types, so a
/// change deep inside a nested struct changes it. Implemented for the std
/// types and by `#[derive(Message)]`; a field of another type needs
/// `#[message(opaque)]` (its tokens count, not its insides).
///
/// Fingerprints are stored on disk (the schema registry): their
/// computation never changes.
pub trait Shape {
    /// The fingerprint.
    const FINGERPRINT: u64;
}

/// Reading older versions of a [`Message`] type: `decode_older` decodes a
/// frame of the same name at an older `version` and migrates it up to
/// `Self`. `#[derive(Message)]` implements it from the `previous = Type`
/// chain (decode the previous type, convert with `From`, recursively).
///
/// A hand-written [`Message`] implements it with an empty body (no older
/// versions), for every codec:
///
/// ```
/// use filechannel::codec::Codec;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Ping(u64);
///
/// impl filechannel::Message for Ping {
///     const NAME: &'static str = "Ping";
///     const VERSION: u32 = 1;
/// }
/// impl<C: Codec> filechannel::Migrate<C> for Ping {}
/// ```
pub trait Migrate<C: Codec>: Message + Sized {
    /// Decodes `body`, written as version `version` of this type's name
    /// (older than [`Message::VERSION`]) with codec `C`, and migrates it.
    /// `None` when no version of the chain is `version`.
    fn decode_older(version: u32, body: &[u8]) -> Option<Result<Self, CodecError>> {
        let _ = (version, body);
        None
    }
}

/// What a typed receiver does with a message written by a newer version of
/// its type (an old reader during a rolling deploy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnknownVersion {
    /// [`DecodeError::NewerVersion`] (the default).
    #[default]
    Error,
    /// Skip it, counting it in [`TypedRx::skipped`].
    Skip,
    /// [`DecodeError::NewerVersionRaw`], which carries the body.
    Raw,
}

/// Why a typed receiver could not decode a message. Carried by
/// [`RecvError::Decode`] with the message's offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A raw [`Sender::send`] wrote this message, not a typed sender.
    #[error("a raw (untyped) message where a {expected} was expected")]
    NotTyped {
        /// The receiver's type.
        expected: Cow<'static, str>,
    },
    /// A typed frame too short to hold its header (damaged or forged).
    #[error("a typed message of {len} bytes, shorter than its {TYPED_HEADER_LEN}-byte header")]
    Truncated {
        /// The payload's length.
        len: usize,
    },
    /// Another codec wrote this message.
    #[error("written with codec {}, but this receiver decodes {expected}", codec_name(*found))]
    WrongCodec {
        /// The receiver's codec.
        expected: &'static str,
        /// The writer's codec id.
        found: u32,
    },
    /// Another type wrote this message.
    #[error("expected a {expected}, found another type (tag {found:#018x})")]
    WrongType {
        /// The receiver's type.
        expected: Cow<'static, str>,
        /// The frame's tag.
        found: u64,
    },
    /// A newer version of the type wrote this message.
    #[error("{name} version {found} is newer than this build supports (version {supported})")]
    NewerVersion {
        /// The type's name.
        name: &'static str,
        /// The frame's version.
        found: u32,
        /// The receiver's version.
        supported: u32,
    },
    /// A newer version of the type wrote this message, and the receiver's
    /// policy is [`UnknownVersion::Raw`]: here are its bytes.
    #[error("{name} version {found} is newer than this build supports; its {} bytes are attached", body.len())]
    NewerVersionRaw {
        /// The type's name.
        name: &'static str,
        /// The frame's version.
        found: u32,
        /// The codec's encoding of the value (after the typed header).
        body: Vec<u8>,
    },
    /// An older version of the type wrote this message, and the type has no
    /// migration from it.
    #[error("{name} version {found} is older than version {supported}, and there is no migration from it")]
    OlderVersion {
        /// The type's name.
        name: &'static str,
        /// The frame's version.
        found: u32,
        /// The receiver's version.
        supported: u32,
    },
    /// The header matched, but the codec could not decode the body.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The receiver was made before any sender of its type, and the shape a
    /// sender registered since differs from the receiver's
    /// ([`SchemaError::Changed`](crate::SchemaError::Changed)), or from an
    /// older type of its `previous` chain
    /// ([`SchemaError::PreviousChanged`](crate::SchemaError::PreviousChanged)).
    #[error(transparent)]
    Schema(crate::SchemaError),
}

fn codec_name(id: u32) -> Cow<'static, str> {
    match id {
        1 => "postcard".into(),
        2 => "bincode".into(),
        3 => "json".into(),
        4 => "rkyv".into(),
        other => format!("#{other}").into(),
    }
}

// ---- hashing: part of the on-disk format, never change ----

/// FNV-1a over the name's bytes: the default [`Message::NAME_HASH`].
pub const fn name_hash(name: &str) -> u64 {
    let b = name.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// Folds `x` into `h`; the order of folds matters.
#[doc(hidden)]
pub const fn combine(h: u64, x: u64) -> u64 {
    // splitmix64's finaliser over a multiply-xor step.
    let mut z = h.wrapping_mul(0x0000_0100_0000_01b3) ^ x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The tag of frames of a type with `name_hash` at `version`, written with
/// codec `codec_id`.
pub const fn tag(name_hash: u64, version: u32, codec_id: u32) -> u64 {
    combine(
        combine(combine(0x6663_6861_6e74_6167, name_hash), version as u64),
        codec_id as u64,
    )
}

/// The typed header of `T` frames written with `C`.
fn typed_header<T: Message + ?Sized, C: Codec>() -> [u8; TYPED_HEADER_LEN] {
    header_bytes(T::NAME_HASH, T::VERSION, C::ID)
}

/// The typed header for a name hash, version and codec id.
pub(crate) fn header_bytes(name_hash: u64, version: u32, codec_id: u32) -> [u8; TYPED_HEADER_LEN] {
    let mut h = [0u8; TYPED_HEADER_LEN];
    h[0..8].copy_from_slice(&tag(name_hash, version, codec_id).to_le_bytes());
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..16].copy_from_slice(&codec_id.to_le_bytes());
    h
}

/// Checks a message's typed header against `T` and `C` and returns its body.
fn typed_body<'a, T: Message, C: Codec>(m: &MsgRef<'a>) -> Result<&'a [u8], DecodeError> {
    let bytes = m.bytes();
    if !m.is_typed() {
        return Err(DecodeError::NotTyped {
            expected: T::type_name(),
        });
    }
    let (Some(head), Some(body)) = (bytes.get(..TYPED_HEADER_LEN), bytes.get(TYPED_HEADER_LEN..)) else {
        return Err(DecodeError::Truncated { len: bytes.len() });
    };
    let found = crate::format::u64_at(head, 0);
    if found == tag(T::NAME_HASH, T::VERSION, C::ID) {
        return Ok(body);
    }
    let version = crate::format::u32_at(head, 8);
    let codec = crate::format::u32_at(head, 12);
    if codec != C::ID {
        return Err(DecodeError::WrongCodec {
            expected: C::NAME,
            found: codec,
        });
    }
    if found == tag(T::NAME_HASH, version, C::ID) {
        return Err(if version > T::VERSION {
            DecodeError::NewerVersion {
                name: T::NAME,
                found: version,
                supported: T::VERSION,
            }
        } else {
            DecodeError::OlderVersion {
                name: T::NAME,
                found: version,
                supported: T::VERSION,
            }
        });
    }
    Err(DecodeError::WrongType {
        expected: T::type_name(),
        found,
    })
}

/// Decodes a message as a `T`, migrating an older version through
/// [`Migrate`].
fn decode<T: Migrate<C>, C: Decode<T>>(m: MsgRef<'_>) -> Result<T, DecodeError> {
    match typed_body::<T, C>(&m) {
        Ok(body) => C::decode(body).map_err(DecodeError::Codec),
        Err(DecodeError::OlderVersion { found, name, supported }) => {
            match T::decode_older(found, m.bytes().get(TYPED_HEADER_LEN..).unwrap_or_default()) {
                Some(r) => r.map_err(DecodeError::Codec),
                None => Err(DecodeError::OlderVersion { name, found, supported }),
            }
        }
        Err(e) => Err(e),
    }
}

// ---- sending ----

thread_local! {
    /// One encoding buffer per thread, reused by every typed send.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A buffer kept after a send is at most this large; a larger one (from an
/// unusually large message) is freed.
const SCRATCH_KEEP: usize = 1 << 20;

fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    // Take the thread's buffer out (a move, not a copy) so that a re-entrant
    // send from inside an encoder, or one during thread teardown, simply
    // gets a fresh buffer.
    let mut buf = SCRATCH
        .try_with(|c| c.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)).ok())
        .ok()
        .flatten()
        .unwrap_or_default();
    let r = f(&mut buf);
    if buf.capacity() <= SCRATCH_KEEP {
        let _ = SCRATCH.try_with(|c| {
            if let Ok(mut b) = c.try_borrow_mut() {
                *b = buf;
            }
        });
    }
    r
}

/// The sending side of a typed channel: `send(&T)` encodes with codec `C`.
/// `Clone + Send + Sync` like [`Sender`], whose methods it mirrors.
///
/// ```
/// #[derive(filechannel::Message, serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Reading { sensor: u32, celsius: f32 }
///
/// let dir = tempfile::tempdir()?;
/// let ch = filechannel::FileChannel::open(dir.path())?;
/// let tx = ch.typed_tx::<Reading, filechannel::codec::Postcard>()?;
/// let mut rx = ch.typed_rx::<Reading, filechannel::codec::Postcard>()?;
/// tx.send(&Reading { sensor: 7, celsius: 21.5 })?;
/// assert_eq!(rx.recv()?, Reading { sensor: 7, celsius: 21.5 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedTx<T: ?Sized, C, S: Storage = Fs> {
    tx: Sender<S>,
    _marker: PhantomData<fn(&T) -> C>,
}

impl<T: Message + ?Sized, C: Codec, S: Storage> TypedTx<T, C, S> {
    /// Wraps a byte sender, as [`FileChannel::typed_tx`] does: `T`'s shape
    /// is checked against the channel's schema registry, and recorded there
    /// if its (name, version) is new.
    ///
    /// # Errors
    /// As [`FileChannel::typed_tx`].
    pub fn new(tx: Sender<S>) -> Result<Self, Error> {
        check_schema::<T, S>(tx.shared(), true)?;
        Ok(TypedTx {
            tx,
            _marker: PhantomData,
        })
    }

    /// Encodes `value` with `C` and sends it as one typed message. The
    /// encoding goes into a buffer reused per thread: no allocation once
    /// warm. `max_message_size` counts the 16-byte typed header too.
    ///
    /// # Errors
    /// [`SendError::Encode`] if `C` cannot encode the value (nothing is
    /// written); otherwise as [`Sender::send`].
    pub fn send(&self, value: &T) -> Result<(), SendError>
    where
        C: Encode<T>,
    {
        with_scratch(|buf| {
            buf.clear();
            buf.extend_from_slice(&typed_header::<T, C>());
            C::encode(value, buf)?;
            self.tx.send_frame(buf, FLAG_TYPED)
        })
    }

    /// As [`Sender::flush`].
    ///
    /// # Errors
    /// As [`Sender::flush`].
    pub fn flush(&self) -> Result<(), SendError> {
        self.tx.flush()
    }

    /// As [`Sender::sync`].
    ///
    /// # Errors
    /// As [`Sender::sync`].
    pub fn sync(&self) -> Result<(), SendError> {
        self.tx.sync()
    }

    /// Whether the channel is closed.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The byte sender underneath.
    pub fn sender(&self) -> &Sender<S> {
        &self.tx
    }

    /// Unwraps the byte sender.
    pub fn into_inner(self) -> Sender<S> {
        self.tx
    }
}

impl<T: ?Sized, C, S: Storage> Clone for TypedTx<T, C, S> {
    fn clone(&self) -> Self {
        TypedTx {
            tx: self.tx.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T: ?Sized, C, S: Storage> std::fmt::Debug for TypedTx<T, C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedTx")
            .field("type", &std::any::type_name::<T>())
            .field("codec", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

// ---- receiving ----

mod sealed {
    pub trait Sealed {}
}

/// A byte receiver a [`TypedRx`] can sit on: [`Receiver`] or
/// [`AckReceiver`]. Sealed.
pub trait RawReceiver: sealed::Sealed {
    /// The storage backend.
    type Storage: Storage;
    /// The receiver underneath.
    fn receiver(&mut self) -> &mut Receiver<Self::Storage>;
    /// The receiver underneath, shared.
    fn receiver_ref(&self) -> &Receiver<Self::Storage>;
}

impl<S: Storage> sealed::Sealed for Receiver<S> {}
impl<S: Storage> RawReceiver for Receiver<S> {
    type Storage = S;
    fn receiver(&mut self) -> &mut Receiver<S> {
        self
    }
    fn receiver_ref(&self) -> &Receiver<S> {
        self
    }
}

impl<S: Storage> sealed::Sealed for AckReceiver<S> {}
impl<S: Storage> RawReceiver for AckReceiver<S> {
    type Storage = S;
    fn receiver(&mut self) -> &mut Receiver<S> {
        self
    }
    fn receiver_ref(&self) -> &Receiver<S> {
        self
    }
}

/// The receiving side of a typed channel: decodes `T` with codec `C`. Same
/// shape as [`Receiver`]; `R` is [`Receiver`] or, for an acking typed
/// receiver ([`TypedAckRx`]), [`AckReceiver`].
///
/// A message that is not a `T` written with `C` (another type, version or
/// codec; a raw `send`; bytes the codec rejects) is
/// [`RecvError::Decode`] naming its offset. The receiver is past it and
/// stays usable: receive again to go on, or stop.
pub struct TypedRx<T, C, R = Receiver> {
    rx: R,
    unknown: UnknownVersion,
    skipped: u64,
    /// Some part of `T` was not in the schema registry when this receiver
    /// was made (no sender of it yet): checked again at each message until
    /// it is, so that a sender registering another shape later is caught.
    schema_pending: bool,
    /// Older rkyv frames, migrated and re-archived for `recv_ref`.
    #[cfg(feature = "rkyv")]
    migrated: filechannel_codecs::rkyv::util::AlignedVec<16>,
    _marker: PhantomData<fn() -> (T, C)>,
}

/// A typed receiver that acknowledges: messages stay on disk until acked.
pub type TypedAckRx<T, C, S = Fs> = TypedRx<T, C, AckReceiver<S>>;

/// What to do with the message at hand.
enum Verdict {
    Take,
    Skip,
    Fail(RecvError),
}

impl<T: Message, C: Codec, R: RawReceiver> TypedRx<T, C, R> {
    /// Wraps a byte receiver (a [`Receiver`] or an [`AckReceiver`]), as
    /// [`FileChannel::typed_rx`] does: `T`'s shape is checked against the
    /// channel's schema registry if its (name, version) is recorded there.
    ///
    /// # Errors
    /// As [`FileChannel::typed_rx`].
    pub fn new(rx: R) -> Result<Self, Error> {
        let recorded = check_receiver_schema::<T, R::Storage>(rx.receiver_ref().shared())?;
        Ok(Self::checked(rx, recorded))
    }

    /// `rx` wrapped once [`check_receiver_schema`] has passed, saying
    /// whether every part of `T` was `recorded`.
    fn checked(rx: R, recorded: bool) -> Self {
        TypedRx {
            rx,
            unknown: UnknownVersion::Error,
            skipped: 0,
            schema_pending: !recorded,
            #[cfg(feature = "rkyv")]
            migrated: Default::default(),
            _marker: PhantomData,
        }
    }

    /// Sets what happens to messages written by a newer version of `T`
    /// (default: [`UnknownVersion::Error`]).
    pub fn on_unknown_version(mut self, policy: UnknownVersion) -> Self {
        self.unknown = policy;
        self
    }

    /// How many newer-version messages [`UnknownVersion::Skip`] skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Applies the unknown-version policy to the message at `r`.
    fn verdict(&mut self, r: Ready) -> Verdict {
        let m = self.rx.receiver_ref().view(r);
        match (typed_body::<T, C>(&m), self.unknown) {
            (Err(DecodeError::NewerVersion { .. }), UnknownVersion::Skip) => Verdict::Skip,
            (Err(DecodeError::NewerVersion { name, found, .. }), UnknownVersion::Raw) => {
                Verdict::Fail(RecvError::Decode {
                    offset: m.offset(),
                    source: DecodeError::NewerVersionRaw {
                        name,
                        found,
                        body: m.bytes().get(TYPED_HEADER_LEN..).unwrap_or_default().to_vec(),
                    },
                })
            }
            _ => Verdict::Take,
        }
    }

    /// The next message the policy lets through; `Ok(None)` when none is
    /// ready in time.
    #[inline]
    fn next(&mut self, wait: Wait) -> Result<Option<Ready>, RecvError> {
        let r = self.next_unchecked(wait)?;
        if let Some(r) = r
            && self.schema_pending
        {
            self.recheck_schema(r)?;
        }
        Ok(r)
    }

    /// For a receiver made before any sender of `T` (see
    /// `schema_pending`): checks `T` against the registry again. A shape
    /// recorded since that differs from `T`'s is this message's error (and
    /// every later one's): decoding would read another shape's bytes.
    #[cold]
    fn recheck_schema(&mut self, r: Ready) -> Result<(), RecvError> {
        let shared = self.rx.receiver_ref().shared();
        match check_schema::<T, R::Storage>(shared, false) {
            Ok(recorded) => self.schema_pending = !recorded,
            Err(Error::Schema(source)) => {
                return Err(RecvError::Decode {
                    offset: r.seq(),
                    source: DecodeError::Schema(source),
                });
            }
            // `Closed` with no registry loaded, which `new` did: a receiver
            // draining after `close` checks against the registry as loaded
            // (and as this process recorded since). Nothing to compare with;
            // checked again at the next message.
            Err(_) => {}
        }
        Ok(())
    }

    fn next_unchecked(&mut self, wait: Wait) -> Result<Option<Ready>, RecvError> {
        if self.unknown == UnknownVersion::Error {
            // Newer versions are the decoder's error: nothing to look at.
            return self.rx.receiver().next_ready(wait);
        }
        loop {
            let Some(r) = self.rx.receiver().next_ready(wait)? else {
                return Ok(None);
            };
            match self.verdict(r) {
                Verdict::Take => return Ok(Some(r)),
                Verdict::Skip => self.skipped += 1,
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    fn recv_with(&mut self, wait: Wait) -> Result<Option<T>, RecvError>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        let Some(r) = self.next(wait)? else { return Ok(None) };
        let m = self.rx.receiver_ref().view(r);
        let offset = m.offset();
        decode::<T, C>(m)
            .map(Some)
            .map_err(|source| RecvError::Decode { offset, source })
    }

    /// Blocks until a message is ready and decodes it (migrating an older
    /// version through the type's `previous` chain).
    ///
    /// # Errors
    /// As [`Receiver::recv_ref`], plus [`RecvError::Decode`].
    pub fn recv(&mut self) -> Result<T, RecvError>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        self.recv_with(Wait::Forever)?.ok_or(RecvError::Disconnected)
    }

    /// Decodes the next message if one is ready, without blocking.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`]; a decode failure is
    /// `TryRecvError::Failed(RecvError::Decode { .. })`.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        self.recv_with(Wait::No)?.ok_or(TryRecvError::Empty)
    }

    /// Waits at most `timeout` for a message and decodes it.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`], plus decode failures.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self.recv().map_err(RecvTimeoutError::from),
        }
    }

    /// Waits until `deadline` for a message and decodes it.
    ///
    /// # Errors
    /// As [`Receiver::recv_deadline`], plus decode failures.
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<T, RecvTimeoutError>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        self.recv_with(Wait::Until(deadline))?.ok_or(RecvTimeoutError::Timeout)
    }

    /// A blocking iterator of decoded messages; it ends when the channel is
    /// closed and drained. A decode failure is yielded and iteration goes
    /// on; a read failure is yielded once, then the iterator ends.
    pub fn iter(&mut self) -> TypedIter<'_, T, C, R>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        TypedIter {
            rx: self,
            done: false,
            blocking: true,
        }
    }

    /// An iterator over the messages ready now, decoded; errors as
    /// [`iter`](Self::iter).
    pub fn try_iter(&mut self) -> TypedIter<'_, T, C, R>
    where
        C: Decode<T>,
        T: Migrate<C>,
    {
        TypedIter {
            rx: self,
            done: false,
            blocking: false,
        }
    }

    /// Sequence number of the next message (as [`Receiver::read_offset`]).
    pub fn read_offset(&self) -> u64 {
        self.rx.receiver_ref().read_offset()
    }

    /// Messages visible and not received yet (as [`Receiver::len`]; it
    /// counts messages of every type, since they are only told apart when
    /// read).
    pub fn len(&self) -> u64 {
        self.rx.receiver_ref().len()
    }

    /// Whether [`len`](Self::len) is 0.
    pub fn is_empty(&self) -> bool {
        self.rx.receiver_ref().is_empty()
    }

    /// The byte receiver underneath.
    pub fn get_ref(&self) -> &R {
        &self.rx
    }

    /// Unwraps the byte receiver.
    pub fn into_inner(self) -> R {
        self.rx
    }
}

impl<T: Message, C: Codec, S: Storage> TypedRx<T, C, AckReceiver<S>> {
    /// Acknowledges the `n` oldest received, un-acked messages (as
    /// [`AckReceiver::ack`]); messages that failed to decode, and those
    /// skipped as an unknown version, count too.
    ///
    /// # Errors
    /// [`AckError::TooMany`] if fewer are un-acked, [`AckError::Closed`] once
    /// the channel is closed.
    pub fn ack(&mut self, n: u64) -> Result<(), AckError> {
        self.rx.ack(n)
    }

    /// Offset below which everything is acked.
    pub fn acked_offset(&self) -> u64 {
        self.rx.acked_offset()
    }
}

impl<T, C, R> std::fmt::Debug for TypedRx<T, C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedRx")
            .field("type", &std::any::type_name::<T>())
            .field("codec", &std::any::type_name::<C>())
            .finish_non_exhaustive()
    }
}

impl<'a, T: Message + Migrate<C>, C: Decode<T>, R: RawReceiver> IntoIterator for &'a mut TypedRx<T, C, R> {
    type Item = Result<T, RecvError>;
    type IntoIter = TypedIter<'a, T, C, R>;
    /// As [`TypedRx::iter`]: `for v in &mut rx` blocks for each message.
    fn into_iter(self) -> TypedIter<'a, T, C, R> {
        self.iter()
    }
}

/// Iterator of [`TypedRx::iter`] and [`TypedRx::try_iter`]. Fused: once it
/// has returned `None` (disconnected, or for `try_iter` nothing ready), it
/// keeps returning `None`; call `iter`/`try_iter` again for more.
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct TypedIter<'a, T, C, R> {
    rx: &'a mut TypedRx<T, C, R>,
    done: bool,
    blocking: bool,
}

impl<T: Migrate<C>, C: Decode<T>, R: RawReceiver> Iterator for TypedIter<'_, T, C, R> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        typed_next(self.rx, &mut self.done, self.blocking)
    }
}

/// The next item of a typed iterator over `rx` (blocking, or what is ready
/// now): a value or a decode error (iteration goes on), a read error once
/// (then `done`), or `None`.
fn typed_next<T: Migrate<C>, C: Decode<T>, R: RawReceiver>(
    rx: &mut TypedRx<T, C, R>,
    done: &mut bool,
    blocking: bool,
) -> Option<Result<T, RecvError>> {
    if *done {
        return None;
    }
    let r = if blocking {
        rx.recv()
    } else {
        match rx.try_recv() {
            Ok(v) => Ok(v),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                *done = true;
                return None;
            }
            Err(TryRecvError::Failed(e)) => Err(e),
        }
    };
    match r {
        Err(RecvError::Disconnected) => {
            *done = true;
            None
        }
        Err(e) if !e.is_decode() => {
            *done = true;
            Some(Err(e))
        }
        other => Some(other),
    }
}

/// Blocking iterator that owns its typed receiver: `for v in rx`. Items
/// and end as [`TypedRx::iter`]'s.
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct TypedIntoIter<T, C, R = Receiver> {
    rx: TypedRx<T, C, R>,
    done: bool,
}

impl<T: Migrate<C>, C: Decode<T>, R: RawReceiver> Iterator for TypedIntoIter<T, C, R> {
    type Item = Result<T, RecvError>;

    fn next(&mut self) -> Option<Self::Item> {
        typed_next(&mut self.rx, &mut self.done, true)
    }
}

impl<T: Migrate<C>, C: Decode<T>, R: RawReceiver> std::iter::FusedIterator for TypedIntoIter<T, C, R> {}

impl<T, C, R> std::fmt::Debug for TypedIntoIter<T, C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedIntoIter")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T: Message + Migrate<C>, C: Decode<T>, S: Storage> IntoIterator for TypedRx<T, C, Receiver<S>> {
    type Item = Result<T, RecvError>;
    type IntoIter = TypedIntoIter<T, C, Receiver<S>>;
    /// `for v in rx` blocks for each message, as [`TypedRx::iter`]. (A
    /// typed acking receiver has no owning iterator: nothing could ack
    /// what it yields.)
    fn into_iter(self) -> Self::IntoIter {
        TypedIntoIter { rx: self, done: false }
    }
}

impl<T: Migrate<C>, C: Decode<T>, R: RawReceiver> std::iter::FusedIterator for TypedIter<'_, T, C, R> {}

impl<T, C, R> std::fmt::Debug for TypedIter<'_, T, C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedIter")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// A new typed receiver's check: [`check_schema`] without recording, and
/// `Closed` once the channel is (the check itself may use the registry as
/// loaded after that, for receivers made before the close).
fn check_receiver_schema<T: Message + ?Sized, S: Storage>(shared: &crate::channel::Shared<S>) -> Result<bool, Error> {
    crate::registry::ensure_open(shared)?;
    check_schema::<T, S>(shared, false)
}

/// Checks `T`'s shape against the channel's schema registry (every part of
/// it: a composite holds derived types); a sender (`register`) records a
/// (name, version) seen for the first time, a receiver also checks the
/// older versions it reads (where recorded). Returns whether every part of
/// `T` is recorded. `Closed` once the channel is.
fn check_schema<T: Message + ?Sized, S: Storage>(
    shared: &crate::channel::Shared<S>,
    register: bool,
) -> Result<bool, Error> {
    let mut parts = Vec::new();
    T::for_each_schema(&mut |part| parts.push(part));
    let mut previous = Vec::new();
    if !register {
        T::for_each_previous_schema(&mut |part| previous.push(part));
    }
    crate::registry::check(shared, &parts, &previous, register)
}

impl<S: Storage> FileChannel<S> {
    /// The message types registered in this channel's schema registry
    /// (the file `schema.registry` in its directory, readable as text):
    /// name, version, shape fingerprint and a description of the shape.
    ///
    /// # Errors
    /// [`Error::Closed`] once the channel is closed (the directory is no
    /// longer this channel's to read); [`Error::Schema`] if the registry
    /// cannot be read.
    pub fn schemas(&self) -> Result<Vec<crate::registry::RegisteredSchema>, Error> {
        crate::registry::list(self.shared())
    }

    /// A typed sender of `T` values encoded with `C`.
    ///
    /// # Errors
    /// [`Error::Closed`] if the channel is closed; [`Error::Schema`] if `T`
    /// carries a schema that differs from the one recorded for its name and
    /// version in this directory (`Changed`), or the record cannot be read
    /// (`Corrupt`, `Io`).
    pub fn typed_tx<T: Message, C: Codec>(&self) -> Result<TypedTx<T, C, S>, Error> {
        TypedTx::new(self.tx())
    }

    /// A typed receiver of `T` values decoded with `C`, starting where
    /// [`rx`](Self::rx) would.
    ///
    /// # Errors
    /// [`Error::Closed`] if the channel is closed; [`Error::Schema`] if `T`
    /// carries a schema that differs from the one recorded for its name and
    /// version in this directory (`Changed`), if an older version it reads
    /// through `previous` differs from the one recorded for that version
    /// (`PreviousChanged`), or the record cannot be read (`Corrupt`, `Io`).
    pub fn typed_rx<T: Message, C: Codec>(&self) -> Result<TypedRx<T, C, Receiver<S>>, Error> {
        TypedRx::new(self.rx())
    }

    /// A typed acknowledging receiver, starting where
    /// [`rx_ack`](Self::rx_ack) would.
    ///
    /// # Errors
    /// As [`typed_rx`](Self::typed_rx).
    pub fn typed_rx_ack<T: Message, C: Codec>(&self) -> Result<TypedAckRx<T, C, S>, Error> {
        // Checked before the acking receiver exists (and only then): one
        // dropped on the error would leave a ghost cursor at the head,
        // keeping every segment from then on until the next acking receiver.
        let recorded = check_receiver_schema::<T, S>(self.shared())?;
        Ok(TypedRx::checked(self.rx_ack(), recorded))
    }
}

// ---- zero-copy rkyv ----

#[cfg(feature = "rkyv")]
mod zero_copy {
    use super::*;
    use crate::codec::{Encode, Rkyv};
    use filechannel_codecs::rkyv;
    use rkyv::api::high::HighValidator;
    use rkyv::bytecheck::CheckBytes;
    use rkyv::rancor;

    /// An archived `T` read in place: it points into the segment's memory
    /// map (or, for a compressed segment, into its 16-byte-aligned
    /// decompressed buffer). Valid until the next call on the receiver.
    pub struct ArchivedRef<'a, T: rkyv::Archive> {
        value: &'a rkyv::Archived<T>,
        offset: u64,
    }

    impl<T: rkyv::Archive> ArchivedRef<'_, T> {
        /// The message's sequence number.
        pub fn offset(&self) -> u64 {
            self.offset
        }
    }

    impl<T: rkyv::Archive> std::ops::Deref for ArchivedRef<'_, T> {
        type Target = rkyv::Archived<T>;
        fn deref(&self) -> &Self::Target {
            self.value
        }
    }

    impl<T: rkyv::Archive> std::fmt::Debug for ArchivedRef<'_, T>
    where
        rkyv::Archived<T>: std::fmt::Debug,
    {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.value.fmt(f)
        }
    }

    impl<T, R: RawReceiver> TypedRx<T, Rkyv, R>
    where
        T: Migrate<Rkyv> + rkyv::Archive,
        T::Archived: for<'v> CheckBytes<HighValidator<'v, rancor::Error>>,
        Rkyv: Encode<T>,
    {
        fn recv_ref_with(&mut self, wait: Wait) -> Result<Option<ArchivedRef<'_, T>>, RecvError> {
            let Some(r) = self.next(wait)? else { return Ok(None) };
            let m = self.rx.receiver_ref().view(r);
            let offset = m.offset();
            let fail = |source| RecvError::Decode { offset, source };
            let body = match typed_body::<T, Rkyv>(&m) {
                Ok(body) => body,
                Err(DecodeError::OlderVersion { name, found, supported }) => {
                    let old = m.bytes().get(TYPED_HEADER_LEN..).unwrap_or_default();
                    let value = match T::decode_older(found, old) {
                        Some(v) => v.map_err(|e| fail(DecodeError::Codec(e)))?,
                        None => return Err(fail(DecodeError::OlderVersion { name, found, supported })),
                    };
                    // Re-archive the migrated value into this receiver's
                    // aligned buffer: a copy, only for older frames.
                    let mut buf = Vec::new();
                    Rkyv::encode(&value, &mut buf).map_err(|e| fail(DecodeError::Codec(e)))?;
                    self.migrated.clear();
                    self.migrated.extend_from_slice(&buf);
                    &self.migrated[..]
                }
                Err(e) => return Err(fail(e)),
            };
            let value = filechannel_codecs::access::<T>(body).map_err(|e| fail(DecodeError::Codec(e)))?;
            Ok(Some(ArchivedRef { value, offset }))
        }

        /// Blocks until a message is ready and returns its archive, read in
        /// place: no copy, no allocation. The archive is validated
        /// (bytecheck) first; see
        /// [`recv_ref_unchecked`](Self::recv_ref_unchecked) for trusted
        /// data. A message of an older version of `T` is migrated through
        /// the `previous` chain and re-archived into a buffer of the
        /// receiver: that one is a copy.
        ///
        /// # Errors
        /// As [`recv`](Self::recv).
        pub fn recv_ref(&mut self) -> Result<ArchivedRef<'_, T>, RecvError> {
            self.recv_ref_with(Wait::Forever)?.ok_or(RecvError::Disconnected)
        }

        /// As [`recv_ref`](Self::recv_ref), without blocking.
        ///
        /// # Errors
        /// As [`try_recv`](Self::try_recv).
        pub fn try_recv_ref(&mut self) -> Result<ArchivedRef<'_, T>, TryRecvError> {
            self.recv_ref_with(Wait::No)?.ok_or(TryRecvError::Empty)
        }
    }

    impl<T: Message + rkyv::Archive, R: RawReceiver> TypedRx<T, Rkyv, R> {
        /// As [`recv_ref`](Self::recv_ref) but without validating the
        /// archive: the header (type, version, codec) and the frame's CRC
        /// are still checked. Older versions are an error here
        /// ([`DecodeError::OlderVersion`]): use `recv_ref` for them.
        ///
        /// # Safety
        /// Every `T` frame of the channel must have been written by a
        /// trusted `TypedTx<T, Rkyv>` (bytecheck is what protects against
        /// crafted archives), and no archived type inside `T` may need more
        /// than 16-byte alignment (only the root's is checked at build time).
        ///
        /// # Errors
        /// As [`recv`](Self::recv), minus archive validation.
        pub unsafe fn recv_ref_unchecked(&mut self) -> Result<ArchivedRef<'_, T>, RecvError> {
            let Some(r) = self.next(Wait::Forever)? else {
                return Err(RecvError::Disconnected);
            };
            let m = self.rx.receiver_ref().view(r);
            let offset = m.offset();
            let body = typed_body::<T, Rkyv>(&m).map_err(|source| RecvError::Decode { offset, source })?;
            if !body.as_ptr().addr().is_multiple_of(filechannel_codecs::RKYV_ALIGN)
                || body.len() < size_of::<T::Archived>()
            {
                return Err(RecvError::Decode {
                    offset,
                    source: DecodeError::Truncated { len: m.len() },
                });
            }
            // SAFETY: the caller vouches that the writer was a trusted
            // `TypedTx<T, Rkyv>` (and the tag says this frame is a `T`
            // archive of this version); alignment and size are checked
            // above.
            let value = unsafe { filechannel_codecs::access_unchecked::<T>(body) };
            Ok(ArchivedRef { value, offset })
        }
    }
}
#[cfg(feature = "rkyv")]
pub use zero_copy::ArchivedRef;

// ---- Message for std types ----

macro_rules! leaf_message {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        impl Message for $t {
            const NAME: &'static str = $name;
            const VERSION: u32 = 1;
        }
        impl<C: Codec> Migrate<C> for $t {}
        impl Shape for $t {
            const FINGERPRINT: u64 = name_hash($name);
        }
    )*};
}

leaf_message! {
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128", usize => "usize",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128", isize => "isize",
    bool => "bool", char => "char", f32 => "f32", f64 => "f64", () => "()", String => "String",
}

/// `str` and `[T]` travel only inside a `Box`. Their tags are their own:
/// serde writes `Box<str>` as it writes `String`, but rkyv archives
/// `Box<str>` (a pointer to the bytes) and `Box<String>` (a pointer to an
/// archived string) differently, and the same for `Box<[T]>` and
/// `Box<Vec<T>>`.
impl Message for str {
    const NAME: &'static str = "str";
    const VERSION: u32 = 1;
}

/// Folds a part's name hash and version into a composite's hash.
const fn fold<T: Message + ?Sized>(h: u64) -> u64 {
    combine(combine(h, T::NAME_HASH), T::VERSION as u64)
}

macro_rules! wrapper_message {
    ($($w:ident<$t:ident> => $name:literal),* $(,)?) => {$(
        impl<$t: Message> Message for $w<$t> {
            const NAME: &'static str = $name;
            const VERSION: u32 = 1;
            const NAME_HASH: u64 = fold::<$t>(name_hash($name));
            fn type_name() -> Cow<'static, str> {
                format!("{}<{}>", $name, $t::type_name()).into()
            }
            fn for_each_schema(f: &mut dyn FnMut(SchemaPart)) {
                $t::for_each_schema(f);
            }
        }
        impl<$t: Message, C: Codec> Migrate<C> for $w<$t> {}
        impl<$t: Shape> Shape for $w<$t> {
            const FINGERPRINT: u64 = combine(name_hash($name), $t::FINGERPRINT);
        }
    )*};
}

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
wrapper_message! {
    Vec<T> => "Vec", Option<T> => "Option", VecDeque<T> => "VecDeque",
    BTreeSet<T> => "BTreeSet", HashSet<T> => "HashSet",
}

/// `Box<T>` is a type of its own on the channel, not `T`: serde writes it as
/// `T`, but rkyv archives it as a relative pointer to a `T`, so a `Box<T>`
/// frame read as a `T` (or the other way round) would decode garbage.
impl<T: Message + ?Sized> Message for Box<T> {
    const NAME: &'static str = "Box";
    const VERSION: u32 = 1;
    const NAME_HASH: u64 = fold::<T>(name_hash("Box"));
    fn type_name() -> Cow<'static, str> {
        format!("Box<{}>", T::type_name()).into()
    }
    fn for_each_schema(f: &mut dyn FnMut(SchemaPart)) {
        T::for_each_schema(f);
    }
}
impl<T: Message + ?Sized, C: Codec> Migrate<C> for Box<T> {}
/// A field's shape: the same as `T`'s. (A derived type's fingerprint also
/// folds in each field's type as written, so `item: Box<Item>` and `item:
/// Item` differ there; keeping `Box<T>`'s own fingerprint `T`'s keeps
/// registries written before `Box<T>` got its own tag valid.)
impl<T: Shape + ?Sized> Shape for Box<T> {
    const FINGERPRINT: u64 = T::FINGERPRINT;
}
impl<T: Shape> Shape for [T] {
    const FINGERPRINT: u64 = combine(name_hash("Vec"), T::FINGERPRINT);
}
impl Shape for str {
    const FINGERPRINT: u64 = name_hash("String");
}
impl<T: Shape, const N: usize> Shape for [T; N] {
    const FINGERPRINT: u64 = combine(combine(name_hash("array"), T::FINGERPRINT), N as u64);
}

impl<T: Message> Message for [T] {
    const NAME: &'static str = "slice";
    const VERSION: u32 = 1;
    const NAME_HASH: u64 = fold::<T>(name_hash("slice"));
    fn type_name() -> Cow<'static, str> {
        format!("[{}]", T::type_name()).into()
    }
    fn for_each_schema(f: &mut dyn FnMut(SchemaPart)) {
        T::for_each_schema(f);
    }
}

macro_rules! map_message {
    ($($m:ident => $name:literal),*) => {$(
        impl<K: Message, V: Message> Message for $m<K, V> {
            const NAME: &'static str = $name;
            const VERSION: u32 = 1;
            const NAME_HASH: u64 = fold::<V>(fold::<K>(name_hash($name)));
            fn type_name() -> Cow<'static, str> {
                format!("{}<{}, {}>", $name, K::type_name(), V::type_name()).into()
            }
            fn for_each_schema(f: &mut dyn FnMut(SchemaPart)) {
                K::for_each_schema(f);
                V::for_each_schema(f);
            }
        }
        impl<K: Message, V: Message, C: Codec> Migrate<C> for $m<K, V> {}
        impl<K: Shape, V: Shape> Shape for $m<K, V> {
            const FINGERPRINT: u64 = combine(combine(name_hash($name), K::FINGERPRINT), V::FINGERPRINT);
        }
    )*};
}
map_message!(BTreeMap => "BTreeMap", HashMap => "HashMap");

macro_rules! tuple_message {
    ($($t:ident)+) => {
        impl<$($t: Message),+> Message for ($($t,)+) {
            const NAME: &'static str = "tuple";
            const VERSION: u32 = 1;
            const NAME_HASH: u64 = {
                let h = name_hash("tuple");
                $(let h = fold::<$t>(h);)+
                h
            };
            fn type_name() -> Cow<'static, str> {
                let parts: Vec<Cow<'static, str>> = vec![$($t::type_name()),+];
                format!("({})", parts.join(", ")).into()
            }
            fn for_each_schema(f: &mut dyn FnMut(SchemaPart)) {
                $($t::for_each_schema(f);)+
            }
        }
        impl<$($t: Message,)+ CODEC: Codec> Migrate<CODEC> for ($($t,)+) {}
        impl<$($t: Shape),+> Shape for ($($t,)+) {
            const FINGERPRINT: u64 = {
                let h = name_hash("tuple");
                $(let h = combine(h, $t::FINGERPRINT);)+
                h
            };
        }
    };
}
tuple_message!(A);
tuple_message!(A B);
tuple_message!(A B C);
tuple_message!(A B C D);
tuple_message!(A B C D E);
tuple_message!(A B C D E F);
tuple_message!(A B C D E F G);
tuple_message!(A B C D E F G H);
