//! The shared table as this process sees it: mapped on the first lookup, cached in statics,
//! replaced when the agent retires it or the file at the path changes.
//!
//! **Steady state: no lock, no syscall, no allocation.** A lookup reads the coarse monotonic
//! clock (vDSO, not a syscall), enters the current mapping as a reader and calls
//! [`TableView::lookup_with`] on it. At most once a second one lookup `stat`s the path (to see a
//! replaced file, a removed one, or one that appeared after a failed open), and immediately when
//! the mapped table says it was retired (`TableView::retired`).
//!
//! **A mapping is never unmapped under a reader.** Mappings live in [`SLOTS`] fixed slots, each
//! with a reader count. A reader increments the count of the slot `CURRENT` names, then checks
//! `CURRENT` again (both `SeqCst`) and only then reads the slot; the refresher publishes a new slot
//! in `CURRENT` (`SeqCst`) and afterwards unmaps an old slot only when its count is 0 (`SeqCst`).
//! In the single total order of those four operations either the reader's re-check sees the new
//! `CURRENT` (and backs off without touching the old mapping) or the refresher sees the reader's
//! count (and leaves the mapping for a later refresh). When every slot is still busy the refresher
//! keeps the current mapping.
//!
//! **One refresher at a time**, by a try-lock that holds the refreshing process's pid: other
//! threads never wait, they use the current mapping. A child forked while a parent thread held it
//! sees a pid that is not its own and takes the lock over (no thread of the child can hold it).
//! Otherwise fork needs nothing: the mappings and an attached counters segment are inherited. A
//! slot that another parent thread was reading at the fork stays counted as busy in the child and
//! is never reclaimed there, which costs that child one slot, not correctness.
//!
//! **Resources**: the table is opened `O_RDONLY | O_CLOEXEC`, checked with `fstat` (regular file,
//! a whole number of words), mapped `PROT_READ`, `MAP_SHARED`, and the fd is closed at once.
//! Nothing is allocated. `errno` is saved and restored around a refresh, so a lookup that succeeds
//! leaves it as it was. The agent only replaces the table by rename and never truncates it, which
//! is what makes reading a `MAP_SHARED` mapping safe from `SIGBUS`.
//!
//! **Counters** (the SysV segment named in the table header) are attached when a table is mapped,
//! or later on a periodic check if the header names a new segment: only if the segment is at least
//! as large as the table's layout needs and is owned by the table file's owner, and then only if
//! [`CountersView::new_checked`] accepts it. Attached read-write when possible; read-only (no
//! counting) otherwise; without a segment, turns come from process-local counters so
//! `roundrobin` still rotates within the process.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_int, CStr};
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use lbfo_core::shm::{CountersView, Lookup, TableView, Turns, Want, HEADER_WORDS, NO_COUNTERS};

/// Where the agent keeps the table, unless `LBFO_TABLE` says otherwise.
const DEFAULT_PATH: &CStr = c"/run/lbfo/table";
/// The environment variable naming another table (ignored in setuid programs).
const PATH_VAR: &CStr = c"LBFO_TABLE";
/// Mappings alive at once: the current one and old ones that readers may still be inside. A
/// lookup takes microseconds and the agent replaces its table rarely, so four is plenty; when
/// all are busy the refresher keeps the current mapping and tries again a second later.
const SLOTS: usize = 4;
/// Largest table file mapped (the current layout is about 4.4 MB); anything larger is refused.
const MAX_TABLE_BYTES: u64 = 1 << 30;
/// Process-local turn counters used when no counters segment is attached, indexed by service
/// slot modulo their number, so services do not share one rotation.
const LOCAL_TURNS: usize = 64;

extern "C" {
    /// glibc's `getenv` that returns null in setuid and setgid programs (stdlib.h).
    fn secure_getenv(name: *const c_char) -> *mut c_char;
}

/// One mapping of a table file and the counters segment attached for it.
struct Slot {
    /// Start of the mapping; null when the slot is free.
    table: AtomicPtr<AtomicU64>,
    /// Length of the mapping in words.
    words: AtomicUsize,
    /// The attached counters segment; null when none. Set at most once per mapping.
    counters: AtomicPtr<AtomicU64>,
    /// Length of the counters segment in words.
    counters_words: AtomicUsize,
    /// Whether the counters segment is attached read-write.
    counters_rw: AtomicBool,
    /// The counters id last tried for this mapping, so a failed attach is retried only for a new id.
    counters_tried: AtomicU64,
    /// Device and inode of the mapped file, to notice a replaced file.
    dev: AtomicU64,
    ino: AtomicU64,
    /// Owner of the mapped file: the counters segment must have the same owner.
    uid: AtomicU32,
    /// Whether a lookup already reacted to this table being retired.
    retire_seen: AtomicBool,
    /// Lookups currently reading this slot.
    readers: AtomicUsize,
}

