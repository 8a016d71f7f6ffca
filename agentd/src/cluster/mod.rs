//! The cluster protocol: who we heard, what we refuse, what we send and when. No sockets.
//!
//! [`Cluster`] owns the node's [`Replica`] and everything about peers; the loop hands it
//! datagrams with their source ([`Cluster::datagram`]) and the time, and sends what
//! [`Cluster::take_outbox`] returns. It never blocks and never fails: a datagram it cannot use is
//! counted under its [`DropReason`] and source address, and forgotten.
//!
//! The exchanges:
//! - **start**: a `Hello` with our digest (our config, stamped with its mtime). Every peer that
//!   does not yet believe this boot challenges it (below), then sends us its digest, which we
//!   answer with the entries where we know better and our digest, which it answers likewise.
//! - **command**: its entries go to the group (and every `peer`) at once.
//! - **anti-entropy**: every [`DIGEST_MS`] a `Digest` goes to the group. A node whose digest
//!   differs answers the sender directly with the differing buckets' entries and its own digest
//!   (`reply: true`, never answered with another digest), so both sides repair within one round
//!   trip, and nothing is sent while all digests agree.
//! - **replay**: a peer's datagrams are believed only from the boot that answered a challenge
//!   sent to it, then within a sliding window of sequence numbers (see [`peers`]). No clock is
//!   trusted for it: a node whose clock is behind is heard as soon as it answers.
//! - **challenge**: a datagram from a boot not believed draws a `Challenge` to its source, no
//!   larger than that datagram, which the peer answers (`Answer`, no larger than the challenge);
//!   a boot that answers is believed, at the address the challenge reached.
//! - **reflection**: nothing but a challenge or an answer, each no larger than what drew it, is
//!   ever sent to the source of a datagram; repairs and digest replies go to the address the peer
//!   proved (never to where a datagram claims to come from), at most
//!   [`peers::REPAIR_BYTES_PER_S`] of repairs a second, and every unicast message names the node
//!   it is for inside the MAC, so replayed to another node it is refused there.

pub mod drops;
#[doc(hidden)]
pub mod fuzzing;
pub mod peers;
pub mod replica;
pub mod socket;
#[cfg(test)]
mod tests;
pub mod wire;

use lbfo_core::addr::Sock;
use std::net::SocketAddr;

use crate::cluster::drops::{Counted, Drops, MAX_DROP_COUNTERS};
use crate::cluster::peers::{Peers, Verdict, MAX_PEERS};
use crate::cluster::replica::{node_id, Entry, NodeId, Refused, Replica, AHEAD_MS, BUCKETS};
use crate::cluster::wire::{Body, DropReason, Key, Message, CHALLENGE_PAD, MAX_DATAGRAM, VERSION};
use crate::vecmap::VecSet;

/// How often each node sends its digest. Four rounds a second repair a lost command within
/// about a quarter of a second, at about 250 bytes per node per round.
pub const DIGEST_MS: u64 = 250;
/// How long a restarted agent keeps showing the table it adopted before publishing the cluster's
/// state, unless a peer's digest shows it has caught up sooner.
pub const CATCH_UP_MS: u64 = 1000;
/// How often tombstones are collected.
pub const COLLECT_MS: u64 = 10_000;

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

/// What a replica full for `why` says of an entry of service `name` it refused.
pub fn full_text(why: Refused, name: &str) -> String {
    match why {
        Refused::Services(n) => format!(
            "a new service ({name}) where this node holds {n}, twice the table's capacity (room \
             for its tombstones)"
        ),
        Refused::Backends(n) => format!(
            "a new backend of {name}, which holds {n}, four times the table's room (tombstones \
             included)"
        ),
        Refused::Future(ms) => format!("{name} stamped {ms} ms ahead"),
    }
}

