//! What the admin says to the agent: the command line ([`cli`]), the config file ([`config`]),
//! the command FIFO ([`fifo`]) and the cluster key file ([`keyfile`]).

pub mod cli;
pub mod config;
pub mod fifo;
pub mod keyfile;
