//! The checker against real sockets and processes on this machine, driven by a loop like the
//! agent's (tick, poll, ready, reap).

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn spec(line: &str) -> Spec {
    match lbfo_core::parse_line(line) {
        Ok(Some(lbfo_core::Line::Setting(lbfo_core::Setting::Check(c)))) => Spec::new(&c),
        other => panic!("{line}: {other:?}"),
    }
}

const LOCAL: &str = "127.0.0.1";

/// A checker with one target per `(check line, address)`.
fn health(targets: &[(&str, &str)]) -> (Health, Instant) {
    let mut h = Health::new(1024, 0x4c62);
    let t: Vec<_> = targets
        .iter()
        .map(|(l, a)| (spec(l), a.parse().unwrap()))
        .collect();
    h.sync(&t, 0);
    (h, Instant::now())
}

fn us(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

/// Runs the checker as the loop does until `n` verdicts arrived (or 5 s).
fn run(h: &mut Health, t0: Instant, n: usize) -> Vec<Verdict> {
    drive(h, t0, 5000, |_, out| out.len() >= n)
}

/// Runs the checker as the loop does for `ms` milliseconds or until `stop` says so.
fn drive(
    h: &mut Health,
    t0: Instant,
    ms: u64,
    mut stop: impl FnMut(&Health, &Vec<Verdict>) -> bool,
) -> Vec<Verdict> {
    use nix::poll::{poll, PollFd, PollTimeout};
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut out = Vec::new();
    while !stop(h, &out) && Instant::now() < deadline {
        h.tick(us(t0), &mut out);
        let wait = (h.next_deadline().saturating_sub(us(t0)) / 1000).min(20);
        let entries = h.fds();
        let mut pfds: Vec<PollFd<'_>> = entries
            .iter()
            .map(|(fd, events, _)| PollFd::new(*fd, *events))
            .collect();
        let _ = poll(&mut pfds, PollTimeout::try_from(wait).unwrap());
        let ready: Vec<Token> = pfds
            .iter()
            .zip(&entries)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, (_, _, t))| *t)
            .collect();
        drop(pfds);
        drop(entries);
        h.ready(&ready, us(t0), &mut out);
        // The agent reaps on SIGCHLD; asking every turn finds the same.
        h.reap(us(t0), &mut out);
    }
    out
}

/// The one target's state as `status` would read it.
fn row(h: &mut Health, t0: Instant) -> report::Row {
    h.dirty = true;
    h.next_report_us = 0;
    let text = h.report(us(t0), 1_000_000).unwrap();
    report::parse(&text).remove(0)
}

#[test]
fn a_listener_is_up_and_a_closed_port_goes_down() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let line = format!("check t.lan tcp {port} interval=10ms");
    let (mut h, t0) = health(&[(&line, LOCAL)]);
    let v = run(&mut h, t0, 1);
    assert_eq!(v.len(), 1);
    assert!(v[0].up, "{v:?}");
    assert_eq!(v[0].why, "2 tcp checks passed");
    drop(l);
    let v = run(&mut h, t0, 1);
    assert_eq!(v.len(), 1);
    assert!(!v[0].up, "{v:?}");
    assert_eq!(v[0].why, "2 tcp checks failed: connect: refused");
    let r = row(&mut h, t0);
    assert_eq!(
        (r.kind.as_str(), r.up, r.fails, r.last),
        ("tcp", Some(false), 2, Last::Fail)
    );
    assert!(r.rtt_us.is_some(), "the passes measured a round trip");
    assert_eq!(r.error.unwrap().1, "connect: refused");
    h.sync(&[], 0);
    assert_eq!(h.len(), 0);
    assert!(
        h.next_deadline() < u64::MAX,
        "the emptied state is still to be reported"
    );
    assert!(h.report(h.next_deadline(), 0).is_some());
    assert_eq!(h.next_deadline(), u64::MAX);
}

