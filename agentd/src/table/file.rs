//! The table file and its counters segment: reuse after a restart, or create and swap in.
//!
//! **Reuse**: a file at the path that is ours (owned by this uid, not writable by others), of the
//! config's capacity and this build's layout, is taken over in place, so its generation, its
//! counters and every reader's mapping stay valid across agent restarts. Its counters segment is
//! kept if it is ours and matches; otherwise a fresh one is made for the same generation and
//! published.
//!
//! **Create**: a new table of the config's capacity is built completely in a temporary file
//! beside the path (mode 0644, `sys::fs::NewFile`; its bytes allocated on the filesystem, so a
//! full one is an error at start, never a SIGBUS at a later store) with a random generation and
//! a new counters segment (mode 0666: every process counts its lookups), then renamed over the
//! path in one step. An lbfo table that was there before is then marked retired,
//! so readers map the path again, and its counters segment is marked for removal (it goes away
//! when the last reader detaches).
//!
//! **No segment left behind**: counters are not removed on exit while the table stays at its
//! path (lookups keep counting while the agent is down), but a segment whose table is gone is:
//! the one a replaced table named (above, and [`Shm::retire`] when a reload moves to a table of
//! another capacity, [`make`]), the agent's own when it exits and its table is no longer at the
//! path ([`Shm::leave`]), and the one the lock file notes when the next agent finds the table
//! deleted ([`open`]).
//!
//! One agent per table: `<path>.lock` is held with `flock` for the agent's lifetime ([`Lock`]);
//! it also notes the table's counters segment (`counters ID GENERATION`), the only place besides
//! the table that names it.

use crate::sys::fs::Shown;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use lbfo_core::shm::{counters_of_any, is_counters_of, retire_any, Layout, NO_COUNTERS};
use lbfo_core::{Capacity, CountersView, Writer};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::agent::Shm;
use crate::sys::fs::NewFile;
use crate::sys::shm::{Segment, TableMap, TableMapRo};
use lbfo_core::atomic::AtomicU64;

/// Bytes in a table of `capacity`.
pub fn table_bytes(capacity: Capacity) -> u64 {
    Layout::new(capacity).total_words() as u64 * 8
}

/// Why the table could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// A system call failed: what was being done, and the error.
    Os(&'static str, Errno),
    /// Another agent holds the table's lock file.
    Locked,
    /// The fresh table did not accept its header (cannot happen with a file of the right size).
    Init,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Os(what, e) => write!(f, "{what}: {}", crate::sys::errno_text(*e as i32)),
            SetupError::Locked => {
                f.write_str("another lbfo-agentd is running on this table (its .lock file is held)")
            }
            SetupError::Init => f.write_str("could not format the new table"),
        }
    }
}

fn os(what: &'static str) -> impl Fn(io::Error) -> SetupError {
    move |e| {
        SetupError::Os(
            what,
            e.raw_os_error()
                .map_or(Errno::UnknownErrno, Errno::from_raw),
        )
    }
}

/// A mapped table and its counters segment, as the agent writes them (through [`Shm`]).
#[derive(Debug)]
pub struct Shared {
    /// The table file's mapping.
    pub map: TableMap,
    /// The counters segment, attached read-write.
    pub counters: Segment,
    /// Whether the table was taken over from a previous agent.
    pub adopted: bool,
    /// The table's layout, as made or checked.
    layout: Layout,
    /// The table's generation.
    generation: u64,
    /// Where the table is (or goes).
    path: PathBuf,
    /// A new table not yet renamed into place.
    swap: Option<Swap>,
}

/// A new table waiting in its temporary file, and the one it replaces at the path, if any.
#[derive(Debug)]
struct Swap {
    new: NewFile,
    old: Option<TableMap>,
}

impl Shm for Shared {
    fn table(&self) -> &[AtomicU64] {
        self.map.words()
    }

    fn counters(&self) -> &[AtomicU64] {
        self.counters.words()
    }

    fn layout(&self) -> Layout {
        self.layout
    }

