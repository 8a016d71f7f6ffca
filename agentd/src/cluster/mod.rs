//! The cluster protocol: who we heard, what we refuse, what we send and when. No sockets.
//!
//! [`Cluster`] owns the node's [`Replica`] and everything about peers; the loop in `main` hands
//! it datagrams with their source ([`Cluster::datagram`]) and the time, and sends what
//! [`Cluster::take_outbox`] returns. It never blocks and never fails: a datagram it cannot use is
//! counted under its [`DropReason`] reason and source address, and forgotten.
//!
//! The exchanges:
//! - **start**: a `Hello` with our digest (our config, stamped with its mtime). Every peer answers
//!   with the entries of the buckets where it differs, and its own digest (`reply`), to which we
//!   answer with ours where we know better (a config newer than the cluster's changes).
//! - **command**: its entries go to the group (and every `peer`) at once.
//! - **anti-entropy**: every [`DIGEST_MS`] a `Digest` goes to the group. A node whose digest
//!   differs answers the sender directly with the differing buckets' entries and its own digest
//!   (`reply: true`, never answered with another digest), so both sides repair within one round
//!   trip, and nothing is sent while all digests agree.
//! - **replay and freshness**: each sender's datagrams carry its boot epoch and a sequence number.
//!   Per sender we keep the newest epoch and a [`WINDOW`]-sequence sliding bitmap (as IPsec's
//!   anti-replay window): an older epoch, a sequence already seen, or one below the window is a
//!   replay. A datagram whose `sent_ms` is more than [`FRESH_MS`] from our clock is stale — this
//!   also stops a datagram captured before a sender's last restart from being played to a
//!   receiver that has forgotten the sender. The clocks of a cluster must agree within
//!   [`FRESH_MS`] (NTP).

#[doc(hidden)]
pub mod fuzzing;
pub mod replica;
pub mod socket;
pub mod wire;

use lbfo_core::addr::Sock;
use std::net::SocketAddr;

use crate::cluster::replica::{node_id, Entry, NodeId, Refused, Replica, AHEAD_MS, BUCKETS};
use crate::cluster::wire::{Body, DropReason, Key, Message, VERSION};
use crate::vecmap::VecSet;

/// How often each node sends its digest. Four rounds a second repair a lost command within
/// about a quarter of a second, at about 250 bytes per node per round.
pub const DIGEST_MS: u64 = 250;
/// Datagrams whose sender's clock differs from ours by more than this are refused as stale.
pub const FRESH_MS: u64 = 30_000;
/// Sequence numbers remembered per sender below its newest (a reordering allowance).
pub const WINDOW: u64 = 64;
/// How long a restarted agent keeps showing the table it adopted before publishing the cluster's
/// state, unless a peer's digest shows it has caught up sooner.
pub const CATCH_UP_MS: u64 = 1000;
/// How often tombstones are collected.
pub const COLLECT_MS: u64 = 10_000;
/// Peers tracked at most: a cluster of more nodes than this is beyond what the agent is made
/// for, and a key holder inventing node ids cannot grow memory. A node new when the map is full
/// is refused ([`DropReason::TooManyPeers`], logged).
pub const MAX_PEERS: usize = 128;
/// Drop counters kept at most, one per source and reason: a flood of spoofed sources cannot grow
/// memory. Past it, drops from new sources are counted by reason alone under the unspecified
/// address (and that is logged once).
pub const MAX_DROP_COUNTERS: usize = 256;

/// About this many entries (some 40 datagrams) at most answer one digest. Answering with every
/// differing bucket made each digest cost the whole state when nodes differed widely (agents
/// started with one large config at different times, or after a flood): with every node
/// answering every other's digest four times a second, a loaded node fell behind, its answers
/// left stale (stamped at its wake-up) and were refused, and the cluster never converged.
pub const REPAIR_ENTRIES: usize = 512;

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The group and every configured peer.
    All,
    /// One node (a reply).
    To(SocketAddr),
}

