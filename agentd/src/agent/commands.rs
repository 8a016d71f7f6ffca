//! Commands into the agent: FIFO lines (parsed, applied or refused with the reason), and the
//! one path every command made on this node takes (`command`: applied alone, or stamped and
//! replicated in a cluster), down to the table (`apply`, which notes what to publish).

use lbfo_core::cmd::{parse_bytes, Setting};
use lbfo_core::table::ApplyError;
use lbfo_core::{Command, Line};

use super::Agent;
use crate::cluster::Dest;
use crate::control::fifo::{Piece, MAX_LINE};

impl<'m> Agent<'m> {
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

    /// A command made on this node: applied locally, and in a cluster stamped, replicated and
    /// queued for the group. `reset` is always local.
    pub(super) fn command(&mut self, cmd: &Command) -> Result<(), ApplyError> {
        let wall = self.now.wall_ms;
        let Some(c) = self.cluster.as_mut() else {
            return self.apply(cmd);
        };
        if matches!(cmd, Command::Reset { .. }) {
            return self.apply(cmd);
        }
        let entries = c.replica.command(cmd, wall)?;
        c.send_entries(Dest::All, &entries, wall);
        self.state_dirty = true;
        if !self.holding() {
            self.reconcile(cmd.service().as_str());
        }
        Ok(())
    }

    /// Applies one command to the slots (finding the service by `names`, not by walking them)
    /// and notes what to publish.
    pub(super) fn apply(&mut self, cmd: &Command) -> Result<(), ApplyError> {
        let found = self.names.get(cmd.service().as_str()).copied();
        let ch = self.table().apply_at(found, cmd)?;
        if ch.index {
            match self.slots.get(ch.slot).and_then(Option::as_ref) {
                Some(s) => self.names.insert(s.name.as_str().to_owned(), ch.slot),
                None => self.names.remove(cmd.service().as_str()),
            };
        }
        self.state_dirty = true;
        self.changes += 1;
        if ch.record || ch.index {
            self.pending.slots.insert(ch.slot, ());
        }
        if ch.zero != 0 || ch.zero_ticket {
            self.pending.zero.push((ch.slot, ch.zero, ch.zero_ticket));
        }
        self.pending.index |= ch.index;
        if ch.index || matches!(cmd, Command::Policy { .. }) {
            self.shape += 1;
        }
        Ok(())
    }
}

/// Why a setting sent through the FIFO is refused, and how to change it: settings live in the
/// config file only. A reload (SIGHUP) applies `hosts-file`, `dnsmasq-pid`, `check` and
/// `max-lookup-rate`; the others name files, sockets and keys the agent opened at start, so they
/// need a restart.
fn setting_refused(s: &Setting<'_>) -> String {
    let how = match s {
        Setting::HostsFile(_)
        | Setting::DnsmasqPid(_)
        | Setting::Check(_)
        | Setting::MaxLookupRate(_)
        | Setting::Capacity(_) => "change it in the config file and reload (SIGHUP)",
        _ => "change it in the config file and restart the agent (a reload keeps the running one)",
    };
    format!(
        "`{}` is a setting of the config file, not a FIFO command; {how}",
        s.keyword()
    )
}
