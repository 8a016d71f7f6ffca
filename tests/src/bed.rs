//! The multi-host test bed: network namespaces on a bridge, each a host with its own agent and
//! its own resolver configuration.
//!
//! A [`Bed`] is one namespace holding a Linux bridge (`br0`, multicast snooping off so a host
//! whose link bounces never goes deaf) and N host namespaces, each joined to it by a veth pair
//! (`eth0` in the host, `pN` on the bridge) with 10.77.0.N/24 and fd77::N/64. Every host has
//! `/etc/netns/NAME/{nsswitch.conf,hosts}` (`hosts: lbfo files`), so `ip netns exec NAME getent`
//! asks that host's table. Faults: [`Bed::loss`] (classic-BPF tc filter on the bridge port: drops
//! that share of what the host receives; this kernel has no netem), [`Bed::split`] (ports moved
//! to a second bridge: two partitions that cannot hear each other) and [`Bed::heal`].
//!
//! **The neighbour tables are the machine's, not the namespaces'.** Linux counts every
//! namespace's ARP and neighbour-discovery entries against one limit
//! (`net.ipv{4,6}.neigh.default.gc_thresh3`, 1,024 by default). A bed of N hosts that all talk
//! to each other needs about N² entries (4,032 at 64): past the limit the kernel refuses to
//! resolve a neighbour and every unicast to it fails with ENOBUFS (`NEIGH_CREATEFAIL`), which
//! the agents count as send errors and a real LAN never shows. A bed too large for the limits
//! raises them ([`Neigh`]) and puts back what it found when it is dropped (or, after a killed
//! run, when the next bed sweeps).
//!
//! Names carry the test process's pid and a counter, so parallel tests and parallel runs never
//! clash. **Everything a bed created is deleted when it is dropped** — also when a test panics —
//! and a new bed first removes beds left by test processes that no longer exist (killed runs).
//! Needs root (or is skipped by the caller: see [`Bed::available`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{is_root, Host};

static NEXT: AtomicU32 = AtomicU32::new(0);
const PREFIX: &str = "lbfot";

/// One test bed.
#[derive(Debug)]
pub struct Bed {
    tag: String,
    /// Hosts made so far (their namespaces are `host(i)`).
    pub n: usize,
    split: Vec<usize>,
    netns: Vec<String>,
    neigh: Option<Neigh>,
}

/// Runs `ip ARGS`, panicking with its output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn etc(ns: &str) -> PathBuf {
    Path::new("/etc/netns").join(ns)
}

