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
