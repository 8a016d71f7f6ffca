//! Whether an nscd that keeps lbfo's answers is running: its hosts cache keeps the backend a
//! lookup got and serves it after lbfo has moved on (also after `down`), so `status` and `check`
//! warn.
//!
//! glibc's nscd keeps none of lbfo's answers: it calls the module's init hook, after which every
//! `hostent` answer lists its address twice, and nscd's hosts cache keeps only single-address
//! answers (its getaddrinfo cache honours the module's TTL 0). What still matters, from the
//! evidence a daemon's `/proc` entry gives:
//! - **unscd** (Debian installs it as `/usr/sbin/nscd` too) caches every answer for its configured
//!   time, whatever it holds. Told from glibc's nscd by its executable, which names the worker
//!   processes it re-executes itself as to do each lookup (`worker_nscd`).
//! - **glibc's nscd with an lbfo module replaced since it loaded it** (an upgrade: its mapping
//!   of `libnss_lbfo.so.2` is marked deleted): a daemon keeps the module it loaded until it
//!   restarts, and a module older than the init hook gives it single-address answers.
//!
//! Found the way the daemon finds its own configuration: a process named `nscd`, its `-f FILE` /
//! `--config-file` or else `/etc/nscd.conf`, read through `/proc/PID/root` so a daemon in a
//! container or a private mount namespace is judged by its own file. In that file the last
//! `enable-cache hosts yes|no` line counts, and without one the cache is off (both daemons'
//! rule). Nothing here can fail: what cannot be read is not warned about.

use std::path::Path;

/// Where both daemons read their configuration when not told otherwise.
pub const DEFAULT_CONF: &str = "/etc/nscd.conf";

/// Which daemon keeps lbfo's answers, and so why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// unscd: it caches every hosts answer.
    Unscd,
    /// glibc's nscd, running an lbfo module that has since been replaced on disk.
    OldModule,
}

impl Daemon {
    /// The daemon's name, as `status --json` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Unscd => "unscd",
            Daemon::OldModule => "nscd",
        }
    }
}

/// A running nscd whose hosts cache is on and keeps lbfo's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachingNscd {
    /// Its process id.
    pub pid: i32,
    /// Which daemon it is.
    pub daemon: Daemon,
    /// The configuration file that turns the cache on, as the daemon names it.
    pub conf: String,
}

impl CachingNscd {
    /// The one-line warning `status` and `check` print.
    pub fn warning(&self) -> String {
        let (pid, conf) = (self.pid, &self.conf);
        match self.daemon {
            Daemon::Unscd => format!(
                "unscd (pid {pid}) caches hosts ({conf}: enable-cache hosts yes): programs using \
                 gethostbyname() or getaddrinfo() keep a backend after lbfo moves on, even after \
                 `down`; set `enable-cache hosts no` and restart unscd (nss-lbfo(8))"
            ),
            Daemon::OldModule => format!(
                "nscd (pid {pid}) caches hosts ({conf}: enable-cache hosts yes) with an lbfo \
                 module replaced since it loaded it: it may keep a backend after lbfo moves on; \
                 restart nscd (nss-lbfo(8))"
            ),
        }
    }
}

/// Whether configuration text turns the hosts cache on: its last `enable-cache hosts` line says
/// `yes` (comments start with `#`).
pub fn hosts_cache_on(conf: &[u8]) -> bool {
    let mut on = false;
    for line in conf.split(|&b| b == b'\n') {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        if words.next() == Some(b"enable-cache") && words.next() == Some(b"hosts") {
            on = words.next() == Some(b"yes");
        }
    }
    on
}

/// Whether an executable is unscd's: it re-executes itself under this name for each lookup.
pub fn is_unscd(exe: &[u8]) -> bool {
    const MARK: &[u8] = b"worker_nscd";
    exe.windows(MARK.len()).any(|w| w == MARK)
}

