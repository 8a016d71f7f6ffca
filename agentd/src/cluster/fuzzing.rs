//! The datagram receive path as the fuzz target `fuzz/fuzz_targets/datagram.rs` drives it, and
//! the seed corpus it starts from. Here rather than in `fuzz/` so that a crash the fuzzer finds
//! becomes a unit test calling [`receive`] with the same bytes.
//!
//! An input is one mode byte and a datagram: with bit 0 clear the rest is the datagram as
//! received (so almost every mutation stops at the length, version or MAC check); with bit 0 set
//! the rest is a message's bytes, which [`receive`] signs with [`KEY`] first, so the fuzzer gets
//! past authentication to the decoder, the entry checks, the challenges and the replay window,
//! the replica's merge and the digest replies.
//!
//! [`receive`] hands the datagram to a node the way the loop does (`datagram`, then `sync`, then
//! the outbox), twice, from [`PEER`]'s address. The node believes [`PEER`] in the boot the seeds
//! were made in; **what a datagram of any boot it does not believe draws (a challenge, an
//! answer) goes to its source and is no larger than it**, and **a datagram seen a second time
//! changes nothing and draws nothing but that**. (A boot that answers a cookie the node made for
//! it is believed from then on: what it draws goes to the address the cookie was made for.) Every datagram the node sends must open with the key. The node is fresh
//! for every input (a [`Cluster`] with a small replicated config, [`NODE`]), so a crash replays
//! exactly. Every service the datagram changed is then
//! published as the agent does it, through `Writer::write_service`, into one record of a table
//! kept between inputs (building a whole `Agent` per input would cost milliseconds: it publishes
//! all `MAX_SERVICES` records at start).
//!
//! The seeds are [`seeds`]: real datagrams of every kind from a peer. To rewrite the corpus:
//!
//! ```text
//! LBFO_FUZZ_CORPUS=fuzz/corpus/datagram cargo test -p lbfo-agentd --lib fuzzing
//! ```

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use std::sync::OnceLock;

use lbfo_core::atomic::AtomicU64;
use lbfo_core::shm::Layout;
use lbfo_core::{parse_line, Capacity, Command, Line, Writer};
use sha2::Sha256;

use crate::cluster::replica::{node_id, Replica, BUCKETS};
use crate::cluster::trickle::IMAX_MS;
use crate::cluster::wire::{self, Body, Key, Message, MAX_DATAGRAM, VERSION};
use crate::cluster::{Cluster, Dest};

/// The cluster key of the fuzz node and of the seeds' sender.
pub const KEY: &[u8] = b"lbfo fuzz key, not a secret";
/// The wall clock of the fuzz node and of every seed (ms since the epoch).
pub const T0: u64 = 1_700_000_000_000;
/// The fuzz node's name.
pub const NODE: &str = "fuzz-a";
/// The seeds' sender.
pub const PEER: &str = "peer-b";
/// The random bytes of the fuzz node (boot nonce and cookie secret) and of the seeds' sender.
pub const RANDOM: [[u8; 32]; 2] = [[0xa1; 32], [0xb2; 32]];
/// The monotonic clock of the fuzz node when it receives an input.
pub const MONO: u64 = 1000;
/// The fuzz node's replicated state before each input: what the seeds merge with.
pub const SETUP: &[&str] = &[
    "add web.lan 10.0.0.1",
    "add web.lan 10.0.0.2 weight=3",
    "add web.lan fd00::2 prio=2",
    "policy db.lan failover",
    "add db.lan 10.0.1.1 prio=1",
    "add db.lan 10.0.1.2 prio=2 limit=1000",
];

fn cmd(line: &str) -> Command {
    match parse_line(line) {
        Ok(Some(Line::Command(c))) => c,
        _ => unreachable!("fuzzing: bad built-in line {line}"),
    }
}

fn key() -> Key {
    Key::new(KEY.to_vec())
}

/// Where the seeds' sender is (and every input comes from).
fn from() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 2], 7946))
}

/// Where the fuzz node is, as the seeds' sender knows it.
fn node_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 7946))
}

/// The boot nonce a node makes of its random bytes.
fn boot(random: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&random[..8]);
    u64::from_le_bytes(b)
}

/// `body` followed by its HMAC-SHA256 tag under [`KEY`]: what `wire::seal` makes of a message.
pub fn sign(body: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY)
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(body);
    let mut out = body.to_vec();
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// The table the changed services are published to, made once (attaching checks every word).
fn table() -> &'static Writer<'static> {
    static WRITER: OnceLock<Writer<'static>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let n = Layout::MAX.total_words();
        let words: &'static [AtomicU64] = Vec::leak((0..n).map(|_| AtomicU64::new(0)).collect());
        Writer::init(words, 1, Capacity::MAX)
            .unwrap_or_else(|| unreachable!("fuzzing: the largest layout's words"))
    })
}

