//! The end-to-end test bed: real agents, the real FIFO, the real NSS module under real glibc.
//!
//! A [`Host`] is one machine's worth of lbfo in a private temporary directory: a config file, the
//! agent process, its table, its FIFO. Lookups go through `lbfo-resolve` (glibc's getaddrinfo and
//! gethostbyname*_r with `__nss_configure_lookup`) or through `getent` inside a private mount
//! namespace whose /etc/nsswitch.conf and /etc/hosts are bind-mounted from the host's directory,
//! so the machine's own /etc is never touched. Everything a host started or created is ended and
//! removed when it is dropped, also when a test fails.
//!
//! The artefacts are the release builds in the same target directory as the tests:
//! `release/lbfo-agentd` and `release/libnss_lbfo.so` (override the directory with `LBFO_BIN_DIR`). `scripts/test.sh`
//! builds them before running the tests.
#![allow(unsafe_code)] // shmctl(IPC_RMID) on the counters segment a test agent created.

pub mod bed;
mod rng;
pub mod simulate;
pub mod web;

pub use rng::TestRng;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the built artefacts are.
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// The agent binary.
    pub agent: PathBuf,
    /// The NSS module as built (`libnss_lbfo.so`).
    pub module: PathBuf,
    /// The resolver probe.
    pub resolve: PathBuf,
}

/// Finds the artefacts, failing with instructions if they were not built.
pub fn artefacts() -> Artefacts {
    // Test executables live in TARGET/PROFILE/deps, so TARGET/release is three levels up, whatever
    // CARGO_TARGET_DIR says.
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let dir =
        std::env::var_os("LBFO_BIN_DIR").map_or_else(|| target.join("release"), PathBuf::from);
    let a = Artefacts {
        agent: dir.join("lbfo-agentd"),
        module: dir.join("libnss_lbfo.so"),
        resolve: resolver(),
    };
    for p in [&a.agent, &a.module] {
        assert!(
            p.exists(),
            "{} is missing: run `cargo build --release` first (scripts/test.sh does)",
            p.display()
        );
    }
    a
}

/// `lbfo-resolve`, built beside the test executables (`target/*/deps/..` → `target/*/`), or
/// beside the running program when that is a binary of this crate (the cluster benchmark).
fn resolver() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let here = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let up = here.parent().map(Path::to_path_buf).unwrap_or_default();
    let p = [here.join("lbfo-resolve"), up.join("lbfo-resolve")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| up.join("lbfo-resolve"));
    assert!(
        p.exists(),
        "{} is missing: `cargo test` builds it",
        p.display()
    );
    p
}

