//! The harness: runs each step on a worker and on the model, then checks
//! that they agree.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::{self, ThreadId};

use tether::{Error, Handle, Registry, Released, ThreadExit, Transfer};

use super::reference::{parts, MObj, MTransfer, Model, TState, TAG_SHIFT};
use super::script::{Forge, Op, Raw, Script, Step, H};
use super::worker::{Job, Log, Outcome, Reply, Val, Worker};
use super::{CAPACITY, DRAIN_BATCH, WORKERS};

/// How a script's handle resolves.
#[derive(Clone, Copy)]
enum Target {
    /// An object of the model (live or finalized).
    Obj(usize),
    /// An id that names no object the model knows.
    Forged(Handle),
}

/// The registry under test, its workers, and the model beside them.
struct Harness {
    reg: Registry<Val>,
    log: Log,
    seen: usize,
    tag: u64,
    workers: Vec<Worker>,
    /// Thread id of each identity.
    thread_of: Vec<ThreadId>,
    /// Unclaimed transfers, by model index.
    held: HashMap<usize, Transfer<Val>>,
    m: Model,
}

impl Harness {
    fn new(script: &Script) -> Harness {
        let reg = Registry::builder()
            .capacity(CAPACITY)
            .home_finalization(script.home_finalization)
            .thread_exit(if script.thread_exit_release {
                ThreadExit::Release
            } else {
                ThreadExit::Leak
            })
            .build();
        let log: Log = Arc::default();
        // Learn the tag (for forged ids) with a probe inserted and dropped by
        // a short-lived thread. (Not the coordinator: a thread that used a
        // registry keeps a weak exit hook to it, pruned only now and then;
        // under the fuzzer that allocation outliving the input would trigger
        // libFuzzer's leak check on almost every input.)
        let (tag, _, probe_slot) = thread::scope(|s| {
            s.spawn(|| {
                let val = Val {
                    id: u32::MAX,
                    log: Arc::clone(&log),
                };
                let probe = reg.insert(val).unwrap();
                assert_eq!(reg.release(probe), Ok(Released::Finalized));
                parts(probe)
            })
            .join()
            .unwrap()
        });
        log.lock().unwrap().clear();
        let mut m = Model::new(script.home_finalization, script.thread_exit_release);
        m.slot_gen[probe_slot] += 1;
        let workers: Vec<Worker> = (0..WORKERS).map(|i| Worker::spawn(&reg, i)).collect();
        let thread_of = workers.iter().map(|w| w.thread).collect();
        Harness {
            reg,
            log,
            seen: 0,
            tag,
            workers,
            thread_of,
            held: HashMap::new(),
            m,
        }
    }

    fn forged(&self, f: Forge) -> Handle {
        let raw = match f {
            Forge::WrongTag(i) => {
                let tag = self.tag % 255 + 1; // another valid tag
                (tag << TAG_SHIFT) | u64::from(i % 8)
            }
            Forge::ZeroTag(i) => (1 << 24) | u64::from(i),
            Forge::FutureGen(i) => {
                (self.tag << TAG_SHIFT) | (1 << 44) | (u64::from(i) % CAPACITY as u64)
            }
            Forge::BigIndex(i) => (self.tag << TAG_SHIFT) | (CAPACITY as u64 + u64::from(i)),
        };
        Handle::from_raw(raw).unwrap()
    }

    /// A script's arbitrary raw value, relative to this registry's tag.
    fn relative(&self, x: u64) -> u64 {
        x ^ (self.tag << TAG_SHIFT)
    }

    fn target(&self, h: H, who: usize) -> Option<Target> {
        match h {
            H::Obj(_) if self.m.objs.is_empty() => None,
            H::Obj(i) => Some(Target::Obj(self.m.objs.len() - 1 - i % self.m.objs.len())),
            H::Mine(i) => {
                let mine: Vec<usize> = (0..self.m.objs.len())
                    .filter(|&o| self.m.count(o, who) > 0)
                    .collect();
                if mine.is_empty() {
                    return self.target(H::Obj(i), who); // fall back to a recent one
                }
                Some(Target::Obj(mine[i % mine.len()]))
            }
            H::Forged(f) => Some(Target::Forged(self.forged(f))),
            H::Raw(x) => {
                // `step` checked `from_raw` first.
                let h = Handle::from_raw(self.relative(x))?;
                Some(match self.m.objs.iter().position(|o| o.handle == h) {
                    Some(o) => Target::Obj(o),
                    None => Target::Forged(h),
                })
            }
        }
    }

