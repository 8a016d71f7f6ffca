//! `lbfo-agentd` as a library: the agent's modules, so that the binary (`main.rs`) and the fuzz
//! targets in `fuzz/` drive the same code. Nothing here is a stable API; the crate's interface is
//! the `lbfo-agentd` command, its config language and its wire format (`wire`).
#![deny(unsafe_code)]
#![deny(missing_docs)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod export;
pub mod fifo;
#[doc(hidden)]
pub mod fuzzing;

/// The C library's text for errno `n` (`strerror_r`), lower-cased, as the agent logs it: "no
/// such file or directory". One source for every message (std's `io::Error` uses the same
/// text), and on the routers no second table of errno strings (nix's `Errno::desc`).
#[allow(unsafe_code)]
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

/// Opens `path` with `open(2)` flags `flags` (`O_CLOEXEC` is always added) and, when it creates
/// the file, `mode` (before the umask). Every file the agent opens goes through here rather than
/// `OpenOptions`/`File::open`, whose flag checks box their error messages as trait objects: with
/// the formatting that pulls in, ~3 KB of the router build.
#[allow(unsafe_code)]
pub fn open(path: &Path, flags: libc::c_int, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let path = c_path(path).map_err(std::io::Error::from)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the mode is passed as
    // the C variadic argument's promoted type.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Fills `buf` with random bytes from the kernel (`getrandom(2)`, which waits only until the
/// kernel's generator is first seeded): for keys and table generations. No file to open, and
/// no `read_exact` machinery in the router build.
#[allow(unsafe_code)]
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
/// `SystemTime` bring `Duration` arithmetic in 128 bits, a kilobyte on the 32-bit routers.
pub fn clock_ms(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock).map_or(0, |t| ms_of(t.tv_sec(), t.tv_nsec()))
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

/// `mkfifo(3)` with `mode` (before the umask).
#[allow(unsafe_code)]
pub fn mkfifo(path: &Path, mode: u32) -> nix::Result<()> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    if unsafe { libc::mkfifo(path.as_ptr(), mode) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// `path` for a system call; EINVAL if it holds a NUL byte. (One conversion for the agent's few
/// path calls, in place of nix's per-call copies.)
fn c_path(path: &Path) -> nix::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::errno::Errno::EINVAL)
}

/// Runs the path system call `call` on `path` as a C string: `Err` with the errno when it
/// returns -1. The agent's path calls ([`rename`], [`unlink`], [`mkdir`], [`chmod`],
/// [`mode_of`]) go through here and [`c_path`] rather than `std::fs`, whose per-call C-string
/// conversions are ~1 KB more of the router build.
fn path_call(
    path: &Path,
    call: impl FnOnce(&std::ffi::CStr) -> libc::c_int,
) -> std::io::Result<()> {
    if call(&c_path(path)?) < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `rename(2)`.
#[allow(unsafe_code)]
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    let to = c_path(to)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    path_call(from, |from| unsafe {
        libc::rename(from.as_ptr(), to.as_ptr())
    })
}

/// `unlink(2)`.
#[allow(unsafe_code)]
pub fn unlink(path: &Path) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    path_call(path, |p| unsafe { libc::unlink(p.as_ptr()) })
}

/// `mkdir(2)` with `mode` (before the umask).
#[allow(unsafe_code)]
pub fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    path_call(path, |p| unsafe { libc::mkdir(p.as_ptr(), mode) })
}

/// `chmod(2)`.
#[allow(unsafe_code)]
pub fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    path_call(path, |p| unsafe { libc::chmod(p.as_ptr(), mode) })
}

/// `stat(2)`: the mode (file type and permission bits) of what `path` names.
#[allow(unsafe_code)]
pub fn mode_of(path: &Path) -> std::io::Result<u32> {
    // SAFETY: all zeroes is a valid `stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated string that outlives the call; stat writes one `struct stat`
    // into `st`, which is that big.
    path_call(path, |p| unsafe { libc::stat(p.as_ptr(), &mut st) })?;
    Ok(st.st_mode)
}

/// `ioctl(2)` as the system call itself. (musl's `ioctl` converts, on 32-bit targets, the
/// time64 structures of a few requests the agent never makes: 0.8 KB of the router build.)
///
/// # Safety
/// `arg` must point to what `request` reads and writes, valid for the call.
#[allow(unsafe_code)]
pub unsafe fn ioctl(
    fd: std::os::fd::BorrowedFd<'_>,
    request: libc::c_ulong,
    arg: *mut libc::c_void,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the caller's promise about `arg`; the fd is open (borrowed).
    if unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), request, arg) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `mode` (as [`mode_of`] gives it) is a directory's.
