//! The cluster's wire format: postcard-encoded messages in UDP datagrams, authenticated by
//! HMAC-SHA256.
//!
//! ```text
//! datagram = postcard(Message) ‖ HMAC-SHA256(key, postcard(Message))   at most 1,200 bytes
//! Message  = { version: u8 = 1, node: u64, epoch: u64, seq: u64, sent_ms: u64, body: Body }
//! Body     = Hello { name, digest } | Digest { name, digest, reply } | Entries([Entry])
//! ```
//!
//! The version is a single raw byte, the first of the datagram, so a future version can be
//! recognised (and refused) before anything else is read. **Only the types in this module are
//! serialized**; they are a compatibility boundary: a change of layout is a new [`VERSION`].
//! [`WAddr`] and [`WEntry`] implement serde by hand, in exactly the layout the derive gives
//! (the tests compare the two), because the derive's code for them is large on the routers.
//! Everything else converts to and from them by hand ([`to_wire`], [`from_wire`]).
//!
//! [`open`] is the checked view: every datagram goes through it, and anything it accepts is
//! well-formed (names valid, digest of the right length). It never panics on any input; what it
//! refuses comes back as a [`Drop`] reason. [`seal`] builds datagrams, [`pack`] cuts a list of
//! entries into as many datagrams as needed, each within [`MAX_DATAGRAM`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use lbfo_core::Name;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::cluster::replica::{BackendState, Entry, Reg, Stamp, BUCKETS};

/// The protocol version this agent speaks.
pub const VERSION: u8 = 1;
/// The largest datagram sent or accepted: fits any IPv6 path without fragmentation.
pub const MAX_DATAGRAM: usize = 1200;
/// Bytes of the HMAC-SHA256 tag at the end of every datagram.
pub const TAG: usize = 32;
/// The longest node name carried.
pub const MAX_NODE_NAME: usize = 64;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drop {
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
    /// Already seen, or from an earlier boot of its sender.
    Replay,
    /// Sent more than the freshness window ago (or ahead).
    Stale,
    /// Sent to another multicast group on our port (dropped by `net` where the kernel does not
    /// filter other groups itself).
    OtherGroup,
    /// Authentic, from another boot of this node's own id: a second node with this node's name,
    /// which the cluster cannot tell apart from this one (each node needs a name of its own).
    SameName,
}

impl Drop {
    /// The reason's name in logs and `status`.
    pub fn name(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::Oversized => "oversized",
            Drop::Version => "version",
            Drop::BadMac => "bad_mac",
            Drop::Garbage => "garbage",
            Drop::Replay => "replay",
            Drop::Stale => "stale",
            Drop::OtherGroup => "other_group",
            Drop::SameName => "same_name",
        }
    }
}

/// A stamp on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WStamp(pub u64, pub u64);

/// An address on the wire.
///
/// Encoded exactly as `#[derive(Serialize, Deserialize)]` would encode it (the variant's index,
/// then the 4 or 16 octets as a tuple), but by hand: serde's impls for `[u8; 16]` unroll sixteen
/// element reads, 1.4 KB of the router build; these loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WAddr {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

impl Serialize for WAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (index, variant, octets): (u32, &str, &[u8]) = match self {
            WAddr::V4(a) => (0, "V4", a),
            WAddr::V6(a) => (1, "V6", a),
        };
        s.serialize_newtype_variant("WAddr", index, variant, &Octets(octets))
    }
}

/// Octets serialized as a fixed-length array is: a tuple of `u8`s.
struct Octets<'a>(&'a [u8]);

impl Serialize for Octets<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for WAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WAddr, D::Error> {
        d.deserialize_enum("WAddr", &["V4", "V6"], AddrVisitor)
    }
}

struct AddrVisitor;

impl<'de> serde::de::Visitor<'de> for AddrVisitor {
    type Value = WAddr;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an IPv4 or IPv6 address")
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<WAddr, A::Error> {
        use serde::de::{Error, VariantAccess};
        let (index, v): (u32, _) = a.variant()?;
        let len = match index {
            0 => 4,
            1 => 16,
            _ => return Err(A::Error::custom("unknown address family")),
        };
        let o = v.newtype_variant_seed(OctetsSeed(len))?;
        Ok(match index {
            0 => WAddr::V4([o[0], o[1], o[2], o[3]]),
            _ => WAddr::V6(o),
        })
    }
}

