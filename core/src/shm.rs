//! The shared-memory table: its layout, the agent's writer and the lookups' checked reader.
//!
//! Everything is a `u64` word accessed atomically, so readers and the writer never race in the
//! language's sense, and readers never lock and never block the writer. Layout (word offsets):
//!
//! ```text
//! header   HEADER_WORDS      magic, layout version, capacities, total size, global seq,
//!                            heartbeat, retired flag, generation, counters segment id,
//!                            services, tamper counts (counters, counters header)
//! index    index_slots       open addressing by name hash: (hash >> 32) << 32 | (slot + 1)
//! services max_services      per slot: seq, meta, hash, name, schedules (v4, v6), backends
//! padding                    up to a whole record of MAX_BACKENDS backends past the last one
//! ```
//!
//! **Sized by its capacity**: a table holds `max_services` records of `max_backends` backends
//! (the `capacity` setting, [`Layout::new`]); everything else in the layout follows from those
//! two, and [`TableView::new_checked`] accepts a header only if it is exactly the layout of a
//! capacity within the limits. A lookup reads a record as a fixed window of [`MAX_BACKENDS`]
//! backends whatever the capacity (so its reads need no bounds checks of their own); the padding
//! keeps the last record's window inside the table, and a window's backends past the record's own
//! are never named by its schedules.
//!
//! **Consistency** is two seqlocks: the header's `seq` guards the index (changed only when a
//! service appears or vanishes), each record's own `seq` guards that record. A hit is read under
//! its record's seqlock, the name compared inside it; a miss under the index's. A reader that
//! sees an odd or changed sequence retries, at most [`MAX_RETRIES`] times, then reports
//! [`Lookup::Unavailable`]; it never acts on a torn record.
//!
//! **Untrusted bytes**: [`TableView::new_checked`] validates the header against the mapping's
//! length, and every later access is bounds-checked, so a corrupted or hostile table makes lookups
//! fall through, never panic or read out of bounds.
//!
//! **A record's meta word**: byte 0 the name's length, byte 1 the *pick code* (how a lookup
//! picks: a [`Policy`] code), bytes 3 and 4 the two schedules' lengths, bit 40 "present", bit
//! 41 "the policy is `fastest`". `fastest` is written with roundrobin's pick code over a
//! schedule of its fastest set, so a lookup picks it by turn exactly as it picks roundrobin (no
//! extra instruction, and a module built before `fastest` existed answers it correctly); only
//! readers that show the policy (`status`) read bit 41. A backend's flags word: byte 0 its
//! family, bit 8 up, bit 9 in the fastest set, the high half its weight.
//!
//! **Usage counters** live in a separate segment (see [`CountersView`]) because every lookup writes
//! them while the table itself stays read-only to lookups.

use crate::atomic::AtomicU64;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::sync::atomic::{fence, Ordering};

use crate::capacity::{Capacity, MAX_BACKENDS};
use crate::name::{folded_word, must_match, Name, Query, MAX_NAME_LEN};
use crate::policy::Policy;
use crate::schedule::{Family, Schedule, SCHED_LEN};
use crate::table::{Backend, Service};

/// `LBFOTAB` and a format byte, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"LBFOTAB\x01");
/// Bumped whenever the meaning of any word changes (2: the index hash is `name::hash_query`'s
/// word-at-a-time mix, no longer FNV-1a; 3: that hash is one folded multiply per sixteen bytes,
/// case folded by or-ing bit 5 into every byte; 4: records of `max_backends` backends, any
/// capacity within the limits, and padding after the last record and the last counters row).
pub const LAYOUT_VERSION: u64 = 4;
/// Words in the header.
pub const HEADER_WORDS: usize = 16;
/// How often a reader retries a changing table before giving up.
pub const MAX_RETRIES: usize = 64;
/// The magic of the counters segment.
pub const COUNTERS_MAGIC: u64 = u64::from_le_bytes(*b"LBFOCNT\x01");
/// Words before the first service's counters.
pub const COUNTERS_HEADER_WORDS: usize = 4;
/// No counters segment.
pub const NO_COUNTERS: u64 = u64::MAX;

const NAME_WORDS: usize = 32;
const SCHED_WORDS: usize = SCHED_LEN / 8;
const BACKEND_WORDS: usize = 5;

// Header word offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_MAX_SERVICES: usize = 2;
const H_MAX_BACKENDS: usize = 3;
const H_INDEX_SLOTS: usize = 4;
const H_SCHED_LEN: usize = 5;
const H_SERVICE_WORDS: usize = 6;
const H_TOTAL_WORDS: usize = 7;
const H_SEQ: usize = 8;
const H_HEARTBEAT: usize = 9;
const H_RETIRED: usize = 10;
const H_GENERATION: usize = 11;
const H_COUNTERS: usize = 12;
const H_SERVICES: usize = 13;
/// How often the agent found a usage counter moved by something other than lookups.
const H_TAMPER_COUNTS: usize = 14;
/// How often the agent found the counters segment's header overwritten.
const H_TAMPER_HEADER: usize = 15;

// Record word offsets.
const R_SEQ: usize = 0;
const R_META: usize = 1;
const R_HASH: usize = 2;
const R_NAME: usize = 3;
/// Per word of the name's first two: the bits a query's word must match (all but bit 5 of each
/// letter byte), so comparing a query in any case is one xor and one and per word.
const R_MUST: usize = R_NAME + NAME_WORDS;
const MUST_WORDS: usize = 2;
const R_SCHED4: usize = R_MUST + MUST_WORDS;
const R_SCHED6: usize = R_SCHED4 + SCHED_WORDS;
const R_BACKENDS: usize = R_SCHED6 + SCHED_WORDS;

/// Words in the window a lookup reads a record through: the record's head and
/// [`MAX_BACKENDS`] backends, the record's own and (for a smaller capacity) what follows it.
const RECORD_WORDS: usize = R_BACKENDS + MAX_BACKENDS * BACKEND_WORDS;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// The shape of a table: its capacities and the sizes that follow from them, as its header
/// records them. Every valid layout is [`Layout::new`] of some [`Capacity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Service slots.
    pub max_services: usize,
    /// Backend positions per service.
    pub max_backends: usize,
    /// Index slots (a power of two).
    pub index_slots: usize,
    /// Entries per schedule (a multiple of 8).
    pub sched_len: usize,
}

impl Layout {
    /// The layout of the largest capacity: what every valid table fits in.
    pub const MAX: Layout = Layout::new(Capacity::MAX);

    /// The layout of a table of `capacity`: the index twice the services, rounded up to a power
    /// of two, so probes stay short.
    pub const fn new(capacity: Capacity) -> Layout {
        Layout {
            max_services: capacity.services(),
            max_backends: capacity.backends(),
            index_slots: (2 * capacity.services()).next_power_of_two(),
            sched_len: SCHED_LEN,
        }
    }

    /// The capacity this layout is of, if it is the layout of one ([`Layout::new`]).
    pub fn capacity(&self) -> Option<Capacity> {
        let c = Capacity::new(self.max_services, self.max_backends)?;
        (Layout::new(c) == *self).then_some(c)
    }

    /// Words in one service record.
    pub const fn service_words(&self) -> usize {
        R_BACKENDS + self.max_backends * BACKEND_WORDS
    }

    /// Words after the last record, so that its lookup window of [`MAX_BACKENDS`] backends stays
    /// inside the table (none at the largest capacity).
    const fn padding_words(&self) -> usize {
        RECORD_WORDS.saturating_sub(self.service_words())
    }

    /// Words in the whole table.
    pub const fn total_words(&self) -> usize {
        HEADER_WORDS
            + self.index_slots
            + self.max_services * self.service_words()
            + self.padding_words()
    }

    /// Words in the matching counters segment: the header, a row per service (its turn and a
    /// count per backend), and padding so the last row's window of [`COUNTER_STRIDE`] words
    /// stays inside the segment.
    pub const fn counters_words(&self) -> usize {
        COUNTERS_HEADER_WORDS
            + self.max_services * (1 + self.max_backends)
            + MAX_BACKENDS.saturating_sub(self.max_backends)
    }

    fn record(&self, slot: usize) -> usize {
        HEADER_WORDS + self.index_slots + slot * self.service_words()
    }
}

/// Why a mapping is not a usable table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewError {
    /// Shorter than a header.
    Short,
    /// Not an lbfo table.
    BadMagic,
    /// Written by an incompatible version.
    BadVersion(u64),
    /// Capacities that do not add up, beyond the limits, or more than the mapping holds.
    BadLayout,
    /// The agent replaced this table (see [`TableView::retired`]).
    Retired,
}

impl core::fmt::Display for ViewError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ViewError::Short => f.write_str("shorter than a table header"),
            ViewError::BadMagic => f.write_str("not an lbfo table (bad magic)"),
            ViewError::BadVersion(v) => {
                write!(f, "table layout version {v}, expected {LAYOUT_VERSION}")
            }
            ViewError::BadLayout => f.write_str(
                "header capacities beyond the limits or inconsistent with the table size",
            ),
            ViewError::Retired => f.write_str("retired: the agent replaced it"),
        }
    }
}

/// Which addresses a lookup wants. The discriminants are masks of a record's two schedule
/// lengths (v4 in the low byte, v6 in the high one), so a lookup keeps the wanted ones with one
/// `and`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Want {
    /// One IPv4 address.
    V4 = 0x00ff,
    /// One IPv6 address.
    V6 = 0xff00,
    /// One of each family the service has (getaddrinfo with AF_UNSPEC).
    Any = 0xffff,
}

/// A family not picked, in the positions a lookup counts: past every backend position.
const UNUSED: u8 = u8::MAX;
const _: () = assert!(MAX_BACKENDS < UNUSED as usize);

