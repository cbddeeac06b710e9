//! The C API of [`tether`]: a registry of `void *` values with per-thread
//! reference counts, each value finalized on its home thread.
//!
//! This crate builds `libtether_ffi.so` / `.a`; C code includes
//! `include/tether.h` (generated from this crate by cbindgen) and links one of
//! them. Every rule of tether holds, with the value's finalizer in place of
//! `Drop`:
//!
//! * the thread that inserts a value is its **home**, and the registry's
//!   finalizer runs there, exactly once, when no thread holds the value, no
//!   pin and no transfer keeps it: at once if the home lets go last,
//!   otherwise at the home's next tether call or [`tether_pump`];
//! * counts are **per thread**: a thread releases only what it holds
//!   ([`tether_status::TETHER_NOT_HELD`] otherwise, and nothing changes);
//! * a thread that neither holds a value nor is its home gets a first
//!   reference only by **claiming a transfer token** ([`tether_transfer`],
//!   [`tether_claim`]), unless the value is pinned;
//! * a thread's **exit releases** what it still holds (pthreads included).
//!
//! Conventions (rustls-ffi's): every fallible call returns a
//! [`tether_status`]; out-parameters are written only on `TETHER_OK`; a NULL
//! pointer argument is `TETHER_NULL_ARGUMENT`; a Rust panic is caught at the
//! boundary and returned as `TETHER_PANIC`; [`tether_status_str`] gives a
//! static message.
//!
//! ```
//! use std::ffi::c_void;
//! use tether_ffi::*;
//!
//! unsafe extern "C" fn finalize(value: *mut c_void, _ctx: *mut c_void) {
//!     // The value's last reference is gone: free it (here, a Box<u32>).
//!     drop(unsafe { Box::from_raw(value.cast::<u32>()) });
//! }
//!
//! unsafe {
//!     let reg = tether_registry_new(Some(finalize), std::ptr::null_mut());
//!     let mut h = 0u64;
//!     let value = Box::into_raw(Box::new(7u32)).cast::<c_void>();
//!     assert_eq!(tether_insert(reg, value, &mut h), tether_status::TETHER_OK);
//!
//!     let mut out = std::ptr::null_mut();
//!     assert_eq!(tether_get(reg, h, &mut out), tether_status::TETHER_OK);
//!     assert_eq!(*out.cast::<u32>(), 7);
//!
//!     let mut released = tether_released::TETHER_HELD;
//!     assert_eq!(tether_release(reg, h, &mut released), tether_status::TETHER_OK);
//!     assert_eq!(released, tether_released::TETHER_FINALIZED); // freed, here
//!     assert_eq!(tether_release(reg, h, &mut released), tether_status::TETHER_STALE);
//!     tether_registry_free(reg);
//! }
//! ```
//!
//! `tether_set_notify`, `tether_has_pending` and `tether_pump_at_most` wrap
//! `Registry::set_notify`, `has_pending` and `pump_at_most` (DESIGN §8): a
//! home thread sleeping in its event loop is woken when work arrives.
//!
//! # Safety and Correctness
//!
//! The functions are `unsafe` for the usual C reasons: pointer arguments
//! must be NULL or valid, and a registry must not be used during or after
//! [`tether_registry_free`] (like `free()`). Within that:
//!
//! * Every value is a `Payload` (the pointer plus the registry's finalizer
//!   and context) in a `tether::Registry<Payload>`, whose `Drop` calls the
//!   finalizer: tether decides when and where it runs, by its own rules and
//!   tests. This crate uses only tether's public API.
//! * A registry pointer is checked before use: NULL is
//!   `TETHER_NULL_ARGUMENT`; a misaligned pointer, or one whose first word is
//!   not the tag of a registry *at that address*, is `TETHER_INVALID`. That
//!   catches a pointer to some other object, a copy of a registry, and often
//!   (not reliably: it is undefined behaviour) a freed one. It cannot catch a
//!   pointer to unmapped memory (a crash) or to fewer readable bytes than a
//!   registry (undefined behaviour).
//! * Handles and tokens are plain numbers and fully checked by tether: any
//!   value is safe to pass.
//! * Each `unsafe` block carries a `// SAFETY:` argument; `unsafe_op_in_unsafe_fn`
//!   is denied.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]