/// Reads `.0` octets (at most 16) as a tuple of `u8`s, into the front of a 16-byte array.
struct OctetsSeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for OctetsSeed {
    type Value = [u8; 16];

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<[u8; 16], D::Error> {
        d.deserialize_tuple(self.0, self)
    }
}

impl<'de> serde::de::Visitor<'de> for OctetsSeed {
    type Value = [u8; 16];

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("address octets")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 16], A::Error> {
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().take(self.0).enumerate() {
            *o = seq
                .next_element()?
                .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
        }
        Ok(out)
    }
}

/// A replicated entry on the wire (see `replica::Entry`).
///
/// Encoded exactly as `#[derive(Serialize, Deserialize)]` would encode it, by hand: postcard
/// writes a struct or tuple as its fields in order with no framing, so an entry is read and
/// written as one flat run of its scalars (a variant of 8 or 17), each kind of value through
/// one deserializer, instead of the derive's nested visitors (1.5 KB more of the router build).
/// `tests::entries_encode_as_the_derived_enum_does` holds the two encodings equal.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Fields of a [`WEntry::Service`] and a [`WEntry::Backend`], flattened.
const SERVICE_FIELDS: usize = 8;
const BACKEND_FIELDS: usize = 17;

impl Serialize for WEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleVariant;
        /// A register: its value, then its stamp's two halves.
        fn reg<T: Serialize, V: SerializeTupleVariant>(
            t: &mut V,
            value: &T,
            at: &WStamp,
        ) -> Result<(), V::Error> {
            t.serialize_field(value)?;
            t.serialize_field(&at.0)?;
            t.serialize_field(&at.1)
        }
        match self {
            WEntry::Service {
                name,
                created,
                deleted,
                policy,
            } => {
                let mut t = s.serialize_tuple_variant("WEntry", 0, "Service", SERVICE_FIELDS)?;
                t.serialize_field(name)?;
                for at in [created, deleted] {
                    t.serialize_field(&at.0)?;
                    t.serialize_field(&at.1)?;
                }
                reg(&mut t, &policy.0, &policy.1)?;
                t.end()
            }
            WEntry::Backend {
                name,
                addr,
                exists,
                up,
                weight,
                prio,
                limit,
            } => {
                let mut t = s.serialize_tuple_variant("WEntry", 1, "Backend", BACKEND_FIELDS)?;
                t.serialize_field(name)?;
                t.serialize_field(addr)?;
                for (value, at) in [exists, up] {
                    reg(&mut t, value, at)?;
                }
                for (value, at) in [weight, prio] {
                    reg(&mut t, value, at)?;
                }
                reg(&mut t, &limit.0, &limit.1)?;
                t.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for WEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WEntry, D::Error> {
        d.deserialize_enum("WEntry", &["Service", "Backend"], EntryVisitor(0))
    }
}

/// Reads an entry; `.0` is the variant, once known.
struct EntryVisitor(u32);

impl<'de> serde::de::Visitor<'de> for EntryVisitor {
    type Value = WEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a replicated entry")
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<WEntry, A::Error> {
        use serde::de::{Error, VariantAccess};
        let (index, v): (u32, _) = a.variant()?;
        let len = match index {
            0 => SERVICE_FIELDS,
            1 => BACKEND_FIELDS,
            _ => return Err(A::Error::custom("unknown entry kind")),
        };
        v.tuple_variant(len, EntryVisitor(index))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<WEntry, A::Error> {
        fn next<'de, T: Deserialize<'de>, A: serde::de::SeqAccess<'de>>(
            seq: &mut A,
        ) -> Result<T, A::Error> {
            seq.next_element()?
                .ok_or_else(|| serde::de::Error::custom("entry cut short"))
        }
        fn stamp<'de, A: serde::de::SeqAccess<'de>>(seq: &mut A) -> Result<WStamp, A::Error> {
            Ok(WStamp(next(seq)?, next(seq)?))
        }
        let name: String = next(&mut seq)?;
        if self.0 == 0 {
            return Ok(WEntry::Service {
                name,
                created: stamp(&mut seq)?,
                deleted: stamp(&mut seq)?,
                policy: (next(&mut seq)?, stamp(&mut seq)?),
            });
        }
        Ok(WEntry::Backend {
            name,
            addr: next(&mut seq)?,
            exists: (next(&mut seq)?, stamp(&mut seq)?),
            up: (next(&mut seq)?, stamp(&mut seq)?),
            weight: (next(&mut seq)?, stamp(&mut seq)?),
            prio: (next(&mut seq)?, stamp(&mut seq)?),
            limit: (next(&mut seq)?, stamp(&mut seq)?),
        })
    }
}

/// What a message says. Serde by hand in the derive's exact layout, as [`WEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleVariant;
        let (index, variant, name, digest, reply) = match self {
            Body::Hello { name, digest } => (0, "Hello", name, digest, None),
            Body::Digest {
                name,
                digest,
                reply,
            } => (1, "Digest", name, digest, Some(reply)),
            Body::Entries(es) => return s.serialize_newtype_variant("Body", 2, "Entries", es),
        };
        let fields = 2 + usize::from(reply.is_some());
        let mut t = s.serialize_tuple_variant("Body", index, variant, fields)?;
        t.serialize_field(name)?;
        t.serialize_field(digest)?;
        if let Some(r) = reply {
            t.serialize_field(r)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        d.deserialize_enum("Body", &["Hello", "Digest", "Entries"], BodyVisitor(0))
    }
}

