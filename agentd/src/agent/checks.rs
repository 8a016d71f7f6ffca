//! What the agent watches on its own: usage limits (a backend whose counter reaches its
//! `limit` is deleted, on every node in a cluster), health-check verdicts (applied as
//! ordinary `up`/`down` commands, only when they change what the table says) and the fastest
//! sets of `fastest` services (local to this machine, never replicated).

use lbfo_core::addr::Ip;
use std::net::IpAddr;

use lbfo_core::schedule::fastest_set;
use lbfo_core::{Command, Policy, MAX_BACKENDS};

use super::Agent;
use crate::health::{Spec, Verdict};

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
    pub fn checked(&self) -> Vec<(Spec, IpAddr)> {
        let mut out = Vec::new();
        for c in &self.config.checks {
            if let Some((_, s)) = self.service_named(c.service.as_str()) {
                out.extend(s.iter().map(|(_, b)| (c.clone(), b.addr)));
            }
        }
        out
    }

    /// Gives every `fastest` service its fastest set (`schedule::fastest_set`) from this
    /// machine's round-trip times (`rtt`: the smoothed time of a service's backend, if measured).
    /// The sets are local: they change no command, no replica and no state file. A slot is
    /// republished, and the change logged, only when its set changed.
    pub fn fastest(&mut self, rtt: impl Fn(&str, IpAddr) -> Option<u32>) {
        if self.fastest_slots.0 != self.shape {
            let slots = self
                .services()
                .filter(|(_, s)| s.policy == Policy::Fastest)
                .map(|(slot, _)| slot)
                .collect();
            self.fastest_slots = (self.shape, slots);
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
            let line = if members.is_empty() {
                format!(
                    "fastest: {}: no round-trip time; taking turns as roundrobin",
                    s.name
                )
            } else {
                format!("fastest: {}: {}", s.name, members.join(", "))
            };
            self.pending.slots.insert(slot, ());
            self.log(line);
        }
    }

    /// A health checker's verdict changed: logged, and if the table says otherwise, applied as
    /// an ordinary `up`/`down` command (replicated to the group in a cluster) and published.
    pub fn health(&mut self, v: &Verdict) {
        let word = if v.up { "up" } else { "down" };
        let current = self
            .service_named(v.service.as_str())
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
