//! The shared memory the agent publishes into, and the move to a table of another capacity.
//!
//! The agent owns its table and counters segment as a [`Shm`] (the table file's mapping and the
//! SysV segment, `table::file::Shared`; plain memory in tests), so that a reload with a new
//! `capacity` can replace them while it runs: [`Tables`] (the loop's closure over
//! `table::file::create`) makes an empty table of the new capacity, [`Agent::move_to`] puts
//! every service and its counters into it and publishes it whole, and only then is it renamed
//! over the path ([`Shm::commit`]) and the old one retired ([`Shm::retire`]): running programs
//! map the new one at their next lookup, as after a restart, and the old counters segment goes.
//!
//! **Slots and positions move only as far as they must**: a service whose slot is within the new
//! capacity keeps it, and a backend its position; the others take the first free ones, their
//! counters with them. A capacity that cannot hold what the table holds (after the reload's
//! removals) is refused, logged, and the table stays as it is.

use lbfo_core::atomic::AtomicU64;
use lbfo_core::shm::Layout;
use lbfo_core::{Capacity, CountersView, Service, Writer};

use super::Agent;

/// A table and its counters segment, as the agent writes them.
pub trait Shm: std::fmt::Debug {
    /// The table's words.
    fn table(&self) -> &[AtomicU64];
    /// The counters segment's words.
    fn counters(&self) -> &[AtomicU64];
    /// The table's layout, checked when the table was made or taken over.
    fn layout(&self) -> Layout;
    /// Puts a new table in place once the agent has filled it, so no reader ever finds it empty
    /// (nothing to do for a table that is in place). `Err` says why not.
    fn commit(&mut self, log: &mut Vec<String>) -> Result<(), String>;
    /// This table was replaced by a new one at its path: marks it retired, so readers map the
    /// path again, and marks its counters segment (which only it named) for removal.
    fn retire(&self, log: &mut Vec<String>);
    /// The agent exits: the table stays for the readers, but if it is no longer at its path
    /// (deleted, or replaced by something else) its counters segment is marked for removal,
    /// since no process can map the table again.
    fn leave(&self, log: &mut Vec<String>);
}

/// Makes an empty table of a capacity, not yet in place (the loop gives a closure over
/// `table::file::create`; tests, one over memory). `Err` is the reason, for the log.
pub struct Tables<'m>(pub Box<MakeFn<'m>>);

/// See [`Tables`].
pub type MakeFn<'m> = dyn FnMut(Capacity) -> Result<Box<dyn Shm + 'm>, String> + 'm;

impl std::fmt::Debug for Tables<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tables")
    }
}

/// A service's counters on their way to a new table: its new slot, its turn, and (new position,
/// count) per backend.
type Moved = (usize, u64, Vec<(usize, u64)>);

