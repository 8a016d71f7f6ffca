//! The command language: one parser for the config file and the FIFO.
//!
//! One command a line; tokens are separated by blanks; `#` at the start of a token starts a
//! comment; blank lines are nothing. [`parse_line`] borrows from the line and allocates nothing.
//! Every error carries the 1-based column of the offending token; callers add the line number
//! (and file name) when they report it, so every message says *where* and *why*.
//!
//! ```text
//! add SERVICE ADDR [weight=N] [prio=N] [limit=N]   creates the service if new
//! del SERVICE [ADDR]
//! down SERVICE ADDR          up SERVICE ADDR
//! policy SERVICE failover|roundrobin|weighted|leastused|fastest
//! weight SERVICE ADDR N      prio SERVICE ADDR N      limit SERVICE ADDR N
//! reset SERVICE              zero the service's usage counters
//! ```
//! Agent settings share the grammar but only the config file may use them; [`Line::Setting`] lets
//! the caller refuse them elsewhere:
//!
//! ```text
//! capacity SERVICES BACKENDS   how many services, and backends each, the table holds
//! table PATH      fifo PATH      state PATH (where changes are persisted across restarts)
//! hosts-file PATH dnsmasq-pid PATH   the dnsmasq export
//! group ADDR:PORT the cluster's multicast group: 239.0.0.0/8, or IPv6 ff00::/8 as [ff15::1]:PORT
//! iface NAME      ttl N (1-255)      node NAME      peer ADDR:PORT (repeatable)
//! key PATH        insecure
//! check SERVICE tcp PORT [OPTIONS]           check SERVICE icmp [OPTIONS]
//! check SERVICE http PORT [path=/] [host=NAME] [expect=200-399] [OPTIONS]
//! check SERVICE exec /PROGRAM [ARG...] [OPTIONS]
//!     OPTIONS: [interval=100ms] [timeout=200ms] [fall=2] [rise=2]
//! ```

use core::fmt;
use core::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::addr::Ip;
use crate::capacity::{Capacity, MAX_BACKENDS, MAX_SERVICES};
use crate::name::{Name, NameError};
use crate::policy::Policy;

/// The largest accepted weight; keeps weight arithmetic far from overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A change to the service table.
///
/// `repr(C, u8)` puts `service`, every variant's first field, at one offset in all of them, so
/// code that builds or reads a command copies the name in one place instead of once per variant
/// (for the router build's size budget, issue #5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, u8)]
pub enum Command {
    /// Add a backend (creating the service), or update the options given for an existing one.
    Add {
        /// The service.
        service: Name,
        /// The backend's address.
        addr: IpAddr,
        /// `weight=N`, if given.
        weight: Option<u32>,
        /// `prio=N`, if given.
        prio: Option<u32>,
        /// `limit=N`, if given (0 means no limit).
        limit: Option<u64>,
    },
    /// Delete a backend, or the whole service when `addr` is `None`.
    Del {
        /// The service.
        service: Name,
        /// The backend, or all of them.
        addr: Option<IpAddr>,
    },
    /// Take a backend out of rotation (`up: false`) or put it back.
    SetUp {
        /// The service.
        service: Name,
        /// The backend.
        addr: IpAddr,
        /// The new state.
        up: bool,
    },
    /// Choose the service's policy (creating the service if new).
    Policy {
        /// The service.
        service: Name,
        /// The policy.
        policy: Policy,
    },
    /// Set one numeric attribute of a backend.
    Set {
        /// The service.
        service: Name,
        /// The backend.
        addr: IpAddr,
        /// What to set.
        attr: Attr,
    },
    /// Zero a service's usage counters.
    Reset {
        /// The service.
        service: Name,
    },
}

/// A numeric backend attribute, as set by `weight`, `prio` and `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    /// Share of traffic under `weighted` and `leastused`; 0 drains the backend.
    Weight(u32),
    /// Rank under `failover`: the lowest value among up backends wins.
    Prio(u32),
    /// Usage count at which the agent removes the backend; 0 means none.
    Limit(u64),
}

impl Command {
    /// The service the command is about.
    pub fn service(&self) -> &Name {
        match self {
            Command::Add { service, .. }
            | Command::Del { service, .. }
            | Command::SetUp { service, .. }
            | Command::Policy { service, .. }
            | Command::Set { service, .. }
            | Command::Reset { service } => service,
        }
    }
}

impl fmt::Display for Command {
    /// The command as a line of the command language: [`parse_line`] reads it back as this very
    /// command (property-tested below), so logs and saved state speak the language they are read
    /// in. Every command is `VERB SERVICE [ADDR] [TAIL]`, written a part at a time.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, addr) = match self {
            Command::Add { addr, .. } => ("add", Some(addr)),
            Command::Del { addr, .. } => ("del", addr.as_ref()),
            Command::SetUp { addr, up, .. } => (if *up { "up" } else { "down" }, Some(addr)),
            Command::Policy { .. } => ("policy", None),
            Command::Set { addr, attr, .. } => (attr.verb(), Some(addr)),
            Command::Reset { .. } => ("reset", None),
        };
        f.write_str(verb)?;
        f.write_str(" ")?;
        f.write_str(self.service().as_str())?;
        if let Some(a) = addr {
            f.write_str(" ")?;
            Ip(*a).fmt(f)?;
        }
        match *self {
            Command::Add {
                weight,
                prio,
                limit,
                ..
            } => {
                let options = [weight.map(u64::from), prio.map(u64::from), limit];
                for ((key, _), value) in ADD_OPTIONS.iter().zip(options) {
                    if let Some(v) = value {
                        f.write_str(" ")?;
                        f.write_str(key)?;
                        f.write_str("=")?;
                        v.fmt(f)?;
                    }
                }
                Ok(())
            }
            Command::Policy { policy, .. } => {
                f.write_str(" ")?;
                f.write_str(policy.name())
            }
            Command::Set { attr, .. } => {
                f.write_str(" ")?;
                attr.value().fmt(f)
            }
            _ => Ok(()),
        }
    }
}

impl Attr {
    /// The verb that sets this attribute.
    pub fn verb(&self) -> &'static str {
        match self {
            Attr::Weight(_) => "weight",
            Attr::Prio(_) => "prio",
            Attr::Limit(_) => "limit",
        }
    }

    /// The value set.
    pub fn value(&self) -> u64 {
        match *self {
            Attr::Weight(n) | Attr::Prio(n) => u64::from(n),
            Attr::Limit(n) => n,
        }
    }
}