/// A small HTTP server on loopback: answers every request with `status` (0: accepts and says
/// nothing; 1: answers something that is not HTTP), and keeps the last request.
struct Server {
    port: u16,
    status: Arc<AtomicU16>,
    last: Arc<std::sync::Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(status: u16) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let s = Server {
            port: l.local_addr().unwrap().port(),
            status: Arc::new(AtomicU16::new(status)),
            last: Arc::default(),
            stop: Arc::default(),
        };
        let (status, last, stop) = (s.status.clone(), s.last.clone(), s.stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                *last.lock().unwrap() = String::from_utf8_lossy(&req).into_owned();
                match status.load(Ordering::Relaxed) {
                    0 => held.push(c),
                    1 => {
                        let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
                    }
                    n => {
                        // A body well past what is read before the verdict.
                        let body = "x".repeat(20_000);
                        let _ = write!(
                            c,
                            "HTTP/1.1 {n} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                }
            }
        });
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn http_checks_judge_the_status_line() {
    let s = Server::start(200);
    let line = format!(
        "check w.lan http {} interval=10ms timeout=300ms path=/health?deep=1 host=www.test expect=200-204",
        s.port
    );
    let (mut h, t0) = health(&[(&line, LOCAL)]);
    let v = run(&mut h, t0, 1);
    assert!(v.len() == 1 && v[0].up, "{v:?}");
    let req = s.last.lock().unwrap().clone();
    assert!(
        req.starts_with("GET /health?deep=1 HTTP/1.1\r\nHost: www.test\r\n"),
        "{req:?}"
    );
    s.status.store(503, Ordering::Relaxed);
    let v = run(&mut h, t0, 1);
    assert!(v.len() == 1 && !v[0].up, "{v:?}");
    assert_eq!(v[0].why, "2 http checks failed: http: status 503");
    // 302 is outside this check's expect=200-204.
    s.status.store(302, Ordering::Relaxed);
    drive(&mut h, t0, 200, |_, _| false);
    assert_eq!(row(&mut h, t0).error.unwrap().1, "http: status 302");
    s.status.store(204, Ordering::Relaxed);
    let v = run(&mut h, t0, 1);
    assert!(v.len() == 1 && v[0].up, "{v:?}");
    // Answers are drained and closed, not left open: nothing piles up.
    assert!(h.drains.len() <= 1, "{}", h.drains.len());
}

#[test]
fn http_answers_that_are_no_http_or_none_fail() {
    let quiet = Server::start(0);
    let ssh = Server::start(1);
    let l1 = format!(
        "check q.lan http {} interval=10ms timeout=100ms",
        quiet.port
    );
    let l2 = format!("check s.lan http {} interval=10ms timeout=100ms", ssh.port);
    let (mut h, t0) = health(&[(&l1, LOCAL), (&l2, LOCAL)]);
    let mut v = run(&mut h, t0, 2);
    v.sort_by_key(|v| v.service.as_str().to_owned());
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].why, "2 http checks failed: http: timeout");
    assert_eq!(v[1].why, "2 http checks failed: http: not an HTTP/1 answer");
    // Port 1 on loopback: nobody listens.
    let (mut h, t0) = health(&[("check r.lan http 1 interval=10ms", LOCAL)]);
    let v = run(&mut h, t0, 1);
    assert_eq!(v[0].why, "2 http checks failed: connect: refused");
}

/// An executable script in a fresh directory, which goes when this is dropped.
struct Script(std::path::PathBuf);

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn script(name: &str, body: &str) -> Script {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lbfo-exec-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    Script(p)
}

#[test]
fn exec_checks_pass_on_exit_0_with_their_environment() {
    let ok = script(
        "env.sh",
        "[ \"$LBFO_BACKEND\" = 127.0.0.1 ] && [ \"$LBFO_SERVICE\" = e.lan ] && [ \"$1\" = one ] \
         && [ \"$(readlink /proc/self/fd/0)\" = /dev/null ] && [ \"$(readlink /proc/$$/fd/1)\" = /dev/null ] \
         && [ \"$(readlink /proc/$$/fd/2)\" = /dev/null ] && [ \"$(ps -o pgid= $$)\" -eq $$ ]",
    );
    let line = format!(
        "check e.lan exec {} one interval=10ms timeout=2s",
        ok.0.display()
    );
    let (mut h, t0) = health(&[(&line, LOCAL)]);
    let v = run(&mut h, t0, 1);
    assert!(v.len() == 1 && v[0].up, "{v:?} {:?}", row(&mut h, t0));
    assert_eq!(v[0].why, "2 exec checks passed");
    let (mut h, t0) = health(&[("check f.lan exec /bin/sh -c exit interval=10ms", LOCAL)]);
    // `exit` with no status: the shell's last status, 0. Then a real failure.
    assert!(run(&mut h, t0, 1)[0].up);
    let (mut h, t0) = health(&[("check f.lan exec /bin/false interval=10ms", LOCAL)]);
    let v = run(&mut h, t0, 1);
    assert_eq!(v[0].why, "2 exec checks failed: exec: exit 1");
}

