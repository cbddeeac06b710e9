//! What user code does at a point: panic, or one registry operation.
//!
//! Every operation is self-contained (what it takes it gives back, except
//! `Release`, which gives up a reference the thread holds, and the parking
//! actions, which keep a proxy or guard until the thread exits), so the
//! scenario's own invariants still hold afterwards. Each result is checked
//! against what the operation may legitimately return there; anything
//! else is a problem of the scenario.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use tether::{Error, Handle, Proxy, Released};

use crate::common;
use crate::harness::{ParkedGuard, Path, Point, Reg, Scenario, Val};

/// One thing user code does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `panic!`.
    Panic,
    /// `insert` a new value, then release it (it must finalize here).
    Insert,
    /// `insert_proxy` a new value, then drop the proxy.
    InsertProxy,
    /// `retain` the subject, then `release` it.
    Retain,
    /// `release` the subject (gives up a reference the thread holds).
    Release,
    /// `get` the subject, read it, drop the guard.
    Get,
    /// `proxy` the subject, clone the proxy, drop both.
    Proxy,
    /// `retain` the subject, `transfer` that reference, drop the transfer
    /// unclaimed (its reference is released).
    Transfer,
    /// `retain` and `transfer` the subject; a thread spawned on the spot
    /// claims it and releases it.
    Claim,
    /// `retain` and `transfer` the subject into a raw token; `claim_raw`
    /// it here, once (a second claim is `TransferClaimed`), release it.
    ClaimRaw,
    /// `pin` the subject; a thread spawned on the spot reads it (a pinned
    /// object is open to every thread) and unpins it.
    Pin,
    /// `unpin` the subject (restoring the pin if there was one).
    Unpin,
    /// `pump`.
    Pump,
    /// `snapshot`, printed.
    Snapshot,
    /// `leak_report`, printed.
    LeakReport,
    /// `close`.
    Close,
    /// `shutdown` with a short timeout.
    Shutdown,
    /// `proxy` the subject and park the proxy in a thread-local first
    /// touched here (dropped when the thread exits).
    ParkProxy,
    /// `get` the subject and park the guard (with the registry clone it
    /// borrows) in a thread-local first touched here.
    ParkGuard,
    /// `downgrade` the subject; upgrade the weak reference here and on a
    /// thread spawned on the spot (each a live reference or `None`, never a
    /// dead value).
    Weak,
}

/// Every action, in the order the matrix runs them.
pub const ACTIONS: [Action; 20] = [
    Action::Panic,
    Action::Insert,
    Action::InsertProxy,
    Action::Retain,
    Action::Release,
    Action::Get,
    Action::Proxy,
    Action::Transfer,
    Action::Claim,
    Action::ClaimRaw,
    Action::Pin,
    Action::Unpin,
    Action::Pump,
    Action::Snapshot,
    Action::LeakReport,
    Action::Close,
    Action::Shutdown,
    Action::ParkProxy,
    Action::ParkGuard,
    Action::Weak,
];

thread_local! {
    static PARKED_PROXIES: RefCell<Vec<Proxy<Val>>> = const { RefCell::new(Vec::new()) };
    static PARKED_GUARDS: RefCell<Vec<ParkedGuard>> = const { RefCell::new(Vec::new()) };
}

/// Which errors an operation may return at a point where user code runs
/// (never `Forked`, `Invalid`, `ForeignRegistry`, `Overflow` or `Full`:
/// the scenarios use real handles of the registry at hand, far from every
/// limit).
#[derive(Clone, Copy)]
enum May {
    /// `insert`: the registry is closed, or the thread's exit already ran.
    Insert,
    /// Access to an existing object: dead, not held by a stranger, or the
    /// thread's exit already ran.
    Access,
    /// `unpin`: as `Access`, or not pinned.
    Unpin,
    /// A claim: closed, or the thread's exit already ran.
    Claim,
    /// An upgrade: dead, closed (for a thread without a reference), or the
    /// thread's exit already ran.
    Upgrade,
}

