//! The config file: agent settings and table commands in the FIFO's language, checked whole.
//!
//! [`parse`] runs every line through core's one parser, then applies every command to a scratch
//! [`Table`] of the config's `capacity` (wherever in the file that line is), so a config that
//! would fail half-way (a `down` of a backend it never added, more services or backends than its
//! capacity) is refused before the shared table is touched. The first problem is returned as a
//! [`ConfigError`] with line and column: a line that does not parse first, then the first
//! command that does not apply.
//!
//! Cluster settings (`group`, `iface`, `ttl`, `node`, `peer`, `key`, `insecure`) are gathered in
//! [`ClusterConfig`]; with neither `group` nor `peer` the agent runs alone, as before.
//!
//! A loaded [`Config`] remembers which services and backends it defines ([`Members`]); a reload
//! deletes what the old config defined and the new one no longer does ([`removals`]), and leaves
//! alone whatever was created at run time through the FIFO.

use crate::sys::fs::Shown;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use lbfo_core::cmd::{parse_bytes, ParseErrorKind};
use lbfo_core::table::ApplyError;
use lbfo_core::{Capacity, Command, Line, Name, Service, Setting, Table};
use nix::errno::Errno;

use crate::health::Spec;
use crate::vecmap::VecMap;

/// Where the table lives unless the config says `table PATH`; the NSS module's default too.
pub const DEFAULT_TABLE: &str = "/run/lbfo/table";
/// Where the command FIFO lives unless the config says `fifo PATH`.
pub const DEFAULT_FIFO: &str = "/var/run/lbfo.sock";
/// Lookups per second one backend's counter may gain unless the config says `max-lookup-rate
/// N`: far above what one machine resolves (so genuine lookups are never taken for tampering),
/// far below a counter written straight to a limit.
pub const DEFAULT_MAX_LOOKUP_RATE: u64 = 1_000_000;

/// Services by name, each with its backends' addresses (sorted).
pub type Members = VecMap<String, Vec<IpAddr>>;

/// A checked config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The table file.
    pub table: PathBuf,
    /// The command FIFO.
    pub fifo: PathBuf,
    /// `hosts-file PATH`: where to export the services for dnsmasq, if anywhere.
    pub hosts_file: Option<PathBuf>,
    /// `dnsmasq-pid PATH`: the pid file of the dnsmasq to signal (else: every process named
    /// `dnsmasq`).
    pub dnsmasq_pid: Option<PathBuf>,
    /// `state PATH`: where every applied change is persisted (none: changes made through the
    /// FIFO or the group live only in the table and, in a cluster, in the peers).
    pub state: Option<PathBuf>,
    /// `check` lines: health checks, at most one per service (the last one counts).
    pub checks: Vec<Spec>,
    /// `max-lookup-rate N`: what a usage counter may gain per second before the agent takes
    /// the increase for tampering and puts the counter back.
    pub max_lookup_rate: u64,
    /// The commands with their 1-based line numbers, in file order.
    pub commands: Vec<(usize, Command)>,
    /// What the commands leave in an empty table.
    pub members: Members,
    /// The cluster settings.
    pub cluster: ClusterConfig,
    /// The file's modification time (ms since the epoch): the stamp time of its commands in the
    /// cluster, so changes made after the file was written win over it.
    pub mtime_ms: u64,
    /// `capacity SERVICES BACKENDS`: what the table holds (default [`Capacity::DEFAULT`]).
    pub capacity: Capacity,
}

/// The cluster settings of a config.
#[derive(Debug, Clone, Default, Eq)]
pub struct ClusterConfig {
    /// `group ADDR:PORT`.
    pub group: Option<SocketAddr>,
    /// `iface NAME`.
    pub iface: Option<String>,
    /// `ttl N` (default 1: the local network only).
    pub ttl: Option<u8>,
    /// `node NAME` (default: the host name).
    pub node: Option<String>,
    /// `peer ADDR:PORT` lines.
    pub peers: Vec<SocketAddr>,
    /// `key PATH`.
    pub key: Option<PathBuf>,
    /// `insecure`.
    pub insecure: bool,
}

/// Field by field, the key's path as text ([`crate::sys::fs::same_path`]).
impl PartialEq for ClusterConfig {
    fn eq(&self, other: &ClusterConfig) -> bool {
        // Destructured, so that a new field cannot be left out of the comparison.
        let ClusterConfig {
            group,
            iface,
            ttl,
            node,
            peers,
            key,
            insecure,
        } = self;
        *group == other.group
            && *iface == other.iface
            && *ttl == other.ttl
            && *node == other.node
            && *peers == other.peers
            && crate::sys::fs::same_path(key.as_deref(), other.key.as_deref())
            && *insecure == other.insecure
    }
}

