//! The protocol between nodes over a fake network: delivery, loss, restarts, replays, clocks.

use super::*;
use crate::cluster::peers::{repair_rate, SILENCE_MS};
use crate::cluster::trickle::IMAX_MS;
use lbfo_core::{parse_line, Command, Line};

fn cmd(line: &str) -> Command {
    match parse_line(line) {
        Ok(Some(Line::Command(c))) => c,
        other => panic!("{line}: {other:?}"),
    }
}

const T0: u64 = 1_700_000_000_000;

fn key() -> Key {
    Key::new(b"k".to_vec())
}

/// Random bytes for a boot of `name` (the `n`th).
fn random(name: &str, n: u8) -> [u8; 32] {
    let mut r = [n; 32];
    r[..8].copy_from_slice(&node_id(name).wrapping_add(u64::from(n)).to_le_bytes());
    r
}

fn node(name: &str) -> Cluster {
    Cluster::new(name, key(), random(name, 0), T0, 0, false)
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 7946))
}

/// Delivers every queued datagram among `nodes` (a fake network: node `i` is at `addr(i + 1)`,
/// `All` reaches everyone else, `To` its address), dropping those `lose` picks, until nothing is
/// left to send; every node's clocks read `mono` and `wall`.
fn settle_at(nodes: &mut [Cluster], mono: u64, wall: u64, mut lose: impl FnMut() -> bool) {
    loop {
        let mut any = false;
        for i in 0..nodes.len() {
            for (dest, d) in nodes[i].take_outbox() {
                any = true;
                for (j, node) in nodes.iter_mut().enumerate() {
                    let hit = match dest {
                        Dest::All => j != i,
                        Dest::To(a) => a == addr(j as u8 + 1),
                    };
                    if hit && !lose() {
                        node.datagram(&d, addr(i as u8 + 1), mono, wall);
                    }
                }
            }
        }
        if !any {
            return;
        }
    }
}

fn settle(nodes: &mut [Cluster], wall: u64, lose: impl FnMut() -> bool) {
    settle_at(nodes, 0, wall, lose);
}

/// Every node hears every other's hello and the handshakes that follow.
fn introduce(nodes: &mut [Cluster], wall: u64) {
    for n in nodes.iter_mut() {
        n.hello(None, wall);
    }
    settle(nodes, wall, || false);
    for n in nodes.iter() {
        assert_eq!(n.peers.len(), nodes.len() - 1, "{}", n.status_lines(wall));
    }
}

/// Runs `c`'s timer from `mono` on until its digest goes out (Trickle may suppress a few).
fn digest_out(c: &mut Cluster, mono: u64, wall: u64) -> Vec<(Dest, Vec<u8>)> {
    let mut t = mono;
    loop {
        t = t.max(c.next_deadline());
        c.tick(t, wall);
        let out = c.take_outbox();
        if !out.is_empty() {
            return out;
        }
    }
}

fn run(c: &mut Cluster, line: &str, wall: u64) {
    let es = c.replica.command(&cmd(line), wall).unwrap();
    c.send_entries(Dest::All, &es, wall);
}

/// The drops but `unverified` ones (a peer's first datagrams, before the handshake).
fn refused(c: &Cluster) -> Vec<(SocketAddr, DropReason, u64)> {
    let mut d = c.drops();
    d.retain(|d| d.1 != DropReason::Unverified);
    d
}

fn count(c: &Cluster, from: SocketAddr, why: DropReason) -> u64 {
    c.drops()
        .iter()
        .filter(|(s, w, _)| *s == from && *w == why)
        .map(|d| d.2)
        .sum()
}