/// A peer as we know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node name.
    pub name: String,
    /// Where its last datagram came from.
    pub addr: SocketAddr,
    /// When we last accepted a datagram from it (wall ms).
    pub heard_ms: u64,
    /// Its boot epoch.
    pub epoch: u64,
    top: u64,
    seen: u64,
    /// Its last digest equals ours.
    pub in_sync: bool,
}

/// The node's cluster state.
#[derive(Debug)]
pub struct Cluster {
    /// The replicated table.
    pub replica: Replica,
    name: String,
    epoch: u64,
    seq: u64,
    key: Key,
    peers: heapless::LinearMap<NodeId, Peer, MAX_PEERS>,
    drops: Drops,
    outbox: Vec<(Dest, Vec<u8>)>,
    next_digest: u64,
    next_collect: u64,
    hold_until: Option<u64>,
    changed: VecSet<String>,
    /// The digest bucket the next repair starts from.
    repair_from: usize,
    /// Datagrams and bytes sent, for `status` and the benchmarks.
    pub sent: (u64, u64),
    /// Lines for the agent's log (see [`Cluster::take_log`]).
    log: Vec<String>,
}

/// Drop counters by source and reason, within a fixed capacity.
#[derive(Debug, Default)]
struct Drops {
    by_source: heapless::LinearMap<(SocketAddr, DropReason), u64, MAX_DROP_COUNTERS>,
    /// Drops from sources beyond the capacity, by reason ([`DropReason::ALL`]'s order).
    beyond: [u64; DropReason::ALL.len()],
}

impl Drops {
    /// Counts one; `Some(first)`: whether it is the first of its reason from its source, `None`:
    /// counted beyond the capacity.
    fn count(&mut self, from: SocketAddr, why: DropReason) -> Option<bool> {
        if let Some(n) = self.by_source.get_mut(&(from, why)) {
            *n += 1;
            return Some(false);
        }
        if self.by_source.insert((from, why), 1).is_ok() {
            return Some(true);
        }
        let i = DropReason::ALL.iter().position(|&r| r == why).unwrap_or(0);
        self.beyond[i] += 1;
        None
    }

    /// Every counter, sorted by source and reason; those beyond the capacity last, under the
    /// unspecified address.
    fn list(&self) -> Vec<(SocketAddr, DropReason, u64)> {
        let mut out: Vec<_> = self.by_source.iter().map(|(k, n)| (k.0, k.1, *n)).collect();
        out.sort_unstable();
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        let beyond = DropReason::ALL.iter().zip(self.beyond);
        out.extend(beyond.filter(|b| b.1 > 0).map(|(&why, n)| (any, why, n)));
        out
    }
}

