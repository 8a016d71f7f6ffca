//! `lbfo-agentd status`: what the shared table says, for people (text), scripts (`--json`) and
//! Prometheus (`--prometheus`, the text exposition format, for node_exporter's textfile collector).
//!
//! Reads the table through core's checked [`TableView`] over a read-only mapping and the counters
//! through a read-only attachment, so it works whether or not the agent runs, changes nothing,
//! and cannot be misled into a crash by a damaged table. The [`Snapshot`] is gathered here first
//! and then rendered by pure functions, one file each: `text.rs` ([`text`]), `json.rs`
//! ([`json`]) and `prometheus.rs` ([`prometheus`]), all writing into the one buffer of `out.rs`.
//!
//! In a cluster, the agent also writes its cluster state (node, peers, drop counters) to
//! `<table>.cluster` at most once a second, when it changed ([`write_cluster`]); `status` shows
//! it when present. With health checks, the agent writes their state to `<table>.checks` (`health::report`) a few
//! times a second while it changes; `status` shows each checked backend's row beside it. Every
//! snapshot carries a **table digest** over what the cluster shares (names, policies, backends
//! with state, weight, prio, limit — not slots, positions or counters): two hosts show the same
//! digest exactly when they answer from the same table.
//!
//! It also warns, in every form, while an nscd whose hosts cache keeps lbfo's answers runs
//! ([`nscd`]: unscd, or glibc's nscd still running a replaced module): that cache keeps serving a
//! backend after lbfo has moved on.

mod json;
pub mod nscd;
mod out;
mod prometheus;
mod text;

pub use json::json;
pub use prometheus::{prometheus, prometheus_unreadable, Family, Prom, Value};
pub use text::text;

use crate::sys::fs::Shown;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lbfo_core::shm::NO_COUNTERS;
use lbfo_core::{Capacity, CountersView, TableView};

use crate::sys::shm::{Segment, TableMapRo};
use crate::vecmap::VecSet;
use out::Out;

/// A heartbeat older than this means the agent is not running (three missed beats).
pub const STALE_MS: u64 = 3000;

/// One backend as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRow {
    /// Position in the service (fixed while the backend exists).
    pub pos: usize,
    /// Address.
    pub addr: IpAddr,
    /// In rotation.
    pub up: bool,
    /// Weight.
    pub weight: u32,
    /// Priority.
    pub prio: u32,
    /// Usage limit; 0 for none.
    pub limit: u64,
    /// Lookups answered with it since its counter was zeroed, if the counters are readable.
    pub lookups: Option<u64>,
    /// In this machine's fastest set (`fastest` services).
    pub fast: bool,
    /// Its health check's state, as the agent last wrote it.
    pub check: Option<CheckRow>,
}

/// A checked backend's state (the agent's `<table>.checks` file).
pub type CheckRow = crate::health::report::Row;

/// One service as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// Slot in the table.
    pub slot: usize,
    /// Name.
    pub name: String,
    /// Policy name.
    pub policy: &'static str,
    /// Backends by position.
    pub backends: Vec<BackendRow>,
}

/// Everything `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The table's path.
    pub table: String,
    /// The table's generation.
    pub generation: u64,
    /// Last heartbeat, ms since the epoch (0: never).
    pub heartbeat_ms: u64,
    /// When the snapshot was taken, ms since the epoch.
    pub now_ms: u64,
    /// The agent replaced this file by another.
    pub retired: bool,
    /// The counters segment id in the header, if any.
    pub counters_id: Option<u64>,
    /// Whether the counters segment could be attached and matched the table.
    pub counters_ok: bool,
    /// What the table holds at most (the `capacity` setting it was made with).
    pub capacity: Capacity,
    /// Tamper events the agent counted in the table's header: usage counters put back, and
    /// rewrites of the counters segment's header (`TableView::tampered`).
    pub tampered: (u64, u64),
    /// The services.
    pub services: Vec<ServiceRow>,
    /// The cluster state the agent last wrote, if it runs in a cluster.
    pub cluster: Option<ClusterInfo>,
    /// A running nscd whose hosts cache keeps lbfo's answers (filled in by the caller:
    /// [`nscd::find`]).
    pub nscd: Option<nscd::CachingNscd>,
}

