//! Fuzz target: arbitrary bytes → a model script → the same run and checks as
//! the model-based property test (`tests/model.rs`, whose harness in
//! `tests/model/` this target includes): 3 real worker threads against the
//! reference model, every result, count, holder, pin, transfer, pending
//! queue, retired slot, interner key, drop and hook event compared after
//! every step.
//!
//! Decoding (every byte sequence is a script; missing bytes read as 0):
//!
//! * byte 0: settings. Bit 0 set turns home finalization off, bit 1 set
//!   picks `ThreadExit::Leak`; bits 2-3 pick the capacity (4, 3, 6 or
//!   [`BIG_CAPACITY`]), bits 4-5 `max_count` (`u32::MAX`, 1, 2 or 3), bits
//!   6-7 the generation limit (the default, 0, 1 or 2). A 0 byte is the
//!   default settings with capacity 4.
//! * then one step per group, at most [`MAX_STEPS`]: a byte `b` picks the
//!   worker (`b % 3`) and the op (`b / 3 % 80`, weighted like the proptest
//!   strategy), followed by the op's operands:
//!   * a handle: a byte `c`; `c % 20` picks the kind and `c / 20` the index
//!     of a recent object (`0..6`) or of one the thread holds (`6..14`); a
//!     forged id of each [`Forge`] kind (`14..18`, one more byte); any raw
//!     id (`18`, 8 more bytes, little endian); or a raw id in this registry
//!     with a small generation and index (`19`, 2 more bytes). Raw ids are
//!     taken relative to the registry's tag (`x ^ tag << 45`), so every
//!     `u64` is reachable and an input means the same in every run.
//!   * a raw transfer token: a byte `d`; `d % 10` picks an issued token
//!     (`0..3`), an unclaimed one (`3..7`), this registry's tag with any
//!     serial (`7..9`, one more byte) or any `u64` (`9`, 8 more bytes,
//!     relative to the tag), `d / 10` the index.
//!   * `transfer`: a handle, then a byte whose bit 0 asks for `into_raw`.
//!   * `claim`, `Transfer::claim`, drop of a `Transfer`, and drop or
//!     `transfer` of a proxy: a byte, the index.
//!   * a proxy clone: a byte; bit 0 picks `try_clone`, the rest the index.
//!   * `intern`: a byte `k`; `k % KEYS` is the key, and `init` fails when
//!     `k / KEYS % 5 == 4`. `intern_proxy`: a byte, the key (`% KEYS`).
//!   * a batch of inserts: a byte `n`, `1 + n % BIG_CAPACITY` of them.
//!
//! A disagreement panics with the failing step and the whole script;
//! `cargo fuzz fmt model <input>` prints the script of any input.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

use model::{Forge, Op, Raw, Script, Step, BIG_CAPACITY, H, KEYS, WORKERS};

/// Longest script decoded from one input (longer inputs are cut).
const MAX_STEPS: usize = 128;

fuzz_target!(|script: Script| {
    if let Err(e) = model::run(&script) {
        panic!("{e}\nscript: {script:?}");
    }
});

type R<T> = arbitrary::Result<T>;

fn byte(u: &mut Unstructured<'_>) -> R<u8> {
    u8::arbitrary(u)
}

fn handle(u: &mut Unstructured<'_>) -> R<H> {
    let c = byte(u)?;
    let i = usize::from(c / 20);
    Ok(match c % 20 {
        0..=5 => H::Obj(i),
        6..=13 => H::Mine(i),
        14 => H::Forged(Forge::WrongTag(byte(u)?)),
        15 => H::Forged(Forge::ZeroTag(byte(u)?)),
        16 => H::Forged(Forge::FutureGen(byte(u)?)),
        17 => H::Forged(Forge::BigIndex(byte(u)?)),
        18 => H::Raw(u64::arbitrary(u)?),
        _ => {
            let generation = u64::from(byte(u)?);
            H::Raw(generation << 24 | u64::from(byte(u)?))
        }
    })
}

fn raw(u: &mut Unstructured<'_>) -> R<Raw> {
    let d = byte(u)?;
    let i = usize::from(d / 10);
    Ok(match d % 10 {
        0..=2 => Raw::Issued(i),
        3..=6 => Raw::Live(i),
        7..=8 => Raw::Serial(u16::from(byte(u)?)),
        _ => Raw::Any(u64::arbitrary(u)?),
    })
}

fn step(u: &mut Unstructured<'_>) -> R<Step> {
    let b = byte(u)?;
    let index = |u: &mut Unstructured<'_>| byte(u).map(usize::from);
    let op = match b / 3 % 80 {
        0..=5 => Op::Insert,
        6..=9 => Op::Retain(handle(u)?),
        10..=17 => Op::Release(handle(u)?),
        18..=20 => Op::Get(handle(u)?),
        21..=22 => Op::Pin(handle(u)?),
        23..=24 => Op::Unpin(handle(u)?),
        25..=32 => Op::Transfer {
            h: handle(u)?,
            raw: byte(u)? & 1 == 1,
        },
        33..=38 => Op::Claim(index(u)?),
        39..=40 => Op::DropTransfer(index(u)?),
        41..=44 => Op::ClaimRaw(raw(u)?),
        45..=46 => Op::FromRawDrop(raw(u)?),
        47..=48 => Op::Pump,
        49 => Op::Exit,
        50..=52 => Op::InsertProxy,
        53..=54 => Op::Proxy(handle(u)?),
        55..=57 => {
            let c = byte(u)?;
            Op::CloneProxy {
                i: usize::from(c >> 1),
                checked: c & 1 == 1,
            }
        }
        58..=60 => Op::DropProxy(index(u)?),
        61..=62 => Op::ProxyTransfer(index(u)?),
        63..=65 => Op::ClaimProxy(index(u)?),
        66..=69 => {
            let k = byte(u)?;
            Op::Intern {
                key: k % KEYS,
                fail: k / KEYS % 5 == 4,
            }
        }
        70 => Op::InternProxy(byte(u)? % KEYS),
        71..=72 | 78..=79 => Op::InsertMany(1 + byte(u)? % BIG_CAPACITY as u8),
        73..=75 => Op::DropTransfers,
        76 => Op::Close,
        _ => Op::Shutdown,
    };
    Ok(Step {
        thread: usize::from(b) % WORKERS,
        op,
    })
}

impl<'a> Arbitrary<'a> for Script {
    fn arbitrary(u: &mut Unstructured<'a>) -> R<Self> {
        let settings = byte(u)?;
        let mut steps = Vec::new();
        while !u.is_empty() && steps.len() < MAX_STEPS {
            steps.push(step(u)?);
        }
        Ok(Script {
            home_finalization: settings & 1 == 0,
            thread_exit_release: settings & 2 == 0,
            capacity: [4, 3, 6, BIG_CAPACITY][usize::from(settings >> 2 & 3)],
            max_count: [u32::MAX, 1, 2, 3][usize::from(settings >> 4 & 3)],
            generation_limit: [u32::MAX, 0, 1, 2][usize::from(settings >> 6)],
            steps,
        })
    }
}
