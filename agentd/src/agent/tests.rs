//! The agent over plain memory with a fake clock: FIFO lines, reloads, restarts, limits, the
//! heartbeat, and two cluster agents wired back to back.

use super::*;
use crate::control::config;
use crate::control::fifo::Piece;
use lbfo_core::atomic::AtomicU64;
use lbfo_core::shm::{retire_any, Layout};
use lbfo_core::{Capacity, CountersView, Lookup, TableView, Want, Writer};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

#[derive(Debug)]
struct Mem {
    table: Vec<AtomicU64>,
    counters: Vec<AtomicU64>,
    /// `commit` fails (as a rename that fails would).
    refuse_commit: Cell<bool>,
}

/// The agent's memory over a `Mem`: `commit` as `refuse_commit` says, `retire` marks the table
/// retired as the file's does.
macro_rules! shm_over_mem {
    ($t:ty) => {
        impl Shm for $t {
            fn table(&self) -> &[AtomicU64] {
                &self.table
            }
            fn counters(&self) -> &[AtomicU64] {
                &self.counters
            }
            fn layout(&self) -> Layout {
                TableView::new_checked(&self.table).unwrap().layout()
            }
            fn commit(&mut self, _: &mut Vec<String>) -> Result<(), String> {
                match self.refuse_commit.get() {
                    true => Err("cannot rename (test)".to_owned()),
                    false => Ok(()),
                }
            }
            fn retire(&self, log: &mut Vec<String>) {
                retire_any(&self.table);
                log.push("retired (test)".to_owned());
            }
            fn leave(&self, _: &mut Vec<String>) {}
        }
    };
}
shm_over_mem!(&Mem);
shm_over_mem!(Rc<Mem>);

impl Mem {
    fn new() -> Mem {
        Mem::with_capacity(Capacity::DEFAULT)
    }

    fn with_capacity(capacity: Capacity) -> Mem {
        let layout = Layout::new(capacity);
        let zeros = |n| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        let (table, counters) = (zeros(layout.total_words()), zeros(layout.counters_words()));
        Writer::init(&table, 7, capacity).unwrap();
        CountersView::init(&counters, 7, layout);
        Mem {
            table,
            counters,
            refuse_commit: Cell::new(false),
        }
    }

    fn agent(&self, adopt: bool, conf: &str, t: u64) -> Agent<'_> {
        Writer::attach(&self.table).unwrap();
        Agent::start(
            Box::new(self),
            adopt,
            "conf".into(),
            config::parse(conf.as_bytes()).unwrap(),
            at(t),
            None,
        )
    }

    /// One lookup through the reader, as the NSS module does it.
    fn v4(&self, name: &str) -> String {
        let v = TableView::new_checked(&self.table).unwrap();
        let c = CountersView::new_checked(&self.counters, &v).unwrap();
        match v.lookup(name.as_bytes(), Want::V4, Some(&c)) {
            Lookup::Found(a) => a.v4.unwrap().to_string(),
            other => format!("{other:?}"),
        }
    }

    fn count(&self, slot: usize, pos: usize) -> u64 {
        let v = TableView::new_checked(&self.table).unwrap();
        CountersView::new_checked(&self.counters, &v)
            .unwrap()
            .count(slot, pos)
    }

    fn heartbeat(&self) -> u64 {
        TableView::new_checked(&self.table).unwrap().heartbeat_ms()
    }
}

fn at(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: 1_000_000 + ms,
    }
}

/// Feeds `text` to the agent as FIFO lines, publishes, and returns what it logged.
fn send(a: &mut Agent<'_>, text: &str) -> Vec<String> {
    for line in text.lines() {
        a.fifo_piece(Piece::Line(line.as_bytes()));
    }
    a.publish();
    a.take_log()
}

const CONF: &str = "table /t/table\nfifo /t/sock\npolicy web.lan failover\nadd web.lan 10.0.0.1 prio=1\nadd web.lan 10.0.0.2 prio=2\n";

#[test]
fn start_publishes_the_config() {
    let m = Mem::new();
    let mut a = m.agent(false, CONF, 0);
    assert_eq!(m.v4("web.lan"), "10.0.0.1");
    assert_eq!(
        a.take_log(),
        ["start: conf: 3 commands applied; 1 services"]
    );
    assert_eq!(m.heartbeat(), 1_000_000);
}

#[test]
fn every_setting_is_refused_on_the_fifo_naming_how_to_change_it() {
    let m = Mem::new();
    let mut a = m.agent(false, CONF, 0);
    a.take_log();
    // One line per `Setting` variant.
    let lines = [
        "table /t",
        "fifo /f",
        "state /s",
        "group 239.255.1.1:7000",
        "iface eth0",
        "ttl 2",
        "node gw1",
        "peer 10.0.0.9:7000",
        "key /k",
        "insecure",
        "hosts-file /h",
        "dnsmasq-pid /p",
        "check web.lan tcp 80",
        "capacity 64 8",
        "max-lookup-rate 5",
    ];
    let log = send(&mut a, &lines.join("\n"));
    assert_eq!(log.len(), lines.len(), "{log:?}");
    for (i, (line, got)) in lines.iter().zip(&log).enumerate() {
        let kw = line.split(' ').next().unwrap();
        let how = match kw {
            "hosts-file" | "dnsmasq-pid" | "check" | "max-lookup-rate" | "capacity" => {
                "change it in the config file and reload (SIGHUP)"
            }
            _ => "change it in the config file and restart the agent (a reload keeps the running one)",
        };
        assert_eq!(
            got,
            &format!(
                "fifo: line {}: column 1: `{kw}` is a setting of the config file, not a FIFO command; {how}",
                i + 1
            )
        );
    }
    assert_eq!(m.v4("web.lan"), "10.0.0.1", "nothing changed");
}

