//! Health checks end to end: real agents in a bed of network namespaces, real servers (Debian's
//! python3 http.server), real programs, real ICMP. Each kind takes a failing backend out of
//! every host's answers and puts it back; checks that cannot run for the agent's own reasons
//! (its fds exhausted with `prlimit`) take no backend out anywhere.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lbfo_tests::bed::Bed;
use lbfo_tests::web::Web;
use lbfo_tests::{describe, Host};

const GROUP: &str = "239.77.0.9:7946";

/// Agents on bed hosts `which`, one cluster (no key: a test bed), each with `conf`.
fn agents(bed: &Bed, which: &[usize], conf: &str) -> Vec<Host> {
    which
        .iter()
        .map(|&i| {
            let body = format!("group {GROUP}\niface eth0\nnode h{i}\ninsecure\n{conf}");
            let mut h = bed.agent_host(i, &body);
            h.start();
            h
        })
        .collect()
}

/// A directory for the test's files, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lbfo-checks-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// An executable shell script in the directory.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.0.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every host answers `name` with `addr`.
fn everywhere(hosts: &[Host], name: &str, addr: &str) {
    for h in hosts {
        h.wait_answer(name, addr);
    }
}

#[test]
fn each_check_kind_takes_a_failing_backend_out_everywhere_and_puts_it_back() {
    if !Bed::available() {
        eprintln!("skipped: the multi-host bed needs root and iproute2");
        return;
    }
    let bed = Bed::new(4);
    let dir = Dir::new("kinds");
    let exec = dir.script(
        "up.sh",
        &format!("[ ! -e {}/down-$LBFO_BACKEND ]", dir.0.display()),
    );
    let (a, b) = (bed.v4(3), bed.v4(4));
    let mut conf = String::new();
    for (svc, check) in [
        (
            "http.lan",
            "http 8080 path=/health expect=200-299".to_owned(),
        ),
        ("tcp.lan", "tcp 8080".to_owned()),
        ("icmp.lan", "icmp".to_owned()),
        ("exec.lan", format!("exec {} --quiet", exec.display())),
    ] {
        conf += &format!(
            "policy {svc} failover\nadd {svc} {a} prio=1\nadd {svc} {b} prio=2\n\
             check {svc} {check} interval=50ms timeout=300ms fall=2 rise=2\n"
        );
    }
    let web3 = Web::start(&bed, 3, &a, 8080, "three");
    let _web4 = Web::start(&bed, 4, &b, 8080, "four");
    let hosts = agents(&bed, &[1, 2], &conf);
    for svc in ["http.lan", "tcp.lan", "icmp.lan", "exec.lan"] {
        everywhere(&hosts, svc, &a);
    }
    // http: a 503 fails the check (the port still accepts: tcp stays).
    web3.set(503, 0);
    everywhere(&hosts, "http.lan", &b);
    assert_eq!(hosts[0].resolve(&["gai4", "tcp.lan"]), a);
    let log = hosts[0].log() + &hosts[1].log();
    assert!(log.contains("checks failed: http: status 503"), "{log}");
    hosts[1].wait_for("host 2's own verdict in its status", || {
        let j = hosts[1].status_json();
        j.contains("\"check\":{\"kind\":\"http\",\"verdict\":\"down\"")
            && j.contains("\"error\":\"http: status 503\"")
    });
    web3.set(200, 0);
    everywhere(&hosts, "http.lan", &a);
    // exec: the program exits 1 for the backend in its environment.
    std::fs::write(dir.0.join(format!("down-{a}")), "").unwrap();
    everywhere(&hosts, "exec.lan", &b);
    hosts[0].wait_for("exit 1 in status", || {
        hosts[0]
            .status_json()
            .contains("\"error\":\"exec: exit 1\"")
    });
    std::fs::remove_file(dir.0.join(format!("down-{a}"))).unwrap();
    everywhere(&hosts, "exec.lan", &a);
    // tcp: nothing listens any more.
    drop(web3);
    everywhere(&hosts, "tcp.lan", &b);
    hosts[1].wait_for("refused in status", || {
        hosts[1]
            .status_json()
            .contains("\"error\":\"connect: refused\"")
    });
    let _web3 = Web::start(&bed, 3, &a, 8080, "three");
    everywhere(&hosts, "tcp.lan", &a);
    // icmp: the host is cut off.
    bed.cut(3, true);
    everywhere(&hosts, "icmp.lan", &b);
    hosts[0].wait_for("an icmp timeout in status", || {
        hosts[0]
            .status_json()
            .contains("\"error\":\"icmp: timeout\"")
    });
    bed.cut(3, false);
    for svc in ["http.lan", "tcp.lan", "icmp.lan", "exec.lan"] {
        everywhere(&hosts, svc, &a);
    }
    let text = || {
        let out = Command::new(&hosts[0].bin.agent)
            .args(["status", "-c"])
            .arg(hosts[0].config())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    hosts[0].wait_for("host 1's own icmp verdict in status", || {
        let t = text();
        t.contains("  CHECK  ADDRESS    VERDICT") && t.contains("  icmp   10.77.0.3  up for ")
    });
}

/// The open-files limits of process `pid` (soft, hard), from /proc.
fn fd_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let w: Vec<&str> = line.split_whitespace().collect();
    (w[3].to_owned(), w[4].to_owned())
}

