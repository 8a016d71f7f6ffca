//! The state file from the agent's side: what to save (the table as commands alone, the
//! replica's entries in a cluster) and when: at the publish that follows a change, before the
//! table is written; but changes that came only as repairs (a node catching up) at most once
//! per [`SAVE_PEERS_MS`].

use lbfo_core::Command;

use super::Agent;
use crate::table::state;

/// How often at most changes that came only as repairs are saved. In a cluster the state file
/// holds the whole replica, and a node catching up (back from a partition, a joiner) takes
/// thousands of entries a datagram at a time: saving after each cost it more than the catching
/// up itself. A command, this node's own or a peer's heard from the group, is saved at once, so
/// a whole cluster losing power just after it keeps it on every node that heard it; what a
/// repair brings was already held by the peer that sent it.
pub const SAVE_PEERS_MS: u64 = 1000;

impl<'m> Agent<'m> {
    /// The state to persist, if `state PATH` is set and anything changed since the last call:
    /// the table as commands (alone) or the replica's entries (in a cluster).
    pub(super) fn take_state(&mut self) -> Option<Vec<u8>> {
        if !self.state_dirty || self.config.state.is_none() || self.save_deferred() {
            return None;
        }
        self.state_dirty = false;
        self.state_now = false;
        self.saved_ms = self.now.mono_ms;
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

    /// Whether the changes pending came only as repairs and the last save was less than
    /// [`SAVE_PEERS_MS`] ago.
    fn save_deferred(&self) -> bool {
        self.cluster.is_some()
            && !self.state_now
            && self.now.mono_ms < self.saved_ms.saturating_add(SAVE_PEERS_MS)
    }

    /// When a deferred save is due (monotonic ms), if one is pending.
    pub(super) fn save_deadline(&self) -> Option<u64> {
        (self.state_dirty && self.saver.is_some() && self.save_deferred())
            .then(|| self.saved_ms.saturating_add(SAVE_PEERS_MS))
    }

    /// Writes the state file if anything changed (at most once per publish, so once per batch;
    /// repairs alone at most once per [`SAVE_PEERS_MS`]).
    pub(super) fn save(&mut self) {
        if self.saver.is_none() {
            return;
        }
        let own = self.state_now;
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
                self.state_now = own;
                if !self.save_failing {
                    self.log(format!("state: cannot write: {e}"));
                }
                self.save_failing = true;
            }
        }
    }
}
