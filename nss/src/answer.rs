//! How a core lookup's outcome becomes an NSS reply: the status glibc sees for a
//! [`lbfo_core::Miss`], the `errno` and `h_errno` stored with it, and the exact layout of what
//! goes into the caller's buffer.
//!
//! Pure arithmetic on addresses and lengths, no `unsafe`: [`crate::abi`] computes a layout here,
//! compares its `end` with the buffer length, and only then writes, at these offsets. Every
//! offset that receives a pointer or a tuple is aligned for it, counting the padding needed to
//! align the (arbitrary) buffer start into the size, so the size check is exact.

use core::ffi::{c_char, c_int};
use core::mem::{align_of, size_of};

use lbfo_core::Miss;

/// `NSS_STATUS_TRYAGAIN` (nss.h).
pub const TRYAGAIN: c_int = -2;
/// `NSS_STATUS_UNAVAIL`.
pub const UNAVAIL: c_int = -1;
/// `NSS_STATUS_NOTFOUND`.
pub const NOTFOUND: c_int = 0;
/// `NSS_STATUS_SUCCESS`.
pub const SUCCESS: c_int = 1;

/// `NETDB_INTERNAL` (netdb.h): see `errno`.
pub const NETDB_INTERNAL: c_int = -1;
/// `HOST_NOT_FOUND`.
pub const HOST_NOT_FOUND: c_int = 1;
/// `TRY_AGAIN`.
pub const TRY_AGAIN: c_int = 2;
/// `NO_RECOVERY`.
pub const NO_RECOVERY: c_int = 3;
/// `NO_DATA`.
pub const NO_DATA: c_int = 4;

/// Any reply but success: the status an entry point returns and what it stores through `errnop`
/// and `h_errnop`. `errno` is never 0 here: the NSS contract forbids storing 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The `enum nss_status` value.
    pub status: c_int,
    /// Stored through `errnop`.
    pub errno: c_int,
    /// Stored through `h_errnop`.
    pub h_errno: c_int,
}

impl Failure {
    /// No usable table (none yet, unreadable, invalid), or one that kept changing or is damaged.
    /// With default actions nsswitch goes on to the next source.
    pub const UNAVAILABLE: Failure = Failure {
        status: UNAVAIL,
        errno: libc::ENOENT,
        h_errno: NO_RECOVERY,
    };
    /// The name is not a service here: the next source answers.
    pub const NOT_OURS: Failure = Failure {
        status: NOTFOUND,
        errno: libc::ENOENT,
        h_errno: HOST_NOT_FOUND,
    };
    /// A service, but without an eligible backend of the wanted family.
    pub const NO_DATA: Failure = Failure {
        status: NOTFOUND,
        errno: libc::ENOENT,
        h_errno: NO_DATA,
    };
    /// A service whose backends are all down or drained. By default nsswitch continues to `files`
    /// and `dns`; an administrator who wants lbfo to be authoritative for its services writes
    /// `hosts: lbfo [TRYAGAIN=return] files dns`, and callers then see a temporary failure.
    pub const ALL_DOWN: Failure = Failure {
        status: TRYAGAIN,
        errno: libc::EAGAIN,
        h_errno: TRY_AGAIN,
    };
    /// An address family other than `AF_INET` / `AF_INET6`, answered as nss_files does.
    pub const BAD_FAMILY: Failure = Failure {
        status: UNAVAIL,
        errno: libc::EAFNOSUPPORT,
        h_errno: NETDB_INTERNAL,
    };
    /// The caller's buffer cannot hold the answer. Exactly this combination (TRYAGAIN, `ERANGE`,
    /// `NETDB_INTERNAL`) makes glibc retry with a larger buffer.
    pub const TOO_SMALL: Failure = Failure {
        status: TRYAGAIN,
        errno: libc::ERANGE,
        h_errno: NETDB_INTERNAL,
    };

    /// The reply for a lookup that picked no address.
    ///
    /// Replies are borrowed statics, so that a `Result<(), &Failure>` travels in one register.
    #[inline]
    pub fn of(miss: Miss) -> &'static Failure {
        // A table, not a match: a lookup's caller then tests only for success on its fast path.
        static OF: [Failure; 4] = [
            Failure::NOT_OURS,
            Failure::NO_DATA,
            Failure::ALL_DOWN,
            Failure::UNAVAILABLE,
        ];
        const _: () = assert!(
            Miss::NotOurs as usize == 0
                && Miss::NoData as usize == 1
                && Miss::AllDown as usize == 2
                && Miss::Unavailable as usize == 3
        );
        &OF[miss as usize & 3]
    }
}