mod boundary;
mod payload;
mod registry;
mod status;

use std::ffi::{c_char, c_void};
use std::ptr;

use tether::Transfer;

use crate::boundary::{call, call_or, handle, Out};
pub use crate::payload::tether_finalizer;
use crate::payload::Payload;
pub use crate::registry::tether_registry;
pub use crate::status::{tether_released, tether_status};

/// The `tether_status` argument of [`tether_status_str`]: any `uint32_t`, so
/// that a value C made up is a message, not undefined behaviour. The header
/// spells it `tether_status` (the same `uint32_t` typedef).
#[doc(hidden)]
#[allow(non_camel_case_types)]
pub type tether_status_arg = u32;

/// Makes a registry whose values are finalized by `fin(value, ctx)`.
///
/// Who: any thread. `fin` may be NULL (values are then never finalized:
/// the registry does not own them). `fin` runs on each value's home thread
/// while that thread lives, otherwise on the thread that lets go last or
/// frees the registry; `ctx` must stay valid for as long as `fin` may run
/// (see `tether_registry_free`).
///
/// Returns the registry, or NULL on failure (an internal error).
///
/// # Safety
///
/// `fin`, if not NULL, is safe to call with any value inserted into this
/// registry and `ctx`, on any thread, and does not unwind.
#[no_mangle]
pub unsafe extern "C" fn tether_registry_new(
    fin: tether_finalizer,
    ctx: *mut c_void,
) -> *mut tether_registry {
    call_or(ptr::null_mut(), || tether_registry::new(fin, ctx))
}

/// Frees a registry. NULL is ignored, like `free(NULL)`; a pointer that is
/// not a live registry (see `TETHER_INVALID`) is left alone.
///
/// Who: any one thread, once, when no other call on `reg` is running or
/// will be made: like `free()`, the caller makes sure every thread is done
/// with it (and no finalizer is freeing it from within a tether call). The
/// finalizers this call runs get `TETHER_INVALID` (and 0 from `tether_pump`
/// and `tether_len`) if they use `reg`.
///
/// Values still held (by any thread, a pin or an unclaimed token) are
/// finalized now, on the calling thread; so are values queued to the
/// calling thread. Values already queued to *another* home thread that is
/// still alive are finalized on that thread, at its next tether call on any
/// registry, its next `tether_pump`, or its exit: keep `ctx` valid until
/// then.
///
/// # Safety
///
/// `reg` is NULL or readable for the size of a registry, and no other
/// call on it overlaps this one or follows it.
#[no_mangle]
pub unsafe extern "C" fn tether_registry_free(reg: *mut tether_registry) {
    // SAFETY: the caller's contract is `free`'s.
    call_or((), || unsafe { tether_registry::free(reg) })
}

/// Stores `value` (opaque: tether never dereferences it; NULL is a valid
/// value) and writes its handle (never 0, below 2^53) to `*out_handle`.
///
/// Who: any thread; it becomes the value's home thread and holds one
/// reference.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT` (`reg` or `out_handle`),
/// `TETHER_INVALID` (`reg` is not a registry), `TETHER_FULL`,
/// `TETHER_FORKED`, `TETHER_THREAD_EXITED`, `TETHER_PANIC`. On any error the
/// value stays the caller's: the finalizer is not called.
///
/// # Safety
///
/// `reg` as for every call (NULL, or a registry not being freed);
/// `out_handle` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_insert(
    reg: *mut tether_registry,
    value: *mut c_void,
    out_handle: *mut u64,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out_handle) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        let payload = Payload::new(value, r.finalizer, r.ctx);
        match r.registry.insert(payload) {
            Ok(h) => {
                out.write(h.to_raw());
                Ok(())
            }
            Err(e) => {
                let error = e.error();
                // Not inserted: the value is still the caller's.
                e.into_value().into_value();
                Err(error.into())
            }
        }
    })
}

