//! Starting over a table: a fresh one gets the config; an adopted one (the previous agent's,
//! reused after a restart) keeps its slots, counters and up/down state; the state file, when
//! there is one, is restored first; in a cluster the config is this node's initial state.

use crate::sys::fs::Shown;
use std::path::PathBuf;

use lbfo_core::table::ApplyError;
use lbfo_core::{Service, Table, Writer};

use super::{counters, Agent, Now, Pending, Saver, Shm, Tables};
use crate::cluster::replica::Refused;
use crate::cluster::{full_text, Cluster};
use crate::control::config::{self, Config};
use crate::table::state::Saved;
use crate::vecmap::{VecMap, VecSet};

impl<'m> Agent<'m> {
    /// Starts over a table: a fresh one (`adopt == false`) gets the config's commands; an adopted
    /// one (the previous agent's, reused after a restart) keeps slots, counters and up/down state
    /// of every backend the config still defines, and loses everything else. Everything is
    /// published before this returns.
    #[cfg(test)]
    pub fn start(
        shm: Box<dyn Shm + 'm>,
        adopt: bool,
        config_path: PathBuf,
        config: Config,
        now: Now,
        cluster: Option<Cluster>,
    ) -> Agent<'m> {
        Agent::start_with(
            shm,
            adopt,
            config_path,
            config,
            now,
            cluster,
            None,
            None,
            None,
        )
    }

    /// `Agent::start` with what the state file held: it is restored before the config is
    /// applied. In a cluster its entries are merged into the replica (so the config, stamped
    /// with its file's mtime, loses to every later change, as before the restart). Alone, the
    /// table is made to match it, and the config is applied on top only if the file changed
    /// after the state was saved (as a reload would). `tables` makes the table a reload with
    /// another `capacity` moves to (without it, such a reload keeps the table).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        shm: Box<dyn Shm + 'm>,
        adopt: bool,
        config_path: PathBuf,
        config: Config,
        now: Now,
        cluster: Option<Cluster>,
        saved: Option<Saved>,
        saver: Option<Saver<'m>>,
        tables: Option<Tables<'m>>,
    ) -> Agent<'m> {
        let mut agent = Agent::new(shm, adopt, config_path, &config, now, cluster, saver);
        agent.tables = tables;
        if agent.cluster.is_some() {
            if let Some(s) = &saved {
                agent.restore_replica(s, now);
            }
            agent.start_cluster(adopt, config, now);
            return agent;
        }
        if let Some(s) = saved {
            agent.restore_table(&s);
            if s.damaged {
                // Part of the table is missing: the config fills in what it defines, and
                // deletes nothing (what the file lost is not known to be gone).
                agent.config.members = config.members.clone();
                agent.load(config, "start");
                agent.republish_all(now);
                return agent;
            }
            if config.mtime_ms <= s.saved_ms {
                agent.log(format!(
                    "start: {} unchanged since the state was saved; not applied again",
                    agent.config_path.shown()
                ));
                agent.config = config;
                agent.republish_all(now);
                return agent;
            }
        }
        // What the adopted table holds stands in for the previous config.
        agent.config.members = config::members(&agent.table());
        if adopt {
            let n = agent.config.members.len();
            agent.log(format!(
                "start: adopted {n} services from the existing table"
            ));
        }
        agent.load(config, "start");
        // Republish everything once: an adopted table may have been left by an older agent.
        agent.republish_all(now);
        agent
    }

    /// The agent before anything is applied: the slots as the table holds them if adopted
    /// (empty otherwise), the config's settings without its commands, everything due at once.
    pub(super) fn new(
        shm: Box<dyn Shm + 'm>,
        adopt: bool,
        config_path: PathBuf,
        config: &Config,
        now: Now,
        cluster: Option<Cluster>,
        saver: Option<Saver<'m>>,
    ) -> Agent<'m> {
        let view = Writer::resume(shm.table(), shm.layout()).map(|w| w.view());
        let services = shm.layout().max_services;
        let slots: Vec<Option<Service>> = (0..services)
            .map(|slot| view.filter(|_| adopt).and_then(|v| v.service(slot)))
            .collect();
        let tampered = view.map_or((0, 0), |v| v.tampered());
        let mut agent = Agent {
            slots,
            names: VecMap::new(),
            shm,
            tables: None,
            config_path,
            config: Config {
                commands: Vec::new(),
                members: Default::default(),
                ..config.clone()
            },
            pending: Pending::default(),
            fifo_lines: 0,
            has_limits: false,
            limits_known: false,
            shape: 0,
            next_heartbeat: now.mono_ms,
            next_limit_check: now.mono_ms,
            export: None,
            log: Vec::new(),
            cluster: cluster.map(Box::new),
            now,
            next_cluster_status: now.mono_ms,
            status_events: None,
            held: false,
            state_dirty: true,
            changes: 0,
            saver,
            save_failing: false,
            fastest_slots: (u64::MAX, Vec::new()),
            capacity_refused: 0,
            guard: counters::Guard::resumed(tampered),
        };
        agent.index_names();
        agent
    }

    /// A cluster's restart: the saved entries merged into the replica.
    pub(super) fn restore_replica(&mut self, saved: &Saved, now: Now) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let (mut merged, mut ahead, mut full) = (0, None, None);
        for e in &saved.replica {
            match c.replica.merge(e, now.wall_ms) {
                Ok(changed) => merged += usize::from(changed),
                Err(Refused::Future(ms)) => ahead = ahead.max(Some(ms)),
                Err(why) => full = full.or(Some(full_text(why, e.name().as_str()))),
            }
        }
        let n = c.replica.names().count();
        self.log(format!(
            "start: restored {merged} entries ({n} services) from the state file"
        ));
        if let Some(ms) = ahead {
            self.log(format!(
                "start: state: entries stamped up to {} s ahead of this clock refused (a damaged \
                 file, or this clock set back: the group fills them in)",
                ms.div_ceil(1000)
            ));
        }
        if let Some(text) = full {
            self.log(format!("start: state: entries refused: {text}"));
        }
    }

    /// An agent alone: the slots brought to the saved table, service by service, with ordinary
    /// table commands (so an adopted table's slots and counters stay put).
    pub(super) fn restore_table(&mut self, saved: &Saved) {
        let capacity = self.capacity();
        let mut scratch: Vec<Option<Service>> = vec![None; capacity.services()];
        let mut t = Table::with_capacity(&mut scratch, capacity);
        for cmd in &saved.table {
            if let Err(e @ (ApplyError::TableFull(_) | ApplyError::ServiceFull(_))) = t.apply(cmd) {
                self.log.push(format!("start: state: {e} ({cmd})"));
            }
        }
        let mut names: VecSet<String> = self
            .services()
            .map(|(_, s)| (s.name.as_str().to_owned(), ()))
            .collect();
        names.extend(t.iter().map(|(_, s)| (s.name.as_str().to_owned(), ())));
        for name in names.into_keys() {
            let want = t
                .iter()
                .find(|(_, s)| s.name.as_str() == name)
                .map(|(_, s)| *s);
            for (cmd, r) in self.reconcile_to(&name, want) {
                if let Err(e) = r {
                    self.log(format!("start: state: {e} ({cmd})"));
                }
            }
        }
        let n = self.services().count();
        self.log(format!("start: restored {n} services from the state file"));
    }

    /// Writes every slot and the index, then does what is due: the first publish of a start.
    pub(super) fn republish_all(&mut self, now: Now) {
        self.pending
            .slots
            .extend((0..self.slots.len()).map(|s| (s, ())));
        self.pending.index = true;
        self.publish();
        self.tick(now);
    }

    /// Cluster start: the config is this node's initial state, stamped with the file's mtime, so
    /// newer changes the cluster made win over it; announced with a hello.
    pub(super) fn start_cluster(&mut self, adopt: bool, config: Config, now: Now) {
        let n = config.commands.len();
        let mut cluster = self.cluster.take();
        if let Some(c) = cluster.as_mut() {
            for (_, cmd) in &config.commands {
                c.replica.config_line(cmd, config.mtime_ms, now.wall_ms);
            }
            c.hello(None, now.wall_ms);
        }
        self.cluster = cluster;
        if adopt {
            let held = self.services().count();
            self.log(format!(
                "start: adopted {held} services from the existing table; showing them until caught up with the cluster"
            ));
        }
        self.config = config;
        let name = self.cluster.as_ref().map_or("", |c| c.name()).to_owned();
        self.log(format!(
            "start: {}: {n} commands as node {name}'s initial state",
            self.config_path.shown()
        ));
        self.held = self.holding();
        if !self.held {
            self.reconcile_all();
        }
        self.republish_all(now);
    }
}
