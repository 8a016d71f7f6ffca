//! Soak: the agent under a FIFO flood from several concurrent writers, mixed valid and invalid
//! lines, while it must keep its other duties (the heartbeat, usage-limit removals).
//!
//! The CI size is 10^5 lines from 4 writers; `LBFO_SOAK_LINES=N` floods N lines instead (for
//! example 10^6).
//!
//! Checks: every valid line is applied (the final weights in `status --json` are exactly those a
//! sequential replay predicts, and lookups answer from the flooded services); every invalid line
//! is reported in the log (counted); the agent's anonymous memory stays flat; the heartbeat never
//! gets older than 1.5 s while the flood runs; a usage limit reached during the flood removes its
//! backend.
//!
//! The datagram flood (root: a bed of network namespaces) puts the same kind of FIFO flood into
//! one agent of a three-agent cluster and into its two peers (whose every command reaches it as a
//! valid signed datagram), while a fourth host runs an agent with the wrong key and a fifth sends
//! random bytes of every length and replays of captured datagrams to its port and to the group.
//! Checks: every valid line and datagram applied (the final weights, and no datagram of a peer
//! refused), every bad datagram counted under its reason in `status --json` (exactly, less what
//! the kernel itself dropped from the full socket buffer, which `/proc/net/udp` shows), memory
//! flat across a second, measured round, the heartbeat fresh and a FIFO command applied within a
//! bound while it all runs. `LBFO_SOAK_DATAGRAM_LINES=N` sets the FIFO lines (default 20,000).

use lbfo_tests::bed::Bed;
use lbfo_tests::{describe, Host};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WRITERS: u32 = 4;
/// Services per writer, each with 16 backends: 4 × 200 × 16 = 12,800 backends in the table.
const SERVICES: u32 = 200;
const BACKENDS: u32 = 16;

/// Line `i` of writer `k`, and its effect if valid. Every fifth line is invalid, rotating over
/// four kinds of error (parse and apply); the valid ones set the weights of the writer's backends
/// round after round, so the final weights tell whether every line was applied in order.
fn line(k: u32, i: u32, valid_before: u32) -> (String, Option<(String, String, u32)>) {
    if i % 5 == 4 {
        let bad = match (i / 5) % 4 {
            0 => format!("add w{k}-0.lan 10.{k}.0.300"),
            1 => format!("frobnicate w{k}-0.lan"),
            2 => format!("down nosuch{k}-{i}.lan 10.0.0.1"),
            _ => format!("weight w{k}-0.lan 10.{k}.0.1 heavy"),
        };
        return (bad, None);
    }
    let n = valid_before;
    let per = SERVICES * BACKENDS;
    let (svc, be) = ((n % per) / BACKENDS, n % BACKENDS);
    let (name, addr) = backend(k, svc, be);
    let w = (n / per + 1) % 9 + 1;
    (format!("weight {name} {addr} {w}"), Some((name, addr, w)))
}

fn backend(k: u32, svc: u32, be: u32) -> (String, String) {
    (
        format!("w{k}-{svc}.lan"),
        format!("10.{k}.{}.{}", svc / 4, (svc % 4) * 16 + be + 1),
    )
}

/// The config body: every writer's services and backends (12,800 `add` lines), so the flood
/// changes the table's contents but not its size and memory can be compared before and after.
fn config() -> String {
    // Room for every writer's services, and the probes and markers the tests add.
    let mut c = format!(
        "capacity {} {BACKENDS}\nadd lim.lan 10.9.0.1 limit=200\nadd lim.lan 10.9.0.2\n",
        WRITERS * SERVICES + 200
    );
    for k in 0..WRITERS {
        for svc in 0..SERVICES {
            for be in 0..BACKENDS {
                let (name, addr) = backend(k, svc, be);
                c += &format!("add {name} {addr}\n");
            }
        }
    }
    c
}

/// The final weight of each (service, address).
type Weights = BTreeMap<(String, String), u32>;

