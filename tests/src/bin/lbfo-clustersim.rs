//! `lbfo-clustersim`: the cluster protocol at 16 to 1,000 nodes, by simulation (issue 18). N
//! instances of the agent's own cluster code (`lbfo_agentd::cluster::sim`) over a simulated
//! network with seeded loss and delay and a virtual clock. Prints a Markdown table; asserts
//! nothing. `lbfo-clustersim [N...]` (default 16 64 256 1000).
//!
//! Per N: datagrams and bytes per second the whole cluster sends when idle (the minute after a
//! minute without change); after a burst of 100 commands spread over the nodes at 20% loss on
//! every link, the virtual time until every node holds the same state and the rounds (the
//! longest chain of exchanges behind it); the time for a joiner to hold the whole table of the
//! others (4,096 services of 16 backends up to 256 nodes; at 1,000 nodes, whose 1,000 full
//! copies would not fit this machine's memory, 512 services of 16).
use std::time::Instant;

use lbfo_agentd::cluster::sim::{table, Sim};

fn idle_and_burst(n: usize) -> (f64, f64, Option<(u64, u32, u64)>) {
    let mut s = Sim::new(n, 42);
    s.delay = (0, 1);
    s.run(10_000, Sim::converged);
    s.run(60_000, |_| false);
    let (d0, b0) = s.sent;
    s.run(120_000, |_| false);
    let idle = ((s.sent.0 - d0) as f64 / 60.0, (s.sent.1 - b0) as f64 / 60.0);
    s.loss = 0.2;
    s.depth.iter_mut().for_each(|d| *d = 0);
    let (t0, sent0) = (s.now, s.sent.0);
    for k in 0..100 {
        let line = format!(
            "add b{k}.lan 10.3.{}.{} weight={}",
            k / 200,
            k % 200 + 1,
            k % 3 + 1
        );
        s.command(k * 7 % n, &line);
    }
    let ok = s.run(t0 + 60_000, Sim::converged);
    let rounds = s.depth.iter().copied().max().unwrap_or(0);
    let burst = ok.then_some((s.now - t0, rounds, s.sent.0 - sent0));
    (idle.0, idle.1, burst)
}

fn joiner(n: usize) -> (usize, Option<(u64, u64)>) {
    let services = if n > 256 { 512 } else { 4096 };
    let t = table(services, 16);
    let mut s = Sim::new(0, 9);
    for _ in 0..n {
        s.add_node(Some(&t));
    }
    s.run(3_000, |_| false);
    let (t0, sent0) = (s.now, s.sent.0);
    let j = s.add_node(None);
    let ok = s.run(t0 + 30_000, |s| s.same(0, j));
    (services, ok.then_some((s.now - t0, s.sent.0 - sent0)))
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![16, 64, 256, 1000]
    } else {
        sizes
    };
    println!(
        "## Simulated cluster (the agent's cluster code, virtual clock, 0-1 ms delay per link)"
    );
    println!();
    println!("| nodes | idle datagrams/s (all nodes) | idle bytes/s | burst of 100 at 20% loss: identical after (virtual ms) | rounds | datagrams until identical | joiner: whole table after (virtual ms) | table | datagrams | real s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for n in sizes {
        let t = Instant::now();
        let (dg, by, burst) = idle_and_burst(n);
        let (services, join) = joiner(n);
        let (bt, br, bd) = burst.map_or(
            ("not in 60 s".into(), "—".into(), "—".into()),
            |(t, r, d)| (t.to_string(), r.to_string(), d.to_string()),
        );
        let (jt, jd) = join.map_or(("not in 30 s".into(), "—".into()), |(t, d)| {
            (t.to_string(), d.to_string())
        });
        println!(
            "| {n} | {dg:.2} | {by:.0} | {bt} | {br} | {bd} | {jt} | {services} × 16 | {jd} | {:.0} |",
            t.elapsed().as_secs_f64()
        );
    }
}
