//! Health checks (`check SERVICE KIND ...`), run inside the one poll loop, no threads: `tcp`
//! connects ([`tcp`]), `http` GETs ([`http`]), `icmp` echoes ([`icmp`]) and `exec` programs
//! ([`exec`]).
//!
//! [`Health`] holds one [`Target`] per checked backend. A check that is due starts a probe; the
//! probe's socket is a poll source ([`Health::fds`]; the raw ICMP sockets are shared by every
//! `icmp` probe, `exec` probes are reaped on SIGCHLD through [`Health::reap`]), and its deadline
//! (`timeout=`) joins the loop's poll timeout ([`Health::next_deadline`]). Nothing here blocks:
//! a FIFO line or a datagram that arrives while probes are in flight is handled in the same
//! wake-up. Times are the loop's monotonic clock in microseconds (round-trip times on a LAN are
//! fractions of a millisecond).
//!
//! **Verdicts**: a backend's local verdict changes after `fall` failures in a row (down) or
//! `rise` passes in a row (up); each change is a [`Verdict`] the agent turns into an ordinary
//! `down`/`up` command, replicated to the group like a FIFO command (see `Agent::health`).
//!
//! **A probe that cannot run is no verdict**: when the failure is this machine's own (no free
//! fd, no memory or buffers, no local port, a process that cannot be started: [`is_local`]), the
//! result is *unknown*: it is logged once, shown in `status`, and counted neither as a pass nor
//! as a failure, so the backend keeps its last verdict on every machine. The number of probes in
//! flight is capped ([`MAX_SOCKETS`], [`MAX_PROCESSES`]); a due check waits for a free place,
//! and the places go round.
//!
//! **How several checkers agree**: only a checker's own transitions are sent, as last-writer-wins
//! `up`/`down` commands. All hosts hold the same stamped register, so they all answer alike; a
//! checker that does not change its mind sends nothing, so two checkers that disagree (a host cut
//! off from a backend) do not flap: the most recent transition stands until a checker's view
//! changes again.
//!
//! **What `status` sees**: [`Health::report`] renders every target's state for the
//! `<table>.checks` file ([`report`]), which the loop writes a few times a second while it
//! changes.

mod exec;
mod http;
mod icmp;
pub mod report;
mod tcp;

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys::errno_text;
use crate::vecmap::VecMap;
use lbfo_core::addr::Ip;
use lbfo_core::cmd::{Check, CheckKind};
use lbfo_core::Name;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::unistd::Pid;

/// Sockets in flight at most (connects, HTTP exchanges, answers being drained): each is an fd
/// and a poll entry per turn. Also at most half the agent's fd limit (see [`Health::new`]).
pub const MAX_SOCKETS: usize = 256;
/// Check programs running at most (each a process the machine must fork and reap).
pub const MAX_PROCESSES: usize = 16;
/// How often the state is rendered for `status` at most, while it changes.
pub const REPORT_US: u64 = 250_000;

/// A check as the agent keeps it: core's [`Check`] with its texts owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The service whose backends are checked.
    pub service: Name,
    /// What is probed.
    pub probe: Probe,
    /// Milliseconds between the starts of two checks of one backend.
    pub interval_ms: u32,
    /// Milliseconds a probe may take.
    pub timeout_ms: u32,
    /// Failures in a row that mark a backend down.
    pub fall: u8,
    /// Passes in a row that mark it up again.
    pub rise: u8,
}

/// What a check probes; see [`CheckKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect to the port.
    Tcp(u16),
    /// An HTTP/1.1 GET of `path` on `port`; `host` for the `Host:` header (default: the
    /// backend's address); `expect` the passing statuses.
    Http {
        /// The TCP port.
        port: u16,
        /// The path requested.
        path: String,
        /// The `Host:` header, if given.
        host: Option<String>,
        /// The lowest and highest passing status.
        expect: (u16, u16),
    },
    /// An ICMP echo.
    Icmp,
    /// A program (absolute path) and its arguments.
    Exec(Vec<String>),
}

