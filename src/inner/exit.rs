//! A thread's exit (invariant 7) and the registry's own drop: the two
//! teardowns, and an exited thread's table freed with its last late hold.

use crate::caught::drop_caught;
use std::ptr;
use std::sync::Arc;

use super::Inner;
use crate::inbox::Sent;
use crate::local::ThreadTable;
use crate::local::{refs, roots_only};
use crate::slot::{generation, holds};
use crate::sync::Ordering;
use crate::tid::{self, ExitHook};
use crate::{Handle, ThreadExit};

impl<T: Send + Sync + 'static> Inner<T> {
    /// Thread exit, phase one, with the table still attached: drains the
    /// inbox and (with `ThreadExit::Release`) releases the explicit
    /// references, again and again while the `Drop`s this runs queue more
    /// values or take new references on this thread — until a pass finds
    /// nothing, so any chain of `Drop`s that ends is released to its end
    /// (invariant 7). Returns how many references it released.
    fn settle_exiting(&self, table: &ThreadTable<T>) -> usize {
        let mut released = 0;
        loop {
            let drained = self.drain(table, usize::MAX, false);
            let mut released_now = 0;
            if self.config.thread_exit == ThreadExit::Release {
                table.for_each_entry(|index, entry| {
                    let e = entry.load(Ordering::Relaxed);
                    if refs(e) == 0 {
                        return;
                    }
                    released_now += 1;
                    let left = roots_only(e);
                    entry.store(left, Ordering::Relaxed);
                    if left == 0 {
                        if let Some(slot) = self.slots.get(index) {
                            let g = generation(slot.state());
                            let h = Handle::new(self.tag, g, index as u32);
                            self.lost(h, table);
                            self.drop_hold(slot, h, Some(table));
                        }
                    }
                });
            }
            released += released_now;
            if drained == 0 && released_now == 0 {
                return released;
            }
        }
    }

    /// One late hold of the exited thread's table `table` is gone (see
    /// `ThreadTable::late`); the last one frees the table.
    ///
    /// # Safety
    ///
    /// `table` is a table of this registry whose thread has exited, still
    /// owned by `self.tables`, and the caller holds no reference into it
    /// (it may be freed here).
    #[cold]
    pub(crate) unsafe fn late_hold_gone(&self, table: *const ThreadTable<T>) {
        // SAFETY: the caller's precondition: the table is alive until it is
        // removed below.
        let late = unsafe { &(*table).late };
        if late.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let removed = {
            let mut tables = self.tables.lock();
            let removed = tables
                .list
                .iter()
                .position(|t| ptr::eq(Arc::as_ptr(t), table))
                .map(|i| tables.list.swap_remove(i));
            if let Some(t) = &removed {
                // What it counted stays counted (see `len`).
                tables.inserted += t.inserted.get();
                tables.finalized += t.finalized.get();
                tables.sending += t.sending.get();
                tables.sent += t.sent.get();
                tables.received += t.received.get();
            }
            removed
        };
        // Outside the lock: the table's drop gives up inbox counts.
        drop(removed);
    }
}

