//! A small `malloc` for the static router builds, where the C library's own allocator is a good
//! share of the binary.
//!
//! The router agent links musl statically (through zig, whose libc replaces musl's allocator with
//! a multi-threaded one of ~8 KB on MIPS). The agent is one thread with a small, steady heap: a
//! few hundred blocks, most under a kilobyte. So on musl targets this module provides the C
//! allocation functions itself, and the C library's are left out of the link (musl supports
//! replacing `malloc` this way; zig's libc exports its allocator as weak symbols). Rust's
//! allocations go through them too, by std's `System` allocator. Elsewhere (glibc hosts, tests)
//! the functions keep their own names and only the unit tests call them.
//!
//! The design, for a daemon that must run for months on a few MB:
//! - Blocks of up to 4 KiB come in nine power-of-two sizes, carved from 64 KiB arenas mapped with
//!   `mmap`; a freed block goes on its size's free list and is reused by the next request of that
//!   size. Arenas are never returned: the heap stays at its high-water mark, which for the agent
//!   is set by its table and its peers, not by time.
//! - Bigger blocks are mappings of their own, unmapped on `free`.
//! - Every block carries a two-word header just before the address handed out: its usable size,
//!   and for a mapping the distance back to the mapping's start (zero for arena blocks). So `free`
//!   needs no size, as C's does not give one.
//! - One spin lock guards the lists and the arena cursor: the agent has one thread, so it is never
//!   contended; it keeps the functions correct if a thread ever appears.
//!
//! The exported functions only call the module's private ones, never each other: under LTO the
//! compiler gives calls to `malloc`, `realloc` and the rest their C meaning (it may merge or
//! remove them), which is for callers, not for the allocator's own inside.
//!
//! Alignment: every block is aligned to two words (8 bytes on the 32-bit routers, where that is
//! `max_align_t`; 16 on 64-bit). Larger alignments, up to a page, come from a mapping.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ptr::{self, null_mut};
use std::sync::atomic::{AtomicBool, Ordering};

use libc::{c_int, c_void, size_t};

/// The header's size and every block's alignment: two words.
const ALIGN: usize = 2 * size_of::<usize>();
/// Block sizes (header included) are 1 << (MIN_SHIFT + class): 16 B to 4 KiB.
const MIN_SHIFT: u32 = 4;
const CLASSES: usize = 9;
const MAX_BLOCK: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
/// The unit in which small blocks are mapped.
const ARENA: usize = 64 * 1024;
/// Mappings are made and aligned in pages; 4 KiB is the smallest page of every target.
const PAGE: usize = 4096;

struct Heap {
    /// Per class, the most recently freed block (its first word links to the next).
    free: [*mut u8; CLASSES],
    /// The unused rest of the current arena.
    next: *mut u8,
    end: *mut u8,
}

impl Heap {
    const fn new() -> Self {
        Heap {
            free: [null_mut(); CLASSES],
            next: null_mut(),
            end: null_mut(),
        }
    }

    /// A block of `class` (its header's start), the most recently freed one if there is one, else
    /// carved from the current arena or a new one; null if no memory can be mapped.
    fn take(&mut self, class: usize) -> *mut u8 {
        let block_size = 1usize << (MIN_SHIFT as usize + class);
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: a free block's first word is the next free block of its class (`give`).
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        if (self.end as usize) - (self.next as usize) < block_size {
            // The rest of the old arena (less than this block) is left unused.
            let arena = map(ARENA);
            if arena.is_null() {
                return null_mut();
            }
            self.next = arena;
            // SAFETY: one past the end of the mapping.
            self.end = unsafe { arena.add(ARENA) };
        }
        let block = self.next;
        // SAFETY: at most `end`, checked above.
        self.next = unsafe { block.add(block_size) };
        block
    }

