//! `lbfo-agentd`: keeps the shared service table that the NSS module answers from.
//!
//! `lbfo-agentd -c FILE` loads the config, creates or takes over the table, and then runs one
//! single-threaded `poll` loop over a fixed set of sources: the command FIFO and a signalfd for
//! SIGHUP (reload), SIGTERM and SIGINT (exit, leaving the table answering). The timeout comes
//! from the agent's next deadline (heartbeat, usage-limit check, digest round). In a cluster
//! (`group` or `peer` in the config) the UDP socket is a third source: drained up to
//! `net::MAX_RECV` datagrams per wake-up, and whatever the agent queued is sent before the loop
//! sleeps again.
//!
//! `lbfo-agentd status` reads the table (and the cluster's state file beside it) and prints it.
//! `lbfo-agentd keygen PATH` writes a new cluster key; `lbfo-agentd check -c FILE` checks a config
//! without touching anything. Exit codes: 0 ok, 1 runtime failure,
//! 2 bad usage or config.
//!
//! The agent logs one line per event to stderr, for example:
//!
//! ```text
//! lbfo.conf:5:20: unknown option (expected weight=, prio= or limit=)   config error, exit 2
//! fifo /var/run/lbfo.sock: created (mode 0600); pipe buffer 1048576 bytes
//! table /run/lbfo/table: created (generation 5f0c3e1a9b2d4c77, mode 0644)
//! cluster: node gw1 joins [ff15::4c62]:7946 on eth0 (key /etc/lbfo.key)
//! fifo: line 7: down web.lan 10.0.0.11                                 applied
//! cluster: down web.lan 10.0.0.12                                      a peer's change
//! fifo: line 8: column 12: not an IPv4 or IPv6 address                 skipped
//! fifo: line 9: column 1: no such service (down nosuch.lan 10.0.0.9)   skipped
//! limit reached: web.lan 10.0.0.12 after 1000 lookups
//! reload: del old.lan (no longer in the config)
//! reload: /etc/lbfo.conf:4:1: unknown verb (...); keeping the running configuration
//! SIGTERM: exiting; the table stays in place and keeps answering
//! ```
#![deny(unsafe_code)]
#![no_main]

use lbfo_agentd::sys::fs::Shown;
use lbfo_core::addr::Sock;
use std::ffi::{c_char, c_int, CStr};
use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::str::Utf8Error;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::time::ClockId;

use lbfo_agentd::agent::{self, Agent, Now};
use lbfo_agentd::cluster::{self, socket as net, wire};
use lbfo_agentd::control::cli::{self, Exit, Sub};
use lbfo_agentd::control::fifo::{self, Fifo, Opened, Splitter};
use lbfo_agentd::control::{config, keyfile};
use lbfo_agentd::sys::{clock_ms, errno_text, io_text};
use lbfo_agentd::table::{file as tablefile, state};
use lbfo_agentd::{health, status};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// The C entry point, in place of std's `fn main` runtime (`#![no_main]`): on the routers that
/// runtime (argument capture, the exit-time flush of std's stdout, stack-overflow handlers) is
/// ~5 KB of the 200 KiB budget, and the agent uses none of it. What of it matters is done here:
/// SIGPIPE ignored (a reader of `status` that goes away is an EPIPE, not a kill), and fds 0-2
/// held open, so that no file the agent opens can become its stderr.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: ignoring a signal installs no handler code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    for fd in 0..3 {
        // SAFETY: F_GETFD only reads the descriptor's flags; open takes a C string and returns a
        // descriptor the process keeps for good (the lowest free number: `fd`).
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 && Errno::last() == Errno::EBADF {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    let args = (1..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: the C runtime passes `argc` pointers to NUL-terminated strings in `argv`,
            // which stay in place, unchanged, for the life of the process.
            let arg: &'static CStr = unsafe { CStr::from_ptr(*argv.add(i)) };
            arg.to_str()
        })
        .collect();
    c_int::from(lbfo_main(args))
}

/// The command line without the program's name: every argument as text, or the UTF-8 error of
/// the first that is not.
fn lbfo_main(args: Result<Vec<&'static str>, Utf8Error>) -> u8 {
    let Ok(refs) = args else {
        say("lbfo-agentd: arguments must be UTF-8 text");
        return EXIT_USAGE;
    };
    let cli = match cli::parse(&refs) {
        Ok(cli) => cli,
        Err(Exit::Help(text)) => {
            let _ = put(STDOUT, text.as_bytes());
            return 0;
        }
        Err(Exit::Usage(line)) => {
            say(&line);
            say("Run lbfo-agentd --help for more information.");
            return EXIT_USAGE;
        }
    };
    let top = cli.config.map(Path::new);
    match cli.command {
        Some(Sub::Status(s)) => status_main(&s, top),
        Some(Sub::Keygen(path)) => match keyfile::generate(Path::new(path)) {
            Ok(()) => {
                say_fmt(format_args!("keygen: wrote {path} (mode 0600)"));
                0
            }
            Err(e) => {
                say_fmt(format_args!("keygen: {path}: {e}"));
                EXIT_FAILURE
            }
        },
        Some(Sub::Check(c)) => check_main(c.map(Path::new).or(top)),
        None => match top {
            Some(config) => run(config),
            None => {
                say("lbfo-agentd: missing -c FILE (run lbfo-agentd --help)");
                EXIT_USAGE
            }
        },
    }
}

