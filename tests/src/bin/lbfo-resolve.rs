//! `lbfo-resolve`: drives real glibc name resolution for the end-to-end tests and benchmarks.
//!
//! Every mode goes through the public libc API a program would use (getaddrinfo,
//! gethostbyname*_r), so the NSS module is exercised exactly as in production. With
//! `--nss "SOURCES"` the process calls `__nss_configure_lookup("hosts", SOURCES)` first, which
//! fixes the hosts sources without touching /etc/nsswitch.conf and bypasses nscd (what glibc's own
//! tests do).
//!
//! ```text
//! lbfo-resolve [--nss SRC] gai4|gai6|gaiu|ghbn|ghbn2-4|ghbn2-6 NAME [COUNT]
//!     one answer per line (COUNT times), or `count ADDR N` tallies with --tally
//! lbfo-resolve [--nss SRC] wait NAME ADDR MS       until NAME answers ADDR (exit 1 on timeout)
//! lbfo-resolve [--nss SRC] follow NAME             a long-running resolver: one getaddrinfo
//!                                                  (IPv4) per line read from stdin, its answer
//!                                                  printed on a line of its own
//! lbfo-resolve [--nss SRC] sweep NAME MAXLEN       gethostbyname_r/2_r with buffers 1..MAXLEN
//! lbfo-resolve [--nss SRC] stress NAME THREADS N ALLOWED,...   threads resolving concurrently
//! lbfo-resolve module SO NAME MAXLEN               the module's 4_r/3_r/2_r/_r called directly
//! lbfo-resolve bench MODE NAME N                   per-call latency: `p50_ns P p99_ns Q`
//! lbfo-resolve modbench SO NAME N                  N direct calls of the module's 2_r (for
//!                                                  callgrind and strace)
//! ```
#![allow(unsafe_code)] // This program's purpose is to call the C resolver API.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::exit;
use std::time::{Duration, Instant};

extern "C" {
    fn __nss_configure_lookup(
        db: *const libc::c_char,
        service_line: *const libc::c_char,
    ) -> libc::c_int;
}

