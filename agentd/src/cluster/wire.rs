//! The cluster's wire format: postcard-encoded messages in UDP datagrams, authenticated by
//! HMAC-SHA256.
//!
//! ```text
//! datagram = postcard(Message) ‖ HMAC-SHA256(key, postcard(Message))   at most 1,200 bytes
//! Message  = { version: u8 = 2, node: u64, boot: u64, epoch: u64, seq: u64, sent_ms: u64,
//!              to: Option<u64>, body: Body }
//! Body     = Hello { name, digest } | Digest { name, digest, reply } | Entries([Entry])
//!          | Challenge { cookie, pad } | Answer { cookie }
//! ```
//!
//! The version is a single raw byte, the first of the datagram, so a future version can be
//! recognised (and refused) before anything else is read. **Only the types in this module are
//! serialized**, by serde's derive; they are a compatibility boundary: a change of layout is a
//! new [`VERSION`]. Everything else converts to and from them by hand ([`to_wire`],
//! [`from_wire`]).
//!
//! [`open`] is the checked view: every datagram goes through it, and anything it accepts is
//! well-formed (names valid, digest of the right length). It never panics on any input; what it
//! refuses comes back as a [`DropReason`]. [`seal`] builds datagrams, [`pack`] cuts a list of
//! entries into as many datagrams as needed, each within [`MAX_DATAGRAM`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use lbfo_core::Name;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::cluster::replica::{BackendState, Entry, Reg, Stamp, BUCKETS};

/// The protocol version this agent speaks. 2: serde's derived layout of every type, and this
/// round's header (issue 14).
pub const VERSION: u8 = 2;
/// The largest datagram sent or accepted: fits any IPv6 path without fragmentation.
pub const MAX_DATAGRAM: usize = 1200;
/// Bytes of the HMAC-SHA256 tag at the end of every datagram.
pub const TAG: usize = 32;
/// The shortest datagram that can be well-formed: the version byte, the header's five varints
/// and option tag, a body's tag and the MAC.
pub const MIN_DATAGRAM: usize = 8 + TAG;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// Shorter than a version byte, a header and a tag.
    Truncated,
    /// Longer than [`MAX_DATAGRAM`].
    Oversized,
    /// A version this agent does not speak.
    Version,
    /// The tag does not match: wrong key, or damaged.
    BadMac,
    /// Authentic but not a well-formed message.
    Garbage,
    /// Already seen or older than the replay window, in its sender's believed boot; or an answer
    /// to a challenge this node did not make or that has lapsed.
    Replay,
    /// From a boot of its sender that has not answered a challenge (yet): the first datagrams of
    /// a peer that has just started, or replays of an earlier boot of it.
    Unverified,
    /// Sent to another multicast group on our port (dropped by `net` where the kernel does not
    /// filter other groups itself).
    OtherGroup,
    /// Authentic, from another boot of this node's own id: a second node with this node's name,
    /// which the cluster cannot tell apart from this one (each node needs a name of its own).
    SameName,
    /// Authentic, from a node new to this one when it already tracks `cluster::MAX_PEERS`.
    TooManyPeers,
    /// Authentic, with entries stamped later than this node's clock allows
    /// (`replica::AHEAD_MS`); the datagram's other entries are taken in.
    Future,
    /// Authentic, sent to another node (a unicast message replayed to this one).
    Misdirected,
    /// Authentic, with entries that would make the replica hold more than its bounds
    /// (`replica::held`); the datagram's other entries are taken in.
    Full,
}

impl DropReason {
    /// The reason's name in logs and `status`.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::Version => "version",
            DropReason::BadMac => "bad_mac",
            DropReason::Garbage => "garbage",
            DropReason::Replay => "replay",
            DropReason::Unverified => "unverified",
            DropReason::OtherGroup => "other_group",
            DropReason::SameName => "same_name",
            DropReason::TooManyPeers => "too_many_peers",
            DropReason::Future => "future",
            DropReason::Misdirected => "misdirected",
            DropReason::Full => "full",
        }
    }

    /// Every reason, in the order `status` totals them.
    pub const ALL: [DropReason; 13] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::Version,
        DropReason::BadMac,
        DropReason::Garbage,
        DropReason::Replay,
        DropReason::Unverified,
        DropReason::OtherGroup,
        DropReason::SameName,
        DropReason::TooManyPeers,
        DropReason::Future,
        DropReason::Misdirected,
        DropReason::Full,
    ];
}

