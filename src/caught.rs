//! User code run with its panic caught (invariant 10): a value's `Drop`, a
//! notifier. A caught panic's payload is dropped the same way, since its
//! own `Drop` may panic too (then it is leaked, never unwound).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, catching a panic; `true` if it panicked.
pub(crate) fn call_caught(f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => false,
        Err(payload) => {
            drop_payload(payload);
            true
        }
    }
}

/// Drops `value`, catching a panic in its `Drop`; `true` if it panicked.
pub(crate) fn drop_caught<V>(value: V) -> bool {
    call_caught(move || drop(value))
}

/// Drops a caught panic's payload, whose own `Drop` may panic.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
