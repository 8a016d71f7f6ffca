//! lbfo's core: the service table, its shared-memory form, the policies and the command language.
//!
//! `no_std` and allocation-free, so the NSS module (which runs inside every process on the
//! machine) can share it with the agent. Nothing here does I/O or reads a clock: the agent passes
//! time in and does the mapping; this crate only interprets memory it is given, and it does so
//! through checked views that cannot panic on any content.
//!
//! - [`addr`]: IP addresses parsed and shown as `core::net` does, in less code.
//! - [`name`]: service names, case folding and hashing.
//! - [`cmd`]: the one parser for config files and FIFO lines.
//! - [`capacity`]: how many services and backends a table holds, and the limits of that.
//! - [`table`]: the agent's table and how commands change it.
//! - [`policy`]: the five policies, their names and codes (a leaf every other module may use).
//! - [`schedule`]: schedules that make each policy a constant-time pick.
//! - [`shm`]: the shared-memory layout, its writer and its checked reader.
//! - [`atomic`]: the shared word type (64-bit atomics, or a stand-in where the target lacks them).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod addr;
pub mod atomic;
pub mod capacity;
pub mod cmd;
pub mod name;
pub mod policy;
pub mod schedule;
pub mod shm;
pub mod table;

pub use capacity::{Capacity, MAX_BACKENDS, MAX_SERVICES};
pub use cmd::{parse_line, Command, Line, ParseError, Setting};
pub use name::{Name, Query};
pub use policy::Policy;
pub use shm::{Answer, CountersView, Lookup, Miss, Picks, TableView, Turns, Want, Writer};
pub use table::{Service, Table};

/// The property tests' one generator: xorshift64, deterministic from its seed (a fixed seed per
/// test, so a failure repeats), no dependency.
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (not 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One of `from` (not empty).
    pub(crate) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}
