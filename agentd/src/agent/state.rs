//! The state file from the agent's side: what to save (the table as commands alone, the
//! replica's entries in a cluster) and when (once per publish that follows a change, before the
//! table is written; see `Agent::sync` for how often repairs are published).

use lbfo_core::Command;

use super::Agent;
use crate::table::state;

impl<'m> Agent<'m> {
    /// The state to persist, if `state PATH` is set and anything changed since the last call:
    /// the table as commands (alone) or the replica's entries (in a cluster).
    pub(super) fn take_state(&mut self) -> Option<Vec<u8>> {
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

    /// Writes the state file if anything changed (at most once per publish, so once per batch).
    pub(super) fn save(&mut self) {
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
}
