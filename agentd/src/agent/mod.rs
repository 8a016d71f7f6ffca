//! The agent's state and duties: apply commands, publish the table, heartbeat, usage limits.
//!
//! [`Agent`] owns the authoritative [`Table`] slots and the writer of the shared table, but no
//! file descriptor and no clock: the loop in `main` hands it FIFO pieces, reloaded configs and the
//! time ([`Now`]); [`Agent::next_deadline`] says when it next needs to be called. Tests drive it
//! with a fake clock over plain memory.
//!
//! **Publishing is batched**: commands change the slots and note what changed; [`Agent::publish`]
//! then writes each changed record once, zeroes the counters the changes ask for (after the new
//! record is visible, so no lookup of the old backend is counted against a new one), and rebuilds
//! the name index if a service appeared or vanished. The loop publishes after every wake-up, so a
//! command is visible to the very next lookup once its batch is done.
//!
//! **In a cluster** (an [`Cluster`] given to [`Agent::start`]) the slots are a materialised view
//! of the replica: commands from the FIFO, the config and the usage limits go to the replica
//! (which stamps them and queues them for the group), entries from peers are merged into it, and
//! every service whose replicated state changed is reconciled into the slots with ordinary table
//! commands, so slots and backend positions (and with them the counters) stay put. `reset` stays
//! local. A restarted agent that adopted its table keeps showing it until it has caught up (see
//! `cluster::CATCH_UP_MS`), so a restart never flashes the config's older state.
//!
//! **Counters are never reset by a load or reload**: `reset` lines of the config are skipped, and
//! `add` of an existing backend keeps its position and so its counter.

use crate::sys::fs::Shown;
use lbfo_core::addr::Ip;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use lbfo_core::cmd::{parse_bytes, Setting};
use lbfo_core::schedule::fastest_set;
use lbfo_core::table::ApplyError;
use lbfo_core::{
    Command, CountersView, Line, Policy, Service, Table, Writer, MAX_BACKENDS, MAX_SERVICES,
};

use crate::cluster::wire::DropReason;
use crate::cluster::{Cluster, Dest};
use crate::control::config::{self, Config, ConfigError};
use crate::control::fifo::{Piece, MAX_LINE};
use crate::health::{Spec, Verdict};
use crate::table::export::Export;
use crate::table::state::{self, Saved};
use crate::vecmap::VecSet;

/// How often the heartbeat is written; `status` calls an agent dead after three missed beats.
pub const HEARTBEAT_MS: u64 = 1000;
/// How often usage limits are checked (only while some backend has a limit).
pub const LIMIT_CHECK_MS: u64 = 100;
/// How often the cluster's state (peers, drops) is written for `status`.
pub const CLUSTER_STATUS_MS: u64 = 200;

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
    writer: Writer<'m>,
    counters: CountersView<'m>,
    config_path: PathBuf,
    config: Config,
    pending: Pending,
    fifo_lines: u64,
    has_limits: bool,
    next_heartbeat: u64,
    next_limit_check: u64,
    /// The dnsmasq export, with `hosts-file` in the config.
    export: Option<Export>,
    log: Vec<String>,
    cluster: Option<Cluster>,
    now: Now,
    next_cluster_status: u64,
    held: bool,
    /// Something changed since the state was last handed out by [`Agent::take_state`].
    state_dirty: bool,
    /// Counts changes to the slots and reloads: the health checker re-reads its targets when it
    /// moves.
    changes: u64,
    saver: Option<Saver<'m>>,
    save_failing: bool,
    /// The slots of `fastest` services, as of `changes` (so a turn with a new round-trip time
    /// does not scan every slot).
    fastest_slots: (u64, Vec<usize>),
}

