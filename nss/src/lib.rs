//! `libnss_lbfo.so.2`: the glibc NSS hosts module that answers lbfo service names.
//!
//! With `hosts: lbfo files dns` in nsswitch.conf, glibc asks this module first. For a name in the
//! agent's shared table it answers at once with the one backend per family that the service's
//! policy picks and counts that use; any other name falls through to the next source.
//!
//! - [`abi`]: the four `_nss_lbfo_gethostbyname*_r` entry points, the nscd init hook and the
//!   panic handler.
//! - [`answer`]: NSS statuses and the exact layout of the caller's buffer (pure, safe).
//! - [`map`]: the lazily mapped table, its replacement, the counters segment (lock-free).
//!
//! **The module never writes the table**, allocates nothing, takes no lock, makes no syscall on
//! the steady-state path, and has no panic path (proved at link time, see [`abi`]). `unsafe` is
//! allowed only in `abi` (the C ABI) and `map` (the mappings).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

pub mod abi;
pub mod answer;
pub mod map;
