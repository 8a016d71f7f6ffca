//! Turning a service's backends into a *schedule*: the agent's half of every policy.
//!
//! The agent computes, per address family, a short sequence of backend positions whenever a
//! service changes; a lookup then takes the next turn from a shared counter and reads
//! `schedule[turn % len]`. That keeps the lookup path to a handful of loads and one atomic add,
//! makes `roundrobin` exactly even, and makes `weighted` proportional over *every* window of one
//! schedule length (smooth weighted round-robin, as nginx interleaves: 1:3 gives B B A B, not
//! A B B B). `leastused` schedules list the eligible backends; the lookup compares their counters.
//! `fastest` schedules list the eligible backends of the fastest set (see [`fastest_set`]), or
//! every eligible one while that set has none (no check, no round-trip time yet): roundrobin.

use crate::policy::Policy;
use crate::table::{Service, MAX_BACKENDS};
use core::net::IpAddr;

/// Entries in one schedule. Weights are reduced by their common divisor; if they still sum to
/// more, they are scaled to this many turns (largest remainder, every eligible backend keeps at
/// least one), so proportions hold to within 1/64 for extreme weight ratios and exactly otherwise.
pub const SCHED_LEN: usize = 64;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A sequence of backend positions, at most [`SCHED_LEN`] of them: the length the shared table
/// gives each schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(heapless::Vec<u8, SCHED_LEN>);

const _: () = assert!(MAX_BACKENDS <= SCHED_LEN && MAX_BACKENDS <= u8::MAX as usize);

impl Schedule {
    /// The empty schedule: no backend may be returned.
    pub const EMPTY: Schedule = Schedule(heapless::Vec::new());

    /// The positions, in turn order.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Appends backend position `pos` (below [`MAX_BACKENDS`], so it fits a byte). Never full:
    /// a schedule lists each backend at most once, or (`weighted`) takes at most [`SCHED_LEN`]
    /// turns once [`scale`]d.
    fn push(&mut self, pos: usize) {
        let _ = self.0.push(pos as u8);
    }

    /// Computes the schedule of `service` for `family`.
    pub fn build(service: &Service, family: Family) -> Schedule {
        let mut s = Schedule::EMPTY;
        // One pass over the backends: each eligible one's weight (0: not eligible) and the
        // best prio among them.
        let mut w = [0u64; MAX_BACKENDS];
        let mut prio = [0u32; MAX_BACKENDS];
        let mut best = u32::MAX;
        let mut fast = 0u32;
        for (i, b) in service.iter() {
            if b.eligible() && Family::of(&b.addr) == family {
                if let (Some(wi), Some(pi)) = (w.get_mut(i), prio.get_mut(i)) {
                    (*wi, *pi) = (u64::from(b.weight), b.prio);
                    best = best.min(b.prio);
                    fast |= u32::from(b.fast) << i;
                }
            }
        }
        match service.policy {
            Policy::RoundRobin | Policy::LeastUsed => (0..MAX_BACKENDS)
                .filter(|&i| w[i] > 0)
                .for_each(|i| s.push(i)),
            Policy::Fastest => (0..MAX_BACKENDS)
                .filter(|&i| w[i] > 0 && (fast == 0 || fast >> i & 1 == 1))
                .for_each(|i| s.push(i)),
            Policy::Failover => (0..MAX_BACKENDS)
                .filter(|&i| w[i] > 0 && prio[i] == best)
                .for_each(|i| s.push(i)),
            Policy::Weighted => {
                scale(&mut w);
                // Scaled, the weights sum to at most SCHED_LEN: 32-bit arithmetic from here on
                // (on 32-bit routers each 64-bit operation is several instructions).
                let w = w.map(|x| x.min(SCHED_LEN as u64) as i32);
                let total: i32 = w.iter().sum();
                let mut current = [0i32; MAX_BACKENDS];
                for _ in 0..total {
                    let mut pick = 0;
                    for i in 0..MAX_BACKENDS {
                        current[i] += w[i];
                        if w[i] > 0 && (w[pick] == 0 || current[i] > current[pick]) {
                            pick = i;
                        }
                    }
                    current[pick] -= total;
                    s.push(pick);
                }
            }
        }
        s
    }
}

/// The least tolerance of `fastest`, in microseconds: round-trip times closer than this to the
/// best one tie with it (on a LAN every backend is within it, and takes turns).
pub const FASTEST_SLACK_US: u32 = 1000;