    /// Puts a block on its class's free list, to be the next one `take` hands out.
    ///
    /// # Safety
    /// `block` came from `take(class)` on this heap and is no longer used.
    unsafe fn give(&mut self, class: usize, block: *mut u8) {
        // SAFETY: the block is at least two words, free for the list link now.
        unsafe { block.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = block;
    }
}

struct Global {
    locked: AtomicBool,
    heap: UnsafeCell<Heap>,
}

// SAFETY: `heap` is only touched while `locked` is held (see `with_heap`).
unsafe impl Sync for Global {}

static GLOBAL: Global = Global {
    locked: AtomicBool::new(false),
    heap: UnsafeCell::new(Heap::new()),
};

fn with_heap<R>(f: impl FnOnce(&mut Heap) -> R) -> R {
    while GLOBAL.locked.swap(true, Ordering::Acquire) {
        std::hint::spin_loop();
    }
    // SAFETY: the lock is held, so this is the only reference to the heap until it is released.
    let r = f(unsafe { &mut *GLOBAL.heap.get() });
    GLOBAL.locked.store(false, Ordering::Release);
    r
}

fn set_errno(e: c_int) {
    // SAFETY: the C library's per-thread errno slot is always valid to write.
    unsafe { *errno_location() = e };
}

use libc::__errno_location as errno_location;

/// Maps `len` bytes (a multiple of the page), zeroed, or null.
fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p.cast()
    }
}

/// Writes a block's header and returns the address handed out: `block` + the header.
///
/// # Safety
/// `block` is valid for `ALIGN + cap` bytes and aligned to `ALIGN`.
unsafe fn finish(block: *mut u8, cap: usize, back: usize) -> *mut c_void {
    let words = block.cast::<usize>();
    // SAFETY: the header's two words are inside the block (the caller's promise).
    unsafe {
        words.write(cap);
        words.add(1).write(back);
        block.add(ALIGN).cast()
    }
}

/// The header of a block handed out by this module: (usable size, distance back to its mapping's
/// start or zero).
///
/// # Safety
/// `p` came from this module and was not freed.
unsafe fn header(p: *mut c_void) -> (usize, usize) {
    // SAFETY: the header is the two words just before `p` (`finish`).
    unsafe {
        let words = p.cast::<u8>().sub(ALIGN).cast::<usize>();
        (words.read(), words.add(1).read())
    }
}

/// A block of its own mapping, for `n` bytes at `align` (a power of two, at most a page).
fn alloc_mapped(n: usize, align: usize) -> *mut c_void {
    let back = align.max(ALIGN);
    let Some(len) = n.checked_add(back + PAGE - 1).map(|l| l & !(PAGE - 1)) else {
        return null_mut();
    };
    let base = map(len);
    if base.is_null() {
        return null_mut();
    }
    // SAFETY: `back` >= ALIGN and `back + n` <= `len`, so the header and the block fit in the
    // new mapping; `base + back - ALIGN` is ALIGN-aligned as `base` is a page and `back` a
    // multiple of ALIGN.
    unsafe { finish(base.add(back - ALIGN), len - back, back) }
}

fn alloc(n: usize) -> *mut c_void {
    let Some(size) = n.checked_add(ALIGN) else {
        return null_mut();
    };
    if size > MAX_BLOCK {
        return alloc_mapped(n, ALIGN);
    }
    let class = (usize::BITS - (size - 1).leading_zeros()).saturating_sub(MIN_SHIFT) as usize;
    let block_size = 1usize << (MIN_SHIFT as usize + class);
    let block = with_heap(|h| h.take(class));
    if block.is_null() {
        return null_mut();
    }
    // SAFETY: the block is `block_size` bytes, at an ALIGN-aligned offset of a page-aligned arena
    // (every block size is a multiple of ALIGN).
    unsafe { finish(block, block_size - ALIGN, 0) }
}

