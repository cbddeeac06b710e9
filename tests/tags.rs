//! Invariant 4 across registries: tags are allocated among the registries
//! alive, so a live registry never accepts another live registry's handle,
//! whatever was created and dropped before (issue 15, item 1).
//!
//! This file is its own test binary so that it controls how many registries
//! are alive in the process: the tests below take a lock and never hold
//! more than 255 at once between them (the exact range of the guarantee).

mod common;

use common::{rel, DropLog, Rel, Tracked};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::{Mutex, MutexGuard};
use tether::{Error, Registry};

/// One test at a time: each counts the registries it keeps alive.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock()
}

/// The measured break: two live registries, with 254 others created and
/// dropped between them. Round-robin tags gave both the same tag, and
/// `b.release(ha)` finalized `b`'s own object. Checked for every count of
/// registries in between up to 600, so any period of a creation-order tag
/// scheme is hit.
#[test]
fn a_live_registry_never_accepts_another_live_registrys_handle_after_churn() {
    let _one = serial();
    let log = DropLog::new();
    let a = Registry::new();
    let ha = a.insert(Tracked::new(&log, 1)).expect("insert a");
    for between in 0..600 {
        let b = Registry::new();
        let hb = b.insert(Tracked::new(&log, 2)).expect("insert b");
        assert_eq!(
            rel(b.release(ha)),
            Rel::Err(Error::ForeignRegistry(ha)),
            "b accepted a's handle after {between} registries in between"
        );
        assert_eq!(b.get(ha).err(), Some(Error::ForeignRegistry(ha)));
        assert_eq!(a.count(hb), Err(Error::ForeignRegistry(hb)));
        assert_eq!(b.len(), 1, "b's own object must survive");
        assert_eq!(b.count(hb), Ok(1));
        drop(b);
        let tmp: Registry<Tracked> = Registry::new();
        drop(tmp);
    }
    assert_eq!(a.count(ha), Ok(1));
    assert_eq!(a.len(), 1);
}

/// 255 registries alive at once, created after heavy churn: every one
/// rejects every other's handle.
#[test]
fn detection_is_exact_for_255_live_registries() {
    let _one = serial();
    for _ in 0..1000 {
        drop(Registry::<u32>::new());
    }
    let regs: Vec<Registry<u32>> = (0..255).map(|_| Registry::new()).collect();
    let hs: Vec<_> = regs
        .iter()
        .enumerate()
        .map(|(i, r)| r.insert(i as u32).expect("insert"))
        .collect();
    for (i, r) in regs.iter().enumerate() {
        for (j, h) in hs.iter().enumerate() {
            if i == j {
                assert_eq!(r.count(*h), Ok(1));
            } else {
                assert_eq!(r.count(*h), Err(Error::ForeignRegistry(*h)), "{i} vs {j}");
            }
        }
    }
}

/// A dropped registry's tag is reused as late as possible: its handles stay
/// foreign to the next 254 registries created.
#[test]
fn a_dropped_registrys_handles_stay_foreign_to_the_next_254_registries() {
    let _one = serial();
    let old = Registry::new();
    let h = old.insert(7u32).expect("insert");
    drop(old);
    for i in 0..254 {
        let r = Registry::new();
        let mine = r.insert(1u32).expect("insert");
        assert_eq!(r.count(h), Err(Error::ForeignRegistry(h)), "registry {i}");
        assert_eq!(r.count(mine), Ok(1));
    }
}

/// Beyond 255 live registries tags are shared; what holds then is
/// documented (`src/tag.rs`): a shared tag's handles are checked as the
/// registry's own — refused unless they name an object the caller may use —
/// and never a panic. Once back at 255 or fewer, a new registry has its own
/// tag again.
#[test]
fn beyond_255_live_registries_ids_are_still_checked_and_never_panic() {
    let _one = serial();
    let regs: Vec<Registry<u32>> = (0..300).map(|_| Registry::new()).collect();
    let hs: Vec<_> = regs.iter().map(|r| r.insert(0).expect("insert")).collect();
    for (i, r) in regs.iter().enumerate() {
        for (j, h) in hs.iter().enumerate() {
            if i == j {
                continue;
            }
            // Same tag or not: this thread is home in both registries, so a
            // shared tag with the same index and generation may resolve; it
            // must never panic or change the other registry's counts.
            let _ = r.count(*h);
        }
    }
    for (r, h) in regs.iter().zip(&hs) {
        assert_eq!(r.count(*h), Ok(1));
        assert_eq!(r.len(), 1);
    }
    drop(regs);
    let a = Registry::new();
    let b: Registry<u32> = Registry::new();
    let ha = a.insert(1u32).expect("insert");
    assert_eq!(b.count(ha), Err(Error::ForeignRegistry(ha)));
}