/// Reads a body; `.0` is the variant, once known.
struct BodyVisitor(u32);

impl<'de> serde::de::Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a message body")
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<Body, A::Error> {
        use serde::de::{Error, VariantAccess};
        let (index, v): (u32, _) = a.variant()?;
        match index {
            0 => v.tuple_variant(2, BodyVisitor(0)),
            1 => v.tuple_variant(3, BodyVisitor(1)),
            2 => v.newtype_variant().map(Body::Entries),
            _ => Err(A::Error::custom("unknown message kind")),
        }
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let short = || serde::de::Error::custom("message cut short");
        let name: String = seq.next_element()?.ok_or_else(short)?;
        let digest: Vec<u32> = seq.next_element()?.ok_or_else(short)?;
        if self.0 == 0 {
            return Ok(Body::Hello { name, digest });
        }
        let reply = seq.next_element()?.ok_or_else(short)?;
        Ok(Body::Digest {
            name,
            digest,
            reply,
        })
    }
}

/// One datagram's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// [`VERSION`].
    pub version: u8,
    /// The sender's node id.
    pub node: u64,
    /// The sender's boot epoch (its start time, ms since the epoch).
    pub epoch: u64,
    /// Per-boot datagram sequence number, from 1.
    pub seq: u64,
    /// The sender's wall clock when sending (ms since the epoch).
    pub sent_ms: u64,
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
pub fn open(datagram: &[u8], key: &Key) -> Result<Message, Drop> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Drop::Oversized);
    }
    // version + 4 varints of at least one byte + a body tag + the MAC.
    if datagram.len() < 6 + TAG {
        return Err(Drop::Truncated);
    }
    if datagram[0] != VERSION {
        return Err(Drop::Version);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| Drop::BadMac)?;
    let (msg, rest): (Message, &[u8]) =
        postcard::take_from_bytes(body).map_err(|_| Drop::Garbage)?;
    if !rest.is_empty() || !well_formed(&msg) {
        return Err(Drop::Garbage);
    }
    Ok(msg)
}

