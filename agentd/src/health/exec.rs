//! The `exec` check: a program run without a shell, its exit status the verdict.
//!
//! The program gets `/dev/null` as stdin, stdout and stderr, the agent's environment plus
//! `LBFO_BACKEND` (the backend's address) and `LBFO_SERVICE`, and a process group of its own
//! (`sys::process::spawn`, `posix_spawn(3)`; the child's signal mask is emptied, so it does not
//! inherit the agent's blocked signals). A program that cannot be executed is an error of the
//! spawn, not a child that exits 127: this machine's failure, not the backend's. **The group dies
//! with the check**: at the timeout the whole group is killed; when the program exits, whatever
//! it left running in its group is killed before the program is reaped (its zombie keeps the
//! group's id from being reused until then).
//!
//! Reaping happens in the loop: the agent blocks SIGCHLD and reads it from its signalfd, and
//! each SIGCHLD (they coalesce) makes [`exited`] ask every check process with
//! `waitid(WNOHANG)`. `pidfd_open` would give one fd per process to poll, but it needs Linux
//! 5.3 and the agent runs on 4.11 (`statx`): SIGCHLD works on every kernel.

use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;

use lbfo_core::addr::Ip;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How a check process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exit(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Starts `argv` (an absolute path and its arguments) for `service`'s backend `addr`.
pub fn spawn(argv: &[String], service: &str, addr: IpAddr) -> Result<Pid, Errno> {
    // A NUL cannot be passed (the config's text could hold one): the program cannot be started.
    let c = |s: &[u8]| CString::new(s).map_err(|_| Errno::EINVAL);
    let argv = argv
        .iter()
        .map(|a| c(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let path = argv.first().ok_or(Errno::ENOENT)?;
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k != "LBFO_BACKEND" && k != "LBFO_SERVICE" {
            env.push(c(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
    }
    env.push(c(format!("LBFO_BACKEND={}", Ip(addr)).as_bytes())?);
    env.push(c(format!("LBFO_SERVICE={service}").as_bytes())?);
    crate::sys::process::spawn(path, &argv, &env).map(Pid::from_raw)
}

/// Whether check process `pid` has ended: if so, its group is killed and it is reaped. `None`
/// while it runs (or if it is no child of ours any more, which cannot happen: only this module
/// reaps).
pub fn exited(pid: Pid) -> Option<Ended> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let ended = match waitid(Id::Pid(pid), flags) {
        Ok(WaitStatus::Exited(_, code)) => Ended::Exit(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ended::Signal(sig as i32),
        _ => return None,
    };
    kill(pid);
    reap(pid);
    Some(ended)
}

/// Kills process group `pid` (a check's program and whatever it started).
pub fn kill(pid: Pid) {
    let _ = killpg(pid, Signal::SIGKILL);
}

/// Reaps `pid` if it has ended: `true` when it is gone.
pub fn reap(pid: Pid) -> bool {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        Err(Errno::EINTR) => false,
        // ECHILD: nothing left to reap.
        Err(_) => true,
    }
}