fn usage() -> ! {
    eprintln!("usage: lbfo-resolve [--nss SOURCES] [--tally] MODE NAME [ARGS...] (see the source's header)");
    exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut tally = false;
    loop {
        match args.first().map(String::as_str) {
            Some("--nss") if args.len() > 1 => {
                let src = CString::new(args[1].clone()).unwrap_or_default();
                // SAFETY: both arguments are NUL-terminated strings that outlive the call.
                let rc = unsafe { __nss_configure_lookup(c"hosts".as_ptr(), src.as_ptr()) };
                if rc != 0 {
                    eprintln!("__nss_configure_lookup failed");
                    exit(2);
                }
                args.drain(..2);
            }
            Some("--tally") => {
                tally = true;
                args.remove(0);
            }
            _ => break,
        }
    }
    let (Some(mode), Some(name)) = (args.first().cloned(), args.get(1).cloned()) else {
        usage()
    };
    let num = |i: usize, default: u64| -> u64 {
        args.get(i)
            .map_or(Some(default), |s| s.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match mode.as_str() {
        "wait" => {
            let want = args.get(2).cloned().unwrap_or_else(|| usage());
            let deadline = Instant::now() + Duration::from_millis(num(3, 5000));
            loop {
                if resolve("gaiu", &name) == want {
                    return;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "timeout: {name} never answered {want} (last: {})",
                        resolve("gaiu", &name)
                    );
                    exit(1);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        "follow" => {
            use std::io::{BufRead, Write};
            let stdin = std::io::stdin();
            let mut out = std::io::stdout().lock();
            for line in stdin.lock().lines() {
                if line.is_err() {
                    break;
                }
                if writeln!(out, "{}", resolve("gai4", &name))
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
        "sweep" => sweep(&name, num(2, 1024) as usize),
        "stress" => stress(
            &name,
            num(2, 8) as usize,
            num(3, 100_000),
            args.get(4).map_or("", String::as_str),
        ),
        "bench" => {
            let target = args.get(2).cloned().unwrap_or_else(|| usage());
            bench(&name, &target, num(3, 10_000) as usize);
        }
        "modbench" => {
            let query = args.get(2).cloned().unwrap_or_else(|| usage());
            modbench(&name, &query, num(3, 10_000));
        }
        "module" => {
            let so = name;
            let query = args.get(2).cloned().unwrap_or_else(|| usage());
            module(&so, &query, num(3, 1024) as usize);
        }
        _ => {
            let count = num(2, 1);
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for _ in 0..count {
                let answer = resolve(&mode, &name);
                if tally {
                    *counts.entry(answer).or_default() += 1;
                } else {
                    println!("{answer}");
                }
            }
            for (answer, n) in counts {
                println!("count {answer} {n}");
            }
        }
    }
}

/// One resolution in `mode`; the addresses in the order returned, space-separated, or `error:…`.
fn resolve(mode: &str, name: &str) -> String {
    match mode {
        "gai4" => gai(name, libc::AF_INET),
        "gai6" => gai(name, libc::AF_INET6),
        "gaiu" => gai(name, libc::AF_UNSPEC),
        "ghbn" => ghbn(name, None, 4096).unwrap_or_else(|e| e),
        "ghbn2-4" => ghbn(name, Some(libc::AF_INET), 4096).unwrap_or_else(|e| e),
        "ghbn2-6" => ghbn(name, Some(libc::AF_INET6), 4096).unwrap_or_else(|e| e),
        _ => usage(),
    }
}

fn gai(name: &str, family: libc::c_int) -> String {
    let cname = CString::new(name).unwrap_or_default();
    // SAFETY: addrinfo is plain data; all-zero is a valid "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = family;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid C string, hints and out-pointer; the result is freed below.
    let rc = unsafe { libc::getaddrinfo(cname.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        // SAFETY: gai_strerror returns a static string.
        let msg = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) };
        return format!("error:{}", msg.to_string_lossy().replace(' ', "_"));
    }
    let mut out = Vec::new();
    let mut p = res;
    while !p.is_null() {
        // SAFETY: p walks the list getaddrinfo returned, which stays valid until freeaddrinfo.
        let ai = unsafe { &*p };
        out.push(sockaddr_ip(ai.ai_addr).map_or("?".into(), |a| a.to_string()));
        p = ai.ai_next;
    }
    // SAFETY: res came from a successful getaddrinfo.
    unsafe { libc::freeaddrinfo(res) };
    out.join(" ")
}

fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: sa points to a sockaddr of the family it announces (getaddrinfo's contract).
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// gethostbyname_r (family None) or gethostbyname2_r into a buffer of `len` bytes.
/// Err carries `error:ERANGE` or `error:h_errno=N`.
fn ghbn(name: &str, family: Option<libc::c_int>, len: usize) -> Result<String, String> {
    let mut buf = vec![0u8; len];
    ghbn_in(name, family, &mut buf)
}

extern "C" {
    fn gethostbyname_r(
        name: *const libc::c_char,
        ret: *mut libc::hostent,
        buf: *mut libc::c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut libc::c_int,
    ) -> libc::c_int;
    fn gethostbyname2_r(
        name: *const libc::c_char,
        af: libc::c_int,
        ret: *mut libc::hostent,
        buf: *mut libc::c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut libc::c_int,
    ) -> libc::c_int;
}

fn ghbn_in(name: &str, family: Option<libc::c_int>, buf: &mut [u8]) -> Result<String, String> {
    let cname = CString::new(name).unwrap_or_default();
    // SAFETY: hostent is plain data.
    let mut he: libc::hostent = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::hostent = std::ptr::null_mut();
    let mut herr = 0;
    // SAFETY: every pointer is valid for the call; buf is writable for buf.len() bytes.
    let rc = unsafe {
        match family {
            None => gethostbyname_r(
                cname.as_ptr(),
                &mut he,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut res,
                &mut herr,
            ),
            Some(af) => gethostbyname2_r(
                cname.as_ptr(),
                af,
                &mut he,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut res,
                &mut herr,
            ),
        }
    };
    if rc == libc::ERANGE {
        return Err("error:ERANGE".into());
    }
    if rc != 0 || res.is_null() {
        return Err(format!("error:h_errno={herr}"));
    }
    Ok(hostent_addrs(&he))
}

fn hostent_addrs(he: &libc::hostent) -> String {
    let mut out = Vec::new();
    let mut p = he.h_addr_list;
    // SAFETY: a successful lookup returns a NULL-terminated list of h_length-byte addresses.
    unsafe {
        while !p.is_null() && !(*p).is_null() {
            let a = *p as *const u8;
            out.push(match he.h_addrtype {
                libc::AF_INET => IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(std::slice::from_raw_parts(a, 4)).unwrap(),
                )),
                _ => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(std::slice::from_raw_parts(a, 16)).unwrap(),
                )),
            });
            p = p.add(1);
        }
    }
    out.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Buffer sizes 1..=max with canary bytes behind the buffer: ERANGE until big enough, then the
/// answer, never a write past the end. Prints `first-ok LEN ANSWER` per function.
fn sweep(name: &str, max: usize) {
    const CANARY: u8 = 0xa5;
    for family in [None, Some(libc::AF_INET), Some(libc::AF_INET6)] {
        let mut first_ok = None;
        for len in 1..=max {
            let mut buf = vec![CANARY; len + 64];
            let r = ghbn_in(name, family, &mut buf[..len]);
            if buf[len..].iter().any(|&b| b != CANARY) {
                println!("overflow at len {len}");
                exit(1);
            }
            match (&r, first_ok.is_some()) {
                (Err(e), false) if e == "error:ERANGE" => {}
                (Ok(a), false) => first_ok = Some((len, a.clone())),
                (Ok(_), true) => {}
                (other, _) => {
                    println!("unexpected at len {len}: {other:?}");
                    exit(1);
                }
            }
        }
        match first_ok {
            Some((len, a)) => println!("first-ok {len} {a}"),
            None => println!("never-ok"),
        }
    }
}

/// THREADS threads each resolving N times; every answer must be in ALLOWED (a comma list; an
/// empty answer set is not allowed). Prints `ok TOTAL` or the first foreign answer.
fn stress(name: &str, threads: usize, n: u64, allowed: &str) {
    let allowed: Vec<String> = allowed
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let bad = std::sync::atomic::AtomicU64::new(0);
    let fell = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (allowed, bad, fell) = (&allowed, &bad, &fell);
            s.spawn(move || {
                for _ in 0..n {
                    let mode = ["gai4", "ghbn", "gaiu", "ghbn2-4"][t % 4];
                    let a = resolve(mode, name);
                    if a.starts_with("error:") {
                        fell.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else if a.split(' ').any(|x| !allowed.iter().any(|y| y == x))
                        && bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0
                    {
                        println!("foreign {a}");
                    }
                }
            });
        }
    });
    let (bad, fell) = (bad.into_inner(), fell.into_inner());
    println!(
        "total {} foreign {bad} unresolved {fell}",
        threads as u64 * n
    );
    exit(i32::from(bad > 0));
}

#[repr(C)]
struct GaihAddrtuple {
    next: *mut GaihAddrtuple,
    name: *mut libc::c_char,
    family: libc::c_int,
    addr: [u32; 4],
    scopeid: u32,
}

type Fn4 = unsafe extern "C" fn(
    *const libc::c_char,
    *mut *mut GaihAddrtuple,
    *mut libc::c_char,
    libc::size_t,
    *mut libc::c_int,
    *mut libc::c_int,
    *mut i32,
) -> libc::c_int;
type Fn2 = unsafe extern "C" fn(
    *const libc::c_char,
    libc::c_int,
    *mut libc::hostent,
    *mut libc::c_char,
    libc::size_t,
    *mut libc::c_int,
    *mut libc::c_int,
) -> libc::c_int;

/// Calls the module's entry points directly with buffers 1..=max, checking the glibc contract
/// that getaddrinfo relies on: TRYAGAIN with ERANGE and NETDB_INTERNAL until the buffer fits,
/// nothing written past the buffer, `*ttlp` set to 0, a caller-supplied first tuple filled in.
fn module(so: &str, name: &str, max: usize) {
    const NSS_TRYAGAIN: i32 = -2;
    const NSS_SUCCESS: i32 = 1;
    const NETDB_INTERNAL: i32 = -1;
    let cso = CString::new(so).unwrap_or_default();
    // SAFETY: dlopen/dlsym with valid C strings; the symbols have the NSS signatures.
    let (f4, f2) = unsafe {
        let h = libc::dlopen(cso.as_ptr(), libc::RTLD_NOW);
        if h.is_null() {
            println!("dlopen failed");
            exit(1);
        }
        let f4 = libc::dlsym(h, c"_nss_lbfo_gethostbyname4_r".as_ptr());
        let f2 = libc::dlsym(h, c"_nss_lbfo_gethostbyname2_r".as_ptr());
        if f4.is_null() || f2.is_null() {
            println!("missing entry points");
            exit(1);
        }
        (
            std::mem::transmute::<*mut libc::c_void, Fn4>(f4),
            std::mem::transmute::<*mut libc::c_void, Fn2>(f2),
        )
    };
    let cname = CString::new(name).unwrap_or_default();
    for caller_tuple in [false, true] {
        let mut first_ok = None;
        for len in 1..=max {
            let mut buf = vec![0xa5u8; len + 64];
            let mut own = GaihAddrtuple {
                next: std::ptr::null_mut(),
                name: std::ptr::null_mut(),
                family: 0,
                addr: [0; 4],
                scopeid: 0,
            };
            let mut pat: *mut GaihAddrtuple = if caller_tuple {
                &mut own
            } else {
                std::ptr::null_mut()
            };
            let (mut errno, mut herrno, mut ttl) = (12345, 12345, 777);
            // SAFETY: errno is this thread's; setting it is always allowed.
            unsafe { *libc::__errno_location() = 4242 };
            // SAFETY: the buffer is valid for len bytes; the out-pointers are valid.
            let st = unsafe {
                f4(
                    cname.as_ptr(),
                    &mut pat,
                    buf.as_mut_ptr().cast(),
                    len,
                    &mut errno,
                    &mut herrno,
                    &mut ttl,
                )
            };
            if buf[len..].iter().any(|&b| b != 0xa5) {
                println!("4_r overflow at len {len}");
                exit(1);
            }
            if st == NSS_TRYAGAIN && errno == libc::ERANGE && herrno == NETDB_INTERNAL {
                if first_ok.is_some() {
                    println!("4_r ERANGE after success at len {len}");
                    exit(1);
                }
                continue;
            }
            if st != NSS_SUCCESS {
                println!("4_r status {st} errno {errno} h_errno {herrno} at len {len}");
                exit(1);
            }
            // SAFETY: reading this thread's errno.
            if unsafe { *libc::__errno_location() } != 4242 {
                println!("4_r changed errno on success");
                exit(1);
            }
            if ttl != 0 || (caller_tuple && !std::ptr::eq(pat, &own)) {
                println!("4_r ttl {ttl} or caller tuple not used");
                exit(1);
            }
            if first_ok.is_none() {
                let mut addrs = Vec::new();
                let mut p = pat;
                while !p.is_null() {
                    // SAFETY: the module built this list in buf (or in `own`).
                    let t = unsafe { &*p };
                    if t.name.is_null()
                        || (t.name as usize) % std::mem::align_of::<u8>() != 0
                        || (p as usize) % std::mem::align_of::<GaihAddrtuple>() != 0
                    {
                        println!("4_r misaligned or nameless tuple");
                        exit(1);
                    }
                    let mut bytes = [0u8; 16];
                    for (chunk, word) in bytes.chunks_mut(4).zip(t.addr) {
                        chunk.copy_from_slice(&word.to_ne_bytes());
                    }
                    addrs.push(if t.family == libc::AF_INET {
                        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
                            .to_string()
                    } else {
                        IpAddr::V6(Ipv6Addr::from(bytes)).to_string()
                    });
                    p = t.next;
                }
                first_ok = Some((len, addrs.join(" ")));
            }
        }
        match first_ok {
            Some((len, a)) => println!(
                "4_r{} first-ok {len} {a}",
                if caller_tuple { "+pat" } else { "" }
            ),
            None => println!("4_r never-ok"),
        }
    }
    let mut first_ok = None;
    for len in 1..=max {
        let mut buf = vec![0xa5u8; len + 64];
        // SAFETY: hostent is plain data.
        let mut he: libc::hostent = unsafe { std::mem::zeroed() };
        let (mut errno, mut herrno) = (12345, 12345);
        // SAFETY: the buffer is valid for len bytes; the out-pointers are valid.
        let st = unsafe {
            f2(
                cname.as_ptr(),
                libc::AF_INET,
                &mut he,
                buf.as_mut_ptr().cast(),
                len,
                &mut errno,
                &mut herrno,
            )
        };
        if buf[len..].iter().any(|&b| b != 0xa5) {
            println!("2_r overflow at len {len}");
            exit(1);
        }
        if st == NSS_TRYAGAIN && errno == libc::ERANGE && herrno == NETDB_INTERNAL {
            continue;
        }
        if st != NSS_SUCCESS {
            println!("2_r status {st} errno {errno} h_errno {herrno} at len {len}");
            exit(1);
        }
        if first_ok.is_none() {
            first_ok = Some((len, hostent_addrs(&he)));
        }
    }
    match first_ok {
        Some((len, a)) => println!("2_r first-ok {len} {a}"),
        None => println!("2_r never-ok"),
    }
}

/// Times `n` resolutions (after a warm-up) and prints the median and 99th percentile.
fn bench(mode: &str, name: &str, n: usize) {
    let first = resolve(mode, name);
    for _ in 0..n / 10 {
        resolve(mode, name);
    }
    let mut ns: Vec<u128> = (0..n)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(resolve(mode, name));
            t.elapsed().as_nanos()
        })
        .collect();
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "p50_ns {} p99_ns {} answer {}",
        at(0.50),
        at(0.99),
        first.replace(' ', ",")
    );
}

