//! The drop counters: refused datagrams counted by source and reason, within a fixed capacity,
//! so a flood of spoofed sources cannot grow memory.

use std::net::SocketAddr;

use crate::cluster::wire::DropReason;

/// Drop counters kept at most, one per source and reason. Past it, drops from new sources are
/// counted by reason alone under the unspecified address (and that is logged once).
pub const MAX_DROP_COUNTERS: usize = 256;

/// Drop counters by source and reason.
#[derive(Debug, Default)]
pub struct Drops {
    by_source: heapless::LinearMap<(SocketAddr, DropReason), u64, MAX_DROP_COUNTERS>,
    /// Drops from sources beyond the capacity, by reason ([`DropReason::ALL`]'s order).
    beyond: [u64; DropReason::ALL.len()],
}

/// What [`Drops::count`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// The first of its reason from its source.
    First,
    /// One more.
    Again,
    /// The first drop counted beyond the capacity.
    FirstBeyond,
    /// Counted beyond the capacity, by reason alone.
    Beyond,
}

impl Drops {
    /// Counts `n` drops of `why` from `from`.
    pub fn count(&mut self, from: SocketAddr, why: DropReason, n: u64) -> Counted {
        if let Some(c) = self.by_source.get_mut(&(from, why)) {
            *c += n;
            return Counted::Again;
        }
        if self.by_source.insert((from, why), n).is_ok() {
            return Counted::First;
        }
        let first = self.beyond.iter().all(|&c| c == 0);
        let i = DropReason::ALL.iter().position(|&r| r == why).unwrap_or(0);
        self.beyond[i] += n;
        if first {
            Counted::FirstBeyond
        } else {
            Counted::Beyond
        }
    }

    /// Every counter, in the order they were first counted; those beyond the capacity last,
    /// under the unspecified address.
    pub fn list(&self) -> Vec<(SocketAddr, DropReason, u64)> {
        let mut out: Vec<_> = self.by_source.iter().map(|(k, n)| (k.0, k.1, *n)).collect();
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let beyond = DropReason::ALL.iter().zip(self.beyond);
        out.extend(beyond.filter(|b| b.1 > 0).map(|(&why, n)| (any, why, n)));
        out
    }
}
