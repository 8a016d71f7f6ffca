//! IP addresses as text: parsed and shown exactly as `core::net` does, in a fraction of the code.
//!
//! `core::net`'s parser and `Display` impls are generic and careful about formatter options,
//! which on the 32-bit routers costs a share of the agent's size budget (issue 5; the size report
//! has the figures). What the agent needs is narrower: read an address from a config or FIFO
//! token, and write one into a log line, a status report or a hosts file. [`parse_ip`] accepts
//! exactly the strings `IpAddr::from_str` accepts, and [`Ip`] and [`Sock`] write exactly what
//! `IpAddr`'s and `SocketAddr`'s `Display` write (RFC 5952 for IPv6, `::ffff:a.b.c.d` for
//! IPv4-mapped addresses, `[addr%scope]:port`); the tests hold them to that against `core::net`
//! itself.

use core::fmt::{self, Write};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Parses an IPv4 (`a.b.c.d`, decimal, no leading zeros) or IPv6 address, as
/// `IpAddr::from_str` does.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let b = s.as_bytes();
    match parse_v4(b) {
        Some(a) => Some(IpAddr::V4(Ipv4Addr::from(a))),
        None => parse_v6(b).map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    }
}

/// `a.b.c.d`: four decimal octets, each `0` or without a leading zero, at most 255.
fn parse_v4(b: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = b.split(|&c| c == b'.');
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p[0] == b'0') {
            return None;
        }
        let mut n: u16 = 0;
        for &d in p {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(d - b'0');
        }
        *o = u8::try_from(n).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Up to eight groups of one to four hex digits, at most one `::` standing for one or more zero
/// groups, and optionally an IPv4 address in place of the last two groups.
fn parse_v6(b: &[u8]) -> Option<[u8; 16]> {
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let (head_len, rest) = match b.windows(2).position(|w| w == b"::") {
        // Before a `::`: at most seven groups, and no IPv4 address (it may only end one).
        Some(i) => (groups(&b[..i], &mut head, 7, false)?, Some(&b[i + 2..])),
        None => (groups(b, &mut head, 8, true)?, None),
    };
    let mut out = [0u8; 16];
    let mut put = |i: usize, g: u16| out[2 * i..2 * i + 2].copy_from_slice(&g.to_be_bytes());
    match rest {
        // No `::`: exactly eight groups.
        None => {
            if head_len != 8 {
                return None;
            }
            head.iter().enumerate().for_each(|(i, &g)| put(i, g));
        }
        // `::` stands for at least one zero group.
        Some(rest) => {
            let tail_len = groups(rest, &mut tail, 7 - head_len, true)?;
            head[..head_len]
                .iter()
                .enumerate()
                .for_each(|(i, &g)| put(i, g));
            let start = 8 - tail_len;
            tail[..tail_len]
                .iter()
                .enumerate()
                .for_each(|(i, &g)| put(start + i, g));
        }
    }
    Some(out)
}

/// Reads colon-separated groups from `b` into `out`: at most `max` of them, an IPv4 address
/// (where `v4` allows one) counting as two and only as the last; their number. An empty `b` is
/// no groups.
fn groups(b: &[u8], out: &mut [u16; 8], max: usize, v4: bool) -> Option<usize> {
    if b.is_empty() {
        return Some(0);
    }
    let mut n = 0;
    let mut parts = b.split(|&c| c == b':').peekable();
    while let Some(p) = parts.next() {
        if v4 && parts.peek().is_none() && p.contains(&b'.') {
            // The last part: an IPv4 address as two groups.
            let v4 = parse_v4(p)?;
            if n + 2 > max {
                return None;
            }
            out[n] = u16::from_be_bytes([v4[0], v4[1]]);
            out[n + 1] = u16::from_be_bytes([v4[2], v4[3]]);
            return Some(n + 2);
        }
        if p.is_empty() || p.len() > 4 || n == max {
            return None;
        }
        let mut g: u16 = 0;
        for &d in p {
            g = (g << 4) | u16::from(hex_digit(d)?);
        }
        out[n] = g;
        n += 1;
    }
    Some(n)
}

fn hex_digit(d: u8) -> Option<u8> {
    match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    }
}