impl<'m> Agent<'m> {
    /// Starts over a table: a fresh one (`adopt == false`) gets the config's commands; an adopted
    /// one (the previous agent's, reused after a restart) keeps slots, counters and up/down state
    /// of every backend the config still defines, and loses everything else. Everything is
    /// published before this returns.
    #[cfg(test)]
    pub fn start(
        writer: Writer<'m>,
        counters: CountersView<'m>,
        adopt: bool,
        config_path: PathBuf,
        config: Config,
        now: Now,
        cluster: Option<Cluster>,
    ) -> Agent<'m> {
        Agent::start_with(
            writer,
            counters,
            adopt,
            config_path,
            config,
            now,
            cluster,
            None,
            None,
        )
    }

    /// [`Agent::start`] with what the state file held: it is restored before the config is
    /// applied. In a cluster its entries are merged into the replica (so the config, stamped
    /// with its file's mtime, loses to every later change, as before the restart). Alone, the
    /// table is made to match it, and the config is applied on top only if the file changed
    /// after the state was saved (as a reload would).
    #[allow(clippy::too_many_arguments)]
    pub fn start_with(
        writer: Writer<'m>,
        counters: CountersView<'m>,
        adopt: bool,
        config_path: PathBuf,
        config: Config,
        now: Now,
        cluster: Option<Cluster>,
        saved: Option<Saved>,
        saver: Option<Saver<'m>>,
    ) -> Agent<'m> {
        let view = writer.view();
        let slots: Vec<Option<Service>> = (0..MAX_SERVICES)
            .map(|slot| if adopt { view.service(slot) } else { None })
            .collect();
        let mut agent = Agent {
            slots,
            writer,
            counters,
            config_path,
            config: Config {
                commands: Vec::new(),
                members: Default::default(),
                ..config.clone()
            },
            pending: Pending::default(),
            fifo_lines: 0,
            has_limits: false,
            next_heartbeat: now.mono_ms,
            next_limit_check: now.mono_ms,
            export: None,
            log: Vec::new(),
            cluster,
            now,
            next_cluster_status: now.mono_ms,
            held: false,
            state_dirty: true,
            changes: 0,
            saver,
            save_failing: false,
            fastest_slots: (u64::MAX, Vec::new()),
        };
        if agent.cluster.is_some() {
            if let (Some(s), Some(c)) = (&saved, agent.cluster.as_mut()) {
                let mut merged = 0;
                for e in &s.replica {
                    merged += usize::from(c.replica.merge(e, now.wall_ms));
                }
                let n = c.replica.names().count();
                agent.log(format!(
                    "start: restored {merged} entries ({n} services) from the state file"
                ));
            }
            agent.start_cluster(adopt, config, now);
            return agent;
        }
        if let Some(s) = saved {
            let mut scratch: Vec<Option<Service>> = vec![None; MAX_SERVICES];
            let mut t = Table::new(&mut scratch);
            for cmd in &s.table {
                let _ = t.apply(cmd);
            }
            let mut names: VecSet<String> = agent
                .services()
                .map(|(_, s)| (s.name.as_str().to_owned(), ()))
                .collect();
            names.extend(t.iter().map(|(_, s)| (s.name.as_str().to_owned(), ())));
            for name in names.into_keys() {
                let want = t
                    .iter()
                    .find(|(_, s)| s.name.as_str() == name)
                    .map(|(_, s)| *s);
                for (cmd, r) in agent.reconcile_to(&name, want) {
                    if let Err(e) = r {
                        agent.log(format!("start: state: {e} ({cmd})"));
                    }
                }
            }
            let n = agent.services().count();
            agent.log(format!("start: restored {n} services from the state file"));
            if config.mtime_ms <= s.saved_ms {
                agent.log(format!(
                    "start: {} unchanged since the state was saved; not applied again",
                    agent.config_path.shown()
                ));
                agent.config = config;
                agent
                    .pending
                    .slots
                    .extend((0..MAX_SERVICES).map(|s| (s, ())));
                agent.pending.index = true;
                agent.publish();
                agent.tick(now);
                return agent;
            }
        }
        // What the adopted table holds stands in for the previous config.
        agent.config.members = config::members(&Table::new(&mut agent.slots));
        if adopt {
            let n = agent.config.members.len();
            agent.log(format!(
                "start: adopted {n} services from the existing table"
            ));
        }
        agent.load(config, "start");
        // Republish everything once: an adopted table may have been left by an older agent.
        agent
            .pending
            .slots
            .extend((0..MAX_SERVICES).map(|s| (s, ())));
        agent.pending.index = true;
        agent.publish();
        agent.tick(now);
        agent
    }

    /// Cluster start: the config is this node's initial state, stamped with the file's mtime, so
    /// newer changes the cluster made win over it; announced with a hello.
    fn start_cluster(&mut self, adopt: bool, config: Config, now: Now) {
        let n = config.commands.len();
        let mut cluster = self.cluster.take();
        if let Some(c) = cluster.as_mut() {
            for (_, cmd) in &config.commands {
                c.replica.config_line(cmd, config.mtime_ms);
            }
            c.hello(now.wall_ms);
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
        self.pending
            .slots
            .extend((0..MAX_SERVICES).map(|s| (s, ())));
        self.pending.index = true;
        self.publish();
        self.tick(now);
    }

    fn holding(&self) -> bool {
        self.cluster.as_ref().is_some_and(Cluster::holding)
    }

    /// Records the time at a wake-up, for the stamps of the commands that follow.
    pub fn wake(&mut self, now: Now) {
        self.now = now;
    }

    /// Handles a datagram from the cluster socket.
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.datagram(bytes, from, self.now.wall_ms);
        self.log.append(&mut c.take_log());
    }

    /// A datagram the socket dropped before the cluster saw it: counted with the cluster's own.
    pub fn dropped(&mut self, from: SocketAddr, why: DropReason) {
        if let Some(c) = self.cluster.as_mut() {
            c.dropped(from, why);
            self.log.append(&mut c.take_log());
        }
    }

    /// Datagrams to send.
    pub fn take_outbox(&mut self) -> Vec<(Dest, Vec<u8>)> {
        self.cluster
            .as_mut()
            .map_or_else(Vec::new, Cluster::take_outbox)
    }

    /// Brings the slots to the replica for every service it changed, then publishes.
    pub fn sync(&mut self) {
        if self.holding() {
            return;
        }
        if self.held {
            self.held = false;
            self.log("cluster: caught up; publishing the cluster's table".to_owned());
            self.reconcile_all();
        }
        let changed = self
            .cluster
            .as_mut()
            .map(Cluster::take_changed)
            .unwrap_or_default();
        self.state_dirty |= !changed.is_empty();
        for name in changed {
            self.reconcile(&name);
        }
        self.publish();
    }

    fn reconcile_all(&mut self) {
        let mut names: VecSet<String> = self
            .services()
            .map(|(_, s)| (s.name.as_str().to_owned(), ()))
            .collect();
        if let Some(c) = self.cluster.as_mut() {
            names.extend(c.replica.names().map(|n| (n.to_owned(), ())));
            c.take_changed();
        }
        for name in names.into_keys() {
            self.reconcile(&name);
        }
    }

    /// Makes the slot of `name` match the replica, with ordinary table commands.
    fn reconcile(&mut self, name: &str) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let want = c.replica.service(name);
        for (cmd, r) in self.reconcile_to(name, want) {
            match r {
                Ok(()) => self.log(format!("cluster: {cmd}")),
                Err(e) => self.log(format!("cluster: {e} ({cmd})")),
            }
        }
    }

    /// Makes the slot of `name` match `want` with ordinary table commands (so slots and backend
    /// positions, and with them the counters, stay put); returns what it applied.
    fn reconcile_to(
        &mut self,
        name: &str,
        want: Option<Service>,
    ) -> Vec<(Command, Result<(), ApplyError>)> {
        let have = self
            .services()
            .find(|(_, s)| s.name.as_str() == name)
            .map(|(_, s)| *s);
        let mut cmds = Vec::new();
        match (want, have) {
            (None, None) => {}
            (None, Some(h)) => cmds.push(Command::Del {
                service: h.name,
                addr: None,
            }),
            (Some(w), h) => {
                let service = w.name;
                if h.map(|h| h.policy) != Some(w.policy) {
                    cmds.push(Command::Policy {
                        service,
                        policy: w.policy,
                    });
                }
                for (_, b) in h.iter().flat_map(|h| h.iter()) {
                    if w.position(b.addr).is_none() {
                        cmds.push(Command::Del {
                            service,
                            addr: Some(b.addr),
                        });
                    }
                }
                for (_, b) in w.iter() {
                    let cur = h.and_then(|h| h.position(b.addr).and_then(|p| h.backends[p]));
                    if cur.map(|c| (c.weight, c.prio, c.limit)) != Some((b.weight, b.prio, b.limit))
                    {
                        cmds.push(Command::Add {
                            service,
                            addr: b.addr,
                            weight: Some(b.weight),
                            prio: Some(b.prio),
                            limit: Some(b.limit),
                        });
                    }
                    if cur.is_none_or(|c| c.up) != b.up {
                        cmds.push(Command::SetUp {
                            service,
                            addr: b.addr,
                            up: b.up,
                        });
                    }
                }
            }
        }
        cmds.into_iter()
            .map(|cmd| {
                let r = self.apply(&cmd);
                (cmd, r)
            })
            .collect()
    }

    /// A command made on this node: applied locally, and in a cluster stamped, replicated and
    /// queued for the group. `reset` is always local.
    fn command(&mut self, cmd: &Command) -> Result<(), ApplyError> {
        let wall = self.now.wall_ms;
        let Some(c) = self.cluster.as_mut() else {
            return self.apply(cmd);
        };
        if matches!(cmd, Command::Reset { .. }) {
            return self.apply(cmd);
        }
        let entries = c.replica.command(cmd, wall)?;
        c.send_entries(Dest::All, &entries, wall);
        c.take_changed();
        self.state_dirty = true;
        if !self.holding() {
            self.reconcile(cmd.service().as_str());
        }
        Ok(())
    }

    /// The cluster's state for `status`, when it is due to be written again.
    pub fn cluster_status(&mut self, now: Now) -> Option<String> {
        let c = self.cluster.as_ref()?;
        if now.mono_ms < self.next_cluster_status {
            return None;
        }
        self.next_cluster_status = now.mono_ms + CLUSTER_STATUS_MS;
        Some(c.status_lines(now.wall_ms))
    }

    /// Brings the live table to `config`: removes what the current config defines and `config`
    /// does not, then applies `config`'s commands on top (skipping `reset`).
    fn load(&mut self, config: Config, what: &str) {
        let file = self.config_path.shown().to_string();
        for cmd in config::removals(&self.config.members, &config.members) {
            // A service or backend already deleted through the FIFO is fine.
            if self.command(&cmd).is_ok() {
                self.log(format!("{what}: {cmd} (no longer in the config)"));
            }
        }
        let wall = self.now.wall_ms;
        for (line, cmd) in &config.commands {
            if matches!(cmd, Command::Reset { .. }) {
                continue;
            }
            if let Some(c) = self.cluster.as_mut() {
                let entries = c.replica.config_line(cmd, config.mtime_ms);
                c.send_entries(Dest::All, &entries, wall);
                self.state_dirty = true;
                continue;
            }
            if let Err(e) = self.apply(cmd) {
                self.log(format!("{what}: {file}:{line}:1: {e} ({cmd})"));
            }
        }
        if self.cluster.is_some() && !self.holding() {
            self.reconcile_all();
        }
        let services = self.services().count();
        self.log(format!(
            "{what}: {file}: {} commands applied; {services} services",
            config.commands.len()
        ));
        self.configure_export(&config, what);
        self.config = config;
    }

    /// Starts, changes or stops the dnsmasq export as `config` says.
    fn configure_export(&mut self, config: &Config, what: &str) {
        let (hosts, pid) = (config.hosts_file.as_deref(), config.dnsmasq_pid.as_deref());
        match (hosts, &self.export) {
            (Some(h), Some(e)) if e.is(h, pid) => return,
            (None, None) => return,
            _ => {}
        }
        self.export = hosts.map(|h| Export::new(h.to_owned(), pid.map(ToOwned::to_owned)));
        let line = match (hosts, pid) {
            (Some(h), Some(p)) => {
                format!("export to {} for the dnsmasq of {}", h.shown(), p.shown())
            }
            (Some(h), None) => format!("export to {} for every dnsmasq process", h.shown()),
            (None, _) => "export stopped".to_owned(),
        };
        self.log(format!("{what}: {line}"));
    }

    /// Applies a re-read config (SIGHUP). A config with an error changes nothing.
    pub fn reload(&mut self, loaded: Result<Config, ConfigError>) {
        let mut config = match loaded {
            Ok(c) => c,
            Err(e) => {
                let report = e.report(&self.config_path);
                self.log(format!(
                    "reload: {report}; keeping the running configuration"
                ));
                return;
            }
        };
        let mut notes = Vec::new();
        for (what, old, new) in [
            ("table", &self.config.table, &mut config.table),
            ("fifo", &self.config.fifo, &mut config.fifo),
        ] {
            if !crate::sys::fs::same_path(Some(old), Some(new)) {
                notes.push(format!(
                    "reload: `{what}` changed to {}; still using {} until the agent is restarted",
                    new.shown(),
                    old.shown()
                ));
                old.clone_into(new);
            }
        }
        if !crate::sys::fs::same_path(self.config.state.as_deref(), config.state.as_deref()) {
            notes.push(format!(
                "reload: `state` changed; still using {} until the agent is restarted",
                self.config
                    .state
                    .as_ref()
                    .map_or("none".to_owned(), |p| p.shown().to_string())
            ));
            config.state.clone_from(&self.config.state);
        }
        if self.config.cluster != config.cluster {
            notes.push(
                "reload: cluster settings changed; still using the running ones until the agent is restarted"
                    .to_owned(),
            );
            config.cluster.clone_from(&self.config.cluster);
        }
        self.log.extend(notes);
        self.changes += 1;
        self.load(config, "reload");
    }

    /// Handles one piece of the FIFO stream: applies a command, or logs why not.
    pub fn fifo_piece(&mut self, piece: Piece<'_>) {
        self.fifo_lines += 1;
        let n = self.fifo_lines;
        let bytes = match piece {
            Piece::TooLong => {
                self.log(format!(
                    "fifo: line {n}: column {}: line longer than {MAX_LINE} bytes; skipped",
                    MAX_LINE + 1
                ));
                return;
            }
            Piece::Line(bytes) => bytes,
        };
        match parse_bytes(bytes) {
            Err(e) => self.log(format!("fifo: line {n}: column {}: {}", e.col, e.kind)),
            Ok(None) => {}
            Ok(Some(Line::Setting(s))) => {
                self.log(format!("fifo: line {n}: column 1: {}", setting_refused(&s)))
            }
            Ok(Some(Line::Command(cmd))) => match self.command(&cmd) {
                Ok(()) => self.log(format!("fifo: line {n}: {cmd}")),
                Err(e) => self.log(format!("fifo: line {n}: column 1: {e} ({cmd})")),
            },
        }
    }

    /// Applies one command to the slots and notes what to publish.
    fn apply(&mut self, cmd: &Command) -> Result<(), ApplyError> {
        let ch = Table::new(&mut self.slots).apply(cmd)?;
        self.state_dirty = true;
        self.changes += 1;
        if ch.record || ch.index {
            self.pending.slots.insert(ch.slot, ());
        }
        if ch.zero != 0 || ch.zero_ticket {
            self.pending.zero.push((ch.slot, ch.zero, ch.zero_ticket));
        }
        self.pending.index |= ch.index;
        Ok(())
    }

    /// Writes everything changed since the last publish to the shared table — after the state
    /// file, so no lookup ever sees a change that a `kill -9` could still lose.
    pub fn publish(&mut self) {
        self.save();
        let p = std::mem::take(&mut self.pending);
        if p.slots.is_empty() && p.zero.is_empty() && !p.index {
            return;
        }
        for &slot in p.slots.keys() {
            self.writer
                .write_service(slot, self.slots.get(slot).and_then(Option::as_ref));
        }
        for &(slot, mask, ticket) in &p.zero {
            self.counters.zero(slot, mask, ticket);
        }
        if p.index {
            let table = Table::new(&mut self.slots);
            self.writer
                .write_index(table.iter().map(|(i, s)| (i, &s.name)));
        }
        let has_limits = self
            .services()
            .any(|(_, s)| s.iter().any(|(_, b)| b.limit > 0));
        self.has_limits = has_limits;
        if let Some(e) = &mut self.export {
            e.changed();
        }
    }

    /// Does what is due at `now` (limit check, heartbeat) and publishes.
    pub fn tick(&mut self, now: Now) {
        self.now = now;
        if let Some(c) = self.cluster.as_mut() {
            c.tick(now.mono_ms, now.wall_ms);
            self.sync();
        }
        if now.mono_ms >= self.next_limit_check {
            if self.has_limits {
                self.check_limits();
            }
            self.next_limit_check = now.mono_ms + LIMIT_CHECK_MS;
        }
        self.publish();
        if let Some(mut e) = self.export.take() {
            let log = e.run(now.mono_ms, self.services().map(|(_, s)| s));
            self.log.extend(log);
            self.export = Some(e);
        }
        if now.mono_ms >= self.next_heartbeat {
            self.writer.heartbeat(now.wall_ms);
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
            Some(c) => d.min(c.next_deadline()).min(self.next_cluster_status),
            None => d,
        };
        export.map_or(due, |e| e.min(due))
    }

    /// Deletes every backend whose usage counter reached its limit.
    fn check_limits(&mut self) {
        let mut hits = Vec::new();
        for (slot, s) in self.services() {
            for (pos, b) in s.iter().filter(|(_, b)| b.limit > 0) {
                let n = self.counters.count(slot, pos);
                if n >= b.limit {
                    hits.push((
                        Command::Del {
                            service: s.name,
                            addr: Some(b.addr),
                        },
                        n,
                    ));
                }
            }
        }
        for (cmd, n) in hits {
            if self.command(&cmd).is_ok() {
                let Command::Del {
                    service,
                    addr: Some(addr),
                } = cmd
                else {
                    continue;
                };
                self.log(format!(
                    "limit reached: {service} {} after {n} lookups",
                    Ip(addr)
                ));
            }
        }
    }

    /// The state to persist, if `state PATH` is set and anything changed since the last call:
    /// the table as commands (alone) or the replica's entries (in a cluster).
    fn take_state(&mut self) -> Option<Vec<u8>> {
        if !self.state_dirty || self.config.state.is_none() {
            return None;
        }
        self.state_dirty = false;
        let wall = self.now.wall_ms;
        if let Some(c) = &self.cluster {
            return Some(state::encode(
                wall,
                Vec::new(),
                &c.replica.entries(u64::MAX),
            ));
        }
        let mut lines = Vec::new();
        for (_, s) in self.services() {
            let service = s.name;
            lines.push(
                Command::Policy {
                    service,
                    policy: s.policy,
                }
                .to_string(),
            );
            for (_, b) in s.iter() {
                lines.push(
                    Command::Add {
                        service,
                        addr: b.addr,
                        weight: Some(b.weight),
                        prio: Some(b.prio),
                        limit: Some(b.limit),
                    }
                    .to_string(),
                );
                if !b.up {
                    lines.push(
                        Command::SetUp {
                            service,
                            addr: b.addr,
                            up: false,
                        }
                        .to_string(),
                    );
                }
            }
        }
        Some(state::encode(wall, lines, &[]))
    }

    /// A counter that moves whenever the table or the config changed (see [`Agent::checked`]).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every backend of every service with a `check`, with its check.
    pub fn checked(&self) -> Vec<(Spec, IpAddr)> {
        let mut out = Vec::new();
        for c in &self.config.checks {
            if let Some((_, s)) = self.services().find(|(_, s)| s.name == c.service) {
                out.extend(s.iter().map(|(_, b)| (c.clone(), b.addr)));
            }
        }
        out
    }

    /// A health checker's verdict changed: logged, and if the table says otherwise, applied as
    /// an ordinary `up`/`down` command (replicated to the group in a cluster) and published.
    pub fn health(&mut self, v: &Verdict) {
        let word = if v.up { "up" } else { "down" };
        let current = self
            .services()
            .find(|(_, s)| s.name == v.service)
            .and_then(|(_, s)| s.position(v.addr).and_then(|p| s.backends[p]))
            .map(|b| b.up);
        let Some(current) = current else {
            return;
        };
        if current == v.up {
            self.log(format!(
                "check: {} {} {word} ({}); already {word}",
                v.service,
                Ip(v.addr),
                v.why
            ));
            return;
        }
        let cmd = Command::SetUp {
            service: v.service,
            addr: v.addr,
            up: v.up,
        };
        match self.command(&cmd) {
            Ok(()) => self.log(format!(
                "check: {} {} {word} ({})",
                v.service,
                Ip(v.addr),
                v.why
            )),
            Err(e) => self.log(format!("check: {e} ({cmd})")),
        }
        self.publish();
    }

    /// Gives every `fastest` service its fastest set (`schedule::fastest_set`) from this
    /// machine's round-trip times (`rtt`: the smoothed time of a service's backend, if measured).
    /// The sets are local: they change no command, no replica and no state file. A slot is
    /// republished, and the change logged, only when its set changed.
    pub fn fastest(&mut self, rtt: impl Fn(&str, IpAddr) -> Option<u32>) {
        if self.fastest_slots.0 != self.changes {
            let slots = self
                .services()
                .filter(|(_, s)| s.policy == Policy::Fastest)
                .map(|(slot, _)| slot)
                .collect();
            self.fastest_slots = (self.changes, slots);
        }
        for i in 0..self.fastest_slots.1.len() {
            let slot = self.fastest_slots.1[i];
            let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let mut times = [None; MAX_BACKENDS];
            for (pos, b) in s.iter() {
                times[pos] = rtt(s.name.as_str(), b.addr);
            }
            let set = fastest_set(s, &times);
            let mut changed = false;
            let mut members = Vec::new();
            for (pos, b) in s.backends.iter_mut().enumerate() {
                if let Some(b) = b {
                    let fast = set >> pos & 1 == 1;
                    changed |= b.fast != fast;
                    b.fast = fast;
                    if let (true, Some(t)) = (fast, times[pos]) {
                        members.push(format!("{} ({}.{:03} ms)", Ip(b.addr), t / 1000, t % 1000));
                    }
                }
            }
            if !changed {
                continue;
            }
            let line = match members.is_empty() {
                true => format!(
                    "fastest: {}: no round-trip time; taking turns as roundrobin",
                    s.name
                ),
                false => format!("fastest: {}: {}", s.name, members.join(", ")),
            };
            self.pending.slots.insert(slot, ());
            self.log(line);
        }
    }

    /// Writes the state file if anything changed (at most once per publish, so once per batch).
    fn save(&mut self) {
        if self.saver.is_none() {
            return;
        }
        let Some(bytes) = self.take_state() else {
            return;
        };
        let Some(saver) = self.saver.as_mut() else {
            return;
        };
        match (saver.0)(&bytes) {
            Ok(()) => self.save_failing = false,
            Err(e) => {
                // Retried at the next publish; the table goes on (the group is the backup).
                self.state_dirty = true;
                if !self.save_failing {
                    self.log(format!("state: cannot write: {e}"));
                }
                self.save_failing = true;
            }
        }
    }

    /// Log lines since the last call, oldest first.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn log(&mut self, line: String) {
        self.log.push(line);
    }

    fn services(&self) -> impl Iterator<Item = (usize, &Service)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }
}

