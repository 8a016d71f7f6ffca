//! The Debian package, installed, used, removed and purged in a throwaway root.
//!
//! `tests/scripts/deb-roundtrip.sh` runs in private mount, IPC and PID namespaces with overlays
//! over /etc, /usr and /var and a tmpfs on /run: real `dpkg -i`, the real maintainer scripts, the
//! installed module answering `getent` through the namespace's /etc/nsswitch.conf (no
//! LD_LIBRARY_PATH), the agent started as the installed unit starts it (its `ExecStart=`, and
//! the writable paths, private /tmp and capabilities its lines give, read from the unit file, as
//! no systemd runs here), a FIFO change surviving `kill -9` with a restart and with a reboot
//! (from the packaged config's state file under `StateDirectory=`), then `dpkg -r` and
//! `dpkg --purge` giving nsswitch.conf back byte for byte; last, the maintainer scripts' systemd
//! branch against a stub `systemctl`.
//! This test checks that the machine's own nsswitch.conf, hosts file and dpkg database are the
//! same afterwards. Needs root and the package (`bash scripts/deb.sh`; scripts/test.sh builds it).

use lbfo_tests::{debian_packages, describe, is_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The machine files the package would touch if the throwaway root leaked.
const GUARDED: &[&str] = &[
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/info/lbfo.list",
    "/usr/sbin/lbfo-agentd",
    "/etc/lbfo.conf",
];

fn snapshot() -> Vec<(String, Option<Vec<u8>>)> {
    GUARDED
        .iter()
        .map(|p| (p.to_string(), std::fs::read(p).ok()))
        .collect()
}

/// The newest `lbfo_*.deb` in TARGET/debian (TARGET from the test executable's path), or
/// `$LBFO_DEB`.
fn package() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LBFO_DEB") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.ancestors().nth(3)?.join("debian");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("lbfo_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

#[test]
fn install_use_remove_purge_in_a_throwaway_root() {
    if !is_root() {
        eprintln!("skipped: dpkg in a throwaway root needs root (mounts over /etc, /usr, /var)");
        return;
    }
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("skipped: no dpkg on this machine (not Debian)");
        return;
    }
    let deb = package().expect(
        "no target/debian/lbfo_*.deb: run `bash scripts/deb.sh` first (scripts/test.sh does)",
    );
    let daemons = debian_packages(&["nscd", "unscd"]).expect("apt-get, on a machine with dpkg");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/deb-roundtrip.sh");
    let scratch = std::env::temp_dir().join(format!("lbfo-deb-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");

    let before = snapshot();
    let out = Command::new("unshare")
        .args([
            "-m",
            "-i",
            "-p",
            "-f",
            "--mount-proc",
            "--propagation",
            "private",
        ])
        .arg("bash")
        .arg(&script)
        .arg(&deb)
        .arg(&scratch)
        .args(&daemons)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LBFO_TABLE")
        .output()
        .expect("run unshare");
    let after = snapshot();
    let _ = std::fs::remove_dir(&scratch);

    for ((path, a), (_, b)) in before.iter().zip(&after) {
        assert!(a == b, "{path} changed on the machine itself");
    }
    assert!(
        after
            .iter()
            .all(|(p, c)| !p.contains("lbfo") || c.is_none()),
        "nothing of lbfo is installed on the machine"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout.contains("roundtrip: all checks passed"),
        "{}",
        describe(&out)
    );
    // Every check ran (49, 51 with systemd-analyze), so a shortened script cannot pass.
    let oks = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert!(oks >= 49, "only {oks} checks ran:\n{stdout}");
}