impl May {
    fn allows(self, e: Error) -> bool {
        match self {
            May::Insert => matches!(e, Error::Closed | Error::ThreadExited),
            May::Access => matches!(e, Error::Stale(_) | Error::NotHeld(_) | Error::ThreadExited),
            May::Unpin => matches!(
                e,
                Error::Stale(_) | Error::NotHeld(_) | Error::NotPinned(_) | Error::ThreadExited
            ),
            May::Claim => matches!(e, Error::Closed | Error::ThreadExited),
            May::Upgrade => matches!(e, Error::Stale(_) | Error::Closed | Error::ThreadExited),
        }
    }
}

/// The action's view: the scenario, the registry and the subject.
struct Op<'a> {
    sc: &'a Arc<Scenario>,
    reg: &'a Reg,
}

impl Op<'_> {
    /// Notes `r`; a problem if it is an error `may` does not allow.
    fn check<T>(&self, what: &str, r: Result<T, Error>, may: May) -> Option<T> {
        match r {
            Ok(v) => {
                self.sc.note(format!("{what}: ok"));
                Some(v)
            }
            Err(e) => {
                self.sc.note(format!("{what}: {e:?}"));
                if !may.allows(e) {
                    self.sc.problem(format!("{what} returned {e:?}"));
                }
                None
            }
        }
    }

    /// Something that must be true.
    fn expect(&self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.sc.problem(what);
        }
    }

    /// Runs `f` on `subject`, or on a new object inserted for it (and
    /// released after) when there is none.
    fn on_subject(&self, subject: Option<Handle>, f: impl FnOnce(&Self, Handle)) {
        if let Some(h) = subject {
            return f(self, h);
        }
        let Some(h) = self.check("insert (a subject)", insert(self.reg, self.sc), May::Insert)
        else {
            return;
        };
        f(self, h);
        let _ = self.check("release (the subject)", self.reg.release(h), May::Access);
    }

    /// `retain`: a reference of our own to give away.
    fn retain(&self, h: Handle) -> bool {
        self.check("retain", self.reg.retain(h), May::Access)
            .is_some()
    }
}

fn insert(reg: &Reg, sc: &Arc<Scenario>) -> Result<Handle, Error> {
    reg.insert(sc.val()).map_err(|e| {
        let error = e.error();
        drop(e.into_value()); // handed back: dropped here, its home
        error
    })
}

