//! Invariant 9: fork fails fast. In a child process after `fork()` every
//! fallible call returns `Err(Forked)` — no deadlock (even if another thread
//! held a registry lock at fork time), no corrupted counts — and `pump()`
//! returns 0. The parent keeps working.
#![cfg(unix)]

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use common::{join, rel, spawn, Rel};
use tether::{Error, Handle, Registry, Transfer};

/// Seconds after which a deadlocked child is killed by SIGALRM.
const CHILD_ALARM_SECS: u32 = 20;

/// Forks; runs `child` in the child and reports its failures through a pipe.
/// Returns, in the parent, the child's list of failed checks (empty = pass).
fn fork_and_check(child: impl FnOnce() -> Vec<String>) -> Vec<String> {
    fork_and_check_within(CHILD_ALARM_SECS, child)
}

/// [`fork_and_check`] with the child's alarm after `secs` seconds.
fn fork_and_check_within(secs: u32, child: impl FnOnce() -> Vec<String>) -> Vec<String> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two c_ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe failed");
    let (read_fd, write_fd) = (fds[0], fds[1]);

    // SAFETY: the child only runs the closure and then `_exit`s; it never
    // returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child.
        // SAFETY: plain syscalls on valid descriptors / arguments.
        unsafe {
            libc::close(read_fd);
            libc::alarm(secs);
        }
        let failures = match catch_unwind(AssertUnwindSafe(child)) {
            Ok(f) => f,
            Err(_) => vec!["the child panicked".to_owned()],
        };
        let msg = failures.join("\n");
        let code = if failures.is_empty() { 0 } else { 1 };
        // SAFETY: `msg` is a live buffer of `msg.len()` bytes; `_exit` never
        // returns and runs no destructors or atexit handlers.
        unsafe {
            libc::write(write_fd, msg.as_ptr().cast(), msg.len());
            libc::close(write_fd);
            libc::_exit(code);
        }
    }

    // Parent.
    // SAFETY: `write_fd` is ours and closed once.
    unsafe { libc::close(write_fd) };
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid failed");
    // SAFETY: `read_fd` is an open descriptor we own from here on.
    let mut pipe = unsafe { File::from_raw_fd(read_fd) };
    let mut report = String::new();
    pipe.read_to_string(&mut report).expect("read child report");

    assert!(
        !libc::WIFSIGNALED(status),
        "child was killed by signal {} (SIGALRM = deadlock); report: {report}",
        libc::WTERMSIG(status)
    );
    assert!(libc::WIFEXITED(status), "child did not exit normally");
    let code = libc::WEXITSTATUS(status);
    let failures: Vec<String> = report.lines().map(str::to_owned).collect();
    assert_eq!(
        code == 0,
        failures.is_empty(),
        "child exit code {code} disagrees with its report {failures:?}"
    );
    failures
}

/// Collects failed checks with their names.
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, name: &str, ok: bool) {
        if !ok {
            self.0.push(name.to_owned());
        }
    }

    fn forked<T>(&mut self, name: &str, r: Result<T, Error>) {
        let got = r.err();
        if got != Some(Error::Forked) {
            self.0
                .push(format!("{name}: expected Err(Forked), got {got:?}"));
        }
    }
}

/// A thread that holds references and hammers the registry (so a lock may
/// well be held at the instant of the fork) until stopped.
struct Hammer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

fn start_hammer(reg: &Registry<u64>) -> Hammer {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let r2 = reg.clone();
    let s2 = Arc::clone(&stop);
    let thread = spawn("fork-hammer", move || {
        let h = r2.insert(1).expect("insert");
        ready_tx.send(()).expect("send");
        let mut rounds = 0;
        while !s2.load(Ordering::Relaxed) {
            assert_eq!(r2.retain(h), Ok(2));
            let extra = r2.insert(2).expect("insert");
            assert_eq!(rel(r2.release(extra)), Rel::Finalized);
            assert_eq!(rel(r2.release(h)), Rel::Held(1));
            rounds += 1;
        }
        assert_eq!(r2.count(h), Ok(1), "hammer's count drifted");
        assert_eq!(rel(r2.release(h)), Rel::Finalized);
        rounds
    });
    common::recv(&ready_rx, "hammer ready");
    Hammer { stop, thread }
}

impl Hammer {
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        join(self.thread)
    }
}

