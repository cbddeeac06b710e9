//! One running `init` and its waiters ("single flight"): the creator runs
//! `init` with no lock held, publishes the outcome under the map lock (one
//! minted transfer per waiter), and wakes the waiters; an unwinding
//! creator settles its flight so nobody waits forever.

use std::hash::Hash;
use std::sync::Arc;

use super::keys::{drop_keys, Place, Probe};
use super::{Entry, Flight, FlightState, InternError, Interner, Map, Shared};
use crate::inner::Kind;
use crate::Handle;

impl<K, T, E> Interner<K, T, E>
where
    K: Hash + Eq + Send + Sync + 'static,
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Runs `init`, inserts, and publishes to the waiters. `place` is the
    /// flight's entry in the map.
    pub(super) fn create(
        &self,
        place: Place,
        flight: &Arc<Flight<E>>,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Handle, InternError<E>> {
        let guard = Unwinding {
            shared: &self.shared,
            place,
            flight,
        };
        let made = init();
        let result = match made {
            Ok(value) => match self.shared.inner.insert(value, Kind::Ref) {
                Ok(held) => Ok(held.h),
                Err(e) => Err(InternError::Registry(e.error())),
            },
            Err(e) => Err(InternError::Init(Arc::new(e))),
        };
        let (leftover, minted) = self.publish(place, flight, &result);
        std::mem::forget(guard); // settled
        flight.done.notify_all();
        // The hook is user code: told of the minted transfers only now,
        // with no interner lock held.
        if let Ok(h) = &result {
            self.shared.inner.transferred(*h, minted);
        }
        // A failed flight's key, dropped with no lock held; the waiters
        // already have their outcome.
        drop_keys(leftover, &self.shared.key_panics);
        result
    }

    /// Settles `flight` with `result` under the map lock: `Ready` with one
    /// minted hold per waiter, or (on error) the flight's entry removed and
    /// its key returned, for the caller to drop after unlocking. Runs no
    /// user code: the entry is found by its place.
    fn publish(
        &self,
        place: Place,
        flight: &Arc<Flight<E>>,
        result: &Result<Handle, InternError<E>>,
    ) -> (Option<K>, u32) {
        let mut map = self.shared.map.lock();
        let mut state = flight.state.lock();
        let waiters = match &*state {
            FlightState::Running { waiters } => *waiters,
            FlightState::Done(_) => 0,
        };
        let mut leftover = None;
        let mut minted = 0;
        let outcome = match result {
            Ok(h) => match self.shared.inner.mint_transfers(*h, waiters) {
                Ok(()) => {
                    minted = waiters;
                    let at: &dyn Probe<K> = &place;
                    if let Some(entry) = map.by_key.get_mut(at) {
                        *entry = Entry::Ready(*h);
                    }
                    map.by_handle.insert(*h, place);
                    Ok(*h)
                }
                // Unreachable in practice (2^32 holds): the waiters get
                // the error, the creator keeps its reference.
                Err(e) => {
                    leftover = remove_flight(&mut map, place, flight);
                    Err(InternError::Registry(e))
                }
            },
            Err(e) => {
                leftover = remove_flight(&mut map, place, flight);
                Err(e.clone())
            }
        };
        *state = FlightState::Done(outcome);
        (leftover, minted)
    }

    /// Waits for another thread's `init`, then claims the reference it
    /// minted for this caller.
    pub(super) fn wait(&self, flight: &Flight<E>) -> Result<Handle, InternError<E>> {
        let outcome = {
            let mut state = flight.state.lock();
            loop {
                if let FlightState::Done(outcome) = &*state {
                    break outcome.clone();
                }
                state = flight.done.wait(state);
            }
        };
        let h = outcome?;
        let inner = &self.shared.inner;
        match inner.claim_in(h, Kind::Ref) {
            Ok(_) => Ok(h),
            Err(e) => {
                // Refused (closed registry, overflow): give the hold back.
                inner.drop_transfer(h);
                Err(InternError::Registry(e))
            }
        }
    }
}

/// Removes the entry at `place` if it is still `flight`'s (no user code);
/// the caller drops the returned key after unlocking.
fn remove_flight<K: Eq, E>(
    map: &mut Map<K, E>,
    place: Place,
    flight: &Arc<Flight<E>>,
) -> Option<K> {
    let at: &dyn Probe<K> = &place;
    match map.by_key.get(at) {
        Some(Entry::Pending(f)) if Arc::ptr_eq(f, flight) => {
            map.by_key.remove_entry(at).map(|(stored, _)| stored.key)
        }
        _ => None,
    }
}

/// Settles the flight with `InitPanicked` if `create` unwinds (a panicking
/// `init`) before publishing, so waiters never hang and the key is not
/// poisoned.
struct Unwinding<'a, K: Eq, T: Send + Sync + 'static, E> {
    shared: &'a Shared<K, T, E>,
    place: Place,
    flight: &'a Arc<Flight<E>>,
}

impl<K: Eq, T: Send + Sync + 'static, E> Drop for Unwinding<'_, K, T, E> {
    fn drop(&mut self) {
        let removed = {
            let mut map = self.shared.map.lock();
            let mut state = self.flight.state.lock();
            if !matches!(*state, FlightState::Running { .. }) {
                return; // already published
            }
            *state = FlightState::Done(Err(InternError::InitPanicked));
            remove_flight(&mut map, self.place, self.flight)
        };
        self.flight.done.notify_all();
        // We are unwinding: a second panic would abort.
        drop_keys(removed, &self.shared.key_panics);
    }
}
