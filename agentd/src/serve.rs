//! The agent's loop: [`serve`] sets everything up, then runs `Loop::turn` until SIGTERM or
//! SIGINT. One thread, one `poll`, a fixed set of sources; the [`Agent`] holds no fd and no
//! clock, the loop holds nothing else.
//!
//! # The rules of the loop
//!
//! **Setup, in this order**: SIGHUP, SIGTERM, SIGINT and SIGCHLD are blocked and read from a
//! signalfd (before anything else, so none is lost to its default action); the soft limit on open
//! files is raised to the hard one (health checks hold sockets); the table's lock is taken (a
//! second agent stops here); the FIFO is opened; the table is reused or built; the cluster
//! socket joins the group; the state file is read; the agent starts and fills the table; a new
//! table is renamed into place only then, so no reader ever sees it empty; "ready" is logged.
//!
//! **A turn**, once per wake-up:
//! 1. What is due runs: `Agent::tick` (heartbeat, usage limits, digest rounds, the export) and the
//!    health checks' deadlines and starts; whatever the agent queued is sent; the cluster's and
//!    the checks' state files are written when due; the log is written out.
//! 2. `poll` sleeps until the next deadline (the agent's and the health checks') or a source is
//!    ready. The sources, in this order: the FIFO and the signalfd (`POLLIN`), the cluster socket
//!    (`POLLIN`), then every health-check socket in flight (`Health::fds`: connects `POLLOUT`,
//!    HTTP answers and the raw ICMP sockets `POLLIN`).
//! 3. What woke is handled in this order: health-check answers, the cluster socket, the
//!    signalfd (SIGCHLD: check programs that ended are judged and reaped), the FIFO, then a
//!    reload if SIGHUP came, and last the exit if SIGTERM or SIGINT came (after the FIFO's lines
//!    of the same turn are applied and published). Last, if a check measured a round-trip time
//!    or the table changed, `fastest` services get their fastest sets (`Agent::fastest`).
//!
//! **Reads per wake-up are capped** so no source starves the others or the timers: the cluster
//! socket at [`MAX_RECV`](crate::cluster::socket::MAX_RECV) datagrams, the FIFO at [`fifo::MAX_READS`] reads of
//! [`fifo::READ_CHUNK`] bytes, each raw ICMP socket at `health::icmp::MAX_READS` replies; the
//! signalfd is read until empty (signals of one kind coalesce).
//! Every fd is non-blocking and close-on-exec; EINTR is retried, EAGAIN ends a source's reads.
//!
//! **What ends the agent** (exit 1, the line logged): `poll` failing (but for EINTR);
//! `POLLERR` or `POLLNVAL` on the FIFO or the signalfd, `POLLNVAL` on the socket; a read error on
//! the FIFO or the signalfd. These mean the agent's own fds are broken.
//!
//! **Out of fds**: two fds are held in reserve and given up only to write the state files for
//! `status` when the agent's own run out (EMFILE), so `status` shows health checks that cannot
//! run; such checks are *unknown* (see `health`), never down.
//!
//! **What is logged and survived**: a read error on the cluster socket other than EAGAIN, EINTR
//! and ECONNREFUSED (an ICMP error from an earlier send): logged the first time for each errno,
//! and the socket is read again next turn; failed sends (counted, `send_errors` in `status`: the
//! protocol repairs loss); a state, export or cluster-state file that cannot be written (logged,
//! retried; logged once until it works again); a config that fails to reload (logged, the running
//! one kept); a health check that cannot run for a local reason (no fd, no memory: logged, its
//! backend keeps its verdict; see `health`).

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lbfo_core::addr::Sock;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::time::ClockId;