/// The fuzz node, as it is before each input (its replica is made once, then copied).
pub fn node() -> Cluster {
    static REPLICA: OnceLock<Replica> = OnceLock::new();
    let mut c = Cluster::new(NODE, key(), RANDOM[0], T0 - 60_000, 0, false);
    c.peers.trust(node_id(PEER), boot(&RANDOM[1]), from());
    c.replica = REPLICA
        .get_or_init(|| {
            let mut r = Replica::new(c.replica.me());
            for l in SETUP {
                r.config_line(&cmd(l), T0 - 120_000, T0);
            }
            r
        })
        .clone();
    c
}

/// Hands one fuzz input to a fresh node (see the module's documentation); panics if an
/// invariant breaks.
pub fn receive(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let datagram = if mode & 1 == 1 {
        sign(rest)
    } else {
        rest.to_vec()
    };
    let mut c = node();
    c.datagram(&datagram, from(), MONO, T0);
    // From a boot the node believes (the seeds' sender's, or one that just answered a cookie
    // made for it there): what it draws goes to the address it proved.
    let believed = wire::open(&datagram, &key()).is_ok_and(|m| c.peers.believes(m.node, m.boot));
    let changed = c.take_changed();
    let writer = table();
    for name in &changed {
        // The agent reconciles its slots to this and publishes it.
        let s = c.replica.service(name);
        if let Some(s) = &s {
            assert_eq!(s.name.as_str(), name);
        }
        writer.write_service(0, s.as_ref());
    }
    let sent = c.take_outbox();
    for (_, d) in &sent {
        assert!(d.len() <= MAX_DATAGRAM, "sent {} bytes", d.len());
        assert!(
            wire::open(d, &key()).is_ok(),
            "sent a datagram that does not open"
        );
    }
    if !believed {
        reflects_at_most(&sent, datagram.len());
    }
    let digest = c.replica.digest();
    let status = c.status_lines(T0);
    c.datagram(&datagram, from(), MONO, T0);
    assert!(
        c.take_changed().is_empty(),
        "a repeated datagram changed the replica"
    );
    reflects_at_most(&c.take_outbox(), datagram.len());
    assert_eq!(c.replica.digest(), digest);
    // Only the drop counters (or nothing, for our own looped-back datagram) move.
    let again = c.status_lines(T0);
    let peers = |s: &str| s.lines().filter(|l| !l.starts_with("drop ")).count();
    assert_eq!(peers(&again), peers(&status));
    // The periodic duties still run: a digest round, tombstone collection, forgetting peers.
    c.tick(10 * IMAX_MS + 60_000, T0 + 1000);
    c.take_outbox();
}

/// What a datagram not taken in may draw: at most its own size, and only to its source.
fn reflects_at_most(sent: &[(Dest, Vec<u8>)], received: usize) {
    let bytes: usize = sent.iter().map(|(_, d)| d.len()).sum();
    assert!(bytes <= received, "{bytes} bytes sent for {received}");
    assert!(
        sent.iter().all(|(to, _)| *to == Dest::To(from())),
        "sent elsewhere than to the source: {sent:?}"
    );
}

/// Real datagrams of every kind from [`PEER`] to [`NODE`], each named: hello, digest, a digest
/// reply, entries of every command, a repair of several datagrams, and a few a node refuses
/// (wrong key, stale, a newer version).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut peer = Cluster::new(PEER, key(), RANDOM[1], T0 - 1000, 0, false);
    peer.peers
        .trust(node_id(NODE), boot(&RANDOM[0]), node_addr());
    let mut grab = |name: &str, c: &mut Cluster| {
        for (i, (_, d)) in c.take_outbox().into_iter().enumerate() {
            out.push((format!("{name}-{i}"), d));
        }
    };
    peer.hello(None, T0);
    grab("hello", &mut peer);
    for (name, line) in [
        ("add", "add web.lan 10.0.0.3 weight=2 prio=1 limit=100"),
        ("add6", "add web.lan fd00::3"),
        ("policy", "policy web.lan weighted"),
        ("down", "down web.lan 10.0.0.3"),
        ("up", "up web.lan 10.0.0.3"),
        ("weight", "weight web.lan 10.0.0.3 5"),
        ("prio", "prio web.lan 10.0.0.3 7"),
        ("limit", "limit web.lan 10.0.0.3 9"),
        ("del-backend", "del web.lan fd00::3"),
        ("new-service", "add new.lan 10.0.9.9"),
        ("del-service", "del new.lan"),
    ] {
        let es = peer.replica.command(&cmd(line), T0).unwrap_or_default();
        peer.send_entries(crate::cluster::Dest::All, &es, T0);
        grab(name, &mut peer);
    }
    peer.tick(10 * IMAX_MS, T0);
    grab("digest", &mut peer);
    // The node's hello makes the peer answer with the buckets that differ and a digest reply.
    let mut a = node();
    a.hello(None, T0);
    for (_, d) in a.take_outbox() {
        peer.datagram(&d, node_addr(), MONO, T0);
    }
    grab("repair", &mut peer);
    // Enough services for a repair of several full datagrams.
    for i in 0..40 {
        let line = format!("add s{i}.big.example.lan 10.1.{i}.1 weight=3 prio={i}");
        let es = peer.replica.command(&cmd(&line), T0).unwrap_or_default();
        peer.send_entries(crate::cluster::Dest::All, &es, T0);
    }
    peer.take_outbox();
    // The node's next digest draws them (a repair is for the node that asked).
    a.tick(10 * IMAX_MS, T0);
    for (_, d) in a.take_outbox() {
        peer.datagram(&d, node_addr(), MONO, T0);
    }
    grab("repair-big", &mut peer);
    out.extend(handshake_seeds());
    out
}

