//! The usage counters' guard. Every process on the machine may write the counters segment (a
//! lookup counts by an atomic add, so the segment is mode 0666), which means any local user can
//! also write any number there. The agent does not take what it reads on trust:
//!
//! - **A shadow of every counter** ([`Guard`]): the count the agent last saw or put there. At
//!   each limit check (every `LIMIT_CHECK_MS` while some backend has a limit, else at the next
//!   tick, at least once a heartbeat), **before any limit is read**, every backend's counter is
//!   compared with its shadow. Growth up to `max-lookup-rate` per second since the last look is
//!   lookups and is taken. More than that, or any decrease, was written by something other than
//!   lookups: the counter is put back to its shadow by compare-and-swap (lookups counted while
//!   that happens are kept), the first time per backend it is logged with the size of the jump,
//!   and every time it is counted. Nothing is deleted and nothing is sent to the group for it.
//! - **The segment's header** (magic, generation, capacities: what a process checks before it
//!   shares the counters) is checked at every tick and rewritten when it changed, so processes
//!   started after that share turns again within a second instead of taking process-local ones.
//!
//! Both counts go into the table's header (`Writer::set_tampered`), where `status` reads them.
//! The shadow follows every counter the agent itself zeroes ([`Guard::zeroed`]). What the
//! counters hold when the agent starts is taken as it stands: lookups go on while no agent runs.

use lbfo_core::addr::Ip;
use lbfo_core::{CountersView, MAX_BACKENDS};

use super::Agent;
use crate::vecmap::VecSet;

/// Compare-and-swaps tried per counter and look before the guard leaves it to the next look
/// (only a process rewriting the same counter in a loop makes it fail that often).
const PUT_BACK_TRIES: usize = 16;

/// What the agent knows the counters should hold; see the module docs.
#[derive(Debug, Default)]
pub(super) struct Guard {
    /// The count last seen or put back, at `slot * MAX_BACKENDS + position` (grown on use).
    shadow: Vec<u64>,
    /// When the shadow was last brought up to date (monotonic ms); `None` before the first look,
    /// which takes the counters as they stand.
    at_ms: Option<u64>,
    /// Backends whose tampering was logged, until their counter restarts.
    logged: VecSet<(usize, usize)>,
    /// Counters found moved by something other than lookups.
    pub(super) counts: u64,
    /// Rewrites of the segment's header.
    pub(super) header: u64,
}

/// How a counter moved since the last look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// Up by at most what lookups can do: taken.
    Lookups,
    /// Up by more than that (by this much).
    Jump(u64),
    /// Down: only the agent zeroes a counter.
    Drop,
}

fn judge(shadow: u64, now: u64, allowed: u64) -> Move {
    match now.checked_sub(shadow) {
        None => Move::Drop,
        Some(up) if up > allowed => Move::Jump(up),
        Some(_) => Move::Lookups,
    }
}

impl Guard {
    /// A guard that goes on counting from the tamper counts a table already holds.
    pub(super) fn resumed((counts, header): (u64, u64)) -> Guard {
        Guard {
            counts,
            header,
            ..Guard::default()
        }
    }

    fn at(&mut self, slot: usize, pos: usize) -> &mut u64 {
        let i = slot * MAX_BACKENDS + pos;
        if self.shadow.len() <= i {
            self.shadow.resize((slot + 1) * MAX_BACKENDS, 0);
        }
        &mut self.shadow[i]
    }

    /// Every counter moved to a new table (a reload with another capacity): the next look takes
    /// them as they stand there, as at start.
    pub(super) fn moved(&mut self) {
        self.shadow.clear();
        self.at_ms = None;
        self.logged = VecSet::default();
    }

    /// The agent zeroed the counters of `slot`'s positions in `mask`.
    pub(super) fn zeroed(&mut self, slot: usize, mask: u16) {
        for pos in (0..MAX_BACKENDS).filter(|p| mask >> p & 1 == 1) {
            *self.at(slot, pos) = 0;
        }
        self.logged
            .retain(|&(s, pos), _| s != slot || mask >> pos & 1 == 0);
    }
}

/// Puts `to` into the counter in place of `seen`; lookups counted between the read and the swap
/// (at most `slack` of them) are added to `to`, not lost. `None` if the counter kept changing.
fn put_back(
    c: &CountersView<'_>,
    (slot, pos): (usize, usize),
    mut seen: u64,
    mut to: u64,
    slack: u64,
) -> Option<u64> {
    for _ in 0..PUT_BACK_TRIES {
        match c.replace(slot, pos, seen, to) {
            Ok(()) => return Some(to),
            Err(now) => {
                // Growth within a lookup rate is lookups; another write racing ours is not.
                if now >= seen && now - seen <= slack {
                    to = to.saturating_add(now - seen);
                }
                seen = now;
            }
        }
    }
    None
}