/// A stamp on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WStamp(pub u64, pub u64);

/// An address on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WAddr {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

/// A replicated entry on the wire (see `replica::Entry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WEntry {
    /// A service's own fields.
    Service {
        /// Service name.
        name: String,
        /// Newest add/policy.
        created: WStamp,
        /// Newest delete.
        deleted: WStamp,
        /// Policy code and its stamp.
        policy: (u8, WStamp),
    },
    /// One backend's fields: each value with its stamp.
    Backend {
        /// Service name.
        name: String,
        /// The backend.
        addr: WAddr,
        /// Added or deleted.
        exists: (bool, WStamp),
        /// Up or down.
        up: (bool, WStamp),
        /// Weight.
        weight: (u32, WStamp),
        /// Priority.
        prio: (u32, WStamp),
        /// Usage limit.
        limit: (u64, WStamp),
    },
}

/// Bytes of padding in a [`Body::Challenge`]: more than an answer's header can be longer than
/// the challenge's (varints of other lengths: a larger sequence number, another node id), so an
/// answer is never larger than its challenge.
pub const CHALLENGE_PAD: usize = 12;

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// "I have just started: here is my initial state's digest; send me what you know beyond it."
    Hello {
        /// The sender's node name.
        name: String,
        /// Its digest ([`BUCKETS`] hashes).
        digest: Vec<u32>,
    },
    /// The periodic summary; `reply` marks an answer to a digest or hello (not answered again).
    Digest {
        /// The sender's node name.
        name: String,
        /// Its digest ([`BUCKETS`] hashes).
        digest: Vec<u32>,
        /// An answer to another node's digest.
        reply: bool,
    },
    /// State: a command's effect, or the contents of digest buckets that differed.
    Entries(Vec<WEntry>),
    /// "Prove that you are live, at this address": sent to the source of a datagram from a boot
    /// this node does not believe (see `cluster::peers`). Never larger than that datagram.
    Challenge {
        /// What the answer must echo.
        cookie: u64,
        /// Zeroes (see [`CHALLENGE_PAD`]).
        pad: [u8; CHALLENGE_PAD],
    },
    /// The answer to a `Challenge`, to its source, from the address the challenge was sent to.
    Answer {
        /// The challenge's cookie.
        cookie: u64,
    },
}

/// One datagram's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// [`VERSION`].
    pub version: u8,
    /// The sender's node id.
    pub node: u64,
    /// The sender's boot nonce: random, new at every start.
    pub boot: u64,
    /// When the sender started, by its clock (ms since the epoch; shown, never trusted; never
    /// later than `sent_ms`).
    pub epoch: u64,
    /// Per-boot datagram sequence number, from 1.
    pub seq: u64,
    /// The sender's wall clock when sending (ms since the epoch).
    pub sent_ms: u64,
    /// The node a unicast message is for (`None`: the group). Inside the MAC, so a message sent
    /// to one node and replayed to another is refused there ([`DropReason::Misdirected`]).
    pub to: Option<u64>,
    /// The content.
    pub body: Body,
}

/// The shared secret.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from its bytes.
    pub fn new(bytes: Vec<u8>) -> Key {
        Key(bytes)
    }

    /// The well-known key of `insecure` clusters: integrity against damage, no authenticity.
    pub fn insecure() -> Key {
        Key(b"lbfo insecure cluster, no secret".to_vec())
    }

    /// The first eight bytes of `data`'s HMAC-SHA256 under this key, as a number.
    pub fn tag64(&self, data: &[u8]) -> u64 {
        let mut mac = self.mac();
        mac.update(data);
        let tag = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag[..8]);
        u64::from_le_bytes(first)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("hmac accepts any key length"))
    }
}