/// Whether a process's memory map (`/proc/PID/maps`) holds an lbfo module whose file has been
/// replaced or removed since it was mapped.
pub fn old_module(maps: &[u8]) -> bool {
    maps.split(|&b| b == b'\n').any(|line| {
        line.strip_suffix(b" (deleted)")
            .is_some_and(|path| path.ends_with(b"/libnss_lbfo.so.2"))
    })
}

/// The configuration file an nscd started with this command line reads.
pub fn conf_of(cmdline: &[u8]) -> String {
    let mut args = cmdline.split(|&b| b == 0).skip(1);
    let mut conf = DEFAULT_CONF.as_bytes();
    while let Some(a) = args.next() {
        if a == b"-f" || a == b"--config-file" {
            conf = args.next().unwrap_or(conf);
        } else if let Some(f) = a.strip_prefix(b"--config-file=") {
            conf = f;
        } else if let Some(f) = a.strip_prefix(b"-f").filter(|f| !f.is_empty()) {
            conf = f;
        }
    }
    String::from_utf8_lossy(conf).into_owned()
}

/// The first running nscd whose hosts cache is on and keeps lbfo's answers, seen through `proc`
/// (`/proc`).
pub fn find(proc: &Path) -> Option<CachingNscd> {
    let mut pids = Vec::new();
    let dir = crate::sys::fs::open(proc, libc::O_RDONLY | libc::O_DIRECTORY, 0).ok()?;
    let _ = crate::sys::fs::dir_names(std::os::fd::AsFd::as_fd(&dir), |name| {
        if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
            pids.extend(
                std::str::from_utf8(name)
                    .ok()
                    .and_then(|s| s.parse::<i32>().ok()),
            );
        }
    });
    pids.sort_unstable();
    pids.into_iter()
        .find_map(|pid| caching(&proc.join(pid.to_string()), pid))
}