fn well_formed(m: &Message) -> bool {
    let name_ok = |n: &String| !n.is_empty() && n.len() <= MAX_NODE_NAME;
    match &m.body {
        Body::Hello { name, digest } | Body::Digest { name, digest, .. } => {
            name_ok(name) && digest.len() == BUCKETS
        }
        Body::Entries(es) => es.iter().all(|e| from_wire(e).is_some()),
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
/// (it is called once per datagram, so each gets its own sequence number).
pub fn pack(entries: &[Entry], key: &Key, mut header: impl FnMut() -> Message) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut batch: Vec<WEntry> = Vec::new();
    let mut msg = header();
    for e in entries {
        batch.push(to_wire(e));
        msg.body = Body::Entries(std::mem::take(&mut batch));
        if seal(&msg, key).is_none() {
            // Too big with this entry: send what fitted, start again with it alone.
            let Body::Entries(mut all) =
                std::mem::replace(&mut msg.body, Body::Entries(Vec::new()))
            else {
                unreachable!()
            };
            let last = all.pop();
            msg.body = Body::Entries(all);
            out.extend(seal(&msg, key));
            msg = header();
            batch.extend(last);
            continue;
        }
        let Body::Entries(all) = std::mem::replace(&mut msg.body, Body::Entries(Vec::new())) else {
            unreachable!()
        };
        batch = all;
    }
    if !batch.is_empty() {
        msg.body = Body::Entries(batch);
        out.extend(seal(&msg, key));
    }
    out
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
            epoch: 1_700_000_000_000,
            seq: 1,
            sent_ms: 1_700_000_000_500,
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
        assert_eq!(open(&d, &Key::new(b"wrong".to_vec())), Err(Drop::BadMac));
        assert_eq!(open(&d[..d.len() - 1], &key), Err(Drop::BadMac));
        assert_eq!(open(&d[..10], &key), Err(Drop::Truncated));
        assert_eq!(open(&[0u8; 1201], &key), Err(Drop::Oversized));
        let mut v2 = d.clone();
        v2[0] = 2;
        assert_eq!(open(&v2, &key), Err(Drop::Version));
        let mut flipped = d.clone();
        flipped[5] ^= 1;
        assert_eq!(open(&flipped, &key), Err(Drop::BadMac));
        // Authentic but malformed: a digest of the wrong length, a bad service name.
        let short = seal(
            &msg(Body::Hello {
                name: "a".into(),
                digest: vec![0; 3],
            }),
            &key,
        )
        .unwrap();
        assert_eq!(open(&short, &key), Err(Drop::Garbage));
        let mut w = to_wire(&entries(&["add web.lan 10.0.0.1"])[0]);
        if let WEntry::Service { name, .. } = &mut w {
            *name = "bad name".into();
        }
        let bad = seal(&msg(Body::Entries(vec![w])), &key).unwrap();
        assert_eq!(open(&bad, &key), Err(Drop::Garbage));
        // Authentic trailing bytes after the message.
        let mut body = postcard::to_allocvec(&msg(Body::Entries(vec![]))).unwrap();
        body.push(0);
        let mut mac = key.mac();
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(open(&body, &key), Err(Drop::Garbage));
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

    /// What `#[derive]` makes of the same enum: the layout `WAddr` keeps by hand.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Derived {
        V4([u8; 4]),
        V6([u8; 16]),
    }

    #[test]
    fn addresses_encode_as_the_derived_enum_does_and_decode_both_ways() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..1000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (u128::from(x) << 64 | u128::from(x.rotate_left(17))).to_be_bytes();
            let (ours, derived) = if i % 2 == 0 {
                let a = [b[0], b[1], b[2], b[3]];
                (WAddr::V4(a), Derived::V4(a))
            } else {
                (WAddr::V6(b), Derived::V6(b))
            };
            let bytes = postcard::to_allocvec(&ours).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&derived).unwrap());
            assert_eq!(postcard::from_bytes::<WAddr>(&bytes).unwrap(), ours);
            assert_eq!(postcard::from_bytes::<Derived>(&bytes).unwrap(), derived);
        }
        // Refused: an unknown family, and octets cut short.
        assert!(postcard::from_bytes::<WAddr>(&[2, 1, 2, 3, 4]).is_err());
        assert!(postcard::from_bytes::<WAddr>(&[0, 1, 2, 3]).is_err());
        assert!(postcard::from_bytes::<WAddr>(&[1; 16]).is_err());
    }

    /// What `#[derive]` makes of `WEntry`: the layout the hand-written impls keep.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum DerivedEntry {
        Service {
            name: String,
            created: WStamp,
            deleted: WStamp,
            policy: (u8, WStamp),
        },
        Backend {
            name: String,
            addr: Derived,
            exists: (bool, WStamp),
            up: (bool, WStamp),
            weight: (u32, WStamp),
            prio: (u32, WStamp),
            limit: (u64, WStamp),
        },
    }

    struct Rng(crate::TestRng);

    impl Rng {
        fn n(&mut self) -> u64 {
            // Small and large values, so varints of every length come up.
            let x = self.0.next();
            x >> (x % 64)
        }

        fn st(&mut self) -> WStamp {
            WStamp(self.n(), self.n())
        }
    }

    #[test]
    fn entries_encode_as_the_derived_enum_does() {
        let mut g = Rng(crate::TestRng(0x2545_f491_4f6c_dd1d));
        for i in 0..2000 {
            let name = format!("s{i}.lan");
            let (ours, derived) = if i % 3 == 0 {
                let (c, d, p) = (g.st(), g.st(), (g.n() as u8, g.st()));
                let ours = WEntry::Service {
                    name: name.clone(),
                    created: c,
                    deleted: d,
                    policy: p,
                };
                let derived = DerivedEntry::Service {
                    name,
                    created: c,
                    deleted: d,
                    policy: p,
                };
                (ours, derived)
            } else {
                let a = u128::from(g.n()).to_be_bytes();
                let (wa, da) = if i % 2 == 0 {
                    (WAddr::V6(a), Derived::V6(a))
                } else {
                    let v4 = [a[12], a[13], a[14], a[15]];
                    (WAddr::V4(v4), Derived::V4(v4))
                };
                let (e, u) = ((g.n() % 2 == 0, g.st()), (g.n() % 2 == 0, g.st()));
                let (w, p, l) = (
                    (g.n() as u32, g.st()),
                    (g.n() as u32, g.st()),
                    (g.n(), g.st()),
                );
                let ours = WEntry::Backend {
                    name: name.clone(),
                    addr: wa,
                    exists: e,
                    up: u,
                    weight: w,
                    prio: p,
                    limit: l,
                };
                let derived = DerivedEntry::Backend {
                    name,
                    addr: da,
                    exists: e,
                    up: u,
                    weight: w,
                    prio: p,
                    limit: l,
                };
                (ours, derived)
            };
            let bytes = postcard::to_allocvec(&ours).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&derived).unwrap(), "{i}");
            assert_eq!(postcard::from_bytes::<WEntry>(&bytes).unwrap(), ours);
            assert_eq!(
                postcard::from_bytes::<DerivedEntry>(&bytes).unwrap(),
                derived
            );
            // Cut anywhere, an entry is refused, never misread.
            for cut in 0..bytes.len() {
                assert!(postcard::from_bytes::<WEntry>(&bytes[..cut]).is_err());
            }
        }
        assert!(
            postcard::from_bytes::<WEntry>(&[2, 0]).is_err(),
            "unknown kind"
        );
    }

    /// What `#[derive]` makes of `Body`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum DerivedBody {
        Hello {
            name: String,
            digest: Vec<u32>,
        },
        Digest {
            name: String,
            digest: Vec<u32>,
            reply: bool,
        },
        Entries(Vec<DerivedEntry>),
    }

    #[test]
    fn bodies_encode_as_the_derived_enum_does() {
        let mut g = Rng(crate::TestRng(0x0123_4567_89ab_cdef));
        for i in 0..300u32 {
            let name = format!("node-{i}");
            let digest: Vec<u32> = (0..i % 70).map(|_| g.n() as u32).collect();
            let reply = g.n() % 2 == 0;
            let st = g.st();
            let (ours, derived) = match i % 3 {
                0 => (
                    Body::Hello {
                        name: name.clone(),
                        digest: digest.clone(),
                    },
                    DerivedBody::Hello { name, digest },
                ),
                1 => (
                    Body::Digest {
                        name: name.clone(),
                        digest: digest.clone(),
                        reply,
                    },
                    DerivedBody::Digest {
                        name,
                        digest,
                        reply,
                    },
                ),
                _ => {
                    let n = (i % 5) as usize;
                    let ours = (0..n)
                        .map(|_| WEntry::Service {
                            name: name.clone(),
                            created: st,
                            deleted: st,
                            policy: (1, st),
                        })
                        .collect();
                    let derived = (0..n)
                        .map(|_| DerivedEntry::Service {
                            name: name.clone(),
                            created: st,
                            deleted: st,
                            policy: (1, st),
                        })
                        .collect();
                    (Body::Entries(ours), DerivedBody::Entries(derived))
                }
            };
            let bytes = postcard::to_allocvec(&ours).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&derived).unwrap(), "{i}");
            assert_eq!(postcard::from_bytes::<Body>(&bytes).unwrap(), ours);
            for cut in 0..bytes.len() {
                assert!(postcard::from_bytes::<Body>(&bytes[..cut]).is_err());
            }
        }
        assert!(
            postcard::from_bytes::<Body>(&[3, 0]).is_err(),
            "unknown kind"
        );
    }
}
