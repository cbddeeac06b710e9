//! The floor of a checked per-thread count (issue 4, rows G1, G3 and G4;
//! issue 18: every floor is the cheapest correct code for its row, a true
//! lower bound: if tether beats one, the floor is wrong).
//!
//! What any registry must do at least to retain, release or borrow a handle
//! the calling thread already holds, if it counts references per thread and
//! refuses stale handles: find the thread's own count table (one
//! thread-local read), read the thread's own word for the handle's index
//! (one load: its count and the generation of the object it holds there —
//! stable while it holds it, so no shared word is read), check both, and
//! store the word back changed by one, sending a thread that holds nothing
//! yet to the access rule's path and its last release to the hold's (a
//! test each, as correct code must). Nothing else: no registry identity or range check,
//! no fork flag, no queued-finalization flag, no overflow check (64-bit
//! counts). tether does all of those as well, so it cannot be faster than
//! this; `Rc` does none of it (it already holds the pointer), so
//! this is the closest any handle-based design can come to `Rc`.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

thread_local! {
    /// The calling thread's word per slot: `count << 32 | generation` of
    /// the object it holds there (leaked once per thread and size).
    static COUNTS: Cell<&'static [Cell<u64>]> = const { Cell::new(&[]) };
}

/// One in a thread's word.
const ONE: u64 = 1 << 32;

/// A handle: slot index and generation in one word (`generation << 32 |
/// index`), as compact as tether's.
#[derive(Clone, Copy)]
pub struct Id(u64);

impl Id {
    fn new(index: usize, generation: u32) -> Id {
        Id(u64::from(generation) << 32 | index as u64)
    }

    #[inline]
    fn index(self) -> usize {
        self.0 as u32 as usize
    }

    #[inline]
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The same id as two fields, the form `Floor::first_and_last` takes.
    pub fn split(self) -> Split {
        Split {
            index: self.index(),
            generation: self.generation(),
        }
    }
}

/// `c`, with its address in one register: the word is then read and
/// written as `(reg)`, not `(table, index, 8)`. Same instructions but one
/// `lea`; on the Xeon this was measured on, a reload of a word just stored
/// through one register forwards much faster (tether's entries are read
/// that way): a guard's borrow at the floor took 5.0 ns with the indexed
/// form, 2.7 ns with this one. A floor is the cheapest code, so it takes
/// the faster form (an empty `asm!` hides the indexing from the compiler;
/// it emits nothing).
#[inline(always)]
fn direct(c: &'static Cell<u64>) -> &'static Cell<u64> {
    let mut p: *const Cell<u64> = c;
    // SAFETY: the asm block is empty: it leaves `p` as it was and touches
    // no memory, stack or flags (`nomem`: the pointer is never
    // dereferenced).
    #[allow(clippy::pointers_in_nomem_asm_block)]
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags));
    }
    // SAFETY: `p` is still `c`.
    unsafe { &*p }
}

/// An id as its two fields. The G3 floor takes this form, the G1 and G4
/// floors the one-word [`Id`]: on the Xeon this was measured on, each is
/// the faster form for its row around `black_box` (G3's floor 16.9 ns with
/// this one against 18.6 ns with a word; G4's 1.9 ns with a word against
/// 3.3 ns with this one), and a floor is the cheapest correct code.
#[derive(Clone, Copy)]
pub struct Split {
    index: usize,
    generation: u32,
}

/// `n` live slots, each held once by the calling thread.
pub struct Floor {
    states: Vec<AtomicU64>,
    values: Vec<[u64; 2]>,
}

impl Floor {
    /// `n` live objects held once by the calling thread.
    pub fn new(n: usize) -> (Floor, Vec<Id>) {
        let counts: Vec<Cell<u64>> = (0..n).map(|_| Cell::new(ONE | 1)).collect();
        COUNTS.with(|c| c.set(Box::leak(counts.into_boxed_slice())));
        let floor = Floor {
            states: (0..n).map(|_| AtomicU64::new(1 << 32 | 1)).collect(),
            values: (0..n as u64).map(|i| [i, !i]).collect(),
        };
        let ids = (0..n).map(|index| Id::new(index, 1)).collect();
        (floor, ids)
    }

