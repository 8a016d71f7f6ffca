//! The `http` check: a plain HTTP/1.1 GET over a non-blocking TCP connection, judged by the
//! status line of the answer. No TLS.
//!
//! An [`Exchange`] goes connect → send → read; `poll` drives each step (`POLLOUT`, then
//! `POLLIN`). The verdict comes from the first twelve bytes (`HTTP/1.1 200`); whatever follows
//! (the rest of the status line, headers, a body) is read and thrown away by a [`Drain`], up to
//! [`MAX_DRAIN`] bytes or the check's timeout, so a server that sends its whole answer sees the
//! connection end normally rather than by a reset. The request asks the server to close
//! (`Connection: close`), so the TIME_WAIT it leaves is the server's, not the agent's.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use lbfo_core::addr::Ip;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{recv, send, MsgFlags};

use super::{tcp, Fault};

/// How many bytes of an answer are read at most, status line included; the rest is cut off.
pub const MAX_DRAIN: usize = 64 * 1024;

/// `HTTP/1.1 200`: what the verdict is read from.
const HEAD: usize = 12;

/// The request for `path`, with `host` in its `Host:` header.
pub fn request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lbfo-agentd\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The `Host:` header for a backend without `host=`: its address (IPv6 in brackets), and the
/// port unless it is 80.
pub fn default_host(addr: IpAddr, port: u16) -> String {
    let a = match addr {
        IpAddr::V4(_) => Ip(addr).to_string(),
        IpAddr::V6(_) => format!("[{}]", Ip(addr)),
    };
    if port == 80 {
        a
    } else {
        format!("{a}:{port}")
    }
}

/// What the first bytes of an answer say: `None` while they could still become a status line,
/// `Some(Ok(status))` once they are one, `Some(Err(()))` when they cannot be one.
pub fn status(head: &[u8]) -> Option<Result<u16, ()>> {
    const SHAPE: &[u8; HEAD] = b"HTTP/1.x 000";
    for (i, (&b, &want)) in head.iter().zip(SHAPE).enumerate() {
        let ok = match want {
            b'x' | b'0' => b.is_ascii_digit() && (i != 9 || (b'1'..=b'5').contains(&b)),
            _ => b == want,
        };
        if !ok {
            return Some(Err(()));
        }
    }
    let digits = head.get(9..HEAD)?;
    Some(Ok(digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending,
    Reading,
}

/// One check's connection, from connect to verdict.
#[derive(Debug)]
pub struct Exchange {
    fd: OwnedFd,
    phase: Phase,
    sent: usize,
    head: [u8; HEAD],
    have: usize,
    /// Bytes read in all (the status line, and what came with it).
    read: usize,
    eof: bool,
}

impl Exchange {
    /// Starts the connect to `addr`:`port`.
    pub fn start(addr: IpAddr, port: u16) -> Result<Exchange, Errno> {
        let (fd, connected) = tcp::start(addr, port)?;
        Ok(Exchange {
            fd,
            phase: if connected {
                Phase::Sending
            } else {
                Phase::Connecting
            },
            sent: 0,
            head: [0; HEAD],
            have: 0,
            read: 0,
            eof: false,
        })
    }

    /// The socket, and what to poll it for.
    pub fn poll_fd(&self) -> (BorrowedFd<'_>, PollFlags) {
        let events = match self.phase {
            Phase::Reading => PollFlags::POLLIN,
            _ => PollFlags::POLLOUT,
        };
        (self.fd.as_fd(), events)
    }

    /// Whether the connect is still under way (a timeout then is the connect's).
    pub fn connecting(&self) -> bool {
        self.phase == Phase::Connecting
    }

    /// Takes the exchange as far as the socket allows: `None` to wait for `poll` again, or the
    /// verdict (`expect` holds the passing statuses).
    pub fn advance(&mut self, request: &[u8], expect: (u16, u16)) -> Option<Result<(), Fault>> {
        if self.phase == Phase::Connecting {
            if let Err(e) = tcp::result(&self.fd) {
                return Some(Err(Fault::Connect(e)));
            }
            self.phase = Phase::Sending;
        }
        if self.phase == Phase::Sending {
            while let Some(rest) = request.get(self.sent..).filter(|r| !r.is_empty()) {
                match send(
                    std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                    rest,
                    MsgFlags::MSG_NOSIGNAL,
                ) {
                    Ok(n) => self.sent += n,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => return None,
                    Err(e) => return Some(Err(Fault::Http(e))),
                }
            }
            self.phase = Phase::Reading;
        }
        let mut buf = [0u8; 512];
        loop {
            match status(&self.head[..self.have]) {
                Some(Ok(code)) if (expect.0..=expect.1).contains(&code) => return Some(Ok(())),
                Some(Ok(code)) => return Some(Err(Fault::Status(code))),
                Some(Err(())) => return Some(Err(Fault::NotHttp)),
                None if self.eof => return Some(Err(Fault::Closed)),
                None => {}
            }
            match recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                &mut buf,
                MsgFlags::empty(),
            ) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    let take = n.min(HEAD - self.have);
                    self.head[self.have..self.have + take].copy_from_slice(&buf[..take]);
                    self.have += take;
                    self.read += n;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return None,
                Err(e) => return Some(Err(Fault::Http(e))),
            }
        }
    }

    /// After the verdict: what is left of the answer to read and throw away, if anything.
    pub fn into_drain(self, deadline_us: u64) -> Option<Drain> {
        if self.eof || self.phase != Phase::Reading {
            tcp::close(self.fd);
            return None;
        }
        Some(Drain {
            fd: self.fd,
            deadline_us,
            left: MAX_DRAIN.saturating_sub(self.read),
        })
    }

    /// Gives up the connection (a timeout, or the check went away).
    pub fn abandon(self) {
        tcp::close(self.fd);
    }
}

