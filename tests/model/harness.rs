//! The harness: runs each step on a worker and on the model. This file sets
//! it up, resolves the ids a script names, and runs the explicit layer's
//! steps; `raii.rs` runs proxies, the interner, batches and shutdown, and
//! `check.rs` checks that registry and model agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::{self, ThreadId};

// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;

use tether::{Error, Event, Handle, Interner, Registry, Released, ThreadExit, Transfer};

use super::reference::{parts, Ev, Kind, MProxy, MTransfer, Model, TState, TAG_SHIFT};
use super::script::{Forge, Op, Raw, Script, Step, H};
use super::worker::{Job, Log, Outcome, Reply, Val, Worker};
use super::{FIRST_PAGE, WORKERS};

/// How a script's handle resolves.
#[derive(Clone, Copy)]
pub(super) enum Target {
    /// An object of the model (live or finalized).
    Obj(usize),
    /// An id that names no object the model knows.
    Forged(Handle),
}

/// The registry under test, its workers, and the model beside them.
pub(super) struct Harness {
    /// `None` once dropped at the end of a run.
    pub(super) reg: Option<Registry<Val>>,
    pub(super) interner: Option<Interner<u8, Val, u32>>,
    pub(super) log: Log,
    pub(super) seen: usize,
    /// Every event the hook saw, not yet compared.
    pub(super) events: Arc<Mutex<Vec<Event>>>,
    pub(super) tag: u64,
    pub(super) workers: Vec<Worker>,
    /// Thread id of each identity.
    pub(super) thread_of: Vec<ThreadId>,
    pub(super) coordinator: ThreadId,
    /// Unclaimed transfers, by model index.
    pub(super) held: HashMap<usize, Transfer<Val>>,
    pub(super) m: Model,
}

/// What a step produced: the registry's outcome, the model's, and the
/// worker's `count()` of every handle.
pub(super) type Stepped = (Outcome, Outcome, Vec<Result<u32, Error>>);

impl Harness {
    pub(super) fn new(script: &Script) -> Harness {
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let sink = Arc::clone(&events);
        let reg = Registry::builder()
            .capacity(script.capacity)
            .max_count(script.max_count)
            .generation_limit(script.generation_limit)
            .home_finalization(script.home_finalization)
            .thread_exit(if script.thread_exit_release {
                ThreadExit::Release
            } else {
                ThreadExit::Leak
            })
            .on_event(move |e| sink.lock().push(e.clone()))
            .build();
        let interner = Interner::new(&reg);
        let log: Log = Arc::default();
        // Learn the tag (for forged ids) with a probe inserted and dropped by
        // a short-lived thread. (Not the coordinator: a thread that used a
        // registry keeps a weak exit hook to it, pruned only now and then;
        // under the fuzzer that allocation outliving the input would trigger
        // libFuzzer's leak check on almost every input.) Beyond the first
        // page, the probe fills every slot once, so every page is allocated
        // and an id's error depends only on its slot (never on whether its
        // page exists yet, which the model cannot know).
        let probes = if script.capacity > FIRST_PAGE {
            script.capacity
        } else {
            1
        };
        let probed: Vec<Handle> = thread::scope(|s| {
            s.spawn(|| {
                let handles: Vec<Handle> = (0..probes)
                    .map(|_| {
                        let log = Arc::clone(&log);
                        reg.insert(Val { id: u32::MAX, log }).unwrap()
                    })
                    .collect();
                for &h in &handles {
                    assert_eq!(reg.release(h), Ok(Released::Finalized));
                }
                handles
            })
            .join()
            .unwrap()
        });
        log.lock().clear();
        events.lock().clear();
        let mut m = Model::new(script);
        for &h in &probed {
            m.free_slot(h);
        }
        let workers: Vec<Worker> = (0..WORKERS).map(|i| Worker::spawn(&reg, i)).collect();
        let thread_of = workers.iter().map(|w| w.thread).collect();
        Harness {
            reg: Some(reg),
            interner: Some(interner),
            log,
            seen: 0,
            events,
            tag: parts(probed[0]).0,
            workers,
            thread_of,
            coordinator: thread::current().id(),
            held: HashMap::new(),
            m,
        }
    }