    /// Renames a new table into place (after the agent filled it, so no reader ever finds it
    /// empty), retires the one it replaces and notes its segment beside it. Nothing to do for an
    /// adopted table.
    fn commit(&mut self, log: &mut Vec<String>) -> Result<(), String> {
        let Some(swap) = self.swap.take() else {
            return Ok(());
        };
        if let Err(e) = swap.new.commit() {
            let _ = Segment::remove(self.counters.id());
            return Err(os("rename the new table into place")(e).to_string());
        }
        let shown = self.path.shown();
        log.push(format!(
            "table {shown}: created (generation {:016x}, mode 0644)",
            self.generation
        ));
        log.push(format!(
            "counters: created shm segment {} (mode 0666)",
            self.counters.id()
        ));
        if let Some(old) = &swap.old {
            retire(old, &self.path, log);
        }
        note_counters(&self.path, self.counters.id(), self.generation);
        Ok(())
    }

    fn retire(&self, log: &mut Vec<String>) {
        retire(&self.map, &self.path, log);
    }

    fn leave(&self, log: &mut Vec<String>) {
        let here = crate::sys::fs::open(&self.path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            .ok()
            .and_then(|f| TableMapRo::map(&f).ok())
            .and_then(|m| counters_of_any(m.words()));
        let id = u64::try_from(self.counters.id()).unwrap_or(NO_COUNTERS);
        if here == Some((id, self.generation)) {
            return;
        }
        let whose = format!("this table's ({} is no longer it)", self.path.shown());
        remove_counters(id, self.generation, &whose, log);
    }
}

/// Creates the table's directory if missing and takes the table's lock, before anything else is
/// touched, so a second agent stops here.
pub fn prepare(path: &Path, log: &mut Vec<String>) -> Result<Lock, SetupError> {
    let shown = path.shown();
    let dir = crate::sys::fs::dir_of(path);
    let found = crate::sys::fs::stat(dir).map(|s| s.mode);
    if found.is_err() {
        crate::sys::fs::create_dirs(dir, 0o755).map_err(os("create the table's directory"))?;
        // The umask may have narrowed it; readers in every process must reach the table.
        crate::sys::fs::chmod(dir, 0o755).map_err(os("chmod the table's directory"))?;
        log.push(format!(
            "table {shown}: created directory {} (mode 0755)",
            dir.shown()
        ));
    } else if let Ok(mode) = found {
        if mode & 0o001 == 0 {
            log.push(format!(
                "table {shown}: warning: {} is not searchable by other users, whose lookups will fall through",
                dir.shown()
            ));
        }
        if mode & 0o022 != 0 {
            log.push(format!(
                "table {shown}: warning: {} is writable by other users, who could replace the table",
                dir.shown()
            ));
        }
    }
    lock(path).map(|held| Lock { _held: held })
}

/// Held for the agent's lifetime: one agent per table (the lock goes when this is dropped).
#[derive(Debug)]
pub struct Lock {
    _held: Flock<File>,
}

/// Reuses or creates the table of `capacity` at `path` (whose lock this agent holds), pushing
/// what it did to `log`. A counters segment the lock file notes that no table at the path names
/// any more (the table was deleted while no agent ran) is marked for removal.
pub fn open(
    path: &Path,
    capacity: Capacity,
    _held: &Lock,
    log: &mut Vec<String>,
) -> Result<Shared, SetupError> {
    let noted = noted_counters(path);
    let named = crate::sys::fs::open(path, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
        .ok()
        .and_then(|f| TableMapRo::map(&f).ok())
        .and_then(|m| counters_of_any(m.words()));
    if let Some((id, generation)) = noted.filter(|&n| Some(n) != named) {
        remove_counters(id, generation, "a deleted table's", log);
    }
    let shown = path.shown();
    let mut old = None;
    match crate::sys::fs::open(path, libc::O_RDWR | libc::O_NOFOLLOW, 0) {
        Ok(file) => match reusable(&file, capacity) {
            Ok(map) => return adopt(map, path, log),
            Err(reason) => {
                log.push(format!(
                    "table {shown}: cannot reuse the existing file ({reason}); replacing it"
                ));
                old = crate::sys::fs::fstat(file.as_fd())
                    .ok()
                    .filter(|m| m.is_file() && m.size >= 8)
                    .and_then(|_| TableMap::map(&file).ok());
            }
        },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        // ELOOP: a symlink; rename replaces the link itself.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            log.push(format!("table {shown}: replacing a symlink"));
        }
        Err(e) => return Err(os("open the existing table")(e)),
    }
    create(path, capacity, old)
}

/// Makes a new table of `capacity` for `path`, in a temporary file beside it until
/// [`Shm::commit`] renames it into place: the table a reload with another capacity moves to.
pub fn make(path: &Path, capacity: Capacity) -> Result<Shared, SetupError> {
    create(path, capacity, None)
}

/// The lock file of the table at `path`, which also notes the table's counters segment.
fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Notes in the lock file which counters segment the table at `path` names (`counters ID
/// GENERATION`), so the next agent can remove it if the table is deleted while no agent runs:
/// the segment's id is otherwise only in the table. Best effort: without it only that case
/// leaves a segment behind.
fn note_counters(path: &Path, id: i32, generation: u64) {
    let flags = libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW;
    if let Ok(f) = crate::sys::fs::open(&lock_path(path), flags, 0) {
        let line = format!("counters {id} {generation}\n");
        let _ = crate::sys::fs::write_all(f.as_fd(), line.as_bytes());
    }
}

/// What [`note_counters`] noted: `(segment id, generation)`.
fn noted_counters(path: &Path) -> Option<(u64, u64)> {
    let text = crate::sys::fs::read_file(&lock_path(path)).ok()?;
    let text = std::str::from_utf8(&text).ok()?;
    let mut w = text.strip_prefix("counters ")?.split_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

fn lock(path: &Path) -> Result<Flock<File>, SetupError> {
    let f = crate::sys::fs::open(
        &lock_path(path),
        libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW,
        0o600,
    )
    .map_err(os("open the table's lock file"))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => SetupError::Locked,
        e => SetupError::Os("lock the table", e),
    })
}

