//! Pins: references held by the registry itself (globals, class objects).
//! The slot's state word carries a pinned flag (read by the access rule);
//! the counts live in a map under a lock, as pins are rare.

use std::collections::HashMap;

use super::resolve::Resolved;
use super::Inner;
use crate::local::ThreadTable;
use crate::slot::Slot;
use crate::{Error, Handle};

impl<T: Send + Sync + 'static> Inner<T> {
    /// `pin`: one more pin (and hold) on the object.
    pub(crate) fn pin(&self, h: Handle) -> Result<(), Error> {
        let (slot, table, temporary) = self.hold_for_op(h)?;
        if !temporary {
            // The thread keeps its own hold: the pin needs one of its own.
            slot.try_hold(h)?;
        } // else: the temporary hold becomes the pin's.
        if !self.add_pin(slot, h) {
            self.drop_hold(slot, h, Some(table));
            return Err(Error::Overflow(h));
        }
        self.diag.emit(|| crate::Event::Pinned {
            handle: h,
            thread: table.thread,
        });
        Ok(())
    }

    /// `unpin`: removes one pin (and its hold).
    pub(crate) fn unpin(&self, h: Handle) -> Result<(), Error> {
        let (slot, table, temporary) = self.hold_for_op(h)?;
        let result = if self.remove_pin(slot, h) {
            // The pin's hold: not the last, the caller holds one too.
            let last = slot.drop_hold();
            debug_assert!(!last, "unpin cannot drop the last hold");
            self.diag.emit(|| crate::Event::Unpinned {
                handle: h,
                thread: table.thread,
            });
            Ok(())
        } else {
            Err(Error::NotPinned(h))
        };
        if temporary {
            self.drop_hold(slot, h, Some(table));
        }
        result
    }

    /// Counts one more pin of the live object `h` (the caller already took
    /// the pin's hold); `false` at `u32::MAX` pins.
    fn add_pin(&self, slot: &Slot<T>, h: Handle) -> bool {
        let mut pins = self.pins.lock();
        let n = pins.entry(h.index()).or_insert(0);
        if *n == u32::MAX {
            return false;
        }
        *n += 1;
        if *n == 1 {
            slot.mark_pinned(true);
        }
        true
    }

    /// Removes one pin of the live object `h` if it has one (the caller then
    /// drops the pin's hold).
    fn remove_pin(&self, slot: &Slot<T>, h: Handle) -> bool {
        let mut pins = self.pins.lock();
        let Some(n) = pins.get_mut(&h.index()) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            pins.remove(&h.index());
            slot.mark_pinned(false);
        }
        true
    }

    /// Slot index → pins, for every object with a pin (diagnostics).
    pub(crate) fn all_pins(&self) -> HashMap<u32, u32> {
        self.pins.lock().clone()
    }

    /// Makes sure the calling thread holds `h` for the duration of an
    /// operation: `temporary == true` if a hold was taken just for it (by the
    /// access rule) and must be given back or handed on.
    fn hold_for_op(&self, h: Handle) -> Result<(&Slot<T>, &ThreadTable<T>, bool), Error> {
        match self.resolve(h)? {
            Resolved::Held(held) => Ok((held.slot, held.table, false)),
            Resolved::Unheld(u) => {
                self.first_hold(&u, false)?;
                Ok((u.slot, u.table, true))
            }
        }
    }
}