impl Slot {
    const fn free() -> Slot {
        Slot {
            table: AtomicPtr::new(ptr::null_mut()),
            words: AtomicUsize::new(0),
            counters: AtomicPtr::new(ptr::null_mut()),
            counters_words: AtomicUsize::new(0),
            counters_rw: AtomicBool::new(false),
            counters_tried: AtomicU64::new(NO_COUNTERS),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            uid: AtomicU32::new(0),
            retire_seen: AtomicBool::new(false),
            readers: AtomicUsize::new(0),
        }
    }
}

static SLOT: [Slot; SLOTS] = [const { Slot::free() }; SLOTS];
/// 1 + the index of the slot lookups use; 0 when there is no usable table.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The coarse monotonic second from which the next periodic check may run.
static NEXT_CHECK: AtomicU64 = AtomicU64::new(0);
/// The pid of the process one of whose threads is refreshing; 0 when none.
static REFRESHER: AtomicI32 = AtomicI32::new(0);
/// Turns when no counters segment is attached.
static LOCAL: [AtomicU64; LOCAL_TURNS] = [const { AtomicU64::new(0) }; LOCAL_TURNS];

/// Whether a lookup takes a turn and counts its answer, or only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A real answer: take a turn and count the backend returned.
    Count,
    /// Find out what the answer would be (its shape) without touching any counter: used when the
    /// caller's buffer may be too small, so that an `ERANGE` retry is not counted twice.
    Peek,
}

/// Resolves `query` against the current table; `None` when there is no usable table.
pub fn lookup(query: &[u8], want: Want, mode: Mode) -> Option<Lookup> {
    let now = coarse_seconds();
    let mut checked = false;
    loop {
        let guard = Guard::enter();
        if !checked {
            checked = true;
            let retired = guard
                .as_ref()
                .is_some_and(|g| g.view().is_none_or(|v| v.retired()));
            // React to a retired table at once, the first time a lookup sees it; later lookups
            // (for instance when the replacement cannot be read) wait for the periodic check.
            let first_retired = retired
                && guard
                    .as_ref()
                    .is_some_and(|g| !g.slot.retire_seen.swap(true, Ordering::Relaxed));
            if first_retired || claim_check(now) {
                drop(guard);
                refresh();
                continue;
            }
        }
        let guard = guard?;
        let view = guard.view()?;
        return Some(view.lookup_with(query, want, guard.turns(&view, mode)));
    }
}

/// The coarse monotonic clock in seconds: read from the vDSO, so no syscall. 0 if it fails.
fn coarse_seconds() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime has no other precondition.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc == 0 {
        u64::try_from(ts.tv_sec).unwrap_or(0)
    } else {
        0
    }
}