#[test]
fn every_fallible_call_in_a_forked_child_is_err_forked() {
    let reg: Registry<u64> = Registry::new();
    let h = reg.insert(10).expect("insert");
    reg.retain(h).expect("retain");
    reg.retain(h).expect("retain");
    reg.pin(h).expect("pin");
    let token = reg.transfer(h).expect("transfer");
    let raw = reg.transfer(h).expect("transfer").into_raw();
    let proxy = reg.insert_proxy(20).expect("insert_proxy");
    let ph = proxy.handle();
    let weak = proxy.downgrade();

    // Another thread holds a reference (parked), and another one hammers.
    let h_for_holder = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    let (held_tx, held_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let holder = spawn("fork-holder", move || {
        let hh = r2.claim(h_for_holder).expect("claim");
        held_tx.send(()).expect("send");
        // Err only if the test already failed and dropped the sender.
        let _ = exit_rx.recv();
        rel(r2.release(hh))
    });
    common::recv(&held_rx, "holder");
    let hammer = start_hammer(&reg);
    let count_before = reg.count(h).expect("count");

    // The closure borrows `reg`; in the parent it is dropped unrun, which
    // drops (releases) `token` and `proxy` there.
    let failures = fork_and_check(|| {
        let mut c = Checks(Vec::new());
        match reg.insert(7) {
            Ok(_) => c.check("insert succeeded in the child", false),
            Err(e) => {
                c.check("insert: error() == Forked", e.error() == Error::Forked);
                c.check("insert: into_value() hands 7 back", e.into_value() == 7);
            }
        }
        match reg.insert_proxy(8) {
            Ok(_) => c.check("insert_proxy succeeded in the child", false),
            Err(e) => c.check("insert_proxy: Forked", e.error() == Error::Forked),
        }
        c.forked("retain", reg.retain(h));
        c.forked("release", reg.release(h));
        c.forked("get", reg.get(h));
        c.forked("count", reg.count(h));
        c.forked("holders", reg.holders(h));
        c.forked("pin", reg.pin(h));
        c.forked("unpin", reg.unpin(h));
        c.forked("transfer", reg.transfer(h));
        c.forked("proxy", reg.proxy(h));
        c.forked("claim_raw", reg.claim_raw(raw));
        c.forked("Transfer::from_raw", Transfer::from_raw(&reg, raw));
        c.forked("proxy.try_clone", proxy.try_clone());
        c.forked("downgrade", reg.downgrade(h));
        c.forked("weak.try_upgrade", weak.try_upgrade());
        c.forked("proxy.downgrade().try_upgrade", proxy.downgrade().try_upgrade());
        c.check("weak.is_live() is false", !weak.is_live());
        c.forked("release of the proxy's object", reg.release(ph));
        c.forked("claim", reg.clone().claim(token));
        c.forked("release of a forged handle", {
            let forged = Handle::from_raw(12345).expect("in range");
            reg.release(forged)
        });
        c.check("pump() == 0", reg.pump() == 0);
        // Dropping a proxy in the child must neither panic nor deadlock.
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(proxy)));
        c.check("dropping a proxy in the child", dropped.is_ok());
        c.0
    });
    assert!(failures.is_empty(), "child checks failed: {failures:#?}");

    // The parent is unaffected and its counts are intact.
    hammer.stop();
    assert_eq!(reg.count(h), Ok(count_before), "parent's count changed");
    exit_tx.send(()).expect("send");
    assert_eq!(
        join(holder),
        Rel::Held(0),
        "pin and raw token keep it alive"
    );
    assert_eq!(reg.claim_raw(raw), Ok(h), "parent's raw token still valid");
    assert_eq!(reg.count(h), Ok(count_before + 1));
    assert_eq!(
        reg.get(ph).err(),
        Some(Error::Stale(ph)),
        "proxy dropped here"
    );
    let h2 = reg.insert(1).expect("parent registry still works");
    assert_eq!(rel(reg.release(h2)), Rel::Finalized);
    assert!(!reg.snapshot().forked, "the parent is not forked");
}