/// Adds one reference of the calling thread to `h`; writes the thread's
/// count after it to `*out_count`.
///
/// Who: a thread that holds a reference to `h`, `h`'s home thread, or any
/// thread if `h` is pinned.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID` (an id this
/// registry never issued, or `reg` not a registry), `TETHER_STALE`,
/// `TETHER_FOREIGN`, `TETHER_NOT_HELD` (no right to it), `TETHER_OVERFLOW`,
/// `TETHER_FORKED`, `TETHER_THREAD_EXITED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_retain(
    reg: *mut tether_registry,
    h: u64,
    out_count: *mut u32,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out_count) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        out.write(r.registry.retain(handle(h)?)?);
        Ok(())
    })
}

/// Gives up one reference of the calling thread to `h`; writes what that did
/// to `*out`: `TETHER_HELD` (still alive), `TETHER_FINALIZED` (the last
/// reference, on the home thread: the finalizer ran before this returned) or
/// `TETHER_QUEUED` (the last reference, elsewhere: the finalizer will run on
/// the home thread).
///
/// Who: a thread that holds a reference it got from `tether_insert`,
/// `tether_retain` or `tether_claim` (counts are per thread: releasing
/// another thread's reference is `TETHER_NOT_HELD` and changes nothing).
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_STALE` (e.g. a double release of the last reference),
/// `TETHER_FOREIGN`, `TETHER_NOT_HELD`, `TETHER_FORKED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_release(
    reg: *mut tether_registry,
    h: u64,
    out: *mut tether_released,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        out.write(r.registry.release(handle(h)?)?.into());
        Ok(())
    })
}

/// Writes `h`'s value to `*out_value`.
///
/// Who: as `tether_retain`: a thread that holds a reference, the home
/// thread, or any thread if `h` is pinned. The value stays valid while the
/// caller holds a reference; the home thread's own values are finalized only
/// on the home thread, so there it stays valid until the home's next tether
/// call that may run finalizers. A non-holder using a pinned value must know
/// the pin outlives its use.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_STALE`, `TETHER_FOREIGN`, `TETHER_NOT_HELD`, `TETHER_OVERFLOW`,
/// `TETHER_FORKED`, `TETHER_THREAD_EXITED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call; `out_value` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_get(
    reg: *mut tether_registry,
    h: u64,
    out_value: *mut *mut c_void,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out_value) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        let value = r.registry.get(handle(h)?)?.value();
        out.write(value);
        Ok(())
    })
}

/// Writes the calling thread's own count for `h` to `*out_count` (0 if it
/// holds none of a live object).
///
/// Who: any thread.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_STALE`, `TETHER_FOREIGN`, `TETHER_FORKED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_count(
    reg: *mut tether_registry,
    h: u64,
    out_count: *mut u32,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out_count) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        out.write(r.registry.count(handle(h)?)?);
        Ok(())
    })
}

/// Pins `h`: the registry itself holds a reference, so `h` lives until
/// `tether_unpin` even if every thread lets go, and every thread may
/// `tether_get` / `tether_retain` it. Pins are counted.
///
/// Who: as `tether_retain`.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_STALE`, `TETHER_FOREIGN`, `TETHER_NOT_HELD`, `TETHER_OVERFLOW`,
/// `TETHER_FORKED`, `TETHER_THREAD_EXITED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_pin(reg: *mut tether_registry, h: u64) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        Ok(r.registry.pin(handle(h)?)?)
    })
}