#[test]
fn fifo_lines_apply_and_bad_ones_are_skipped() {
    let m = Mem::new();
    let mut a = m.agent(false, CONF, 0);
    a.take_log();
    let log = send(
        &mut a,
        "down web.lan 10.0.0.1\nbogus web.lan\n\n# note\nadd db.lan 10.0.1.1\ndown web.lan 10.0.0.9\ntable /x\nadd db.lan 10.0.1.2 wieght=2",
    );
    assert_eq!(
        log,
        [
            "fifo: line 1: down web.lan 10.0.0.1",
            "fifo: line 2: column 1: unknown verb (expected add, del, down, up, policy, weight, prio, limit, reset, capacity, table, fifo, state, hosts-file, dnsmasq-pid, group, iface, ttl, node, peer, key, insecure, max-lookup-rate or check)",
            "fifo: line 5: add db.lan 10.0.1.1",
            "fifo: line 6: column 1: service has no backend with that address (down web.lan 10.0.0.9)",
            "fifo: line 7: column 1: `table` is a setting of the config file, not a FIFO command; change it in the config file and restart the agent (a reload keeps the running one)",
            "fifo: line 8: column 21: unknown option (expected weight=, prio= or limit=)",
        ]
    );
    assert_eq!(m.v4("web.lan"), "10.0.0.2", "failover moved on");
    assert_eq!(m.v4("db.lan"), "10.0.1.1");
    a.fifo_piece(Piece::TooLong);
    assert_eq!(
        a.take_log(),
        ["fifo: line 9: column 4097: line longer than 4096 bytes; skipped"]
    );
    send(&mut a, "up web.lan 10.0.0.1\ndel db.lan");
    assert_eq!(
        (m.v4("web.lan").as_str(), m.v4("db.lan").as_str()),
        ("10.0.0.1", "NotOurs")
    );
}

#[test]
fn nothing_is_visible_before_publish() {
    let m = Mem::new();
    let mut a = m.agent(false, CONF, 0);
    a.fifo_piece(Piece::Line(b"down web.lan 10.0.0.1"));
    assert_eq!(m.v4("web.lan"), "10.0.0.1");
    a.publish();
    assert_eq!(m.v4("web.lan"), "10.0.0.2");
}

#[test]
fn reload_applies_the_difference_and_keeps_runtime_state() {
    let m = Mem::new();
    let conf = "add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd gone.lan 10.0.9.9\nreset a.lan\n";
    let mut a = m.agent(false, conf, 0);
    send(
        &mut a,
        "add runtime.lan 10.0.5.5\ndown a.lan 10.0.0.2\nadd a.lan 10.0.0.3",
    );
    for _ in 0..4 {
        m.v4("a.lan");
    }
    assert_eq!((m.count(0, 0), m.count(0, 2)), (2, 2));
    a.take_log();
    a.reload(config::parse(
        b"table /elsewhere\nadd a.lan 10.0.0.2 weight=5\nadd new.lan 10.0.7.7\nreset a.lan\n",
    ));
    a.publish();
    assert_eq!(
        a.take_log(),
        [
            "reload: `table` changed to /elsewhere; still using /run/lbfo/table until the agent is restarted",
            "reload: del a.lan 10.0.0.1 (no longer in the config)",
            "reload: del gone.lan (no longer in the config)",
            "reload: conf: 3 commands applied; 3 services",
        ]
    );
    assert_eq!(m.v4("gone.lan"), "NotOurs");
    assert_eq!(
        m.v4("runtime.lan"),
        "10.0.5.5",
        "services made through the FIFO stay"
    );
    assert_eq!(m.v4("new.lan"), "10.0.7.7");
    assert_eq!(
        m.v4("a.lan"),
        "10.0.0.3",
        "10.0.0.2 is still down, 10.0.0.1 is gone"
    );
    assert_eq!(m.count(0, 2), 3, "counters survive the reload");
    let s = a.slots[0].unwrap();
    assert_eq!(
        s.backends[1].map(|b| (b.weight, b.up)),
        Some((5, false)),
        "same position, runtime down kept"
    );

    // A broken config changes nothing.
    a.reload(config::parse(
        b"add a.lan 10.0.0.1\ndown zzz.lan 10.0.0.1\n",
    ));
    a.publish();
    assert_eq!(
        a.take_log(),
        ["reload: conf:2:1: no such service; keeping the running configuration"]
    );
    assert_eq!(m.v4("new.lan"), "10.0.7.7");

    // The next reload diffs against the last good config, not the broken one.
    a.reload(config::parse(b"add a.lan 10.0.0.2\n"));
    a.publish();
    assert_eq!(m.v4("new.lan"), "NotOurs");
    assert_eq!(m.v4("runtime.lan"), "10.0.5.5");
}