/// The process at `at` (`/proc/PID`), if it is an nscd whose hosts cache keeps lbfo's answers.
fn caching(at: &Path, pid: i32) -> Option<CachingNscd> {
    let read = |name: &str| crate::sys::fs::read_file(&at.join(name)).ok();
    if read("comm")?.trim_ascii_end() != b"nscd" {
        return None;
    }
    let conf = conf_of(&read("cmdline").unwrap_or_default());
    // Relative to the daemon's root, and to its working directory for a relative -f.
    let base = if conf.starts_with('/') { "root" } else { "cwd" };
    let text = read(&format!("{base}/{}", conf.trim_start_matches('/')))?;
    if !hosts_cache_on(&text) {
        return None;
    }
    let daemon = if is_unscd(&read("exe")?) {
        Daemon::Unscd
    } else if old_module(&read("maps")?) {
        Daemon::OldModule
    } else {
        return None;
    };
    Some(CachingNscd { pid, daemon, conf })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_enable_cache_hosts_line_counts() {
        let check =
            |text: &str, want: bool| assert_eq!(hosts_cache_on(text.as_bytes()), want, "{text:?}");
        check("", false);
        check("enable-cache hosts yes\n", true);
        check("\tenable-cache\t\thosts\t\tyes", true);
        check("enable-cache hosts no\n", false);
        check("enable-cache hosts yes\nenable-cache hosts no\n", false);
        check(
            "enable-cache hosts no\nenable-cache  hosts  yes # on again\n",
            true,
        );
        check("# enable-cache hosts yes\n", false);
        check("enable-cache passwd yes\nenable-cache hosts  no\n", false);
        check("enable-cache hostsx yes\n", false);
    }

    #[test]
    fn the_config_file_from_the_command_line() {
        assert_eq!(conf_of(b"/usr/sbin/nscd\0"), "/etc/nscd.conf");
        assert_eq!(conf_of(b"nscd\0-F\0"), "/etc/nscd.conf");
        assert_eq!(conf_of(b"nscd\0-f\0/tmp/n.conf\0-d\0"), "/tmp/n.conf");
        assert_eq!(conf_of(b"nscd\0-f/tmp/n.conf\0"), "/tmp/n.conf");
        assert_eq!(conf_of(b"nscd\0--config-file=/x\0"), "/x");
        assert_eq!(conf_of(b"nscd\0--config-file\0/y\0"), "/y");
        assert_eq!(conf_of(b"worker_nscd\x005\0"), "/etc/nscd.conf");
    }

    #[test]
    fn unscd_by_its_executable_and_an_old_module_by_its_map() {
        assert!(is_unscd(b"\x7fELF..unscd v0.54\0worker_nscd\0..."));
        assert!(!is_unscd(b"\x7fELF..GNU C Library nscd\0paranoia\0"));
        let maps = "7f12-7f14 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f20-7f22 r-xp 00001000 08:01 99 /usr/lib/x86_64-linux-gnu/libnss_lbfo.so.2\n";
        assert!(!old_module(maps.as_bytes()));
        let replaced = maps.replace("libnss_lbfo.so.2\n", "libnss_lbfo.so.2 (deleted)\n");
        assert!(old_module(replaced.as_bytes()));
        let other = maps.replace("libnss_lbfo.so.2\n", "libnss_files.so.2 (deleted)\n");
        assert!(!old_module(other.as_bytes()));
        assert!(!old_module(b""));
    }

    #[test]
    fn a_fake_proc_with_daemons_caching_hosts() {
        let dir = std::env::temp_dir().join(format!("lbfo-nscd-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let proc = dir.join("proc");
        // A process: its name, its config (if any), its executable's bytes and its memory map.
        let add = |pid: &str, comm: &str, conf: Option<&str>, exe: &str, maps: &str| {
            let p = proc.join(pid);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(p.join("cmdline"), format!("/usr/sbin/{comm}\0")).unwrap();
            std::fs::write(p.join("exe"), exe).unwrap();
            std::fs::write(p.join("maps"), maps).unwrap();
            let root = dir.join(format!("root{pid}"));
            std::fs::create_dir_all(root.join("etc")).unwrap();
            if let Some(c) = conf {
                std::fs::write(root.join("etc/nscd.conf"), c).unwrap();
            }
            std::os::unix::fs::symlink(&root, p.join("root")).unwrap();
        };
        let on = Some("enable-cache hosts yes\n");
        let (glibc, unscd) = ("ELF nscd", "ELF worker_nscd");
        let module = "7f00-7f01 r-xp 0 08:01 9 /usr/lib/libnss_lbfo.so.2\n";
        let old = "7f00-7f01 r-xp 0 08:01 9 /usr/lib/libnss_lbfo.so.2 (deleted)\n";
        std::fs::create_dir_all(proc.join("self")).unwrap();
        add("7", "sshd", on, unscd, old);
        add("12", "nscd", Some("enable-cache hosts no\n"), unscd, old);
        assert_eq!(find(&proc), None, "daemons with the hosts cache off");
        add("30", "nscd", None, unscd, old);
        assert_eq!(find(&proc), None, "a daemon without a config file to read");
        add("35", "nscd", on, glibc, module);
        assert_eq!(
            find(&proc),
            None,
            "glibc's nscd running the installed module"
        );
        add("41", "nscd", on, glibc, old);
        let found = find(&proc).expect("glibc's nscd with a replaced module");
        assert_eq!(
            found,
            CachingNscd {
                pid: 41,
                daemon: Daemon::OldModule,
                conf: "/etc/nscd.conf".into()
            }
        );
        assert!(found.warning().starts_with(
            "nscd (pid 41) caches hosts (/etc/nscd.conf: enable-cache hosts yes) with an lbfo \
             module replaced since it loaded it"
        ));
        add("40", "nscd", on, unscd, "");
        let found = find(&proc).expect("unscd");
        assert_eq!((found.pid, found.daemon), (40, Daemon::Unscd));
        assert!(found
            .warning()
            .starts_with("unscd (pid 40) caches hosts (/etc/nscd.conf: enable-cache hosts yes)"));
        assert_eq!(find(&dir.join("no-proc")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