impl Spec {
    /// The check of a config line.
    pub fn new(c: &Check<'_>) -> Spec {
        let probe = match c.kind {
            CheckKind::Tcp { port } => Probe::Tcp(port),
            CheckKind::Http {
                port,
                path,
                host,
                expect,
            } => Probe::Http {
                port,
                path: path.to_owned(),
                host: host.map(str::to_owned),
                expect,
            },
            CheckKind::Icmp => Probe::Icmp,
            CheckKind::Exec { command } => Probe::Exec(
                command
                    .split_ascii_whitespace()
                    .map(str::to_owned)
                    .collect(),
            ),
        };
        Spec {
            service: c.service,
            probe,
            interval_ms: c.interval_ms,
            timeout_ms: c.timeout_ms,
            fall: c.fall,
            rise: c.rise,
        }
    }

    /// The kind's keyword, as `check` lines and `status` name it.
    pub fn kind(&self) -> &'static str {
        match self.probe {
            Probe::Tcp(_) => "tcp",
            Probe::Http { .. } => "http",
            Probe::Icmp => "icmp",
            Probe::Exec(_) => "exec",
        }
    }
}

/// Why a probe did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connect failed.
    Connect(Errno),
    /// No answer in time; the step that was waiting ("connect", "http", "icmp", "exec").
    Timeout(&'static str),
    /// An HTTP status outside `expect=`.
    Status(u16),
    /// An answer that is not HTTP/1.x.
    NotHttp,
    /// The connection closed before a status line came.
    Closed,
    /// Sending the request or reading the answer failed.
    Http(Errno),
    /// Sending the echo request failed.
    Icmp(Errno),
    /// The program exited with this status (not 0).
    Exit(i32),
    /// A signal killed the program.
    Signal(i32),
    /// This machine could not run the probe: no verdict (see [`is_local`]).
    Local(Errno),
}

/// Whether an error is this machine's own rather than the backend's: out of fds (EMFILE,
/// ENFILE), memory or buffers (ENOMEM, ENOBUFS), local ports or processes (EADDRNOTAVAIL,
/// EAGAIN), not allowed (EPERM, EACCES: no privilege, a local firewall), no such protocol or
/// family here (EAFNOSUPPORT, EPROTONOSUPPORT), or no way out (ENETDOWN, ENETUNREACH: this
/// machine's interface or routes). A probe failing with one of these is *unknown*, never down.
pub fn is_local(e: Errno) -> bool {
    matches!(
        e,
        Errno::EMFILE
            | Errno::ENFILE
            | Errno::ENOMEM
            | Errno::ENOBUFS
            | Errno::EADDRNOTAVAIL
            | Errno::EAGAIN
            | Errno::EPERM
            | Errno::EACCES
            | Errno::EAFNOSUPPORT
            | Errno::EPROTONOSUPPORT
            | Errno::ENETDOWN
            | Errno::ENETUNREACH
    )
}

impl Fault {
    /// The fault with a local errno taken for what it is: [`Fault::Local`].
    fn settled(self) -> Fault {
        match self {
            Fault::Connect(e) | Fault::Http(e) | Fault::Icmp(e) if is_local(e) => Fault::Local(e),
            f => f,
        }
    }

    /// Whether this is no verdict (the machine's own failure).
    pub fn is_local(&self) -> bool {
        matches!(self, Fault::Local(_))
    }

    /// The fault as `status` and the log show it: "connect: refused", "http: status 503",
    /// "exec: exit 2", "icmp: timeout", "unknown: too many open files".
    pub fn text(&self) -> String {
        match *self {
            Fault::Connect(Errno::ECONNREFUSED) => "connect: refused".to_owned(),
            Fault::Connect(e) => format!("connect: {}", errno_text(e as i32)),
            Fault::Timeout(step) => format!("{step}: timeout"),
            Fault::Status(n) => format!("http: status {n}"),
            Fault::NotHttp => "http: not an HTTP/1 answer".to_owned(),
            Fault::Closed => "http: closed before the status line".to_owned(),
            Fault::Http(e) => format!("http: {}", errno_text(e as i32)),
            Fault::Icmp(e) => format!("icmp: {}", errno_text(e as i32)),
            Fault::Exit(n) => format!("exec: exit {n}"),
            Fault::Signal(n) => format!("exec: killed by signal {n}"),
            Fault::Local(e) => format!("unknown: {}", errno_text(e as i32)),
        }
    }
}

