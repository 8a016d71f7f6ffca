//! The C ABI: glibc's four `gethostbyname*_r` entry points for the `lbfo` hosts service, and the
//! panic handler that proves the library has no panic path.
//!
//! Each entry point turns its raw arguments into a query slice, calls one `_impl` (`hostent_impl`
//! or `tuples_impl`), which asks [`map::lookup`] and writes the answer at the offsets
//! [`crate::answer`] computed, and [`finish`] stores the status the NSS contract asks for. The
//! buffer size is checked against the exact layout before anything is written; an answer that does
//! not fit is `TRYAGAIN` / `ERANGE` / `NETDB_INTERNAL` with nothing written and nothing counted.
//! `errno` (through `errnop`) is written only on failure, never with 0.
//!
//! **No panic path**: in release builds the panic handler calls `lbfo_nss_panic_path_survived`,
//! which is defined nowhere, and the library is linked with `-z defs` (build.rs). If optimisation
//! leaves any path to a panic (an index, an unwrap, an overflow check, a division by zero), the
//! handler is referenced and the link fails. Debug builds keep panic paths and abort.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_int};
use core::ptr;

use lbfo_core::name::{strip_dot, MAX_NAME_LEN};
use lbfo_core::{Answer, Lookup, Want};

use crate::answer::{addr_words, Failure, GaihAddrtuple, HostentLayout, TupleLayout, SUCCESS};
use crate::map::{self, Mode};