/// Whether this lookup should run the periodic check (at most one lookup per second wins).
fn claim_check(now: u64) -> bool {
    // Relaxed: this only elects which thread checks; the check itself is serialised by
    // `REFRESHER`, and no other memory is published through `NEXT_CHECK`.
    let next = NEXT_CHECK.load(Ordering::Relaxed);
    now >= next
        && NEXT_CHECK
            .compare_exchange(
                next,
                now.saturating_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
}

/// A lookup's stay in one slot: while it lives, the slot's mapping is not unmapped.
struct Guard {
    slot: &'static Slot,
}

impl Guard {
    /// Enters the current slot; `None` when there is none (or it kept changing).
    fn enter() -> Option<Guard> {
        for _ in 0..SLOTS {
            // SeqCst: this load, the fetch_add and the re-check below form the reader half of the
            // protocol in the module docs; they pair with the SeqCst store of `CURRENT` in
            // `publish` and the SeqCst load of `readers` in `reclaim`.
            let cur = CURRENT.load(Ordering::SeqCst);
            let slot = SLOT.get(cur.checked_sub(1)?)?;
            slot.readers.fetch_add(1, Ordering::SeqCst);
            if CURRENT.load(Ordering::SeqCst) == cur {
                return Some(Guard { slot });
            }
            // Release (within SeqCst): see `Drop`.
            slot.readers.fetch_sub(1, Ordering::SeqCst);
        }
        None
    }

    /// The mapped words of the table.
    fn words(&self) -> &[AtomicU64] {
        // Relaxed: these fields were stored before the slot was published, and `enter` saw the
        // publication with a SeqCst load of `CURRENT` (synchronising with the SeqCst store).
        let p = self.slot.table.load(Ordering::Relaxed);
        let n = self.slot.words.load(Ordering::Relaxed);
        if p.is_null() {
            return &[];
        }
        // SAFETY: `p` is the start of a live mapping of `n` words (page-aligned, so aligned for
        // AtomicU64), and it stays mapped while this guard counts as a reader of the slot
        // (module docs). The mapping is PROT_READ and only ever loaded from: core's atomic docs
        // allow plain atomic loads on read-only memory for lock-free sizes up to a pointer,
        // which u64 is on the 64-bit targets this module is built for.
        unsafe { core::slice::from_raw_parts(p, n) }
    }

    /// The checked view of the table (validated when mapped; checking again is cheap and keeps
    /// every access going through core's checked reader).
    fn view(&self) -> Option<TableView<'_>> {
        TableView::new_checked(self.words()).ok()
    }

    /// Where this lookup takes its turn and counts its answer.
    fn turns<'g>(&'g self, view: &TableView<'_>, mode: Mode) -> Turns<'g> {
        if mode == Mode::Peek {
            return Turns::Local(&[]);
        }
        // Acquire pairs with the Release store in `attach_counters`, which comes after the
        // stores of `counters_words` and `counters_rw`.
        let p = self.slot.counters.load(Ordering::Acquire);
        if p.is_null() {
            return Turns::Local(&LOCAL);
        }
        let n = self.slot.counters_words.load(Ordering::Relaxed);
        // SAFETY: `p` is the start of an attached segment of `n` words (page-aligned), attached
        // for as long as the slot's mapping, which this guard keeps alive. If it is attached
        // read-only, only loads happen through it (`Turns::ReadOnly` never counts).
        let words = unsafe { core::slice::from_raw_parts(p, n) };
        match CountersView::new_checked(words, view) {
            Some(c) if self.slot.counters_rw.load(Ordering::Relaxed) => Turns::Shared(c),
            Some(c) => Turns::ReadOnly(c, &LOCAL),
            None => Turns::Local(&LOCAL),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SeqCst (a Release): orders this lookup's reads of the mapping before `reclaim`'s SeqCst
        // load of `readers` that lets it unmap.
        self.slot.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The refresh try-lock; released on drop.
struct RefreshLock;

impl RefreshLock {
    fn take() -> Option<RefreshLock> {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        // Acquire pairs with the Release in `drop`: the next refresher sees the slots as the
        // last one left them.
        match REFRESHER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(RefreshLock),
            // Held by the parent we were forked from: no thread of this process holds it.
            Err(holder) if holder != me => REFRESHER
                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| RefreshLock),
            Err(_) => None,
        }
    }
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        REFRESHER.store(0, Ordering::Release); // pairs with the Acquire in `take`
    }
}

/// Checks the path and maps a new table if needed; does nothing if another thread is at it.
fn refresh() {
    let Some(_lock) = RefreshLock::take() else {
        return;
    };
    let saved = errno();
    refresh_locked();
    set_errno(saved);
}