/// Maps `file` if it is a table of `capacity` this agent may take over; otherwise says why not.
fn reusable(file: &File, capacity: Capacity) -> Result<TableMap, String> {
    let m = crate::sys::fs::fstat(file.as_fd()).map_err(|e| crate::sys::io_text(&e))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.uid != me {
        return Err(format!("owned by uid {}", m.uid));
    }
    if m.mode & 0o022 != 0 {
        return Err(format!("mode {:o} lets others write it", m.mode & 0o7777));
    }
    let map = TableMap::map(file).map_err(|e| crate::sys::io_text(&e))?;
    let found = Writer::attach(map.words())
        .map_err(|e| e.to_string())?
        .capacity();
    if found != capacity {
        return Err(format!("capacity {found}; the config's is {capacity}"));
    }
    let bytes = table_bytes(capacity);
    if m.size != bytes {
        return Err(format!("{} bytes, expected {bytes}", m.size));
    }
    Ok(map)
}

fn adopt(map: TableMap, path: &Path, log: &mut Vec<String>) -> Result<Shared, SetupError> {
    let writer = Writer::attach(map.words()).map_err(|_| SetupError::Init)?;
    let view = writer.view();
    let generation = view.generation();
    log.push(format!(
        "table {}: reusing it (generation {generation:016x})",
        path.shown()
    ));
    let id = view.counters_id();
    let kept = i32::try_from(id)
        .ok()
        .filter(|_| id != NO_COUNTERS)
        .and_then(|id| {
            let seg = Segment::attach(id, false).ok()?;
            let info = Segment::stat(id).ok()?;
            let me = nix::unistd::geteuid().as_raw();
            // Ours, so nobody else can remove or re-permission it; 0666, so every process counts.
            let sound = info.uid == me && info.cuid == me && info.mode == 0o666;
            (sound && CountersView::new_checked(seg.words(), &view).is_some()).then_some(seg)
        });
    let counters = match kept {
        Some(seg) => {
            log.push(format!("counters: reusing shm segment {}", seg.id()));
            seg
        }
        None => {
            let seg = new_counters(generation, view.layout())?;
            writer.set_counters_id(seg.id() as u64);
            log.push(format!(
                "counters: segment {id} unusable; created shm segment {} (mode 0666)",
                seg.id()
            ));
            seg
        }
    };
    note_counters(path, counters.id(), generation);
    let layout = view.layout();
    Ok(Shared {
        map,
        counters,
        adopted: true,
        layout,
        generation,
        path: path.to_owned(),
        swap: None,
    })
}