impl ClusterConfig {
    /// Whether the agent joins a cluster at all.
    pub fn enabled(&self) -> bool {
        self.group.is_some() || !self.peers.is_empty()
    }
}

/// What is wrong with a config; see [`ConfigError`] for where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The file could not be read.
    Read(Errno),
    /// A line does not parse.
    Parse(ParseErrorKind),
    /// A command cannot be applied to what the lines before it built.
    Apply(ApplyError),
    /// A setting given twice.
    DuplicateSetting(&'static str),
    /// A setting's path that is not absolute (the agent may run from any directory).
    RelativePath,
    /// A path with a NUL byte, which no system call takes.
    NulInPath,
    /// `peer` and `group` addresses of different families, or peers on different ports.
    MixedPeers,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Read(e) => write!(f, "cannot read: {}", crate::sys::errno_text(*e as i32)),
            Problem::Parse(k) => k.fmt(f),
            Problem::Apply(e) => e.fmt(f),
            Problem::DuplicateSetting(what) => write!(f, "`{what}` given twice"),
            Problem::RelativePath => f.write_str("path must be absolute"),
            Problem::NulInPath => f.write_str("path contains a NUL byte"),
            Problem::MixedPeers => f.write_str(
                "`group` and `peer` addresses must all be IPv4 or all IPv6, and without `group` all peers share one port",
            ),
        }
    }
}

/// A config problem and where: 1-based line and column (both 0 when the file is unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, or 0.
    pub line: usize,
    /// 1-based column, or 0.
    pub col: usize,
    /// What.
    pub problem: Problem,
}

impl ConfigError {
    /// The one-line report: `FILE:LINE:COL: reason` (or `FILE: reason` without a position).
    pub fn report(&self, file: &Path) -> String {
        if self.line == 0 {
            format!("{}: {}", file.shown(), self.problem)
        } else {
            format!(
                "{}:{}:{}: {}",
                file.shown(),
                self.line,
                self.col,
                self.problem
            )
        }
    }
}

/// Reads and checks the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = crate::sys::fs::read_file(path).map_err(|e| ConfigError {
        line: 0,
        col: 0,
        problem: Problem::Read(
            e.raw_os_error()
                .map_or(Errno::UnknownErrno, Errno::from_raw),
        ),
    })?;
    let mut config = parse(&text)?;
    // 0 for a time before 1970, or when the file is gone already.
    config.mtime_ms = crate::sys::fs::stat(path).map_or(0, |m| m.mtime_ms);
    Ok(config)
}

/// Checks a config's text: parses every line and applies every command to a scratch table.
pub fn parse(text: &[u8]) -> Result<Config, ConfigError> {
    let mut settings = Settings::default();
    let mut commands = Vec::new();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let at = |col, problem| ConfigError { line, col, problem };
        // Matched in place, not through `?` (a parsed line holds a 254-byte name: every move
        // of it is a copy, and the router build counts them).
        match parse_bytes(raw) {
            Err(e) => return Err(at(e.col, Problem::Parse(e.kind))),
            Ok(None) => {}
            Ok(Some(Line::Setting(s))) => {
                settings.take(s, raw).map_err(|(col, p)| at(col, p))?;
            }
            Ok(Some(Line::Command(c))) => commands.push((line, c)),
        }
    }
    let s = settings;
    let capacity = s.capacity.unwrap_or(Capacity::DEFAULT);
    let mut slots = vec![None; capacity.services()];
    let mut scratch = Table::with_capacity(&mut slots, capacity);
    for (line, c) in &commands {
        scratch.apply(c).map_err(|e| ConfigError {
            line: *line,
            col: 1,
            problem: Problem::Apply(e),
        })?;
    }
    Ok(Config {
        table: s.table.unwrap_or_else(|| PathBuf::from(DEFAULT_TABLE)),
        fifo: s.fifo.unwrap_or_else(|| PathBuf::from(DEFAULT_FIFO)),
        hosts_file: s.hosts_file,
        dnsmasq_pid: s.dnsmasq_pid,
        state: s.state,
        checks: s.checks,
        max_lookup_rate: s.max_lookup_rate.unwrap_or(DEFAULT_MAX_LOOKUP_RATE),
        commands,
        members: members(&scratch),
        cluster: s.cluster,
        mtime_ms: 0,
        capacity,
    })
}

