//! The config at start and on SIGHUP: what the old config defined and the new one does not is
//! deleted, the new one's commands are applied on top (`reset` skipped, so counters survive),
//! settings that need a restart are kept as they were, and the dnsmasq export follows.

use crate::sys::fs::Shown;

use lbfo_core::Command;

use super::Agent;
use crate::cluster::Dest;
use crate::control::config::{self, Config, ConfigError};
use crate::table::export::Export;

impl<'m> Agent<'m> {
    /// Brings the live table to `config`: removes what the current config defines and `config`
    /// does not, then applies `config`'s commands on top (skipping `reset`).
    pub(super) fn load(&mut self, config: Config, what: &str) {
        let file = self.config_path.shown().to_string();
        for cmd in config::removals(&self.config.members, &config.members) {
            // A service or backend already deleted through the FIFO is fine.
            if self.command(&cmd).is_ok() {
                self.log(format!("{what}: {cmd} (no longer in the config)"));
            }
        }
        // Between the removals (a smaller capacity may hold only what is left) and the commands
        // (a larger one may be what they need).
        self.resize(config.capacity, what);
        let wall = self.now.wall_ms;
        for (line, cmd) in &config.commands {
            if matches!(cmd, Command::Reset { .. }) {
                continue;
            }
            if let Some(c) = self.cluster.as_mut() {
                let entries = c.replica.config_line(cmd, config.mtime_ms, wall);
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
    pub(super) fn configure_export(&mut self, config: &Config, what: &str) {
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
}