/// Encodes and authenticates `msg`; `None` if it would exceed [`MAX_DATAGRAM`].
pub fn seal(msg: &Message, key: &Key) -> Option<Vec<u8>> {
    // to_allocvec, as the state file: one postcard serializer in the binary, not two.
    let mut out = postcard::to_allocvec(msg)
        .ok()
        .filter(|b| b.len() <= MAX_DATAGRAM - TAG)?;
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Some(out)
}

/// Checks and decodes a datagram: length, version, tag, then content.
pub fn open(datagram: &[u8], key: &Key) -> Result<Message, DropReason> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DropReason::Oversized);
    }
    if datagram.len() < MIN_DATAGRAM {
        return Err(DropReason::Truncated);
    }
    if datagram[0] != VERSION {
        return Err(DropReason::Version);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| DropReason::BadMac)?;
    let (msg, rest): (Message, &[u8]) =
        postcard::take_from_bytes(body).map_err(|_| DropReason::Garbage)?;
    if !rest.is_empty() || !well_formed(&msg) {
        return Err(DropReason::Garbage);
    }
    Ok(msg)
}

fn well_formed(m: &Message) -> bool {
    let name_ok = |n: &String| lbfo_core::name::is_node_name(n.as_bytes());
    m.epoch <= m.sent_ms
        && match &m.body {
            Body::Hello { name, digest } | Body::Digest { name, digest, .. } => {
                name_ok(name) && digest.len() == BUCKETS
            }
            Body::Entries(es) => es.iter().all(|e| from_wire(e).is_some()),
            Body::Challenge { .. } | Body::Answer { .. } => true,
        }
}

fn ws(s: Stamp) -> WStamp {
    WStamp(s.time, s.node)
}

fn st(w: WStamp) -> Stamp {
    Stamp {
        time: w.0,
        node: w.1,
    }
}

fn reg<T>(r: Reg<T>) -> (T, WStamp) {
    (r.value, ws(r.at))
}

fn unreg<T>((value, at): (T, WStamp)) -> Reg<T> {
    Reg { value, at: st(at) }
}

/// An entry in wire form.
pub fn to_wire(e: &Entry) -> WEntry {
    match e {
        Entry::Service {
            name,
            created,
            deleted,
            policy,
        } => WEntry::Service {
            name: name.as_str().to_owned(),
            created: ws(*created),
            deleted: ws(*deleted),
            policy: reg(*policy),
        },
        Entry::Backend { name, addr, state } => WEntry::Backend {
            name: name.as_str().to_owned(),
            addr: match addr {
                IpAddr::V4(a) => WAddr::V4(a.octets()),
                IpAddr::V6(a) => WAddr::V6(a.octets()),
            },
            exists: reg(state.exists),
            up: reg(state.up),
            weight: reg(state.weight),
            prio: reg(state.prio),
            limit: reg(state.limit),
        },
    }
}

/// An entry from wire form; `None` if it is not valid (bad name, weight out of range).
pub fn from_wire(w: &WEntry) -> Option<Entry> {
    Some(match w {
        WEntry::Service {
            name,
            created,
            deleted,
            policy,
        } => Entry::Service {
            name: Name::new_checked(name.as_bytes()).ok()?,
            created: st(*created),
            deleted: st(*deleted),
            policy: lbfo_core::Policy::from_code(policy.0).map(|_| unreg(*policy))?,
        },
        WEntry::Backend {
            name,
            addr,
            exists,
            up,
            weight,
            prio,
            limit,
        } => Entry::Backend {
            name: Name::new_checked(name.as_bytes()).ok()?,
            addr: match addr {
                WAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(*a)),
                WAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(*a)),
            },
            state: BackendState {
                exists: unreg(*exists),
                up: unreg(*up),
                weight: (weight.0 <= lbfo_core::cmd::MAX_WEIGHT).then(|| unreg(*weight))?,
                prio: unreg(*prio),
                limit: unreg(*limit),
            },
        },
    })
}

