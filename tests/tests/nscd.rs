//! lbfo with a real nscd and a real unscd running (Debian's packages, unpacked, never installed).
//!
//! `tests/scripts/nscd.sh` runs each daemon with its package's own /etc/nscd.conf in private
//! mount, network, IPC and PID namespaces with its own socket directory (see its header): with
//! `enable-cache hosts no`, roundrobin and failover hold for getaddrinfo and for Python's
//! `socket.gethostbyname`. With `enable-cache hosts yes`, glibc's nscd calls the module's
//! `_nss_lbfo_init`, after which every hostent answer lists its address twice; nscd's hosts cache
//! keeps only single-address answers (nscd/hstcache.c) and its getaddrinfo cache honours the
//! module's TTL 0 (nscd/aicache.c), so roundrobin and failover hold through it for Python's
//! gethostbyname, getent hosts and getaddrinfo, also when lbfo joins the hosts: line while nscd
//! runs; `status` and `check` warn only while it runs a module replaced on disk (an upgrade).
//! unscd caches every answer for its configured time: gethostbyname is served one cached
//! backend, also after that backend is down, and `status` and `check` warn, naming unscd. Needs
//! root.

use lbfo_tests::{artefacts, debian_packages, describe, is_root};
use std::path::Path;
use std::process::Command;

fn run(which: &str, checks: usize) {
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
    assert_eq!(oks, checks, "{stdout}");
}

#[test]
fn glibc_nscd() {
    run("nscd", 5);
}

#[test]
fn unscd() {
    run("unscd", 4);
}
