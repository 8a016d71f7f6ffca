//! The five policies a service can pick its backend by: their names in the command language and
//! their codes in the shared table.
//!
//! A leaf: it depends on nothing else in the crate, so the parser ([`crate::cmd`]), the table
//! ([`crate::table`]) and the schedules ([`crate::schedule`]) can all name a policy without
//! depending on each other.

use core::fmt;

/// How a service picks its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The up backend(s) with the lowest priority value; ties take turns.
    Failover,
    /// Every up backend in turn.
    RoundRobin,
    /// Up backends in proportion to their weights, interleaved smoothly.
    Weighted,
    /// The up backend with the lowest usage counter divided by weight.
    LeastUsed,
    /// The up backend(s) with the lowest smoothed check round-trip time, as this machine
    /// measures it; near-ties take turns (see `schedule::fastest_set`).
    Fastest,
}

impl Policy {
    /// Every policy, in the order of their codes.
    pub const ALL: [Policy; 5] = [
        Policy::Failover,
        Policy::RoundRobin,
        Policy::Weighted,
        Policy::LeastUsed,
        Policy::Fastest,
    ];

    /// The policy's name in the command language.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Failover => "failover",
            Policy::RoundRobin => "roundrobin",
            Policy::Weighted => "weighted",
            Policy::LeastUsed => "leastused",
            Policy::Fastest => "fastest",
        }
    }

    /// Parses a policy name.
    pub fn from_name(name: &str) -> Option<Policy> {
        Some(match name {
            "failover" => Policy::Failover,
            "roundrobin" => Policy::RoundRobin,
            "weighted" => Policy::Weighted,
            "leastused" => Policy::LeastUsed,
            "fastest" => Policy::Fastest,
            _ => return None,
        })
    }

    /// The policy's code: on the cluster's wire, and in the shared table (where `fastest` is
    /// written as roundrobin's code with a flag beside it: see `shm`).
    pub fn code(self) -> u8 {
        match self {
            Policy::Failover => 0,
            Policy::RoundRobin => 1,
            Policy::Weighted => 2,
            Policy::LeastUsed => 3,
            Policy::Fastest => 4,
        }
    }

    /// The policy for a code; `None` for an unknown code.
    pub fn from_code(code: u8) -> Option<Policy> {
        Some(match code {
            0 => Policy::Failover,
            1 => Policy::RoundRobin,
            2 => Policy::Weighted,
            3 => Policy::LeastUsed,
            4 => Policy::Fastest,
            _ => return None,
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for (i, p) in Policy::ALL.into_iter().enumerate() {
            assert_eq!(Policy::from_name(p.name()), Some(p));
            assert_eq!(usize::from(p.code()), i);
            assert_eq!(Policy::from_code(p.code()), Some(p));
        }
        assert_eq!(Policy::from_code(5), None);
        assert_eq!(Policy::from_name("Failover"), None);
    }
}