/// glibc's `struct gaih_addrtuple` (nss.h): one address of a `gethostbyname4_r` answer.
#[repr(C)]
#[derive(Debug)]
pub struct GaihAddrtuple {
    /// The next tuple, or null.
    pub next: *mut GaihAddrtuple,
    /// The host name, NUL-terminated.
    pub name: *mut c_char,
    /// `AF_INET` or `AF_INET6`.
    pub family: c_int,
    /// The address in network byte order (IPv4 uses the first word).
    pub addr: [u32; 4],
    /// The IPv6 scope id; 0 here.
    pub scopeid: u32,
}

const PTR_SIZE: usize = size_of::<*mut c_char>();

/// Bytes to add to `addr` to align it to `align` (a power of two).
fn padding(addr: usize, align: usize) -> usize {
    addr.wrapping_neg() & align.wrapping_sub(1)
}

/// Where the parts of a `hostent` answer go, as byte offsets from the start of the caller's
/// buffer: `h_aliases = [NULL]`, `h_addr_list` (the one address `copies` times, then NULL), the
/// address, then the name.
///
/// `copies` is 1, except inside glibc's nscd, where it is 2: nscd keeps a `hostent` in its hosts
/// cache only when it lists exactly one address (nscd/hstcache.c, `cache_addhst`: more are "used
/// for load balancing"), and otherwise sends it to its client from temporary memory. Listing the
/// picked address twice keeps every answer out of that cache, so each client gets a fresh pick;
/// a client sees the same address twice, which at worst makes it connect to that backend twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostentLayout {
    /// The aliases array (one null pointer); pointer-aligned.
    pub aliases: usize,
    /// The address list (the address pointer `copies` times, then null); pointer-aligned.
    pub addr_list: usize,
    /// The address bytes; aligned for `in6_addr` (4) because it follows the pointers.
    pub addr: usize,
    /// The name and its NUL.
    pub name: usize,
    /// One past the last byte written: the buffer must be at least this long.
    pub end: usize,
}

impl HostentLayout {
    /// The layout for a buffer starting at address `buf`, an address of `addr_len` bytes listed
    /// `copies` times and a name of `name_len` bytes (without its NUL). `None` only if the sizes
    /// overflow.
    pub fn new(
        buf: usize,
        addr_len: usize,
        name_len: usize,
        copies: usize,
    ) -> Option<HostentLayout> {
        let aliases = padding(buf, align_of::<*mut c_char>());
        let addr_list = aliases.checked_add(PTR_SIZE)?;
        let addr = addr_list.checked_add(copies.checked_add(1)?.checked_mul(PTR_SIZE)?)?;
        let name = addr.checked_add(addr_len)?;
        let end = name.checked_add(name_len)?.checked_add(1)?;
        Some(HostentLayout {
            aliases,
            addr_list,
            addr,
            name,
            end,
        })
    }
}

/// Where the parts of a `gethostbyname4_r` answer go: the name they all point to, then the
/// tuples that live in the buffer (the caller may supply the first one itself). Name first, so
/// that where anything goes does not depend on how many tuples there are: a lookup that finds
/// fewer than the worst case writes where the worst case's layout says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TupleLayout {
    /// The name and its NUL: the start of the buffer.
    pub name: usize,
    /// The first tuple placed in the buffer; aligned for [`GaihAddrtuple`].
    pub first: usize,
    /// One past the last byte written: the buffer must be at least this long.
    pub end: usize,
}

impl TupleLayout {
    /// The layout for a buffer at address `buf` holding `tuples` tuples and a name of `name_len`
    /// bytes (without its NUL). `None` only if the sizes overflow.
    pub fn new(buf: usize, tuples: usize, name_len: usize) -> Option<TupleLayout> {
        let name_end = name_len.checked_add(1)?;
        let first = name_end.checked_add(padding(
            buf.wrapping_add(name_end),
            align_of::<GaihAddrtuple>(),
        ))?;
        let end = match tuples {
            0 => name_end,
            _ => first.checked_add(tuples.checked_mul(size_of::<GaihAddrtuple>())?)?,
        };
        Some(TupleLayout {
            name: 0,
            first,
            end,
        })
    }