    pub(super) fn reg(&self) -> &Registry<Val> {
        self.reg
            .as_ref()
            .expect("the registry is dropped only at the end")
    }

    fn forged(&self, f: Forge) -> Handle {
        let capacity = self.m.capacity as u64;
        let raw = match f {
            Forge::WrongTag(i) => {
                let tag = self.tag % 255 + 1; // another valid tag
                (tag << TAG_SHIFT) | u64::from(i % 8)
            }
            Forge::ZeroTag(i) => (1 << 24) | u64::from(i),
            Forge::FutureGen(i) => (self.tag << TAG_SHIFT) | (1 << 44) | (u64::from(i) % capacity),
            Forge::BigIndex(i) => (self.tag << TAG_SHIFT) | (capacity + u64::from(i)),
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
                    .filter(|&o| self.m.refs(o, who) > 0)
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

    /// The model indices of the unclaimed `Transfer` objects, oldest first.
    pub(super) fn transfer_objects(&self) -> Vec<usize> {
        (0..self.m.transfers.len())
            .filter(|&t| self.m.transfers[t].state == TState::Object)
            .collect()
    }

    /// Keeps a new transfer of `o` (a `Transfer` object if the worker sent
    /// one back) and returns its model index.
    pub(super) fn keep_transfer(&mut self, o: usize, tr: Option<Transfer<Val>>) -> usize {
        let t = self.m.transfers.len();
        let state = match tr {
            Some(tr) => {
                self.held.insert(t, tr);
                TState::Object
            }
            None => TState::Gone,
        };
        self.m.transfers.push(MTransfer { obj: o, state });
        t
    }

    /// Expected error of an id that names no object of the model, and whether
    /// the call gets that far (drains, and registers the thread) first: it
    /// does once the id passed the registry's range checks (tag, then index
    /// below the capacity). Past them the slot's generation decides: beyond
    /// it the id was never issued (`Invalid`); at or below it, it names a
    /// free or retired slot or a finalized object (`Stale`).
    fn forged_error(&self, h: Handle) -> (Error, bool) {
        let (tag, generation, index) = parts(h);
        if tag != self.tag {
            let e = match tag {
                0 => Error::Invalid(h.to_raw()),
                _ => Error::ForeignRegistry(h),
            };
            (e, false)
        } else if index >= self.m.capacity {
            (Error::Invalid(h.to_raw()), false)
        } else if generation > self.m.slot_gen[index] {
            (Error::Invalid(h.to_raw()), true)
        } else {
            (Error::Stale(h), true)
        }
    }

    /// Why the handle a successful `insert` returned is not a fresh one, if
    /// it is not: it must carry this registry's tag and name a free slot
    /// below the capacity, not retired, under that slot's current
    /// generation (so it differs from every handle issued before).
    pub(super) fn bad_new_handle(&self, h: Handle) -> Option<String> {
        let (tag, generation, index) = parts(h);
        let capacity = self.m.capacity;
        let why = if tag != self.tag {
            format!("tag {tag}, registry's {}", self.tag)
        } else if index >= capacity {
            format!("index {index} beyond the capacity {capacity}")
        } else if self.m.retired[index] {
            format!("slot {index} was retired (generation limit)")
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

    /// The model's side of an insert by `who`: `Ok` if it succeeds (it
    /// drains and registers the thread unless the registry is closed).
    pub(super) fn expect_insert(&mut self, who: usize) -> Result<(), Error> {
        if self.m.closed {
            return Err(Error::Closed);
        }
        self.m.registered[who] = true;
        self.m.drain_batch(who);
        if self.m.full() {
            Err(Error::Full)
        } else {
            Ok(())
        }
    }

    /// Records the object a successful insert returned, if its handle is a
    /// fresh one; else the violation. (What to expect if the registry did
    /// not succeed: a placeholder that cannot match.)
    pub(super) fn inserted(
        &mut self,
        got: Option<Handle>,
        val: u32,
        who: usize,
        kind: Kind,
    ) -> Result<usize, Outcome> {
        let Some(h) = got else {
            return Err(Outcome::Inserted(Ok(Handle::from_raw(1).unwrap())));
        };
        if let Some(why) = self.bad_new_handle(h) {
            return Err(Outcome::Violation(why));
        }
        Ok(self.m.insert(val, h, who, kind))
    }

    pub(super) fn handles(&self) -> Vec<Handle> {
        self.m.objs.iter().map(|o| o.handle).collect()
    }

    pub(super) fn send(&self, pos: usize, job: Job) -> Reply {
        self.workers[pos].run(self.handles(), job)
    }

    /// Runs one step on the registry and on the model.
    pub(super) fn step(&mut self, step: Step) -> Stepped {
        let pos = step.thread;
        let who = self.m.ident[pos];
        if let Some(H::Raw(x)) = step.op.handle() {
            // An arbitrary id is a handle iff it is neither 0 nor >= 2^53.
            let raw = self.relative(x);
            let got = Handle::from_raw(raw).map(Handle::to_raw);
            let want = (raw != 0 && raw < 1 << 53).then_some(raw);
            if got.is_none() || want.is_none() {
                return (Outcome::NoHandle(got), Outcome::NoHandle(want), Vec::new());
            }
        }
        let done = match step.op {
            Op::Insert => Some(self.insert(pos, who, Kind::Ref)),
            Op::InsertProxy => Some(self.insert(pos, who, Kind::Root)),
            Op::InsertMany(n) => Some(self.insert_many(pos, who, n)),
            Op::Retain(h)
            | Op::Get(h)
            | Op::Proxy(h)
            | Op::Pin(h)
            | Op::Unpin(h)
            | Op::Release(h) => self.on_handle(pos, who, step.op, h),
            Op::Transfer { h, raw } => self.transfer(pos, who, h, raw),
            Op::Claim(i) => self.claim(pos, who, i, Kind::Ref),
            Op::ClaimProxy(i) => self.claim(pos, who, i, Kind::Root),
            Op::DropTransfer(i) => self.drop_transfer(pos, who, Some(i)),
            Op::DropTransfers => self.drop_transfer(pos, who, None),
            Op::ClaimRaw(r) => self.claim_raw(pos, who, r, true),
            Op::FromRawDrop(r) => self.claim_raw(pos, who, r, false),
            Op::CloneProxy { i, checked } => self.clone_proxy(pos, who, i, checked),
            Op::DropProxy(i) => self.drop_proxy(pos, who, i),
            Op::ProxyTransfer(i) => self.proxy_transfer(pos, who, i),
            Op::Intern { key, fail } => Some(self.intern(pos, who, key, fail, false)),
            Op::InternProxy(key) => Some(self.intern(pos, who, key, false, true)),
            Op::Pump => {
                let reply = self.send(
                    pos,
                    Box::new(|ctx| Reply::of(Outcome::Pumped(ctx.reg.pump()))),
                );
                let n = self.m.drain(who, usize::MAX);
                Some((reply, Outcome::Pumped(n)))
            }
            Op::Close => Some(self.close(pos, who, false)),
            Op::Shutdown => Some(self.close(pos, who, true)),
            Op::Exit => {
                self.workers[pos].exit();
                self.m.exit(who);
                let fresh = self.m.spawn();
                self.m.ident[pos] = fresh;
                self.workers[pos] = Worker::spawn(self.reg(), fresh);
                self.thread_of.push(self.workers[pos].thread);
                Some((Reply::of(Outcome::Exited), Outcome::Exited))
            }
        };
        match done {
            Some((reply, expected)) => (reply.outcome, expected, reply.counts),
            None => (Outcome::Skipped, Outcome::Skipped, Vec::new()),
        }
    }

    /// `insert` or `insert_proxy`.
    fn insert(&mut self, pos: usize, who: usize, kind: Kind) -> (Reply, Outcome) {
        let id = self.m.next_val;
        self.m.next_val += 1;
        let log = Arc::clone(&self.log);
        let proxy = self.m.proxies.len();
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                let val = Val { id, log };
                let got = match kind {
                    Kind::Ref => ctx.reg.insert(val),
                    Kind::Root => ctx.reg.insert_proxy(val).map(|p| {
                        let h = p.handle();
                        ctx.proxies.insert(proxy, p);
                        h
                    }),
                };
                Reply::of(Outcome::Inserted(
                    got.map_err(|e| (e.error(), e.into_value().id)),
                ))
            }),
        );
        let expected = match self.expect_insert(who) {
            Err(e) => {
                self.m.drops.push((id, who)); // the handed-back value
                Outcome::Inserted(Err((e, id)))
            }
            Ok(()) => {
                let got = match reply.outcome {
                    Outcome::Inserted(Ok(h)) => Some(h),
                    _ => None,
                };
                match self.inserted(got, id, who, kind) {
                    Ok(o) => Outcome::Inserted(Ok(self.m.objs[o].handle)),
                    Err(wrong) => wrong,
                }
            }
        };
        (reply, expected)
    }

    /// `retain`, `release`, `get`, `proxy`, `pin` and `unpin`.
    fn on_handle(&mut self, pos: usize, who: usize, op: Op, h: H) -> Option<(Reply, Outcome)> {
        let target = self.target(h, who)?;
        let hh = match target {
            Target::Obj(o) => self.m.objs[o].handle,
            Target::Forged(f) => f,
        };
        let proxy = self.m.proxies.len();
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                let reg = &ctx.reg;
                Reply::of(match op {
                    Op::Retain(_) => Outcome::Count(reg.retain(hh)),
                    Op::Release(_) => Outcome::Released(reg.release(hh)),
                    Op::Get(_) => Outcome::Got(
                        reg.get(hh)
                            .map(|g| (g.id, reg.count(hh).unwrap_or(u32::MAX))),
                    ),
                    Op::Proxy(_) => {
                        let p = reg.proxy(hh);
                        Outcome::Proxied(p.map(|p| ctx.keep(proxy, p)))
                    }
                    Op::Pin(_) => Outcome::Unit(reg.pin(hh)),
                    _ => Outcome::Unit(reg.unpin(hh)),
                })
            }),
        );
        let name = match op {
            Op::Retain(_) => "retain",
            Op::Release(_) => "release",
            Op::Get(_) => "get",
            Op::Proxy(_) => "proxy",
            Op::Pin(_) => "pin",
            _ => "unpin",
        };
        // All but `release` take the thread's table once the id passes the
        // range checks (`release` gives up a reference: it needs one).
        let registers = !matches!(op, Op::Release(_));
        let err = match target {
            Target::Forged(_) => {
                let (e, drains) = self.forged_error(hh);
                if drains {
                    self.m.registered[who] |= registers;
                    self.m.drain_batch(who);
                }
                Some(e)
            }
            Target::Obj(o) => {
                self.m.registered[who] |= registers;
                self.m.drain_batch(who);
                self.handle_error(op, o, who)
            }
        };
        let expected = match (op, err) {
            (_, Some(e)) => {
                self.m.failed(name, e, who);
                match op {
                    Op::Retain(_) => Outcome::Count(Err(e)),
                    Op::Release(_) => Outcome::Released(Err(e)),
                    Op::Get(_) => Outcome::Got(Err(e)),
                    Op::Proxy(_) => Outcome::Proxied(Err(e)),
                    _ => Outcome::Unit(Err(e)),
                }
            }
            (_, None) => {
                let Target::Obj(o) = target else {
                    unreachable!("a forged id always fails")
                };
                self.on_object(op, o, who)
            }
        };
        Some((reply, expected))
    }

    /// Why `op` on the model's object `o` fails, if it does.
    fn handle_error(&self, op: Op, o: usize, who: usize) -> Option<Error> {
        let h = self.m.objs[o].handle;
        if !self.m.objs[o].live {
            return Some(Error::Stale(h));
        }
        match op {
            // release needs an explicit reference; the others the access rule.
            Op::Release(_) if self.m.refs(o, who) == 0 => Some(Error::NotHeld(h)),
            Op::Release(_) => None,
            _ if !self.m.may_access(o, who) => Some(Error::NotHeld(h)),
            Op::Unpin(_) if self.m.objs[o].pins == 0 => Some(Error::NotPinned(h)),
            // One more reference of a thread that holds some: within
            // `max_count`. (A first one is always 1.)
            Op::Retain(_) | Op::Get(_) | Op::Proxy(_)
                if self.m.total(o, who) > 0 && !self.m.has_room(o, who) =>
            {
                Some(Error::Overflow(h))
            }
            _ => None,
        }
    }

    /// The model's side of a successful `op` on live object `o`.
    fn on_object(&mut self, op: Op, o: usize, who: usize) -> Outcome {
        let val = self.m.objs[o].val;
        match op {
            Op::Retain(_) => Outcome::Count(Ok(self.m.take(o, who, Kind::Ref))),
            Op::Release(_) => Outcome::Released(Ok(self.m.give_up(o, who, Kind::Ref))),
            Op::Get(_) => {
                // The guard is a reference while it lives.
                let n = self.m.take(o, who, Kind::Root);
                self.m.give_up(o, who, Kind::Root);
                Outcome::Got(Ok((val, n)))
            }
            Op::Proxy(_) => {
                let n = self.m.take(o, who, Kind::Root);
                self.m.proxies.push(MProxy {
                    obj: o,
                    owner: who,
                    live: true,
                });
                Outcome::Proxied(Ok((val, n)))
            }
            Op::Pin(_) => {
                self.m.objs[o].pins += 1;
                self.m.ev("pinned", o, who);
                Outcome::Unit(Ok(()))
            }
            _ => {
                self.m.objs[o].pins -= 1;
                self.m.ev("unpinned", o, who);
                self.m.after_drop(o, who);
                Outcome::Unit(Ok(()))
            }
        }
    }

    /// `transfer`, and with `raw` `into_raw`.
    fn transfer(&mut self, pos: usize, who: usize, h: H, raw: bool) -> Option<(Reply, Outcome)> {
        let target = self.target(h, who)?;
        let hh = match target {
            Target::Obj(o) => self.m.objs[o].handle,
            Target::Forged(f) => f,
        };
        let mut reply = self.send(
            pos,
            Box::new(move |ctx| match ctx.reg.transfer(hh) {
                Ok(t) if raw => Reply {
                    raw: Some(t.into_raw()),
                    ..Reply::of(Outcome::Unit(Ok(())))
                },
                Ok(t) => Reply {
                    transfers: vec![t],
                    ..Reply::of(Outcome::Unit(Ok(())))
                },
                Err(e) => Reply::of(Outcome::Unit(Err(e))),
            }),
        );
        // transfer() does not drain, nor register a thread.
        let err = match target {
            Target::Forged(_) => Some(self.forged_error(hh).0),
            Target::Obj(o) if !self.m.objs[o].live => Some(Error::Stale(hh)),
            Target::Obj(o) if self.m.refs(o, who) == 0 => Some(Error::NotHeld(hh)),
            Target::Obj(_) => None,
        };
        if let Some(e) = err {
            self.m.failed("transfer", e, who);
            return Some((reply, Outcome::Unit(Err(e))));
        }
        let Target::Obj(o) = target else {
            unreachable!("a forged id always fails")
        };
        self.m.transfer_out(o, who, Kind::Ref);
        let t = self.keep_transfer(o, reply.transfers.pop());
        if let (TState::Gone, Some(token)) = (self.m.transfers[t].state, reply.raw) {
            self.m.tokens.push(token);
            self.m.transfers[t].state = TState::Raw(token);
        }
        Some((reply, Outcome::Unit(Ok(()))))
    }

    /// `Registry::claim` (`Ref`) or `Transfer::claim` (`Root`) of an
    /// unclaimed `Transfer` object.
    fn claim(&mut self, pos: usize, who: usize, i: usize, kind: Kind) -> Option<(Reply, Outcome)> {
        let objects = self.transfer_objects();
        if objects.is_empty() {
            return None;
        }
        let t = objects[i % objects.len()];
        let tr = self.held.remove(&t).unwrap();
        let proxy = self.m.proxies.len();
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                Reply::of(match kind {
                    Kind::Ref => Outcome::Claimed(ctx.reg.claim(tr)),
                    Kind::Root => Outcome::Proxied(tr.claim().map(|p| ctx.keep(proxy, p))),
                })
            }),
        );
        self.m.transfers[t].state = TState::Gone;
        let o = self.m.transfers[t].obj;
        let (h, val) = (self.m.objs[o].handle, self.m.objs[o].val);
        let claimed = self.m.claim(o, who, kind);
        let expected = match kind {
            Kind::Ref => Outcome::Claimed(claimed.map(|_| h)),
            Kind::Root => {
                if claimed.is_ok() {
                    self.m.proxies.push(MProxy {
                        obj: o,
                        owner: who,
                        live: true,
                    });
                }
                Outcome::Proxied(claimed.map(|n| (val, n)))
            }
        };
        Some((reply, expected))
    }

    /// Drop of one unclaimed `Transfer` object (`Some(i)`) or of all of them.
    fn drop_transfer(
        &mut self,
        pos: usize,
        who: usize,
        i: Option<usize>,
    ) -> Option<(Reply, Outcome)> {
        let objects = self.transfer_objects();
        if objects.is_empty() {
            return None;
        }
        let chosen = match i {
            Some(i) => vec![objects[i % objects.len()]],
            None => objects,
        };
        let trs: Vec<Transfer<Val>> = chosen
            .iter()
            .map(|t| self.held.remove(t).unwrap())
            .collect();
        let reply = self.send(
            pos,
            Box::new(move |_| {
                for tr in trs {
                    drop(tr); // oldest first
                }
                Reply::of(Outcome::Unit(Ok(())))
            }),
        );
        // Dropping a transfer does not drain.
        for t in chosen {
            self.m.transfers[t].state = TState::Gone;
            let o = self.m.transfers[t].obj;
            self.m.objs[o].transfers -= 1;
            self.m.after_drop(o, who);
        }
        Some((reply, Outcome::Unit(Ok(()))))
    }

    /// `claim_raw` (`claim`), or `Transfer::from_raw` and drop.
    fn claim_raw(
        &mut self,
        pos: usize,
        who: usize,
        r: Raw,
        claim: bool,
    ) -> Option<(Reply, Outcome)> {
        let token = self.raw(r)?;
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                Reply::of(if claim {
                    Outcome::Claimed(ctx.reg.claim_raw(token))
                } else {
                    Outcome::Unit(Transfer::from_raw(&ctx.reg, token).map(drop))
                })
            }),
        );
        let found = (self.m.transfers.iter()).position(|t| t.state == TState::Raw(token));
        let expected = match found {
            Some(t) => {
                self.m.transfers[t].state = TState::Gone;
                let o = self.m.transfers[t].obj;
                if claim {
                    let h = self.m.objs[o].handle;
                    Outcome::Claimed(self.m.claim(o, who, Kind::Ref).map(|_| h))
                } else {
                    self.m.objs[o].transfers -= 1;
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
                    self.m.failed("claim_raw", e, who);
                    Outcome::Claimed(Err(e))
                } else {
                    self.m.failed("from_raw", e, who);
                    Outcome::Unit(Err(e))
                }
            }
        };
        Some((reply, expected))
    }

    /// The identity of the thread an event names.
    pub(super) fn ident_of(&self, t: ThreadId) -> usize {
        if t == self.coordinator {
            return super::worker::COORDINATOR;
        }
        (self.thread_of.iter())
            .position(|&x| x == t)
            .unwrap_or(super::worker::UNKNOWN)
    }

    /// An event as the model describes it.
    pub(super) fn ev_of(&self, e: &Event) -> Ev {
        let who = self.ident_of(e.thread());
        match e {
            Event::Misuse {
                operation, error, ..
            } => Ev::misuse(who, operation, *error),
            Event::ThreadExited { released, kept, .. } => Ev::exited(who, *released, *kept),
            Event::Leaked { report, .. } => Ev::leaked(
                who,
                report.objects.iter().map(|o| o.handle.to_raw()).collect(),
            ),
            _ => Ev {
                who,
                kind: e.name(),
                handle: e.handle().map(Handle::to_raw),
                detail: match e {
                    Event::Finalized { panicked: true, .. } => "panicked".to_owned(),
                    _ => String::new(),
                },
            },
        }
    }
}
