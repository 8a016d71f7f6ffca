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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("empty name"),
            NameError::TooLong => write!(f, "name longer than {MAX_NAME_LEN} bytes"),
            NameError::BadLabel => write!(f, "empty label or label longer than {MAX_LABEL_LEN} bytes"),
            NameError::BadChar(at) => write!(f, "character at offset {at} is not allowed in a host name"),
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
        let mut name = Name { len: 0, bytes: [0; MAX_NAME_LEN] };
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
pub fn strip_dot(text: &[u8]) -> &[u8] {
    match text.split_last() {
        Some((b'.', rest)) => rest,
        _ => text,
    }
}

/// FNV-1a (64 bit) over the ASCII-lower-cased bytes of `query`, ignoring one trailing dot.
///
/// Runs in one pass without copying; total for any input, so it is safe on hostile queries.
pub fn hash_query(query: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in strip_dot(query) {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether `query` (any case, optional trailing dot) names `stored` (lower-case, no dot).
pub fn eq_query(stored: &[u8], query: &[u8]) -> bool {
    let query = strip_dot(query);
    stored.len() == query.len() && stored.iter().zip(query).all(|(s, q)| *s == q.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&str, NameError>) {
        let got = Name::new_checked(input.as_bytes());
        assert_eq!(got.as_ref().map(|n| n.as_str()), expect.as_ref().map(|s| *s), "input {input:?}");
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
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(long.len(), 253);
        check(&long, Ok(&long));
        check(&format!("{long}e"), Err(NameError::TooLong));
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