/// Shows an address as `IpAddr`'s `Display` does (width and alignment included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip(pub IpAddr);

/// Shows a socket address as `SocketAddr`'s `Display` does: `a.b.c.d:port`,
/// `[v6]:port`, `[v6%scope]:port` (width and alignment included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sock(pub SocketAddr);

/// A line of text on the stack, long enough for any socket address.
struct Buf {
    bytes: [u8; 64],
    len: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            bytes: [0; 64],
            len: 0,
        }
    }

    // Out of line: every other method pushes through it.
    #[inline(never)]
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn push_str(&mut self, s: &str) {
        s.bytes().for_each(|b| self.push(b));
    }

    /// `n` in decimal.
    fn dec(&mut self, n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits[i..].iter().for_each(|&d| self.push(d));
    }

    /// `n` in lower-case hex, without leading zeros.
    fn hex(&mut self, n: u16) {
        let mut started = false;
        for shift in [12, 8, 4, 0] {
            let d = ((n >> shift) & 0xf) as u8;
            if d != 0 || started || shift == 0 {
                started = true;
                self.push(b"0123456789abcdef"[usize::from(d)]);
            }
        }
    }

    fn v4(&mut self, a: &Ipv4Addr) {
        for (i, &o) in a.octets().iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            self.dec(u32::from(o));
        }
    }

    fn v6(&mut self, a: &Ipv6Addr) {
        let o = a.octets();
        if o[..10] == [0; 10] && o[10..12] == [0xff; 2] {
            // IPv4-mapped.
            self.push_str("::ffff:");
            return self.v4(&Ipv4Addr::new(o[12], o[13], o[14], o[15]));
        }
        let g: [u16; 8] = core::array::from_fn(|i| u16::from_be_bytes([o[2 * i], o[2 * i + 1]]));
        // The first longest run of two or more zero groups becomes `::`.
        let (mut best, mut best_len, mut run) = (0, 0, 0);
        for (i, &x) in g.iter().enumerate() {
            run = if x == 0 { run + 1 } else { 0 };
            if run > best_len {
                (best, best_len) = (i + 1 - run, run);
            }
        }
        let mut i = 0;
        while i < 8 {
            if best_len > 1 && i == best {
                self.push_str("::");
                i += best_len;
                continue;
            }
            if i > 0 && !(best_len > 1 && i == best + best_len) {
                self.push(b':');
            }
            self.hex(g[i]);
            i += 1;
        }
    }

    fn show(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only ASCII was pushed.
        f.pad(core::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default())
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = Buf::new();
        match &self.0 {
            IpAddr::V4(a) => b.v4(a),
            IpAddr::V6(a) => b.v6(a),
        }
        b.show(f)
    }
}

impl fmt::Display for Sock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut b = Buf::new();
        match &self.0 {
            SocketAddr::V4(s) => b.v4(s.ip()),
            SocketAddr::V6(s) => {
                b.push(b'[');
                b.v6(s.ip());
                if s.scope_id() != 0 {
                    b.push(b'%');
                    b.dec(s.scope_id());
                }
                b.push(b']');
            }
        }
        b.push(b':');
        b.dec(u32::from(self.0.port()));
        b.show(f)
    }
}

