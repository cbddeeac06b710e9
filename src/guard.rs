//! A borrow of an object that counts as a reference while it lives.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use crate::inner::{Held, Inner};
use crate::local::ThreadTable;
use crate::slot::Slot;
use crate::sync::AtomicU64;
use crate::Handle;

/// A borrow of an object returned by [`Registry::get`](crate::Registry::get).
///
/// While it lives it counts as a reference of its thread (invariant 5), so
/// the object cannot be finalized under it — not even if the thread releases
/// all its explicit references meanwhile. It holds no lock: other threads
/// insert, retain and release freely while it exists. `!Send`.
///
/// ```
/// # use tether::{Registry, Released};
/// let reg = Registry::new();
/// let h = reg.insert(String::from("kept alive"))?;
/// let g = reg.get(h)?;
/// assert_eq!(reg.release(h)?, Released::Held(1)); // the guard still holds it
/// assert_eq!(&*g, "kept alive");
/// drop(g);                                        // now it is finalized
/// assert!(reg.is_empty());
/// # Ok::<(), tether::Error>(())
/// ```
pub struct Guard<'a, T: Send + Sync + 'static> {
    inner: &'a Inner<T>,
    slot: &'a Slot<T>,
    table: &'a ThreadTable<T>,
    entry: &'a AtomicU64,
    handle: Handle,
    /// `!Send`, `!Sync`: the entry may be written only by its own thread.
    _thread_bound: PhantomData<*const ()>,
}

impl<'a, T: Send + Sync + 'static> Guard<'a, T> {
    /// Wraps one root the caller has just added to `entry`.
    pub(crate) fn new(inner: &'a Inner<T>, held: Held<'a, T>) -> Self {
        Guard {
            inner,
            slot: held.slot,
            table: held.table,
            entry: held.entry,
            handle: held.h,
            _thread_bound: PhantomData,
        }
    }

    /// The object's handle.
    pub fn handle(&self) -> Handle {
        self.handle
    }
}

impl<T: Send + Sync + 'static> Deref for Guard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard is a root of this thread, so the object is live
        // and its value initialised and only shared until the guard drops.
        unsafe { &*self.slot.value_ptr() }
    }
}

impl<T: Send + Sync + 'static> Drop for Guard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if Inner::<T>::release_root(self.entry)
            && self.inner.root_gone(self.slot, self.handle, self.table)
        {
            let table: *const ThreadTable<T> = self.table;
            // SAFETY: the guard's table, and this is the last use of the
            // guard's reference to it.
            unsafe { self.inner.late_hold_gone(table) }
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Guard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}
