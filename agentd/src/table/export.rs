//! The dnsmasq export: the table as a hosts file, so clients that do not load the NSS module (musl
//! routers, the whole LAN asking the router's dnsmasq) get balanced answers too.
//!
//! With `hosts-file PATH` in the config, every change of the table rewrites PATH (a temporary file
//! in the same directory, then `rename`: `sys::fs::write_atomically`, so dnsmasq never reads half
//! a file) and sends SIGHUP to
//! dnsmasq, which re-reads its `--addn-hosts` files (OpenWrt's dnsmasq reads every file in
//! `/tmp/hosts/`). The process to signal is the pid in `dnsmasq-pid PATH`, else every process
//! named `dnsmasq` (OpenWrt's odhcpd-update signals it the same way); a pid whose process is not
//! named `dnsmasq` (a stale pid file) is never signalled.
//!
//! **What is exported**: per service, the backends its policy can pick *right now*, i.e. the
//! positions in its schedules ([`Schedule::build`], the same computation the NSS module answers
//! from): `failover` exports the up backend(s) with the lowest `prio` only; `fastest` this
//! machine's fastest set (every up backend until it has one); `roundrobin`, `weighted` and
//! `leastused` export every up backend with a weight above 0. A backend that is
//! down, drained (weight 0) or deleted is gone from the file at the next write. dnsmasq answers a
//! name with all its hosts-file addresses and rotates their order from one answer to the next,
//! with TTL `local-ttl` (0 unless configured), so clients spread over the set and ask again on
//! every connection. Proportions (`weighted`), least-used picks and usage limits are only as good
//! as the clients' use of the first address; only the NSS module applies them per lookup.
//!
//! **Rate limit**: at most one write per [`MIN_INTERVAL_MS`]. A change after a quiet period is
//! written at once (leading edge); changes during the interval are written together when it
//! ends (trailing edge), so the last change is never lost. [`Export::deadline`] feeds the loop's
//! poll timeout. A write whose content equals the last one is skipped, and so is its signal.
//!
//! When the agent exits, the file stays, like the table: dnsmasq keeps answering the last state.

use crate::sys::fs::Shown;
use lbfo_core::addr::Ip;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lbfo_core::schedule::{Family, Schedule};
use lbfo_core::Service;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The shortest time between two writes of the hosts file (and two signals to dnsmasq): short
/// enough that a `down` reaches DNS clients well within a second, long enough that a burst of
/// FIFO commands costs dnsmasq one re-read.
pub const MIN_INTERVAL_MS: u64 = 150;

/// The process name that may be signalled.
const DNSMASQ: &str = "dnsmasq";

/// The export's state between writes.
#[derive(Debug)]
pub struct Export {
    hosts: PathBuf,
    pid_file: Option<PathBuf>,
    /// Something changed since the last write.
    dirty: bool,
    /// When the last write happened (monotonic ms).
    last_write: Option<u64>,
    /// The content of the last write.
    last_text: Option<String>,
    /// The last problem logged, so a lasting one is logged once, not on every write.
    last_problem: Option<String>,
}

impl Export {
    /// An export to `hosts`, signalling the dnsmasq of `pid_file` (or every dnsmasq). The first
    /// write is due at once.
    pub fn new(hosts: PathBuf, pid_file: Option<PathBuf>) -> Export {
        Export {
            hosts,
            pid_file,
            dirty: true,
            last_write: None,
            last_text: None,
            last_problem: None,
        }
    }

    /// Whether this export writes `hosts` and signals as `pid_file` says.
    pub fn is(&self, hosts: &Path, pid_file: Option<&Path>) -> bool {
        crate::sys::fs::same_path(Some(&self.hosts), Some(hosts))
            && crate::sys::fs::same_path(self.pid_file.as_deref(), pid_file)
    }

    /// Notes that the table changed.
    pub fn changed(&mut self) {
        self.dirty = true;
    }

