//! Service names: DNS host names as lbfo stores, compares and hashes them.
//!
//! A [`Name`] is always valid: 1 to [`MAX_NAME_LEN`] bytes, labels of 1 to 63 bytes of ASCII
//! letters, digits, `-` or `_`, stored lower-case without a trailing dot. Queries arriving from
//! programs are *not* copied into a `Name`; [`hash_query`] and [`eq_query`] fold case on the fly so
//! the lookup path allocates and copies nothing.

use core::fmt;

/// The longest DNS name in its dotted text form, without the trailing dot (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// The longest node name (a cluster member's `node NAME`), in bytes.
pub const MAX_NODE_NAME: usize = 64;

/// Whether `name` may name a node of a cluster: 1 to [`MAX_NODE_NAME`] bytes, each an ASCII
/// letter, digit, `.`, `-` or `_`. The one rule, in bytes, for the config file (the `node`
/// setting, and the host name it defaults to) and for the wire: a node's name goes into logs,
/// the cluster's state file and `status`, so it can hold no space, control character, escape
/// sequence or other encoding.
pub fn is_node_name(name: &[u8]) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Why a string is not a service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Nothing, or only a dot.
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// A label is empty (`a..b`) or longer than [`MAX_LABEL_LEN`].
    BadLabel,
    /// A byte outside letters, digits, `-`, `_` and `.`; carries its offset.
    BadChar(usize),
}

impl fmt::Display for NameError {
    /// Fixed texts with one `write_str` each rather than `write!` (router size budget); the
    /// limits in them are [`MAX_NAME_LEN`] and [`MAX_LABEL_LEN`], checked below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const _: () = assert!(MAX_NAME_LEN == 253 && MAX_LABEL_LEN == 63);
        match self {
            NameError::Empty => f.write_str("empty name"),
            NameError::TooLong => f.write_str("name longer than 253 bytes"),
            NameError::BadLabel => f.write_str("empty label or label longer than 63 bytes"),
            NameError::BadChar(at) => {
                f.write_str("character at offset ")?;
                at.fmt(f)?;
                f.write_str(" is not allowed in a host name")
            }
        }
    }
}

/// A validated, lower-case service name without a trailing dot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; MAX_NAME_LEN],
}

impl Name {
    /// Validates `text` (one trailing dot allowed) and stores it lower-cased.
    pub fn new_checked(text: &[u8]) -> Result<Name, NameError> {
        let text = strip_dot(text);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        let mut name = Name {
            len: 0,
            bytes: [0; MAX_NAME_LEN],
        };
        let mut label = 0usize;
        for (i, &b) in text.iter().enumerate() {
            match b {
                b'.' => {
                    if label == 0 {
                        return Err(NameError::BadLabel);
                    }
                    label = 0;
                }
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => {
                    label += 1;
                    if label > MAX_LABEL_LEN {
                        return Err(NameError::BadLabel);
                    }
                }
                _ => return Err(NameError::BadChar(i)),
            }
            name.bytes[i] = b.to_ascii_lowercase();
        }
        if label == 0 {
            return Err(NameError::BadLabel);
        }
        // `text.len() <= 253` was checked above.
        name.len = text.len() as u8;
        Ok(name)
    }

    /// The name's bytes, lower-case, no trailing dot.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text (always ASCII).
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (checked in `new_checked`).
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The hash the shared table indexes this name by; equal to [`hash_query`] of any spelling.
    pub fn hash(&self) -> u64 {
        hash_query(self.as_bytes())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.as_str())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drops one trailing dot, as resolvers treat `web.lan.` and `web.lan` alike.
#[inline]
pub fn strip_dot(text: &[u8]) -> &[u8] {
    match text.split_last() {
        Some((b'.', rest)) => rest,
        _ => text,
    }
}

/// The index hash of `query`: its bytes with ASCII case folded, one trailing dot ignored, mixed
/// sixteen bytes at a time (see [`hash_words`]).
///
/// Runs in one pass without copying; total for any input, so it is safe on hostile queries.
pub fn hash_query(query: &[u8]) -> u64 {
    hash_words(strip_dot(query)).0
}

/// A query as a lookup uses it: its text without the trailing dot, hashed once (so a caller that
/// looks it up twice, or a lookup that retries, does not do it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'q> {
    text: &'q [u8],
    hash: u64,
    /// The first two words of `text`, zero-padded, as given (not case-folded).
    head: [u64; 2],
}

