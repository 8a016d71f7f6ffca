//! The cluster's UDP socket: joining the group, sending to it and to unicast peers, draining.
//!
//! One socket, non-blocking and close-on-exec, bound to the wildcard address on the group's port
//! (or the peers' port without a group), so it receives both the group's datagrams and unicast
//! replies. The group is joined, and sent to, on `iface` when given (by index, which works for
//! IPv4 and IPv6 alike); without `iface` the routing table picks the interface.
//!
//! **Only our group's datagrams are taken in.** A socket bound to the wildcard address receives
//! every group that anything in this network namespace joined on its port; `IP_MULTICAST_ALL`
//! (`IPV6_MULTICAST_ALL`) off makes the kernel deliver only the groups this socket joined. Where
//! the kernel refuses that option (Linux before 2.6.31, or 4.20 for IPv6; qemu-user, which does
//! not emulate it), the same rule is kept by hand: the socket asks for each datagram's
//! destination address (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and [`Net::drain`] drops one sent to
//! any other multicast address (counted as [`DropReason::OtherGroup`]). Binding to the group address
//! instead would also shut out the unicast repairs peers send us.
//!
//! **Sends to the group leave by `iface`.** `IP_MULTICAST_IF` is given the interface by index
//! (`struct ip_mreqn`). Where that option is refused in every form (qemu-user before 10.0 does
//! not emulate it at all, so its `struct in_addr` form fails the same way), each datagram to the
//! group carries the interface's IPv4 address as its source (`IP_PKTINFO` on `sendmsg`): the
//! kernel sends a multicast datagram whose source is a local address out of the interface that
//! holds it. The address is read once, at start. For IPv6, a refused `IPV6_MULTICAST_IF` is
//! replaced by the sticky `IPV6_PKTINFO` option with the interface's index, which pins every send
//! of the socket (unicast replies too) to `iface`. Each fallback is logged once, as a warning
//! naming the missing option.
//!
//! **Bound to `iface`.** With `iface` given, the socket is bound to that interface
//! (`SO_BINDTODEVICE`): datagrams that arrive by another interface, from a network the cluster is
//! not on, never reach the agent, and nothing the agent sends leaves by another. Where the
//! kernel refuses it (no `CAP_NET_RAW` before Linux 5.7, qemu-user), a warning says so.
//!
//! The system calls that std and nix do not offer in the form needed (options by interface
//! index, interface requests, control messages) are `crate::sys::net`'s.

use lbfo_core::addr::Ip;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use crate::cluster::wire::{DropReason, MAX_DATAGRAM};
use crate::cluster::Dest;
use crate::sys::{self, io_text};
use sys::net::setsockopt;

/// Datagrams read per wake-up at most, so a flood cannot starve the FIFO and the timers.
pub const MAX_RECV: usize = 256;

/// The receive and send buffers asked for: a joiner takes a whole table in bursts of answers
/// (up to `cluster::RESPONDERS` × `cluster::REPAIR_ENTRIES` entries at once), and a responder
/// sends one in a burst, which the kernel's default of about 200 KB would drop (at the
/// receiver) or refuse (at the sender). Root's `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` get it whole;
/// otherwise `SO_RCVBUF`/`SO_SNDBUF`, which the kernel caps at `net.core.rmem_max`/`wmem_max`.
/// Memory is taken only while datagrams wait.
pub const BUFFERS: i32 = 4 << 20;

/// The socket and where "everyone" is.
#[derive(Debug)]
pub struct Net {
    sock: UdpSocket,
    group: Option<SocketAddr>,
    peers: Vec<SocketAddr>,
    /// The kernel would not filter other groups (no `IP_MULTICAST_ALL`): [`Net::drain`] checks
    /// each datagram's destination.
    check_dest: bool,
    /// The kernel would not take `IP_MULTICAST_IF`: datagrams to the group carry this source
    /// address (the interface's), which sends them out of its interface.
    source: Option<Ipv4Addr>,
    /// Sends that failed (buffer full, no route), counted rather than logged one by one.
    pub send_errors: u64,
    /// The errnos of read errors logged so far (each is logged once).
    read_errors: Vec<i32>,
}

/// What [`Net::drain`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A datagram for us (the group or our unicast address), to be checked by the cluster.
    Datagram(&'a [u8]),
    /// A datagram dropped here, and why.
    Dropped(DropReason),
}

/// Whether `e` says the option is unknown here (an older kernel, an emulator), which is what
/// the fallbacks stand in for; any other error is a real failure.
fn unknown_option(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOPROTOOPT)
}

