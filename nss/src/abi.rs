//! The C ABI: glibc's four `gethostbyname*_r` entry points for the `lbfo` hosts service, the
//! `_nss_lbfo_init` hook glibc calls only inside its nscd, and the panic handler that proves the
//! library has no panic path.
//!
//! Each entry point turns its raw arguments into a query slice, calls one `_impl` (`hostent_impl`
//! or `tuples_impl`), which asks [`map::lookup`] and writes the answer at the offsets
//! [`crate::answer`] computed, and [`finish`] stores the status the NSS contract asks for. The
//! buffer size is checked against the exact layout before anything is written; an answer that does
//! not fit is `TRYAGAIN` / `ERANGE` / `NETDB_INTERNAL` with nothing written and nothing counted.
//! `errno` (through `errnop`) is written only on failure, never with 0.
//!
//! **Inside glibc's nscd** (and only there, [`_nss_lbfo_init`] says so) a `hostent` answer lists
//! its one address twice, so that nscd's hosts cache, which keeps only single-address answers,
//! never keeps lbfo's and every client gets a fresh pick. An ordinary process pays one test of a
//! flag for it.
//!
//! **No panic path**: in release builds the panic handler calls `lbfo_nss_panic_path_survived`,
//! which is defined nowhere, and the library is linked with `-z defs` (build.rs). If optimisation
//! leaves any path to a panic (an index, an unwrap, an overflow check, a division by zero), the
//! handler is referenced and the link fails. Debug builds keep panic paths and abort.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use lbfo_core::name::{strip_dot, MAX_NAME_LEN};
use lbfo_core::{Picks, Want};

use crate::answer::{addr_words, Failure, GaihAddrtuple, HostentLayout, TupleLayout, SUCCESS};
use crate::map::{self, Mode};

/// Whether this process is glibc's nscd, as [`_nss_lbfo_init`] says: then `hostent` answers list
/// their address twice ([`HostentLayout`]).
static IN_NSCD: AtomicBool = AtomicBool::new(false);

/// Called by glibc inside its nscd, and only there, when nscd loads the module: glibc calls a
/// module's optional `_nss_<name>_init` when the process called `__nss_disable_nscd`, which only
/// nscd does (nss/nss_module.c, since glibc 2.15), before it installs the module's lookup
/// functions. From then on `hostent` answers list their address twice, which keeps them out of
/// nscd's hosts cache ([`HostentLayout`]); `gethostbyname4_r` answers are unchanged (their TTL 0
/// already keeps them out of nscd's getaddrinfo cache). unscd never calls it: it does its lookups
/// in plain worker processes and caches whatever they return, so listing the address twice there
/// would change nothing but the answer.
///
/// The argument is nscd's callback for registering files whose changes flush its caches; its
/// structure is private to nscd, so it is not used.
#[no_mangle]
pub extern "C" fn _nss_lbfo_init(_register_file: *const c_void) {
    // Relaxed: glibc installs the lookup functions only after this returns, by a release store
    // that every lookup's acquire load of the module's state pairs with.
    IN_NSCD.store(true, Ordering::Relaxed);
}

/// `gethostbyname4_r` (getaddrinfo with `AF_UNSPEC`): one IPv6 and/or one IPv4 tuple, IPv6 first.
///
/// # Safety
/// glibc's contract: `name` is a C string; `pat` points to a tuple pointer that is null or points
/// to a writable tuple; `buffer` is writable for `buflen` bytes; `errnop`, `h_errnop` and (when
/// not null) `ttlp` are writable.
#[no_mangle]
pub unsafe extern "C" fn _nss_lbfo_gethostbyname4_r(
    name: *const c_char,
    pat: *mut *mut GaihAddrtuple,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let result = tuples_impl(query(name), pat, buffer.cast(), buflen);
        finish(result, errnop, h_errnop, ttlp)
    }
}

/// `gethostbyname3_r`: like `gethostbyname2_r`, with a TTL and the canonical name.
///
/// # Safety
/// glibc's contract: `name` is a C string; `host` is writable; `buffer` is writable for `buflen`
/// bytes; `errnop` and `h_errnop` are writable; `ttlp` and `canonp` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn _nss_lbfo_gethostbyname3_r(
    name: *const c_char,
    af: c_int,
    host: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
    canonp: *mut *mut c_char,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let result = hostent(query(name), af, host, buffer.cast(), buflen, canonp);
        finish(result, errnop, h_errnop, ttlp)
    }
}