    /// The thread's word for `id` and its value, if the thread holds the
    /// object `id` names (a count, and `id`'s generation). A thread holding
    /// nothing there takes another path (the access rule).
    #[inline]
    fn mine(&self, id: Id) -> Option<(&'static Cell<u64>, u64)> {
        let c = direct(COUNTS.with(Cell::get).get(id.index())?);
        let w = c.get();
        (w >= ONE && w as u32 == id.generation()).then_some((c, w))
    }

    /// +1 for the calling thread, which holds the object; its count after.
    #[inline]
    pub fn retain(&self, id: Id) -> Option<u64> {
        let (c, w) = self.mine(id)?;
        c.set(w + ONE);
        Some((w >> 32) + 1)
    }

    /// -1 for the calling thread; its count after. The thread's last
    /// reference gives up its hold on the shared word (never here).
    #[inline]
    pub fn release(&self, id: Id) -> Option<u64> {
        let (c, w) = self.mine(id)?;
        Some(minus_one(c, w, || self.last(id)))
    }

    /// The calling thread's last reference is gone: its hold goes.
    #[cold]
    #[inline(never)]
    fn last(&self, id: Id) {
        self.states[id.index()].fetch_sub(1, Ordering::Release);
    }

    /// Gives the calling thread its own count table, holding nothing (for a
    /// second thread; `new` set up the creating thread's).
    pub fn adopt(&self) {
        let counts: Vec<Cell<u64>> = (0..self.states.len()).map(|_| Cell::new(0)).collect();
        COUNTS.with(|c| c.set(Box::leak(counts.into_boxed_slice())));
    }

    /// A thread's first and last reference (row G3) at the floor: the
    /// thread's own count +1 and -1, and what any shared object needs to
    /// learn that one more thread holds it and then one fewer: one atomic
    /// read-modify-write of its shared word each way, exactly `Arc`
    /// clone+drop's two. The generation is checked on the value the
    /// `fetch_add` returns (a stale id would undo its add), so no load
    /// precedes either RMW and nothing else touches the shared line: under
    /// contention this costs what the two RMWs cost.
    #[inline]
    pub fn first_and_last(&self, id: Split) -> Option<()> {
        let state = self.states.get(id.index)?;
        let c = COUNTS.with(Cell::get).get(id.index)?;
        hold_checked(state, id.generation)?;
        c.set(ONE | u64::from(id.generation));
        // Two calls in a real program: the -1 reloads the word.
        let c = black_box(c);
        c.set(c.get() - ONE);
        state.fetch_sub(1, Ordering::Release);
        Some(())
    }

    /// [`Floor::first_and_last`] as the two calls a program makes, each
    /// with its own result (the count after), the way row G3 calls
    /// tether's `retain` and `release`: the thread's first reference...
    #[inline]
    pub fn first(&self, id: Id) -> Option<u64> {
        let state = self.states.get(id.index())?;
        let c = direct(COUNTS.with(Cell::get).get(id.index())?);
        hold_checked(state, id.generation())?;
        c.set(ONE | u64::from(id.generation()));
        Some(1)
    }

    /// ... and its last one: the word reloaded and checked, -1, the
    /// hold's `fetch_sub`.
    #[inline]
    pub fn last_ref(&self, id: Id) -> Option<u64> {
        let (c, w) = self.mine(id)?;
        Some(minus_one(c, w, || {
            self.states[id.index()].fetch_sub(1, Ordering::Release);
        }))
    }

