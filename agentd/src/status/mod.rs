//! `lbfo-agentd status`: what the shared table says, for people (text), scripts (`--json`) and
//! Prometheus (`--prometheus`, the text exposition format, for node_exporter's textfile collector).
//!
//! Reads the table through core's checked [`TableView`] over a read-only mapping and the counters
//! through a read-only attachment, so it works whether or not the agent runs, changes nothing,
//! and cannot be misled into a crash by a damaged table. [`Snapshot`] is gathered first and then
//! rendered by pure functions.
//!
//! In a cluster, the agent also writes its cluster state (node, peers, drop counters) to
//! `<table>.cluster` five times a second ([`write_cluster`]); `status` shows it when present. Every
//! snapshot carries a **table digest** over what the cluster shares (names, policies, backends
//! with state, weight, prio, limit — not slots, positions or counters): two hosts show the same
//! digest exactly when they answer from the same table.

use crate::sys::fs::Shown;
use lbfo_core::addr::Ip;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lbfo_core::shm::NO_COUNTERS;
use lbfo_core::{Capacity, CountersView, TableView};

use crate::sys::shm::{Segment, TableMapRo};
use crate::vecmap::VecSet;

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
}

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
    /// The services.
    pub services: Vec<ServiceRow>,
    /// The cluster state the agent last wrote, if it runs in a cluster.
    pub cluster: Option<ClusterInfo>,
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
    /// Sends that failed.
    pub send_errors: u64,
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

/// Replaces the cluster state file in one step (temporary file, rename), mode 0644.
pub fn write_cluster(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW;
    let f = crate::sys::fs::open(&tmp, flags, 0o644)?;
    crate::sys::fs::write_all(f.as_fd(), text.as_bytes())?;
    crate::sys::fs::rename(&tmp, path)
}

/// Parses the cluster state file; unknown or damaged lines are skipped.
///
/// Lines and words are split as `lines()` and `split_whitespace()` would, in one pass over the
/// characters, and numbers are read by [`number`]: the std versions cost ~2 KB of inlined code
/// on the routers (size budget).
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
            });
        }
        services.push(ServiceRow {
            slot,
            name: s.name.as_str().to_owned(),
            policy: s.policy.name(),
            backends,
        });
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
        services,
        cluster: crate::sys::fs::read_file(&cluster_path(path))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|t| parse_cluster(&t)),
    })
}

/// The one output buffer of every view. For the router size budget each kind of piece (text,
/// number, padded cell, JSON string, ...) is written by one out-of-line method, so the views are
/// chains of calls instead of a `format!` and a temporary `String` per field.
#[derive(Debug, Default)]
struct Out(String);

impl Out {
    /// Text as it is.
    #[inline(never)]
    fn s(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// A comma before every item but the first.
    fn sep(&mut self, i: usize) -> &mut Self {
        self.s(if i > 0 { "," } else { "" })
    }

    /// A number.
    #[inline(never)]
    fn n(&mut self, n: u64) -> &mut Self {
        let _ = write!(self.0, "{n}");
        self
    }

    /// `true` or `false`.
    fn b(&mut self, v: bool) -> &mut Self {
        self.s(if v { "true" } else { "false" })
    }

    /// A number or `null`.
    fn opt(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.n(v),
            None => self.s("null"),
        }
    }

    /// Text left-aligned in `w` columns (characters, as `{:<w$}` counts them).
    #[inline(never)]
    fn l(&mut self, s: &str, w: usize) -> &mut Self {
        let _ = write!(self.0, "{s:<w$}");
        self
    }

    /// A number right-aligned in `w` columns, `-` for none.
    #[inline(never)]
    fn r(&mut self, v: Option<u64>, w: usize) -> &mut Self {
        let _ = match v {
            Some(n) => write!(self.0, "{n:>w$}"),
            None => write!(self.0, "{:>w$}", "-"),
        };
        self
    }

    /// An address, left-aligned in `w` columns (0: as it is).
    #[inline(never)]
    fn addr(&mut self, a: &IpAddr, w: usize) -> &mut Self {
        let _ = write!(self.0, "{:<w$}", Ip(*a));
        self
    }

