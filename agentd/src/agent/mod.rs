//! The agent's state and duties: apply commands, publish the table, heartbeat, usage limits.
//!
//! [`Agent`] owns the authoritative [`Table`] slots and the shared memory it writes ([`Shm`]: the
//! table and its counters segment), but no file descriptor and no clock: the loop (`serve`) hands it FIFO pieces, datagrams, reloaded
//! configs and the time ([`Now`]); [`Agent::next_deadline`] says when it next needs to be called. Tests drive it
//! with a fake clock over plain memory.
//!
//! **Publishing is batched**: commands change the slots and note what changed; [`Agent::publish`]
//! then writes each changed record once, zeroes the counters the changes ask for (after the new
//! record is visible, so no lookup of the old backend is counted against a new one), and rebuilds
//! the name index if a service appeared or vanished. The loop publishes after every wake-up, so a
//! command is visible to the very next lookup once its batch is done.
//!
//! **In a cluster** (a [`Cluster`] given to [`Agent::start_with`]) the slots are a materialised view
//! of the replica: commands from the FIFO, the config and the usage limits go to the replica
//! (which stamps them and queues them for the group), entries from peers are merged into it, and
//! every service whose replicated state changed is reconciled into the slots with ordinary table
//! commands, so slots and backend positions (and with them the counters) stay put. `reset` stays
//! local. A restarted agent that adopted its table keeps showing it until it has caught up (see
//! `cluster::CATCH_UP_MS`), so a restart never flashes the config's older state.
//!
//! **Counters are never reset by a load or reload**: `reset` lines of the config are skipped, and
//! `add` of an existing backend keeps its position and so its counter.
//!
//! The rooms: this file holds the agent and its rhythm (publish, tick, deadlines); `start.rs`
//! starting over a table (adopt, restore the state file, apply the config); `commands.rs` how a
//! command gets in (FIFO lines, `command`, `apply`); `reload.rs` the config on SIGHUP;
//! `reconcile.rs` the cluster side (datagrams, the slots brought to the replica); `tables.rs` the
//! shared memory and the move to a table of another capacity on reload; `checks.rs`
//! usage limits and health-check verdicts; `counters.rs` the usage counters' guard (what a local
//! user writes into the segment is put back); `state.rs` what the state file saves; `tests.rs`.

mod checks;
mod commands;
mod counters;
mod reconcile;
mod reload;
mod start;
mod state;
mod tables;
#[cfg(test)]
mod tests;

pub use tables::{MakeFn, Shm, Tables};

use lbfo_core::{Service, Table};
use std::path::PathBuf;

use crate::cluster::Cluster;
use crate::control::config::Config;
use crate::table::export::Export;
use crate::vecmap::{VecMap, VecSet};

/// How often the heartbeat is written; `status` calls an agent dead after three missed beats.
pub const HEARTBEAT_MS: u64 = 1000;
/// A turn this close to the heartbeat's time writes it early: in a quiet cluster the agent wakes
/// a few times a second anyway (digests, its Trickle timer), and the heartbeat rides on one of
/// those wake-ups rather than making its own.
pub const HEARTBEAT_EARLY_MS: u64 = HEARTBEAT_MS / 2;
/// How often usage limits are checked (only while some backend has a limit).
pub const LIMIT_CHECK_MS: u64 = 100;
/// How often at most the cluster's state (peers, drops) is written for `status`, and only when it
/// changed. It has no deadline of its own: it is written at the next wake-up once due (the
/// heartbeat wakes the agent every second), so an idle agent wakes no more for it.
pub const CLUSTER_STATUS_MS: u64 = 1000;

/// The time, as the loop read it: monotonic for deadlines, wall clock for the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a monotonic clock.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

/// Writes the state file (the loop gives a closure over `state::save`; tests, one over memory).
pub struct Saver<'m>(pub Box<SaveFn<'m>>);

/// Writes the state's bytes; `Err` is the reason, for the log.
pub type SaveFn<'m> = dyn FnMut(&[u8]) -> Result<(), String> + 'm;

impl std::fmt::Debug for Saver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Saver")
    }
}

/// What the next publish must write.
#[derive(Debug, Default)]
struct Pending {
    slots: VecSet<usize>,
    zero: Vec<(usize, u16, bool)>,
    index: bool,
}

/// The running agent.
#[derive(Debug)]
pub struct Agent<'m> {
    slots: Vec<Option<Service>>,
    /// The slot of every service in `slots`, by name: kept with every change that makes or
    /// removes a service, so that nothing looks a service up by walking the slots (a joiner
    /// taking 4,096 services did that three times for each).
    names: VecMap<String, usize>,
    /// The table and counters segment it writes.
    shm: Box<dyn Shm + 'm>,
    /// Makes a table of another capacity when a reload asks for one.
    tables: Option<Tables<'m>>,
    config_path: PathBuf,
    config: Config,
    pending: Pending,
    fifo_lines: u64,
    has_limits: bool,
    /// `has_limits` was worked out from every slot at least once.
    limits_known: bool,
    /// Moves when a service appears or vanishes, a policy changes or the slots are rebuilt:
    /// what the list of `fastest` slots is kept against.
    shape: u64,
    next_heartbeat: u64,
    next_limit_check: u64,
    /// The dnsmasq export, with `hosts-file` in the config.
    export: Option<Export>,
    log: Vec<String>,
    /// Boxed: the cluster's state is large (its drop counters inline), and the agent is moved
    /// and held on the stack.
    cluster: Option<Box<Cluster>>,
    now: Now,
    next_cluster_status: u64,
    /// `Cluster::events` when the cluster's state was last handed out for `status`.
    status_events: Option<u64>,
    held: bool,
    /// Something changed since the state was last handed out by [`Agent::take_state`].
    state_dirty: bool,
    /// Counts changes to the slots and reloads: the health checker re-reads its targets when it
    /// moves.
    changes: u64,
    saver: Option<Saver<'m>>,
    save_failing: bool,
    /// The slots of `fastest` services, as of `shape` (so neither a turn with a new round-trip
    /// time nor a change to a backend scans every slot).
    fastest_slots: (u64, Vec<usize>),
    /// The group's changes not applied because the table's capacity has no room for them.
    capacity_refused: u64,
    /// The usage counters' shadow and tamper counts.
    guard: counters::Guard,
}