use crate::agent::{Agent, Now, Saver, Shm, Tables};
use crate::cluster::socket::{Incoming, Net};
use crate::cluster::{wire, Cluster};
use crate::control::config::{self, Config};
use crate::control::fifo::{self, Fifo, Opened, Splitter};
use crate::health::{self, Health};
use crate::status;
use crate::sys::clock_us;
use crate::sys::fs::{say, Shown};
use crate::sys::{self, clock_ms, errno_text, io_text};
use crate::table::file::{self as tablefile, Shared};
use crate::table::state;

/// What the cluster needs beyond the config: the node's name and the key (checked by `main`
/// before anything is touched, since a problem there is a config error).
#[derive(Debug)]
pub struct ClusterSetup {
    /// The node's name.
    pub name: String,
    /// The group's key.
    pub key: wire::Key,
}

/// Sets everything up (see the module's rules), then runs the loop until SIGTERM or SIGINT.
/// `Err` is the line to print (exit 1).
pub fn serve(
    config_path: &Path,
    config: Config,
    setup: Option<ClusterSetup>,
) -> Result<(), String> {
    let signals = block_signals()?;
    let fd_limit = match crate::sys::raise_fd_limit() {
        Ok((before, after)) => {
            if after > before {
                say(&format!(
                    "open files: soft limit raised from {before} to {after}"
                ));
            }
            after
        }
        Err(e) => {
            say(&format!("open files: cannot read the limit: {e}"));
            health::MAX_SOCKETS as u64 * 2
        }
    };
    let table = config.table.shown().to_string();
    let checks_path = health::report::path(&config.table);
    let fifo_path = config.fifo.shown().to_string();
    let status_path = status::cluster_path(&config.table);
    let mut log = Vec::new();
    let lock = tablefile::prepare(&config.table, &mut log);
    flush(&mut log);
    let lock = lock.map_err(|e| format!("table {table}: {e}"))?;
    let fifo = open_fifo(&config.fifo)?;
    let shared = tablefile::open(&config.table, config.capacity, &lock, &mut log);
    flush(&mut log);
    let shared = shared.map_err(|e| format!("table {table}: {e}"))?;
    let clock = Clock::start();
    let (net, cluster) = match setup {
        Some(s) => {
            let (net, cluster) = join(&config, s, clock.now(), shared.adopted)?;
            (Some(net), Some(cluster))
        }
        None => (None, None),
    };
    let agent = start(config_path, config, shared, &clock, cluster);
    let mut l = Loop {
        agent,
        config_path,
        fifo,
        signals,
        net,
        clock,
        health: Health::new(fd_limit, icmp_id()),
        checked_at: None,
        fastest_at: None,
        splitter: Splitter::default(),
        buf: vec![0u8; fifo::READ_CHUNK],
        fifo_path,
        status_path,
        wakes: 0,
        checks_path,
        failing: [false; 2],
        spare: spare_fds(),
    };
    l.send();
    let committed = l.agent.commit();
    flush(&mut l.agent.take_log());
    committed.map_err(|e| format!("table {table}: {e}"))?;
    say(&format!(
        "ready: commands on {}, table {table}",
        l.fifo_path
    ));
    loop {
        if let Some(signal) = l.turn()? {
            say(&format!(
                "{signal}: exiting; the table stays in place and keeps answering"
            ));
            l.agent.leave();
            flush(&mut l.agent.take_log());
            drop(lock);
            return Ok(());
        }
    }
}

/// Blocks the signals the loop handles and opens the signalfd that delivers them.
fn block_signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals: {}", lower(e)))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {}", lower(e)))
}

/// The identifier of this agent's ICMP echoes: random, so two agents on one machine (or a
/// restarted one and its predecessor's late replies) do not take each other's.
fn icmp_id() -> u16 {
    let mut b = [0u8; 2];
    // A failed getrandom leaves 0: still a valid identifier.
    let _ = crate::sys::random(&mut b);
    u16::from_ne_bytes(b)
}