/// Writes `addr` as [`Ip`] shows it, for writers that are not formatters.
pub fn write_ip(w: &mut impl Write, addr: &IpAddr) -> fmt::Result {
    write!(w, "{}", Ip(*addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestRng;
    use core::net::{SocketAddrV4, SocketAddrV6};
    use core::str::FromStr;

    /// Random cases per test: fewer under Miri, which runs every core test and is slow.
    const CASES: u32 = if cfg!(miri) { 100 } else { 200_000 };

    fn same_as_std(s: &str) {
        assert_eq!(parse_ip(s), IpAddr::from_str(s).ok(), "parsing {s:?}");
    }

    #[test]
    fn parses_what_std_parses_and_refuses_what_it_refuses() {
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "1.2.3.4",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.04",
            "1.2.3.0",
            "a.b.c.d",
            "1.2.3.4 ",
            " 1.2.3.4",
            "",
            ".",
            ":",
            "::",
            ":::",
            "::1",
            "1::",
            "1::1",
            "::ffff:1.2.3.4",
            "64:ff9b::192.0.2.33",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6::8",
            "1::3:4:5:6:7:8",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3.4",
            "1::1.2.3.4",
            "fe80::1%1",
            "[::1]",
            "1:::2",
            "1::2::3",
            "12345::",
            "abcd::ef01",
            "ABCD::EF01",
            "g::1",
            "::1:",
            ":1::",
            "1:2:3:4:5:6:7:8::",
            "::1.2.3",
            "1.2.3.4::",
            "::01.2.3.4",
            "0:0:0:0:0:0:0:0",
            "0000::",
            "00000::",
            "+1.2.3.4",
            "1.2.3.+4",
            "1.2.3.4:80",
            "::ffff:256.1.1.1",
            "1:2:3:4:5:6:7:8:1.2.3.4",
            "::2:3:4:5:6:7:1.2.3.4",
        ] {
            same_as_std(s);
        }
        // Random strings over the characters addresses are made of.
        let pieces = [
            "0", "1", "00", "12", "255", "256", "ffff", "abcd", "12345", ".", ":", "::", "A", "g",
            "1.2.3.4", "0.0.0.0",
        ];
        let mut r = TestRng(0x9e37_79b9_7f4a_7c15);
        let (mut v4, mut v6) = (0, 0);
        for _ in 0..CASES {
            let mut s = String::new();
            for _ in 0..(r.next() % 12) {
                s.push_str(r.pick(&pieces));
            }
            same_as_std(&s);
            match parse_ip(&s) {
                Some(IpAddr::V4(_)) => v4 += 1,
                Some(IpAddr::V6(_)) => v6 += 1,
                None => {}
            }
        }
        // The corpus holds valid addresses of both kinds, not only refusals (counted on the
        // full run; Miri's hundred cases are too few to be sure of both).
        if !cfg!(miri) {
            assert!(v4 > CASES / 200 && v6 > CASES / 200, "{v4} IPv4, {v6} IPv6");
        }
    }

    #[test]
    fn shows_what_std_shows() {
        let mut r = TestRng(0x2545_f491_4f6c_dd1d);
        let v6 = |r: &mut TestRng| {
            // Mostly zero groups, so that runs of every length and position come up.
            let mut g = [0u16; 8];
            for x in g.iter_mut() {
                *x = match r.next() % 4 {
                    0 | 1 => 0,
                    2 => (r.next() % 16) as u16,
                    _ => r.next() as u16,
                };
            }
            Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])
        };
        for i in 0..CASES {
            let a4 = Ipv4Addr::from(r.next() as u32);
            let a6 = if i % 16 == 0 {
                a4.to_ipv6_mapped()
            } else {
                v6(&mut r)
            };
            for ip in [IpAddr::V4(a4), IpAddr::V6(a6)] {
                assert_eq!(Ip(ip).to_string(), ip.to_string());
                let mut s = String::new();
                write_ip(&mut s, &ip).unwrap();
                assert_eq!(s, ip.to_string());
            }
            let port = r.next() as u16;
            let scope = if i % 3 == 0 { r.next() as u32 } else { 0 };
            for sa in [
                SocketAddr::V4(SocketAddrV4::new(a4, port)),
                SocketAddr::V6(SocketAddrV6::new(a6, port, 0, scope)),
            ] {
                assert_eq!(Sock(sa).to_string(), sa.to_string());
            }
        }
        for s in [
            "::",
            "::1",
            "1::",
            "::ffff:0.0.0.0",
            "1:0:0:1:0:0:0:1",
            "0:1:0:0:1:0:0:0",
        ] {
            let ip = IpAddr::from_str(s).unwrap();
            assert_eq!(Ip(ip).to_string(), ip.to_string());
        }
        // Width and alignment, as std pads addresses.
        let ip = IpAddr::from_str("fd00::1").unwrap();
        assert_eq!(format!("[{:>12}]", Ip(ip)), format!("[{:>12}]", ip));
        assert_eq!(format!("[{:<12}]", Ip(ip)), format!("[{:<12}]", ip));
    }
}