/// A checked backend: service name and address.
pub type Key = (String, IpAddr);

/// The last result of a target's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// None has finished yet.
    None,
    /// It passed.
    Pass,
    /// It failed.
    Fail,
    /// It could not run (a local failure).
    Unknown,
}

/// A probe in flight.
#[derive(Debug)]
struct Flight {
    started_us: u64,
    deadline_us: u64,
    io: Io,
}

#[derive(Debug)]
enum Io {
    Tcp(OwnedFd),
    Http(http::Exchange),
    /// The echo's sequence number.
    Icmp(u16),
    Exec(Pid),
}

impl Io {
    fn socket(&self) -> bool {
        matches!(self, Io::Tcp(_) | Io::Http(_))
    }

    /// Gives the probe up: its socket closed, its process group killed (and left to reap).
    /// Returns the step that was waiting, for a timeout's text.
    fn give_up(self, zombies: &mut Vec<Pid>) -> &'static str {
        match self {
            Io::Tcp(fd) => {
                tcp::close(fd);
                "connect"
            }
            Io::Http(x) => {
                let step = if x.connecting() { "connect" } else { "http" };
                x.abandon();
                step
            }
            Io::Icmp(_) => "icmp",
            Io::Exec(pid) => {
                exec::kill(pid);
                zombies.push(pid);
                "exec"
            }
        }
    }
}

/// One checked backend and what its checks found.
#[derive(Debug)]
struct Target {
    spec: Spec,
    /// An http check's request.
    request: Vec<u8>,
    passes: u32,
    fails: u32,
    /// Unknown results in a row.
    unknowns: u32,
    /// The settled verdict: `None` until `fall` or `rise` checks agree.
    up: Option<bool>,
    /// When `up` took its value (or the target was made).
    since_us: u64,
    next_us: u64,
    flight: Option<Flight>,
    last: Last,
    /// The last fault, and when it came.
    fault: Option<(Fault, u64)>,
    /// The last round-trip time, and its smoothed average (see [`Target::sample`]).
    rtt_us: Option<u32>,
    srtt_us: Option<u32>,
}

impl Target {
    fn new(spec: Spec, addr: IpAddr, us: u64) -> Target {
        let request = match &spec.probe {
            Probe::Http {
                port, path, host, ..
            } => {
                let host = host
                    .clone()
                    .unwrap_or_else(|| http::default_host(addr, *port));
                http::request(path, &host)
            }
            _ => Vec::new(),
        };
        Target {
            spec,
            request,
            passes: 0,
            fails: 0,
            unknowns: 0,
            up: None,
            since_us: us,
            next_us: us,
            flight: None,
            last: Last::None,
            fault: None,
            rtt_us: None,
            srtt_us: None,
        }
    }

    /// A round-trip time: the smoothed one moves a quarter of the way to it (an EWMA, as TCP
    /// smooths its RTT, with more weight on the new sample since checks come seldom).
    fn sample(&mut self, rtt: u32) {
        self.rtt_us = Some(rtt);
        self.srtt_us = Some(match self.srtt_us {
            None => rtt,
            Some(s) => {
                let (s, r) = (i64::from(s), i64::from(rtt));
                (s + (r - s) / 4) as u32
            }
        });
    }
}

/// A backend's verdict changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The service.
    pub service: Name,
    /// The backend.
    pub addr: IpAddr,
    /// Up or down.
    pub up: bool,
    /// Why, for the log.
    pub why: String,
}

/// What a poll entry of [`Health::fds`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The probe in flight of the target at this index.
    Target(usize),
    /// The raw ICMP socket (`true`: IPv6).
    Icmp(bool),
    /// An HTTP answer being drained, at this index.
    Drain(usize),
}