#[test]
fn restart_adopts_the_table() {
    let m = Mem::new();
    {
        let mut a = m.agent(
            false,
            "add b.lan 10.0.1.1\nadd a.lan 10.0.0.1\nadd a.lan 10.0.0.2\n",
            0,
        );
        send(&mut a, "down a.lan 10.0.0.1\nadd runtime.lan 10.0.5.5");
    }
    for _ in 0..3 {
        m.v4("a.lan");
    }
    let mut a = m.agent(
        true,
        "add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd c.lan 10.0.2.1\n",
        5000,
    );
    assert_eq!(
        a.take_log(),
        [
            "start: adopted 3 services from the existing table",
            "start: del b.lan (no longer in the config)",
            "start: del runtime.lan (no longer in the config)",
            "start: conf: 3 commands applied; 2 services",
        ]
    );
    assert_eq!(a.slots[1].unwrap().name.as_str(), "a.lan", "slots stay put");
    assert_eq!(m.count(1, 1), 3, "counters stay");
    assert_eq!(m.v4("a.lan"), "10.0.0.2", "runtime down state stays");
    assert_eq!(m.v4("b.lan"), "NotOurs");
    assert_eq!(m.v4("c.lan"), "10.0.2.1");
    assert_eq!(m.heartbeat(), 1_005_000);
}

#[test]
fn limits_delete_backends_on_time() {
    let m = Mem::new();
    let mut a = m.agent(false, "add l.lan 10.0.0.1 limit=3\nadd l.lan 10.0.0.2\n", 0);
    a.take_log();
    assert_eq!(a.next_deadline(), LIMIT_CHECK_MS);
    for _ in 0..6 {
        m.v4("l.lan");
    }
    a.tick(at(50));
    assert!(a.take_log().is_empty(), "not due yet");
    a.tick(at(100));
    assert_eq!(
        a.take_log(),
        ["limit reached: l.lan 10.0.0.1 after 3 lookups"]
    );
    assert_eq!(
        (m.v4("l.lan").as_str(), m.v4("l.lan").as_str()),
        ("10.0.0.2", "10.0.0.2")
    );
    assert_eq!(m.count(0, 0), 0, "the freed position's counter restarts");
    assert_eq!(
        a.next_deadline(),
        HEARTBEAT_MS,
        "no limits left: only the heartbeat is due"
    );
}

/// What a local user can do to the counters segment: store any number in any word.
fn write_counter(m: &Mem, slot: usize, pos: usize, v: u64) {
    let per_slot = 1 + lbfo_core::MAX_BACKENDS;
    m.counters[lbfo_core::shm::COUNTERS_HEADER_WORDS + slot * per_slot + 1 + pos]
        .store(v, std::sync::atomic::Ordering::Relaxed);
}

fn tampered(m: &Mem) -> (u64, u64) {
    TableView::new_checked(&m.table).unwrap().tampered()
}

#[test]
fn counters_written_past_the_lookup_rate_or_down_are_put_back() {
    let m = Mem::new();
    let conf = "add lim.lan 10.0.0.1 limit=1000000\nadd lim.lan 10.0.0.2 limit=1000000\n";
    let mut a = m.agent(false, conf, 0);
    a.take_log();
    for _ in 0..4 {
        m.v4("lim.lan");
    }
    a.tick(at(100));
    assert!(a.take_log().is_empty());
    // The scenario: 5,000,000 in every counter.
    write_counter(&m, 0, 0, 5_000_000);
    write_counter(&m, 0, 1, 5_000_000);
    a.tick(at(200));
    assert_eq!(
        a.take_log(),
        [
            "counters: lim.lan 10.0.0.1: jumped by 4999998 in 100 ms (max-lookup-rate 1000000 \
             allows 100000): written by something other than lookups; put back to 2 (counted in \
             status; not logged again for this backend)",
            "counters: lim.lan 10.0.0.2: jumped by 4999998 in 100 ms (max-lookup-rate 1000000 \
             allows 100000): written by something other than lookups; put back to 2 (counted in \
             status; not logged again for this backend)",
        ]
    );
    assert_eq!((m.count(0, 0), m.count(0, 1)), (2, 2), "put back");
    assert_eq!(m.v4("lim.lan"), "10.0.0.1", "nothing deleted");
    assert_eq!(tampered(&m), (2, 0));
    // Again, and down to zero (which would defeat a limit): put back, counted, not logged.
    write_counter(&m, 0, 0, 999_999);
    write_counter(&m, 0, 1, 0);
    a.tick(at(300));
    assert!(a.take_log().is_empty());
    // (The lookup made after the last look was overwritten too: it is lost.)
    assert_eq!((m.count(0, 0), m.count(0, 1)), (2, 2));
    assert_eq!(tampered(&m), (4, 0));
    // Lookups at up to the rate count; what the agent zeroes itself (reset) is no tampering.
    a.tick(at(400));
    send(&mut a, "reset lim.lan");
    a.tick(at(500));
    assert!(a.take_log().is_empty());
    assert_eq!((m.count(0, 0), m.count(0, 1), tampered(&m)), (0, 0, (4, 0)));
    // A backend's counter restarted: its next tampering is logged again.
    write_counter(&m, 0, 1, 7);
    a.tick(at(600));
    assert!(
        a.take_log().is_empty(),
        "7 in 100 ms: lookups, as far as anyone can tell"
    );
    write_counter(&m, 0, 1, 5_000_000);
    a.tick(at(700));
    let log = a.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].starts_with("counters: lim.lan 10.0.0.2: jumped by 4999993"),
        "{log:?}"
    );
}