/// The index of interface `name`, or the line to print.
fn ifindex(fd: BorrowedFd<'_>, name: &str) -> Result<u32, String> {
    sys::net::if_index(fd, name).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => format!("iface {name:?}: not an interface name"),
        Some(libc::ENODEV) => format!("iface {name}: no such interface"),
        _ => format!("iface {name}: {}", io_text(&e)),
    })
}

/// A non-blocking, close-on-exec UDP socket bound to the wildcard address of `first`'s family
/// and `first`'s port. (nix's calls rather than `UdpSocket::bind` and `set_nonblocking`, whose
/// address resolution and `ioctl` are more code on the router build.)
fn bound(first: SocketAddr) -> io::Result<UdpSocket> {
    use nix::sys::socket::{
        bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
    };
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let port = first.port();
    let fd = match first {
        SocketAddr::V4(_) => {
            let fd = socket(AddressFamily::Inet, SockType::Datagram, flags, None)?;
            let any = SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
            bind(fd.as_raw_fd(), &any)?;
            fd
        }
        SocketAddr::V6(_) => {
            let fd = socket(AddressFamily::Inet6, SockType::Datagram, flags, None)?;
            let any = std::net::SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
            bind(fd.as_raw_fd(), &SockaddrIn6::from(any))?;
            fd
        }
    };
    Ok(UdpSocket::from(fd))
}

/// The primary IPv4 address of interface `name`, or the line to print.
fn ipv4_of(fd: BorrowedFd<'_>, name: &str) -> Result<Ipv4Addr, String> {
    sys::net::if_ipv4(fd, name)
        .map_err(|e| format!("iface {name}: no IPv4 address ({})", io_text(&e)))
}

/// `iface`, by name and index (0: none given).
#[derive(Clone, Copy)]
struct Iface<'a> {
    name: Option<&'a str>,
    index: u32,
}

/// What joining the group left to the socket: the stand-ins for refused options, and their
/// warnings.
#[derive(Default)]
struct Joined {
    check_dest: bool,
    source: Option<Ipv4Addr>,
    warnings: Vec<String>,
}

/// Binds `sock` to interface `name` (`SO_BINDTODEVICE`); the warning to log if the kernel
/// refuses.
fn bind_to_device(sock: &UdpSocket, name: &str) -> Option<String> {
    use nix::sys::socket::{setsockopt, sockopt::BindToDevice};
    let e = setsockopt(sock, BindToDevice, &std::ffi::OsString::from(name)).err()?;
    Some(format!(
        "cluster: warning: SO_BINDTODEVICE {name}: {}; datagrams that reach this host by other \
         interfaces are not shut out",
        sys::errno_text(e as i32)
    ))
}

/// Asks the kernel to report every failed send (`IP_RECVERR`, `IPV6_RECVERR`): without it a
/// datagram dropped at this host's transmit (a full device queue: ENOBUFS) counts as sent, and
/// ICMP errors of unicast sends are not kept. The warning to log if the kernel refuses.
fn report_errors(sock: &UdpSocket, addr: SocketAddr) -> Option<String> {
    let (level, name, opt) = match addr {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_RECVERR, "IP_RECVERR"),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVERR, "IPV6_RECVERR"),
    };
    let e = setsockopt(sock.as_fd(), level, name, &1i32).err()?;
    Some(format!(
        "cluster: warning: {opt}: {}; datagrams this host drops when sending are not counted \
         as send errors",
        io_text(&e)
    ))
}

/// The line for a failed socket call `w`.
fn what(w: &'static str) -> impl Fn(io::Error) -> String {
    move |e| format!("{w}: {}", io_text(&e))
}

