//! Lookups through real glibc: families, misses, fall-through, and damaged tables.

use lbfo_tests::{describe, Host};

const CONFIG: &str = "\
add web.lan 10.0.0.11
add web.lan fd00::11
add v4only.lan 10.0.0.21
add v6only.lan fd00::31
";

#[test]
fn hits_for_every_family_through_getaddrinfo_and_gethostbyname() {
    let mut h = Host::new(CONFIG);
    h.start();
    assert_eq!(h.resolve(&["gai4", "web.lan"]), "10.0.0.11");
    assert_eq!(h.resolve(&["gai6", "web.lan"]), "fd00::11");
    let unspec = h.resolve(&["gaiu", "web.lan"]);
    let mut got: Vec<&str> = unspec.split(' ').collect();
    got.sort();
    assert_eq!(
        got,
        ["10.0.0.11", "fd00::11"],
        "AF_UNSPEC returns one address of each family"
    );
    assert_eq!(
        h.resolve(&["ghbn", "WEB.Lan."]),
        "10.0.0.11",
        "case and trailing dot are ignored"
    );
    assert_eq!(h.resolve(&["ghbn2-6", "web.lan"]), "fd00::11");
    assert_eq!(h.resolve(&["gaiu", "v4only.lan"]), "10.0.0.21");
    assert_eq!(h.resolve(&["gaiu", "v6only.lan"]), "fd00::31");
}

#[test]
fn getent_in_a_private_namespace_answers_services_and_falls_through_for_misses() {
    let mut h = Host::new(CONFIG);
    h.start();
    let (code, out) = h.getent(&["ahostsv4", "web.lan"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().all(|l| l.starts_with("10.0.0.11 ")), "{out}");
    let (code, out) = h.getent(&["hosts", "web.lan"]);
    assert_eq!(
        (code, out.split_whitespace().next()),
        (0, Some("fd00::11")),
        "getent hosts asks AF_INET6 first"
    );
    let (code, out) = h.getent(&["ahosts", "v6only.lan"]);
    assert!(code == 0 && out.starts_with("fd00::31 "), "{out}");
    // A miss is answered by the next source: this host's /etc/hosts.
    let (code, out) = h.getent(&["hosts", "fromhosts.test"]);
    assert_eq!(
        (code, out.split_whitespace().next()),
        (0, Some("192.0.2.77"))
    );
    // A name in neither source is not found (exit 2), not an error.
    let (code, _) = h.getent(&["hosts", "nowhere.lan"]);
    assert_eq!(code, 2);
}

#[test]
fn without_a_table_every_name_falls_through() {
    let h = Host::new(CONFIG); // agent never started: no table
    assert!(!h.table().exists());
    let (code, out) = h.getent(&["hosts", "fromhosts.test"]);
    assert_eq!(
        (code, out.split_whitespace().next()),
        (0, Some("192.0.2.77"))
    );
    let (code, _) = h.getent(&["hosts", "web.lan"]);
    assert_eq!(code, 2);
    assert_eq!(h.resolve(&["gai4", "localhost"]), "127.0.0.1");
}

#[test]
fn the_last_table_keeps_answering_when_the_agent_is_gone() {
    let mut h = Host::new(CONFIG);
    h.start();
    let st = h.stop().expect("agent was running");
    assert!(st.success(), "SIGTERM is a clean exit: {st}");
    assert_eq!(h.resolve(&["gai4", "web.lan"]), "10.0.0.11");
    h.start();
    h.kill9();
    assert_eq!(h.resolve(&["gai4", "web.lan"]), "10.0.0.11");
}

/// Deterministic noise for damaging tables.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = lbfo_tests::TestRng::new(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

#[test]
fn damaged_tables_fall_through_and_never_crash() {
    let mut h = Host::new(CONFIG);
    h.start();
    h.kill9();
    let good = std::fs::read(h.table()).unwrap();
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![1]),
        ("truncated to half", good[..good.len() / 2].to_vec()),
        ("header only", good[..128].to_vec()),
        ("random bytes", noise(7, good.len())),
        ("bad magic", {
            let mut g = good.clone();
            g[0] ^= 0xff;
            g
        }),
        ("capacities lie", {
            let mut g = good.clone();
            g[16..24].copy_from_slice(&u64::MAX.to_ne_bytes());
            g
        }),
        ("index and records scrambled", {
            let mut g = good.clone();
            let n = noise(9, good.len() - 128);
            g[128..].copy_from_slice(&n);
            g
        }),
    ];
    for (what, bytes) in damaged {
        let path = h.dir.join("damaged");
        std::fs::write(&path, &bytes).unwrap();
        for mode in ["gai4", "gai6", "gaiu", "ghbn"] {
            let out = h
                .command(&h.bin.resolve)
                .env("LBFO_TABLE", &path)
                .args(["--nss", "lbfo files", mode, "localhost"])
                .output()
                .unwrap();
            assert!(
                out.status.code().is_some(),
                "{what}: {mode} crashed: {}",
                describe(&out)
            );
            let out = h
                .command(&h.bin.resolve)
                .env("LBFO_TABLE", &path)
                .args(["--nss", "lbfo files", mode, "web.lan"])
                .output()
                .unwrap();
            assert!(
                out.status.code() == Some(0),
                "{what}: {mode} web.lan crashed: {}",
                describe(&out)
            );
            let answer = String::from_utf8_lossy(&out.stdout);
            assert!(
                answer.starts_with("error:")
                    || answer.trim() == "10.0.0.11"
                    || answer.contains("fd00::11"),
                "{what}: a damaged table must fall through, not answer garbage: {answer}"
            );
        }
        let (code, out) = h.getent_with_table(&path, &["hosts", "fromhosts.test"]);
        assert_eq!(
            (code, out.split_whitespace().next()),
            (0, Some("192.0.2.77")),
            "{what}"
        );
    }
}
