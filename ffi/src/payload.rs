//! The stored value: a C pointer and the finalizer that owns it.

use std::ffi::c_void;
use std::mem::ManuallyDrop;

/// Called once per value, with the value and the `ctx` given to
/// `tether_registry_new`, when the value's last reference is gone: on the
/// value's home thread (the thread that inserted it) while that thread lives.
/// It may call tether (release other handles, insert); it must not unwind
/// (no C++ exception, no `longjmp` out of it) and must not free the registry
/// it belongs to.
#[allow(non_camel_case_types)]
pub type tether_finalizer = Option<unsafe extern "C" fn(value: *mut c_void, ctx: *mut c_void)>;

/// What a `Registry<Payload>` stores: the C value and its registry's
/// finalizer. Dropping it calls the finalizer, so tether's rules for `Drop`
/// (home thread, exactly once, never under a lock) are the finalizer's.
///
/// The finalizer and its `ctx` are copied into every value rather than
/// pointed to, because a value can be finalized after `tether_registry_free`
/// (a value queued to a living home thread is dropped there later): it must
/// not depend on the registry's memory.
pub(crate) struct Payload {
    value: *mut c_void,
    finalizer: tether_finalizer,
    ctx: *mut c_void,
}

// SAFETY: Rust never dereferences `value` or `ctx`: it copies the two
// pointers and hands them to the C finalizer, which is what `Send` and
// `Sync` permit across threads (moving the bits to the home inbox, reading
// `value` from a `get` on any thread with access). What the pointed-to data
// allows is the C caller's side of the contract, documented in the header:
// the value pointer reaches every thread that calls `tether_get`, and the
// finalizer runs on the value's home thread while that thread lives,
// otherwise on the thread that lets go last or frees the registry. The
// finalizer pointer is a plain `extern "C"` function pointer, callable from
// any thread.
unsafe impl Send for Payload {}
// SAFETY: see `Send`: a shared `&Payload` only reads the pointer bits.
unsafe impl Sync for Payload {}

impl Payload {
    pub(crate) fn new(value: *mut c_void, finalizer: tether_finalizer, ctx: *mut c_void) -> Self {
        Payload {
            value,
            finalizer,
            ctx,
        }
    }

    /// The C value.
    pub(crate) fn value(&self) -> *mut c_void {
        self.value
    }

    /// The C value, without finalizing it: for a value handed back by a
    /// failed insert, which stays the caller's.
    pub(crate) fn into_value(self) -> *mut c_void {
        ManuallyDrop::new(self).value
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        if let Some(finalize) = self.finalizer {
            // SAFETY: `tether_registry_new`'s contract: `finalizer` is a
            // function of this signature that accepts this value and `ctx`
            // on whichever thread tether drops the value, and does not
            // unwind. It runs at most once per value: `Drop` runs once.
            unsafe { finalize(self.value, self.ctx) }
        }
    }
}
