//! lbfo first on the distributions' hosts: lines, through real glibc, the real NSS modules
//! (Debian's libnss-resolve, libnss-mdns, libnss-myhostname, libnss-mymachines) and a real
//! systemd-resolved, all downloaded and unpacked, never installed.
//!
//! `tests/scripts/real-modules.sh` runs in private mount, network and PID namespaces (see its
//! header). It first shows resolved answering (a DNS name, an /etc/hosts name, NOTFOUND for a
//! name DNS does not know) and every module on a line loaded from the unpacked packages, then
//! that lbfo where the old rule put it on systemd's line is never asked, then roundrobin
//! (getaddrinfo and gethostbyname) and failover holding with lbfo first on each line while other
//! names still reach resolve, dns and files. This test checks that the machine's own files are
//! the same afterwards. Needs root.

use lbfo_tests::{artefacts, debian_packages, describe, is_root, target_dir};
use std::path::Path;
use std::process::Command;

const GUARDED: &[&str] = &[
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/passwd",
    "/etc/group",
];

#[test]
fn lbfo_first_under_systemd_resolved_and_the_real_modules() {
    if !is_root() {
        eprintln!("skipped: the namespaces and mounts need root");
        return;
    }
    let Some(_) = debian_packages(&[
        "systemd-resolved",
        "libsystemd-shared",
        "libnss-resolve",
        "libnss-mdns",
        "libnss-myhostname",
        "libnss-mymachines",
    ]) else {
        eprintln!("skipped: no apt-get here (not Debian), so no Debian packages to run");
        return;
    };
    let bin = artefacts();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = std::env::temp_dir().join(format!("lbfo-resolvers-{}", std::process::id()));
    let libdir = scratch.with_extension("lib");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    std::fs::create_dir_all(&libdir).expect("lib dir");
    let _ = std::os::unix::fs::symlink(&bin.module, libdir.join("libnss_lbfo.so.2"));

    let before: Vec<_> = GUARDED.iter().map(|p| std::fs::read(p).ok()).collect();
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
        .arg(here.join("scripts/real-modules.sh"))
        .arg(&bin.agent)
        .arg(&libdir)
        .arg(target_dir().join("debian-pkgs"))
        .arg(here.join("../packaging/deb/nsswitch.awk"))
        .arg(&bin.resolve)
        .arg(&scratch)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LBFO_TABLE")
        .output()
        .expect("run unshare");
    let after: Vec<_> = GUARDED.iter().map(|p| std::fs::read(p).ok()).collect();
    let _ = std::fs::remove_dir(&scratch);
    let _ = std::fs::remove_dir_all(&libdir);
    for (path, (a, b)) in GUARDED.iter().zip(before.iter().zip(&after)) {
        assert!(a == b, "{path} changed on the machine itself");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout.contains("real-modules: all checks passed"),
        "{}",
        describe(&out)
    );
    // Every check ran, so a shortened script cannot pass.
    let oks = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    assert_eq!(oks, 10, "{stdout}");
}
