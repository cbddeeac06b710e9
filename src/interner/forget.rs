//! Forgetting keys whose objects died: the interner as the registry's
//! observer of deaths ([`Deaths`]), never waiting for its own map lock.

use std::hash::Hash;

use super::keys::{drop_keys, Probe};
use super::{Entry, Map, Shared};
use crate::inner::deaths::Deaths;
use crate::Handle;

impl<K, T, E> Deaths for Shared<K, T, E>
where
    K: Hash + Eq + Send + Sync,
    T: Send + Sync + 'static,
    E: Send + Sync,
{
    /// Runs inside the release that freed `h`: no key code under the lock
    /// (the entry is found by its place), and the key's `Drop` caught, so
    /// the release never unwinds and its value still goes home.
    ///
    /// Never waits for the map lock: a key's `Eq` runs under it and may
    /// finalize an object (this call then comes from the lock's holder), so
    /// a busy map defers the forgetting to the next intern (a `Ready` entry
    /// of a dead handle is also handled there: its hold is refused).
    fn died(&self, h: Handle) {
        match self.map.try_lock() {
            Some(map) => {
                let removed = forget_in(map, h);
                drop_keys(removed, &self.key_panics); // with no lock held
            }
            None => self.dead.lock().push(h),
        }
    }
}

impl<K, T: Send + Sync + 'static, E> Shared<K, T, E>
where
    K: Hash + Eq + Send + Sync,
{
    /// Forgets the deaths deferred by `died` (no lock held on entry).
    pub(super) fn forget_deferred(&self) {
        let dead = std::mem::take(&mut *self.dead.lock());
        for h in dead {
            let removed = forget_in(self.map.lock(), h);
            drop_keys(removed, &self.key_panics);
        }
    }
}

/// Removes the entry of the dead handle `h` (found by its place: no key
/// code runs) and returns its key, to be dropped after the lock.
fn forget_in<K: Hash + Eq, E>(
    mut map: crate::sync::MutexGuard<'_, Map<K, E>>,
    h: Handle,
) -> Option<K> {
    let map = &mut *map;
    map.by_handle.remove(&h).and_then(|place| {
        let at: &dyn Probe<K> = &place;
        match map.by_key.get(at) {
            Some(Entry::Ready(x)) if *x == h => {
                map.by_key.remove_entry(at).map(|(stored, _)| stored.key)
            }
            _ => None,
        }
    })
}
