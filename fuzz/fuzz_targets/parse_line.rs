//! The command language (config files and FIFO lines): any bytes parse to a command, nothing,
//! or an error that renders; a parsed command applies to a table or fails cleanly; a command
//! printed back and parsed again is the same command.
#![no_main]

use lbfo_core::cmd::{parse_bytes, parse_line, Line};
use lbfo_core::table::{Service, Table};
use libfuzzer_sys::fuzz_target;
use std::fmt::Write;

fuzz_target!(|data: &[u8]| {
    let mut slots: Vec<Option<Service>> = vec![None; 4];
    let mut table = Table::new(&mut slots);
    let mut sink = String::new();
    // Every line of the input, as a config file or a burst of FIFO lines would be.
    for line in data.split(|&b| b == b'\n') {
        match parse_bytes(line) {
            Ok(Some(Line::Command(cmd))) => {
                let _ = write!(sink, "{:?}", table.apply(&cmd));
                let shown = cmd.to_string();
                assert_eq!(parse_line(&shown), Ok(Some(Line::Command(cmd))), "{shown}");
            }
            Ok(Some(Line::Setting(s))) => {
                let _ = write!(sink, "{s:?}");
            }
            Ok(None) => {}
            Err(e) => {
                assert!(e.col >= 1 && e.col <= line.len() + 2, "column {} outside a {}-byte line", e.col, line.len());
                let _ = write!(sink, "{e}");
            }
        }
        sink.clear();
    }
});