/// Bytes of a query looked at: anything longer is not a service name (core answers `NotOurs`
/// for queries over `MAX_NAME_LEN + 1` bytes), so reading stops there.
const QUERY_MAX: usize = MAX_NAME_LEN + 2;

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
        let result = hostent_impl(query(name), af, host, buffer.cast(), buflen, canonp);
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
        let result = hostent_impl(
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
        let result = hostent_impl(
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

/// The first bytes of the C string `name` (at most [`QUERY_MAX`], without the NUL).
///
/// # Safety
/// `name` is null or a NUL-terminated string that outlives the returned slice.
unsafe fn query<'a>(name: *const c_char) -> &'a [u8] {
    if name.is_null() {
        return &[];
    }
    // SAFETY: `name` is NUL-terminated; strnlen reads no further than its NUL or QUERY_MAX bytes.
    let len = unsafe { libc::strnlen(name, QUERY_MAX) };
    // SAFETY: the `len` bytes just read belong to the string, which outlives the slice.
    unsafe { core::slice::from_raw_parts(name.cast::<u8>(), len) }
}

/// Stores the outcome as the NSS contract says: on success `*ttlp = 0` (so nscd caches nothing),
/// `errno` untouched; otherwise `errno` and `h_errno` through the pointers.
///
/// # Safety
/// Each pointer is null or writable.
unsafe fn finish(
    result: Result<(), Failure>,
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

/// The answer of a successful lookup, or the failure to report.
fn answer(lookup: Option<Lookup>) -> Result<Answer, Failure> {
    match lookup {
        None => Err(Failure::UNAVAILABLE),
        Some(Lookup::Found(a)) => Ok(a),
        Some(other) => Err(Failure::of(&other).unwrap_or(Failure::UNAVAILABLE)),
    }
}

/// The shared part of `gethostbyname{,2,3}_r`: fills `host` with one address of family `af`.
///
/// # Safety
/// `q` does not overlap the first `buflen` bytes of `buf`, unless it is a C string in it (the
/// name is copied first, with a move); `host` and `buf` (for `buflen` bytes) are writable;
/// `canonp` is null or writable.
unsafe fn hostent_impl(
    q: &[u8],
    af: c_int,
    host: *mut libc::hostent,
    buf: *mut u8,
    buflen: usize,
    canonp: *mut *mut c_char,
) -> Result<(), Failure> {
    let (want, addr_len) = match af {
        libc::AF_INET => (Want::V4, 4),
        libc::AF_INET6 => (Want::V6, 16),
        _ => return Err(Failure::BAD_FAMILY),
    };
    let name = strip_dot(q);
    let layout =
        HostentLayout::new(buf as usize, addr_len, name.len()).ok_or(Failure::TOO_SMALL)?;
    let fits = layout.end <= buflen;
    let a = answer(map::lookup(
        q,
        want,
        if fits { Mode::Count } else { Mode::Peek },
    ))?;
    let addr: [u8; 16] = match (want, a.v4, a.v6) {
        (Want::V4, Some(v4), _) => {
            let [a, b, c, d] = v4.octets();
            [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        }
        (Want::V6, _, Some(v6)) => v6.octets(),
        _ => return Err(Failure::NO_DATA),
    };
    if !fits || host.is_null() || buf.is_null() {
        return Err(Failure::TOO_SMALL);
    }
    // SAFETY: `layout.end <= buflen`, so every offset written below lies in the caller's buffer;
    // pointer slots are pointer-aligned and the address 4-aligned (`HostentLayout`). The name is
    // copied first and with `ptr::copy`, so a query that lives in the buffer is read before
    // anything overwrites it; `q` is not used afterwards.
    unsafe {
        let h_name = buf.add(layout.name);
        ptr::copy(name.as_ptr(), h_name, name.len());
        h_name.add(name.len()).write(0);
        let aliases = buf.add(layout.aliases).cast::<*mut c_char>();
        aliases.write(ptr::null_mut());
        let h_addr = buf.add(layout.addr);
        ptr::copy_nonoverlapping(addr.as_ptr(), h_addr, addr_len);
        let list = buf.add(layout.addr_list).cast::<*mut c_char>();
        list.write(h_addr.cast());
        list.add(1).write(ptr::null_mut());
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

/// The addresses of `a` as `(family, bytes)`, IPv6 first, and how many there are.
fn families(a: &Answer) -> ([(c_int, [u8; 16]); 2], usize) {
    let mut out = [(0, [0u8; 16]); 2];
    let mut n = 0;
    let v6 = a.v6.map(|v6| (libc::AF_INET6, v6.octets()));
    let v4 = a.v4.map(|v4| {
        let [a, b, c, d] = v4.octets();
        (
            libc::AF_INET,
            [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        )
    });
    for f in [v6, v4].into_iter().flatten() {
        if let Some(slot) = out.get_mut(n) {
            *slot = f;
            n += 1;
        }
    }
    (out, n)
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
) -> Result<(), Failure> {
    if pat.is_null() {
        return Err(Failure::UNAVAILABLE);
    }
    // SAFETY: `pat` is non-null and readable by the contract.
    let caller = unsafe { *pat };
    let own = usize::from(!caller.is_null());
    let name = strip_dot(q);
    let need =
        |tuples: usize| TupleLayout::new(buf as usize, tuples.saturating_sub(own), name.len());
    let worst = need(2).ok_or(Failure::TOO_SMALL)?;
    let a = if worst.end <= buflen {
        answer(map::lookup(q, Want::Any, Mode::Count))?
    } else {
        // Find the answer's shape without counting; count only once it is known to fit.
        let (_, n) = families(&answer(map::lookup(q, Want::Any, Mode::Peek))?);
        if need(n).is_none_or(|l| l.end > buflen) {
            return Err(Failure::TOO_SMALL);
        }
        answer(map::lookup(q, Want::Any, Mode::Count))?
    };
    let (addrs, n) = families(&a);
    if n == 0 {
        return Err(Failure::NO_DATA);
    }
    let layout = need(n).ok_or(Failure::TOO_SMALL)?;
    if layout.end > buflen || buf.is_null() {
        // Only if the table changed between the peek and the lookup.
        return Err(Failure::TOO_SMALL);
    }
    // SAFETY: `layout.end <= buflen`, so the name and the `n - own` tuples placed at
    // `layout.tuple(..)` lie in the caller's buffer, tuple-aligned (`TupleLayout`); the caller's
    // own tuple is writable by the contract. The name is copied first, with `ptr::copy` (see
    // `hostent_impl`).
    unsafe {
        let t_name = buf.add(layout.name);
        ptr::copy(name.as_ptr(), t_name, name.len());
        t_name.add(name.len()).write(0);
        let at = |i: usize| -> *mut GaihAddrtuple {
            if own == 1 && i == 0 {
                caller
            } else {
                buf.add(layout.tuple(i - own)).cast()
            }
        };
        let mut next = ptr::null_mut();
        for i in (0..n).rev() {
            let (family, bytes) = addrs.get(i).copied().unwrap_or((0, [0; 16]));
            let t = at(i);
            t.write(GaihAddrtuple {
                next,
                name: t_name.cast(),
                family,
                addr: addr_words(bytes),
                scopeid: 0,
            });
            next = t;
        }
        if own == 0 {
            pat.write(next);
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
/// the four entry points.
#[cfg(all(not(test), debug_assertions))]
#[no_mangle]
extern "C" fn rust_eh_personality() {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
