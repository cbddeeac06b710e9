//! Memory is given back: a dropped registry frees its storage, a thread
//! that works with many short-lived registries does not accumulate memory
//! for the dead ones, and short-lived threads do not grow a registry. Measured with a counting global allocator (this test
//! binary only), so the tests here run one at a time.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;
use std::thread;

use tether::{Registry, Released};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counter is a
// side effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The tests of this file measure one process-wide counter: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// On a fresh thread: a registry holding `n` objects at once, all released,
/// then the registry dropped.
fn fill_release_and_drop(n: u64) {
    common::join(thread::spawn(move || {
        let reg: Registry<[u64; 4]> = Registry::new();
        let hs: Vec<_> = (0..n)
            .map(|i| reg.insert([i; 4]).expect("insert"))
            .collect();
        for h in hs {
            assert_eq!(reg.release(h), Ok(Released::Finalized));
        }
        drop(reg);
    }));
}

#[test]
fn a_dropped_registry_gives_its_storage_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Once to warm up what the process keeps for good (thread bookkeeping).
    fill_release_and_drop(10_000);
    let before = live();
    fill_release_and_drop(10_000);
    let kept = live() - before;
    // 10 000 slots and counts are hundreds of KiB: a leaked page shows.
    assert!(
        kept < 4096,
        "{kept} bytes still allocated after the registry was dropped"
    );
}

#[test]
fn a_thread_using_many_short_lived_registries_does_not_accumulate_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let grown = common::join(thread::spawn(|| {
        let use_once = |reg: &Registry<u64>| {
            let h = reg.insert(1).expect("insert");
            assert_eq!(reg.release(h), Ok(Released::Finalized));
        };
        // Some registries this thread keeps using, and many that come and go.
        let kept: Vec<Registry<u64>> = (0..12).map(|_| Registry::new()).collect();
        kept.iter().for_each(use_once);
        for _ in 0..64 {
            use_once(&Registry::new());
        }
        let before = live();
        for _ in 0..2000 {
            use_once(&Registry::new());
        }
        kept.iter().for_each(use_once);
        live() - before
    }));
    // Each dead registry is a few hundred bytes: 2000 of them kept alive by
    // this thread would be hundreds of KiB.
    assert!(
        grown < 64 * 1024,
        "{grown} bytes kept for 2000 dropped registries"
    );
}

/// Runs `work` on `warm_up` short-lived threads, one after another, then on
/// `measured` more; returns the bytes allocated by the measured ones and
/// still held at the end.
fn churn(
    reg: &Registry<u64>,
    warm_up: usize,
    measured: usize,
    work: impl Fn(&Registry<u64>) + Clone + Send + 'static,
) -> isize {
    let run = |n: usize| {
        for _ in 0..n {
            let (r, work) = (reg.clone(), work.clone());
            common::join(thread::spawn(move || work(&r)));
        }
    };
    run(warm_up);
    let before = live();
    run(measured);
    live() - before
}

#[test]
fn thread_churn_does_not_grow_a_registry() {
    // Thousands of short-lived threads, one after another, each using the
    // registry: an exited thread's bookkeeping is reused by the next one.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg: Registry<u64> = Registry::new();
    let grown = churn(&reg, 64, 2000, |r| {
        let h = r.insert(1).expect("insert");
        assert_eq!(r.release(h), Ok(Released::Finalized));
    });
    // Per-thread bookkeeping that is never reused grows by tens of KiB here.
    assert!(
        grown < 8 * 1024,
        "{grown} bytes kept after 2000 threads came and went"
    );
    assert!(reg.is_empty());
}

#[test]
fn threads_that_let_go_of_a_long_lived_object_leave_no_backtraces_behind() {
    // With backtraces captured, each thread's first reference records where
    // it was taken; the record must go with the thread's last reference, not
    // stay until the object dies.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg: Registry<u64> = Registry::builder().capture_backtraces(true).build();
    let h = reg.insert(1).expect("insert");
    reg.pin(h).expect("pin"); // any thread may take references to it
    let grown = churn(&reg, 16, 200, move |r| {
        r.retain(h).expect("retain");
        assert_eq!(r.release(h), Ok(Released::Held(0)));
    });
    // A captured backtrace is a KiB or more: 200 of them kept is >100 KiB.
    assert!(
        grown < 16 * 1024,
        "{grown} bytes kept after 200 threads held and let go of one object"
    );
    assert_eq!(reg.count(h), Ok(1));
}

#[test]
fn a_registry_outliving_many_interners_does_not_keep_them() {
    // Every interner registers with its registry to hear of deaths; a
    // dropped interner's registration must not keep its storage.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let reg: Registry<u64> = Registry::new();
    let use_once = || {
        let names: tether::Interner<u64, u64> = tether::Interner::new(&reg);
        let h = names.intern(&1, || Ok(1)).expect("intern");
        assert_eq!(reg.release(h), Ok(Released::Finalized));
    };
    for _ in 0..64 {
        use_once();
    }
    let before = live();
    for _ in 0..2000 {
        use_once();
    }
    let grown = live() - before;
    // An interner's shared state is hundreds of bytes: 2000 kept is >200 KiB.
    assert!(
        grown < 16 * 1024,
        "{grown} bytes kept after 2000 interners came and went"
    );
    assert!(reg.is_empty());
}
