//! Who this node has heard: its peers, each believed in one boot, with a replay window and the
//! address it proved it is at.
//!
//! **Replay protection trusts no clock.** Every start of an agent picks a random boot nonce
//! (`Message::boot`). A peer's datagrams are taken in only from a boot that has answered a
//! challenge: a cookie this node sent to an address, echoed from that address in an `Answer`
//! under the group key.
//! The cookie is a MAC, under a secret of this node's boot, of the peer's id, the address and the
//! current [`COOKIE_MS`] period, so it needs no state per challenge, cannot be made without
//! receiving the challenge at that address, and lapses after one or two periods. A datagram
//! recorded in an earlier boot of a peer cannot answer a cookie made now: a replayed boot is
//! never believed, whatever either clock says, and a peer restarted with its clock an hour
//! behind is believed one round trip after its first datagram.
//!
//! - Within the believed boot, a [`WINDOW`]-sequence sliding bitmap (as IPsec's anti-replay
//!   window) refuses a sequence number already seen or below the window.
//! - A datagram from a boot not believed is not taken in ([`Verdict::Unverified`]); the caller
//!   challenges its source. A new boot believed replaces the old one (a restart).
//! - The address a peer answered at is the only one the cluster answers it at (see `Cluster`).
//! - A peer silent for [`silence_ms`] is forgotten, and believed again after its next answer.
//!   Under Trickle a node in a quiet cluster may send nothing for a long while (its digest is
//!   suppressed when others sent the same), so every node sends to the group at least once in
//!   [`alive_ms`], and its peers forget it only after [`MISSED`] such periods: a healthy node is
//!   never forgotten, and the peer list in `status` does not flap. Both grow with the cluster,
//!   so these keep-alives add at most one datagram per [`IMAX_MS`] to the whole cluster's
//!   traffic whatever its size.
//! - At most [`MAX_PEERS`] are tracked; only an answer adds one, so only a key holder can.

use std::net::SocketAddr;

use crate::cluster::replica::NodeId;
use crate::cluster::trickle::IMAX_MS;
use crate::cluster::wire::{DropReason, Key, Message};
use crate::vecmap::VecMap;

/// Sequence numbers remembered per peer below its newest (a reordering allowance).
pub const WINDOW: u64 = 64;
/// A cookie is good for the period it was made in and the next one.
pub const COOKIE_MS: u64 = 10_000;
/// The longest a node stays silent toward the group in a small cluster (see [`alive_ms`]).
pub const ALIVE_MS: u64 = 15_000;
/// Keep-alive periods a peer may miss in a row (lost, or late) before it is forgotten.
pub const MISSED: u64 = 4;
/// The shortest silence after which a peer is forgotten: [`MISSED`] times [`ALIVE_MS`].
pub const SILENCE_MS: u64 = MISSED * ALIVE_MS;

/// The longest a node with `peers` peers goes without sending to the group: [`ALIVE_MS`], or one
/// [`IMAX_MS`] per node of the cluster if longer, so that all the cluster's keep-alives together
/// are at most one per [`IMAX_MS`], about what Trickle sends anyway.
pub fn alive_ms(peers: usize) -> u64 {
    ALIVE_MS.max((peers as u64 + 1).saturating_mul(IMAX_MS))
}

/// How long a node with `peers` peers waits before it forgets a silent one: [`MISSED`] times
/// [`alive_ms`] (a node knowing fewer peers than the silent one still waits long enough as long
/// as it knows a quarter of them).
pub fn silence_ms(peers: usize) -> u64 {
    MISSED.saturating_mul(alive_ms(peers))
}