/// The addresses picked for one lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Answer {
    /// The IPv4 pick, if asked for and present.
    pub v4: Option<Ipv4Addr>,
    /// The IPv6 pick, if asked for and present.
    pub v6: Option<Ipv6Addr>,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The name is a service and the policy picked these.
    Found(Answer),
    /// The name is not a service here: let the next source answer.
    NotOurs,
    /// The service exists but has no eligible backend of the wanted family, though it has some of
    /// the other.
    NoData,
    /// The service exists but no backend is eligible: all down or drained.
    AllDown,
    /// The table kept changing under the reader, or is damaged.
    Unavailable,
}

/// Why a lookup picked no address: the outcomes of [`Lookup`] but `Found`, as
/// [`TableView::lookup_into`] returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// As [`Lookup::NotOurs`].
    NotOurs,
    /// As [`Lookup::NoData`].
    NoData,
    /// As [`Lookup::AllDown`].
    AllDown,
    /// As [`Lookup::Unavailable`].
    Unavailable,
}

impl From<Miss> for Lookup {
    fn from(m: Miss) -> Lookup {
        match m {
            Miss::NotOurs => Lookup::NotOurs,
            Miss::NoData => Lookup::NoData,
            Miss::AllDown => Lookup::AllDown,
            Miss::Unavailable => Lookup::Unavailable,
        }
    }
}

/// The addresses one lookup picked, raw, as [`TableView::lookup_into`] leaves them: the form the
/// NSS module copies into its caller's buffer (three aligned words, where an [`Answer`] is two
/// unaligned options). Only the families named in `has` were picked; the other field holds
/// whatever was there before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Picks {
    /// The IPv4 address: its four bytes, network order, in memory order (as `in_addr` holds it).
    pub v4: u32,
    /// The IPv6 address: its sixteen bytes, network order, in memory order (as `in6_addr`).
    pub v6: [u64; 2],
    /// [`Picks::V4`] and / or [`Picks::V6`]: which of the two are answers.
    pub has: u8,
}

impl Picks {
    /// `has` bit: `v4` is an answer.
    pub const V4: u8 = 1;
    /// `has` bit: `v6` is an answer.
    pub const V6: u8 = 2;

    /// The IPv4 address, if picked.
    pub fn v4(&self) -> Option<Ipv4Addr> {
        (self.has & Picks::V4 != 0).then(|| Ipv4Addr::from(self.v4.to_ne_bytes()))
    }

    /// The IPv6 address's bytes in network order (meaningful if picked).
    pub fn v6_octets(&self) -> [u8; 16] {
        let [a, b, c, d, e, f, g, h] = self.v6[0].to_ne_bytes();
        let [i, j, k, l, m, n, o, p] = self.v6[1].to_ne_bytes();
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]
    }

    /// The IPv6 address, if picked.
    pub fn v6(&self) -> Option<Ipv6Addr> {
        (self.has & Picks::V6 != 0).then(|| Ipv6Addr::from(self.v6_octets()))
    }

    /// How many addresses were picked (one per family at most).
    #[inline]
    pub fn count(&self) -> usize {
        usize::from(self.has & Picks::V4) + usize::from(self.has >> 1 & 1)
    }

    /// The picks as an [`Answer`].
    pub fn answer(&self) -> Answer {
        Answer {
            v4: self.v4(),
            v6: self.v6(),
        }
    }
}

/// Where a lookup takes its turn (the number that rotates `roundrobin` and `weighted` through their
/// schedules) and where it counts the backend it returned.
#[derive(Debug, Clone, Copy)]
pub enum Turns<'a> {
    /// The shared counters segment: turns and usage counts are shared by every process.
    Shared(CountersView<'a>),
    /// A counters segment mapped read-only: `leastused` reads its counts, turns come from the
    /// process-local counters, nothing is counted.
    ReadOnly(CountersView<'a>, &'a [AtomicU64]),
    /// No counters segment: turns come from these process-local counters (service slot modulo
    /// their number; none means always turn 0), nothing is counted.
    Local(&'a [AtomicU64]),
}

impl Turns<'_> {
    fn counters(&self) -> Option<&CountersView<'_>> {
        match self {
            Turns::Shared(c) | Turns::ReadOnly(c, _) => Some(c),
            Turns::Local(_) => None,
        }
    }

    /// The turn counter and the usage counters of the service in `slot`, found (and
    /// bounds-checked) once per attempt, for [`Tally::take`] and [`Tally::bump`].
    #[inline(always)]
    fn tally(&self, slot: usize) -> Tally<'_> {
        match self {
            Turns::Shared(c) => {
                let counts = c.row(slot);
                Tally {
                    turn: counts.map(|row| &row[0]),
                    counts,
                }
            }
            Turns::ReadOnly(_, local) | Turns::Local(local) => Tally {
                turn: slot.checked_rem(local.len()).and_then(|i| local.get(i)),
                counts: None,
            },
        }
    }
}

/// Where one lookup of one service takes its turn and counts its answer ([`Turns::tally`]).
#[derive(Clone, Copy)]
struct Tally<'t> {
    /// The turn counter; none means always turn 0.
    turn: Option<&'t AtomicU64>,
    /// The service's row in a writable counters segment (the turn, then one count per backend
    /// position); none when nothing is counted.
    counts: Option<&'t [AtomicU64; COUNTER_STRIDE]>,
}

