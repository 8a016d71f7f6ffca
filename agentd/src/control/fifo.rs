//! The command FIFO: creating and opening it safely, draining it, and cutting bytes into lines.
//!
//! [`Splitter`] turns a byte stream into lines however the reads happened to cut it: a line split
//! over several reads comes out whole, and a line longer than [`MAX_LINE`] is reported once as
//! [`Piece::TooLong`] and skipped up to its newline, so it can neither grow memory without bound
//! nor swallow the lines after it. Lines up to `PIPE_BUF` bytes that concurrent writers send in
//! one `write` each arrive unmixed (POSIX makes such writes atomic), so none is lost. Bigger
//! writes (`cat file > fifo`) stay whole only while the pipe has room for them, so the FIFO's
//! buffer is raised to [`PIPE_BYTES`].
//!
//! [`Fifo::open`] makes sure only the owner can write commands: **the FIFO is made afresh at
//! every start**, mode 0600, under a temporary name and renamed over the path, replacing one of
//! ours that is there. Whoever opened the old one (while its mode let them, or at any time
//! before) holds a pipe no agent reads: a `chmod` would have left them writing commands into the
//! new agent. Anything at the path that is not a FIFO owned by us, or a FIFO another agent reads
//! (its `flock`), is refused. It is opened read-write and non-blocking: holding a write end
//! ourselves means writers coming and going never make `poll` report hang-up over and over.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::stat::Mode;

/// The longest command line accepted, newline excluded. Equal to Linux's `PIPE_BUF`, the largest
/// write a pipe keeps whole when several processes write at once.
pub const MAX_LINE: usize = 4096;
/// Bytes asked for per `read`.
pub const READ_CHUNK: usize = 64 * 1024;
/// The pipe buffer the agent asks for. A writer's `write` lands whole (unmixed with other
/// writers') when the pipe has room for all of it, so a large buffer lets `cat file > fifo` from
/// several writers at once keep their lines intact for files up to about this size in total.
/// 1 MiB is Linux's default `/proc/sys/fs/pipe-max-size`.
pub const PIPE_BYTES: i32 = 1 << 20;
/// Reads per wake-up at most, so a flood of commands cannot starve the heartbeat and the limit
/// checks; whatever is left is read on the next turn of the loop.
pub const MAX_READS: usize = 16;

/// One piece of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole line, without its newline.
    Line(&'a [u8]),
    /// A line longer than [`MAX_LINE`]; its bytes are dropped up to the next newline.
    TooLong,
}

/// Reassembles lines across reads.
#[derive(Debug, Default)]
pub struct Splitter {
    partial: Vec<u8>,
    skipping: bool,
}

impl Splitter {
    /// Feeds bytes in; calls `f` for each piece completed by them, in order.
    pub fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(Piece<'_>)) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            let (chunk, rest) = (&data[..nl], &data[nl + 1..]);
            data = rest;
            if self.skipping {
                // Its TooLong was reported when it overflowed.
                self.skipping = false;
            } else if self.partial.len() + chunk.len() > MAX_LINE {
                self.partial.clear();
                f(Piece::TooLong);
            } else if self.partial.is_empty() {
                f(Piece::Line(chunk));
            } else {
                self.partial.extend_from_slice(chunk);
                f(Piece::Line(&self.partial));
                self.partial.clear();
            }
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + data.len() > MAX_LINE {
            self.partial.clear();
            self.skipping = true;
            f(Piece::TooLong);
        } else {
            self.partial.extend_from_slice(data);
        }
    }
}

/// Why the FIFO could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FifoError {
    /// Something other than a FIFO is at the path.
    NotFifo,
    /// The FIFO belongs to another user, who could reopen its permissions.
    NotOwner(u32),
    /// Another agent reads this FIFO (holds its `flock`).
    Busy,
    /// A system call failed.
    Os(&'static str, Errno),
}

impl fmt::Display for FifoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FifoError::NotFifo => {
                f.write_str("exists and is not a FIFO (remove it, or choose another `fifo` path)")
            }
            FifoError::NotOwner(uid) => {
                write!(f, "is owned by uid {uid}, not by this agent; remove it")
            }
            FifoError::Busy => f.write_str("another lbfo-agentd reads this FIFO"),
            FifoError::Os(what, e) => write!(f, "{what}: {}", crate::sys::errno_text(*e as i32)),
        }
    }
}

/// What opening the FIFO did, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Created with mode 0600; there was none.
    Created,
    /// A FIFO of ours was there (its mode given): replaced by a new one of mode 0600, so whoever
    /// had the old one open has lost it.
    Replaced(u32),
}