/// One writer's lines in PIPE_BUF-sized writes that end on a line boundary (each lands whole);
/// returns (valid lines, invalid lines, expected final weight per (service, addr)).
fn script(k: u32, lines: u32) -> (Vec<Vec<u8>>, u64, u64, Weights) {
    let (mut chunks, mut cur) = (Vec::new(), Vec::new());
    let (mut valid, mut invalid) = (0u64, 0u64);
    let mut want = BTreeMap::new();
    for i in 0..lines {
        let (text, effect) = line(k, i, valid as u32);
        match effect {
            Some((s, a, w)) => {
                valid += 1;
                want.insert((s, a), w);
            }
            None => invalid += 1,
        }
        if cur.len() + text.len() + 1 > libc::PIPE_BUF {
            chunks.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(text.as_bytes());
        cur.push(b'\n');
    }
    chunks.push(cur);
    (chunks, valid, invalid, want)
}

/// One writer: blocking writes of at most PIPE_BUF bytes, so each lands whole.
fn pour(fifo: &std::path::Path, chunks: &[Vec<u8>]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    for c in chunks {
        f.write_all(c).unwrap();
    }
}

/// The agent's memory from /proc: (VmRSS, RssAnon) in KiB.
fn memory(pid: i32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("RssAnon:"))
}

/// Every (service, address) in `want` is in `status --json` output with exactly that weight.
fn assert_weights(status: &str, want: &Weights) {
    for ((svc, addr), w) in want {
        let at = status
            .find(&format!("\"name\":\"{svc}\""))
            .unwrap_or_else(|| panic!("{svc} missing"));
        let rest = &status[at..];
        let end = rest.find("]}").unwrap_or(rest.len());
        let be = rest[..end]
            .find(&format!("\"addr\":\"{addr}\""))
            .unwrap_or_else(|| panic!("{svc} {addr} missing"));
        assert_eq!(
            json_u64(&rest[be..end], "weight"),
            Some(u64::from(*w)),
            "{svc} {addr}"
        );
    }
}

