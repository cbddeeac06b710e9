//! The shared registry state and its protocol.
//!
//! Hot paths (`retain`/`release`/`get` of a handle the thread already holds)
//! touch only the calling thread's own [`ThreadTable`] entry plus a relaxed
//! read of the slot's generation. The slot's state word is written only on a
//! thread's 0↔1 transitions, pins and transfers (see [`crate::slot`]).
//! Locks (`alloc`, `tables`, `raw`, `pins`) guard bookkeeping only and are
//! never held while user code (`Drop` of `T`) runs.
//!
//! One file per concept: [`resolve`] (a handle to this thread's hold on its
//! object, the one path every operation starts with), [`acquire`],
//! [`release`], [`finalize`], [`transfer`], [`pin`], [`stats`], [`weak`], [`exit`]
//! (thread exit and the registry's drop), [`alloc`] (slot claims) and
//! [`deaths`] (observers, so the core names no upper layer).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::diag::{Diag, DiagConfig};
use crate::free::FreeList;
use crate::limits::TAG_BITS;
use crate::local::{Counter, ThreadTable, REF_ONE, ROOT_ONE};
use crate::page::Pages;
use crate::slot::Slot;
use crate::sync::{self, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};
use crate::ThreadExit;

mod acquire;
mod alloc;
pub(crate) mod deaths;
mod exit;
mod finalize;
mod pin;
mod release;
pub(crate) mod resolve;
mod stats;
mod transfer;
mod wake;
mod weak;

pub(crate) use acquire::Missed;
pub(crate) use resolve::Held;

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) capacity: u32,
    pub(crate) thread_exit: ThreadExit,
    pub(crate) home_finalization: bool,
    pub(crate) max_count: u32,
    pub(crate) max_generation: u32,
    pub(crate) diag: DiagConfig,
}

/// Every thread table, and what departed tables counted.
pub(crate) struct Tables<T> {
    /// Live threads' tables, and exited threads' that still hold something
    /// (leaked references, proxies dropped after thread exit).
    pub(crate) list: Vec<Arc<ThreadTable<T>>>,
    /// Objects inserted by tables no longer in `list`.
    pub(super) inserted: u64,
    /// Objects finalized by tables no longer in `list`.
    pub(super) finalized: u64,
    /// Values sent home by tables no longer in `list`, begun and done.
    pub(super) sending: u64,
    /// See `sending`.
    pub(super) sent: u64,
    /// Values taken out of an inbox and dropped by tables no longer in
    /// `list`.
    pub(super) received: u64,
}

impl<T> Tables<T> {
    /// `departed` (what tables no longer listed counted) plus every listed
    /// table's `count`.
    pub(super) fn total(&self, departed: u64, count: impl Fn(&ThreadTable<T>) -> &Counter) -> u64 {
        departed + self.list.iter().map(|t| count(t).get()).sum::<u64>()
    }
}

/// The state shared by all clones of a [`Registry`](crate::Registry).
///
/// `repr(C)`, aligned to a cache line: what every fast path reads (the tag,
/// the table-cache key, the limits and the first slot pages) shares the
/// first line.
#[repr(C, align(64))]
pub(crate) struct Inner<T> {
    pub(crate) tag: u64,
    /// The key of this registry in the per-thread table cache: its serial,
    /// unique for the life of the process (never reused, unlike addresses),
    /// shifted above the tag bits, ORed with its tag (which picks the
    /// cache slot, see `tid::TableCache`).
    pub(super) cache_key: u64,
    /// `config.capacity`: the general path's range check and the slot
    /// allocator's bound (the fast paths need no check: a slot past it is
    /// never claimed, see [`Inner::unheld_at`]).
    pub(crate) capacity: u32,
    /// `local::count_limit(config.max_count)`, beside the other fast-path
    /// fields: an entry is at the limit iff it is at least this (its total
    /// is its top field, see [`crate::local`]).
    pub(super) count_limit: u64,
    /// `count_limit - 1`: an entry `e` is held with room for one more
    /// reference iff `e - 1 < held_limit` (wrapping: one compare tests both
    /// `e != 0` and `e < count_limit`).
    pub(super) held_limit: u64,
    pub(super) slots: Pages<Slot<T>>,
    pub(crate) config: Config,
    pub(super) alloc: Mutex<FreeList>,
    /// Objects finalized by a thread without a table (an unclaimed transfer
    /// dropped on a fresh thread): the rare case of `len()`'s count.
    pub(super) loose_finalized: AtomicU64,
    /// Values sent home by threads without a table, begun and done (others
    /// count in their table: `sending`, `sent`).
    pub(super) loose_sending: AtomicU64,
    /// See `loose_sending`.
    pub(super) loose_sent: AtomicU64,
    /// Values taken out of an inbox and dropped by a thread without a table
    /// (a sender whose home exited meanwhile; others count in their table:
    /// `received`).
    pub(super) loose_received: AtomicU64,
    /// `tid` → this thread's table. Each cell is read and written only by
    /// the thread that currently owns that `tid`.
    pub(super) threads: Pages<AtomicPtr<ThreadTable<T>>>,
    /// Owns every table (see [`Tables`]).
    pub(super) tables: Mutex<Tables<T>>,
    pub(super) raw: Mutex<crate::token::RawTransfers>,
    /// Slot index → pins of its live object, for objects with any (the
    /// slot's state word carries only a pinned flag). Pins are rare: a
    /// lock is fine. Never held while user code runs.
    pub(super) pins: Mutex<HashMap<u32, u32>>,
    pub(super) drop_panics: AtomicU64,
    /// Events, misuse policy, origins (see [`crate::diag`]).
    pub(crate) diag: Diag,
    /// `close()` was called: no new inserts or claims.
    pub(super) closed: AtomicBool,
    /// Live `Registry` values (not proxies or transfers): the leak report
    /// goes out when the last one is dropped.
    pub(super) registries: AtomicU64,
    /// Observers of deaths (interners), see [`deaths`].
    pub(crate) deaths: deaths::Observers,
    pub(super) me: Weak<Inner<T>>,
}

