//! The NSS read path over arbitrary table bytes: a hostile or corrupted table file must give a
//! clean outcome (usually "not a table"), never a panic, a hang or an out-of-bounds read.
#![no_main]

use lbfo_core::shm::{TableView, Want};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::AtomicU64;

fuzz_target!(|data: &[u8]| {
    let words: Vec<AtomicU64> = data
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            AtomicU64::new(u64::from_le_bytes(w))
        })
        .collect();
    if let Ok(view) = TableView::new_checked(&words) {
        for name in [&b"web.lan"[..], b"a", b"", b"x.y.z."] {
            for want in [Want::V4, Want::V6, Want::Any] {
                let _ = view.lookup(name, want, None);
            }
        }
        for slot in 0..view.layout().max_services.min(8) {
            let _ = view.service(slot);
        }
    }
});
