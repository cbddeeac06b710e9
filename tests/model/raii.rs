//! Steps beyond the explicit layer: proxies, the interner, batches of
//! inserts, `close` and `shutdown`.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tether::{Error, Handle, InternError, Transfer};

use super::harness::Harness;
use super::reference::{init_error, Interned, Kind, MProxy};
use super::worker::{Outcome, Reply, Val};

impl Harness {
    /// The model index of the thread's `i % n`-th live proxy.
    fn my_proxy(&self, who: usize, i: usize) -> Option<usize> {
        let mine: Vec<usize> = (0..self.m.proxies.len())
            .filter(|&p| self.m.proxies[p].live && self.m.proxies[p].owner == who)
            .collect();
        (!mine.is_empty()).then(|| mine[i % mine.len()])
    }

    fn new_proxy(&mut self, o: usize, who: usize) {
        self.m.proxies.push(MProxy {
            obj: o,
            owner: who,
            live: true,
        });
    }

    /// `n` inserts on one thread, each followed by `transfer` into a
    /// `Transfer` object the coordinator keeps.
    pub(super) fn insert_many(&mut self, pos: usize, who: usize, n: u8) -> (Reply, Outcome) {
        let first = self.m.next_val;
        self.m.next_val += u32::from(n);
        let log = Arc::clone(&self.log);
        let mut reply = self.send(
            pos,
            Box::new(move |ctx| {
                let mut transfers = Vec::new();
                let results = (0..u32::from(n))
                    .map(|k| {
                        let val = Val {
                            id: first + k,
                            log: Arc::clone(&log),
                        };
                        let h = ctx
                            .reg
                            .insert(val)
                            .map_err(|e| (e.error(), e.into_value().id))?;
                        // A failed transfer shows as an id no value has.
                        let t = ctx.reg.transfer(h).map_err(|e| (e, u32::MAX))?;
                        transfers.push(t);
                        Ok(h)
                    })
                    .collect();
                Reply {
                    transfers,
                    ..Reply::of(Outcome::InsertedMany(results))
                }
            }),
        );
        let got = match &reply.outcome {
            Outcome::InsertedMany(results) => results.clone(),
            _ => Vec::new(),
        };
        let mut transfers = std::mem::take(&mut reply.transfers).into_iter();
        let mut expected = Vec::new();
        for k in 0..u32::from(n) {
            let id = first + k;
            expected.push(match self.expect_insert(who) {
                Err(e) => {
                    self.m.drops.push((id, who));
                    Err((e, id))
                }
                Ok(()) => {
                    let h = got.get(k as usize).and_then(|r| r.ok());
                    match self.inserted(h, id, who, Kind::Ref) {
                        Ok(o) => {
                            self.m.transfer_out(o, who, Kind::Ref);
                            self.keep_transfer(o, transfers.next());
                            Ok(self.m.objs[o].handle)
                        }
                        Err(Outcome::Violation(why)) => {
                            return (reply, Outcome::Violation(why));
                        }
                        Err(_) => Ok(Handle::from_raw(1).unwrap()),
                    }
                }
            });
        }
        (reply, Outcome::InsertedMany(expected))
    }

