//! Weak references (DESIGN §9): the access check that makes one, and the
//! upgrade that turns one back into a reference.
//!
//! A weak reference is a handle plus the right to use it; it counts
//! nothing. Making one needs access (rule 5) — checked exactly as a first
//! reference checks it, with the hold that check takes given straight back.
//! Upgrading needs no access (the weak reference is the capability, as a
//! transfer is), only a live object: the hold is taken by `try_hold`'s CAS,
//! which adds to a non-zero hold count of the right generation only. So an
//! upgrade racing the last release either lands before it (the object
//! stays alive with the new reference) or finds the count at zero — the
//! value finalized or queued for finalization — and fails; and after the
//! slot's reuse the generation differs and it fails too.

use super::resolve::Resolved;
use super::{Held, Inner, Kind};
use crate::{Error, Handle};

impl<T: Send + Sync + 'static> Inner<T> {
    /// Checks that the calling thread may make a weak reference to `h`: it
    /// holds the object, is its home thread, or the object is pinned
    /// (rule 5, decided on the object the check's hold lands on, as for a
    /// first reference).
    ///
    /// A thread that holds nothing takes a hold and gives it back; if that
    /// was the object's last hold (everybody else let go meanwhile), the
    /// object is finalized as by any release, and the weak reference made
    /// of this check is simply dead.
    pub(crate) fn check_access(&self, h: Handle) -> Result<(), Error> {
        let resolved = match self.lookup(h) {
            Some(r) => r,
            None => self.resolve(h)?,
        };
        match resolved {
            Resolved::Held(_) => Ok(()),
            Resolved::Unheld(u) => {
                self.first_hold(&u, false)?;
                self.drop_hold(u.slot, u.h, Some(u.table));
                Ok(())
            }
        }
    }

    /// One more root reference of the calling thread to `h`'s object if it
    /// is live, without the access rule. `Err(Stale)` once its last hold is
    /// gone, even while its value waits in the home's inbox.
    #[inline]
    pub(crate) fn upgrade(&self, h: Handle) -> Result<Held<'_, T>, Error> {
        match self.add_fast(h, Kind::Root) {
            Ok(held) => Ok(held),
            Err(_) => self.upgrade_cold(h),
        }
    }

    #[cold]
    #[inline(never)]
    fn upgrade_cold(&self, h: Handle) -> Result<Held<'_, T>, Error> {
        // Like a claim: no new holder once the registry is closed (its
        // shutdown waits for the holders it has).
        if self.is_closed() {
            return Err(Error::Closed);
        }
        self.acquire_granted(h, Kind::Root)
    }

    /// Whether `h` names a live object at this moment (a hint: it may die
    /// right after).
    pub(crate) fn is_live(&self, h: Handle) -> bool {
        !crate::fork::forked() && self.slot(h).is_ok_and(|s| s.check(h).is_ok())
    }
}