/// Removes one pin of `h`. If nothing else holds it, it is finalized as by a
/// release (here if this is its home thread, else queued there).
///
/// Who: as `tether_retain` (a pinned object may be unpinned by any thread).
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_STALE`, `TETHER_FOREIGN`, `TETHER_NOT_HELD`, `TETHER_NOT_PINNED`,
/// `TETHER_FORKED`, `TETHER_THREAD_EXITED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_unpin(reg: *mut tether_registry, h: u64) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        Ok(r.registry.unpin(handle(h)?)?)
    })
}

/// Moves one of the calling thread's references to `h` into a transfer
/// token, written to `*out_token` (never 0, below 2^53, not guessable from
/// other tokens). The object stays alive while the token is outstanding,
/// whatever the sender does. Another thread claims it with `tether_claim`;
/// `tether_drop_transfer` gives it up.
///
/// Who: a thread that holds a reference it can release (see
/// `tether_release`).
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_STALE`, `TETHER_FOREIGN`, `TETHER_NOT_HELD`, `TETHER_FORKED`,
/// `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call; `out_token` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_transfer(
    reg: *mut tether_registry,
    h: u64,
    out_token: *mut u64,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out_token) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        match r.registry.transfer(handle(h)?)?.into_raw() {
            // A fork between the two calls: the reference stays counted.
            0 => Err(tether_status::TETHER_FORKED),
            token => {
                out.write(token);
                Ok(())
            }
        }
    })
}

/// Claims a transfer token: the calling thread gets the reference it
/// carries (+1 to its count) and `*out_handle` the object's handle.
///
/// Who: any thread that has the token; a token is claimed at most once.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID` (a token
/// this registry never issued), `TETHER_TRANSFER_CLAIMED` (already claimed
/// or dropped), `TETHER_OVERFLOW`, `TETHER_FORKED`, `TETHER_THREAD_EXITED`,
/// `TETHER_PANIC`. A claim that fails with `TETHER_OVERFLOW` or
/// `TETHER_THREAD_EXITED` has used the token up: its reference was released.
///
/// # Safety
///
/// `reg` as for every call; `out_handle` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tether_claim(
    reg: *mut tether_registry,
    token: u64,
    out_handle: *mut u64,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(out_handle) }?;
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        out.write(r.registry.claim_raw(token)?.to_raw());
        Ok(())
    })
}

/// Gives up an unclaimed transfer token: its reference is released (and if
/// it was the last, the object is finalized here if this is its home
/// thread, else queued to its home).
///
/// Who: any thread that has the token.
///
/// Returns `TETHER_OK`, `TETHER_NULL_ARGUMENT`, `TETHER_INVALID`,
/// `TETHER_TRANSFER_CLAIMED` (already claimed or dropped), `TETHER_FORKED`,
/// `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_drop_transfer(
    reg: *mut tether_registry,
    token: u64,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        drop(Transfer::from_raw(&r.registry, token)?);
        Ok(())
    })
}

/// Runs every finalization queued for the calling thread (values whose home
/// it is, released last by other threads); returns how many.
///
/// Who: any thread; only a home thread has anything queued. Home threads'
/// other tether calls also run a bounded batch when something is queued, but
/// a home that may go quiet must pump. Called from inside a finalizer that a
/// pump is running, it returns 0 (the running pump goes on).
///
/// Returns 0 also for a NULL or invalid `reg`, in a forked child, and on an
/// internal error.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_pump(reg: *mut tether_registry) -> usize {
    call_or(0, || {
        // SAFETY: the caller's contract.
        unsafe { tether_registry::from_ptr(reg) }.map_or(0, |r| r.registry.pump())
    })
}

/// Runs at most `max` of the finalizations queued for the calling thread;
/// returns how many. When it empties the queue it re-arms the notifier (see
/// [`tether_set_notify`]).
///
/// Who: any thread; only a home thread has anything queued. Returns 0 for a
/// NULL or invalid `reg`, in a forked child, and from inside a finalizer
/// that a pump is running.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_pump_at_most(reg: *mut tether_registry, max: usize) -> usize {
    call_or(0, || {
        // SAFETY: the caller's contract.
        unsafe { tether_registry::from_ptr(reg) }.map_or(0, |r| r.registry.pump_at_most(max))
    })
}

