//! The shared table as this process sees it: mapped on the first lookup, cached in statics,
//! replaced when the agent retires it or the file at the path changes.
//!
//! **Steady state: no lock, no syscall, no allocation.** A lookup reads the clock's current second
//! (`time`, from the vDSO, not a syscall), enters the current mapping as a reader and calls
//! [`TableView::lookup_into`] on the view that [`TableView::new_checked`] made when the file was
//! mapped. In every second in which lookups happen, one of them `stat`s the path (to see a
//! replaced file, a removed one, or one that appeared after a failed open): so a lookup made a
//! second or more after a change sees it. One lookup does so at once when the mapped table says
//! it was retired ([`TableView::retired`]), which is how the agent's own replacements show.
//!
//! **A mapping is never unmapped under a reader.** Mappings live in [`SLOTS`] fixed slots, each
//! with a reader count. A reader increments the count of the slot `CURRENT` names, then checks
//! `CURRENT` again (both `SeqCst`) and only then reads the slot; the refresher publishes a new slot
//! in `CURRENT` (`SeqCst`) and afterwards unmaps an old slot only when its count is 0 (`SeqCst`).
//! In the single total order of those four operations either the reader's re-check sees the new
//! `CURRENT` (and backs off without touching the old mapping) or the refresher sees the reader's
//! count (and leaves the mapping for a later refresh). The reader's decrement, when it leaves,
//! is a `Release` that the refresher's `SeqCst` load of the count acquires, so the reader's reads
//! happen before any unmap. When every slot is still busy the refresher keeps the current mapping.
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
//! [`CountersView::new_checked`] accepts it. Attached read-write when possible, else read-only
//! (nothing counted); without a segment, turns come from process-local counters so `roundrobin`
//! still rotates within the process.
#![allow(unsafe_code)]

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, CStr};
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

use lbfo_core::shm::{
    CountersView, Layout, Miss, Picks, TableView, Turns, Want, HEADER_WORDS, NO_COUNTERS,
};
use lbfo_core::Query;

/// Where the agent keeps the table, unless `LBFO_TABLE` says otherwise.
const DEFAULT_PATH: &CStr = c"/run/lbfo/table";
/// The environment variable naming another table (ignored in setuid programs).
const PATH_VAR: &CStr = c"LBFO_TABLE";
/// Mappings alive at once: the current one and old ones that lookups may still be inside. A
/// lookup takes well under a microsecond and the agent replaces its table rarely, so four is
/// plenty; when all are busy the refresher keeps the current mapping and tries again later.
pub const SLOTS: usize = 4;
/// Largest table file mapped: that of the largest capacity. A larger file is no table (the
/// checked view would refuse its header anyway) and is not mapped at all.
const MAX_TABLE_BYTES: u64 = Layout::MAX.total_words() as u64 * 8;
/// Process-local turn counters used when no counters segment is attached, indexed by service
/// slot modulo their number, so services do not share one rotation.
const LOCAL_TURNS: usize = 64;

extern "C" {
    /// glibc's `getenv` that returns null in setuid and setgid programs (stdlib.h).
    fn secure_getenv(name: *const c_char) -> *mut c_char;
}

/// One mapping of a table file and the counters segment attached for it.
///
/// The checked views are made once, when the mapping (or the segment) is attached, and kept
/// here, so a lookup validates no header. Each view cell is written only while no lookup can read
/// it (before the slot is published, or before `counters` is set, which happens at most once per
/// mapping) and is read only after that publication was seen.
struct Slot {
    /// Start of the mapping; null when the slot is free.
    table: AtomicPtr<AtomicU64>,
    /// Length of the mapping in words.
    words: AtomicUsize,
    /// The view of the mapping, made by `TableView::new_checked`; valid while `table` is non-null.
    /// The `'static` is this module's promise, not the compiler's: lookups only get copies bound
    /// to a [`Guard`].
    view: UnsafeCell<MaybeUninit<TableView<'static>>>,
    /// The attached counters segment; null when none. Set at most once per mapping.
    counters: AtomicPtr<AtomicU64>,
    /// Where lookups take turns and count: the view of the segment (made by
    /// `CountersView::new_checked`), shared if it is attached read-write, else read-only beside
    /// the process-local turns. Valid once `counters` is non-null (and lookups read it only
    /// through `turns_at`), under the same promise as `view`.
    turns: UnsafeCell<MaybeUninit<Turns<'static>>>,
    /// The turns lookups of this mapping use: `PROCESS_TURNS` until a segment is attached, then
    /// `turns`'s. Set before the slot is published and again (Release) once `turns` is written.
    turns_at: AtomicPtr<Turns<'static>>,
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
            view: UnsafeCell::new(MaybeUninit::uninit()),
            counters: AtomicPtr::new(ptr::null_mut()),
            turns: UnsafeCell::new(MaybeUninit::uninit()),
            turns_at: AtomicPtr::new(ptr::null_mut()),
            counters_tried: AtomicU64::new(NO_COUNTERS),
            dev: AtomicU64::new(0),
            ino: AtomicU64::new(0),
            uid: AtomicU32::new(0),
            retire_seen: AtomicBool::new(false),
            readers: AtomicUsize::new(0),
        }
    }
}

