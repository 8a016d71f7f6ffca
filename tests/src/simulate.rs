//! Issue 18's scenarios in the cluster simulator (`lbfo_agentd::cluster::sim`), for
//! `lbfo-clustersim` (16 to 1,000 nodes). Each scenario is the namespace bed's
//! (`lbfo-clusterbench`), in virtual time: the same commands, the same loss, the same table, so
//! the figures at 16 and 64 nodes can be set beside the bed's.

use lbfo_agentd::cluster::replica::Replica;
use lbfo_agentd::cluster::sim::{table, Cost, Sim};

/// The whole cluster's traffic and its nodes' wake-ups, per second of an idle minute.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Datagrams per second, all nodes.
    pub datagrams: f64,
    /// Bytes per second, all nodes.
    pub bytes: f64,
    /// Wake-ups per node per second: the most, and the mean.
    pub wakes: (f64, f64),
}

/// `n` nodes started together, a minute without change, then a minute measured.
pub fn idle(n: usize, cost: Cost) -> (Sim, Idle) {
    let mut s = Sim::new(n, 42);
    s.cost = cost;
    // The bed's agents have web.lan in their config, for the propagation that follows.
    for line in [
        "policy web.lan failover",
        "add web.lan 10.0.0.11 prio=1",
        "add web.lan 10.0.0.12 prio=2",
    ] {
        s.command(0, line);
    }
    s.run(60_000, |_| false);
    let (sent, wakes) = (s.sent, s.wakes.clone());
    s.run(120_000, |_| false);
    let per_node: Vec<f64> = s
        .wakes
        .iter()
        .zip(&wakes)
        .map(|(b, a)| (b - a) as f64 / 60.0)
        .collect();
    let idle = Idle {
        datagrams: (s.sent.0 - sent.0) as f64 / 60.0,
        bytes: (s.sent.1 - sent.1) as f64 / 60.0,
        wakes: (
            per_node.iter().copied().fold(0.0, f64::max),
            per_node.iter().sum::<f64>() / n as f64,
        ),
    };
    (s, idle)
}

/// After [`idle`]: `k` commands on node 0, one at a time; per command, the virtual ms until
/// every other node holds it. Sorted.
pub fn propagation(s: &mut Sim, k: usize) -> Vec<f64> {
    let mut took = Vec::new();
    for i in 0..k {
        let line = if i % 2 == 0 {
            "down web.lan 10.0.0.11"
        } else {
            "up web.lan 10.0.0.11"
        };
        s.run(s.now + 50, |_| false);
        let (t0, us) = (s.now, s.clock_us());
        s.command(0, line);
        // Asked every 10 µs: a command reaches every node within about a millisecond.
        s.step_us = 10;
        if s.run(t0 + 10_000, Sim::converged) {
            took.push((s.clock_us() - us) as f64 / 1000.0);
        }
        s.step_us = 1000;
    }
    took.sort_by(f64::total_cmp);
    took
}

/// After [`idle`]: 20% loss on every link, 100 new services from the nodes in turn: virtual
/// ms until every node holds the same state, the rounds behind it, the datagrams sent.
pub fn burst(s: &mut Sim) -> Option<(u64, u32, u64)> {
    let n = s.nodes.len();
    s.loss = 0.2;
    s.depth.iter_mut().for_each(|d| *d = 0);
    let (t0, sent) = (s.now, s.sent.0);
    for k in 0..100 {
        let line = format!(
            "add b{k}.lan 10.3.{}.{} weight={}",
            k / 200,
            k % 200 + 1,
            k % 3 + 1
        );
        s.command(k % n, &line);
    }
    let ok = s.run(t0 + 60_000, Sim::converged);
    s.loss = 0.0;
    let rounds = s.depth.iter().copied().max().unwrap_or(0);
    ok.then_some((s.now - t0, rounds, s.sent.0 - sent))
}

/// `n` nodes holding `full`, 3 s to settle, then a joiner with nothing: virtual ms until it
/// holds their state, the datagrams sent meanwhile, and the joiner's CPU time (ms).
pub fn joiner(n: usize, full: &Replica, cost: Cost) -> (Sim, Option<(u64, u64, u64)>) {
    let mut s = Sim::new(0, 9);
    s.cost = cost;
    for _ in 0..n {
        s.add_node(Some(full));
    }
    s.run(3_000, |_| false);
    let (t0, sent) = (s.now, s.sent.0);
    let j = s.add_node(None);
    let ok = s.run(t0 + 30_000, |s| s.same(0, j));
    let out = ok.then_some((s.now - t0, s.sent.0 - sent, s.cpu_us[j] / 1000));
    (s, out)
}

/// After [`joiner`]: node 1 cut off for 10 s while 20 services change on node 0: virtual ms
/// from its return until it holds node 0's state, and its CPU time meanwhile (ms).
pub fn partition(s: &mut Sim) -> Option<(u64, u64)> {
    s.run(s.now + 3_000, |_| false);
    s.cut[1] = true;
    s.run(s.now + 1_000, |_| false);
    for k in 0..20usize {
        let i = k * 197 % 4095;
        let line = format!("weight s{i}.lan 10.3.{}.{} {}", i / 250, i % 250 + 1, k + 3);
        s.command(0, &line);
    }
    s.run(s.now + 9_000, |_| false);
    s.cut[1] = false;
    let (t0, cpu) = (s.now, s.cpu_us[1]);
    s.run(t0 + 30_000, |s| s.same(0, 1))
        .then_some((s.now - t0, (s.cpu_us[1] - cpu) / 1000))
}

/// The full table the bed's agents hold: 4,095 services of 16 backends and `web.lan`.
pub fn full_table(services: usize) -> Replica {
    let mut r = table(services.saturating_sub(1), 16);
    for line in [
        "policy web.lan failover",
        "add web.lan 10.0.0.11 prio=1",
        "add web.lan 10.0.0.12 prio=2",
    ] {
        if let Ok(Some(lbfo_core::Line::Command(cmd))) = lbfo_core::parse_line(line) {
            let _ = r.command(&cmd, lbfo_agentd::cluster::sim::T0 - 60_000);
        }
    }
    r
}

/// p-th quantile of sorted `v` (NaN when empty).
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}
