//! The fence around the agent's `unsafe`: every system call, mapping and C-library call that
//! needs it lives in this folder, each behind a safe function whose `// SAFETY:` comment says why
//! it holds. The rest of the agent is `#![deny(unsafe_code)]` without exception (a check in
//! `scripts/test.sh` keeps it so).
//!
//! - this module: errno text, the clock, random bytes, the open-files limit;
//! - [`fs`]: files and paths (`open`, `statx`, `getdents64`, `rename`, ...), stdout and stderr;
//! - [`net`]: socket options, interface requests, datagrams with control messages;
//! - [`process`]: starting a check program (`posix_spawn`);
//! - [`shm`]: the table file's mapping and the counters' SysV segment.
#![allow(unsafe_code)]

pub mod fs;
pub mod net;
pub mod process;
pub mod shm;

/// The C library's text for errno `n` (`strerror_r`), lower-cased, as the agent logs it: "no
/// such file or directory". One source for every message (std's `io::Error` uses the same
/// text), and on the routers no second table of errno strings (nix's `Errno::desc`).
pub fn errno_text(n: i32) -> String {
    let mut buf = [0u8; 128];
    // SAFETY: strerror_r (the XSI one, which the libc crate binds on glibc and musl) writes at
    // most `buf.len()` bytes, NUL included, into `buf`.
    let r = unsafe { libc::strerror_r(n, buf.as_mut_ptr().cast(), buf.len()) };
    let text = std::ffi::CStr::from_bytes_until_nul(&buf)
        .ok()
        .filter(|_| r == 0)
        .and_then(|c| c.to_str().ok());
    let Some(text) = text else {
        return format!("unknown error {n}");
    };
    let mut s = text.to_owned();
    s.make_ascii_lowercase();
    s
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`, which waits only until the
/// kernel's generator is first seeded): for keys and table generations. No file to open, and
/// no `read_exact` machinery in the router build.
pub fn random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => got += n,
            Err(_) if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            Err(_) => return Err(std::io::Error::last_os_error()),
        }
    }
    Ok(())
}

/// Milliseconds on `clock` (`CLOCK_MONOTONIC` or `CLOCK_REALTIME`; 0 before its epoch, which
/// cannot happen on these clocks). `clock_gettime` read directly: std's `Instant` and
/// `SystemTime` bring `Duration` arithmetic in 128 bits, costly code on the 32-bit routers.
pub fn clock_ms(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock).map_or(0, |t| ms_of(t.tv_sec(), t.tv_nsec()))
}

/// Microseconds on `clock`, as [`clock_ms`]: for round-trip times, which on a LAN are
/// fractions of a millisecond.
pub fn clock_us(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock).map_or(0, |t| us_of(t.tv_sec(), t.tv_nsec()))
}

/// [`ms_of`] in microseconds.
fn us_of(secs: impl Into<i64>, nanos: impl Into<i64>) -> u64 {
    let us = secs
        .into()
        .wrapping_mul(1_000_000)
        .wrapping_add(nanos.into() / 1000);
    u64::try_from(us).unwrap_or(0)
}

/// Raises the soft limit on open files to the hard limit (`setrlimit`), so that health checks
/// in flight do not run out of fds under a low default; returns the soft limit before and
/// after, or the errno text when the limits cannot be read.
pub fn raise_fd_limit() -> Result<(u64, u64), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // `rlim_t` is the C library's; widened by a generic (its width differs between targets).
    fn wide(n: impl Into<u64>) -> u64 {
        n.into()
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| errno_text(e as i32))?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Ok((wide(soft), wide(hard)));
    }
    Ok((wide(soft), wide(soft)))
}

/// Seconds and nanoseconds (of whatever width the target's `timespec` has) as milliseconds;
/// 0 for a time before the epoch.
pub(crate) fn ms_of(secs: impl Into<i64>, nanos: impl Into<i64>) -> u64 {
    let ms = secs
        .into()
        .wrapping_mul(1000)
        .wrapping_add(nanos.into() / 1_000_000);
    u64::try_from(ms).unwrap_or(0)
}

/// An I/O error as the agent logs it: the C library's text, lower-cased, for an OS error (see
/// [`errno_text`]); std's own message for the rest.
pub fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(n),
        // Not reached in practice: the agent's std calls fail with an errno but for a NUL byte
        // in a path, which the config refuses (and argv cannot hold). Not std's own text, whose
        // `Display` is much more code on the router build, with its lossy UTF-8 decoding.
        None => "I/O error without an errno".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_is_the_c_library_text_lower_cased_without_the_code() {
        assert_eq!(errno_text(libc::ENOENT), "no such file or directory");
        assert_eq!(errno_text(libc::EACCES), "permission denied");
        let e = std::io::Error::from_raw_os_error(libc::EEXIST);
        assert_eq!(io_text(&e), "file exists");
        let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
        assert_eq!(io_text(&e), "I/O error without an errno");
        assert_eq!(errno_text(-1), "unknown error -1");
    }

    #[test]
    fn random_fills_the_whole_buffer_differently_each_time() {
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        random(&mut a).unwrap();
        random(&mut b).unwrap();
        assert_ne!(a, b);
        // Every byte is written: in 4 KiB of random bytes each value shows up.
        let mut seen = [false; 256];
        a.iter().for_each(|&x| seen[usize::from(x)] = true);
        assert!(seen.iter().all(|&s| s), "some byte value never appeared");
        random(&mut []).unwrap();
    }

    #[test]
    fn clocks_in_milliseconds_agree_with_std() {
        use nix::time::ClockId;
        let std_ms = || {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            d.as_millis() as u64
        };
        let (before, ours, after) = (std_ms(), clock_ms(ClockId::CLOCK_REALTIME), std_ms());
        assert!(before <= ours && ours <= after, "{before} {ours} {after}");
        let t0 = clock_ms(ClockId::CLOCK_MONOTONIC);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t1 = clock_ms(ClockId::CLOCK_MONOTONIC);
        assert!((20..2000).contains(&(t1 - t0)), "{t0} {t1}");
        assert_eq!(ms_of(1_700_000_000i64, 999_999_999i64), 1_700_000_000_999);
        assert_eq!(ms_of(-1i64, 0i64), 0, "before the epoch");
    }
}