#[test]
fn counters_decreased_are_put_back_and_a_restart_keeps_the_counts() {
    let m = Mem::new();
    let conf = "add l.lan 10.0.0.1 limit=10\n";
    let mut a = m.agent(false, conf, 0);
    for _ in 0..5 {
        m.v4("l.lan");
    }
    a.tick(at(100));
    write_counter(&m, 0, 0, 1);
    a.tick(at(200));
    assert_eq!(
        a.take_log().last().unwrap(),
        "counters: l.lan 10.0.0.1: fell from 5 to 1: written by something other than lookups; \
         put back to 5 (counted in status; not logged again for this backend)"
    );
    for _ in 0..5 {
        m.v4("l.lan");
    }
    a.tick(at(300));
    assert_eq!(
        a.take_log(),
        ["limit reached: l.lan 10.0.0.1 after 10 lookups"],
        "the lookups made before the write still count towards the limit"
    );
    drop(a);
    let a = m.agent(true, conf, 0);
    drop(a);
    assert_eq!(tampered(&m), (1, 0), "a restarted agent goes on counting");
}

#[test]
fn genuine_lookups_at_the_rate_reach_the_limit() {
    let m = Mem::new();
    let conf = "max-lookup-rate 100\nadd l.lan 10.0.0.1 limit=30\n";
    let mut a = m.agent(false, conf, 0);
    a.take_log();
    // 100 per second is 10 per 100 ms: taken, three times.
    for t in 1..=3 {
        for _ in 0..10 {
            m.v4("l.lan");
        }
        a.tick(at(100 * t));
    }
    assert_eq!(
        a.take_log(),
        ["limit reached: l.lan 10.0.0.1 after 30 lookups"]
    );
    assert_eq!(tampered(&m), (0, 0));
    // One more than the rate allows is not lookups.
    let mut a = m.agent(false, conf, 0);
    a.take_log();
    for _ in 0..11 {
        m.v4("l.lan");
    }
    a.tick(at(100));
    assert!(a.take_log()[0].contains("jumped by 11 in 100 ms (max-lookup-rate 100 allows 10)"));
}

#[test]
fn an_overwritten_counters_header_is_rewritten_at_the_next_tick() {
    use std::sync::atomic::Ordering::Relaxed;
    let m = Mem::new();
    let mut a = m.agent(false, "add rr.lan 10.0.0.1\nadd rr.lan 10.0.0.2\n", 0);
    a.take_log();
    let v = TableView::new_checked(&m.table).unwrap();
    for round in 1..=3u64 {
        (0..4).for_each(|i| m.counters[i].store(0, Relaxed));
        assert!(
            CountersView::new_checked(&m.counters, &v).is_none(),
            "a new process would not share turns"
        );
        a.tick(at(10 * round));
        assert!(CountersView::new_checked(&m.counters, &v).is_some());
        assert_eq!(tampered(&m), (0, round));
    }
    // Logged the first time and then at powers of two.
    assert_eq!(
        a.take_log(),
        [
            "counters: the segment's header was overwritten (1 so far); rewritten, so new \
             processes share turns again",
            "counters: the segment's header was overwritten (2 so far); rewritten, so new \
             processes share turns again",
        ]
    );
    assert_eq!(
        (m.v4("rr.lan").as_str(), m.v4("rr.lan").as_str()),
        ("10.0.0.1", "10.0.0.2")
    );
}

/// An agent over `start` (a `Mem` of its own) whose reloads make new tables as `Mem`s too, kept
/// in the returned list so the test can read them.
fn resizable(
    start: Rc<Mem>,
    conf: &str,
    refuse: bool,
) -> (Agent<'static>, Rc<std::cell::RefCell<Vec<Rc<Mem>>>>) {
    let made = Rc::new(std::cell::RefCell::new(Vec::new()));
    let list = made.clone();
    let tables = Tables(Box::new(move |capacity| {
        let m = Rc::new(Mem::with_capacity(capacity));
        m.refuse_commit.set(refuse);
        list.borrow_mut().push(m.clone());
        Ok(Box::new(m) as Box<dyn Shm>)
    }));
    let config = config::parse(conf.as_bytes()).unwrap();
    let a = Agent::start_with(
        Box::new(start),
        false,
        "conf".into(),
        config,
        at(0),
        None,
        None,
        None,
        Some(tables),
    );
    (a, made)
}

#[test]
fn a_reload_with_a_larger_capacity_moves_the_table_and_its_counters_to_a_new_one() {
    let small = Rc::new(Mem::with_capacity(Capacity::new(2, 2).unwrap()));
    let conf = "capacity 2 2\nadd a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd b.lan 10.0.1.1\n";
    let (mut a, made) = resizable(small.clone(), conf, false);
    a.take_log();
    let seen: Vec<String> = (0..3).map(|_| small.v4("a.lan")).collect();
    assert_eq!(seen, ["10.0.0.1", "10.0.0.2", "10.0.0.1"]);
    let log = send(&mut a, "add c.lan 10.0.2.1");
    assert!(
        log[0].contains("table full: `capacity` allows 2 services"),
        "{log:?}"
    );

    let bigger = "capacity 8 4\nadd a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd a.lan 10.0.0.3\n\
                  add b.lan 10.0.1.1\nadd c.lan 10.0.2.1\n";
    a.reload(config::parse(bigger.as_bytes()));
    a.publish();
    let log = a.take_log();
    assert!(
        log.contains(&"reload: capacity 8 services of 4 backends each (was 2 services of 2 backends each): the new table is in place".to_owned()),
        "{log:?}"
    );
    assert!(log.contains(&"retired (test)".to_owned()), "{log:?}");
    assert!(TableView::new_checked(&small.table).unwrap().retired());
    let new = made.borrow()[0].clone();
    assert_eq!(a.capacity(), Capacity::new(8, 4).unwrap());
    // Slots and positions kept, and with them the counts and the turn.
    assert_eq!((new.count(0, 0), new.count(0, 1)), (2, 1));
    let turn = |m: &Mem| {
        let v = TableView::new_checked(&m.table).unwrap();
        CountersView::new_checked(&m.counters, &v).unwrap().turn(0)
    };
    assert_eq!(turn(&new), 3, "the rotation goes on from where it was");
    assert_eq!(new.v4("c.lan"), "10.0.2.1");
    assert_eq!(new.v4("b.lan"), "10.0.1.1");
    assert!(new.heartbeat() > 0);
}