    /// Offset of the `i`th tuple placed in the buffer.
    pub fn tuple(&self, i: usize) -> usize {
        self.first
            .wrapping_add(i.wrapping_mul(size_of::<GaihAddrtuple>()))
    }
}

/// The 16 address bytes (network order) as `gaih_addrtuple::addr` holds them in memory.
pub fn addr_words(bytes: [u8; 16]) -> [u32; 4] {
    let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p] = bytes;
    [
        u32::from_ne_bytes([a, b, c, d]),
        u32::from_ne_bytes([e, f, g, h]),
        u32::from_ne_bytes([i, j, k, l]),
        u32::from_ne_bytes([m, n, o, p]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostent_layout_is_aligned_and_exact() {
        for copies in [1, 2] {
            let list = (copies + 1) * 8;
            for buf in 0x1000..0x1010usize {
                let l = HostentLayout::new(buf, 16, 7, copies).unwrap();
                assert_eq!((buf + l.aliases) % 8, 0, "buf {buf:#x}");
                assert_eq!((buf + l.addr_list) % 8, 0);
                assert_eq!((buf + l.addr) % 4, 0);
                assert!(l.aliases < 8);
                assert_eq!(l.addr_list, l.aliases + 8);
                assert_eq!(l.addr, l.addr_list + list);
                assert_eq!(l.name, l.addr + 16);
                assert_eq!(l.end, l.aliases + 8 + list + 16 + 7 + 1);
            }
        }
        assert_eq!(HostentLayout::new(0x1000, 4, 7, 1).unwrap().end, 24 + 4 + 8);
        assert_eq!(
            HostentLayout::new(0x1001, 4, 7, 1).unwrap().end,
            7 + 24 + 4 + 8
        );
        // Inside nscd: one pointer more.
        assert_eq!(HostentLayout::new(0x1000, 4, 7, 2).unwrap().end, 32 + 4 + 8);
        assert_eq!(HostentLayout::new(0, usize::MAX - 30, 7, 1), None);
        assert_eq!(HostentLayout::new(0, 4, 7, usize::MAX), None);
        assert_eq!(HostentLayout::new(0, 4, 7, usize::MAX / 8), None);
    }

    #[test]
    fn tuple_layout_is_aligned_and_exact() {
        assert_eq!(size_of::<GaihAddrtuple>(), 40);
        for buf in 0x2000..0x2010usize {
            let worst = TupleLayout::new(buf, 2, 10).unwrap();
            for tuples in 0..=2 {
                let l = TupleLayout::new(buf, tuples, 10).unwrap();
                assert_eq!((buf + l.first) % 8, 0);
                assert_eq!((buf + l.tuple(1)) % 8, 0);
                assert_eq!(l.name, 0);
                assert!(l.first >= 11 && l.first < 19);
                let end = if tuples == 0 {
                    11
                } else {
                    l.first + 40 * tuples
                };
                assert_eq!(l.end, end);
                // Only the end depends on the number of tuples.
                assert_eq!((l.name, l.first), (worst.name, worst.first));
            }
        }
    }

    #[test]
    fn statuses_follow_the_contract() {
        assert_eq!(
            *Failure::of(Miss::NotOurs),
            Failure {
                status: 0,
                errno: libc::ENOENT,
                h_errno: 1
            }
        );
        let f = Failure::of(Miss::NoData);
        assert_eq!((f.status, f.h_errno), (0, 4));
        assert_eq!(
            *Failure::of(Miss::AllDown),
            Failure {
                status: -2,
                errno: libc::EAGAIN,
                h_errno: 2
            }
        );
        let f = Failure::of(Miss::Unavailable);
        assert_eq!((f.status, f.h_errno), (-1, 3));
        assert_eq!(
            Failure::TOO_SMALL,
            Failure {
                status: -2,
                errno: libc::ERANGE,
                h_errno: -1
            }
        );
        for f in [
            Failure::UNAVAILABLE,
            Failure::NOT_OURS,
            Failure::NO_DATA,
            Failure::ALL_DOWN,
            Failure::BAD_FAMILY,
        ] {
            assert_ne!(f.errno, 0);
        }
    }

    #[test]
    fn addr_words_keep_byte_order() {
        let b = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xfd, 0, 0, 9];
        let w = addr_words(b);
        assert_eq!(w[0].to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(w[3].to_ne_bytes(), [0xfd, 0, 0, 9]);
    }
}