impl<'q> Query<'q> {
    /// Hashes `query` (any case, one optional trailing dot); `None` when it is empty or too long
    /// to be a service name.
    #[inline]
    pub fn new(query: &'q [u8]) -> Option<Query<'q>> {
        Query::of_text(strip_dot(query))
    }

    /// Hashes `text`, a query whose one optional trailing dot is already dropped (as
    /// [`strip_dot`] does); `None` when it is empty or too long to be a service name.
    #[inline(always)]
    pub fn of_text(text: &'q [u8]) -> Option<Query<'q>> {
        if text.is_empty() || text.len() > MAX_NAME_LEN {
            return None;
        }
        let (hash, head) = hash_words(text);
        Some(Query { text, hash, head })
    }

    /// The name without its trailing dot, as given (not case-folded).
    #[inline]
    pub fn text(&self) -> &'q [u8] {
        self.text
    }

    /// [`hash_query`] of the name.
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The name's first two words as the table stores them (see [`folded_word`]).
    #[cfg(test)]
    pub(crate) fn head(&self) -> [u64; 2] {
        [lower8(self.head[0]), lower8(self.head[1])]
    }

    /// The name's first two words, zero-padded, as given (compare with [`same_folded`]).
    #[inline(always)]
    pub(crate) fn head_raw(&self) -> [u64; 2] {
        self.head
    }
}

/// For the word `stored` of a lower-case name as the table stores it (zero-padded): the bits a
/// query's word must match for the two to be the same name in any case, all but bit 5 of each
/// letter byte. A query word `q` names `stored` exactly when `(stored ^ q) & must_match(stored)`
/// is 0.
pub(crate) fn must_match(stored: u64) -> u64 {
    u64::from_le_bytes(
        stored
            .to_le_bytes()
            .map(|b| if b.is_ascii_lowercase() { !0x20 } else { 0xff }),
    )
}

/// Bit 5 of every byte: the bit ASCII case changes. Or-ing it in folds case for the hash (and
/// folds pairs such as `@` and `` ` `` too, which only makes such names hash alike: names are
/// compared exactly, lower-cased, once a record's tag matches).
const CASE: u64 = 0x2020_2020_2020_2020;
/// Xor-ed into the second word of each pair: the 64-bit golden ratio. Its low byte (`0x15`)
/// has bit 5 clear, so `(word | CASE) ^ PAIR` is never zero. Nor is the other factor of a
/// name's first pair, `len ^ (word | CASE)`: a name is shorter than 256 bytes, so its second
/// byte keeps bit 5 set.
const PAIR: u64 = 0x9e37_79b9_7f4a_7c15;

/// [`hash_query`] of `text` as it is (no dot stripped); also returns its first two words,
/// zero-padded and not folded (`word(text, 0)` and `(.., 1)`).
///
/// The name's zero-padded words, case folded by or-ing [`CASE`] into every byte, are taken in
/// pairs `(a, b)` (the last pair padded with a zero word) and each pair goes through one folded
/// multiply, `h = fold(h ^ a, b ^ PAIR)`, the 128-bit product's halves xor-ed, starting from
/// `h = len`: every input bit reaches the middle of the product, so both the low bits the
/// index uses and the high bits it keeps as a tag depend on every byte. One multiply for a name
/// of up to sixteen bytes. The writer indexes with the same function, so changing it changes
/// the table format ([`crate::shm::LAYOUT_VERSION`]).
#[inline]
pub(crate) fn hash_words(text: &[u8]) -> (u64, [u64; 2]) {
    let n = text.len();
    if n > 16 {
        return hash_long(text);
    }
    // Up to sixteen bytes (nearly every service name) without a loop: the first eight bytes,
    // and the last eight shifted down to what follows them (none for exactly eight).
    let [first, second] = if n >= 8 {
        let word_at = |at: usize| {
            text.get(at..)
                .and_then(|t| t.first_chunk::<8>())
                .map_or(0, |w| u64::from_le_bytes(*w))
        };
        [
            word_at(0),
            word_at(n - 8).checked_shr(8 * (16 - n as u32)).unwrap_or(0),
        ]
    } else {
        [load_tail(text, 0), 0]
    };
    (pair(n as u64, first, second), [first, second])
}

/// [`hash_words`] for names longer than sixteen bytes, a pair of words at a time.
#[inline(never)]
fn hash_long(text: &[u8]) -> (u64, [u64; 2]) {
    let first = word(text, 0);
    let second = word(text, 1);
    let mut h = pair(text.len() as u64, first, second);
    let mut k = 2;
    while k < text.len().div_ceil(8) {
        h = pair(h, word(text, k), word(text, k.wrapping_add(1)));
        k = k.wrapping_add(2);
    }
    (h, [first, second])
}

/// One pair of words mixed into `h`: a folded multiply of the case-folded words.
#[inline(always)]
fn pair(h: u64, a: u64, b: u64) -> u64 {
    let p = u128::from(h ^ (a | CASE)) * u128::from((b | CASE) ^ PAIR);
    p as u64 ^ (p >> 64) as u64
}

/// Word `k` of `text`: bytes `8k..8k + 8`, little-endian, zero-padded past the end of `text`,
/// not case-folded.
#[inline(always)]
fn word(text: &[u8], k: usize) -> u64 {
    let at = k.wrapping_mul(8);
    match text.get(at..).and_then(|rest| rest.first_chunk::<8>()) {
        Some(w) => u64::from_le_bytes(*w),
        None => load_tail(text, at),
    }
}

/// Word `k` of `text` the way the shared table stores a name: bytes `8k..8k + 8`, little-endian,
/// ASCII-lower-cased, zero-padded past the end of `text`.
#[inline(always)]
pub(crate) fn folded_word(text: &[u8], k: usize) -> u64 {
    lower8(word(text, k))
}

/// The fewer than eight bytes of `text` from `at` on, as a zero-padded little-endian word,
/// without a loop: one load of the last eight bytes shifted down when `text` has eight, else two
/// overlapping loads.
#[inline(always)]
fn load_tail(text: &[u8], at: usize) -> u64 {
    let n = text.len().saturating_sub(at);
    if n == 0 {
        return 0;
    }
    if let Some(last) = text.last_chunk::<8>() {
        // 1 <= n <= 7: drop the 8 - n bytes before `at`, which sit at the low end.
        return u64::from_le_bytes(*last).wrapping_shr(8 * (8 - n as u32));
    }
    // `text` is shorter than eight bytes, so `at` is 0 and `n` its length.
    let u32_at = |at: usize| {
        text.get(at..)
            .and_then(|b| b.first_chunk::<4>())
            .map_or(0, |b| u64::from(u32::from_le_bytes(*b)))
    };
    let byte_at = |at: usize| text.get(at).map_or(0, |b| u64::from(*b));
    match n {
        // Bytes 0, n/2 and n-1 cover 1 to 3 bytes; a byte read twice lands on the same place.
        1..=3 => byte_at(0) | byte_at(n / 2) << (8 * (n / 2)) | byte_at(n - 1) << (8 * (n - 1)),
        // Bytes 0..4 and n-4..n cover 4 to 7 bytes, overlapping on equal bytes.
        _ => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
    }
}

/// `u8::to_ascii_lowercase` applied to each of the eight bytes of `x` at once.
#[inline(always)]
const fn lower8(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // With each byte's top bit cleared, adding 0x3f sets it exactly for bytes >= b'A' and adding
    // 0x25 exactly for bytes > b'Z', and no byte carries into the next.
    let low = x & LOW7;
    let upper = (low + 0x3f3f_3f3f_3f3f_3f3f) & !(low + 0x2525_2525_2525_2525) & !x & HIGH;
    x | upper >> 2
}

/// Whether `query` (any case, optional trailing dot) names `stored` (lower-case, no dot).
pub fn eq_query(stored: &[u8], query: &[u8]) -> bool {
    let query = strip_dot(query);
    stored.len() == query.len()
        && stored
            .iter()
            .zip(query)
            .all(|(s, q)| *s == q.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn check(input: &str, expect: Result<&str, NameError>) {
        let got = Name::new_checked(input.as_bytes());
        assert_eq!(
            got.as_ref().map(|n| n.as_str()),
            expect.as_ref().map(|s| *s),
            "input {input:?}"
        );
    }

    #[test]
    fn names() {
        check("web.lan", Ok("web.lan"));
        check("WEB.Lan.", Ok("web.lan"));
        check("_sip._udp.x-1", Ok("_sip._udp.x-1"));
        check("", Err(NameError::Empty));
        check(".", Err(NameError::Empty));
        check("a..b", Err(NameError::BadLabel));
        check(".a", Err(NameError::BadLabel));
        check("a..", Err(NameError::BadLabel));
        check("we b", Err(NameError::BadChar(2)));
        check("wéb", Err(NameError::BadChar(1)));
        let label63 = "a".repeat(63);
        check(&label63, Ok(&label63));
        check(&"a".repeat(64), Err(NameError::BadLabel));
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long.len(), 253);
        check(&long, Ok(&long));
        check(&format!("{long}e"), Err(NameError::TooLong));
    }

    #[test]
    fn error_texts() {
        use std::string::ToString;
        for (e, text) in [
            (NameError::Empty, "empty name"),
            (NameError::TooLong, "name longer than 253 bytes"),
            (
                NameError::BadLabel,
                "empty label or label longer than 63 bytes",
            ),
            (
                NameError::BadChar(12),
                "character at offset 12 is not allowed in a host name",
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn folding_by_words_matches_folding_by_bytes() {
        // The hash restated byte by byte: pairs of padded words, each byte or-ed with 0x20.
        fn reference(text: &[u8]) -> u64 {
            let mut padded: Vec<u8> = text.iter().map(|b| b | 0x20).collect();
            padded.resize(text.len().div_ceil(16).max(1) * 16, 0x20);
            let mut h = text.len() as u64;
            for p in padded.chunks(16) {
                let a = u64::from_le_bytes(p[..8].try_into().unwrap());
                let b = u64::from_le_bytes(p[8..].try_into().unwrap());
                let x = u128::from(h ^ a) * u128::from(b ^ 0x9e37_79b9_7f4a_7c15);
                h = (x as u64) ^ (x >> 64) as u64;
            }
            h
        }
        let all: Vec<u8> = (0..=255u8).collect();
        for k in 0..32 {
            let want: Vec<u8> = all.iter().map(u8::to_ascii_lowercase).collect();
            let want = u64::from_le_bytes(want[k * 8..k * 8 + 8].try_into().unwrap());
            assert_eq!(folded_word(&all, k), want, "word {k}");
        }
        for len in 0..40 {
            let text: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(
                hash_words(&text),
                (reference(&text), [word(&text, 0), word(&text, 1)]),
                "len {len}"
            );
            let query = Query::new(&text).filter(|_| text.last() != Some(&b'.'));
            if let Some(q) = query {
                assert_eq!(
                    q.head(),
                    [folded_word(&text, 0), folded_word(&text, 1)],
                    "len {len}"
                );
            }
            let mut padded = text.clone();
            padded.resize(48, 0);
            for k in 0..6 {
                let want: Vec<u8> = padded[k * 8..k * 8 + 8]
                    .iter()
                    .map(u8::to_ascii_lowercase)
                    .collect();
                assert_eq!(
                    folded_word(&text, k),
                    u64::from_le_bytes(want.try_into().unwrap()),
                    "len {len} word {k}"
                );
            }
        }
        assert_eq!(hash_query(b"Web.LAN."), reference(b"web.lan"));
        assert_eq!(hash_query(b"Web.LAN."), hash_query(b"web.lan"));
        // `must_match` gives `lower8` equality for every stored byte a name can hold, against
        // every query byte.
        let stored: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz0123456789-_.\0".to_vec();
        for &s in &stored {
            for q in 0..=255u8 {
                for at in [0, 3, 7] {
                    let (sw, qw) = (u64::from(s) << (8 * at), u64::from(q) << (8 * at));
                    let (sw, qw) = (sw | 0x2e00, qw | 0x2e00);
                    assert_eq!(
                        (sw ^ qw) & must_match(sw) == 0,
                        lower8(qw) == sw,
                        "{s:#x} {q:#x} at {at}"
                    );
                }
            }
        }
        // Zero padding does not make a name equal to itself with NUL bytes appended.
        assert_ne!(hash_query(b"web"), hash_query(b"web\0"));
    }

    #[test]
    fn hash_spreads_similar_names_over_the_index() {
        // 4,096 names that differ in one or two bytes fill 8,192 index slots about as evenly as
        // random hashes would: no slot takes more than a handful, and the tags differ.
        let mut slots = vec![0u32; 8192];
        let mut tags = std::collections::BTreeSet::new();
        for i in 0..4096 {
            let h = hash_query(std::format!("s{i}.example").as_bytes());
            slots[(h as usize) & 8191] += 1;
            tags.insert(h >> 32);
        }
        assert!(slots.iter().all(|&n| n <= 8), "{:?}", slots.iter().max());
        assert_eq!(tags.len(), 4096);
        // The same for short names (one word), long ones (several pairs) and names that differ
        // only past the sixteenth byte.
        for name in [
            |i| std::format!("s{i}"),
            |i| std::format!("backend-{i}.rack-7.dc-east.example.net"),
            |i| std::format!("a-shared-prefix.{i}"),
        ] as [fn(u32) -> std::string::String; 3]
        {
            let mut slots = vec![0u32; 8192];
            let mut tags = std::collections::BTreeSet::new();
            for i in 0..4096 {
                let h = hash_query(name(i).as_bytes());
                slots[(h as usize) & 8191] += 1;
                tags.insert(h >> 32);
            }
            assert!(slots.iter().all(|&n| n <= 8), "{:?}", slots.iter().max());
            assert_eq!(tags.len(), 4096, "{}", name(0));
        }
    }

    #[test]
    fn hash_and_eq_fold_case_and_dot() {
        let n = Name::new_checked(b"Web.LAN").unwrap();
        assert_eq!(n.hash(), hash_query(b"web.lan."));
        assert_eq!(n.hash(), hash_query(b"WEB.lan"));
        assert_ne!(n.hash(), hash_query(b"web.lam"));
        assert!(eq_query(n.as_bytes(), b"wEb.lAn."));
        assert!(!eq_query(n.as_bytes(), b"web.la"));
        assert!(!eq_query(n.as_bytes(), b"web.lan.."));
    }
}
