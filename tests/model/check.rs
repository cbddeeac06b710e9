//! What registry and model must agree on after every step, and a whole run.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::ThreadId;

use tether::Error;

use super::harness::Harness;
use super::reference::{Ev, TState};
use super::script::Script;
use super::worker::{Outcome, COORDINATOR};
use super::{KEYS, WORKERS};

impl Harness {
    /// The values dropped and the events seen since the last check: exactly
    /// the model's, plus `extra` events. Drops: each on the right thread.
    fn check_logs(&mut self, extra: Vec<Ev>) -> Result<(), String> {
        let mut got: Vec<(u32, usize)> = self.log.lock()[self.seen..].to_vec();
        self.seen += got.len();
        let mut want = std::mem::take(&mut self.m.drops);
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return Err(format!(
                "drops (value, thread): registry {got:?}, model {want:?}"
            ));
        }
        let all = self.log.lock();
        let mut once = HashSet::new();
        if let Some((v, _)) = all.iter().find(|(v, _)| !once.insert(*v)) {
            return Err(format!("value {v} dropped twice: {all:?}"));
        }
        drop(all);
        let seen = std::mem::take(&mut *self.events.lock());
        let mut got: Vec<Ev> = seen.iter().map(|e| self.ev_of(e)).collect();
        let mut want = std::mem::take(&mut self.m.events);
        want.extend(extra);
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            let missing: Vec<&Ev> = want.iter().filter(|e| !got.contains(e)).collect();
            let surplus: Vec<&Ev> = got.iter().filter(|e| !want.contains(e)).collect();
            return Err(format!(
                "events: registry {got:?}, model {want:?} (model only: {missing:?}; registry only: {surplus:?})"
            ));
        }
        Ok(())
    }

    /// Everything the registry and the model must agree on after a step.
    /// `pos` is the worker that ran it, `counts` what its `count()` calls
    /// after the step returned.
    fn check(&mut self, pos: Option<usize>, counts: &[Result<u32, Error>]) -> Result<(), String> {
        // The worker's `count()` of a finalized object is a misuse (stale).
        let mut extra = Vec::new();
        if let Some(pos) = pos {
            let who = self.m.ident[pos];
            for obj in self.m.objs.iter().take(counts.len()) {
                if !obj.live {
                    extra.push(Ev::misuse(who, "count", Error::Stale(obj.handle)));
                }
            }
        }
        self.check_logs(extra)?;
        if self.reg().len() != self.m.live() {
            return Err(format!(
                "len(): registry {}, model {}",
                self.reg().len(),
                self.m.live()
            ));
        }
        // The acting thread's own counts.
        if let Some(pos) = pos {
            let who = self.m.ident[pos];
            for (o, got) in counts.iter().enumerate() {
                let obj = &self.m.objs[o];
                let want = if obj.live {
                    Ok(self.m.total(o, who))
                } else {
                    Err(Error::Stale(obj.handle))
                };
                if *got != want {
                    return Err(format!(
                        "t{pos}: count(obj{o}): registry {got:?}, model {want:?}"
                    ));
                }
            }
        }
        self.check_objects()?;
        self.check_registry()
    }

    /// Every object's holders, pins, transfers and home.
    fn check_objects(&mut self) -> Result<(), String> {
        let snap = self.reg().snapshot();
        let sorted = |mut v: Vec<(ThreadId, u32)>| {
            v.sort_unstable_by_key(|&(t, n)| (format!("{t:?}"), n));
            v
        };
        let mut stale = Vec::new();
        for (o, obj) in self.m.objs.iter().enumerate() {
            let got = self.reg().holders(obj.handle).map(sorted);
            let want = if obj.live {
                let totals = obj.totals();
                Ok(sorted(
                    (totals.iter())
                        .map(|(&who, &n)| (self.thread_of[who], n))
                        .collect(),
                ))
            } else {
                // A misuse (stale handle), seen by the hook.
                stale.push(Ev::misuse(COORDINATOR, "holders", Error::Stale(obj.handle)));
                Err(Error::Stale(obj.handle))
            };
            if got != want {
                return Err(format!("holders(obj{o}): registry {got:?}, model {want:?}"));
            }
            let got = (snap.object(obj.handle)).map(|s| (s.pins, s.transfers, s.home));
            let home = (self.m.alive[obj.home]).then(|| self.thread_of[obj.home]);
            let want = obj.live.then_some((obj.pins, obj.transfers, home));
            if got != want {
                return Err(format!(
                    "snapshot (pins, transfers, home) of obj{o}: registry {got:?}, model {want:?}"
                ));
            }
        }
        for (who, pending) in self.m.pending.iter().enumerate() {
            if !self.m.alive[who] {
                continue;
            }
            let got = (snap.threads.iter())
                .find(|t| t.thread == self.thread_of[who])
                .map_or(0, |t| t.pending);
            if got != pending.len() {
                return Err(format!(
                    "pending queue of thread {who}: registry {got}, model {}",
                    pending.len()
                ));
            }
        }
        let (got, want) = (snap.retired_slots as usize, self.m.retired_slots());
        if got != want {
            return Err(format!("retired slots: registry {got}, model {want}"));
        }
        self.check_logs(stale)
    }

    /// `is_closed`, and the interner's keys.
    fn check_registry(&self) -> Result<(), String> {
        if self.reg().is_closed() != self.m.closed {
            return Err(format!(
                "is_closed(): registry {}, model {}",
                self.reg().is_closed(),
                self.m.closed
            ));
        }
        let interner = self.interner.as_ref().expect("alive until the end");
        for key in 0..KEYS {
            let got = interner.lookup(&key);
            let want = self.m.keys.get(&key).map(|&o| self.m.objs[o].handle);
            if got != want {
                return Err(format!("lookup({key}): registry {got:?}, model {want:?}"));
            }
        }
        if interner.len() != self.m.keys.len() {
            return Err(format!(
                "interner len(): registry {}, model {}",
                interner.len(),
                self.m.keys.len()
            ));
        }
        Ok(())
    }
}