#[test]
fn a_second_node_with_our_name_is_counted_and_reported_once_a_source() {
    let later = T0 + 5_000;
    let mut a = node("gw");
    let mut twin = Cluster::new("gw", key(), random("gw", 1), later, 0, false);
    // Our own datagrams, looped back: ignored, not counted.
    run(&mut a, "add x.lan 10.0.0.2", later);
    for (_, d) in a.take_outbox() {
        a.datagram(&d, addr(1), 0, later);
    }
    assert_eq!((a.drops().len(), a.take_log().len()), (0, 0));
    run(&mut twin, "add w.lan 10.0.0.1", later);
    let sent = twin.take_outbox();
    assert!(!sent.is_empty());
    for (_, d) in &sent {
        a.datagram(d, addr(2), 0, later);
    }
    let log = a.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("10.0.0.2:7946: sends under this node's name gw"));
    assert!(
        a.replica.service("w.lan").is_none(),
        "the twin's change is not applied"
    );
    assert_eq!(count(&a, addr(2), DropReason::SameName), sent.len() as u64);
    // More from the same source: counted, not reported again.
    run(&mut twin, "add v.lan 10.0.0.3", later + 1_000);
    for (_, d) in twin.take_outbox() {
        a.datagram(&d, addr(2), 0, later + 1_000);
    }
    assert!(a.take_log().is_empty());
    assert!(count(&a, addr(2), DropReason::SameName) > sent.len() as u64);
}

#[test]
fn the_peer_map_and_the_drop_counters_are_capped_counted_and_logged() {
    let mut a = node("a");
    for i in 0..=MAX_PEERS {
        // Each new node in turn says hello to `a` alone, and the handshake follows.
        let mut pair = [node(&format!("p{i}")), a];
        pair[0].hello(None, T0);
        settle(&mut pair, T0, || false);
        [_, a] = pair;
    }
    assert_eq!(a.peers.len(), MAX_PEERS);
    let full: Vec<_> = a
        .drops()
        .into_iter()
        .filter(|d| d.1 == DropReason::TooManyPeers)
        .collect();
    assert_eq!(full.len(), 1, "one node refused: {full:?}");
    let log = a.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    let want = format!("a new node refused, {MAX_PEERS} peers already");
    assert!(log[0].contains(&want), "{log:?}");
    // Garbage from more sources than there are counters: the rest counted by reason alone.
    let mut b = node("b");
    for i in 0..MAX_DROP_COUNTERS + 10 {
        let from = SocketAddr::from(([10, 1, (i / 256) as u8, i as u8], 7946));
        b.datagram(b"short", from, 0, T0);
    }
    let drops = b.drops();
    assert_eq!(drops.len(), MAX_DROP_COUNTERS + 1);
    let any = SocketAddr::from(([0, 0, 0, 0], 0));
    assert_eq!(drops.last(), Some(&(any, DropReason::Truncated, 10)));
    let log = b.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("256 drop counters in use"), "{log:?}");
    assert!(b
        .status_lines(T0)
        .ends_with("drop 0.0.0.0:0 truncated 10\n"));
}

#[test]
fn entries_stamped_beyond_our_clock_are_refused_counted_and_logged_once() {
    let mut nodes = vec![node("a"), node("b"), node("c")];
    introduce(&mut nodes, T0);
    // Entries stamped an hour ahead (a forger, or a hybrid clock dragged there), sent now.
    for line in ["add w.lan 10.0.0.1", "add x.lan 10.0.0.2"] {
        let es = nodes[0]
            .replica
            .command(&cmd(line), T0 + 3_600_000)
            .unwrap();
        nodes[0].send_entries(Dest::All, &es, T0);
    }
    let grams = nodes[0].take_outbox();
    let b = &mut nodes[1];
    for (_, d) in &grams {
        b.datagram(d, addr(1), 0, T0);
    }
    assert!(b.replica.names().next().is_none(), "nothing taken in");
    assert_eq!(refused(b), [(addr(1), DropReason::Future, 2)]);
    let log = b.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].contains("10.0.0.1:7946: entries stamped up to 3600 s ahead"),
        "{log:?}"
    );
    // Within the window: taken.
    let es = nodes[2]
        .replica
        .command(&cmd("add y.lan 10.0.0.3"), T0 + AHEAD_MS)
        .unwrap();
    nodes[2].send_entries(Dest::All, &es, T0);
    for (_, d) in nodes[2].take_outbox() {
        nodes[1].datagram(&d, addr(3), 0, T0);
    }
    assert!(nodes[1].replica.service("y.lan").is_some());
    assert_eq!(refused(&nodes[1]).len(), 1);
}