    fn raw(&self, r: Raw) -> Option<u64> {
        match r {
            Raw::Live(i) => {
                let live: Vec<u64> = (self.m.transfers.iter())
                    .filter_map(|t| match t.state {
                        TState::Raw(token) => Some(token),
                        _ => None,
                    })
                    .collect();
                if live.is_empty() {
                    return self.raw(Raw::Issued(i));
                }
                Some(live[i % live.len()])
            }
            Raw::Issued(_) if self.m.tokens.is_empty() => None,
            Raw::Issued(i) => Some(self.m.tokens[i % self.m.tokens.len()]),
            Raw::Serial(s) => Some((self.tag << TAG_SHIFT) | u64::from(s)),
            Raw::Any(x) => Some(self.relative(x)),
        }
    }

    /// Expected error of an id that names no object of the model, and whether
    /// the call drains first (it does once the id passed the registry's range
    /// checks: tag, then index below the capacity). Past them the slot's
    /// generation decides: beyond it the id was never issued (`Invalid`);
    /// at or below it, it names a free slot or a finalized object (`Stale`).
    fn forged_error(&self, h: Handle) -> (Error, bool) {
        let (tag, generation, index) = parts(h);
        if tag != self.tag {
            let e = match tag {
                0 => Error::Invalid(h.to_raw()),
                _ => Error::ForeignRegistry(h),
            };
            (e, false)
        } else if index >= CAPACITY {
            (Error::Invalid(h.to_raw()), false)
        } else if generation > self.m.slot_gen[index] {
            (Error::Invalid(h.to_raw()), true)
        } else {
            (Error::Stale(h), true)
        }
    }

    /// Why the handle a successful `insert` returned is not a fresh one, if
    /// it is not: it must carry this registry's tag and name a free slot
    /// below the capacity, under that slot's current generation (so it
    /// differs from every handle issued before).
    fn bad_new_handle(&self, h: Handle) -> Option<String> {
        let (tag, generation, index) = parts(h);
        let why = if tag != self.tag {
            format!("tag {tag}, registry's {}", self.tag)
        } else if index >= CAPACITY {
            format!("index {index} beyond the capacity {CAPACITY}")
        } else if self.m.slot_live(index) {
            format!("slot {index} holds a live object")
        } else if generation != self.m.slot_gen[index] {
            let want = self.m.slot_gen[index];
            format!("generation {generation}, slot {index} is at generation {want}")
        } else {
            return None;
        };
        Some(format!("insert returned {h:?}: {why}"))
    }

    fn handles(&self) -> Vec<Handle> {
        self.m.objs.iter().map(|o| o.handle).collect()
    }

    fn send(&self, pos: usize, job: Job) -> Reply {
        self.workers[pos].run(self.handles(), job)
    }

