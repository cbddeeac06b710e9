//! Every limit of the crate, in one place.
//!
//! A handle's raw form is a `u64` below 2^53 (so it survives a JavaScript
//! number), laid out from the least significant bit as:
//!
//! | bits    | field      | meaning                                           |
//! |---------|------------|---------------------------------------------------|
//! | 0..24   | index      | slot index (at most 2^24 slots)                   |
//! | 24..45  | generation | bumped each time the slot is freed; wraps retire  |
//! | 45..53  | tag        | registry tag, `1..=255`, never 0 (so raw != 0)    |
//!
//! Counts are `u32`. A thread's count for one object is at most 2^21 - 1,
//! as its entry keeps the object's generation beside its explicit
//! references and its total (`local::MAX_COUNT`). An object's holds (one
//! per holding thread, pin and in-flight transfer) are at most 2^30 - 1,
//! as its state word keeps a pinned and an issued flag beside them
//! (`slot::MAX_HOLDS`). Under `cfg(loom)` pages are tiny so models reach
//! page boundaries in a handful of operations.

/// Bits of a handle holding the slot index.
pub(crate) const INDEX_BITS: u32 = 24;
/// Bits of a handle holding the slot generation.
pub(crate) const GEN_BITS: u32 = 21;
/// Bits of a handle holding the registry tag.
pub(crate) const TAG_BITS: u32 = 8;

/// Largest capacity a registry can have (number of slot indices).
pub(crate) const MAX_CAPACITY: usize = 1 << INDEX_BITS;
/// Largest generation; a slot whose generation would pass it is retired.
pub(crate) const MAX_GENERATION: u32 = (1 << GEN_BITS) - 1;
/// Tags run `1..=MAX_TAG`; tag 0 is never issued.
pub(crate) const MAX_TAG: u64 = (1 << TAG_BITS) - 1;

/// Raw handles and raw transfer tokens are below this bound (2^53).
pub(crate) const RAW_LIMIT: u64 = 1 << (INDEX_BITS + GEN_BITS + TAG_BITS);

/// Size of the first page of every paged array; page `p` holds `PAGE_BASE << p`
/// entries, so pages never move and there are at most [`MAX_PAGES`] of them.
#[cfg(not(loom))]
pub(crate) const PAGE_BASE: usize = 32;
/// Tiny pages under loom so models cross page boundaries.
#[cfg(loom)]
pub(crate) const PAGE_BASE: usize = 2;

/// Number of pages needed to cover [`MAX_CAPACITY`] indices (by construction
/// of `pages_for`, so every valid index has a page).
pub(crate) const MAX_PAGES: usize = pages_for(MAX_CAPACITY);

/// How many queued finalizations an ordinary registry call drains on the way
/// (bounded, so a call never turns into an unbounded pause); `pump()` drains all.
pub(crate) const DRAIN_BATCH: usize = 32;

/// The smallest `p` such that pages `0..p` cover `n` indices.
const fn pages_for(n: usize) -> usize {
    let mut pages = 0;
    let mut covered = 0;
    while covered < n {
        covered += PAGE_BASE << pages;
        pages += 1;
    }
    pages
}

// The layout is checked at compile time.
const _: () = assert!(RAW_LIMIT == 1 << 53, "raw ids must fit a JavaScript number");
const _: () = assert!(MAX_TAG >= 1 && PAGE_BASE.is_power_of_two());