impl<'m> Agent<'m> {
    /// Records the time at a wake-up, for the stamps of the commands that follow.
    pub fn wake(&mut self, now: Now) {
        self.now = now;
        if let Some(c) = self.cluster.as_mut() {
            c.wake(now.mono_ms);
        }
    }

    /// Writes everything changed since the last publish to the shared table — after the state
    /// file, so no lookup ever sees a change that a `kill -9` could still lose.
    pub fn publish(&mut self) {
        self.save();
        let p = std::mem::take(&mut self.pending);
        if p.slots.is_empty() && p.zero.is_empty() && !p.index {
            return;
        }
        if let Some(w) = self.writer() {
            for &slot in p.slots.keys() {
                w.write_service(slot, self.slots.get(slot).and_then(Option::as_ref));
            }
        }
        for &(slot, mask, ticket) in &p.zero {
            self.counters().zero(slot, mask, ticket);
            self.guard.zeroed(slot, mask);
        }
        if let Some(w) = self.writer().filter(|_| p.index) {
            w.write_index(self.services().map(|(i, s)| (i, &s.name)));
        }
        self.limits_changed(&p.slots, p.index);
        if let Some(e) = &mut self.export {
            e.changed();
        }
    }

    /// Does what is due at `now` (the counters' guard, limit check, heartbeat) and publishes.
    pub fn tick(&mut self, now: Now) {
        self.now = now;
        if let Some(c) = self.cluster.as_mut() {
            c.tick(now.mono_ms, now.wall_ms);
            self.sync();
        }
        if now.mono_ms >= self.next_limit_check {
            // Counters the pending changes restart are zeroed first, so the guard judges them
            // from zero; and the guard puts back what lookups cannot have done before a limit
            // is read.
            self.publish();
            self.guard_counters(now.mono_ms);
            if self.has_limits {
                self.check_limits();
            }
            self.next_limit_check = now.mono_ms + LIMIT_CHECK_MS;
        }
        self.guard_header();
        self.publish();
        if let Some(mut e) = self.export.take() {
            let log = e.run(now.mono_ms, self.services().map(|(_, s)| s));
            self.log.extend(log);
            self.export = Some(e);
        }
        if now.mono_ms + HEARTBEAT_EARLY_MS >= self.next_heartbeat {
            if let Some(w) = self.writer() {
                w.heartbeat(now.wall_ms);
            }
            self.next_heartbeat = now.mono_ms + HEARTBEAT_MS;
        }
    }

    /// When [`Agent::tick`] must next run (monotonic milliseconds).
    pub fn next_deadline(&self) -> u64 {
        let export = self.export.as_ref().and_then(Export::deadline);
        let d = if self.has_limits {
            self.next_heartbeat.min(self.next_limit_check)
        } else {
            self.next_heartbeat
        };
        let due = match &self.cluster {
            Some(c) => d.min(c.next_deadline()),
            None => d,
        };
        let due = self.repairs_due().map_or(due, |s| s.min(due));
        export.map_or(due, |e| e.min(due))
    }

    /// A counter that moves whenever the table or the config changed (see [`Agent::checked`]).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    fn holding(&self) -> bool {
        self.cluster.as_deref().is_some_and(Cluster::holding)
    }

    /// Log lines since the last call, oldest first.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn log(&mut self, line: String) {
        self.log.push(line);
    }

    /// The slots as a table of the shared table's capacity.
    fn table(&mut self) -> Table<'_> {
        let capacity = self.capacity();
        Table::with_capacity(&mut self.slots, capacity)
    }

    /// Brings `has_limits` up to date after the slots in `changed` changed (`index`: services
    /// appeared or vanished). Every slot is looked at only when one may have lost the last limit
    /// (or on the first call): in a table of thousands of services, a command that changes one
    /// must not walk them all (a few megabytes at 4,096 × 16) for a flag that is false.
    fn limits_changed(&mut self, changed: &VecSet<usize>, index: bool) {
        let limited = |s: &Service| s.iter().any(|(_, b)| b.limit > 0);
        if !self.limits_known || index || self.has_limits {
            let any = self.services().any(|(_, s)| limited(s));
            self.has_limits = any;
            self.limits_known = true;
            return;
        }
        let any = changed.keys().any(|&slot| {
            self.slots
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(limited)
        });
        self.has_limits = any;
    }

    /// The slot of service `name`, and the service.
    fn service_named(&self, name: &str) -> Option<(usize, &Service)> {
        let slot = *self.names.get(name)?;
        self.slots.get(slot)?.as_ref().map(|s| (slot, s))
    }

    /// `names` made afresh from `slots` (after they were made or moved whole).
    fn index_names(&mut self) {
        self.names = self
            .services()
            .map(|(slot, s)| (s.name.as_str().to_owned(), slot))
            .collect();
    }

    fn services(&self) -> impl Iterator<Item = (usize, &Service)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }
}