/// Joins the IPv4 group `g` on port `port` and sets how datagrams to it leave.
fn join_v4(
    sock: &UdpSocket,
    g: Ipv4Addr,
    port: u16,
    iface: Iface<'_>,
    ttl: u8,
) -> Result<Joined, String> {
    let (fd, index) = (sock.as_fd(), iface.index);
    let on = iface.name.map_or(String::new(), |i| format!(" on {i}"));
    let mut joined = Joined::default();
    let mreq = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from_ne_bytes(g.octets()),
        },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as i32,
    };
    match setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, &0i32) {
        Err(e) if unknown_option(&e) => {
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, &1i32)
                .map_err(what("IP_PKTINFO (standing in for IP_MULTICAST_ALL)"))?;
            joined.check_dest = true;
            joined.warnings.push(format!(
                "cluster: warning: IP_MULTICAST_ALL: {}; datagrams to other groups \
                     on port {} are dropped by their destination (IP_PKTINFO) instead",
                io_text(&e),
                port
            ));
        }
        r => r.map_err(what("IP_MULTICAST_ALL"))?,
    }
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
        .map_err(what("join the group"))?;
    // Without `iface` the routing table picks the interface: nothing to set.
    if let Some(name) = iface.name {
        match setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq) {
            Err(e) if unknown_option(&e) => {
                let a = ipv4_of(fd, name)
                    .map_err(|m| format!("IP_MULTICAST_IF: {}; and {m}", io_text(&e)))?;
                joined.source = Some(a);
                joined.warnings.push(format!(
                    "cluster: warning: IP_MULTICAST_IF: {}; datagrams to the group \
                         leave{on} by their source address {} (IP_PKTINFO) instead",
                    io_text(&e),
                    Ip(IpAddr::V4(a))
                ));
            }
            r => r.map_err(what("IP_MULTICAST_IF"))?,
        }
    }
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
    Ok(joined)
}

/// Joins the IPv6 group `g` on port `port` and sets how datagrams to it leave.
fn join_v6(
    sock: &UdpSocket,
    g: Ipv6Addr,
    port: u16,
    iface: Iface<'_>,
    ttl: u8,
) -> Result<Joined, String> {
    let (fd, index) = (sock.as_fd(), iface.index);
    let on = iface.name.map_or(String::new(), |i| format!(" on {i}"));
    let mut joined = Joined::default();
    match setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_ALL, &0i32) {
        Err(e) if unknown_option(&e) => {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &1i32).map_err(what(
                "IPV6_RECVPKTINFO (standing in for IPV6_MULTICAST_ALL)",
            ))?;
            joined.check_dest = true;
            joined.warnings.push(format!(
                "cluster: warning: IPV6_MULTICAST_ALL: {}; datagrams to other groups \
                     on port {} are dropped by their destination (IPV6_PKTINFO) instead",
                io_text(&e),
                port
            ));
        }
        r => r.map_err(what("IPV6_MULTICAST_ALL"))?,
    }
    sock.join_multicast_v6(&g, index)
        .map_err(what("join the group"))?;
    if iface.name.is_some() {
        match setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            &(index as i32),
        ) {
            Err(e) if unknown_option(&e) => {
                let pin = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr { s6_addr: [0; 16] },
                    ipi6_ifindex: index,
                };
                setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pin)
                    .map_err(what("IPV6_PKTINFO (standing in for IPV6_MULTICAST_IF)"))?;
                joined.warnings.push(format!(
                    "cluster: warning: IPV6_MULTICAST_IF: {}; every datagram leaves{on} \
                         (sticky IPV6_PKTINFO) instead",
                    io_text(&e)
                ));
            }
            r => r.map_err(what("IPV6_MULTICAST_IF"))?,
        }
    }
    setsockopt(
        fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_HOPS,
        &i32::from(ttl),
    )
    .map_err(what("IPV6_MULTICAST_HOPS"))?;
    sock.set_multicast_loop_v6(true)
        .map_err(what("IPV6_MULTICAST_LOOP"))?;
    Ok(joined)
}

