//! The dnsmasq export with a real dnsmasq: the agent writes a hosts file and signals dnsmasq, and
//! DNS clients of that dnsmasq see the change.
//!
//! dnsmasq runs in a private network namespace (only `lo`, brought up), on 127.0.0.1 and a high
//! port, reading nothing but the agent's hosts file; `lbfo-dig` queries it from inside the same
//! namespace. The agent runs outside the namespace (it needs no network): it finds dnsmasq through
//! the pid file. Everything started is killed by pid when the test ends, also when it fails; the
//! namespace goes away with its last process.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lbfo_tests::{describe, is_root, Host};

const PORT: &str = "5353";

/// A private network namespace, held open by a `sleep` whose pid names it.
struct Netns {
    holder: Child,
}

impl Netns {
    fn new() -> Netns {
        let mut cmd = Command::new("unshare");
        if !is_root() {
            cmd.arg("-r");
        }
        let holder = cmd
            .args(["-n", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare -n");
        let ns = Netns { holder };
        // Wait until the holder is in its own namespace, then bring lo up there.
        let mine = fs::read_link("/proc/self/ns/net").expect("own netns");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let theirs = fs::read_link(format!("/proc/{}/ns/net", ns.holder.id()));
            if theirs.is_ok_and(|t| t != mine) {
                break;
            }
            assert!(Instant::now() < deadline, "namespace holder never unshared");
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = ns
            .enter("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .expect("ip link");
        assert!(out.status.success(), "lo up: {}", describe(&out));
        ns
    }

    /// A command that runs `program` inside the namespace (nsenter execs it: same pid).
    fn enter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t").arg(self.holder.id().to_string());
        if !is_root() {
            c.args(["-U", "--preserve-credentials"]);
        }
        c.arg("-n").arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// dnsmasq in the namespace, serving `hosts` only.
struct Dnsmasq {
    child: Child,
    pid_file: PathBuf,
    log: PathBuf,
}

impl Dnsmasq {
    fn start(ns: &Netns, dir: &Path, hosts: &Path) -> Dnsmasq {
        let pid_file = dir.join("dnsmasq.pid");
        let log = dir.join("dnsmasq.log");
        let child = ns
            .enter("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={PORT}"),
                "--user=root",
                "--group=root",
            ])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("dnsmasq log"))
            .spawn()
            .expect("spawn dnsmasq (Debian: apt-get install dnsmasq-base)");
        let d = Dnsmasq {
            child,
            pid_file,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.pid_file.exists() {
            assert!(
                Instant::now() < deadline,
                "dnsmasq never wrote its pid file: {}",
                fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        d
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lbfo-dig`, built beside the test executables.
fn dig_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join("lbfo-dig")
}

/// The A (or AAAA) answers for `name`, as `(address, ttl)`, in dnsmasq's order.
fn query(ns: &Netns, name: &str, qtype: &str) -> Vec<(String, u32)> {
    let out = ns
        .enter(dig_bin())
        .args(["127.0.0.1", PORT, name, qtype])
        .output()
        .expect("run lbfo-dig");
    assert!(out.status.success(), "lbfo-dig {name}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (a, t) = l.split_once(' ')?;
            Some((a.to_owned(), t.parse().ok()?))
        })
        .collect()
}

fn addrs(answers: &[(String, u32)]) -> Vec<String> {
    let mut a: Vec<String> = answers.iter().map(|(a, _)| a.clone()).collect();
    a.sort();
    a
}

#[test]
fn dnsmasq_answers_live_backends_and_drops_a_downed_one_within_a_second() {
    let mut h = Host::new("");
    let hosts = h.dir.join("hosts.lbfo");
    fs::write(&hosts, "").unwrap();
    let ns = Netns::new();
    let dnsmasq = Dnsmasq::start(&ns, &h.dir, &hosts);
    h.write_config(&format!(
        "hosts-file {}\ndnsmasq-pid {}\n\
         policy web.lan roundrobin\nadd web.lan 10.0.0.1\nadd web.lan 10.0.0.2\nadd web.lan 10.0.0.3\nadd web.lan fd00::4\n\
         policy db.lan failover\nadd db.lan 10.0.1.1 prio=1\nadd db.lan 10.0.1.2 prio=2\n",
        hosts.display(),
        dnsmasq.pid_file.display()
    ));
    h.start();

    // The agent's first export reaches dnsmasq: every up backend, with TTL 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = query(&ns, "web.lan", "a");
    while got.len() != 3 {
        assert!(
            Instant::now() < deadline,
            "dnsmasq never answered the export: {got:?}\nagent log:\n{}\ndnsmasq log:\n{}",
            h.log(),
            fs::read_to_string(&dnsmasq.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
        got = query(&ns, "web.lan", "a");
    }
    assert_eq!(addrs(&got), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert!(got.iter().all(|(_, ttl)| *ttl == 0), "TTL 0: {got:?}");
    assert_eq!(addrs(&query(&ns, "web.lan", "aaaa")), ["fd00::4"]);
    assert_eq!(
        addrs(&query(&ns, "db.lan", "a")),
        ["10.0.1.1"],
        "failover exports its pick only"
    );

    // dnsmasq rotates the order of a name's addresses from one answer to the next.
    let firsts: std::collections::BTreeSet<String> = (0..6)
        .map(|_| query(&ns, "web.lan", "a")[0].0.clone())
        .collect();
    assert_eq!(
        firsts.len(),
        3,
        "every backend comes first in turn: {firsts:?}"
    );

    // `down` through the FIFO: within 1 s, queries no longer return it, and never again.
    let t0 = Instant::now();
    h.send("down web.lan 10.0.0.2\ndown db.lan 10.0.1.1\n");
    loop {
        let now = addrs(&query(&ns, "web.lan", "a"));
        if now == ["10.0.0.1", "10.0.0.3"] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "10.0.0.2 still answered after {:?}: {now:?}\nagent log:\n{}",
            t0.elapsed(),
            h.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = t0.elapsed();
    for _ in 0..5 {
        assert_eq!(addrs(&query(&ns, "web.lan", "a")), ["10.0.0.1", "10.0.0.3"]);
    }
    assert_eq!(
        addrs(&query(&ns, "db.lan", "a")),
        ["10.0.1.2"],
        "failover moved on"
    );
    eprintln!("down reached dnsmasq's answers in {took:?}");

    // A burst of commands is one write at the end of the interval, and the last one counts.
    let mut burst = String::new();
    for _ in 0..20 {
        burst += "down web.lan 10.0.0.1\nup web.lan 10.0.0.1\n";
    }
    burst += "up web.lan 10.0.0.2\ndel web.lan 10.0.0.3\n";
    h.send(&burst);
    // (Not the 1 s of `down` above, which the export promises: these only must happen, so they
    // get room for a loaded machine.)
    let deadline = Instant::now() + Duration::from_secs(3);
    while addrs(&query(&ns, "web.lan", "a")) != ["10.0.0.1", "10.0.0.2"] {
        assert!(
            Instant::now() < deadline,
            "burst's last state never exported"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Deleting the service removes the name: dnsmasq has no answer for it any more.
    h.send("del web.lan\n");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !query(&ns, "web.lan", "a").is_empty() {
        assert!(Instant::now() < deadline, "deleted service still answered");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !h.log().contains("export:"),
        "no export problem: {}",
        h.log()
    );
    let _ = h.stop();
}