/// Issue 14: a node restarted with its clock behind (a router without a clock, before NTP) had
/// an older epoch, and every peer took all its datagrams for replays until it restarted too.
#[test]
fn a_node_restarted_with_its_clock_an_hour_behind_is_heard_at_once() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    run(&mut nodes[0], "add w.lan 10.0.0.1", T0);
    settle(&mut nodes, T0, || false);
    let behind = T0 - 3_600_000;
    nodes[1] = Cluster::new("b", key(), random("b", 1), behind, 0, false);
    nodes[1].hello(None, behind);
    // Its hello draws a challenge; its answer makes it believed; the digests follow.
    let mono = 5_000;
    settle_at(&mut nodes, mono, T0, || false);
    let b_now = nodes[0].peers.get(node_id("b")).unwrap().epoch;
    assert_eq!(b_now, behind, "the new boot is believed");
    // Its next command is taken in at once (a new service: nothing newer stands against it).
    run(&mut nodes[1], "add late.lan 10.0.0.9", behind);
    let grams = nodes[1].take_outbox();
    for (_, d) in &grams {
        nodes[0].datagram(d, addr(2), mono, T0);
    }
    assert!(nodes[0].replica.service("late.lan").is_some());
    assert!(refused(&nodes[0]).is_empty(), "{:?}", nodes[0].drops());
}

/// Replay protection without clocks: datagrams recorded in an earlier boot of a node are never
/// believed again, and what they draw is a challenge no larger than each.
#[test]
fn an_earlier_boot_replayed_is_never_believed() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    run(&mut nodes[0], "add w.lan 10.0.0.1", T0);
    let recorded = nodes[0].take_outbox();
    for (_, d) in &recorded {
        nodes[1].datagram(d, addr(1), 0, T0);
    }
    assert!(nodes[1].replica.service("w.lan").is_some());
    // `a` restarts (a new boot) and deletes the service; its old boot's datagrams come back.
    nodes[0] = Cluster::new("a", key(), random("a", 1), T0 + 10, 0, false);
    nodes[0].hello(None, T0 + 10);
    settle_at(&mut nodes, 1000, T0 + 10, || false);
    run(&mut nodes[1], "del w.lan", T0 + 20);
    settle_at(&mut nodes, 1000, T0 + 20, || false);
    for (_, d) in &recorded {
        nodes[1].datagram(d, addr(9), 2000, T0 + 30);
        let sent = nodes[1].take_outbox();
        let bytes: usize = sent.iter().map(|(_, g)| g.len()).sum();
        assert!(bytes <= d.len(), "{bytes} bytes in answer to {}", d.len());
        assert!(sent.iter().all(|(to, _)| *to == Dest::To(addr(9))));
    }
    assert!(nodes[1].replica.service("w.lan").is_none());
    assert_eq!(
        count(&nodes[1], addr(9), DropReason::Unverified),
        recorded.len() as u64
    );
    // Its challenges reach the address the replays claimed, where no key holder answers; an
    // answer made for one address is no good for another.
    let peer_b = nodes[1].peers.get(node_id("a")).unwrap().clone();
    assert_eq!(peer_b.addr, addr(1));
}