/// # Safety
/// `p` is null or came from this module and was not freed.
unsafe fn release(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: the caller's promise.
    let (cap, back) = unsafe { header(p) };
    if back != 0 {
        // SAFETY: a mapped block: its mapping starts `back` bytes before it and is `back + cap`
        // bytes long (`alloc_mapped`); nothing else refers to it once freed.
        unsafe { libc::munmap(p.cast::<u8>().sub(back).cast(), back + cap) };
        return;
    }
    let block_size = cap + ALIGN;
    let class = (block_size.trailing_zeros() - MIN_SHIFT) as usize;
    // SAFETY: the block's header start; its first word is free to hold the list link now.
    let block = unsafe { p.cast::<u8>().sub(ALIGN) };
    // SAFETY: as above; the block is the class's size and no longer used.
    with_heap(|h| unsafe { h.give(class, block) });
}

fn alloc_aligned(align: usize, n: usize) -> *mut c_void {
    if align <= ALIGN {
        alloc(n)
    } else if align <= PAGE {
        alloc_mapped(n, align)
    } else {
        null_mut()
    }
}

/// Like `alloc_aligned`, with errno set to ENOMEM on failure.
fn alloc_or_errno(align: usize, n: usize) -> *mut c_void {
    let p = alloc_aligned(align, n);
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p
}

/// C's `malloc`.
#[cfg_attr(target_env = "musl", export_name = "malloc")]
pub extern "C" fn lbfo_malloc(n: size_t) -> *mut c_void {
    alloc_or_errno(ALIGN, n)
}

/// C's `calloc`.
#[cfg_attr(target_env = "musl", export_name = "calloc")]
pub extern "C" fn lbfo_calloc(count: size_t, size: size_t) -> *mut c_void {
    let Some(n) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return null_mut();
    };
    let p = alloc_or_errno(ALIGN, n);
    if !p.is_null() {
        // SAFETY: the block is at least `n` bytes (a reused one holds old data).
        unsafe { ptr::write_bytes(p.cast::<u8>(), 0, n) };
    }
    p
}

/// C's `free`.
///
/// # Safety
/// As C's: `p` is null or a live block of this allocator.
#[cfg_attr(target_env = "musl", export_name = "free")]
pub unsafe extern "C" fn lbfo_free(p: *mut c_void) {
    // SAFETY: the caller's promise.
    unsafe { release(p) }
}

/// Grows `p` into a new block when it is too small for `n` bytes; never moves to shrink.
///
/// # Safety
/// `p` is null or a live block of this allocator.
unsafe fn resize(p: *mut c_void, n: usize) -> *mut c_void {
    if p.is_null() {
        return alloc_or_errno(ALIGN, n);
    }
    // SAFETY: the caller's promise.
    let (cap, _) = unsafe { header(p) };
    if n <= cap {
        return p;
    }
    let q = alloc_or_errno(ALIGN, n);
    if !q.is_null() {
        // SAFETY: both blocks are live and distinct; the old one holds `cap` (< n) bytes.
        unsafe {
            ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), cap);
            release(p);
        }
    }
    q
}

/// C's `realloc`.
///
/// # Safety
/// As C's: `p` is null or a live block of this allocator.
#[cfg_attr(target_env = "musl", export_name = "realloc")]
pub unsafe extern "C" fn lbfo_realloc(p: *mut c_void, n: size_t) -> *mut c_void {
    // SAFETY: the caller's promise.
    unsafe { resize(p, n) }
}

/// C's `reallocarray`.
///
/// # Safety
/// As `realloc`.
#[cfg_attr(target_env = "musl", export_name = "reallocarray")]
pub unsafe extern "C" fn lbfo_reallocarray(
    p: *mut c_void,
    count: size_t,
    size: size_t,
) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: the caller's promise.
        Some(n) => unsafe { resize(p, n) },
        None => {
            set_errno(libc::ENOMEM);
            null_mut()
        }
    }
}

/// C's `posix_memalign`.
///
/// # Safety
/// `out` is valid for a write.
#[cfg_attr(target_env = "musl", export_name = "posix_memalign")]
pub unsafe extern "C" fn lbfo_posix_memalign(
    out: *mut *mut c_void,
    align: size_t,
    n: size_t,
) -> c_int {
    if !align.is_power_of_two() || align % size_of::<usize>() != 0 {
        return libc::EINVAL;
    }
    let p = alloc_aligned(align, n);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller's promise.
    unsafe { out.write(p) };
    0
}

