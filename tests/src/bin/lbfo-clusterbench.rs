//! `lbfo-clusterbench`: the cluster's figures on a real multi-host bed (run by
//! `scripts/bench-cluster.sh`; needs root). Prints figures; asserts nothing about time.
//!
//! - propagation: a FIFO write on host 1 until the table of hosts 2-4 answers the change
//!   (read through core's checked reader over each host's mapped table, as the NSS module reads
//!   it), p50/p99 over many commands; and the bytes and datagrams the cluster sent per command
//!   (all hosts' counters, less the idle digest traffic measured just before);
//! - convergence: 16 agents, 20% loss on every link, a burst of 100 commands spread over the
//!   hosts, until all 16 tables are identical and complete.
#![allow(unsafe_code)] // the hosts' mapped tables as atomic words.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use lbfo_core::{Lookup, TableView, Want};
use lbfo_tests::bed::Bed;
use lbfo_tests::Host;

/// A read-only mapping of a table file (memmap2's `MmapRaw`: a pointer, never a `&[u8]`, since
/// the agent changes the pages).
struct Map(memmap2::MmapRaw);

impl Map {
    fn open(path: &Path) -> Map {
        let f = std::fs::File::open(path).expect("open table");
        Map(memmap2::MmapOptions::new()
            .map_raw_read_only(&f)
            .expect("mmap"))
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: page-aligned, `len` bytes mapped for our lifetime; only read through atomics.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<AtomicU64>(), self.0.len() / 8) }
    }

    fn v4(&self, name: &str) -> String {
        match TableView::new_checked(self.words()) {
            Ok(v) => match v.lookup(name.as_bytes(), Want::V4, None) {
                Lookup::Found(a) => a.v4.map(|a| a.to_string()).unwrap_or_default(),
                other => format!("{other:?}"),
            },
            Err(_) => String::new(),
        }
    }

    /// (services, hash of their content without slots or positions).
    fn content(&self) -> (usize, u64) {
        let Ok(v) = TableView::new_checked(self.words()) else {
            return (0, 0);
        };
        let mut rows: Vec<String> = (0..v.layout().max_services)
            .filter_map(|s| v.service(s))
            .map(|s| {
                let mut b: Vec<String> = s.iter().map(|(_, b)| format!("{b:?}")).collect();
                b.sort();
                format!("{} {} {}", s.name, s.policy, b.join(","))
            })
            .collect();
        rows.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in rows.join("\n").bytes() {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        (rows.len(), h)
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sent(h: &Host) -> (u64, u64) {
    let text =
        std::fs::read_to_string(format!("{}.cluster", h.table().display())).unwrap_or_default();
    let w: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let n = |i: usize| w.get(i).and_then(|v| v.parse().ok()).unwrap_or(0u64);
    (n(5), n(6))
}

fn total_sent(hosts: &[Host]) -> (u64, u64) {
    hosts
        .iter()
        .map(sent)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn cluster(n: usize, key: &Path) -> (Bed, Vec<Host>) {
    let bed = Bed::new(n);
    let mut hosts = Vec::new();
    for i in 1..=n {
        let mut h = bed.agent_host(
            i,
            &format!(
                // Room for the convergence burst's 100 services besides web.lan.
                "capacity 128 8\ngroup 239.77.0.1:7946\niface eth0\nnode h{i}\nkey {}\npolicy web.lan failover\nadd web.lan 10.0.0.11 prio=1\nadd web.lan 10.0.0.12 prio=2\n",
                key.display()
            ),
        );
        h.start();
        hosts.push(h);
    }
    (bed, hosts)
}

fn main() {
    assert!(Bed::available(), "needs root and iproute2");
    let n_cmds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400);
    let dir = std::env::temp_dir().join(format!("lbfo-clusterbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    let agent = lbfo_tests::artefacts().agent;
    assert!(std::process::Command::new(agent)
        .arg("keygen")
        .arg(&key)
        .status()
        .unwrap()
        .success());

    // Propagation.
    let (bed, hosts) = cluster(4, &key);
    let maps: Vec<Map> = hosts.iter().map(|h| Map::open(&h.table())).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while maps.iter().any(|m| m.v4("web.lan") != "10.0.0.11") {
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle_ms = 2000;
    let a = total_sent(&hosts);
    std::thread::sleep(Duration::from_millis(idle_ms));
    let b = total_sent(&hosts);
    let idle = (
        (b.0 - a.0) as f64 / idle_ms as f64,
        (b.1 - a.1) as f64 / idle_ms as f64,
    );
    let (mut each, mut last) = (Vec::new(), Vec::new());
    let before = total_sent(&hosts);
    let t_all = Instant::now();
    for k in 0..n_cmds {
        let (line, want) = if k % 2 == 0 {
            ("down web.lan 10.0.0.11\n", "10.0.0.12")
        } else {
            ("up web.lan 10.0.0.11\n", "10.0.0.11")
        };
        let t0 = Instant::now();
        hosts[0].send(line);
        let mut seen = [None::<f64>; 3];
        while seen.iter().any(Option::is_none) {
            for (j, m) in maps[1..].iter().enumerate() {
                if seen[j].is_none() && m.v4("web.lan") == want {
                    seen[j] = Some(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "command {k} never arrived"
            );
            std::thread::yield_now();
        }
        let s: Vec<f64> = seen.iter().flatten().copied().collect();
        each.extend(&s);
        last.push(s.iter().copied().fold(0.0, f64::max));
    }
    let busy_ms = t_all.elapsed().as_secs_f64() * 1e3;
    // Status files are rewritten every 200 ms: wait for a fresh one.
    std::thread::sleep(Duration::from_millis(450));
    let after = total_sent(&hosts);
    let elapsed = busy_ms + 450.0;
    let dgrams = (after.0 - before.0) as f64 - idle.0 * elapsed;
    let bytes = (after.1 - before.1) as f64 - idle.1 * elapsed;
    each.sort_by(f64::total_cmp);
    last.sort_by(f64::total_cmp);
    println!("## Propagation (4 hosts, IPv4 group, {n_cmds} commands on host 1)");
    println!();
    println!("| measure | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| FIFO write -> table changed, each of hosts 2-4 | {:.3} | {:.3} | {:.3} |",
        pct(&each, 0.5),
        pct(&each, 0.99),
        pct(&each, 1.0)
    );
    println!(
        "| FIFO write -> all of hosts 2-4 changed | {:.3} | {:.3} | {:.3} |",
        pct(&last, 0.5),
        pct(&last, 0.99),
        pct(&last, 1.0)
    );
    println!();
    println!("per command on the wire (all hosts, idle digest traffic subtracted): {:.2} datagrams, {:.0} bytes", dgrams / n_cmds as f64, bytes / n_cmds as f64);
    println!(
        "idle: {:.1} datagrams/s, {:.0} bytes/s for 4 hosts (digests)",
        idle.0 * 1e3,
        idle.1 * 1e3
    );
    drop(maps);
    drop(hosts);
    drop(bed);

    // Convergence.
    let n = 16;
    let (bed, hosts) = cluster(n, &key);
    let maps: Vec<Map> = hosts.iter().map(|h| Map::open(&h.table())).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while maps.iter().any(|m| m.content().0 != 1) {
        assert!(Instant::now() < deadline, "cluster did not form");
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 1..=n {
        bed.loss(i, 20);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    for k in 0..100 {
        hosts[k % n].send(&format!(
            "add b{k}.lan 10.3.{}.{} weight={}\n",
            k / 200,
            k % 200 + 1,
            k % 3 + 1
        ));
    }
    let burst = t0.elapsed();
    let mut polls = 0;
    loop {
        let c: Vec<(usize, u64)> = maps.iter().map(Map::content).collect();
        polls += 1;
        if c.iter().all(|x| *x == c[0] && x.0 == 101) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no convergence in 30 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t0.elapsed();
    println!();
    println!(
        "## Convergence (16 agents, 20% loss on every link, 100 commands over {:.1} ms)",
        burst.as_secs_f64() * 1e3
    );
    println!();
    println!(
        "all 16 tables identical and complete after {:.0} ms ({polls} polls; target <= 2000 ms)",
        took.as_secs_f64() * 1e3
    );
    drop(maps);
    drop(hosts);
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
}