/// Why a setting sent through the FIFO is refused, and how to change it: settings live in the
/// config file only. A reload (SIGHUP) applies `hosts-file`, `dnsmasq-pid` and `check`; the
/// others name files, sockets and keys the agent opened at start, so they need a restart.
fn setting_refused(s: &Setting<'_>) -> String {
    let how = match s {
        Setting::HostsFile(_) | Setting::DnsmasqPid(_) | Setting::Check(_) => {
            "change it in the config file and reload (SIGHUP)"
        }
        _ => "change it in the config file and restart the agent (a reload keeps the running one)",
    };
    format!(
        "`{}` is a setting of the config file, not a FIFO command; {how}",
        s.keyword()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbfo_core::atomic::AtomicU64;
    use lbfo_core::shm::Layout;
    use lbfo_core::{Lookup, TableView, Want};

    struct Mem {
        table: Vec<AtomicU64>,
        counters: Vec<AtomicU64>,
    }

    impl Mem {
        fn new() -> Mem {
            let table: Vec<AtomicU64> = (0..Writer::WORDS).map(|_| AtomicU64::new(0)).collect();
            let counters: Vec<AtomicU64> = (0..Layout::CURRENT.counters_words())
                .map(|_| AtomicU64::new(0))
                .collect();
            Writer::init(&table, 7).unwrap();
            CountersView::init(&counters, 7, Layout::CURRENT);
            Mem { table, counters }
        }

        fn agent(&self, adopt: bool, conf: &str, t: u64) -> Agent<'_> {
            let w = Writer::attach(&self.table).unwrap();
            let c = CountersView::new_checked(&self.counters, &w.view()).unwrap();
            Agent::start(
                w,
                c,
                adopt,
                "conf".into(),
                config::parse(conf.as_bytes()).unwrap(),
                at(t),
                None,
            )
        }

        /// One lookup through the reader, as the NSS module does it.
        fn v4(&self, name: &str) -> String {
            let v = TableView::new_checked(&self.table).unwrap();
            let c = CountersView::new_checked(&self.counters, &v).unwrap();
            match v.lookup(name.as_bytes(), Want::V4, Some(&c)) {
                Lookup::Found(a) => a.v4.unwrap().to_string(),
                other => format!("{other:?}"),
            }
        }

        fn count(&self, slot: usize, pos: usize) -> u64 {
            let v = TableView::new_checked(&self.table).unwrap();
            CountersView::new_checked(&self.counters, &v)
                .unwrap()
                .count(slot, pos)
        }

        fn heartbeat(&self) -> u64 {
            TableView::new_checked(&self.table).unwrap().heartbeat_ms()
        }
    }

    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: 1_000_000 + ms,
        }
    }

    /// Feeds `text` to the agent as FIFO lines, publishes, and returns what it logged.
    fn send(a: &mut Agent<'_>, text: &str) -> Vec<String> {
        for line in text.lines() {
            a.fifo_piece(Piece::Line(line.as_bytes()));
        }
        a.publish();
        a.take_log()
    }

    const CONF: &str = "table /t/table\nfifo /t/sock\npolicy web.lan failover\nadd web.lan 10.0.0.1 prio=1\nadd web.lan 10.0.0.2 prio=2\n";

    #[test]
    fn start_publishes_the_config() {
        let m = Mem::new();
        let mut a = m.agent(false, CONF, 0);
        assert_eq!(m.v4("web.lan"), "10.0.0.1");
        assert_eq!(
            a.take_log(),
            ["start: conf: 3 commands applied; 1 services"]
        );
        assert_eq!(m.heartbeat(), 1_000_000);
    }

    #[test]
    fn every_setting_is_refused_on_the_fifo_naming_how_to_change_it() {
        let m = Mem::new();
        let mut a = m.agent(false, CONF, 0);
        a.take_log();
        // One line per `Setting` variant.
        let lines = [
            "table /t",
            "fifo /f",
            "state /s",
            "group 239.255.1.1:7000",
            "iface eth0",
            "ttl 2",
            "node gw1",
            "peer 10.0.0.9:7000",
            "key /k",
            "insecure",
            "hosts-file /h",
            "dnsmasq-pid /p",
            "check web.lan tcp 80",
        ];
        let log = send(&mut a, &lines.join("\n"));
        assert_eq!(log.len(), lines.len(), "{log:?}");
        for (i, (line, got)) in lines.iter().zip(&log).enumerate() {
            let kw = line.split(' ').next().unwrap();
            let how = match kw {
                "hosts-file" | "dnsmasq-pid" | "check" => {
                    "change it in the config file and reload (SIGHUP)"
                }
                _ => "change it in the config file and restart the agent (a reload keeps the running one)",
            };
            assert_eq!(
                got,
                &format!(
                    "fifo: line {}: column 1: `{kw}` is a setting of the config file, not a FIFO command; {how}",
                    i + 1
                )
            );
        }
        assert_eq!(m.v4("web.lan"), "10.0.0.1", "nothing changed");
    }

    #[test]
    fn fifo_lines_apply_and_bad_ones_are_skipped() {
        let m = Mem::new();
        let mut a = m.agent(false, CONF, 0);
        a.take_log();
        let log = send(
            &mut a,
            "down web.lan 10.0.0.1\nbogus web.lan\n\n# note\nadd db.lan 10.0.1.1\ndown web.lan 10.0.0.9\ntable /x\nadd db.lan 10.0.1.2 wieght=2",
        );
        assert_eq!(
            log,
            [
                "fifo: line 1: down web.lan 10.0.0.1",
                "fifo: line 2: column 1: unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure or check)",
                "fifo: line 5: add db.lan 10.0.1.1",
                "fifo: line 6: column 1: service has no backend with that address (down web.lan 10.0.0.9)",
                "fifo: line 7: column 1: `table` is a setting of the config file, not a FIFO command; change it in the config file and restart the agent (a reload keeps the running one)",
                "fifo: line 8: column 21: unknown option (expected weight=, prio= or limit=)",
            ]
        );
        assert_eq!(m.v4("web.lan"), "10.0.0.2", "failover moved on");
        assert_eq!(m.v4("db.lan"), "10.0.1.1");
        a.fifo_piece(Piece::TooLong);
        assert_eq!(
            a.take_log(),
            ["fifo: line 9: column 4097: line longer than 4096 bytes; skipped"]
        );
        send(&mut a, "up web.lan 10.0.0.1\ndel db.lan");
        assert_eq!(
            (m.v4("web.lan").as_str(), m.v4("db.lan").as_str()),
            ("10.0.0.1", "NotOurs")
        );
    }

    #[test]
    fn nothing_is_visible_before_publish() {
        let m = Mem::new();
        let mut a = m.agent(false, CONF, 0);
        a.fifo_piece(Piece::Line(b"down web.lan 10.0.0.1"));
        assert_eq!(m.v4("web.lan"), "10.0.0.1");
        a.publish();
        assert_eq!(m.v4("web.lan"), "10.0.0.2");
    }

    #[test]
    fn reload_applies_the_difference_and_keeps_runtime_state() {
        let m = Mem::new();
        let conf = "add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd gone.lan 10.0.9.9\nreset a.lan\n";
        let mut a = m.agent(false, conf, 0);
        send(
            &mut a,
            "add runtime.lan 10.0.5.5\ndown a.lan 10.0.0.2\nadd a.lan 10.0.0.3",
        );
        for _ in 0..4 {
            m.v4("a.lan");
        }
        assert_eq!((m.count(0, 0), m.count(0, 2)), (2, 2));
        a.take_log();
        a.reload(config::parse(
            b"table /elsewhere\nadd a.lan 10.0.0.2 weight=5\nadd new.lan 10.0.7.7\nreset a.lan\n",
        ));
        a.publish();
        assert_eq!(
            a.take_log(),
            [
                "reload: `table` changed to /elsewhere; still using /run/lbfo/table until the agent is restarted",
                "reload: del a.lan 10.0.0.1 (no longer in the config)",
                "reload: del gone.lan (no longer in the config)",
                "reload: conf: 3 commands applied; 3 services",
            ]
        );
        assert_eq!(m.v4("gone.lan"), "NotOurs");
        assert_eq!(
            m.v4("runtime.lan"),
            "10.0.5.5",
            "services made through the FIFO stay"
        );
        assert_eq!(m.v4("new.lan"), "10.0.7.7");
        assert_eq!(
            m.v4("a.lan"),
            "10.0.0.3",
            "10.0.0.2 is still down, 10.0.0.1 is gone"
        );
        assert_eq!(m.count(0, 2), 3, "counters survive the reload");
        let s = a.slots[0].unwrap();
        assert_eq!(
            s.backends[1].map(|b| (b.weight, b.up)),
            Some((5, false)),
            "same position, runtime down kept"
        );

        // A broken config changes nothing.
        a.reload(config::parse(
            b"add a.lan 10.0.0.1\ndown zzz.lan 10.0.0.1\n",
        ));
        a.publish();
        assert_eq!(
            a.take_log(),
            ["reload: conf:2:1: no such service; keeping the running configuration"]
        );
        assert_eq!(m.v4("new.lan"), "10.0.7.7");

        // The next reload diffs against the last good config, not the broken one.
        a.reload(config::parse(b"add a.lan 10.0.0.2\n"));
        a.publish();
        assert_eq!(m.v4("new.lan"), "NotOurs");
        assert_eq!(m.v4("runtime.lan"), "10.0.5.5");
    }

    #[test]
    fn restart_adopts_the_table() {
        let m = Mem::new();
        {
            let mut a = m.agent(
                false,
                "add b.lan 10.0.1.1\nadd a.lan 10.0.0.1\nadd a.lan 10.0.0.2\n",
                0,
            );
            send(&mut a, "down a.lan 10.0.0.1\nadd runtime.lan 10.0.5.5");
        }
        for _ in 0..3 {
            m.v4("a.lan");
        }
        let mut a = m.agent(
            true,
            "add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd c.lan 10.0.2.1\n",
            5000,
        );
        assert_eq!(
            a.take_log(),
            [
                "start: adopted 3 services from the existing table",
                "start: del b.lan (no longer in the config)",
                "start: del runtime.lan (no longer in the config)",
                "start: conf: 3 commands applied; 2 services",
            ]
        );
        assert_eq!(a.slots[1].unwrap().name.as_str(), "a.lan", "slots stay put");
        assert_eq!(m.count(1, 1), 3, "counters stay");
        assert_eq!(m.v4("a.lan"), "10.0.0.2", "runtime down state stays");
        assert_eq!(m.v4("b.lan"), "NotOurs");
        assert_eq!(m.v4("c.lan"), "10.0.2.1");
        assert_eq!(m.heartbeat(), 1_005_000);
    }

    #[test]
    fn limits_delete_backends_on_time() {
        let m = Mem::new();
        let mut a = m.agent(false, "add l.lan 10.0.0.1 limit=3\nadd l.lan 10.0.0.2\n", 0);
        a.take_log();
        assert_eq!(a.next_deadline(), LIMIT_CHECK_MS);
        for _ in 0..6 {
            m.v4("l.lan");
        }
        a.tick(at(50));
        assert!(a.take_log().is_empty(), "not due yet");
        a.tick(at(100));
        assert_eq!(
            a.take_log(),
            ["limit reached: l.lan 10.0.0.1 after 3 lookups"]
        );
        assert_eq!(
            (m.v4("l.lan").as_str(), m.v4("l.lan").as_str()),
            ("10.0.0.2", "10.0.0.2")
        );
        assert_eq!(m.count(0, 0), 0, "the freed position's counter restarts");
        assert_eq!(
            a.next_deadline(),
            HEARTBEAT_MS,
            "no limits left: only the heartbeat is due"
        );
    }

    #[test]
    fn heartbeat_every_second() {
        let m = Mem::new();
        let mut a = m.agent(false, "", 0);
        assert_eq!(a.next_deadline(), 1000);
        a.tick(at(999));
        assert_eq!(m.heartbeat(), 1_000_000);
        a.tick(at(1003));
        assert_eq!((m.heartbeat(), a.next_deadline()), (1_001_003, 2003));
    }

    /// Two agents in cluster mode over plain memory, wired back to back, with a fake clock.
    #[test]
    fn cluster_agents_share_commands_keep_counters_local_and_hold_until_caught_up() {
        use crate::cluster::wire::Key;
        let (ma, mb) = (Mem::new(), Mem::new());
        fn mk<'m>(m: &'m Mem, name: &str, adopt: bool, conf: &str, t: u64) -> Agent<'m> {
            let w = Writer::attach(&m.table).unwrap();
            let c = CountersView::new_checked(&m.counters, &w.view()).unwrap();
            let mut config = config::parse(conf.as_bytes()).unwrap();
            config.mtime_ms = 500_000;
            let cl = Cluster::new(name, Key::new(b"k".to_vec()), 1_000_000 + t, t, adopt);
            Agent::start(w, c, adopt, "conf".into(), config, at(t), Some(cl))
        }
        let from = |n: u8| SocketAddr::from(([10, 0, 0, n], 7946));
        // Delivers a's outbox to b and b's to a until both are quiet.
        fn settle(a: &mut Agent<'_>, b: &mut Agent<'_>, from: impl Fn(u8) -> SocketAddr) {
            loop {
                let (oa, ob) = (a.take_outbox(), b.take_outbox());
                if oa.is_empty() && ob.is_empty() {
                    return;
                }
                for (_, d) in oa {
                    b.datagram(&d, from(1));
                }
                for (_, d) in ob {
                    a.datagram(&d, from(2));
                }
                a.sync();
                b.sync();
            }
        }
        let mut a = mk(&ma, "a", false, CONF, 0);
        let mut b = mk(&mb, "b", false, "add other.lan 10.9.9.9\n", 0);
        settle(&mut a, &mut b, from);
        assert_eq!(mb.v4("web.lan"), "10.0.0.1", "a's config reached b");
        assert_eq!(ma.v4("other.lan"), "10.9.9.9", "and b's reached a");
        send(&mut a, "down web.lan 10.0.0.1\nreset web.lan");
        settle(&mut a, &mut b, from);
        assert_eq!(mb.v4("web.lan"), "10.0.0.2");
        let log = b.take_log();
        assert!(
            log.contains(&"cluster: down web.lan 10.0.0.1".to_owned()),
            "{log:?}"
        );
        for _ in 0..3 {
            mb.v4("other.lan");
        }
        send(&mut b, "weight other.lan 10.9.9.9 4");
        settle(&mut a, &mut b, from);
        // other.lan is in slot 0 on b (its config), slot 1 on a.
        assert_eq!(mb.count(0, 0), 3, "b's counters are b's own");
        assert_eq!(ma.count(1, 0), 1, "a's one lookup, not b's three");

        // `a` restarts on its old table with only its config: the old table keeps answering
        // (no flash of the config's 10.0.0.1) until it has caught up.
        drop(a);
        let mut a = mk(&ma, "a", true, CONF, 10);
        assert_eq!(ma.v4("web.lan"), "10.0.0.2", "held, not rolled back");
        settle(&mut a, &mut b, from);
        // b's next digest round shows agreement; a publishes the cluster's table.
        b.tick(at(10_000));
        settle(&mut a, &mut b, from);
        assert!(!a.holding());
        assert_eq!(ma.v4("web.lan"), "10.0.0.2");
        assert_eq!(ma.v4("other.lan"), "10.9.9.9");
        assert!(a
            .take_log()
            .iter()
            .any(|l| l == "cluster: caught up; publishing the cluster's table"));
    }

    #[test]
    fn a_cluster_reload_replicates_what_the_config_dropped_and_added() {
        use crate::cluster::wire::Key;
        let m = Mem::new();
        let w = Writer::attach(&m.table).unwrap();
        let c = CountersView::new_checked(&m.counters, &w.view()).unwrap();
        let cl = Cluster::new("a", Key::new(b"k".to_vec()), 1_000_000, 0, false);
        let mut config = config::parse(CONF.as_bytes()).unwrap();
        config.mtime_ms = 900_000;
        let mut a = Agent::start(w, c, false, "conf".into(), config, at(0), Some(cl));
        a.take_outbox();
        let mut peer = Cluster::new("b", Key::new(b"k".to_vec()), 1_000_000, 0, false);
        let mut reloaded = config::parse(b"add db.lan 10.0.3.3\n").unwrap();
        reloaded.mtime_ms = 1_000_500;
        a.wake(at(600));
        a.reload(Ok(reloaded));
        a.publish();
        for (_, d) in a.take_outbox() {
            peer.datagram(&d, SocketAddr::from(([10, 0, 0, 1], 7946)), 1_000_600);
        }
        assert_eq!(m.v4("web.lan"), "NotOurs");
        assert_eq!(m.v4("db.lan"), "10.0.3.3");
        assert!(
            peer.replica.service("web.lan").is_none(),
            "the removal reached the peer"
        );
        assert!(peer.replica.service("db.lan").is_some(), "and the addition");
    }
}