/// Every checked backend.
#[derive(Debug)]
pub struct Health {
    targets: VecMap<Key, Target>,
    pinger: icmp::Pinger,
    drains: Vec<Option<http::Drain>>,
    /// Check programs killed at their timeout (or whose check went away), not yet reaped.
    zombies: Vec<Pid>,
    socket_cap: usize,
    /// A round-trip time was measured since [`Health::take_sampled`].
    sampled: bool,
    /// The state changed since the last report.
    dirty: bool,
    next_report_us: u64,
    /// The cap was logged (once per time it is reached).
    capped: bool,
    /// Where [`Health::tick`]'s scan for due checks starts.
    rotate: usize,
    log: Vec<String>,
}

impl Health {
    /// No targets yet. `fd_limit` is the agent's soft limit on open files: sockets in flight
    /// stay below half of it (and [`MAX_SOCKETS`]). `icmp_id` identifies this agent's echoes.
    pub fn new(fd_limit: u64, icmp_id: u16) -> Health {
        let half = usize::try_from(fd_limit / 2).unwrap_or(usize::MAX);
        Health {
            targets: VecMap::new(),
            pinger: icmp::Pinger::new(icmp_id),
            drains: Vec::new(),
            zombies: Vec::new(),
            socket_cap: MAX_SOCKETS.min(half).max(1),
            sampled: false,
            dirty: false,
            next_report_us: 0,
            capped: false,
            rotate: 0,
            log: Vec::new(),
        }
    }

    /// Brings the targets to `backends` (every backend of every checked service, with its
    /// check), keeping the counts of those that stay; probes of those that go are given up.
    pub fn sync(&mut self, backends: &[(Spec, IpAddr)], us: u64) {
        let keep: VecMap<Key, &Spec> = backends
            .iter()
            .map(|(c, a)| ((c.service.as_str().to_owned(), *a), c))
            .collect();
        let before = self.targets.len();
        let zombies = &mut self.zombies;
        self.targets.retain(|k, t| {
            let same = keep.get(k) == Some(&&t.spec);
            if let (false, Some(f)) = (same, t.flight.take()) {
                f.io.give_up(zombies);
            }
            same
        });
        for (k, c) in keep {
            let addr = k.1;
            self.targets
                .get_or_insert_with(k, || Target::new(c.clone(), addr, us));
        }
        let icmp = |v6: bool| {
            self.targets
                .iter()
                .any(|((_, a), t)| t.spec.probe == Probe::Icmp && a.is_ipv6() == v6)
        };
        let (v4, v6) = (icmp(false), icmp(true));
        self.pinger.keep(v4, v6);
        self.dirty |= before > 0 || !self.targets.is_empty();
    }

    /// How many backends are checked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }

