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
//! policy SERVICE failover|roundrobin|weighted|leastused
//! weight SERVICE ADDR N      prio SERVICE ADDR N      limit SERVICE ADDR N
//! reset SERVICE              zero the service's usage counters
//! ```
//! Agent settings share the grammar but only the config file may use them; [`Line::Setting`] lets
//! the caller refuse them elsewhere:
//!
//! ```text
//! table PATH      fifo PATH      state PATH (where changes are persisted across restarts)
//! hosts-file PATH dnsmasq-pid PATH   the dnsmasq export
//! group ADDR:PORT the cluster's multicast group: 239.0.0.0/8, or IPv6 ff00::/8 as [ff15::1]:PORT
//! iface NAME      ttl N (1-255)      node NAME      peer ADDR:PORT (repeatable)
//! key PATH        insecure
//! check SERVICE tcp PORT [interval=100ms] [timeout=200ms] [fall=2] [rise=2]
//! ```

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use crate::name::{Name, NameError};
use crate::table::Policy;

/// The largest accepted weight; keeps weight arithmetic far from overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A change to the service table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// `check SERVICE tcp PORT ...`: health-check every backend of a service.
    Check(Check),
}

/// A health check: a TCP connect to each backend of `service` on `port`, every `interval_ms`,
/// failed after `timeout_ms`; down after `fall` failures in a row, up after `rise` successes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The service whose backends are checked.
    pub service: Name,
    /// The TCP port.
    pub port: u16,
    /// Milliseconds between the starts of two checks of one backend.
    pub interval_ms: u32,
    /// Milliseconds a connect may take.
    pub timeout_ms: u32,
    /// Failures in a row that mark a backend down.
    pub fall: u8,
    /// Successes in a row that mark it up again.
    pub rise: u8,
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
    /// Not a whole number in range; names the range's top.
    BadNumber(u64),
    /// `key=value` with a key the verb does not take.
    UnknownOption,
    /// The same option twice.
    DuplicateOption,
    /// Not one of the four policies.
    BadPolicy,
    /// The line holds bytes that are not UTF-8 text.
    NotText,
    /// Not `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    BadSocketAddr,
    /// A `group` that is not an IPv4 239.0.0.0/8 or IPv6 multicast address.
    NotMulticast,
    /// A `check` kind other than `tcp`.
    BadCheckKind,
    /// A `check` option other than interval=, timeout=, fall= or rise=.
    UnknownCheckOption,
    /// Not a duration such as `100ms` or `2s` (1 ms to 60 s).
    BadDuration,
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseErrorKind::UnknownVerb => f.write_str(
                "unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure or check)",
            ),
            ParseErrorKind::Missing(what) => write!(f, "missing {what}"),
            ParseErrorKind::Extra => f.write_str("unexpected extra argument"),
            ParseErrorKind::BadName(e) => write!(f, "bad service name: {e}"),
            ParseErrorKind::BadAddr => f.write_str("not an IPv4 or IPv6 address"),
            ParseErrorKind::BadNumber(max) => write!(f, "not a whole number from 0 to {max}"),
            ParseErrorKind::UnknownOption => f.write_str("unknown option (expected weight=, prio= or limit=)"),
            ParseErrorKind::BadCheckKind => f.write_str("unknown check kind (expected tcp)"),
            ParseErrorKind::UnknownCheckOption => f.write_str("unknown option (expected interval=, timeout=, fall= or rise=)"),
            ParseErrorKind::BadDuration => f.write_str("not a duration from 1ms to 60s (e.g. 100ms or 2s)"),
            ParseErrorKind::DuplicateOption => f.write_str("option given twice"),
            ParseErrorKind::BadPolicy => {
                f.write_str("unknown policy (expected failover, roundrobin, weighted or leastused)")
            }
            ParseErrorKind::NotText => f.write_str("line is not UTF-8 text"),
            ParseErrorKind::BadSocketAddr => {
                f.write_str("not ADDR:PORT (an IPv6 address goes in brackets: [ff15::1]:7946)")
            }
            ParseErrorKind::NotMulticast => f.write_str(
                "not a multicast group (expected IPv4 239.0.0.0/8 or IPv6 ff00::/8)",
            ),
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
            self.pos = self.line.len();
            return None;
        }
        let len = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        self.pos = start + len;
        Some((start + 1, rest.get(..len)?))
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
    let mut toks = Tokens { line, pos: 0 };
    let Some((col, verb)) = toks.next() else {
        return Ok(None);
    };
    let end = line.trim_end().len() + 1;
    let err = |col, kind| ParseError { col, kind };
    let mut next = |what: &'static str| toks.next().ok_or(err(end, ParseErrorKind::Missing(what)));

    let line = match verb {
        "table" | "fifo" | "state" | "key" | "hosts-file" | "dnsmasq-pid" => {
            let (_, path) = next("path")?;
            Line::Setting(match verb {
                "table" => Setting::Table(path),
                "fifo" => Setting::Fifo(path),
                "hosts-file" => Setting::HostsFile(path),
                "dnsmasq-pid" => Setting::DnsmasqPid(path),
                "state" => Setting::State(path),
                _ => Setting::Key(path),
            })
        }
        "check" => {
            let service = name(next("service name")?)?;
            let (col, kind) = next("check kind")?;
            if kind != "tcp" {
                return Err(err(col, ParseErrorKind::BadCheckKind));
            }
            let (col, p) = next("port")?;
            let port = match number(col, p, 65535)? {
                0 => return Err(err(col, ParseErrorKind::BadNumber(65535))),
                n => n as u16,
            };
            let mut c = Check {
                service,
                port,
                interval_ms: 100,
                timeout_ms: 200,
                fall: 2,
                rise: 2,
            };
            let mut seen = [false; 4];
            for (col, opt) in toks.by_ref() {
                let (key, value) = opt
                    .split_once('=')
                    .ok_or(err(col, ParseErrorKind::UnknownCheckOption))?;
                let vcol = col + key.len() + 1;
                let i = match key {
                    "interval" => {
                        c.interval_ms = duration(vcol, value)?;
                        0
                    }
                    "timeout" => {
                        c.timeout_ms = duration(vcol, value)?;
                        1
                    }
                    "fall" | "rise" => {
                        let n = match number(vcol, value, 255)? {
                            0 => return Err(err(vcol, ParseErrorKind::BadNumber(255))),
                            n => n as u8,
                        };
                        if key == "fall" {
                            c.fall = n;
                            2
                        } else {
                            c.rise = n;
                            3
                        }
                    }
                    _ => return Err(err(col, ParseErrorKind::UnknownCheckOption)),
                };
                if core::mem::replace(&mut seen[i], true) {
                    return Err(err(col, ParseErrorKind::DuplicateOption));
                }
            }
            Line::Setting(Setting::Check(c))
        }
        "iface" => Line::Setting(Setting::Iface(next("interface name")?.1)),
        "node" => Line::Setting(Setting::Node(next("node name")?.1)),
        "insecure" => Line::Setting(Setting::Insecure),
        "ttl" => {
            let (col, n) = next("number")?;
            match number(col, n, 255)? {
                0 => return Err(err(col, ParseErrorKind::BadNumber(255))),
                n => Line::Setting(Setting::Ttl(n as u8)),
            }
        }
        "group" | "peer" => {
            let (col, tok) = next("ADDR:PORT")?;
            let sa: SocketAddr = tok
                .parse()
                .map_err(|_| err(col, ParseErrorKind::BadSocketAddr))?;
            if verb == "peer" {
                Line::Setting(Setting::Peer(sa))
            } else if is_group(sa.ip()) {
                Line::Setting(Setting::Group(sa))
            } else {
                return Err(err(col, ParseErrorKind::NotMulticast));
            }
        }
        "add" => {
            let service = name(next("service name")?)?;
            let addr = addr(next("address")?)?;
            let (mut weight, mut prio, mut limit) = (None, None, None);
            for (col, opt) in toks.by_ref() {
                let (key, value) = opt
                    .split_once('=')
                    .ok_or(err(col, ParseErrorKind::UnknownOption))?;
                let vcol = col + key.len() + 1;
                let dup = match key {
                    "weight" => weight
                        .replace(number(vcol, value, u64::from(MAX_WEIGHT))? as u32)
                        .is_some(),
                    "prio" => prio
                        .replace(number(vcol, value, u64::from(u32::MAX))? as u32)
                        .is_some(),
                    "limit" => limit.replace(number(vcol, value, u64::MAX)?).is_some(),
                    _ => return Err(err(col, ParseErrorKind::UnknownOption)),
                };
                if dup {
                    return Err(err(col, ParseErrorKind::DuplicateOption));
                }
            }
            Line::Command(Command::Add {
                service,
                addr,
                weight,
                prio,
                limit,
            })
        }
        "del" => {
            let service = name(next("service name")?)?;
            let addr = match toks.next() {
                Some(tok) => Some(self::addr(tok)?),
                None => None,
            };
            Line::Command(Command::Del { service, addr })
        }
        "down" | "up" => {
            let service = name(next("service name")?)?;
            let addr = addr(next("address")?)?;
            Line::Command(Command::SetUp {
                service,
                addr,
                up: verb == "up",
            })
        }
        "policy" => {
            let service = name(next("service name")?)?;
            let (col, p) = next("policy")?;
            let policy = Policy::from_name(p).ok_or(err(col, ParseErrorKind::BadPolicy))?;
            Line::Command(Command::Policy { service, policy })
        }
        "weight" | "prio" | "limit" => {
            let service = name(next("service name")?)?;
            let addr = addr(next("address")?)?;
            let (col, n) = next("number")?;
            let attr = match verb {
                "weight" => Attr::Weight(number(col, n, u64::from(MAX_WEIGHT))? as u32),
                "prio" => Attr::Prio(number(col, n, u64::from(u32::MAX))? as u32),
                _ => Attr::Limit(number(col, n, u64::MAX)?),
            };
            Line::Command(Command::Set {
                service,
                addr,
                attr,
            })
        }
        "reset" => Line::Command(Command::Reset {
            service: name(next("service name")?)?,
        }),
        _ => return Err(err(col, ParseErrorKind::UnknownVerb)),
    };
    match toks.next() {
        Some((col, _)) => Err(err(col, ParseErrorKind::Extra)),
        None => Ok(Some(line)),
    }
}

