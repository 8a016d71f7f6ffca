//! Files and paths as the agent uses them: thin wrappers over the system calls (`open(2)`,
//! `statx(2)`, `getdents64(2)`, `rename(2)`, ...), each returning `io::Result` with the errno.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::ms_of;

/// Opens `path` with `open(2)` flags `flags` (`O_CLOEXEC` is always added) and, when it creates
/// the file, `mode` (before the umask). Every file the agent opens goes through here rather than
/// `OpenOptions`/`File::open`, whose flag checks box their error messages as trait objects: with
/// the formatting that pulls in, are much more code on the router build.
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

/// `mkfifo(3)` with `mode` (before the umask).
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
/// returns -1. The agent's path calls ([`rename`], [`unlink`], [`mkdir`], [`chmod`]; [`stat`]
/// through [`c_path`] only) go through here rather than `std::fs`, whose per-call C-string
/// conversions are more code on the router build.
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
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    let to = c_path(to)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    path_call(from, |from| unsafe {
        libc::rename(from.as_ptr(), to.as_ptr())
    })
}

/// Renames `from` to `to` only if nothing is at `to` (EEXIST otherwise): `renameat2(2)` with
/// `RENAME_NOREPLACE`, as the system call itself (the C libraries' wrappers are newer than the
/// agent's oldest targets); where the file system or kernel lacks it, `link(2)` and `unlink(2)`,
/// which never replace either.
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let (from_c, to_c) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are NUL-terminated strings that outlive the call; the directory fds are
    // AT_FDCWD, the flags a plain integer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(e);
    }
    // SAFETY: as above.
    path_call(from, |f| unsafe { libc::link(f.as_ptr(), to_c.as_ptr()) })?;
    unlink(from)
}

/// `unlink(2)`.
pub fn unlink(path: &Path) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    path_call(path, |p| unsafe { libc::unlink(p.as_ptr()) })
}

/// `mkdir(2)` with `mode` (before the umask).
pub fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    path_call(path, |p| unsafe { libc::mkdir(p.as_ptr(), mode) })
}

/// `chmod(2)`.
pub fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated string that outlives the call.
    path_call(path, |p| unsafe { libc::chmod(p.as_ptr(), mode) })
}

/// What the agent reads of a file's status (`statx(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// The file type and permission bits, as `st_mode`.
    pub mode: u32,
    /// The owner.
    pub uid: u32,
    /// The size in bytes.
    pub size: u64,
    /// The last modification, in milliseconds since 1970 (0 for a time before).
    pub mtime_ms: u64,
}

impl FileStat {
    /// A regular file's.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    /// A directory's.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// A FIFO's.
    pub fn is_fifo(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFIFO
    }
}

/// `stat(2)` of what `path` names (symlinks followed).
pub fn stat(path: &Path) -> std::io::Result<FileStat> {
    statx(libc::AT_FDCWD, &c_path(path)?, 0)
}