/// An agent setting; valid only in the config file. (`Check` holds a [`Name`] inline, as
/// `Command` does: no allocator to box it with, and a setting lives only as long as its parse.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting<'a> {
    /// `table PATH`: where the shared table lives.
    Table(&'a str),
    /// `fifo PATH`: the command pipe.
    Fifo(&'a str),
    /// `state PATH`: the file every applied change is persisted to, so a restart loses none.
    State(&'a str),
    /// `group ADDR:PORT`: the cluster's multicast group (checked to be multicast).
    Group(SocketAddr),
    /// `iface NAME`: the interface the group is joined and sent on.
    Iface(&'a str),
    /// `ttl N`: multicast hop limit, 1 to 255 (more than 1 lets multicast routers carry it).
    Ttl(u8),
    /// `node NAME`: this agent's name in the cluster (default: the host name).
    Node(&'a str),
    /// `peer ADDR:PORT`: a unicast peer, for networks without multicast (repeatable).
    Peer(SocketAddr),
    /// `key PATH`: the file holding the cluster's shared HMAC key.
    Key(&'a str),
    /// `insecure`: join the cluster without a key.
    Insecure,
    /// `hosts-file PATH`: export the services as a hosts file for dnsmasq (`--addn-hosts`).
    HostsFile(&'a str),
    /// `dnsmasq-pid PATH`: the pid file of the dnsmasq to signal after each export.
    DnsmasqPid(&'a str),
    /// `check SERVICE KIND ...`: health-check every backend of a service.
    Check(Check<'a>),
    /// `capacity SERVICES BACKENDS`: how many services the table holds, and backends each.
    Capacity(Capacity),
    /// `max-lookup-rate N`: the most lookups per second one backend's usage counter can really
    /// gain (1 to [`MAX_LOOKUP_RATE`]); a counter that grows faster, or shrinks, was written by
    /// something other than lookups, and the agent puts it back.
    MaxLookupRate(u64),
}

/// The highest `max-lookup-rate`: a billion lookups per second of one backend is more than any
/// machine makes.
pub const MAX_LOOKUP_RATE: u64 = 1_000_000_000;

/// A health check: a probe of each backend of `service` every `interval_ms`, failed after
/// `timeout_ms`; down after `fall` failures in a row, up after `rise` successes. Its texts
/// borrow from the line, as a setting's paths do; the agent keeps an owned copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check<'a> {
    /// The service whose backends are checked.
    pub service: Name,
    /// What is probed.
    pub kind: CheckKind<'a>,
    /// Milliseconds between the starts of two checks of one backend.
    pub interval_ms: u32,
    /// Milliseconds a connect may take.
    pub timeout_ms: u32,
    /// Failures in a row that mark a backend down.
    pub fall: u8,
    /// Successes in a row that mark it up again.
    pub rise: u8,
}

/// What a check probes on each backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind<'a> {
    /// `tcp PORT`: a TCP connect.
    Tcp {
        /// The TCP port.
        port: u16,
    },
    /// `http PORT [path=] [host=] [expect=]`: an HTTP/1.1 GET, judged by its status line.
    Http {
        /// The TCP port.
        port: u16,
        /// The request's path (`path=`, default `/`): visible ASCII, starting with `/`.
        path: &'a str,
        /// The `Host:` header (`host=`); `None` for the backend's address.
        host: Option<&'a str>,
        /// The statuses that pass (`expect=`, default 200-399), lowest and highest.
        expect: (u16, u16),
    },
    /// `icmp`: an echo request, passed by its reply.
    Icmp,
    /// `exec /PROGRAM [ARG...]`: a program run without a shell, passed by exit status 0.
    Exec {
        /// The program's absolute path and its arguments, separated by blanks, as written.
        command: &'a str,
    },
}

impl CheckKind<'_> {
    /// The kind's keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Http { .. } => "http",
            CheckKind::Icmp => "icmp",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// The longest `interval=` or `timeout=` (60 s).
pub const MAX_CHECK_MS: u64 = 60_000;

impl Setting<'_> {
    /// The setting's keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Setting::Table(_) => "table",
            Setting::Fifo(_) => "fifo",
            Setting::State(_) => "state",
            Setting::Group(_) => "group",
            Setting::Iface(_) => "iface",
            Setting::Ttl(_) => "ttl",
            Setting::Node(_) => "node",
            Setting::Peer(_) => "peer",
            Setting::Key(_) => "key",
            Setting::Insecure => "insecure",
            Setting::HostsFile(_) => "hosts-file",
            Setting::DnsmasqPid(_) => "dnsmasq-pid",
            Setting::Check(_) => "check",
            Setting::Capacity(_) => "capacity",
            Setting::MaxLookupRate(_) => "max-lookup-rate",
        }
    }
}

/// One parsed, non-empty line. (`Command` is large because it holds a [`Name`] inline: there is
/// no allocator to box it with, and a line lives only as long as its parse.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A table command.
    Command(Command),
    /// An agent setting.
    Setting(Setting<'a>),
}

/// What is wrong with a line; see [`ParseError`] for where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The first word is not a verb.
    UnknownVerb,
    /// An argument is missing; names it.
    Missing(&'static str),
    /// More arguments than the verb takes.
    Extra,
    /// Not a service name.
    BadName(NameError),
    /// Not an IPv4 or IPv6 address.
    BadAddr,
    /// Not a whole number in range; names the range.
    BadNumber {
        /// The smallest number taken.
        min: u64,
        /// The largest.
        max: u64,
    },
    /// `key=value` with a key the verb does not take.
    UnknownOption,
    /// The same option twice.
    DuplicateOption,
    /// Not one of the five policies.
    BadPolicy,
    /// The line holds bytes that are not UTF-8 text.
    NotText,
    /// Not `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    BadSocketAddr,
    /// A `group` that is not an IPv4 239.0.0.0/8 or IPv6 multicast address.
    NotMulticast,
    /// A `check` kind other than `tcp`, `http`, `icmp` or `exec`.
    BadCheckKind,
    /// A `check` option other than interval=, timeout=, fall=, rise= (and http's).
    UnknownCheckOption,
    /// `path=`, `host=` or `expect=` on a check that is not `http`.
    HttpOnlyOption,
    /// An `exec` program that is not an absolute path.
    RelativeProgram,
    /// A `path=` that does not start with `/` or holds a byte that is not visible ASCII.
    BadUrlPath,
    /// A `host=` with a byte that is not visible ASCII.
    BadHostName,
    /// An `expect=` that is not a status or range of statuses from 100 to 599.
    BadExpect,
    /// Not a duration such as `100ms` or `2s` (1 ms to 60 s).
    BadDuration,
    /// Not a node name ([`crate::name::is_node_name`]).
    BadNodeName,
}

/// A parse error: what ([`ParseErrorKind`]) and where (1-based column in the line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based column (byte offset + 1) of the offending token.
    pub col: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl fmt::Display for ParseErrorKind {
    /// One `write_str` of a fixed text, and for the three kinds that carry a value the value
    /// after it, without `write!` (each `write!` is its own formatting call site: router size
    /// budget).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseErrorKind::UnknownVerb => "unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, capacity, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure, max-lookup-rate or check)",
            ParseErrorKind::Missing(_) => "missing ",
            ParseErrorKind::Extra => "unexpected extra argument",
            ParseErrorKind::BadName(_) => "bad service name: ",
            ParseErrorKind::BadAddr => "not an IPv4 or IPv6 address",
            ParseErrorKind::BadNumber { .. } => "not a whole number from ",
            ParseErrorKind::UnknownOption => "unknown option (expected weight=, prio= or limit=)",
            ParseErrorKind::BadCheckKind => "unknown check kind (expected tcp, http, icmp or exec)",
            ParseErrorKind::UnknownCheckOption => "unknown option (expected interval=, timeout=, fall=, rise=, or for http path=, host=, expect=)",
            ParseErrorKind::HttpOnlyOption => "option only for http checks",
            ParseErrorKind::RelativeProgram => "not an absolute path (exec runs no shell and searches no PATH)",
            ParseErrorKind::BadUrlPath => "not a path of visible ASCII characters starting with / (e.g. /health)",
            ParseErrorKind::BadHostName => "not a host name of visible ASCII characters",
            ParseErrorKind::BadExpect => "not a status or range of statuses from 100 to 599 (e.g. 200 or 200-399)",
            ParseErrorKind::BadDuration => "not a duration from 1ms to 60s (e.g. 100ms or 2s)",
            ParseErrorKind::BadNodeName => "not a node name (1 to 64 bytes, each a letter, digit, '.', '-' or '_')",
            ParseErrorKind::DuplicateOption => "option given twice",
            ParseErrorKind::BadPolicy => "unknown policy (expected failover, roundrobin, weighted, leastused or fastest)",
            ParseErrorKind::NotText => "line is not UTF-8 text",
            ParseErrorKind::BadSocketAddr => "not ADDR:PORT (an IPv6 address goes in brackets: [ff15::1]:7946)",
            ParseErrorKind::NotMulticast => "not a multicast group (expected IPv4 239.0.0.0/8 or IPv6 ff00::/8)",
        })?;
        match self {
            ParseErrorKind::Missing(what) => f.write_str(what),
            ParseErrorKind::BadName(e) => e.fmt(f),
            ParseErrorKind::BadNumber { min, max } => {
                min.fmt(f)?;
                f.write_str(" to ")?;
                max.fmt(f)
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.col, self.kind)
    }
}

/// Splits a line into tokens with their 1-based columns, stopping at a comment.
struct Tokens<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let rest = self.line.get(self.pos..)?;
        let start = self.pos + (rest.len() - rest.trim_start().len());
        let rest = self.line.get(start..)?;
        if rest.is_empty() || rest.starts_with('#') {
            // At the comment (or the end), so a missing argument is placed before it.
            self.pos = start;
            return None;
        }
        // By bytes: an ASCII blank is never part of a longer UTF-8 character.
        let len = rest
            .bytes()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        self.pos = start + len;
        Some((start + 1, rest.get(..len)?))
    }
}