/// Whether `ip` may be a cluster group: administratively scoped IPv4 (239.0.0.0/8, RFC 2365) or
/// any IPv6 multicast address (`ff15::/16` is a good site-local choice).
pub fn is_group(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[0] == 239,
        IpAddr::V6(a) => a.is_multicast(),
    }
}

fn name((col, tok): (usize, &str)) -> Result<Name, ParseError> {
    Name::new_checked(tok.as_bytes()).map_err(|e| ParseError {
        col,
        kind: ParseErrorKind::BadName(e),
    })
}

fn addr((col, tok): (usize, &str)) -> Result<IpAddr, ParseError> {
    tok.parse().map_err(|_| ParseError {
        col,
        kind: ParseErrorKind::BadAddr,
    })
}

/// `100ms` or `2s`, 1 ms to [`MAX_CHECK_MS`].
fn duration(col: usize, tok: &str) -> Result<u32, ParseError> {
    let bad = ParseError {
        col,
        kind: ParseErrorKind::BadDuration,
    };
    let (digits, scale) = if let Some(d) = tok.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = tok.strip_suffix('s') {
        (d, 1000)
    } else {
        return Err(bad);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(ms) if (1..=MAX_CHECK_MS).contains(&ms) => Ok(ms as u32),
        _ => Err(bad),
    }
}