fn aligned(align: usize, n: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return null_mut();
    }
    alloc_or_errno(align, n)
}

/// C's `aligned_alloc`.
#[cfg_attr(target_env = "musl", export_name = "aligned_alloc")]
pub extern "C" fn lbfo_aligned_alloc(align: size_t, n: size_t) -> *mut c_void {
    aligned(align, n)
}

/// C's `memalign`.
#[cfg_attr(target_env = "musl", export_name = "memalign")]
pub extern "C" fn lbfo_memalign(align: size_t, n: size_t) -> *mut c_void {
    aligned(align, n)
}

/// C's `valloc`.
#[cfg_attr(target_env = "musl", export_name = "valloc")]
pub extern "C" fn lbfo_valloc(n: size_t) -> *mut c_void {
    alloc_or_errno(PAGE, n)
}

/// C's `malloc_usable_size`.
///
/// # Safety
/// `p` is null or a live block of this allocator.
#[cfg_attr(target_env = "musl", export_name = "malloc_usable_size")]
pub unsafe extern "C" fn lbfo_malloc_usable_size(p: *mut c_void) -> size_t {
    if p.is_null() {
        0
    } else {
        // SAFETY: the caller's promise.
        unsafe { header(p).0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: *mut c_void, n: usize, seed: u8) {
        // SAFETY: test blocks are live and at least `n` bytes.
        unsafe { ptr::write_bytes(p.cast::<u8>(), seed, n) };
    }

    fn holds(p: *mut c_void, n: usize, seed: u8) -> bool {
        // SAFETY: as `fill`.
        let s = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) };
        s.iter().all(|&b| b == seed)
    }

    #[test]
    fn blocks_are_aligned_sized_and_disjoint_across_every_class_and_mappings() {
        let sizes = [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1000,
            4096 - ALIGN,
            4096 - ALIGN + 1,
            5000,
            70_000,
        ];
        let mut live = Vec::new();
        for (i, &n) in sizes.iter().enumerate().cycle().take(sizes.len() * 20) {
            let p = lbfo_malloc(n);
            assert!(!p.is_null(), "malloc({n})");
            assert_eq!(p as usize % ALIGN, 0, "malloc({n}) aligned");
            // SAFETY: just allocated.
            let usable = unsafe { lbfo_malloc_usable_size(p) };
            assert!(usable >= n, "malloc({n}) usable size");
            fill(p, n, i as u8);
            live.push((p, n, i as u8));
        }
        for &(p, n, seed) in &live {
            assert!(
                holds(p, n, seed),
                "a block of {n} kept its bytes: no overlap"
            );
        }
        for (p, _, _) in live {
            // SAFETY: live, freed once.
            unsafe { lbfo_free(p) };
        }
    }

    /// On a heap of its own: the global one is the whole test process's allocator on musl, where
    /// the harness's threads may take a freed block first and keep it.
    #[test]
    fn freed_blocks_are_reused_by_their_size() {
        let mut h = Heap::new();
        let a = h.take(2);
        let b = h.take(2);
        let c = h.take(5);
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        assert_eq!(b as usize - a as usize, 64, "carved one after the other");
        // SAFETY: each came from `take` of its class on `h` and is no longer used.
        unsafe {
            h.give(2, a);
            h.give(2, b);
            h.give(5, c);
        }
        assert_eq!(h.take(2), b, "the last freed comes back first");
        assert_eq!(h.take(2), a);
        assert_eq!(h.take(5), c, "each class has its own list");
        let d = h.take(2);
        assert!(![a, b, c].contains(&d), "an empty list carves a new block");
        // A full arena maps the next one.
        let blocks: Vec<_> = (0..ARENA / MAX_BLOCK + 1)
            .map(|_| h.take(CLASSES - 1))
            .collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let distinct: std::collections::BTreeSet<_> = blocks.iter().collect();
        assert_eq!(distinct.len(), blocks.len());
    }

    #[test]
    fn calloc_zeroes_a_reused_block_and_refuses_overflow() {
        let p = lbfo_malloc(200);
        fill(p, 200, 0xAA);
        // SAFETY: live, freed once.
        unsafe { lbfo_free(p) };
        for _ in 0..8 {
            let q = lbfo_calloc(50, 4);
            assert!(holds(q, 200, 0), "calloc gives zeroes");
            // SAFETY: live, freed once.
            unsafe { lbfo_free(q) };
        }
        // black_box: the compiler may take a `calloc`/`malloc` whose result is only compared with
        // null for one that succeeded, and remove it (as it does on musl, where these are the C
        // functions).
        let p = std::hint::black_box(lbfo_calloc(usize::MAX / 2, 3));
        assert!(p.is_null(), "count * size overflows");
        let p = std::hint::black_box(lbfo_malloc(usize::MAX - 4));
        assert!(p.is_null(), "size + header overflows");
    }

    #[test]
    fn realloc_keeps_the_bytes_when_growing_through_classes_into_a_mapping() {
        let mut p = lbfo_malloc(10);
        fill(p, 10, 7);
        let mut n = 10;
        while n < 200_000 {
            let m = n * 3;
            // SAFETY: `p` is live; replaced by the result.
            p = unsafe { lbfo_realloc(p, m) };
            assert!(!p.is_null());
            assert!(holds(p, n, 7), "realloc {n} -> {m} kept the old bytes");
            fill(p, m, 7);
            n = m;
        }
        // Shrinking stays in place.
        // SAFETY: live.
        let q = unsafe { lbfo_realloc(p, 5) };
        assert_eq!(p, q);
        // SAFETY: live, freed once; realloc(NULL) is malloc.
        unsafe {
            lbfo_free(q);
            let r = lbfo_realloc(null_mut(), 33);
            assert!(!r.is_null());
            lbfo_free(r);
            lbfo_free(null_mut());
        }
    }

    #[test]
    fn aligned_requests_up_to_a_page() {
        for align in [1, 2, 8, 16, 64, 256, 4096] {
            for n in [1, 100, 10_000] {
                let p = lbfo_aligned_alloc(align, n);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "aligned_alloc({align}, {n})");
                fill(p, n, 1);
                // SAFETY: live, freed once.
                unsafe { lbfo_free(p) };
            }
        }
        let mut out = null_mut();
        // SAFETY: `out` is a valid slot.
        unsafe {
            assert_eq!(lbfo_posix_memalign(&mut out, 64, 10), 0);
            assert_eq!(out as usize % 64, 0);
            lbfo_free(out);
            assert_eq!(lbfo_posix_memalign(&mut out, 24, 10), libc::EINVAL);
            assert_eq!(lbfo_posix_memalign(&mut out, 2, 10), libc::EINVAL);
        }
        assert!(std::hint::black_box(lbfo_aligned_alloc(3, 10)).is_null());
        let p = std::hint::black_box(lbfo_aligned_alloc(1 << 20, 10));
        assert!(p.is_null(), "beyond a page: refused");
        let v = lbfo_valloc(10);
        assert_eq!(v as usize % PAGE, 0);
        // SAFETY: live, freed once.
        unsafe { lbfo_free(v) };
    }

    #[test]
    fn threads_allocating_at_once_keep_their_blocks() {
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..200usize {
                        let n = 1 + (round * 37 + t as usize * 11) % 3000;
                        let p = lbfo_malloc(n) as usize;
                        fill(p as *mut c_void, n, t);
                        std::thread::yield_now();
                        assert!(holds(p as *mut c_void, n, t));
                        // SAFETY: live, freed once.
                        unsafe { lbfo_free(p as *mut c_void) };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
