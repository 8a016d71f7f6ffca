//! The cluster's UDP socket: joining the group, sending to it and to unicast peers, draining.
//!
//! One socket, non-blocking and close-on-exec, bound to the wildcard address on the group's port
//! (or the peers' port without a group), so it receives both the group's datagrams and unicast
//! replies. `IP_MULTICAST_ALL` is off (IPv4) so another group on the same port in this network
//! namespace is not delivered to us. The group is joined, and sent to, on `iface` when given
//! (by index, which works for IPv4 and IPv6 alike).
//!
//! The one module of the agent besides `shm` with `unsafe` code: `setsockopt` and
//! `if_nametoindex`, which std and nix do not offer in the form needed (join by index).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use crate::cluster::Dest;
use crate::wire::MAX_DATAGRAM;

/// Datagrams read per wake-up at most, so a flood cannot starve the FIFO and the timers.
pub const MAX_RECV: usize = 256;

/// The socket and where "everyone" is.
#[derive(Debug)]
pub struct Net {
    sock: UdpSocket,
    group: Option<SocketAddr>,
    peers: Vec<SocketAddr>,
    /// Sends that failed (buffer full, no route), counted rather than logged one by one.
    pub send_errors: u64,
}

fn setsockopt<T>(fd: BorrowedFd<'_>, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed; the fd is open (borrowed).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = CString::new(name).map_err(|_| format!("iface {name:?}: not a name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(format!("iface {name}: no such interface"))
    } else {
        Ok(i)
    }
}

impl Net {
    /// Opens the socket, joins the group. `Err` is the line to print.
    pub fn open(
        group: Option<SocketAddr>,
        iface: Option<&str>,
        ttl: u8,
        peers: &[SocketAddr],
    ) -> Result<Net, String> {
        let first = group
            .or(peers.first().copied())
            .ok_or("no group and no peer")?;
        let index = iface.map(ifindex).transpose()?.unwrap_or(0);
        let any: IpAddr = match first {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        fn what(w: &'static str) -> impl Fn(io::Error) -> String {
            move |e| format!("{w}: {}", lower(&e))
        }
        // std opens sockets close-on-exec.
        let sock = UdpSocket::bind((any, first.port())).map_err(what("bind"))?;
        sock.set_nonblocking(true)
            .map_err(what("set non-blocking"))?;
        let fd = sock.as_fd();
        match group.map(|g| g.ip()) {
            Some(IpAddr::V4(g)) => {
                let mreq = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(g.octets()),
                    },
                    imr_address: libc::in_addr { s_addr: 0 },
                    imr_ifindex: index as i32,
                };
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, &0i32)
                    .map_err(what("IP_MULTICAST_ALL"))?;
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
                    .map_err(what("join the group"))?;
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)
                    .map_err(what("IP_MULTICAST_IF"))?;
                setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_TTL,
                    &i32::from(ttl),
                )
                .map_err(what("IP_MULTICAST_TTL"))?;
                // Looped back so several agents on one host see each other; our own is skipped.
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &1i32)
                    .map_err(what("IP_MULTICAST_LOOP"))?;
            }
            Some(IpAddr::V6(g)) => {
                sock.join_multicast_v6(&g, index)
                    .map_err(what("join the group"))?;
                setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_IF,
                    &(index as i32),
                )
                .map_err(what("IPV6_MULTICAST_IF"))?;
                setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    &i32::from(ttl),
                )
                .map_err(what("IPV6_MULTICAST_HOPS"))?;
                sock.set_multicast_loop_v6(true)
                    .map_err(what("IPV6_MULTICAST_LOOP"))?;
            }
            None => {}
        }
        Ok(Net {
            sock,
            group,
            peers: peers.to_vec(),
            send_errors: 0,
        })
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Sends one datagram; a failure is counted (the protocol repairs loss), never fatal.
    pub fn send(&mut self, dest: Dest, datagram: &[u8]) {
        let one = |s: &UdpSocket, to: SocketAddr| loop {
            match s.send_to(datagram, to) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock (buffer full), ENETUNREACH, ECONNREFUSED…: lost like on the wire.
                Err(_) => return false,
            }
        };
        let mut failed = 0;
        match dest {
            Dest::To(to) => failed += u64::from(!one(&self.sock, to)),
            Dest::All => {
                for to in self.group.iter().chain(&self.peers) {
                    failed += u64::from(!one(&self.sock, *to));
                }
            }
        }
        self.send_errors += failed;
    }

    /// Reads datagrams until the socket is drained or [`MAX_RECV`] were read; calls `f` with
    /// each (bytes, source). A datagram longer than [`MAX_DATAGRAM`] is passed on cut to one
    /// byte more than that, for the caller to refuse as oversized.
    pub fn drain(&self, mut f: impl FnMut(&[u8], SocketAddr)) -> io::Result<()> {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..MAX_RECV {
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => f(&buf[..n.min(buf.len())], from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error from an earlier unicast send surfaces here: not ours to act on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn lower(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => crate::errno_text(n),
        None => e.to_string(),
    }
}
