//! `lbfo-clustersim`: the cluster protocol at 16 to 1,000 nodes, by simulation (issue 18). N
//! instances of the agent's own cluster code (`lbfo_agentd::cluster::sim`) over a simulated
//! network with seeded loss, 0-1 ms delay per link and a virtual clock, each node a CPU of its
//! own costed as the real agent (`Cost::AGENT`). Prints a Markdown table; asserts nothing.
//! `lbfo-clustersim [N...]` (default 16 64 256 1000).
//!
//! Per N, the scenarios of the namespace bed (`lbfo-clusterbench`, `lbfo_tests::simulate`):
//! the traffic of the whole cluster and each node's wake-ups in the minute after a minute
//! without change; propagation of a command to every other node; after a burst of 100 commands
//! spread over the nodes at 20% loss on every link, the virtual time until every node holds the
//! same state and the rounds (the longest chain of exchanges behind it); with the table full
//! (4,096 services of 16 backends) on every node, the time for a joiner to hold it all, and for
//! a node cut off for 10 s while 20 services changed to catch up, each with that node's CPU time
//! (the bed reports the agent's own beside it).
use std::time::Instant;

use lbfo_agentd::cluster::sim::Cost;
use lbfo_tests::simulate::{self, pct};

fn row(n: usize, full: &lbfo_agentd::cluster::replica::Replica) -> String {
    let t = Instant::now();
    let (mut s, idle) = simulate::idle(n, Cost::AGENT);
    let prop = simulate::propagation(&mut s, 20);
    let burst = simulate::burst(&mut s);
    drop(s);
    let (mut s, join) = simulate::joiner(n, full, Cost::AGENT);
    let back = simulate::partition(&mut s);
    drop(s);
    let (bt, br, bd) = burst.map_or(
        ("not in 60 s".into(), "—".into(), "—".into()),
        |(t, r, d)| (t.to_string(), r.to_string(), d.to_string()),
    );
    let (jt, jd) = join.map_or(("not in 30 s".into(), "—".into()), |(t, d, cpu)| {
        (format!("{t} (CPU {cpu})"), d.to_string())
    });
    let pt = back.map_or("not in 30 s".into(), |(t, cpu)| format!("{t} (CPU {cpu})"));
    format!(
        "| {n} | {:.2} | {:.0} | {:.1} / {:.1} | {:.1} / {:.1} | {bt} | {br} | {bd} | {jt} | {jd} | {pt} | {:.0} |",
        idle.datagrams,
        idle.bytes,
        idle.wakes.0,
        idle.wakes.1,
        pct(&prop, 0.5),
        pct(&prop, 0.99),
        t.elapsed().as_secs_f64()
    )
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
    let full = simulate::full_table(4096);
    println!(
        "## Simulated cluster (the agent's cluster code, virtual clock, 0-1 ms delay per link)"
    );
    println!();
    println!(
        "Each node has a CPU of its own, costed as the real agent: {:?}. Times are virtual ms.",
        Cost::AGENT
    );
    println!();
    println!("| nodes | idle datagrams/s (all nodes) | idle bytes/s | wake-ups per node per s, max / mean | command → every other node, p50 / p99 ms | burst of 100 at 20% loss: identical after (ms) | rounds | datagrams until identical | joiner: full table (4,096 × 16) after (ms; its CPU) | datagrams | back from a 10 s partition (20 services changed) after (ms; its CPU) | real s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in sizes {
        println!("{}", row(n, &full));
    }
}