/// The verbs. Those up to and including `Check` take a service name first (see
/// [`Verb::takes_service`]); the order is otherwise free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verb {
    Add,
    Del,
    Down,
    Up,
    Policy,
    Weight,
    Prio,
    Limit,
    Reset,
    Check,
    Table,
    Fifo,
    State,
    Key,
    HostsFile,
    DnsmasqPid,
    Iface,
    Node,
    Insecure,
    Ttl,
    Group,
    Peer,
    Capacity,
    MaxLookupRate,
}

impl Verb {
    fn takes_service(self) -> bool {
        self <= Verb::Check
    }
}

/// One argument of a verb, after the service name: what it must be and where it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    /// A file path, kept as is.
    Path,
    /// An interface name, kept as is.
    Iface,
    /// A node name, kept as is.
    Node,
    /// A backend's IP address.
    Addr,
    /// A backend's IP address or nothing (the last argument).
    MaybeAddr,
    /// A TCP port, 1 to 65535.
    Port,
    /// A multicast hop limit, 1 to 255.
    Ttl,
    /// A table's services, 1 to [`MAX_SERVICES`].
    Services,
    /// A table's backends per service, 1 to [`MAX_BACKENDS`].
    Backends,
    /// A weight, 0 to [`MAX_WEIGHT`].
    Weight,
    /// A priority, 0 to `u32::MAX`.
    Prio,
    /// A usage limit, any `u64`.
    Limit,
    /// A health check's fall or rise count, 1 to 255.
    Count,
    /// Lookups per second, 1 to [`MAX_LOOKUP_RATE`].
    Rate,
    /// A health check's interval or timeout (see [`duration`]).
    Duration,
    /// A policy name.
    Policy,
    /// A unicast peer's `ADDR:PORT`.
    Peer,
    /// The cluster's multicast `ADDR:PORT`.
    Group,
    /// `add`'s options ([`ADD_OPTIONS`]), up to the end of the line.
    AddOptions,
    /// An http check's path (`path=`).
    UrlPath,
    /// An http check's `Host:` header (`host=`).
    HostName,
    /// An http check's passing statuses (`expect=`).
    Expect,
}

/// The grammar: every verb's arguments after the service name, in order. One table and one
/// routine that walks it ([`Args::parse`]) instead of a parser per verb, for the router build's
/// size budget (issue #5).
const VERBS: [(&str, Verb, &[Arg]); 24] = [
    ("add", Verb::Add, &[Arg::Addr, Arg::AddOptions]),
    ("del", Verb::Del, &[Arg::MaybeAddr]),
    ("down", Verb::Down, &[Arg::Addr]),
    ("up", Verb::Up, &[Arg::Addr]),
    ("policy", Verb::Policy, &[Arg::Policy]),
    ("weight", Verb::Weight, &[Arg::Addr, Arg::Weight]),
    ("prio", Verb::Prio, &[Arg::Addr, Arg::Prio]),
    ("limit", Verb::Limit, &[Arg::Addr, Arg::Limit]),
    ("reset", Verb::Reset, &[]),
    // Its arguments depend on the kind: see `Args::check`.
    ("check", Verb::Check, &[]),
    ("table", Verb::Table, &[Arg::Path]),
    ("fifo", Verb::Fifo, &[Arg::Path]),
    ("state", Verb::State, &[Arg::Path]),
    ("key", Verb::Key, &[Arg::Path]),
    ("hosts-file", Verb::HostsFile, &[Arg::Path]),
    ("dnsmasq-pid", Verb::DnsmasqPid, &[Arg::Path]),
    ("iface", Verb::Iface, &[Arg::Iface]),
    ("node", Verb::Node, &[Arg::Node]),
    ("insecure", Verb::Insecure, &[]),
    ("ttl", Verb::Ttl, &[Arg::Ttl]),
    ("group", Verb::Group, &[Arg::Group]),
    ("peer", Verb::Peer, &[Arg::Peer]),
    ("capacity", Verb::Capacity, &[Arg::Services, Arg::Backends]),
    ("max-lookup-rate", Verb::MaxLookupRate, &[Arg::Rate]),
];

/// `add`'s `key=value` options, in the order of [`Args::options`].
const ADD_OPTIONS: [(&str, Arg); 3] = [
    ("weight", Arg::Weight),
    ("prio", Arg::Prio),
    ("limit", Arg::Limit),
];

/// `check`'s `key=value` options, in the order of [`Args::options`]: the first
/// [`COMMON_CHECK_OPTIONS`] for every kind, the rest for `http` only.
const CHECK_OPTIONS: [(&str, Arg); 7] = [
    ("interval", Arg::Duration),
    ("timeout", Arg::Duration),
    ("fall", Arg::Count),
    ("rise", Arg::Count),
    ("path", Arg::UrlPath),
    ("host", Arg::HostName),
    ("expect", Arg::Expect),
];

/// How many of [`CHECK_OPTIONS`] every check kind takes.
const COMMON_CHECK_OPTIONS: usize = 4;