/// Standard output and error, written to directly (`put`): not through std's `Stdout`, whose
/// global (a lock and a line buffer) is ~0.5 KB of the router binary.
#[allow(unsafe_code)]
// SAFETY: `main` holds fds 1 and 2 open (on /dev/null if they came closed) for the process's life.
const STDOUT: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(1) };
#[allow(unsafe_code)]
// SAFETY: as STDOUT.
const STDERR: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(2) };

/// Writes one line to stderr, ignoring failure: a closed stderr must not stop the agent.
fn say(line: &str) {
    say_fmt(format_args!("{line}"));
}

/// [`say`] for a formatted line: written into one buffer with its newline.
fn say_fmt(line: std::fmt::Arguments<'_>) {
    let mut l = String::new();
    let _ = l.write_fmt(line);
    l.push('\n');
    let _ = put(STDERR, l.as_bytes());
}

/// Writes all of `bytes` to stdout or stderr, unbuffered (one `write` when the pipe takes it
/// whole), retrying on EINTR. The agent writes whole lines and reports, so std's buffered,
/// locked `Stdout`/`Stderr` writers are not used: they are a few KiB of the router binary.
fn put(fd: BorrowedFd<'_>, bytes: &[u8]) -> std::io::Result<()> {
    lbfo_agentd::sys::fs::write_all(fd, bytes)
}

fn check_main(config: Option<&Path>) -> u8 {
    let Some(path) = config else {
        say("lbfo-agentd check: missing -c FILE");
        return EXIT_USAGE;
    };
    match config::load(path) {
        Ok(_) => {
            let _ = put(STDOUT, format!("{}: ok\n", path.shown()).as_bytes());
            0
        }
        Err(e) => {
            say(&e.report(path));
            EXIT_USAGE
        }
    }
}

fn status_main(s: &cli::Status<'_>, top_config: Option<&Path>) -> u8 {
    if s.json && s.prometheus {
        say("lbfo-agentd status: --json and --prometheus exclude each other");
        return EXIT_USAGE;
    }
    let table = match (s.table, s.config.map(Path::new).or(top_config)) {
        (Some(t), _) => PathBuf::from(t),
        (None, Some(c)) => match config::load(c) {
            Ok(conf) => conf.table,
            Err(e) => {
                say(&e.report(c));
                return EXIT_USAGE;
            }
        },
        (None, None) => PathBuf::from(config::DEFAULT_TABLE),
    };
    match status::snapshot(&table, wall_ms()) {
        Ok(snap) => {
            let out = if s.json {
                status::json(&snap)
            } else if s.prometheus {
                status::prometheus(&snap)
            } else {
                status::text(&snap)
            };
            match put(STDOUT, out.as_bytes()) {
                Ok(()) => 0,
                Err(_) => EXIT_FAILURE,
            }
        }
        Err(line) => {
            say(&line);
            if s.prometheus {
                let _ = put(STDOUT, status::prometheus_unreadable().as_bytes());
            }
            EXIT_FAILURE
        }
    }
}

fn run(path: &Path) -> u8 {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            say(&e.report(path));
            return EXIT_USAGE;
        }
    };
    let cluster = match cluster_settings(path, &config) {
        Ok(c) => c,
        Err(line) => {
            say(&line);
            return EXIT_USAGE;
        }
    };
    match serve(path, config, cluster) {
        Ok(()) => 0,
        Err(line) => {
            say(&line);
            EXIT_FAILURE
        }
    }
}

/// What the cluster needs beyond the config: the node's name and the key.
struct ClusterSetup {
    name: String,
    key: wire::Key,
}

/// Checks the cluster settings that need the system (key file, host name). `Err` is the line to
/// print (exit 2: a config problem).
fn cluster_settings(path: &Path, config: &config::Config) -> Result<Option<ClusterSetup>, String> {
    let c = &config.cluster;
    if !c.enabled() {
        return Ok(None);
    }
    let name = match &c.node {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{}: no `node NAME` and no host name", path.shown()))?,
    };
    let key = match (&c.key, c.insecure) {
        (Some(k), _) => wire::Key::new(
            keyfile::read(k).map_err(|e| format!("{}: key {}: {e}", path.shown(), k.shown()))?,
        ),
        (None, true) => {
            say("cluster: warning: `insecure`: datagrams are not authenticated; anyone on the network can change this table");
            wire::Key::insecure()
        }
        (None, false) => {
            return Err(format!(
                "{}: a cluster needs `key PATH` (make one with `lbfo-agentd keygen PATH`), or `insecure` to join without one",
                path.shown()
            ))
        }
    };
    Ok(Some(ClusterSetup { name, key }))
}