/// Cuts `entries` into datagrams within [`MAX_DATAGRAM`]; `header` makes each message's header
/// (it is called once per datagram, so each gets its own sequence number). Each entry is encoded
/// once to learn its length, and each datagram sealed once: a full table is thousands of
/// datagrams, and sealing a datagram once per entry tried in it cost a dozen MACs apiece.
pub fn pack(entries: &[Entry], key: &Key, mut header: impl FnMut() -> Message) -> Vec<Vec<u8>> {
    let room = MAX_DATAGRAM - TAG;
    let mut out = Vec::new();
    let mut msg = header();
    // The message with no entry (its count a one-byte varint 0), and what the entries add.
    let mut base = encoded_len(&msg);
    let (mut batch, mut size) = (Vec::new(), 0);
    for e in entries {
        let w = to_wire(e);
        let len = encoded_len(&w);
        if !batch.is_empty() && base - 1 + varint_len(batch.len() + 1) + size + len > room {
            msg.body = Body::Entries(std::mem::take(&mut batch));
            out.extend(seal(&msg, key));
            msg = header();
            base = encoded_len(&msg);
            size = 0;
        }
        batch.push(w);
        size += len;
    }
    if !batch.is_empty() {
        msg.body = Body::Entries(batch);
        out.extend(seal(&msg, key));
    }
    out
}

/// The bytes `value` takes in postcard (more than a datagram: too many).
fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut buf = [0u8; MAX_DATAGRAM];
    postcard::to_slice(value, &mut buf).map_or(MAX_DATAGRAM + 1, |b| b.len())
}