/// A line's tokens and what [`Args::parse`] took from them. Each field is set by the [`Arg`]s
/// that name it, so a verb reads only the fields its table entry sets.
struct Args<'a> {
    toks: Tokens<'a>,
    /// `Path`, `Iface`, `Node`.
    word: &'a str,
    /// `Addr`, `MaybeAddr`.
    addr: Option<IpAddr>,
    /// The numbers (`Port`, `Ttl`, `Weight`, `Prio`, `Limit`, `Rate`, `Services`, `Backends`), in line
    /// order: no verb takes more than two.
    numbers: heapless::Vec<u64, 2>,
    /// `Policy`.
    policy: Policy,
    /// `Peer`, `Group`.
    socket: SocketAddr,
    /// `AddOptions` and a check's options: each option's value, if given, in its table's
    /// order (a text option's value is 0: its text is in `texts`).
    options: [Option<u64>; 7],
    /// Each option's text as written, beside `options`.
    texts: [&'a str; 7],
}

impl<'a> Args<'a> {
    /// The next token, or `Missing(what)` at the end of the line.
    fn next(&mut self, what: &'static str) -> Result<(usize, &'a str), ParseError> {
        self.toks.next().ok_or_else(|| self.missing(what))
    }

    /// `what` is missing: the error points just past the line's last token.
    fn missing(&self, what: &'static str) -> ParseError {
        let before = self.toks.line.get(..self.toks.pos).unwrap_or_default();
        ParseError {
            col: before.trim_end().len() + 1,
            kind: ParseErrorKind::Missing(what),
        }
    }

    /// Takes the arguments `spec` lists, then makes sure nothing follows.
    fn parse(&mut self, spec: &[Arg]) -> Result<(), ParseError> {
        for &arg in spec {
            let what = match arg {
                Arg::AddOptions => {
                    return self.options(
                        &ADD_OPTIONS,
                        ADD_OPTIONS.len(),
                        ParseErrorKind::UnknownOption,
                    )
                }
                Arg::Path => "path",
                Arg::Iface => "interface name",
                Arg::Node => "node name",
                Arg::Addr | Arg::MaybeAddr => "address",
                Arg::Port => "port",
                Arg::Services => "number of services",
                Arg::Backends => "number of backends per service",
                Arg::Policy => "policy",
                Arg::Peer | Arg::Group => "ADDR:PORT",
                _ => "number",
            };
            let (col, tok) = match self.toks.next() {
                Some(tok) => tok,
                None if arg == Arg::MaybeAddr => break,
                None => return Err(self.missing(what)),
            };
            let err = |kind| Err(ParseError { col, kind });
            match arg {
                Arg::Node if !crate::name::is_node_name(tok.as_bytes()) => {
                    return err(ParseErrorKind::BadNodeName)
                }
                Arg::Path | Arg::Iface | Arg::Node => self.word = tok,
                Arg::Addr | Arg::MaybeAddr => match crate::addr::parse_ip(tok) {
                    Some(a) => self.addr = Some(a),
                    None => return err(ParseErrorKind::BadAddr),
                },
                Arg::Policy => match Policy::from_name(tok) {
                    Some(p) => self.policy = p,
                    None => return err(ParseErrorKind::BadPolicy),
                },
                Arg::Peer | Arg::Group => match socket_addr(tok) {
                    Some(sa) if arg == Arg::Peer || is_group(sa.ip()) => self.socket = sa,
                    Some(_) => return err(ParseErrorKind::NotMulticast),
                    None => return err(ParseErrorKind::BadSocketAddr),
                },
                _ => {
                    let n = value(arg, col, tok)?;
                    // Full only if a verb's table entry listed a third number.
                    self.numbers.push(n).or(err(ParseErrorKind::Extra))?;
                }
            }
        }
        match self.toks.next() {
            Some((col, _)) => Err(ParseError {
                col,
                kind: ParseErrorKind::Extra,
            }),
            None => Ok(()),
        }
    }

    /// Takes `key=value` options from `table` up to the end of the line into `self.options`
    /// (and their texts into `self.texts`); only the first `allowed` of them are taken here, the
    /// others are http's. `unknown` is the error for a token that is not one of them.
    fn options(
        &mut self,
        table: &[(&str, Arg)],
        allowed: usize,
        unknown: ParseErrorKind,
    ) -> Result<(), ParseError> {
        for (col, opt) in self.toks.by_ref() {
            let Some((i, vcol, v)) = option_of(table, col, opt) else {
                return Err(ParseError { col, kind: unknown });
            };
            if i >= allowed {
                return Err(ParseError {
                    col,
                    kind: ParseErrorKind::HttpOnlyOption,
                });
            }
            let n = value(table[i].1, vcol, v)?;
            self.texts[i] = v;
            if self.options[i].replace(n).is_some() {
                return Err(ParseError {
                    col,
                    kind: ParseErrorKind::DuplicateOption,
                });
            }
        }
        Ok(())
    }

    /// Number `i` of the line's numbers (0 if the verb took fewer).
    fn number(&self, i: usize) -> u64 {
        self.numbers.get(i).copied().unwrap_or(0)
    }

