//! Status codes: what every fallible call returns, and what a release did.

use std::ffi::c_char;

use tether::{Error, Released};

/// What a call did. `TETHER_OK` (0) is success; every other value is an
/// error, and an error changes nothing in the registry and writes no
/// out-parameter. `tether_status_str` describes each value.
///
/// The values are part of the ABI: they are never renumbered, and a status
/// added later takes the next free value.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum tether_status {
    /// Success: the out-parameter, if any, was written.
    TETHER_OK = 0,
    /// The handle's object was already finalized; a handle never resolves
    /// again. Keep a reference for as long as you use a handle.
    TETHER_STALE = 1,
    /// This registry never issued the id or token (forged, corrupted, 0,
    /// at least 2^53, or a neighbour of a real one), or the registry pointer
    /// is not one that `tether_registry_new` returned.
    TETHER_INVALID = 2,
    /// The handle belongs to another registry.
    TETHER_FOREIGN = 3,
    /// The calling thread holds no reference to the object and has no other
    /// right to it (it is not the object's home thread, and the object is
    /// not pinned). Get a reference by claiming a transfer.
    TETHER_NOT_HELD = 4,
    /// `tether_unpin` of an object that has no pin.
    TETHER_NOT_PINNED = 5,
    /// The calling thread's count for the object would pass its limit
    /// (2^21 - 1 references per thread and object).
    TETHER_OVERFLOW = 6,
    /// The registry is at its capacity (2^24 live objects).
    TETHER_FULL = 7,
    /// Called in a child process after `fork()`: make a new registry there.
    TETHER_FORKED = 8,
    /// The transfer token was already claimed or dropped.
    TETHER_TRANSFER_CLAIMED = 9,
    /// Called from a thread-exit destructor after tether released the
    /// thread's references.
    TETHER_THREAD_EXITED = 10,
    /// The registry is closed to new objects and claims. (The C API has no
    /// call that closes a registry yet: no function returns it today.)
    TETHER_CLOSED = 11,
    /// A pointer argument that must not be NULL was NULL.
    TETHER_NULL_ARGUMENT = 12,
    /// tether failed internally: a Rust panic was caught at the boundary
    /// (it never unwinds into C), or the library returned an error this
    /// version of the C API has no status for.
    TETHER_PANIC = 13,
}

/// Every status, in value order (value `i` at index `i`).
const ALL: [tether_status; 14] = [
    tether_status::TETHER_OK,
    tether_status::TETHER_STALE,
    tether_status::TETHER_INVALID,
    tether_status::TETHER_FOREIGN,
    tether_status::TETHER_NOT_HELD,
    tether_status::TETHER_NOT_PINNED,
    tether_status::TETHER_OVERFLOW,
    tether_status::TETHER_FULL,
    tether_status::TETHER_FORKED,
    tether_status::TETHER_TRANSFER_CLAIMED,
    tether_status::TETHER_THREAD_EXITED,
    tether_status::TETHER_CLOSED,
    tether_status::TETHER_NULL_ARGUMENT,
    tether_status::TETHER_PANIC,
];

impl tether_status {
    /// The status with value `raw`, if there is one.
    pub fn from_raw(raw: u32) -> Option<tether_status> {
        ALL.get(raw as usize).copied()
    }

    /// The static, NUL-terminated message of this status.
    pub fn message(self) -> &'static std::ffi::CStr {
        use tether_status::*;
        match self {
            TETHER_OK => c"ok",
            TETHER_STALE => c"stale handle: its object was already finalized (keep a reference for as long as you use a handle)",
            TETHER_INVALID => c"invalid: this registry never issued that id or token, or that pointer is not a tether registry",
            TETHER_FOREIGN => c"the handle belongs to a different registry: use it with the registry that issued it",
            TETHER_NOT_HELD => c"this thread holds no reference to the object: get one by claiming a transfer from a thread that holds it",
            TETHER_NOT_PINNED => c"the object is not pinned: unpin only what was pinned, once per pin",
            TETHER_OVERFLOW => c"a reference count would overflow: release references before taking more",
            TETHER_FULL => c"the registry is full: release objects first",
            TETHER_FORKED => c"the registry was used in a child process after fork(): make a new registry in the child",
            TETHER_TRANSFER_CLAIMED => c"this transfer token was already claimed or dropped: a token can be used once",
            TETHER_THREAD_EXITED => c"this thread already released its references at thread exit: do not use the registry from late thread-exit destructors",
            TETHER_CLOSED => c"the registry is closed: it takes no new objects or claims",
            TETHER_NULL_ARGUMENT => c"a pointer argument was NULL",
            TETHER_PANIC => c"internal error in tether (a panic was caught at the C boundary): please report it",
        }
    }
}