/// A peer silent for a while is forgotten, and believed again after its next answer.
#[test]
fn a_silent_peer_is_forgotten_and_believed_again_when_it_answers() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    let later = SILENCE_MS + 10 * IMAX_MS;
    nodes[0].tick(later, T0 + later);
    nodes[0].take_outbox();
    assert!(nodes[0].peers.is_empty(), "b forgotten");
    run(&mut nodes[1], "add w.lan 10.0.0.1", T0 + later);
    settle_at(&mut nodes, later, T0 + later, || false);
    assert_eq!(nodes[0].peers.len(), 1);
    assert!(
        nodes[0].replica.service("w.lan").is_some(),
        "repaired after the handshake"
    );
}

#[test]
fn commands_spread_and_digests_repair_loss() {
    let mut nodes: Vec<Cluster> = ["a", "b", "c"].iter().map(|n| node(n)).collect();
    introduce(&mut nodes, T0);
    run(&mut nodes[0], "add w.lan 10.0.0.1", T0);
    settle(&mut nodes, T0, || false);
    assert!(nodes.iter().all(|n| n.replica.service("w.lan").is_some()));
    // Lose every command datagram; the next digest round repairs it.
    run(&mut nodes[1], "down w.lan 10.0.0.1", T0 + 1);
    nodes[1].take_outbox();
    assert_ne!(nodes[0].replica.digest(), nodes[1].replica.digest());
    for (i, n) in nodes.iter_mut().enumerate() {
        n.tick(IMAX_MS * 2 + i as u64, T0 + 500);
    }
    settle(&mut nodes, T0 + 500, || false);
    let d = nodes[0].replica.digest();
    assert!(nodes.iter().all(|n| n.replica.digest() == d));
    assert!(
        !nodes[2].replica.service("w.lan").unwrap().backends[0]
            .unwrap()
            .up
    );
    // In sync: a digest round sends digests only, and each node heard its own digest from the
    // others, so the next round sends nothing (Trickle's suppression).
    let sent = |nodes: &[Cluster]| nodes.iter().map(|n| n.sent.0).sum::<u64>();
    for n in nodes.iter_mut() {
        n.tick(IMAX_MS * 10, T0 + 1000);
    }
    let before = sent(&nodes);
    settle(&mut nodes, T0 + 1000, || false);
    assert_eq!(sent(&nodes) - before, 3, "one digest each, nothing else");
    for n in nodes.iter_mut() {
        n.tick(IMAX_MS * 11, T0 + 2000);
    }
    settle(&mut nodes, T0 + 2000, || false);
    assert_eq!(sent(&nodes) - before, 3, "suppressed");
}

#[test]
fn a_late_joiner_gets_everything_at_once() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    for i in 0..300 {
        run(
            &mut nodes[i % 2],
            &format!("add s{i}.lan 10.0.{}.{}", i / 200, i % 200 + 1),
            T0,
        );
    }
    settle(&mut nodes, T0, || false);
    nodes.push(node("late"));
    nodes[2].hello(None, T0 + 10);
    settle(&mut nodes, T0 + 10, || false);
    assert_eq!(nodes[2].replica.digest(), nodes[0].replica.digest());
    assert_eq!(nodes[2].replica.names().count(), 300);
}

/// Found by the soak's datagram flood (three agents, 12,800 backends, configs written
/// milliseconds apart): each answer to a digest was the whole differing state, and the
/// cluster drowned in its own repairs. One answer is now bounded; the rounds still converge.
#[test]
fn an_answer_to_a_digest_is_bounded_and_rounds_still_converge() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    let [a, b] = &mut nodes[..] else {
        unreachable!()
    };
    // Nine entries a service, more than two answers' worth in all.
    let n = REPAIR_ENTRIES / 4;
    for i in 0..n {
        for k in 1..=8 {
            let line = format!("add s{i}.lan 10.{k}.{}.{} weight=2", i / 200, i % 200 + 1);
            a.replica.command(&cmd(&line), T0).unwrap();
        }
    }
    let bucket = 9 * n / BUCKETS;
    for round in 1..=20u64 {
        b.tick(round * IMAX_MS * 2, T0);
        for (_, d) in b.take_outbox() {
            a.datagram(&d, addr(2), round * IMAX_MS * 2, T0);
        }
        let answer = a.take_outbox();
        let entries: usize = answer
            .iter()
            .map(|(_, d)| match wire::open(d, &a.key).unwrap().body {
                Body::Entries(es) => es.len(),
                _ => 0,
            })
            .sum();
        assert!(
            entries <= REPAIR_ENTRIES + 2 * bucket,
            "{entries} entries answer one digest"
        );
        for (_, d) in &answer {
            b.datagram(d, addr(1), 0, T0);
        }
        b.take_outbox();
        if b.replica.digest() == a.replica.digest() {
            assert!(round >= 3, "bounded answers need several rounds");
            return;
        }
    }
    panic!("b has {} of {n} services", b.replica.names().count());
}