/// `gethostbyname2_r`: one address of family `af` in a `hostent`.
///
/// # Safety
/// As [`_nss_lbfo_gethostbyname3_r`] without `ttlp` and `canonp`.
#[no_mangle]
pub unsafe extern "C" fn _nss_lbfo_gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    host: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let result = hostent(
            query(name),
            af,
            host,
            buffer.cast(),
            buflen,
            ptr::null_mut(),
        );
        finish(result, errnop, h_errnop, ptr::null_mut())
    }
}

/// `gethostbyname_r`: one IPv4 address in a `hostent`.
///
/// # Safety
/// As [`_nss_lbfo_gethostbyname2_r`].
#[no_mangle]
pub unsafe extern "C" fn _nss_lbfo_gethostbyname_r(
    name: *const c_char,
    host: *mut libc::hostent,
    buffer: *mut c_char,
    buflen: usize,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let result = hostent(
            query(name),
            libc::AF_INET,
            host,
            buffer.cast(),
            buflen,
            ptr::null_mut(),
        );
        finish(result, errnop, h_errnop, ptr::null_mut())
    }
}

/// The query without its one optional trailing dot, if it can be a service name (not empty, at
/// most [`MAX_NAME_LEN`] bytes); else the reply for a name that is not ours.
fn service_name(q: &[u8]) -> Result<&[u8], &'static Failure> {
    let name = strip_dot(q);
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(&Failure::NOT_OURS);
    }
    Ok(name)
}

/// The C string `name` without its NUL.
///
/// `strlen`, not `strnlen` bounded at the longest name: for a short name (nearly all of them)
/// glibc's `strlen` takes fewer instructions, and a caller's string is NUL-terminated by the NSS
/// contract. A name longer than [`MAX_NAME_LEN`] (and a dot) is then not ours, as before.
///
/// # Safety
/// `name` is null or a NUL-terminated string that outlives the returned slice.
unsafe fn query<'a>(name: *const c_char) -> &'a [u8] {
    if name.is_null() {
        return &[];
    }
    // SAFETY: `name` is NUL-terminated; strlen reads no further than its NUL.
    let len = unsafe { libc::strlen(name) };
    // SAFETY: the `len` bytes just read belong to the string, which outlives the slice.
    unsafe { core::slice::from_raw_parts(name.cast::<u8>(), len) }
}

/// Stores the outcome as the NSS contract says: on success `*ttlp = 0` (which keeps a
/// `gethostbyname4_r` answer out of nscd's getaddrinfo cache; its hosts cache ignores TTLs, see
/// `_nss_lbfo_init`), `errno` untouched; otherwise `errno` and `h_errno` through the pointers.
///
/// # Safety
/// Each pointer is null or writable.
unsafe fn finish(
    result: Result<(), &'static Failure>,
    errnop: *mut c_int,
    h_errnop: *mut c_int,
    ttlp: *mut i32,
) -> c_int {
    match result {
        Ok(()) => {
            if !ttlp.is_null() {
                // SAFETY: non-null, writable by this function's contract.
                unsafe { ttlp.write(0) };
            }
            SUCCESS
        }
        Err(f) => {
            if !errnop.is_null() {
                // SAFETY: as above.
                unsafe { errnop.write(f.errno) };
            }
            if !h_errnop.is_null() {
                // SAFETY: as above.
                unsafe { h_errnop.write(f.h_errno) };
            }
            f.status
        }
    }
}

/// The shared part of `gethostbyname{,2,3}_r`: [`hostent_impl`] with the address listed once, or
/// twice inside glibc's nscd. One test of a flag on the way in: everything else an ordinary
/// process runs is as if nscd did not exist.
///
/// # Safety
/// As [`hostent_impl`].
#[inline(always)]
unsafe fn hostent(
    q: &[u8],
    af: c_int,
    host: *mut libc::hostent,
    buf: *mut u8,
    buflen: usize,
    canonp: *mut *mut c_char,
) -> Result<(), &'static Failure> {
    // Relaxed: see `_nss_lbfo_init`.
    if IN_NSCD.load(Ordering::Relaxed) {
        // SAFETY: forwarded from this function's contract.
        unsafe { hostent_impl::<2>(q, af, host, buf, buflen, canonp) }
    } else {
        // SAFETY: as above.
        unsafe { hostent_impl::<1>(q, af, host, buf, buflen, canonp) }
    }
}