/// `fstat(2)` of an open file.
pub fn fstat(fd: BorrowedFd<'_>) -> std::io::Result<FileStat> {
    statx(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

/// Every stat of the agent's, as the `statx` system call itself (Linux 4.11 or later). Not the C
/// library's `stat` and `fstat`: musl's, on 32-bit targets, convert the kernel's structure to a
/// time64 one, code the agent does not need; and `statx`'s structure is the same on every
/// target.
fn statx(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
) -> std::io::Result<FileStat> {
    // SAFETY: all zeroes is a valid `statx` (plain integers).
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and outlives the call; the kernel writes one `statx`
    // into `st`, which is that big (the size is fixed by the kernel's ABI).
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            dirfd,
            path.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS,
            std::ptr::addr_of_mut!(st),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FileStat {
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        size: st.stx_size,
        mtime_ms: ms_of(st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
    })
}

/// Calls `each` with the name of every entry of the directory open on `dir` (`.` and `..`
/// included), by the `getdents64` system call: not nix's `Dir` (readdir), whose `fdopendir` and
/// `fstat` are more code on the router build.
pub fn dir_names(dir: BorrowedFd<'_>, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    // A `linux_dirent64`: inode (8 bytes), offset (8), record length (2), type (1), then the
    // NUL-terminated name.
    const NAME: usize = 19;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`; the fd is open.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n <= 0 {
            return if n == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
        }
        let mut rest = buf.get(..n as usize).unwrap_or_default();
        while let Some(len) = rest
            .get(16..18)
            .map(|l| usize::from(u16::from_ne_bytes([l[0], l[1]])))
        {
            let Some(name) = rest.get(NAME..len) else {
                break;
            };
            each(name.split(|&b| b == 0).next().unwrap_or_default());
            rest = &rest[len..];
        }
    }
}

/// Standard output, as a descriptor for [`write_all`].
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 stays open for the life of the process: std's runtime reopens it on
    // /dev/null if the agent was started without it, and nothing in the agent closes it.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// Standard error, as a descriptor for [`write_all`].
pub fn stderr() -> BorrowedFd<'static> {
    // SAFETY: as for [`stdout`], with fd 2.
    unsafe { BorrowedFd::borrow_raw(2) }
}

/// Writes `line` and a newline to stderr in one `write`, ignoring failure: a closed stderr must
/// not stop the agent. Every log line of the agent's goes through here.
pub fn say(line: &str) {
    let mut l = String::with_capacity(line.len() + 1);
    l.push_str(line);
    l.push('\n');
    let _ = write_all(stderr(), l.as_bytes());
}

/// Writes all of `bytes` to `fd`, retrying on EINTR; a write of nothing is EIO. Every write of
/// the agent's (files, stdout, stderr) goes through here: whole lines and reports in one
/// `write` where the pipe takes them, with no buffer or lock of std's `Stdout` in between.
pub fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
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

/// Gives `file` `len` bytes of storage on its filesystem (`posix_fallocate(3)`), growing it to
/// `len` if shorter: a file the agent maps and writes must never be sparse, or a full filesystem
/// turns a store into the mapping into SIGBUS. Where the filesystem cannot allocate ahead
/// (EOPNOTSUPP: musl does not emulate it), the range is written with zeros instead.
pub fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    let end =
        libc::off_t::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: plain values; `file` is an open descriptor for the call's duration.
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, end) } {
            0 => return Ok(()),
            libc::EINTR => {}
            libc::EOPNOTSUPP => break,
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
    let zeros = [0u8; 4096];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from(len - at).map_or(zeros.len(), |n| n.min(zeros.len()));
        let offset = libc::off_t::try_from(at).unwrap_or(end);
        match nix::sys::uio::pwrite(file, zeros.get(..n).unwrap_or_default(), offset) {
            Ok(0) => return Err(std::io::Error::from_raw_os_error(libc::EIO)),
            Ok(w) => at += w as u64,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Everything `file` holds from where it stands. A plain read loop (EINTR retried) rather than
/// std's `read_to_end`/`fs::read`/`fs::read_to_string`, whose buffer-growing machinery is a
/// lot of code on the router build; every file the agent reads goes through here.
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

/// A file that replaces `target` in one step: written beside it under a temporary name, then
/// [`NewFile::commit`]ted (fsync, `rename` over `target`, fsync of the directory), so a reader
/// (or a crash) sees the whole old file or the whole new one, never a part. Dropped without a
/// commit, the temporary file is removed. Every file the agent replaces goes through here: the
/// table, the state file, the dnsmasq export, the cluster's state for `status`.
///
/// **The temporary is never an existing file**: its name is `.NAME.tmp.` and 64 random bits, in
/// the target's directory, created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a file or symlink
/// already there under that name (a leftover, or one planted by someone who guessed it) is
/// neither followed nor overwritten: another name is drawn. The leading dot keeps directory
/// readers such as dnsmasq's `addn-hosts` and `hostsdir`, which skip dotfiles, off it.
#[derive(Debug)]
pub struct NewFile {
    file: std::fs::File,
    tmp: std::path::PathBuf,
    target: std::path::PathBuf,
    committed: std::cell::Cell<bool>,
}

/// Names drawn for a temporary file before giving up (each taken one costs a draw).
pub const TEMP_TRIES: usize = 8;

impl NewFile {
    /// Creates the temporary file, read-write, with exactly `mode` (not narrowed by the umask).
    pub fn create(target: &Path, mode: u32) -> std::io::Result<NewFile> {
        let names = (0..TEMP_TRIES).map(|_| temp_name(target));
        NewFile::create_named(target, mode, names)
    }

    /// [`NewFile::create`] with the temporary names to try, in order.
    fn create_named(
        target: &Path,
        mode: u32,
        names: impl Iterator<Item = std::io::Result<std::path::PathBuf>>,
    ) -> std::io::Result<NewFile> {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let mut last = std::io::Error::from_raw_os_error(libc::EEXIST);
        for tmp in names {
            let tmp = tmp?;
            match open(&tmp, flags, mode) {
                Ok(file) => {
                    let new = NewFile {
                        file,
                        tmp,
                        target: target.to_owned(),
                        committed: std::cell::Cell::new(false),
                    };
                    // The umask may have narrowed the mode; `new` removes the file on error.
                    nix::sys::stat::fchmod(
                        new.file.as_raw_fd(),
                        nix::sys::stat::Mode::from_bits_truncate(mode),
                    )?;
                    return Ok(new);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// The temporary file, to write or map.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Flushes the file to disk, renames it over the target, and flushes the directory, so the
    /// rename itself survives a crash. On error the temporary file is removed (on drop) and the
    /// target is left as it was, unless only the directory's flush failed.
    pub fn commit(&self) -> std::io::Result<()> {
        self.file.sync_all()?;
        rename(&self.tmp, &self.target)?;
        self.committed.set(true);
        open(dir_of(&self.target), libc::O_RDONLY | libc::O_DIRECTORY, 0)?.sync_all()
    }
}

impl NewFile {
    /// Renames the file over the target without flushing it or the directory: for files that
    /// only describe the running agent (the cluster's state for `status`, rewritten every
    /// second), which no crash can make wrong and which must not cost a disk flush each time.
    pub fn rename_in(&self) -> std::io::Result<()> {
        rename(&self.tmp, &self.target)?;
        self.committed.set(true);
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed.get() {
            let _ = unlink(&self.tmp);
        }
    }
}

/// A fresh temporary name beside `target`: `DIR/.NAME.tmp.` and 16 random hex digits.
pub fn temp_name(target: &Path) -> std::io::Result<std::path::PathBuf> {
    let mut r = [0u8; 8];
    super::random(&mut r)?;
    let name = target.as_os_str().as_bytes();
    let name = &name[name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1)..];
    let mut tmp = dir_of(target).as_os_str().as_bytes().to_vec();
    tmp.extend_from_slice(b"/.");
    tmp.extend_from_slice(name);
    tmp.extend_from_slice(format!(".tmp.{:016x}", u64::from_ne_bytes(r)).as_bytes());
    Ok(std::path::PathBuf::from(OsStr::from_bytes(&tmp)))
}

/// Replaces `target` with `bytes` in one step ([`NewFile`]), with mode `mode`.
pub fn write_atomically(target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let new = NewFile::create(target, mode)?;
    write_all(std::os::fd::AsFd::as_fd(new.file()), bytes)?;
    new.commit()
}

/// A path as the agent's messages show it. The agent's paths all come from its UTF-8 config and
/// command line, so this is the text itself: `Path::display`'s lossy decoding would be code on the
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
/// by component (more code on the router build): for the agent a path spelled differently in the
/// config is a changed setting.
pub fn same_path(a: Option<&Path>, b: Option<&Path>) -> bool {
    a.map(Path::as_os_str) == b.map(Path::as_os_str)
}

/// The directory `path` names a file in: everything before its last `/` ("/run/lbfo/table" →
/// "/run/lbfo", "/table" → "/", "table" → "."). Byte-wise, for paths as the config gives them
/// (a file's, no trailing `/`): std's `Path::parent` and `create_dir_all` bring its component
/// parser, much more code on the router build.
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
    if stat(dir).is_ok_and(|s| s.is_dir()) {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::ENOTDIR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::io_text;

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
    fn rename_noreplace_never_replaces() {
        let dir = std::env::temp_dir().join(format!("lbfo-noreplace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let e = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read(&b).unwrap(), b"b");
        std::fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"a");
        assert!(!a.exists());
        std::fs::remove_dir_all(&dir).unwrap();
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
    fn dir_names_lists_what_read_dir_lists_over_many_reads() {
        let top = std::env::temp_dir().join(format!("lbfo-dir-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        mkdir(&top, 0o700).unwrap();
        // 300 entries of ~60 bytes each: several 4 KiB reads.
        for i in 0..300 {
            std::fs::write(top.join(format!("{i:03}-{}", "n".repeat(i % 40))), b"").unwrap();
        }
        mkdir(&top.join("sub"), 0o700).unwrap();
        let mut want: Vec<Vec<u8>> = std::fs::read_dir(&top)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .chain([b".".to_vec(), b"..".to_vec()])
            .collect();
        let dir = open(&top, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
        let mut got = Vec::new();
        dir_names(std::os::fd::AsFd::as_fd(&dir), |n| got.push(n.to_vec())).unwrap();
        want.sort();
        got.sort();
        assert_eq!(got.len(), 303);
        assert_eq!(got, want);
        let file = open(&top.join("sub/../000-"), libc::O_RDONLY, 0).unwrap();
        let err = dir_names(std::os::fd::AsFd::as_fd(&file), |_| {}).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn stat_and_fstat_agree_with_std() {
        use std::os::unix::fs::MetadataExt;
        let top = std::env::temp_dir().join(format!("lbfo-stat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        mkdir(&top, 0o700).unwrap();
        let (file, fifo, link) = (top.join("f"), top.join("p"), top.join("l"));
        std::fs::write(&file, b"twelve bytes").unwrap();
        chmod(&file, 0o640).unwrap();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let like_std = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            FileStat {
                mode: m.mode(),
                uid: m.uid(),
                size: m.len(),
                mtime_ms: ms_of(m.mtime(), m.mtime_nsec()),
            }
        };
        for p in [&top, &file, &fifo, &link] {
            assert_eq!(stat(p).unwrap(), like_std(p), "{}", p.shown());
        }
        let f = open(&link, libc::O_RDONLY, 0).unwrap();
        assert_eq!(
            fstat(std::os::fd::AsFd::as_fd(&f)).unwrap(),
            like_std(&file)
        );
        let s = stat(&file).unwrap();
        assert!(s.is_file() && !s.is_dir() && !s.is_fifo());
        assert_eq!((s.size, s.mode & 0o7777), (12, 0o640));
        assert!(stat(&top).unwrap().is_dir());
        assert!(stat(&fifo).unwrap().is_fifo());
        assert_eq!(
            stat(&top.join("missing")).unwrap_err().raw_os_error(),
            Some(libc::ENOENT)
        );
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn path_calls_do_what_their_system_calls_do_and_report_errno() {
        let top = std::env::temp_dir().join(format!("lbfo-path-calls-{}", std::process::id()));
        mkdir(&top, 0o700).unwrap();
        assert!(stat(&top).unwrap().is_dir());
        assert_eq!(
            mkdir(&top, 0o700).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        chmod(&top, 0o750).unwrap();
        assert_eq!(stat(&top).unwrap().mode & 0o777, 0o750);
        let (a, b) = (top.join("a"), top.join("b"));
        std::fs::write(&a, b"x").unwrap();
        assert!(stat(&a).unwrap().is_file());
        rename(&a, &b).unwrap();
        assert_eq!(stat(&a).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
        unlink(&b).unwrap();
        assert_eq!(unlink(&b).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        let nul = Path::new(OsStr::from_bytes(b"/tmp/a\0b"));
        assert_eq!(unlink(nul).unwrap_err().raw_os_error(), Some(libc::EINVAL));
        std::fs::remove_dir(&top).unwrap();
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lbfo-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        mkdir(&dir, 0o700).unwrap();
        dir
    }

    #[test]
    fn write_atomically_replaces_the_target_whole_with_the_exact_mode_and_leaves_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("atomic");
        let target = dir.join("hosts");
        std::fs::write(&target, b"old").unwrap();
        // 0666 is more than the usual umask lets through: the mode is set, not masked.
        write_atomically(&target, b"new contents", 0o666).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["hosts"], "no temporary file left");
        // Not committed: the target is untouched and the temporary goes.
        let new = NewFile::create(&target, 0o600).unwrap();
        let tmp = new.tmp.clone();
        assert!(
            tmp.file_name()
                .unwrap()
                .as_bytes()
                .starts_with(b".hosts.tmp."),
            "{tmp:?}"
        );
        assert_eq!(dir_of(&tmp), dir.as_path());
        drop(new);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"new contents");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_or_symlink_at_a_guessed_temporary_name_is_neither_followed_nor_overwritten() {
        let dir = scratch("atomic-planted");
        let (target, victim) = (dir.join("state"), dir.join("victim"));
        std::fs::write(&victim, b"victim").unwrap();
        let (link, file, free) = (
            dir.join(".state.tmp.1"),
            dir.join(".state.tmp.2"),
            dir.join(".state.tmp.3"),
        );
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        std::fs::write(&file, b"planted").unwrap();
        let names = [link.clone(), file.clone(), free.clone()]
            .map(Ok)
            .into_iter();
        let new = NewFile::create_named(&target, 0o600, names).unwrap();
        assert_eq!(new.tmp, free, "the taken names were skipped");
        write_all(std::os::fd::AsFd::as_fd(new.file()), b"state").unwrap();
        new.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"state");
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            b"victim",
            "the link was not followed"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            b"planted",
            "the file was not overwritten"
        );
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // Every name taken: EEXIST, nothing touched.
        let names = [link.clone(), file.clone()].map(Ok).into_iter();
        let e = NewFile::create_named(&target, 0o600, names).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(std::fs::read(&target).unwrap(), b"state");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
