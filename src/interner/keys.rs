//! The key map's keys: where user code (`K`'s `Hash`, `Eq`, `Drop`) may run,
//! and where it may not.
//!
//! A key's `Hash` and `Eq` are user code and may panic. The interner must
//! not run them mid-transition — between installing a flight and publishing
//! its outcome, or inside a release that forgets a dead key — where a panic
//! would strand waiters or unwind out of `release()`. So:
//!
//! * a key is hashed **once per call**, before the lock is taken
//!   ([`Place::hash`], from the interner's own `RandomState`); the map hashes
//!   only that stored number ([`Prehashed`]), never the key, even when it
//!   grows or rehashes;
//! * each stored key gets a unique id; the interner's own steps (publishing
//!   a flight, removing a failed one, forgetting a dead object) find their
//!   entry by `(hash, id)`, which compares numbers only;
//! * `K`'s `Eq` runs only when a caller looks its key up (under the lock,
//!   before that call changes anything): a panic there reaches that caller
//!   and changes nothing (the lock does not poison);
//! * keys the interner lets go of inside a release are dropped with
//!   [`drop_keys`], which catches and counts a panicking `Drop`.
//!
//! The map is a `HashMap<Stored<K>, _>` looked up through `&dyn Probe<Q>`:
//! `Stored<K>` borrows as a probe, and a probe compares by id when both
//! sides have one and by key (after the hash) otherwise.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use crate::sync::{AtomicU64, Ordering};

/// Where a stored key is: its hash and its id (`0` in a lookup by key: it
/// names no stored key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) hash: u64,
    pub(super) id: u64,
}

/// A key in the map, with its place.
pub(super) struct Stored<K> {
    pub(super) place: Place,
    pub(super) key: K,
}

/// What the map hashes and compares: a stored key, a caller's key
/// ([`ByKey`]) or a place (the interner's own lookups).
pub(super) trait Probe<Q: ?Sized> {
    fn place(&self) -> Place;
    /// The key, if this probe has one.
    fn key(&self) -> Option<&Q>;
}

/// A caller's key and its hash.
pub(super) struct ByKey<'q, Q: ?Sized> {
    pub(super) hash: u64,
    pub(super) key: &'q Q,
}

impl<K: Borrow<Q>, Q: ?Sized> Probe<Q> for Stored<K> {
    fn place(&self) -> Place {
        self.place
    }

    fn key(&self) -> Option<&Q> {
        Some(self.key.borrow())
    }
}

impl<Q: ?Sized> Probe<Q> for ByKey<'_, Q> {
    fn place(&self) -> Place {
        Place {
            hash: self.hash,
            id: 0,
        }
    }

    fn key(&self) -> Option<&Q> {
        Some(self.key)
    }
}

impl<Q: ?Sized> Probe<Q> for Place {
    fn place(&self) -> Place {
        *self
    }

    fn key(&self) -> Option<&Q> {
        None
    }
}

impl<Q: Eq + ?Sized> PartialEq for dyn Probe<Q> + '_ {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.place(), other.place());
        if a.id != 0 && b.id != 0 {
            return a.id == b.id; // no user code
        }
        // A caller's lookup: its key's `Eq`, only if the hashes agree.
        a.hash == b.hash
            && match (self.key(), other.key()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
    }
}

impl<Q: Eq + ?Sized> Eq for dyn Probe<Q> + '_ {}

impl<Q: ?Sized> Hash for dyn Probe<Q> + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.place().hash);
    }
}

impl<'a, K: Borrow<Q> + 'a, Q: ?Sized + 'a> Borrow<dyn Probe<Q> + 'a> for Stored<K> {
    fn borrow(&self) -> &(dyn Probe<Q> + 'a) {
        self
    }
}

// As its borrowed form: the stored hash, and ids (unique per stored key).
impl<K> Hash for Stored<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.place.hash);
    }
}

impl<K> PartialEq for Stored<K> {
    fn eq(&self, other: &Self) -> bool {
        self.place.id == other.place.id
    }
}

impl<K> Eq for Stored<K> {}

/// The map's hasher: passes the precomputed hash through.
#[derive(Default)]
pub(super) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used (everything the map hashes writes one u64); correct anyway.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Drops `keys` (anything holding keys) that the interner let go of where
/// unwinding would break its caller — a release, a thread's exit, a
/// flight's cleanup. A panicking `Drop` is caught and counted in `panics`.
pub(crate) fn drop_keys<X>(keys: X, panics: &AtomicU64) {
    if crate::caught::drop_caught(keys) {
        panics.fetch_add(1, Ordering::Relaxed);
    }
}
