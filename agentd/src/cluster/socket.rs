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
//! any other multicast address (counted as [`Drop::OtherGroup`]). Binding to the group address
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
//! The one module of the agent besides `shm` with `unsafe` code: `setsockopt`,
//! `if_nametoindex` and the `SIOCGIFADDR` ioctl, which std and nix do not offer in the form
//! needed (join by index).
#![allow(unsafe_code)]

use lbfo_core::addr::Ip;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use crate::cluster::wire::{Drop, MAX_DATAGRAM};
use crate::cluster::Dest;
use crate::sys::io_text;

/// Datagrams read per wake-up at most, so a flood cannot starve the FIFO and the timers.
pub const MAX_RECV: usize = 256;

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
}

/// What [`Net::drain`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A datagram for us (the group or our unicast address), to be checked by the cluster.
    Datagram(&'a [u8]),
    /// A datagram dropped here, and why.
    Dropped(Drop),
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

/// Whether `e` says the option is unknown here (an older kernel, an emulator), which is what
/// the fallbacks stand in for; any other error is a real failure.
fn unknown_option(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOPROTOOPT)
}

/// Interface request `request` (a `SIOCGIF*` that reads the name and writes the union) for
/// interface `name` on the socket `fd`: the filled `ifreq`, or the line to print, in which
/// `failed` says what the errno means for this request.
fn if_ioctl(
    fd: BorrowedFd<'_>,
    name: &str,
    request: libc::c_ulong,
    failed: fn(&io::Error) -> String,
) -> Result<libc::ifreq, String> {
    // SAFETY: all zeroes is a valid `ifreq`: an empty name and an all-zero union.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The last byte stays 0, the name's end; a NUL inside would name another interface.
    if name.len() >= req.ifr_name.len() || name.contains('\0') {
        return Err(format!("iface {name:?}: not an interface name"));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: the request reads the NUL-terminated name and writes into the union, both inside
    // `req`, which outlives the call; the fd is open (borrowed).
    unsafe { crate::sys::ioctl(fd, request, std::ptr::addr_of_mut!(req).cast()) }
        .map_err(|e| format!("iface {name}: {}", failed(&e)))?;
    Ok(req)
}

/// The index of interface `name` (`SIOCGIFINDEX` on the socket `fd`; what `if_nametoindex` does
/// with a socket of its own).
fn ifindex(fd: BorrowedFd<'_>, name: &str) -> Result<u32, String> {
    let req = if_ioctl(fd, name, libc::SIOCGIFINDEX as _, |e| {
        match e.raw_os_error() {
            Some(libc::ENODEV) => "no such interface".into(),
            _ => io_text(e),
        }
    })?;
    // SAFETY: on success the union holds the index.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

/// A non-blocking, close-on-exec UDP socket bound to the wildcard address of `first`'s family
/// and `first`'s port. (nix's calls rather than `UdpSocket::bind` and `set_nonblocking`, whose
/// address resolution and `ioctl` are half a kilobyte more of the router build.)
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

/// The primary IPv4 address of interface `name` (`SIOCGIFADDR` on the IPv4 socket `fd`).
/// (Not `getifaddrs`: musl's reads netlink, which qemu-user garbles for big-endian guests.)
fn ipv4_of(fd: BorrowedFd<'_>, name: &str) -> Result<Ipv4Addr, String> {
    let req = if_ioctl(fd, name, libc::SIOCGIFADDR as _, |e| {
        format!("no IPv4 address ({})", io_text(e))
    })?;
    // SAFETY: on success the union holds the address as a `sockaddr`; SIOCGIFADDR on an IPv4
    // socket answers AF_INET only, so it is a `sockaddr_in`, read unaligned (same size).
    let sin: libc::sockaddr_in =
        unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(req.ifr_ifru.ifru_addr).cast()) };
    Ok(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
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
        fn what(w: &'static str) -> impl Fn(io::Error) -> String {
            move |e| format!("{w}: {}", io_text(&e))
        }
        let sock = bound(first).map_err(what("bind"))?;
        let fd = sock.as_fd();
        let index = iface.map(|i| ifindex(fd, i)).transpose()?.unwrap_or(0);
        let mut warnings = Vec::new();
        let mut check_dest = false;
        let mut source = None;
        let on = iface.map_or(String::new(), |i| format!(" on {i}"));
        match group.map(|g| g.ip()) {
            Some(IpAddr::V4(g)) => {
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
                        check_dest = true;
                        warnings.push(format!(
                            "cluster: warning: IP_MULTICAST_ALL: {}; datagrams to other groups \
                             on port {} are dropped by their destination (IP_PKTINFO) instead",
                            io_text(&e),
                            first.port()
                        ));
                    }
                    r => r.map_err(what("IP_MULTICAST_ALL"))?,
                }
                setsockopt(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)
                    .map_err(what("join the group"))?;
                // Without `iface` the routing table picks the interface: nothing to set.
                if let Some(name) = iface {
                    match setsockopt(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq) {
                        Err(e) if unknown_option(&e) => {
                            let a = ipv4_of(fd, name).map_err(|m| {
                                format!("IP_MULTICAST_IF: {}; and {m}", io_text(&e))
                            })?;
                            source = Some(a);
                            warnings.push(format!(
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
            }
            Some(IpAddr::V6(g)) => {
                match setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_ALL, &0i32) {
                    Err(e) if unknown_option(&e) => {
                        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &1i32).map_err(
                            what("IPV6_RECVPKTINFO (standing in for IPV6_MULTICAST_ALL)"),
                        )?;
                        check_dest = true;
                        warnings.push(format!(
                            "cluster: warning: IPV6_MULTICAST_ALL: {}; datagrams to other groups \
                             on port {} are dropped by their destination (IPV6_PKTINFO) instead",
                            io_text(&e),
                            first.port()
                        ));
                    }
                    r => r.map_err(what("IPV6_MULTICAST_ALL"))?,
                }
                sock.join_multicast_v6(&g, index)
                    .map_err(what("join the group"))?;
                if iface.is_some() {
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
                            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pin).map_err(
                                what("IPV6_PKTINFO (standing in for IPV6_MULTICAST_IF)"),
                            )?;
                            warnings.push(format!(
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
            }
            None => {}
        }
        let net = Net {
            sock,
            group,
            peers: peers.to_vec(),
            check_dest,
            source,
            send_errors: 0,
        };
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
                Some(a) if Some(to) == group => send_from(sock.as_raw_fd(), datagram, to, a),
                _ => sock.send_to(datagram, to),
            };
            match sent {
                Ok(_) => return true,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
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

    /// Reads datagrams until the socket is drained or [`MAX_RECV`] were read; calls `f` with
    /// each and its source. A datagram longer than [`MAX_DATAGRAM`] is passed on cut to one
    /// byte more than that, for the caller to refuse as oversized; one sent to another group
    /// (seen only where the kernel lacks `IP_MULTICAST_ALL`) is passed on as dropped.
    pub fn drain(&self, mut f: impl FnMut(Incoming<'_>, SocketAddr)) -> io::Result<()> {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        for _ in 0..MAX_RECV {
            let got = if self.check_dest {
                self.recv_checked(&mut buf)
            } else {
                self.sock
                    .recv_from(&mut buf)
                    .map(|(n, from)| (n, from, true))
            };
            match got {
                Ok((n, from, true)) => f(Incoming::Datagram(&buf[..n.min(buf.len())]), from),
                Ok((_, from, false)) => f(Incoming::Dropped(Drop::OtherGroup), from),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // An ICMP error from an earlier unicast send surfaces here: not ours to act on.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One datagram with its destination address: (length, source, whether it is for us:
    /// sent to our group or to a unicast address).
    fn recv_checked(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, bool)> {
        // Raw `recvmsg` and cmsg walking rather than nix's, which decode every kind of control
        // message: for the router size budget.
        // SAFETY: all zeroes is a valid `sockaddr_storage` and `msghdr` (null pointers, zero
        // lengths); the pointers set below stay valid for the call: `from`, `iov` over `buf`,
        // and `space`, a buffer aligned for `cmsghdr` and large enough for one `in6_pktinfo`.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut space = [0u64; 8];
        // SAFETY: as above, all zeroes is a valid `msghdr`.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_name = std::ptr::addr_of_mut!(from).cast();
        m.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = space.as_mut_ptr().cast();
        m.msg_controllen = size_of::<[u64; 8]>() as _;
        // The system call itself, not musl's `recvmsg`, which on 32-bit targets converts
        // timestamp control messages (never asked for here) to time64: 0.5 KB of the router build.
        // SAFETY: see above.
        let n = unsafe { libc::syscall(libc::SYS_recvmsg, self.sock.as_raw_fd(), &mut m, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // As nix's `cmsgs()`: cut control data is an error, not a datagram without destination.
        if m.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        }
        // The family says which `sockaddr` the kernel wrote.
        let from = match i32::from(from.ss_family) {
            libc::AF_INET => {
                // SAFETY: a `sockaddr_in` fits in `from`; read unaligned.
                let s: libc::sockaddr_in =
                    unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(from).cast()) };
                SocketAddr::from((s.sin_addr.s_addr.to_ne_bytes(), u16::from_be(s.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: a `sockaddr_in6` fits in `from`; read unaligned.
                let s: libc::sockaddr_in6 =
                    unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(from).cast()) };
                SocketAddr::from((s.sin6_addr.s6_addr, u16::from_be(s.sin6_port)))
            }
            _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        };
        let mut dest = None;
        // SAFETY: the CMSG_* walk stays within `msg_controllen` bytes of `space`, which the
        // kernel filled; each payload is read unaligned as the type its level and type name.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() && dest.is_none() {
                let data = libc::CMSG_DATA(c);
                dest = match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let i: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                        Some(IpAddr::from(i.ipi_addr.s_addr.to_ne_bytes()))
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let i: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                        Some(IpAddr::from(i.ipi6_addr.s6_addr))
                    }
                    _ => None,
                };
                c = libc::CMSG_NXTHDR(&m, c);
            }
        }
        Ok((n as usize, from, for_us(dest, self.group)))
    }
}

/// Sends `datagram` to `to` (IPv4) with the source address `src`, through an `IP_PKTINFO`
/// control message; raw `sendmsg` for the router size budget.
fn send_from(fd: RawFd, datagram: &[u8], to: SocketAddr, src: Ipv4Addr) -> io::Result<usize> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
    };
    // SAFETY: all zeroes is a valid `sockaddr_in` and `msghdr`; the pointers set below stay
    // valid for the call: `sin`, `iov` over `datagram` (only read), and `space`, aligned for
    // `cmsghdr` and large enough for one `in_pktinfo`, into which one control message is
    // written within `CMSG_SPACE` bytes.
    unsafe {
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as _;
        sin.sin_port = to.port().to_be();
        sin.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
        let mut iov = libc::iovec {
            iov_base: datagram.as_ptr() as *mut _,
            iov_len: datagram.len(),
        };
        let mut space = [0u64; 8];
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_name = std::ptr::addr_of_mut!(sin).cast();
        m.msg_namelen = size_of::<libc::sockaddr_in>() as _;
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = space.as_mut_ptr().cast();
        m.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as _) as _;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as _) as _;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes(src.octets()),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
        let n = libc::sendmsg(fd, &m, 0);
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
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
    fn interface_lookups_answer_as_the_c_library_does() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_fd();
        // SAFETY: a NUL-terminated name.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        assert_eq!(ifindex(fd, "lo"), Ok(lo));
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
        net.drain(|d, from| match d {
            Incoming::Datagram(d) => got.push((d.to_vec(), from)),
            Incoming::Dropped(why) => panic!("dropped: {why:?}"),
        })
        .unwrap();
        let from = sender.local_addr().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (b"first".to_vec(), from));
        assert_eq!(got[1].0.len(), MAX_DATAGRAM + 1, "cut to one byte over");
        assert_eq!(got[1].1, from);
    }
}
