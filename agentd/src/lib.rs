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

/// The property tests' generator: the one of the tests crate (`tests/src/rng.rs`), so a seed
/// means the same sequence in the agent's tests and in the end-to-end tests and tools.
#[cfg(test)]
pub(crate) use lbfo_tests::TestRng;
