//! `serde` support (the `serde` feature): [`Snapshot`](crate::Snapshot) and
//! [`LeakReport`](crate::LeakReport) serialize for tools. Thread ids, which
//! have no stable numeric form, serialize as their `Debug` text
//! (`"ThreadId(3)"`); backtraces as their text; handles as their raw `u64`.

use std::backtrace::Backtrace;
use std::sync::Arc;
use std::thread::ThreadId;

use serde::{Serialize, Serializer};

use crate::Handle;

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.to_raw())
    }
}

pub(crate) fn thread<S: Serializer>(t: &ThreadId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{t:?}"))
}

pub(crate) fn opt_thread<S: Serializer>(t: &Option<ThreadId>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => thread(t, s),
        None => s.serialize_none(),
    }
}

pub(crate) fn opt_backtrace<S: Serializer>(
    bt: &Option<Arc<Backtrace>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match bt {
        Some(bt) => s.collect_str(bt),
        None => s.serialize_none(),
    }
}