/// Fills `host` with one address of family `af`, listed `COPIES` times. Out of line: the three
/// entry points share each of its two forms.
///
/// # Safety
/// `q` does not overlap the first `buflen` bytes of `buf`, unless it is a C string in it (the
/// name is copied first, with a move); `host` and `buf` (for `buflen` bytes) are writable;
/// `canonp` is null or writable.
#[inline(never)]
unsafe fn hostent_impl<const COPIES: usize>(
    q: &[u8],
    af: c_int,
    host: *mut libc::hostent,
    buf: *mut u8,
    buflen: usize,
    canonp: *mut *mut c_char,
) -> Result<(), &'static Failure> {
    let (want, addr_len) = match af {
        libc::AF_INET => (Want::V4, 4),
        libc::AF_INET6 => (Want::V6, 16),
        _ => return Err(&Failure::BAD_FAMILY),
    };
    if host.is_null() {
        // Not glibc; and ERANGE would only make a caller grow its buffer forever.
        return Err(&Failure::UNAVAILABLE);
    }
    let name = service_name(q)?;
    // A null buffer holds nothing.
    let buflen = if buf.is_null() { 0 } else { buflen };
    let layout = HostentLayout::new(buf as usize, addr_len, name.len(), COPIES)
        .ok_or(&Failure::TOO_SMALL)?;
    let fits = layout.end <= buflen;
    let mut picks = Picks::default();
    map::lookup(
        name,
        want,
        if fits { Mode::Count } else { Mode::Peek },
        &mut picks,
    )
    .map_err(Failure::of)?;
    if picks.has == 0 {
        return Err(&Failure::NO_DATA);
    }
    if !fits {
        return Err(&Failure::TOO_SMALL);
    }
    // SAFETY: `layout.end <= buflen`, so every offset written below lies in the caller's buffer
    // (the address list has `COPIES + 1` slots); pointer slots are pointer-aligned and the
    // address 4-aligned (`HostentLayout`). The name is copied first, as a move, so a query that
    // lives in the buffer is read before anything overwrites it; `q` is not used afterwards.
    unsafe {
        let h_name = buf.add(layout.name);
        copy_name(name, h_name);
        let aliases = buf.add(layout.aliases).cast::<*mut c_char>();
        aliases.write(ptr::null_mut());
        let h_addr = buf.add(layout.addr);
        // `Want::V4` picks only an IPv4 address and `Want::V6` only an IPv6 one. Byte arrays
        // (alignment 1), so fixed-size stores instead of a copy call.
        if want == Want::V4 {
            h_addr.cast::<[u8; 4]>().write(picks.v4.to_ne_bytes());
        } else {
            h_addr.cast::<[u8; 16]>().write(picks.v6_octets());
        }
        let list = buf.add(layout.addr_list).cast::<*mut c_char>();
        for i in 0..COPIES {
            list.add(i).write(h_addr.cast());
        }
        list.add(COPIES).write(ptr::null_mut());
        host.write(libc::hostent {
            h_name: h_name.cast(),
            h_aliases: aliases,
            h_addrtype: af,
            h_length: addr_len as c_int,
            h_addr_list: list,
        });
        if !canonp.is_null() {
            canonp.write(h_name.cast());
        }
    }
    Ok(())
}