    /// Sixteen lower-case hex digits.
    #[inline(never)]
    fn hex(&mut self, v: u64) -> &mut Self {
        let _ = write!(self.0, "{v:016x}");
        self
    }

    /// Milliseconds as seconds with one decimal: `1.2 s`.
    #[inline(never)]
    fn secs(&mut self, ms: u64) -> &mut Self {
        // The remainder in 32 bits: 64-bit division is a library call on the routers.
        let tenths = (ms % 1000) as u32 / 100;
        self.n(ms / 1000).s(".").n(tenths.into()).s(" s")
    }

    /// A JSON string literal.
    fn q(&mut self, s: &str) -> &mut Self {
        self.s("\"").escaped(s, Escape::Json).s("\"")
    }

    /// A Prometheus label value (`\\`, `"`, newline escaped) or HELP text (`\\`, newline).
    fn esc(&mut self, s: &str, label: bool) -> &mut Self {
        self.escaped(s, if label { Escape::Label } else { Escape::Help })
    }

    /// `s` escaped for `how`: one routine for JSON and Prometheus, byte by byte (every byte it
    /// replaces is ASCII, so the runs between them are whole characters), for the router size
    /// budget.
    #[inline(never)]
    fn escaped(&mut self, s: &str, how: Escape) -> &mut Self {
        let json = how == Escape::Json;
        let mut from = 0;
        for (i, b) in s.bytes().enumerate() {
            let by = match b {
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'"' if how != Escape::Help => "\\\"",
                b'\r' if json => "\\r",
                b'\t' if json => "\\t",
                // The other control characters, as \u00XX.
                0..0x20 if json => "",
                _ => continue,
            };
            self.s(s.get(from..i).unwrap_or_default());
            if by.is_empty() {
                self.s("\\u00")
                    .hex_digit(u32::from(b) >> 4)
                    .hex_digit(b.into());
            } else {
                self.s(by);
            }
            from = i + 1;
        }
        self.s(s.get(from..).unwrap_or_default())
    }

    fn hex_digit(&mut self, v: u32) -> &mut Self {
        self.0
            .push(char::from(b"0123456789abcdef"[v as usize & 15]));
        self
    }

    /// A Prometheus sample value: a count as it is, milliseconds as seconds with up to three
    /// decimals (no trailing zeros, no exponent).
    #[inline(never)]
    fn value(&mut self, v: Value) -> &mut Self {
        let ms = match v {
            Value::Count(n) => return self.n(n),
            Value::Ms(ms) => ms,
        };
        self.n(ms / 1000);
        // In 32 bits: 64-bit division is a library call on the routers.
        let (mut frac, mut unit) = ((ms % 1000) as u32, 100);
        if frac != 0 {
            self.0.push('.');
        }
        while frac != 0 {
            self.0.push(char::from(b'0' + (frac / unit) as u8));
            frac %= unit;
            unit /= 10;
        }
        self
    }
}

/// What [`Out::escaped`] escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// A JSON string: `"`, `\\`, control characters.
    Json,
    /// A Prometheus label value: `\\`, `"`, newline.
    Label,
    /// Prometheus HELP text: `\\`, newline.
    Help,
}

