//! The wake-up path between senders and blocked receivers.
//!
//! Receivers that find nothing to read register as waiters and sleep on a
//! condition variable; whoever publishes new messages wakes them. Counting
//! waiters lets a sender skip all of this when nobody waits, which is the
//! common case under load. An async receive would register a `Waker` next to
//! the condition variable and be woken by the same `notify_all`.

#[cfg(not(loom))]
use crate::sync::{AtomicUsize, Condvar, Mutex, fence};
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering, fence};
#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
use std::sync::PoisonError;
#[cfg(not(loom))]
use std::sync::atomic::Ordering;
use std::time::Instant;

pub(crate) struct Notifier {
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }
}

impl Notifier {
    /// Whether any receiver is (about to be) asleep. `SeqCst` pairs with the
    /// increment in [`wait_while`](Self::wait_while): a publisher that stored
    /// its data before this load either sees the waiter or is seen by it.
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Whether a receiver may be sleeping, without a fence: a waiter that
    /// registers at this very moment can be missed, so it is only for
    /// waking early where something else wakes it later anyway.
    #[inline]
    pub(crate) fn may_have_waiters(&self) -> bool {
        self.waiters.load(Ordering::Relaxed) > 0
    }

    /// Wakes every sleeping receiver.
    pub(crate) fn notify_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.cv.notify_all();
    }

    /// Wakes sleeping receivers if there are any. Call after publishing.
    #[inline]
    pub(crate) fn notify_if_waiting(&self) {
        fence(Ordering::SeqCst);
        if self.has_waiters() {
            self.notify_all();
        }
    }

    /// Sleeps while `blocked()` holds, until `deadline` (if any). `on_wait`
    /// runs once after registering, before sleeping (to arm a flusher).
    /// Returns `false` if the deadline passed while still blocked.
    pub(crate) fn wait_while(
        &self,
        deadline: Option<Instant>,
        mut blocked: impl FnMut() -> bool,
        on_wait: impl FnOnce(),
    ) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `notify_if_waiting` (Dekker): either the
        // publisher sees this waiter or `blocked()` sees its data.
        fence(Ordering::SeqCst);
        on_wait();
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = loop {
            if !blocked() {
                break true;
            }
            match deadline {
                None => {
                    guard = self.cv.wait(guard).unwrap_or_else(PoisonError::into_inner);
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break false;
                    }
                    guard = self
                        .cv
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ready
    }
}

/// The hand-off between a publisher and a receiver going to sleep, checked
/// exhaustively by loom (`RUSTFLAGS="--cfg loom" cargo test -p filechannel
/// --lib --release notify`; `LOOM_MAX_PREEMPTIONS=2` is the CI bound). A lost
/// wake-up leaves the receiver asleep forever, which loom reports as a
/// deadlock.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::Notifier;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_publish_never_misses_a_receiver_going_to_sleep() {
        loom::model(|| {
            let notify = Arc::new(Notifier::default());
            let published = Arc::new(AtomicU64::new(0));
            let (n, p) = (Arc::clone(&notify), Arc::clone(&published));
            let sender = loom::thread::spawn(move || {
                p.store(1, Ordering::Release);
                n.notify_if_waiting();
            });
            let ready = notify.wait_while(None, || published.load(Ordering::Acquire) == 0, || {});
            assert!(ready);
            assert_eq!(published.load(Ordering::Acquire), 1);
            sender.join().unwrap();
        });
    }

    #[test]
    fn two_receivers_both_wake_for_one_publish() {
        loom::model(|| {
            let notify = Arc::new(Notifier::default());
            let published = Arc::new(AtomicU64::new(0));
            let waiter = {
                let (n, p) = (Arc::clone(&notify), Arc::clone(&published));
                loom::thread::spawn(move || {
                    n.wait_while(None, || p.load(Ordering::Acquire) == 0, || {});
                })
            };
            let (n, p) = (Arc::clone(&notify), Arc::clone(&published));
            let sender = loom::thread::spawn(move || {
                p.store(1, Ordering::Release);
                n.notify_if_waiting();
            });
            notify.wait_while(None, || published.load(Ordering::Acquire) == 0, || {});
            waiter.join().unwrap();
            sender.join().unwrap();
        });
    }
}