impl Bed {
    /// Whether beds can be made here (root, `ip` present).
    pub fn available() -> bool {
        is_root()
            && Command::new("ip")
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// A bed with `n` hosts.
    pub fn new(n: usize) -> Bed {
        sweep();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}x{k}", std::process::id());
        let mut bed = Bed {
            tag,
            n: 0,
            split: Vec::new(),
            netns: Vec::new(),
            neigh: None,
        };
        bed.neigh = Neigh::fit(n);
        let br = bed.bridge_ns();
        ip(&["netns", "add", &br]);
        bed.netns.push(br.clone());
        for b in ["br0", "br1"] {
            ip(&[
                "-n",
                &br,
                "link",
                "add",
                b,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
            ip(&["-n", &br, "link", "set", b, "up"]);
        }
        for _ in 0..n {
            bed.add_host();
        }
        bed
    }

    fn bridge_ns(&self) -> String {
        format!("{}b", self.tag)
    }

    /// Host `i`'s namespace (1-based).
    pub fn host(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// Host `i`'s IPv4 address.
    pub fn v4(&self, i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// Adds a host (a late joiner); returns its number.
    pub fn add_host(&mut self) -> usize {
        let i = self.n + 1;
        let (br, ns) = (self.bridge_ns(), self.host(i));
        ip(&["netns", "add", &ns]);
        self.netns.push(ns.clone());
        self.n = i;
        let dir = etc(&ns);
        fs::create_dir_all(&dir).expect("create /etc/netns entry");
        fs::write(dir.join("nsswitch.conf"), "hosts: lbfo files\n").expect("nsswitch.conf");
        fs::write(
            dir.join("hosts"),
            format!("127.0.0.1 localhost\n10.77.0.{i} host{i}\n192.0.2.77 fromhosts.test\n"),
        )
        .expect("hosts");
        // No duplicate-address detection: IPv6 sends would fail for about 2 s.
        for key in ["default", "all"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "sh", "-c"])
                .arg(format!("echo 0 > /proc/sys/net/ipv6/conf/{key}/accept_dad"))
                .output()
                .expect("sh");
            assert!(out.status.success(), "accept_dad: {out:?}");
        }
        let port = format!("p{i}");
        ip(&[
            "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.77.0.{i}/24"),
            "dev",
            "eth0",
        ]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("fd77::{i}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        i
    }

    /// Drops `percent` % of what host `i` receives (0 removes the filter).
    pub fn loss(&self, i: usize, percent: u32) {
        let (br, port) = (self.bridge_ns(), format!("p{i}"));
        quiet(&[
            "netns", "exec", &br, "tc", "qdisc", "del", "dev", &port, "clsact",
        ]);
        if percent == 0 {
            return;
        }
        let threshold = (u64::from(percent) << 32) / 100;
        let run = |args: &[&str]| {
            let out = Command::new("ip")
                .args(["netns", "exec", &br, "tc"])
                .args(args)
                .output()
                .expect("tc");
            assert!(
                out.status.success(),
                "tc {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["qdisc", "add", "dev", &port, "clsact"]);
        // Load a random u32; below the threshold: TC_ACT_SHOT (2), else TC_ACT_OK (0).
        let code = format!("4,32 0 0 4294963256,53 1 0 {threshold},6 0 0 2,6 0 0 0");
        run(&[
            "filter", "add", "dev", &port, "egress", "bpf", "da", "bytecode", &code,
        ]);
    }

    /// Makes host `i`'s own interface drop everything it sends (true), or nothing: a classic-BPF
    /// tc filter on the egress of its `eth0`, so the kernel refuses each send there (ENOBUFS, which
    /// it reports only to a socket with `IP_RECVERR`), as a full device queue does.
    pub fn drop_sends(&self, i: usize, drop: bool) {
        let ns = self.host(i);
        quiet(&[
            "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "clsact",
        ]);
        if !drop {
            return;
        }
        for args in [
            &["qdisc", "add", "dev", "eth0", "clsact"][..],
            &[
                "filter",
                "add",
                "dev",
                "eth0",
                "egress",
                "bpf",
                "da",
                "bytecode",
                "1,6 0 0 2",
            ][..],
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "tc"])
                .args(args)
                .output()
                .expect("tc");
            assert!(
                out.status.success(),
                "tc {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Packets that have entered the bridge from each host's port so far (everything every host
    /// sent, a datagram to the group counted once), read from the bridge's namespace.
    pub fn sent_packets(&self) -> u64 {
        let out = Command::new("ip")
            .args(["-n", &self.bridge_ns(), "-s", "-o", "link", "show"])
            .output()
            .expect("ip -s link");
        let text = String::from_utf8_lossy(&out.stdout);
        // One line per link: "N: pK@...: <...> ... RX: bytes packets ... \    B P ..."
        text.lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.starts_with('p'))
            })
            .filter_map(|l| {
                let rx = l.split("RX:").nth(1)?;
                let nums: Vec<&str> = rx.split('\\').nth(1)?.split_whitespace().collect();
                nums.get(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Splits the network: the hosts in `side` can hear only each other, the rest only each other.
    pub fn split(&mut self, side: &[usize]) {
        let br = self.bridge_ns();
        for &i in side {
            ip(&["-n", &br, "link", "set", &format!("p{i}"), "master", "br1"]);
        }
        self.split = side.to_vec();
    }

    /// Joins the two sides again.
    pub fn heal(&mut self) {
        let br = self.bridge_ns();
        for &i in &std::mem::take(&mut self.split) {
            ip(&["-n", &br, "link", "set", &format!("p{i}"), "master", "br0"]);
        }
    }

    /// Takes host `i`'s link down (true) or up.
    pub fn cut(&self, i: usize, down: bool) {
        let br = self.bridge_ns();
        let state = if down { "down" } else { "up" };
        ip(&["-n", &br, "link", "set", &format!("p{i}"), state]);
    }

    /// A [`Host`] for host `i`: its agent and `getent` run in its namespace.
    pub fn agent_host(&self, i: usize, body: &str) -> Host {
        let mut h = Host::new(body);
        h.netns = Some(self.host(i));
        h
    }

    /// A command run inside host `i`'s namespace (with its /etc/netns files).
    pub fn exec(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(i)]).arg(program);
        c
    }

    /// Datagrams the kernel dropped at the agent's cluster socket (port 7946) in host `i`, from
    /// a full receive buffer: the last column of its `/proc/net/udp` line, read inside the
    /// namespace. A burst the kernel partly dropped is accounted for with it.
    pub fn kernel_drops(&self, i: usize) -> u64 {
        let out = self.exec(i, "cat").arg("/proc/net/udp").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|a| a.ends_with(":1F0A"))
            })
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for ns in self.netns.iter().rev() {
            quiet(&["netns", "del", ns]);
            let _ = fs::remove_dir_all(etc(ns));
        }
        if let Some(n) = self.neigh.take() {
            n.restore();
        }
    }
}

/// The machine's neighbour-table limits as a bed found them before raising them; kept in
/// [`NEIGH_SAVED`] too (with the pid), so a killed run's are put back by the next sweep.
#[derive(Debug)]
struct Neigh {
    saved: String,
}

/// Where the limits a bed raised are saved: `PID` then `SYSCTL VALUE` lines.
const NEIGH_SAVED: &str = "/run/lbfo-bed-neigh";
const THRESH: [&str; 3] = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];

fn neigh_path(family: &str, knob: &str) -> String {
    format!("/proc/sys/net/{family}/neigh/default/{knob}")
}

impl Neigh {
    /// Raises the limits for a bed of up to `hosts` hosts (each host resolving every other, a
    /// joiner or two besides) if they are too low: `None` if they were not (a bed of a few
    /// hosts, or another bed of this run raised them already).
    fn fit(hosts: usize) -> Option<Neigh> {
        // Twice the hosts a bed starts with, so that joiners fit.
        let need = (2 * hosts) * (2 * hosts);
        let read = |f: &str, k: &str| {
            fs::read_to_string(neigh_path(f, k))
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
        };
        if read("ipv4", "gc_thresh1").is_none_or(|v| v >= need) || Path::new(NEIGH_SAVED).exists() {
            return None;
        }
        let mut saved = format!("{}\n", std::process::id());
        for family in ["ipv4", "ipv6"] {
            for knob in THRESH {
                let Some(was) = read(family, knob) else {
                    continue;
                };
                saved += &format!("{} {was}\n", neigh_path(family, knob));
            }
        }
        fs::write(NEIGH_SAVED, &saved).expect("save the neighbour limits");
        // Highest first: the kernel keeps thresh1 <= thresh2 <= thresh3 only by convention.
        for family in ["ipv4", "ipv6"] {
            for (i, knob) in THRESH.iter().enumerate().rev() {
                let _ = fs::write(neigh_path(family, knob), (need << i).to_string());
            }
        }
        Some(Neigh { saved })
    }

    /// Puts back the limits saved.
    fn restore(self) {
        put_back(&self.saved);
    }
}

/// Writes back the `SYSCTL VALUE` lines of a saved file's text, then removes the file.
fn put_back(saved: &str) {
    for line in saved.lines().skip(1) {
        if let Some((path, was)) = line.split_once(' ') {
            let _ = fs::write(path, was);
        }
    }
    let _ = fs::remove_file(NEIGH_SAVED);
}

/// Removes beds whose test process is gone (a run that was killed cannot clean up after itself).
fn sweep() {
    if let Ok(saved) = fs::read_to_string(NEIGH_SAVED) {
        let pid = saved.lines().next().unwrap_or("");
        if !Path::new(&format!("/proc/{pid}")).exists() || pid.is_empty() {
            put_back(&saved);
        }
    }
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('x').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            quiet(&["netns", "del", &name]);
            let _ = fs::remove_dir_all(etc(&name));
        }
    }
}
