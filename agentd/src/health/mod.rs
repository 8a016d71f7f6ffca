//! Health checks (`check SERVICE tcp PORT ...`): non-blocking TCP connects run inside the one
//! poll loop, no threads.
//!
//! [`Health`] holds one `Target` per checked backend. A check starts a non-blocking connect;
//! the socket becomes an extra poll source (`POLLOUT`) with a deadline (`timeout=`), and the
//! loop's poll timeout includes the next start or deadline ([`Health::next_deadline`]). The
//! answer is read with `SO_ERROR`; the socket is closed with a zero linger (RST, so thousands of
//! checks leave no TIME_WAIT behind). Nothing here blocks: a FIFO line or a datagram that arrives
//! while connects are in flight is handled in the same wake-up.
//!
//! A backend's local verdict changes after `fall` failures in a row (down) or `rise` successes
//! in a row (up); each change is a [`Verdict`] the agent turns into an ordinary `down`/`up`
//! command, replicated to the group like a FIFO command (see `Agent::health`).
//!
//! **How several checkers agree**: only a checker's own transitions are sent, as last-writer-wins
//! `up`/`down` commands. All hosts hold the same stamped register, so they all answer alike; a
//! checker that does not change its mind sends nothing, so two checkers that disagree (a host cut
//! off from a backend) do not flap: the most recent transition stands until a checker's view
//! changes again.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::vecmap::VecMap;
use lbfo_core::cmd::Check;
use lbfo_core::Name;
use nix::errno::Errno;
use nix::sys::socket::{
    connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

/// A checked backend: service name and address.
pub type Key = (String, IpAddr);

/// One checked backend.
#[derive(Debug)]
struct Target {
    check: Check,
    fails: u8,
    oks: u8,
    /// The settled verdict: `None` until `fall` or `rise` checks agree.
    up: Option<bool>,
    next_ms: u64,
    inflight: Option<(OwnedFd, u64)>,
    last_error: Option<Errno>,
}

/// A backend's verdict changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The service.
    pub service: Name,
    /// The backend.
    pub addr: IpAddr,
    /// Up or down.
    pub up: bool,
    /// Why, for the log.
    pub why: String,
}

/// Every checked backend.
#[derive(Debug, Default)]
pub struct Health {
    targets: VecMap<Key, Target>,
}

impl Health {
    /// Brings the targets to `backends` (every backend of every checked service, with its
    /// check), keeping the counts of those that stay.
    pub fn sync(&mut self, backends: &[(Check, IpAddr)], now_ms: u64) {
        let keep: VecMap<Key, Check> = backends
            .iter()
            .map(|(c, a)| ((c.service.as_str().to_owned(), *a), *c))
            .collect();
        self.targets.retain(|k, t| keep.get(k) == Some(&t.check));
        for (k, c) in keep {
            self.targets.get_or_insert_with(k, || Target {
                check: c,
                fails: 0,
                oks: 0,
                up: None,
                next_ms: now_ms,
                inflight: None,
                last_error: None,
            });
        }
    }

    /// How many backends are checked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }

    /// The sockets in flight, to poll for `POLLOUT`, with the key to hand back to
    /// [`Health::done`].
    pub fn fds(&self) -> Vec<(BorrowedFd<'_>, Key)> {
        self.targets
            .iter()
            .filter_map(|(k, t)| t.inflight.as_ref().map(|(fd, _)| (fd.as_fd(), k.clone())))
            .collect()
    }

    /// A socket in flight became ready: reads the connect's result.
    pub fn done(&mut self, key: &Key, out: &mut Vec<Verdict>) {
        let Some(t) = self.targets.get_mut(key) else {
            return;
        };
        let Some((fd, _)) = t.inflight.take() else {
            return;
        };
        let r = match getsockopt(&fd, sockopt::SocketError) {
            Ok(0) => Ok(()),
            Ok(e) => Err(Errno::from_raw(e)),
            Err(e) => Err(e),
        };
        close(fd);
        record(key, t, r, out);
    }