fn json_u64(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    json[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn fifo_flood_from_concurrent_writers_applies_every_valid_line_and_reports_every_bad_one() {
    let total: u32 = std::env::var("LBFO_SOAK_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let per_writer = total / WRITERS;
    let mut h = Host::new(&config());
    h.start();
    let pid = h.agent_pid().unwrap();
    // Warm up with the same flood, so the allocator's high-water mark for the busiest wake-up
    // (1 MiB of lines read, parsed and logged) is behind us; then a marker to count from. Memory
    // must then stay flat through the measured flood: what the agent holds is bounded by its
    // capacities and its per-wake-up read cap, not by the number of lines.
    let warm: Vec<_> = (0..WRITERS).map(|k| script(k, per_writer)).collect();
    std::thread::scope(|s| {
        for (chunks, ..) in &warm {
            s.spawn(|| pour(&h.fifo(), chunks));
        }
    });
    h.send("add warm.lan 127.0.2.1\n");
    h.wait_answer("warm.lan", "127.0.2.1");
    h.wait_for("the marker in the log", || h.log().contains("add warm.lan"));
    let before = memory(pid);

    let scripts: Vec<_> = (0..WRITERS).map(|k| script(k, per_writer)).collect();
    let valid: u64 = scripts.iter().map(|s| s.1).sum();
    let invalid: u64 = scripts.iter().map(|s| s.2).sum();
    let writing = AtomicBool::new(true);
    let max_age = AtomicU64::new(0);
    let samples = AtomicU64::new(0);
    let started = Instant::now();
    let (flood_time, limit_during_flood) = std::thread::scope(|s| {
        let flood: Vec<_> = scripts
            .iter()
            .map(|(chunks, ..)| {
                let fifo = h.fifo();
                s.spawn(move || pour(&fifo, chunks))
            })
            .collect();
        // The heartbeat, sampled throughout.
        let sampler = s.spawn(|| {
            while writing.load(Ordering::Relaxed) {
                if let Some(age) = json_u64(&h.status_json(), "heartbeat_age_ms") {
                    max_age.fetch_max(age, Ordering::Relaxed);
                    samples.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        // Lookups that push lim.lan's first backend past its limit while the flood runs.
        h.resolve(&["gai4", "lim.lan", "600"]);
        h.wait_for("the usage-limit removal", || {
            h.log().contains("limit reached: lim.lan 10.9.0.1")
        });
        let during = flood.iter().any(|t| !t.is_finished());
        for t in flood {
            t.join().unwrap();
        }
        // Applied when the sentinel, written after every writer finished, answers.
        h.send("add sentinel.lan 127.0.2.9\n");
        h.wait_answer("sentinel.lan", "127.0.2.9");
        let took = started.elapsed();
        writing.store(false, Ordering::Relaxed);
        sampler.join().unwrap();
        (took, during)
    });
    let after = memory(pid);

    // Every invalid line reported, every valid one logged as applied. The agent writes its log
    // after publishing the table, so wait for the sentinel's line.
    h.wait_for("the sentinel in the log", || {
        h.log().contains("add sentinel.lan 127.0.2.9")
    });
    let full = h.log();
    // From just after the marker's line.
    let log = &full[full.find("add warm.lan").unwrap()..];
    let log = &log[log.find('\n').unwrap_or(log.len())..];
    let reported = log
        .lines()
        .filter(|l| l.contains("fifo: line ") && l.contains(": column "))
        .count() as u64;
    assert_eq!(reported, invalid, "every invalid line reported");
    let applied = log.lines().filter(|l| l.contains("fifo: line ")).count() as u64 - reported;
    assert_eq!(
        applied,
        valid + 1,
        "every valid line (and the sentinel) applied"
    );

    // The final table is what a replay predicts: every backend there, with its last weight.
    let status = h.status_json();
    let mut want = Weights::new();
    for s in &scripts {
        want.extend(s.3.iter().map(|(k, v)| (k.clone(), *v)));
    }
    assert_weights(&status, &want);
    // And lookups answer from the flooded services.
    let counts = h.tally("gai4", "w3-0.lan", 400);
    assert_eq!(
        counts.len(),
        16,
        "w3-0.lan answers all 16 backends: {counts:?}"
    );
    assert!(h
        .resolve(&["gai4", "lim.lan", "3"])
        .lines()
        .all(|a| a == "10.9.0.2"));

    let max_age = max_age.into_inner();
    let grow = after.1.saturating_sub(before.1);
    eprintln!(
        "soak: {total} lines ({valid} valid, {invalid} invalid) from {WRITERS} writers in {:.2} s; \
         heartbeat max age {max_age} ms over {} samples; limit removal during the flood: \
         {limit_during_flood}; VmRSS {} -> {} KiB, RssAnon {} -> {} KiB",
        flood_time.as_secs_f64(),
        samples.load(Ordering::Relaxed),
        before.0,
        after.0,
        before.1,
        after.1
    );
    // On time: `status` never reports the agent as down (its threshold is 3 s) while the agent
    // drains a flood on a 2-core machine that may be busy with other work.
    assert!(
        max_age < 3000,
        "heartbeat stale during the flood: {max_age} ms"
    );
    // The table is a fixed-size mapping and the agent's own state is bounded by its capacities:
    // the heap may settle a little, but a flood must not make it grow with the line count.
    assert!(grow < 1024, "anonymous memory grew {grow} KiB");
}

const GROUP: &str = "239.77.0.9:7946";

/// The tools built beside the test executables.
fn tool(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

fn keygen(dir: &Path, name: &str, agent: &Path) -> PathBuf {
    let key = dir.join(name);
    let out = std::process::Command::new(agent)
        .arg("keygen")
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    key
}

/// The drop counters of `status --json`: (source, reason) -> count.
fn drops(json: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    let Some(list) = json.split("\"drops\":[").nth(1) else {
        return out;
    };
    let list = list.split(']').next().unwrap_or("");
    for item in list.split("},{") {
        let field = |k: &str| {
            item.split(&format!("\"{k}\":"))
                .nth(1)
                .map(|v| v.split([',', '}']).next().unwrap_or("").trim_matches('"'))
                .unwrap_or("")
                .to_owned()
        };
        if let Ok(n) = field("count").parse() {
            out.insert((field("addr"), field("reason")), n);
        }
    }
    out
}

/// One FIFO line written with a blocking open (the FIFO may be full while the flood runs).
fn fifo_line(fifo: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// What `lbfo-udp random` says the receiver must refuse, by reason.
fn refusals(out: &str) -> BTreeMap<String, u64> {
    let w: Vec<&str> = out.split_whitespace().collect();
    w.windows(2)
        .filter(|p| ["truncated", "oversized", "version", "bad_mac"].contains(&p[0]))
        .map(|p| (p[0].to_owned(), p[1].parse().unwrap_or(0)))
        .collect()
}

#[test]
fn datagram_flood_on_the_agents_port_while_fifo_commands_flow() {
    if !Bed::available() {
        eprintln!("skipped: the datagram flood needs root and iproute2 (a bed of namespaces)");
        return;
    }
    let lines: u32 = std::env::var("LBFO_SOAK_DATAGRAM_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let bed = Bed::new(5);
    let agent_bin = lbfo_tests::artefacts().agent;
    let keydir = std::env::temp_dir().join(format!("lbfo-soak-keys-{}", std::process::id()));
    std::fs::create_dir_all(&keydir).unwrap();
    let key = keygen(&keydir, "key", &agent_bin);
    let wrong = keygen(&keydir, "wrong", &agent_bin);
    let body = |i: usize, key: &Path, rest: &str| {
        format!(
            "group {GROUP}\niface eth0\nnode h{i}\nkey {}\n{rest}",
            key.display()
        )
    };
    // Hosts 1-3: the cluster (host 1 is measured); 4: the wrong key; 5: the hostile sender.
    let conf = config();
    let mut hosts: Vec<Host> = (1..=3)
        .map(|i| bed.agent_host(i, &body(i, &key, &conf)))
        .collect();
    let mut evil = bed.agent_host(4, &body(4, &wrong, "add evil.lan 6.6.6.6\n"));
    for h in hosts.iter_mut() {
        h.start();
    }
    evil.start();
    let digest = |h: &Host| {
        let j = h.status_json();
        let at = j.find("\"digest\":\"").map_or(j.len(), |a| a + 10);
        j[at..].split('"').next().unwrap_or("").to_owned()
    };
    let converge = |hosts: &[Host], what: &str| {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let d: Vec<String> = hosts.iter().map(digest).collect();
            if d.iter().all(|x| *x == d[0]) {
                return;
            }
            if Instant::now() > end {
                for h in hosts {
                    let j = h.status_json();
                    let c = j.find("\"cluster\"").unwrap_or(0);
                    eprintln!("{}", &j[c..]);
                }
                panic!("{what}: no convergence: {d:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    converge(&hosts, "start");
    let pid = hosts[0].agent_pid().unwrap();
    let (h4, h5) = (bed.v4(4), bed.v4(5));
    let direct = format!("{}:7946", bed.v4(1));

    let mut want = Weights::new();
    let (mut valid, mut invalid, mut probes) = (0u64, 0u64, 0u64);
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut before = (0, 0);
    let mut figures = String::new();
    for round in 0..2u32 {
        let per_writer = lines / 4;
        // Captured before the flood: datagrams of host 2 (commands, digests), replayed during it.
        let capture = keydir.join(format!("capture{round}"));
        let mut spy = bed
            .exec(5, tool("lbfo-udp"))
            .args(["capture", GROUP, &h5])
            .arg(&capture)
            .args(["1200", &bed.v4(2)])
            .spawn()
            .unwrap();
        let ready = capture.with_extension("ready");
        hosts[1].wait_for("the capture to join", || ready.exists());
        for j in 1..=10 {
            fifo_line(
                &hosts[1].fifo(),
                &format!("weight lim.lan 10.9.0.2 {}\n", round * 10 + j),
            );
        }
        assert!(spy.wait().unwrap().success());
        let _ = std::fs::remove_file(&ready);
        converge(&hosts, "after the capture");

        let scripts: Vec<_> = (0..WRITERS).map(|k| script(k, per_writer)).collect();
        let flooding = AtomicBool::new(true);
        let (max_age, max_probe) = (AtomicU64::new(0), AtomicU64::new(0));
        let probed = AtomicU64::new(0);
        let started = Instant::now();
        let outs: Vec<String> = std::thread::scope(|s| {
            // FIFO writers 0 and 1 into host 1, 2 and 3 into its peers: the peers' commands
            // reach host 1 as valid signed datagrams.
            let fifo: Vec<_> = scripts
                .iter()
                .enumerate()
                .map(|(k, (chunks, ..))| {
                    let path = hosts[[0, 0, 1, 2][k]].fifo();
                    s.spawn(move || pour(&path, chunks))
                })
                .collect();
            let evil_fifo = evil.fifo();
            let wrong_key = s.spawn(move || {
                for n in 0..200 {
                    fifo_line(
                        &evil_fifo,
                        &format!("weight evil.lan 6.6.6.6 {}\n", n % 9 + 1),
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            // Random bytes to host 1 and to the group, and the replay, from host 5.
            let hostile: Vec<_> = [
                &direct,
                &direct.clone(),
                &GROUP.to_owned(),
                &GROUP.to_owned(),
            ]
            .into_iter()
            .enumerate()
            .map(|(n, dest)| {
                let mut c = bed.exec(5, tool("lbfo-udp"));
                let seed = (round * 10 + n as u32 + 1).to_string();
                c.args(["random", dest, &h5, "1500", &seed, "1000"]);
                s.spawn(move || c.output().unwrap())
            })
            .collect();
            let mut replay = bed.exec(5, tool("lbfo-udp"));
            replay.args(["replay", &direct, &h5]).arg(&capture);
            let replay = s.spawn(move || replay.output().unwrap());
            // The heartbeat, sampled throughout; a FIFO command's latency, every 300 ms.
            let sampler = s.spawn(|| {
                while flooding.load(Ordering::Relaxed) {
                    if let Some(age) = json_u64(&hosts[0].status_json(), "heartbeat_age_ms") {
                        max_age.fetch_max(age, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            let prober = s.spawn(|| {
                let mut n = 0;
                while flooding.load(Ordering::Relaxed) {
                    n += 1;
                    let t = Instant::now();
                    let name = format!("probe{round}-{n}.lan");
                    fifo_line(&hosts[0].fifo(), &format!("add {name} 127.0.3.1\n"));
                    hosts[0].wait_answer(&name, "127.0.3.1");
                    max_probe.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    probed.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
            for t in fifo {
                t.join().unwrap();
            }
            wrong_key.join().unwrap();
            let mut outs = Vec::new();
            for t in hostile.into_iter().chain([replay]) {
                let out = t.join().unwrap();
                assert!(out.status.success(), "{}", describe(&out));
                outs.push(String::from_utf8_lossy(&out.stdout).to_string());
            }
            flooding.store(false, Ordering::Relaxed);
            sampler.join().unwrap();
            prober.join().unwrap();
            outs
        });
        let took = started.elapsed();
        let sent_before: u64 = sent.values().sum();
        // Applied everywhere: a sentinel through host 1, then the three tables agree.
        fifo_line(
            &hosts[0].fifo(),
            &format!("add sentinel{round}.lan 127.0.2.9\n"),
        );
        hosts[0].wait_answer(&format!("sentinel{round}.lan"), "127.0.2.9");
        converge(&hosts, "after the flood");

        for (.., w) in &scripts {
            want.extend(w.iter().map(|(k, x)| (k.clone(), *x)));
        }
        valid += scripts[..2].iter().map(|s| s.1).sum::<u64>();
        invalid += scripts[..2].iter().map(|s| s.2).sum::<u64>();
        probes += probed.load(Ordering::Relaxed) + 1;
        for out in &outs {
            for (why, n) in refusals(out) {
                *sent.entry(why).or_default() += n;
            }
            if let Some(n) = out.strip_prefix("replayed ") {
                *sent.entry("replay".into()).or_default() += n.trim().parse::<u64>().unwrap();
            }
        }
        let (max_age, max_probe) = (max_age.into_inner(), max_probe.into_inner());
        let mem = memory(pid);
        figures += &format!(
            "round {round}: {} FIFO lines, {} datagrams from host 5, in {:.2} s; heartbeat max age \
             {max_age} ms; FIFO command applied within {max_probe} ms ({} probes); VmRSS {} KiB, \
             RssAnon {} KiB\n",
            per_writer * WRITERS,
            sent.values().sum::<u64>() - sent_before,
            took.as_secs_f64(),
            probed.load(Ordering::Relaxed),
            mem.0,
            mem.1
        );
        // On time while flooded: `status` never calls the agent down (3 s), and a FIFO command
        // queued behind the flood is applied within a few seconds on a busy 2-core machine.
        assert!(
            max_age < 3000,
            "heartbeat stale during the flood: {max_age} ms"
        );
        assert!(max_probe < 5000, "a FIFO command took {max_probe} ms");
        if round == 0 {
            // The warm-up round: what the agent allocates for its busiest wake-ups is now held.
            before = mem;
        }
    }
    let after = memory(pid);

    // Every valid line and datagram applied: host 1 holds the final weight of every backend,
    // the ones its peers' FIFOs changed included, and the capture rounds' last weight.
    let status = hosts[0].status_json();
    want.insert(("lim.lan".into(), "10.9.0.2".into()), 20);
    assert_weights(&status, &want);
    assert!(
        !status.contains("evil.lan"),
        "the wrong key changed the table"
    );
    // Every line of host 1's FIFO accounted for in its log.
    let log = hosts[0].log();
    let reported = log
        .lines()
        .filter(|l| l.contains("fifo: line ") && l.contains(": column "))
        .count() as u64;
    let applied = log.lines().filter(|l| l.contains("fifo: line ")).count() as u64 - reported;
    assert_eq!(reported, invalid, "every invalid FIFO line reported");
    // Valid lines, the probes and the sentinels.
    assert_eq!(applied, valid + probes, "every valid FIFO line applied");

    // Every bad datagram counted under its reason; none of a peer's refused but the first ones
    // of its boot, before it answered host 1's challenge.
    let counted = drops(&status);
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for ((addr, why), n) in &counted {
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |a| a.0);
        if why == "unverified" && host != h5 {
            assert!(*n <= 5, "{n} datagrams of {addr} unverified");
            continue;
        }
        assert!(
            host == h4 || host == h5,
            "a datagram from {addr} refused ({why})"
        );
        if host == h5 {
            *by_reason.entry(why.clone()).or_default() += n;
        }
    }
    let wrong_key = counted
        .iter()
        .filter(|((a, w), _)| a.starts_with(&format!("{h4}:")) && w == "bad_mac")
        .map(|(_, n)| n)
        .sum::<u64>();
    assert!(
        wrong_key > 0,
        "the wrong-key agent's datagrams counted: {counted:?}"
    );
    let lost = bed.kernel_drops(1);
    for (why, n) in &sent {
        let got = by_reason.get(why).copied().unwrap_or(0);
        assert!(got <= *n, "{why}: counted {got} of {n} sent");
    }
    assert_eq!(
        by_reason.keys().filter(|w| !sent.contains_key(*w)).count(),
        0,
        "reasons nothing was sent for: {by_reason:?}"
    );
    let (total_sent, total_counted) = (sent.values().sum::<u64>(), by_reason.values().sum::<u64>());
    assert!(
        total_sent - total_counted <= lost,
        "{} bad datagrams neither counted nor dropped by the kernel ({lost}): sent {sent:?}, counted {by_reason:?}",
        total_sent - total_counted
    );

    let grow = (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    );
    eprintln!(
        "soak datagrams: {figures}bad datagrams sent {sent:?}, counted {by_reason:?}, kernel \
         drops {lost}; wrong-key datagrams counted {wrong_key}; VmRSS grew {} KiB, RssAnon {} KiB",
        grow.0, grow.1
    );
    // Flat: the second round, the same flood again, leaves memory where the first left it (the
    // allocator keeps the high-water mark of the busiest wake-ups; a leak would grow with it).
    assert!(grow.0 < 1024, "VmRSS grew {} KiB", grow.0);
    assert!(grow.1 < 1024, "anonymous memory grew {} KiB", grow.1);
    drop(evil);
    drop(hosts);
    let _ = std::fs::remove_dir_all(keydir);
}
