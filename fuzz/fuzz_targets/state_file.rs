//! The state file's decoder over arbitrary bytes (a file damaged on disk, cut short, or written
//! by someone else): it must give what decodes and say what did not, never panic or hang; and
//! what it gives, written again, must read back whole and the same.
#![no_main]

use lbfo_agentd::table::state::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((saved, _damage)) = decode(data) else {
        return;
    };
    let lines: Vec<String> = saved.table.iter().map(ToString::to_string).collect();
    let again = encode(saved.saved_ms, lines, &saved.replica);
    let (back, damage) = decode(&again).expect("what the agent writes reads back");
    assert_eq!(damage.first, None, "what the agent writes is whole");
    assert_eq!(back.saved_ms, saved.saved_ms);
    assert_eq!(back.table, saved.table);
    assert_eq!(back.replica, saved.replica);
});