/// The node's cluster state.
#[derive(Debug)]
pub struct Cluster {
    /// The replicated table.
    pub replica: Replica,
    name: String,
    boot: u64,
    epoch: u64,
    seq: u64,
    key: Key,
    peers: Peers,
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

impl Cluster {
    /// A node named `name` (a node name: `lbfo_core::name::is_node_name`), started at `wall_ms`
    /// (its epoch) and monotonic time `mono_ms`, with `random` bytes from the kernel (its boot
    /// nonce, and the secret of its cookies). `hold` keeps the adopted table in place until
    /// caught up.
    pub fn new(
        name: &str,
        key: Key,
        random: [u8; 32],
        wall_ms: u64,
        mono_ms: u64,
        hold: bool,
    ) -> Cluster {
        let me = node_id(name);
        let (boot, secret) = random.split_at(8);
        let mut first = [0u8; 8];
        first.copy_from_slice(boot);
        Cluster {
            replica: Replica::new(me),
            name: name.to_owned(),
            boot: u64::from_le_bytes(first),
            epoch: wall_ms,
            seq: 0,
            key,
            peers: Peers::new(Key::new(secret.to_vec())),
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

    fn header(&mut self, wall_ms: u64, to: Option<NodeId>, body: Body) -> Message {
        self.seq += 1;
        // A clock set back since the start must not make our datagrams look sent before it.
        self.epoch = self.epoch.min(wall_ms);
        Message {
            version: VERSION,
            node: self.replica.me(),
            boot: self.boot,
            epoch: self.epoch,
            seq: self.seq,
            sent_ms: wall_ms,
            to,
            body,
        }
    }

    /// Seals and queues one message to `dest` (for node `to`, if one); nothing is sent if it
    /// would not fit in `budget` bytes (the size of the datagram it answers).
    fn send(&mut self, dest: Dest, to: Option<NodeId>, wall: u64, body: Body, budget: usize) {
        let msg = self.header(wall, to, body);
        if let Some(d) = wire::seal(&msg, &self.key).filter(|d| d.len() <= budget) {
            self.outbox.push((dest, d));
        }
    }

    /// Sends entries (a command's effect) to the group (`dest` is [`Dest::All`]; a repair goes
    /// to one peer by `repair_to`).
    pub fn send_entries(&mut self, dest: Dest, entries: &[Entry], wall_ms: u64) {
        if entries.is_empty() {
            return;
        }
        let key = self.key.clone();
        let grams = wire::pack(entries, &key, || {
            self.header(wall_ms, None, Body::Entries(Vec::new()))
        });
        self.outbox.extend(grams.into_iter().map(|d| (dest, d)));
    }

    /// Sends a repair to peer `node` at the address it proved, as far as its repair budget goes
    /// (the rest goes in answers to its later digests).
    fn repair_to(&mut self, node: NodeId, entries: &[Entry], mono: u64, wall: u64) {
        let Some(p) = self.peers.get_mut(node) else {
            return;
        };
        if p.budget(mono) < MAX_DATAGRAM as u64 {
            // Spent (a peer asking far too often): not even packed.
            return;
        }
        let addr = p.addr;
        let key = self.key.clone();
        let grams = wire::pack(entries, &key, || {
            self.header(wall, Some(node), Body::Entries(Vec::new()))
        });
        for d in grams {
            if !self
                .peers
                .get_mut(node)
                .is_some_and(|p| p.spend(d.len(), mono))
            {
                return;
            }
            self.outbox.push((Dest::To(addr), d));
        }
    }

    /// Announces this node with its initial state.
    pub fn hello(&mut self, wall_ms: u64) {
        let digest = self.replica.digest().to_vec();
        let name = self.name.clone();
        let hello = Body::Hello { name, digest };
        self.send(Dest::All, None, wall_ms, hello, usize::MAX);
    }

    /// Sends our digest to the group, or to one peer (`to`) at the address it proved.
    fn digest(&mut self, to: Option<NodeId>, reply: bool, wall_ms: u64) {
        let dest = match to {
            None => Dest::All,
            Some(node) => match self.peers.get(node) {
                Some(p) => Dest::To(p.addr),
                None => return,
            },
        };
        let digest = self.replica.digest().to_vec();
        let name = self.name.clone();
        let body = Body::Digest {
            name,
            digest,
            reply,
        };
        self.send(dest, to, wall_ms, body, usize::MAX);
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
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr, mono_ms: u64, wall_ms: u64) {
        let msg = match wire::open(bytes, &self.key) {
            Ok(m) => m,
            Err(d) => return self.dropped(from, d),
        };
        if msg.node == self.replica.me() {
            // Our own multicast looped back. From another boot, sent about now: a second node
            // with our name, whose every datagram is ignored as ours; counted, and logged once a
            // source. (The clock only tells a twin from a replay of our own earlier boot, for
            // this count.)
            if msg.boot != self.boot && msg.sent_ms.abs_diff(wall_ms) <= AHEAD_MS {
                self.dropped(from, DropReason::SameName);
            }
            return;
        }
        if msg.to.is_some_and(|to| to != self.replica.me()) {
            return self.dropped(from, DropReason::Misdirected);
        }
        match msg.body {
            Body::Challenge { cookie, .. } => {
                return self.answer(msg.node, cookie, from, bytes.len(), wall_ms)
            }
            Body::Answer { cookie } => return self.answered(&msg, cookie, from, mono_ms, wall_ms),
            _ => {}
        }
        match self.peers.check(&msg, mono_ms, wall_ms) {
            Verdict::Take => {}
            Verdict::Replay => return self.dropped(from, DropReason::Replay),
            Verdict::Unverified => {
                self.dropped(from, DropReason::Unverified);
                return self.challenge(msg.node, from, bytes.len(), mono_ms, wall_ms);
            }
        }
        if self.peers.get(msg.node).is_some_and(|p| p.addr != from) {
            // Believed, from another address: moved, if it answers there.
            self.challenge(msg.node, from, bytes.len(), mono_ms, wall_ms);
        }
        let node = msg.node;
        match msg.body {
            Body::Hello { name, digest } => {
                self.named(node, name);
                self.compare(node, &digest, true, mono_ms, wall_ms);
            }
            Body::Digest {
                name,
                digest,
                reply,
            } => {
                self.named(node, name);
                self.compare(node, &digest, !reply, mono_ms, wall_ms);
            }
            Body::Entries(es) => self.merge(&es, from, wall_ms),
            Body::Challenge { .. } | Body::Answer { .. } => {}
        }
    }

    /// Challenges `node` at `to`, if the challenge fits in `budget` bytes (the datagram that
    /// asked for it).
    fn challenge(&mut self, node: NodeId, to: SocketAddr, budget: usize, mono: u64, wall: u64) {
        let body = Body::Challenge {
            cookie: self.peers.cookie(node, to, mono),
            pad: [0; CHALLENGE_PAD],
        };
        self.send(Dest::To(to), Some(node), wall, body, budget);
    }

    /// Answers `node`'s challenge, to its source, if the answer fits in the challenge's `budget`
    /// bytes.
    fn answer(&mut self, node: NodeId, cookie: u64, from: SocketAddr, budget: usize, wall: u64) {
        let body = Body::Answer { cookie };
        self.send(Dest::To(from), Some(node), wall, body, budget);
    }

    /// An answer to one of our challenges, from the address it was sent to: its boot believed,
    /// there, and (if newly) our digest sent to it at once, so the two repair each other without
    /// waiting for a digest round.
    fn answered(&mut self, msg: &Message, cookie: u64, from: SocketAddr, mono: u64, wall: u64) {
        match self.peers.answered(msg, cookie, from, mono, wall) {
            Ok(true) => self.digest(Some(msg.node), false, wall),
            Ok(false) => {}
            Err(why) => self.dropped(from, why),
        }
    }

    /// Merges a datagram's entries; one refused (counted once for the datagram) leaves the
    /// others to be taken in.
    fn merge(&mut self, es: &[wire::WEntry], from: SocketAddr, wall_ms: u64) {
        let (mut ahead, mut full) = (None, None);
        // `open` checked every entry converts.
        for e in es.iter().filter_map(wire::from_wire) {
            match self.replica.merge(&e, wall_ms) {
                Ok(true) => {
                    self.changed.insert(e.name().as_str().to_owned(), ());
                }
                Ok(false) => {}
                Err(Refused::Future(ms)) => ahead = ahead.max(Some(ms)),
                Err(why) => full = full.or(Some((why, e.name().as_str().to_owned()))),
            }
        }
        if let Some(ms) = ahead {
            let detail = format!("up to {} s", ms.div_ceil(1000));
            self.refuse(from, DropReason::Future, &detail);
        }
        if let Some((why, name)) = full {
            self.refuse(from, DropReason::Full, &full_text(why, &name));
        }
    }

    fn named(&mut self, node: NodeId, name: String) {
        if let Some(p) = self.peers.get_mut(node) {
            p.name = name;
        }
    }

    /// Answers peer `node`'s digest (at the address it proved): the entries of the buckets that
    /// differ, and (unless it was a reply) our digest so it can send what it knows better.
    fn compare(&mut self, node: NodeId, theirs: &[u32], answer: bool, mono: u64, wall: u64) {
        let ours = self.replica.digest();
        let mask = (0..BUCKETS)
            .filter(|&i| theirs.get(i) != Some(&ours[i]))
            .fold(0u64, |m, i| m | 1 << i);
        if let Some(p) = self.peers.get_mut(node) {
            p.in_sync = mask == 0;
        }
        if mask == 0 {
            // Someone agrees with us: a restarted node has caught up.
            self.hold_until = None;
            return;
        }
        let entries = self.repair(mask);
        self.repair_to(node, &entries, mono, wall);
        if answer {
            self.digest(Some(node), true, wall);
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

    /// Counts a refused datagram under its reason and source.
    pub fn dropped(&mut self, from: SocketAddr, why: DropReason) {
        self.refuse(from, why, "");
    }

    /// Counts a refused datagram; the first of a reason that needs an operator's attention
    /// from each source is logged, with `detail`.
    fn refuse(&mut self, from: SocketAddr, why: DropReason, detail: &str) {
        match self.drops.count(from, why, 1) {
            Counted::First => {
                if let Some(line) = self.warning(from, why, detail) {
                    self.log.push(line);
                }
            }
            Counted::FirstBeyond => self.log.push(format!(
                "cluster: warning: {MAX_DROP_COUNTERS} drop counters in use; drops from further \
                 sources are counted by reason alone, under 0.0.0.0:0"
            )),
            Counted::Again | Counted::Beyond => {}
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
            DropReason::Full => format!("entries refused: {detail}"),
            _ => return None,
        };
        Some(format!("cluster: warning: {}: {what}", Sock(from)))
    }

    /// Lines for the agent's log, oldest first.
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    /// Does what is due at `now`: the periodic digest, tombstone collection, the end of a hold,
    /// forgetting silent peers.
    pub fn tick(&mut self, mono_ms: u64, wall_ms: u64) {
        if self.hold_until.is_some_and(|t| mono_ms >= t) {
            self.hold_until = None;
        }
        if mono_ms >= self.next_digest {
            self.digest(None, false, wall_ms);
            self.next_digest = mono_ms + DIGEST_MS;
            self.peers.expire(mono_ms);
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

    /// Drop counts, sorted by source and reason (past the counters' capacity, last).
    #[cfg(test)]
    pub fn drops(&self) -> Vec<(SocketAddr, DropReason, u64)> {
        let mut d = self.drops.list();
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        d.sort_unstable_by_key(|&(a, why, _)| (a == any, a, why));
        d
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
        for (id, p) in self.peers.list() {
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