/// Sets the soft open-files limit of process `pid` (the hard one stays: raising it back needs
/// CAP_SYS_RESOURCE, which a test may not have).
fn prlimit(pid: i32, n: u64) {
    let out = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:"))
        .output()
        .expect("run prlimit");
    assert!(out.status.success(), "prlimit: {}", describe(&out));
}

#[test]
fn the_agent_raises_its_soft_fd_limit_to_the_hard_one() {
    let mut h = Host::new("add web.lan 10.0.0.1\n");
    h.wrap = vec!["prlimit".into(), "--nofile=64:4096".into()];
    h.start();
    let pid = h.agent_pid().unwrap();
    assert_eq!(fd_limits(pid), ("4096".into(), "4096".into()));
    assert!(
        h.log()
            .contains("open files: soft limit raised from 64 to 4096"),
        "{}",
        h.log()
    );
}

#[test]
fn checks_that_cannot_run_for_local_reasons_take_no_backend_down_anywhere() {
    if !Bed::available() {
        eprintln!("skipped: the multi-host bed needs root and iproute2");
        return;
    }
    let bed = Bed::new(4);
    let (c, d) = (bed.v4(3), bed.v4(4));
    let conf = format!(
        "add web.lan {c}\nadd web.lan {d}\ncheck web.lan http 8080 interval=50ms timeout=500ms\n\
         add tc.lan {d}\ncheck tc.lan tcp 8080 interval=50ms timeout=500ms\n\
         add ex.lan {d}\ncheck ex.lan exec /bin/true interval=50ms timeout=500ms\n"
    );
    let _web3 = Web::start(&bed, 3, &c, 8080, "three");
    let web4 = Web::start(&bed, 4, &d, 8080, "four");
    let hosts = agents(&bed, &[1, 2, 3], &conf);
    let h1 = &hosts[0];
    h1.wait_for("every check on host 1 to pass", || {
        h1.status_json().matches("\"verdict\":\"up\"").count() == 4
    });
    // Exhaust host 1's agent's fds: the limit just above its spare fds (its last /dev/null), so
    // every new socket, pipe or file fails with EMFILE.
    let pid = h1.agent_pid().unwrap();
    let spare = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "/dev/null"))
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    prlimit(pid, spare + 1);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        for (i, h) in hosts.iter().enumerate() {
            let j = h.status_json();
            assert!(
                !j.contains("\"state\":\"down\""),
                "host {}: a backend went down:\n{j}\nthe logs:\n{}",
                i + 1,
                hosts.iter().map(Host::log).collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Sockets could not be made. (A check may still run now and then: an fd number the agent
    // freed below the limit, or the child of posix_spawn, which closes its fd 0 before it opens
    // /dev/null there. Either way nothing went down.)
    let log = h1.log();
    let unknown = |svc: &str| {
        format!("check: {svc} {d}: unknown: too many open files; keeping its last verdict (up)")
    };
    assert!(
        ["web.lan", "tc.lan"]
            .iter()
            .any(|s| log.contains(&unknown(s))),
        "{log}"
    );
    // status (written with the spare fds) says what happened.
    h1.wait_for("unknown in status", || {
        h1.status_json()
            .contains("\"error\":\"unknown: too many open files\"")
    });
    prlimit(pid, 1024);
    h1.wait_for("the checks to run again", || {
        h1.log().contains(" checking again after ")
    });
    // The checks are real: a backend that does fail still goes down everywhere.
    drop(web4);
    let down = format!("\"addr\":\"{d}\",\"state\":\"down\"");
    for h in &hosts {
        h.wait_for("tc.lan down", || h.status_json().contains(&down));
    }
}

#[test]
fn fastest_picks_by_this_hosts_round_trip_times_and_follows_them() {
    if !Bed::available() {
        eprintln!("skipped: the multi-host bed needs root and iproute2");
        return;
    }
    let bed = Bed::new(4);
    let webs: Vec<Web> = (2..=4)
        .map(|i| Web::start(&bed, i, &bed.v4(i), 8080, &format!("h{i}")))
        .collect();
    // Host 4 answers 60 ms late: out of the set; hosts 2 and 3 tie and take turns.
    webs[2].set(200, 60);
    let conf =
        "policy f.lan fastest\nadd f.lan 10.77.0.2\nadd f.lan 10.77.0.3\nadd f.lan 10.77.0.4\n\
                check f.lan http 8080 interval=50ms timeout=1s\n";
    let hosts = agents(&bed, &[1], conf);
    let h = &hosts[0];
    let answers = |h: &Host| {
        let mut got: Vec<String> = h
            .tally("gai4", "f.lan", 30)
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        got.sort();
        got
    };
    h.wait_for("the fastest set of hosts 2 and 3", || {
        answers(h) == ["10.77.0.2", "10.77.0.3"]
    });
    let j = h.status_json();
    assert!(
        j.contains("\"addr\":\"10.77.0.4\",\"state\":\"up\"") && j.contains("\"picks_as\":null"),
        "{j}"
    );
    // Host 2 slows down, host 4 speeds up: the set follows.
    webs[0].set(200, 60);
    webs[2].set(200, 0);
    h.wait_for("the set to follow the times", || {
        answers(h) == ["10.77.0.3", "10.77.0.4"]
    });
    assert!(h.log().contains("fastest: f.lan: "), "{}", h.log());
    // Down beats fast: host 3 gone, host 4 alone.
    drop(webs);
    let _w4 = Web::start(&bed, 4, &bed.v4(4), 8080, "h4");
    h.wait_for("host 4 alone", || answers(h) == ["10.77.0.4"]);
}