impl Net {
    /// Opens the socket, joins the group. `Err` is the line to print; the `Vec` holds the
    /// warnings to log (a socket option this kernel refused, and what stands in for it).
    pub fn open(
        group: Option<SocketAddr>,
        iface: Option<&str>,
        ttl: u8,
        peers: &[SocketAddr],
    ) -> Result<(Net, Vec<String>), String> {
        let first = group
            .or(peers.first().copied())
            .ok_or("no group and no peer")?;
        let sock = bound(first).map_err(what("bind"))?;
        let fd = sock.as_fd();
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt(fd, libc::SOL_SOCKET, force, &BUFFERS).is_err() {
                // Not root (or no CAP_NET_ADMIN): as much as rmem_max/wmem_max allow.
                let _ = setsockopt(fd, libc::SOL_SOCKET, plain, &BUFFERS);
            }
        }
        let mut warnings = Vec::new();
        warnings.extend(report_errors(&sock, first));
        let index = iface
            .map(|i| ifindex(sock.as_fd(), i))
            .transpose()?
            .unwrap_or(0);
        if let Some(name) = iface {
            warnings.extend(bind_to_device(&sock, name));
        }
        let to = Iface { name: iface, index };
        let joined = match group.map(|g| g.ip()) {
            Some(IpAddr::V4(g)) => join_v4(&sock, g, first.port(), to, ttl)?,
            Some(IpAddr::V6(g)) => join_v6(&sock, g, first.port(), to, ttl)?,
            None => Joined::default(),
        };
        let net = Net {
            sock,
            group,
            peers: peers.to_vec(),
            check_dest: joined.check_dest,
            source: joined.source,
            send_errors: 0,
            read_errors: Vec::new(),
        };
        warnings.extend(joined.warnings);
        Ok((net, warnings))
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Sends one datagram; a failure is counted (the protocol repairs loss), never fatal.
    pub fn send(&mut self, dest: Dest, datagram: &[u8]) {
        let (sock, source, group) = (&self.sock, self.source, self.group);
        let one = |to: SocketAddr| loop {
            let sent = match source {
                // To the group without IP_MULTICAST_IF: our interface's address as the source.
                Some(a) if Some(to) == group => match to {
                    SocketAddr::V4(to) => sys::net::send_from(sock.as_fd(), datagram, to, a),
                    SocketAddr::V6(_) => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
                },
                _ => sock.send_to(datagram, to),
            };
            match sent {
                Ok(_) => return true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // ENOBUFS (the device queue dropped it; `IP_RECVERR` makes the kernel say so),
                // WouldBlock (buffer full), ENETUNREACH, ECONNREFUSED…: lost like on the wire.
                Err(_) => return false,
            }
        };
        let mut failed = 0;
        match dest {
            Dest::To(to) => failed += u64::from(!one(to)),
            Dest::All => {
                for to in self.group.iter().chain(&self.peers) {
                    failed += u64::from(!one(*to));
                }
            }
        }
        self.send_errors += failed;
    }

    /// Takes the errors the kernel queued for earlier sends (`POLLERR`: ICMP errors, kept by
    /// `IP_RECVERR`) off the socket and counts each as a send error; an unreadable error queue
    /// is left for the next wake-up.
    pub fn take_errors(&mut self) {
        while let Ok(true) = sys::net::take_error(self.sock.as_fd()) {
            self.send_errors += 1;
        }
    }

    /// Reads datagrams until the socket is drained or [`MAX_RECV`] were read; calls `f` with
    /// each and its source. A datagram longer than [`MAX_DATAGRAM`] is passed on cut to one
    /// byte more than that, for the caller to refuse as oversized; one sent to another group
    /// (seen only where the kernel lacks `IP_MULTICAST_ALL`) is passed on as dropped.
    ///
    /// A read error other than EAGAIN, EINTR and ECONNREFUSED (an ICMP error from an earlier
    /// unicast send, not ours to act on) ends this drain, not the agent: the socket is read
    /// again at the next wake-up. The first error of each errno comes back as the line to log;
    /// later ones of the same errno are not logged again.
    pub fn drain(&mut self, mut f: impl FnMut(Incoming<'_>, SocketAddr)) -> Option<String> {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..MAX_RECV {
            let got = if self.check_dest {
                self.recv_checked(&mut buf)
            } else {
                self.sock
                    .recv_from(&mut buf)
                    .map(|(n, from)| (n, from, true))
            };
            let e = match got {
                Ok((n, from, true)) => {
                    f(Incoming::Datagram(&buf[..n.min(buf.len())]), from);
                    continue;
                }
                Ok((_, from, false)) => {
                    f(Incoming::Dropped(DropReason::OtherGroup), from);
                    continue;
                }
                Err(e) => e.raw_os_error().unwrap_or(0),
            };
            match e {
                libc::EAGAIN => return None,
                libc::EINTR | libc::ECONNREFUSED => continue,
                _ if self.read_errors.contains(&e) => return None,
                _ => {
                    self.read_errors.push(e);
                    return Some(format!(
                        "cluster: socket read: {}; the agent goes on (logged once per kind of error)",
                        sys::errno_text(e)
                    ));
                }
            }
        }
        None
    }

    /// One datagram with its destination address: (length, source, whether it is for us:
    /// sent to our group or to a unicast address).
    fn recv_checked(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, bool)> {
        let (n, from, dest) = sys::net::recv_with_dest(self.sock.as_fd(), buf)?;
        Ok((n, from, for_us(dest, self.group)))
    }
}

