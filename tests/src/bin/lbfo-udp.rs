//! `lbfo-udp`: a hostile or nosy host on the cluster's network, for the end-to-end tests.
//!
//! ```text
//! lbfo-udp capture GROUP:PORT LOCAL_V4 FILE MS [FROM]   join the group, record every datagram
//!                                                      (from FROM only) for MS ms
//! lbfo-udp replay  ADDR:PORT LOCAL_V4 FILE [MS]        send the recorded datagrams again, in order
//!                                                      (and count what comes back for MS ms)
//! lbfo-udp random  ADDR:PORT LOCAL_V4 N SEED [GAP_US]  send N datagrams of random bytes and
//!                                                      lengths, GAP_US microseconds apart
//! lbfo-udp forge   GROUP:PORT LOCAL_V4 KEY AHEAD_MS LINE [NAME]   a key holder: join the group
//!                                                      as node NAME ("forger") and send LINE's
//!                                                      entries stamped AHEAD_MS after the clock
//! lbfo-udp keyholder GROUP:PORT LOCAL_V4 KEY MS FILE TARGET:PORT SPOOF_V4
//!                                                      a key holder that takes no entry in (so
//!                                                      its digests always differ): node "spy" at
//!                                                      LOCAL_V4 for MS ms, recording in FILE
//!                                                      the unicast datagrams for it and from it;
//!                                                      halfway, its
//!                                                      digest goes to TARGET from SPOOF_V4
//! lbfo-udp pulse   GROUP:PORT LOCAL_V4 N GAP_MS        send N datagrams, GAP_MS apart, each
//!                                                      carrying its send time (CLOCK_MONOTONIC µs)
//! lbfo-udp stamps  GROUP:PORT LOCAL_V4 FILE MS         join the group for MS ms and write to FILE
//!                                                      each `pulse` datagram's transit time (µs)
//! ```
//! `pulse` and `stamps` are the cluster benchmark's baseline: a bare datagram to the group and
//! processes that do nothing but wake up and read it, the floor under the agents' propagation.
//! Records are a 2-byte little-endian length and the bytes. `capture` creates FILE.ready once it
//! has joined, so a test can wait for it instead of sleeping. `random` prints how many of what it
//! sent a receiver must refuse for which reason, in the order `wire::open` checks (`sent N
//! truncated T oversized O version V bad_mac B`), so a test can hold the receiver's drop counters
//! to it. `replay` with MS and `keyholder` print the bytes they sent from an address and the
//! bytes that came back to it (`sent B bytes, received R bytes`). IPv4 only (the tests' replay
//! and garbage cases run on the IPv4 group).
use lbfo_tests::TestRng;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use lbfo_agentd::cluster::wire::{MAX_DATAGRAM, MIN_DATAGRAM, VERSION};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| usage());
    let addr: SocketAddr = arg(1).parse().unwrap_or_else(|_| usage());
    let local: Ipv4Addr = arg(2).parse().unwrap_or_else(|_| usage());
    match arg(0).as_str() {
        "capture" => {
            let ms: u64 = arg(4).parse().unwrap_or_else(|_| usage());
            let from: Option<std::net::IpAddr> = args.get(5).map(|a| a.parse().expect("FROM"));
            capture(addr, local, &arg(3), Duration::from_millis(ms), from);
        }
        "pulse" => {
            let s = sender(local);
            let n: u32 = arg(3).parse().unwrap_or_else(|_| usage());
            let gap: u64 = arg(4).parse().unwrap_or_else(|_| usage());
            for _ in 0..n {
                s.send_to(&mono_us().to_le_bytes(), addr).expect("send");
                std::thread::sleep(Duration::from_millis(gap));
            }
        }
        "stamps" => {
            let ms: u64 = arg(4).parse().unwrap_or_else(|_| usage());
            stamps(addr, local, &arg(3), Duration::from_millis(ms));
        }
        "replay" => {
            let listen = args.get(4).map(|ms| ms.parse().expect("MS"));
            replay(addr, local, &arg(3), listen.map(Duration::from_millis));
        }
        "keyholder" => {
            let key = lbfo_agentd::control::keyfile::read(std::path::Path::new(&arg(3)))
                .unwrap_or_else(|e| panic!("key: {e}"));
            let ms: u64 = arg(4).parse().unwrap_or_else(|_| usage());
            let target: SocketAddr = arg(6).parse().unwrap_or_else(|_| usage());
            let spoof: Ipv4Addr = arg(7).parse().unwrap_or_else(|_| usage());
            keyholder(addr, local, key, ms, &arg(5), (target, spoof));
        }
        "random" => {
            let s = sender(local);
            let n: u32 = arg(3).parse().unwrap_or_else(|_| usage());
            let mut rng = TestRng::new(arg(4).parse::<u64>().unwrap_or_else(|_| usage()));
            let mut next = move || rng.next();
            let gap = Duration::from_micros(args.get(5).map_or(0, |g| g.parse().expect("GAP_US")));
            // What the receiver must make of each: its length, version byte and MAC checks.
            let (mut truncated, mut oversized, mut version, mut bad_mac) = (0, 0, 0, 0);
            for i in 0..n {
                let len = (next() % 1400) as usize;
                let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Some start with the right version byte, to reach the MAC check.
                if i % 2 == 0 && !d.is_empty() {
                    d[0] = VERSION;
                }
                match d.len() {
                    l if l > MAX_DATAGRAM => oversized += 1,
                    l if l < MIN_DATAGRAM => truncated += 1,
                    _ if d[0] != VERSION => version += 1,
                    _ => bad_mac += 1,
                }
                s.send_to(&d, addr).expect("send");
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
            }
            println!(
                "sent {n} truncated {truncated} oversized {oversized} version {version} bad_mac {bad_mac}"
            );
        }
        "forge" => {
            let key = lbfo_agentd::control::keyfile::read(std::path::Path::new(&arg(3)))
                .unwrap_or_else(|e| panic!("key: {e}"));
            let ahead: u64 = arg(4).parse().unwrap_or_else(|_| usage());
            let name = args.get(6).map_or("forger", String::as_str);
            forge(addr, local, key, ahead, &arg(5), name);
        }
        _ => usage(),
    }
}