impl<T: Send + Sync + 'static> ExitHook for Inner<T> {
    /// Invariant 7, on the exiting thread: drain the inbox (the home's
    /// pending queue is finalized first), release or keep its references,
    /// close the inbox, detach the table, tell the event hook, and free the
    /// table unless something still needs it.
    ///
    /// The table is detached (no cache, no directory cell) *before* the
    /// event hook runs user code: a call on this thread from the hook (or
    /// from any later thread-local destructor) cannot reach the table and
    /// cannot register a new one (`Err(ThreadExited)`), so nothing can be
    /// added to a table about to be freed. Proxies and guards that already
    /// exist may outlive the hook (in thread-locals destroyed later): each
    /// is a late hold, and the last one gone frees the table.
    fn thread_exit(&self, tid: u32) {
        if crate::fork::forked() {
            return;
        }
        let Some(cell) = self.threads.get(tid as usize) else {
            return;
        };
        let p = cell.load(Ordering::Acquire);
        if p.is_null() {
            return;
        }
        // SAFETY: see `my_table`: we are the owning thread of `tid`.
        let table = unsafe { &*p };
        let mut released = self.settle_exiting(table);
        table.inbox.close();
        // Nobody is to be woken here any more (DESIGN §8).
        table.inbox.clear_listeners();
        released += self.settle_exiting(table);
        // Detach. From here on this thread frees slots to the global list.
        table.exited.store(true, Ordering::Relaxed);
        self.spill_cache(table);
        tid::uncache_table(self.cache_key);
        cell.store(ptr::null_mut(), Ordering::Release);
        let kept = table.held_objects();
        // One late hold per object still held, and one for this function
        // while the event hook runs (a proxy it drops may be the last).
        table.late.store(kept + 1, Ordering::Relaxed);
        self.diag.emit(|| crate::Event::ThreadExited {
            thread: table.thread,
            released,
            kept,
        });
        // SAFETY: an exited table of this registry, still listed (our own
        // late hold kept it); `table` is not used after this.
        unsafe { self.late_hold_gone(p) };
    }
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        if crate::fork::forked() {
            // Another process's threads may have held our locks at fork():
            // leak the values rather than touch anything.
            return;
        }
        // Frees this thread's cache slot (other threads' slots holding this
        // registry never match again: keys are not reused).
        tid::uncache_table(self.cache_key);
        // Every `Registry`, `Proxy` and `Transfer` is gone. What is left is
        // held by explicit references, pins and raw tokens nobody can
        // release any more: finalize it — on its home thread if that thread
        // lives (DESIGN §5): the value goes to its inbox, which that thread
        // keeps beyond the registry (`tid::Leftovers`) and drains at its
        // exit, its next `pump()` or its first use of a registry. Values
        // already queued there stay there for the same reason.
        let my_inbox = tid::assigned()
            .and_then(|tid| self.threads.get(tid as usize))
            .map(|cell| cell.load(Ordering::Acquire))
            .filter(|p| !p.is_null())
            // SAFETY: a non-null cell of the calling thread points to its
            // live table (see `Inner::my_table_slow`), owned by
            // `self.tables` until this drop ends.
            .map(|p| Arc::clone(unsafe { &(*p).inbox }));
        let mine = my_inbox.as_ref().map(Arc::as_ptr);
        let next = self.alloc.lock().next;
        for i in 0..next {
            let Some(slot) = self.slots.get(i as usize) else {
                continue;
            };
            if holds(slot.state()) == 0 {
                continue;
            }
            let h = Handle::new(self.tag, generation(slot.state()), i);
            // SAFETY: `&mut self`: no other reference to the registry exists,
            // so nothing can hold this live object any more; each slot is
            // taken once.
            let (value, home) = unsafe { slot.take() };
            let value = match &home {
                Some(inbox) if self.config.home_finalization && mine != Some(inbox.as_ptr()) => {
                    match inbox.send(h, value) {
                        Sent::Queued => {
                            // Wake the home if it sleeps (a panic of its
                            // notifier is caught; nobody is left to count it).
                            let _ = inbox.take_edge();
                            continue;
                        }
                        // The home thread has exited: dropped here.
                        Sent::Closed(value) => Some(value),
                        Sent::Orphaned => {
                            // It exited during the send: what it may have
                            // missed is dropped here.
                            inbox.drain(usize::MAX, false, |_, v| {
                                drop_caught(v);
                            });
                            None
                        }
                    }
                }
                _ => Some(value),
            };
            if let Some(value) = value {
                drop_caught(value);
            }
            drop(home);
        }
        // The calling thread is home to what waits in its own inbox.
        if let Some(inbox) = my_inbox {
            inbox.drain(usize::MAX, false, |_, v| {
                drop_caught(v);
            });
        }
        // Last: no handle of this registry is honoured any more.
        crate::tag::free(self.tag);
    }
}