fn wall_ms() -> u64 {
    clock_ms(ClockId::CLOCK_REALTIME)
}

/// The loop's clock: the only place the agent reads the time.
struct Clock {
    /// `CLOCK_MONOTONIC` at start, in milliseconds.
    start_ms: u64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            start_ms: clock_ms(ClockId::CLOCK_MONOTONIC),
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: clock_ms(ClockId::CLOCK_MONOTONIC).saturating_sub(self.start_ms),
            wall_ms: wall_ms(),
        }
    }
}

fn flush(lines: Vec<String>) {
    for l in lines {
        say(&l);
    }
}

/// Sets everything up, then runs the loop until SIGTERM/SIGINT. `Err` is the line to print.
fn serve(
    config_path: &Path,
    config: config::Config,
    setup: Option<ClusterSetup>,
) -> Result<(), String> {
    // Block the signals before anything else so none is lost to its default action; they are
    // delivered through the signalfd instead.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("block signals: {}", lower(e)))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {}", lower(e)))?;

    let table_path = config.table.shown().to_string();
    let mut log = Vec::new();
    let lock = tablefile::prepare(&config.table, &mut log);
    flush(std::mem::take(&mut log));
    let lock = lock.map_err(|e| format!("table {table_path}: {e}"))?;

    let fifo_path = config.fifo.shown().to_string();
    let (fifo, opened) = Fifo::open(&config.fifo).map_err(|e| format!("fifo {fifo_path}: {e}"))?;
    let how = match opened {
        Opened::Created => "created (mode 0600)".to_owned(),
        Opened::Existing => "reusing it".to_owned(),
        Opened::Narrowed(m) => {
            format!("mode was {m:04o}, letting other users in; set to 0600")
        }
    };
    say_fmt(format_args!(
        "fifo {fifo_path}: {how}; pipe buffer {} bytes",
        fifo.pipe_bytes()
    ));

    let shared = tablefile::open(&config.table, config.capacity, lock, &mut log);
    flush(std::mem::take(&mut log));
    let shared = shared.map_err(|e| format!("table {table_path}: {e}"))?;
    let writer = shared
        .writer()
        .ok_or_else(|| format!("table {table_path}: lost its header"))?;
    let counters = shared
        .counters_view()
        .ok_or_else(|| format!("table {table_path}: counters segment does not match"))?;

    let clock = Clock::start();
    let mut net = None;
    let mut cluster = None;
    if let Some(setup) = setup {
        let c = &config.cluster;
        let (n, warnings) =
            net::Net::open(c.group, c.iface.as_deref(), c.ttl.unwrap_or(1), &c.peers)
                .map_err(|e| format!("cluster: {e}"))?;
        for w in warnings {
            say(&w);
        }
        let now = clock.now();
        let mut line = format!("cluster: node {}", setup.name);
        // `write!` into the one line, no temporary Strings. (Writing to a String cannot fail.)
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
        net = Some(n);
        cluster = Some(cluster::Cluster::new(
            &setup.name,
            setup.key,
            now.wall_ms,
            now.mono_ms,
            shared.adopted,
        ));
    }
    let status_path = status::cluster_path(&config.table);
    let state_path = config.state.clone();
    let saved = match &state_path {
        None => None,
        Some(p) => match state::load(p) {
            Ok(s) => s,
            Err(e) => {
                say_fmt(format_args!(
                    "state {}: {e}; starting from the config (and the group)",
                    p.shown()
                ));
                None
            }
        },
    };
    let mut agent = Agent::start_with(
        writer,
        counters,
        shared.adopted,
        config_path.to_owned(),
        config,
        clock.now(),
        cluster,
        saved,
        state_path.clone().map(|p| {
            agent::Saver(Box::new(move |bytes: &[u8]| {
                state::save(&p, bytes).map_err(|e| format!("{}: {}", p.shown(), io_text(&e)))
            }))
        }),
    );
    flush(agent.take_log());
    if let Some(n) = net.as_mut() {
        for (dest, d) in agent.take_outbox() {
            n.send(dest, &d);
        }
    }
    let committed = shared.commit(&mut log);
    flush(std::mem::take(&mut log));
    committed.map_err(|e| format!("table {table_path}: {e}"))?;
    say_fmt(format_args!(
        "ready: commands on {fifo_path}, table {table_path}"
    ));

    let mut splitter = Splitter::default();
    let mut buf = vec![0u8; fifo::READ_CHUNK];
    let mut health = health::Health::default();
    let mut checked_at = None;
    let mut verdicts = Vec::new();
    loop {
        let now = clock.now();
        agent.tick(now);
        if checked_at != Some(agent.changes()) {
            checked_at = Some(agent.changes());
            health.sync(&agent.checked(), now.mono_ms);
        }
        health.tick(now.mono_ms, &mut verdicts);
        for v in verdicts.drain(..) {
            agent.health(&v);
        }
        // Everything queued since the last turn (commands, replies, the digest) leaves now.
        if let Some(n) = net.as_mut() {
            for (dest, d) in agent.take_outbox() {
                n.send(dest, &d);
            }
            if let Some(text) = agent.cluster_status(clock.now()) {
                let text = format!("{text}send_errors {}\n", n.send_errors);
                if let Err(e) = status::write_cluster(&status_path, &text) {
                    say_fmt(format_args!(
                        "cluster: cannot write {}: {}",
                        status_path.shown(),
                        io_text(&e)
                    ));
                }
            }
        }
        flush(agent.take_log());
        let wait = agent
            .next_deadline()
            .min(health.next_deadline())
            .saturating_sub(now.mono_ms);
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(n) = &net {
            fds.push(PollFd::new(n.fd(), PollFlags::POLLIN));
        }
        // Health-check connects in flight: extra sources, each with its deadline in `wait`.
        let checks = health.fds();
        let first_check = fds.len();
        fds.extend(
            checks
                .iter()
                .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLOUT)),
        );
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            // EINTR: a signal we do not block (e.g. SIGSTOP/SIGCONT) interrupted poll: go round.
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("poll: {}", lower(e))),
        }
        let ready = |fd: &PollFd<'_>| fd.revents().unwrap_or(PollFlags::empty());
        let (fifo_ev, sig_ev) = (ready(&fds[0]), ready(&fds[1]));
        let net_ev = if net.is_some() {
            fds.get(2).map_or(PollFlags::empty(), ready)
        } else {
            PollFlags::empty()
        };
        let answered: Vec<health::Key> = fds[first_check..]
            .iter()
            .zip(&checks)
            .filter(|(fd, _)| !ready(fd).is_empty())
            .map(|(_, (_, k))| k.clone())
            .collect();
        drop(fds);
        drop(checks);
        let bad = PollFlags::POLLERR | PollFlags::POLLNVAL;
        if fifo_ev.intersects(bad) || sig_ev.intersects(bad) || net_ev.contains(PollFlags::POLLNVAL)
        {
            return Err(format!(
                "poll reported an error on {}",
                if fifo_ev.intersects(bad) {
                    "the fifo"
                } else if sig_ev.intersects(bad) {
                    "the signalfd"
                } else {
                    "the cluster socket"
                }
            ));
        }
        agent.wake(clock.now());
        for k in &answered {
            health.done(k, &mut verdicts);
        }
        for v in verdicts.drain(..) {
            agent.health(&v);
        }
        if let Some(n) = &net {
            // POLLERR on a UDP socket is a pending ICMP error, which a read clears.
            if net_ev.intersects(PollFlags::POLLIN | PollFlags::POLLERR) {
                n.drain(|d, from| match d {
                    net::Incoming::Datagram(d) => agent.datagram(d, from),
                    net::Incoming::Dropped(why) => agent.dropped(from, why),
                })
                .map_err(|e| format!("cluster socket: read: {}", io_text(&e)))?;
                agent.sync();
            }
        }

        let (mut reload, mut stop) = (false, None);
        if sig_ev.contains(PollFlags::POLLIN) {
            loop {
                match sfd.read_signal() {
                    Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGHUP) => reload = true,
                        Ok(s) => stop = Some(s),
                        Err(_) => {}
                    },
                    // Drained: read_signal maps EAGAIN to None.
                    Ok(None) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(format!("signalfd read: {}", lower(e))),
                }
            }
        }
        if fifo_ev.contains(PollFlags::POLLIN) {
            fifo.drain(&mut splitter, &mut buf, |piece| agent.fifo_piece(piece))
                .map_err(|e| format!("fifo {fifo_path}: read: {}", lower(e)))?;
            agent.publish();
        }
        if reload {
            say_fmt(format_args!("SIGHUP: reloading {}", config_path.shown()));
            agent.reload(config::load(config_path));
            agent.publish();
        }
        flush(agent.take_log());
        if let Some(sig) = stop {
            // Only SIGTERM and SIGINT are blocked for the signalfd besides SIGHUP. (Not nix's
            // `Display`, a table of every signal's name.)
            let name = if sig == Signal::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            say_fmt(format_args!(
                "{name}: exiting; the table stays in place and keeps answering"
            ));
            return Ok(());
        }
    }
}

fn lower(e: Errno) -> String {
    errno_text(e as i32)
}