fn wall_ms() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    t.map_or(0, |d| d.as_millis() as u64)
}

/// A key holder with a wrong (or lying) clock: the agent's own cluster code as node `name`,
/// heard by the group for a second, then sending `line`'s entries stamped `ahead` ms after now
/// (sent now), then answering for another second.
fn forge(group: SocketAddr, local: Ipv4Addr, key: Vec<u8>, ahead: u64, line: &str, name: &str) {
    use lbfo_agentd::cluster::{wire::Key, Cluster, Dest};
    let Ok(Some(lbfo_core::Line::Command(cmd))) = lbfo_core::parse_line(line) else {
        panic!("not a command: {line}")
    };
    let s = UdpSocket::bind((local, 0)).expect("bind");
    s.set_multicast_ttl_v4(1).expect("ttl");
    s.set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let t0 = Instant::now();
    let mut random = [0u8; 32];
    lbfo_agentd::sys::random(&mut random).expect("random bytes");
    let mut node = Cluster::new(name, Key::new(key), random, wall_ms(), 0, false);
    node.hello(None, wall_ms());
    let (mut buf, mut forged) = ([0u8; 2048], false);
    while t0.elapsed() < Duration::from_secs(2) {
        let mono = t0.elapsed().as_millis() as u64;
        node.tick(mono, wall_ms());
        if !forged && mono >= 1000 {
            let es = node
                .replica
                .command(&cmd, wall_ms() + ahead)
                .expect("the command applies to the forger's own table");
            node.send_entries(Dest::All, &es, wall_ms());
            println!("forged {} entries stamped {ahead} ms ahead", es.len());
            forged = true;
        }
        for (dest, d) in node.take_outbox() {
            let to = match dest {
                Dest::All => group,
                Dest::To(a) => a,
            };
            let _ = s.send_to(&d, to);
        }
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            node.datagram(&buf[..n], from, mono, wall_ms());
        }
    }
}

/// Records the group's datagrams (from `from` only, if given) in `file` for `wait`.
fn capture(
    group: SocketAddr,
    local: Ipv4Addr,
    file: &str,
    wait: Duration,
    from: Option<std::net::IpAddr>,
) {
    let s = member(group, local, Duration::from_millis(20), file);
    let mut out = std::fs::File::create(file).expect("create");
    let end = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, src)) = s.recv_from(&mut buf) {
            if from.is_none_or(|f| f == src.ip()) {
                record(&mut out, &buf[..n]);
            }
        }
    }
}

/// A socket on `group`'s port, joined to it on `local`'s interface, whose reads give up after
/// `timeout`; then `FILE.ready` is made, for the test waiting on it.
fn member(group: SocketAddr, local: Ipv4Addr, timeout: Duration, file: &str) -> UdpSocket {
    let SocketAddr::V4(g) = group else { usage() };
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, g.port())).expect("bind");
    s.join_multicast_v4(g.ip(), &local).expect("join");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    std::fs::write(format!("{file}.ready"), "").expect("ready file");
    s
}

