//! `lbfo-agentd`: keeps the shared service table that the NSS module answers from.
//!
//! `lbfo-agentd -c FILE` loads the config, checks the cluster settings that need the system (key
//! file, host name), and hands over to `lbfo_agentd::serve`: setup, then one single-threaded
//! `poll` loop over the FIFO, a signalfd for SIGHUP (reload), SIGTERM and SIGINT (exit, leaving
//! the table answering) and, in a cluster, the UDP socket. The loop's rules are written at the top
//! of `serve`.
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

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::time::ClockId;

use lbfo_agentd::cluster::wire;
use lbfo_agentd::control::cli::{self, Parsed, Sub};
use lbfo_agentd::control::{config, keyfile};
use lbfo_agentd::serve::{serve, ClusterSetup};
use lbfo_agentd::status;
use lbfo_agentd::sys::clock_ms;
use lbfo_agentd::sys::fs::{say, stdout, write_all, Shown};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// std's runtime has already done what the agent needs of it: SIGPIPE is ignored (a reader of
/// `status` that goes away is an EPIPE, not a kill), and fds 0-2 are open (on /dev/null if they
/// came closed), so no file the agent opens can become its stderr. `tests/tests/agent.rs` checks
/// both.
fn main() -> ExitCode {
    ExitCode::from(lbfo_main())
}

fn lbfo_main() -> u8 {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let Ok(args) = args else {
        say("lbfo-agentd: arguments must be UTF-8 text");
        return EXIT_USAGE;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cli = match cli::parse(&args) {
        Parsed::Run(cli) => cli,
        Parsed::Help(text) => {
            let _ = write_all(stdout(), text.as_bytes());
            return 0;
        }
        Parsed::Usage(lines) => {
            say(&lines);
            return EXIT_USAGE;
        }
    };
    let top = cli.config.as_deref();
    match cli.command {
        Some(Sub::Status(s)) => status_main(&s, top),
        Some(Sub::Keygen(k)) => keygen_main(&k.path),
        Some(Sub::Check(c)) => check_main(c.config.as_deref().or(top)),
        None => match top {
            Some(config) => run(config),
            None => {
                say("lbfo-agentd: missing -c FILE (run lbfo-agentd --help)");
                EXIT_USAGE
            }
        },
    }
}

fn keygen_main(path: &Path) -> u8 {
    match keyfile::generate(path) {
        Ok(()) => {
            say(&format!("keygen: wrote {} (mode 0600)", path.shown()));
            0
        }
        Err(e) => {
            say(&format!("keygen: {}: {e}", path.shown()));
            EXIT_FAILURE
        }
    }
}

fn check_main(config: Option<&Path>) -> u8 {
    let Some(path) = config else {
        say("lbfo-agentd check: missing -c FILE");
        return EXIT_USAGE;
    };
    match config::load(path) {
        Ok(_) => {
            let _ = write_all(stdout(), format!("{}: ok\n", path.shown()).as_bytes());
            // Not the config's fault, but it undoes what the config asks for.
            if let Some(n) = status::nscd::find(Path::new("/proc")) {
                say(&format!("lbfo-agentd check: warning: {}", n.warning()));
            }
            0
        }
        Err(e) => {
            say(&e.report(path));
            EXIT_USAGE
        }
    }
}

fn status_main(s: &cli::Status, top_config: Option<&Path>) -> u8 {
    if s.json && s.prometheus {
        say("lbfo-agentd status: --json and --prometheus exclude each other");
        return EXIT_USAGE;
    }
    let table = match (&s.table, s.config.as_deref().or(top_config)) {
        (Some(t), _) => t.clone(),
        (None, Some(c)) => match config::load(c) {
            Ok(conf) => conf.table,
            Err(e) => {
                say(&e.report(c));
                return EXIT_USAGE;
            }
        },
        (None, None) => PathBuf::from(config::DEFAULT_TABLE),
    };
    match status::snapshot(&table, clock_ms(ClockId::CLOCK_REALTIME)) {
        Ok(mut snap) => {
            snap.nscd = status::nscd::find(Path::new("/proc"));
            let out = if s.json {
                status::json(&snap)
            } else if s.prometheus {
                status::prometheus(&snap)
            } else {
                status::text(&snap)
            };
            match write_all(stdout(), out.as_bytes()) {
                Ok(()) => 0,
                Err(_) => EXIT_FAILURE,
            }
        }
        Err(line) => {
            say(&line);
            if s.prometheus {
                let _ = write_all(stdout(), status::prometheus_unreadable().as_bytes());
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

/// Checks the cluster settings that need the system (key file, host name). `Err` is the line to
/// print (exit 2: a config problem).
fn cluster_settings(path: &Path, config: &config::Config) -> Result<Option<ClusterSetup>, String> {
    let c = &config.cluster;
    if !c.enabled() {
        return Ok(None);
    }
    let name = match &c.node {
        Some(n) => n.clone(),
        None => {
            let host = nix::unistd::gethostname().unwrap_or_default();
            let host = host.as_encoded_bytes();
            if !lbfo_core::name::is_node_name(host) {
                return Err(format!(
                    "{}: no `node NAME`, and the host name {:?} is not a node name (1 to 64 bytes, each a letter, digit, '.', '-' or '_'): set one",
                    path.shown(),
                    String::from_utf8_lossy(host)
                ));
            }
            String::from_utf8_lossy(host).into_owned()
        }
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