/// The settings a config has given so far.
#[derive(Default)]
struct Settings {
    table: Option<PathBuf>,
    fifo: Option<PathBuf>,
    state: Option<PathBuf>,
    hosts_file: Option<PathBuf>,
    dnsmasq_pid: Option<PathBuf>,
    checks: Vec<Spec>,
    max_lookup_rate: Option<u64>,
    cluster: ClusterConfig,
    capacity: Option<Capacity>,
    /// The keywords of the settings that may be given once.
    seen: Vec<&'static str>,
}

impl Settings {
    /// Takes the setting `s` of the line `raw`; `Err` is the column and the problem.
    fn take(&mut self, s: Setting<'_>, raw: &[u8]) -> Result<(), (usize, Problem)> {
        let what = s.keyword();
        if !matches!(s, Setting::Peer(_) | Setting::Check(_)) {
            if self.seen.contains(&what) {
                return Err((1, Problem::DuplicateSetting(what)));
            }
            self.seen.push(what);
        }
        let cluster = &mut self.cluster;
        let (path, slot) = match s {
            Setting::Table(p) => (p, &mut self.table),
            Setting::Fifo(p) => (p, &mut self.fifo),
            Setting::State(p) => (p, &mut self.state),
            Setting::Key(p) => (p, &mut cluster.key),
            Setting::HostsFile(p) => (p, &mut self.hosts_file),
            Setting::DnsmasqPid(p) => (p, &mut self.dnsmasq_pid),
            Setting::Group(a) => {
                cluster.group = Some(a);
                return Ok(());
            }
            Setting::Peer(a) => {
                cluster.peers.push(a);
                let v4 = |a: &SocketAddr| a.is_ipv4();
                let first = cluster.group.or(cluster.peers.first().copied());
                let mixed = first.is_some_and(|f| v4(&f) != v4(&a))
                    || (cluster.group.is_none()
                        && cluster.peers.iter().any(|p| p.port() != a.port()));
                return if mixed {
                    Err((1, Problem::MixedPeers))
                } else {
                    Ok(())
                };
            }
            Setting::Iface(n) => {
                cluster.iface = Some(n.to_owned());
                return Ok(());
            }
            Setting::Node(n) => {
                cluster.node = Some(n.to_owned());
                return Ok(());
            }
            Setting::Ttl(n) => {
                cluster.ttl = Some(n);
                return Ok(());
            }
            Setting::Capacity(c) => {
                self.capacity = Some(c);
                return Ok(());
            }
            Setting::Insecure => {
                cluster.insecure = true;
                return Ok(());
            }
            Setting::MaxLookupRate(n) => {
                self.max_lookup_rate = Some(n);
                return Ok(());
            }
            Setting::Check(c) => {
                // At most one earlier check of the service: take it out.
                if let Some(i) = self.checks.iter().position(|o| o.service == c.service) {
                    self.checks.remove(i);
                }
                self.checks.push(Spec::new(&c));
                return Ok(());
            }
        };
        // The path borrows from the line, so its offset there is its column.
        let col = path.as_ptr() as usize - raw.as_ptr() as usize + 1;
        if !path.starts_with('/') {
            return Err((col, Problem::RelativePath));
        }
        if path.bytes().any(|b| b == 0) {
            return Err((col, Problem::NulInPath));
        }
        *slot = Some(PathBuf::from(path));
        Ok(())
    }
}

/// The services and backends in `table`.
pub fn members(table: &Table<'_>) -> Members {
    table.iter().map(|(_, s)| member(s)).collect()
}

/// One service's entry in [`Members`].
pub fn member(s: &Service) -> (String, Vec<IpAddr>) {
    // Kept sorted as it grows (addresses are unique in a service): smaller on the router build
    // than `collect` and a sort.
    let mut addrs: Vec<IpAddr> = Vec::new();
    for (_, b) in s.iter() {
        if let Err(i) = addrs.binary_search(&b.addr) {
            addrs.insert(i, b.addr);
        }
    }
    (s.name.as_str().to_owned(), addrs)
}

