//! The synchronisation primitives the channel's threads share: `std`'s, or
//! under `--cfg shuttle` the `shuttle` crate's, so that the concurrency test
//! (reliability test I, `shuttle_tests`) can drive the real code through
//! randomized thread schedules. `Arc`, `Weak` and `OnceLock` stay `std`'s in
//! both builds (shuttle's `Arc` is `std`'s; `OnceLock::set` never blocks).
//!
//! The notifier's loom test swaps its own primitives (see `notify`).

#[cfg(not(shuttle))]
#[cfg_attr(loom, allow(unused_imports))] // loom's notifier brings its own `fence`
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Condvar, Mutex};
#[cfg(not(shuttle))]
pub(crate) use std::thread;

#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, fence};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Condvar, Mutex};
#[cfg(shuttle)]
pub(crate) use shuttle::thread;
