//! D3: typed frames with arbitrary bodies behind correct and forged headers,
//! decoded by every codec (rkyv's validator included): values or typed
//! errors, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| filechannel::fuzzing::typed_decode(data));