    /// `try_clone` or `clone` of one of the thread's proxies.
    pub(super) fn clone_proxy(
        &mut self,
        pos: usize,
        who: usize,
        i: usize,
        checked: bool,
    ) -> Option<(Reply, Outcome)> {
        let p = self.my_proxy(who, i)?;
        let o = self.m.proxies[p].obj;
        let room = self.m.has_room(o, who);
        // `clone` past the limit aborts by design: ask `try_clone` there.
        let try_clone = checked || !room;
        let new = self.m.proxies.len();
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                let src = &ctx.proxies[&p];
                let cloned = if try_clone {
                    src.try_clone()
                } else {
                    Ok(src.clone())
                };
                Reply::of(Outcome::Proxied(cloned.map(|q| ctx.keep(new, q))))
            }),
        );
        // No drain: a clone touches only the thread's own count.
        let expected = if room {
            let n = self.m.take(o, who, Kind::Root);
            self.new_proxy(o, who);
            Outcome::Proxied(Ok((self.m.objs[o].val, n)))
        } else {
            Outcome::Proxied(Err(Error::Overflow(self.m.objs[o].handle)))
        };
        Some((reply, expected))
    }

    /// Drop of one of the thread's proxies.
    pub(super) fn drop_proxy(
        &mut self,
        pos: usize,
        who: usize,
        i: usize,
    ) -> Option<(Reply, Outcome)> {
        let p = self.my_proxy(who, i)?;
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                drop(ctx.proxies.remove(&p).expect("the worker keeps it"));
                Reply::of(Outcome::Unit(Ok(())))
            }),
        );
        self.m.proxies[p].live = false;
        let o = self.m.proxies[p].obj;
        self.m.give_up(o, who, Kind::Root);
        Some((reply, Outcome::Unit(Ok(()))))
    }

    /// `Proxy::transfer` of one of the thread's proxies: a `Transfer` object.
    pub(super) fn proxy_transfer(
        &mut self,
        pos: usize,
        who: usize,
        i: usize,
    ) -> Option<(Reply, Outcome)> {
        let p = self.my_proxy(who, i)?;
        let mut reply = self.send(
            pos,
            Box::new(move |ctx| {
                let proxy = ctx.proxies.remove(&p).expect("the worker keeps it");
                let t: Transfer<Val> = proxy.transfer();
                Reply {
                    transfers: vec![t],
                    ..Reply::of(Outcome::Unit(Ok(())))
                }
            }),
        );
        self.m.proxies[p].live = false;
        let o = self.m.proxies[p].obj;
        self.m.transfer_out(o, who, Kind::Root);
        self.keep_transfer(o, reply.transfers.pop());
        Some((reply, Outcome::Unit(Ok(()))))
    }

    /// `intern` (its `init` failing with `fail`) or `intern_proxy`.
    pub(super) fn intern(
        &mut self,
        pos: usize,
        who: usize,
        key: u8,
        fail: bool,
        proxy: bool,
    ) -> (Reply, Outcome) {
        let id = self.m.next_val; // if `init` runs and succeeds
        let log = Arc::clone(&self.log);
        let interner = self.interner.clone().expect("alive until the end");
        let new = self.m.proxies.len();
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                let ran = Cell::new(false);
                let init = || {
                    ran.set(true);
                    if fail {
                        Err(init_error(key))
                    } else {
                        Ok(Val { id, log })
                    }
                };
                let got = if proxy {
                    interner.intern_proxy(&key, init).map(|p| {
                        let h = p.handle();
                        ctx.proxies.insert(new, p);
                        h
                    })
                } else {
                    interner.intern(&key, init)
                };
                Reply::of(Outcome::Interned(got, ran.get()))
            }),
        );
        let (o, ran) = match self.m.intern(key, fail, who) {
            Interned::Failed(e, ran) => return (reply, Outcome::Interned(Err(e), ran)),
            Interned::Held(o) => (o, false),
            Interned::New(val) => {
                // (`intern_proxy` of a new object that overflows names it
                // only in its error.)
                let h = match &reply.outcome {
                    Outcome::Interned(Ok(h), _) => *h,
                    Outcome::Interned(Err(InternError::Registry(Error::Overflow(h))), _)
                        if proxy =>
                    {
                        *h
                    }
                    _ => {
                        let placeholder = Ok(Handle::from_raw(1).unwrap());
                        return (reply, Outcome::Interned(placeholder, true));
                    }
                };
                if let Some(why) = self.bad_new_handle(h) {
                    return (reply, Outcome::Violation(why));
                }
                (self.m.interned(key, val, h, who), true)
            }
        };
        let h = self.m.objs[o].handle;
        if !proxy {
            return (reply, Outcome::Interned(Ok(h), ran));
        }
        // `intern_proxy`: the interned reference becomes a proxy. Both calls
        // drain a batch.
        self.m.drain_batch(who);
        let room = self.m.has_room(o, who);
        if room {
            self.m.take(o, who, Kind::Root);
            self.new_proxy(o, who);
        }
        self.m.drain_batch(who);
        self.m.give_up(o, who, Kind::Ref);
        let got = if room {
            Ok(h)
        } else {
            Err(InternError::Registry(Error::Overflow(h)))
        };
        (reply, Outcome::Interned(got, ran))
    }

    /// `close`, or `shutdown` with a 1 ms timeout.
    pub(super) fn close(&mut self, pos: usize, who: usize, shutdown: bool) -> (Reply, Outcome) {
        let reply = self.send(
            pos,
            Box::new(move |ctx| {
                if !shutdown {
                    ctx.reg.close();
                    return Reply::of(Outcome::Unit(Ok(())));
                }
                let done = ctx.reg.shutdown(Duration::from_millis(1));
                Reply::of(Outcome::Shutdown(done.map_err(|report| {
                    let mut live: Vec<Handle> = report.objects.iter().map(|o| o.handle).collect();
                    live.sort_unstable();
                    live
                })))
            }),
        );
        self.m.closed = true;
        if !shutdown {
            return (reply, Outcome::Unit(Ok(())));
        }
        // It pumps this thread's queue; `Ok` once nothing is live and no
        // value waits in another home's queue (those homes are idle here).
        self.m.drain(who, usize::MAX);
        let mut live: Vec<Handle> = (self.m.objs.iter())
            .filter(|o| o.live)
            .map(|o| o.handle)
            .collect();
        live.sort_unstable();
        let queued = self.m.pending.iter().any(|q| !q.is_empty());
        let done = if live.is_empty() && !queued {
            Ok(())
        } else {
            Err(live)
        };
        (reply, Outcome::Shutdown(done))
    }
}
