//! D2: arbitrary operation sequences on the in-memory backend with a crash
//! countdown; the crash images must reopen and hold only sent messages, in
//! order.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| filechannel::fuzzing::ops_with_crash(data));
