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
//! - **anti-entropy**: a `Digest` goes to the group when the node's [`Trickle`] timer says so:
//!   every [`trickle::IMIN_MS`] after anything inconsistent, the interval doubling to
//!   [`trickle::IMAX_MS`] while what it hears agrees (to [`trickle::LONELY_IMAX_MS`] while it
//!   hears no peer at all: [`Cluster::lonely`]), and not at all in an interval in which it
//!   already heard its own digest [`trickle::K`] times. A digest that differs is answered by
//!   [`RESPONDERS`] nodes only, picked afresh for every digest by a hash of the asker, its
//!   sequence number and each node's id (every node ranks itself among the peers it knows; no
//!   coordination), so a joiner or a node that missed a change draws a bounded answer however
//!   large the cluster. An answer is the differing buckets' entries (each responder starting
//!   at its own share of the buckets) and the responder's digest (`reply: true`), which the
//!   asker answers with a pull while the answers bring it news, then with what it knows
//!   better, never with another digest: both sides repair within a few round trips.
//! - **replay**: a peer's datagrams are believed only from the boot that answered a challenge
//!   sent to it, then within a sliding window of sequence numbers (see [`peers`]). No clock is
//!   trusted for it: a node whose clock is behind is heard as soon as it answers.
//! - **challenge**: a datagram from a boot not believed draws a `Challenge` to its source, no
//!   larger than that datagram, which the peer answers (`Answer`, no larger than the challenge);
//!   a boot that answers is believed, at the address the challenge reached.
//! - **reflection**: nothing but a challenge or an answer, each no larger than what drew it, is
//!   ever sent to the source of a datagram; repairs and digest replies go to the address the peer
//!   proved (never to where a datagram claims to come from), at most
//!   [`peers::repair_rate`] bytes of repairs a second, and every unicast message names the node
//!   it is for inside the MAC, so replayed to another node it is refused there.

pub mod drops;
#[doc(hidden)]
pub mod fuzzing;
pub mod peers;
pub mod replica;
#[doc(hidden)]
pub mod sim;
pub mod socket;
#[cfg(test)]
mod tests;
pub mod trickle;
pub mod wire;

use lbfo_core::addr::Sock;
use std::net::SocketAddr;

use crate::cluster::drops::{Counted, Drops, MAX_DROP_COUNTERS};
use crate::cluster::peers::{Peers, Verdict, MAX_PEERS};
use crate::cluster::replica::{node_id, Entry, NodeId, Refused, Replica, AHEAD_MS, BUCKETS};
use crate::cluster::trickle::Trickle;
use crate::cluster::wire::{Body, DropReason, Key, Message, CHALLENGE_PAD, MAX_DATAGRAM, VERSION};
use crate::vecmap::VecSet;

/// How many nodes answer one digest that differs from theirs: enough that a lost answer is
/// rarely the only one, few enough that a joiner or a lagging node never draws a storm.
pub const RESPONDERS: usize = 2;
/// How long a restarted agent keeps showing the table it adopted before publishing the cluster's
/// state, unless a peer's digest shows it has caught up sooner.
pub const CATCH_UP_MS: u64 = 1000;
/// How often tombstones are collected.
pub const COLLECT_MS: u64 = 10_000;

/// About this many entries at most answer one digest (whole buckets, so a little more). Answering
/// with every differing bucket made each digest cost the whole state when nodes differed widely
/// (agents started with one large config at different times, or after a flood), and with every
/// node answering every digest the cluster drowned in its own repairs. With [`RESPONDERS`]
/// answers per digest the bound can be large enough for a joiner to take a full table
/// (4,096 services of 16 backends) in a few rounds.
pub const REPAIR_ENTRIES: usize = 4096;
/// An answer is packed this many entries at a time (whole buckets, so a little more): its
/// entries are held only a chunk at a time, for an agent's peak memory, and each chunk's last
/// datagram is rarely the only one not full.
const REPAIR_CHUNK: usize = 256;

/// What kind of digest was heard.
#[derive(Debug, Clone, Copy)]
enum Heard {
    /// A hello, with the sender's boot. A start's, to the group, is refused (unverified) and
    /// only draws challenges; one to this node follows a handshake, from the side that believed
    /// the other last, and is answered by the [`RESPONDERS`] for that boot: a joiner draws
    /// bounded answers, and a restarted node is repaired one round trip after its handshake.
    Hello(u64),
    /// To the group (a hello, or the Trickle timer's), with its sequence number: answered by
    /// [`RESPONDERS`] nodes.
    Round(u64),
    /// To this node alone (`Message::to`), asking for what it knows better: always answered.
    Pull,
    /// An answer to one of ours.
    Reply,
}