/// Opens (or creates) the FIFO and logs how.
fn open_fifo(path: &Path) -> Result<Fifo, String> {
    let (fifo, opened) = Fifo::open(path).map_err(|e| format!("fifo {}: {e}", path.shown()))?;
    let how = match opened {
        Opened::Created => "created (mode 0600)".to_owned(),
        Opened::Replaced(m) if m & 0o077 != 0 => format!(
            "made afresh (mode 0600); the old one's mode {m:04o} let other users in, and whoever \
             opened it then has lost it"
        ),
        Opened::Replaced(_) => {
            "made afresh (mode 0600); a writer that kept the old one open must open it again"
                .to_owned()
        }
    };
    say(&format!(
        "fifo {}: {how}; pipe buffer {} bytes",
        path.shown(),
        fifo.pipe_bytes()
    ));
    Ok(fifo)
}

/// Opens the cluster socket, joins the group and logs it.
fn join(
    config: &Config,
    setup: ClusterSetup,
    now: Now,
    adopted: bool,
) -> Result<(Net, Cluster), String> {
    let c = &config.cluster;
    let (net, warnings) = Net::open(c.group, c.iface.as_deref(), c.ttl.unwrap_or(1), &c.peers)
        .map_err(|e| format!("cluster: {e}"))?;
    warnings.iter().for_each(|w| say(w));
    let mut line = format!("cluster: node {}", setup.name);
    // `write!` into the one line. (Writing to a String cannot fail.)
    if let Some(g) = c.group {
        let _ = write!(line, " joins {}", Sock(g));
        if let Some(i) = &c.iface {
            let _ = write!(line, " on {i}");
        }
    }
    if !c.peers.is_empty() {
        let _ = write!(line, " with {} unicast peers", c.peers.len());
    }
    match &c.key {
        Some(k) => {
            let _ = write!(line, " (key {})", k.shown());
        }
        None => line += " (insecure)",
    }
    say(&line);
    let mut random = [0u8; 32];
    sys::random(&mut random).map_err(|e| format!("cluster: random boot nonce: {}", io_text(&e)))?;
    let cluster = Cluster::new(
        &setup.name,
        setup.key,
        random,
        now.wall_ms,
        now.mono_ms,
        adopted,
    );
    Ok((net, cluster))
}

/// Starts the agent over the table: the state file restored, the config applied, everything
/// published.
fn start(
    config_path: &Path,
    config: Config,
    shared: Shared,
    clock: &Clock,
    cluster: Option<Cluster>,
) -> Agent<'static> {
    let saved = config
        .state
        .as_deref()
        .and_then(|p| match state::load(p, clock.now().wall_ms) {
            state::Loaded::Missing => None,
            state::Loaded::Whole(s) => Some(s),
            state::Loaded::Damaged(s, line) => {
                say(&line);
                Some(s)
            }
            state::Loaded::Refused(line) => {
                say(&line);
                None
            }
        });
    let saver = config.state.clone().map(|p| {
        Saver(Box::new(move |bytes: &[u8]| {
            state::save(&p, bytes).map_err(|e| format!("{}: {}", p.shown(), io_text(&e)))
        }))
    });
    let path = config.table.clone();
    let tables = Tables(Box::new(move |capacity| {
        tablefile::make(&path, capacity)
            .map(|t| Box::new(t) as Box<dyn Shm>)
            .map_err(|e| e.to_string())
    }));
    let adopted = shared.adopted;
    let mut agent = Agent::start_with(
        Box::new(shared),
        adopted,
        config_path.to_owned(),
        config,
        clock.now(),
        cluster,
        saved,
        saver,
        Some(tables),
    );
    flush(&mut agent.take_log());
    agent
}

/// The loop's clock: the only place the agent reads the time.
#[derive(Debug)]
struct Clock {
    /// `CLOCK_MONOTONIC` at start, in milliseconds.
    start_ms: u64,
    /// Added to the wall clock: [`CLOCK_OFFSET_VAR`], for the tests.
    offset_ms: i64,
}