/// `fastest`'s set: bit `i` set for backend position `i` when it is eligible, has a smoothed
/// round-trip time `rtt_us[i]`, and ties with the best of its address family: within a fifth of
/// the best or [`FASTEST_SLACK_US`], whichever is more. A backend already in the set
/// (`Backend::fast`) stays in it up to twice that, so one whose time hovers at the edge does not
/// rebuild the schedule at every sample. Per family, because a lookup picks per family.
pub fn fastest_set(service: &Service, rtt_us: &[Option<u32>; MAX_BACKENDS]) -> u16 {
    let mut set = 0u16;
    for family in [Family::V4, Family::V6] {
        let timed = || {
            service.iter().filter_map(move |(i, b)| {
                let rtt = rtt_us.get(i).copied().flatten()?;
                (b.eligible() && Family::of(&b.addr) == family).then_some((i, b.fast, rtt))
            })
        };
        let Some(best) = timed().map(|(_, _, rtt)| rtt).min() else {
            continue;
        };
        let slack = (best / 5).max(FASTEST_SLACK_US);
        for (i, fast, rtt) in timed() {
            let tolerance = if fast { 2 * slack } else { slack };
            if rtt <= best.saturating_add(tolerance) {
                set |= 1 << i;
            }
        }
    }
    set
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Reduces weights by their gcd, then scales them to at most [`SCHED_LEN`] turns.
fn scale(w: &mut [u64; MAX_BACKENDS]) {
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    if g == 0 {
        return;
    }
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    let len = SCHED_LEN as u64;
    if total <= len {
        return;
    }
    // Largest remainder over all turns, then every eligible backend gets at least one turn,
    // taken from the largest share.
    let mut rem = [0u64; MAX_BACKENDS];
    let mut given = 0;
    for i in 0..MAX_BACKENDS {
        let exact = w[i] * len;
        rem[i] = exact % total;
        let eligible = w[i] > 0;
        w[i] = exact / total;
        given += w[i];
        if eligible && w[i] == 0 {
            rem[i] = rem[i].max(1);
        }
    }
    while given < len {
        let Some(i) = (0..MAX_BACKENDS)
            .filter(|&i| rem[i] > 0)
            .max_by_key(|&i| (rem[i], usize::MAX - i))
        else {
            break;
        };
        w[i] += 1;
        rem[i] = 0;
        given += 1;
    }
    for i in 0..MAX_BACKENDS {
        if w[i] == 0 && rem[i] > 0 {
            if let Some(j) = (0..MAX_BACKENDS).max_by_key(|&j| w[j]) {
                w[j] -= 1;
                w[i] = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{parse_line, Line};
    use crate::table::Table;
    use std::vec;

    fn service(lines: &[&str]) -> Service {
        let mut slots = vec![None; 1];
        let mut t = Table::new(&mut slots);
        for l in lines {
            let Ok(Some(Line::Command(c))) = parse_line(l) else {
                panic!("{l}")
            };
            t.apply(&c).unwrap();
        }
        *t.get(0).unwrap()
    }

    #[test]
    fn weighted_is_smooth_and_exact() {
        let s = service(&[
            "policy w.lan weighted",
            "add w.lan 10.0.0.1 weight=1",
            "add w.lan 10.0.0.2 weight=3",
        ]);
        assert_eq!(Schedule::build(&s, Family::V4).as_slice(), &[1, 0, 1, 1]);
        assert_eq!(Schedule::build(&s, Family::V6).as_slice(), &[] as &[u8]);
        let s = service(&[
            "policy w.lan weighted",
            "add w.lan 10.0.0.1 weight=100",
            "add w.lan 10.0.0.2 weight=300",
        ]);
        assert_eq!(
            Schedule::build(&s, Family::V4).as_slice(),
            &[1, 0, 1, 1],
            "gcd reduces"
        );
    }

    #[test]
    fn weighted_scales_big_weights() {
        let s = service(&[
            "policy w.lan weighted",
            "add w.lan 10.0.0.1 weight=1",
            "add w.lan 10.0.0.2 weight=1000",
            "add w.lan 10.0.0.3 weight=997",
        ]);
        let sched = Schedule::build(&s, Family::V4);
        let count = |p| sched.as_slice().iter().filter(|&&x| x == p).count();
        assert_eq!(sched.as_slice().len(), SCHED_LEN);
        assert_eq!((count(0), count(1) + count(2)), (1, 63));
        assert!(count(1) >= count(2));
    }

    #[test]
    fn failover_takes_lowest_prio_up() {
        let s = service(&[
            "policy f.lan failover",
            "add f.lan 10.0.0.1 prio=2",
            "add f.lan 10.0.0.2 prio=1",
            "add f.lan 10.0.0.3 prio=1",
            "down f.lan 10.0.0.3",
            "add f.lan ::1 prio=0",
        ]);
        assert_eq!(Schedule::build(&s, Family::V4).as_slice(), &[1]);
        assert_eq!(Schedule::build(&s, Family::V6).as_slice(), &[3]);
    }

    #[test]
    fn fastest_picks_the_fastest_set_and_rotates_near_ties() {
        let mut s = service(&[
            "policy f.lan fastest",
            "add f.lan 10.0.0.1",
            "add f.lan 10.0.0.2",
            "add f.lan 10.0.0.3",
            "add f.lan 10.0.0.4 weight=0",
            "add f.lan ::1",
            "add f.lan ::2",
        ]);
        // No round-trip time yet (or no check): every eligible backend, as roundrobin.
        assert_eq!(Schedule::build(&s, Family::V4).as_slice(), &[0, 1, 2]);
        let ms = |m: u32| Some(m * 1000);
        let mut rtt = [None; MAX_BACKENDS];
        (rtt[0], rtt[1], rtt[2], rtt[3]) = (ms(30), ms(10), ms(11), ms(1));
        (rtt[4], rtt[5]) = (Some(100), Some(5000));
        // 10 ms is best (position 3 is drained); 11 ms is within a fifth; 30 ms is not.
        // IPv6 on its own: 0.1 ms best, 5 ms beyond the 1 ms slack.
        let set = fastest_set(&s, &rtt);
        assert_eq!(set, 0b01_0110);
        let apply = |s: &mut Service, set: u16| {
            for (i, b) in s.backends.iter_mut().enumerate() {
                if let Some(b) = b {
                    b.fast = set >> i & 1 == 1;
                }
            }
        };
        apply(&mut s, set);
        assert_eq!(Schedule::build(&s, Family::V4).as_slice(), &[1, 2]);
        assert_eq!(Schedule::build(&s, Family::V6).as_slice(), &[4]);
        // Within the slack on a LAN: a tie.
        (rtt[4], rtt[5]) = (Some(100), Some(900));
        assert_eq!(fastest_set(&s, &rtt) >> 4, 0b11);
        // A member stays up to twice the tolerance (13.5 ms against 10 ms: out for a newcomer,
        // in for a member); beyond it, it leaves.
        rtt[2] = ms(13).map(|r| r + 500);
        assert_eq!(fastest_set(&s, &rtt) & 0b1111, 0b0110);
        apply(&mut s, 0b0010);
        assert_eq!(fastest_set(&s, &rtt) & 0b1111, 0b0010);
        // The fastest goes down: the set moves to the next, and until the agent has recomputed
        // it, a set with no eligible member falls back to every eligible backend.
        s.backends[1].as_mut().unwrap().up = false;
        assert_eq!(Schedule::build(&s, Family::V4).as_slice(), &[0, 2]);
        assert_eq!(fastest_set(&s, &rtt) & 0b1111, 0b0100);
        // Backends without a time never join (they have not been measured).
        rtt[2] = None;
        assert_eq!(fastest_set(&s, &rtt) & 0b1111, 0b0001);
    }

    #[test]
    fn down_and_drained_are_skipped() {
        let s = service(&[
            "add r.lan 10.0.0.1",
            "add r.lan 10.0.0.2 weight=0",
            "add r.lan 10.0.0.3",
            "down r.lan 10.0.0.1",
        ]);
        assert_eq!(Schedule::build(&s, Family::V4).as_slice(), &[2]);
    }

    #[test]
    fn scale_keeps_proportions_for_any_weights() {
        // Property: for arbitrary weights the schedule is at most SCHED_LEN long, every eligible
        // backend appears, and each share is within one turn of its exact share.
        let mut rng = crate::TestRng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..if cfg!(miri) { 20 } else { 2000 } {
            let mut w = [0u64; MAX_BACKENDS];
            for x in w.iter_mut() {
                let r = rng.next();
                *x = if r % 3 == 0 { 0 } else { r % 1_000_001 };
            }
            let orig = w;
            scale(&mut w);
            let tiny = orig
                .iter()
                .filter(|&&x| x > 0 && x * (SCHED_LEN as u64) < orig.iter().sum::<u64>())
                .count();
            let total: u64 = w.iter().sum();
            let otot: u64 = orig.iter().sum();
            assert!(total <= SCHED_LEN as u64);
            for i in 0..MAX_BACKENDS {
                assert_eq!(w[i] > 0, orig[i] > 0);
                if otot > 0 {
                    let exact = orig[i] as f64 * total as f64 / otot as f64;
                    assert!(
                        (w[i] as f64 - exact).abs() <= 1.0 + tiny as f64,
                        "{orig:?} -> {w:?}"
                    );
                }
            }
        }
    }
}
