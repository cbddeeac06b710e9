//! A reference in flight between threads.

use std::fmt;
use std::sync::Arc;

use crate::inner::{Inner, Kind};
use crate::{Error, Handle, Proxy, Registry};

/// One reference in flight between threads (invariant 6).
///
/// Made by [`Registry::transfer`] or [`Proxy::transfer`]; `Send`, owned by no
/// thread. While it exists the object stays alive, whatever the sending
/// thread does. Claiming it ([`Registry::claim`], [`Transfer::claim`]) gives
/// the receiving thread the reference; dropping it unclaimed releases the
/// reference. It is consumed by claiming, so it can be claimed once.
///
/// For FFI, [`into_raw`](Transfer::into_raw) turns it into a `u64` token
/// (never 0, below 2^53) that [`Registry::claim_raw`] accepts once; a second
/// claim of the same token is [`Error::TransferClaimed`].
pub struct Transfer<T: Send + Sync + 'static> {
    pub(crate) inner: Arc<Inner<T>>,
    handle: Handle,
    /// `false` once consumed (claimed or turned raw): the hold moved on.
    armed: bool,
}

impl<T: Send + Sync + 'static> Transfer<T> {
    /// Wraps a hold the caller has just moved into flight.
    pub(crate) fn new(inner: Arc<Inner<T>>, handle: Handle) -> Self {
        Transfer {
            inner,
            handle,
            armed: true,
        }
    }

    /// Disarms the transfer (its hold has moved on) and returns its handle.
    pub(crate) fn consume(mut self) -> Handle {
        self.armed = false;
        self.handle
    }

    /// The object's handle.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Claims the reference on the calling thread as a [`Proxy`].
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] at the count limit, [`Error::Forked`] in a forked
    /// child; on error the transfer is dropped, releasing its reference.
    #[track_caller]
    pub fn claim(self) -> Result<Proxy<T>, Error> {
        let held = match self.inner.claim_in(self.handle, Kind::Root) {
            Ok(held) => held,
            Err(e) => return Err(self.inner.diag.failed("claim", e)),
        };
        let proxy = Proxy::new(&self.inner, held);
        self.consume();
        Ok(proxy)
    }

    /// The raw token for FFI. The registry keeps the reference until the token
    /// is claimed with [`Registry::claim_raw`] or taken back with
    /// [`Transfer::from_raw`]; a token that is never claimed keeps its object
    /// alive until the registry is dropped.
    ///
    /// The token is a capability: it is never `0`, always below 2^53 (it
    /// survives a JavaScript number), unique while live, and not a counter
    /// — consecutive transfers get unrelated tokens (a keyed permutation of
    /// a serial), so an off-by-one or a stale variable claims nothing
    /// ([`Error::Invalid`]) instead of somebody else's transfer.
    ///
    /// In a child process after `fork()` it returns 0 (never a valid token)
    /// and the transfer's reference stays counted: nothing can be released
    /// in a child.
    pub fn into_raw(self) -> u64 {
        let token = self.inner.raw_out(self.handle);
        self.consume();
        token
    }

    /// Takes a raw token back as a `Transfer` (to claim it as a proxy, or to
    /// drop it and release its reference).
    ///
    /// ```
    /// # use tether::{Error, Registry, Transfer};
    /// let reg = Registry::new();
    /// let h = reg.insert(1)?;
    /// let raw = reg.transfer(h)?.into_raw();
    /// drop(Transfer::from_raw(&reg, raw)?); // released: it was the last reference
    /// assert!(reg.is_empty());
    /// assert_eq!(reg.claim_raw(raw), Err(Error::TransferClaimed));
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TransferClaimed`] if the token was already claimed or taken
    /// back, [`Error::Invalid`] if `reg` never issued it.
    #[track_caller]
    pub fn from_raw(reg: &Registry<T>, raw: u64) -> Result<Transfer<T>, Error> {
        let h = match reg.inner.raw_in(raw) {
            Ok(h) => h,
            Err(e) => return Err(reg.inner.diag.failed("from_raw", e)),
        };
        Ok(Transfer::new(Arc::clone(&reg.inner), h))
    }
}

impl<T: Send + Sync + 'static> Drop for Transfer<T> {
    /// An unclaimed transfer releases its reference (finalizing the object,
    /// by the usual rules, if it was the last).
    fn drop(&mut self) {
        if self.armed {
            self.inner.drop_transfer(self.handle);
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Transfer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}
