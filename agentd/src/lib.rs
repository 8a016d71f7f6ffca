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

/// The C library's text for errno `n` (strerror), lower-cased, as the agent logs it: "no such file
/// or directory". One source for every message (std's `io::Error` uses the same text), and on
/// the routers no second table of errno strings (nix's `Errno::desc`) in the binary.
pub fn errno_text(n: i32) -> String {
    let mut s = std::io::Error::from_raw_os_error(n).to_string();
    // std appends " (os error N)".
    if let Some(i) = s.find(" (os error") {
        s.truncate(i);
    }
    s.make_ascii_lowercase();
    s
}
pub mod health;
pub mod keyfile;
pub mod malloc;
pub mod net;
pub mod replica;
pub mod shm;
pub mod state;
pub mod status;
pub mod tablefile;
pub mod vecmap;
pub mod wire;