    /// The poll entries: each socket in flight with what to poll it for.
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags, Token)> {
        let mut out = Vec::new();
        let mut icmp = false;
        for (i, t) in self.targets.values().enumerate() {
            match t.flight.as_ref().map(|f| &f.io) {
                Some(Io::Tcp(fd)) => out.push((fd.as_fd(), PollFlags::POLLOUT, Token::Target(i))),
                Some(Io::Http(x)) => {
                    let (fd, events) = x.poll_fd();
                    out.push((fd, events, Token::Target(i)));
                }
                Some(Io::Icmp(_)) => icmp = true,
                _ => {}
            }
        }
        if icmp {
            out.extend(
                self.pinger
                    .fds()
                    .map(|(fd, v6)| (fd, PollFlags::POLLIN, Token::Icmp(v6))),
            );
        }
        for (i, d) in self.drains.iter().enumerate() {
            if let Some(d) = d {
                out.push((d.fd(), PollFlags::POLLIN, Token::Drain(i)));
            }
        }
        out
    }

    /// The poll entries of [`Health::fds`] that became ready (any event: an error or a hang-up
    /// is read as the probe's answer).
    pub fn ready(&mut self, tokens: &[Token], us: u64, out: &mut Vec<Verdict>) {
        for &token in tokens {
            match token {
                Token::Target(i) => self.answered(i, us, out),
                Token::Icmp(v6) => self.echoes(v6, us, out),
                Token::Drain(i) => {
                    if let Some(slot) = self.drains.get_mut(i) {
                        if slot.as_mut().is_some_and(http::Drain::read) {
                            if let Some(d) = slot.take() {
                                d.close();
                            }
                        }
                    }
                }
            }
        }
        self.drains.retain(Option::is_some);
    }

    /// The socket of target `i`'s probe became ready.
    fn answered(&mut self, i: usize, us: u64, out: &mut Vec<Verdict>) {
        let Some((k, t)) = self.targets.get_index_mut(i) else {
            return;
        };
        let Some(mut f) = t.flight.take() else {
            return;
        };
        let result = match f.io {
            Io::Tcp(fd) => {
                let r = tcp::result(&fd).map_err(Fault::Connect);
                tcp::close(fd);
                r
            }
            Io::Http(mut x) => {
                let expect = match t.spec.probe {
                    Probe::Http { expect, .. } => expect,
                    _ => (200, 399),
                };
                match x.advance(&t.request, expect) {
                    None => {
                        f.io = Io::Http(x);
                        t.flight = Some(f);
                        return;
                    }
                    Some(r) => {
                        if let Some(d) = x.into_drain(f.deadline_us) {
                            self.drains.push(Some(d));
                        }
                        r
                    }
                }
            }
            io => {
                t.flight = Some(Flight { io, ..f });
                return;
            }
        };
        let rtt = us.saturating_sub(f.started_us);
        self.sampled |= record(k, t, result.map(|()| rtt), us, out, &mut self.log);
        self.dirty = true;
    }

    /// Echo replies came on the raw socket of one family.
    fn echoes(&mut self, v6: bool, us: u64, out: &mut Vec<Verdict>) {
        for (from, seq) in self.pinger.replies(v6) {
            let Some((k, t)) = self.targets.iter_mut().find(|((_, a), t)| {
                *a == from && matches!(t.flight, Some(Flight { io: Io::Icmp(s), .. }) if s == seq)
            }) else {
                continue;
            };
            let started = t.flight.take().map_or(us, |f| f.started_us);
            self.sampled |= record(k, t, Ok(us.saturating_sub(started)), us, out, &mut self.log);
            self.dirty = true;
        }
    }

    /// SIGCHLD came: check programs that ended are judged (and their groups killed), killed
    /// ones reaped.
    pub fn reap(&mut self, us: u64, out: &mut Vec<Verdict>) {
        for (k, t) in self.targets.iter_mut() {
            let Some(Flight {
                io: Io::Exec(pid),
                started_us,
                ..
            }) = t.flight
            else {
                continue;
            };
            let Some(ended) = exec::exited(pid) else {
                continue;
            };
            t.flight = None;
            let result = match ended {
                exec::Ended::Exit(0) => Ok(us.saturating_sub(started_us)),
                exec::Ended::Exit(n) => Err(Fault::Exit(n)),
                exec::Ended::Signal(n) => Err(Fault::Signal(n)),
            };
            self.sampled |= record(k, t, result, us, out, &mut self.log);
            self.dirty = true;
        }
        self.zombies.retain(|&pid| !exec::reap(pid));
    }

    /// Times out probes past their deadline and starts the checks that are due, as far as the
    /// caps allow.
    pub fn tick(&mut self, us: u64, out: &mut Vec<Verdict>) {
        for slot in &mut self.drains {
            if let Some(d) = slot.take_if(|d| us >= d.deadline_us) {
                d.close();
            }
        }
        self.drains.retain(Option::is_some);
        let (mut sockets, mut procs) = self.in_use();
        for (k, t) in self.targets.iter_mut() {
            if t.flight.as_ref().is_some_and(|f| us >= f.deadline_us) {
                if let Some(f) = t.flight.take() {
                    sockets -= usize::from(f.io.socket());
                    let step = f.io.give_up(&mut self.zombies);
                    record(k, t, Err(Fault::Timeout(step)), us, out, &mut self.log);
                    self.dirty = true;
                }
            }
        }
        // The scan for due checks starts after the last one started, so under the caps none
        // waits behind one that is due again and again.
        let n = self.targets.len();
        let first = self.rotate % n.max(1);
        let mut waiting = 0;
        for i in (first..n).chain(0..first) {
            let Some((k, t)) = self.targets.get_index_mut(i) else {
                continue;
            };
            if t.flight.is_some() || us < t.next_us {
                continue;
            }
            if full(&t.spec.probe, sockets, procs, self.socket_cap) {
                waiting += 1;
                continue;
            }
            t.next_us = us + 1000 * u64::from(t.spec.interval_ms);
            self.rotate = i + 1;
            match start(k, t, &mut self.pinger) {
                Ok(Some(io)) => {
                    sockets += usize::from(io.socket());
                    procs += usize::from(matches!(io, Io::Exec(_)));
                    t.flight = Some(Flight {
                        started_us: us,
                        deadline_us: us + 1000 * u64::from(t.spec.timeout_ms),
                        io,
                    });
                }
                // Connected at once (loopback): a pass with no measurable time.
                Ok(None) => self.sampled |= record(k, t, Ok(0), us, out, &mut self.log),
                Err(fault) => {
                    record(k, t, Err(fault), us, out, &mut self.log);
                }
            }
            self.dirty |= t.flight.is_none();
        }
        if waiting > 0 && !self.capped {
            self.log.push(format!(
                "check: {} sockets and {} programs in flight, the most at once; {waiting} due checks wait for a free place",
                self.socket_cap, MAX_PROCESSES
            ));
        }
        self.capped = waiting > 0;
    }

    /// Sockets and processes in use: probes in flight, answers being drained, programs killed
    /// and not yet reaped.
    fn in_use(&self) -> (usize, usize) {
        let mut sockets = self.drains.len();
        let mut procs = self.zombies.len();
        for t in self.targets.values() {
            match t.flight.as_ref().map(|f| &f.io) {
                Some(Io::Tcp(_) | Io::Http(_)) => sockets += 1,
                Some(Io::Exec(_)) => procs += 1,
                _ => {}
            }
        }
        (sockets, procs)
    }

    /// When [`Health::tick`] (or the report) must next run, in monotonic microseconds
    /// (`u64::MAX` with nothing to do). A due check that waits for a free place is no deadline:
    /// a probe finishing (an fd, SIGCHLD, or its own deadline) frees one.
    pub fn next_deadline(&self) -> u64 {
        let (sockets, procs) = self.in_use();
        let mut next = if self.dirty {
            self.next_report_us
        } else {
            u64::MAX
        };
        for t in self.targets.values() {
            let d = match &t.flight {
                Some(f) => f.deadline_us,
                None if full(&t.spec.probe, sockets, procs, self.socket_cap) => continue,
                None => t.next_us,
            };
            next = next.min(d);
        }
        self.drains
            .iter()
            .flatten()
            .fold(next, |n, d| n.min(d.deadline_us))
    }

    /// Whether a round-trip time was measured since the last call.
    pub fn take_sampled(&mut self) -> bool {
        std::mem::take(&mut self.sampled)
    }

    /// The smoothed round-trip time of `service`'s backend `addr`, in microseconds, if it has
    /// been measured.
    pub fn rtt(&self, service: &str, addr: IpAddr) -> Option<u32> {
        self.targets
            .get(&(service.to_owned(), addr))
            .and_then(|t| t.srtt_us)
    }

    /// The state for `status` ([`report`]), when it changed and the last one is at least
    /// [`REPORT_US`] old; `wall_ms` is the wall clock at `us`.
    pub fn report(&mut self, us: u64, wall_ms: u64) -> Option<String> {
        if !self.dirty || us < self.next_report_us {
            return None;
        }
        self.dirty = false;
        self.next_report_us = us + REPORT_US;
        let wall_of = |at_us: u64| wall_ms.saturating_sub(us.saturating_sub(at_us) / 1000);
        let rows = self.targets.iter().map(|((service, addr), t)| report::Row {
            service: service.clone(),
            addr: *addr,
            kind: t.spec.kind().to_owned(),
            up: t.up,
            since_ms: wall_of(t.since_us),
            passes: t.passes,
            fails: t.fails,
            last: t.last,
            rtt_us: t.rtt_us,
            srtt_us: t.srtt_us,
            error: t.fault.map(|(f, at)| (wall_of(at), f.text())),
        });
        Some(report::render(rows))
    }

    /// Log lines since the last call.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }
}

