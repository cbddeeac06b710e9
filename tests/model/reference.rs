//! The reference model: per-thread counts in ordinary maps, and the events
//! and drops each change must produce.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tether::{Error, Handle, InternError, Released};

use super::script::Script;
use super::worker::COORDINATOR;
use super::{DRAIN_BATCH, WORKERS};

/// Bits of a raw handle below the generation (tether's documented layout).
const INDEX_BITS: u32 = 24;
/// Bits of the generation.
const GEN_BITS: u32 = 21;
/// Raw ids shift the registry tag this far (handles and transfer tokens).
pub const TAG_SHIFT: u32 = INDEX_BITS + GEN_BITS;

/// `(tag, generation, index)` of a handle, per the layout in `Handle`'s docs.
pub fn parts(h: Handle) -> (u64, u32, usize) {
    let raw = h.to_raw();
    (
        raw >> TAG_SHIFT,
        ((raw >> INDEX_BITS) & ((1 << GEN_BITS) - 1)) as u32,
        (raw & ((1 << INDEX_BITS) - 1)) as usize,
    )
}

/// One event, as the model predicts it and as the hook's are compared:
/// `(thread identity, event name, handle, details)`. Misuse events carry
/// the operation and the error in `detail` (and no handle), thread exits
/// their counts, leak reports their objects' handles.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ev {
    pub who: usize,
    pub kind: &'static str,
    pub handle: Option<u64>,
    pub detail: String,
}

impl Ev {
    pub fn misuse(who: usize, operation: &str, error: Error) -> Ev {
        Ev {
            who,
            kind: "misuse",
            handle: None,
            detail: format!("{operation}: {error:?}"),
        }
    }

    pub fn exited(who: usize, released: usize, kept: usize) -> Ev {
        Ev {
            who,
            kind: "thread_exited",
            handle: None,
            detail: format!("released {released}, kept {kept}"),
        }
    }

    pub fn leaked(who: usize, mut handles: Vec<u64>) -> Ev {
        handles.sort_unstable();
        Ev {
            who,
            kind: "leaked",
            handle: None,
            detail: format!("{handles:?}"),
        }
    }
}

/// Whether an error means a caller bug (the registry then emits `Misuse`):
/// the model's own list, from the `Event::Misuse` docs.
pub fn is_misuse(e: Error) -> bool {
    matches!(
        e,
        Error::Stale(_)
            | Error::Invalid(_)
            | Error::ForeignRegistry(_)
            | Error::NotHeld(_)
            | Error::NotPinned(_)
            | Error::TransferClaimed
    )
}

/// A reference is explicit (`insert`, `retain`, `claim`) or a root (a
/// proxy; guards never outlive a step).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ref,
    Root,
}

pub struct MObj {
    pub val: u32,
    pub handle: Handle,
    pub home: usize,
    /// Explicit references per thread identity.
    pub refs: HashMap<usize, u32>,
    /// Live proxies per thread identity.
    pub roots: HashMap<usize, u32>,
    pub pins: u32,
    /// Unclaimed `Transfer` objects and raw tokens.
    pub transfers: u32,
    pub live: bool,
    /// The interner key it was made for.
    pub key: Option<u8>,
}

impl MObj {
    fn of(&mut self, kind: Kind) -> &mut HashMap<usize, u32> {
        match kind {
            Kind::Ref => &mut self.refs,
            Kind::Root => &mut self.roots,
        }
    }

    /// Zero iff nothing keeps the object alive.
    pub fn holds(&self) -> u32 {
        self.refs.values().sum::<u32>()
            + self.roots.values().sum::<u32>()
            + self.pins
            + self.transfers
    }

