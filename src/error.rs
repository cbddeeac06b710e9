//! Errors: what happened, and what to do about it.

use std::fmt;

use crate::Handle;

/// Why a registry call failed. Nothing changed in the registry when a call
/// returns an error.
///
/// Every message is a lowercase phrase that says what happened and what to
/// do. The enum is `Copy`, so errors can be logged and returned freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This registry issued the handle and its object has been finalized
    /// (or is being finalized); a handle never resolves again.
    #[error("handle {0} is stale: its object was already finalized (keep a reference for as long as you use a handle)")]
    Stale(Handle),

    /// The id (or raw token) was never issued by this registry: forged,
    /// corrupted, out of range, or a neighbour of a real one.
    #[error("id {0} was never issued by this registry (it is forged, corrupted or out of range)")]
    Invalid(u64),

    /// The handle belongs to a different registry.
    #[error("handle {0} belongs to a different registry; use it with the registry that issued it")]
    ForeignRegistry(Handle),

    /// The calling thread holds no (releasable) reference to the object.
    #[error("this thread holds no reference to {0}: get one by claiming a Transfer from a thread that holds it (proxies and guards release themselves when dropped)")]
    NotHeld(Handle),

    /// `unpin` of an object that has no pin.
    #[error("object {0} is not pinned: unpin only what was pinned, once per pin")]
    NotPinned(Handle),

    /// A count would pass its limit (the count is unchanged): a thread's
    /// count for one object is at most
    /// [`Builder::max_count`](crate::Builder::max_count) (at most 2^21 - 1),
    /// an object's holds (holding threads, pins, transfers) at most 2^30 - 1.
    #[error("a reference count of {0} would overflow; release references before taking more")]
    Overflow(Handle),

    /// The registry is at its capacity.
    #[error("the registry is full: release objects or build it with a larger capacity")]
    Full,

    /// The registry is used in a child process after `fork()`.
    #[error(
        "the registry was used in a child process after fork(): build a new registry in the child"
    )]
    Forked,

    /// The raw transfer token was already claimed (or taken back with `from_raw`).
    #[error("this transfer token was already claimed; a transfer can be claimed only once")]
    TransferClaimed,

    /// The calling thread already released its references at thread exit.
    #[error("this thread has already released its references at thread exit; do not use the registry from late thread-local destructors")]
    ThreadExited,

    /// The registry was closed ([`Registry::close`](crate::Registry::close)):
    /// no new objects or claims; existing holders keep working.
    #[error("the registry is closed: it takes no new objects or claims (holders may still use and release what they hold)")]
    Closed,
}

impl Error {
    /// `true` for errors that mean a bug in the caller: a stale, forged or
    /// foreign handle, a release or access by a thread that holds nothing, an
    /// unpin without a pin, a transfer claimed twice. These are what the
    /// [`Misuse`](crate::Misuse) policy and [`Event::Misuse`](crate::Event::Misuse)
    /// apply to. `false` for conditions a correct program can meet: `Full`,
    /// `Overflow`, `Forked`, `ThreadExited`, `Closed`.
    ///
    /// ```
    /// # use tether::Error;
    /// assert!(Error::TransferClaimed.is_misuse());
    /// assert!(!Error::Full.is_misuse());
    /// ```
    pub fn is_misuse(&self) -> bool {
        matches!(
            self,
            Error::Stale(_)
                | Error::Invalid(_)
                | Error::ForeignRegistry(_)
                | Error::NotHeld(_)
                | Error::NotPinned(_)
                | Error::TransferClaimed
        )
    }

    /// The handle the error is about, if any (`Invalid` ids that are not
    /// handles give `None`).
    pub fn handle(&self) -> Option<Handle> {
        match self {
            Error::Stale(h)
            | Error::ForeignRegistry(h)
            | Error::NotHeld(h)
            | Error::NotPinned(h)
            | Error::Overflow(h) => Some(*h),
            Error::Invalid(raw) => Handle::from_raw(*raw),
            _ => None,
        }
    }
}

/// A failed insert: the error, and the value handed back so nothing is lost.
///
/// Prints and debugs without `T: Debug`.
///
/// ```
/// # use tether::{Error, Registry};
/// let reg = Registry::builder().capacity(1).build();
/// let _a = reg.insert(String::from("a")).unwrap();
/// let err = reg.insert(String::from("b")).unwrap_err();
/// assert_eq!(err.error(), Error::Full);
/// assert_eq!(err.into_value(), "b"); // nothing lost
/// ```
pub struct InsertError<T> {
    error: Error,
    value: T,
}

impl<T> InsertError<T> {
    pub(crate) fn new(error: Error, value: T) -> Self {
        InsertError { error, value }
    }

    /// Why the insert failed ([`Error::Full`], [`Error::Closed`],
    /// [`Error::Forked`] or [`Error::ThreadExited`]).
    pub fn error(&self) -> Error {
        self.error
    }

    /// The value that was not inserted.
    pub fn into_value(self) -> T {
        self.value
    }
}

impl<T> fmt::Debug for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsertError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "insert failed, value handed back: {}", self.error)
    }
}

impl<T> std::error::Error for InsertError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<InsertError<T>> for Error {
    fn from(e: InsertError<T>) -> Error {
        e.error
    }
}
