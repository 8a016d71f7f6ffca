//! The TCP part of the `tcp` and `http` checks: a non-blocking connect, its result, and a close
//! that leaves no TIME_WAIT behind.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

/// Starts a non-blocking connect: `Ok(Some(fd))` in flight (poll it for `POLLOUT`), `Ok(None)`
/// connected at once (the socket is closed: a `tcp` check needs nothing more).
pub fn connect_or_close(addr: IpAddr, port: u16) -> Result<Option<OwnedFd>, Errno> {
    match start(addr, port)? {
        (fd, true) => {
            close(fd);
            Ok(None)
        }
        (fd, false) => Ok(Some(fd)),
    }
}

/// Starts a non-blocking connect: the socket, and whether it is connected already.
pub fn start(addr: IpAddr, port: u16) -> Result<(OwnedFd, bool), Errno> {
    let fam = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        fam,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let sa = SockaddrStorage::from(SocketAddr::new(addr, port));
    match connect(fd.as_raw_fd(), &sa) {
        Ok(()) => Ok((fd, true)),
        Err(Errno::EINPROGRESS) => Ok((fd, false)),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

/// The result of a connect that `poll` reported ready (`SO_ERROR`).
pub fn result(fd: &OwnedFd) -> Result<(), Errno> {
    match getsockopt(fd, sockopt::SocketError) {
        Ok(0) => Ok(()),
        Ok(e) => Err(Errno::from_raw(e)),
        Err(e) => Err(e),
    }
}

/// Closes with a reset (zero linger), so no TIME_WAIT is left per check.
pub fn close(fd: OwnedFd) {
    let _ = setsockopt(
        &fd,
        sockopt::Linger,
        &nix::libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
    drop(fd);
}