/// Copies `name` to `dst` and NUL-terminates it, reading all of `name` before writing when it is
/// at most 16 bytes (the common case, inline: two overlapping loads and stores), else with
/// `ptr::copy` (a move); either way correct when the two overlap.
///
/// # Safety
/// `dst` is writable for `name.len() + 1` bytes.
#[inline(always)]
unsafe fn copy_name(name: &[u8], dst: *mut u8) {
    let n = name.len();
    let src = name.as_ptr();
    // SAFETY: every read lies in `name` (the offsets are below `n` and the widths fit, by each
    // branch's condition) and every write in `dst`'s `n + 1` bytes.
    unsafe {
        if (8..=16).contains(&n) {
            let (a, b) = (
                src.cast::<u64>().read_unaligned(),
                src.add(n - 8).cast::<u64>().read_unaligned(),
            );
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if (4..8).contains(&n) {
            let (a, b) = (
                src.cast::<u32>().read_unaligned(),
                src.add(n - 4).cast::<u32>().read_unaligned(),
            );
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else {
            ptr::copy(src, dst, n);
        }
        dst.add(n).write(0);
    }
}

/// `gethostbyname4_r`'s body: one tuple per family found, the caller's own first if it gave one.
///
/// # Safety
/// As [`_nss_lbfo_gethostbyname4_r`], with `buf` writable for `buflen` bytes.
unsafe fn tuples_impl(
    q: &[u8],
    pat: *mut *mut GaihAddrtuple,
    buf: *mut u8,
    buflen: usize,
) -> Result<(), &'static Failure> {
    if pat.is_null() {
        return Err(&Failure::UNAVAILABLE);
    }
    // SAFETY: `pat` is non-null and readable by the contract.
    let caller = unsafe { *pat };
    // A null buffer holds nothing.
    let buflen = if buf.is_null() { 0 } else { buflen };
    let own = usize::from(!caller.is_null());
    let name = service_name(q)?;
    let need =
        |tuples: usize| TupleLayout::new(buf as usize, tuples.saturating_sub(own), name.len());
    // Where the name and the tuples go does not depend on how many there are: only the end.
    let layout = need(2).ok_or(&Failure::TOO_SMALL)?;
    let mut picks = Picks::default();
    let fits = layout.end <= buflen;
    // The common case, a buffer that holds the worst case: one counted lookup, inline (the one
    // call site where inlining pays: getaddrinfo's). Otherwise first find the answer's shape
    // without counting, and count only once it is known to fit.
    if fits {
        map::lookup_inline(name, Want::Any, Mode::Count, &mut picks).map_err(Failure::of)?;
        if picks.has == 0 {
            return Err(&Failure::NO_DATA);
        }
    }
    if !fits {
        let mut mode = Mode::Peek;
        loop {
            map::lookup(name, Want::Any, mode, &mut picks).map_err(Failure::of)?;
            if picks.has == 0 {
                return Err(&Failure::NO_DATA);
            }
            // After the count: only if the table changed since the peek.
            if need(picks.count()).is_none_or(|l| l.end > buflen) {
                return Err(&Failure::TOO_SMALL);
            }
            if mode == Mode::Count {
                break;
            }
            mode = Mode::Count;
        }
    }
    // SAFETY: `need(n).end <= buflen` (the worst case's, or checked just above), so the name and
    // the `n - own` tuples placed at `layout.tuple(..)` lie in the caller's buffer, tuple-aligned
    // (`TupleLayout`: they go where the worst case puts them); the caller's own tuple is
    // writable by the contract. The name is copied first, as a move (see `hostent_impl`). The
    // list is IPv6 first: `first` holds the IPv6 tuple when there are two (`n == 2`, so the
    // buffer holds `second`), else the one address.
    unsafe {
        let t_name = buf.add(layout.name);
        copy_name(name, t_name);
        let first: *mut GaihAddrtuple = if own == 1 {
            caller
        } else {
            buf.add(layout.tuple(0)).cast()
        };
        let tuple = |next, family, addr| GaihAddrtuple {
            next,
            name: t_name.cast(),
            family,
            addr,
            scopeid: 0,
        };
        let v4 = [picks.v4, 0, 0, 0];
        if picks.has == Picks::V4 {
            first.write(tuple(ptr::null_mut(), libc::AF_INET, v4));
        } else {
            let mut next = ptr::null_mut();
            if picks.has & Picks::V4 != 0 {
                next = buf.add(layout.tuple(1 - own)).cast::<GaihAddrtuple>();
                next.write(tuple(ptr::null_mut(), libc::AF_INET, v4));
            }
            first.write(tuple(next, libc::AF_INET6, addr_words(picks.v6_octets())));
        }
        if own == 0 {
            pat.write(first);
        }
    }
    Ok(())
}

/// Release builds: a reference to a symbol defined nowhere, so that a panic path that survives
/// optimisation fails the link (`-z defs`). Nothing can call it at run time: if anything could,
/// the library would not have linked.
#[cfg(all(not(test), not(debug_assertions)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    extern "C" {
        fn lbfo_nss_panic_path_survived() -> !;
    }
    // SAFETY: unreachable in a library that links (see above).
    unsafe { lbfo_nss_panic_path_survived() }
}