/// The open command FIFO.
#[derive(Debug)]
pub struct Fifo {
    file: nix::fcntl::Flock<File>,
    pipe_bytes: usize,
}

impl Fifo {
    /// Creates the FIFO at `path` afresh, replacing one of ours that is there; see the module
    /// docs for the checks.
    pub fn open(path: &Path) -> Result<(Fifo, Opened), FifoError> {
        // Held (locked) until the new FIFO has replaced it, so a second agent stops here.
        let old = existing(path)?;
        let file = create(path)?;
        let opened = old.map_or(Opened::Created, |(_, mode)| Opened::Replaced(mode));
        // Best effort: a smaller buffer only makes big concurrent writes less safe.
        let fd = file.as_raw_fd();
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
        let pipe_bytes =
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETPIPE_SZ).map_or(0, |n| n as usize);
        Ok((Fifo { file, pipe_bytes }, opened))
    }

    /// The pipe's buffer size in bytes (0 if unknown).
    pub fn pipe_bytes(&self) -> usize {
        self.pipe_bytes
    }

    /// Reads what is waiting, at most [`MAX_READS`] × [`READ_CHUNK`] bytes, handing every piece
    /// to `f`. Returns the bytes read.
    pub fn drain(
        &self,
        splitter: &mut Splitter,
        buf: &mut [u8],
        mut f: impl FnMut(Piece<'_>),
    ) -> Result<usize, Errno> {
        let mut total = 0;
        let mut reads = 0;
        while reads < MAX_READS {
            match nix::unistd::read(self.file.as_raw_fd(), buf) {
                // EINTR: a signal arrived mid-read (they are blocked, so only in theory): retry.
                Err(Errno::EINTR) => continue,
                // EAGAIN: the pipe is empty; back to poll.
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(e),
                // We hold a write end ourselves, so end-of-file cannot happen; stop if it does.
                Ok(0) => break,
                Ok(n) => {
                    reads += 1;
                    total += n;
                    splitter.feed(&buf[..n], &mut f);
                }
            }
        }
        Ok(total)
    }
}

impl AsFd for Fifo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Opens `path` read-write, non-blocking, not through a symlink, and checks it is a FIFO of
/// this agent's user that no other agent reads (by its `flock`).
fn open_ours(path: &Path) -> Result<nix::fcntl::Flock<File>, FifoError> {
    let flags = libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOFOLLOW;
    // O_NOFOLLOW: a symlink planted at the path is refused (ELOOP), not followed.
    let file = crate::sys::fs::open(path, flags, 0).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => FifoError::NotFifo,
        _ => FifoError::Os("open", io_errno(&e)),
    })?;
    let meta =
        crate::sys::fs::fstat(file.as_fd()).map_err(|e| FifoError::Os("fstat", io_errno(&e)))?;
    if !meta.is_fifo() {
        return Err(FifoError::NotFifo);
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid != me {
        return Err(FifoError::NotOwner(meta.uid));
    }
    // Two agents on one FIFO would each get a random share of the commands.
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        match e {
            Errno::EWOULDBLOCK => FifoError::Busy,
            e => FifoError::Os("flock", e),
        }
    })
}