#[test]
fn heavy_loss_converges_through_digest_rounds() {
    let mut nodes: Vec<Cluster> = (0..8).map(|i| node(&format!("n{i}"))).collect();
    introduce(&mut nodes, T0);
    let mut x = 88172645463325252u64;
    let mut lose = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 5 == 0
    };
    for i in 0..100 {
        run(
            &mut nodes[i % 8],
            &format!("add s{}.lan 10.0.0.{}", i % 13, i % 7 + 1),
            T0,
        );
    }
    settle(&mut nodes, T0, &mut lose);
    let mut rounds = 0;
    while nodes
        .iter()
        .any(|n| n.replica.digest() != nodes[0].replica.digest())
    {
        rounds += 1;
        assert!(rounds < 20, "no convergence");
        for n in nodes.iter_mut() {
            n.tick(rounds * IMAX_MS * 2, T0);
        }
        settle(&mut nodes, T0, &mut lose);
    }
    assert!(rounds <= 4, "{rounds} digest rounds");
}

#[test]
fn replays_and_foreign_datagrams_are_counted_and_ignored() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    let [a, b] = &mut nodes[..] else {
        unreachable!()
    };
    run(a, "add w.lan 10.0.0.1", T0);
    let grams = a.take_outbox();
    let d = &grams[0].1;
    b.datagram(d, addr(1), 0, T0);
    assert!(b.replica.service("w.lan").is_some());
    b.datagram(d, addr(1), 0, T0 + 5);
    // Far-future sequence numbers move the window; an old one below it is a replay.
    let mut later = Vec::new();
    for _ in 0..peers::WINDOW + 2 {
        run(a, "weight w.lan 10.0.0.1 2", T0);
        later.extend(a.take_outbox());
    }
    for (_, g) in &later {
        b.datagram(g, addr(1), 0, T0);
    }
    b.datagram(&later[0].1, addr(1), 0, T0);
    // Out of order within the window is fine.
    run(a, "weight w.lan 10.0.0.1 3", T0);
    run(a, "weight w.lan 10.0.0.1 4", T0);
    let two = a.take_outbox();
    b.datagram(&two[1].1, addr(1), 0, T0);
    b.datagram(&two[0].1, addr(1), 0, T0);
    assert_eq!(
        b.replica.service("w.lan").unwrap().backends[0]
            .unwrap()
            .weight,
        4
    );
    // Wrong key, garbage, an answer to a challenge never made.
    let mut evil = Cluster::new("evil", Key::new(b"other".to_vec()), [6; 32], T0, 0, false);
    run(&mut evil, "add w.lan 6.6.6.6", T0);
    b.datagram(&evil.take_outbox()[0].1, addr(6), 0, T0);
    let random = b"random bytes, not a message at all, long enough to pass";
    b.datagram(&[&[VERSION][..], random].concat(), addr(7), 0, T0);
    let cookie = a.peers.cookie(node_id("b"), addr(8), 0);
    a.send(
        Dest::All,
        Some(node_id("b")),
        T0,
        Body::Answer { cookie },
        usize::MAX,
    );
    b.datagram(&a.take_outbox()[0].1, addr(8), 0, T0);
    assert_eq!(b.replica.service("w.lan").unwrap().iter().count(), 1);
    let drops: Vec<String> = refused(b)
        .iter()
        .map(|(a, w, n)| format!("{} {} {n}", Sock(*a), w.name()))
        .collect();
    assert_eq!(
        drops,
        [
            "10.0.0.1:7946 replay 2",
            "10.0.0.6:7946 bad_mac 1",
            "10.0.0.7:7946 bad_mac 1",
            "10.0.0.8:7946 replay 1"
        ]
    );
    let status = b.status_lines(T0);
    assert!(status.contains("\npeer a "), "{status}");
}

