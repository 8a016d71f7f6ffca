//! `lbfo-agentd` as a library: the agent's modules, so that the binary (`main.rs`) and the fuzz
//! targets in `fuzz/` drive the same code. Nothing here is a stable API; the crate's interface is
//! the `lbfo-agentd` command, its config language and its wire format (`wire`).
//!
//! `unsafe` code lives in [`sys`] only; every other module is `#![deny(unsafe_code)]`
//! (`scripts/unsafe-fence.sh` checks it).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod cluster;
pub mod control;
pub mod health;
pub mod serve;
pub mod status;
pub mod sys;
pub mod table;
pub mod vecmap;

/// A tiny deterministic generator (xorshift) for the property tests (no dependency needed).
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