/// The deletions that take away what `old` defines and `new` does not: whole services first
/// named, then single backends.
pub fn removals(old: &Members, new: &Members) -> Vec<Command> {
    let mut out = Vec::new();
    for (name, addrs) in old {
        let Ok(service) = Name::new_checked(name.as_bytes()) else {
            continue;
        };
        match new.get(name) {
            None => out.push(Command::Del {
                service,
                addr: None,
            }),
            Some(keep) => {
                for &a in addrs.iter().filter(|a| !keep.contains(a)) {
                    out.push(Command::Del {
                        service,
                        addr: Some(a),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a config's outcome: its settings and members, or its error report.
    fn check(input: &str, expect: &str) {
        let got = match parse(input.as_bytes()) {
            Ok(c) => {
                let m: Vec<String> = c
                    .members
                    .iter()
                    .map(|(n, a)| {
                        format!(
                            "{n}={}",
                            a.iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                    .collect();
                format!(
                    "{} {} {} [{}]",
                    c.table.display(),
                    c.fifo.display(),
                    c.commands.len(),
                    m.join(" ")
                )
            }
            Err(e) => e.report(Path::new("f")),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn settings_and_defaults() {
        check("", "/run/lbfo/table /var/run/lbfo.sock 0 []");
        check("# nothing\n\n", "/run/lbfo/table /var/run/lbfo.sock 0 []");
        check(
            "table /tmp/t\nfifo /tmp/f # c\nadd a.lan 10.0.0.1\nadd a.lan ::1\nadd b.lan 10.0.0.2\ndel b.lan\n",
            "/tmp/t /tmp/f 4 [a.lan=10.0.0.1,::1]",
        );
    }

    #[test]
    fn export_settings() {
        let c = parse(b"hosts-file /tmp/hosts/lbfo\ndnsmasq-pid /run/dnsmasq.pid\n").unwrap();
        assert_eq!(c.hosts_file, Some(PathBuf::from("/tmp/hosts/lbfo")));
        assert_eq!(c.dnsmasq_pid, Some(PathBuf::from("/run/dnsmasq.pid")));
        let c = parse(b"add a.lan 10.0.0.1\n").unwrap();
        assert_eq!((c.hosts_file, c.dnsmasq_pid), (None, None));
    }

    #[test]
    fn max_lookup_rate() {
        let rate = |text: &str| parse(text.as_bytes()).map(|c| c.max_lookup_rate);
        assert_eq!(rate(""), Ok(DEFAULT_MAX_LOOKUP_RATE));
        assert_eq!(rate("max-lookup-rate 5000\n"), Ok(5000));
        check(
            "max-lookup-rate 5\nmax-lookup-rate 6",
            "f:2:1: `max-lookup-rate` given twice",
        );
        check(
            "max-lookup-rate fast",
            "f:1:17: not a whole number from 1 to 1000000000",
        );
    }

    #[test]
    fn errors_say_line_column_reason() {
        check("add a.lan 10.0.0.1\n  ad a.lan", "f:2:3: unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, capacity, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure, max-lookup-rate or check)");
        check("add a.lan 10.0.0.x", "f:1:11: not an IPv4 or IPv6 address");
        check(
            "add a.lan 10.0.0.1\ndown a.lan 10.0.0.2\n",
            "f:2:1: service has no backend with that address",
        );
        check("up b.lan 10.0.0.2", "f:1:1: no such service");
        check("table /a\ntable /b", "f:2:1: `table` given twice");
        check("fifo  rel/x", "f:1:7: path must be absolute");
        check("key lbfo.key", "f:1:5: path must be absolute");
        check("node a\nnode b", "f:2:1: `node` given twice");
        check(
            "group 239.1.2.3:7946\n node gw\x07",
            "f:2:7: not a node name (1 to 64 bytes, each a letter, digit, '.', '-' or '_')",
        );
        check(
            "group 239.1.1.1:1\npeer [fd00::1]:1",
            "f:2:1: `group` and `peer` addresses must all be IPv4 or all IPv6, and without `group` all peers share one port",
        );
        check(
            "peer 10.0.0.1:1\npeer 10.0.0.2:2",
            "f:2:1: `group` and `peer` addresses must all be IPv4 or all IPv6, and without `group` all peers share one port",
        );
        check("hosts-file tmp/h", "f:1:12: path must be absolute");
        check("state /var/lib/l\0x", "f:1:7: path contains a NUL byte");
        check(
            "dnsmasq-pid /a\ndnsmasq-pid /b",
            "f:2:1: `dnsmasq-pid` given twice",
        );
        let got = parse(b"add a.lan 10.0.0.1\nadd \x80")
            .unwrap_err()
            .report(Path::new("f"));
        assert_eq!(got, "f:2:5: line is not UTF-8 text");
        let full: String = (1..=9).map(|i| format!("add a.lan 10.0.0.{i}\n")).collect();
        check(
            &full,
            "f:9:1: service full: `capacity` allows 8 backends per service (raise it in the config file)",
        );
    }

    #[test]
    fn capacity_bounds_the_config_wherever_it_is_set() {
        assert_eq!(parse(b"").unwrap().capacity, Capacity::DEFAULT);
        let c = parse(b"add a.lan 10.0.0.1\ncapacity 3 2\n").unwrap();
        assert_eq!(c.capacity, Capacity::new(3, 2).unwrap());
        // The capacity line comes after the commands it bounds: still the command's line.
        check(
            "add a.lan 10.0.0.1\nadd b.lan 10.0.0.1\nadd c.lan 10.0.0.1\ncapacity 2 16\n",
            "f:3:1: table full: `capacity` allows 2 services (raise it in the config file)",
        );
        check(
            "add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\ncapacity 4 1\n",
            "f:2:1: service full: `capacity` allows 1 backends per service (raise it in the config file)",
        );
        // Up to the limits, and a config that fills the largest capacity loads.
        let big: String = (0..4096)
            .map(|i| format!("add s{i}.lan 10.0.{}.{}\n", i / 256, i % 256))
            .chain(std::iter::once("capacity 4096 16\n".to_owned()))
            .collect();
        assert_eq!(parse(big.as_bytes()).unwrap().commands.len(), 4096);
        check(
            "capacity 4097 16",
            "f:1:10: not a whole number from 1 to 4096",
        );
        check("capacity 64 17", "f:1:13: not a whole number from 1 to 16");
        check(
            "capacity 64 8\ncapacity 64 8",
            "f:2:1: `capacity` given twice",
        );
        // A parse error anywhere comes before a command that does not fit.
        check(
            "capacity 1 1\nadd a.lan 10.0.0.1\nadd b.lan 10.0.0.1\nadd c.lan x",
            "f:4:11: not an IPv4 or IPv6 address",
        );
    }

    #[test]
    fn cluster_settings() {
        let c = parse(b"group [ff15::1]:7946\niface eth0\nttl 2\nnode gw1\npeer [fd00::2]:7946\npeer [fd00::3]:7946\nkey /k\ninsecure\n")
            .unwrap()
            .cluster;
        assert_eq!(
            format!("{c:?}"),
            "ClusterConfig { group: Some([ff15::1]:7946), iface: Some(\"eth0\"), ttl: Some(2), node: Some(\"gw1\"), \
             peers: [[fd00::2]:7946, [fd00::3]:7946], key: Some(\"/k\"), insecure: true }"
        );
        assert!(c.enabled());
        assert!(!parse(b"iface eth0\n").unwrap().cluster.enabled());
    }

    #[test]
    fn removals_take_only_what_the_old_config_had() {
        let old = parse(
            b"add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd b.lan 10.0.0.3\nadd c.lan 10.0.0.4",
        )
        .unwrap();
        let new = parse(
            b"add a.lan 10.0.0.1\nadd c.lan 10.0.0.4\nadd c.lan 10.0.0.5\nadd d.lan 10.0.0.6",
        )
        .unwrap();
        let r: Vec<String> = removals(&old.members, &new.members)
            .iter()
            .map(|c| format!("{c:?}"))
            .collect();
        assert_eq!(
            r,
            [
                "Del { service: Name(\"a.lan\"), addr: Some(10.0.0.2) }",
                "Del { service: Name(\"b.lan\"), addr: None }",
            ]
        );
        assert!(removals(&new.members, &new.members).is_empty());
    }

    #[test]
    fn cluster_settings_are_equal_exactly_when_every_setting_is() {
        let base =
            "group [ff15::1]:7946\niface eth0\nttl 2\nnode gw1\npeer [fd00::2]:7946\nkey /k\n";
        let c = |text: &str| parse(text.as_bytes()).unwrap().cluster;
        assert_eq!(c(base), c(base));
        assert_eq!(c(&format!("{base}add a.lan 10.0.0.1\n")), c(base));
        for other in [
            base.replace("key /k", "key /k2"),
            base.replace("key /k\n", ""),
            base.replace("ttl 2", "ttl 3"),
            base.replace("node gw1", "node gw2"),
            base.replace("iface eth0", "iface eth1"),
            base.replace("[ff15::1]:7946", "[ff15::2]:7946"),
            base.replace("peer [fd00::2]:7946", "peer [fd00::3]:7946"),
            format!("{base}insecure\n"),
        ] {
            assert_ne!(c(&other), c(base), "{other}");
        }
    }
}