// SAFETY: every field but the two view cells is atomic; the cells are written and read only as
// the `Slot` docs say, so no cell is written while another thread may read it. The views inside
// are themselves `Sync` (shared slices of atomics).
unsafe impl Sync for Slot {}

static SLOT: [Slot; SLOTS] = [const { Slot::free() }; SLOTS];
/// The slot lookups use, an element of `SLOT` (a pointer, not an index, so entering it is one
/// load); null when there is no usable table.
static CURRENT: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());
/// The second (of `time`) in which the last periodic check was claimed; `u64::MAX` before the
/// first.
static CHECKED_IN: AtomicU64 = AtomicU64::new(u64::MAX);
/// The pid of the process one of whose threads is refreshing; 0 when none.
static REFRESHER: AtomicI32 = AtomicI32::new(0);
/// Turns when no counters segment is attached.
static LOCAL: [AtomicU64; LOCAL_TURNS] = [const { AtomicU64::new(0) }; LOCAL_TURNS];
/// The turns of a lookup without a counters segment.
static PROCESS_TURNS: Turns<'static> = Turns::Local(&LOCAL);
/// The turns of a lookup that only looks ([`Mode::Peek`]): always turn 0, nothing counted.
static NO_TURNS: Turns<'static> = Turns::Local(&[]);

/// Whether a lookup takes a turn and counts its answer, or only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A real answer: take a turn and count the backend returned.
    Count,
    /// Find out what the answer would be (its shape) without touching any counter: used when the
    /// caller's buffer may be too small, so that an `ERANGE` retry is not counted twice.
    Peek,
}

/// Resolves the query `text` (its one optional trailing dot already dropped, see
/// [`lbfo_core::name::strip_dot`]) against the current table, leaving the addresses picked in
/// `out`; [`Miss::NotOurs`] for a text that cannot be a service name,
/// [`Miss::Unavailable`] when there is no usable table (the NSS reply is the same as for a
/// damaged one).
///
/// The steady state, inline: the clock's second (vDSO), one compare, entering the current slot,
/// the retired flag, and [`TableView::lookup_into`] with the turns prepared when the counters
/// were attached. Anything else (the periodic check, no table, a retired one) is
/// [`enter_cold`]'s, which ends in the same slot entered.
#[inline(never)]
pub fn lookup(text: &[u8], want: Want, mode: Mode, out: &mut Picks) -> Result<(), Miss> {
    lookup_inline(text, want, mode, out)
}

/// [`lookup`], inline: for the one call site where it pays (getaddrinfo's counted lookup).
#[inline(always)]
pub fn lookup_inline(text: &[u8], want: Want, mode: Mode, out: &mut Picks) -> Result<(), Miss> {
    let check = claim_check(seconds());
    let entered = if check {
        None
    } else {
        Guard::enter().filter(|g| !g.view().retired())
    };
    let guard = match entered {
        Some(guard) => guard,
        None => enter_cold(check).ok_or(Miss::Unavailable)?,
    };
    // Hashed here rather than by the caller, so the query stays in registers, and only now, so
    // that it is not kept across the calls above.
    let query = Query::of_text(text).ok_or(Miss::NotOurs)?;
    guard
        .view()
        .lookup_into(&query, want, guard.turns(mode), out)
}

/// [`lookup`]'s way into a slot off the steady state: runs the periodic check first if `check`
/// (this lookup claimed it), waits for or makes the first mapping, and reacts to a retired
/// table. `None` when there is no usable table.
#[cold]
#[inline(never)]
fn enter_cold(check: bool) -> Option<Guard> {
    let mut refreshed = check;
    if refreshed {
        refresh();
    }
    let mut waited = false;
    loop {
        let Some(guard) = Guard::enter() else {
            // No table yet while another thread of this process maps one (the first lookups of a
            // multi-threaded program): wait for it rather than let these lookups fall through to
            // DNS. Only ever on this cold path.
            if !waited && await_first_mapping() {
                waited = true;
                continue;
            }
            return None;
        };
        // React to a retired table at once, the first time a lookup sees it; later lookups (for
        // instance while the replacement cannot be read) wait for the periodic check.
        // Relaxed: the flag only elects one lookup; `refresh` is serialised by its lock.
        if !refreshed
            && guard.view().retired()
            && !guard.slot.retire_seen.swap(true, Ordering::Relaxed)
        {
            drop(guard);
            refresh();
            refreshed = true;
            continue;
        }
        return Some(guard);
    }
}

