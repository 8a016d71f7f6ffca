//! The service table as the agent holds it: services, their backends and policies.
//!
//! [`Table`] works over a slice of slots the caller provides (the agent allocates it once), so
//! this module allocates nothing. **Slot numbers are stable**: a service keeps its slot and a
//! backend its position for as long as they exist, because the usage counters that every lookup
//! bumps are addressed by (service slot, backend position). [`Table::apply`] returns a [`Change`]
//! saying which slot to republish and which counters restart from zero.

use core::fmt;
use core::net::IpAddr;

use crate::capacity::Capacity;
pub use crate::capacity::{MAX_BACKENDS, MAX_SERVICES};
use crate::cmd::{Attr, Command};
use crate::name::Name;
use crate::policy::Policy;

/// Default weight of a backend added without `weight=`.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Default priority of a backend added without `prio=`.
pub const DEFAULT_PRIO: u32 = 1;

/// One backend of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Where clients are sent.
    pub addr: IpAddr,
    /// Share under `weighted` and `leastused`; 0 drains the backend under every policy.
    pub weight: u32,
    /// Rank under `failover`; lower wins.
    pub prio: u32,
    /// Usage count at which the agent removes the backend; 0 for none.
    pub limit: u64,
    /// In rotation.
    pub up: bool,
    /// In this machine's fastest set (`fastest`): set by the agent from its own check
    /// round-trip times, kept by every command, never replicated.
    pub fast: bool,
}

impl Backend {
    /// Whether lookups may return this backend.
    pub fn eligible(&self) -> bool {
        self.up && self.weight > 0
    }
}

/// A service: a name, a policy and fixed backend positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The name programs resolve.
    pub name: Name,
    /// How a backend is picked.
    pub policy: Policy,
    /// Backends by stable position; `None` is a free position.
    pub backends: [Option<Backend>; MAX_BACKENDS],
}

impl Service {
    /// A service with no backends, under the default policy (`roundrobin`).
    pub fn new(name: Name) -> Service {
        Service {
            name,
            policy: Policy::RoundRobin,
            backends: [None; MAX_BACKENDS],
        }
    }

    /// The position of the backend with this address.
    pub fn position(&self, addr: IpAddr) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.is_some_and(|b| b.addr == addr))
    }

    /// The backends with their positions.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Backend)> {
        self.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i, b)))
    }
}

/// Why a command could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// Every slot is taken; carries how many there are (the `capacity` setting's services).
    TableFull(usize),
    /// The service has as many backends as it may; carries that number (the `capacity`
    /// setting's backends).
    ServiceFull(usize),
    /// No such service.
    NoService,
    /// The service has no backend with that address.
    NoBackend,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::TableFull(n) => write!(
                f,
                "table full: `capacity` allows {n} services (raise it in the config file)"
            ),
            ApplyError::ServiceFull(n) => write!(
                f,
                "service full: `capacity` allows {n} backends per service (raise it in the config file)"
            ),
            ApplyError::NoService => f.write_str("no such service"),
            ApplyError::NoBackend => f.write_str("service has no backend with that address"),
        }
    }
}

/// What applying a command changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The service slot concerned.
    pub slot: usize,
    /// The slot's record changed and must be republished.
    pub record: bool,
    /// A service appeared or vanished: the name index must be rebuilt.
    pub index: bool,
    /// Bit `i` set: backend position `i`'s usage counter restarts from zero.
    pub zero: u16,
    /// The service's turn counter restarts from zero too.
    pub zero_ticket: bool,
}

/// The table over caller-provided slots.
#[derive(Debug)]
pub struct Table<'a> {
    slots: &'a mut [Option<Service>],
    /// Backend positions a service may use, from the first.
    backends: usize,
}