#[test]
fn a_restart_does_not_roll_back_and_catches_up() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    for n in nodes.iter_mut() {
        n.replica
            .config_line(&cmd("add w.lan 10.0.0.1"), T0 - 5000, T0);
    }
    run(&mut nodes[1], "down w.lan 10.0.0.1", T0);
    run(&mut nodes[1], "add w.lan 10.0.0.2", T0);
    settle(&mut nodes, T0, || false);
    // `a` restarts from its config only, holding its adopted table.
    let mut a = Cluster::new("a", key(), random("a", 1), T0 + 50, 0, true);
    a.replica
        .config_line(&cmd("add w.lan 10.0.0.1"), T0 - 5000, T0 + 50);
    assert!(a.holding());
    a.hello(None, T0 + 50);
    nodes[0] = a;
    settle(&mut nodes, T0 + 50, || false);
    assert_eq!(nodes[0].replica.digest(), nodes[1].replica.digest());
    let s = nodes[0].replica.service("w.lan").unwrap();
    assert_eq!(s.iter().count(), 2);
    assert!(
        !s.backends
            .iter()
            .flatten()
            .find(|b| b.addr.to_string() == "10.0.0.1")
            .unwrap()
            .up
    );
    // The digests that followed the handshake showed agreement: the hold has ended.
    assert!(!nodes[0].holding());
}

/// Bytes in `sent` to `to`.
fn bytes_to(sent: &[(Dest, Vec<u8>)], to: SocketAddr) -> usize {
    sent.iter()
        .filter(|(d, _)| *d == Dest::To(to))
        .map(|(_, g)| g.len())
        .sum()
}

/// Issue 14: a unicast digest, sniffed and replayed to another node with a spoofed source,
/// drew up to 240 times its size in repairs toward the spoofed address.
#[test]
fn a_unicast_message_replayed_to_another_node_draws_nothing() {
    let mut nodes = vec![node("a"), node("b"), node("c")];
    introduce(&mut nodes, T0);
    for i in 0..50 {
        run(&mut nodes[0], &format!("add s{i}.lan 10.0.0.{}", i + 1), T0);
    }
    settle(&mut nodes, T0, || false);
    // `b` misses a change; `a`'s answer to b's digest is a digest reply and a repair, for b.
    run(&mut nodes[0], "down s1.lan 10.0.0.2", T0);
    nodes[0].take_outbox();
    nodes[1].tick(IMAX_MS * 4, T0);
    for (_, d) in nodes[1].take_outbox() {
        nodes[0].datagram(&d, addr(2), 0, T0);
    }
    let for_b = nodes[0].take_outbox();
    assert!(for_b.iter().all(|(to, _)| *to == Dest::To(addr(2))));
    assert!(!for_b.is_empty());
    // Replayed to `c` from a victim's address: refused, and nothing goes anywhere.
    let victim = addr(9);
    for (_, d) in &for_b {
        nodes[2].datagram(d, victim, 0, T0);
    }
    assert!(nodes[2].take_outbox().is_empty());
    assert_eq!(
        count(&nodes[2], victim, DropReason::Misdirected),
        for_b.len() as u64
    );
}

