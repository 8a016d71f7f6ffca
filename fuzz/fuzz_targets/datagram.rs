//! The cluster's receive path over arbitrary datagrams, with and without a valid MAC: the first
//! byte picks whether the rest is a datagram as received or a message that is signed with the test
//! key first (so mutations get past authentication). Decoding, the entry checks, freshness, the
//! replay window, the replica's merge, the digest replies and publishing must never panic, and a
//! datagram seen twice must change nothing the second time. See `agentd/src/cluster/fuzzing.rs`, which
//! also makes the seed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lbfo_agentd::cluster::fuzzing::receive(data));