/// The coarse monotonic clock: read from the vDSO, so no syscall. 0 if it fails.
fn coarse_clock() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime has no other precondition.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
    }
    ts
}

/// The current second of the real-time clock. glibc answers `time` from the vDSO without a
/// syscall (on x86-64 one load of a word the kernel keeps current), where
/// `clock_gettime(CLOCK_MONOTONIC_COARSE)` goes through a sequence-locked read of two words.
/// Real time may be set back or forward; [`claim_check`] only asks whether the second changed,
/// so a jump either way causes one check more, never a check fewer.
fn seconds() -> u64 {
    // SAFETY: a null argument asks only for the return value; `time` has no other precondition.
    unsafe { libc::time(ptr::null_mut()) as u64 }
}

/// The coarse monotonic clock in milliseconds.
fn coarse_millis() -> u64 {
    let ts = coarse_clock();
    let ms = u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000_000;
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .wrapping_mul(1000)
        .wrapping_add(ms)
}

/// How long a lookup waits for another thread's first mapping of the table.
const MAX_WAIT_MS: u64 = 100;

/// With no table mapped: waits, yielding, while another thread of this process refreshes (for at
/// most [`MAX_WAIT_MS`]), or refreshes itself if the lock was left by the parent this process was
/// forked from. Returns whether a mapping may now be there.
fn await_first_mapping() -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    // Acquire: see the loop below.
    match REFRESHER.load(Ordering::Acquire) {
        0 => return false,
        holder if holder != me => {
            refresh();
            return true;
        }
        _ => {}
    }
    let deadline = coarse_millis().saturating_add(MAX_WAIT_MS);
    // Acquire pairs with the Release in `RefreshLock::drop`: once the lock is seen free, what the
    // refresher published is visible (`CURRENT` itself is SeqCst).
    while REFRESHER.load(Ordering::Acquire) == me && coarse_millis() < deadline {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
    true
}

