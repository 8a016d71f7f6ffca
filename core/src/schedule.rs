//! Turning a service's backends into a *schedule*: the agent's half of every policy.
//!
//! The agent computes, per address family, a short sequence of backend positions whenever a
//! service changes; a lookup then takes the next turn from a shared counter and reads
//! `schedule[turn % len]`. That keeps the lookup path to a handful of loads and one atomic add,
//! makes `roundrobin` exactly even, and makes `weighted` proportional over *every* window of one
//! schedule length (smooth weighted round-robin, as nginx interleaves: 1:3 gives B B A B, not
//! A B B B). `leastused` schedules list the eligible backends; the lookup compares their counters.

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
        for (i, b) in service.iter() {
            if b.eligible() && Family::of(&b.addr) == family {
                if let (Some(wi), Some(pi)) = (w.get_mut(i), prio.get_mut(i)) {
                    (*wi, *pi) = (u64::from(b.weight), b.prio);
                    best = best.min(b.prio);
                }
            }
        }
        match service.policy {
            Policy::RoundRobin | Policy::LeastUsed => (0..MAX_BACKENDS)
                .filter(|&i| w[i] > 0)
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