/// The target directory the tests were built in (`TARGET/PROFILE/deps/test-exe`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Debian packages downloaded and unpacked, never installed, by `tests/scripts/debian-pkgs.sh`
/// into TARGET/debian-pkgs (kept there for the next run): each package's unpacked root, in the
/// order asked. `None` where there is no `apt-get` (not Debian); a failed download panics.
pub fn debian_packages(pkgs: &[&str]) -> Option<Vec<PathBuf>> {
    if Command::new("apt-get").arg("--version").output().is_err() {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-pkgs.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(target_dir().join("debian-pkgs"))
        .args(pkgs)
        .output()
        .expect("run debian-pkgs.sh");
    assert!(
        out.status.success(),
        "debian-pkgs.sh {pkgs:?}: {}",
        describe(&out)
    );
    let roots: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    assert_eq!(roots.len(), pkgs.len(), "{}", describe(&out));
    Some(roots)
}

/// Whether this process is root (namespaces and bind mounts need it, or a user namespace).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `unshare` arguments for a private mount namespace.
pub fn unshare_mount() -> &'static [&'static str] {
    if is_root() {
        &["unshare", "-m", "--propagation", "private"]
    } else {
        &["unshare", "-rm", "--propagation", "private"]
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One machine's lbfo: config, agent, table, FIFO, a private nsswitch.conf and hosts file.
#[derive(Debug)]
pub struct Host {
    /// The host's private directory.
    pub dir: PathBuf,
    /// The built artefacts.
    pub bin: Artefacts,
    agent: Option<Child>,
    /// Directory holding `libnss_lbfo.so.2`, for LD_LIBRARY_PATH.
    pub libdir: PathBuf,
    /// The network namespace the agent and `getent` run in (see [`bed::Bed`]), if any.
    pub netns: Option<String>,
    /// A command the agent is started under (e.g. `prlimit --nofile=64:4096`), if any: it must
    /// exec the agent, so the agent keeps its pid.
    pub wrap: Vec<String>,
    /// Environment variables the agent is started with (e.g. a clock offset).
    pub env: Vec<(String, String)>,
}

impl Host {
    /// A host whose config is `table`/`fifo` lines for its directory followed by `body`.
    pub fn new(body: &str) -> Host {
        let bin = artefacts();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lbfo-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("lib")).expect("create test dir");
        let libdir = dir.join("lib");
        std::os::unix::fs::symlink(&bin.module, libdir.join("libnss_lbfo.so.2"))
            .expect("symlink module");
        fs::write(dir.join("nsswitch.conf"), "hosts: lbfo files\n").expect("write nsswitch.conf");
        fs::write(
            dir.join("hosts"),
            "127.0.0.1 localhost\n192.0.2.77 fromhosts.test\n192.0.2.78 web.lan-files\n",
        )
        .expect("write hosts");
        let h = Host {
            dir,
            bin,
            agent: None,
            libdir,
            netns: None,
            wrap: Vec::new(),
            env: Vec::new(),
        };
        h.write_config(body);
        h
    }

    /// The config file's path.
    pub fn config(&self) -> PathBuf {
        self.dir.join("lbfo.conf")
    }

    /// The table's path.
    pub fn table(&self) -> PathBuf {
        self.dir.join("run/table")
    }

    /// The FIFO's path.
    pub fn fifo(&self) -> PathBuf {
        self.dir.join("lbfo.sock")
    }

    /// Rewrites the config: this host's paths, then `body`.
    pub fn write_config(&self, body: &str) {
        let text = format!(
            "table {}\nfifo {}\n{body}",
            self.table().display(),
            self.fifo().display()
        );
        fs::write(self.config(), text).expect("write config");
    }

    /// Starts the agent and waits until its table and FIFO exist.
    pub fn start(&mut self) {
        let readies = self.log().matches("\nready: ").count()
            + usize::from(self.log().starts_with("ready: "));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).args(&self.wrap);
                c
            }
            None if self.wrap.is_empty() => Command::new(&self.bin.agent),
            None => {
                let mut c = Command::new(&self.wrap[0]);
                c.args(&self.wrap[1..]);
                c
            }
        };
        if self.netns.is_some() || !self.wrap.is_empty() {
            cmd.arg(&self.bin.agent);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("log file");
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("-c")
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn lbfo-agentd");
        self.agent = Some(child);
        let (table, fifo) = (self.table(), self.fifo());
        self.wait_for("the agent's table and FIFO", || {
            table.exists() && fifo.exists()
        });
        // A restarted agent finds both in place: wait for its own "ready" line.
        self.wait_for("the agent to be ready", || {
            self.log().matches("\nready: ").count() + usize::from(self.log().starts_with("ready: "))
                > readies
        });
    }

    /// The agent's process id, if running.
    pub fn agent_pid(&self) -> Option<i32> {
        self.agent.as_ref().map(|c| c.id() as i32)
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.agent_pid() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(pid, sig) };
        }
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.agent.take()?;
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the agent with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Writes `text` to the FIFO in one write.
    pub fn send(&self, text: &str) {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.fifo())
            .expect("open fifo for writing (is the agent running?)");
        f.write_all(text.as_bytes()).expect("write fifo");
    }

    /// Polls `cond` until it holds, for at most 10 s; panics with `what` and the agent's log.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; agent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A command with this host's table and module in its environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("LBFO_TABLE", self.table())
            .env("LD_LIBRARY_PATH", &self.libdir);
        c
    }

    /// Runs `lbfo-resolve --nss "lbfo files" ARGS` and returns its stdout; panics on failure.
    pub fn resolve(&self, args: &[&str]) -> String {
        let out = self.resolve_output(args);
        assert!(
            out.status.success(),
            "lbfo-resolve {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Runs `lbfo-resolve --nss "lbfo files" ARGS`.
    pub fn resolve_output(&self, args: &[&str]) -> Output {
        self.command(&self.bin.resolve)
            .args(["--nss", "lbfo files"])
            .args(args)
            .output()
            .expect("run lbfo-resolve")
    }

    /// Counts answers of `n` resolutions: `(answer, count)` sorted by answer.
    pub fn tally(&self, mode: &str, name: &str, n: u32) -> Vec<(String, u64)> {
        let out = self.resolve(&["--tally", mode, name, &n.to_string()]);
        out.lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("count ")?.rsplitn(2, ' ');
                let n = w.next()?.parse().ok()?;
                Some((w.next()?.to_string(), n))
            })
            .collect()
    }

    /// Waits (through real lookups) until `name` answers exactly `addr`.
    pub fn wait_answer(&self, name: &str, addr: &str) {
        let out = self.resolve_output(&["wait", name, addr, "10000"]);
        assert!(
            out.status.success(),
            "{name} never answered {addr}: {}\nagent log:\n{}",
            describe(&out),
            self.log()
        );
    }

    /// Runs `getent ARGS` in a private mount namespace whose nsswitch.conf and hosts are this
    /// host's; returns (exit code, stdout).
    pub fn getent(&self, args: &[&str]) -> (i32, String) {
        self.getent_with_table(&self.table(), args)
    }

    /// [`Host::getent`] with `LBFO_TABLE` pointing at `table`.
    pub fn getent_with_table(&self, table: &Path, args: &[&str]) -> (i32, String) {
        if let Some(ns) = &self.netns {
            // `ip netns exec` puts /etc/netns/NS/{nsswitch.conf,hosts} in place for getent.
            let out = self
                .command("ip")
                .env("LBFO_TABLE", table)
                .args(["netns", "exec", ns, "getent"])
                .args(args)
                .output()
                .expect("run ip netns exec getent");
            return (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).to_string(),
            );
        }
        let script = format!(
            "mount --bind {d}/nsswitch.conf /etc/nsswitch.conf && mount --bind {d}/hosts /etc/hosts && exec getent \"$@\"",
            d = self.dir.display()
        );
        let mut cmd = self.command(unshare_mount()[0]);
        cmd.env("LBFO_TABLE", table)
            .args(&unshare_mount()[1..])
            .args(["sh", "-c", &script, "getent"])
            .args(args);
        let out = cmd.output().expect("run unshare getent");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }

    /// `lbfo-agentd status --json` for this host's table.
    pub fn status_json(&self) -> String {
        let out = Command::new(&self.bin.agent)
            .args(["status", "--json", "-c"])
            .arg(self.config())
            .output()
            .expect("status");
        assert!(out.status.success(), "status failed: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// What a reboot does to the agent's shared memory while it is down: the table file and
    /// its counters segment are gone (processes that still map them keep their mappings).
    pub fn remove_table(&self) {
        if let Some(id) = self.counters_id() {
            // SAFETY: removing the segment this host's agent created; a null buf is allowed.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        fs::remove_file(self.table()).expect("remove the table file");
    }

    /// The SysV id of the table's counters segment, read from the table header (word 12).
    fn counters_id(&self) -> Option<i32> {
        let bytes = fs::read(self.table()).ok()?;
        let w = bytes.get(96..104)?;
        let id = u64::from_ne_bytes(w.try_into().ok()?);
        i32::try_from(id).ok()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        if let Some(id) = self.counters_id() {
            // SAFETY: removing the segment this host's agent created; a null buf is allowed.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
        if std::env::var_os("LBFO_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A process's exit status and output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