/// CLOCK_MONOTONIC in microseconds: the same clock in every network namespace.
fn mono_us() -> u64 {
    lbfo_agentd::sys::clock_us(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// Joins `group` for `wait`, blocking in `recv` as an agent blocks in `poll`, and writes each
/// 8-byte `pulse` datagram's transit time (µs) to `file`, a line each, at the end.
fn stamps(group: SocketAddr, local: Ipv4Addr, file: &str, wait: Duration) {
    let s = member(group, local, Duration::from_millis(100), file);
    let end = Instant::now() + wait;
    let mut buf = [0u8; 64];
    let mut lines = String::new();
    while Instant::now() < end {
        if let Ok((8, _)) = s.recv_from(&mut buf) {
            let now = mono_us();
            let mut sent = [0u8; 8];
            sent.copy_from_slice(&buf[..8]);
            let took = now.saturating_sub(u64::from_le_bytes(sent));
            lines += &format!("{took}\n");
        }
    }
    std::fs::write(file, lines).expect("write stamps");
}

/// Sends the datagrams recorded in `file` to `to` from `local`, in order; with `listen`, counts
/// the bytes that come back within it.
fn replay(to: SocketAddr, local: Ipv4Addr, file: &str, listen: Option<Duration>) {
    let s = sender(local);
    let data = std::fs::read(file).expect("read");
    let mut rest = &data[..];
    let (mut n, mut bytes) = (0, 0);
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let Some(d) = rest.get(2..2 + len) else { break };
        s.send_to(d, to).expect("send");
        rest = &rest[2 + len..];
        n += 1;
        bytes += len;
    }
    println!("replayed {n}");
    if let Some(wait) = listen {
        let back = received(&s, wait);
        println!("sent {bytes} bytes, received {back} bytes");
    }
}

/// Bytes that reach `s` within `wait`.
fn received(s: &UdpSocket, wait: Duration) -> usize {
    s.set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let (end, mut buf, mut bytes) = (Instant::now() + wait, [0u8; 2048], 0);
    while Instant::now() < end {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            bytes += n;
        }
    }
    bytes
}

/// Appends one record to `out`.
fn record(out: &mut std::fs::File, d: &[u8]) {
    out.write_all(&(d.len() as u16).to_le_bytes())
        .expect("write");
    out.write_all(d).expect("write");
}

/// A key holder that never takes entries in (its digest always differs, so every node it is
/// believed by answers it with repairs): node "spy", at `local`, for `ms`.
/// Every unicast datagram for it or from it (its digest replies) goes to `file`; halfway its next
/// digest goes to `spoof.0` from another address, `spoof.1`, where what comes back is counted.
fn keyholder(
    group: SocketAddr,
    local: Ipv4Addr,
    key: Vec<u8>,
    ms: u64,
    file: &str,
    spoof: (SocketAddr, Ipv4Addr),
) {
    use lbfo_agentd::cluster::wire::{self, Body, Key};
    use lbfo_agentd::cluster::{Cluster, Dest};
    // Its datagrams to the group leave from `local` (the route to the group is by that
    // address); the cluster answers it there.
    let s = sender(local);
    s.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let other = sender(spoof.1);
    other.set_nonblocking(true).expect("non-blocking");
    let key = Key::new(key);
    let mut random = [0u8; 32];
    lbfo_agentd::sys::random(&mut random).expect("random bytes");
    let mut node = Cluster::new("spy", key.clone(), random, wall_ms(), 0, false);
    let me = lbfo_agentd::cluster::replica::node_id("spy");
    let mut out = std::fs::File::create(file).expect("create");
    let (t0, mut buf, mut spoofed) = (Instant::now(), [0u8; 2048], None);
    let (mut recorded, mut back) = (0, 0);
    node.hello(None, wall_ms());
    while t0.elapsed() < Duration::from_millis(ms) {
        let mono = t0.elapsed().as_millis() as u64;
        node.tick(mono, wall_ms());
        let mut outbox = node.take_outbox();
        if spoofed.is_none() && mono >= ms / 2 {
            // Its next digest (to the group) goes to the target from the other address.
            if let Some(i) = outbox.iter().position(|(d, _)| *d == Dest::All) {
                let (_, d) = outbox.remove(i);
                other.send_to(&d, spoof.0).expect("send");
                spoofed = Some(d.len());
            }
        }
        for (dest, d) in outbox {
            let to = match dest {
                Dest::All => group,
                Dest::To(a) => {
                    record(&mut out, &d);
                    recorded += 1;
                    a
                }
            };
            let _ = s.send_to(&d, to);
        }
        while let Ok((n, _)) = other.recv_from(&mut buf) {
            back += n;
        }
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        let Ok(m) = wire::open(&buf[..n], &key) else {
            continue;
        };
        if m.to == Some(me) {
            record(&mut out, &buf[..n]);
            recorded += 1;
        }
        if !matches!(m.body, Body::Entries(_)) {
            node.datagram(&buf[..n], from, mono, wall_ms());
        }
    }
    println!("recorded {recorded}");
    println!("sent {} bytes, received {back} bytes", spoofed.unwrap_or(0));
}

fn sender(local: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind((local, 0)).expect("bind");
    s.set_multicast_ttl_v4(1).expect("ttl");
    s
}

fn usage() -> ! {
    eprintln!(
        "usage: lbfo-udp capture|replay|random|forge|keyholder|pulse|stamps ADDR:PORT LOCAL_V4 ..."
    );
    std::process::exit(2)
}