fn refresh_locked() {
    reclaim();
    let path = table_path();
    // Only the lock holder stores `CURRENT`, so any ordering reads our own last store.
    let cur = CURRENT.load(Ordering::Relaxed);
    let current = cur.checked_sub(1).and_then(|i| SLOT.get(i));
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is writable for a `struct stat`.
    if unsafe { libc::stat(path, st.as_mut_ptr()) } != 0 {
        if errno() == libc::ENOENT {
            // The agent removed its table: stop answering from a table nobody maintains.
            unpublish();
        }
        return;
    }
    // SAFETY: stat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    if let Some(s) = current {
        if s.dev.load(Ordering::Relaxed) == st.st_dev && s.ino.load(Ordering::Relaxed) == st.st_ino
        {
            retry_counters(s);
            return;
        }
    }
    let m = match Mapping::open(path) {
        Opened::Table(m) => m,
        // Nothing usable is at the path any more: fall through to the next source.
        Opened::Gone => return unpublish(),
        // Out of fds or address space: keep what we have and try again later.
        Opened::Busy => return,
    };
    let free = SLOT
        .iter()
        .enumerate()
        .find(|(i, s)| i + 1 != cur && s.table.load(Ordering::Relaxed).is_null());
    let Some((i, slot)) = free else {
        m.unmap();
        return;
    };
    // The slot is not published, so no reader reads these fields until `CURRENT` names it; the
    // SeqCst store in `publish` makes them visible to readers that see it.
    slot.words.store(m.words, Ordering::Relaxed);
    slot.dev.store(m.dev, Ordering::Relaxed);
    slot.ino.store(m.ino, Ordering::Relaxed);
    slot.uid.store(m.uid, Ordering::Relaxed);
    slot.retire_seen.store(false, Ordering::Relaxed);
    slot.counters.store(ptr::null_mut(), Ordering::Relaxed);
    slot.counters_tried.store(NO_COUNTERS, Ordering::Relaxed);
    slot.table.store(m.ptr, Ordering::Relaxed);
    retry_counters(slot);
    publish(i + 1);
}

/// Makes slot index `cur - 1` (or none, for 0) the one lookups use, and unmaps what it can.
fn publish(cur: usize) {
    // SeqCst: the writer half of the protocol in the module docs (pairs with `Guard::enter`).
    CURRENT.store(cur, Ordering::SeqCst);
    reclaim();
}

fn unpublish() {
    publish(0);
}

/// Unmaps every mapping that is not current and has no reader.
fn reclaim() {
    let cur = CURRENT.load(Ordering::SeqCst);
    for (i, s) in SLOT.iter().enumerate() {
        let p = s.table.load(Ordering::Relaxed);
        // SeqCst: pairs with the reader's SeqCst fetch_add in `Guard::enter` (module docs) and,
        // as an acquire, with the Release decrement in `Guard::drop`.
        if i + 1 == cur || p.is_null() || s.readers.load(Ordering::SeqCst) != 0 {
            continue;
        }
        let c = s.counters.load(Ordering::Relaxed);
        if !c.is_null() {
            // SAFETY: `c` was returned by shmat for this slot and no reader can reach it: the
            // slot is not current and has no reader.
            unsafe { libc::shmdt(c.cast()) };
            s.counters.store(ptr::null_mut(), Ordering::Relaxed);
        }
        let bytes = s.words.load(Ordering::Relaxed).wrapping_mul(8);
        // SAFETY: `p` and `bytes` describe a mapping this module made, which no reader can reach
        // (as above); it is forgotten (null) right after.
        unsafe { libc::munmap(p.cast(), bytes) };
        s.table.store(ptr::null_mut(), Ordering::Relaxed);
    }
}

/// The table path: `$LBFO_TABLE` unless the program is setuid/setgid, else the default.
fn table_path() -> *const c_char {
    // SAFETY: PATH_VAR is NUL-terminated; secure_getenv returns null or a NUL-terminated string
    // from the environment.
    let p = unsafe { secure_getenv(PATH_VAR.as_ptr()) };
    // SAFETY: a non-null `p` points to a NUL-terminated string, so its first byte is readable.
    if p.is_null() || unsafe { *p } == 0 {
        DEFAULT_PATH.as_ptr()
    } else {
        p
    }
}

/// A fresh read-only mapping of a table file that passed `TableView::new_checked`.
struct Mapping {
    ptr: *mut AtomicU64,
    words: usize,
    dev: u64,
    ino: u64,
    uid: u32,
}

enum Opened {
    Table(Mapping),
    /// No usable table at the path.
    Gone,
    /// A resource ran out; the path may be fine.
    Busy,
}

impl Mapping {
    fn open(path: *const c_char) -> Opened {
        // SAFETY: `path` is NUL-terminated.
        let fd = unsafe { libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return match errno() {
                libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::ELOOP => Opened::Gone,
                _ => Opened::Busy,
            };
        }
        let opened = Mapping::map_fd(fd);
        // SAFETY: `fd` is ours and open; after mmap the mapping does not need it.
        unsafe { libc::close(fd) };
        opened
    }

