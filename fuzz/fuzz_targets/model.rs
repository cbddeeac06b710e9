//! Fuzz target: arbitrary bytes → a model script → the same run and checks as
//! the model-based property test (`tests/model.rs`, whose harness in
//! `tests/model/` this target includes): 3 real worker threads against the
//! reference model, every result, count, holder, pin, transfer, pending
//! queue and drop compared after every step.
//!
//! Decoding (every byte sequence is a script; missing bytes read as 0):
//!
//! * byte 0: settings. Bit 0 set turns home finalization off, bit 1 set
//!   picks `ThreadExit::Leak`.
//! * then one step per group, at most [`MAX_STEPS`]: a byte `b` picks the op
//!   (`b % 50`, weighted like the proptest strategy) and the worker
//!   (`b / 50 % 3`), followed by the op's operands:
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
//!   * `claim` / drop of a `Transfer`: a byte, the index.
//!
//! A disagreement panics with the failing step and the whole script;
//! `cargo fuzz fmt model <input>` prints the script of any input.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

use model::{Forge, Op, Raw, Script, Step, H, WORKERS};

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
    let op = match b % 50 {
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
        33..=38 => Op::Claim(usize::from(byte(u)?)),
        39..=40 => Op::DropTransfer(usize::from(byte(u)?)),
        41..=44 => Op::ClaimRaw(raw(u)?),
        45..=46 => Op::FromRawDrop(raw(u)?),
        47..=48 => Op::Pump,
        _ => Op::Exit,
    };
    Ok(Step {
        thread: usize::from(b / 50) % WORKERS,
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
            steps,
        })
    }
}
