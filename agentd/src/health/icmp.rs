//! The `icmp` check: echo requests and replies over raw sockets (the agent runs as root), one
//! socket per address family shared by every `icmp` check, opened while some check needs it.
//!
//! A raw socket receives every echo reply that reaches the machine (other programs' pings
//! too), so a reply counts only when its identifier is this agent's (random at start), its
//! sequence number is one in flight and it comes from the address that sequence was sent to.
//! IPv4 replies arrive with their IP header, IPv6 ones without; the kernel fills in ICMPv6
//! checksums, the agent computes ICMPv4 ones.

use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvfrom, sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};

/// Replies read per socket per wake-up, so a flood of other programs' pings cannot starve the
/// loop's other sources.
pub const MAX_READS: usize = 64;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// The two raw sockets (each opened on first use) and the echo identifier and sequence.
#[derive(Debug)]
pub struct Pinger {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
    id: u16,
    seq: u16,
}

impl Pinger {
    /// A pinger whose echoes carry identifier `id`.
    pub fn new(id: u16) -> Pinger {
        Pinger {
            v4: None,
            v6: None,
            id,
            seq: 0,
        }
    }

    /// Sends an echo request to `addr`; its sequence number, to match the reply with.
    pub fn send(&mut self, addr: IpAddr) -> Result<u16, Errno> {
        let v6 = addr.is_ipv6();
        let sock = if v6 { &mut self.v6 } else { &mut self.v4 };
        if sock.is_none() {
            *sock = Some(open(v6)?);
        }
        let Some(fd) = sock.as_ref() else {
            return Err(Errno::EBADF);
        };
        self.seq = self.seq.wrapping_add(1);
        let packet = echo_request(self.id, self.seq, v6);
        let to = SockaddrStorage::from(match addr {
            IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, 0)),
            IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, 0)),
        });
        loop {
            match sendto(fd.as_raw_fd(), &packet, &to, MsgFlags::empty()) {
                Ok(_) => return Ok(self.seq),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The open sockets, to poll for `POLLIN` (`true` for IPv6).
    pub fn fds(&self) -> impl Iterator<Item = (BorrowedFd<'_>, bool)> {
        let v4 = self.v4.as_ref().map(|f| (f.as_fd(), false));
        let v6 = self.v6.as_ref().map(|f| (f.as_fd(), true));
        v4.into_iter().chain(v6)
    }

    /// Reads the replies waiting on one socket (at most [`MAX_READS`]): the sender and sequence
    /// number of each echo reply carrying this agent's identifier.
    pub fn replies(&self, v6: bool) -> Vec<(IpAddr, u16)> {
        let mut out = Vec::new();
        let Some(fd) = (if v6 { &self.v6 } else { &self.v4 }) else {
            return out;
        };
        let mut buf = [0u8; 1500];
        for _ in 0..MAX_READS {
            let (n, from) = match recvfrom::<SockaddrStorage>(fd.as_raw_fd(), &mut buf) {
                Ok(got) => got,
                Err(Errno::EINTR) => continue,
                // EAGAIN: drained. Anything else: the socket says so again at the next poll,
                // and an echo that never matches times out as it would without an answer.
                Err(_) => break,
            };
            let from = from.and_then(|f| {
                f.as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| f.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
            });
            if let (Some(from), Some((id, seq))) = (from, parse_reply(&buf[..n], v6)) {
                if id == self.id {
                    out.push((from, seq));
                }
            }
        }
        out
    }

    /// Closes the sockets no check needs any more.
    pub fn keep(&mut self, v4: bool, v6: bool) {
        if !v4 {
            self.v4 = None;
        }
        if !v6 {
            self.v6 = None;
        }
    }
}

/// A raw ICMP (or ICMPv6) socket, non-blocking and close-on-exec.
fn open(v6: bool) -> Result<OwnedFd, Errno> {
    let (family, proto) = if v6 {
        (AddressFamily::Inet6, SockProtocol::IcmpV6)
    } else {
        (AddressFamily::Inet, SockProtocol::Icmp)
    };
    socket(
        family,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        proto,
    )
}

/// An echo request: type, code, checksum, identifier, sequence, and eight bytes of payload.
pub fn echo_request(id: u16, seq: u16, v6: bool) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"lbfo-agt");
    if !v6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The identifier and sequence of an echo reply as a raw socket delivers it (IPv4 with its IP
/// header); `None` for anything else.
pub fn parse_reply(packet: &[u8], v6: bool) -> Option<(u16, u16)> {
    let (icmp, reply) = if v6 {
        (packet, ECHO_REPLY_V6)
    } else {
        let header = usize::from(packet.first()? & 0x0f) * 4;
        // Version 4, protocol ICMP.
        if packet.first()? >> 4 != 4 || *packet.get(9)? != 1 {
            return None;
        }
        (packet.get(header..)?, ECHO_REPLY_V4)
    };
    if icmp.len() < 8 || icmp[0] != reply || icmp[1] != 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_id_sequence_and_a_valid_checksum() {
        let p = echo_request(0x1234, 0xfffe, false);
        assert_eq!(&p[..8], &[8, 0, p[2], p[3], 0x12, 0x34, 0xff, 0xfe]);
        // A packet with its checksum in place sums to zero.
        assert_eq!(checksum(&p), 0);
        // RFC 1071's example words.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        let p6 = echo_request(7, 9, true);
        assert_eq!(&p6[..8], &[128, 0, 0, 0, 0, 7, 0, 9]);
    }

    #[test]
    fn replies_are_parsed_and_everything_else_refused() {
        let mut v4 = vec![
            0x45, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let mut icmp = echo_request(0xbeef, 42, false).to_vec();
        icmp[0] = 0;
        v4.extend(&icmp);
        assert_eq!(parse_reply(&v4, false), Some((0xbeef, 42)));
        let mut request = v4.clone();
        request[20] = 8;
        assert_eq!(parse_reply(&request, false), None, "a request is no reply");
        let mut udp = v4.clone();
        udp[9] = 17;
        assert_eq!(parse_reply(&udp, false), None);
        assert_eq!(parse_reply(&v4[..26], false), None, "truncated");
        assert_eq!(parse_reply(&[], false), None);
        assert_eq!(parse_reply(&[0x4f], false), None);
        let mut r6 = echo_request(5, 6, true);
        r6[0] = 129;
        assert_eq!(parse_reply(&r6, true), Some((5, 6)));
        assert_eq!(parse_reply(&echo_request(5, 6, true), true), None);
        assert_eq!(parse_reply(&r6[..7], true), None);
    }
}
