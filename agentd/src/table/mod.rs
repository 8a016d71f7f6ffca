//! What the agent writes for others to read: the shared table file and its counters segment
//! ([`file`](mod@file)), the state file that survives restarts ([`state`]) and the dnsmasq hosts-file
//! export ([`export`]).

pub mod export;
pub mod file;
pub mod state;