/// A 64-bit mixing function (SplitMix64's finaliser): responder ranks from ids and sequences.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

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
    trickle: Trickle,
    /// When this node last sent to the group (monotonic ms): it does at least every
    /// [`peers::alive_ms`], so its peers never forget it.
    spoke: u64,
    /// The monotonic time of the last tick or wake-up (datagrams are handled at it).
    mono_ms: u64,
    /// The timers' jitter (xorshift; not a secret).
    rng: u64,
    next_collect: u64,
    hold_until: Option<u64>,
    changed: VecSet<String>,
    /// A peer's command to the group brought something new (see [`Cluster::heard_command`]).
    heard_command: bool,
    /// See [`Cluster::news`].
    news: Option<(u64, u64)>,
    /// The digest bucket the next answer to a reply starts from.
    repair_from: usize,
    /// Datagrams and bytes sent, for `status` and the benchmarks.
    pub sent: (u64, u64),
    /// Counts datagrams handled, refused and sent: `status`'s view changed when it moved.
    events: u64,
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
            trickle: Trickle::new(mono_ms, me ^ u64::from_le_bytes(first)),
            spoke: mono_ms,
            mono_ms,
            rng: (me ^ u64::from_le_bytes(first).rotate_left(32)) | 1,
            next_collect: mono_ms + COLLECT_MS,
            hold_until: hold.then_some(mono_ms + CATCH_UP_MS),
            changed: VecSet::new(),
            heard_command: false,
            news: None,
            repair_from: (me % BUCKETS as u64) as usize,
            sent: (0, 0),
            events: 0,
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
    /// to one peer by `repair_to`). New state for the group also makes the digest go out soon:
    /// whoever missed it notices within one short interval.
    pub fn send_entries(&mut self, dest: Dest, entries: &[Entry], wall_ms: u64) {
        if entries.is_empty() {
            return;
        }
        if dest == Dest::All {
            self.state_changed();
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
        let rate = peers::repair_rate(self.replica.len());
        let Some(p) = self.peers.get_mut(node) else {
            return;
        };
        if p.budget(mono, rate) < MAX_DATAGRAM as u64 {
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
                .is_some_and(|p| p.spend(d.len(), mono, rate))
            {
                return;
            }
            self.outbox.push((Dest::To(addr), d));
        }
    }

    /// Where a message for `to` goes: the group for `None`, else the address the peer proved;
    /// `None` for a peer not believed.
    fn dest(&self, to: Option<NodeId>) -> Option<Dest> {
        match to {
            None => Some(Dest::All),
            Some(node) => self.peers.get(node).map(|p| Dest::To(p.addr)),
        }
    }

    /// Announces this node with its state's digest: at start to the group (`to` `None`), and to
    /// a peer just believed.
    pub fn hello(&mut self, to: Option<NodeId>, wall_ms: u64) {
        let Some(dest) = self.dest(to) else {
            return;
        };
        let digest = self.replica.digest_cached().to_vec();
        let name = self.name.clone();
        let hello = Body::Hello { name, digest };
        self.send(dest, to, wall_ms, hello, usize::MAX);
    }

    /// Sends our digest to the group, or to one peer (`to`) at the address it proved.
    fn digest(&mut self, to: Option<NodeId>, reply: bool, wall_ms: u64) {
        let Some(dest) = self.dest(to) else {
            return;
        };
        let digest = self.replica.digest_cached().to_vec();
        let name = self.name.clone();
        let body = Body::Digest {
            name,
            digest,
            reply,
        };
        self.send(dest, to, wall_ms, body, usize::MAX);
    }

    /// The time at a wake-up: datagrams handled next are taken as heard at `mono_ms`.
    pub fn wake(&mut self, mono_ms: u64) {
        self.mono_ms = mono_ms;
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A digest disagrees with ours: ours goes out within the shortest interval.
    fn inconsistent(&mut self) {
        let r = self.random();
        self.trickle.reset(self.mono_ms, r);
    }

    /// Our state changed (a command, new entries): our digest goes out within the shortest
    /// interval, whatever digests of the old state were heard.
    fn state_changed(&mut self) {
        let r = self.random();
        self.trickle.changed(self.mono_ms, r);
    }

    /// The interval of the node's digest timer now (ms).
    pub fn interval(&self) -> u64 {
        self.trickle.interval()
    }

    /// Datagrams to send, oldest first.
    pub fn take_outbox(&mut self) -> Vec<(Dest, Vec<u8>)> {
        let out = std::mem::take(&mut self.outbox);
        self.events += out.len() as u64;
        if out.iter().any(|(dest, _)| *dest == Dest::All) {
            self.spoke = self.mono_ms;
        }
        for (_, d) in &out {
            self.sent.0 += 1;
            self.sent.1 += d.len() as u64;
        }
        out
    }

    /// Names of services whose replicated state changed since the last call.
    pub fn take_changed(&mut self) -> Vec<String> {
        self.news = None;
        self.heard_command = false;
        std::mem::take(&mut self.changed).into_keys().collect()
    }

    /// Whether a peer's command to the group brought anything new since the last
    /// [`Cluster::take_changed`] (as opposed to repairs sent to this node alone, which a node
    /// catching up takes by the thousand).
    pub fn heard_command(&self) -> bool {
        self.heard_command
    }

    /// When the first and the last datagram that changed the replica were handled since the
    /// last [`Cluster::take_changed`] (monotonic ms), if any did.
    pub fn news(&self) -> Option<(u64, u64)> {
        self.news
    }

    /// Handles one received datagram.
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr, mono_ms: u64, wall_ms: u64) {
        self.events += 1;
        self.mono_ms = self.mono_ms.max(mono_ms);
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
                self.compare(node, &digest, Heard::Hello(msg.boot), mono_ms, wall_ms);
            }
            Body::Digest {
                name,
                digest,
                reply,
            } => {
                self.named(node, name);
                let heard = match (reply, msg.to) {
                    (true, _) => Heard::Reply,
                    (false, Some(_)) => Heard::Pull,
                    (false, None) => Heard::Round(msg.seq),
                };
                self.compare(node, &digest, heard, mono_ms, wall_ms);
            }
            Body::Entries(es) => {
                let news = self.merge(&es, node, from, wall_ms);
                // A command as it went to the group, not a repair sent to this node alone.
                self.heard_command |= news && msg.to.is_none();
            }
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
            // Newly believed: our hello, so that it challenges us in turn and the two believe
            // each other at once (it may not yet: its first datagrams, our commands among them,
            // would be refused as unverified until we next spoke).
            Ok(true) => self.hello(Some(msg.node), wall),
            Ok(false) => {}
            Err(why) => self.dropped(from, why),
        }
    }

    /// Merges a datagram's entries; one refused (counted once for the datagram) leaves the
    /// others to be taken in. Whether any was new.
    fn merge(&mut self, es: &[wire::WEntry], node: NodeId, from: SocketAddr, wall_ms: u64) -> bool {
        let (mut ahead, mut full, mut new) = (None, None, false);
        // `open` checked every entry converts.
        for e in es.iter().filter_map(wire::from_wire) {
            match self.replica.merge(&e, wall_ms) {
                Ok(true) => {
                    new = true;
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
        if new {
            self.state_changed();
            if let Some(p) = self.peers.get_mut(node) {
                p.fed = true;
            }
            let now = self.mono_ms;
            self.news = Some(self.news.map_or((now, now), |(first, _)| (first, now)));
        }
        new
    }

    fn named(&mut self, node: NodeId, name: String) {
        if let Some(p) = self.peers.get_mut(node) {
            p.name = name;
        }
    }

    /// Compares peer `node`'s digest with ours. Equal: counts toward suppression (a round).
    /// Different: our timer starts over, and
    /// - a round is answered by its responders only (this node, if it ranks among them), a pull
    ///   always: the entries of the buckets that differ, then our digest as a reply, so the
    ///   asker can send what it knows better;
    /// - a reply is answered, if the peer's last answer brought us something new, with a pull: a
    ///   node far behind (a joiner, one back from a partition) keeps pulling from the same peer
    ///   one round trip after another, for as long as that brings it news; and once an answer
    ///   brings nothing new, with the entries of the buckets that still differ, which hold what
    ///   we know better.
    ///
    /// Everything goes to the address the peer proved.
    fn compare(&mut self, node: NodeId, theirs: &[u32], heard: Heard, mono: u64, wall: u64) {
        let ours = self.replica.digest_cached();
        let mask = (0..BUCKETS)
            .filter(|&i| theirs.get(i) != Some(&ours[i]))
            .fold(0u64, |m, i| m | 1 << i);
        if let Some(p) = self.peers.get_mut(node) {
            p.digest = peers::digest_id(theirs);
        }
        if mask == 0 {
            // Someone agrees with us: a restarted node has caught up.
            self.hold_until = None;
            if let Heard::Round(_) = heard {
                self.trickle.consistent(self.mono_ms);
            }
            return;
        }
        self.inconsistent();
        let start = match heard {
            Heard::Reply => {
                // Fed by its answer: behind, so pull the rest (whole differing buckets sent
                // back now would be mostly what it just sent us). Not fed: the buckets that
                // still differ hold what we know better, and go back to it.
                let fed = self.peers.get_mut(node).map(|p| std::mem::take(&mut p.fed));
                if fed == Some(true) {
                    self.digest(Some(node), false, wall);
                } else {
                    self.repair(node, mask, self.repair_from, mono, wall);
                }
                return;
            }
            Heard::Pull => self.repair_from,
            Heard::Round(salt) | Heard::Hello(salt) => match self.responder(node, salt) {
                Some(rank) => rank * BUCKETS / RESPONDERS + salt as usize % BUCKETS,
                None => return,
            },
        };
        self.repair(node, mask, start, mono, wall);
        self.digest(Some(node), true, wall);
    }

    /// This node's rank among the responders to peer `asker` for `salt` (a round's sequence
    /// number, or a new boot), if it is one: every node known here (and this one) is ranked by
    /// a hash of the three, so each round draws [`RESPONDERS`] answers from nodes that change
    /// from one round to the next. Nodes that know fewer peers rank themselves higher: more
    /// answers, never fewer.
    fn responder(&self, asker: NodeId, salt: u64) -> Option<usize> {
        let score = |id: NodeId| mix(mix(asker ^ salt.rotate_left(17)) ^ id);
        let me = self.replica.me();
        let mine = score(me);
        let rank = self
            .peers
            .ids()
            .filter(|&id| id != asker && id != me && score(id) < mine)
            .count();
        (rank < RESPONDERS).then_some(rank)
    }

    /// Answers peer `node` with the entries of whole differing buckets in `mask`, from bucket
    /// `start` on, until [`REPAIR_ENTRIES`] are sent (at least one bucket); the others go in
    /// later answers (answers to replies take turns through them). Packed a few buckets at a
    /// time ([`REPAIR_CHUNK`]), so a large answer never holds all its entries at once.
    fn repair(&mut self, node: NodeId, mask: u64, start: usize, mono: u64, wall: u64) {
        let (mut chunk, mut taken) = (Vec::new(), 0);
        for i in 0..BUCKETS {
            let b = (start + i) % BUCKETS;
            if mask & 1 << b == 0 {
                continue;
            }
            if taken >= REPAIR_ENTRIES {
                self.repair_from = b;
                break;
            }
            let es = self.replica.entries(1 << b);
            taken += es.len();
            chunk.extend(es);
            if chunk.len() >= REPAIR_CHUNK {
                self.repair_to(node, &chunk, mono, wall);
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            self.repair_to(node, &chunk, mono, wall);
        }
    }

    /// Counts a refused datagram under its reason and source.
    pub fn dropped(&mut self, from: SocketAddr, why: DropReason) {
        self.events += 1;
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

    /// Does what is due at `now`: the digest when the timer says so, tombstone collection, the
    /// end of a hold, forgetting silent peers.
    pub fn tick(&mut self, mono_ms: u64, wall_ms: u64) {
        self.mono_ms = mono_ms;
        if self.hold_until.is_some_and(|t| mono_ms >= t) {
            self.hold_until = None;
        }
        let r = self.random();
        if mono_ms >= self.trickle.deadline() {
            // Suppressed for as long as peers wait before they forget a node: spoken anyway.
            let quiet = mono_ms.saturating_sub(self.spoke) >= peers::alive_ms(self.peers.len());
            let max = if self.lonely(mono_ms) {
                trickle::LONELY_IMAX_MS
            } else {
                trickle::IMAX_MS
            };
            if self.trickle.fire(mono_ms, r, max) || quiet {
                self.digest(None, false, wall_ms);
                self.spoke = mono_ms;
            }
            self.peers.expire(mono_ms);
        }
        if mono_ms >= self.next_collect {
            for name in self.replica.collect(wall_ms) {
                self.changed.insert(name.as_str().to_owned(), ());
            }
            self.next_collect = mono_ms + COLLECT_MS;
        }
    }

    /// Whether this node knows peers but has heard none of them for [`trickle::lonely_ms`]: cut
    /// off, so its digest goes out every [`trickle::LONELY_IMAX_MS`] at most.
    pub fn lonely(&self, mono_ms: u64) -> bool {
        let n = self.peers.len();
        self.peers.last_heard().is_some_and(|heard| {
            mono_ms.saturating_sub(heard) >= trickle::lonely_ms(n, peers::alive_ms(n))
        })
    }

    /// When [`Cluster::tick`] must next run (monotonic ms).
    pub fn next_deadline(&self) -> u64 {
        let d = self.trickle.deadline().min(self.next_collect);
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

    /// Moves whenever what [`Cluster::status_lines`] shows (but for the time) may have changed.
    pub fn events(&self) -> u64 {
        self.events
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
        // A peer is in sync if its last digest is ours now: under Trickle a peer in sync may
        // send no digest for a long while, and what it last sent stays true.
        let ours = peers::digest_id(&self.replica.digest());
        for (id, p) in self.peers.list() {
            o += &format!(
                "peer {} {id:016x} {} {} {} {}\n",
                p.name,
                Sock(p.addr),
                p.heard_ms,
                p.epoch,
                p.digest == ours
            );
        }
        for (addr, why, n) in self.drops.list() {
            o += &format!("drop {} {} {n}\n", Sock(addr), why.name());
        }
        o
    }
}
