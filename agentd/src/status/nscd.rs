//! Whether an nscd with its hosts cache on is running: that cache keeps the backend a lookup got
//! and serves it after lbfo has moved on (also after `down`), so `status` and `check` warn.
//!
//! Found the way the daemon finds its own configuration: a process named `nscd` (glibc's nscd,
//! and unscd, which Debian installs under the same name), its `-f FILE` / `--config-file` or else
//! `/etc/nscd.conf`, read through `/proc/PID/root` so a daemon in a container or a private mount
//! namespace is judged by its own file. In that file the last `enable-cache hosts yes|no` line
//! counts, and without one the cache is off (both daemons' rule). Nothing here can fail: what
//! cannot be read is not warned about.

use std::path::Path;

/// Where both daemons read their configuration when not told otherwise.
pub const DEFAULT_CONF: &str = "/etc/nscd.conf";

/// A running nscd whose hosts cache is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachingNscd {
    /// Its process id.
    pub pid: i32,
    /// The configuration file that turns the cache on, as the daemon names it.
    pub conf: String,
}

impl CachingNscd {
    /// The one-line warning `status` and `check` print.
    pub fn warning(&self) -> String {
        format!(
            "nscd (pid {}) caches hosts ({}: enable-cache hosts yes): programs using \
             gethostbyname() keep a backend after lbfo moves on, even after `down`; set \
             `enable-cache hosts no` and restart nscd (nss-lbfo(8))",
            self.pid, self.conf
        )
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

/// The first running nscd whose hosts cache is on, seen through `proc` (`/proc`).
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
    pids.into_iter().find_map(|pid| {
        let at = proc.join(pid.to_string());
        let comm = crate::sys::fs::read_file(&at.join("comm")).ok()?;
        if comm.trim_ascii_end() != b"nscd" {
            return None;
        }
        let cmdline = crate::sys::fs::read_file(&at.join("cmdline")).unwrap_or_default();
        let conf = conf_of(&cmdline);
        // Relative to the daemon's root, and to its working directory for a relative -f.
        let base = if conf.starts_with('/') { "root" } else { "cwd" };
        let text =
            crate::sys::fs::read_file(&at.join(base).join(conf.trim_start_matches('/'))).ok()?;
        hosts_cache_on(&text).then_some(CachingNscd { pid, conf })
    })
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
    fn a_fake_proc_with_an_nscd_caching_hosts() {
        let dir = std::env::temp_dir().join(format!("lbfo-nscd-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let proc = dir.join("proc");
        let add = |pid: &str, comm: &str, conf: Option<&str>| {
            let p = proc.join(pid);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            std::fs::write(p.join("cmdline"), format!("/usr/sbin/{comm}\0")).unwrap();
            let root = dir.join(format!("root{pid}"));
            std::fs::create_dir_all(root.join("etc")).unwrap();
            if let Some(c) = conf {
                std::fs::write(root.join("etc/nscd.conf"), c).unwrap();
            }
            std::os::unix::fs::symlink(&root, p.join("root")).unwrap();
        };
        std::fs::create_dir_all(proc.join("self")).unwrap();
        add("7", "sshd", Some("enable-cache hosts yes\n"));
        add("12", "nscd", Some("enable-cache hosts no\n"));
        assert_eq!(find(&proc), None, "an nscd with the hosts cache off");
        add("30", "nscd", None);
        assert_eq!(find(&proc), None, "an nscd without a config file to read");
        add("41", "nscd", Some("enable-cache hosts yes\n"));
        let found = find(&proc).expect("the caching nscd");
        assert_eq!(
            found,
            CachingNscd {
                pid: 41,
                conf: "/etc/nscd.conf".into()
            }
        );
        assert!(found
            .warning()
            .starts_with("nscd (pid 41) caches hosts (/etc/nscd.conf"));
        assert_eq!(find(&dir.join("no-proc")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