#[test]
fn a_smaller_capacity_is_taken_if_what_is_left_fits_and_refused_if_not() {
    let m = Rc::new(Mem::new());
    let conf = "add a.lan 10.0.0.1\nadd b.lan 10.0.1.1\nadd c.lan 10.0.2.1\nadd c.lan 10.0.2.2\n\
                add c.lan 10.0.2.3\nadd d.lan 10.0.3.1\nadd d.lan 10.0.3.2\n";
    let (mut a, made) = resizable(m.clone(), conf, false);
    send(
        &mut a,
        "del c.lan 10.0.2.1\ndel c.lan 10.0.2.2\nadd e.lan 10.0.4.1",
    );
    (0..2).for_each(|_| assert_eq!(m.v4("c.lan"), "10.0.2.3"));
    assert_eq!(
        m.count(2, 2),
        2,
        "c.lan is in slot 2, its backend at position 2"
    );
    a.take_log();

    // The config drops a and b (removed first), but e, made on the FIFO, stays: three services
    // do not fit two. Refused; the rest of the reload applies.
    let fewer = "capacity 2 2\nadd c.lan 10.0.2.3\nadd d.lan 10.0.3.1\nadd d.lan 10.0.3.2\n";
    a.reload(config::parse(fewer.as_bytes()));
    a.publish();
    let log = a.take_log();
    assert!(
        log.contains(&"reload: capacity 2 services of 2 backends each: the table holds 3 services; keeping 64 services of 8 backends each".to_owned()),
        "{log:?}"
    );
    assert!(made.borrow().is_empty());
    assert_eq!(m.v4("a.lan"), "NotOurs");
    assert_eq!(m.v4("e.lan"), "10.0.4.1");

    // Without e it fits: c and d move down into slots 0 and 1, c's backend into position 0,
    // their counters with them.
    send(&mut a, "del e.lan");
    a.reload(config::parse(fewer.as_bytes()));
    a.publish();
    let log = a.take_log();
    assert!(
        log.iter().any(|l| l.ends_with("the new table is in place")),
        "{log:?}"
    );
    let new = made.borrow()[0].clone();
    assert_eq!(
        new.count(0, 0),
        2,
        "c.lan's count, at its new slot and position"
    );
    assert_eq!(new.v4("c.lan"), "10.0.2.3");
    assert_eq!(new.v4("d.lan"), "10.0.3.1");
    assert_eq!(new.v4("a.lan"), "NotOurs");
}

#[test]
fn a_new_table_that_cannot_be_put_in_place_leaves_the_old_one_answering() {
    let m = Rc::new(Mem::new());
    let (mut a, made) = resizable(m.clone(), "add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\n", true);
    assert_eq!(m.v4("a.lan"), "10.0.0.1");
    a.take_log();
    a.reload(config::parse(
        b"capacity 16 2\nadd a.lan 10.0.0.1\nadd a.lan 10.0.0.2\n",
    ));
    a.publish();
    let log = a.take_log();
    assert!(
        log.contains(&"reload: capacity 16 services of 2 backends each: cannot rename (test); keeping 64 services of 8 backends each".to_owned()),
        "{log:?}"
    );
    assert_eq!(made.borrow().len(), 1);
    assert_eq!(a.capacity(), Capacity::DEFAULT);
    assert!(!TableView::new_checked(&m.table).unwrap().retired());
    assert_eq!(
        m.v4("a.lan"),
        "10.0.0.2",
        "the old table, still written, rotation and all"
    );
    send(&mut a, "down a.lan 10.0.0.1");
    assert_eq!(m.v4("a.lan"), "10.0.0.2");
}

#[test]
fn heartbeat_every_second() {
    let m = Mem::new();
    let mut a = m.agent(false, "", 0);
    assert_eq!(a.next_deadline(), HEARTBEAT_MS);
    a.tick(at(HEARTBEAT_EARLY_MS - 1));
    assert_eq!(m.heartbeat(), 1_000_000, "not yet");
    a.tick(at(1003));
    assert_eq!((m.heartbeat(), a.next_deadline()), (1_001_003, 2003));
    // A turn for something else, close enough to the next beat, writes it early: no wake-up
    // of its own.
    a.tick(at(2003 - HEARTBEAT_EARLY_MS));
    let early = 2003 - HEARTBEAT_EARLY_MS;
    assert_eq!(
        (m.heartbeat(), a.next_deadline()),
        (1_000_000 + early, early + HEARTBEAT_MS)
    );
}