/// A fresh digest of a believed peer that arrives from another address (sniffed and raced, its
/// source spoofed): answered at the address the peer proved; the other draws at most a
/// challenge no larger than the digest.
#[test]
fn a_spoofed_digest_is_answered_only_at_the_address_the_peer_proved() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    for i in 0..50 {
        run(&mut nodes[0], &format!("add s{i}.lan 10.0.0.{}", i + 1), T0);
    }
    nodes[0].take_outbox();
    let digest = digest_out(&mut nodes[1], IMAX_MS * 4, T0).remove(0).1;
    let victim = addr(9);
    nodes[0].datagram(&digest, victim, 0, T0);
    let sent = nodes[0].take_outbox();
    let (to_victim, to_b) = (bytes_to(&sent, victim), bytes_to(&sent, addr(2)));
    assert!(
        to_victim <= digest.len(),
        "{to_victim} for {}",
        digest.len()
    );
    assert!(to_b > 10 * digest.len(), "the repair went to b: {to_b}");
    assert_eq!(to_victim + to_b, sent.iter().map(|(_, g)| g.len()).sum());
}

/// Whatever reaches a node from a source that is no peer's proved address, each datagram draws
/// at most its own size back to that source.
#[test]
fn nothing_answers_an_unknown_source_with_more_bytes_than_it_sent() {
    let mut nodes = [node("a"), node("b"), node("c")];
    let mut heard = Vec::new();
    for n in nodes.iter_mut() {
        n.hello(None, T0);
    }
    // Record every datagram of a whole exchange: hellos, challenges, answers, digests,
    // commands, repairs.
    loop {
        let mut any = false;
        for i in 0..nodes.len() {
            for (dest, d) in nodes[i].take_outbox() {
                any = true;
                heard.push(d.clone());
                for (j, n) in nodes.iter_mut().enumerate() {
                    let hit = match dest {
                        Dest::All => j != i,
                        Dest::To(a) => a == addr(j as u8 + 1),
                    };
                    if hit {
                        n.datagram(&d, addr(i as u8 + 1), 0, T0);
                    }
                }
            }
        }
        if heard.len() < 40 {
            let i = heard.len() % 3;
            run(
                &mut nodes[i],
                &format!("add s{}.lan 10.0.0.{}", heard.len(), i + 1),
                T0,
            );
            nodes[i].tick(IMAX_MS * 2 * heard.len() as u64, T0);
        } else if !any {
            break;
        }
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    heard.extend((0..200).map(|k| {
        let mut d: Vec<u8> = (0..k * 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if let Some(b) = d.first_mut() {
            *b = VERSION;
        }
        d
    }));
    let stranger = addr(9);
    for d in &heard {
        // Replayed to every node, from an address no peer proved: at most its size back.
        for n in nodes.iter_mut() {
            n.datagram(d, stranger, 0, T0);
            let sent = n.take_outbox();
            let back = bytes_to(&sent, stranger);
            assert!(back <= d.len(), "{back} bytes back for {}", d.len());
        }
    }
}

#[test]
fn repairs_to_one_peer_are_bounded_per_second() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    for i in 0..2000 {
        let line = format!("add s{i}.lan 10.0.{}.{} weight=2", i / 200, i % 200 + 1);
        nodes[0].replica.command(&cmd(&line), T0).unwrap();
    }
    // `b` (a bug, or a key holder) asks twenty times within a second.
    let mut asks = Vec::new();
    for k in 1..=20 {
        nodes[1].tick(k * IMAX_MS * 2, T0);
        asks.extend(nodes[1].take_outbox());
    }
    let (mono, rate) = (5_000, repair_rate(nodes[0].replica.len()));
    let mut sent = 0;
    for (_, d) in &asks[..10] {
        nodes[0].datagram(d, addr(2), mono, T0);
        sent += bytes_to(&nodes[0].take_outbox(), addr(2));
    }
    let digests = 10 * 300;
    assert!(sent as u64 <= rate + digests, "{sent} bytes within one ms");
    assert!(sent as u64 > rate / 2, "{sent}");
    // A second later, the budget is back.
    let mut more = 0;
    for (_, d) in &asks[10..] {
        nodes[0].datagram(d, addr(2), mono + 1000, T0);
        more += bytes_to(&nodes[0].take_outbox(), addr(2));
    }
    assert!(more as u64 <= rate + digests, "{more}");
    assert!(more as u64 > rate / 2, "{more}");
}

/// A key holder (or a buggy peer) sending ever more services: past twice the table's
/// capacity the replica takes none, counted as `full` and logged once.
#[test]
fn entries_beyond_the_replicas_bounds_are_refused_counted_and_logged_once() {
    let mut nodes = vec![node("a"), node("b")];
    introduce(&mut nodes, T0);
    let cap = lbfo_core::Capacity::new(3, 2).unwrap();
    nodes[1].replica = Replica::with_capacity(node_id("b"), cap);
    for i in 0..10 {
        run(&mut nodes[0], &format!("add s{i}.lan 10.0.0.1"), T0);
    }
    let grams = nodes[0].take_outbox();
    for (_, d) in &grams {
        nodes[1].datagram(d, addr(1), 0, T0);
    }
    assert_eq!(nodes[1].replica.names().count(), replica::held(cap).0);
    assert_eq!(count(&nodes[1], addr(1), DropReason::Full), 4);
    let log = nodes[1].take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].contains("entries refused: a new service (s6.lan) where this node holds 6"),
        "{log:?}"
    );
}

