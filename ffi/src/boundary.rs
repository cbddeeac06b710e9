//! Crossing the boundary: panics caught, out-parameters checked, handles
//! decoded.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use tether::Handle;

use crate::status::tether_status;

/// Runs the body of a fallible C function: `Ok` is `TETHER_OK`, `Err(s)` is
/// `s`, and a panic is caught here and becomes `TETHER_PANIC` (it never
/// unwinds into C).
pub(crate) fn call(body: impl FnOnce() -> Result<(), tether_status>) -> tether_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => tether_status::TETHER_OK,
        Ok(Err(s)) => s,
        Err(_) => tether_status::TETHER_PANIC,
    }
}

/// Runs the body of an infallible C function; a panic gives `otherwise`.
pub(crate) fn call_or<T>(otherwise: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(otherwise)
}

/// An out-parameter that was checked to be non-NULL and is written at most
/// once, at the end of a successful call.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// NULL is `TETHER_NULL_ARGUMENT`.
    ///
    /// # Safety
    ///
    /// `p` is NULL or valid for a write of one `T` (aligned), for as long as
    /// the `Out` lives.
    pub(crate) unsafe fn new(p: *mut T) -> Result<Out<T>, tether_status> {
        NonNull::new(p)
            .map(Out)
            .ok_or(tether_status::TETHER_NULL_ARGUMENT)
    }

    /// Writes the result. Consumes the `Out`: one write per call.
    pub(crate) fn write(self, value: T) {
        // SAFETY: `new`'s precondition: non-NULL (checked there), aligned and
        // valid for writes. `T` is a plain C type (no drop), so nothing is
        // read or dropped at the destination.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// A raw handle from C: 0 and values of 2^53 and above were never issued.
pub(crate) fn handle(raw: u64) -> Result<Handle, tether_status> {
    Handle::from_raw(raw).ok_or(tether_status::TETHER_INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_tether_panic() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        assert_eq!(call(|| panic!("boom")), tether_status::TETHER_PANIC);
        assert_eq!(call_or(7usize, || panic!("boom")), 7);
        std::panic::set_hook(prev);
        assert_eq!(call(|| Ok(())), tether_status::TETHER_OK);
        assert_eq!(
            call(|| Err(tether_status::TETHER_FULL)),
            tether_status::TETHER_FULL
        );
    }

    #[test]
    fn null_out_parameters_are_refused() {
        // SAFETY: NULL is allowed by `new`'s contract.
        let out = unsafe { Out::<u32>::new(std::ptr::null_mut()) };
        assert!(matches!(out, Err(tether_status::TETHER_NULL_ARGUMENT)));
    }

    #[test]
    fn raw_handles_out_of_range_are_invalid() {
        assert_eq!(handle(0), Err(tether_status::TETHER_INVALID));
        assert_eq!(handle(1 << 53), Err(tether_status::TETHER_INVALID));
        assert_eq!(handle(u64::MAX), Err(tether_status::TETHER_INVALID));
        assert!(handle(1).is_ok());
    }
}
