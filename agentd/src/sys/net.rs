//! Socket options, interface requests and datagrams with control messages, behind safe
//! functions: the parts of the cluster socket (`cluster::socket`) that std and nix do not offer
//! in the form it needs (join and send by interface index, a datagram's destination address,
//! a datagram's source address chosen per send).
//!
//! `ioctl` and `recvmsg` are made as system calls, not through the C library: on 32-bit musl
//! their wrappers convert time64 structures (for requests and control messages the agent never
//! uses) on every call.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd};

/// `setsockopt(2)` with `value` as the option's bytes. Any plain value is safe to pass: the
/// kernel only reads `size_of::<T>()` bytes of it, and refuses a size or value it does not take.
pub fn setsockopt<T: Copy>(fd: BorrowedFd<'_>, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed, which the kernel only reads; the
    // fd is open (borrowed).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of interface `name` (`SIOCGIFINDEX` on the socket `fd`: what `if_nametoindex`
/// does with a socket of its own). EINVAL for a name that cannot be an interface's (too long,
/// or holding a NUL); ENODEV for one that does not exist.
pub fn if_index(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let req = if_request(fd, name, libc::SIOCGIFINDEX as libc::c_ulong)?;
    // SAFETY: after SIOCGIFINDEX the union holds the index.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

/// The primary IPv4 address of interface `name` (`SIOCGIFADDR` on `fd`, which must be an IPv4
/// socket). Not `getifaddrs`: musl's reads netlink, which qemu-user garbles for big-endian guests.
pub fn if_ipv4(fd: BorrowedFd<'_>, name: &str) -> io::Result<Ipv4Addr> {
    let req = if_request(fd, name, libc::SIOCGIFADDR as libc::c_ulong)?;
    // SAFETY: after SIOCGIFADDR the union holds the address as a `sockaddr`; on an IPv4 socket
    // it answers AF_INET only, so it is a `sockaddr_in` (same size), read unaligned.
    let sin: libc::sockaddr_in =
        unsafe { std::ptr::read_unaligned(std::ptr::addr_of!(req.ifr_ifru.ifru_addr).cast()) };
    Ok(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
}

/// Interface request `request` (a `SIOCGIF*` that reads the name and writes the union) for
/// interface `name` on the socket `fd`.
fn if_request(fd: BorrowedFd<'_>, name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    // SAFETY: all zeroes is a valid `ifreq`: an empty name and an all-zero union.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The last byte stays 0, the name's end; a NUL inside would name another interface.
    if name.len() >= req.ifr_name.len() || name.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let arg: *mut libc::ifreq = &mut req;
    // SAFETY: the request reads the NUL-terminated name and writes into the union, both inside
    // `req`, which outlives the call; the fd is open (borrowed).
    let r = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), request, arg) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

/// One datagram from `fd` into `buf`, with its source and, where the socket asked for it
/// (`IP_PKTINFO`, `IPV6_RECVPKTINFO`), the address it was sent to. A datagram longer than `buf`
/// is cut to it (the length returned is what was read). Control data cut short is ENOBUFS (as
/// nix's `cmsgs()` treats it), after the datagram was taken off the socket.
pub fn recv_with_dest(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<IpAddr>)> {
    // SAFETY: all zeroes is a valid `sockaddr_storage` (an unspecified family).
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Aligned for `cmsghdr`, and room for one `in6_pktinfo` (the larger of the two) and more.
    let mut space = [0u64; 8];
    // SAFETY: all zeroes is a valid `msghdr` (null pointers, zero lengths).
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = std::ptr::addr_of_mut!(from).cast();
    m.msg_namelen = size_of::<libc::sockaddr_storage>() as _;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = space.as_mut_ptr().cast();
    m.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: every pointer in `m` (`from`, `iov` over `buf`, `space`) is valid for writes of the
    // length given beside it, for the duration of the call; the fd is open (borrowed).
    let n = unsafe { libc::syscall(libc::SYS_recvmsg, fd.as_raw_fd(), &mut m, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if m.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
    }
    let from = socket_addr(&from).ok_or(io::Error::from_raw_os_error(libc::EAFNOSUPPORT))?;
    let mut dest = None;
    // SAFETY: the CMSG_* walk stays within the `msg_controllen` bytes of `space` that the kernel
    // filled; each payload is read unaligned as the type its level and type name.
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
    Ok((n as usize, from, dest))
}

/// Takes one error off the socket's error queue (`MSG_ERRQUEUE`: what `IP_RECVERR` queues, the
/// ICMP errors of earlier sends) and discards it; `Ok(false)` when the queue is empty.
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: all zeroes is a valid `msghdr`: no address, no data, no control data; the kernel
    // dequeues the error and only notes in `msg_flags` what it could not copy.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    let flags = libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT;
    // SAFETY: `m` is valid for the call and holds no pointer; the fd is open (borrowed).
    let n = unsafe { libc::syscall(libc::SYS_recvmsg, fd.as_raw_fd(), &mut m, flags) };
    if n >= 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(false),
        _ => Err(e),
    }
}

/// The address the kernel wrote into `s`, by its family; `None` for a family that is not IP.
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which fits; unaligned.
            let s: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned(std::ptr::from_ref(s).cast()) };
            Some(SocketAddr::from((
                s.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(s.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a `sockaddr_in6`, which fits; unaligned.
            let s: libc::sockaddr_in6 =
                unsafe { std::ptr::read_unaligned(std::ptr::from_ref(s).cast()) };
            Some(SocketAddr::from((
                s.sin6_addr.s6_addr,
                u16::from_be(s.sin6_port),
            )))
        }
        _ => None,
    }
}

/// Sends `datagram` to `to` from the source address `src` (an `IP_PKTINFO` control message), so
/// that the kernel sends it out of the interface that holds `src`.
pub fn send_from(
    fd: BorrowedFd<'_>,
    datagram: &[u8],
    to: SocketAddrV4,
    src: Ipv4Addr,
) -> io::Result<usize> {
    // SAFETY: all zeroes is a valid `sockaddr_in`.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as _;
    sin.sin_port = to.port().to_be();
    sin.sin_addr.s_addr = u32::from_ne_bytes(to.ip().octets());
    let mut iov = libc::iovec {
        iov_base: datagram.as_ptr() as *mut _,
        iov_len: datagram.len(),
    };
    // Aligned for `cmsghdr`, and room for one `in_pktinfo`.
    let mut space = [0u64; 8];
    // SAFETY: all zeroes is a valid `msghdr`.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = std::ptr::addr_of_mut!(sin).cast();
    m.msg_namelen = size_of::<libc::sockaddr_in>() as _;
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = space.as_mut_ptr().cast();
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from_ne_bytes(src.octets()),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    // SAFETY: CMSG_SPACE and CMSG_LEN are size arithmetic; the one control message is written
    // within the first CMSG_SPACE bytes of `space`, which is that big and aligned for it. The
    // kernel only reads `datagram` through `iov` (the `*mut` is the C type's, not a write).
    let n = unsafe {
        m.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as _) as _;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as _) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
        libc::sendmsg(fd.as_raw_fd(), &m, 0)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn interface_requests_answer_as_the_c_library_does() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = sock.as_fd();
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert_eq!(if_index(fd, "lo").unwrap(), lo);
        assert_eq!(if_ipv4(fd, "lo").unwrap(), Ipv4Addr::LOCALHOST);
        let e = if_index(fd, "lbfo-nosuch0").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
        for bad in ["lo\0x", "an-interface-name-too-long"] {
            let e = if_index(fd, bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
    }

    /// `recv_with_dest` and `send_from` on this kernel, over loopback: bytes, source,
    /// destination, and a datagram cut to the buffer.
    #[test]
    fn datagrams_carry_their_destination_and_a_chosen_source() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt(rx.as_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, &1i32).unwrap();
        let SocketAddr::V4(to) = rx.local_addr().unwrap() else {
            panic!()
        };
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            send_from(tx.as_fd(), b"hello", to, Ipv4Addr::LOCALHOST).unwrap(),
            5
        );
        tx.send_to(&[7u8; 100], to).unwrap();
        let mut buf = [0u8; 64];
        let (n, from, dest) = recv_with_dest(rx.as_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], tx.local_addr().unwrap()));
        assert_eq!(dest, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        let (n, _, _) = recv_with_dest(rx.as_fd(), &mut buf).unwrap();
        assert_eq!(n, 64, "cut to the buffer");
    }
}