/// Whether this lookup should run the periodic check: the first lookup (of any thread) in each
/// second the clock shows wins.
///
/// Why a change is seen within a second: a check claimed in second `s` stats the path after
/// the claim. A lookup at least a second after a change reads a second later than that of any
/// claim made before the change, so unless a check claimed after the change already ran, it
/// claims one itself. A claim whose `refresh` finds another thread refreshing is dropped; that
/// refresh began before this claim, and the next second's first lookup checks again.
fn claim_check(now: u64) -> bool {
    // Relaxed: this only elects which thread checks; the check itself is serialised by
    // `REFRESHER`, and no other memory is published through `CHECKED_IN`.
    let last = CHECKED_IN.load(Ordering::Relaxed);
    now != last
        && CHECKED_IN
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
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
            // SAFETY: `CURRENT` is null or points to an element of the static `SLOT` (`publish`).
            let slot: &'static Slot = unsafe { cur.as_ref() }?;
            slot.readers.fetch_add(1, Ordering::SeqCst);
            if CURRENT.load(Ordering::SeqCst) == cur {
                return Some(Guard { slot });
            }
            // Release, as in `drop` (nothing was read from the slot yet, but the count must not
            // reach 0 before the increment above, which a single RMW order guarantees).
            slot.readers.fetch_sub(1, Ordering::Release);
        }
        None
    }

    /// The checked view of the table, made when it was mapped (borrowed, not copied: it is
    /// eight words).
    fn view(&self) -> &TableView<'_> {
        // SAFETY: `enter` saw the slot published (a SeqCst load of `CURRENT` that synchronises
        // with the SeqCst store in `publish`); the cell was initialised before that store and is
        // not written again until the slot is reclaimed, which waits for this guard. The view's
        // words stay mapped while this guard counts as a reader (module docs), so shortening
        // `'static` to the guard's lifetime makes the borrow true. The mapping is PROT_READ and
        // only loaded from: core's atomic docs allow plain atomic loads on read-only memory for
        // lock-free sizes up to a pointer, which u64 is on the 64-bit targets built for.
        unsafe { (*self.slot.view.get()).assume_init_ref() }
    }

    /// Where this lookup takes its turn and counts its answer (borrowed: prepared when the
    /// counters were attached).
    #[inline]
    fn turns(&self, mode: Mode) -> &Turns<'_> {
        if mode == Mode::Peek {
            return &NO_TURNS;
        }
        // Acquire pairs with the Release store in `retry_counters`, which follows the write of
        // `turns`.
        let at = self.slot.turns_at.load(Ordering::Acquire);
        // SAFETY: `turns_at` is set before the slot is published (seen through `enter`'s SeqCst
        // load of `CURRENT`) to `PROCESS_TURNS`, a static, and later only to the slot's `turns`
        // cell, after initialising it (seen through the Acquire above); the cell is not written
        // again until the slot is reclaimed, which waits for this guard, and the segment stays
        // attached as long as the mapping. If it is attached read-only, the cell holds
        // `Turns::ReadOnly`, through which only loads happen.
        unsafe { &*at }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Release pairs with `reclaim`'s SeqCst (so also Acquire) load of `readers`: a load that
        // reads this decrement's value (or a later one: RMWs continue the release sequence)
        // synchronises with it, so this lookup's reads of the mapping happen before the munmap.
        // The decrement takes no part in the store-load (Dekker) half of the protocol, which
        // needs only the SeqCst increment, the `CURRENT` loads and the `publish` store; so it
        // need not be SeqCst. (Same code on x86-64, a lighter barrier on weaker CPUs.)
        self.slot.readers.fetch_sub(1, Ordering::Release);
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
    let cur = CURRENT.load(Ordering::Relaxed).cast_const();
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is writable for a `struct stat`.
    if unsafe { libc::stat(path, st.as_mut_ptr()) } != 0 {
        if errno() == libc::ENOENT {
            // The agent removed its table: stop answering from a table nobody maintains.
            publish(None);
        }
        return;
    }
    // SAFETY: stat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // SAFETY: `CURRENT` is null or points to an element of the static `SLOT`.
    if let Some(s) = unsafe { cur.as_ref() } {
        if s.dev.load(Ordering::Relaxed) == st.st_dev && s.ino.load(Ordering::Relaxed) == st.st_ino
        {
            retry_counters(s);
            return;
        }
    }
    let m = match Mapping::open(path) {
        Opened::Table(m) => m,
        // Nothing usable is at the path any more: fall through to the next source.
        Opened::Gone => return publish(None),
        // Out of fds or address space: keep what we have and try again later.
        Opened::Busy => return,
    };
    let free = SLOT
        .iter()
        .find(|s| !ptr::eq(*s, cur) && s.table.load(Ordering::Relaxed).is_null());
    let Some(slot) = free else {
        m.unmap();
        return;
    };
    // The slot is free and not current, so no lookup reads these fields or the cell until
    // `publish` names it; its SeqCst store makes them visible to lookups that see it.
    // SAFETY: as just said, no lookup reads the cell now.
    unsafe { (*slot.view.get()).write(m.view) };
    slot.words.store(m.words, Ordering::Relaxed);
    slot.dev.store(m.dev, Ordering::Relaxed);
    slot.ino.store(m.ino, Ordering::Relaxed);
    slot.uid.store(m.uid, Ordering::Relaxed);
    slot.retire_seen.store(false, Ordering::Relaxed);
    slot.counters.store(ptr::null_mut(), Ordering::Relaxed);
    slot.turns_at
        .store(ptr::addr_of!(PROCESS_TURNS).cast_mut(), Ordering::Relaxed);
    slot.counters_tried.store(NO_COUNTERS, Ordering::Relaxed);
    slot.table.store(m.ptr, Ordering::Relaxed);
    retry_counters(slot);
    publish(Some(slot));
}

/// Makes `slot` (an element of `SLOT`, or none) the one lookups use, and unmaps what it can.
fn publish(slot: Option<&'static Slot>) {
    let p = slot.map_or(ptr::null_mut(), |s| ptr::from_ref(s).cast_mut());
    // SeqCst: the writer half of the protocol in the module docs (pairs with `Guard::enter`).
    CURRENT.store(p, Ordering::SeqCst);
    reclaim();
}