/// A peer as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    /// Node name.
    pub node: String,
    /// Node id (hex).
    pub id: String,
    /// Where it was last heard from.
    pub addr: String,
    /// When (ms since the epoch).
    pub heard_ms: u64,
    /// Its boot epoch.
    pub epoch: u64,
    /// Its last digest matched ours.
    pub in_sync: bool,
}

/// The cluster side of `status`, as the agent wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInfo {
    /// This node's name.
    pub node: String,
    /// Its id (hex).
    pub id: String,
    /// Its boot epoch.
    pub epoch: u64,
    /// When the agent wrote this (ms since the epoch).
    pub written_ms: u64,
    /// Datagrams and bytes sent since start.
    pub sent: (u64, u64),
    /// Sends that failed (at once, or reported later by the kernel).
    pub send_errors: u64,
    /// Times the agent's loop woke since start.
    pub wakes: u64,
    /// The group's changes this agent could not apply: past its `capacity`.
    pub capacity_refused: u64,
    /// Peers heard.
    pub peers: Vec<PeerRow>,
    /// Dropped datagrams: (source, reason, count).
    pub drops: Vec<(String, String, u64)>,
}

/// Where the agent writes its cluster state for the table at `table`.
pub fn cluster_path(table: &Path) -> PathBuf {
    let mut p = table.as_os_str().to_owned();
    p.push(".cluster");
    PathBuf::from(p)
}

/// Replaces the cluster state file in one step (`sys::fs::NewFile`), mode 0644, without a
/// flush to disk: it describes the running agent only.
pub fn write_cluster(path: &Path, text: &str) -> std::io::Result<()> {
    let new = crate::sys::fs::NewFile::create(path, 0o644)?;
    crate::sys::fs::write_all(new.file().as_fd(), text.as_bytes())?;
    new.rename_in()
}

/// Parses the cluster state file; unknown or damaged lines are skipped.
///
/// Lines and words are split as `lines()` and `split_whitespace()` would, in one pass over the
/// characters, and numbers are read by `number`: the std versions inline much more code on the
/// routers (size budget).
pub fn parse_cluster(text: &str) -> ClusterInfo {
    let mut c = ClusterInfo::default();
    // The line's first seven words; a missing word stays "".
    let mut w = [""; 7];
    let (mut words, mut start) = (0, None);
    for (i, ch) in text.char_indices().chain([(text.len(), '\n')]) {
        if !ch.is_whitespace() {
            start = start.or(Some(i));
            continue;
        }
        if let Some(from) = start.take() {
            if let Some(slot) = w.get_mut(words) {
                *slot = text.get(from..i).unwrap_or_default();
            }
            words += 1;
        }
        if ch == '\n' {
            cluster_line(&mut c, &w);
            (w, words) = ([""; 7], 0);
        }
    }
    c
}

/// One line of the cluster state file, as words.
fn cluster_line(c: &mut ClusterInfo, w: &[&str; 7]) {
    let n = |i: usize| number(w[i]);
    let t = |i: usize| if w[i].is_empty() { "?" } else { w[i] }.to_owned();
    match w[0] {
        "node" => {
            c.node = t(1);
            c.id = t(2);
            c.epoch = n(3);
            c.written_ms = n(4);
            c.sent = (n(5), n(6));
        }
        "peer" => c.peers.push(PeerRow {
            node: t(1),
            id: t(2),
            addr: t(3),
            heard_ms: n(4),
            epoch: n(5),
            in_sync: w[6] == "true",
        }),
        "drop" => c.drops.push((t(1), t(2), n(3))),
        "send_errors" => c.send_errors = n(1),
        "wakes" => c.wakes = n(1),
        "capacity_refused" => c.capacity_refused = n(1),
        _ => {}
    }
}