/// Runs a script: every step on its worker and on the model, then every
/// worker's exit, the drop of the last `Registry`, of the unclaimed
/// transfers and of the table. `Ok` has each step's outcome (`Debug`), for
/// fixed scripts to check they reach what they mean to; `Err` says which
/// step, or which check after it, disagreed.
pub fn run(script: &Script) -> Result<Vec<String>, String> {
    let mut hx = Harness::new(script);
    let mut outcomes = Vec::new();
    for (k, &step) in script.steps.iter().enumerate() {
        let (got, want, counts) = hx.step(step);
        outcomes.push(format!("{got:?}"));
        if got != want {
            return Err(format!(
                "step {k} ({step:?}): registry returned {got:?}, model expected {want:?}"
            ));
        }
        let pos = (!matches!(
            got,
            Outcome::Skipped | Outcome::Exited | Outcome::NoHandle(_)
        ))
        .then_some(step.thread);
        hx.check(pos, &counts)
            .map_err(|e| format!("after step {k} ({step:?}): {e}"))?;
    }
    // Every worker exits (its proxies first).
    for pos in 0..WORKERS {
        hx.workers[pos].exit();
        let who = hx.m.ident[pos];
        hx.m.exit(who);
        hx.check(None, &[])
            .map_err(|e| format!("after the final exit of t{pos}: {e}"))?;
    }
    // The last `Registry`: the leak report, if anything is still live.
    drop(hx.reg.take());
    hx.m.registry_dropped();
    hx.check_logs(Vec::new())
        .map_err(|e| format!("after dropping the last Registry: {e}"))?;
    // The unclaimed `Transfer` objects, dropped by the coordinator (every
    // home has exited: each last hold is finalized here).
    let mut held: Vec<_> = hx.held.drain().collect();
    held.sort_unstable_by_key(|&(t, _)| t);
    for (t, tr) in held {
        drop(tr);
        hx.m.transfers[t].state = TState::Gone;
        let o = hx.m.transfers[t].obj;
        hx.m.objs[o].transfers -= 1;
        hx.m.after_drop(o, COORDINATOR);
    }
    hx.check_logs(Vec::new())
        .map_err(|e| format!("after dropping the unclaimed transfers: {e}"))?;
    // The interner holds the table last: the rest (pins, raw tokens, leaked
    // references) is dropped with it, here, without events.
    drop(hx.interner.take());
    for o in 0..hx.m.objs.len() {
        if hx.m.objs[o].live {
            hx.m.objs[o].live = false;
            let val = hx.m.objs[o].val;
            hx.m.drops.push((val, COORDINATOR));
        }
    }
    hx.check_logs(Vec::new())
        .map_err(|e| format!("after dropping the table: {e}"))?;
    let inserted = hx.m.next_val;
    let log = Arc::clone(&hx.log);
    drop(hx);
    let mut ids: Vec<u32> = log.lock().iter().map(|&(v, _)| v).collect();
    ids.sort_unstable();
    if ids != (0..inserted).collect::<Vec<_>>() {
        return Err(format!(
            "after dropping the registry: values dropped {ids:?}, want each of 0..{inserted} once"
        ));
    }
    Ok(outcomes)
}