    /// The address of a verb whose table entry has `Addr` (set by the time this is asked).
    fn addr(&self) -> IpAddr {
        self.addr
            .unwrap_or(IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED))
    }

    /// The line of a verb that takes a service name, once its arguments are parsed.
    ///
    /// Out of line and with the name by reference: inlined, LLVM split the 254-byte name into
    /// single bytes and copied them one by one per variant (kilobytes on the router build).
    #[inline(never)]
    fn command(&self, verb: Verb, service: &Name) -> Line<'a> {
        let service = *service;
        let [o0, o1, o2, ..] = self.options;
        let addr = self.addr();
        Line::Command(match verb {
            Verb::Add => Command::Add {
                service,
                addr,
                weight: o0.map(|n| n as u32),
                prio: o1.map(|n| n as u32),
                limit: o2,
            },
            Verb::Del => Command::Del {
                service,
                addr: self.addr,
            },
            Verb::Down | Verb::Up => Command::SetUp {
                service,
                addr,
                up: verb == Verb::Up,
            },
            Verb::Policy => Command::Policy {
                service,
                policy: self.policy,
            },
            Verb::Weight | Verb::Prio | Verb::Limit => Command::Set {
                service,
                addr,
                attr: match verb {
                    Verb::Weight => Attr::Weight(self.number(0) as u32),
                    Verb::Prio => Attr::Prio(self.number(0) as u32),
                    _ => Attr::Limit(self.number(0)),
                },
            },
            _ => Command::Reset { service },
        })
    }

    /// A `check` line's kind, its arguments and options, once the service name is read.
    fn check(&mut self, service: &Name) -> Result<Line<'a>, ParseError> {
        let (col, word) = self.next("check kind")?;
        let mut allowed = COMMON_CHECK_OPTIONS;
        let kind = match word {
            "tcp" | "http" => {
                let (col, tok) = self.next("port")?;
                let port = value(Arg::Port, col, tok)? as u16;
                if word == "tcp" {
                    CheckKind::Tcp { port }
                } else {
                    allowed = CHECK_OPTIONS.len();
                    // Filled in below, once the options are read.
                    CheckKind::Http {
                        port,
                        path: "/",
                        host: None,
                        expect: (200, 399),
                    }
                }
            }
            "icmp" => CheckKind::Icmp,
            "exec" => CheckKind::Exec {
                command: self.exec_command()?,
            },
            _ => {
                return Err(ParseError {
                    col,
                    kind: ParseErrorKind::BadCheckKind,
                })
            }
        };
        self.options(&CHECK_OPTIONS, allowed, ParseErrorKind::UnknownCheckOption)?;
        let [o0, o1, o2, o3, path, host, expect] = self.options;
        let kind = match kind {
            CheckKind::Http { port, .. } => CheckKind::Http {
                port,
                path: if path.is_some() { self.texts[4] } else { "/" },
                host: host.map(|_| self.texts[5]),
                expect: expect.map_or((200, 399), |e| ((e >> 16) as u16, e as u16)),
            },
            other => other,
        };
        Ok(Line::Setting(Setting::Check(Check {
            service: *service,
            kind,
            interval_ms: o0.unwrap_or(100) as u32,
            timeout_ms: o1.unwrap_or(200) as u32,
            fall: o2.unwrap_or(2) as u8,
            rise: o3.unwrap_or(2) as u8,
        })))
    }

    /// `exec`'s program and arguments: everything up to the trailing check options (so the
    /// options follow the command, as they follow the port of the other kinds).
    fn exec_command(&mut self) -> Result<&'a str, ParseError> {
        let (col, program) = self.next("program")?;
        if !program.starts_with('/') {
            return Err(ParseError {
                col,
                kind: ParseErrorKind::RelativeProgram,
            });
        }
        let start = col - 1;
        let mut end = start + program.len();
        let ahead = Tokens {
            line: self.toks.line,
            pos: self.toks.pos,
        };
        for (col, tok) in ahead {
            if option_of(&CHECK_OPTIONS[..COMMON_CHECK_OPTIONS], col, tok).is_none() {
                end = col - 1 + tok.len();
            }
        }
        self.toks.pos = end;
        Ok(self.toks.line.get(start..end).unwrap_or(program))
    }

    /// The setting of a verb that takes no service name, once its arguments are parsed.
    fn setting(&self, verb: Verb) -> Setting<'a> {
        let w = self.word;
        match verb {
            Verb::Table => Setting::Table(w),
            Verb::Fifo => Setting::Fifo(w),
            Verb::State => Setting::State(w),
            Verb::Key => Setting::Key(w),
            Verb::HostsFile => Setting::HostsFile(w),
            Verb::DnsmasqPid => Setting::DnsmasqPid(w),
            Verb::Iface => Setting::Iface(w),
            Verb::Node => Setting::Node(w),
            Verb::Ttl => Setting::Ttl(self.number(0) as u8),
            Verb::Capacity => Setting::Capacity(
                // Both numbers were checked against the limits by `value`.
                Capacity::new(self.number(0) as usize, self.number(1) as usize)
                    .unwrap_or(Capacity::DEFAULT),
            ),
            Verb::Group => Setting::Group(self.socket),
            Verb::Peer => Setting::Peer(self.socket),
            Verb::MaxLookupRate => Setting::MaxLookupRate(self.number(0)),
            _ => Setting::Insecure,
        }
    }
}

/// Parses raw bytes as a line; see [`parse_line`].
pub fn parse_bytes(line: &[u8]) -> Result<Option<Line<'_>>, ParseError> {
    match core::str::from_utf8(line) {
        Ok(text) => parse_line(text),
        Err(e) => Err(ParseError {
            col: e.valid_up_to() + 1,
            kind: ParseErrorKind::NotText,
        }),
    }
}

/// Parses one line: `Ok(None)` for a blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<Line<'_>>, ParseError> {
    let mut a = Args {
        toks: Tokens { line, pos: 0 },
        word: "",
        addr: None,
        numbers: heapless::Vec::new(),
        policy: Policy::Failover,
        socket: SocketAddr::from(([0; 4], 0)),
        options: [None; 7],
        texts: [""; 7],
    };
    let Some((col, word)) = a.toks.next() else {
        return Ok(None);
    };
    let Some(&(_, verb, spec)) = VERBS.iter().find(|(w, ..)| *w == word) else {
        return Err(ParseError {
            col,
            kind: ParseErrorKind::UnknownVerb,
        });
    };
    if !verb.takes_service() {
        a.parse(spec)?;
        return Ok(Some(Line::Setting(a.setting(verb))));
    }
    let (col, tok) = a.next("service name")?;
    let service = Name::new_checked(tok.as_bytes()).map_err(|e| ParseError {
        col,
        kind: ParseErrorKind::BadName(e),
    })?;
    if verb == Verb::Check {
        return a.check(&service).map(Some);
    }
    a.parse(spec)?;
    Ok(Some(a.command(verb, &service)))
}

/// The option of `table` that token `opt` (at column `col`) sets: its index, the column of its
/// value, and the value; `None` when it is not `key=value` with one of the table's keys.
fn option_of<'t>(
    table: &[(&str, Arg)],
    col: usize,
    opt: &'t str,
) -> Option<(usize, usize, &'t str)> {
    let (key, v) = split(opt, opt.bytes().position(|b| b == b'='))?;
    let i = table.iter().position(|(k, _)| *k == key)?;
    Some((i, col + key.len() + 1, v))
}

/// Whether `ip` may be a cluster group: administratively scoped IPv4 (239.0.0.0/8, RFC 2365) or
/// any IPv6 multicast address (`ff15::/16` is a good site-local choice).
pub fn is_group(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[0] == 239,
        IpAddr::V6(a) => a.is_multicast(),
    }
}

/// `ADDR:PORT`, an IPv6 address in brackets with an optional `%SCOPE`: what `SocketAddr`'s
/// `FromStr` accepts, by hand around the one IP address parser the `Addr` argument uses too
/// (std's socket address parser is a second, larger copy of it: router size budget).
fn socket_addr(tok: &str) -> Option<SocketAddr> {
    let (host, port) = split(tok, tok.bytes().rposition(|b| b == b':'))?;
    let port = u16::try_from(whole(port)?).ok()?;
    let (ip, scope) = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']')?;
            match split(v6, v6.bytes().position(|b| b == b'%')) {
                Some((ip, scope)) => (ip, u32::try_from(whole(scope)?).ok()?),
                None => (v6, 0),
            }
        }
        None => (host, 0),
    };
    match (crate::addr::parse_ip(ip)?, host.starts_with('[')) {
        (IpAddr::V4(a), false) => Some(SocketAddr::V4(SocketAddrV4::new(a, port))),
        (IpAddr::V6(a), true) => Some(SocketAddr::V6(SocketAddrV6::new(a, port, 0, scope))),
        _ => None,
    }
}

