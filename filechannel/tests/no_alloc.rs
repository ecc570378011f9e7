//! `recv_ref` hands out a view into the segment's memory map: receiving a
//! message allocates nothing (and `send` neither). Checked with a counting
//! global allocator, within one segment (entering a new segment maps it,
//! which does allocate, once per segment).

use filechannel::FileChannel;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

thread_local! {
    /// Counting is on for the test's own thread only: the calls under test.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn recv_ref_and_send_do_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let ch = FileChannel::builder()
        .durability(filechannel::Durability::Flush)
        .open(dir.path())
        .unwrap();
    let tx = ch.tx();
    let mut rx = ch.rx();
    let msg = [7u8; 100];
    // Warm up: the receiver maps the segment on its first receive.
    tx.send(&msg).unwrap();
    assert_eq!(rx.recv_ref().unwrap().len(), 100);

    COUNTING.with(|c| c.set(true));
    for _ in 0..10_000 {
        tx.send(&msg).unwrap();
    }
    let mut total = 0;
    for _ in 0..10_000 {
        total += rx.recv_ref().unwrap().len();
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(total, 1_000_000);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations while sending and receiving"
    );
}