/// `w.parse::<u64>()`, 0 when that fails (not a number, or too large).
#[inline(never)]
fn number(w: &str) -> u64 {
    let digits = w.strip_prefix('+').unwrap_or(w);
    let mut n: u64 = 0;
    for b in digits.bytes() {
        let d = u64::from(b.wrapping_sub(b'0'));
        if d > 9 || n > (u64::MAX - d) / 10 {
            return 0;
        }
        n = n * 10 + d;
    }
    n
}

impl ServiceRow {
    /// Whether any of its backends is checked.
    pub fn checked(&self) -> bool {
        self.backends.iter().any(|b| b.check.is_some())
    }

    /// For `fastest`: why it picks as roundrobin now, if it does (no check on the service, or
    /// no round-trip time measured yet).
    pub fn fastest_fallback(&self) -> Option<&'static str> {
        if self.policy != "fastest" || self.backends.iter().any(|b| b.fast) {
            return None;
        }
        Some(if self.checked() {
            "no round-trip time yet: takes turns as roundrobin"
        } else {
            "no check on this service: takes turns as roundrobin"
        })
    }
}

impl Snapshot {
    /// A hash of what the cluster shares, independent of slots, positions and counters: equal on
    /// two hosts exactly when they answer from the same table (16 hex digits).
    pub fn digest(&self) -> String {
        let mut o = Out::default();
        self.write_digest(&mut o);
        o.0
    }

