//! A global allocator for tests that must show memory is bounded: it forwards every call to
//! the system allocator and counts, per thread, the bytes live and their peak since the last
//! `reset`. Per thread, so tests running in parallel on other threads do not disturb a count.
//!
//! ```
//! #[global_allocator]
//! static METER: alloc_meter::Meter = alloc_meter::Meter;
//!
//! let (len, peak) = alloc_meter::measure(|| vec![0u8; 1 << 20].len());
//! assert_eq!(len, 1 << 20);
//! assert!(peak >= 1 << 20 && peak < 2 << 20, "the megabyte is counted: {peak}");
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The allocator; install it with `#[global_allocator]`.
pub struct Meter;

thread_local! {
    // `const` initialisers: reading them never allocates (an allocator must not recurse).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn add(delta: i64) {
    // `try_with`: during thread teardown the slots may be gone; the count is then moot.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract;
// the bookkeeping touches only const-initialised thread-locals and never allocates.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator (so by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Starts a new measurement on this thread: the peak becomes what is live now.
pub fn reset() {
    let live = LIVE.try_with(Cell::get).unwrap_or(0);
    let _ = PEAK.try_with(|p| p.set(live));
}

/// Bytes this thread allocated at most at once since `reset`, beyond what was live then.
pub fn peak_since_reset(baseline: i64) -> u64 {
    let peak = PEAK.try_with(Cell::get).unwrap_or(0);
    (peak - baseline).max(0) as u64
}

/// Bytes live on this thread now (net of what it freed); the baseline of a measurement.
pub fn live() -> i64 {
    LIVE.try_with(Cell::get).unwrap_or(0)
}

/// Measures `f`: its result and the most bytes it held at once on this thread.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, u64) {
    reset();
    let baseline = live();
    let out = f();
    (out, peak_since_reset(baseline))
}