/// An address as text.
fn addr_string(a: &IpAddr) -> String {
    let mut o = Out::default();
    o.addr(a, 0);
    o.0
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

/// The human-readable report.
pub fn text(s: &Snapshot) -> String {
    let mut o = Out::default();
    o.s("table       ").s(&s.table);
    o.s("\ngeneration  ").hex(s.generation).s("\nheartbeat   ");
    match s.heartbeat_age_ms() {
        None => o.s("never"),
        Some(age) => o.secs(age).s(" ago"),
    };
    o.s(if s.agent_running() {
        " (agent running)\n"
    } else {
        " (agent not running)\n"
    });
    if s.retired {
        o.s("retired     yes: an agent replaced this file; run status again for the new one\n");
    }
    o.s("counters    ");
    match s.counters_id {
        Some(id) => {
            o.s("shm segment ").n(id);
            if !s.counters_ok {
                o.s(" unreadable; lookups are shown as -");
            }
        }
        None => {
            o.s("none yet; lookups are shown as -");
        }
    }
    o.s("\nservices    ").n(s.services.len() as u64);
    o.s(" of ").n(s.capacity.services() as u64);
    o.s(" (capacity: up to ")
        .n(s.capacity.backends() as u64)
        .s(" backends each)");
    o.s("\ndigest      ");
    s.write_digest(&mut o);
    o.s("\n");
    if let Some(c) = &s.cluster {
        cluster_text(&mut o, c, s.now_ms);
    }
    let mut width = 7;
    for b in s.services.iter().flat_map(|sv| &sv.backends) {
        width = width.max(addr_string(&b.addr).len());
    }
    for sv in &s.services {
        o.s("\n").s(&sv.name).s("  policy ").s(sv.policy).s("\n");
        if sv.backends.is_empty() {
            o.s("  (no backends)\n");
            continue;
        }
        o.s("  ").l("ADDRESS", width);
        o.s("  STATE   WEIGHT        PRIO       LIMIT     LOOKUPS\n");
        for b in &sv.backends {
            o.s("  ").addr(&b.addr, width).s("  ");
            o.s(if b.up { "up     " } else { "down   " });
            o.r(Some(b.weight.into()), 7)
                .s("  ")
                .r(Some(b.prio.into()), 10);
            o.s("  ").r((b.limit != 0).then_some(b.limit), 10);
            o.s("  ").r(b.lookups, 10).s("\n");
        }
    }
    o.0
}

fn cluster_text(o: &mut Out, c: &ClusterInfo, now_ms: u64) {
    o.s("cluster     node ")
        .s(&c.node)
        .s(" (id ")
        .s(&c.id)
        .s("), epoch ")
        .n(c.epoch);
    o.s(", written ").secs(now_ms.saturating_sub(c.written_ms));
    o.s(" ago; sent ")
        .n(c.sent.0)
        .s(" datagrams, ")
        .n(c.sent.1)
        .s(" bytes, ");
    o.n(c.send_errors).s(" send errors\n");
    if c.capacity_refused > 0 {
        o.s("refused     ").n(c.capacity_refused);
        o.s(" changes from the group, past this table's capacity\n");
    }
    o.s("peers       ");
    o.n(c.peers.len() as u64).s("\n");
    for p in &c.peers {
        o.s("  ").l(&p.node, 16).s(" ").l(&p.addr, 24).s(" heard ");
        o.secs(now_ms.saturating_sub(p.heard_ms))
            .s(" ago  epoch ")
            .n(p.epoch);
        o.s(if p.in_sync {
            "  in sync\n"
        } else {
            "  differs\n"
        });
    }
    let total: u64 = c.drops.iter().map(|d| d.2).sum();
    o.s("dropped     ").n(total).s("\n");
    for (addr, why, n) in &c.drops {
        o.s("  ").l(addr, 24).s(" ").l(why, 10).s(" ").n(*n).s("\n");
    }
}

fn cluster_json(o: &mut Out, c: &ClusterInfo, now_ms: u64) {
    o.s("{\"node\":").q(&c.node).s(",\"id\":\"").s(&c.id);
    o.s("\",\"epoch\":")
        .n(c.epoch)
        .s(",\"written_ms\":")
        .n(c.written_ms);
    o.s(",\"sent_datagrams\":")
        .n(c.sent.0)
        .s(",\"sent_bytes\":")
        .n(c.sent.1);
    o.s(",\"send_errors\":").n(c.send_errors);
    o.s(",\"capacity_refused\":")
        .n(c.capacity_refused)
        .s(",\"peers\":[");
    for (i, p) in c.peers.iter().enumerate() {
        o.sep(i).s("{\"node\":").q(&p.node).s(",\"id\":\"").s(&p.id);
        o.s("\",\"addr\":")
            .q(&p.addr)
            .s(",\"last_heard_ms\":")
            .n(p.heard_ms);
        o.s(",\"last_heard_age_ms\":")
            .n(now_ms.saturating_sub(p.heard_ms));
        o.s(",\"epoch\":")
            .n(p.epoch)
            .s(",\"in_sync\":")
            .b(p.in_sync)
            .s("}");
    }
    o.s("],\"drops\":[");
    for (i, (addr, why, n)) in c.drops.iter().enumerate() {
        o.sep(i).s("{\"addr\":").q(addr).s(",\"reason\":").q(why);
        o.s(",\"count\":").n(*n).s("}");
    }
    o.s("],\"drop_totals\":{");
    let mut at = None;
    while let Some((why, n)) = next_total(c, at) {
        o.s(if at.is_some() { "," } else { "" }).q(why).s(":").n(n);
        at = Some(why);
    }
    o.s("}}");
}

/// The report for scripts: one JSON object (see the README for its fields).
pub fn json(s: &Snapshot) -> String {
    let mut o = Out::default();
    o.s("{\"table\":")
        .q(&s.table)
        .s(",\"generation\":\"")
        .hex(s.generation);
    o.s("\",\"heartbeat_ms\":").n(s.heartbeat_ms);
    o.s(",\"heartbeat_age_ms\":").opt(s.heartbeat_age_ms());
    o.s(",\"agent_running\":").b(s.agent_running());
    o.s(",\"retired\":")
        .b(s.retired)
        .s(",\"counters_id\":")
        .opt(s.counters_id);
    o.s(",\"counters_ok\":").b(s.counters_ok);
    o.s(",\"capacity\":{\"services\":")
        .n(s.capacity.services() as u64)
        .s(",\"backends\":")
        .n(s.capacity.backends() as u64);
    o.s("},\"services\":[");
    for (i, sv) in s.services.iter().enumerate() {
        o.sep(i)
            .s("{\"slot\":")
            .n(sv.slot as u64)
            .s(",\"name\":")
            .q(&sv.name);
        o.s(",\"policy\":\"").s(sv.policy).s("\",\"backends\":[");
        for (j, b) in sv.backends.iter().enumerate() {
            o.sep(j)
                .s("{\"pos\":")
                .n(b.pos as u64)
                .s(",\"addr\":\"")
                .addr(&b.addr, 0);
            o.s(if b.up {
                "\",\"state\":\"up\",\"weight\":"
            } else {
                "\",\"state\":\"down\",\"weight\":"
            });
            o.n(b.weight.into()).s(",\"prio\":").n(b.prio.into());
            o.s(",\"limit\":")
                .n(b.limit)
                .s(",\"lookups\":")
                .opt(b.lookups)
                .s("}");
        }
        o.s("]}");
    }
    o.s("],\"digest\":\"");
    s.write_digest(&mut o);
    o.s("\",\"cluster\":");
    match &s.cluster {
        Some(c) => cluster_json(&mut o, c, s.now_ms),
        None => {
            o.s("null");
        }
    }
    o.s("}\n");
    o.0
}

/// The Prometheus text exposition format (version 0.0.4), written as it goes: [`Prom::family`]
/// writes a family's `# HELP` and `# TYPE` lines and [`Prom::sample`] its samples, which the
/// format requires to follow at once. Nothing is collected first, so the families, labels and
/// values cost no intermediate structures (and little code on the routers).
#[derive(Debug, Default)]
pub struct Prom {
    out: Out,
    /// The family being written.
    name: &'static str,
}

/// A metric family. The views pass a family as one pointer to a constant instead of three
/// strings (router size budget).
#[derive(Debug)]
pub struct Family {
    /// `lbfo_...`.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// A sample's value. Every value `status` reports is a count (or a 0/1 flag) or a time in
/// milliseconds, shown in seconds; integers keep them exact and keep floating point (soft-float
/// code on the routers) out of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A count or a flag.
    Count(u64),
    /// Milliseconds, printed as seconds.
    Ms(u64),
}

fn flag(v: bool) -> Value {
    Value::Count(u64::from(v))
}

impl Prom {
    /// Starts the family `f`.
    #[inline(never)]
    pub fn family(&mut self, f: &Family) {
        self.name = f.name;
        let o = &mut self.out;
        o.s("# HELP ").s(f.name).s(" ").esc(f.help, false);
        o.s("\n# TYPE ").s(f.name).s(" ").s(f.kind).s("\n");
    }

    /// A sample of the current family.
    #[inline(never)]
    pub fn sample(&mut self, labels: &[(&str, &str)], value: Value) {
        let o = &mut self.out;
        o.s(self.name);
        for (i, (k, v)) in labels.iter().enumerate() {
            o.s(if i == 0 { "{" } else { "," })
                .s(k)
                .s("=\"")
                .esc(v, true)
                .s("\"");
        }
        if !labels.is_empty() {
            o.s("}");
        }
        o.s(" ").value(value).s("\n");
    }

    /// A family of one sample without labels.
    #[inline(never)]
    fn one(&mut self, f: &Family, value: Value) {
        self.family(f);
        self.sample(&[], value);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out.0
    }
}

/// The metrics of a snapshot, in the Prometheus text format.
///
/// Extension point: agent-side counters (for example the cluster's dropped datagrams, as
/// `lbfo_agent_dropped_total{reason="..."}`, a `counter`) become a field of [`Snapshot`] filled in
/// by [`snapshot`], and one more family written here.
pub fn prometheus(s: &Snapshot) -> String {
    let mut p = Prom::default();
    table_readable(&mut p, true);
    p.one(
        &Family {
            name: "lbfo_agent_up",
            kind: "gauge",
            help: "Whether the agent's heartbeat in the table is recent (1) or not (0).",
        },
        flag(s.agent_running()),
    );
    if let Some(age) = s.heartbeat_age_ms() {
        p.one(
            &Family {
                name: "lbfo_agent_heartbeat_age_seconds",
                kind: "gauge",
                help: "Seconds since the agent last wrote its heartbeat into the table.",
            },
            Value::Ms(age),
        );
    }
    p.one(
        &Family {
            name: "lbfo_table_retired",
            kind: "gauge",
            help: "Whether an agent replaced this table file by another (1).",
        },
        flag(s.retired),
    );
    p.one(&Family { name: "lbfo_counters_readable", kind: "gauge", help: "Whether the shared usage counters could be read (1); without them there are no lookup counts." }, flag(s.counters_ok),
    );
    p.one(
        &Family {
            name: "lbfo_services",
            kind: "gauge",
            help: "Services in the table.",
        },
        Value::Count(s.services.len() as u64),
    );
    p.one(
        &Family {
            name: "lbfo_capacity_services",
            kind: "gauge",
            help: "Services the table holds at most (the capacity setting).",
        },
        Value::Count(s.capacity.services() as u64),
    );
    p.one(
        &Family {
            name: "lbfo_capacity_backends",
            kind: "gauge",
            help: "Backends each service holds at most (the capacity setting).",
        },
        Value::Count(s.capacity.backends() as u64),
    );
    p.family(&Family {
        name: "lbfo_service_info",
        kind: "gauge",
        help: "One sample per service, labelled with its policy.",
    });
    for sv in &s.services {
        p.sample(
            &[("service", &sv.name), ("policy", sv.policy)],
            Value::Count(1),
        );
    }
    // One family after the other, each over every backend; `None` leaves a backend out.
    // A static table, not an array built on the stack at every call (router size budget).
    type Of = fn(&BackendRow) -> Option<Value>;
    static BACKEND_FAMILIES: [(Family, Of); 5] = [
        (Family { name: "lbfo_backend_lookups_total", kind: "counter", help: "Lookups answered with this backend since its counter was last zeroed (reset, limit)." }, |b| b.lookups.map(Value::Count),
        ),
        (Family { name: "lbfo_backend_up", kind: "gauge", help: "Whether the backend is in rotation (1) or marked down (0)." }, |b| Some(flag(b.up)),
        ),
        (Family { name: "lbfo_backend_weight", kind: "gauge", help: "The backend's weight." }, |b| Some(Value::Count(b.weight.into())),
        ),
        (Family { name: "lbfo_backend_priority", kind: "gauge", help: "The backend's priority (failover picks the lowest among up backends)." }, |b| Some(Value::Count(b.prio.into())),
        ),
        (Family { name: "lbfo_backend_limit", kind: "gauge", help: "The backend's usage limit; 0 means none." }, |b| Some(Value::Count(b.limit)),
        ),
    ];
    for (family, of) in &BACKEND_FAMILIES {
        p.family(family);
        for sv in &s.services {
            for b in &sv.backends {
                if let Some(v) = of(b) {
                    let addr = addr_string(&b.addr);
                    p.sample(&[("service", &sv.name), ("address", &addr)], v);
                }
            }
        }
    }
    if let Some(c) = &s.cluster {
        cluster_metrics(&mut p, c, s.now_ms);
    }
    p.finish()
}

/// The cluster's families: peers and when each was last heard, dropped datagrams by reason.
fn cluster_metrics(p: &mut Prom, c: &ClusterInfo, now_ms: u64) {
    p.one(
        &Family {
            name: "lbfo_cluster_peers",
            kind: "gauge",
            help: "Peers heard since the agent started.",
        },
        Value::Count(c.peers.len() as u64),
    );
    p.family(&Family {
        name: "lbfo_cluster_peer_last_heard_seconds",
        kind: "gauge",
        help: "Seconds since the agent last accepted a datagram from this peer.",
    });
    for peer in &c.peers {
        p.sample(
            &[("node", &peer.node), ("address", &peer.addr)],
            Value::Ms(now_ms.saturating_sub(peer.heard_ms)),
        );
    }
    p.family(&Family { name: "lbfo_cluster_dropped_total", kind: "counter", help: "Cluster datagrams dropped, by reason (truncated, oversized, version, bad_mac, garbage, replay, stale, other_group, same_name)." });
    let mut at = None;
    while let Some((why, n)) = next_total(c, at) {
        p.sample(&[("reason", why)], Value::Count(n));
        at = Some(why);
    }
    p.one(
        &Family {
            name: "lbfo_cluster_sent_bytes_total",
            kind: "counter",
            help: "Bytes of cluster datagrams sent since the agent started.",
        },
        Value::Count(c.sent.1),
    );
    p.one(
        &Family {
            name: "lbfo_cluster_capacity_refused_total",
            kind: "counter",
            help: "Changes from the group not applied here: past this table's capacity.",
        },
        Value::Count(c.capacity_refused),
    );
}

/// What `status --prometheus` prints when the table cannot be read, so a textfile collector
/// still reports the outage instead of keeping stale numbers.
pub fn prometheus_unreadable() -> String {
    let mut p = Prom::default();
    table_readable(&mut p, false);
    p.finish()
}

fn table_readable(p: &mut Prom, yes: bool) {
    p.one(
        &Family {
            name: "lbfo_table_readable",
            kind: "gauge",
            help: "Whether the table could be read (1) or not (0).",
        },
        flag(yes),
    );
}

/// [`Out::esc`] as a string, for the tests.
#[cfg(test)]
fn escape(s: &str, label: bool) -> String {
    let mut o = Out::default();
    o.esc(s, label);
    o.0
}

/// [`Out::value`] as a string, for the tests.
#[cfg(test)]
fn sample_value(v: Value) -> String {
    let mut o = Out::default();
    o.value(v);
    o.0
}

/// [`Out::q`] as a string, for the tests.
#[cfg(test)]
fn quote(s: &str) -> String {
    let mut o = Out::default();
    o.q(s);
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    },
                    BackendRow {
                        pos: 1,
                        addr: "fd00::12".parse().unwrap(),
                        up: false,
                        weight: 3,
                        prio: 2,
                        limit: 100,
                        lookups: counters_ok.then_some(97),
                    },
                ],
            }],
            cluster: None,
        }
    }

    #[test]
    fn text_report() {
        let expect = "\
table       /run/lbfo/table
generation  5f0c3e1a9b2d4c77
heartbeat   0.4 s ago (agent running)
counters    shm segment 32769
services    1 of 64 (capacity: up to 8 backends each)
digest      {DIGEST}

web.lan  policy failover
  ADDRESS    STATE   WEIGHT        PRIO       LIMIT     LOOKUPS
  10.0.0.11  up           1           1           -        1503
  fd00::12   down         3           2         100          97
";
        let expect = expect.replace("{DIGEST}", &sample(0, true).digest());
        assert_eq!(text(&sample(9_600, true)), expect);
        let t = text(&sample(6_900, false));
        assert!(
            t.contains("heartbeat   3.1 s ago (agent not running)\n"),
            "{t}"
        );
        assert!(
            t.contains("unreadable; lookups are shown as -") && t.contains("100           -\n"),
            "{t}"
        );
        assert!(text(&sample(0, true)).contains("heartbeat   never (agent not running)\n"));
    }

    #[test]
    fn json_report() {
        assert_eq!(
            json(&sample(9_600, true)),
            "{\"table\":\"/run/lbfo/table\",\"generation\":\"5f0c3e1a9b2d4c77\",\"heartbeat_ms\":9600,\
             \"heartbeat_age_ms\":400,\"agent_running\":true,\"retired\":false,\"counters_id\":32769,\
             \"counters_ok\":true,\"capacity\":{\"services\":64,\"backends\":8},\"services\":[{\"slot\":0,\"name\":\"web.lan\",\"policy\":\"failover\",\
             \"backends\":[{\"pos\":0,\"addr\":\"10.0.0.11\",\"state\":\"up\",\"weight\":1,\"prio\":1,\
             \"limit\":0,\"lookups\":1503},{\"pos\":1,\"addr\":\"fd00::12\",\"state\":\"down\",\"weight\":3,\
             \"prio\":2,\"limit\":100,\"lookups\":97}]}],\"digest\":\"DIGEST\",\"cluster\":null}\n"
                .replace("DIGEST", &sample(0, true).digest())
        );
        let j = json(&sample(0, false));
        assert!(
            j.contains("\"heartbeat_age_ms\":null,\"agent_running\":false")
                && j.contains("\"lookups\":null"),
            "{j}"
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
            j.contains("\"drop_totals\":{\"bad_mac\":3,\"replay\":1}}}"),
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
            json(&s).ends_with("\"drop_totals\":{\"bad_mac\":1,\"replay\":1,\"stale\":7}}}\n"),
            "{}",
            json(&s)
        );
        assert!(prometheus(&s).contains(
            "lbfo_cluster_dropped_total{reason=\"bad_mac\"} 1\n\
             lbfo_cluster_dropped_total{reason=\"replay\"} 1\n\
             lbfo_cluster_dropped_total{reason=\"stale\"} 7\n"
        ));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(quote("\r\t\u{1f}\u{7f}→"), "\"\\r\\t\\u001f\u{7f}→\"");
        assert_eq!(escape("\r\t→\"", false), "\r\t→\"");
    }

    #[test]
    fn prometheus_report() {
        let expect = "\
# HELP lbfo_table_readable Whether the table could be read (1) or not (0).
# TYPE lbfo_table_readable gauge
lbfo_table_readable 1
# HELP lbfo_agent_up Whether the agent's heartbeat in the table is recent (1) or not (0).
# TYPE lbfo_agent_up gauge
lbfo_agent_up 1
# HELP lbfo_agent_heartbeat_age_seconds Seconds since the agent last wrote its heartbeat into the table.
# TYPE lbfo_agent_heartbeat_age_seconds gauge
lbfo_agent_heartbeat_age_seconds 0.4
# HELP lbfo_table_retired Whether an agent replaced this table file by another (1).
# TYPE lbfo_table_retired gauge
lbfo_table_retired 0
# HELP lbfo_counters_readable Whether the shared usage counters could be read (1); without them there are no lookup counts.
# TYPE lbfo_counters_readable gauge
lbfo_counters_readable 1
# HELP lbfo_services Services in the table.
# TYPE lbfo_services gauge
lbfo_services 1
# HELP lbfo_capacity_services Services the table holds at most (the capacity setting).
# TYPE lbfo_capacity_services gauge
lbfo_capacity_services 64
# HELP lbfo_capacity_backends Backends each service holds at most (the capacity setting).
# TYPE lbfo_capacity_backends gauge
lbfo_capacity_backends 8
# HELP lbfo_service_info One sample per service, labelled with its policy.
# TYPE lbfo_service_info gauge
lbfo_service_info{service=\"web.lan\",policy=\"failover\"} 1
# HELP lbfo_backend_lookups_total Lookups answered with this backend since its counter was last zeroed (reset, limit).
# TYPE lbfo_backend_lookups_total counter
lbfo_backend_lookups_total{service=\"web.lan\",address=\"10.0.0.11\"} 1503
lbfo_backend_lookups_total{service=\"web.lan\",address=\"fd00::12\"} 97
# HELP lbfo_backend_up Whether the backend is in rotation (1) or marked down (0).
# TYPE lbfo_backend_up gauge
lbfo_backend_up{service=\"web.lan\",address=\"10.0.0.11\"} 1
lbfo_backend_up{service=\"web.lan\",address=\"fd00::12\"} 0
# HELP lbfo_backend_weight The backend's weight.
# TYPE lbfo_backend_weight gauge
lbfo_backend_weight{service=\"web.lan\",address=\"10.0.0.11\"} 1
lbfo_backend_weight{service=\"web.lan\",address=\"fd00::12\"} 3
# HELP lbfo_backend_priority The backend's priority (failover picks the lowest among up backends).
# TYPE lbfo_backend_priority gauge
lbfo_backend_priority{service=\"web.lan\",address=\"10.0.0.11\"} 1
lbfo_backend_priority{service=\"web.lan\",address=\"fd00::12\"} 2
# HELP lbfo_backend_limit The backend's usage limit; 0 means none.
# TYPE lbfo_backend_limit gauge
lbfo_backend_limit{service=\"web.lan\",address=\"10.0.0.11\"} 0
lbfo_backend_limit{service=\"web.lan\",address=\"fd00::12\"} 100
";
        assert_eq!(prometheus(&sample(9_600, true)), expect);
        // No heartbeat: no age sample, agent down. No counters: the family stays, empty.
        let p = prometheus(&sample(0, false));
        assert!(
            p.contains("lbfo_agent_up 0\n") && !p.contains("lbfo_agent_heartbeat_age_seconds"),
            "{p}"
        );
        assert!(
            p.contains("# TYPE lbfo_backend_lookups_total counter\n# HELP lbfo_backend_up"),
            "{p}"
        );
        assert!(p.contains("lbfo_counters_readable 0\n"), "{p}");
        assert_eq!(
            prometheus_unreadable(),
            "# HELP lbfo_table_readable Whether the table could be read (1) or not (0).\n\
             # TYPE lbfo_table_readable gauge\nlbfo_table_readable 0\n"
        );
    }

    #[test]
    fn prometheus_escaping_and_values() {
        assert_eq!(escape("a\"b\\c\nd", true), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("a\"b\\c\nd", false), "a\"b\\\\c\\nd");
        let mut p = Prom::default();
        p.one(
            &Family {
                name: "x",
                kind: "gauge",
                help: "h",
            },
            Value::Count(3_000_000_000),
        );
        assert_eq!(p.finish(), "# HELP x h\n# TYPE x gauge\nx 3000000000\n");
        let mut p = Prom::default();
        p.family(&Family {
            name: "x",
            kind: "gauge",
            help: "h\\n",
        });
        p.sample(&[("a", "1"), ("b", "q\"")], Value::Ms(50));
        assert_eq!(
            p.finish(),
            "# HELP x h\\\\n\n# TYPE x gauge\nx{a=\"1\",b=\"q\\\"\"} 0.05\n"
        );
        for (v, text) in [
            (Value::Count(0), "0"),
            (Value::Ms(0), "0"),
            (Value::Ms(9600), "9.6"),
            (Value::Ms(1235), "1.235"),
            (Value::Ms(2000), "2"),
            (Value::Ms(1), "0.001"),
            (Value::Count(u64::MAX), "18446744073709551615"),
        ] {
            assert_eq!(sample_value(v), text, "{v:?}");
        }
    }
}