#[test]
fn exec_checks_are_killed_with_their_whole_group() {
    // Each run leaves a child behind and exits 0; every child must die with its check.
    let pids = std::env::temp_dir().join(format!("lbfo-exec-{}-bg.pids", std::process::id()));
    let _ = std::fs::remove_file(&pids);
    let left = script(
        "left.sh",
        &format!("sleep 30 & echo $! >> {}", pids.display()),
    );
    let hang = script("hang.sh", "sleep 30");
    let l1 = format!(
        "check a.lan exec {} interval=50ms timeout=2s",
        left.0.display()
    );
    let l2 = format!(
        "check b.lan exec {} interval=50ms timeout=100ms",
        hang.0.display()
    );
    let (mut h, t0) = health(&[(&l1, LOCAL), (&l2, "127.0.0.2")]);
    let mut v = run(&mut h, t0, 2);
    v.sort_by_key(|v| v.service.as_str().to_owned());
    assert!(v[0].up, "{v:?}");
    assert_eq!(v[1].why, "2 exec checks failed: exec: timeout");
    // Checks removed: what runs is killed; everything is reaped.
    h.sync(&[], us(t0));
    drive(&mut h, t0, 2000, |h, _| h.zombies.is_empty());
    assert!(h.zombies.is_empty(), "{:?}", h.zombies);
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.split(' ').nth(2) == Some("Z"))
    };
    let all: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(all.len() >= 2, "{all:?}");
    let t = Instant::now();
    while !all.iter().all(|&p| gone(p)) && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive: Vec<_> = all.iter().filter(|&&p| !gone(p)).collect();
    assert!(
        alive.is_empty(),
        "children that outlived their check: {alive:?}"
    );
    let _ = std::fs::remove_file(&pids);
}

#[test]
fn a_program_that_cannot_start_is_unknown_not_down() {
    let (mut h, t0) = health(&[("check u.lan exec /nonexistent/check interval=10ms", LOCAL)]);
    let v = drive(&mut h, t0, 300, |_, v| !v.is_empty());
    assert!(v.is_empty(), "{v:?}");
    let r = row(&mut h, t0);
    assert_eq!(
        (r.up, r.passes, r.fails, r.last),
        (None, 0, 0, Last::Unknown)
    );
    assert_eq!(r.error.unwrap().1, "unknown: no such file or directory");
    let log = h.take_log();
    assert_eq!(log.len(), 1, "logged once, not per check: {log:?}");
    assert_eq!(
        log[0],
        "check: u.lan 127.0.0.1: unknown: no such file or directory; keeping its last verdict (none yet)"
    );
}

#[test]
fn local_failures_keep_the_verdict_and_the_counts() {
    let mut t = Target::new(
        spec("check x.lan tcp 1 fall=2 rise=2"),
        LOCAL.parse().unwrap(),
        0,
    );
    let key: Key = ("x.lan".to_owned(), LOCAL.parse().unwrap());
    let (mut out, mut log) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        record(&key, &mut t, Ok(100), 1, &mut out, &mut log);
    }
    assert_eq!((t.up, out.len()), (Some(true), 1));
    record(
        &key,
        &mut t,
        Err(Fault::Connect(Errno::ECONNREFUSED)),
        2,
        &mut out,
        &mut log,
    );
    for e in [
        Errno::EMFILE,
        Errno::ENFILE,
        Errno::ENOBUFS,
        Errno::EADDRNOTAVAIL,
    ] {
        for _ in 0..5 {
            record(&key, &mut t, Err(Fault::Connect(e)), 3, &mut out, &mut log);
        }
    }
    assert_eq!(
        (t.up, t.fails, out.len(), t.last),
        (Some(true), 1, 1, Last::Unknown)
    );
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0],
        "check: x.lan 127.0.0.1: unknown: too many open files; keeping its last verdict (up)"
    );
    record(
        &key,
        &mut t,
        Err(Fault::Connect(Errno::ECONNREFUSED)),
        4,
        &mut out,
        &mut log,
    );
    assert_eq!(
        (t.up, out.len()),
        (Some(false), 2),
        "the real failures in a row count"
    );
    assert_eq!(
        log[1],
        "check: x.lan 127.0.0.1: checking again after 20 unknown results"
    );
    assert_eq!(
        Fault::Local(Errno::EMFILE).text(),
        "unknown: too many open files"
    );
    assert!(!is_local(Errno::ECONNREFUSED) && !is_local(Errno::EHOSTUNREACH));
    assert!(!is_local(Errno::ETIMEDOUT) && !is_local(Errno::ECONNRESET));
}