/// Unmaps every mapping that is not current and has no reader.
fn reclaim() {
    let cur = CURRENT.load(Ordering::SeqCst).cast_const();
    for s in &SLOT {
        let p = s.table.load(Ordering::Relaxed);
        // SeqCst: pairs with the reader's SeqCst fetch_add in `Guard::enter` (module docs) and,
        // as an acquire, with the decrement in `Guard::drop`.
        if ptr::eq(s, cur) || p.is_null() || s.readers.load(Ordering::SeqCst) != 0 {
            continue;
        }
        let c = s.counters.load(Ordering::Relaxed);
        if !c.is_null() {
            // SAFETY: `c` was returned by shmat for this slot and no lookup can reach it: the
            // slot is not current and has no reader.
            unsafe { libc::shmdt(c.cast()) };
            s.counters.store(ptr::null_mut(), Ordering::Relaxed);
        }
        let bytes = s.words.load(Ordering::Relaxed).wrapping_mul(8);
        // SAFETY: `p` and `bytes` describe a mapping this module made, which no lookup can reach
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

/// A fresh read-only mapping of a table file and its checked view; not yet published.
struct Mapping {
    ptr: *mut AtomicU64,
    words: usize,
    view: TableView<'static>,
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
        // SAFETY: `fd` is ours and open; a mapping does not need its fd.
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
        let ptr = p.cast::<AtomicU64>();
        let words = bytes / 8;
        // SAFETY: a fresh page-aligned PROT_READ mapping of `words` words, only loaded from (see
        // `Guard::view`). The `'static` is upheld by this module: the mapping is unmapped only by
        // `Mapping::unmap` (never published) or by `reclaim`, once no lookup can hold the view.
        let slice: &'static [AtomicU64] = unsafe { core::slice::from_raw_parts(ptr, words) };
        match TableView::new_checked(slice) {
            Ok(view) => Opened::Table(Mapping {
                ptr,
                words,
                view,
                dev: st.st_dev,
                ino: st.st_ino,
                uid: st.st_uid,
            }),
            Err(_) => {
                // SAFETY: the mapping just made, never published.
                unsafe { libc::munmap(p, bytes) };
                Opened::Gone
            }
        }
    }

    fn unmap(self) {
        // SAFETY: `ptr` and `words` describe the mapping made in `map_fd`, never published.
        unsafe { libc::munmap(self.ptr.cast(), self.words.wrapping_mul(8)) };
    }
}

/// Attaches the counters segment the table in `slot` names, if not attached yet and not already
/// tried. `slot` is current or about to be; only the lock holder calls this.
fn retry_counters(slot: &Slot) {
    if slot.table.load(Ordering::Relaxed).is_null()
        || !slot.counters.load(Ordering::Relaxed).is_null()
    {
        return;
    }
    // SAFETY: the slot holds a mapping, so its view was initialised when it was filled, and only
    // the lock holder (us) writes the cell or unmaps.
    let view = unsafe { (*slot.view.get()).assume_init() };
    let id = view.counters_id();
    if id == NO_COUNTERS || id == slot.counters_tried.load(Ordering::Relaxed) {
        return;
    }
    slot.counters_tried.store(id, Ordering::Relaxed);
    let Some((c, n, rw)) = attach_counters(id, &view, slot.uid.load(Ordering::Relaxed)) else {
        return;
    };
    // SAFETY: the segment just attached, `n` words, page-aligned; it stays attached until
    // `reclaim` detaches it, after the slot stopped being readable. If it is read-only it is
    // only loaded from (`Turns::ReadOnly`).
    let words: &'static [AtomicU64] = unsafe { core::slice::from_raw_parts(c, n) };
    let Some(cv) = CountersView::new_checked(words, &view) else {
        // SAFETY: `c` was just attached and is not published.
        unsafe { libc::shmdt(c.cast()) };
        return;
    };
    let turns = if rw {
        Turns::Shared(cv)
    } else {
        Turns::ReadOnly(cv, &LOCAL)
    };
    // SAFETY: `counters` is null, so no lookup reads the cell (lookups read it only after seeing
    // `counters` set, below).
    unsafe { (*slot.turns.get()).write(turns) };
    slot.counters.store(c, Ordering::Relaxed);
    // Release pairs with the Acquire in `Guard::turns`: a lookup that sees the pointer sees the
    // turns written above.
    slot.turns_at
        .store(slot.turns.get().cast::<Turns<'static>>(), Ordering::Release);
}

/// Attaches segment `id` if it belongs to `owner` and is large enough for `view`'s layout.
/// Returns the address, its length in words and whether it is writable.
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
    // SAFETY: attaches the segment at an address of the kernel's choosing; no existing memory is
    // affected.
    let p = unsafe { libc::shmat(id, ptr::null(), 0) };
    if p as isize != -1 {
        return Some((p.cast(), ds.shm_segsz / 8, true));
    }
    // SAFETY: as above, read-only.
    let p = unsafe { libc::shmat(id, ptr::null(), libc::SHM_RDONLY) };
    (p as isize != -1).then_some((p.cast(), ds.shm_segsz / 8, false))
}

fn errno() -> c_int {
    // SAFETY: glibc's per-thread errno location is always valid for the calling thread.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: c_int) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}