impl Agent<'_> {
    /// Compares every backend's counter with its shadow and puts back what lookups cannot have
    /// done (see the module docs).
    pub(super) fn guard_counters(&mut self, now_ms: u64) {
        let last = self.guard.at_ms.replace(now_ms);
        let rate = self.config.max_lookup_rate;
        let ms = last.map_or(0, |l| now_ms.saturating_sub(l).max(1));
        let allowed = rate.saturating_mul(ms).div_ceil(1000);
        let before = self.guard.counts;
        // The fields apart, so the guard can change while the counters are read.
        let counters = CountersView::with_layout(self.shm.counters(), self.shm.layout());
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(s) = s else { continue };
            for (pos, b) in s.iter() {
                let now = counters.count(slot, pos);
                let shadow = self.guard.at(slot, pos);
                let moved = judge(*shadow, now, allowed);
                if last.is_none() || moved == Move::Lookups {
                    *shadow = now;
                    continue;
                }
                let was = *shadow;
                if let Some(to) = put_back(&counters, (slot, pos), now, was, allowed) {
                    *self.guard.at(slot, pos) = to;
                }
                self.guard.counts += 1;
                if self.guard.logged.insert((slot, pos), ()).is_some() {
                    continue;
                }
                let what = match moved {
                    Move::Jump(up) => format!(
                        "jumped by {up} in {ms} ms (max-lookup-rate {rate} allows {allowed})"
                    ),
                    _ => format!("fell from {was} to {now}"),
                };
                self.log.push(format!(
                    "counters: {} {}: {what}: written by something other than lookups; put back \
                     to {was} (counted in status; not logged again for this backend)",
                    s.name,
                    Ip(b.addr)
                ));
            }
        }
        if let Some(w) = self.writer().filter(|_| self.guard.counts != before) {
            w.set_tampered(self.guard.counts, self.guard.header);
        }
    }

    /// Rewrites the counters segment's header if something changed it.
    pub(super) fn guard_header(&mut self) {
        let Some(view) = self.writer().map(|w| w.view()) else {
            return;
        };
        if !self
            .counters()
            .repair_header(view.generation(), view.layout())
        {
            return;
        }
        self.guard.header += 1;
        let n = self.guard.header;
        if let Some(w) = self.writer() {
            w.set_tampered(self.guard.counts, n);
        }
        // The first time and then ever more rarely: someone rewriting it in a loop cannot fill
        // the log.
        if n.is_power_of_two() {
            self.log(format!(
                "counters: the segment's header was overwritten ({n} so far); rewritten, \
                 so new processes share turns again"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbfo_core::atomic::AtomicU64;
    use lbfo_core::shm::Layout;
    use lbfo_core::{Capacity, Writer};

    /// Putting a counter back while another thread counts lookups loses none of them: every
    /// put-back takes away exactly the one it means to, whatever was counted between its read
    /// and its write (a plain store would take those lookups too).
    #[test]
    fn putting_back_keeps_lookups_counted_meanwhile() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let layout = Layout::new(Capacity::DEFAULT);
        let table: Vec<AtomicU64> = (0..layout.total_words())
            .map(|_| AtomicU64::new(0))
            .collect();
        let words: Vec<AtomicU64> = (0..layout.counters_words())
            .map(|_| AtomicU64::new(0))
            .collect();
        let w = Writer::init(&table, 9, Capacity::DEFAULT).unwrap();
        CountersView::init(&words, 9, layout);
        let c = CountersView::new_checked(&words, &w.view()).unwrap();
        let start = 1_000_000;
        c.replace(3, 2, 0, start).unwrap();
        let stop = AtomicBool::new(false);
        let (lookups, taken) = std::thread::scope(|s| {
            let looker = s.spawn(|| {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    c.bump(3, 2);
                    n += 1;
                }
                n
            });
            let mut taken = 0;
            for _ in 0..5_000 {
                let seen = c.count(3, 2);
                // The agent's time between reading a counter and putting it back, made long.
                (0..200).for_each(|_| std::hint::spin_loop());
                if put_back(&c, (3, 2), seen, seen - 1, u64::MAX).is_some() {
                    taken += 1;
                }
            }
            stop.store(true, Ordering::Relaxed);
            (looker.join().unwrap(), taken)
        });
        assert!(taken > 0 && lookups > 0);
        assert_eq!(c.count(3, 2), start + lookups - taken);
    }

    #[test]
    fn moves_are_judged_by_the_rate() {
        assert_eq!(judge(10, 10, 0), Move::Lookups);
        assert_eq!(judge(10, 15, 5), Move::Lookups);
        assert_eq!(judge(10, 16, 5), Move::Jump(6));
        assert_eq!(judge(10, 9, 5), Move::Drop);
        assert_eq!(judge(u64::MAX, 0, u64::MAX), Move::Drop);
    }
}
