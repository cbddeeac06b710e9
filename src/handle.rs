//! The handle: a plain, `Copy`, 8-byte id that crosses FFI boundaries.

use std::fmt;
use std::num::NonZeroU64;

use crate::limits::{GEN_BITS, INDEX_BITS, RAW_LIMIT};

/// A plain id for an object in a [`Registry`](crate::Registry).
///
/// A `Handle` owns nothing: it is an 8-byte `Copy` id that names an object.
/// References are counted per thread by the registry, not by handles, so a
/// handle can be copied, stored, or sent to another runtime freely.
///
/// # Raw form
///
/// [`to_raw`](Handle::to_raw) gives a `u64` that is never `0` and always
/// below 2^53, so it survives a round trip through a JavaScript number or any
/// `f64`. Its bits, from the least significant:
///
/// | bits   | field                                                     |
/// |--------|-----------------------------------------------------------|
/// | 0..24  | slot index                                                |
/// | 24..45 | generation of the slot (a finalized object's handle never resolves again) |
/// | 45..53 | registry tag (a handle from another registry is rejected) |
///
/// The layout is documented for debugging only; treat the value as opaque.
///
/// ```
/// # use tether::{Handle, Registry};
/// let reg = Registry::new();
/// let h = reg.insert("hello").unwrap();
/// let raw: u64 = h.to_raw();
/// assert!(raw != 0 && raw < (1 << 53));
/// assert_eq!(raw as f64 as u64, raw); // survives a JS number
/// assert_eq!(Handle::from_raw(raw), Some(h));
/// assert_eq!(Handle::from_raw(0), None);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Handle(NonZeroU64);

impl Handle {
    /// Builds a handle from its parts. `tag` must be non-zero.
    #[inline]
    pub(crate) fn new(tag: u64, generation: u32, index: u32) -> Handle {
        let raw = (tag << (INDEX_BITS + GEN_BITS))
            | (u64::from(generation) << INDEX_BITS)
            | u64::from(index);
        debug_assert!(raw < RAW_LIMIT);
        match NonZeroU64::new(raw) {
            Some(raw) => Handle(raw),
            // The tag is never 0, so raw is never 0; keep the branch panic-free.
            None => Handle(NonZeroU64::MIN),
        }
    }

    /// The raw id: never `0`, always below 2^53.
    #[inline]
    pub fn to_raw(self) -> u64 {
        self.0.get()
    }

    /// Rebuilds a handle from [`to_raw`](Handle::to_raw).
    ///
    /// Returns `None` for `0` and for values `>= 2^53`, which no registry ever
    /// issues. Any other value gives a `Handle`; whether it names a live
    /// object is decided by the registry (`Err(Invalid)`, `Err(Stale)`,
    /// `Err(ForeignRegistry)` for ids it did not issue or no longer honours).
    #[inline]
    pub fn from_raw(raw: u64) -> Option<Handle> {
        if raw >= RAW_LIMIT {
            return None;
        }
        NonZeroU64::new(raw).map(Handle)
    }

    /// Slot index.
    #[inline]
    pub(crate) fn index(self) -> u32 {
        (self.0.get() & ((1 << INDEX_BITS) - 1)) as u32
    }

    /// Slot generation.
    #[inline]
    pub(crate) fn generation(self) -> u32 {
        ((self.0.get() >> INDEX_BITS) & ((1 << GEN_BITS) - 1)) as u32
    }

    /// Registry tag.
    #[inline]
    pub(crate) fn tag(self) -> u64 {
        self.0.get() >> (INDEX_BITS + GEN_BITS)
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Handle({}: index {}, generation {}, tag {})",
            self.to_raw(),
            self.index(),
            self.generation(),
            self.tag()
        )
    }
}

/// Prints the raw id, e.g. `#35184372088833`.
impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.to_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_GENERATION, MAX_TAG};

    #[test]
    fn parts_round_trip() {
        for &(tag, generation, index) in &[
            (1, 0, 0),
            (MAX_TAG, MAX_GENERATION, (1 << INDEX_BITS) - 1),
            (7, 12345, 99),
        ] {
            let h = Handle::new(tag, generation, index);
            assert_eq!(
                (h.tag(), h.generation(), h.index()),
                (tag, generation, index)
            );
            assert_eq!(Handle::from_raw(h.to_raw()), Some(h));
            assert!(h.to_raw() < RAW_LIMIT);
        }
    }

    #[test]
    fn rejects_zero_and_wide_raws() {
        assert_eq!(Handle::from_raw(0), None);
        assert_eq!(Handle::from_raw(RAW_LIMIT), None);
        assert_eq!(Handle::from_raw(u64::MAX), None);
        assert!(Handle::from_raw(RAW_LIMIT - 1).is_some());
    }
}