/// A digest folded into one word, to remember which state a peer last showed.
pub fn digest_id(digest: &[u32]) -> u64 {
    digest.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
/// Bytes of repairs sent to one peer per second at most, and at once (a token bucket), unless
/// this node's whole state takes more ([`repair_rate`]): well above what answering a digest
/// takes, while a peer that asks far more often (a bug, or a key holder) gets no more.
pub const REPAIR_BYTES_PER_S: u64 = 256 * 1024;
/// What one entry is reckoned to take on the wire, for [`repair_rate`]: more than a backend
/// entry of a short service name with its share of the datagram's header and MAC.
pub const ENTRY_BYTES: u64 = 128;

/// The repair bytes one peer may draw per second from a node holding `entries` entries: a
/// whole copy of its state, or [`REPAIR_BYTES_PER_S`] if that is more. A joiner must be able
/// to take the whole table within a second from the [`RESPONDERS`](crate::cluster::RESPONDERS)
/// that answer it.
pub fn repair_rate(entries: usize) -> u64 {
    REPAIR_BYTES_PER_S.max((entries as u64).saturating_mul(ENTRY_BYTES))
}

/// Peers tracked at most: a cluster of more nodes than this is beyond what the agent is made
/// for (issue 18 sizes it for a thousand), and a key holder inventing node ids cannot grow
/// memory past it. A node new when the map is full is refused ([`DropReason::TooManyPeers`],
/// logged). The map holds only the peers known, so a small cluster pays for its few.
pub const MAX_PEERS: usize = 1024;

/// A peer as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node name ("?" until its first digest).
    pub name: String,
    /// The address it answered a challenge at: the only one it is answered at.
    pub addr: SocketAddr,
    /// When a datagram of it was last taken in (wall ms), for `status`.
    pub heard_ms: u64,
    /// Its boot's wall-clock time, as its clock tells it (shown, never trusted).
    pub epoch: u64,
    /// Its last digest heard ([`digest_id`]; 0 before one was).
    pub digest: u64,
    /// It sent entries new to this node since this node last pulled from it.
    pub fed: bool,
    heard_mono: u64,
    boot: u64,
    top: u64,
    seen: u64,
    /// Repair bytes it may still be sent, as of `refilled` (monotonic ms).
    budget: u64,
    refilled: u64,
}

impl Peer {
    /// Believed in the boot of `m`, at `addr`.
    fn new(addr: SocketAddr, m: (u64, u64, u64), mono_ms: u64, wall_ms: u64) -> Peer {
        let (boot, epoch, seq) = m;
        Peer {
            name: "?".into(),
            addr,
            heard_ms: wall_ms,
            epoch,
            digest: 0,
            fed: false,
            heard_mono: mono_ms,
            boot,
            top: seq,
            seen: 1,
            // Full, whatever the rate turns out to be (`spend` caps it).
            budget: u64::MAX,
            refilled: mono_ms,
        }
    }

    /// Takes `bytes` from the repair budget, refilled at `per_s` bytes a second up to that much
    /// ([`repair_rate`]); whether there were enough.
    pub fn spend(&mut self, bytes: usize, mono_ms: u64, per_s: u64) -> bool {
        let Some(left) = self.budget(mono_ms, per_s).checked_sub(bytes as u64) else {
            return false;
        };
        self.budget = left;
        true
    }

    /// The repair budget left at `mono_ms`, refilled at `per_s` bytes a second up to that much.
    pub fn budget(&mut self, mono_ms: u64, per_s: u64) -> u64 {
        let earned = mono_ms.saturating_sub(self.refilled).saturating_mul(per_s) / 1000;
        self.budget = self.budget.saturating_add(earned).min(per_s);
        self.refilled = self.refilled.max(mono_ms);
        self.budget
    }

    /// The replay window: takes `seq` if it is new, records it.
    fn window(&mut self, seq: u64) -> bool {
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
            return true;
        }
        let back = self.top - seq;
        if back >= WINDOW || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// What [`Peers::check`] says of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// From the believed boot, new: take it in.
    Take,
    /// From the believed boot, seen before or older than the window.
    Replay,
    /// From a boot not believed (yet): not taken in; its source is to be challenged.
    Unverified,
}

/// The peers, and the secret their cookies are made with.
#[derive(Debug)]
pub struct Peers {
    map: VecMap<NodeId, Peer>,
    secret: Key,
}

impl Peers {
    /// No peers yet; cookies made with `secret` (random, this boot's).
    pub fn new(secret: Key) -> Peers {
        Peers {
            map: VecMap::new(),
            secret,
        }
    }

    /// The cookie a challenge to `node` at `to` carries at `mono_ms`.
    pub fn cookie(&self, node: NodeId, to: SocketAddr, mono_ms: u64) -> u64 {
        self.cookie_in(node, to, mono_ms / COOKIE_MS)
    }