    fn map_fd(fd: c_int) -> Opened {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is open and `st` is writable for a `struct stat`.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return Opened::Busy;
        }
        // SAFETY: fstat succeeded, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let usable = st.st_mode & libc::S_IFMT == libc::S_IFREG
            && size >= (HEADER_WORDS * 8) as u64
            && size <= MAX_TABLE_BYTES
            && size % 8 == 0;
        let (true, Ok(bytes)) = (usable, usize::try_from(size)) else {
            return Opened::Gone;
        };
        // SAFETY: maps `bytes` bytes of the open regular file read-only at an address of the
        // kernel's choosing; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Opened::Busy;
        }
        let m = Mapping {
            ptr: p.cast(),
            words: bytes / 8,
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
        };
        // SAFETY: a fresh page-aligned PROT_READ mapping of `bytes / 8` words, only loaded from
        // (see `Guard::words`), unmapped only by `unmap` below or `reclaim` after this slice is
        // gone.
        let words = unsafe { core::slice::from_raw_parts(m.ptr, m.words) };
        if TableView::new_checked(words).is_err() {
            m.unmap();
            return Opened::Gone;
        }
        Opened::Table(m)
    }

    fn unmap(self) {
        // SAFETY: `ptr` and `words` describe the mapping made in `map_fd`, never published.
        unsafe { libc::munmap(self.ptr.cast(), self.words.wrapping_mul(8)) };
    }
}

/// Attaches the counters segment the table in `slot` names, if not attached yet and not already
/// tried. `slot` is current or about to be; only the lock holder calls this.
fn retry_counters(slot: &Slot) {
    if !slot.counters.load(Ordering::Relaxed).is_null() {
        return;
    }
    let p = slot.table.load(Ordering::Relaxed);
    let n = slot.words.load(Ordering::Relaxed);
    if p.is_null() {
        return;
    }
    // SAFETY: the slot's live mapping (see `Guard::words`); only the lock holder unmaps, and it
    // is us.
    let words = unsafe { core::slice::from_raw_parts(p, n) };
    let Ok(view) = TableView::new_checked(words) else {
        return;
    };
    let id = view.counters_id();
    if id == NO_COUNTERS || id == slot.counters_tried.load(Ordering::Relaxed) {
        return;
    }
    slot.counters_tried.store(id, Ordering::Relaxed);
    if let Some((c, n, rw)) = attach_counters(id, &view, slot.uid.load(Ordering::Relaxed)) {
        slot.counters_words.store(n, Ordering::Relaxed);
        slot.counters_rw.store(rw, Ordering::Relaxed);
        // Release pairs with the Acquire in `Guard::turns`: a reader that sees the pointer sees
        // the length and mode stored above.
        slot.counters.store(c, Ordering::Release);
    }
}

/// Attaches segment `id` if it belongs to `owner`, is large enough and is the counters segment of
/// `view`. Returns the address, its length in words and whether it is writable.
fn attach_counters(
    id: u64,
    view: &TableView<'_>,
    owner: u32,
) -> Option<(*mut AtomicU64, usize, bool)> {
    let id = c_int::try_from(id).ok()?;
    let need = view.layout().counters_words().checked_mul(8)?;
    let mut ds = MaybeUninit::<libc::shmid_ds>::uninit();
    // SAFETY: `ds` is writable for a `struct shmid_ds`.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, ds.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: IPC_STAT succeeded, so it initialised `ds`.
    let ds = unsafe { ds.assume_init() };
    if ds.shm_segsz < need || ds.shm_perm.uid != owner {
        return None;
    }
    let mut rw = true;
    // SAFETY: attaches the segment at an address of the kernel's choosing; no existing memory is
    // affected.
    let mut p = unsafe { libc::shmat(id, ptr::null(), 0) };
    if p as isize == -1 {
        rw = false;
        // SAFETY: as above, read-only.
        p = unsafe { libc::shmat(id, ptr::null(), libc::SHM_RDONLY) };
        if p as isize == -1 {
            return None;
        }
    }
    let p = p.cast::<AtomicU64>();
    let n = ds.shm_segsz / 8;
    // SAFETY: a fresh page-aligned attachment of at least `n` words; if read-only it is only
    // loaded from (`Turns::ReadOnly`).
    let words = unsafe { core::slice::from_raw_parts(p, n) };
    if CountersView::new_checked(words, view).is_none() {
        // SAFETY: `p` was just attached and is not published.
        unsafe { libc::shmdt(p.cast()) };
        return None;
    }
    Some((p, n, rw))
}

fn errno() -> c_int {
    // SAFETY: glibc's per-thread errno location is always valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}