impl<'a> Table<'a> {
    /// A table over `slots`, one per service it may hold, each service with up to
    /// [`MAX_BACKENDS`] backends.
    pub fn new(slots: &'a mut [Option<Service>]) -> Table<'a> {
        Table::with_capacity(slots, Capacity::MAX)
    }

    /// A table of `capacity`: over the first `capacity.services()` of `slots` (the caller gives
    /// that many: the shared table has no others), each service with up to
    /// `capacity.backends()` backends.
    pub fn with_capacity(slots: &'a mut [Option<Service>], capacity: Capacity) -> Table<'a> {
        let n = slots.len().min(capacity.services());
        Table {
            slots: &mut slots[..n],
            backends: capacity.backends(),
        }
    }

    /// The slot of the service with this name.
    pub fn find(&self, name: &Name) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.name == *name))
    }

    /// The service in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Service> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Every service with its slot.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Service)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// How many services there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Removes every service.
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// Applies a command. On error nothing changed.
    /// Finding the service walks every slot: a caller that keeps its own index of names uses
    /// [`Table::apply_at`].
    pub fn apply(&mut self, cmd: &Command) -> Result<Change, ApplyError> {
        let found = self.find(cmd.service());
        self.apply_at(found, cmd)
    }

    /// [`Table::apply`] for a caller that keeps its own index of names: `found` is the slot that
    /// holds the command's service, or `None` if no slot does (a new service is then made
    /// without walking every slot to look for it). A wrong `found` would make a second slot of
    /// one name: debug builds check it against [`Table::find`].
    pub fn apply_at(&mut self, found: Option<usize>, cmd: &Command) -> Result<Change, ApplyError> {
        let name = cmd.service();
        debug_assert_eq!(found, self.find(name), "the caller's index is out of date");
        let unchanged = |slot| Change {
            slot,
            record: false,
            index: false,
            zero: 0,
            zero_ticket: false,
        };
        match *cmd {
            Command::Add {
                addr,
                weight,
                prio,
                limit,
                ..
            } => {
                let (slot, created) = match found {
                    Some(slot) => (slot, false),
                    None => (self.create(name)?, true),
                };
                let backends = self.backends;
                let service = self.slot_mut(slot)?;
                let (pos, new) = match service.position(addr) {
                    Some(pos) => (pos, false),
                    None => {
                        let free = service
                            .backends
                            .iter()
                            .take(backends)
                            .position(Option::is_none);
                        let Some(pos) = free else {
                            if created {
                                self.slots[slot] = None;
                            }
                            return Err(ApplyError::ServiceFull(backends));
                        };
                        (pos, true)
                    }
                };
                let old = service.backends[pos];
                let base = old.unwrap_or(Backend {
                    addr,
                    weight: DEFAULT_WEIGHT,
                    prio: DEFAULT_PRIO,
                    limit: 0,
                    up: true,
                    fast: false,
                });
                let b = Backend {
                    weight: weight.unwrap_or(base.weight),
                    prio: prio.unwrap_or(base.prio),
                    limit: limit.unwrap_or(base.limit),
                    ..base
                };
                service.backends[pos] = Some(b);
                Ok(Change {
                    slot,
                    record: old != Some(b),
                    index: created,
                    zero: if new { 1 << pos } else { 0 },
                    zero_ticket: created,
                })
            }
            Command::Policy { policy, .. } => {
                let (slot, created) = match found {
                    Some(slot) => (slot, false),
                    None => (self.create(name)?, true),
                };
                let service = self.slot_mut(slot)?;
                let record = service.policy != policy;
                service.policy = policy;
                Ok(Change {
                    slot,
                    record: record || created,
                    index: created,
                    zero: 0,
                    zero_ticket: created,
                })
            }
            Command::Del { addr: None, .. } => {
                let slot = found.ok_or(ApplyError::NoService)?;
                self.slots[slot] = None;
                Ok(Change {
                    slot,
                    record: true,
                    index: true,
                    zero: u16::MAX,
                    zero_ticket: true,
                })
            }
            Command::Del {
                addr: Some(addr), ..
            } => {
                let slot = found.ok_or(ApplyError::NoService)?;
                let service = self.slot_mut(slot)?;
                let pos = service.position(addr).ok_or(ApplyError::NoBackend)?;
                service.backends[pos] = None;
                Ok(Change {
                    slot,
                    record: true,
                    index: false,
                    zero: 1 << pos,
                    zero_ticket: false,
                })
            }
            Command::SetUp { addr, up, .. } => self.update(found, addr, |b| b.up = up),
            Command::Set { addr, attr, .. } => self.update(found, addr, |b| match attr {
                Attr::Weight(w) => b.weight = w,
                Attr::Prio(p) => b.prio = p,
                Attr::Limit(l) => b.limit = l,
            }),
            Command::Reset { .. } => {
                let slot = found.ok_or(ApplyError::NoService)?;
                Ok(Change {
                    zero: u16::MAX,
                    zero_ticket: true,
                    ..unchanged(slot)
                })
            }
        }
    }

    fn create(&mut self, name: &Name) -> Result<usize, ApplyError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(ApplyError::TableFull(self.slots.len()))?;
        self.slots[slot] = Some(Service::new(*name));
        Ok(slot)
    }

    fn slot_mut(&mut self, slot: usize) -> Result<&mut Service, ApplyError> {
        self.slots
            .get_mut(slot)
            .and_then(Option::as_mut)
            .ok_or(ApplyError::NoService)
    }

    fn update(
        &mut self,
        found: Option<usize>,
        addr: IpAddr,
        f: impl FnOnce(&mut Backend),
    ) -> Result<Change, ApplyError> {
        let slot = found.ok_or(ApplyError::NoService)?;
        let service = self.slot_mut(slot)?;
        let pos = service.position(addr).ok_or(ApplyError::NoBackend)?;
        let b = service.backends[pos]
            .as_mut()
            .ok_or(ApplyError::NoBackend)?;
        let before = *b;
        f(b);
        Ok(Change {
            slot,
            record: before != *b,
            index: false,
            zero: 0,
            zero_ticket: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::{parse_line, Line};
    use std::string::ToString;
    use std::vec;

    fn cmd(line: &str) -> Command {
        match parse_line(line) {
            Ok(Some(Line::Command(c))) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn slots_stay_put() {
        let mut slots = vec![None; 4];
        let mut t = Table::new(&mut slots);
        let c = t.apply(&cmd("add a.lan 10.0.0.1")).unwrap();
        assert_eq!((c.slot, c.index, c.zero), (0, true, 1));
        t.apply(&cmd("add b.lan 10.0.0.1")).unwrap();
        let c = t.apply(&cmd("add a.lan 10.0.0.2 weight=3")).unwrap();
        assert_eq!((c.slot, c.index, c.zero), (0, false, 2));
        t.apply(&cmd("del a.lan 10.0.0.1")).unwrap();
        let c = t.apply(&cmd("add a.lan 10.0.0.3")).unwrap();
        assert_eq!(
            c.zero, 1,
            "the freed position is reused and its counter restarts"
        );
        let s = t.get(0).unwrap();
        assert_eq!(s.position("10.0.0.2".parse().unwrap()), Some(1));
        t.apply(&cmd("del a.lan")).unwrap();
        assert_eq!(t.find(&cmd("reset b.lan").service().clone()), Some(1));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn add_updates_only_given_options() {
        let mut slots = vec![None; 2];
        let mut t = Table::new(&mut slots);
        t.apply(&cmd("add a.lan 10.0.0.1 weight=5 prio=2 limit=9"))
            .unwrap();
        t.apply(&cmd("down a.lan 10.0.0.1")).unwrap();
        let c = t.apply(&cmd("add a.lan 10.0.0.1 prio=7")).unwrap();
        assert!(c.record && c.zero == 0);
        let b = t.get(0).unwrap().backends[0].unwrap();
        assert_eq!((b.weight, b.prio, b.limit, b.up), (5, 7, 9, false));
        let c = t.apply(&cmd("add a.lan 10.0.0.1 prio=7")).unwrap();
        assert!(!c.record, "no-op adds change nothing");
    }

    #[test]
    fn errors_leave_table_alone() {
        let mut slots = vec![None; 1];
        let mut t = Table::new(&mut slots);
        assert_eq!(
            t.apply(&cmd("down a.lan 10.0.0.1")),
            Err(ApplyError::NoService)
        );
        t.apply(&cmd("add a.lan 10.0.0.1")).unwrap();
        assert_eq!(
            t.apply(&cmd("up a.lan 10.0.0.2")),
            Err(ApplyError::NoBackend)
        );
        assert_eq!(
            t.apply(&cmd("add b.lan 10.0.0.1")),
            Err(ApplyError::TableFull(1))
        );
        for i in 2..=MAX_BACKENDS {
            t.apply(&cmd(&std::format!("add a.lan 10.0.0.{i}")))
                .unwrap();
        }
        assert_eq!(
            t.apply(&cmd("add a.lan 10.0.1.1")),
            Err(ApplyError::ServiceFull(MAX_BACKENDS))
        );
        assert_eq!(t.get(0).unwrap().iter().count(), MAX_BACKENDS);
    }

    #[test]
    fn capacity_bounds_services_and_backends_and_says_so() {
        let mut slots = vec![None; 4];
        let mut t = Table::with_capacity(&mut slots, Capacity::new(2, 3).unwrap());
        for line in ["add a.lan 10.0.0.1", "add a.lan 10.0.0.2", "add b.lan ::1"] {
            t.apply(&cmd(line)).unwrap();
        }
        let e = t.apply(&cmd("add c.lan 10.0.0.1")).unwrap_err();
        assert_eq!(e, ApplyError::TableFull(2));
        assert_eq!(
            e.to_string(),
            "table full: `capacity` allows 2 services (raise it in the config file)"
        );
        t.apply(&cmd("add a.lan 10.0.0.3")).unwrap();
        let e = t.apply(&cmd("add a.lan 10.0.0.4")).unwrap_err();
        assert_eq!(e, ApplyError::ServiceFull(3));
        assert_eq!(
            e.to_string(),
            "service full: `capacity` allows 3 backends per service (raise it in the config file)"
        );
        assert!(t.apply(&cmd("add a.lan 10.0.0.3 weight=2")).unwrap().record);
        t.apply(&cmd("del a.lan 10.0.0.1")).unwrap();
        assert_eq!(t.apply(&cmd("add a.lan 10.0.0.4")).unwrap().zero, 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn full_service_is_not_created_empty() {
        let mut slots = vec![None; 2];
        let mut t = Table::new(&mut slots);
        assert!(t.apply(&cmd("policy a.lan weighted")).unwrap().index);
        assert_eq!(t.get(0).unwrap().policy, Policy::Weighted);
        assert_eq!(t.apply(&cmd("reset a.lan")).unwrap().zero, u16::MAX);
    }
}