/// The bytes of postcard's varint of `n`.
fn varint_len(n: usize) -> usize {
    (usize::BITS - n.leading_zeros()).max(1).div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::replica::Replica;
    use lbfo_core::{parse_line, Line};

    fn msg(body: Body) -> Message {
        Message {
            version: VERSION,
            node: 7,
            boot: 0x1234_5678_9abc_def0,
            epoch: 1_700_000_000_000,
            seq: 1,
            sent_ms: 1_700_000_000_500,
            to: None,
            body,
        }
    }

    fn entries(lines: &[&str]) -> Vec<Entry> {
        let mut r = Replica::new(3);
        let mut out = Vec::new();
        for l in lines {
            let Ok(Some(Line::Command(c))) = parse_line(l) else {
                panic!("{l}")
            };
            out.extend(r.command(&c, 1_700_000_000_000).unwrap());
        }
        out
    }

    #[test]
    fn round_trip_and_first_byte_is_the_version() {
        let key = Key::new(b"k".to_vec());
        let m = msg(Body::Digest {
            name: "gw1".into(),
            digest: vec![7; BUCKETS],
            reply: false,
        });
        let d = seal(&m, &key).unwrap();
        assert_eq!(d[0], VERSION);
        assert_eq!(open(&d, &key), Ok(m));
        let es = entries(&["add web.lan 10.0.0.1 weight=3", "add web.lan fd00::1"]);
        let m = msg(Body::Entries(es.iter().map(to_wire).collect()));
        let back = open(&seal(&m, &key).unwrap(), &key).unwrap();
        let Body::Entries(w) = back.body else {
            panic!()
        };
        let got: Vec<Entry> = w.iter().map(|e| from_wire(e).unwrap()).collect();
        assert_eq!(got, es);
    }

    /// A node answers a challenge only when the answer is no larger (nothing it sends in answer
    /// to a datagram is larger than that datagram): the padding must cover the difference of
    /// two headers, whatever node ids, boots and sequence numbers (two years of datagrams) say.
    #[test]
    fn an_answer_is_never_larger_than_its_challenge() {
        let key = Key::new(b"k".to_vec());
        let cookie = u64::MAX;
        let challenge = Message {
            node: 1 << 56,
            boot: 1 << 56,
            seq: 1,
            to: Some(u64::MAX),
            ..msg(Body::Challenge {
                cookie,
                pad: [0; CHALLENGE_PAD],
            })
        };
        let answer = Message {
            node: u64::MAX,
            boot: u64::MAX,
            seq: (1 << 28) - 1,
            to: Some(1 << 56),
            sent_ms: u64::from(u32::MAX) << 10,
            ..msg(Body::Answer { cookie })
        };
        let (c, a) = (
            seal(&challenge, &key).unwrap(),
            seal(&answer, &key).unwrap(),
        );
        assert!(
            a.len() <= c.len(),
            "answer {} > challenge {}",
            a.len(),
            c.len()
        );
    }

    #[test]
    fn refusals() {
        let key = Key::new(b"right".to_vec());
        let d = seal(
            &msg(Body::Hello {
                name: "a".into(),
                digest: vec![0; BUCKETS],
            }),
            &key,
        )
        .unwrap();
        assert_eq!(
            open(&d, &Key::new(b"wrong".to_vec())),
            Err(DropReason::BadMac)
        );
        assert_eq!(open(&d[..d.len() - 1], &key), Err(DropReason::BadMac));
        assert_eq!(open(&d[..10], &key), Err(DropReason::Truncated));
        assert_eq!(open(&[0u8; 1201], &key), Err(DropReason::Oversized));
        let mut v2 = d.clone();
        v2[0] = VERSION + 1;
        assert_eq!(open(&v2, &key), Err(DropReason::Version));
        let mut flipped = d.clone();
        flipped[5] ^= 1;
        assert_eq!(open(&flipped, &key), Err(DropReason::BadMac));
        // Authentic but malformed: a digest of the wrong length, a bad service name.
        let short = seal(
            &msg(Body::Hello {
                name: "a".into(),
                digest: vec![0; 3],
            }),
            &key,
        )
        .unwrap();
        assert_eq!(open(&short, &key), Err(DropReason::Garbage));
        // Node names by the one rule: never a control character, a space, another encoding, or
        // more than 64 bytes.
        for name in [
            "gw\n1",
            "gw 1",
            "gw\u{1b}[2J",
            "gw\u{e9}",
            &"g".repeat(65),
            "",
        ] {
            let m = msg(Body::Hello {
                name: name.into(),
                digest: vec![0; BUCKETS],
            });
            assert_eq!(
                open(&seal(&m, &key).unwrap(), &key),
                Err(DropReason::Garbage)
            );
        }
        // Sent before its sender started.
        let early = Message {
            sent_ms: 1_600_000_000_000,
            ..msg(Body::Entries(vec![]))
        };
        assert_eq!(
            open(&seal(&early, &key).unwrap(), &key),
            Err(DropReason::Garbage)
        );
        let mut w = to_wire(&entries(&["add web.lan 10.0.0.1"])[0]);
        if let WEntry::Service { name, .. } = &mut w {
            *name = "bad name".into();
        }
        let bad = seal(&msg(Body::Entries(vec![w])), &key).unwrap();
        assert_eq!(open(&bad, &key), Err(DropReason::Garbage));
        // Authentic trailing bytes after the message.
        let mut body = postcard::to_allocvec(&msg(Body::Entries(vec![]))).unwrap();
        body.push(0);
        let mut mac = key.mac();
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(open(&body, &key), Err(DropReason::Garbage));
    }

    #[test]
    fn random_bytes_never_panic() {
        let key = Key::new(b"k".to_vec());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..1300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            assert!(open(&bytes, &key).is_err());
        }
    }

    #[test]
    fn pack_cuts_large_state_into_datagrams_that_fit() {
        let key = Key::new(b"k".to_vec());
        let long = "a".repeat(60);
        let lines: Vec<String> = (0..200)
            .map(|i| format!("add {long}.{long}.{long}.s{i} fd00::{i:x} weight=3"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let es = entries(&refs);
        let mut seq = 0;
        let grams = pack(&es, &key, || {
            seq += 1;
            Message {
                seq,
                ..msg(Body::Entries(vec![]))
            }
        });
        assert!(grams.len() > 20, "{}", grams.len());
        let mut back = Vec::new();
        for (i, g) in grams.iter().enumerate() {
            assert!(g.len() <= MAX_DATAGRAM);
            let m = open(g, &key).unwrap();
            assert_eq!(m.seq, i as u64 + 1);
            let Body::Entries(w) = m.body else { panic!() };
            back.extend(w.iter().map(|e| from_wire(e).unwrap()));
        }
        assert_eq!(back, es);
    }
}
