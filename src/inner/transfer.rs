//! References in flight: `transfer` (an explicit reference or a proxy's
//! root moved into a [`Transfer`](crate::Transfer)), transfers minted for
//! interner waiters, an unclaimed transfer dropped, and raw tokens.

use super::resolve::Held;
use super::{Inner, Kind};
use crate::sync::Ordering;
use crate::{Error, Handle, Released};

impl<T: Send + Sync + 'static> Inner<T> {
    /// `transfer`: moves one explicit reference of the calling thread into a
    /// new in-flight transfer. Does not drain the thread's queue.
    pub(crate) fn transfer_out(&self, h: Handle) -> Result<(), Error> {
        let held = match self.lookup(h) {
            Some(super::resolve::Resolved::Held(held)) if crate::local::refs(held.e) != 0 => held,
            _ => self.resolve_explicit(h, false)?,
        };
        // A live thread's table: never its last late hold.
        let _ = self.hand_off(held, Kind::Ref)?;
        Ok(())
    }

    /// Moves one reference of `kind` out of a held entry into a new
    /// in-flight transfer. Fails (changing nothing) only if the slot's hold
    /// count would overflow. `Ok(true)` as [`Inner::root_gone`]'s `true`:
    /// the exited table's last late hold went into the transfer.
    #[inline]
    pub(crate) fn hand_off(&self, held: Held<'_, T>, kind: Kind) -> Result<bool, Error> {
        let Held {
            slot,
            table,
            entry,
            h,
            e,
        } = held;
        let left = crate::local::settled(e - kind.one());
        if left != 0 {
            // The thread keeps its hold; the transfer needs its own.
            slot.try_hold(h)?;
        } // else: the thread's hold becomes the transfer's.
        entry.store(left, Ordering::Relaxed);
        self.diag.emit(|| crate::Event::Transferred {
            handle: h,
            thread: table.thread,
        });
        if left != 0 {
            return Ok(false);
        }
        self.lost(h, table);
        Ok(table.exited.load(Ordering::Relaxed))
    }

    /// Adds `n` in-flight transfer holds to the live object `h`, which the
    /// caller holds (an interner handing its waiters their references).
    /// Runs no user code (the caller may hold its own locks): it tells the
    /// event hook afterwards, with [`Inner::transferred`].
    pub(crate) fn mint_transfers(&self, h: Handle, n: u32) -> Result<(), Error> {
        let slot = self.slot(h)?;
        for minted in 0..n {
            if let Err(e) = slot.try_hold(h) {
                for _ in 0..minted {
                    slot.drop_hold();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Tells the event hook of `n` transfers of `h` minted by the calling
    /// thread.
    pub(crate) fn transferred(&self, h: Handle, n: u32) {
        if n == 0 {
            return;
        }
        if let Some(table) = self.my_table() {
            for _ in 0..n {
                self.diag.emit(|| crate::Event::Transferred {
                    handle: h,
                    thread: table.thread,
                });
            }
        }
    }

    /// Releases an in-flight transfer that is dropped unclaimed.
    pub(crate) fn drop_transfer(&self, h: Handle) -> Released {
        if crate::fork::forked() {
            return Released::Held(0);
        }
        let Ok(slot) = self.slot(h) else {
            return Released::Held(0);
        };
        let table = self.my_table();
        self.drop_hold(slot, h, table)
    }

    /// Registers a transfer's hold under a fresh raw token (see
    /// [`crate::token`]).
    ///
    /// In a child process after `fork()`: 0, never a valid token, without
    /// taking the lock (a parent thread may have held it at the fork).
    pub(crate) fn raw_out(&self, h: Handle) -> u64 {
        if crate::fork::forked() {
            return 0;
        }
        self.raw.lock().issue(self.tag, h)
    }

    /// Takes a raw token's hold back; the caller owns it after `Ok`.
    pub(crate) fn raw_in(&self, token: u64) -> Result<Handle, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        self.raw.lock().redeem(self.tag, token)
    }
}