/// Two agents in cluster mode over plain memory, wired back to back, with a fake clock.
#[test]
fn cluster_agents_share_commands_keep_counters_local_and_hold_until_caught_up() {
    use crate::cluster::wire::Key;
    let (ma, mb) = (Mem::new(), Mem::new());
    fn mk<'m>(m: &'m Mem, name: &str, adopt: bool, conf: &str, t: u64) -> Agent<'m> {
        let mut config = config::parse(conf.as_bytes()).unwrap();
        config.mtime_ms = 500_000;
        let random = [name.as_bytes()[0].wrapping_add(t as u8); 32];
        let cl = Cluster::new(
            name,
            Key::new(b"k".to_vec()),
            random,
            1_000_000 + t,
            t,
            adopt,
        );
        Agent::start(Box::new(m), adopt, "conf".into(), config, at(t), Some(cl))
    }
    let from = |n: u8| SocketAddr::from(([10, 0, 0, n], 7946));
    // Delivers a's outbox to b and b's to a until both are quiet.
    fn settle(a: &mut Agent<'_>, b: &mut Agent<'_>, from: impl Fn(u8) -> SocketAddr) {
        loop {
            let (oa, ob) = (a.take_outbox(), b.take_outbox());
            if oa.is_empty() && ob.is_empty() {
                return;
            }
            for (_, d) in oa {
                b.datagram(&d, from(1));
            }
            for (_, d) in ob {
                a.datagram(&d, from(2));
            }
            a.sync();
            b.sync();
        }
    }
    let mut a = mk(&ma, "a", false, CONF, 0);
    let mut b = mk(&mb, "b", false, "add other.lan 10.9.9.9\n", 0);
    settle(&mut a, &mut b, from);
    assert_eq!(mb.v4("web.lan"), "10.0.0.1", "a's config reached b");
    assert_eq!(ma.v4("other.lan"), "10.9.9.9", "and b's reached a");
    send(&mut a, "down web.lan 10.0.0.1\nreset web.lan");
    settle(&mut a, &mut b, from);
    assert_eq!(mb.v4("web.lan"), "10.0.0.2");
    let log = b.take_log();
    assert!(
        log.contains(&"cluster: down web.lan 10.0.0.1".to_owned()),
        "{log:?}"
    );
    for _ in 0..3 {
        mb.v4("other.lan");
    }
    send(&mut b, "weight other.lan 10.9.9.9 4");
    settle(&mut a, &mut b, from);
    // other.lan is in slot 0 on b (its config), slot 1 on a.
    assert_eq!(mb.count(0, 0), 3, "b's counters are b's own");
    assert_eq!(ma.count(1, 0), 1, "a's one lookup, not b's three");

    // `a` restarts on its old table with only its config: the old table keeps answering
    // (no flash of the config's 10.0.0.1) until it has caught up.
    drop(a);
    let mut a = mk(&ma, "a", true, CONF, 10);
    assert_eq!(ma.v4("web.lan"), "10.0.0.2", "held, not rolled back");
    settle(&mut a, &mut b, from);
    // b's next digest round shows agreement; a publishes the cluster's table.
    b.tick(at(10_000));
    settle(&mut a, &mut b, from);
    assert!(!a.holding());
    assert_eq!(ma.v4("web.lan"), "10.0.0.2");
    assert_eq!(ma.v4("other.lan"), "10.9.9.9");
    assert!(a
        .take_log()
        .iter()
        .any(|l| l == "cluster: caught up; publishing the cluster's table"));
}

#[test]
fn the_groups_changes_past_the_capacity_are_logged_counted_and_not_applied() {
    use crate::cluster::wire::Key;
    let small = Mem::with_capacity(Capacity::new(1, 2).unwrap());
    let big = Mem::new();
    fn mk<'m>(m: &'m Mem, name: &str, conf: &str) -> Agent<'m> {
        let config = config::parse(conf.as_bytes()).unwrap();
        let cl = Cluster::new(
            name,
            Key::new(b"k".to_vec()),
            [name.as_bytes()[0]; 32],
            1_000_000,
            0,
            false,
        );
        Agent::start(Box::new(m), false, "conf".into(), config, at(0), Some(cl))
    }
    let mut a = mk(&small, "a", "capacity 1 2\nadd a.lan 10.0.0.1\n");
    let mut b = mk(&big, "b", "");
    send(
        &mut b,
        "add a.lan 10.0.0.2\nadd a.lan 10.0.0.3\nadd b.lan 10.0.1.1",
    );
    for _ in 0..4 {
        for (_, d) in b.take_outbox() {
            a.datagram(&d, SocketAddr::from(([10, 0, 0, 2], 7946)));
        }
        a.sync();
        for (_, d) in a.take_outbox() {
            b.datagram(&d, SocketAddr::from(([10, 0, 0, 1], 7946)));
        }
        b.sync();
    }
    assert_eq!(big.v4("b.lan"), "10.0.1.1");
    assert_eq!(small.v4("b.lan"), "NotOurs", "no room for a second service");
    let log = a.take_log();
    let refused = |what: &str| log.iter().filter(|l| l.contains(what)).count();
    assert!(
        refused("cluster: table full: `capacity` allows 1 services (raise it in the config file); not applied here (add b.lan 10.0.1.1") > 0,
        "{log:?}"
    );
    assert!(
        refused("cluster: service full: `capacity` allows 2 backends per service (raise it in the config file); not applied here (add a.lan 10.0.0.3") > 0,
        "{log:?}"
    );
    let status = a.cluster_status(at(1_000)).unwrap();
    let n: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("capacity_refused "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 2, "{status}");
}

