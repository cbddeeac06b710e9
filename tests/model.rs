//! Model-based property test (issue 5, item 1; limits and the RAII layer,
//! issue 15).
//!
//! proptest generates scripts of operations that run one step at a time on 3
//! real worker threads, next to a reference model that keeps per-thread
//! counts in ordinary maps. After every step the registry and the model must
//! agree on the call's result (`Ok` value or exact `Error`), the live objects
//! (`len()`), the acting thread's `count()` of every handle, every thread's
//! count (`holders()`), pins, in-flight transfers, homes, pending queues and
//! retired slots (`snapshot()`), the interner's keys, the values dropped
//! during the step (exactly once, on the right thread) and the events the
//! `on_event` hook saw.
//!
//! Scripts use small limits (capacity, `max_count`, generation limit) so
//! `Full`, `Overflow` and slot retirement are reached, a capacity above the
//! drain batch so a bounded drain leaves values queued, and proxies,
//! `Transfer::claim`, the interner, `close` and `shutdown` beside the
//! explicit layer. The tests after the property run fixed scripts that reach
//! each of those every time.
//!
//! The scripts, workers, reference model and checks live in `tests/model/`
//! (its module docs give the exact rules, e.g. which calls drain the home
//! queue) and are shared with the fuzz target `fuzz/fuzz_targets/model.rs`;
//! this file only generates and shrinks scripts.
//!
//! Run more cases with `TETHER_PROPTEST_CASES=10000 cargo test --test model`.

#[path = "model/mod.rs"]
mod model;

use model::{run, Forge, Op, Raw, Script, Step, BIG_CAPACITY, H, KEYS, WORKERS};
use proptest::prelude::*;