    /// Writes [`Snapshot::digest`] into `o`, with no `String` of its own (router size budget).
    #[inline(never)]
    fn write_digest(&self, out: &mut Out) {
        // FNV-1a over the services' lines, sorted, joined by newlines; each line is
        // "name policy [backend,...]" with the backends' "addr up weight prio limit" sorted.
        // Sorted sets: the rows are unique (services by name, backends by address).
        let mut rows: VecSet<String> = VecSet::new();
        for sv in &self.services {
            let mut bs: VecSet<String> = VecSet::new();
            for b in &sv.backends {
                let mut o = Out::default();
                o.addr(&b.addr, 0).s(" ").b(b.up).s(" ").n(b.weight.into());
                o.s(" ").n(b.prio.into()).s(" ").n(b.limit);
                bs.insert(o.0, ());
            }
            let mut o = Out::default();
            o.s(&sv.name).s(" ").s(sv.policy).s(" [");
            for (i, b) in bs.keys().enumerate() {
                o.sep(i).s(b);
            }
            o.s("]");
            rows.insert(o.0, ());
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, row) in rows.keys().enumerate() {
            let sep: &[u8] = if i > 0 { b"\n" } else { b"" };
            for &byte in sep.iter().chain(row.as_bytes()) {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        out.hex(h);
    }

    /// Milliseconds since the last heartbeat, if there was one.
    #[inline(never)]
    pub fn heartbeat_age_ms(&self) -> Option<u64> {
        (self.heartbeat_ms != 0).then(|| self.now_ms.saturating_sub(self.heartbeat_ms))
    }

    /// Whether the agent beat recently.
    pub fn agent_running(&self) -> bool {
        self.heartbeat_age_ms().is_some_and(|age| age <= STALE_MS)
    }
}

/// Reads the table at `path`; the error is the one line to print.
pub fn snapshot(path: &Path, now_ms: u64) -> Result<Snapshot, String> {
    // One place prefixes every error with the table, for the router size budget.
    read(path, now_ms).map_err(|e| format!("table {}: {e}", path.shown()))
}

fn read(path: &Path, now_ms: u64) -> Result<Snapshot, String> {
    let file =
        crate::sys::fs::open(path, libc::O_RDONLY, 0).map_err(|e| crate::sys::io_text(&e))?;
    let len = crate::sys::fs::fstat(file.as_fd())
        .map_err(|e| crate::sys::io_text(&e))?
        .size;
    if len < 8 {
        return Err(format!("not an lbfo table ({len} bytes)"));
    }
    let map = TableMapRo::map(&file).map_err(|e| crate::sys::io_text(&e))?;
    let view = TableView::new_checked(map.words()).map_err(|e| e.to_string())?;
    let id = view.counters_id();
    let seg = i32::try_from(id)
        .ok()
        .filter(|_| id != NO_COUNTERS)
        .and_then(|id| Segment::attach(id, true).ok());
    let counters = seg
        .as_ref()
        .and_then(|s| CountersView::new_checked(s.words(), &view));
    let mut services = Vec::new();
    for slot in 0..view.layout().max_services {
        let Some(s) = view.service(slot) else {
            continue;
        };
        let mut backends = Vec::new();
        for (pos, b) in s.iter() {
            backends.push(BackendRow {
                pos,
                addr: b.addr,
                up: b.up,
                weight: b.weight,
                prio: b.prio,
                limit: b.limit,
                lookups: counters.map(|c| c.count(slot, pos)),
                fast: b.fast,
                check: None,
            });
        }
        services.push(ServiceRow {
            slot,
            name: s.name.as_str().to_owned(),
            policy: s.policy.name(),
            backends,
        });
    }
    let checks = crate::sys::fs::read_file(&crate::health::report::path(path))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(|t| crate::health::report::parse(&t))
        .unwrap_or_default();
    for row in checks {
        let backend = services
            .iter_mut()
            .filter(|s| s.name == row.service)
            .flat_map(|s| s.backends.iter_mut())
            .find(|b| b.addr == row.addr);
        if let Some(b) = backend {
            b.check = Some(row);
        }
    }
    Ok(Snapshot {
        table: path.shown().to_string(),
        generation: view.generation(),
        heartbeat_ms: view.heartbeat_ms(),
        now_ms,
        retired: view.retired(),
        counters_id: (id != NO_COUNTERS).then_some(id),
        counters_ok: counters.is_some(),
        // A checked view's layout is always a capacity's.
        capacity: view.layout().capacity().unwrap_or(Capacity::MAX),
        tampered: view.tampered(),
        services,
        cluster: crate::sys::fs::read_file(&cluster_path(path))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|t| parse_cluster(&t)),
        nscd: None,
    })
}

/// The drop counts summed by reason, in reason order: the total of the first reason after
/// `after` (all when `None`). Called once per reason, which costs less code than a sorted map
/// (router size budget); there are a handful of reasons.
fn next_total<'a>(c: &'a ClusterInfo, after: Option<&str>) -> Option<(&'a str, u64)> {
    let mut next: Option<&str> = None;
    for (_, why, _) in &c.drops {
        let why = why.as_str();
        if after.is_none_or(|a| why > a) && next.is_none_or(|n| why < n) {
            next = Some(why);
        }
    }
    let next = next?;
    let total = c.drops.iter().filter(|d| d.1 == next).map(|d| d.2).sum();
    Some((next, total))
}