/// The rest of an answer, read and thrown away.
#[derive(Debug)]
pub struct Drain {
    fd: OwnedFd,
    /// When to stop waiting for it.
    pub deadline_us: u64,
    left: usize,
}

impl Drain {
    /// The socket, to poll for `POLLIN`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what has come: `true` when done (the end, an error, or the bound reached).
    pub fn read(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            let want = buf.len().min(self.left);
            if want == 0 {
                return true;
            }
            match recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                &mut buf[..want],
                MsgFlags::empty(),
            ) {
                Ok(0) => return true,
                Ok(n) => self.left -= n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Closes the connection: a reset if the answer was not read to its end.
    pub fn close(self) {
        tcp::close(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let check = |head: &[u8]| status(head);
        assert_eq!(check(b"HTTP/1.1 200 OK\r\n"), Some(Ok(200)));
        assert_eq!(check(b"HTTP/1.0 503"), Some(Ok(503)));
        assert_eq!(check(b"HTTP/1.1 10"), None, "more to come");
        assert_eq!(check(b""), None);
        assert_eq!(check(b"HTTP/1."), None);
        assert_eq!(check(b"SSH-2.0-OpenSSH"), Some(Err(())));
        assert_eq!(check(b"HTTP/2 200"), Some(Err(())));
        assert_eq!(check(b"HTTP/1.1 099"), Some(Err(())));
        assert_eq!(check(b"HTTP/1.1 600"), Some(Err(())));
        assert_eq!(check(b"HTTP/1.1 2x0"), Some(Err(())));
        assert_eq!(check(b"http/1.1 200"), Some(Err(())));
    }

    #[test]
    fn requests_and_host_headers() {
        let r = request("/health?x=1", "www.example.com");
        assert_eq!(
            r,
            b"GET /health?x=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: lbfo-agentd\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(default_host("10.0.0.1".parse().unwrap(), 80), "10.0.0.1");
        assert_eq!(
            default_host("10.0.0.1".parse().unwrap(), 8080),
            "10.0.0.1:8080"
        );
        assert_eq!(default_host("fd00::1".parse().unwrap(), 80), "[fd00::1]");
        assert_eq!(
            default_host("fd00::1".parse().unwrap(), 443),
            "[fd00::1]:443"
        );
    }
}