/// Debug builds keep panic paths (overflow checks, debug assertions); they abort the process.
#[cfg(all(not(test), debug_assertions))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// Debug builds only: without LTO the prebuilt `core` (compiled for unwinding) keeps a reference
/// to the unwinding personality routine, which `-z defs` insists on resolving. Nothing here
/// unwinds (the dev profile has `panic = "abort"`), so this is never called; if it were, it would
/// abort. Release builds drop the reference and do not contain this function, so they export only
/// the entry points and the nscd init hook.
#[cfg(all(not(test), debug_assertions))]
#[no_mangle]
extern "C" fn rust_eh_personality() {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    //! The entry points against a real table file and a real counters segment, in this process.
    //! One test, because the mapping is process-global, the path is read from the environment and
    //! the nscd hook, once called, holds for the rest of the process.

    use super::*;
    use lbfo_core::cmd::{parse_line, Line};
    use lbfo_core::shm::{retire_any, CountersView, Layout, TableView, Writer};
    use lbfo_core::table::{Service, Table};
    use lbfo_core::Capacity;
    use std::ffi::CString;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::{Path, PathBuf};
    use std::string::String;
    use std::sync::atomic::AtomicU64;
    use std::vec::Vec;
    use std::{format, vec};

    /// A counters segment for a table of `capacity`, removed at once (it lives while attached).
    fn segment(generation: u64, capacity: Capacity) -> (i32, &'static [AtomicU64]) {
        let words = Layout::new(capacity).counters_words();
        // SAFETY: plain SysV calls; the attachment is checked before use and never detached.
        unsafe {
            let id = libc::shmget(libc::IPC_PRIVATE, words * 8, libc::IPC_CREAT | 0o666);
            assert!(id >= 0);
            let p = libc::shmat(id, ptr::null(), 0);
            assert_ne!(p as isize, -1);
            libc::shmctl(id, libc::IPC_RMID, ptr::null_mut());
            let w = core::slice::from_raw_parts(p as *const AtomicU64, words);
            CountersView::init(w, generation, Layout::new(capacity));
            (id, w)
        }
    }

    /// Writes a table of `capacity` holding `lines` to `path` (by rename) with counters segment
    /// `counters`.
    fn write_table(
        path: &Path,
        generation: u64,
        capacity: Capacity,
        counters: Option<i32>,
        lines: &[&str],
    ) {
        let words = Layout::new(capacity).total_words();
        let w: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let writer = Writer::init(&w, generation, capacity).unwrap();
        let mut slots = vec![None::<Service>; capacity.services()];
        let mut t = Table::with_capacity(&mut slots, capacity);
        for l in lines {
            let Ok(Some(Line::Command(c))) = parse_line(l) else {
                panic!("{l}")
            };
            let ch = t.apply(&c).unwrap();
            writer.write_service(ch.slot, t.get(ch.slot));
        }
        writer.write_index(t.iter().map(|(i, s)| (i, &s.name)));
        if let Some(id) = counters {
            writer.set_counters_id(id as u64);
        }
        let bytes: Vec<u8> = w
            .iter()
            .flat_map(|x| x.load(core::sync::atomic::Ordering::Relaxed).to_le_bytes())
            .collect();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Sets the retired flag of the table in `file` through a writable mapping.
    fn retire(file: &std::fs::File) {
        use std::os::fd::AsRawFd;
        let len = file.metadata().unwrap().len() as usize;
        // SAFETY: a fresh shared mapping of the whole file, unmapped below.
        unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert!(retire_any(core::slice::from_raw_parts(
                p as *const AtomicU64,
                len / 8
            )));
            libc::munmap(p, len);
        }
    }

    #[derive(Debug, PartialEq)]
    struct Reply {
        status: c_int,
        errno: c_int,
        h_errno: c_int,
        name: String,
        addrs: Vec<String>,
    }

    fn by_name2(name: &str, af: c_int, buflen: usize) -> Reply {
        let q = CString::new(name).unwrap();
        let mut buf = vec![0xa5u8; buflen];
        // SAFETY: an all-zero hostent is valid (null pointers).
        let mut host: libc::hostent = unsafe { core::mem::zeroed() };
        let (mut errno, mut h_errno) = (-7, -7);
        // SAFETY: valid pointers as glibc passes them.
        let status = unsafe {
            _nss_lbfo_gethostbyname2_r(
                q.as_ptr(),
                af,
                &mut host,
                buf.as_mut_ptr().cast(),
                buflen,
                &mut errno,
                &mut h_errno,
            )
        };
        if status != SUCCESS {
            assert!(
                buf.iter().all(|b| *b == 0xa5),
                "a failure wrote into the buffer"
            );
            return Reply {
                status,
                errno,
                h_errno,
                name: String::new(),
                addrs: Vec::new(),
            };
        }
        let range = buf.as_ptr_range();
        // SAFETY: on success the hostent points into `buf`, which is still alive.
        unsafe {
            for p in [
                host.h_name.cast_const().cast::<u8>(),
                host.h_aliases.cast_const().cast(),
                host.h_addr_list.cast_const().cast(),
            ] {
                assert!(range.contains(&p), "pointer outside the buffer");
            }
            assert_eq!(host.h_aliases as usize % 8, 0);
            assert_eq!(host.h_addr_list as usize % 8, 0);
            assert!((*host.h_aliases).is_null());
            let mut addrs = Vec::new();
            for i in 0.. {
                let a = *host.h_addr_list.add(i);
                if a.is_null() {
                    break;
                }
                assert!(range.contains(&a.cast_const().cast::<u8>()));
                addrs.push(if af == libc::AF_INET {
                    assert_eq!((host.h_addrtype, host.h_length), (libc::AF_INET, 4));
                    Ipv4Addr::from(*a.cast::<[u8; 4]>()).to_string()
                } else {
                    assert_eq!((host.h_addrtype, host.h_length), (libc::AF_INET6, 16));
                    Ipv6Addr::from(*a.cast::<[u8; 16]>()).to_string()
                });
            }
            let name = core::ffi::CStr::from_ptr(host.h_name)
                .to_str()
                .unwrap()
                .into();
            Reply {
                status,
                errno,
                h_errno,
                name,
                addrs,
            }
        }
    }

    fn by_name4(name: &str, own: bool, buflen: usize) -> Reply {
        let q = CString::new(name).unwrap();
        let mut buf = vec![0xa5u8; buflen];
        // SAFETY: an all-zero tuple is valid.
        let mut mine: GaihAddrtuple = unsafe { core::mem::zeroed() };
        let mut pat: *mut GaihAddrtuple = if own { &mut mine } else { ptr::null_mut() };
        let (mut errno, mut h_errno, mut ttl) = (-7, -7, -7);
        // SAFETY: valid pointers as glibc passes them.
        let status = unsafe {
            _nss_lbfo_gethostbyname4_r(
                q.as_ptr(),
                &mut pat,
                buf.as_mut_ptr().cast(),
                buflen,
                &mut errno,
                &mut h_errno,
                &mut ttl,
            )
        };
        if status != SUCCESS {
            assert!(
                buf.iter().all(|b| *b == 0xa5),
                "a failure wrote into the buffer"
            );
            return Reply {
                status,
                errno,
                h_errno,
                name: String::new(),
                addrs: Vec::new(),
            };
        }
        assert_eq!(ttl, 0);
        assert_eq!(own, ptr::eq(pat, &mine));
        let mut addrs = Vec::new();
        let mut name = String::new();
        // SAFETY: on success the list is made of `mine` and tuples in `buf`, both alive.
        unsafe {
            let mut t = pat;
            while !t.is_null() {
                assert_eq!(t as usize % 8, 0);
                let tu = &*t;
                name = core::ffi::CStr::from_ptr(tu.name).to_str().unwrap().into();
                let bytes: [u8; 16] = core::mem::transmute(tu.addr);
                addrs.push(match tu.family {
                    libc::AF_INET => {
                        Ipv4Addr::from([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string()
                    }
                    _ => Ipv6Addr::from(bytes).to_string(),
                });
                t = tu.next;
            }
        }
        Reply {
            status,
            errno,
            h_errno,
            name,
            addrs,
        }
    }

    fn fail(status: c_int, errno: c_int, h_errno: c_int) -> Reply {
        Reply {
            status,
            errno,
            h_errno,
            name: String::new(),
            addrs: Vec::new(),
        }
    }

    fn ok(name: &str, addrs: &[&str]) -> Reply {
        Reply {
            status: SUCCESS,
            errno: -7,
            h_errno: -7,
            name: name.into(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbfo-nss-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn entry_points_against_a_real_table() {
        use crate::answer::{NOTFOUND, TRYAGAIN, UNAVAIL};
        let dir = dir();
        let path = dir.join("table");
        // Before the table exists: unavailable.
        std::env::set_var("LBFO_TABLE", &path);
        assert_eq!(
            by_name2("web.lan", libc::AF_INET, 1024),
            fail(UNAVAIL, libc::ENOENT, 3)
        );

        // A table of the default capacity, then of the largest and of the smallest: the module
        // reads any layout a capacity within the limits gives.
        let (id, cw) = segment(7, Capacity::DEFAULT);
        let lines = [
            "add web.lan 10.0.0.1",
            "add web.lan 10.0.0.2",
            "add web.lan fd00::1",
            "add four.lan 10.1.0.1",
            "add down.lan 10.2.0.1",
            "down down.lan 10.2.0.1",
        ];
        write_table(&path, 7, Capacity::DEFAULT, Some(id), &lines);
        // The failed open is retried at most once a second.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while by_name2("web.lan", libc::AF_INET, 1024).status != SUCCESS {
            assert!(std::time::Instant::now() < deadline, "table not picked up");
            std::thread::yield_now();
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let view_words: Vec<AtomicU64> = std::fs::read(&path)
            .unwrap()
            .chunks(8)
            .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        let view = TableView::new_checked(&view_words).unwrap();
        let counters = CountersView::new_checked(cw, &view).unwrap();
        let count = |pos| counters.count(0, pos);

        // Round robin through the shared turn, counted; case and one trailing dot fold.
        let before = (count(0), count(1));
        let a = by_name2("WEB.lan.", libc::AF_INET, 1024);
        let b = by_name2("web.lan", libc::AF_INET, 1024);
        assert_eq!(a.name, "WEB.lan");
        assert_ne!(a.addrs, b.addrs);
        assert_eq!((count(0), count(1)), (before.0 + 1, before.1 + 1));
        assert_eq!(
            by_name2("web.lan", libc::AF_INET6, 1024),
            ok("web.lan", &["fd00::1"])
        );

        // Exact ERANGE boundary for a pointer-aligned buffer: 3 pointers, the address, the name.
        let need = 24 + 4 + "web.lan".len() + 1;
        let counted = count(0) + count(1);
        for len in 0..need {
            assert_eq!(
                by_name2("web.lan", libc::AF_INET, len),
                fail(TRYAGAIN, libc::ERANGE, -1),
                "len {len}"
            );
        }
        assert_eq!(
            count(0) + count(1),
            counted,
            "an ERANGE reply counted a use"
        );
        assert_eq!(by_name2("web.lan", libc::AF_INET, need).status, SUCCESS);

        // Statuses.
        assert_eq!(
            by_name2("other.lan", libc::AF_INET, 1024),
            fail(NOTFOUND, libc::ENOENT, 1)
        );
        assert_eq!(
            by_name2("four.lan", libc::AF_INET6, 1024),
            fail(NOTFOUND, libc::ENOENT, 4)
        );
        assert_eq!(
            by_name2("down.lan", libc::AF_INET, 1024),
            fail(TRYAGAIN, libc::EAGAIN, 2)
        );
        assert_eq!(
            by_name2("web.lan", libc::AF_UNIX, 1024),
            fail(UNAVAIL, libc::EAFNOSUPPORT, -1)
        );
        assert_eq!(
            by_name2(&"a".repeat(300), libc::AF_INET, 1024),
            fail(NOTFOUND, libc::ENOENT, 1)
        );

        // gethostbyname4_r: IPv6 first, one per family, into the caller's tuple or the buffer.
        let r = by_name4("web.lan", false, 1024);
        assert_eq!(
            (r.addrs.len(), r.addrs[0].as_str(), r.name.as_str()),
            (2, "fd00::1", "web.lan")
        );
        assert!(r.addrs[1].starts_with("10.0.0."));
        assert_eq!(
            by_name4("four.lan", true, 1024),
            ok("four.lan", &["10.1.0.1"])
        );
        assert_eq!(
            by_name4("four.lan", true, 9),
            ok("four.lan", &["10.1.0.1"]),
            "own tuple: only the name"
        );
        assert_eq!(
            by_name4("four.lan", true, 8),
            fail(TRYAGAIN, libc::ERANGE, -1)
        );
        assert_eq!(
            by_name4("down.lan", false, 1024),
            fail(TRYAGAIN, libc::EAGAIN, 2)
        );
        assert_eq!(
            by_name4("other.lan", false, 1024),
            fail(NOTFOUND, libc::ENOENT, 1)
        );
        let counted = count(0) + count(1);
        for len in 0..(2 * 40 + 8) {
            assert_eq!(
                by_name4("web.lan", false, len),
                fail(TRYAGAIN, libc::ERANGE, -1),
                "len {len}"
            );
        }
        assert_eq!(
            count(0) + count(1),
            counted,
            "an ERANGE reply counted a use"
        );

        // errno is left alone on success.
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = 4242 };
        assert_eq!(by_name2("web.lan", libc::AF_INET, 1024).status, SUCCESS);
        // SAFETY: as above.
        assert_eq!(unsafe { *libc::__errno_location() }, 4242);

        // Inside glibc's nscd (which calls the init hook, and nothing else does): hostent answers
        // list the one address twice, so nscd never caches them; the exact size is one pointer
        // more; each lookup counts once; gethostbyname4_r answers are unchanged.
        assert_eq!(by_name2("web.lan", libc::AF_INET, need).addrs.len(), 1);
        _nss_lbfo_init(ptr::null());
        let counted = count(0) + count(1);
        for len in 0..need + 8 {
            assert_eq!(
                by_name2("web.lan", libc::AF_INET, len),
                fail(TRYAGAIN, libc::ERANGE, -1),
                "nscd, len {len}"
            );
        }
        assert_eq!(
            count(0) + count(1),
            counted,
            "an ERANGE reply counted a use"
        );
        let a = by_name2("web.lan", libc::AF_INET, need + 8);
        let b = by_name2("web.lan", libc::AF_INET, 1024);
        assert_eq!(a.addrs.len(), 2, "{a:?}");
        assert_eq!(a.addrs[0], a.addrs[1]);
        assert_eq!(b.addrs[0], b.addrs[1]);
        assert_ne!(a.addrs, b.addrs, "round robin goes on");
        assert_eq!(count(0) + count(1), counted + 2, "one use per lookup");
        assert_eq!(
            by_name2("web.lan", libc::AF_INET6, 1024),
            ok("web.lan", &["fd00::1", "fd00::1"])
        );
        assert_eq!(
            by_name4("four.lan", false, 1024),
            ok("four.lan", &["10.1.0.1"])
        );
        assert_eq!(
            by_name2("down.lan", libc::AF_INET, 1024),
            fail(TRYAGAIN, libc::EAGAIN, 2)
        );

        // A replacement by rename is used at once once the old table is retired, whatever its
        // capacity.
        let (id, _) = segment(8, Capacity::MAX);
        let many: Vec<String> = (0..4096)
            .map(|i| format!("add s{i}.lan 10.8.{}.{}", i / 256, i % 256))
            .chain(["add web.lan 10.9.9.9".into()])
            .collect();
        let refs: Vec<&str> = many.iter().skip(1).map(String::as_str).collect();
        write_table(&path, 8, Capacity::MAX, Some(id), &refs);
        retire(&file);
        assert_eq!(
            by_name2("web.lan", libc::AF_INET, 1024),
            ok("web.lan", &["10.9.9.9", "10.9.9.9"])
        );
        assert_eq!(
            by_name2("s4095.lan", libc::AF_INET, 1024),
            ok("s4095.lan", &["10.8.15.255", "10.8.15.255"])
        );
        assert_eq!(
            by_name2("four.lan", libc::AF_INET, 1024),
            fail(NOTFOUND, libc::ENOENT, 1)
        );
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let (id, _) = segment(9, Capacity::new(1, 1).unwrap());
        let one = Capacity::new(1, 1).unwrap();
        write_table(&path, 9, one, Some(id), &["add one.lan fd00::9"]);
        retire(&file);
        assert_eq!(
            by_name2("one.lan", libc::AF_INET6, 1024),
            ok("one.lan", &["fd00::9", "fd00::9"])
        );
        assert_eq!(
            by_name2("web.lan", libc::AF_INET, 1024),
            fail(NOTFOUND, libc::ENOENT, 1)
        );

        // A removed table stops answering within a second or so.
        std::fs::remove_file(&path).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while by_name2("one.lan", libc::AF_INET6, 1024).status == SUCCESS {
            assert!(
                std::time::Instant::now() < deadline,
                "removed table still answers"
            );
            std::thread::yield_now();
        }
        assert_eq!(
            by_name2("one.lan", libc::AF_INET6, 1024),
            fail(UNAVAIL, libc::ENOENT, 3)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