pub fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// Writes all of `bytes` to `fd`, retrying on EINTR; a write of nothing is EIO. Every write of
/// the agent's (files, stdout, stderr) goes through here rather than `Write::write_all`.
pub fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
    use nix::errno::Errno;
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(Errno::EIO.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Everything `file` holds from where it stands. A plain read loop (EINTR retried) rather than
/// std's `read_to_end`/`fs::read`/`fs::read_to_string`, whose buffer-growing machinery is a
/// kilobyte or two of the router build; every file the agent reads goes through here.
pub fn read_all(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// The contents of the file at `path`, as `std::fs::read` (through [`read_all`]).
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    read_all(&mut open(path, libc::O_RDONLY, 0)?)
}

/// A path as the agent's messages show it. The agent's paths all come from its UTF-8 config and
/// command line, so this is the text itself: `Path::display`'s lossy decoding is ~0.6 KB of the
/// router build for paths that cannot occur.
pub trait Shown {
    /// The path as text (a marker if it is not UTF-8).
    fn shown(&self) -> &str;
}

impl Shown for Path {
    fn shown(&self) -> &str {
        self.to_str().unwrap_or("(a path that is not UTF-8)")
    }
}

/// Whether two (optional) paths are the same text. Not `Path`'s `==`, which compares component
/// by component (~1 KB of the router build): for the agent a path spelled differently in the
/// config is a changed setting.
pub fn same_path(a: Option<&Path>, b: Option<&Path>) -> bool {
    a.map(Path::as_os_str) == b.map(Path::as_os_str)
}

/// The directory `path` names a file in: everything before its last `/` ("/run/lbfo/table" →
/// "/run/lbfo", "/table" → "/", "table" → "."). Byte-wise, for paths as the config gives them
/// (a file's, no trailing `/`): std's `Path::parent` and `create_dir_all` bring its component
/// parser, ~1.5 KB of the router build.
pub fn dir_of(path: &Path) -> &Path {
    let bytes = path.as_os_str().as_bytes();
    match bytes.iter().rposition(|&b| b == b'/') {
        Some(0) => Path::new("/"),
        Some(i) => Path::new(OsStr::from_bytes(bytes.get(..i).unwrap_or_default())),
        None => Path::new("."),
    }
}

/// Creates directory `dir` with `mode` (before the umask), and its missing parents, as
/// `DirBuilder::recursive` does; `Ok` when it is already a directory.
pub fn create_dirs(dir: &Path, mode: u32) -> std::io::Result<()> {
    let bytes = dir.as_os_str().as_bytes();
    // Every prefix that ends before a `/` (but the root), then the whole path.
    let ends = (1..bytes.len()).filter(|&i| bytes[i] == b'/');
    for end in ends.chain([bytes.len()]) {
        let prefix = Path::new(OsStr::from_bytes(bytes.get(..end).unwrap_or_default()));
        match mkdir(prefix, mode) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
            _ => {}
        }
    }
    if mode_of(dir).is_ok_and(is_dir) {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::ENOTDIR))
    }
}

/// An I/O error as the agent logs it: the C library's text, lower-cased, for an OS error (see
/// [`errno_text`]); std's own message for the rest.
pub fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(n),
        // Not reached in practice: the agent's std calls fail with an errno but for a NUL byte
        // in a path, which the config refuses (and argv cannot hold). Not std's own text, whose
        // `Display` is ~2 KB of the router build with its lossy UTF-8 decoding.
        None => "I/O error without an errno".to_owned(),
    }
}
pub mod health;
pub mod keyfile;
pub mod malloc;
pub mod net;
pub mod replica;
pub mod shm;
pub mod state;
pub mod status;
pub mod tablefile;
pub mod vecmap;
pub mod wire;

/// A tiny deterministic generator (xorshift) for the property tests (no dependency needed).
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
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
    fn read_file_reads_all_of_a_file_over_many_chunks_and_reports_a_missing_one() {
        let path = std::env::temp_dir().join(format!("lbfo-read-file-{}", std::process::id()));
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &body).unwrap();
        assert_eq!(read_file(&path).unwrap(), body);
        std::fs::remove_file(&path).unwrap();
        let e = read_file(&path).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(io_text(&e), "no such file or directory");
    }

    #[test]
    fn dir_of_is_everything_before_the_last_slash() {
        for (path, dir) in [
            ("/run/lbfo/table", "/run/lbfo"),
            ("/table", "/"),
            ("table", "."),
            ("run/lbfo/table", "run/lbfo"),
        ] {
            assert_eq!(dir_of(Path::new(path)), Path::new(dir), "{path}");
        }
    }

    #[test]
    fn create_dirs_makes_the_missing_parents_and_refuses_a_file_in_the_way() {
        use std::os::unix::fs::PermissionsExt;
        let top = std::env::temp_dir().join(format!("lbfo-create-dirs-{}", std::process::id()));
        let deep = top.join("a/b/c");
        create_dirs(&deep, 0o755).unwrap();
        assert!(deep.is_dir());
        let mode = std::fs::metadata(&deep).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o700, 0o700, "{mode:o}");
        create_dirs(&deep, 0o755).unwrap();
        std::fs::write(top.join("file"), b"x").unwrap();
        let e = create_dirs(&top.join("file/d"), 0o755).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
        let e = create_dirs(&top.join("file"), 0o755).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn same_path_compares_the_text() {
        let (a, b) = (Path::new("/run/lbfo/table"), Path::new("/run//lbfo/table"));
        assert!(same_path(Some(a), Some(a)));
        assert!(!same_path(Some(a), Some(b)), "spelled differently: changed");
        assert!(!same_path(Some(a), None));
        assert!(same_path(None, None));
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

    #[test]
    fn path_calls_do_what_their_system_calls_do_and_report_errno() {
        let top = std::env::temp_dir().join(format!("lbfo-path-calls-{}", std::process::id()));
        mkdir(&top, 0o700).unwrap();
        assert!(is_dir(mode_of(&top).unwrap()));
        assert_eq!(
            mkdir(&top, 0o700).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        chmod(&top, 0o750).unwrap();
        assert_eq!(mode_of(&top).unwrap() & 0o777, 0o750);
        let (a, b) = (top.join("a"), top.join("b"));
        std::fs::write(&a, b"x").unwrap();
        assert!(!is_dir(mode_of(&a).unwrap()));
        rename(&a, &b).unwrap();
        assert_eq!(mode_of(&a).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
        unlink(&b).unwrap();
        assert_eq!(unlink(&b).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        let nul = Path::new(OsStr::from_bytes(b"/tmp/a\0b"));
        assert_eq!(unlink(nul).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        std::fs::remove_dir(&top).unwrap();
    }
}