fn new_counters(generation: u64, layout: Layout) -> Result<Segment, SetupError> {
    let seg = Segment::create(layout.counters_words())
        .map_err(os("create the counters segment (shmget)"))?;
    CountersView::init(seg.words(), generation, layout);
    Ok(seg)
}

fn create(path: &Path, capacity: Capacity, old: Option<TableMap>) -> Result<Shared, SetupError> {
    let (new, map, counters, generation) = build(path, capacity)?;
    Ok(Shared {
        map,
        counters,
        adopted: false,
        layout: Layout::new(capacity),
        generation,
        path: path.to_owned(),
        swap: Some(Swap { new, old }),
    })
}

/// Makes a complete table of `capacity` with its counters in a temporary file beside `path`.
fn build(path: &Path, capacity: Capacity) -> Result<(NewFile, TableMap, Segment, u64), SetupError> {
    // 0644: every process must be able to read the table.
    let new = NewFile::create(path, 0o644).map_err(os("create the new table"))?;
    crate::sys::fs::allocate(new.file(), table_bytes(capacity))
        .map_err(os("allocate the new table on its filesystem"))?;
    let map = TableMap::map(new.file()).map_err(os("map the new table"))?;
    let generation = random_generation().map_err(os("getrandom"))?;
    let writer = Writer::init(map.words(), generation, capacity).ok_or(SetupError::Init)?;
    let counters = new_counters(generation, writer.layout())?;
    writer.set_counters_id(counters.id() as u64);
    Ok((new, map, counters, generation))
}

/// Marks a replaced table retired and its counters segment for removal.
fn retire(old: &TableMap, path: &Path, log: &mut Vec<String>) {
    let named = counters_of_any(old.words());
    if !retire_any(old.words()) {
        return;
    }
    log.push(format!(
        "table {}: retired the previous table; readers map the new one",
        path.shown()
    ));
    if let Some((id, generation)) = named {
        remove_counters(id, generation, "the previous table's", log);
    }
}

/// Marks segment `id` for removal if it is provably the counters of a table of `generation` (of
/// whatever layout version) and ours: a segment only that table named, which nothing else will
/// find again. `whose` says whose it was, for the log.
fn remove_counters(id: u64, generation: u64, whose: &str, log: &mut Vec<String>) {
    let Ok(id) = i32::try_from(id) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    let ours = Segment::stat(id).is_ok_and(|i| i.uid == me && i.cuid == me);
    let matches = Segment::attach(id, true).is_ok_and(|s| is_counters_of(s.words(), generation));
    if ours && matches && Segment::remove(id).is_ok() {
        log.push(format!("counters: marked {whose} segment {id} for removal"));
    }
}