impl Drop for Health {
    /// Check programs do not outlive the agent.
    fn drop(&mut self) {
        for t in self.targets.values_mut() {
            if let Some(Flight {
                io: Io::Exec(pid), ..
            }) = t.flight
            {
                exec::kill(pid);
            }
        }
    }
}

/// Whether a probe of this kind must wait: `sockets` and `procs` in use, `socket_cap` allowed.
fn full(probe: &Probe, sockets: usize, procs: usize, socket_cap: usize) -> bool {
    match probe {
        Probe::Tcp(_) | Probe::Http { .. } => sockets >= socket_cap,
        Probe::Exec(_) => procs >= MAX_PROCESSES,
        Probe::Icmp => false,
    }
}

/// Starts a probe of target `k`: `Ok(None)` when it passed at once.
fn start(k: &Key, t: &Target, pinger: &mut icmp::Pinger) -> Result<Option<Io>, Fault> {
    let addr = k.1;
    match &t.spec.probe {
        Probe::Tcp(port) => tcp::connect_or_close(addr, *port)
            .map(|fd| fd.map(Io::Tcp))
            .map_err(Fault::Connect),
        Probe::Http { port, .. } => http::Exchange::start(addr, *port)
            .map(|x| Some(Io::Http(x)))
            .map_err(Fault::Connect),
        Probe::Icmp => pinger
            .send(addr)
            .map(|seq| Some(Io::Icmp(seq)))
            .map_err(Fault::Icmp),
        // Whatever stops a program from starting is this machine's.
        Probe::Exec(argv) => exec::spawn(argv, &k.0, addr)
            .map(|pid| Some(Io::Exec(pid)))
            .map_err(Fault::Local),
    }
}

