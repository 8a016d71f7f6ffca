//! When a node sends its digest: a Trickle timer (RFC 6206), so an idle cluster is quiet and a
//! disagreeing one repairs at once.
//!
//! Each interval has a length `I` between [`IMIN_MS`] and [`IMAX_MS`] and a send time `t` drawn
//! from its second half. At `t` the node sends its digest unless it heard [`K`] digests equal to
//! its own since the interval began (suppression); then the next interval starts where this one
//! ends, twice as long, up to [`IMAX_MS`]. Anything inconsistent ([`Trickle::reset`]: a digest
//! that differs, entries that changed the replica, a command) starts an [`IMIN_MS`] interval at
//! once. In a quiet cluster every node sits at [`IMAX_MS`] and about [`K`] digests go out per
//! interval in all, whatever the number of nodes.
//!
//! One wake-up per interval: the next interval is laid out when `t` fires, and digests heard
//! between `t` and the interval's end count for no interval (they would count for the old one,
//! whose decision is made). Pure: times are passed in, the randomness is the caller's.

/// The shortest interval: right after something inconsistent, a digest goes out within
/// `IMIN_MS`, so a lost command is noticed and repaired within one short round.
pub const IMIN_MS: u64 = 125;
/// The longest interval: an idle cluster sends about one digest per `IMAX_MS` in all, and a node
/// back from a partition hears a digest (or sends its own) within about that.
pub const IMAX_MS: u64 = 1000;
/// The longest interval of a node that hears no peer at all ([`lonely_ms`]): cut off (a cable,
/// a partition around it) it keeps calling, so that when the network comes back the first
/// digest crosses within this, not within [`IMAX_MS`], and it catches up at once. A node that
/// knows no peer (alone by design) is not lonely and stays quiet.
pub const LONELY_IMAX_MS: u64 = 250;

/// How long a node with `peers` peers must hear none of them to count as cut off: three times
/// the longest the cluster goes quiet in health (an [`IMAX_MS`] interval's digest, or a
/// keep-alive, which each of the `peers` sends at least once per `alive_ms`), so a quiet cluster
/// does not set it off.
pub fn lonely_ms(peers: usize, alive_ms: u64) -> u64 {
    (3 * IMAX_MS).max(3 * alive_ms / peers.max(1) as u64)
}

/// The redundancy constant: a node that heard its own digest this many times in the interval
/// stays quiet.
pub const K: u32 = 1;

/// One node's timer.
#[derive(Debug, Clone)]
pub struct Trickle {
    /// Start and length of the interval whose `t` is pending.
    start: u64,
    len: u64,
    t: u64,
    /// Consistent digests heard since `start`.
    heard: u32,
}

impl Trickle {
    /// A timer starting an [`IMIN_MS`] interval at `now`; `random` is any random number.
    pub fn new(now: u64, random: u64) -> Trickle {
        let mut t = Trickle {
            start: now,
            len: IMIN_MS,
            t: now,
            heard: 0,
        };
        t.reset_to(now, random);
        t
    }

    fn reset_to(&mut self, now: u64, random: u64) {
        self.start = now;
        self.len = IMIN_MS;
        self.pick(random);
    }

    fn pick(&mut self, random: u64) {
        let half = self.len / 2;
        self.t = self.start + half + random % half.max(1);
        self.heard = 0;
    }

    /// A digest equal to ours was heard at `now`.
    pub fn consistent(&mut self, now: u64) {
        if now >= self.start {
            self.heard = self.heard.saturating_add(1);
        }
    }

    /// Something inconsistent at `now`: back to the shortest interval, unless already in one.
    pub fn reset(&mut self, now: u64, random: u64) {
        if self.len > IMIN_MS {
            self.reset_to(now, random);
        }
    }

    /// This node's own state changed at `now`: as [`Trickle::reset`], and the digests heard so
    /// far in the interval, which agreed with the old state, no longer suppress the next one.
    pub fn changed(&mut self, now: u64, random: u64) {
        self.reset(now, random);
        self.heard = 0;
    }

    /// When [`Trickle::fire`] is due.
    pub fn deadline(&self) -> u64 {
        self.t
    }

    /// At or after the deadline: whether to send now; lays out the next interval, twice as long
    /// up to `max` ([`IMAX_MS`], or less: see [`LONELY_IMAX_MS`]).
    pub fn fire(&mut self, now: u64, random: u64, max: u64) -> bool {
        if now < self.t {
            return false;
        }
        let send = self.heard < K;
        self.start += self.len;
        self.len = (self.len * 2).min(max.clamp(IMIN_MS, IMAX_MS));
        // A node that slept past whole intervals starts the next one now.
        if self.start + self.len <= now {
            self.start = now;
        }
        self.pick(random);
        send
    }

    /// The length of the pending interval (for tests and `status`).
    pub fn interval(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_double_to_the_maximum_and_a_reset_starts_over() {
        let mut t = Trickle::new(0, 7);
        let mut lens = Vec::new();
        let mut sent = 0;
        for r in 0..10 {
            let due = t.deadline();
            assert!(due >= t.start + t.len / 2 && due < t.start + t.len);
            sent += u32::from(t.fire(due, r * 31, IMAX_MS));
            lens.push(t.interval());
        }
        assert_eq!(&lens[..4], &[250, 500, 1000, 1000]);
        assert_eq!(sent, 10, "heard nothing: sends every interval");
        let now = t.deadline() - 1;
        t.reset(now, 3);
        assert_eq!(t.interval(), IMIN_MS);
        assert!(t.deadline() >= now + IMIN_MS / 2 && t.deadline() < now + IMIN_MS);
        // In the shortest interval already: a reset changes nothing.
        let due = t.deadline();
        t.reset(now + 1, 99);
        assert_eq!(t.deadline(), due);
    }

    #[test]
    fn a_change_of_our_own_is_not_suppressed_by_digests_of_the_old_state() {
        let mut t = Trickle::new(0, 5);
        let due = t.deadline();
        t.consistent(1);
        t.reset(2, 1);
        assert!(!t.fire(due, 1, IMAX_MS), "a reset keeps what was heard");
        let mut t = Trickle::new(0, 5);
        let due = t.deadline();
        t.consistent(1);
        t.changed(2, 1);
        assert_eq!(t.deadline(), due, "already in the shortest interval");
        assert!(t.fire(due, 1, IMAX_MS));
    }

    #[test]
    fn a_node_that_heard_its_digest_k_times_stays_quiet() {
        let mut t = Trickle::new(0, 5);
        let due = t.deadline();
        for _ in 0..K {
            t.consistent(due - 1);
        }
        assert!(!t.fire(due, 1, IMAX_MS));
        // Heard after its send time: counts for no interval.
        let due = t.deadline();
        t.consistent(t.start - 1);
        assert!(t.fire(due, 2, IMAX_MS));
    }
}