fn handle_strategy() -> impl Strategy<Value = H> {
    prop_oneof![
        6 => (0usize..8).prop_map(H::Obj),
        8 => (0usize..4).prop_map(H::Mine),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::WrongTag(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::ZeroTag(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::FutureGen(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::BigIndex(i))),
    ]
}

fn raw_strategy() -> impl Strategy<Value = Raw> {
    prop_oneof![
        3 => (0usize..8).prop_map(Raw::Issued),
        4 => (0usize..4).prop_map(Raw::Live),
        2 => (0u16..12).prop_map(Raw::Serial),
        1 => any::<u64>().prop_map(Raw::Any),
    ]
}

/// Ops; `batches` weights batches of inserts (and drops of every transfer)
/// up, for scripts whose capacity lets more than a drain batch queue.
fn op_strategy(batches: u32) -> impl Strategy<Value = Op> {
    let explicit = prop_oneof![
        6 => Just(Op::Insert),
        4 => handle_strategy().prop_map(Op::Retain),
        8 => handle_strategy().prop_map(Op::Release),
        3 => handle_strategy().prop_map(Op::Get),
        2 => handle_strategy().prop_map(Op::Pin),
        2 => handle_strategy().prop_map(Op::Unpin),
        8 => (handle_strategy(), any::<bool>()).prop_map(|(h, raw)| Op::Transfer { h, raw }),
        6 => (0usize..4).prop_map(Op::Claim),
        2 => (0usize..4).prop_map(Op::DropTransfer),
        4 => raw_strategy().prop_map(Op::ClaimRaw),
        2 => raw_strategy().prop_map(Op::FromRawDrop),
        2 => Just(Op::Pump),
        1 => Just(Op::Exit),
    ];
    let raii = prop_oneof![
        3 => Just(Op::InsertProxy),
        2 => handle_strategy().prop_map(Op::Proxy),
        3 => (0usize..4, any::<bool>()).prop_map(|(i, checked)| Op::CloneProxy { i, checked }),
        3 => (0usize..4).prop_map(Op::DropProxy),
        2 => (0usize..4).prop_map(Op::ProxyTransfer),
        3 => (0usize..4).prop_map(Op::ClaimProxy),
        4 => (0..KEYS, prop::bool::weighted(0.2)).prop_map(|(key, fail)| Op::Intern { key, fail }),
        1 => (0..KEYS).prop_map(Op::InternProxy),
        // Either a few, or more than a drain batch (up to the big capacity).
        batches => prop_oneof![1u8..8, 33u8..=BIG_CAPACITY as u8].prop_map(Op::InsertMany),
        batches + 1 => Just(Op::DropTransfers),
        1 => prop_oneof![Just(Op::Close), Just(Op::Shutdown)],
    ];
    prop_oneof![50 => explicit, 30 => raii]
}

fn script_strategy() -> impl Strategy<Value = Script> {
    prop_oneof![2 => 3usize..=6, 1 => Just(BIG_CAPACITY)].prop_flat_map(|capacity| {
        let batches = if capacity == BIG_CAPACITY { 6 } else { 1 };
        (
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop_oneof![1 => Just(1u32), 1 => Just(2), 2 => Just(3), 3 => Just(u32::MAX)],
            prop_oneof![1 => Just(0u32), 2 => Just(1), 2 => Just(2), 3 => Just(u32::MAX)],
            prop::collection::vec(
                (0..WORKERS, op_strategy(batches)).prop_map(|(thread, op)| Step { thread, op }),
                1..60,
            ),
        )
            .prop_map(
                move |(home_finalization, thread_exit_release, max_count, limit, steps)| Script {
                    home_finalization,
                    thread_exit_release,
                    capacity,
                    max_count,
                    generation_limit: limit,
                    steps,
                },
            )
    })
}

fn cases() -> u32 {
    std::env::var("TETHER_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The registry and the reference model agree after every step.
    #[test]
    fn registry_matches_model(script in script_strategy()) {
        if let Err(e) = run(&script) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// A script on the default settings, with the given changes.
fn script(steps: &[(usize, Op)], edit: impl FnOnce(&mut Script)) -> Script {
    let mut s = Script {
        home_finalization: true,
        thread_exit_release: true,
        capacity: 4,
        max_count: u32::MAX,
        generation_limit: u32::MAX,
        steps: steps
            .iter()
            .map(|&(thread, op)| Step { thread, op })
            .collect(),
    };
    edit(&mut s);
    s
}

fn check(s: &Script) {
    if let Err(e) = run(s) {
        panic!("{e}\nscript: {s:?}");
    }
}

/// 40 values queued to one home: its next call drains 32, the next 8 more.
#[test]
fn a_drain_batch_leaves_the_rest_queued() {
    check(&script(
        &[
            (0, Op::InsertMany(40)),
            (1, Op::DropTransfers),
            (0, Op::Retain(H::Obj(0))), // stale: drains 32, 8 stay queued
            (0, Op::Insert),            // drains the other 8
            (1, Op::InsertMany(3)),
            (0, Op::DropTransfers),
            (1, Op::Pump),
        ],
        |s| s.capacity = BIG_CAPACITY,
    ));
}

/// `max_count(2)`: every way of taking a third reference is `Overflow`.
#[test]
fn every_way_past_max_count_overflows() {
    check(&script(
        &[
            (0, Op::Insert),
            (0, Op::Retain(H::Obj(0))),
            (0, Op::Retain(H::Obj(0))), // overflow
            (0, Op::Get(H::Obj(0))),    // overflow
            (0, Op::Proxy(H::Obj(0))),  // overflow
            (0, Op::Release(H::Obj(0))),
            (0, Op::Proxy(H::Obj(0))),
            (
                0,
                Op::CloneProxy {
                    i: 0,
                    checked: true,
                },
            ), // overflow
            (
                0,
                Op::CloneProxy {
                    i: 0,
                    checked: false,
                },
            ),
            (1, Op::InsertProxy),
            (1, Op::ProxyTransfer(0)),
            (0, Op::ClaimProxy(0)),
            (1, Op::InsertProxy),
            (1, Op::ProxyTransfer(0)),
            (0, Op::ClaimProxy(0)), // overflow: the transfer is dropped
            (
                0,
                Op::Transfer {
                    h: H::Obj(1),
                    raw: true,
                },
            ),
            (0, Op::Retain(H::Obj(1))),
            (0, Op::Retain(H::Obj(1))),
            (0, Op::ClaimRaw(Raw::Live(0))),   // overflow
            (0, Op::ClaimRaw(Raw::Issued(0))), // claimed already
            (
                2,
                Op::Intern {
                    key: 0,
                    fail: false,
                },
            ),
            (
                2,
                Op::Intern {
                    key: 0,
                    fail: false,
                },
            ),
            (
                2,
                Op::Intern {
                    key: 0,
                    fail: false,
                },
            ), // overflow
            (2, Op::InternProxy(0)), // overflow
            (
                1,
                Op::Intern {
                    key: 1,
                    fail: false,
                },
            ),
            (1, Op::Intern { key: 1, fail: true }),
            (1, Op::InternProxy(1)), // overflow after its interned reference
        ],
        |s| s.max_count = 2,
    ));
}

/// `max_count(1)`: a new object's only reference is all a thread may have;
/// `intern_proxy` of a new key gives the object up at once.
#[test]
fn max_count_one() {
    check(&script(
        &[
            (0, Op::Insert),
            (0, Op::Get(H::Obj(0))), // overflow
            (1, Op::InternProxy(2)), // overflow: finalized
            (
                1,
                Op::Intern {
                    key: 2,
                    fail: false,
                },
            ),
            (
                1,
                Op::CloneProxy {
                    i: 0,
                    checked: false,
                },
            ),
            (0, Op::InsertProxy),
            (
                0,
                Op::CloneProxy {
                    i: 0,
                    checked: false,
                },
            ),
        ],
        |s| s.max_count = 1,
    ));
}

/// Generation limit 1 on 3 slots: the probe's slot and then every slot
/// retires after two objects; then `Full` for good.
#[test]
fn exhausted_slots_retire() {
    let mut steps = Vec::new();
    for _ in 0..6 {
        steps.push((0, Op::Insert));
        steps.push((1, Op::Retain(H::Obj(0)))); // not held: NotHeld
        steps.push((0, Op::Release(H::Obj(0))));
        steps.push((2, Op::Get(H::Obj(0)))); // stale
        steps.push((2, Op::Release(H::Forged(Forge::FutureGen(1)))));
    }
    steps.push((0, Op::Insert)); // full: every slot retired
    check(&script(&steps, |s| {
        s.capacity = 3;
        s.generation_limit = 1;
    }));
}

/// Closed: no new objects or claims (a refused claim releases its
/// transfer), holders keep working; `shutdown` reports what is still live
/// and succeeds once nothing is.
#[test]
fn close_then_shutdown() {
    check(&script(
        &[
            (0, Op::Insert),
            (
                0,
                Op::Intern {
                    key: 0,
                    fail: false,
                },
            ),
            (
                0,
                Op::Transfer {
                    h: H::Obj(0),
                    raw: false,
                },
            ),
            (
                0,
                Op::Transfer {
                    h: H::Obj(1),
                    raw: true,
                },
            ),
            (1, Op::Close),
            (1, Op::Insert),
            (1, Op::Claim(0)),
            (1, Op::ClaimRaw(Raw::Live(0))),
            (
                1,
                Op::Intern {
                    key: 0,
                    fail: false,
                },
            ),
            (
                1,
                Op::Intern {
                    key: 1,
                    fail: false,
                },
            ),
            (
                0,
                Op::Intern {
                    key: 1,
                    fail: false,
                },
            ),
            (0, Op::InsertProxy),
            (2, Op::Shutdown),
            (0, Op::Get(H::Mine(0))),
            (0, Op::Shutdown),
        ],
        |_| {},
    ));
}

/// Proxies through transfers, clones and drops on three threads; exits with
/// proxies alive, under both thread-exit policies.
#[test]
fn proxies_travel_and_die_with_their_thread() {
    let steps = [
        (0, Op::InsertProxy),
        (
            0,
            Op::CloneProxy {
                i: 0,
                checked: false,
            },
        ),
        (0, Op::ProxyTransfer(0)),
        (1, Op::ClaimProxy(0)),
        (
            1,
            Op::CloneProxy {
                i: 0,
                checked: true,
            },
        ),
        (1, Op::ProxyTransfer(1)),
        (2, Op::Claim(0)),
        (0, Op::DropProxy(0)),
        (1, Op::Exit),
        (2, Op::Release(H::Mine(0))),
        (0, Op::Pump),
        (2, Op::InternProxy(1)),
        (1, Op::InternProxy(1)),
        (2, Op::Exit),
    ];
    for release in [true, false] {
        check(&script(&steps, |s| s.thread_exit_release = release));
    }
}