#[test]
fn infallible_calls_in_a_forked_child_do_not_deadlock() {
    let reg: Registry<u64> = Registry::new();
    let h = reg.insert(10).expect("insert");
    let hammer = start_hammer(&reg);
    let r2 = reg.clone();
    let failures = fork_and_check(move || {
        let mut c = Checks(Vec::new());
        c.check("pump() == 0", r2.pump() == 0);
        let _ = r2.len();
        let _ = r2.is_empty();
        let _ = r2.capacity();
        let snap = r2.snapshot();
        c.check("snapshot().forked", snap.forked);
        let fresh_clone = r2.clone();
        c.forked("retain through a clone", fresh_clone.retain(h));
        drop(fresh_clone);
        drop(r2);
        c.0
    });
    assert!(failures.is_empty(), "child checks failed: {failures:#?}");
    hammer.stop();
    assert_eq!(reg.count(h), Ok(1), "parent counts intact");
    assert_eq!(reg.retain(h), Ok(2));
    assert_eq!(rel(reg.release(h)), Rel::Held(1));
    assert!(!reg.snapshot().forked);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
}

/// Issue 16, item 3: `len`, `snapshot`, `leak_report`, `shutdown`,
/// `into_raw` (and `Debug`, which calls `len`) took a registry lock before
/// any fork check, so a child forked while a parent thread held that lock
/// blocked forever. Measured, 200 forks while a parent thread calls `len()`
/// in a loop: `len` hung in 130-155 children, `into_raw` in 43-87. Each
/// child here gets 2 s (its alarm) for all of them.
#[test]
fn diagnostics_and_raw_tokens_in_a_forked_child_never_block() {
    const FORKS: usize = 200;
    let reg: Registry<u64> = Registry::new();
    let h = reg.insert(10).expect("insert");
    let stop = Arc::new(AtomicBool::new(false));
    let (r2, s2) = (reg.clone(), Arc::clone(&stop));
    let lock_holder = spawn("takes-every-lock", move || {
        let mine = r2.insert(1).expect("insert");
        let mut rounds = 0u64;
        while !s2.load(Ordering::Relaxed) {
            // The tables lock (len, snapshot) and the raw-token lock.
            let _ = r2.len();
            let _ = r2.snapshot();
            r2.retain(mine).expect("retain");
            let raw = r2.transfer(mine).expect("transfer").into_raw();
            assert_eq!(r2.claim_raw(raw), Ok(mine));
            assert_eq!(rel(r2.release(mine)), Rel::Held(1));
            rounds += 1;
        }
        assert_eq!(rel(r2.release(mine)), Rel::Finalized);
        rounds
    });
    let mut hung = Vec::new();
    for i in 0..FORKS {
        let r3 = reg.clone();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            fork_and_check_within(2, move || {
                let mut c = Checks(Vec::new());
                #[allow(clippy::len_zero)]
                c.check("len() == 0", r3.len() == 0);
                c.check("is_empty()", r3.is_empty());
                c.check("Debug", format!("{r3:?}").contains("Registry"));
                c.check("snapshot().forked", r3.snapshot().forked);
                let report = r3.leak_report();
                c.check("leak_report().forked", report.forked && report.is_empty());
                let t = Transfer::from_raw(&r3, 1).err();
                c.check("from_raw is Forked", t == Some(Error::Forked));
                match r3.shutdown(std::time::Duration::from_secs(5)) {
                    Err(r) => c.check("shutdown's report says forked", r.forked),
                    Ok(()) => c.check("shutdown must not say Ok in a child", false),
                }
                c.0
            })
        }));
        match outcome {
            Ok(failures) => assert!(failures.is_empty(), "fork {i}: {failures:#?}"),
            Err(_) => hung.push(i),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = join(lock_holder);
    assert!(
        hung.is_empty(),
        "{} of {FORKS} children blocked (or failed): {hung:?}",
        hung.len()
    );
    assert!(rounds > 0);
    assert_eq!(reg.count(h), Ok(1), "the parent's counts are intact");
}

/// `into_raw` in a forked child returns 0 (never a valid token) instead of
/// locking the raw-token table a parent thread may have held.
#[test]
fn into_raw_in_a_forked_child_is_zero_and_does_not_block() {
    let reg: Registry<u64> = Registry::new();
    let h = reg.insert(10).expect("insert");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer");
    let failures = fork_and_check_within(2, move || {
        let mut c = Checks(Vec::new());
        c.check("into_raw() == 0", t.into_raw() == 0);
        c.0
    });
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(reg.count(h), Ok(1));
}