/// Runs the scenario's action at the point just reached.
pub fn perform(sc: &Arc<Scenario>, subject: Option<Handle>) {
    if sc.action == Action::Panic {
        if std::thread::panicking() {
            sc.problem("the point was reached while unwinding: no panic thrown");
            return;
        }
        panic!("intentional panic at {:?} (test)", sc.point);
    }
    let Some((reg, subject)) = sc.context(subject) else {
        sc.problem("no registry reachable from the point");
        return;
    };
    let op = Op { sc, reg: &reg };
    match sc.action {
        Action::Panic => unreachable!(),
        Action::Insert => {
            if let Some(h) = op.check("insert", insert(&reg, sc), May::Insert) {
                let r = reg.release(h);
                op.expect(
                    r == Ok(Released::Finalized),
                    format!("release of a new object gave {r:?}, not Finalized"),
                );
            }
        }
        Action::InsertProxy => {
            let r = reg.insert_proxy(sc.val()).map_err(|e| {
                let error = e.error();
                drop(e.into_value());
                error
            });
            if let Some(p) = op.check("insert_proxy", r, May::Insert) {
                op.expect(
                    reg.count(p.handle()) == Ok(1),
                    "a new proxy's count is not 1",
                );
            }
        }
        Action::Retain => op.on_subject(subject, |op, h| {
            if let Some(n) = op.check("retain", reg.retain(h), May::Access) {
                op.expect(n >= 1, format!("retain returned count {n}"));
                let r = reg.release(h);
                op.expect(r.is_ok(), format!("release after retain: {r:?}"));
            }
        }),
        Action::Release => op.on_subject(subject, |op, h| {
            let _ = op.check("release", reg.release(h), May::Access);
        }),
        Action::Get => op.on_subject(subject, |op, h| {
            if let Some(g) = op.check("get", reg.get(h), May::Access) {
                op.expect(g.handle() == h, "the guard names another handle");
                let _ = g.id;
            }
        }),
        Action::Proxy => op.on_subject(subject, |op, h| {
            if let Some(p) = op.check("proxy", reg.proxy(h), May::Access) {
                let q = p.clone();
                op.expect(q.handle() == h && q.id == p.id, "a proxy clone differs");
            }
        }),
        Action::Transfer => op.on_subject(subject, |op, h| {
            if op.retain(h) {
                let t = reg.transfer(h);
                op.expect(t.is_ok(), format!("transfer of a retained handle: {t:?}"));
                drop(t); // unclaimed: releases its reference
            }
        }),
        Action::Claim => op.on_subject(subject, |op, h| claim_elsewhere(op, h)),
        Action::ClaimRaw => op.on_subject(subject, |op, h| claim_raw_here(op, h)),
        Action::Pin => op.on_subject(subject, |op, h| pin_and_unpin_elsewhere(op, h)),
        Action::Unpin => op.on_subject(subject, |op, h| {
            if op.check("unpin", reg.unpin(h), May::Unpin).is_some() {
                // It was pinned (by the scenario): put the pin back.
                let r = reg.pin(h);
                op.expect(r.is_ok(), format!("re-pin after unpin: {r:?}"));
            }
        }),
        Action::Pump => {
            // `pump` runs every finalization queued for this thread: none
            // may be left behind (nothing else queues meanwhile here).
            let n = reg.pump();
            let me = std::thread::current().id();
            let left: usize = reg
                .snapshot()
                .threads
                .iter()
                .filter(|t| t.thread == me)
                .map(|t| t.pending)
                .sum();
            sc.note(format!("pump: {n}, {left} left"));
            // Inside a `Drop` that a drain of this thread's queue runs, a
            // nested pump returns 0 by design (documented on `pump`): the
            // running drain drops the rest when the `Drop` returns (the
            // end-of-scenario checks see every value dropped once).
            let in_a_drain = matches!(
                sc.point,
                Point::Drop(Path::Pump | Path::Drain | Path::HomeExit | Path::Shutdown)
            );
            op.expect(
                left == 0 || (in_a_drain && n == 0),
                format!("pump() ran {n} and left {left} queued for this thread"),
            );
        }
        Action::Snapshot => {
            let s = reg.snapshot();
            op.expect(!s.forked, "snapshot says forked");
            let _ = s.to_string();
        }
        Action::LeakReport => {
            let _ = reg.leak_report().to_string();
        }
        Action::Close => {
            reg.close();
            op.expect(reg.is_closed(), "not closed after close()");
        }
        Action::Shutdown => shutdown(&op),
        Action::ParkProxy => op.on_subject(subject, |op, h| {
            if let Some(p) = op.check("proxy (to park)", reg.proxy(h), May::Access) {
                let parked = PARKED_PROXIES.try_with(|v| v.borrow_mut().push(p));
                op.sc.note(format!("parked a proxy: {}", parked.is_ok()));
            }
        }),
        Action::ParkGuard => op.on_subject(subject, |op, h| {
            if let Some(g) = op.check("get (to park)", ParkedGuard::new(&reg, h), May::Access) {
                op.expect(
                    g.handle() == Some(h),
                    "the parked guard names another handle",
                );
                let parked = PARKED_GUARDS.try_with(|v| v.borrow_mut().push(g));
                op.sc.note(format!("parked a guard: {}", parked.is_ok()));
            }
        }),
        Action::Weak => op.on_subject(subject, |op, h| downgrade_and_upgrade(op, h)),
    }
}

