//! `lbfo-agentd` as a library: the agent's modules, so that the binary (`main.rs`) and the fuzz
//! targets in `fuzz/` drive the same code. Nothing here is a stable API; the crate's interface is
//! the `lbfo-agentd` command, its config language and its wire format (`wire`).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod cluster;
pub mod config;
pub mod export;
pub mod fifo;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod keyfile;
pub mod net;
pub mod replica;
pub mod shm;
pub mod state;
pub mod status;
pub mod tablefile;
pub mod vecmap;
pub mod wire;