    fn cookie_in(&self, node: NodeId, to: SocketAddr, period: u64) -> u64 {
        let (ip, port) = match to {
            SocketAddr::V4(a) => (a.ip().to_ipv6_mapped().octets(), a.port()),
            SocketAddr::V6(a) => (a.ip().octets(), a.port()),
        };
        let mut bytes = [0u8; 34 + 8];
        bytes[..8].copy_from_slice(&node.to_le_bytes());
        bytes[8..24].copy_from_slice(&ip);
        bytes[24..26].copy_from_slice(&port.to_le_bytes());
        bytes[26..34].copy_from_slice(&period.to_le_bytes());
        self.secret.tag64(&bytes[..34])
    }

    /// Whether a datagram with `m`'s header is taken in; records its sequence number if so.
    pub fn check(&mut self, m: &Message, mono_ms: u64, wall_ms: u64) -> Verdict {
        let Some(p) = self.map.get_mut(&m.node).filter(|p| p.boot == m.boot) else {
            return Verdict::Unverified;
        };
        if !p.window(m.seq) {
            return Verdict::Replay;
        }
        p.heard_ms = wall_ms;
        p.heard_mono = mono_ms;
        Verdict::Take
    }

    /// An answer from `m.node` at `to` echoing `cookie`: if the cookie is one this node made for
    /// that node and address (this period or the last), `m.boot` is believed and `to` is its
    /// address.
    /// `Ok(true)`: a boot newly believed.
    pub fn answered(
        &mut self,
        m: &Message,
        cookie: u64,
        to: SocketAddr,
        mono_ms: u64,
        wall_ms: u64,
    ) -> Result<bool, DropReason> {
        let period = mono_ms / COOKIE_MS;
        let made = |p: u64| self.cookie_in(m.node, to, p) == cookie;
        let last = period.checked_sub(1).is_some_and(made);
        if !made(period) && !last {
            // Lapsed, or made for another address or node: a replay (a forgery fails the MAC).
            return Err(DropReason::Replay);
        }
        if let Some(p) = self.map.get_mut(&m.node).filter(|p| p.boot == m.boot) {
            p.addr = to;
            let _ = p.window(m.seq);
            p.heard_ms = wall_ms;
            p.heard_mono = mono_ms;
            return Ok(false);
        }
        let mut peer = Peer::new(to, (m.boot, m.epoch, m.seq), mono_ms, wall_ms);
        if let Some(old) = self.map.get(&m.node) {
            peer.name.clone_from(&old.name);
        }
        if self.map.len() >= MAX_PEERS && !self.map.contains_key(&m.node) {
            return Err(DropReason::TooManyPeers);
        }
        self.map.insert(m.node, peer);
        Ok(true)
    }

    /// Forgets the peers silent since `mono_ms - silence_ms(peers)`.
    pub fn expire(&mut self, mono_ms: u64) {
        let silence = silence_ms(self.map.len());
        self.map
            .retain(|_, p| p.heard_mono.saturating_add(silence) >= mono_ms);
    }

    /// Whether `node` is believed in `boot`.
    pub fn believes(&self, node: NodeId, boot: u64) -> bool {
        self.map.get(&node).is_some_and(|p| p.boot == boot)
    }

    /// The believed peer `node`.
    pub fn get(&self, node: NodeId) -> Option<&Peer> {
        self.map.get(&node)
    }

    /// The believed peer `node`, to update.
    pub fn get_mut(&mut self, node: NodeId) -> Option<&mut Peer> {
        self.map.get_mut(&node)
    }

    /// Every peer, by id.
    pub fn list(&self) -> impl Iterator<Item = (NodeId, &Peer)> {
        self.map.iter().map(|(id, p)| (*id, p))
    }

    /// The ids of every peer, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.map.keys().copied()
    }

    /// When a datagram of any peer was last taken in (monotonic ms), if there is a peer.
    pub fn last_heard(&self) -> Option<u64> {
        self.map.values().map(|p| p.heard_mono).max()
    }

    /// How many peers are tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Believes `node` in `boot` at `addr` without a challenge: for the fuzz target and the
    /// seeds (`fuzzing`), which hand a node datagrams of a peer it must already know.
    #[doc(hidden)]
    pub fn trust(&mut self, node: NodeId, boot: u64, addr: SocketAddr) {
        if self.map.len() < MAX_PEERS {
            self.map.insert(node, Peer::new(addr, (boot, 0, 0), 0, 0));
        }
    }
}
