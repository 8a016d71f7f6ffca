//! The agent in a cluster: datagrams in and out, and the slots brought to the replica
//! (`reconcile`) with ordinary table commands, so slots and backend positions, and with them the
//! counters, stay put whatever the replica's order of changes.

use std::net::SocketAddr;

use lbfo_core::table::ApplyError;
use lbfo_core::{Command, Service};

use super::{Agent, Now, CLUSTER_STATUS_MS};
use crate::cluster::wire::DropReason;
use crate::cluster::{Cluster, Dest};
use crate::vecmap::VecSet;

/// Changes that came only as repairs (entries sent to this node alone while it catches up) are
/// taken into the table once no repair brought news for this long. The state file is written
/// (and fsynced) before the table shows a change, and in a cluster it holds the whole replica: a
/// node catching up (back from a partition, a joiner) takes thousands of entries a datagram at a
/// time, and saving after each cost it more than the catching up itself. So the repairs of one
/// catching up are saved and shown together, when they stop. Commands, this node's own and those
/// heard from the group, are taken in (and saved) at once.
pub const REPAIRS_QUIET_MS: u64 = 25;
/// ... or at the latest this long after the first of them, for repairs that do not stop.
pub const REPAIRS_MAX_MS: u64 = 500;

impl<'m> Agent<'m> {
    /// Handles a datagram from the cluster socket.
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.datagram(bytes, from, self.now.mono_ms, self.now.wall_ms);
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
            .as_deref_mut()
            .map_or_else(Vec::new, Cluster::take_outbox)
    }

    /// Brings the slots to the replica for every service it changed, then publishes (the state
    /// file first); but changes that came only as repairs wait until they stop (see
    /// [`Agent::repairs_due`]).
    pub fn sync(&mut self) {
        if self.holding() {
            return;
        }
        if self.held {
            self.held = false;
            self.log("cluster: caught up; publishing the cluster's table".to_owned());
            self.reconcile_all();
        }
        if self.repairs_due().is_some_and(|t| self.now.mono_ms < t) {
            return;
        }
        let changed = self
            .cluster
            .as_deref_mut()
            .map(Cluster::take_changed)
            .unwrap_or_default();
        self.state_dirty |= !changed.is_empty();
        for name in changed {
            self.reconcile(&name);
        }
        self.publish();
    }

    /// When changes that came only as repairs are taken into the table: [`REPAIRS_QUIET_MS`]
    /// after the last repair that brought news, or [`REPAIRS_MAX_MS`] after the first, if some
    /// are waiting and a state file is kept; `None` if nothing waits, or what waits holds a
    /// command heard from the group (taken in at once).
    pub(super) fn repairs_due(&self) -> Option<u64> {
        let c = self.cluster.as_deref()?;
        let (first, last) = c.news().filter(|_| !c.heard_command())?;
        (self.saver.is_some() && self.config.state.is_some()).then(|| {
            last.saturating_add(REPAIRS_QUIET_MS)
                .min(first.saturating_add(REPAIRS_MAX_MS))
        })
    }

    pub(super) fn reconcile_all(&mut self) {
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
    pub(super) fn reconcile(&mut self, name: &str) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let want = c.replica.service(name);
        for (cmd, r) in self.reconcile_to(name, want) {
            match r {
                Ok(()) => self.log(format!("cluster: {cmd}")),
                Err(e) => {
                    if matches!(e, ApplyError::TableFull(_) | ApplyError::ServiceFull(_)) {
                        self.capacity_refused += 1;
                    }
                    self.log(format!("cluster: {e}; not applied here ({cmd})"));
                }
            }
        }
    }

    /// Makes the slot of `name` match `want` with ordinary table commands (so slots and backend
    /// positions, and with them the counters, stay put); returns what it applied.
    pub(super) fn reconcile_to(
        &mut self,
        name: &str,
        want: Option<Service>,
    ) -> Vec<(Command, Result<(), ApplyError>)> {
        let have = self.service_named(name).map(|(_, s)| *s);
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

    /// The cluster's state for `status`, when it is due to be written again.
    pub fn cluster_status(&mut self, now: Now) -> Option<String> {
        let c = self.cluster.as_ref()?;
        if now.mono_ms < self.next_cluster_status || self.status_events == Some(c.events()) {
            return None;
        }
        self.status_events = Some(c.events());
        self.next_cluster_status = now.mono_ms + CLUSTER_STATUS_MS;
        let refused = self.capacity_refused;
        Some(format!(
            "{}capacity_refused {refused}\n",
            c.status_lines(now.wall_ms)
        ))
    }
}
