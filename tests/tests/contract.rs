//! The glibc NSS contract of libnss_lbfo.so.2: exports, buffer sizes, concurrency.

use lbfo_tests::{artefacts, describe, Host};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn exports_exactly_the_four_entry_points_and_the_nscd_hook() {
    let a = artefacts();
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&a.module)
        .output()
        .expect("nm");
    assert!(out.status.success(), "{}", describe(&out));
    let mut funcs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[1] != "A").then(|| f[2].split('@').next().unwrap_or("").to_string())
        })
        .collect();
    funcs.sort();
    assert_eq!(
        funcs,
        [
            "_nss_lbfo_gethostbyname2_r",
            "_nss_lbfo_gethostbyname3_r",
            "_nss_lbfo_gethostbyname4_r",
            "_nss_lbfo_gethostbyname_r",
            "_nss_lbfo_init"
        ]
    );
    let out = Command::new("readelf")
        .args(["-d"])
        .arg(&a.module)
        .output()
        .expect("readelf");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[libnss_lbfo.so.2]"),
        "soname"
    );
}

#[test]
fn buffer_sweep_from_one_byte_hits_erange_then_answers() {
    let mut h = Host::new("add sweep.lan 10.0.4.1\nadd sweep.lan fd00::41\n");
    h.start();
    let out = h.resolve(&["sweep", "sweep.lan", "600"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("first-ok ") && lines[0].ends_with(" 10.0.4.1"),
        "gethostbyname_r: {out}"
    );
    assert!(
        lines[1].ends_with(" 10.0.4.1"),
        "gethostbyname2_r AF_INET: {out}"
    );
    assert!(
        lines[2].ends_with(" fd00::41"),
        "gethostbyname2_r AF_INET6: {out}"
    );
    for l in &lines {
        let len: usize = l.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(len > 1, "small buffers must be refused with ERANGE: {l}");
    }
    // The module's own entry points, called directly: ERANGE + NETDB_INTERNAL below the exact
    // size, a caller-supplied first tuple filled in, *ttlp = 0, nothing written past the end.
    let module = h.bin.module.display().to_string();
    let out = h.resolve(&["module", &module, "sweep.lan", "400"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("4_r first-ok ") && lines[0].ends_with(" fd00::41 10.0.4.1"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("4_r+pat first-ok ") && lines[1].ends_with(" fd00::41 10.0.4.1"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("2_r first-ok ") && lines[2].ends_with(" 10.0.4.1"),
        "{out}"
    );
}

#[test]
fn eight_threads_resolving_while_the_agent_rewrites_the_table() {
    let mut h = Host::new(
        "add s.lan 10.1.0.1\nadd s.lan 10.1.0.2\nadd s.lan 10.1.0.3\nadd s.lan 10.1.0.4\n",
    );
    h.start();
    let stop = AtomicBool::new(false);
    let churn = [
        "down s.lan 10.1.0.1",
        "add s.lan 10.1.0.5 weight=3",
        "policy s.lan weighted",
        "up s.lan 10.1.0.1",
        "del s.lan 10.1.0.2",
        "policy s.lan leastused",
        "add s.lan 10.1.0.2",
        "del s.lan 10.1.0.5",
        "policy s.lan failover",
        "prio s.lan 10.1.0.3 0",
        "prio s.lan 10.1.0.3 5",
        "del s.lan",
        "add s.lan 10.1.0.1",
        "add s.lan 10.1.0.3",
        "add s.lan 10.1.0.4",
        "add s.lan 10.1.0.2",
        "policy s.lan roundrobin",
    ]
    .join("\n")
        + "\n";
    let writes = std::sync::atomic::AtomicU64::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(h.fifo())
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(churn.as_bytes()).unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        });
        let out = h
            .command(&h.bin.resolve)
            .args([
                "--nss",
                "lbfo files",
                "stress",
                "s.lan",
                "8",
                "5000",
                "10.1.0.1,10.1.0.2,10.1.0.3,10.1.0.4,10.1.0.5",
            ])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a foreign answer: {}", describe(&out));
    assert!(text.contains("total 40000 foreign 0"), "{text}");
    let unresolved: u64 = text.split_whitespace().last().unwrap().parse().unwrap();
    assert!(
        unresolved < 40000,
        "the service must resolve most of the time: {text}"
    );
    assert!(
        writes.into_inner() > 10,
        "the agent was being rewritten throughout"
    );
}