    /// Runs one step on the registry and on the model; returns (actual,
    /// expected) outcomes.
    fn step(&mut self, step: Step) -> (Outcome, Outcome, Vec<Result<u32, Error>>) {
        let pos = step.thread;
        let who = self.m.ident[pos];
        macro_rules! skip {
            () => {
                return (Outcome::Skipped, Outcome::Skipped, Vec::new())
            };
        }
        if let Some(H::Raw(x)) = step.op.handle() {
            // An arbitrary id is a handle iff it is neither 0 nor >= 2^53.
            let raw = self.relative(x);
            let got = Handle::from_raw(raw).map(Handle::to_raw);
            let want = (raw != 0 && raw < 1 << 53).then_some(raw);
            if got.is_none() || want.is_none() {
                return (Outcome::NoHandle(got), Outcome::NoHandle(want), Vec::new());
            }
        }
        let (reply, expected) = match step.op {
            Op::Insert => {
                let id = self.m.next_val;
                self.m.next_val += 1;
                let log = Arc::clone(&self.log);
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        Reply::of(Outcome::Inserted(
                            reg.insert(Val { id, log })
                                .map_err(|e| (e.error(), e.into_value().id)),
                        ))
                    }),
                );
                self.m.drain(who, DRAIN_BATCH);
                let expected = if self.m.live() == CAPACITY {
                    self.m.drops.push((id, who)); // the handed-back value
                    Outcome::Inserted(Err((Error::Full, id)))
                } else {
                    match &reply.outcome {
                        Outcome::Inserted(Ok(h)) => match self.bad_new_handle(*h) {
                            Some(why) => Outcome::Violation(why),
                            None => {
                                self.m.objs.push(MObj {
                                    val: id,
                                    handle: *h,
                                    home: who,
                                    counts: HashMap::from([(who, 1)]),
                                    pins: 0,
                                    transfers: 0,
                                    live: true,
                                });
                                Outcome::Inserted(Ok(*h))
                            }
                        },
                        _ => Outcome::Inserted(Ok(Handle::from_raw(1).unwrap())),
                    }
                };
                (reply, expected)
            }
            Op::Retain(h) | Op::Get(h) | Op::Pin(h) | Op::Unpin(h) | Op::Release(h) => {
                let Some(target) = self.target(h, who) else {
                    skip!()
                };
                let hh = match target {
                    Target::Obj(o) => self.m.objs[o].handle,
                    Target::Forged(f) => f,
                };
                let op = step.op;
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        Reply::of(match op {
                            Op::Retain(_) => Outcome::Count(reg.retain(hh)),
                            Op::Release(_) => Outcome::Released(reg.release(hh)),
                            Op::Get(_) => Outcome::Got(
                                reg.get(hh)
                                    .map(|g| (g.id, reg.count(hh).unwrap_or(u32::MAX))),
                            ),
                            Op::Pin(_) => Outcome::Unit(reg.pin(hh)),
                            _ => Outcome::Unit(reg.unpin(hh)),
                        })
                    }),
                );
                let err = match target {
                    Target::Forged(_) => {
                        let (e, drains) = self.forged_error(hh);
                        if drains {
                            self.m.drain(who, DRAIN_BATCH);
                        }
                        Some(e)
                    }
                    Target::Obj(o) => {
                        self.m.drain(who, DRAIN_BATCH);
                        if !self.m.objs[o].live {
                            Some(Error::Stale(hh))
                        } else if match op {
                            // release needs an explicit reference; the others
                            // the access rule.
                            Op::Release(_) => self.m.count(o, who) == 0,
                            _ => !self.m.may_access(o, who),
                        } {
                            Some(Error::NotHeld(hh))
                        } else if matches!(op, Op::Unpin(_)) && self.m.objs[o].pins == 0 {
                            Some(Error::NotPinned(hh))
                        } else {
                            None
                        }
                    }
                };
                let expected = match (op, err) {
                    (Op::Retain(_), Some(e)) => Outcome::Count(Err(e)),
                    (Op::Release(_), Some(e)) => Outcome::Released(Err(e)),
                    (Op::Get(_), Some(e)) => Outcome::Got(Err(e)),
                    (_, Some(e)) => Outcome::Unit(Err(e)),
                    (_, None) => {
                        let Target::Obj(o) = target else {
                            unreachable!()
                        };
                        match op {
                            Op::Retain(_) => {
                                let c = self.m.objs[o].counts.entry(who).or_insert(0);
                                *c += 1;
                                Outcome::Count(Ok(*c))
                            }
                            Op::Release(_) => {
                                let obj = &mut self.m.objs[o];
                                let c = obj.counts.get_mut(&who).unwrap();
                                *c -= 1;
                                if *c == 0 {
                                    obj.counts.remove(&who);
                                }
                                Outcome::Released(Ok(self.m.after_drop(o, who)))
                            }
                            Op::Get(_) => {
                                Outcome::Got(Ok((self.m.objs[o].val, self.m.count(o, who) + 1)))
                            }
                            Op::Pin(_) => {
                                self.m.objs[o].pins += 1;
                                Outcome::Unit(Ok(()))
                            }
                            _ => {
                                self.m.objs[o].pins -= 1;
                                if self.m.objs[o].holds() == 0 {
                                    self.m.finalize(o, who);
                                }
                                Outcome::Unit(Ok(()))
                            }
                        }
                    }
                };
                (reply, expected)
            }
            Op::Transfer { h, raw } => {
                let Some(target) = self.target(h, who) else {
                    skip!()
                };
                let hh = match target {
                    Target::Obj(o) => self.m.objs[o].handle,
                    Target::Forged(f) => f,
                };
                let mut reply = self.send(
                    pos,
                    Box::new(move |reg| match reg.transfer(hh) {
                        Ok(t) if raw => Reply {
                            raw: Some(t.into_raw()),
                            ..Reply::of(Outcome::Unit(Ok(())))
                        },
                        Ok(t) => Reply {
                            transfer: Some(t),
                            ..Reply::of(Outcome::Unit(Ok(())))
                        },
                        Err(e) => Reply::of(Outcome::Unit(Err(e))),
                    }),
                );
                // transfer() does not drain.
                let expected = match target {
                    Target::Forged(_) => Outcome::Unit(Err(self.forged_error(hh).0)),
                    Target::Obj(o) if !self.m.objs[o].live => Outcome::Unit(Err(Error::Stale(hh))),
                    Target::Obj(o) if self.m.count(o, who) == 0 => {
                        Outcome::Unit(Err(Error::NotHeld(hh)))
                    }
                    Target::Obj(o) => {
                        let obj = &mut self.m.objs[o];
                        let c = obj.counts.get_mut(&who).unwrap();
                        *c -= 1;
                        if *c == 0 {
                            obj.counts.remove(&who);
                        }
                        obj.transfers += 1;
                        let t = self.m.transfers.len();
                        let state = match (reply.transfer.take(), reply.raw) {
                            (Some(tr), _) => {
                                self.held.insert(t, tr);
                                TState::Object
                            }
                            (None, Some(token)) => {
                                self.m.tokens.push(token);
                                TState::Raw(token)
                            }
                            (None, None) => TState::Gone,
                        };
                        self.m.transfers.push(MTransfer { obj: o, state });
                        Outcome::Unit(Ok(()))
                    }
                };
                (reply, expected)
            }
            Op::Claim(i) | Op::DropTransfer(i) => {
                let objects: Vec<usize> = (0..self.m.transfers.len())
                    .filter(|&t| self.m.transfers[t].state == TState::Object)
                    .collect();
                if objects.is_empty() {
                    skip!()
                }
                let t = objects[i % objects.len()];
                let tr = self.held.remove(&t).unwrap();
                let claim = matches!(step.op, Op::Claim(_));
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        if claim {
                            Reply::of(Outcome::Claimed(reg.claim(tr)))
                        } else {
                            drop(tr);
                            Reply::of(Outcome::Unit(Ok(())))
                        }
                    }),
                );
                self.m.transfers[t].state = TState::Gone;
                let o = self.m.transfers[t].obj;
                self.m.objs[o].transfers -= 1;
                let expected = if claim {
                    self.m.drain(who, DRAIN_BATCH);
                    *self.m.objs[o].counts.entry(who).or_insert(0) += 1;
                    Outcome::Claimed(Ok(self.m.objs[o].handle))
                } else {
                    // Dropping a transfer does not drain.
                    self.m.after_drop(o, who);
                    Outcome::Unit(Ok(()))
                };
                (reply, expected)
            }
            Op::ClaimRaw(r) | Op::FromRawDrop(r) => {
                let Some(token) = self.raw(r) else { skip!() };
                let claim = matches!(step.op, Op::ClaimRaw(_));
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        if claim {
                            Reply::of(Outcome::Claimed(reg.claim_raw(token)))
                        } else {
                            Reply::of(Outcome::Unit(Transfer::from_raw(reg, token).map(drop)))
                        }
                    }),
                );
                let found = self
                    .m
                    .transfers
                    .iter()
                    .position(|t| t.state == TState::Raw(token));
                let expected = match found {
                    Some(t) => {
                        self.m.transfers[t].state = TState::Gone;
                        let o = self.m.transfers[t].obj;
                        self.m.objs[o].transfers -= 1;
                        if claim {
                            self.m.drain(who, DRAIN_BATCH);
                            *self.m.objs[o].counts.entry(who).or_insert(0) += 1;
                            Outcome::Claimed(Ok(self.m.objs[o].handle))
                        } else {
                            self.m.after_drop(o, who);
                            Outcome::Unit(Ok(()))
                        }
                    }
                    None => {
                        let e = if self.m.tokens.contains(&token) {
                            Error::TransferClaimed
                        } else {
                            Error::Invalid(token)
                        };
                        if claim {
                            Outcome::Claimed(Err(e))
                        } else {
                            Outcome::Unit(Err(e))
                        }
                    }
                };
                (reply, expected)
            }
            Op::Pump => {
                let reply = self.send(pos, Box::new(|reg| Reply::of(Outcome::Pumped(reg.pump()))));
                let n = self.m.drain(who, usize::MAX);
                (reply, Outcome::Pumped(n))
            }
            Op::Exit => {
                self.workers[pos].exit();
                self.m.exit(who);
                let fresh = self.m.alive.len();
                self.m.alive.push(true);
                self.m.pending.push(VecDeque::new());
                self.m.ident[pos] = fresh;
                self.workers[pos] = Worker::spawn(&self.reg, fresh);
                self.thread_of.push(self.workers[pos].thread);
                (Reply::of(Outcome::Exited), Outcome::Exited)
            }
        };
        (reply.outcome, expected, reply.counts)
    }

    /// Everything the registry and the model must agree on after a step.
    fn check(&mut self, pos: Option<usize>, counts: &[Result<u32, Error>]) -> Result<(), String> {
        // Drops of this step: exactly the expected ones, on the right thread.
        let mut got: Vec<(u32, usize)> = self.log.lock().unwrap()[self.seen..].to_vec();
        self.seen += got.len();
        let mut want = std::mem::take(&mut self.m.drops);
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return Err(format!(
                "drops (value, thread): registry {got:?}, model {want:?}"
            ));
        }
        let all = self.log.lock().unwrap();
        let mut once = HashSet::new();
        if let Some((v, _)) = all.iter().find(|(v, _)| !once.insert(*v)) {
            return Err(format!("value {v} dropped twice: {all:?}"));
        }
        drop(all);
        if self.reg.len() != self.m.live() {
            return Err(format!(
                "len(): registry {}, model {}",
                self.reg.len(),
                self.m.live()
            ));
        }
        // The acting thread's own counts.
        if let Some(pos) = pos {
            let who = self.m.ident[pos];
            for (o, got) in counts.iter().enumerate() {
                let obj = &self.m.objs[o];
                let want = if obj.live {
                    Ok(self.m.count(o, who))
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
        // Every thread's counts, pins, transfers.
        let snap = self.reg.snapshot();
        for (o, obj) in self.m.objs.iter().enumerate() {
            let got = self.reg.holders(obj.handle).map(|mut v| {
                v.sort_unstable_by_key(|&(t, n)| (format!("{t:?}"), n));
                v
            });
            let want = if obj.live {
                let mut v: Vec<(ThreadId, u32)> = obj
                    .counts
                    .iter()
                    .map(|(&who, &n)| (self.thread_of[who], n))
                    .collect();
                v.sort_unstable_by_key(|&(t, n)| (format!("{t:?}"), n));
                Ok(v)
            } else {
                Err(Error::Stale(obj.handle))
            };
            if got != want {
                return Err(format!("holders(obj{o}): registry {got:?}, model {want:?}"));
            }
            let got = snap.object(obj.handle).map(|s| (s.pins, s.transfers));
            let want = obj.live.then_some((obj.pins, obj.transfers));
            if got != want {
                return Err(format!(
                    "snapshot (pins, transfers) of obj{o}: registry {got:?}, model {want:?}"
                ));
            }
        }
        for (who, pending) in self.m.pending.iter().enumerate() {
            if !self.m.alive[who] {
                continue;
            }
            let got = snap
                .threads
                .iter()
                .find(|t| t.thread == self.thread_of[who])
                .map_or(0, |t| t.pending);
            if got != pending.len() {
                return Err(format!(
                    "pending queue of thread {who}: registry {got}, model {}",
                    pending.len()
                ));
            }
        }
        Ok(())
    }
}

/// Runs a script: every step on its worker and on the model, then every
/// worker's exit and the registry's drop. `Err` says which step, or which
/// check after it, disagreed.
pub fn run(script: &Script) -> Result<(), String> {
    let mut hx = Harness::new(script);
    for (k, &step) in script.steps.iter().enumerate() {
        let (got, want, counts) = hx.step(step);
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
    // Every worker exits; then the leftovers (pins, unclaimed transfers and
    // tokens, leaked references) go with the registry.
    for pos in 0..WORKERS {
        hx.workers[pos].exit();
        let who = hx.m.ident[pos];
        hx.m.exit(who);
        hx.check(None, &[])
            .map_err(|e| format!("after the final exit of t{pos}: {e}"))?;
    }
    let inserted = hx.m.next_val;
    let log = Arc::clone(&hx.log);
    drop(hx);
    let mut ids: Vec<u32> = log.lock().unwrap().iter().map(|&(v, _)| v).collect();
    ids.sort_unstable();
    if ids != (0..inserted).collect::<Vec<_>>() {
        return Err(format!(
            "after dropping the registry: values dropped {ids:?}, want each of 0..{inserted} once"
        ));
    }
    Ok(())
}