    /// When [`Export::run`] must next be called, if anything is pending (monotonic ms).
    pub fn deadline(&self) -> Option<u64> {
        if !self.dirty {
            return None;
        }
        Some(self.last_write.map_or(0, |t| t + MIN_INTERVAL_MS))
    }

    /// Writes the file and signals dnsmasq if a change is pending and the interval has passed.
    /// Returns the lines to log.
    pub fn run<'s>(
        &mut self,
        now_ms: u64,
        services: impl Iterator<Item = &'s Service>,
    ) -> Vec<String> {
        match self.deadline() {
            Some(due) if now_ms >= due => {}
            _ => return Vec::new(),
        }
        self.dirty = false;
        self.last_write = Some(now_ms);
        let text = render(services);
        if self.last_text.as_deref() == Some(text.as_str()) {
            return Vec::new();
        }
        let mut log = Vec::new();
        let problem = match crate::sys::fs::write_atomically(&self.hosts, text.as_bytes(), 0o644) {
            Err(e) => Some(format!(
                "export: {}: {}; dnsmasq keeps the previous answers",
                self.hosts.shown(),
                crate::sys::io_text(&e)
            )),
            Ok(()) => {
                self.last_text = Some(text);
                self.signal()
            }
        };
        if problem != self.last_problem {
            match &problem {
                Some(p) => log.push(p.clone()),
                None if self.last_problem.is_some() => {
                    log.push(format!("export: {}: written again", self.hosts.shown()));
                }
                None => {}
            }
            self.last_problem = problem;
        }
        log
    }

    /// Sends SIGHUP to dnsmasq; `Some(problem)` if none could be signalled.
    fn signal(&self) -> Option<String> {
        let pids = match &self.pid_file {
            Some(f) => match crate::sys::fs::read_file(f) {
                Ok(t) => match pid_of(t.trim_ascii()) {
                    Some(pid) if is_dnsmasq(pid) => vec![pid],
                    Some(pid) => {
                        return Some(format!(
                            "export: {}: process {pid} is not {DNSMASQ}; not signalled",
                            f.shown()
                        ))
                    }
                    _ => return Some(format!("export: {}: not a pid", f.shown())),
                },
                Err(e) => {
                    return Some(format!(
                        "export: {}: {}",
                        f.shown(),
                        crate::sys::io_text(&e)
                    ))
                }
            },
            None => dnsmasq_pids(),
        };
        if pids.is_empty() {
            return Some(format!("export: no {DNSMASQ} process to signal"));
        }
        let sent = pids
            .iter()
            .filter(|&&p| kill(Pid::from_raw(p), Signal::SIGHUP).is_ok())
            .count();
        (sent == 0).then(|| format!("export: could not signal {DNSMASQ} ({pids:?})"))
    }
}

/// The hosts file for `services`: a header, then `ADDRESS NAME` per exported backend, services
/// sorted by name, backends in position order.
pub fn render<'s>(services: impl Iterator<Item = &'s Service>) -> String {
    use std::fmt::Write as _;
    // Names are unique in a table, so an unstable sort orders services exactly.
    let mut services: Vec<&Service> = services.collect();
    services.sort_unstable_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    let mut out = String::from("# lbfo-agentd: the backends each service's policy picks from now. Rewritten on every change; do not edit.\n");
    for s in services {
        let mut picked = [false; lbfo_core::MAX_BACKENDS];
        for family in [Family::V4, Family::V6] {
            for &pos in Schedule::build(s, family).as_slice() {
                if let Some(p) = picked.get_mut(usize::from(pos)) {
                    *p = true;
                }
            }
        }
        for (pos, b) in s.iter() {
            if picked.get(pos) == Some(&true) {
                let _ = writeln!(out, "{} {}", Ip(b.addr), s.name);
            }
        }
    }
    out
}

/// A process id written in decimal digits (as in a pid file or a /proc entry's name); `None`
/// for anything else, 0 and what is past `i32::MAX`. (Not `str::parse`, which is more code on
/// the router build for the agent's only two signed numbers.)
fn pid_of(digits: &[u8]) -> Option<i32> {
    if digits.is_empty() {
        return None;
    }
    let mut n: i32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i32::from(d - b'0'))?;
    }
    (n > 0).then_some(n)
}