#[test]
fn probes_in_flight_are_capped() {
    let quiet = Server::start(0);
    // fd limit 4: at most 2 sockets at once.
    let mut h = Health::new(4, 1);
    let targets: Vec<_> = (1..=5)
        .map(|i| {
            let line = format!(
                "check c{i}.lan http {} interval=10ms timeout=100ms",
                quiet.port
            );
            (spec(&line), LOCAL.parse().unwrap())
        })
        .collect();
    h.sync(&targets, 0);
    let t0 = Instant::now();
    let mut most = 0;
    let out = drive(&mut h, t0, 5000, |h, out| {
        most = most.max(h.fds().len());
        out.len() >= 5
    });
    assert_eq!(most, 2);
    assert_eq!(out.len(), 5, "every target gets its turn: {out:?}");
    assert!(h.take_log()[0].contains("the most at once"));
}

#[test]
fn check_programs_running_are_capped() {
    let slow = script("slow.sh", "sleep 0.1");
    let n = MAX_PROCESSES + 4;
    let targets: Vec<_> = (1..=n)
        .map(|i| {
            let line = format!(
                "check p{i}.lan exec {} interval=10ms timeout=2s",
                slow.0.display()
            );
            (spec(&line), LOCAL.parse().unwrap())
        })
        .collect();
    let mut h = Health::new(1024, 1);
    h.sync(&targets, 0);
    let t0 = Instant::now();
    let mut most = 0;
    let out = drive(&mut h, t0, 10_000, |h, out| {
        most = most.max(h.in_use().1);
        out.len() >= n
    });
    assert_eq!(most, MAX_PROCESSES);
    assert_eq!(out.len(), n, "every target gets its turn: {out:?}");
    assert!(out.iter().all(|v| v.up), "{out:?}");
    let log = h.take_log();
    assert!(
        log[0].contains(&format!(
            "{MAX_PROCESSES} programs in flight, the most at once"
        )),
        "{log:?}"
    );
    h.sync(&[], us(t0));
    drive(&mut h, t0, 2000, |h, _| h.zombies.is_empty());
}

#[test]
fn icmp_echoes_to_loopback() {
    let (mut h, t0) = health(&[
        ("check p.lan icmp interval=10ms", LOCAL),
        ("check p.lan icmp interval=10ms", "::1"),
    ]);
    if !nix::unistd::geteuid().is_root() {
        // A raw socket needs root: unknown, never down.
        let v = drive(&mut h, t0, 300, |_, v| !v.is_empty());
        assert!(v.is_empty());
        assert!(row(&mut h, t0).error.unwrap().1.starts_with("unknown: "));
        return;
    }
    let v = run(&mut h, t0, 2);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(
        v.iter().all(|v| v.up && v.why == "2 icmp checks passed"),
        "{v:?}"
    );
    let r = row(&mut h, t0);
    assert!(r.srtt_us.is_some() && r.last == Last::Pass, "{r:?}");
    // Every raw socket sees every reply: each pinger takes only those with its identifier.
    let (mut a, mut b) = (icmp::Pinger::new(7), icmp::Pinger::new(8));
    let lo = LOCAL.parse().unwrap();
    let (sa, sb) = (a.send(lo).unwrap(), b.send(lo).unwrap());
    b.send(lo).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.replies(false), vec![(lo, sa)]);
    assert_eq!(b.replies(false), vec![(lo, sb), (lo, sb + 1)]);
}

#[test]
fn the_smoothed_round_trip_time_moves_a_quarter_of_the_way() {
    let mut t = Target::new(spec("check s.lan tcp 1"), LOCAL.parse().unwrap(), 0);
    let mut seen = Vec::new();
    for rtt in [1000, 2000, 0, 0] {
        t.sample(rtt);
        seen.push((t.rtt_us.unwrap(), t.srtt_us.unwrap()));
    }
    // The first sample is taken whole; then one slow or fast check moves it only part way.
    assert_eq!(seen, [(1000, 1000), (2000, 1250), (0, 938), (0, 704)]);
}