/// A node that hears none of its peers (cut off) keeps its digest interval short, so that the
/// first digest crosses soon after the network returns; a quiet cluster does not set it off,
/// and hearing a peer again ends it.
#[test]
fn a_cut_off_node_keeps_calling_and_calms_down_when_it_hears_a_peer() {
    use crate::cluster::trickle::{lonely_ms, LONELY_IMAX_MS};
    let mut nodes = vec![node("a"), node("b"), node("c")];
    introduce(&mut nodes, T0);
    // A quiet cluster, every datagram delivered: nobody is lonely, every interval grows to IMAX.
    let mut t = 0;
    while t < 60_000 {
        t = nodes.iter().map(Cluster::next_deadline).min().unwrap();
        for n in nodes.iter_mut() {
            n.tick(t, T0 + t);
        }
        settle_at(&mut nodes, t, T0 + t, || false);
        assert!(nodes.iter().all(|n| !n.lonely(t)), "at {t} ms");
    }
    assert!(nodes.iter().all(|n| n.interval() == IMAX_MS));
    // `a` cut off: it hears nothing; once that lasted lonely_ms, its interval stays short.
    let cut = t;
    let alone = lonely_ms(2, peers::alive_ms(2));
    let mut sent = 0;
    while t < cut + alone + 10 * IMAX_MS {
        t = nodes[0].next_deadline();
        nodes[0].tick(t, T0 + t);
        sent += nodes[0].take_outbox().len();
        if t >= cut + alone + 2 * IMAX_MS {
            assert!(nodes[0].lonely(t));
            assert!(
                nodes[0].interval() <= LONELY_IMAX_MS,
                "{}",
                nodes[0].interval()
            );
        }
    }
    assert!(
        sent as u64 >= 8 * IMAX_MS / LONELY_IMAX_MS,
        "it kept calling: {sent}"
    );
    // Back: b's digest is heard, and `a` calms down to IMAX again.
    for n in nodes[1..].iter_mut() {
        n.take_outbox();
    }
    let d = digest_out(&mut nodes[1], t, T0 + t);
    for (_, g) in d {
        nodes[0].datagram(&g, addr(2), t, T0 + t);
    }
    assert!(!nodes[0].lonely(t));
    for _ in 0..10 {
        t = nodes[0].next_deadline();
        nodes[0].tick(t, T0 + t);
        nodes[0].take_outbox();
    }
    assert!(!nodes[0].lonely(t));
    assert_eq!(nodes[0].interval(), IMAX_MS);
}