    /// Times out connects past their deadline and starts the checks that are due.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Verdict>) {
        for (k, t) in self.targets.iter_mut() {
            if let Some((_, deadline)) = &t.inflight {
                if now_ms >= *deadline {
                    if let Some((fd, _)) = t.inflight.take() {
                        close(fd);
                    }
                    record(k, t, Err(Errno::ETIMEDOUT), out);
                }
            }
            if t.inflight.is_none() && now_ms >= t.next_ms {
                t.next_ms = now_ms + u64::from(t.check.interval_ms);
                match start(k.1, t.check.port) {
                    Ok(Some(fd)) => {
                        t.inflight = Some((fd, now_ms + u64::from(t.check.timeout_ms)));
                    }
                    Ok(None) => record(k, t, Ok(()), out),
                    Err(e) => record(k, t, Err(e), out),
                }
            }
        }
    }

    /// When [`Health::tick`] must next run (`u64::MAX` with nothing to check).
    pub fn next_deadline(&self) -> u64 {
        self.targets
            .values()
            .map(|t| match &t.inflight {
                Some((_, d)) => *d,
                None => t.next_ms,
            })
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// Counts one result and reports a change of verdict.
fn record(key: &Key, t: &mut Target, r: Result<(), Errno>, out: &mut Vec<Verdict>) {
    match r {
        Ok(()) => {
            t.oks = t.oks.saturating_add(1);
            t.fails = 0;
        }
        Err(e) => {
            t.fails = t.fails.saturating_add(1);
            t.oks = 0;
            t.last_error = Some(e);
        }
    }
    let verdict = if t.fails >= t.check.fall {
        Some(false)
    } else if t.oks >= t.check.rise {
        Some(true)
    } else {
        None
    };
    if let Some(up) = verdict {
        if t.up != Some(up) {
            t.up = Some(up);
            let why = if up {
                format!("{} connects to port {} succeeded", t.oks, t.check.port)
            } else {
                format!(
                    "{} connects to port {} failed: {}",
                    t.fails,
                    t.check.port,
                    t.last_error
                        .map_or("?".to_owned(), |e| crate::sys::errno_text(e as i32))
                )
            };
            out.push(Verdict {
                service: t.check.service,
                addr: key.1,
                up,
                why,
            });
        }
    }
}

/// Starts a non-blocking connect: `Ok(Some(fd))` in flight, `Ok(None)` connected at once.
fn start(addr: IpAddr, port: u16) -> Result<Option<OwnedFd>, Errno> {
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
        Ok(()) => {
            close(fd);
            Ok(None)
        }
        Err(Errno::EINPROGRESS) => Ok(Some(fd)),
        Err(e) => Err(e),
    }
}

/// Closes with a reset (zero linger), so no TIME_WAIT is left per check.
fn close(fd: OwnedFd) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(port: u16) -> Check {
        Check {
            service: Name::new_checked(b"t.lan").unwrap(),
            port,
            interval_ms: 10,
            timeout_ms: 200,
            fall: 2,
            rise: 2,
        }
    }

    /// Runs the checker with a real poll until `n` verdicts arrived (or 2 s).
    fn run(h: &mut Health, n: usize) -> Vec<Verdict> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let t0 = std::time::Instant::now();
        let mut out = Vec::new();
        while out.len() < n && t0.elapsed().as_secs() < 2 {
            let now = t0.elapsed().as_millis() as u64;
            h.tick(now, &mut out);
            let wait = h.next_deadline().saturating_sub(now).min(50);
            let fds = h.fds();
            let keys: Vec<_> = fds.iter().map(|(_, k)| k.clone()).collect();
            let mut pfds: Vec<PollFd<'_>> = fds
                .iter()
                .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLOUT))
                .collect();
            let _ = poll(&mut pfds, PollTimeout::try_from(wait).unwrap());
            let ready: Vec<_> = pfds
                .iter()
                .zip(&keys)
                .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
                .map(|(_, k)| k.clone())
                .collect();
            drop(pfds);
            drop(fds);
            for k in &ready {
                h.done(k, &mut out);
            }
        }
        out
    }

    #[test]
    fn a_listener_is_up_and_a_closed_port_goes_down() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut h = Health::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        h.sync(&[(check(port), a)], 0);
        let v = run(&mut h, 1);
        assert_eq!(v.len(), 1);
        assert!(v[0].up, "{v:?}");
        drop(l);
        let v = run(&mut h, 1);
        assert_eq!(v.len(), 1);
        assert!(!v[0].up, "{v:?}");
        assert!(v[0].why.contains("refused"), "{v:?}");
        h.sync(&[], 0);
        assert_eq!(h.len(), 0);
        assert_eq!(h.next_deadline(), u64::MAX);
    }
}