/// Where a reference goes in a thread's entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Explicit (`insert`, `retain`, `claim`): releasable with `release`.
    Ref,
    /// A proxy or guard: released by its drop only.
    Root,
}

impl Kind {
    pub(super) fn one(self) -> u64 {
        match self {
            Kind::Ref => REF_ONE,
            Kind::Root => ROOT_ONE,
        }
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        crate::fork::install_fork_handler();
        let serial = sync::next_registry_serial() + 1;
        // Distinct among the registries alive (see `crate::tag`).
        let tag = crate::tag::alloc();
        // Serials count registries created: far below 2^(64 - TAG_BITS), so
        // the shift loses nothing and keys stay unique and non-zero.
        let cache_key = serial << TAG_BITS | tag;
        let diag = Diag::new(config.diag.clone());
        let deaths = deaths::Observers::new(diag.is_active());
        let count_limit = crate::local::count_limit(config.max_count);
        Arc::new_cyclic(|me| Inner {
            tag,
            cache_key,
            capacity: config.capacity,
            count_limit,
            // max_count >= 1 (the builder's clamp); 0 would refuse all.
            held_limit: count_limit.saturating_sub(1),
            slots: Pages::new(),
            config,
            alloc: Mutex::new(FreeList::default()),
            loose_finalized: AtomicU64::new(0),
            loose_sending: AtomicU64::new(0),
            loose_sent: AtomicU64::new(0),
            loose_received: AtomicU64::new(0),
            threads: Pages::new(),
            tables: Mutex::new(Tables {
                list: Vec::new(),
                inserted: 0,
                finalized: 0,
                sending: 0,
                sent: 0,
                received: 0,
            }),
            raw: Mutex::new(crate::token::RawTransfers::new(serial)),
            pins: Mutex::new(HashMap::new()),
            drop_panics: AtomicU64::new(0),
            diag,
            closed: AtomicBool::new(false),
            registries: AtomicU64::new(1),
            deaths,
            me: me.clone(),
        })
    }

    /// `local::count_limit(max_count)`: an entry is at the limit iff it is
    /// at least this (see [`Inner::has_room`]).
    #[inline]
    pub(crate) fn count_limit(&self) -> u64 {
        self.count_limit
    }

    /// `close()`: no new inserts or claims from now on.
    ///
    /// The fence pairs with the one in `insert` (see there): a `quiescent`
    /// check after `close` sees every insert that did not see `closed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        sync::fence(Ordering::SeqCst);
    }

    /// Whether `close()` was called.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// One more `Registry` value.
    pub(crate) fn registry_cloned(&self) {
        self.registries.fetch_add(1, Ordering::Relaxed);
    }

    /// One `Registry` value fewer; `true` if it was the last.
    pub(crate) fn registry_dropped(&self) -> bool {
        self.registries.fetch_sub(1, Ordering::AcqRel) == 1
    }
}
