//! What the agent watches on its own: usage limits (a backend whose counter reaches its
//! `limit` is deleted, on every node in a cluster) and health-check verdicts (applied as
//! ordinary `up`/`down` commands, only when they change what the table says).

use lbfo_core::addr::Ip;
use std::net::IpAddr;

use lbfo_core::cmd::Check;
use lbfo_core::Command;

use super::Agent;
use crate::health::Verdict;

impl<'m> Agent<'m> {
    /// Deletes every backend whose usage counter reached its limit.
    pub(super) fn check_limits(&mut self) {
        let mut hits = Vec::new();
        for (slot, s) in self.services() {
            for (pos, b) in s.iter().filter(|(_, b)| b.limit > 0) {
                let n = self.counters().count(slot, pos);
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

    /// Every backend of every service with a `check`, with its check.
    pub fn checked(&self) -> Vec<(Check, IpAddr)> {
        let mut out = Vec::new();
        for c in &self.config.checks {
            if let Some((_, s)) = self.services().find(|(_, s)| s.name == c.service) {
                out.extend(s.iter().map(|(_, b)| (*c, b.addr)));
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
}
