//! Paged arrays whose entries never move.
//!
//! Page `p` holds `PAGE_BASE << p` entries, so index `i` lives in page
//! `log2(i + PAGE_BASE) - log2(PAGE_BASE)`: a lookup is a leading-zero count,
//! one acquire load of the page pointer and an offset — no lock, no
//! reallocation, and a `&E` handed out stays valid for the array's lifetime.
//! The directory of pages is indexed by the leading-zero count itself
//! (`log2(i + PAGE_BASE)`; its first `log2(PAGE_BASE)` slots are unused),
//! so a lookup subtracts nothing to find its page.
//! Pages are allocated on first use and installed with a CAS, so any thread
//! may grow the array; they are freed only when the array is dropped.

use std::marker::PhantomData;
use std::ptr;

use crate::limits::{MAX_PAGES, PAGE_BASE};
use crate::sync::{AtomicPtr, Ordering};

/// An entry type that knows how to allocate a page of fresh entries.
pub(crate) trait PageEntry: Sized {
    /// A page of `len` entries in their initial state.
    fn new_page(len: usize) -> Box<[Self]>;
}

/// A page of zero-initialised atomics.
///
/// Outside loom the memory comes from `alloc_zeroed`, which for large pages
/// maps untouched zero pages lazily: a thread whose count table reaches index
/// one million pays for the cache lines it touches, not for megabytes of
/// zeroing. Loom's atomics are not plain memory, so under loom they are
/// constructed one by one.
macro_rules! zeroed_atomic_page {
    ($ty:ty, $new:expr) => {
        #[cfg(not(loom))]
        fn new_page(len: usize) -> Box<[$ty]> {
            // SAFETY: the all-zero bit pattern is a valid value of every std
            // atomic integer and of `AtomicPtr` (a null pointer).
            unsafe { zeroed_page::<$ty>(len, false) }
        }

        #[cfg(loom)]
        fn new_page(len: usize) -> Box<[$ty]> {
            (0..len).map(|_| $new).collect()
        }
    };
}

impl PageEntry for crate::sync::AtomicU64 {
    zeroed_atomic_page!(crate::sync::AtomicU64, crate::sync::AtomicU64::new(0));
}

impl<X> PageEntry for AtomicPtr<X> {
    zeroed_atomic_page!(AtomicPtr<X>, AtomicPtr::new(ptr::null_mut()));
}

/// Allocates a page of `len` zeroed `E`s. With `huge`, a page of at least
/// [`HUGE_PAGE`] bytes asks the kernel for transparent huge pages before it
/// is touched (for arrays that fill up densely, like the slots: at a million
/// objects, operations spread over them otherwise miss the TLB on most
/// accesses).
///
/// # Safety
///
/// The all-zero bit pattern must be a valid value of `E`.
#[cfg(not(loom))]
pub(crate) unsafe fn zeroed_page<E>(len: usize, huge: bool) -> Box<[E]> {
    use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};

    let Ok(layout) = Layout::array::<E>(len) else {
        // Unreachable: pages are at most 2^24 small entries.
        std::process::abort()
    };
    if layout.size() == 0 {
        return Vec::new().into_boxed_slice();
    }
    // SAFETY: `layout` has non-zero size, as `alloc_zeroed` requires.
    let data = unsafe { alloc_zeroed(layout) }.cast::<E>();
    if data.is_null() {
        handle_alloc_error(layout);
    }
    if huge && layout.size() >= HUGE_PAGE {
        advise_huge(data.cast(), layout.size());
    }
    // SAFETY: `data` was allocated by the global allocator with
    // `Layout::array::<E>(len)`, which is exactly the layout `Box<[E]>` uses
    // for `len` elements; every element is initialised because all-zero is a
    // valid `E` (caller's precondition).
    unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(data, len)) }
}

/// Size of a transparent huge page on x86-64 and aarch64 Linux.
#[cfg(not(loom))]
const HUGE_PAGE: usize = 2 << 20;

/// Hints that `len` bytes at `data` (a fresh allocation nobody has touched
/// yet) be backed by transparent huge pages. Linux only; a no-op elsewhere,
/// and any error (huge pages off, an old kernel) is ignored: it is a hint.
#[cfg(all(target_os = "linux", not(loom)))]
fn advise_huge(data: *mut u8, len: usize) {
    use std::os::raw::{c_int, c_void};

    extern "C" {
        fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
    }
    const MADV_HUGEPAGE: c_int = 14;
    const PAGE: usize = 4096;
    // `madvise` wants a page-aligned start: advise the whole pages inside
    // the allocation only.
    let start = (data as usize).next_multiple_of(PAGE);
    let end = (data as usize + len) & !(PAGE - 1);
    if end > start {
        // SAFETY: `start..end` lies inside one live allocation of ours, and
        // MADV_HUGEPAGE changes no memory contents or permissions.
        unsafe { madvise(start as *mut c_void, end - start, MADV_HUGEPAGE) };
    }
}

