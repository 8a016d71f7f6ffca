//! The NSS read path over a *valid* table that the input then damages word by word: gets past the
//! header checks, so every field a reader trusts (index entries, lengths, schedules, families,
//! policy codes, counters) is attacked. Lookups must stay total and in bounds. The table is of a
//! small, odd capacity, so every word of it is in reach, the last record's window reaches into
//! the padding and backend positions past the capacity exist in the windows.
#![no_main]

use lbfo_core::cmd::{parse_line, Line};
use lbfo_core::shm::{CountersView, Layout, TableView, Want, Writer};
use lbfo_core::table::{Service, Table};
use lbfo_core::Capacity;
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const SETUP: &[&str] = &[
    "add web.lan 10.0.0.1",
    "add web.lan 10.0.0.2",
    "add web.lan fd00::1",
    "policy f.lan failover",
    "add f.lan 10.0.1.1 prio=1",
    "add f.lan 10.0.1.2 prio=2",
    "policy w.lan weighted",
    "add w.lan 10.0.2.1 weight=3",
    "add w.lan ::2 weight=1",
    "policy l.lan leastused",
    "add l.lan 10.0.3.1",
    "add l.lan 10.0.3.2 weight=5",
];

/// Four services of three backends each: every service of `SETUP` fills one.
const CAPACITY: Capacity = match Capacity::new(4, 3) {
    Some(c) => c,
    None => Capacity::MAX,
};

/// The table and counters, built once; each run damages some words and puts them back after.
fn shared() -> &'static (Vec<AtomicU64>, Vec<AtomicU64>) {
    static P: OnceLock<(Vec<AtomicU64>, Vec<AtomicU64>)> = OnceLock::new();
    P.get_or_init(|| {
        let layout = Layout::new(CAPACITY);
        let table: Vec<AtomicU64> = (0..layout.total_words()).map(|_| AtomicU64::new(0)).collect();
        let counters: Vec<AtomicU64> = (0..layout.counters_words()).map(|_| AtomicU64::new(0)).collect();
        let w = Writer::init(&table, 7, CAPACITY).expect("table size");
        CountersView::init(&counters, 7, layout);
        let mut slots: Vec<Option<Service>> = vec![None; CAPACITY.services()];
        let mut t = Table::with_capacity(&mut slots, CAPACITY);
        for l in SETUP {
            let Ok(Some(Line::Command(c))) = parse_line(l) else { unreachable!() };
            let ch = t.apply(&c).expect("setup applies");
            w.write_service(ch.slot, t.get(ch.slot));
        }
        w.write_index(t.iter().map(|(i, s)| (i, &s.name)));
        (table, counters)
    })
}

fuzz_target!(|data: &[u8]| {
    let (table, counters) = shared();
    // Any word of the table: it is small.
    let mut undo = Vec::new();
    for m in data.chunks_exact(10) {
        let at = usize::from(u16::from_le_bytes([m[0], m[1]])) % table.len();
        let v = u64::from_le_bytes(m[2..10].try_into().unwrap_or_default());
        undo.push((at, table[at].swap(v, Ordering::Relaxed)));
    }
    if let Ok(view) = TableView::new_checked(table) {
        let c = CountersView::new_checked(counters, &view);
        for name in ["web.lan", "f.lan", "w.lan", "l.lan", "nope.lan"] {
            for want in [Want::V4, Want::V6, Want::Any] {
                let _ = view.lookup(name.as_bytes(), want, c.as_ref());
            }
        }
        for slot in 0..4 {
            let _ = view.service(slot);
        }
    }
    for (at, v) in undo.into_iter().rev() {
        table[at].store(v, Ordering::Relaxed);
    }
});