/// The FIFO at `path` now, locked, with its mode; `None` if there is none.
fn existing(path: &Path) -> Result<Option<(nix::fcntl::Flock<File>, u32)>, FifoError> {
    match open_ours(path) {
        Ok(f) => {
            let mode = crate::sys::fs::fstat(f.as_fd()).map_or(0, |m| m.mode & 0o7777);
            Ok(Some((f, mode)))
        }
        Err(FifoError::Os(_, Errno::ENOENT)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A new FIFO, mode 0600, made under a fresh temporary name beside `path` (`mkfifo` never
/// follows or reuses what is there), opened and locked, then renamed over `path` in one step.
fn create(path: &Path) -> Result<nix::fcntl::Flock<File>, FifoError> {
    for _ in 0..crate::sys::fs::TEMP_TRIES {
        let tmp = crate::sys::fs::temp_name(path)
            .map_err(|e| FifoError::Os("getrandom", io_errno(&e)))?;
        match crate::sys::fs::mkfifo(&tmp, 0o600) {
            Ok(()) => {}
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(FifoError::Os("mkfifo", e)),
        }
        let made = open_ours(&tmp).and_then(|f| {
            // Exactly 0600 whatever the umask.
            nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(0o600))
                .map_err(|e| FifoError::Os("fchmod", e))?;
            crate::sys::fs::rename(&tmp, path)
                .map_err(|e| FifoError::Os("rename", io_errno(&e)))?;
            Ok(f)
        });
        if made.is_err() {
            let _ = crate::sys::fs::unlink(&tmp);
        }
        return made;
    }
    Err(FifoError::Os("mkfifo", Errno::EEXIST))
}

fn io_errno(e: &io::Error) -> Errno {
    e.raw_os_error()
        .map_or(Errno::UnknownErrno, Errno::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` cut at every `|` (the `|`s are removed) and renders the pieces, one per
    /// line: the line's text, or `<too long>`.
    fn check(input: &str, expect: &str) {
        let mut s = Splitter::default();
        let mut got = String::new();
        for part in input.split('|') {
            s.feed(part.as_bytes(), |p| {
                match p {
                    Piece::Line(l) => got.push_str(&String::from_utf8_lossy(l)),
                    Piece::TooLong => got.push_str("<too long>"),
                }
                got.push('\n');
            });
        }
        assert_eq!(got, expect, "input {input:?}");
    }

    #[test]
    fn whole_and_split_lines() {
        check("", "");
        check("\n", "\n");
        check("a\nb\n", "a\nb\n");
        check("a|\nb\n", "a\nb\n");
        check("ad|d x| y\n|", "add x y\n");
        check("a\nb", "a\n");
        check("a\nb|\n", "a\nb\n");
        check("a||||b|\n\n", "ab\n\n");
        check("x\r\n", "x\r\n");
    }

    #[test]
    fn too_long_lines_are_skipped_once() {
        let max = "m".repeat(MAX_LINE);
        check(&format!("{max}\nok\n"), &format!("{max}\nok\n"));
        check(&format!("{max}x\nok\n"), "<too long>\nok\n");
        check(&format!("{max}|x|yyyy|zz\nok\n"), "<too long>\nok\n");
        let half = "h".repeat(MAX_LINE / 2 + 1);
        check(&format!("a\n{half}|{half}\nb\n"), "a\n<too long>\nb\n");
        check(&format!("{half}|{half}|tail\nc\n"), "<too long>\nc\n");
        check(&format!("{max}x\n{max}x\n"), "<too long>\n<too long>\n");
    }

    #[test]
    fn byte_at_a_time() {
        let text = "add a.lan 10.0.0.1\n# c\n\ndown a.lan 10.0.0.1\n";
        let cut: Vec<String> = text.chars().map(String::from).collect();
        check(
            &cut.join("|"),
            "add a.lan 10.0.0.1\n# c\n\ndown a.lan 10.0.0.1\n",
        );
    }

    #[test]
    fn fifo_modes_and_refusals() {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir =
            std::env::temp_dir().join(format!("lbfo-agentd-fifo-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let (fifo, how) = Fifo::open(&path).unwrap();
        assert_eq!(how, Opened::Created);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Fifo::open(&path).unwrap_err(), FifoError::Busy);
        assert!(path.exists(), "a busy FIFO is left alone");
        // A writer that opened the FIFO while its mode let it in loses it at the next start.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).unwrap();
        let mut early = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        drop(fifo);
        let (fifo, how) = Fifo::open(&path).unwrap();
        assert_eq!(how, Opened::Replaced(0o622));
        assert_eq!(fifo.pipe_bytes(), PIPE_BYTES as usize);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        {
            use std::io::Write;
            let e = early.write_all(b"add evil.lan 10.6.6.6\n").unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EPIPE),
                "nobody reads the old pipe"
            );
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary FIFO left beside it"
        );

        // Writes split over the pipe come out as lines; an empty pipe reads as nothing.
        let mut w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        use std::io::Write;
        w.write_all(b"one\ntw").unwrap();
        let (mut s, mut buf, mut lines) = (Splitter::default(), vec![0; 8], Vec::new());
        fifo.drain(&mut s, &mut buf, |p| lines.push(format!("{p:?}")))
            .unwrap();
        w.write_all(b"o\n").unwrap();
        fifo.drain(&mut s, &mut buf, |p| lines.push(format!("{p:?}")))
            .unwrap();
        assert_eq!(lines, ["Line([111, 110, 101])", "Line([116, 119, 111])"]);
        assert_eq!(fifo.drain(&mut s, &mut buf, |_| panic!()).unwrap(), 0);

        let plain = dir.join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert_eq!(Fifo::open(&plain).unwrap_err(), FifoError::NotFifo);
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(Fifo::open(&link).unwrap_err(), FifoError::NotFifo);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