#[cfg(all(not(target_os = "linux"), not(loom)))]
fn advise_huge(_data: *mut u8, _len: usize) {}

/// Where an index lives: every paged array has the same geometry, so one
/// `Loc` serves the slot array and a thread's count table alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    /// `log2(i + PAGE_BASE)`: the page's place in the directory (page
    /// `top - LOG_BASE`).
    top: usize,
    /// `i + PAGE_BASE`: its bits below `top` are the offset in the page.
    v: usize,
}

/// `log2(PAGE_BASE)`: unused directory slots before page 0's.
const LOG_BASE: usize = PAGE_BASE.trailing_zeros() as usize;

impl Loc {
    /// Where index `i` lives.
    #[inline]
    pub(crate) fn of(i: usize) -> Loc {
        // `v` lies in `PAGE_BASE << p .. 2 * PAGE_BASE << p` for `i`'s page
        // `p`: its top bit names the page, the bits below it the offset.
        let v = i + PAGE_BASE;
        Loc {
            top: v.ilog2() as usize,
            v,
        }
    }

    /// The page.
    #[inline]
    fn page(self) -> usize {
        self.top - LOG_BASE
    }

    /// The offset of the entry in its page.
    #[inline]
    fn off(self) -> usize {
        self.v ^ (1 << self.top)
    }
}

/// A growable array of `E` with stable addresses (see the module docs).
pub(crate) struct Pages<E> {
    /// Page `p` at `p + LOG_BASE` (null: not allocated; the first
    /// `LOG_BASE` are never used).
    pages: [AtomicPtr<E>; LOG_BASE + MAX_PAGES],
    /// The array owns its pages like a `Vec<Box<[E]>>` (for auto traits and
    /// drop check).
    _owns: PhantomData<Box<[E]>>,
}

impl<E: PageEntry> Pages<E> {
    pub(crate) fn new() -> Self {
        Pages {
            pages: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            _owns: PhantomData,
        }
    }

    /// Number of entries in page `p`.
    #[inline]
    fn page_len(p: usize) -> usize {
        PAGE_BASE << p
    }

    /// The entry at `i`, or `None` if its page was never allocated.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&E> {
        self.at(Loc::of(i))
    }

    /// The entry at `loc`, or `None` if its page was never allocated.
    #[inline]
    pub(crate) fn at(&self, loc: Loc) -> Option<&E> {
        let page = self.pages.get(loc.top)?.load(Ordering::Acquire);
        if page.is_null() {
            return None;
        }
        // SAFETY: a non-null page pointer was installed by `get_or_alloc`
        // from a `Box<[E]>` of `page_len(loc.page())` entries (the acquire
        // load pairs with its release CAS, so the entries are initialised),
        // `loc.off() < page_len(loc.page())` by construction of `Loc::of`,
        // and pages are freed only in `Drop`, which cannot run while `&self`
        // is borrowed.
        Some(unsafe { &*page.add(loc.off()) })
    }

    /// The entry at `loc`, whose page the calling thread knows is
    /// installed: no range check, no null check.
    ///
    /// # Safety
    ///
    /// `loc` is the location of an index below
    /// [`MAX_CAPACITY`](crate::limits::MAX_CAPACITY) (so its page is one of
    /// the array's), and the calling thread has seen its page installed
    /// before: it read the page pointer non-null (or installed it) earlier.
    /// Pages are never uninstalled while `&self` lives, and a later load by
    /// the same thread cannot read an older value of the pointer (read-read
    /// coherence).
    #[inline(always)]
    pub(crate) unsafe fn at_installed(&self, loc: Loc) -> &E {
        debug_assert!(loc.page() < MAX_PAGES, "page {} out of range", loc.page());
        // SAFETY: `loc.top < LOG_BASE + MAX_PAGES` by the caller's
        // precondition.
        let page = unsafe { self.pages.get_unchecked(loc.top) }.load(Ordering::Acquire);
        debug_assert!(!page.is_null(), "page {} not installed", loc.page());
        if page.is_null() {
            // SAFETY: the page is installed (the caller's precondition).
            // Said so that the compiler drops the null test of an
            // `Option<&E>` built from the entry (an entry at offset 0 of a
            // null page would be null).
            unsafe { std::hint::unreachable_unchecked() }
        }
        // SAFETY: as in `at`; the page is non-null by the caller's
        // precondition.
        unsafe { &*page.add(loc.off()) }
    }

    /// The entry at `i`, allocating its page if needed. `None` if `i` is
    /// beyond [`MAX_CAPACITY`](crate::limits::MAX_CAPACITY).
    #[inline]
    pub(crate) fn get_or_alloc(&self, i: usize) -> Option<&E> {
        if let Some(e) = self.get(i) {
            return Some(e);
        }
        self.alloc_slow(i)
    }

    #[cold]
    fn alloc_slow(&self, i: usize) -> Option<&E> {
        let loc = Loc::of(i);
        let p = loc.page();
        let slot = self.pages.get(loc.top)?;
        let fresh = Self::new_page_raw(p);
        if let Err(_installed) =
            slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // Another thread installed this page first: free ours.
            // SAFETY: `fresh` is a page of `p` from `new_page_raw`, never shared.
            unsafe { Self::free_page(p, fresh) };
        }
        self.get(i)
    }

    /// A fresh page `p`, as a raw pointer to its first entry.
    fn new_page_raw(p: usize) -> *mut E {
        Box::into_raw(E::new_page(Self::page_len(p))).cast::<E>()
    }

    /// Frees page `p` at `page`.
    ///
    /// # Safety
    ///
    /// `page` came from [`Pages::new_page_raw`] for `p` and no reference
    /// into it is alive or will be made.
    unsafe fn free_page(p: usize, page: *mut E) {
        // SAFETY: `page` came from `Box::into_raw` of a `page_len(p)` slice
        // (caller's precondition).
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(page, Self::page_len(p))) });
    }

    /// Calls `f(first_index, page)` for every allocated page, in index order.
    pub(crate) fn for_each_page(&self, mut f: impl FnMut(usize, &[E])) {
        let mut first = 0;
        for (p, slot) in self.pages[LOG_BASE..].iter().enumerate() {
            let page = slot.load(Ordering::Acquire);
            if !page.is_null() {
                // SAFETY: as in `at`: an installed page of `page_len(p)`
                // initialised entries, alive while `&self` is.
                f(first, unsafe {
                    &*ptr::slice_from_raw_parts(page, Self::page_len(p))
                });
            }
            first += Self::page_len(p);
        }
    }
}

