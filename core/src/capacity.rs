//! How big a table is: the `capacity` setting and the limits it may range over.
//!
//! A leaf, like [`crate::policy`]: the parser reads a capacity, the table enforces it and the
//! shared layout ([`crate::shm::Layout`]) is sized by it, without those depending on each other.
//! [`MAX_SERVICES`] and [`MAX_BACKENDS`] bound the setting; they size nothing by themselves.

use core::fmt;

/// The most services a table may be configured for: ample for a site's internal names, and small
/// enough that a slot number fits the index's 32-bit field and a full table stays a few MiB.
pub const MAX_SERVICES: usize = 4096;
/// The most backends a service may be configured for: enough for any pool one name should spread
/// over, and small enough that a lookup's scan of one service stays within a few cache lines and
/// a position fits the schedules' bytes.
pub const MAX_BACKENDS: usize = 16;

/// A table's capacity: how many services it holds, and how many backends each. Always within
/// 1..=[`MAX_SERVICES`] and 1..=[`MAX_BACKENDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    services: u16,
    backends: u8,
}

impl Capacity {
    /// The capacity without a `capacity` line: room for a router's or a small site's names in
    /// a table small enough for a router's RAM (see `man lbfo.conf`).
    pub const DEFAULT: Capacity = Capacity {
        services: 64,
        backends: 8,
    };

    /// The largest capacity: [`MAX_SERVICES`] × [`MAX_BACKENDS`].
    pub const MAX: Capacity = Capacity {
        services: MAX_SERVICES as u16,
        backends: MAX_BACKENDS as u8,
    };

    /// `services` × `backends`, if both are within their limits.
    pub const fn new(services: usize, backends: usize) -> Option<Capacity> {
        if services == 0 || services > MAX_SERVICES || backends == 0 || backends > MAX_BACKENDS {
            return None;
        }
        Some(Capacity {
            services: services as u16,
            backends: backends as u8,
        })
    }

    /// Services the table holds.
    pub const fn services(&self) -> usize {
        self.services as usize
    }

    /// Backends each service holds.
    pub const fn backends(&self) -> usize {
        self.backends as usize
    }

    /// Whether this capacity holds everything `other` does.
    pub fn holds(&self, other: Capacity) -> bool {
        self.services >= other.services && self.backends >= other.backends
    }
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity::DEFAULT
    }
}

impl fmt::Display for Capacity {
    /// `64 services of 8 backends each`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.services.fmt(f)?;
        f.write_str(" services of ")?;
        self.backends.fmt(f)?;
        f.write_str(" backends each")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn limits_and_text() {
        assert_eq!(Capacity::new(0, 1), None);
        assert_eq!(Capacity::new(1, 0), None);
        assert_eq!(Capacity::new(MAX_SERVICES + 1, 1), None);
        assert_eq!(Capacity::new(1, MAX_BACKENDS + 1), None);
        assert_eq!(
            Capacity::new(MAX_SERVICES, MAX_BACKENDS),
            Some(Capacity::MAX)
        );
        let c = Capacity::new(3, 2).unwrap();
        assert_eq!((c.services(), c.backends()), (3, 2));
        assert!(Capacity::MAX.holds(c) && !c.holds(Capacity::DEFAULT));
        assert_eq!(
            Capacity::DEFAULT.to_string(),
            "64 services of 8 backends each"
        );
        assert!(Capacity::MAX.holds(Capacity::DEFAULT));
    }
}