/// A random nonzero generation number.
fn random_generation() -> io::Result<u64> {
    loop {
        let mut b = [0u8; 8];
        crate::sys::random(&mut b)?;
        let g = u64::from_ne_bytes(b);
        if g != 0 {
            return Ok(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbfo_core::TableView;
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::Ordering;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("lbfo-agentd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }

    /// A table of the default capacity at `path`, in place, with its lock.
    fn open(path: &Path, log: &mut Vec<String>) -> Result<(Shared, Lock), SetupError> {
        let lock = prepare(path, log)?;
        let mut s = super::open(path, Capacity::DEFAULT, &lock, log)?;
        s.commit(log).map_err(|_| SetupError::Init)?;
        Ok((s, lock))
    }

    fn view(s: &Shared) -> TableView<'_> {
        TableView::new_checked(s.map.words()).unwrap()
    }

    fn counters(s: &Shared) -> Option<CountersView<'_>> {
        CountersView::new_checked(s.counters.words(), &view(s))
    }

    fn cleanup(s: &Shared) {
        let _ = Segment::remove(s.counters.id());
    }

    #[test]
    fn create_then_reuse_then_replace() {
        let d = dir("tablefile");
        let path = d.0.join("sub/table");
        let mut log = Vec::new();
        let (s, lock) = open(&path, &mut log).unwrap();
        assert!(!s.adopted);
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (m.len(), m.mode() & 0o777),
            (table_bytes(Capacity::DEFAULT), 0o644)
        );
        assert_eq!(
            std::fs::metadata(d.0.join("sub")).unwrap().mode() & 0o777,
            0o755
        );
        let gen = view(&s).generation();
        let id = s.counters.id();
        assert!(counters(&s).is_some());
        assert_eq!(open(&path, &mut log).unwrap_err(), SetupError::Locked);
        counters(&s).unwrap().bump(3, 1);
        drop((s, lock));

        let mut log = Vec::new();
        let (s, lock) = open(&path, &mut log).unwrap();
        assert!(s.adopted, "{log:?}");
        assert_eq!((view(&s).generation(), s.counters.id()), (gen, id));
        assert_eq!(counters(&s).unwrap().count(3, 1), 1, "counters survive");
        drop((s, lock));

        // A segment that is gone is replaced, for the same generation.
        Segment::remove(id).unwrap();
        let (s, lock) = open(&path, &mut log).unwrap();
        assert!(s.adopted && s.counters.id() != id);
        assert_eq!(view(&s).counters_id(), s.counters.id() as u64);
        let (id, old) = (s.counters.id(), File::open(&path).unwrap());
        drop((s, lock));

        // A table others may write is not reused: a new one replaces it, the old one is retired.
        std::fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        let old_map = crate::sys::shm::TableMapRo::map(&old).unwrap();
        let mut log = Vec::new();
        let (s, _lock) = open(&path, &mut log).unwrap();
        assert!(!s.adopted);
        assert!(TableView::new_checked(old_map.words()).unwrap().retired());
        assert_ne!(view(&s).generation(), gen);
        assert!(
            log.iter()
                .any(|l| l.contains("mode 666 lets others write it")),
            "{log:?}"
        );
        assert!(
            log.iter().any(|l| l.contains(&format!(
                "marked the previous table's segment {id} for removal"
            ))),
            "{log:?}"
        );
        assert!(old_map.words()[0].load(Ordering::Relaxed) != 0);
        cleanup(&s);
    }

    #[test]
    fn garbage_is_replaced() {
        let d = dir("garbage");
        std::fs::create_dir_all(&d.0).unwrap();
        let path = d.0.join("table");
        std::fs::write(&path, b"hello").unwrap();
        let mut log = Vec::new();
        let (s, _lock) = open(&path, &mut log).unwrap();
        assert!(!s.adopted);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            table_bytes(Capacity::DEFAULT)
        );
        assert_eq!(
            std::fs::read_dir(&d.0).unwrap().count(),
            2,
            "the table and its lock file, no temporary file"
        );
        cleanup(&s);
    }

    #[test]
    fn an_older_layouts_table_is_replaced_and_its_segment_removed() {
        let d = dir("older");
        let path = d.0.join("table");
        let mut log = Vec::new();
        let (s, lock) = open(&path, &mut log).unwrap();
        let id = s.counters.id();
        drop((s, lock));
        // As an agent of layout version 3 would have left it (version is word 1).
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..16].copy_from_slice(&3u64.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut log = Vec::new();
        let (s, _lock) = open(&path, &mut log).unwrap();
        assert!(!s.adopted && s.counters.id() != id, "{log:?}");
        assert!(
            log.iter()
                .any(|l| l
                    == &format!("counters: marked the previous table's segment {id} for removal")),
            "{log:?}"
        );
        assert!(Segment::stat(id).is_err(), "the old segment is gone");
        cleanup(&s);
    }
}