impl<E> Drop for Pages<E> {
    fn drop(&mut self) {
        for (p, slot) in self.pages[LOG_BASE..].iter().enumerate() {
            let page = slot.swap(ptr::null_mut(), Ordering::Acquire);
            if !page.is_null() {
                // SAFETY: installed pages come from `Box::into_raw` of a
                // `PAGE_BASE << p` slice; `&mut self` means no reference into
                // the page is alive, and the pointer was nulled so it is freed once.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(page, PAGE_BASE << p)) });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;

    #[test]
    fn loc_of_is_dense_and_contiguous() {
        let mut expect = (0, 0);
        for i in 0..10_000 {
            let loc = Loc::of(i);
            assert_eq!((loc.page(), loc.off()), expect, "index {i}");
            expect.1 += 1;
            if expect.1 == Pages::<AtomicU64>::page_len(expect.0) {
                expect = (expect.0 + 1, 0);
            }
        }
    }

    /// An entry found for an index is its page's entry at its offset: the
    /// one `for_each_page` shows there (pages found through the directory's
    /// leading-zero-count slots).
    #[test]
    fn lookups_land_at_their_page_offset() {
        let pages = Pages::<AtomicU64>::new();
        let probes = [0, 1, 31, 32, 33, 95, 96, 1_000, 4_095, 100_000];
        for &i in &probes {
            pages
                .get_or_alloc(i)
                .expect("in range")
                .store(i as u64 + 1, Ordering::Relaxed);
        }
        let mut found = 0;
        pages.for_each_page(|first, page| {
            for (k, e) in page.iter().enumerate() {
                let i = first + k;
                let want = if probes.contains(&i) { i as u64 + 1 } else { 0 };
                assert_eq!(e.load(Ordering::Relaxed), want, "index {i}");
                if want != 0 {
                    assert!(std::ptr::eq(e, pages.get(i).expect("allocated")));
                    found += 1;
                }
            }
        });
        assert_eq!(found, probes.len());
    }

    #[test]
    fn entries_are_stable_and_zeroed() {
        let pages = Pages::<AtomicU64>::new();
        assert!(pages.get(5).is_none());
        let e = pages.get_or_alloc(5).expect("in range") as *const AtomicU64;
        pages.get_or_alloc(5_000).expect("in range");
        assert_eq!(pages.get(5).expect("allocated") as *const _, e);
        assert_eq!(
            pages.get(4_999).expect("allocated").load(Ordering::Relaxed),
            0
        );
        assert!(pages
            .get_or_alloc(crate::limits::MAX_CAPACITY * 4)
            .is_none());
        let mut seen = Vec::new();
        pages.for_each_page(|first, page| seen.push((first, page.len())));
        let p = Loc::of(5_000).page();
        let first_of_p: usize = (0..p).map(Pages::<AtomicU64>::page_len).sum();
        assert_eq!(
            seen,
            vec![
                (0, PAGE_BASE),
                (first_of_p, Pages::<AtomicU64>::page_len(p))
            ]
        );
    }
}
