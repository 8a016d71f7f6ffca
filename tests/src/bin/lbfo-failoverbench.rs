//! `lbfo-failoverbench`: health-check figures on a real multi-host bed (run by
//! `scripts/bench-failover.sh`; needs root). Prints figures; asserts nothing about time.
//!
//! - failover: 4 hosts, each checking `fo.lan`'s two backends (TCP listeners on hosts 1 and 2);
//!   from killing the primary's listener until the last host's table answers the secondary
//!   (`lbfo-resolve wait` on each host's table, polling every 1 ms), p50 and max over TRIALS;
//! - CPU: one agent checking 100 backends (loopback addresses, one listener), its user+system
//!   time from /proc/PID/stat over 10 s.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lbfo_tests::bed::Bed;
use lbfo_tests::Host;

const CHECK: &str = "interval=50ms timeout=100ms fall=2 rise=2";

fn tool(name: &str) -> std::path::PathBuf {
    std::env::current_exe().unwrap().with_file_name(name)
}

fn listen(bed: &Bed, i: usize, port: u16) -> Child {
    use std::io::BufRead;
    let mut c = bed
        .exec(i, tool("lbfo-listen"))
        .arg(format!("{}:{port}", bed.v4(i)))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    c
}

fn waiter(h: &Host, want: &str) -> Child {
    h.command(&h.bin.resolve)
        .args(["--nss", "lbfo", "wait", "fo.lan", want, "10000"])
        .spawn()
        .unwrap()
}

/// Waits for every child; returns when the last one exited, measured from `t0`.
fn last_exit(mut children: Vec<Child>, t0: Instant) -> Duration {
    let mut last = Duration::ZERO;
    while !children.is_empty() {
        children.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                assert!(st.success(), "a host never answered");
                last = t0.elapsed();
                false
            }
            _ => true,
        });
        std::thread::sleep(Duration::from_micros(500));
    }
    last
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn main() {
    assert!(Bed::available(), "needs root and iproute2");
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let bed = Bed::new(4);
    let conf = format!(
        "group 239.77.0.9:7946\niface eth0\ninsecure\npolicy fo.lan failover\n\
         add fo.lan 10.77.0.1 prio=1\nadd fo.lan 10.77.0.2 prio=2\ncheck fo.lan tcp 8080 {CHECK}\n"
    );
    let mut hosts: Vec<Host> = (1..=4)
        .map(|i| {
            let mut h = bed.agent_host(i, &format!("node h{i}\n{conf}"));
            h.start();
            h
        })
        .collect();
    let mut l2 = listen(&bed, 2, 8080);
    let mut l1 = listen(&bed, 1, 8080);
    let mut times = Vec::new();
    for _ in 0..trials {
        let up: Vec<Child> = hosts.iter().map(|h| waiter(h, "10.77.0.1")).collect();
        last_exit(up, Instant::now());
        std::thread::sleep(Duration::from_millis(300));
        let waiters: Vec<Child> = hosts.iter().map(|h| waiter(h, "10.77.0.2")).collect();
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let _ = l1.kill();
        let _ = l1.wait();
        times.push(last_exit(waiters, t0));
        l1 = listen(&bed, 1, 8080);
    }
    for l in [&mut l1, &mut l2] {
        let _ = l.kill();
        let _ = l.wait();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "failover ({CHECK}; 4 hosts all checking; {trials} trials): p50 {:.0} ms, max {:.0} ms",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    for h in &mut hosts {
        h.stop();
    }
    drop(hosts);
    drop(bed);

    // CPU with 100 checked backends: 10 services of 10 loopback backends (past the default
    // capacity's 8 a service), one listener.
    let mut conf = String::from("capacity 64 16\n");
    for s in 0..10 {
        for b in 1..=10 {
            conf += &format!("add c{s}.lan 127.0.{}.{b}\n", s + 1);
        }
        conf += &format!("check c{s}.lan tcp 18080 interval=100ms timeout=200ms fall=2 rise=2\n");
    }
    let mut l = Command::new(tool("lbfo-listen"))
        .arg("0.0.0.0:18080")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut h = Host::new(&conf);
    h.start();
    std::thread::sleep(Duration::from_secs(1));
    let pid = h.agent_pid().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    let a = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(10));
    let b = cpu_ticks(pid);
    println!(
        "cpu (100 backends checked every 100 ms = 1000 connects/s): {:.1}% of one core over 10 s",
        (b - a) as f64 / hz / 10.0 * 100.0
    );
    h.stop();
    let _ = l.kill();
    let _ = l.wait();
    // Dropping the host removes its directory and its counters segment (found through the table
    // in that directory, so the directory must not go first).
    drop(h);
}
