//! lbfo with a real nscd and a real unscd running (Debian's packages, unpacked, never installed).
//!
//! `tests/scripts/nscd.sh` runs each daemon with its package's own /etc/nscd.conf in private
//! mount, network, IPC and PID namespaces with its own socket directory (see its header): with
//! `enable-cache hosts no`, roundrobin and failover hold for getaddrinfo and for Python's
//! `socket.gethostbyname`; with `enable-cache hosts yes`, gethostbyname is served one cached
//! backend, also after that backend is down: the reason for the package's note and the agent's
//! warning. glibc's nscd caches a hostent of one address whatever its TTL (nscd/hstcache.c
//! refuses only answers of several addresses; nscd/aicache.c does honour TTL 0), and unscd keeps
//! answers for its configured time. Needs root.

use lbfo_tests::{artefacts, debian_packages, describe, is_root};
use std::path::Path;
use std::process::Command;

fn run(which: &str) {
    if !is_root() {
        eprintln!("skipped: the namespaces and mounts need root");
        return;
    }
    let Some(_) = debian_packages(&[which]) else {
        eprintln!("skipped: no apt-get here (not Debian), so no {which} package to run");
        return;
    };
    let bin = artefacts();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("lbfo-{which}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let guarded = ["/etc/nsswitch.conf", "/etc/passwd", "/etc/group"];
    let before: Vec<_> = guarded.iter().map(|p| std::fs::read(p).ok()).collect();
    let out = Command::new("unshare")
        .args([
            "-m",
            "-n",
            "-i",
            "-p",
            "-f",
            "--mount-proc",
            "--propagation",
            "private",
        ])
        .arg("bash")
        .arg(here.join("scripts/nscd.sh"))
        .arg(which)
        .arg(&bin.agent)
        .arg(&bin.module)
        .arg(lbfo_tests::target_dir().join("debian-pkgs"))
        .arg(&bin.resolve)
        .arg(&scratch)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LBFO_TABLE")
        .output()
        .expect("run unshare");
    let after: Vec<_> = guarded.iter().map(|p| std::fs::read(p).ok()).collect();
    let _ = std::fs::remove_dir(&scratch);
    assert_eq!(before, after, "the machine's own files are untouched");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout.contains(&format!("{which}: all checks passed")),
        "{}",
        describe(&out)
    );
    let oks = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert_eq!(oks, 4, "{stdout}");
}

#[test]
fn glibc_nscd() {
    run("nscd");
}

#[test]
fn unscd() {
    run("unscd");
}