fn number(col: usize, tok: &str, max: u64) -> Result<u64, ParseError> {
    match tok.parse::<u64>() {
        Ok(n) if n <= max && !tok.starts_with('+') => Ok(n),
        _ => Err(ParseError {
            col,
            kind: ParseErrorKind::BadNumber(max),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        check(
            "check web.lan tcp 80",
            "Check(Check { service: Name(\"web.lan\"), port: 80, interval_ms: 100, timeout_ms: 200, fall: 2, rise: 2 })",
        );
        check(
            "check web.lan tcp 443 interval=1s timeout=50ms fall=3 rise=1",
            "Check(Check { service: Name(\"web.lan\"), port: 443, interval_ms: 1000, timeout_ms: 50, fall: 3, rise: 1 })",
        );
        check(
            "check web.lan udp 80",
            "column 15: unknown check kind (expected tcp)",
        );
        check(
            "check web.lan tcp 0",
            "column 19: not a whole number from 0 to 65535",
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
            "column 27: not a whole number from 0 to 255",
        );
        check(
            "check web.lan tcp 80 weight=2",
            "column 22: unknown option (expected interval=, timeout=, fall= or rise=)",
        );
        check(
            "check web.lan tcp 80 rise=2 rise=3",
            "column 29: option given twice",
        );
        check("check web.lan tcp", "column 18: missing port");
    }

    #[test]
    fn errors_name_column_and_reason() {
        check("ad web.lan 1.2.3.4", "column 1: unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure or check)");
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
            "column 16: unknown policy (expected failover, roundrobin, weighted or leastused)",
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
        check("key /etc/lbfo.key", "Key(\"/etc/lbfo.key\")");
        check("insecure # no key", "Insecure");
        check("insecure yes", "column 10: unexpected extra argument");
        check("ttl 4", "Ttl(4)");
        check("ttl 0", "column 5: not a whole number from 0 to 255");
        check("ttl 256", "column 5: not a whole number from 0 to 255");
        check("ttl", "column 4: missing number");
    }

    #[test]
    fn bytes_not_text() {
        let e = parse_bytes(b"add web\xff.lan 1.2.3.4").unwrap_err();
        assert_eq!(e.to_string(), "column 8: line is not UTF-8 text");
    }
}
