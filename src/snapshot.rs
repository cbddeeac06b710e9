//! A point-in-time view of a registry, for diagnostics.

use std::fmt;
use std::ptr;
use std::sync::Arc;
use std::thread::ThreadId;

use crate::inner::Inner;
use crate::Handle;

/// Every live object with its home, holders, pins and transfers, and every
/// known thread with its pending finalization queue.
///
/// Assembled without stopping other threads: under concurrent use it is a
/// good approximation of one moment, not an atomic cut. `Display` prints a
/// readable table.
///
/// ```
/// # use tether::Registry;
/// let reg = Registry::new();
/// let h = reg.insert("x")?;
/// reg.pin(h)?;
/// let s = reg.snapshot();
/// let o = s.object(h).unwrap();
/// assert_eq!((o.pins, o.transfers), (1, 0));
/// assert_eq!(o.home, Some(std::thread::current().id()));
/// assert_eq!(o.holders[0].count, 1);
/// println!("{s}");
/// # Ok::<(), tether::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// Live objects, by slot index.
    pub objects: Vec<ObjectSnapshot>,
    /// Threads with a table in this registry (live ones, and exited ones that
    /// still hold something).
    pub threads: Vec<ThreadSnapshot>,
    /// Live objects (as [`Registry::len`](crate::Registry::len)).
    pub live: usize,
    /// Panics caught in `Drop` of stored values so far.
    pub drop_panics: u64,
    /// Slots retired because their generation was exhausted.
    pub retired_slots: u32,
    /// Taken in a child process after `fork()` (and therefore empty).
    pub forked: bool,
}

/// One live object in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ObjectSnapshot {
    /// The object's handle.
    pub handle: Handle,
    /// Its home thread, or `None` if that thread has exited.
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::serde_impl::opt_thread")
    )]
    pub home: Option<ThreadId>,
    /// Threads holding it, with their counts.
    pub holders: Vec<HolderSnapshot>,
    /// Pins.
    pub pins: u32,
    /// Transfers in flight (raw tokens included). Derived: the object's
    /// holds less its holding threads and its pins (each holding thread has
    /// one hold, each pin and each transfer one), so under concurrent use it
    /// can count a thread that is just taking or dropping its hold.
    pub transfers: u32,
}

/// One thread's hold on an object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HolderSnapshot {
    /// The holding thread.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_impl::thread"))]
    pub thread: ThreadId,
    /// Its count (explicit references plus live proxies and guards).
    pub count: u32,
    /// The thread has exited and its references were kept
    /// ([`ThreadExit::Leak`](crate::ThreadExit::Leak)) or are proxies not yet dropped.
    pub exited: bool,
}

/// One thread known to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ThreadSnapshot {
    /// Its id.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_impl::thread"))]
    pub thread: ThreadId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// It has exited.
    pub exited: bool,
    /// Values queued for it to finalize.
    pub pending: usize,
}

impl Snapshot {
    pub(crate) fn take<T: Send + Sync + 'static>(inner: &Arc<Inner<T>>) -> Snapshot {
        let mut s = Snapshot {
            objects: Vec::new(),
            threads: Vec::new(),
            live: 0,
            drop_panics: inner.drop_panics(),
            retired_slots: 0,
            forked: crate::fork::forked(),
        };
        if s.forked {
            // No lock may be taken in a child (see `Inner::len`).
            return s;
        }
        s.live = inner.len();
        s.retired_slots = inner.retired();
        inner.with_tables(|tables| {
            s.threads = tables
                .iter()
                .map(|t| ThreadSnapshot {
                    thread: t.thread,
                    name: t.name.clone(),
                    exited: t.exited.load(crate::sync::Ordering::Relaxed),
                    pending: t.inbox.len(),
                })
                .collect();
            let all_pins = inner.all_pins();
            inner.for_each_live(|handle, slot, holds| {
                let home_addr = slot.home_addr();
                let pins = all_pins.get(&handle.index()).copied().unwrap_or(0);
                let home = tables
                    .iter()
                    .find(|t| ptr::eq(Arc::as_ptr(&t.inbox), home_addr))
                    .filter(|t| !t.exited.load(crate::sync::Ordering::Relaxed))
                    .map(|t| t.thread);
                let holders = tables
                    .iter()
                    .filter_map(|t| {
                        t.count_of(handle).map(|count| HolderSnapshot {
                            thread: t.thread,
                            count,
                            exited: t.exited.load(crate::sync::Ordering::Relaxed),
                        })
                    })
                    .collect::<Vec<_>>();
                // Every hold is a holding thread's, a pin's or an in-flight
                // transfer's: the transfers are what is left.
                let threads = u32::try_from(holders.len()).unwrap_or(u32::MAX);
                let transfers = holds.saturating_sub(threads).saturating_sub(pins);
                s.objects.push(ObjectSnapshot {
                    handle,
                    home,
                    holders,
                    pins,
                    transfers,
                });
            });
        });
        s
    }

    /// The entry for `h`, if it was live.
    pub fn object(&self, h: Handle) -> Option<&ObjectSnapshot> {
        self.objects.iter().find(|o| o.handle == h)
    }

    /// Values queued for finalization, over all threads.
    pub fn pending(&self) -> usize {
        self.threads.iter().map(|t| t.pending).sum()
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} live object(s), {} queued for finalization, {} drop panic(s){}",
            self.live,
            self.pending(),
            self.drop_panics,
            if self.forked {
                " (forked child: empty)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "{:<18} {:<14} {:>4} {:>9}  holders",
            "handle", "home", "pins", "transfers"
        )?;
        for o in &self.objects {
            let home = o
                .home
                .map_or_else(|| "(exited)".to_owned(), |t| format!("{t:?}"));
            let holders: Vec<String> = o
                .holders
                .iter()
                .map(|h| {
                    format!(
                        "{:?}×{}{}",
                        h.thread,
                        h.count,
                        if h.exited { " (exited)" } else { "" }
                    )
                })
                .collect();
            writeln!(
                f,
                "{:<18} {:<14} {:>4} {:>9}  {}",
                o.handle.to_string(),
                home,
                o.pins,
                o.transfers,
                holders.join(", ")
            )?;
        }
        Ok(())
    }
}