    /// Every thread's count (explicit references plus proxies).
    pub fn totals(&self) -> HashMap<usize, u32> {
        let mut all = self.refs.clone();
        for (&who, &n) in &self.roots {
            *all.entry(who).or_insert(0) += n;
        }
        all
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum TState {
    /// An unclaimed `Transfer<T>` (kept by the coordinator between steps).
    Object,
    Raw(u64),
    Gone,
}

pub struct MTransfer {
    pub obj: usize,
    pub state: TState,
}

/// A proxy, kept by the worker thread that owns it.
pub struct MProxy {
    pub obj: usize,
    pub owner: usize,
    pub live: bool,
}

pub struct Model {
    pub home_finalization: bool,
    pub exit_release: bool,
    pub capacity: usize,
    pub max_count: u32,
    pub generation_limit: u32,
    pub objs: Vec<MObj>,
    /// Identity of the thread in each worker position.
    pub ident: [usize; WORKERS],
    pub alive: Vec<bool>,
    /// Whether the identity has a table in the registry (it made a call that
    /// registers: its exit then emits `ThreadExited`).
    pub registered: Vec<bool>,
    /// Values (and their handles) queued for each identity's home inbox.
    pub pending: Vec<VecDeque<(u32, Handle)>>,
    pub transfers: Vec<MTransfer>,
    pub tokens: Vec<u64>,
    pub proxies: Vec<MProxy>,
    /// Interner keys with a live object.
    pub keys: HashMap<u8, usize>,
    pub closed: bool,
    pub next_val: u32,
    /// Each slot's generation: the generation of its next object. An id
    /// naming a generation beyond it was never issued.
    pub slot_gen: Vec<u32>,
    /// Slots whose generation ran out (never reused).
    pub retired: Vec<bool>,
    /// Drops the current step must produce.
    pub drops: Vec<(u32, usize)>,
    /// Events the current step must produce.
    pub events: Vec<Ev>,
}

impl Model {
    pub fn new(s: &Script) -> Model {
        Model {
            home_finalization: s.home_finalization,
            exit_release: s.thread_exit_release,
            capacity: s.capacity,
            max_count: s.max_count.max(1), // `max_count(0)` is taken as 1
            generation_limit: s.generation_limit,
            objs: Vec::new(),
            ident: [0, 1, 2],
            alive: vec![true; WORKERS],
            registered: vec![false; WORKERS],
            pending: vec![VecDeque::new(); WORKERS],
            transfers: Vec::new(),
            tokens: Vec::new(),
            proxies: Vec::new(),
            keys: HashMap::new(),
            closed: false,
            next_val: 0,
            slot_gen: vec![0; s.capacity],
            retired: vec![false; s.capacity],
            drops: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn live(&self) -> usize {
        self.objs.iter().filter(|o| o.live).count()
    }

    pub fn retired_slots(&self) -> usize {
        self.retired.iter().filter(|&&r| r).count()
    }

    /// No slot is free: an insert is `Full`.
    pub fn full(&self) -> bool {
        self.live() + self.retired_slots() == self.capacity
    }

    /// Explicit references of `who` to `o`.
    pub fn refs(&self, o: usize, who: usize) -> u32 {
        self.objs[o].refs.get(&who).copied().unwrap_or(0)
    }

    /// `who`'s count of `o`: explicit references plus proxies.
    pub fn total(&self, o: usize, who: usize) -> u32 {
        self.refs(o, who) + self.objs[o].roots.get(&who).copied().unwrap_or(0)
    }

    /// Whether `who` may take one more reference to `o` it already holds.
    pub fn has_room(&self, o: usize, who: usize) -> bool {
        self.total(o, who) < self.max_count
    }

    /// Pushes an event about object `o`.
    pub fn ev(&mut self, kind: &'static str, o: usize, who: usize) {
        let handle = Some(self.objs[o].handle.to_raw());
        self.events.push(Ev {
            who,
            kind,
            handle,
            detail: String::new(),
        });
    }

    /// A failed call of `operation`: `Misuse` if the error is a caller bug.
    pub fn failed(&mut self, operation: &str, e: Error, who: usize) {
        if is_misuse(e) {
            self.events.push(Ev::misuse(who, operation, e));
        }
    }

    /// The home drains up to `limit` queued values.
    pub fn drain(&mut self, who: usize, limit: usize) -> usize {
        let n = self.pending[who].len().min(limit);
        for _ in 0..n {
            let (v, h) = self.pending[who].pop_front().unwrap();
            self.drops.push((v, who));
            self.events.push(Ev {
                who,
                kind: "finalized",
                handle: Some(h.to_raw()),
                detail: String::new(),
            });
        }
        n
    }

    /// An ordinary call's drain: one bounded batch.
    pub fn drain_batch(&mut self, who: usize) {
        self.drain(who, DRAIN_BATCH);
    }

    /// A new object in a slot the registry chose (checked by the harness).
    pub fn insert(&mut self, val: u32, handle: Handle, who: usize, kind: Kind) -> usize {
        let o = self.objs.len();
        self.objs.push(MObj {
            val,
            handle,
            home: who,
            refs: HashMap::new(),
            roots: HashMap::new(),
            pins: 0,
            transfers: 0,
            live: true,
            key: None,
        });
        self.ev("inserted", o, who);
        self.take(o, who, kind);
        if kind == Kind::Root {
            self.proxies.push(MProxy {
                obj: o,
                owner: who,
                live: true,
            });
        }
        o
    }

    /// One more reference of `kind` for `who` (checks are the caller's);
    /// returns `who`'s count after.
    pub fn take(&mut self, o: usize, who: usize, kind: Kind) -> u32 {
        if self.total(o, who) == 0 {
            self.ev("first_reference", o, who);
        }
        *self.objs[o].of(kind).entry(who).or_insert(0) += 1;
        self.total(o, who)
    }

    /// One reference of `kind` fewer for `who`; `LastReference` if that was
    /// its last. Does not finalize.
    fn untake(&mut self, o: usize, who: usize, kind: Kind) {
        let counts = self.objs[o].of(kind);
        let c = counts.get_mut(&who).expect("the model holds it");
        *c -= 1;
        if *c == 0 {
            counts.remove(&who);
        }
        if self.total(o, who) == 0 {
            self.ev("last_reference", o, who);
        }
    }

    /// Gives up one reference of `kind`: finalizes if it was the last hold.
    pub fn give_up(&mut self, o: usize, who: usize, kind: Kind) -> Released {
        self.untake(o, who, kind);
        self.after_drop(o, who)
    }

    /// Moves one reference of `kind` of `who` into a new transfer.
    pub fn transfer_out(&mut self, o: usize, who: usize, kind: Kind) {
        self.untake(o, who, kind);
        self.ev("transferred", o, who);
        self.objs[o].transfers += 1;
    }

    /// Claims a transfer of `o` on `who` as a reference of `kind`. The
    /// transfer is consumed either way; on error it is dropped (its hold
    /// released). Returns `who`'s count after.
    pub fn claim(&mut self, o: usize, who: usize, kind: Kind) -> Result<u32, Error> {
        self.objs[o].transfers -= 1;
        if self.closed {
            self.after_drop(o, who);
            return Err(Error::Closed);
        }
        self.registered[who] = true;
        self.drain_batch(who);
        if self.total(o, who) > 0 && !self.has_room(o, who) {
            // Dropped: the claimer holds the object, so not the last hold.
            return Err(Error::Overflow(self.objs[o].handle));
        }
        self.ev("claimed", o, who);
        Ok(self.take(o, who, kind))
    }

    /// Drops one hold already subtracted; finalizes if it was the last.
    pub fn after_drop(&mut self, o: usize, who: usize) -> Released {
        if self.objs[o].holds() == 0 {
            self.finalize(o, who)
        } else {
            Released::Held(self.total(o, who))
        }
    }

    /// The last hold of `o` went away on thread `who`.
    pub fn finalize(&mut self, o: usize, who: usize) -> Released {
        let obj = &mut self.objs[o];
        obj.live = false;
        let (home, val, handle, key) = (obj.home, obj.val, obj.handle, obj.key);
        self.free_slot(handle);
        if let Some(k) = key {
            if self.keys.get(&k) == Some(&o) {
                self.keys.remove(&k);
            }
        }
        if home == who || !self.home_finalization || !self.alive[home] {
            self.drops.push((val, who));
            self.ev("finalized", o, who);
            Released::Finalized
        } else {
            self.pending[home].push_back((val, handle));
            self.ev("queued_home", o, who);
            Released::Queued
        }
    }

    /// The slot of finalized `h` is free under its next generation, or
    /// retired if that passes the limit.
    pub fn free_slot(&mut self, h: Handle) {
        let (_, generation, index) = parts(h);
        if generation + 1 > self.generation_limit {
            self.retired[index] = true;
        } else {
            self.slot_gen[index] = generation + 1;
        }
    }

    /// The access rule (invariant 5), for a live object.
    pub fn may_access(&self, o: usize, who: usize) -> bool {
        let obj = &self.objs[o];
        self.total(o, who) > 0 || obj.home == who || obj.pins > 0
    }

    /// Whether a live object sits in slot `index`.
    pub fn slot_live(&self, index: usize) -> bool {
        (self.objs.iter()).any(|o| o.live && parts(o.handle).2 == index)
    }

    /// `Interner::intern` of `key` on `who`, whose `init` fails with
    /// `fail` (the harness then records a new object with [`Model::interned`]).
    pub fn intern(&mut self, key: u8, fail: bool, who: usize) -> Interned {
        if let Some(&o) = self.keys.get(&key) {
            self.registered[who] = true;
            self.drain_batch(who);
            let e = if self.total(o, who) > 0 {
                (!self.has_room(o, who)).then_some(Error::Overflow(self.objs[o].handle))
            } else {
                // Closed: only by the access rule.
                (self.closed && !self.may_access(o, who)).then_some(Error::Closed)
            };
            if let Some(e) = e {
                return Interned::Failed(InternError::Registry(e), false);
            }
            self.take(o, who, Kind::Ref);
            return Interned::Held(o);
        }
        if self.closed {
            return Interned::Failed(InternError::Registry(Error::Closed), false);
        }
        if fail {
            return Interned::Failed(InternError::Init(Arc::new(init_error(key))), true);
        }
        let val = self.next_val;
        self.next_val += 1;
        self.registered[who] = true;
        self.drain_batch(who);
        if self.full() {
            self.drops.push((val, who)); // dropped by intern
            return Interned::Failed(InternError::Registry(Error::Full), true);
        }
        Interned::New(val)
    }

    /// The new object `intern` of `key` made, under handle `h`.
    pub fn interned(&mut self, key: u8, val: u32, h: Handle, who: usize) -> usize {
        let o = self.insert(val, h, who, Kind::Ref);
        self.objs[o].key = Some(key);
        self.keys.insert(key, o);
        o
    }

    /// Thread `who` exits: its proxies are dropped (in order), then its
    /// exit hook runs if it has a table.
    pub fn exit(&mut self, who: usize) {
        for p in 0..self.proxies.len() {
            if self.proxies[p].live && self.proxies[p].owner == who {
                self.proxies[p].live = false;
                let o = self.proxies[p].obj;
                self.give_up(o, who, Kind::Root);
            }
        }
        if self.registered[who] {
            self.drain(who, usize::MAX);
            let mut released = 0;
            if self.exit_release {
                // In slot-index order, as the registry walks the exiting
                // thread's table: the order its releases queue values home
                // in, which a bounded drain of that home sees (a slot taken
                // from a thread's free cache can have a lower index than an
                // object inserted before it).
                let mut order: Vec<usize> = (0..self.objs.len())
                    .filter(|&o| self.objs[o].live)
                    .collect();
                order.sort_by_key(|&o| parts(self.objs[o].handle).2);
                for o in order {
                    if self.objs[o].live && self.objs[o].refs.remove(&who).is_some() {
                        released += 1;
                        if self.total(o, who) == 0 {
                            self.ev("last_reference", o, who);
                        }
                        self.after_drop(o, who);
                    }
                }
            }
            let kept = (0..self.objs.len())
                .filter(|&o| self.objs[o].live && self.total(o, who) > 0)
                .count();
            self.events.push(Ev::exited(who, released, kept));
        }
        self.alive[who] = false;
    }

    /// A fresh identity (a new worker thread).
    pub fn spawn(&mut self) -> usize {
        self.alive.push(true);
        self.registered.push(false);
        self.pending.push(VecDeque::new());
        self.alive.len() - 1
    }

    /// The last `Registry` is dropped (by the coordinator): the leak report,
    /// if anything is live.
    pub fn registry_dropped(&mut self) {
        let live: Vec<u64> = (self.objs.iter())
            .filter(|o| o.live)
            .map(|o| o.handle.to_raw())
            .collect();
        if !live.is_empty() {
            self.events.push(Ev::leaked(COORDINATOR, live));
        }
    }
}

/// What the model says an `intern` does.
pub enum Interned {
    /// A reference to the key's live object.
    Held(usize),
    /// `init` ran and made the value with this id; its insert succeeds.
    New(u32),
    /// The error, and whether `init` ran.
    Failed(InternError<u32>, bool),
}

/// What `init` of `key` fails with, when it is told to.
pub fn init_error(key: u8) -> u32 {
    1000 + u32::from(key)
}
