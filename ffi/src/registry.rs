//! The C registry object and the checks on a registry pointer.

use std::mem::ManuallyDrop;
use std::ptr;

use tether::Registry;

use crate::payload::{tether_finalizer, Payload};
use crate::status::tether_status;

/// An opaque registry of C values (`void *`), made by `tether_registry_new`
/// and freed by `tether_registry_free`. Any thread may use it; see the
/// functions for who may do what.
#[allow(non_camel_case_types)]
pub struct tether_registry {
    /// `TAG ^ address of this struct` while it lives (see [`tag_at`]);
    /// something else before `tether_registry_new` returns and once
    /// `tether_registry_free` starts.
    tag: u64,
    /// Dropped by `free` in place, before the memory is released, so that
    /// finalizers it runs can still read `tag` (cleared: they get
    /// `TETHER_INVALID`).
    pub(crate) registry: ManuallyDrop<Registry<Payload>>,
    pub(crate) finalizer: tether_finalizer,
    pub(crate) ctx: *mut std::ffi::c_void,
}

impl std::fmt::Debug for tether_registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tether_registry")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// "tether!!": the registry tag before it is mixed with the address.
const TAG: u64 = u64::from_be_bytes(*b"tether!!");

/// The tag a live registry at `p` carries. Mixing in the address makes a
/// byte-for-byte copy of a registry (or a registry at a reused address
/// after a free, when the allocator left its bytes) fail the check too.
fn tag_at(p: *const tether_registry) -> u64 {
    TAG ^ (p as usize as u64)
}

impl tether_registry {
    /// A boxed registry, tagged at its final address.
    pub(crate) fn new(finalizer: tether_finalizer, ctx: *mut std::ffi::c_void) -> *mut Self {
        let p = Box::into_raw(Box::new(tether_registry {
            tag: 0,
            registry: ManuallyDrop::new(Registry::new()),
            finalizer,
            ctx,
        }));
        // SAFETY: `p` was just made by `Box::into_raw` and is not shared yet.
        unsafe { (*p).tag = tag_at(p) };
        p
    }

    /// The registry behind a pointer from C.
    ///
    /// NULL is `TETHER_NULL_ARGUMENT`; a misaligned pointer or one whose
    /// first word is not this registry's tag is `TETHER_INVALID`, without
    /// reading anything but that word.
    ///
    /// # Safety
    ///
    /// `p` is NULL, or readable for `size_of::<tether_registry>()` bytes;
    /// if it is a registry from `tether_registry_new`, it is not freed
    /// before the returned reference's last use (`tether_registry_free`'s
    /// contract: no call may overlap the free).
    pub(crate) unsafe fn from_ptr<'a>(
        p: *const tether_registry,
    ) -> Result<&'a tether_registry, tether_status> {
        if p.is_null() {
            return Err(tether_status::TETHER_NULL_ARGUMENT);
        }
        if !p.is_aligned() {
            return Err(tether_status::TETHER_INVALID);
        }
        // SAFETY: `p` is aligned and, by the precondition, readable; the tag
        // is a `u64`, valid for any bits, read through a raw pointer so no
        // reference to a possibly invalid `tether_registry` is made first.
        let tag = unsafe { ptr::addr_of!((*p).tag).read() };
        if tag != tag_at(p) {
            return Err(tether_status::TETHER_INVALID);
        }
        // SAFETY: the tag is written only by `new`, at this address, after
        // the struct was fully built, and cleared by `free` before it is
        // dropped: `p` is a live registry, and the precondition keeps it so
        // for `'a`.
        Ok(unsafe { &*p })
    }

    /// Frees a registry; a NULL or non-registry pointer is left alone.
    ///
    /// # Safety
    ///
    /// As [`from_ptr`](Self::from_ptr); in addition no other call on `p` runs
    /// at the same time or later (it is freed here).
    pub(crate) unsafe fn free(p: *mut tether_registry) {
        // SAFETY: the caller's contract, as `from_ptr`'s.
        if unsafe { Self::from_ptr(p) }.is_err() {
            return;
        }
        // SAFETY: a live registry (checked above) made by `Box::into_raw` in
        // `new`, used by no other call now or later (the contract). The tag
        // is cleared first, through the raw pointer: the finalizers that
        // dropping the registry runs may call tether with `p`, and then read
        // only the tag (now 0: `TETHER_INVALID`), never the registry being
        // dropped, which is borrowed mutably alone (not the whole struct).
        // It is dropped once, here (`ManuallyDrop`), and the memory freed
        // after, when no finalizer of it runs any more; a use after that
        // fails the tag check while the allocator leaves the bytes in place.
        unsafe {
            ptr::addr_of_mut!((*p).tag).write(0);
            ManuallyDrop::drop(&mut *ptr::addr_of_mut!((*p).registry));
            drop(Box::from_raw(p));
        }
    }
}