impl From<Error> for tether_status {
    fn from(e: Error) -> tether_status {
        use tether_status::*;
        match e {
            Error::Stale(_) => TETHER_STALE,
            Error::Invalid(_) => TETHER_INVALID,
            Error::ForeignRegistry(_) => TETHER_FOREIGN,
            Error::NotHeld(_) => TETHER_NOT_HELD,
            Error::NotPinned(_) => TETHER_NOT_PINNED,
            Error::Overflow(_) => TETHER_OVERFLOW,
            Error::Full => TETHER_FULL,
            Error::Forked => TETHER_FORKED,
            Error::TransferClaimed => TETHER_TRANSFER_CLAIMED,
            Error::ThreadExited => TETHER_THREAD_EXITED,
            Error::Closed => TETHER_CLOSED,
            // `Error` is #[non_exhaustive]. A variant added later that is a
            // caller bug (a bad id or token, a missing right) is closest to
            // INVALID; any other is a condition this C API cannot name
            // yet, reported as an internal error until it gets a status.
            e if e.is_misuse() => TETHER_INVALID,
            _ => TETHER_PANIC,
        }
    }
}

/// What a successful `tether_release` did.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum tether_released {
    /// The object is still alive: the calling thread, another thread, a pin
    /// or a transfer still holds it (`tether_count` gives the caller's own
    /// count).
    TETHER_HELD = 0,
    /// That was the last reference and this is the object's home thread: the
    /// finalizer ran, here, before `tether_release` returned.
    TETHER_FINALIZED = 1,
    /// That was the last reference, on a thread that is not the object's
    /// home: the value was queued to its home thread, whose next tether call
    /// or `tether_pump` runs the finalizer there.
    TETHER_QUEUED = 2,
}

impl From<Released> for tether_released {
    fn from(r: Released) -> tether_released {
        match r {
            Released::Held(_) => tether_released::TETHER_HELD,
            Released::Finalized => tether_released::TETHER_FINALIZED,
            Released::Queued => tether_released::TETHER_QUEUED,
        }
    }
}

/// The message of a status value, for any value (an unknown one gets a
/// message that says so).
pub(crate) fn status_str(raw: u32) -> *const c_char {
    match tether_status::from_raw(raw) {
        Some(s) => s.message().as_ptr(),
        None => c"unknown tether_status value".as_ptr(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether::Handle;

    #[test]
    fn all_is_in_value_order() {
        for (i, s) in ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32);
            assert_eq!(tether_status::from_raw(i as u32), Some(*s));
        }
        assert_eq!(tether_status::from_raw(14), None);
    }

    #[test]
    fn every_error_has_its_own_status() {
        let h = Handle::from_raw(1).unwrap();
        let errors = [
            Error::Stale(h),
            Error::Invalid(7),
            Error::ForeignRegistry(h),
            Error::NotHeld(h),
            Error::NotPinned(h),
            Error::Overflow(h),
            Error::Full,
            Error::Forked,
            Error::TransferClaimed,
            Error::ThreadExited,
            Error::Closed,
        ];
        let statuses: Vec<tether_status> = errors.iter().map(|e| tether_status::from(*e)).collect();
        assert_eq!(statuses, ALL[1..12].to_vec());
    }

    #[test]
    fn every_message_is_distinct_and_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for s in ALL {
            let m = s.message().to_str().unwrap();
            assert!(seen.insert(m), "{s:?}");
            assert!(m.starts_with(|c: char| c.is_ascii_lowercase()), "{s:?}");
        }
    }
}