/// Calls the module's gethostbyname2_r directly `n` times with a large enough buffer.
fn modbench(so: &str, name: &str, n: u64) {
    let cso = CString::new(so).unwrap_or_default();
    // SAFETY: dlopen/dlsym with valid C strings; the symbol has the NSS signature.
    let f2 = unsafe {
        let h = libc::dlopen(cso.as_ptr(), libc::RTLD_NOW);
        let f = if h.is_null() {
            std::ptr::null_mut()
        } else {
            libc::dlsym(h, c"_nss_lbfo_gethostbyname2_r".as_ptr())
        };
        if f.is_null() {
            println!("cannot load {so}");
            exit(1);
        }
        std::mem::transmute::<*mut libc::c_void, Fn2>(f)
    };
    let cname = CString::new(name).unwrap_or_default();
    let mut buf = vec![0u8; 1024];
    let mut ok = 0u64;
    for _ in 0..n {
        // SAFETY: hostent is plain data.
        let mut he: libc::hostent = unsafe { std::mem::zeroed() };
        let (mut errno, mut herrno) = (0, 0);
        // SAFETY: the buffer is valid for its length; the out-pointers are valid.
        let st = unsafe {
            f2(
                cname.as_ptr(),
                libc::AF_INET,
                &mut he,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut errno,
                &mut herrno,
            )
        };
        ok += u64::from(st == 1);
    }
    println!("calls {n} found {ok}");
}