/// Whether values wait in the calling thread's queue (one relaxed load;
/// drains nothing). An event loop pumps, then checks this, then sleeps
/// until its notifier wakes it: it never sleeps with work queued.
///
/// Who: any thread. `false` for a NULL or invalid `reg`.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_has_pending(reg: *const tether_registry) -> bool {
    call_or(false, || {
        // SAFETY: the caller's contract.
        unsafe { tether_registry::from_ptr(reg) }.is_ok_and(|r| r.registry.has_pending())
    })
}

/// A C notifier and its context (see [`tether_set_notify`]).
struct Notifier {
    f: unsafe extern "C" fn(ctx: *mut c_void),
    ctx: *mut c_void,
}

impl Notifier {
    /// A method, so a closure captures the whole struct (not its
    /// raw-pointer fields one by one, which are not `Send`).
    fn call(&self) {
        // SAFETY: `tether_set_notify`'s contract: `f` may be called with
        // `ctx` on any thread until the notifier is replaced or cleared.
        unsafe { (self.f)(self.ctx) }
    }
}

// SAFETY: a `Notifier` only copies two pointers and calls the C function
// with them, which `tether_set_notify`'s contract allows from any thread.
unsafe impl Send for Notifier {}
// SAFETY: as above; calling it from two threads at once is allowed too.
unsafe impl Sync for Notifier {}

/// Sets (or, with a NULL `notify`, clears) the calling (home) thread's
/// notifier: `notify(ctx)` is called on a releasing thread right after it
/// queued a value for this thread, never under a registry lock, at most
/// once per idle → pending edge (again only after this thread drained its
/// queue empty), and no wake-up is lost (see [`tether_has_pending`]). Post
/// to your event loop there; do not block. The thread's exit clears it.
///
/// Who: the home thread whose queue it watches. Returns `TETHER_OK`,
/// `TETHER_NULL_ARGUMENT` (NULL `reg`), `TETHER_INVALID` (not a registry),
/// `TETHER_FORKED`, `TETHER_THREAD_EXITED`, `TETHER_PANIC`.
///
/// # Safety
///
/// `reg` as for every call; `notify` must be safe to call with `ctx` from
/// any thread, at any time until this thread replaces or clears it, exits,
/// or the registry is freed.
#[no_mangle]
pub unsafe extern "C" fn tether_set_notify(
    reg: *mut tether_registry,
    notify: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    ctx: *mut c_void,
) -> tether_status {
    call(|| {
        // SAFETY: the caller's contract.
        let r = unsafe { tether_registry::from_ptr(reg) }?;
        match notify {
            None => r.registry.clear_notify(),
            Some(f) => {
                let n = Notifier { f, ctx };
                r.registry
                    .set_notify(move || n.call())
                    .map_err(tether_status::from)?;
            }
        }
        Ok(())
    })
}

/// The number of live objects (values queued for finalization are not
/// live). Exact while no other thread is inserting or releasing.
///
/// Who: any thread. Returns 0 for a NULL or invalid `reg` and in a forked
/// child.
///
/// # Safety
///
/// `reg` as for every call.
#[no_mangle]
pub unsafe extern "C" fn tether_len(reg: *const tether_registry) -> usize {
    call_or(0, || {
        // SAFETY: the caller's contract.
        unsafe { tether_registry::from_ptr(reg) }.map_or(0, |r| r.registry.len())
    })
}

/// A static, NUL-terminated message for `s` (any value: an unknown one gets
/// a message saying so). Never NULL; never free it.
///
/// Who: any thread.
#[no_mangle]
pub extern "C" fn tether_status_str(s: tether_status_arg) -> *const c_char {
    call_or(c"internal error".as_ptr(), || status::status_str(s))
}