    /// Borrows the value the way a guard does (row G4): +1 for the
    /// calling thread, which holds the object; the guard's drop -1s the
    /// thread's word again. Any code may run while a guard lives — other
    /// retains and releases of the same object on this thread, the release
    /// of every explicit reference (then the guard is the thread's last) —
    /// so the drop reloads the word and tests for the last reference, as
    /// correct code must.
    #[inline]
    pub fn borrow(&self, id: Id) -> Option<FloorGuard<'_>> {
        let (c, w) = self.mine(id)?; // not held: the access rule's path
        c.set(w + ONE);
        Some(FloorGuard {
            floor: self,
            c,
            id,
            value: &self.values[id.index()],
        })
    }

    /// Copies the value out between a +1 and a -1 with the count kept in a
    /// register (nothing but the read runs meanwhile, so the -1 is a store,
    /// not a load and a store). Cheaper than any guard can be, and not one:
    /// no code can run while it "holds" the value, so its +1 and -1 protect
    /// nothing. A reference row beside G4's floor, so what the guard's
    /// reload costs is on record.
    #[inline]
    pub fn get(&self, id: Id) -> Option<[u64; 2]> {
        let (c, w) = self.mine(id)?; // not held: the access rule's path
        c.set(w + ONE);
        let v = black_box(self.values[id.index()]);
        c.set(w);
        Some(v)
    }
}

/// A borrow at the floor (see [`Floor::borrow`]).
pub struct FloorGuard<'a> {
    floor: &'a Floor,
    c: &'static Cell<u64>,
    id: Id,
    value: &'a [u64; 2],
}

impl FloorGuard<'_> {
    /// The value, as `Deref` would give it.
    #[inline]
    pub fn value(&self) -> &[u64; 2] {
        self.value
    }
}

impl Drop for FloorGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        guard_gone(self.c, || self.floor.last(self.id));
    }
}

/// A hold on a shared `state` word at the floor: one `fetch_add`, the
/// generation checked on the value it returns (a stale id undoes its add).
#[inline(always)]
fn hold_checked(state: &AtomicU64, generation: u32) -> Option<()> {
    let old = state.fetch_add(1, Ordering::Acquire);
    if (old >> 32) as u32 != generation {
        state.fetch_sub(1, Ordering::Release);
        return None;
    }
    Some(())
}

/// -1 on the thread's held word `w` in `c`: the count after. The thread's
/// last reference clears the word (generation and all) and takes the hold's
/// path, `last`.
#[inline(always)]
fn minus_one(c: &Cell<u64>, w: u64, last: impl FnOnce()) -> u64 {
    let n = (w >> 32) - 1;
    c.set(if n == 0 { 0 } else { w - ONE });
    if n == 0 {
        last();
    }
    n
}

/// A guard's drop at the floor: reload the thread's word, -1, and the last
/// reference's path (`last`) if it was the thread's last.
#[inline(always)]
fn guard_gone(c: &Cell<u64>, last: impl FnOnce()) {
    let w = c.get() - ONE;
    if w < ONE {
        c.set(0);
        last();
    } else {
        c.set(w);
    }
}

/// The floor of an RAII proxy (row G1, `Proxy` clone+drop): what any handle
/// that is `Clone`, derefs to the value and keeps the registry alive must do
/// if the thread's references are counted per object. It keeps the
/// registry alive (an `Rc`: `Rc` clone+drop's whole cost), counts the
/// clone in the thread's own word for the object (+1 / -1, a 64-bit count
/// that cannot overflow), carries a pointer to the value, and tests for the
/// thread's last reference on drop.
pub struct ProxyFloor {
    home: std::rc::Rc<()>,
    entry: &'static Cell<u64>,
    value: &'static [u64; 2],
}

impl ProxyFloor {
    /// A first proxy to a fresh (leaked) object.
    pub fn new() -> ProxyFloor {
        ProxyFloor {
            home: std::rc::Rc::new(()),
            entry: Box::leak(Box::new(Cell::new(1))),
            value: Box::leak(Box::new([1, 2])),
        }
    }