/// A snapshot to render, for the renderers' tests: one service of two backends.
#[cfg(test)]
fn sample(heartbeat_ms: u64, counters_ok: bool) -> Snapshot {
    Snapshot {
        table: "/run/lbfo/table".into(),
        generation: 0x5f0c_3e1a_9b2d_4c77,
        heartbeat_ms,
        now_ms: 10_000,
        retired: false,
        counters_id: Some(32769),
        counters_ok,
        capacity: Capacity::DEFAULT,
        tampered: (0, 0),
        services: vec![ServiceRow {
            slot: 0,
            name: "web.lan".into(),
            policy: "failover",
            backends: vec![
                BackendRow {
                    pos: 0,
                    addr: "10.0.0.11".parse().unwrap(),
                    up: true,
                    weight: 1,
                    prio: 1,
                    limit: 0,
                    lookups: counters_ok.then_some(1503),
                    fast: false,
                    check: None,
                },
                BackendRow {
                    pos: 1,
                    addr: "fd00::12".parse().unwrap(),
                    up: false,
                    weight: 3,
                    prio: 2,
                    limit: 100,
                    lookups: counters_ok.then_some(97),
                    fast: false,
                    check: None,
                },
            ],
        }],
        cluster: None,
        nscd: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Last;

    /// The sample with `web.lan` as `fastest`, both backends checked by http, the first in the
    /// fastest set, the second down and last unknown.
    fn checked() -> Snapshot {
        let mut s = sample(9_600, true);
        s.services[0].policy = "fastest";
        let row = |addr: &str, up, last, rtt, error: Option<&str>| CheckRow {
            service: "web.lan".into(),
            addr: addr.parse().unwrap(),
            kind: "http".into(),
            up,
            since_ms: 2_000,
            passes: u32::from(up == Some(true)) * 5,
            fails: u32::from(up == Some(false)) * 3,
            last,
            rtt_us: rtt,
            srtt_us: rtt.map(|r| r - 12),
            error: error.map(|e| (7_500, e.to_owned())),
        };
        s.services[0].backends[0].fast = true;
        s.services[0].backends[0].check =
            Some(row("10.0.0.11", Some(true), Last::Pass, Some(812), None));
        s.services[0].backends[1].check = Some(row(
            "fd00::12",
            Some(false),
            Last::Unknown,
            None,
            Some("unknown: too many open files"),
        ));
        s
    }

    #[test]
    fn checks_in_every_view() {
        let s = checked();
        let t = text(&s);
        assert!(t.contains("\nweb.lan  policy fastest\n"), "{t}");
        assert!(t.contains("-        1503  fastest\n"), "{t}");
        assert!(
            t.contains("  CHECK  ADDRESS    VERDICT              PASSES   FAILS  LAST      RTT ms   AVG ms  LAST ERROR\n\
                        \x20 http   10.0.0.11  up for 8.0 s              5       0  pass       0.812    0.800  -\n\
                        \x20 http   fd00::12   down for 8.0 s            0       3  unknown        -        -  unknown: too many open files (2.5 s ago)\n"),
            "{t}"
        );
        let j = json(&s);
        assert!(j.contains("\"lookups\":1503,\"fastest\":true,\"check\":{\"kind\":\"http\",\"verdict\":\"up\",\
            \"verdict_age_ms\":8000,\"passes\":5,\"fails\":0,\"last\":\"pass\",\"rtt_us\":812,\"srtt_us\":800,\
            \"error\":null,\"error_age_ms\":null}}"), "{j}");
        assert!(j.contains("\"last\":\"unknown\",\"rtt_us\":null,\"srtt_us\":null,\
            \"error\":\"unknown: too many open files\",\"error_age_ms\":2500}}],\"checked\":true,\"picks_as\":null}"), "{j}");
        let p = prometheus(&s);
        for line in [
            "lbfo_check_up{service=\"web.lan\",address=\"10.0.0.11\"} 1\n",
            "lbfo_check_up{service=\"web.lan\",address=\"fd00::12\"} 0\n",
            "lbfo_check_verdict_age_seconds{service=\"web.lan\",address=\"10.0.0.11\"} 8\n",
            "lbfo_check_failures{service=\"web.lan\",address=\"fd00::12\"} 3\n",
            "lbfo_check_unknown{service=\"web.lan\",address=\"fd00::12\"} 1\n",
            "lbfo_check_rtt_seconds{service=\"web.lan\",address=\"10.0.0.11\"} 0.000812\n",
            "lbfo_check_rtt_smoothed_seconds{service=\"web.lan\",address=\"10.0.0.11\"} 0.0008\n",
            "lbfo_check_info{service=\"web.lan\",address=\"fd00::12\",kind=\"http\",last=\"unknown\",error=\"unknown: too many open files\"} 1\n",
            "lbfo_backend_fastest{service=\"web.lan\",address=\"10.0.0.11\"} 1\n",
            "lbfo_backend_fastest{service=\"web.lan\",address=\"fd00::12\"} 0\n",
        ] {
            assert!(p.contains(line), "{line} not in:\n{p}");
        }
        assert!(!p.contains("lbfo_check_rtt_seconds{service=\"web.lan\",address=\"fd00::12\"}"));
        // fastest without a check: roundrobin, and every view says so.
        let mut s = sample(9_600, true);
        s.services[0].policy = "fastest";
        assert!(text(&s).contains(
            "web.lan  policy fastest (no check on this service: takes turns as roundrobin)\n"
        ));
        assert!(json(&s).contains("\"checked\":false,\"picks_as\":\"roundrobin\"}"));
        assert!(!prometheus(&s).contains("lbfo_check_"));
    }

    #[test]
    fn every_form_counts_tampering() {
        let mut s = sample(9_600, true);
        assert!(!text(&s).contains("tampering"));
        assert!(json(&s).contains(",\"tampered\":{\"counters\":0,\"header\":0},"));
        s.tampered = (3, 1);
        let t = text(&s);
        assert!(
            t.contains(
                "\ntampering   counters put back: 3, header rewritten: 1 (something other than \
                 lookups wrote the counters segment; see the agent's log)\n"
            ),
            "{t}"
        );
        assert!(json(&s).contains(",\"tampered\":{\"counters\":3,\"header\":1},"));
        let p = prometheus(&s);
        assert!(
            p.contains(
                "# TYPE lbfo_counters_tampered_total counter\n\
                 lbfo_counters_tampered_total{what=\"counter\"} 3\n\
                 lbfo_counters_tampered_total{what=\"header\"} 1\n"
            ),
            "{p}"
        );
    }

    #[test]
    fn every_form_warns_of_a_caching_nscd() {
        let mut s = sample(9_600, true);
        assert!(!text(&s).contains("nscd"));
        assert!(json(&s).contains(",\"nscd_hosts_cache\":null}"));
        assert!(prometheus(&s).contains("\nlbfo_nscd_hosts_cache 0\n"));
        s.nscd = Some(nscd::CachingNscd {
            pid: 77,
            daemon: nscd::Daemon::Unscd,
            conf: "/etc/nscd.conf".into(),
        });
        let t = text(&s);
        assert!(
            t.contains(
                "\nwarning     unscd (pid 77) caches hosts (/etc/nscd.conf: enable-cache hosts yes)"
            ),
            "{t}"
        );
        let j = json(&s);
        assert!(j.contains(",\"nscd_hosts_cache\":{\"pid\":77,\"daemon\":\"unscd\",\"conf\":\"/etc/nscd.conf\",\"warning\":\"unscd (pid 77)"), "{j}");
        let p = prometheus(&s);
        assert!(
            p.contains("# HELP lbfo_nscd_hosts_cache Whether an nscd")
                && p.contains("\nlbfo_nscd_hosts_cache 1\n"),
            "{p}"
        );
    }

    #[test]
    fn digest_is_fnv1a_of_the_sorted_service_lines() {
        // The definition, written out plainly: hosts of different versions compare digests.
        let s = sample(0, true);
        let mut rows: Vec<String> = s
            .services
            .iter()
            .map(|sv| {
                let mut bs: Vec<String> = sv
                    .backends
                    .iter()
                    .map(|b| format!("{} {} {} {} {}", b.addr, b.up, b.weight, b.prio, b.limit))
                    .collect();
                bs.sort();
                format!("{} {} [{}]", sv.name, sv.policy, bs.join(","))
            })
            .collect();
        rows.sort();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in rows.join("\n").bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        assert_eq!(s.digest(), format!("{h:016x}"));
    }

    #[test]
    fn digest_ignores_slots_positions_and_counters() {
        let a = sample(0, true);
        let mut b = sample(5, false);
        b.services[0].slot = 9;
        b.services[0].backends.reverse();
        b.services[0].backends[0].pos = 4;
        assert_eq!(a.digest(), b.digest());
        b.services[0].backends[0].up = true;
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn cluster_state_round_trip() {
        let c = parse_cluster(
            "node gw1 00000000000000aa 1000 9000 12 3400\npeer gw2 00000000000000bb 10.0.0.2:7946 8800 2000 true\n\
             drop 10.0.0.9:7946 bad_mac 3\ndrop 10.0.0.2:7946 replay 1\nsend_errors 2\nbogus line\n\
             capacity_refused 5\n",
        );
        let mut s = sample(9_600, true);
        s.cluster = Some(c);
        let t = text(&s);
        assert!(
            t.contains("\nrefused     5 changes from the group, past this table's capacity\n"),
            "{t}"
        );
        assert!(json(&s).contains(",\"capacity_refused\":5,"));
        assert!(prometheus(&s).contains("\nlbfo_cluster_capacity_refused_total 5\n"));
        assert!(t.contains("cluster     node gw1 (id 00000000000000aa), epoch 1000, written 1.0 s ago; sent 12 datagrams, 3400 bytes, 2 send errors"), "{t}");
        assert!(
            t.contains(
                "  gw2              10.0.0.2:7946            heard 1.2 s ago  epoch 2000  in sync"
            ),
            "{t}"
        );
        assert!(
            t.contains("dropped     4\n  10.0.0.9:7946            bad_mac    3\n"),
            "{t}"
        );
        let j = json(&s);
        assert!(j.contains("\"peers\":[{\"node\":\"gw2\",\"id\":\"00000000000000bb\",\"addr\":\"10.0.0.2:7946\",\"last_heard_ms\":8800,\"last_heard_age_ms\":1200,\"epoch\":2000,\"in_sync\":true}]"), "{j}");
        assert!(
            j.contains("\"drop_totals\":{\"bad_mac\":3,\"replay\":1}},\"nscd_hosts_cache\":null}"),
            "{j}"
        );
    }

    #[test]
    fn cluster_state_words_and_numbers() {
        for w in [
            "",
            "0",
            "+",
            "+5",
            "-1",
            "12a",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "١",
        ] {
            assert_eq!(number(w), w.parse::<u64>().unwrap_or(0), "{w:?}");
        }
        // As lines() and split_whitespace() split: CR LF, tabs, runs of blanks, Unicode spaces.
        let c = parse_cluster(
            "send_errors +7\r\n\tpeer  a\u{a0}b  x y 18446744073709551615 true extra\n\nsend_errors",
        );
        assert_eq!(c.send_errors, 0);
        assert_eq!(
            c.peers,
            [PeerRow {
                node: "a".into(),
                id: "b".into(),
                addr: "x".into(),
                heard_ms: 0,
                epoch: u64::MAX,
                in_sync: true,
            }]
        );
        let c = parse_cluster("send_errors +7\r\ndrop x");
        assert_eq!(
            (c.send_errors, c.drops),
            (7, vec![("x".into(), "?".into(), 0)])
        );
        // Totals by reason, in reason order.
        let mut s = sample(0, true);
        s.cluster = Some(parse_cluster(
            "drop a stale 2\ndrop b replay 1\ndrop c stale 5\ndrop d bad_mac 1\ndrop e replay 0\n",
        ));
        assert!(
            json(&s).ends_with(
                "\"drop_totals\":{\"bad_mac\":1,\"replay\":1,\"stale\":7}},\"nscd_hosts_cache\":null}\n"
            ),
            "{}",
            json(&s)
        );
        assert!(prometheus(&s).contains(
            "lbfo_cluster_dropped_total{reason=\"bad_mac\"} 1\n\
             lbfo_cluster_dropped_total{reason=\"replay\"} 1\n\
             lbfo_cluster_dropped_total{reason=\"stale\"} 7\n"
        ));
    }
}
