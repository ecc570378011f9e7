//! D1: arbitrary directory contents (segment files of random bytes, valid
//! prefixes with mutations) → open and read everything.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| filechannel::fuzzing::open_arbitrary_directory(data));
