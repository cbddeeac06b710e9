//! The `pending()` future: ready once the home thread's inbox has work.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::Registry;

/// Ready once the calling (home) thread's inbox holds values to finalize;
/// from [`Registry::pending`]. It drains nothing: call
/// [`Registry::pump`] or [`Registry::pump_at_most`] when it is ready.
///
/// Works with any executor (it uses only std's `Waker`): the waker is woken
/// by the releasing thread on the inbox's idle → pending edge, with the
/// same no-lost-wake-up guarantee as a notifier. `!Send`: it belongs to the
/// home thread whose inbox it watches.
///
/// ```
/// # use tether::Registry;
/// # use std::task::{Context, Poll, Waker};
/// # use std::future::Future;
/// let reg: Registry<u32> = Registry::new();
/// let h = reg.insert(1)?;
/// let t = reg.transfer(h)?;
/// let mut fut = Box::pin(reg.pending());
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(fut.as_mut().poll(&mut cx).is_pending());  // nothing queued
/// let r2 = reg.clone();
/// std::thread::spawn(move || drop(r2.claim(t).map(|h| r2.release(h))))
///     .join()
///     .unwrap();
/// assert!(fut.as_mut().poll(&mut cx).is_ready());    // a value came home
/// assert_eq!(reg.pump(), 1);
/// # Ok::<(), tether::Error>(())
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Pending<'a, T: Send + Sync + 'static> {
    reg: &'a Registry<T>,
    /// `!Send`, `!Sync`: the home thread's.
    _home: PhantomData<*const ()>,
}

impl<'a, T: Send + Sync + 'static> Pending<'a, T> {
    pub(crate) fn new(reg: &'a Registry<T>) -> Self {
        Pending {
            reg,
            _home: PhantomData,
        }
    }
}

impl<T: Send + Sync + 'static> Future for Pending<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.reg.inner.poll_pending(cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Pending<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}