/// `s` split around the ASCII separator at byte `at`, which is dropped; `None` without one.
/// (`str::split_once` with a `char` costs a few hundred bytes per use on the router build.)
fn split(s: &str, at: Option<usize>) -> Option<(&str, &str)> {
    let at = at?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// The number or duration `tok` as `arg` (one of the numeric [`Arg`]s) takes it, in range.
fn value(arg: Arg, col: usize, tok: &str) -> Result<u64, ParseError> {
    let (min, max) = match arg {
        Arg::Port => (1, 65535),
        Arg::Ttl | Arg::Count => (1, 255),
        Arg::Services => (1, MAX_SERVICES as u64),
        Arg::Backends => (1, MAX_BACKENDS as u64),
        Arg::Weight => (0, u64::from(MAX_WEIGHT)),
        Arg::Prio => (0, u64::from(u32::MAX)),
        Arg::Duration => (1, MAX_CHECK_MS),
        Arg::Rate => (1, MAX_LOOKUP_RATE),
        _ => (0, u64::MAX),
    };
    let visible = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic());
    let (n, bad) = match arg {
        Arg::Duration => (duration(tok), ParseErrorKind::BadDuration),
        Arg::UrlPath => (
            (tok.starts_with('/') && visible(tok)).then_some(0),
            ParseErrorKind::BadUrlPath,
        ),
        Arg::HostName => (visible(tok).then_some(0), ParseErrorKind::BadHostName),
        Arg::Expect => (expect(tok), ParseErrorKind::BadExpect),
        _ => (whole(tok), ParseErrorKind::BadNumber { min, max }),
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ParseError { col, kind: bad }),
    }
}

/// `200` or `200-399` (100 to 599, low to high) as `low << 16 | high`.
fn expect(tok: &str) -> Option<u64> {
    let (lo, hi) = split(tok, tok.bytes().position(|b| b == b'-')).unwrap_or((tok, tok));
    let (lo, hi) = (whole(lo)?, whole(hi)?);
    ((100..=hi).contains(&lo) && hi <= 599).then_some(lo << 16 | hi)
}

/// `100ms` or `2s` in milliseconds, if it fits a `u64`.
fn duration(tok: &str) -> Option<u64> {
    let (digits, scale) = match tok.strip_suffix("ms") {
        Some(d) => (d, 1),
        None => (tok.strip_suffix('s')?, 1000),
    };
    whole(digits)?.checked_mul(scale)
}