    /// The value, as `Deref` would give it.
    pub fn value(&self) -> &[u64; 2] {
        self.value
    }
}

impl Clone for ProxyFloor {
    #[inline]
    fn clone(&self) -> Self {
        self.entry.set(self.entry.get() + 1);
        ProxyFloor {
            home: std::rc::Rc::clone(&self.home),
            entry: self.entry,
            value: self.value,
        }
    }
}

impl Drop for ProxyFloor {
    #[inline]
    fn drop(&mut self) {
        let n = self.entry.get() - 1;
        self.entry.set(n);
        if n == 0 {
            hold_gone();
        }
    }
}

/// The thread's last reference to an object is gone (a proxy's, or a
/// [`DesignFloor`] reference's): its hold would go. Never here.
#[cold]
#[inline(never)]
fn hold_gone() {
    black_box(());
}

/// Handle layout of [`DesignFloor`] ids, tether's: `tag << 45 | generation
/// << 24 | index`.
const D_INDEX_BITS: u32 = 24;
const D_GEN_BITS: u32 = 21;
const D_TAG_SHIFT: u32 = D_INDEX_BITS + D_GEN_BITS;
/// Slots of the thread-local table cache, one per tag (tether's size).
const D_SLOTS: usize = 256;
/// The tag of every [`DesignFloor`] (one registry at a time per thread).
const D_TAG: u64 = 7;
/// The pinned flag of a [`DesignFloor`] object's shared word.
const D_PINNED: u64 = 1 << 31;
/// The holds of a [`DesignFloor`] object's shared word.
const D_HOLDS: u64 = (1 << 30) - 1;

/// A thread's count table in one registry, at the floor: the drain flag
/// beside the counts, flat (leaked once per thread and registry).
struct DTable {
    /// Values queued to this thread as their home (DESIGN §5): never set
    /// here, but read by every call, as DESIGN asks.
    pending: AtomicBool,
    counts: Box<[Cell<u64>]>,
}

thread_local! {
    /// The calling thread's table cache: per tag, the registry's key and
    /// the thread's table in it (tether's shape: direct-mapped by the
    /// handle's tag, 4 KiB).
    static D_CACHE: [(Cell<u64>, Cell<*const DTable>); D_SLOTS] =
        const { [const { (Cell::new(0), Cell::new(std::ptr::null())) }; D_SLOTS] };
}

/// Gives the calling thread a table of `n` words, each `word`, in the
/// registry `key` (under [`D_TAG`]'s cache slot), leaked for good.
fn install(key: u64, n: usize, word: u64) {
    let table: &'static DTable = Box::leak(Box::new(DTable {
        pending: AtomicBool::new(false),
        counts: (0..n).map(|_| Cell::new(word)).collect(),
    }));
    D_CACHE.with(|c| {
        let slot = &c[D_TAG as usize % D_SLOTS];
        slot.0.set(key);
        slot.1.set(table);
    });
}

/// A handle of a [`DesignFloor`], laid out as tether's.
#[derive(Clone, Copy)]
pub struct DId(u64);

impl DId {
    #[inline]
    fn index(self) -> usize {
        self.0 as usize & ((1 << D_INDEX_BITS) - 1)
    }

    #[inline]
    fn generation(self) -> u32 {
        (self.0 >> D_INDEX_BITS) as u32 & ((1 << D_GEN_BITS) - 1)
    }
}