/// `Weak`: downgrade, then upgrade here and on a thread spawned here. The
/// subject may be dying (this may be its own `Drop`): each upgrade is a
/// live reference to it or an error, never a dropped value.
fn downgrade_and_upgrade(op: &Op<'_>, h: Handle) {
    let Some(w) = op.check("downgrade", op.reg.downgrade(h), May::Access) else {
        return;
    };
    op.expect(w.handle() == h, "the weak reference names another handle");
    if let Some(p) = op.check("upgrade (here)", w.try_upgrade(), May::Upgrade) {
        op.expect(p.handle() == h, "the upgrade names another handle");
        op.expect(
            op.sc.times_dropped(p.id) == 0,
            "an upgrade here handed out a dropped value",
        );
    }
    let sc = Arc::clone(op.sc);
    let there = common::join(common::spawn("upgrader", move || {
        w.try_upgrade()
            .map(|p| (p.handle(), sc.times_dropped(p.id)))
    }));
    if let Some((h2, dropped)) = op.check("upgrade (on a new thread)", there, May::Upgrade) {
        op.expect(h2 == h, "the upgrade names another handle");
        op.expect(
            dropped == 0,
            "an upgrade on another thread handed out a dropped value",
        );
    }
}

/// `Claim`: the transfer goes to a thread spawned here.
fn claim_elsewhere(op: &Op<'_>, h: Handle) {
    if !op.retain(h) {
        return;
    }
    let Ok(t) = op.reg.transfer(h) else {
        op.sc.problem("transfer of a retained handle failed");
        return;
    };
    let reg = op.reg.clone();
    let claimed = common::join(common::spawn("claimer", move || {
        let r = reg.claim(t).map(|h2| (h2, reg.release(h2)));
        drop(reg);
        r
    }));
    if let Some((h2, released)) = op.check("claim (on a new thread)", claimed, May::Claim) {
        op.expect(h2 == h, "claim returned another handle");
        op.expect(
            released.is_ok(),
            format!("the claimer's release: {released:?}"),
        );
    }
}

/// `ClaimRaw`: through a raw token, on this thread; a second claim of the
/// token is refused.
fn claim_raw_here(op: &Op<'_>, h: Handle) {
    if !op.retain(h) {
        return;
    }
    let Ok(t) = op.reg.transfer(h) else {
        op.sc.problem("transfer of a retained handle failed");
        return;
    };
    let raw = t.into_raw();
    if let Some(h2) = op.check("claim_raw", op.reg.claim_raw(raw), May::Claim) {
        op.expect(h2 == h, "claim_raw returned another handle");
        let r = op.reg.release(h2);
        op.expect(r.is_ok(), format!("release after claim_raw: {r:?}"));
    }
    let again = op.reg.claim_raw(raw);
    op.expect(
        again == Err(Error::TransferClaimed),
        format!("a second claim_raw of one token: {again:?}"),
    );
}

/// `Pin`: a thread spawned here may use the pinned object, and unpins it.
fn pin_and_unpin_elsewhere(op: &Op<'_>, h: Handle) {
    if op.check("pin", op.reg.pin(h), May::Access).is_none() {
        return;
    }
    let reg = op.reg.clone();
    let (got, unpinned) = common::join(common::spawn("pin-user", move || {
        let got = reg.get(h).map(|g| g.id);
        let unpinned = reg.unpin(h);
        drop(reg);
        (got, unpinned)
    }));
    op.expect(
        got.is_ok(),
        format!("a stranger's get of a pinned object: {got:?}"),
    );
    op.expect(
        unpinned.is_ok(),
        format!("a stranger's unpin of a pinned object: {unpinned:?}"),
    );
}

/// `Shutdown`: `Ok` must mean nothing is live and nothing waits in an
/// inbox.
fn shutdown(op: &Op<'_>) {
    match op.reg.shutdown(Duration::from_millis(5)) {
        Ok(()) => {
            op.sc.note("shutdown: Ok");
            let live = op.reg.len();
            let queued: usize = op.reg.snapshot().threads.iter().map(|t| t.pending).sum();
            op.expect(
                live == 0 && queued == 0,
                format!("shutdown said Ok with {live} live and {queued} queued"),
            );
        }
        Err(report) => {
            op.sc
                .note(format!("shutdown: Err, {} held", report.objects.len()));
            let _ = report.to_string();
        }
    }
    op.expect(op.reg.is_closed(), "not closed after shutdown()");
}
