//! rkyv: values archived so that they can be read in place.

use crate::{Codec, CodecError, Decode, Encode};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::validation::{Validator, archive::ArchiveValidator, shared::SharedValidator};
use std::num::NonZeroUsize;

/// [rkyv](https://docs.rs/rkyv) 0.8 archives. A typed receiver can read them
/// in place, straight out of the memory-mapped segment
/// (`TypedRx::recv_ref`), after validating them with bytecheck; or
/// deserialize them into owned values like any other codec.
///
/// Archives need their root aligned (up to 16 bytes for `u128`-bearing
/// types); filechannel lays typed frames out so that the body always starts
/// at a 16-byte boundary of the segment. A type whose archive needs more
/// (`#[repr(align(32))]`, say) fails to build with this codec (`cargo
/// build` evaluates the check; `cargo check` does not get that far). The
/// check sees the root only: a type holding such an archive deeper inside
/// (in a `Vec`, say) is not supported; validated reads refuse it with an
/// error, never a wrong value. [`Decode::decode`] copies a
/// misaligned slice into an aligned buffer first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rkyv;

impl Codec for Rkyv {
    const ID: u32 = 4;
    const NAME: &'static str = "rkyv";
}

/// The alignment the archive's body needs from its container.
pub const ALIGN: usize = 16;

/// Fails the build (when instantiated for `T`) if `T`'s archive needs more
/// than [`ALIGN`]: rkyv aligns the root relative to the start of the encode
/// buffer, and the channel places bodies on 16-byte boundaries only, so such
/// an archive could not be read in place soundly. Every `Rkyv` entry point
/// evaluates it in a `const` block.
const fn fits_alignment<T: rkyv::Archive>() {
    assert!(
        align_of::<T::Archived>() <= ALIGN,
        "an rkyv archive aligned to more than 16 bytes cannot travel on a filechannel"
    );
}

impl<T> Encode<T> for Rkyv
where
    T: for<'a> rkyv::Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>,
{
    /// Appends the archive. Its internal alignment is relative to the start
    /// of `buf`, so `buf.len()` must be a multiple of 16 when called (the
    /// channel's typed header is 16 bytes); otherwise an error is returned.
    #[inline]
    fn encode(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        const { fits_alignment::<T>() };
        if !buf.len().is_multiple_of(ALIGN) {
            return Err(CodecError::encode::<T>(
                Self::NAME,
                "the archive must start at a 16-byte offset of the buffer",
            ));
        }
        // rkyv reuses its arena per thread; the Vec is moved in and back out.
        let taken = std::mem::take(buf);
        match rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, taken) {
            Ok(v) => {
                *buf = v;
                Ok(())
            }
            Err(e) => Err(CodecError::encode::<T>(Self::NAME, e)),
        }
    }
}

impl<T> Decode<T> for Rkyv
where
    T: rkyv::Archive,
    T::Archived:
        for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    #[inline]
    fn decode(bytes: &[u8]) -> Result<T, CodecError> {
        const { fits_alignment::<T>() };
        // Validated with the depth limit first: deserializing then recurses
        // no deeper than the archive was checked to nest.
        let owned = |bytes: &[u8]| {
            let archived = access::<T>(bytes)?;
            rkyv::api::deserialize_using::<T, _, rancor::Error>(archived, &mut Pool::default())
                .map_err(|e| CodecError::decode::<T>(Self::NAME, e))
        };
        if bytes.as_ptr().addr().is_multiple_of(ALIGN) {
            owned(bytes)
        } else {
            let mut aligned = AlignedVec::<ALIGN>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            owned(&aligned)
        }
    }
}

/// Validates `bytes` as an archived `T` and returns a reference into them.
/// Pointers may nest at most [`MAX_DEPTH`](crate::MAX_DEPTH) deep (a
/// recursive type's archive); deeper is an error, not a stack overflow.
///
/// # Errors
/// [`CodecError::Decode`] when the bytes are not a valid archive (or are not
/// aligned for it, or nest too deep).
#[inline]
pub fn access<T>(bytes: &[u8]) -> Result<&rkyv::Archived<T>, CodecError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    const { fits_alignment::<T>() };
    let mut validator = Validator::new(
        ArchiveValidator::with_max_depth(bytes, NonZeroUsize::new(crate::MAX_DEPTH)),
        SharedValidator::new(),
    );
    rkyv::api::access_with_context::<rkyv::Archived<T>, _, rancor::Error>(bytes, &mut validator)
        .map_err(|e| CodecError::decode::<T>(Rkyv::NAME, e))
}

/// Returns a reference to the archived `T` in `bytes` without validating it.
///
/// # Safety
/// `bytes` must hold a valid archive of `T` written by [`Rkyv`] (for example
/// by a trusted writer of the same channel), aligned to 16 bytes.
#[inline]
pub unsafe fn access_unchecked<T: rkyv::Archive>(bytes: &[u8]) -> &rkyv::Archived<T> {
    const { fits_alignment::<T>() };
    // SAFETY: the caller promises a valid, aligned archive of `T`.
    unsafe { rkyv::access_unchecked::<rkyv::Archived<T>>(bytes) }
}