/// What DESIGN asks of every `retain` and `release` of a held handle, at
/// the floor (issue 18; a reference row, never a target's baseline). It is
/// [`Floor`]'s retain and release (the thread's own word, its count and
/// generation checked) plus what DESIGN and issue 18 ask of each call
/// that the floor leaves out, each in its cheapest form:
///
/// * **which registry**: a thread uses several (issue 18), and a handle
///   of another registry is an error. The handle's tag picks a slot of a
///   thread-local cache, and the slot's key must be this registry's
///   (tether's way: one shift, one mask, one thread-local load, a compare,
///   the table's address);
/// * **the drain check** (DESIGN §5, "one relaxed load when nothing is
///   pending"): one relaxed load of a flag in the thread's table itself
///   (tether's flag sits behind a pointer: this is cheaper);
/// * **a bounded count**: counts are reported as `u32` and overflow is an
///   error, so `retain` compares against a limit (folded into the "held"
///   test: one compare).
///
/// The counts are one flat array with a bounds check, which is cheaper
/// than tether's pages and enough for this row (nothing keeps an entry's
/// address across calls; a guard would). One registry per `DesignFloor`;
/// each thread that uses it has its own table (`new`'s thread holds every
/// object, `adopt`'s none). A thread's first reference and its last (row
/// G3, [`DesignFloor::first`] and [`DesignFloor::last_ref`]) also change
/// the object's shared word, as DESIGN's access rule asks.
pub struct DesignFloor {
    values: Vec<[u64; 2]>,
    /// Each object's shared word, `generation << 32 | pinned << 31 |
    /// holds` (tether's): what a thread's first reference and its last
    /// change (row G3). Every object is pinned (G3's object is).
    states: Vec<AtomicU64>,
    key: u64,
    /// `(u32::MAX as u64) << 32 - ONE`: a held word with room is below it.
    room: u64,
}

impl DesignFloor {
    /// `n` live objects held once by the calling thread, under a registry
    /// tag and key as a registry's would be: any tag (1..=255), a key no
    /// other registry has.
    pub fn new(n: usize) -> (DesignFloor, Vec<DId>) {
        let (tag, key) = (D_TAG, 0x7e7e_7e7e);
        install(key, n, ONE | 1);
        let ids = (0..n as u64)
            .map(|i| DId(tag << D_TAG_SHIFT | 1 << D_INDEX_BITS | i))
            .collect();
        let room = (u64::from(u32::MAX) << 32) - ONE;
        let values = (0..n as u64).map(|i| [i, !i]).collect();
        // Generation 1, pinned, held by the pin and the creating thread.
        let states = (0..n)
            .map(|_| AtomicU64::new(1 << 32 | D_PINNED | 2))
            .collect();
        (
            DesignFloor {
                values,
                states,
                key,
                room,
            },
            ids,
        )
    }

    /// Gives the calling thread its own table in this registry, holding
    /// nothing (for a first reference, row G3; `new` set up the creating
    /// thread's, which holds every object).
    pub fn adopt(&self) {
        install(self.key, self.states.len(), 0);
    }

    /// `id` with its tag or its generation changed by one: a handle of
    /// another registry, or of another object at the same index.
    pub fn others(id: DId) -> [DId; 2] {
        [DId(id.0 ^ 1 << D_TAG_SHIFT), DId(id.0 ^ 1 << D_INDEX_BITS)]
    }

    /// The calling thread's word for `id` and its value, if its table
    /// cache holds this registry for `id`'s tag, nothing is pending, the
    /// index is in range and the word is `id`'s generation (held or not).
    #[inline]
    fn word(&self, id: DId) -> Option<(&'static Cell<u64>, u64)> {
        let c = self.entry(id)?;
        let w = c.get();
        (w as u32 == id.generation()).then_some((c, w))
    }