/// Handshakes, and the ones a node does not take in: a challenge, its answer, another boot, a
/// clock an hour behind, the wrong key, another wire version.
fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let msg = |body| Message {
        version: VERSION,
        node: node_id(PEER),
        boot: boot(&RANDOM[1]),
        epoch: T0 - 1000,
        seq: 10_000,
        sent_ms: T0,
        to: None,
        body,
    };
    let hello = Body::Hello {
        name: PEER.into(),
        digest: vec![0; BUCKETS],
    };
    let seal = |m: &Message, k: &Key| wire::seal(m, k).unwrap_or_default();
    let challenge = Body::Challenge {
        cookie: 0x5eed,
        pad: [0; wire::CHALLENGE_PAD],
    };
    out.push(("challenge".into(), seal(&msg(challenge), &key())));
    // The answer to the challenge the node sends to `PEER`'s address.
    let cookie = node().peers.cookie(node_id(PEER), from(), MONO);
    out.push(("answer".into(), seal(&msg(Body::Answer { cookie }), &key())));
    let other_boot = Message {
        boot: 7,
        ..msg(hello.clone())
    };
    out.push(("other-boot".into(), seal(&other_boot, &key())));
    // Sent by a clock an hour behind: taken in like any other (no clock is trusted for replay).
    let behind = Message {
        epoch: T0 - 3_600_000,
        sent_ms: T0 - 3_600_000,
        seq: 10_001,
        ..msg(hello.clone())
    };
    out.push(("clock-behind".into(), seal(&behind, &key())));
    out.push((
        "wrong-key".into(),
        seal(&msg(hello.clone()), &Key::new(b"another key".to_vec())),
    ));
    let mut v2 = seal(&msg(hello), &key());
    if let Some(b) = v2.first_mut() {
        *b = VERSION + 1;
    }
    out.push(("version".into(), v2));
    out
}

/// The seeds as fuzz inputs: each datagram as received (mode 0) and as a message to sign
/// (mode 1, the datagram without its tag).
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, d) in seeds() {
        out.push((format!("raw-{name}"), [&[0u8][..], &d].concat()));
        let body = &d[..d.len().saturating_sub(wire::TAG)];
        out.push((format!("signed-{name}"), [&[1u8][..], body].concat()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_passes_and_the_valid_ones_are_taken_in() {
        let seeds = seeds();
        assert!(seeds.len() > 15, "{}", seeds.len());
        for (name, d) in &seeds {
            assert!(d.len() <= MAX_DATAGRAM, "{name}");
            let refused = ["wrong-key", "other-boot", "version"].contains(&name.as_str());
            let mut c = node();
            c.datagram(d, from(), MONO, T0);
            let drops = c.status_lines(T0).lines().any(|l| l.starts_with("drop "));
            assert_eq!(drops, refused, "{name}: {}", c.status_lines(T0));
        }
        for (_, input) in corpus() {
            receive(&input);
        }
    }

    /// Found by the fuzzer: the answer seed with another boot and sequence number, whose cookie
    /// (made for the seeds' sender at its address) is good: that boot is believed from then on,
    /// and the node's digest goes to it at the address the cookie proved.
    #[test]
    fn an_answer_of_another_boot_with_a_good_cookie_is_believed() {
        receive(&[
            1, 2, 202, 232, 205, 139, 136, 177, 226, 239, 177, 1, 178, 229, 202, 149, 171, 214,
            172, 217, 49, 144, 78, 128, 208, 149, 44, 255, 188, 49, 0, 4, 139, 144, 251, 187, 175,
            154, 228, 242, 242, 1,
        ]);
    }

    /// The corpus in `fuzz/corpus/datagram` is [`corpus`]; with `LBFO_FUZZ_CORPUS=DIR` set, this
    /// writes it there (a relative DIR from the repository's root: tests run in `agentd/`).
    #[test]
    fn the_corpus_in_the_repository_is_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join("fuzz/corpus/datagram");
        if let Some(to) = std::env::var_os("LBFO_FUZZ_CORPUS") {
            let to = root.join(to);
            std::fs::create_dir_all(&to).unwrap();
            for (name, bytes) in corpus() {
                std::fs::write(std::path::Path::new(&to).join(name), bytes).unwrap();
            }
        }
        let corpus = corpus();
        for (name, bytes) in &corpus {
            let have = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                have == *bytes,
                "fuzz/corpus/datagram/{name} is missing or stale: rerun with LBFO_FUZZ_CORPUS=fuzz/corpus/datagram"
            );
        }
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                corpus.iter().any(|(n, _)| *n == name),
                "fuzz/corpus/datagram/{name} is no seed any more: delete it"
            );
        }
    }
}