#[test]
fn a_cluster_reload_replicates_what_the_config_dropped_and_added() {
    use crate::cluster::wire::Key;
    let m = Mem::new();
    let cl = Cluster::new("a", Key::new(b"k".to_vec()), [1; 32], 1_000_000, 0, false);
    let mut config = config::parse(CONF.as_bytes()).unwrap();
    config.mtime_ms = 900_000;
    let mut a = Agent::start(Box::new(&m), false, "conf".into(), config, at(0), Some(cl));
    let mut peer = Cluster::new("b", Key::new(b"k".to_vec()), [2; 32], 1_000_000, 0, false);
    // The handshakes: each believes the other's boot.
    let (from_a, from_b) = (
        SocketAddr::from(([10, 0, 0, 1], 7946)),
        SocketAddr::from(([10, 0, 0, 2], 7946)),
    );
    peer.hello(None, 1_000_000);
    for _ in 0..8 {
        for (_, d) in peer.take_outbox() {
            a.datagram(&d, from_b);
        }
        for (_, d) in a.take_outbox() {
            peer.datagram(&d, from_a, 0, 1_000_000);
        }
    }
    a.sync();
    let mut reloaded = config::parse(b"add db.lan 10.0.3.3\n").unwrap();
    reloaded.mtime_ms = 1_000_500;
    a.wake(at(600));
    a.reload(Ok(reloaded));
    a.publish();
    for (_, d) in a.take_outbox() {
        peer.datagram(&d, from_a, 600, 1_000_600);
    }
    assert_eq!(m.v4("web.lan"), "NotOurs");
    assert_eq!(m.v4("db.lan"), "10.0.3.3");
    assert!(
        peer.replica.service("web.lan").is_none(),
        "the removal reached the peer"
    );
    assert!(peer.replica.service("db.lan").is_some(), "and the addition");
}

#[test]
fn fastest_sets_follow_round_trip_times_and_are_republished_only_when_they_change() {
    let m = Mem::new();
    let conf = "policy f.lan fastest\nadd f.lan 10.0.0.1\nadd f.lan 10.0.0.2\nadd f.lan 10.0.0.3\n";
    let mut a = m.agent(false, conf, 0);
    a.take_log();
    let rtt = |ms: [u32; 3]| {
        move |_: &str, addr: IpAddr| match addr.to_string().as_str() {
            "10.0.0.1" => Some(ms[0] * 1000),
            "10.0.0.2" => Some(ms[1] * 1000),
            _ => Some(ms[2] * 1000),
        }
    };
    let picks = |m: &Mem| {
        let mut got: Vec<String> = (0..4).map(|_| m.v4("f.lan")).collect();
        got.sort();
        got.dedup();
        got
    };
    // No times yet: every backend in turn.
    a.fastest(|_, _| None);
    a.publish();
    assert_eq!(picks(&m), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert!(a.take_log().is_empty(), "nothing changed");
    a.fastest(rtt([30, 10, 11]));
    a.publish();
    assert_eq!(picks(&m), ["10.0.0.2", "10.0.0.3"]);
    assert_eq!(
        a.take_log(),
        ["fastest: f.lan: 10.0.0.2 (10.000 ms), 10.0.0.3 (11.000 ms)"]
    );
    // New times that keep the choice: nothing is written.
    let seq = TableView::new_checked(&m.table).unwrap().service(0);
    a.fastest(rtt([29, 10, 12]));
    assert!(a.pending.slots.is_empty() && a.take_log().is_empty());
    assert_eq!(TableView::new_checked(&m.table).unwrap().service(0), seq);
    // The fastest goes down: the next takes over at once (the table changed).
    send(&mut a, "down f.lan 10.0.0.2");
    a.fastest(rtt([29, 10, 12]));
    a.publish();
    assert_eq!(picks(&m), ["10.0.0.3"]);
    assert_eq!(a.take_log(), ["fastest: f.lan: 10.0.0.3 (12.000 ms)"]);
    // Not a fastest service: untouched whatever the times.
    send(&mut a, "policy f.lan roundrobin\nup f.lan 10.0.0.2");
    a.fastest(rtt([1, 50, 50]));
    assert!(a.take_log().is_empty());
}

#[test]
fn repairs_are_taken_in_when_they_stop_saved_first_and_commands_at_once() {
    use crate::agent::Saver;
    use crate::cluster::wire::Key;
    use crate::cluster::Dest;
    let m = Mem::new();
    let saves: Rc<std::cell::RefCell<Vec<Vec<u8>>>> = Rc::default();
    let kept = saves.clone();
    let saver = Saver(Box::new(move |b: &[u8]| {
        kept.borrow_mut().push(b.to_vec());
        Ok(())
    }));
    let conf = format!("{CONF}state /nonexistent/lbfo.state\n");
    let config = config::parse(conf.as_bytes()).unwrap();
    let cl = Cluster::new("a", Key::new(b"k".to_vec()), [1; 32], 1_000_000, 0, false);
    let mut a = Agent::start_with(
        Box::new(&m),
        false,
        "conf".into(),
        config,
        at(0),
        Some(cl),
        None,
        Some(saver),
        None,
    );
    let mut peer = Cluster::new("b", Key::new(b"k".to_vec()), [2; 32], 1_000_000, 0, false);
    let (from_a, from_b) = (
        SocketAddr::from(([10, 0, 0, 1], 7946)),
        SocketAddr::from(([10, 0, 0, 2], 7946)),
    );
    // Delivers both outboxes until both are quiet, at `t`.
    let exchange = |a: &mut Agent<'_>, peer: &mut Cluster, t: u64| {
        a.wake(at(t));
        for _ in 0..8 {
            for (_, d) in peer.take_outbox() {
                a.datagram(&d, from_b);
            }
            a.sync();
            for (_, d) in a.take_outbox() {
                peer.datagram(&d, from_a, t, 1_000_000 + t);
            }
        }
    };
    peer.hello(None, 1_000_000);
    exchange(&mut a, &mut peer, 0);
    let count = |s: &Rc<std::cell::RefCell<Vec<Vec<u8>>>>| s.borrow().len();
    let has = |b: &[u8], s: &str| b.windows(s.len()).any(|w| w == s.as_bytes());
    let started = count(&saves);
    assert!(started >= 1, "the state at start is saved");
    let cmd = |line: &str| match lbfo_core::parse_line(line) {
        Ok(Some(lbfo_core::Line::Command(c))) => c,
        other => panic!("{line}: {other:?}"),
    };

    // A peer's command heard from the group, 50 ms after the last save: saved at once (a
    // whole cluster losing power just after keeps it on every node that heard it).
    let entries = peer
        .replica
        .command(&cmd("add peer.lan 10.7.7.7"), 1_000_050)
        .unwrap();
    peer.send_entries(Dest::All, &entries, 1_000_050);
    exchange(&mut a, &mut peer, 50);
    assert_eq!(m.v4("peer.lan"), "10.7.7.7");
    assert_eq!(
        count(&saves),
        started + 1,
        "a command heard is saved at once"
    );
    assert!(has(saves.borrow().last().unwrap(), "peer.lan"));

    // A change the peer made that never reached the group comes as a repair, when this node's
    // digest shows it behind. Repairs are taken into the table once they stop
    // (REPAIRS_QUIET_MS without news), the state file first: the table never shows what the file
    // lacks.
    let _ = peer
        .replica
        .command(&cmd("add missed.lan 10.6.6.6"), 1_000_100);
    let t = a.next_deadline();
    a.tick(at(t));
    exchange(&mut a, &mut peer, t);
    assert!(
        a.cluster
            .as_ref()
            .unwrap()
            .replica
            .service("missed.lan")
            .is_some(),
        "repaired at {t} ms"
    );
    assert_eq!(m.v4("missed.lan"), "NotOurs", "not yet in the table");
    assert_eq!(count(&saves), started + 1, "nor saved");
    let last = t + crate::agent::reconcile::REPAIRS_QUIET_MS;
    assert_eq!(a.next_deadline(), last, "a wake-up is due to take it in");
    a.tick(at(last - 1));
    assert_eq!(m.v4("missed.lan"), "NotOurs", "not before");
    a.tick(at(last));
    assert_eq!(count(&saves), started + 2, "saved");
    assert!(has(saves.borrow().last().unwrap(), "missed.lan"));
    assert_eq!(m.v4("missed.lan"), "10.6.6.6", "and then in the table");

    // This node's own change, right after that save: saved at once.
    a.tick(at(last + 10));
    send(&mut a, "add own.lan 10.8.8.8");
    assert_eq!(count(&saves), started + 3, "a FIFO change is saved at once");
    assert!(has(saves.borrow().last().unwrap(), "own.lan"));

    // A FIFO command while repairs wait does not make them forgotten: they still reach the
    // table when due.
    let _ = peer
        .replica
        .command(&cmd("add late.lan 10.5.5.5"), 1_000_000 + last + 20);
    let t = a.next_deadline();
    a.tick(at(t));
    exchange(&mut a, &mut peer, t);
    assert_eq!(m.v4("late.lan"), "NotOurs", "waiting");
    send(&mut a, "add own2.lan 10.8.8.9");
    let due = a.next_deadline();
    assert!(
        due <= t + crate::agent::reconcile::REPAIRS_QUIET_MS,
        "{due}"
    );
    a.tick(at(due));
    assert_eq!(m.v4("late.lan"), "10.5.5.5");
}