impl Tally<'_> {
    /// Takes the next turn.
    #[inline(always)]
    fn take(&self) -> u64 {
        // Relaxed: a turn only has to be unique, it orders no other memory.
        self.turn.map_or(0, |t| t.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts the uses of the positions picked (`[v4, v6]`, [`UNUSED`] for none).
    #[inline(always)]
    fn bump(&self, used: [u8; 2]) {
        if let Some(row) = self.counts {
            for pos in used {
                // One compare skips both an unused family and a position past the row.
                if let Some(count) = row.get(1 + usize::from(pos)) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Word `at` of `w`, or 0 past the end: the cold readers (`service`, `status`) index only through
/// this and [`load`], so no content of a mapping can make them panic.
fn words_of(w: &[AtomicU64], at: usize) -> u64 {
    load(w, at, Ordering::Relaxed)
}

/// Word `at` of `w` loaded with `order`, or 0 past the end.
fn load(w: &[AtomicU64], at: usize, order: Ordering) -> u64 {
    w.get(at).map_or(0, |x| x.load(order))
}

fn byte_at(w: &[AtomicU64], base: usize, i: usize) -> u8 {
    (words_of(w, base.wrapping_add(i / 8)) >> (8 * (i % 8))) as u8
}

/// The header a view has when its mapping is shorter than one (only an unchecked view can be).
static NO_HEADER: [AtomicU64; HEADER_WORDS] = [const { AtomicU64::new(0) }; HEADER_WORDS];

/// A checked, read-only view of a mapped table; what the NSS module and `status` use.
///
/// The view holds the header, the index and the records as separate slices of exactly the sizes
/// the layout gives (`new_checked` guarantees the mapping holds them), and a lookup takes a record
/// as a fixed-size array of its head plus its backends: so no table content can make a method
/// panic or read out of bounds, and the lookup path checks bounds once per record, not per word.
#[derive(Debug, Clone, Copy)]
pub struct TableView<'a> {
    w: &'a [AtomicU64],
    layout: Layout,
    /// The first [`HEADER_WORDS`] of `w` ([`NO_HEADER`] if `w` is shorter).
    header: &'a [AtomicU64; HEADER_WORDS],
    /// The index: exactly `layout.index_slots` words (none if `w` is shorter).
    index: &'a [AtomicU64],
    /// The records: exactly `max_services` records of `record_words`, and the padding (none if
    /// `w` is shorter).
    records: &'a [AtomicU64],
    /// Words per service record (derived from `layout`). A byte, as every record is at most
    /// [`RECORD_WORDS`] long: the compiler then knows that a record's offset from a 32-bit slot
    /// cannot overflow, and the lookup path checks it against the records part only (the
    /// benchmark counts the instructions this saves).
    record_words: u8,
}

const _: () = assert!(RECORD_WORDS <= u8::MAX as usize);

impl<'a> TableView<'a> {
    /// Validates the header against the mapping. Accesses after this cannot go out of bounds.
    pub fn new_checked(w: &'a [AtomicU64]) -> Result<TableView<'a>, ViewError> {
        if w.len() < HEADER_WORDS {
            return Err(ViewError::Short);
        }
        let h = |i| words_of(w, i);
        if h(H_MAGIC) != MAGIC {
            return Err(ViewError::BadMagic);
        }
        if h(H_VERSION) != LAYOUT_VERSION {
            return Err(ViewError::BadVersion(h(H_VERSION)));
        }
        // Only the exact layout of a capacity within the limits, so no header can make a reader
        // size anything from numbers other than those the limits allow.
        let field = |i| usize::try_from(h(i)).unwrap_or(usize::MAX);
        let layout = Layout {
            max_services: field(H_MAX_SERVICES),
            max_backends: field(H_MAX_BACKENDS),
            index_slots: field(H_INDEX_SLOTS),
            sched_len: field(H_SCHED_LEN),
        };
        let ok = layout.capacity().is_some()
            && h(H_SERVICE_WORDS) == layout.service_words() as u64
            && h(H_TOTAL_WORDS) == layout.total_words() as u64
            && layout.total_words() <= w.len();
        if !ok {
            return Err(ViewError::BadLayout);
        }
        Ok(TableView::with_layout(w, layout))
    }

    /// A view of `w` read with `layout`; for tables whose header was checked (or just written).
    /// Parts that `w` is too short for are empty (nothing is found in them).
    fn with_layout(w: &'a [AtomicU64], layout: Layout) -> TableView<'a> {
        let record_words = layout.service_words().min(RECORD_WORDS);
        let part = |at: usize, len: Option<usize>| {
            len.and_then(|len| w.get(at..at.checked_add(len)?))
                .unwrap_or(&[])
        };
        let records_at = HEADER_WORDS.saturating_add(layout.index_slots);
        let records = layout
            .max_services
            .checked_mul(record_words)
            .and_then(|n| n.checked_add(layout.padding_words()));
        TableView {
            w,
            layout,
            header: w.first_chunk().unwrap_or(&NO_HEADER),
            index: part(HEADER_WORDS, Some(layout.index_slots)),
            records: part(records_at, records),
            record_words: record_words as u8,
        }
    }

    /// The capacities in the header.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The random number the agent chose when it created this table.
    pub fn generation(&self) -> u64 {
        self.header[H_GENERATION].load(Ordering::Relaxed)
    }

    /// The SysV shared memory id of the counters segment, or [`NO_COUNTERS`].
    pub fn counters_id(&self) -> u64 {
        // Acquire pairs with the Release in `Writer::set_counters_id`.
        self.w
            .get(H_COUNTERS)
            .map_or(NO_COUNTERS, |x| x.load(Ordering::Acquire))
    }

    /// Whether the agent replaced this table by a new file; readers should map the path again.
    #[inline]
    pub fn retired(&self) -> bool {
        // Acquire pairs with the Release in `Writer::retire` / `retire_any`; nothing is read on the
        // strength of it, but it costs nothing on x86 and keeps the pairing explicit.
        self.header[H_RETIRED].load(Ordering::Acquire) != 0
    }

    /// When the agent last wrote its heartbeat, in milliseconds since the Unix epoch.
    pub fn heartbeat_ms(&self) -> u64 {
        self.header[H_HEARTBEAT].load(Ordering::Relaxed)
    }

    /// The tamper events the agent counted: (usage counters moved by something other than
    /// lookups, rewrites of the counters segment's header).
    pub fn tampered(&self) -> (u64, u64) {
        let at = |i: usize| self.header[i].load(Ordering::Relaxed);
        (at(H_TAMPER_COUNTS), at(H_TAMPER_HEADER))
    }

    /// How many services the agent says the table holds.
    pub fn service_count(&self) -> u64 {
        self.header[H_SERVICES].load(Ordering::Relaxed)
    }

    /// Resolves `query` for `want`, taking a turn (and bumping usage) in `counters` if given.
    ///
    /// Total: any table content gives one of the [`Lookup`] outcomes, in bounded time. Without
    /// counters every lookup takes turn 0; see [`TableView::lookup_with`] for other turn sources.
    pub fn lookup(&self, query: &[u8], want: Want, counters: Option<&CountersView<'_>>) -> Lookup {
        match counters {
            Some(c) => self.lookup_with(query, want, Turns::Shared(*c)),
            None => self.lookup_with(query, want, Turns::Local(&[])),
        }
    }

    /// Resolves `query` (any case, one optional trailing dot) for `want`, taking the turn from
    /// `turns` and counting the use there; [`TableView::lookup_into`] with the picks as an
    /// [`Answer`].
    pub fn lookup_with(&self, query: &[u8], want: Want, turns: Turns<'_>) -> Lookup {
        let Some(query) = Query::new(query) else {
            return Lookup::NotOurs;
        };
        let mut picks = Picks::default();
        match self.lookup_into(&query, want, &turns, &mut picks) {
            Ok(()) => Lookup::Found(picks.answer()),
            Err(miss) => miss.into(),
        }
    }

    /// Resolves `query` for `want`, taking the turn from `turns`, counting the use there, and
    /// leaving the addresses picked in `out` (whose other fields it may overwrite whatever the
    /// outcome).
    ///
    /// Total and panic-free: any table content gives `Ok` or one of the [`Miss`]es, in bounded
    /// time, allocating nothing. This is the NSS module's path: the query comes folded and hashed,
    /// a record is bounds-checked once ([`TableView::record_of`]), the addresses come out as words
    /// ([`Picks`]), and a turn is taken at most once however often the seqlocks make it retry.
    #[inline]
    pub fn lookup_into(
        &self,
        query: &Query<'_>,
        want: Want,
        turns: &Turns<'_>,
        out: &mut Picks,
    ) -> Result<(), Miss> {
        let mut turn = None;
        // The first attempt inline, which is all a lookup needs unless the agent is writing;
        // retries (and their loop state) out of line.
        match self.attempt(query, want, turns, &mut turn, out) {
            Some(done) => done,
            None => self.retry(query.text(), want, turns, turn, out),
        }
    }

    /// [`TableView::lookup_into`]'s remaining attempts after a first one that met a writer.
    #[inline(never)]
    #[cold]
    fn retry(
        &self,
        text: &[u8],
        want: Want,
        turns: &Turns<'_>,
        mut turn: Option<u64>,
        out: &mut Picks,
    ) -> Result<(), Miss> {
        // Hashed again from the text, which is two words: a query passed by reference or value
        // would have to be in memory, and the compiler would store it on every lookup.
        let Some(query) = Query::of_text(text) else {
            return Err(Miss::NotOurs);
        };
        for _ in 1..MAX_RETRIES {
            core::hint::spin_loop();
            if let Some(done) = self.attempt(&query, want, turns, &mut turn, out) {
                return done;
            }
        }
        Err(Miss::Unavailable)
    }

    /// One attempt of a lookup: the outcome, or `None` if the table changed under it (`turn`
    /// keeps the turn taken, so a retry takes no other).
    ///
    /// A hit needs only its record's seqlock: the name is compared inside it, so a consistent
    /// record that holds the query is an answer, whatever happened to the index meanwhile (a
    /// slot freed and reused for another name fails the compare or the re-check). A miss is
    /// believed only under the index's seqlock: the index was not being rebuilt and did not
    /// change during the probe.
    #[inline(always)]
    fn attempt(
        &self,
        query: &Query<'_>,
        want: Want,
        turns: &Turns<'_>,
        turn: &mut Option<u64>,
        out: &mut Picks,
    ) -> Option<Result<(), Miss>> {
        let seq = &self.header[H_SEQ];
        // Acquire pairs with the Release that closes `Writer::write_index`.
        let g1 = seq.load(Ordering::Acquire);
        let hash = query.hash();
        let mask = self.index.len().wrapping_sub(1);
        let mut i = hash as usize;
        let miss = 'probe: {
            for _ in 0..self.index.len() {
                i &= mask;
                let Some(e) = self.index.get(i) else {
                    break;
                };
                let e = e.load(Ordering::Relaxed);
                if e == 0 {
                    break;
                }
                if (e ^ hash) >> 32 == 0 {
                    let slot = (e as u32).wrapping_sub(1);
                    let Some(rec) = self.record_of(slot) else {
                        break 'probe Miss::Unavailable;
                    };
                    // Acquire pairs with the Release closing `Writer::write_service`.
                    let s1 = rec.w[R_SEQ].load(Ordering::Acquire);
                    if s1 % 2 == 1 {
                        return None;
                    }
                    if rec.holds(query) {
                        return rec.answer(slot as usize, s1, want, turns, turn, out);
                    }
                }
                i = i.wrapping_add(1);
            }
            Miss::NotOurs
        };
        // Orders the index reads above before the re-check; pairs with the Release fence that
        // follows the odd store in `Writer::write_index`.
        fence(Ordering::Acquire);
        (g1 % 2 == 0 && seq.load(Ordering::Relaxed) == g1).then_some(Err(miss))
    }

    /// Word offset of the record of `slot` in `w` (meaningful for `slot < max_services`).
    fn record(&self, slot: usize) -> usize {
        HEADER_WORDS
            .wrapping_add(self.layout.index_slots)
            .wrapping_add(slot.wrapping_mul(usize::from(self.record_words)))
    }

    /// The record of `slot` as its window of [`RECORD_WORDS`], bounds-checked once; `None` for a
    /// slot past the capacity (the records part ends with less than a window's padding after the
    /// last record; it is empty for a mapping too short for the records, which only an unchecked
    /// view can be).
    #[inline(always)]
    fn record_of(&self, slot: u32) -> Option<Record<'a>> {
        // A slot from the index is below 2^32 and `record_words` below 2^8: on a 64-bit target
        // no overflow, and on a 32-bit one a wrapped offset is still checked.
        let at = (slot as usize).wrapping_mul(usize::from(self.record_words));
        let w = self
            .records
            .get(at..at.wrapping_add(RECORD_WORDS))?
            .first_chunk::<RECORD_WORDS>()?;
        Some(Record { w })
    }

    /// A consistent copy of the service in `slot`, for `status`; `None` for an empty or damaged
    /// slot, or one that kept changing.
    pub fn service(&self, slot: usize) -> Option<Service> {
        if slot >= self.layout.max_services || self.layout.max_backends > MAX_BACKENDS {
            return None;
        }
        let r = self.record(slot);
        for _ in 0..MAX_RETRIES {
            // Acquire pairs with the Release closing `Writer::write_service`.
            let s1 = load(self.w, r.wrapping_add(R_SEQ), Ordering::Acquire);
            if s1 % 2 == 1 {
                continue;
            }
            let got = self.decode(r);
            // Orders the record reads before the re-check; pairs with the Release fence after the
            // odd store in `Writer::write_service`.
            fence(Ordering::Acquire);
            if words_of(self.w, r.wrapping_add(R_SEQ)) == s1 {
                return got;
            }
        }
        None
    }

    fn decode(&self, r: usize) -> Option<Service> {
        let meta = words_of(self.w, r.wrapping_add(R_META));
        if meta >> 40 & 1 == 0 {
            return None;
        }
        let len = (meta & 0xff) as usize;
        let mut name = [0u8; MAX_NAME_LEN];
        for (i, b) in name.iter_mut().enumerate().take(len) {
            *b = byte_at(self.w, r.wrapping_add(R_NAME), i);
        }
        let mut s = Service::new(Name::new_checked(name.get(..len)?).ok()?);
        s.policy = Policy::from_code((meta >> 8) as u8)?;
        if meta >> 41 & 1 == 1 {
            s.policy = Policy::Fastest;
        }
        for pos in 0..self.layout.max_backends {
            let word = |k: usize| {
                words_of(
                    self.w,
                    r.wrapping_add(R_BACKENDS)
                        .wrapping_add(pos.wrapping_mul(BACKEND_WORDS))
                        .wrapping_add(k),
                )
            };
            let (lo, hi, w2) = (word(0), word(1), word(2));
            let addr = match w2 as u8 {
                FAMILY_V4 => IpAddr::V4(Ipv4Addr::from((lo as u32).to_le_bytes())),
                FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(
                    (u128::from(hi) << 64 | u128::from(lo)).to_le_bytes(),
                )),
                _ => continue,
            };
            *s.backends.get_mut(pos)? = Some(Backend {
                addr,
                up: (w2 >> 8) & 1 == 1,
                fast: (w2 >> 9) & 1 == 1,
                weight: (w2 >> 32) as u32,
                prio: word(3) as u32,
                limit: word(4),
            });
        }
        Some(s)
    }
}

/// One service record as a lookup reads it: a fixed-size array (checked once, in
/// [`TableView::record_of`]), so no read of it needs a bounds check of its own.
#[derive(Clone, Copy)]
struct Record<'a> {
    w: &'a [AtomicU64; RECORD_WORDS],
}

impl Record<'_> {
    /// Word `at` of the record, or 0 past it.
    #[inline(always)]
    fn word(&self, at: usize) -> u64 {
        self.w.get(at).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Word `k` (below [`BACKEND_WORDS`]) of backend `pos`, or 0 past the record.
    #[inline(always)]
    fn backend_word(&self, pos: usize, k: usize) -> u64 {
        self.word(
            R_BACKENDS
                .wrapping_add(pos.wrapping_mul(BACKEND_WORDS))
                .wrapping_add(k),
        )
    }

    /// Whether this record holds `query`, compared a word at a time with the stored form (lower
    /// case, zero-padded): the first two words through the record's [`R_MUST`] masks, the rest
    /// folded.
    #[inline(always)]
    fn holds(&self, query: &Query<'_>) -> bool {
        let text = query.text();
        let meta = self.w[R_META].load(Ordering::Relaxed);
        // Of the query's length (the low byte). A query is never empty, so this also tells a
        // present record from a cleared one.
        if meta as u8 as usize != text.len() {
            return false;
        }
        // Past the end of the name both sides are zero (stored padding, `Query`'s padding).
        let [q0, q1] = query.head_raw();
        let differs = |k: usize, q: u64| {
            (self.w[R_NAME + k].load(Ordering::Relaxed) ^ q)
                & self.w[R_MUST + k].load(Ordering::Relaxed)
                != 0
        };
        !differs(0, q0) && !differs(1, q1) && (text.len() <= 16 || self.holds_tail(text))
    }

    /// Whether the name's words from the third on are those of `query`.
    #[inline(never)]
    fn holds_tail(&self, query: &[u8]) -> bool {
        (2..query.len().div_ceil(8))
            .all(|k| self.word(R_NAME.wrapping_add(k)) == folded_word(query, k))
    }

    /// The answer from this record, which holds the query and whose sequence was `s1` before
    /// anything else of it was read: the policy's picks, counted once the sequence is seen
    /// unchanged (so a retry counts nothing twice); `None` if it changed.
    #[inline(always)]
    fn answer(
        &self,
        slot: usize,
        s1: u64,
        want: Want,
        turns: &Turns<'_>,
        turn: &mut Option<u64>,
        out: &mut Picks,
    ) -> Option<Result<(), Miss>> {
        let tally = turns.tally(slot);
        let chosen = self.choose(slot, want, turns, tally, turn, out);
        // Orders the record reads above (the name compared too) before the re-check; pairs with
        // the Release fence after the odd store in `Writer::write_service`.
        fence(Ordering::Acquire);
        if self.w[R_SEQ].load(Ordering::Relaxed) != s1 {
            return None;
        }
        Some(chosen.map(|used| tally.bump(used)))
    }

    /// Applies the record's policy: one backend per wanted family that has an eligible one,
    /// written to `out`; the positions picked (to count), or why there are none.
    ///
    /// The turn is taken (once per lookup: `turn` keeps it across retries) before either family
    /// is picked, and both use it.
    #[inline(always)]
    fn choose(
        &self,
        slot: usize,
        want: Want,
        turns: &Turns<'_>,
        tally: Tally<'_>,
        turn: &mut Option<u64>,
        out: &mut Picks,
    ) -> Result<[u8; 2], Miss> {
        let meta = self.w[R_META].load(Ordering::Relaxed);
        // The two schedules' lengths (bytes 3 and 4), then those of the families wanted.
        let lens = (meta >> 24) as u16;
        let wanted = lens & want as u16;
        // Failover, roundrobin and weighted (the codes below leastused's) pick by turn, here;
        // leastused and unknown codes out of line.
        let code = (meta >> 8) as u8;
        if code >= Policy::LeastUsed.code() {
            return self.choose_least_used(slot, code, lens, wanted, turns, out);
        }
        if wanted == 0 {
            out.has = 0;
            return Err(if lens != 0 {
                Miss::NoData
            } else {
                Miss::AllDown
            });
        }
        let [want4, want6] = wanted.to_le_bytes().map(usize::from);
        let t = match *turn {
            Some(t) => t,
            None => {
                let t = tally.take();
                *turn = Some(t);
                t
            }
        };
        let mut used = [UNUSED; 2];
        let mut has = 0;
        if want4 != 0 {
            let pos = self.scheduled(R_SCHED4, want4, t);
            let (pos, at) = pos
                .and_then(|pos| self.address(pos, FAMILY_V4))
                .ok_or(Miss::Unavailable)?;
            let lo = self.word(at);
            out.v4 = u32::from_ne_bytes((lo as u32).to_le_bytes());
            used[0] = pos;
            has = Picks::V4;
        }
        if want6 != 0 {
            let pos = self.scheduled(R_SCHED6, want6, t);
            let (pos, at) = pos
                .and_then(|pos| self.address(pos, FAMILY_V6))
                .ok_or(Miss::Unavailable)?;
            let [lo, hi] = [self.word(at), self.word(at.wrapping_add(1))];
            out.v6 = [
                u64::from_ne_bytes(lo.to_le_bytes()),
                u64::from_ne_bytes(hi.to_le_bytes()),
            ];
            used[1] = pos;
            has |= Picks::V6;
        }
        out.has = has;
        Ok(used)
    }

    /// [`Record::choose`] for a policy `code` from leastused's on, out of line: leastused, or an
    /// unknown code. `lens` are the two schedules' lengths, `wanted` those wanted.
    ///
    /// Its filling of `out` repeats `choose`'s on purpose: one helper for both, taking the pick
    /// as a closure, made every getaddrinfo hit dearer (scripts/bench.sh counts its instructions),
    /// and the hot path is the one the lookup target is set on.
    #[inline(never)]
    fn choose_least_used(
        &self,
        slot: usize,
        code: u8,
        lens: u16,
        wanted: u16,
        turns: &Turns<'_>,
        out: &mut Picks,
    ) -> Result<[u8; 2], Miss> {
        if Policy::from_code(code) != Some(Policy::LeastUsed) {
            return Err(Miss::Unavailable);
        }
        if wanted == 0 {
            out.has = 0;
            return Err(if lens != 0 {
                Miss::NoData
            } else {
                Miss::AllDown
            });
        }
        let [want4, want6] = wanted.to_le_bytes().map(usize::from);
        let mut used = [UNUSED; 2];
        let mut has = 0;
        if want4 != 0 {
            let pos = (want4 <= SCHED_LEN)
                .then(|| self.least_used(slot, R_SCHED4, want4, turns.counters()));
            let (pos, at) = pos
                .and_then(|pos| self.address(pos, FAMILY_V4))
                .ok_or(Miss::Unavailable)?;
            let lo = self.word(at);
            out.v4 = u32::from_ne_bytes((lo as u32).to_le_bytes());
            used[0] = pos;
            has = Picks::V4;
        }
        if want6 != 0 {
            let pos = (want6 <= SCHED_LEN)
                .then(|| self.least_used(slot, R_SCHED6, want6, turns.counters()));
            let (pos, at) = pos
                .and_then(|pos| self.address(pos, FAMILY_V6))
                .ok_or(Miss::Unavailable)?;
            let [lo, hi] = [self.word(at), self.word(at.wrapping_add(1))];
            out.v6 = [
                u64::from_ne_bytes(lo.to_le_bytes()),
                u64::from_ne_bytes(hi.to_le_bytes()),
            ];
            used[1] = pos;
            has |= Picks::V6;
        }
        out.has = has;
        Ok(used)
    }

    /// The backend position at turn `t` of the schedule at head word `sched` (`len` entries,
    /// not 0); `None` for a schedule longer than [`SCHED_LEN`].
    #[inline(always)]
    fn scheduled(&self, sched: usize, len: usize, t: u64) -> Option<usize> {
        if len > SCHED_LEN {
            return None;
        }
        Some(self.entry(sched, t.checked_rem(len as u64).unwrap_or(0) as usize))
    }

    /// Entry `i` of the schedule at head word `sched`.
    #[inline(always)]
    fn entry(&self, sched: usize, i: usize) -> usize {
        usize::from((self.word(sched.wrapping_add(i / 8)) >> (8 * (i % 8))) as u8)
    }

    /// Backend `pos`'s position (as a byte) and address words, if it is a backend of `family`.
    #[inline(always)]
    fn address(&self, pos: usize, family: u8) -> Option<(u8, usize)> {
        if pos >= MAX_BACKENDS {
            return None;
        }
        let at = R_BACKENDS + pos * BACKEND_WORDS;
        // `MAX_BACKENDS <= 255`, so the position fits a byte. The address words (at `at` and
        // `at + 1`) are left to the caller: an IPv4 answer reads only the first.
        (self.w[at + 2].load(Ordering::Relaxed) as u8 == family).then_some((pos as u8, at))
    }

    /// The position in the schedule at head word `sched` (of `len` entries) with the lowest
    /// count per weight; the first entry without counters.
    fn least_used(
        &self,
        slot: usize,
        sched: usize,
        len: usize,
        counters: Option<&CountersView<'_>>,
    ) -> usize {
        let mut best = self.entry(sched, 0);
        let Some(c) = counters else { return best };
        // Count and weight, widened so `count * weight` cannot overflow (64 x 32 bits).
        let usage = |pos: usize| {
            let weight = u128::from(self.backend_word(pos, 2) >> 32).max(1);
            (u128::from(c.count(slot, pos)), weight)
        };
        let (mut bc, mut bw) = usage(best);
        for i in 1..len {
            let pos = self.entry(sched, i);
            let (cc, cw) = usage(pos);
            if cc * bw < bc * cw {
                (best, bc, bw) = (pos, cc, cw);
            }
        }
        best
    }
}

/// The usage counters: per service slot a turn counter, then one counter per backend position.
///
/// Lookups write here, so it is a separate segment (SysV shared memory, which no user can shrink
/// under a reader), tied to its table by the table's generation number.
#[derive(Debug, Clone, Copy)]
pub struct CountersView<'a> {
    w: &'a [AtomicU64],
    /// Words per service: the turn, then one per backend position of the table's capacity (a
    /// byte, as `TableView::record_words` is).
    stride: u8,
}

/// The words a lookup reads a service's counters through, whatever the capacity: the turn and
/// [`MAX_BACKENDS`] counts (the row's own, then what follows it; the segment's padding keeps the
/// last row's window inside it).
const COUNTER_STRIDE: usize = 1 + MAX_BACKENDS;

impl<'a> CountersView<'a> {
    /// Checks that `w` is the counters segment of the table `view`.
    pub fn new_checked(w: &'a [AtomicU64], view: &TableView<'_>) -> Option<CountersView<'a>> {
        let l = view.layout();
        let ok = w.len() >= l.counters_words()
            && words_of(w, 0) == COUNTERS_MAGIC
            && words_of(w, 1) == view.generation()
            && words_of(w, 2) == l.max_services as u64
            && words_of(w, 3) == l.max_backends as u64;
        ok.then_some(CountersView::with_layout(w, l))
    }

    /// A view of `w` as the counters of a table of `layout`, without checking the segment's
    /// header: for the agent, which formatted (or checked) the segment itself and must not
    /// depend on words every local user can write. Accesses past `w` find nothing.
    pub fn with_layout(w: &'a [AtomicU64], layout: Layout) -> CountersView<'a> {
        CountersView {
            w,
            stride: (1 + layout.max_backends.min(MAX_BACKENDS)) as u8,
        }
    }

    /// Rewrites the header if anything changed it from what [`CountersView::init`] wrote for a
    /// table of `generation` and `layout` (any process can write the segment, and a bad header
    /// sends every new process to process-local turns). Returns whether it had to.
    pub fn repair_header(&self, generation: u64, layout: Layout) -> bool {
        let intact = words_of(self.w, 0) == COUNTERS_MAGIC
            && words_of(self.w, 1) == generation
            && words_of(self.w, 2) == layout.max_services as u64
            && words_of(self.w, 3) == layout.max_backends as u64;
        if !intact {
            CountersView::init(self.w, generation, layout);
        }
        !intact
    }

    /// Writes the header of a fresh, zeroed segment for a table of `generation`.
    pub fn init(w: &[AtomicU64], generation: u64, layout: Layout) {
        let set = |i: usize, v: u64| w.get(i).map(|x| x.store(v, Ordering::Relaxed));
        set(1, generation);
        set(2, layout.max_services as u64);
        set(3, layout.max_backends as u64);
        // Pairs with the Acquire-free checks in `new_checked`: the magic is stored last.
        fence(Ordering::Release);
        set(0, COUNTERS_MAGIC);
    }

    /// Word `i` of `slot`'s row (0: the turn, `1 + pos`: backend `pos`'s count); `None` past
    /// the row or the segment.
    #[inline]
    fn at(&self, slot: usize, i: usize) -> Option<&AtomicU64> {
        if i >= usize::from(self.stride) {
            return None;
        }
        self.w.get(
            slot.wrapping_mul(usize::from(self.stride))
                .wrapping_add(COUNTERS_HEADER_WORDS + i),
        )
    }

    /// The counters of `slot` as their window: its turn, then one per backend position (the
    /// positions past the capacity are the next row's: a lookup counts only positions its
    /// record's schedules name).
    #[inline(always)]
    fn row(&self, slot: usize) -> Option<&[AtomicU64; COUNTER_STRIDE]> {
        let at = slot
            .wrapping_mul(usize::from(self.stride))
            .wrapping_add(COUNTERS_HEADER_WORDS);
        self.w
            .get(at..at.wrapping_add(COUNTER_STRIDE))?
            .first_chunk()
    }

    /// Takes the next turn of the service in `slot`.
    #[inline]
    pub fn take_turn(&self, slot: usize) -> u64 {
        self.at(slot, 0)
            .map_or(0, |t| t.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts one use of backend `pos` of `slot`.
    #[inline]
    pub fn bump(&self, slot: usize, pos: usize) {
        if let Some(c) = self.at(slot, pos.saturating_add(1)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How often backend `pos` of `slot` was returned since its counter was last zeroed.
    pub fn count(&self, slot: usize, pos: usize) -> u64 {
        self.at(slot, pos.saturating_add(1))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The turn counter of `slot`: how many turns lookups took since it was last zeroed.
    pub fn turn(&self, slot: usize) -> u64 {
        self.at(slot, 0).map_or(0, |t| t.load(Ordering::Relaxed))
    }

    /// Sets the turn counter of `slot` and the counts of its positions: for the agent, moving a
    /// service's counters to a new table.
    pub fn restore(&self, slot: usize, turn: u64, counts: impl Iterator<Item = (usize, u64)>) {
        if let Some(t) = self.at(slot, 0) {
            t.store(turn, Ordering::Relaxed);
        }
        for (pos, n) in counts {
            if let Some(c) = self.at(slot, pos.saturating_add(1)) {
                c.store(n, Ordering::Relaxed);
            }
        }
    }

    /// Puts `new` in backend `pos`'s counter of `slot` if it still holds `seen` (a
    /// compare-and-swap, so no lookup counted meanwhile is overwritten); else `Err` with what it
    /// holds. `Err(0)` for a position outside the segment.
    pub fn replace(&self, slot: usize, pos: usize, seen: u64, new: u64) -> Result<(), u64> {
        let c = self
            .at(slot, 1 + pos)
            .filter(|_| pos < MAX_BACKENDS)
            .ok_or(0u64)?;
        c.compare_exchange(seen, new, Ordering::Relaxed, Ordering::Relaxed)
            .map(|_| ())
    }

    /// Zeroes the counters of the positions in `mask`, and the turn if `ticket`.
    pub fn zero(&self, slot: usize, mask: u16, ticket: bool) {
        if ticket {
            if let Some(t) = self.at(slot, 0) {
                t.store(0, Ordering::Relaxed);
            }
        }
        for pos in (0..16).filter(|p| mask >> p & 1 == 1) {
            if let Some(c) = self.at(slot, 1 + pos) {
                c.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The agent's side: the only code that writes a table. One writer per table.
#[derive(Debug)]
pub struct Writer<'a> {
    w: &'a [AtomicU64],
    layout: Layout,
}

impl<'a> Writer<'a> {
    /// Formats `w` (zeroed, at least `Layout::new(capacity).total_words()` long) as an empty
    /// table of `capacity`; `None` if `w` is too short.
    pub fn init(w: &'a [AtomicU64], generation: u64, capacity: Capacity) -> Option<Writer<'a>> {
        let layout = Layout::new(capacity);
        if w.len() < layout.total_words() {
            return None;
        }
        let set = |i: usize, v: u64| w[i].store(v, Ordering::Relaxed);
        set(H_VERSION, LAYOUT_VERSION);
        set(H_MAX_SERVICES, layout.max_services as u64);
        set(H_MAX_BACKENDS, layout.max_backends as u64);
        set(H_INDEX_SLOTS, layout.index_slots as u64);
        set(H_SCHED_LEN, layout.sched_len as u64);
        set(H_SERVICE_WORDS, layout.service_words() as u64);
        set(H_TOTAL_WORDS, layout.total_words() as u64);
        set(H_GENERATION, generation);
        set(H_COUNTERS, NO_COUNTERS);
        fence(Ordering::Release);
        set(H_MAGIC, MAGIC);
        Some(Writer { w, layout })
    }

    /// Takes over an existing table (after an agent restart), keeping the file, its generation
    /// and so the counters readers already have mapped. Any valid table that is not retired; the
    /// caller compares [`Writer::capacity`] with the one it wants.
    pub fn attach(w: &'a [AtomicU64]) -> Result<Writer<'a>, ViewError> {
        let view = TableView::new_checked(w)?;
        if view.retired() {
            return Err(ViewError::Retired);
        }
        let layout = view.layout();
        // A writer killed inside a critical section left a sequence odd: close it.
        for at in core::iter::once(H_SEQ)
            .chain((0..layout.max_services).map(|s| layout.record(s) + R_SEQ))
        {
            let s = w[at].load(Ordering::Relaxed);
            if s % 2 == 1 {
                w[at].store(s + 1, Ordering::Release);
            }
        }
        Ok(Writer { w, layout })
    }

    /// The writer again, over a table this process formatted or attached before (the agent
    /// keeps the mapping, not the writer): O(1), as it checks only that `w` holds `layout`.
    pub fn resume(w: &'a [AtomicU64], layout: Layout) -> Option<Writer<'a>> {
        (layout.capacity().is_some() && w.len() >= layout.total_words())
            .then_some(Writer { w, layout })
    }

    /// The table's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The table's capacity.
    pub fn capacity(&self) -> Capacity {
        // Every writer's layout is a capacity's (`init`, `attach`, `resume` make sure).
        self.layout.capacity().unwrap_or(Capacity::MAX)
    }

    /// A reader's view of what this writer writes.
    pub fn view(&self) -> TableView<'a> {
        TableView::with_layout(self.w, self.layout)
    }

    /// Publishes the service in `slot` (or its absence), with freshly computed schedules.
    pub fn write_service(&self, slot: usize, service: Option<&Service>) {
        if slot >= self.layout.max_services {
            return;
        }
        let r = self.layout.record(slot);
        let seq = &self.w[r + R_SEQ];
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release); // readers that see the new data also see the odd sequence
        let set = |i: usize, v: u64| self.w[r + i].store(v, Ordering::Relaxed);
        let Some(svc) = service else {
            (R_META..self.layout.service_words()).for_each(|i| set(i, 0));
            seq.store(s.wrapping_add(2) & !1, Ordering::Release);
            return;
        };
        // Backends past the table's capacity (a `Table` of the same capacity never has any)
        // are left out, schedules included: a record names only positions it has.
        let beyond = svc.backends.get(self.layout.max_backends..).unwrap_or(&[]);
        let mut within;
        let svc = if beyond.iter().any(Option::is_some) {
            within = *svc;
            within.backends[self.layout.max_backends..].fill(None);
            &within
        } else {
            svc
        };
        let s4 = Schedule::build(svc, Family::V4);
        let s6 = Schedule::build(svc, Family::V6);
        let name = svc.name.as_bytes();
        let (pick, fastest) = match svc.policy {
            Policy::Fastest => (Policy::RoundRobin, 1),
            p => (p, 0),
        };
        let meta = name.len() as u64
            | u64::from(pick.code()) << 8
            | fastest << 41
            | (s4.as_slice().len() as u64) << 24
            | (s6.as_slice().len() as u64) << 32
            | 1 << 40;
        set(R_META, meta);
        set(R_HASH, svc.name.hash());
        pack(name, NAME_WORDS, |i, v| set(R_NAME + i, v));
        pack(name, MUST_WORDS, |i, v| set(R_MUST + i, must_match(v)));
        pack(s4.as_slice(), SCHED_WORDS, |i, v| set(R_SCHED4 + i, v));
        pack(s6.as_slice(), SCHED_WORDS, |i, v| set(R_SCHED6 + i, v));
        for (pos, b) in svc
            .backends
            .iter()
            .enumerate()
            .take(self.layout.max_backends)
        {
            let at = R_BACKENDS + pos * BACKEND_WORDS;
            let mut words = [0u64; BACKEND_WORDS];
            if let Some(b) = b {
                let (family, bytes) = match b.addr {
                    IpAddr::V4(a) => {
                        let mut x = [0u8; 16];
                        x[..4].copy_from_slice(&a.octets());
                        (FAMILY_V4, x)
                    }
                    IpAddr::V6(a) => (FAMILY_V6, a.octets()),
                };
                let (lo, hi) = bytes.split_at(8);
                words[0] = u64::from_le_bytes(lo.try_into().unwrap_or_default());
                words[1] = u64::from_le_bytes(hi.try_into().unwrap_or_default());
                words[2] = u64::from(family)
                    | u64::from(b.up) << 8
                    | u64::from(b.fast) << 9
                    | u64::from(b.weight) << 32;
                words[3] = u64::from(b.prio);
                words[4] = b.limit;
            }
            words.iter().enumerate().for_each(|(i, v)| set(at + i, *v));
        }
        seq.store(s.wrapping_add(2) & !1, Ordering::Release);
    }

    /// Rebuilds the name index from `(slot, name)` pairs, under the header's seqlock.
    pub fn write_index<'n>(&self, names: impl Iterator<Item = (usize, &'n Name)>) {
        let seq = &self.w[H_SEQ];
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let base = HEADER_WORDS;
        let mask = self.layout.index_slots - 1;
        (0..self.layout.index_slots).for_each(|i| self.w[base + i].store(0, Ordering::Relaxed));
        let mut count = 0u64;
        for (slot, name) in names.filter(|(slot, _)| *slot < self.layout.max_services) {
            let h = name.hash();
            let mut i = (h as usize) & mask;
            while self.w[base + i].load(Ordering::Relaxed) != 0 {
                i = (i + 1) & mask;
            }
            self.w[base + i].store((h >> 32) << 32 | (slot as u64 + 1), Ordering::Relaxed);
            count += 1;
        }
        self.w[H_SERVICES].store(count, Ordering::Relaxed);
        seq.store(s.wrapping_add(2) & !1, Ordering::Release);
    }

    /// Records the agent's liveness.
    pub fn heartbeat(&self, now_ms: u64) {
        self.w[H_HEARTBEAT].store(now_ms, Ordering::Relaxed);
    }

    /// Records the tamper events counted so far (see [`TableView::tampered`]).
    pub fn set_tampered(&self, counts: u64, header: u64) {
        self.w[H_TAMPER_COUNTS].store(counts, Ordering::Relaxed);
        self.w[H_TAMPER_HEADER].store(header, Ordering::Relaxed);
    }

    /// Names the counters segment readers should attach.
    pub fn set_counters_id(&self, id: u64) {
        self.w[H_COUNTERS].store(id, Ordering::Release); // pairs with `TableView::counters_id`
    }

    /// Tells readers this table was replaced by a new file at the same path.
    pub fn retire(&self) {
        self.w[H_RETIRED].store(1, Ordering::Release);
    }
}

/// Marks any lbfo table (of whatever layout version) as replaced, so readers map the path again.
/// Returns false, writing nothing, when `w` does not start with an lbfo table header.
pub fn retire_any(w: &[AtomicU64]) -> bool {
    if words_of(w, H_MAGIC) != MAGIC || w.len() <= H_RETIRED {
        return false;
    }
    w[H_RETIRED].store(1, Ordering::Release); // pairs with the load in `TableView::retired`
    true
}

/// The counters segment any lbfo table (of whatever layout version) names, with the table's
/// generation: `(segment id, generation)`, or `None` when `w` does not start with an lbfo table
/// header or names no segment. The header words it reads (magic, generation, segment id) and the
/// counters header words [`is_counters_of`] reads keep their places in every layout version, so
/// an agent can remove the segment of a table an older agent left.
pub fn counters_of_any(w: &[AtomicU64]) -> Option<(u64, u64)> {
    let id = words_of(w, H_COUNTERS);
    (words_of(w, H_MAGIC) == MAGIC && id != NO_COUNTERS).then(|| (id, words_of(w, H_GENERATION)))
}

/// Whether `w` is a counters segment made for a table of `generation` (of whatever layout
/// version; see [`counters_of_any`]).
pub fn is_counters_of(w: &[AtomicU64], generation: u64) -> bool {
    words_of(w, 0) == COUNTERS_MAGIC && words_of(w, 1) == generation
}

fn pack(bytes: &[u8], words: usize, mut set: impl FnMut(usize, u64)) {
    for i in 0..words {
        let mut x = [0u8; 8];
        for (j, b) in x.iter_mut().enumerate() {
            *b = bytes.get(i * 8 + j).copied().unwrap_or(0);
        }
        set(i, u64::from_le_bytes(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::MAX_SERVICES;
    use crate::cmd::{parse_line, Line};
    use crate::table::Table;
    use std::sync::atomic::AtomicBool;
    use std::vec;
    use std::vec::Vec;

    struct Fixture {
        table: Vec<AtomicU64>,
        counters: Vec<AtomicU64>,
        slots: Vec<Option<Service>>,
        layout: Layout,
    }

    impl Fixture {
        /// A small table (fast everywhere, and feasible under Miri).
        fn new(lines: &[&str]) -> Fixture {
            Fixture::with_capacity(Capacity::new(16, MAX_BACKENDS).unwrap(), lines)
        }

        fn with_capacity(capacity: Capacity, lines: &[&str]) -> Fixture {
            let layout = Layout::new(capacity);
            let table: Vec<AtomicU64> = (0..layout.total_words())
                .map(|_| AtomicU64::new(0))
                .collect();
            let counters: Vec<AtomicU64> = (0..layout.counters_words())
                .map(|_| AtomicU64::new(0))
                .collect();
            let mut f = Fixture {
                table,
                counters,
                slots: vec![None; layout.max_services],
                layout,
            };
            Writer::init(&f.table, 42, capacity).unwrap();
            CountersView::init(&f.counters, 42, layout);
            f.apply(lines);
            f
        }

        fn apply(&mut self, lines: &[&str]) {
            let w = Writer::attach(&self.table).unwrap();
            let mut t = Table::with_capacity(&mut self.slots, w.capacity());
            for l in lines {
                let Ok(Some(Line::Command(c))) = parse_line(l) else {
                    panic!("{l}")
                };
                let ch = t.apply(&c).unwrap();
                w.write_service(ch.slot, t.get(ch.slot));
            }
            w.write_index(t.iter().map(|(i, s)| (i, &s.name)));
        }

        fn lookup(&self, q: &str, want: Want) -> Lookup {
            let v = TableView::new_checked(&self.table).unwrap();
            let c = CountersView::new_checked(&self.counters, &v).unwrap();
            v.lookup(q.as_bytes(), want, Some(&c))
        }

        fn v4(&self, q: &str) -> std::string::String {
            match self.lookup(q, Want::V4) {
                Lookup::Found(a) => std::format!("{}", a.v4.unwrap()),
                other => std::format!("{other:?}"),
            }
        }
    }

    #[test]
    fn roundrobin_weighted_failover_leastused() {
        let mut f = Fixture::new(&[
            "add rr.lan 10.0.0.1",
            "add rr.lan 10.0.0.2",
            "add rr.lan 10.0.0.3",
            "policy w.lan weighted",
            "add w.lan 10.0.1.1 weight=1",
            "add w.lan 10.0.1.2 weight=3",
            "policy f.lan failover",
            "add f.lan 10.0.2.1 prio=1",
            "add f.lan 10.0.2.2 prio=2",
            "policy l.lan leastused",
            "add l.lan 10.0.3.1 weight=1",
            "add l.lan 10.0.3.2 weight=2",
        ]);
        let rr: Vec<_> = (0..6).map(|_| f.v4("RR.lan.")).collect();
        assert_eq!(
            rr,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        let w: Vec<_> = (0..400).map(|_| f.v4("w.lan")).collect();
        assert_eq!(w.iter().filter(|a| *a == "10.0.1.2").count(), 300);
        assert_eq!(f.v4("f.lan"), "10.0.2.1");
        f.apply(&["down f.lan 10.0.2.1"]);
        assert_eq!(f.v4("f.lan"), "10.0.2.2");
        f.apply(&["up f.lan 10.0.2.1"]);
        assert_eq!(f.v4("f.lan"), "10.0.2.1");
        let l: Vec<_> = (0..300).map(|_| f.v4("l.lan")).collect();
        assert_eq!(l.iter().filter(|a| *a == "10.0.3.2").count(), 200);
        let v = TableView::new_checked(&f.table).unwrap();
        let c = CountersView::new_checked(&f.counters, &v).unwrap();
        assert_eq!((c.count(3, 0), c.count(3, 1)), (100, 200));
    }

    #[test]
    fn fastest_is_picked_by_turn_over_its_set_and_reads_back() {
        let mut f = Fixture::new(&[
            "policy fa.lan fastest",
            "add fa.lan 10.0.0.1",
            "add fa.lan 10.0.0.2",
            "add fa.lan 10.0.0.3",
        ]);
        // No fastest set (no check yet): every up backend in turn, as roundrobin.
        let got: Vec<_> = (0..3).map(|_| f.v4("fa.lan")).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        for pos in [0, 2] {
            f.slots[0].as_mut().unwrap().backends[pos]
                .as_mut()
                .unwrap()
                .fast = true;
        }
        let w = Writer::attach(&f.table).unwrap();
        w.write_service(0, f.slots[0].as_ref());
        let mut got: Vec<_> = (0..4).map(|_| f.v4("fa.lan")).collect();
        assert_ne!(got[0], got[1], "the two take turns");
        got.sort();
        assert_eq!(got, ["10.0.0.1", "10.0.0.1", "10.0.0.3", "10.0.0.3"]);
        // A lookup sees roundrobin's pick code; a reader showing the policy sees `fastest` and
        // the set, as written.
        let v = TableView::new_checked(&f.table).unwrap();
        assert_eq!(v.service(0), f.slots[0]);
        assert_eq!(v.service(0).unwrap().policy, Policy::Fastest);
    }

    #[test]
    fn counters_are_replaced_only_as_seen_and_a_broken_header_is_repaired() {
        let f = Fixture::new(&["add rr.lan 10.0.0.1", "add rr.lan 10.0.0.2"]);
        let v = TableView::new_checked(&f.table).unwrap();
        let c = CountersView::new_checked(&f.counters, &v).unwrap();
        (0..3).for_each(|_| c.bump(0, 1));
        assert_eq!(c.replace(0, 1, 2, 10), Err(3), "a lookup counted meanwhile");
        assert_eq!(c.replace(0, 1, 3, 10), Ok(()));
        assert_eq!(c.count(0, 1), 10);
        assert_eq!(c.replace(0, MAX_BACKENDS, 0, 1), Err(0), "no such position");

        assert!(!c.repair_header(42, f.layout), "intact");
        f.counters[1].store(7, Ordering::Relaxed);
        f.counters[0].store(0, Ordering::Relaxed);
        assert!(CountersView::new_checked(&f.counters, &v).is_none());
        assert!(c.repair_header(42, f.layout));
        assert!(CountersView::new_checked(&f.counters, &v).is_some());
        assert_eq!(c.count(0, 1), 10, "the counts are left alone");

        let w = Writer::attach(&f.table).unwrap();
        assert_eq!(v.tampered(), (0, 0));
        w.set_tampered(3, 1);
        assert_eq!(v.tampered(), (3, 1));
    }

    #[test]
    fn local_and_read_only_turns_rotate_without_counting() {
        let f = Fixture::new(&[
            "add rr.lan 10.0.0.1",
            "add rr.lan 10.0.0.2",
            "add two.lan 10.0.1.1",
            "add two.lan 10.0.1.2",
        ]);
        let v = TableView::new_checked(&f.table).unwrap();
        let c = CountersView::new_checked(&f.counters, &v).unwrap();
        let local: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let last = |q: &str, turns: Turns<'_>| match v.lookup_with(q.as_bytes(), Want::V4, turns) {
            Lookup::Found(a) => a.v4.unwrap().octets()[3],
            other => panic!("{other:?}"),
        };
        // Interleaved services keep their own rotation (slot modulo the local counters).
        let got: Vec<u8> = (0..4)
            .flat_map(|_| {
                [
                    last("rr.lan", Turns::Local(&local)),
                    last("two.lan", Turns::Local(&local)),
                ]
            })
            .collect();
        assert_eq!(got, [1, 1, 2, 2, 1, 1, 2, 2]);
        let got: Vec<u8> = (0..4)
            .map(|_| last("rr.lan", Turns::ReadOnly(c, &local)))
            .collect();
        assert_eq!(got, [1, 2, 1, 2]);
        assert_eq!(
            (c.count(0, 0), c.count(0, 1), c.take_turn(0)),
            (0, 0, 0),
            "read-only counters are never written"
        );
        assert_eq!(
            last("rr.lan", Turns::Local(&[])),
            1,
            "no counters at all: always turn 0"
        );
    }

    #[test]
    fn families_misses_and_all_down() {
        let mut f = Fixture::new(&[
            "add d.lan 10.0.0.1",
            "add d.lan fd00::1",
            "add only4.lan 10.0.0.9",
        ]);
        let Lookup::Found(a) = f.lookup("d.lan", Want::Any) else {
            panic!()
        };
        assert_eq!(
            (a.v4.unwrap().to_string(), a.v6.unwrap().to_string()),
            ("10.0.0.1".into(), "fd00::1".into())
        );
        let Lookup::Found(a) = f.lookup("d.lan", Want::V6) else {
            panic!()
        };
        assert_eq!((a.v4, a.v6.unwrap().to_string()), (None, "fd00::1".into()));
        assert_eq!(f.lookup("only4.lan", Want::V6), Lookup::NoData);
        assert_eq!(f.lookup("other.lan", Want::V4), Lookup::NotOurs);
        assert_eq!(f.lookup("d.lan.x", Want::V4), Lookup::NotOurs);
        f.apply(&["down only4.lan 10.0.0.9"]);
        assert_eq!(f.lookup("only4.lan", Want::V4), Lookup::AllDown);
        f.apply(&["del only4.lan"]);
        assert_eq!(f.lookup("only4.lan", Want::V4), Lookup::NotOurs);
        assert!(
            matches!(f.lookup("D.LAN.", Want::Any), Lookup::Found(_)),
            "case and trailing dot fold"
        );
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "4,096 services: minutes under Miri; the logic is covered by the others"
    )]
    fn thousands_of_names_all_found() {
        let lines: Vec<std::string::String> = (0..MAX_SERVICES)
            .map(|i| std::format!("add s{i}.example 10.{}.{}.1", i / 256, i % 256))
            .collect();
        let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
        let f = Fixture::with_capacity(Capacity::MAX, &refs);
        for i in (0..MAX_SERVICES).step_by(7) {
            assert_eq!(
                f.v4(&std::format!("S{i}.example")),
                std::format!("10.{}.{}.1", i / 256, i % 256)
            );
        }
        assert_eq!(f.lookup("s4096.example", Want::V4), Lookup::NotOurs);
    }

    #[test]
    fn hostile_tables_never_panic() {
        let f = Fixture::new(&[
            "add a.lan 10.0.0.1",
            "add a.lan fd00::1",
            "policy b.lan leastused",
            "add b.lan 10.0.0.2",
        ]);
        let mut rng = crate::TestRng(0x1234_5678_9abc_def1);
        let mut rnd = || rng.next();
        for round in 0..if cfg!(miri) { 4 } else { 300 } {
            let copy: Vec<AtomicU64> = f
                .table
                .iter()
                .map(|x| AtomicU64::new(x.load(Ordering::Relaxed)))
                .collect();
            // Corrupt words in the header's tail, the index and the first records.
            for _ in 0..(1 + round % 40) {
                let at = (rnd() as usize)
                    % (HEADER_WORDS + f.layout.index_slots + 4 * f.layout.service_words());
                let at = if at < H_SEQ { H_SEQ + at % 8 } else { at };
                copy[at].store(rnd() >> (rnd() % 64), Ordering::Relaxed);
            }
            if let Ok(v) = TableView::new_checked(&copy) {
                let c = CountersView::new_checked(&f.counters, &v);
                for q in ["a.lan", "b.lan", "zzz"] {
                    for want in [Want::V4, Want::V6, Want::Any] {
                        let _ = v.lookup(q.as_bytes(), want, c.as_ref());
                    }
                }
                for slot in 0..4 {
                    let _ = v.service(slot);
                }
            }
        }
        // Truncations and garbage headers are refused.
        assert_eq!(
            TableView::new_checked(&f.table[..HEADER_WORDS - 1]).unwrap_err(),
            ViewError::Short
        );
        assert_eq!(
            TableView::new_checked(&f.table[..f.layout.total_words() - 1]).unwrap_err(),
            ViewError::BadLayout
        );
        let garbage: Vec<AtomicU64> = (0..f.layout.total_words())
            .map(|i| AtomicU64::new(i as u64 * 0x9e37))
            .collect();
        assert_eq!(
            TableView::new_checked(&garbage).unwrap_err(),
            ViewError::BadMagic
        );
    }

    #[test]
    fn every_capacity_answers_and_counts_in_its_own_rows() {
        // Full tables of small and odd shapes: the last record's window reaches into the
        // padding, the last counters row's into the segment's.
        for (services, backends) in [(1, 1), (3, 2), (5, MAX_BACKENDS), (16, 1), (7, 9)] {
            let cap = Capacity::new(services, backends).unwrap();
            let mut lines = Vec::new();
            for s in 0..services {
                for b in 0..backends {
                    lines.push(std::format!("add s{s}.lan 10.{s}.{b}.1"));
                }
            }
            let refs: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
            let f = Fixture::with_capacity(cap, &refs);
            assert_eq!(f.table.len(), Layout::new(cap).total_words());
            for s in 0..services {
                for b in 0..backends {
                    assert_eq!(
                        f.v4(&std::format!("s{s}.lan")),
                        std::format!("10.{s}.{b}.1")
                    );
                }
            }
            let v = TableView::new_checked(&f.table).unwrap();
            assert_eq!(v.layout().capacity(), Some(cap));
            let c = CountersView::new_checked(&f.counters, &v).unwrap();
            for s in 0..services {
                assert_eq!(c.turn(s), backends as u64, "{cap:?} slot {s}");
                for b in 0..backends {
                    assert_eq!(c.count(s, b), 1, "{cap:?} slot {s} position {b}");
                }
                // Past the capacity: nothing, and nothing of the next row is touched.
                c.bump(s, backends);
                assert_eq!(c.count(s, backends), 0);
            }
            assert_eq!(c.turn(services - 1), backends as u64);
            assert_eq!(f.lookup("s99.lan", Want::V4), Lookup::NotOurs);
            let mut extra = Fixture::with_capacity(cap, &refs);
            let mut t = Table::with_capacity(&mut extra.slots, cap);
            let full = t.apply(&parse_cmd("add more.lan 10.9.9.9")).unwrap_err();
            assert_eq!(full, crate::table::ApplyError::TableFull(services));
        }
    }

    fn parse_cmd(line: &str) -> crate::cmd::Command {
        let Ok(Some(Line::Command(c))) = parse_line(line) else {
            panic!("{line}")
        };
        c
    }

    #[test]
    fn the_segment_a_table_of_any_version_names_is_found() {
        let f = Fixture::new(&[]);
        assert_eq!(counters_of_any(&f.table), None, "no segment named yet");
        Writer::attach(&f.table).unwrap().set_counters_id(77);
        assert_eq!(counters_of_any(&f.table), Some((77, 42)));
        // Another layout version (the agent that left it was older): the same words.
        f.table[H_VERSION].store(3, Ordering::Relaxed);
        assert!(TableView::new_checked(&f.table).is_err());
        assert_eq!(counters_of_any(&f.table), Some((77, 42)));
        f.table[H_MAGIC].store(0, Ordering::Relaxed);
        assert_eq!(counters_of_any(&f.table), None, "not an lbfo table");
        assert!(is_counters_of(&f.counters, 42) && !is_counters_of(&f.counters, 43));
        assert!(!is_counters_of(&f.table, 42));
    }

    #[test]
    fn a_record_never_names_a_position_past_the_capacity() {
        let cap = Capacity::new(2, 2).unwrap();
        let f = Fixture::with_capacity(cap, &[]);
        let w = Writer::attach(&f.table).unwrap();
        // A service with more backends than the table's capacity (no `Table` of that capacity
        // makes one): only the first two are published.
        let mut slots = vec![None; 1];
        let mut t = Table::new(&mut slots);
        for a in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            t.apply(&parse_cmd(&std::format!("add x.lan {a}"))).unwrap();
        }
        w.write_service(0, t.get(0));
        w.write_index(t.iter().map(|(i, s)| (i, &s.name)));
        let got: Vec<_> = (0..4).map(|_| f.v4("x.lan")).collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]);
        assert_eq!(w.view().service(0).unwrap().iter().count(), 2);
    }

    #[test]
    #[cfg_attr(miri, ignore = "millions of words per case: minutes under Miri")]
    fn headers_beyond_the_limits_are_refused_whatever_the_mapping_holds() {
        let f = Fixture::new(&["add a.lan 10.0.0.1"]);
        // A mapping large enough for any header below: the limits, not its length, refuse them.
        let big = Layout::MAX.total_words() * 2;
        let with = |edits: &[(usize, u64)]| {
            let w: Vec<AtomicU64> = (0..big)
                .map(|i| AtomicU64::new(f.table.get(i).map_or(0, |x| x.load(Ordering::Relaxed))))
                .collect();
            for &(at, v) in edits {
                w[at].store(v, Ordering::Relaxed);
            }
            TableView::new_checked(&w).map(|v| v.layout())
        };
        // What a layout of `services` x `backends` would record, consistent in itself.
        let claim = |services: u64, backends: u64, index: u64| {
            let service_words = (R_BACKENDS as u64) + backends * BACKEND_WORDS as u64;
            let total = HEADER_WORDS as u64
                + index
                + services * service_words
                + (RECORD_WORDS as u64).saturating_sub(service_words);
            [
                (H_MAX_SERVICES, services),
                (H_MAX_BACKENDS, backends),
                (H_INDEX_SLOTS, index),
                (H_SERVICE_WORDS, service_words),
                (H_TOTAL_WORDS, total),
            ]
        };
        assert_eq!(with(&[]), Ok(f.layout));
        assert_eq!(
            with(&claim(MAX_SERVICES as u64, MAX_BACKENDS as u64, 8192)),
            Ok(Layout::MAX)
        );
        for (s, b, i) in [
            (MAX_SERVICES as u64 + 1, 16, 16384),
            (8192, 16, 16384),
            (16, 17, 32),
            (16, 255, 32),
            (0, 16, 1),
            (16, 0, 32),
            (16, 16, 16),
            (16, 16, 64),
            (16, 16, 33),
        ] {
            assert_eq!(
                with(&claim(s, b, i)),
                Err(ViewError::BadLayout),
                "{s} services, {b} backends, {i} index slots"
            );
        }
        assert_eq!(with(&[(H_SCHED_LEN, 128)]), Err(ViewError::BadLayout));
        assert_eq!(
            with(&[(H_TOTAL_WORDS, big as u64)]),
            Err(ViewError::BadLayout)
        );
    }

    #[test]
    fn readers_never_see_torn_records() {
        let mut f = Fixture::new(&["add t.lan 10.0.0.1", "add t.lan 10.0.0.2"]);
        let stop = AtomicBool::new(false);
        let table = core::mem::take(&mut f.table);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let v = TableView::new_checked(&table).unwrap();
                    // Natively: read until the writer is done, at least 1,000 times. Miri
                    // interprets every lookup, and readers spinning on `stop` starved the writer
                    // for 20+ minutes, so there each reader makes a fixed number of reads,
                    // interleaved with the writer by Miri's preemptive scheduler.
                    let (min, max) = if cfg!(miri) {
                        (12, 12)
                    } else {
                        (1000, usize::MAX)
                    };
                    let mut n = 0;
                    while n < max && (!stop.load(Ordering::Relaxed) || n < min) {
                        match v.lookup(b"t.lan", Want::V4, None) {
                            Lookup::Found(a) => {
                                let o = a.v4.unwrap().octets();
                                assert!(o[..3] == [10, 0, 0] && (1..=4).contains(&o[3]), "{a:?}");
                            }
                            Lookup::Unavailable | Lookup::AllDown | Lookup::NotOurs => {}
                            other => panic!("{other:?}"),
                        }
                        n += 1;
                    }
                });
            }
            let w = Writer::attach(&table).unwrap();
            let mut t = Table::new(&mut f.slots);
            for i in 0..if cfg!(miri) { 21 } else { 20_000 } {
                let l = [
                    "add t.lan 10.0.0.3",
                    "del t.lan 10.0.0.1",
                    "add t.lan 10.0.0.1",
                    "down t.lan 10.0.0.2",
                    "del t.lan",
                    "add t.lan 10.0.0.4",
                    "up t.lan 10.0.0.2",
                ][i % 7];
                let Ok(Some(Line::Command(c))) = parse_line(l) else {
                    panic!()
                };
                if let Ok(ch) = t.apply(&c) {
                    w.write_service(ch.slot, t.get(ch.slot));
                    if ch.index {
                        w.write_index(t.iter().map(|(i, s)| (i, &s.name)));
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
