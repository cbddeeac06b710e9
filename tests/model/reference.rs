//! The reference model: per-thread counts in ordinary maps.

use std::collections::{HashMap, VecDeque};

use tether::{Handle, Released};

use super::{CAPACITY, WORKERS};

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

pub struct MObj {
    pub val: u32,
    pub handle: Handle,
    pub home: usize,
    /// Explicit references per thread identity (guards never outlive a step).
    pub counts: HashMap<usize, u32>,
    pub pins: u32,
    /// Unclaimed `Transfer` objects and raw tokens.
    pub transfers: u32,
    pub live: bool,
}

impl MObj {
    pub fn holds(&self) -> u32 {
        self.counts.values().sum::<u32>() + self.pins + self.transfers
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

pub struct Model {
    pub home_finalization: bool,
    pub exit_release: bool,
    pub objs: Vec<MObj>,
    /// Identity of the thread in each worker position.
    pub ident: [usize; WORKERS],
    pub alive: Vec<bool>,
    /// Values queued for each identity's home inbox, in order.
    pub pending: Vec<VecDeque<u32>>,
    pub transfers: Vec<MTransfer>,
    pub tokens: Vec<u64>,
    pub next_val: u32,
    /// Each slot's generation: how many objects it has held and finalized.
    /// A new object gets its slot's generation; an id naming a generation
    /// beyond it was never issued.
    pub slot_gen: [u32; CAPACITY],
    /// Drops the current step must produce.
    pub drops: Vec<(u32, usize)>,
}

impl Model {
    pub fn new(home_finalization: bool, exit_release: bool) -> Model {
        Model {
            home_finalization,
            exit_release,
            objs: Vec::new(),
            ident: [0, 1, 2],
            alive: vec![true; WORKERS],
            pending: vec![VecDeque::new(); WORKERS],
            transfers: Vec::new(),
            tokens: Vec::new(),
            next_val: 0,
            slot_gen: [0; CAPACITY],
            drops: Vec::new(),
        }
    }

    pub fn live(&self) -> usize {
        self.objs.iter().filter(|o| o.live).count()
    }

    pub fn count(&self, o: usize, who: usize) -> u32 {
        self.objs[o].counts.get(&who).copied().unwrap_or(0)
    }

    pub fn drain(&mut self, who: usize, limit: usize) -> usize {
        let n = self.pending[who].len().min(limit);
        for _ in 0..n {
            let v = self.pending[who].pop_front().unwrap();
            self.drops.push((v, who));
        }
        n
    }

    /// The last hold of `o` went away on thread `who`.
    pub fn finalize(&mut self, o: usize, who: usize) -> Released {
        let obj = &mut self.objs[o];
        obj.live = false;
        let (home, val) = (obj.home, obj.val);
        self.slot_gen[parts(obj.handle).2] += 1;
        if home == who || !self.home_finalization || !self.alive[home] {
            self.drops.push((val, who));
            Released::Finalized
        } else {
            self.pending[home].push_back(val);
            Released::Queued
        }
    }

    /// Drops one hold already subtracted; finalizes if it was the last.
    pub fn after_drop(&mut self, o: usize, who: usize) -> Released {
        if self.objs[o].holds() == 0 {
            self.finalize(o, who)
        } else {
            Released::Held(self.count(o, who))
        }
    }

    /// The access rule (invariant 5), for a live object.
    pub fn may_access(&self, o: usize, who: usize) -> bool {
        let obj = &self.objs[o];
        self.count(o, who) > 0 || obj.home == who || obj.pins > 0
    }

    /// Whether a live object sits in slot `index`.
    pub fn slot_live(&self, index: usize) -> bool {
        (self.objs.iter()).any(|o| o.live && parts(o.handle).2 == index)
    }

    /// Thread `who` exits.
    pub fn exit(&mut self, who: usize) {
        self.drain(who, usize::MAX);
        if self.exit_release {
            for o in 0..self.objs.len() {
                if self.objs[o].live && self.objs[o].counts.remove(&who).is_some() {
                    self.after_drop(o, who);
                }
            }
        }
        self.alive[who] = false;
    }
}
