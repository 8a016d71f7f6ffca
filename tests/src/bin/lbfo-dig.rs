//! `lbfo-dig`: a minimal DNS client for the dnsmasq export tests (no dig on a fresh machine).
//!
//! ```text
//! lbfo-dig SERVER PORT NAME [a|aaaa]
//!     one line per answer record of that type: `ADDRESS TTL`, in the server's order;
//!     exit 0 with no lines for an empty answer, 1 on a timeout (1 s) or a malformed reply
//! ```
//!
//! One UDP query with recursion desired; the reply is parsed through bounds-checked reads only
//! (name compression followed for the answer names).

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::exit;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (server, port, name) = match args.as_slice() {
        [s, p, n] | [s, p, n, _] => (s.as_str(), p.as_str(), n.as_str()),
        _ => fail("usage: lbfo-dig SERVER PORT NAME [a|aaaa]"),
    };
    let qtype: u16 = match args.get(3).map(String::as_str) {
        None | Some("a") => 1,
        Some("aaaa") => 28,
        Some(t) => fail(&format!("unknown type {t}")),
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| fail(&format!("bind: {e}")));
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap_or_else(|e| fail(&format!("timeout: {e}")));
    let id = (std::process::id() & 0xffff) as u16;
    let query = build_query(id, name, qtype);
    sock.send_to(&query, format!("{server}:{port}"))
        .unwrap_or_else(|e| fail(&format!("send: {e}")));
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| fail(&format!("no reply: {e}")));
    let reply = buf.get(..n).unwrap_or_default();
    match parse_reply(reply, id, qtype) {
        Some(lines) => lines.iter().for_each(|l| println!("{l}")),
        None => fail("malformed reply"),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("lbfo-dig: {msg}");
    exit(1)
}

fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Skips a (possibly compressed) name starting at `at`; returns the offset after it.
fn skip_name(b: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *b.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

fn parse_reply(b: &[u8], id: u16, qtype: u16) -> Option<Vec<String>> {
    if u16_at(b, 0)? != id || b.get(2)? & 0x80 == 0 {
        return None;
    }
    let (qd, an) = (u16_at(b, 4)?, u16_at(b, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(b, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        at = skip_name(b, at)?;
        let (ty, ttl_hi, ttl_lo, len) = (
            u16_at(b, at)?,
            u16_at(b, at + 4)?,
            u16_at(b, at + 6)?,
            usize::from(u16_at(b, at + 8)?),
        );
        let ttl = (u32::from(ttl_hi) << 16) | u32::from(ttl_lo);
        let data = b.get(at + 10..at + 10 + len)?;
        at += 10 + len;
        if ty != qtype {
            continue;
        }
        let addr = match data.len() {
            4 => Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?).to_string(),
            16 => Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?).to_string(),
            _ => return None,
        };
        out.push(format!("{addr} {ttl}"));
    }
    Some(out)
}
