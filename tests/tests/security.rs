//! Local security: an unprivileged user reads answers but cannot change them, and setuid programs
//! ignore `LBFO_TABLE`.
//!
//! "Unprivileged" is uid/gid 65534 (nobody) with no supplementary groups, switched to with
//! `setpriv` or, for the SysV calls, in a forked child. Both tests need root and skip without it.
#![allow(unsafe_code)] // fork, setresuid and shmctl in the child that plays the unprivileged user.

use lbfo_tests::{describe, is_root, Host};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Copies of the probe and the module that nobody can run: the build tree may sit in a directory
/// only root can enter.
fn nobody_copies(h: &Host) -> (PathBuf, PathBuf) {
    let private = h.dir.join("nobody");
    std::fs::create_dir_all(&private).unwrap();
    let probe = private.join("lbfo-resolve");
    std::fs::copy(&h.bin.resolve, &probe).unwrap();
    std::fs::copy(&h.bin.module, private.join("libnss_lbfo.so.2")).unwrap();
    for p in [&h.dir, &private, &probe] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (private, probe)
}

/// Runs `sh -c SCRIPT` as nobody with this host's table and the private module.
fn as_nobody(h: &Host, private: &Path, script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .env("LBFO_TABLE", h.table())
        .env("LD_LIBRARY_PATH", private)
        .output()
        .unwrap()
}

/// The counters segment id, from the table header (word 12), as the agent published it.
fn counters_id(table: &Path) -> i32 {
    let bytes = std::fs::read(table).unwrap();
    i32::try_from(u64::from_ne_bytes(bytes[96..104].try_into().unwrap())).unwrap()
}

/// In a forked child running as nobody: attach the segment read-write and bump its last word (what
/// every lookup does to a counter), then try IPC_SET and IPC_RMID. Returns the child's report:
/// bit 0 attached and bumped, bit 1 IPC_SET refused with EPERM, bit 2 IPC_RMID refused with EPERM.
fn segment_as_nobody(id: i32) -> i32 {
    // SAFETY: IPC_STAT fills the shmid_ds we pass.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) }, 0);
    let words = ds.shm_segsz / 8;
    // SAFETY: fork in a test process; the child only makes async-signal-safe system calls and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut report = 0;
        // SAFETY: plain system calls on values we own; the mapping is used within its size.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
            {
                libc::_exit(100);
            }
            let p = libc::shmat(id, std::ptr::null(), 0);
            if p as isize != -1 {
                let last = &*(p as *const std::sync::atomic::AtomicU64).add(words - 1);
                let before = last.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if last.load(std::sync::atomic::Ordering::Relaxed) != before {
                    report |= 1;
                }
                last.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                libc::shmdt(p);
            }
            let mut ds: libc::shmid_ds = std::mem::zeroed();
            if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0 {
                ds.shm_perm.mode = 0o600;
                if libc::shmctl(id, libc::IPC_SET, &mut ds) == -1
                    && *libc::__errno_location() == libc::EPERM
                {
                    report |= 2;
                }
            }
            if libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) == -1
                && *libc::__errno_location() == libc::EPERM
            {
                report |= 4;
            }
            libc::_exit(report);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WEXITSTATUS(status)
}