/// Whether a datagram sent to `dest` is ours: sent to our group, or not to a group at all.
/// (No destination reported: taken, as a kernel that filtered would.)
fn for_us(dest: Option<IpAddr>, group: Option<SocketAddr>) -> bool {
    match dest {
        Some(d) if d.is_multicast() => group.is_some_and(|g| g.ip() == d),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_group_and_unicast_are_ours() {
        let g4: SocketAddr = "239.255.77.1:7331".parse().unwrap();
        let g6: SocketAddr = "[ff15::77]:7331".parse().unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(for_us(ip("239.255.77.1"), Some(g4)));
        assert!(!for_us(ip("239.255.77.2"), Some(g4)), "another group");
        assert!(!for_us(ip("224.0.0.251"), Some(g4)), "mDNS on our port");
        assert!(for_us(ip("10.0.0.1"), Some(g4)), "unicast (a repair)");
        assert!(for_us(ip("ff15::77"), Some(g6)));
        assert!(!for_us(ip("ff15::78"), Some(g6)));
        assert!(for_us(ip("fd00::1"), Some(g6)));
        assert!(
            !for_us(ip("239.255.77.1"), None),
            "peers only: no group is ours"
        );
        assert!(for_us(None, Some(g4)), "no destination reported");
    }

    #[test]
    fn interface_errors_read_as_lines() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_fd();
        assert_eq!(ipv4_of(fd, "lo"), Ok(Ipv4Addr::LOCALHOST));
        assert_eq!(
            ifindex(fd, "lbfo-nosuch0"),
            Err("iface lbfo-nosuch0: no such interface".into())
        );
        for bad in ["lo\0x", "an-interface-name-too-long"] {
            assert_eq!(
                ifindex(fd, bad),
                Err(format!("iface {bad:?}: not an interface name"))
            );
        }
    }

    /// The destination check that stands in for `IP_MULTICAST_ALL` on kernels without it
    /// (qemu-user among them), on this kernel: the raw `recvmsg` and its `IP_PKTINFO`.
    #[test]
    fn datagrams_read_with_their_destination_keep_their_bytes_and_source() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (mut net, _) = Net::open(None, None, 1, &[peer]).unwrap();
        setsockopt(net.sock.as_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &1i32).unwrap();
        net.check_dest = true;
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"first", peer).unwrap();
        sender.send_to(&[7u8; MAX_DATAGRAM + 100], peer).unwrap();
        let mut got = Vec::new();
        // Both are queued on loopback before the drain.
        let error = net.drain(|d, from| match d {
            Incoming::Datagram(d) => got.push((d.to_vec(), from)),
            Incoming::Dropped(why) => panic!("dropped: {why:?}"),
        });
        assert_eq!(error, None);
        let from = sender.local_addr().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (b"first".to_vec(), from));
        assert_eq!(got[1].0.len(), MAX_DATAGRAM + 1, "cut to one byte over");
        assert_eq!(got[1].1, from);
    }

    /// A read error other than EAGAIN, EINTR and ECONNREFUSED is logged once per errno and the
    /// socket keeps being read: here control data cut short (`MSG_CTRUNC`, read as ENOBUFS), made
    /// real by asking the kernel for more control messages than the agent's buffer holds.
    #[test]
    fn a_read_error_is_logged_once_and_the_socket_is_read_again() {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (mut net, _) = Net::open(None, None, 1, &[peer]).unwrap();
        net.check_dest = true;
        let extra = [
            (libc::IPPROTO_IP, libc::IP_PKTINFO),
            (libc::IPPROTO_IP, libc::IP_RECVTTL),
            (libc::IPPROTO_IP, libc::IP_RECVTOS),
            (libc::SOL_SOCKET, libc::SO_TIMESTAMPNS),
        ];
        let ask = |net: &Net, on: i32| {
            for (level, name) in extra.iter().skip(1) {
                setsockopt(net.sock.as_fd(), *level, *name, &on).unwrap();
            }
        };
        setsockopt(net.sock.as_fd(), extra[0].0, extra[0].1, &1i32).unwrap();
        ask(&net, 1);
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in [b"one", b"two", b"3rd"] {
            sender.send_to(d, peer).unwrap();
        }
        let mut got = Vec::new();
        let mut read = |net: &mut Net| {
            net.drain(|d, _| match d {
                Incoming::Datagram(d) => got.push(d.to_vec()),
                Incoming::Dropped(why) => panic!("dropped: {why:?}"),
            })
        };
        assert_eq!(
            read(&mut net),
            Some(
                "cluster: socket read: no buffer space available; the agent goes on (logged \
                 once per kind of error)"
                    .into()
            )
        );
        assert_eq!(
            read(&mut net),
            None,
            "the same errno again: not logged again"
        );
        ask(&net, 0);
        assert_eq!(read(&mut net), None);
        assert_eq!(
            got,
            [b"3rd".to_vec()],
            "each error cost its datagram, no more"
        );
    }
}