impl Cluster {
    /// A node named `name`, booted at `wall_ms` (its epoch), at monotonic time `mono_ms`.
    /// `hold` keeps the adopted table in place until caught up.
    pub fn new(name: &str, key: Key, wall_ms: u64, mono_ms: u64, hold: bool) -> Cluster {
        let me = node_id(name);
        Cluster {
            replica: Replica::new(me),
            name: name.chars().take(wire::MAX_NODE_NAME).collect(),
            epoch: wall_ms,
            seq: 0,
            key,
            peers: heapless::LinearMap::new(),
            drops: Drops::default(),
            outbox: Vec::new(),
            // Spread the nodes' digest rounds apart.
            next_digest: mono_ms + DIGEST_MS + me % DIGEST_MS,
            next_collect: mono_ms + COLLECT_MS,
            hold_until: hold.then_some(mono_ms + CATCH_UP_MS),
            changed: VecSet::new(),
            // Peers answering one digest start at different buckets, so a late joiner gets
            // different parts of the state from each.
            repair_from: (me % BUCKETS as u64) as usize,
            sent: (0, 0),
            log: Vec::new(),
        }
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the table must not be published yet (catching up after a restart).
    pub fn holding(&self) -> bool {
        self.hold_until.is_some()
    }

    fn header(&mut self, wall_ms: u64, body: Body) -> Message {
        self.seq += 1;
        Message {
            version: VERSION,
            node: self.replica.me(),
            epoch: self.epoch,
            seq: self.seq,
            sent_ms: wall_ms,
            body,
        }
    }

    fn send(&mut self, dest: Dest, wall_ms: u64, body: Body) {
        let msg = self.header(wall_ms, body);
        if let Some(d) = wire::seal(&msg, &self.key) {
            self.outbox.push((dest, d));
        }
    }

    /// Sends entries (a command's effect, or a repair).
    pub fn send_entries(&mut self, dest: Dest, entries: &[Entry], wall_ms: u64) {
        if entries.is_empty() {
            return;
        }
        let key = self.key.clone();
        let grams = wire::pack(entries, &key, || {
            self.header(wall_ms, Body::Entries(Vec::new()))
        });
        self.outbox.extend(grams.into_iter().map(|d| (dest, d)));
    }

    /// Announces this node with its initial state.
    pub fn hello(&mut self, wall_ms: u64) {
        let digest = self.replica.digest().to_vec();
        let name = self.name.clone();
        self.send(Dest::All, wall_ms, Body::Hello { name, digest });
    }

    /// Datagrams to send, oldest first.
    pub fn take_outbox(&mut self) -> Vec<(Dest, Vec<u8>)> {
        let out = std::mem::take(&mut self.outbox);
        for (_, d) in &out {
            self.sent.0 += 1;
            self.sent.1 += d.len() as u64;
        }
        out
    }

    /// Names of services whose replicated state changed since the last call.
    pub fn take_changed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.changed).into_keys().collect()
    }

    /// Handles one received datagram.
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr, wall_ms: u64) {
        let msg = match wire::open(bytes, &self.key) {
            Ok(m) => m,
            Err(d) => return self.dropped(from, d),
        };
        if msg.node == self.replica.me() {
            // Our own multicast looped back. From another boot, and fresh: a second node with
            // our name, whose every datagram is ignored as ours; counted, and logged once a source.
            if msg.epoch != self.epoch && msg.sent_ms.abs_diff(wall_ms) <= FRESH_MS {
                self.dropped(from, DropReason::SameName);
            }
            return;
        }
        if msg.sent_ms.abs_diff(wall_ms) > FRESH_MS {
            return self.dropped(from, DropReason::Stale);
        }
        if let Err(why) = self.accept_seq(&msg, from, wall_ms) {
            return self.dropped(from, why);
        }
        let node = msg.node;
        match msg.body {
            Body::Hello { name, digest } => {
                self.named(node, name);
                self.compare(node, from, &digest, true, wall_ms);
            }
            Body::Digest {
                name,
                digest,
                reply,
            } => {
                self.named(node, name);
                self.compare(node, from, &digest, !reply, wall_ms);
            }
            Body::Entries(es) => self.merge(&es, from, wall_ms),
        }
    }

    /// Merges a datagram's entries; one refused (counted once for the datagram) leaves the
    /// others to be taken in.
    fn merge(&mut self, es: &[wire::WEntry], from: SocketAddr, wall_ms: u64) {
        let mut ahead = None;
        // `open` checked every entry converts.
        for e in es.iter().filter_map(wire::from_wire) {
            match self.replica.merge(&e, wall_ms) {
                Ok(true) => {
                    self.changed.insert(e.name().as_str().to_owned(), ());
                }
                Ok(false) => {}
                Err(Refused::Future(ms)) => ahead = ahead.max(Some(ms)),
            }
        }
        if let Some(ms) = ahead {
            let detail = format!("up to {} s", ms.div_ceil(1000));
            self.refuse(from, DropReason::Future, &detail);
        }
    }

    fn named(&mut self, node: NodeId, name: String) {
        if let Some(p) = self.peers.get_mut(&node) {
            p.name = name;
        }
    }

    /// Answers a digest: the entries of the buckets that differ, and (unless it was a reply)
    /// our digest so the sender can send what it knows better.
    fn compare(&mut self, node: NodeId, from: SocketAddr, theirs: &[u32], answer: bool, wall: u64) {
        let ours = self.replica.digest();
        let mask = (0..BUCKETS)
            .filter(|&i| theirs.get(i) != Some(&ours[i]))
            .fold(0u64, |m, i| m | 1 << i);
        if let Some(p) = self.peers.get_mut(&node) {
            p.in_sync = mask == 0;
        }
        if mask == 0 {
            // Someone agrees with us: a restarted node has caught up.
            self.hold_until = None;
            return;
        }
        let entries = self.repair(mask);
        self.send_entries(Dest::To(from), &entries, wall);
        if answer {
            let name = self.name.clone();
            self.send(
                Dest::To(from),
                wall,
                Body::Digest {
                    name,
                    digest: ours.to_vec(),
                    reply: true,
                },
            );
        }
    }

    /// What one answer to a digest carries: the entries of whole differing buckets in `mask`,
    /// from where the last answer stopped, until [`REPAIR_ENTRIES`] are taken (at least one
    /// bucket); the others go in the answers to later digests.
    fn repair(&mut self, mask: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        for i in 0..BUCKETS {
            let b = (self.repair_from + i) % BUCKETS;
            if mask & 1 << b == 0 {
                continue;
            }
            if out.len() >= REPAIR_ENTRIES {
                self.repair_from = b;
                return out;
            }
            out.extend(self.replica.entries(1 << b));
        }
        out
    }

    /// The replay check; records the sequence number when it passes.
    fn accept_seq(
        &mut self,
        m: &Message,
        from: SocketAddr,
        wall_ms: u64,
    ) -> Result<(), DropReason> {
        let fresh = Peer {
            name: String::from("?"),
            addr: from,
            heard_ms: wall_ms,
            epoch: m.epoch,
            top: m.seq,
            seen: 1,
            in_sync: false,
        };
        let Some(p) = self.peers.get_mut(&m.node) else {
            return match self.peers.insert(m.node, fresh) {
                Ok(_) => Ok(()),
                Err(_) => Err(DropReason::TooManyPeers),
            };
        };
        if m.epoch < p.epoch {
            return Err(DropReason::Replay);
        }
        if m.epoch > p.epoch {
            *p = Peer {
                name: std::mem::take(&mut p.name),
                ..fresh
            };
            return Ok(());
        }
        if m.seq > p.top {
            let shift = m.seq - p.top;
            p.seen = if shift >= WINDOW { 0 } else { p.seen << shift };
            p.seen |= 1;
            p.top = m.seq;
        } else {
            let back = p.top - m.seq;
            if back >= WINDOW || p.seen & (1 << back) != 0 {
                return Err(DropReason::Replay);
            }
            p.seen |= 1 << back;
        }
        p.addr = from;
        p.heard_ms = wall_ms;
        Ok(())
    }

    /// Counts a refused datagram under its reason and source.
    pub fn dropped(&mut self, from: SocketAddr, why: DropReason) {
        self.refuse(from, why, "");
    }

    /// Counts a refused datagram; the first of a reason that needs an operator's attention
    /// from each source is logged, with `detail`.
    fn refuse(&mut self, from: SocketAddr, why: DropReason, detail: &str) {
        match self.drops.count(from, why) {
            Some(true) => {
                if let Some(line) = self.warning(from, why, detail) {
                    self.log.push(line);
                }
            }
            Some(false) => {}
            None if self.drops.beyond.iter().sum::<u64>() == 1 => self.log.push(format!(
                "cluster: warning: {MAX_DROP_COUNTERS} drop counters in use; drops from further \
                 sources are counted by reason alone, under 0.0.0.0:0"
            )),
            None => {}
        }
    }

    /// The line logged for the first drop of `why` from `from`, if its reason needs one.
    fn warning(&self, from: SocketAddr, why: DropReason, detail: &str) -> Option<String> {
        let what = match why {
            DropReason::SameName => format!(
                "sends under this node's name {}; its datagrams are ignored (every node needs a \
                 name of its own: `node NAME`)",
                self.name
            ),
            DropReason::TooManyPeers => format!(
                "a new node refused, {MAX_PEERS} peers already (the most this agent tracks)"
            ),
            DropReason::Future => format!(
                "entries stamped {detail} ahead of this node's clock refused (the cluster's \
                 clocks must agree within {} s: is NTP running, there and here?)",
                AHEAD_MS / 1000
            ),
            _ => return None,
        };
        Some(format!("cluster: warning: {}: {what}", Sock(from)))
    }

    /// Lines for the agent's log, oldest first.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// Does what is due at `now`: the periodic digest, tombstone collection, the end of a hold.
    pub fn tick(&mut self, mono_ms: u64, wall_ms: u64) {
        if self.hold_until.is_some_and(|t| mono_ms >= t) {
            self.hold_until = None;
        }
        if mono_ms >= self.next_digest {
            let digest = self.replica.digest().to_vec();
            let name = self.name.clone();
            self.send(
                Dest::All,
                wall_ms,
                Body::Digest {
                    name,
                    digest,
                    reply: false,
                },
            );
            self.next_digest = mono_ms + DIGEST_MS;
        }
        if mono_ms >= self.next_collect {
            for name in self.replica.collect(wall_ms) {
                self.changed.insert(name.as_str().to_owned(), ());
            }
            self.next_collect = mono_ms + COLLECT_MS;
        }
    }

    /// When [`Cluster::tick`] must next run (monotonic ms).
    pub fn next_deadline(&self) -> u64 {
        let d = self.next_digest.min(self.next_collect);
        self.hold_until.map_or(d, |h| d.min(h))
    }

    /// Drop counts by source and reason.
    #[cfg(test)]
    pub fn drops(&self) -> Vec<(SocketAddr, DropReason, u64)> {
        self.drops.list()
    }

    /// The state `status` shows, one record a line (see `status::Cluster`).
    pub fn status_lines(&self, wall_ms: u64) -> String {
        let mut o = format!(
            "node {} {:016x} {} {} {} {}\n",
            self.name,
            self.replica.me(),
            self.epoch,
            wall_ms,
            self.sent.0,
            self.sent.1
        );
        let mut peers: Vec<_> = self.peers.iter().collect();
        peers.sort_unstable_by_key(|(id, _)| **id);
        for (id, p) in peers {
            o += &format!(
                "peer {} {id:016x} {} {} {} {}\n",
                p.name,
                Sock(p.addr),
                p.heard_ms,
                p.epoch,
                p.in_sync
            );
        }
        for (addr, why, n) in self.drops.list() {
            o += &format!("drop {} {} {n}\n", Sock(addr), why.name());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbfo_core::{parse_line, Command, Line};

    fn cmd(line: &str) -> Command {
        match parse_line(line) {
            Ok(Some(Line::Command(c))) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    const T0: u64 = 1_700_000_000_000;

    fn node(name: &str) -> Cluster {
        Cluster::new(name, Key::new(b"k".to_vec()), T0, 0, false)
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 7946))
    }

    /// Delivers every queued datagram among `nodes` (a fake network: `All` reaches everyone
    /// else, `To` its address), dropping those `lose` picks, until nothing is left to send.
    fn settle(nodes: &mut [Cluster], wall: u64, mut lose: impl FnMut() -> bool) -> usize {
        let mut rounds = 0;
        loop {
            let mut any = false;
            for i in 0..nodes.len() {
                for (dest, d) in nodes[i].take_outbox() {
                    any = true;
                    for (j, node) in nodes.iter_mut().enumerate() {
                        let to = addr(j as u8 + 1);
                        let hit = match dest {
                            Dest::All => j != i,
                            Dest::To(a) => a == to,
                        };
                        if hit && !lose() {
                            node.datagram(&d, addr(i as u8 + 1), wall);
                        }
                    }
                }
            }
            if !any {
                return rounds;
            }
            rounds += 1;
        }
    }

    fn run(c: &mut Cluster, line: &str, wall: u64) {
        let es = c.replica.command(&cmd(line), wall).unwrap();
        c.send_entries(Dest::All, &es, wall);
    }

    #[test]
    fn a_second_node_with_our_name_is_counted_and_reported_once_a_source() {
        let later = T0 + 5_000;
        let mut a = node("gw");
        let mut twin = Cluster::new("gw", Key::new(b"k".to_vec()), later, 0, false);
        // Our own datagrams, looped back: ignored, not counted.
        run(&mut a, "add x.lan 10.0.0.2", later);
        for (_, d) in a.take_outbox() {
            a.datagram(&d, addr(1), later);
        }
        assert_eq!((a.drops().len(), a.take_log().len()), (0, 0));
        run(&mut twin, "add w.lan 10.0.0.1", later);
        let sent = twin.take_outbox();
        assert!(!sent.is_empty());
        for (_, d) in &sent {
            a.datagram(d, addr(2), later);
        }
        let log = a.take_log();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("10.0.0.2:7946: sends under this node's name gw"));
        assert!(
            a.replica.service("w.lan").is_none(),
            "the twin's change is not applied"
        );
        let same_name = |a: &Cluster| -> u64 {
            a.drops()
                .iter()
                .filter(|(s, why, _)| *s == addr(2) && *why == DropReason::SameName)
                .map(|d| d.2)
                .sum()
        };
        assert_eq!(same_name(&a), sent.len() as u64);
        // More from the same source: counted, not reported again.
        run(&mut twin, "add v.lan 10.0.0.3", later + 1_000);
        for (_, d) in twin.take_outbox() {
            a.datagram(&d, addr(2), later + 1_000);
        }
        assert!(a.take_log().is_empty());
        assert!(same_name(&a) > sent.len() as u64);
    }

    #[test]
    fn the_peer_map_and_the_drop_counters_are_capped_counted_and_logged() {
        let mut a = node("a");
        for i in 0..=MAX_PEERS {
            let mut p = node(&format!("p{i}"));
            p.hello(T0);
            for (_, d) in p.take_outbox() {
                a.datagram(&d, addr(2), T0);
            }
        }
        assert_eq!(a.peers.len(), MAX_PEERS);
        assert_eq!(a.drops(), [(addr(2), DropReason::TooManyPeers, 1)]);
        let log = a.take_log();
        assert_eq!(log.len(), 1, "{log:?}");
        let want = format!("a new node refused, {MAX_PEERS} peers already");
        assert!(log[0].contains(&want), "{log:?}");
        // Garbage from more sources than there are counters: the rest counted by reason alone.
        let mut b = node("b");
        for i in 0..MAX_DROP_COUNTERS + 10 {
            let from = SocketAddr::from(([10, 1, (i / 256) as u8, i as u8], 7946));
            b.datagram(b"short", from, T0);
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
        let (mut a, mut b) = (node("a"), node("b"));
        // Entries stamped an hour ahead (a forger, or a hybrid clock dragged there), sent now.
        for line in ["add w.lan 10.0.0.1", "add x.lan 10.0.0.2"] {
            let es = a.replica.command(&cmd(line), T0 + 3_600_000).unwrap();
            a.send_entries(Dest::All, &es, T0);
        }
        let grams = a.take_outbox();
        for (_, d) in &grams {
            b.datagram(d, addr(1), T0);
        }
        assert!(b.replica.names().next().is_none(), "nothing taken in");
        assert_eq!(b.drops(), [(addr(1), DropReason::Future, 2)]);
        let log = b.take_log();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(
            log[0].contains("10.0.0.1:7946: entries stamped up to 3600 s ahead"),
            "{log:?}"
        );
        // Within the window: taken.
        let mut c = node("c");
        let es = c
            .replica
            .command(&cmd("add y.lan 10.0.0.3"), T0 + AHEAD_MS)
            .unwrap();
        c.send_entries(Dest::All, &es, T0);
        for (_, d) in c.take_outbox() {
            b.datagram(&d, addr(1), T0);
        }
        assert!(b.replica.service("y.lan").is_some());
        assert_eq!(b.drops().len(), 1);
    }

    #[test]
    fn commands_spread_and_digests_repair_loss() {
        let mut nodes: Vec<Cluster> = ["a", "b", "c"].iter().map(|n| node(n)).collect();
        run(&mut nodes[0], "add w.lan 10.0.0.1", T0);
        settle(&mut nodes, T0, || false);
        assert!(nodes.iter().all(|n| n.replica.service("w.lan").is_some()));
        // Lose every command datagram; the next digest round repairs it.
        run(&mut nodes[1], "down w.lan 10.0.0.1", T0 + 1);
        nodes[1].take_outbox();
        assert_ne!(nodes[0].replica.digest(), nodes[1].replica.digest());
        for (i, n) in nodes.iter_mut().enumerate() {
            n.tick(DIGEST_MS * 2 + i as u64, T0 + 500);
        }
        settle(&mut nodes, T0 + 500, || false);
        let d = nodes[0].replica.digest();
        assert!(nodes.iter().all(|n| n.replica.digest() == d));
        assert!(
            !nodes[2].replica.service("w.lan").unwrap().backends[0]
                .unwrap()
                .up
        );
        // In sync: a digest round sends digests only.
        for n in nodes.iter_mut() {
            n.tick(DIGEST_MS * 4, T0 + 1000);
        }
        let before: u64 = nodes.iter().map(|n| n.sent.0).sum();
        settle(&mut nodes, T0 + 1000, || false);
        let after: u64 = nodes.iter().map(|n| n.sent.0).sum();
        assert_eq!(after - before, 3, "one digest each, nothing else");
    }

    #[test]
    fn a_late_joiner_gets_everything_at_once() {
        let mut nodes = vec![node("a"), node("b")];
        for i in 0..300 {
            run(
                &mut nodes[i % 2],
                &format!("add s{i}.lan 10.0.{}.{}", i / 200, i % 200 + 1),
                T0,
            );
        }
        settle(&mut nodes, T0, || false);
        nodes.push(node("late"));
        nodes[2].hello(T0 + 10);
        settle(&mut nodes, T0 + 10, || false);
        assert_eq!(nodes[2].replica.digest(), nodes[0].replica.digest());
        assert_eq!(nodes[2].replica.names().count(), 300);
    }

    /// Found by the soak's datagram flood (three agents, 12,800 backends, configs written
    /// milliseconds apart): each answer to a digest was the whole differing state, and the
    /// cluster drowned in its own repairs. One answer is now bounded; the rounds still converge.
    #[test]
    fn an_answer_to_a_digest_is_bounded_and_rounds_still_converge() {
        let (mut a, mut b) = (node("a"), node("b"));
        for i in 0..2000 {
            let line = format!("add s{i}.lan 10.0.{}.{} weight=2", i / 200, i % 200 + 1);
            a.replica.command(&cmd(&line), T0).unwrap();
        }
        for round in 1..=20u64 {
            b.tick(round * DIGEST_MS * 2, T0);
            for (_, d) in b.take_outbox() {
                a.datagram(&d, addr(2), T0);
            }
            let answer = a.take_outbox();
            assert!(
                answer.len() <= 60,
                "{} datagrams answer one digest",
                answer.len()
            );
            for (_, d) in &answer {
                b.datagram(d, addr(1), T0);
            }
            b.take_outbox();
            if b.replica.digest() == a.replica.digest() {
                assert!(round >= 4, "bounded answers need several rounds");
                return;
            }
        }
        panic!("b has {} of 2000 services", b.replica.names().count());
    }

    #[test]
    fn heavy_loss_converges_through_digest_rounds() {
        let mut nodes: Vec<Cluster> = (0..8).map(|i| node(&format!("n{i}"))).collect();
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
                n.tick(rounds * DIGEST_MS * 2, T0);
            }
            settle(&mut nodes, T0, &mut lose);
        }
        assert!(rounds <= 4, "{rounds} digest rounds");
    }

    #[test]
    fn replays_stale_and_foreign_datagrams_are_counted_and_ignored() {
        let (mut a, mut b) = (node("a"), node("b"));
        run(&mut a, "add w.lan 10.0.0.1", T0);
        let grams = a.take_outbox();
        let d = &grams[0].1;
        b.datagram(d, addr(1), T0);
        assert!(b.replica.service("w.lan").is_some());
        b.datagram(d, addr(1), T0 + 5);
        // Far-future sequence numbers move the window; an old one below it is a replay.
        let mut later = Vec::new();
        for _ in 0..WINDOW + 2 {
            run(&mut a, "weight w.lan 10.0.0.1 2", T0);
            later.extend(a.take_outbox());
        }
        for (_, g) in &later {
            b.datagram(g, addr(1), T0);
        }
        b.datagram(&later[0].1, addr(1), T0);
        // Out of order within the window is fine.
        run(&mut a, "weight w.lan 10.0.0.1 3", T0);
        run(&mut a, "weight w.lan 10.0.0.1 4", T0);
        let two = a.take_outbox();
        b.datagram(&two[1].1, addr(1), T0);
        b.datagram(&two[0].1, addr(1), T0);
        assert_eq!(
            b.replica.service("w.lan").unwrap().backends[0]
                .unwrap()
                .weight,
            4
        );
        // A datagram from an earlier boot of `a`.
        let mut a2 = Cluster::new("a", Key::new(b"k".to_vec()), T0 + 100, 0, false);
        a2.hello(T0 + 100);
        b.datagram(&a2.take_outbox()[0].1, addr(1), T0 + 100);
        b.datagram(d, addr(1), T0 + 100);
        // Stale, wrong key, garbage.
        run(&mut a2, "add x.lan 10.0.0.2", T0 + 100);
        let g = a2.take_outbox();
        b.datagram(&g[0].1, addr(1), T0 + 100 + FRESH_MS + 1);
        let mut evil = Cluster::new("evil", Key::new(b"other".to_vec()), T0, 0, false);
        run(&mut evil, "add w.lan 6.6.6.6", T0);
        b.datagram(&evil.take_outbox()[0].1, addr(6), T0);
        let random = b"random bytes, not a message at all, long enough to pass";
        b.datagram(&[&[VERSION][..], random].concat(), addr(7), T0);
        assert!(b.replica.service("x.lan").is_none());
        assert_eq!(b.replica.service("w.lan").unwrap().iter().count(), 1);
        let drops: Vec<String> = b
            .drops()
            .iter()
            .map(|(a, w, n)| format!("{} {} {n}", Sock(*a), w.name()))
            .collect();
        assert_eq!(
            drops,
            [
                "10.0.0.1:7946 replay 3",
                "10.0.0.1:7946 stale 1",
                "10.0.0.6:7946 bad_mac 1",
                "10.0.0.7:7946 bad_mac 1"
            ]
        );
        let status = b.status_lines(T0);
        assert!(status.contains("\npeer a "), "{status}");
    }

    #[test]
    fn a_restart_does_not_roll_back_and_catches_up() {
        let mut nodes = vec![node("a"), node("b")];
        nodes[0]
            .replica
            .config_line(&cmd("add w.lan 10.0.0.1"), T0 - 5000, T0);
        nodes[1]
            .replica
            .config_line(&cmd("add w.lan 10.0.0.1"), T0 - 5000, T0);
        run(&mut nodes[1], "down w.lan 10.0.0.1", T0);
        run(&mut nodes[1], "add w.lan 10.0.0.2", T0);
        settle(&mut nodes, T0, || false);
        // `a` restarts from its config only, holding its adopted table.
        let mut a = Cluster::new("a", Key::new(b"k".to_vec()), T0 + 50, 0, true);
        a.replica
            .config_line(&cmd("add w.lan 10.0.0.1"), T0 - 5000, T0);
        assert!(a.holding());
        a.hello(T0 + 50);
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
        // The next digest round shows agreement: the hold ends.
        nodes[1].tick(10_000, T0 + 60);
        settle(&mut nodes, T0 + 60, || false);
        assert!(!nodes[0].holding());
    }
}