/// In a forked child running as nobody: attach segment `id` read-write and store `value` in its
/// words `from..to` (`to` clipped to the segment), as any local user may. Whether it could.
fn write_as_nobody(id: i32, from: usize, to: usize, value: u64) -> bool {
    // SAFETY: IPC_STAT fills the shmid_ds we pass.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) }, 0);
    let to = to.min(ds.shm_segsz / 8);
    // SAFETY: fork in a test process; the child only makes system calls, writes inside the
    // mapping's size and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
            {
                libc::_exit(100);
            }
            let p = libc::shmat(id, std::ptr::null(), 0);
            if p as isize == -1 {
                libc::_exit(101);
            }
            let words = p as *const std::sync::atomic::AtomicU64;
            for i in from..to {
                (*words.add(i)).store(value, std::sync::atomic::Ordering::Relaxed);
            }
            libc::shmdt(p);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Words before the first service's counters in the segment (`COUNTERS_HEADER_WORDS`).
const COUNTERS_HEADER: usize = 4;

/// The number after the first `"key":` in `status --json` (or after `key ` in a log line).
fn json_number(json: &str, key: &str) -> u64 {
    let pat = if key.contains(' ') {
        format!("{key} ")
    } else {
        format!("\"{key}\":")
    };
    let at = json.find(&pat).map_or(json.len(), |i| i + pat.len());
    json[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// `lbfo-agentd status` in the form `flag` gives (`""` for text) for this host's agent.
fn status(h: &Host, flag: &str) -> String {
    let out = Command::new(&h.bin.agent)
        .arg("status")
        .args((!flag.is_empty()).then_some(flag))
        .arg("-c")
        .arg(h.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tamper counts `(counters, header)` as each of `status`'s forms shows them; every form
/// must agree, or this fails.
fn tamper_counts(h: &Host) -> (u64, u64) {
    let json = status(h, "--json");
    let j = (json_number(&json, "counters"), json_number(&json, "header"));
    let prom = status(h, "--prometheus");
    let sample = |what: &str| {
        let name = format!("lbfo_counters_tampered_total{{what=\"{what}\"}} ");
        prom.lines()
            .find_map(|l| l.strip_prefix(&name)?.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    assert_eq!((sample("counter"), sample("header")), j, "{prom}");
    let text = status(h, "");
    if j == (0, 0) {
        assert!(!text.contains("tampering"), "{text}");
    } else {
        let want = format!(
            "tampering   counters put back: {}, header rewritten: {} (",
            j.0, j.1
        );
        assert!(text.contains(&want), "{text}");
    }
    j
}

/// Every backend's lookups in `status --json`, in order.
fn lookups(json: &str) -> Vec<u64> {
    json.split("\"lookups\":")
        .skip(1)
        .map(|t| json_number(&format!("\"l\":{t}"), "l"))
        .collect()
}

/// Waits until the agent has looked at every counter since now: a lookup of the sentinel
/// `bar.lan` (limit 1, in the slot after the others, so its counter is judged last in each pass)
/// is followed in the same tick by its limit, which is logged; the sentinel is then put back.
fn barrier(h: &Host) {
    let n = h.log().matches("limit reached: bar.lan").count();
    assert_eq!(h.resolve(&["gai4", "bar.lan"]), "10.0.0.9");
    h.wait_for("the sentinel's limit", || {
        h.log().matches("limit reached: bar.lan").count() > n
    });
    h.send("add bar.lan 10.0.0.9 limit=1\n");
    h.wait_answer("bar.lan", "10.0.0.9");
}

/// Issue 14's scenario: nobody writes 5,000,000 into every usage counter (which used to reach
/// both backends' limits and delete them), then 0 (which used to defeat the limits). The agent
/// puts the counters back, logs the jump, counts it in `status`, and deletes nothing.
#[test]
fn a_user_writing_the_counters_neither_reaches_nor_defeats_a_limit() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let mut h = Host::new(
        "add lim.lan 10.0.0.1 limit=1000000\nadd lim.lan 10.0.0.2 limit=1000000\n\
         add bar.lan 10.0.0.9 limit=1\n",
    );
    h.start();
    let lim = |h: &Host| lookups(&h.status_json())[..2].to_vec();
    let tampered = |h: &Host| json_number(&h.status_json(), "counters");
    assert_eq!(h.resolve(&["gai4", "lim.lan", "4"]).lines().count(), 4);
    barrier(&h);
    let id = counters_id(&h.table());
    assert!(write_as_nobody(id, COUNTERS_HEADER, usize::MAX, 5_000_000));
    h.wait_for("the jumps logged", || {
        let log = h.log();
        ["10.0.0.1", "10.0.0.2"]
            .iter()
            .all(|a| log.contains(&format!("counters: lim.lan {a}: jumped by ")))
    });
    let log = h.log();
    for a in ["10.0.0.1", "10.0.0.2"] {
        assert!(
            log.contains(&format!("counters: lim.lan {a}: jumped by 4999998 in "))
                && log.contains("written by something other than lookups; put back to 2 "),
            "{log}"
        );
    }
    assert!(!log.contains("limit reached: lim.lan"), "{log}");
    assert_eq!(lim(&h), [2, 2], "put back");
    let jumps = tampered(&h);
    assert!(jumps >= 2, "{}", h.status_json());
    // Zero would let a backend go on past its limit: put back too, counted, not logged again.
    assert_eq!(h.resolve(&["gai4", "lim.lan", "4"]).lines().count(), 4);
    barrier(&h);
    assert!(write_as_nobody(id, COUNTERS_HEADER, usize::MAX, 0));
    h.wait_for("the drops counted", || tampered(&h) >= jumps + 2);
    assert_eq!(
        lim(&h),
        [4, 4],
        "put back, the lookups before the write kept"
    );
    assert_eq!(h.log().matches("counters: lim.lan").count(), 2);
    assert!(!h.log().contains("limit reached: lim.lan"));
    let answers = h.resolve(&["gai4", "lim.lan", "2"]);
    assert!(
        answers.contains("10.0.0.1") && answers.contains("10.0.0.2"),
        "{answers}"
    );
    let counts = tamper_counts(&h);
    assert_eq!(counts, (tampered(&h), 0), "every form of status counts it");
}

/// Lookups a user really makes use a limit up, as before: the guard takes them, however fast
/// one process can make them.
#[test]
fn genuine_lookups_still_reach_the_limit() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let mut h = Host::new("add lim.lan 10.0.0.1 limit=3000\nadd lim.lan 10.0.0.2\n");
    h.start();
    let (private, probe) = nobody_copies(&h);
    let out = as_nobody(
        &h,
        &private,
        &format!(
            "{} --nss 'lbfo files' --tally gai4 lim.lan 20000",
            probe.display()
        ),
    );
    assert!(out.status.success(), "{}", describe(&out));
    h.wait_for("the limit reached", || {
        h.log().contains("limit reached: lim.lan 10.0.0.1 after ")
    });
    assert!(!h.log().contains("counters: lim.lan"), "{}", h.log());
    assert_eq!(h.resolve(&["gai4", "lim.lan", "2"]), "10.0.0.2\n10.0.0.2");
}

/// nobody zeroes the counters segment's header, which makes a process that starts then take
/// process-local turns (every short-lived client gets the same first backend). The agent
/// rewrites it at its next tick: new processes rotate again, checked with getent and
/// getaddrinfo, each lookup a process of its own.
#[test]
fn an_overwritten_counters_header_is_rewritten_for_new_processes() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let mut h = Host::new("add rr.lan 10.0.0.1\nadd rr.lan 10.0.0.2\n");
    h.start();
    let id = counters_id(&h.table());
    let one = |i: usize| {
        if i % 2 == 0 {
            let (code, out) = h.getent(&["hosts", "rr.lan"]);
            assert_eq!(code, 0, "{out}");
            out.split_whitespace().next().unwrap_or("").to_owned()
        } else {
            h.resolve(&["gai4", "rr.lan"])
        }
    };
    let rotating = || {
        let got: Vec<String> = (0..4).map(one).collect();
        got.windows(2).all(|w| w[0] != w[1])
    };
    assert!(rotating(), "new processes share the turn");
    let t0 = std::time::Instant::now();
    assert!(write_as_nobody(id, 0, COUNTERS_HEADER, 0));
    h.wait_for("new processes rotating again", rotating);
    let took = t0.elapsed();
    eprintln!("new processes rotate again {took:?} after the overwrite");
    assert!(
        took < std::time::Duration::from_secs(3),
        "within a second or so: {took:?}"
    );
    assert!(
        h.log()
            .contains("counters: the segment's header was overwritten (1 so far); rewritten"),
        "{}",
        h.log()
    );
    assert_eq!(tamper_counts(&h), (0, 1), "every form of status counts it");
}

/// The scenario in a real cluster (a bed of three agents sharing a key): nobody writes
/// 5,000,000 into two hosts' counters. Before, both backends were deleted on every machine; now
/// nothing is deleted or sent anywhere, and each host's log names the jump.
#[test]
fn in_a_cluster_written_counters_delete_nothing_anywhere() {
    use lbfo_tests::bed::Bed;
    if !Bed::available() {
        eprintln!("skipped: the multi-host bed needs root and iproute2");
        return;
    }
    let bed = Bed::new(3);
    let keydir = std::env::temp_dir().join(format!("lbfo-tamper-key-{}", std::process::id()));
    std::fs::create_dir_all(&keydir).unwrap();
    let key = keydir.join("key");
    let out = Command::new(lbfo_tests::artefacts().agent)
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut hosts: Vec<Host> = (1..=3)
        .map(|i| {
            bed.agent_host(
                i,
                &format!(
                    "group 239.77.0.9:7946\niface eth0\nnode h{i}\nkey {}\n\
                     add lim.lan 10.0.0.1 limit=1000000\nadd lim.lan 10.0.0.2 limit=1000000\n",
                    key.display()
                ),
            )
        })
        .collect();
    hosts.iter_mut().for_each(Host::start);
    let digest = |h: &Host| {
        let j = h.status_json();
        j.split("\"digest\":\"")
            .nth(1)
            .unwrap_or("")
            .split('"')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    let same = |hosts: &[Host], with: &str| {
        let d = digest(&hosts[0]);
        hosts
            .iter()
            .all(|h| digest(h) == d && h.status_json().contains(with))
    };
    hosts[0].wait_for("the cluster in sync", || same(&hosts, "lim.lan"));
    for h in &hosts[..2] {
        assert_eq!(h.getent(&["hosts", "lim.lan"]).0, 0);
        assert!(write_as_nobody(
            counters_id(&h.table()),
            COUNTERS_HEADER,
            usize::MAX,
            5_000_000
        ));
    }
    for h in &hosts[..2] {
        h.wait_for("the jump logged", || {
            let log = h.log();
            ["10.0.0.1", "10.0.0.2"]
                .iter()
                .all(|a| log.contains(&format!("counters: lim.lan {a}: jumped by ")))
        });
    }
    // A deletion would have left in the same tick as the log line: once a later change has
    // reached every host and the tables agree, they would show it.
    hosts[0].send("add mark.lan 10.0.0.9\n");
    hosts[0].wait_for("the mark everywhere", || same(&hosts, "mark.lan"));
    for (i, h) in hosts.iter().enumerate() {
        let log = h.log();
        assert!(!log.contains("limit reached"), "host {}: {log}", i + 1);
        let j = h.status_json();
        assert!(
            j.contains("\"10.0.0.1\"") && j.contains("\"10.0.0.2\""),
            "host {}: {j}",
            i + 1
        );
    }
    drop(hosts);
    let _ = std::fs::remove_dir_all(&keydir);
}

#[test]
fn a_user_reads_answers_but_cannot_change_them() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let mut h = Host::new("add a.lan 10.0.0.1\nadd a.lan 10.0.0.2 limit=1000000\n");
    h.start();
    let run = h.table().parent().unwrap().to_path_buf();
    let owner = |p: &Path| std::fs::metadata(p).unwrap().uid();
    assert_eq!(
        (mode(&h.table()), owner(&h.table())),
        (0o644, 0),
        "table: root's, world-readable"
    );
    assert_eq!(
        (mode(&run), owner(&run)),
        (0o755, 0),
        "its directory: root's, not writable by others"
    );
    assert_eq!(
        (mode(&h.fifo()), owner(&h.fifo())),
        (0o600, 0),
        "fifo: root only"
    );
    let (private, probe) = nobody_copies(&h);

    // Commands, the table's bytes, the table's name: all refused.
    let t = h.table().display().to_string();
    // Where nobody may write: the copy it tries to move over the table.
    let copy = format!("/tmp/lbfo-nobody-{}", std::process::id());
    let attempts = [
        (
            "write a command",
            format!("echo 'add a.lan 10.6.6.6' > {}", h.fifo().display()),
        ),
        ("append to the table", format!("echo x >> {t}")),
        ("truncate the table", format!("truncate -s 0 {t}")),
        (
            "replace the table",
            format!("cp {t} {copy} && mv -f {copy} {t}"),
        ),
        ("remove the table", format!("rm -f {t}")),
        (
            "create a file beside it",
            format!("touch {}/evil", run.display()),
        ),
        ("chmod the table", format!("chmod 666 {t}")),
        (
            "signal the agent",
            format!("kill -HUP {}", h.agent_pid().unwrap()),
        ),
    ];
    for (what, script) in &attempts {
        let out = as_nobody(&h, &private, script);
        assert!(
            !out.status.success(),
            "nobody could {what}: {}",
            describe(&out)
        );
    }
    let _ = std::fs::remove_file(&copy);
    assert_eq!(mode(&h.table()), 0o644);
    assert!(!run.join("evil").exists());

    // The counters segment: lookups bump it, so anyone may attach and write, but only its owner may
    // change its permissions or remove it (SysV segments cannot be resized at all).
    let id = counters_id(&h.table());
    assert_eq!(
        segment_as_nobody(id),
        0b111,
        "attach+bump ok, IPC_SET and IPC_RMID refused (EPERM)"
    );

    // Resolving works, counting included.
    let out = as_nobody(
        &h,
        &private,
        &format!("{} --nss 'lbfo files' gai4 a.lan 4", probe.display()),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let answers = String::from_utf8_lossy(&out.stdout);
    assert!(
        answers.contains("10.0.0.1") && answers.contains("10.0.0.2"),
        "{answers}"
    );
    let status = h.status_json();
    assert!(
        status.contains("\"lookups\":2"),
        "the lookups counted: {status}"
    );
    // And everything still answers as root configured it.
    h.send("add b.lan 10.0.0.3\n");
    h.wait_answer("b.lan", "10.0.0.3");
    assert_eq!(h.resolve(&["gai4", "a.lan", "2"]).lines().count(), 2);
}

/// A state file a user could have written is not read: `state` in a directory anyone may write
/// (a sticky one, as the man page's /tmp suggestion for routers), where nobody planted first a
/// symlink to a state file of root's that maps `evil.lan`, then a copy of it of their own. The
/// agent reads neither, starts from its config, moves each aside and writes its own file.
#[test]
fn a_state_file_a_user_could_write_is_not_read() {
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    // The file the user would like the agent to restore: a real agent's, mapping evil.lan.
    let mut evil = Host::new("");
    let evil_state = evil.dir.join("evil.state");
    evil.write_config(&format!(
        "state {}\nadd evil.lan 10.6.6.6\n",
        evil_state.display()
    ));
    evil.start();
    evil.stop();
    std::fs::set_permissions(&evil.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&evil_state, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut h = Host::new("");
    let shared = h.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    for (p, m) in [(&h.dir, 0o755), (&shared, 0o1777)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    let state = shared.join("lbfo.state");
    h.write_config(&format!(
        "state {}\nadd web.lan 10.0.0.1\n",
        state.display()
    ));
    let (private, _) = nobody_copies(&h);
    for (plant, why) in [
        (
            format!("ln -s {} {}", evil_state.display(), state.display()),
            "a symlink",
        ),
        (
            format!("cp {} {}", evil_state.display(), state.display()),
            "owned by uid 65534, not by the agent's user (uid 0)",
        ),
    ] {
        let out = as_nobody(&h, &private, &plant);
        assert!(out.status.success(), "{}", describe(&out));
        let before = h.log().len();
        h.start();
        h.wait_answer("web.lan", "10.0.0.1");
        let (code, out) = h.getent(&["hosts", "evil.lan"]);
        assert_ne!(code, 0, "evil.lan resolves: {out}");
        let log = h.log()[before..].to_string();
        assert!(
            log.contains(&format!(
                "state {}: {why}; not read; kept as {}.bad-",
                state.display(),
                state.display()
            )),
            "{log}"
        );
        h.wait_for("the agent's own state file", || {
            std::fs::symlink_metadata(&state)
                .is_ok_and(|m| m.file_type().is_file() && m.uid() == 0 && m.mode() & 0o777 == 0o600)
        });
        h.stop();
        h.remove_table();
        std::fs::remove_file(&state).unwrap();
    }
    let aside = std::fs::read_dir(&shared).unwrap().count();
    assert_eq!(aside, 2, "both kept aside");
}

/// The FIFO's mode once let others in (an admin's `chmod`, an older agent's): nobody opened it
/// then and keeps the descriptor. After the agent restarts, what nobody writes through it reaches
/// no agent: the FIFO is made afresh at every start (before, only its mode was narrowed, and the
/// old descriptor wrote into the new agent).
#[test]
fn a_fifo_writer_from_before_a_restart_no_longer_reaches_the_agent() {
    use std::io::{BufRead, BufReader, Write};
    if !is_root() {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let mut h = Host::new("add web.lan 10.0.0.1\n");
    h.start();
    let (private, _) = nobody_copies(&h);
    std::fs::set_permissions(h.fifo(), std::fs::Permissions::from_mode(0o622)).unwrap();
    // nobody opens the FIFO for writing, says so, and writes a command when told to.
    let script = format!(
        "trap '' PIPE; exec 3>{}; echo opened; read go; \
         if echo 'add evil.lan 10.6.6.6' >&3; then echo wrote; else echo refused; fi",
        h.fifo().display()
    );
    let mut nobody = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            &script,
        ])
        .env("LD_LIBRARY_PATH", &private)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(nobody.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "opened\n");
    h.stop();
    h.start();
    assert!(
        h.log()
            .contains("the old one's mode 0622 let other users in"),
        "{}",
        h.log()
    );
    writeln!(nobody.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let _ = nobody.wait();
    // Whatever went into the old pipe would come before this in the new one.
    h.send("add mark.lan 10.0.0.9\n");
    h.wait_answer("mark.lan", "10.0.0.9");
    let (code, answer) = h.getent(&["hosts", "evil.lan"]);
    assert_ne!(code, 0, "evil.lan resolves ({line:?}): {answer}");
    assert_eq!(line, "refused\n", "no reader: the write fails");
    assert_eq!(mode(&h.fifo()), 0o600);
}

/// A key file of another user is refused whatever its mode: its owner can read the key (and so
/// change every table in the cluster) and write one of their own.
#[test]
fn a_key_file_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown a file");
        return;
    }
    let h = Host::new("");
    let key = h.dir.join("lbfo.key");
    let gen = Command::new(&h.bin.agent)
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", describe(&gen));
    std::os::unix::fs::chown(&key, Some(NOBODY), None).unwrap();
    h.write_config(&format!(
        "group 239.77.0.1:7946\niface lo\nnode a\nkey {}\nadd web.lan 10.0.0.1\n",
        key.display()
    ));
    // Exits at once; an agent that took the key would run until killed.
    let mut agent = Command::new(&h.bin.agent)
        .arg("-c")
        .arg(h.config())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while agent.try_wait().unwrap().is_none() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = agent.kill();
    let out = agent.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "key {}: owned by uid 65534, not by the agent's user (uid 0): its owner can read and \
             change it; chown it",
            key.display()
        )),
        "{err}"
    );
    assert!(!h.table().exists(), "nothing started");
}

#[test]
fn setuid_programs_ignore_lbfo_table() {
    if !is_root() {
        eprintln!("skipped: needs root for a setuid binary and a private /run");
        return;
    }
    // The attacker's table: an ordinary agent mapping sec.lan somewhere else.
    let mut evil = Host::new("add sec.lan 10.6.6.6\n");
    evil.start();
    std::fs::set_permissions(&evil.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // In a private mount namespace: a fresh tmpfs on /run (no nosuid), where a real agent serves
    // the default path /run/lbfo/table; the module in the system library directory through a
    // read-only overlay (setuid programs ignore LD_LIBRARY_PATH); two copies of the probe, one
    // setuid root. Both run as nobody with LBFO_TABLE pointing at the attacker's table.
    let libdir = Command::new("sh")
        .args([
            "-c",
            "dirname \"$(readlink -f /lib/$(uname -m)-linux-gnu/libc.so.6)\"",
        ])
        .output()
        .unwrap();
    let libdir = String::from_utf8_lossy(&libdir.stdout).trim().to_string();
    let script = format!(
        r#"set -e
mount -t tmpfs -o mode=755 lbfo-run /run
mkdir /run/probe /run/lib
cp "$PROBE" /run/probe/setuid && chmod 4755 /run/probe/setuid
cp "$PROBE" /run/probe/plain && chmod 755 /run/probe/plain
cp "$MODULE" /run/lib/libnss_lbfo.so.2
mount -t overlay lbfo-lib -o lowerdir=/run/lib:{libdir} {libdir}
printf 'table /run/lbfo/table\nfifo /run/lbfo.sock\nadd sec.lan 10.0.0.1\n' > /run/lbfo.conf
"$AGENT" -c /run/lbfo.conf </dev/null >/dev/null 2>/run/agent.log &
agent=$!
trap 'kill $agent; wait $agent; ipcrm -m "$(od -An -t u8 -j 96 -N 8 /run/lbfo/table | tr -d " ")"' EXIT
env -u LBFO_TABLE /run/probe/plain --nss 'lbfo files' wait sec.lan 10.0.0.1 10000
nobody() {{ setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }}
echo "root-default $(env -u LBFO_TABLE /run/probe/plain --nss 'lbfo files' gai4 sec.lan)"
echo "nobody-plain $(nobody /run/probe/plain --nss 'lbfo files' gai4 sec.lan)"
echo "nobody-setuid $(nobody /run/probe/setuid --nss 'lbfo files' gai4 sec.lan)"
"#
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("PROBE", &evil.bin.resolve)
        .env("MODULE", &evil.bin.module)
        .env("AGENT", &evil.bin.agent)
        .env("LBFO_TABLE", evil.table())
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text.contains("root-default 10.0.0.1"),
        "the private agent answers: {text}"
    );
    assert!(
        text.contains("nobody-plain 10.6.6.6"),
        "an ordinary program follows LBFO_TABLE (so the next line shows secure_getenv at work): {text}"
    );
    assert!(
        text.contains("nobody-setuid 10.0.0.1"),
        "a setuid program ignores LBFO_TABLE and reads the default path: {text}"
    );
}