/// The environment variable that offsets the agent's wall clock by a number of milliseconds
/// (negative: behind), so an end-to-end test can run one agent of a cluster with a wrong clock
/// (the cluster tests: a node restarted an hour behind). Only whoever starts the agent sets its
/// environment, and that is root, who can set the system clock as well; it is logged.
pub const CLOCK_OFFSET_VAR: &str = "LBFO_TEST_CLOCK_OFFSET_MS";

impl Clock {
    fn start() -> Clock {
        let offset_ms = std::env::var(CLOCK_OFFSET_VAR)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        if offset_ms != 0 {
            say(&format!(
                "clock: {CLOCK_OFFSET_VAR}: the wall clock is taken {offset_ms} ms off (tests only)"
            ));
        }
        Clock {
            start_ms: clock_ms(ClockId::CLOCK_MONOTONIC),
            offset_ms,
        }
    }

    fn now(&self) -> Now {
        let wall = clock_ms(ClockId::CLOCK_REALTIME);
        Now {
            mono_ms: clock_ms(ClockId::CLOCK_MONOTONIC).saturating_sub(self.start_ms),
            wall_ms: wall.saturating_add_signed(self.offset_ms),
        }
    }

    /// The same monotonic clock in microseconds, for the health checks' round-trip times.
    fn us(&self) -> u64 {
        clock_us(ClockId::CLOCK_MONOTONIC).saturating_sub(self.start_ms * 1000)
    }
}

/// What `poll` said about each source.
#[derive(Debug)]
struct Woke {
    fifo: PollFlags,
    signals: PollFlags,
    net: PollFlags,
    /// The health checks' poll entries that became ready.
    answered: Vec<health::Token>,
}

/// What the signalfd delivered in one turn.
#[derive(Debug, Default)]
struct Signals {
    /// SIGHUP: reload.
    reload: bool,
    /// SIGTERM or SIGINT, by name: exit.
    stop: Option<&'static str>,
    /// SIGCHLD: a check program ended.
    child: bool,
}

/// The sources and the agent, between turns.
#[derive(Debug)]
struct Loop<'m, 'c> {
    agent: Agent<'m>,
    config_path: &'c Path,
    fifo: Fifo,
    signals: SignalFd,
    net: Option<Net>,
    clock: Clock,
    health: Health,
    /// `Agent::changes` when the health checks last re-read their targets.
    checked_at: Option<u64>,
    /// `Agent::changes` when the fastest sets were last computed.
    fastest_at: Option<u64>,
    splitter: Splitter,
    buf: Vec<u8>,
    fifo_path: String,
    /// Where the cluster's state is written for `status`.
    status_path: PathBuf,
    /// Times `poll` returned: how often the agent woke (in the cluster state file).
    wakes: u64,
    /// Where the health checks' state is written for `status`.
    checks_path: PathBuf,
    /// Writing the cluster's, the checks' state file failed last time (logged once).
    failing: [bool; 2],
    /// Two fds held in reserve (`/dev/null`), for the state files when the agent's fds run
    /// out: `status` then still shows what the checks could not do.
    spare: Vec<std::fs::File>,
}