/// What the agent keeps between turns so that a change does not walk every slot (whether any
/// backend has a limit; which services are `fastest`) follows every way a table changes.
#[test]
fn limits_and_fastest_sets_follow_later_changes_to_existing_services() {
    let m = Mem::new();
    let conf = "add l.lan 10.0.0.1\nadd l.lan 10.0.0.2\nadd o.lan 10.0.1.1\nadd o.lan 10.0.1.2\n";
    let mut a = m.agent(false, conf, 0);
    a.fastest(|_, _| Some(1000));
    a.take_log();
    assert_eq!(
        a.next_deadline(),
        HEARTBEAT_MS,
        "no limits: no limit checks"
    );
    // A limit given to a backend the service already has (no service appears)...
    send(&mut a, "add l.lan 10.0.0.1 limit=2");
    assert_eq!(a.next_deadline(), LIMIT_CHECK_MS, "a limit: checked");
    // ... is kept through a change to another service, which has none.
    send(&mut a, "weight o.lan 10.0.1.1 3");
    assert_eq!(a.next_deadline(), LIMIT_CHECK_MS, "still a limit somewhere");
    for _ in 0..4 {
        m.v4("l.lan");
    }
    a.tick(at(100));
    assert_eq!(
        a.take_log(),
        ["limit reached: l.lan 10.0.0.1 after 2 lookups"]
    );
    assert!(
        a.next_deadline() > 100 + LIMIT_CHECK_MS,
        "no limit left: no limit checks"
    );

    // A service made `fastest` after the list of fastest services was made, by a policy
    // command alone.
    send(&mut a, "policy o.lan fastest");
    a.take_log();
    a.fastest(|_, addr: IpAddr| {
        Some(if addr.to_string() == "10.0.1.2" {
            1000
        } else {
            90_000
        })
    });
    a.publish();
    assert_eq!(a.take_log(), ["fastest: o.lan: 10.0.1.2 (1.000 ms)"]);
    assert_eq!(
        (m.v4("o.lan"), m.v4("o.lan")),
        ("10.0.1.2".into(), "10.0.1.2".into())
    );
}