impl<'m> Agent<'m> {
    /// The writer of the table.
    pub(super) fn writer(&self) -> Option<Writer<'_>> {
        Writer::resume(self.shm.table(), self.shm.layout())
    }

    /// The counters, as the agent made or checked them (their header is not checked again:
    /// every local user can write it).
    pub(super) fn counters(&self) -> CountersView<'_> {
        CountersView::with_layout(self.shm.counters(), self.shm.layout())
    }

    /// The table's capacity.
    pub fn capacity(&self) -> Capacity {
        self.shm.layout().capacity().unwrap_or(Capacity::MAX)
    }

    /// Puts the table in place (a new one is renamed over the path only now that it is filled).
    /// `Err` is the reason.
    pub fn commit(&mut self) -> Result<(), String> {
        self.shm.commit(&mut self.log)
    }

    /// The agent exits (see [`Shm::leave`]).
    pub fn leave(&mut self) {
        self.shm.leave(&mut self.log);
    }

    /// Moves to a table of `capacity` if the table has another: a new one is made, filled with
    /// every service and its counters, put in place, and the old one retired. Logged under
    /// `what`; when it cannot be done (what the table holds does not fit, the new table cannot
    /// be made or put in place) the table stays as it was.
    pub(super) fn resize(&mut self, capacity: Capacity, what: &str) {
        let old = self.capacity();
        if capacity == old {
            return;
        }
        let keep = |why: String| format!("{what}: capacity {capacity}: {why}; keeping {old}");
        if let Err(why) = self.fits(capacity) {
            self.log(keep(why));
            return;
        }
        let Some(tables) = self.tables.as_mut() else {
            self.log(keep("no new table can be made here".to_owned()));
            return;
        };
        let new = match (tables.0)(capacity) {
            Ok(new) => new,
            Err(why) => {
                self.log(keep(why));
                return;
            }
        };
        let replaced = self.move_to(new);
        match self.shm.commit(&mut self.log) {
            Ok(()) => {
                replaced.retire(&mut self.log);
                self.log(format!(
                    "{what}: capacity {capacity} (was {old}): the new table is in place"
                ));
            }
            Err(why) => {
                self.log(keep(why));
                self.move_to(replaced);
            }
        }
    }

    /// Whether everything the table holds fits `capacity`; `Err` says what does not.
    fn fits(&self, capacity: Capacity) -> Result<(), String> {
        let services = self.services().count();
        if services > capacity.services() {
            return Err(format!("the table holds {services} services"));
        }
        match self
            .services()
            .find(|(_, s)| s.iter().count() > capacity.backends())
        {
            Some((_, s)) => Err(format!("{} has {} backends", s.name, s.iter().count())),
            None => Ok(()),
        }
    }

    /// Puts every service, and its counters, into `new` (which must have room: see
    /// [`Agent::fits`]) and publishes it whole; returns the table it replaces.
    fn move_to(&mut self, new: Box<dyn Shm + 'm>) -> Box<dyn Shm + 'm> {
        self.publish();
        let capacity = new.layout().capacity().unwrap_or(Capacity::MAX);
        let mut slots: Vec<Option<Service>> = vec![None; capacity.services()];
        let mut moved: Vec<Moved> = Vec::new();
        // Those that keep their slot first, so no other takes it.
        let mut services: Vec<(usize, Service)> = self.services().map(|(i, s)| (i, *s)).collect();
        services.sort_by_key(|&(slot, _)| slot >= capacity.services());
        let counters = self.counters();
        for (slot, service) in services {
            let to = Some(slot)
                .filter(|&s| slots.get(s).is_some_and(Option::is_none))
                .or_else(|| slots.iter().position(Option::is_none));
            let Some(to) = to else {
                continue;
            };
            let (service, positions) = within(service, capacity.backends());
            let counts = positions
                .iter()
                .map(|&(from, to)| (to, counters.count(slot, from)))
                .collect();
            moved.push((to, counters.turn(slot), counts));
            slots[to] = Some(service);
        }
        let old = std::mem::replace(&mut self.shm, new);
        self.slots = slots;
        self.index_names();
        self.shape += 1;
        let counters = self.counters();
        for (slot, turn, counts) in moved {
            counters.restore(slot, turn, counts.into_iter());
        }
        self.guard.moved();
        self.pending
            .slots
            .extend((0..self.slots.len()).map(|s| (s, ())));
        self.pending.index = true;
        self.publish();
        if let Some(w) = self.writer() {
            w.heartbeat(self.now.wall_ms);
            w.set_tampered(self.guard.counts, self.guard.header);
        }
        self.changes += 1;
        old
    }
}

/// `service` with every backend at a position below `backends`: those there stay, the others
/// take the first free ones (there must be room). Returns it with the (from, to) positions of its
/// backends.
fn within(service: Service, backends: usize) -> (Service, Vec<(usize, usize)>) {
    let mut out = Service {
        backends: [None; lbfo_core::MAX_BACKENDS],
        ..service
    };
    let mut positions = Vec::new();
    let (stay, go): (Vec<_>, Vec<_>) = service.iter().partition(|&(pos, _)| pos < backends);
    for (from, b) in stay.into_iter().chain(go) {
        let to = Some(from)
            .filter(|&p| p < backends && out.backends[p].is_none())
            .or_else(|| out.backends[..backends].iter().position(Option::is_none));
        if let Some(to) = to {
            out.backends[to] = Some(*b);
            positions.push((from, to));
        }
    }
    (out, positions)
}