impl Loop<'_, '_> {
    /// One turn (see the module's rules). `Ok(Some(signal))` when SIGTERM or SIGINT came.
    fn turn(&mut self) -> Result<Option<&'static str>, String> {
        let now = self.clock.now();
        self.due(now);
        let Some(woke) = self.wait(now)? else {
            return Ok(None);
        };
        self.wakes += 1;
        self.agent.wake(self.clock.now());
        let mut verdicts = Vec::new();
        self.health
            .ready(&woke.answered, self.clock.us(), &mut verdicts);
        verdicts.iter().for_each(|v| self.agent.health(v));
        // POLLERR on the UDP socket: errors of earlier sends (queued by IP_RECVERR, counted), or
        // a pending ICMP error, which a read clears.
        if woke.net.contains(PollFlags::POLLERR) {
            if let Some(n) = self.net.as_mut() {
                n.take_errors();
            }
        }
        if woke.net.intersects(PollFlags::POLLIN | PollFlags::POLLERR) {
            self.read_socket();
        }
        let signals = if woke.signals.contains(PollFlags::POLLIN) {
            self.read_signals()?
        } else {
            Signals::default()
        };
        if signals.child {
            let mut verdicts = Vec::new();
            self.health.reap(self.clock.us(), &mut verdicts);
            verdicts.iter().for_each(|v| self.agent.health(v));
        }
        let Signals { reload, stop, .. } = signals;
        if woke.fifo.contains(PollFlags::POLLIN) {
            let agent = &mut self.agent;
            self.fifo
                .drain(&mut self.splitter, &mut self.buf, |piece| {
                    agent.fifo_piece(piece)
                })
                .map_err(|e| format!("fifo {}: read: {}", self.fifo_path, lower(e)))?;
            self.agent.publish();
        }
        if reload {
            say(&format!("SIGHUP: reloading {}", self.config_path.shown()));
            self.agent.reload(config::load(self.config_path));
            self.agent.publish();
        }
        self.fastest();
        flush(&mut self.health.take_log());
        flush(&mut self.agent.take_log());
        Ok(stop)
    }

    /// Gives `fastest` services their fastest sets when a round-trip time was measured or the
    /// table changed (the agent rebuilds a schedule only when its set changes).
    fn fastest(&mut self) {
        let sampled = self.health.take_sampled();
        if !sampled && self.fastest_at == Some(self.agent.changes()) {
            return;
        }
        let health = &self.health;
        self.agent
            .fastest(|service, addr| health.rtt(service, addr));
        self.agent.publish();
        self.fastest_at = Some(self.agent.changes());
    }

    /// Step 1 of a turn: what is due at `now`, and everything queued leaves.
    fn due(&mut self, now: Now) {
        self.agent.tick(now);
        if self.checked_at != Some(self.agent.changes()) {
            self.checked_at = Some(self.agent.changes());
            self.health.sync(&self.agent.checked(), now.mono_ms);
        }
        let us = self.clock.us();
        let mut verdicts = Vec::new();
        self.health.tick(us, &mut verdicts);
        verdicts.iter().for_each(|v| self.agent.health(v));
        self.send();
        if let (Some(n), Some(text)) = (&self.net, self.agent.cluster_status(self.clock.now())) {
            let text = format!(
                "{text}send_errors {}\nwakes {}\n",
                n.send_errors, self.wakes
            );
            self.write_state(0, "cluster", &text);
        }
        if let Some(text) = self.health.report(us, now.wall_ms) {
            self.write_state(1, "check", &text);
        }
        flush(&mut self.health.take_log());
        flush(&mut self.agent.take_log());
    }

    /// Writes a state file for `status` (`which`: 0 the cluster's, 1 the checks'), with the
    /// spare fds if the agent has run out of its own; logs a failure once until it works again.
    fn write_state(&mut self, which: usize, what: &str, text: &str) {
        let path = [&self.status_path, &self.checks_path][which];
        // The cluster's is rewritten up to once a second: not flushed to disk each time.
        let write = || match which {
            0 => status::write_cluster(path, text),
            _ => crate::sys::fs::write_atomically(path, text.as_bytes(), 0o644),
        };
        let r = match write() {
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) && !self.spare.is_empty() => {
                self.spare.clear();
                let r = write();
                self.spare = spare_fds();
                r
            }
            r => r,
        };
        match r {
            Ok(()) if self.failing[which] => {
                self.failing[which] = false;
                say(&format!("{what}: {} written again", path.shown()));
            }
            Ok(()) => {}
            Err(_) if self.failing[which] => {}
            Err(e) => {
                self.failing[which] = true;
                say(&format!(
                    "{what}: cannot write {}: {}; retrying",
                    path.shown(),
                    io_text(&e)
                ));
            }
        }
    }

    /// Sends every datagram the agent queued.
    fn send(&mut self) {
        if let Some(n) = self.net.as_mut() {
            for (dest, d) in self.agent.take_outbox() {
                n.send(dest, &d);
            }
        }
    }

    /// Step 2 of a turn: sleeps in `poll` until the next deadline or a ready source. `None`
    /// when a signal the agent does not block (SIGSTOP, SIGCONT) interrupted it.
    fn wait(&self, now: Now) -> Result<Option<Woke>, String> {
        let checks = self.health.next_deadline().div_ceil(1000);
        let deadline = self.agent.next_deadline().min(checks);
        let wait = deadline.saturating_sub(now.mono_ms);
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![
            PollFd::new(self.fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(n) = &self.net {
            fds.push(PollFd::new(n.fd(), PollFlags::POLLIN));
        }
        let checks = self.health.fds();
        let first_check = fds.len();
        fds.extend(
            checks
                .iter()
                .map(|(fd, events, _)| PollFd::new(*fd, *events)),
        );
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(None),
            Err(e) => return Err(format!("poll: {}", lower(e))),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::empty());
        let woke = Woke {
            fifo: ready(&fds[0]),
            signals: ready(&fds[1]),
            net: match self.net {
                Some(_) => ready(&fds[2]),
                None => PollFlags::empty(),
            },
            answered: fds[first_check..]
                .iter()
                .zip(&checks)
                .filter(|(fd, _)| !ready(fd).is_empty())
                .map(|(_, (_, _, token))| *token)
                .collect(),
        };
        let bad = PollFlags::POLLERR | PollFlags::POLLNVAL;
        let broken = if woke.fifo.intersects(bad) {
            "the fifo"
        } else if woke.signals.intersects(bad) {
            "the signalfd"
        } else if woke.net.contains(PollFlags::POLLNVAL) {
            "the cluster socket"
        } else {
            return Ok(Some(woke));
        };
        Err(format!("poll reported an error on {broken}"))
    }

    /// Drains the cluster socket into the agent; a read error is logged once per errno and
    /// survived (the module's rules).
    fn read_socket(&mut self) {
        let Some(n) = self.net.as_mut() else {
            return;
        };
        let agent = &mut self.agent;
        let error = n.drain(|d, from| match d {
            Incoming::Datagram(d) => agent.datagram(d, from),
            Incoming::Dropped(why) => agent.dropped(from, why),
        });
        if let Some(line) = error {
            say(&line);
        }
        self.agent.sync();
    }

    /// Reads the signalfd until it is empty.
    fn read_signals(&mut self) -> Result<Signals, String> {
        let mut got = Signals::default();
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => got.reload = true,
                    Ok(Signal::SIGCHLD) => got.child = true,
                    // Not nix's `Display`, a table of every signal's name: two are blocked.
                    Ok(Signal::SIGINT) => got.stop = Some("SIGINT"),
                    Ok(_) => got.stop = Some("SIGTERM"),
                    Err(_) => {}
                },
                // Drained: read_signal maps EAGAIN to None.
                Ok(None) => return Ok(got),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(format!("signalfd read: {}", lower(e))),
            }
        }
    }
}

/// The loop's spare fds (see `Loop::spare`); fewer if they cannot be opened.
fn spare_fds() -> Vec<std::fs::File> {
    (0..2)
        .filter_map(|_| crate::sys::fs::open(Path::new("/dev/null"), libc::O_RDONLY, 0).ok())
        .collect()
}

/// Writes out and empties `lines`.
fn flush(lines: &mut Vec<String>) {
    for l in lines.drain(..) {
        say(&l);
    }
}

fn lower(e: Errno) -> String {
    errno_text(e as i32)
}