fn is_dnsmasq(pid: i32) -> bool {
    crate::sys::fs::read_file(Path::new(&format!("/proc/{pid}/comm")))
        .is_ok_and(|c| c.trim_ascii_end() == DNSMASQ.as_bytes())
}

/// Every process named `dnsmasq`, from /proc.
fn dnsmasq_pids() -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(proc) =
        crate::sys::fs::open(Path::new("/proc"), libc::O_RDONLY | libc::O_DIRECTORY, 0)
    {
        // A /proc that fails half-way gives the pids read so far.
        let _ = crate::sys::fs::dir_names(proc.as_fd(), |name| pids.extend(pid_of(name)));
    }
    pids.retain(|&p| is_dnsmasq(p));
    pids
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbfo_core::{parse_line, Line, Table, MAX_SERVICES};
    use std::fs;

    fn table(cmds: &str) -> Vec<Option<Service>> {
        let mut slots = vec![None; MAX_SERVICES];
        let mut t = Table::new(&mut slots);
        for l in cmds.lines() {
            if let Ok(Some(Line::Command(c))) = parse_line(l) {
                t.apply(&c).unwrap();
            }
        }
        slots
    }

    fn check(cmds: &str, expect: &str) {
        let slots = table(cmds);
        let got = render(slots.iter().flatten());
        let body: Vec<&str> = got.lines().skip(1).collect();
        assert_eq!(body.join("\n"), expect, "commands {cmds:?}");
    }

    #[test]
    fn exports_what_each_policy_picks_from() {
        check(
            "add web.lan 10.0.0.1\nadd web.lan 10.0.0.2\nadd web.lan fd00::3\ndown web.lan 10.0.0.2",
            "10.0.0.1 web.lan\nfd00::3 web.lan",
        );
        check(
            "policy db.lan failover\nadd db.lan 10.0.1.2 prio=2\nadd db.lan 10.0.1.1 prio=1\nadd db.lan 10.0.1.3 prio=1",
            "10.0.1.1 db.lan\n10.0.1.3 db.lan",
        );
        check(
            "policy db.lan failover\nadd db.lan 10.0.1.1 prio=1\nadd db.lan 10.0.1.2 prio=2\ndown db.lan 10.0.1.1",
            "10.0.1.2 db.lan",
        );
        check(
            "policy api.lan weighted\nadd api.lan 10.0.2.1 weight=1\nadd api.lan 10.0.2.2 weight=3\nadd api.lan 10.0.2.3 weight=0",
            "10.0.2.1 api.lan\n10.0.2.2 api.lan",
        );
        check(
            "add z.lan 10.0.9.1\nadd a.lan 10.0.8.1\nadd gone.lan 10.0.7.1\ndown gone.lan 10.0.7.1",
            "10.0.8.1 a.lan\n10.0.9.1 z.lan",
        );
        // fastest: every up backend until it has a fastest set, then the set.
        let cmds =
            "policy m.lan fastest\nadd m.lan 10.0.6.1\nadd m.lan 10.0.6.2\nadd m.lan 10.0.6.3";
        check(cmds, "10.0.6.1 m.lan\n10.0.6.2 m.lan\n10.0.6.3 m.lan");
        let mut slots = table(cmds);
        for pos in [1, 2] {
            slots[0].as_mut().unwrap().backends[pos]
                .as_mut()
                .unwrap()
                .fast = true;
        }
        let got = render(slots.iter().flatten());
        assert!(got.ends_with("\n10.0.6.2 m.lan\n10.0.6.3 m.lan\n"), "{got}");
    }

    #[test]
    fn writes_at_once_then_at_most_every_interval_and_never_loses_the_last_change() {
        let dir = std::env::temp_dir().join(format!("lbfo-export-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let hosts = dir.join("hosts");
        let mut e = Export::new(hosts.clone(), Some(dir.join("no-such.pid")));
        let mut slots = table("add a.lan 10.0.0.1\n");
        assert_eq!(e.deadline(), Some(0));
        let log = e.run(1000, slots.iter().flatten());
        assert_eq!(
            log,
            [format!(
                "export: {}: no such file or directory",
                dir.join("no-such.pid").display()
            )]
        );
        assert!(fs::read_to_string(&hosts)
            .unwrap()
            .ends_with("\n10.0.0.1 a.lan\n"));
        assert_eq!(e.deadline(), None);

        // Two changes inside the interval: nothing until it ends, then both at once.
        slots = table("add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\n");
        e.changed();
        assert_eq!(e.deadline(), Some(1000 + MIN_INTERVAL_MS));
        assert!(e.run(1010, slots.iter().flatten()).is_empty());
        assert!(!fs::read_to_string(&hosts).unwrap().contains("10.0.0.2"));
        slots = table("add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\ndown a.lan 10.0.0.1\n");
        e.changed();
        assert!(
            e.run(1000 + MIN_INTERVAL_MS, slots.iter().flatten())
                .is_empty(),
            "same problem: logged once"
        );
        let text = fs::read_to_string(&hosts).unwrap();
        assert!(text.ends_with("do not edit.\n10.0.0.2 a.lan\n"), "{text}");
        assert_eq!(e.deadline(), None);

        // A change after a quiet period is written at once.
        slots = table("add b.lan 10.0.0.3\n");
        e.changed();
        assert_eq!(e.deadline(), Some(1000 + 2 * MIN_INTERVAL_MS));
        e.run(5000, slots.iter().flatten());
        assert!(fs::read_to_string(&hosts)
            .unwrap()
            .ends_with("\n10.0.0.3 b.lan\n"));
        let leftovers = fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pid_that_is_not_dnsmasq_is_not_signalled() {
        let dir = std::env::temp_dir().join(format!("lbfo-export-pid-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let mut e = Export::new(dir.join("hosts"), Some(pid_file.clone()));
        let log = e.run(0, std::iter::empty());
        assert_eq!(
            log,
            [format!(
                "export: {}: process {} is not dnsmasq; not signalled",
                pid_file.display(),
                std::process::id()
            )]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_a_pid_file_every_process_named_dnsmasq_is_found_in_proc() {
        // A process whose name (/proc/PID/comm) is `dnsmasq`: a copy of `sleep` by that name.
        let dir = std::env::temp_dir().join(format!("lbfo-export-proc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fake = dir.join(DNSMASQ);
        fs::copy("/bin/sleep", &fake).unwrap();
        // ETXTBSY: another test's child, between fork and exec, can still hold the copy's
        // write descriptor for a moment.
        let mut spawned = std::process::Command::new(&fake).arg("30").spawn();
        for _ in 0..50 {
            match &spawned {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    spawned = std::process::Command::new(&fake).arg("30").spawn();
                }
                _ => break,
            }
        }
        let mut child = spawned.unwrap();
        let pid = child.id() as i32;
        // The kernel lets a vfork-spawning parent go on before the new program's name is set
        // (`begin_new_exec`): wait until /proc shows it.
        for _ in 0..500 {
            if is_dnsmasq(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let found = dnsmasq_pids();
        let me = std::process::id() as i32;
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(found.contains(&pid), "{pid} in {found:?}");
        assert!(!found.contains(&me), "{me} is not dnsmasq: {found:?}");
    }

    #[test]
    fn pids_are_positive_decimal_numbers_that_fit() {
        for (text, want) in [
            (&b"1"[..], Some(1)),
            (b"4242", Some(4242)),
            (b"2147483647", Some(i32::MAX)),
            (b"2147483648", None),
            (b"99999999999", None),
            (b"0", None),
            (b"", None),
            (b"-5", None),
            (b"+5", None),
            (b"12a", None),
            (b"self", None),
        ] {
            assert_eq!(pid_of(text), want, "{:?}", String::from_utf8_lossy(text));
        }
    }
}