/// Counts one result (a round-trip time, or a fault) and reports a change of verdict. Returns
/// whether a round-trip time was measured.
fn record(
    key: &Key,
    t: &mut Target,
    r: Result<u64, Fault>,
    us: u64,
    out: &mut Vec<Verdict>,
    log: &mut Vec<String>,
) -> bool {
    let (service, addr) = (&key.0, Ip(key.1));
    let r = r.map_err(Fault::settled);
    if let Err(f) = r {
        t.fault = Some((f, us));
    }
    match r {
        Err(f) if f.is_local() => {
            t.last = Last::Unknown;
            t.unknowns = t.unknowns.saturating_add(1);
            if t.unknowns == 1 {
                let keep = match t.up {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "none yet",
                };
                log.push(format!(
                    "check: {service} {addr}: {}; keeping its last verdict ({keep})",
                    f.text()
                ));
            }
            return false;
        }
        _ if t.unknowns > 0 => {
            log.push(format!(
                "check: {service} {addr}: checking again after {} unknown results",
                t.unknowns
            ));
            t.unknowns = 0;
        }
        _ => {}
    }
    match r {
        Ok(rtt) => {
            t.last = Last::Pass;
            t.passes = t.passes.saturating_add(1);
            t.fails = 0;
            t.sample(u32::try_from(rtt).unwrap_or(u32::MAX));
        }
        Err(_) => {
            t.last = Last::Fail;
            t.fails = t.fails.saturating_add(1);
            t.passes = 0;
        }
    }
    let verdict = if t.fails >= u32::from(t.spec.fall) {
        Some(false)
    } else if t.passes >= u32::from(t.spec.rise) {
        Some(true)
    } else {
        None
    };
    if let Some(up) = verdict.filter(|&up| t.up != Some(up)) {
        t.up = Some(up);
        t.since_us = us;
        let kind = t.spec.kind();
        let why = match (up, t.fault) {
            (true, _) => format!("{} {kind} checks passed", t.passes),
            (false, Some((f, _))) => format!("{} {kind} checks failed: {}", t.fails, f.text()),
            (false, None) => format!("{} {kind} checks failed", t.fails),
        };
        out.push(Verdict {
            service: t.spec.service,
            addr: key.1,
            up,
            why,
        });
    }
    r.is_ok()
}

#[cfg(test)]
mod tests;