    /// The calling thread's word for `id`'s index, if its table cache
    /// holds this registry for `id`'s tag, nothing is pending and the index
    /// is in range.
    #[inline]
    fn entry(&self, id: DId) -> Option<&'static Cell<u64>> {
        let tag = (id.0 >> D_TAG_SHIFT) as usize % D_SLOTS;
        let table = D_CACHE.with(|c| {
            let (key, table) = &c[tag];
            (key.get() == self.key).then(|| table.get())
        })?;
        // SAFETY: a slot holds this registry's key only together with the
        // table `new` leaked for it, which lives forever.
        let table: &'static DTable = unsafe { &*table };
        if table.pending.load(Ordering::Relaxed) {
            return None; // the drain's path
        }
        Some(direct(table.counts.get(id.index())?))
    }

    /// +1 for the calling thread if it holds the object and has room: its
    /// word and the word's value before.
    #[inline]
    fn add(&self, id: DId) -> Option<(&'static Cell<u64>, u64)> {
        let (c, w) = self.word(id)?;
        // Held (a count of at least one) and below the limit, in one compare.
        if w.wrapping_sub(ONE) >= self.room {
            return None; // not held (the access rule's path) or overflow
        }
        c.set(w + ONE);
        Some((c, w))
    }

    /// +1 for the calling thread, which holds the object and has room; its
    /// count after.
    #[inline]
    pub fn retain(&self, id: DId) -> Option<u64> {
        let (_, w) = self.add(id)?;
        Some((w >> 32) + 1)
    }

    /// -1 for the calling thread, which holds the object; its count after.
    #[inline]
    pub fn release(&self, id: DId) -> Option<u64> {
        let (c, w) = self.word(id)?;
        if w < ONE {
            return None; // not held
        }
        Some(minus_one(c, w, hold_gone))
    }

    /// The calling thread's first reference (row G3) with what DESIGN asks
    /// of it, at the floor: [`DesignFloor::retain`]'s lookup (which
    /// registry, the drain check) finding the thread's word empty, then the
    /// access rule on the object's shared word (DESIGN §3, rules 1, 4 and
    /// 5): it must be the handle's generation and live (holds > 0: a dead
    /// object is never resurrected), pinned (else the thread must be its
    /// home: not here) and below the holds limit, all decided on one read
    /// before any write (a thread with no right to the object changes
    /// nothing), then one compare-and-swap from exactly that value. The
    /// count after (1).
    #[inline]
    pub fn first(&self, id: DId) -> Option<u64> {
        let c = self.entry(id)?;
        if c.get() != 0 {
            return None; // held: retain's path
        }
        let state = &self.states[id.index()];
        let mut s = state.load(Ordering::Acquire);
        loop {
            let holds = s & D_HOLDS;
            if (s >> 32) as u32 != id.generation()
                || s & D_PINNED == 0
                || holds.wrapping_sub(1) >= D_HOLDS - 1
            {
                return None; // stale, dead, not pinned, or at the limit
            }
            match state.compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        c.set(ONE | u64::from(id.generation()));
        Some(1)
    }

    /// The calling thread's reference released (its last, row G3: then
    /// the thread's hold goes, one `fetch_sub`); its count after.
    #[inline]
    pub fn last_ref(&self, id: DId) -> Option<u64> {
        let (c, w) = self.word(id)?;
        if w < ONE {
            return None; // not held
        }
        Some(minus_one(c, w, || {
            self.states[id.index()].fetch_sub(1, Ordering::Release);
        }))
    }

    /// Borrows the value the way a guard does (row G4), with DESIGN's
    /// per-call work: [`DesignFloor::retain`]'s +1, and the guard's drop
    /// as [`Floor::borrow`]'s (reload, -1, test for the last reference).
    #[inline]
    pub fn borrow(&self, id: DId) -> Option<DesignGuard<'_>> {
        let (c, _) = self.add(id)?;
        Some(DesignGuard {
            c,
            value: &self.values[id.index()],
        })
    }
}

/// A borrow of a [`DesignFloor`] (see [`DesignFloor::borrow`]).
pub struct DesignGuard<'a> {
    c: &'static Cell<u64>,
    value: &'a [u64; 2],
}

impl DesignGuard<'_> {
    /// The value, as `Deref` would give it.
    #[inline]
    pub fn value(&self) -> &[u64; 2] {
        self.value
    }
}

impl Drop for DesignGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        guard_gone(self.c, hold_gone);
    }
}