/// Decimal digits only (no sign) as a `u64`, if it fits. (By hand rather than `str::parse`,
/// whose generic code is several times the size of this loop on the router build.)
fn whole(tok: &str) -> Option<u64> {
    if tok.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for b in tok.bytes() {
        let digit = char::from(b).to_digit(10)?;
        n = n.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;
    use std::format;
    use std::string::{String, ToString};

    /// Renders a parse result as text so expectations read like the language itself.
    fn check(input: &str, expect: &str) {
        let got = match parse_line(input) {
            Ok(None) => String::from("nothing"),
            Ok(Some(Line::Setting(s))) => format!("{s:?}"),
            Ok(Some(Line::Command(c))) => format!("{c:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn blank_and_comments() {
        check("", "nothing");
        check("   \t ", "nothing");
        check("# add web.lan 1.2.3.4", "nothing");
        check("   #x", "nothing");
    }

    #[test]
    fn commands() {
        check(
            "add Web.Lan. 10.0.0.1 weight=3 prio=2 limit=100 # c",
            "Add { service: Name(\"web.lan\"), addr: 10.0.0.1, weight: Some(3), prio: Some(2), limit: Some(100) }",
        );
        check(
            "add web.lan ::1",
            "Add { service: Name(\"web.lan\"), addr: ::1, weight: None, prio: None, limit: None }",
        );
        check(
            "del web.lan",
            "Del { service: Name(\"web.lan\"), addr: None }",
        );
        check(
            "del web.lan 10.0.0.1",
            "Del { service: Name(\"web.lan\"), addr: Some(10.0.0.1) }",
        );
        check(
            "down web.lan 10.0.0.1",
            "SetUp { service: Name(\"web.lan\"), addr: 10.0.0.1, up: false }",
        );
        check(
            "\tup  web.lan   10.0.0.1  ",
            "SetUp { service: Name(\"web.lan\"), addr: 10.0.0.1, up: true }",
        );
        check(
            "policy web.lan leastused",
            "Policy { service: Name(\"web.lan\"), policy: LeastUsed }",
        );
        check(
            "weight web.lan 10.0.0.1 7",
            "Set { service: Name(\"web.lan\"), addr: 10.0.0.1, attr: Weight(7) }",
        );
        check(
            "prio web.lan 10.0.0.1 0",
            "Set { service: Name(\"web.lan\"), addr: 10.0.0.1, attr: Prio(0) }",
        );
        check(
            "limit web.lan 10.0.0.1 0",
            "Set { service: Name(\"web.lan\"), addr: 10.0.0.1, attr: Limit(0) }",
        );
        check("reset web.lan", "Reset { service: Name(\"web.lan\") }");
        check("table /run/x", "Table(\"/run/x\")");
        check("fifo /run/y # z", "Fifo(\"/run/y\")");
        check(
            "hosts-file /tmp/hosts/lbfo",
            "HostsFile(\"/tmp/hosts/lbfo\")",
        );
        check(
            "  dnsmasq-pid /var/run/dnsmasq.pid # c",
            "DnsmasqPid(\"/var/run/dnsmasq.pid\")",
        );
        check(
            "state /var/lib/lbfo/state",
            "State(\"/var/lib/lbfo/state\")",
        );
        check("state", "column 6: missing path");
        check("state /a /b", "column 10: unexpected extra argument");
        check("check web.lan tcp", "column 18: missing port");
    }

    #[test]
    fn checks() {
        check(
            "check web.lan tcp 80",
            "Check(Check { service: Name(\"web.lan\"), kind: Tcp { port: 80 }, interval_ms: 100, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check web.lan tcp 443 interval=1s timeout=50ms fall=3 rise=1",
            "Check(Check { service: Name(\"web.lan\"), kind: Tcp { port: 443 }, interval_ms: 1000, timeout_ms: 50, fall: 3, rise: 1 })",
        );
        check(
            "check web.lan http 8080",
            "Check(Check { service: Name(\"web.lan\"), kind: Http { port: 8080, path: \"/\", host: None, expect: (200, 399) }, interval_ms: 100, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check web.lan http 80 expect=200 host=www.example.com path=/health?full=1 fall=1",
            "Check(Check { service: Name(\"web.lan\"), kind: Http { port: 80, path: \"/health?full=1\", host: Some(\"www.example.com\"), expect: (200, 200) }, interval_ms: 100, timeout_ms: 200, fall: 1, rise: 2 })",
        );
        check(
            "check web.lan http 80 expect=200-204",
            "Check(Check { service: Name(\"web.lan\"), kind: Http { port: 80, path: \"/\", host: None, expect: (200, 204) }, interval_ms: 100, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check dns.lan icmp interval=1s # ping",
            "Check(Check { service: Name(\"dns.lan\"), kind: Icmp, interval_ms: 1000, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check db.lan exec /usr/bin/pg_isready  -q -t 1 timeout=2s rise=1 # c",
            "Check(Check { service: Name(\"db.lan\"), kind: Exec { command: \"/usr/bin/pg_isready  -q -t 1\" }, interval_ms: 100, timeout_ms: 2000, fall: 2, rise: 1 })",
        );
        // Only trailing options are options; one inside the command is an argument.
        check(
            "check db.lan exec /bin/dd count=1 fall=3 of=/dev/null interval=1s",
            "Check(Check { service: Name(\"db.lan\"), kind: Exec { command: \"/bin/dd count=1 fall=3 of=/dev/null\" }, interval_ms: 1000, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check db.lan exec /bin/true",
            "Check(Check { service: Name(\"db.lan\"), kind: Exec { command: \"/bin/true\" }, interval_ms: 100, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check web.lan udp 80",
            "column 15: unknown check kind (expected tcp, http, icmp or exec)",
        );
        check(
            "check web.lan tcp 0",
            "column 19: not a whole number from 1 to 65535",
        );
        check(
            "check web.lan http x",
            "column 20: not a whole number from 1 to 65535",
        );
        check(
            "check web.lan tcp 80 interval=5",
            "column 31: not a duration from 1ms to 60s (e.g. 100ms or 2s)",
        );
        check(
            "check web.lan tcp 80 timeout=61s",
            "column 30: not a duration from 1ms to 60s (e.g. 100ms or 2s)",
        );
        check(
            "check web.lan tcp 80 fall=0",
            "column 27: not a whole number from 1 to 255",
        );
        check(
            "check web.lan tcp 80 weight=2",
            "column 22: unknown option (expected interval=, timeout=, fall=, rise=, or for http path=, host=, expect=)",
        );
        check(
            "check web.lan tcp 80 rise=2 rise=3",
            "column 29: option given twice",
        );
        check(
            "check web.lan tcp 80 path=/",
            "column 22: option only for http checks",
        );
        check(
            "check web.lan icmp expect=200",
            "column 20: option only for http checks",
        );
        check("check web.lan icmp 80", "column 20: unknown option (expected interval=, timeout=, fall=, rise=, or for http path=, host=, expect=)");
        check(
            "check web.lan http 80 path=health",
            "column 28: not a path of visible ASCII characters starting with / (e.g. /health)",
        );
        check(
            "check web.lan http 80 path=/a\x01b",
            "column 28: not a path of visible ASCII characters starting with / (e.g. /health)",
        );
        check(
            "check web.lan http 80 host=",
            "column 28: not a host name of visible ASCII characters",
        );
        for bad in ["99", "600", "300-200", "200-", "-300", "2xx", "200-399-400"] {
            check(
                &format!("check web.lan http 80 expect={bad}"),
                "column 30: not a status or range of statuses from 100 to 599 (e.g. 200 or 200-399)",
            );
        }
        check(
            "check web.lan http 80 path=/a path=/b",
            "column 31: option given twice",
        );
        check("check web.lan http", "column 19: missing port");
        check("check web.lan", "column 14: missing check kind");
        check("check web.lan exec", "column 19: missing program");
        check(
            "check web.lan exec # /bin/true",
            "column 19: missing program",
        );
        check(
            "check web.lan exec true",
            "column 20: not an absolute path (exec runs no shell and searches no PATH)",
        );
        check(
            "check web.lan exec /bin/true timeout=0s",
            "column 38: not a duration from 1ms to 60s (e.g. 100ms or 2s)",
        );
    }

    #[test]
    fn errors_name_column_and_reason() {
        check("ad web.lan 1.2.3.4", "column 1: unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, capacity, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure, max-lookup-rate or check)");
        check("hosts-file", "column 11: missing path");
        check("dnsmasq-pid  /a /b", "column 17: unexpected extra argument");
        check("add", "column 4: missing service name");
        check("add web.lan  ", "column 12: missing address");
        check(
            "add web..lan 1.2.3.4",
            "column 5: bad service name: empty label or label longer than 63 bytes",
        );
        check(
            "add web.lan 1.2.3",
            "column 13: not an IPv4 or IPv6 address",
        );
        check(
            "add web.lan 1.2.3.4 weight=x",
            "column 28: not a whole number from 0 to 1000000",
        );
        check(
            "add web.lan 1.2.3.4 weight=1000001",
            "column 28: not a whole number from 0 to 1000000",
        );
        check(
            "add web.lan 1.2.3.4 weight=+1",
            "column 28: not a whole number from 0 to 1000000",
        );
        check(
            "add web.lan 1.2.3.4 colour=1",
            "column 21: unknown option (expected weight=, prio= or limit=)",
        );
        check(
            "add web.lan 1.2.3.4 weight",
            "column 21: unknown option (expected weight=, prio= or limit=)",
        );
        check(
            "add web.lan 1.2.3.4 prio=1 prio=2",
            "column 28: option given twice",
        );
        check(
            "down web.lan 1.2.3.4 now",
            "column 22: unexpected extra argument",
        );
        check(
            "policy web.lan random",
            "column 16: unknown policy (expected failover, roundrobin, weighted, leastused or fastest)",
        );
        check(
            "limit web.lan 1.2.3.4 -1",
            "column 23: not a whole number from 0 to 18446744073709551615",
        );
        check(
            "prio web.lan 1.2.3.4 4294967296",
            "column 22: not a whole number from 0 to 4294967295",
        );
        check("reset", "column 6: missing service name");
        check(
            "del web.lan 1.2.3.4 5.6.7.8",
            "column 21: unexpected extra argument",
        );
    }

    #[test]
    fn cluster_settings() {
        check("group 239.1.2.3:7946", "Group(239.1.2.3:7946)");
        check("group [ff15::4c62]:7946", "Group([ff15::4c62]:7946)");
        check(
            "group 10.0.0.1:7946",
            "column 7: not a multicast group (expected IPv4 239.0.0.0/8 or IPv6 ff00::/8)",
        );
        check(
            "group 224.0.0.1:7946",
            "column 7: not a multicast group (expected IPv4 239.0.0.0/8 or IPv6 ff00::/8)",
        );
        check(
            "group ff15::1:7946",
            "column 7: not ADDR:PORT (an IPv6 address goes in brackets: [ff15::1]:7946)",
        );
        check("peer 192.0.2.1:7946", "Peer(192.0.2.1:7946)");
        check("peer [fd00::1]:1", "Peer([fd00::1]:1)");
        check("iface eth0", "Iface(\"eth0\")");
        check("node gw-1", "Node(\"gw-1\")");
        check("node GW_1.lan", "Node(\"GW_1.lan\")");
        let rule = "not a node name (1 to 64 bytes, each a letter, digit, '.', '-' or '_')";
        let long = format!("node {}", "a".repeat(65));
        for bad in [
            "node a\x1b[31mb",
            "node gw/1",
            "node gw\u{e9}",
            long.as_str(),
        ] {
            check(bad, &format!("column 6: {rule}"));
        }
        check(
            &format!("node {}", "a".repeat(64)),
            &format!("Node({:?})", "a".repeat(64)),
        );
        check("key /etc/lbfo.key", "Key(\"/etc/lbfo.key\")");
        check("insecure # no key", "Insecure");
        check("insecure yes", "column 10: unexpected extra argument");
        check("ttl 4", "Ttl(4)");
        check("max-lookup-rate 250000", "MaxLookupRate(250000)");
        check(
            "max-lookup-rate 0",
            "column 17: not a whole number from 1 to 1000000000",
        );
        check("max-lookup-rate", "column 16: missing number");
        check("ttl 0", "column 5: not a whole number from 1 to 255");
        check("ttl 256", "column 5: not a whole number from 1 to 255");
        check("ttl", "column 4: missing number");
    }

    #[test]
    fn capacity() {
        check(
            "capacity 64 8",
            "Capacity(Capacity { services: 64, backends: 8 })",
        );
        check(
            "capacity 4096 16 # the most",
            "Capacity(Capacity { services: 4096, backends: 16 })",
        );
        check(
            "capacity 1 1",
            "Capacity(Capacity { services: 1, backends: 1 })",
        );
        check(
            "capacity 0 8",
            "column 10: not a whole number from 1 to 4096",
        );
        check(
            "capacity 4097 8",
            "column 10: not a whole number from 1 to 4096",
        );
        check(
            "capacity 64 17",
            "column 13: not a whole number from 1 to 16",
        );
        check(
            "capacity 64 0",
            "column 13: not a whole number from 1 to 16",
        );
        check("capacity", "column 9: missing number of services");
        check(
            "capacity 64",
            "column 12: missing number of backends per service",
        );
        check("capacity 64 8 2", "column 15: unexpected extra argument");
        check(
            "capacity x 8",
            "column 10: not a whole number from 1 to 4096",
        );
    }

    #[test]
    fn hand_parsers_match_std() {
        // `socket_addr` and `whole` stand in for std's parsers; they must accept exactly what
        // those accept (`whole` without a sign), with the same values.
        let hosts = [
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3",
            "[::1]",
            "[ff15::4c62]",
            "[::ffff:1.2.3.4]",
            "[fe80::1%2]",
            "[fe80::1%]",
            "[fe80::1%x]",
            "[fe80::1%4294967296]",
            "[fe80::1%007]",
            "::1",
            "[1.2.3.4]",
            "[::1",
            "::1]",
            "",
            "[]",
            "[::1]%1",
            "a.b",
        ];
        let ports = [
            "",
            "0",
            "80",
            "0080",
            "65535",
            "65536",
            "+1",
            "-1",
            "1a",
            "99999999999999999999",
        ];
        for h in hosts {
            for p in ports {
                for tok in [format!("{h}:{p}"), format!("{h}{p}"), format!("{h}:{p}:1")] {
                    assert_eq!(socket_addr(&tok), tok.parse().ok(), "{tok:?}");
                }
            }
            for n in ports
                .iter()
                .chain(&["18446744073709551615", "18446744073709551616"])
            {
                let want = n.parse::<u64>().ok().filter(|_| !n.starts_with('+'));
                assert_eq!(whole(n), want, "{n:?}");
            }
        }
    }

    #[test]
    fn commands_show_as_the_lines_they_parse_from() {
        for line in [
            "add a.lan 10.0.0.1",
            "add a.lan ::1 weight=2 prio=3 limit=4",
            "add a.lan fd00::1 limit=18446744073709551615",
            "del a.lan",
            "del a.lan 10.0.0.1",
            "down a.lan 10.0.0.1",
            "up a.lan ::ffff:10.0.0.1",
            "policy a.lan leastused",
            "weight a.lan 10.0.0.1 1000000",
            "prio a.lan 10.0.0.1 4294967295",
            "limit a.lan 10.0.0.1 5",
            "reset a.lan",
        ] {
            let Ok(Some(Line::Command(c))) = parse_line(line) else {
                panic!("{line}")
            };
            assert_eq!(c.to_string(), line);
        }
    }

    /// A valid name of 1 to 253 bytes: one to a few labels, now and then long ones, in any case.
    fn random_name(r: &mut TestRng) -> Name {
        const CHARS: &[u8] = b"abcxyzABCXYZ0129-_";
        loop {
            let mut text = std::vec::Vec::new();
            let labels = if r.below(8) == 0 { 8 } else { 3 };
            for i in 0..1 + r.below(labels) {
                if i > 0 {
                    text.push(b'.');
                }
                let longest = if r.below(4) == 0 { 63 } else { 8 };
                let len = 1 + r.below(longest);
                text.extend((0..len).map(|_| r.pick(CHARS)));
            }
            if let Ok(name) = Name::new_checked(&text) {
                return name;
            }
        }
    }

    /// An address of either family; IPv6 mostly zero groups (so every compression comes up) and
    /// now and then IPv4-mapped.
    fn random_addr(r: &mut TestRng) -> IpAddr {
        let v4 = core::net::Ipv4Addr::from(r.next() as u32);
        match r.below(4) {
            0 | 1 => IpAddr::V4(v4),
            2 => IpAddr::V6(v4.to_ipv6_mapped()),
            _ => {
                let g = [0u16; 8].map(|_| match r.below(3) {
                    0 | 1 => 0,
                    _ => r.next() as u16,
                });
                IpAddr::V6(core::net::Ipv6Addr::from(g))
            }
        }
    }

    /// A number from 0 to `max`, often one of the two ends.
    fn random_number(r: &mut TestRng, max: u64) -> u64 {
        match r.below(4) {
            0 => 0,
            1 => max,
            _ if max == u64::MAX => r.next(),
            _ => r.below(max + 1),
        }
    }

    /// Any command the parser can produce.
    fn random_command(r: &mut TestRng) -> Command {
        let service = random_name(r);
        let addr = random_addr(r);
        let mut option = |max: u64| (r.below(2) == 0).then(|| random_number(r, max));
        let (weight, prio, limit) = (
            option(u64::from(MAX_WEIGHT)).map(|n| n as u32),
            option(u64::from(u32::MAX)).map(|n| n as u32),
            option(u64::MAX),
        );
        match r.below(6) {
            0 => Command::Add {
                service,
                addr,
                weight,
                prio,
                limit,
            },
            1 => Command::Del {
                service,
                addr: (r.below(2) == 0).then_some(addr),
            },
            2 => Command::SetUp {
                service,
                addr,
                up: r.below(2) == 0,
            },
            3 => Command::Policy {
                service,
                policy: r.pick(&Policy::ALL),
            },
            4 => {
                let attrs = [
                    Attr::Weight(random_number(r, u64::from(MAX_WEIGHT)) as u32),
                    Attr::Prio(random_number(r, u64::from(u32::MAX)) as u32),
                    Attr::Limit(random_number(r, u64::MAX)),
                ];
                Command::Set {
                    service,
                    addr,
                    attr: r.pick(&attrs),
                }
            }
            _ => Command::Reset { service },
        }
    }

    #[test]
    fn every_command_shows_as_a_line_that_parses_back_to_it() {
        let cases = if cfg!(miri) { 200 } else { 100_000 };
        let mut r = TestRng(0x5eed_0fc0_ffee);
        let mut kinds = [0u32; 6];
        for _ in 0..cases {
            let c = random_command(&mut r);
            let line = c.to_string();
            assert_eq!(parse_line(&line), Ok(Some(Line::Command(c))), "{line}");
            kinds[match c {
                Command::Add { .. } => 0,
                Command::Del { .. } => 1,
                Command::SetUp { .. } => 2,
                Command::Policy { .. } => 3,
                Command::Set { .. } => 4,
                Command::Reset { .. } => 5,
            }] += 1;
        }
        assert!(kinds.iter().all(|&n| n > cases / 12), "{kinds:?}");
    }

    #[test]
    fn bytes_not_text() {
        let e = parse_bytes(b"add web\xff.lan 1.2.3.4").unwrap_err();
        assert_eq!(e.to_string(), "column 8: line is not UTF-8 text");
    }
}
