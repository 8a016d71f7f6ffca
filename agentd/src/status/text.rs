//! `status` for people: the table, the agent's heartbeat, the cluster, and one aligned table of
//! backends per service.

use super::out::{addr_string, Out};
use super::{ClusterInfo, ServiceRow, Snapshot};
use crate::health::Last;

/// The human-readable report.
pub fn text(s: &Snapshot) -> String {
    let mut o = Out::default();
    o.s("table       ").s(&s.table);
    o.s("\ngeneration  ").hex(s.generation).s("\nheartbeat   ");
    match s.heartbeat_age_ms() {
        None => o.s("never"),
        Some(age) => o.secs(age).s(" ago"),
    };
    o.s(if s.agent_running() {
        " (agent running)\n"
    } else {
        " (agent not running)\n"
    });
    if s.retired {
        o.s("retired     yes: an agent replaced this file; run status again for the new one\n");
    }
    o.s("counters    ");
    match s.counters_id {
        Some(id) => {
            o.s("shm segment ").n(id);
            if !s.counters_ok {
                o.s(" unreadable; lookups are shown as -");
            }
        }
        None => {
            o.s("none yet; lookups are shown as -");
        }
    }
    let (counts, header) = s.tampered;
    if counts + header > 0 {
        o.s("\ntampering   counters put back: ").n(counts);
        o.s(", header rewritten: ")
            .n(header)
            .s(" (something other than lookups wrote the counters segment; see the agent's log)");
    }
    o.s("\nservices    ").n(s.services.len() as u64);
    o.s(" of ").n(s.capacity.services() as u64);
    o.s(" (capacity: up to ")
        .n(s.capacity.backends() as u64)
        .s(" backends each)");
    o.s("\ndigest      ");
    s.write_digest(&mut o);
    o.s("\n");
    if let Some(n) = &s.nscd {
        o.s("warning     ").s(&n.warning()).s("\n");
    }
    if let Some(c) = &s.cluster {
        cluster_text(&mut o, c, s.now_ms);
    }
    let mut width = 7;
    for b in s.services.iter().flat_map(|sv| &sv.backends) {
        width = width.max(addr_string(&b.addr).len());
    }
    for sv in &s.services {
        o.s("\n").s(&sv.name).s("  policy ").s(sv.policy);
        if let Some(why) = sv.fastest_fallback() {
            o.s(" (").s(why).s(")");
        }
        o.s("\n");
        if sv.backends.is_empty() {
            o.s("  (no backends)\n");
            continue;
        }
        o.s("  ").l("ADDRESS", width);
        o.s("  STATE   WEIGHT        PRIO       LIMIT     LOOKUPS\n");
        for b in &sv.backends {
            o.s("  ").addr(&b.addr, width).s("  ");
            o.s(if b.up { "up     " } else { "down   " });
            o.r(Some(b.weight.into()), 7)
                .s("  ")
                .r(Some(b.prio.into()), 10);
            o.s("  ").r((b.limit != 0).then_some(b.limit), 10);
            o.s("  ").r(b.lookups, 10);
            o.s(if b.fast { "  fastest\n" } else { "\n" });
        }
        if sv.checked() {
            checks_text(&mut o, sv, width, s.now_ms);
        }
    }
    o.0
}

/// The service's checked backends: kind, verdict and how long it has held, passes and
/// failures in a row, the last result, round-trip times, the last error and its age.
fn checks_text(o: &mut Out, sv: &ServiceRow, width: usize, now_ms: u64) {
    o.s("  CHECK  ").l("ADDRESS", width);
    o.s("  VERDICT              PASSES   FAILS  LAST      RTT ms   AVG ms  LAST ERROR\n");
    for b in &sv.backends {
        let Some(c) = &b.check else {
            continue;
        };
        o.s("  ").l(&c.kind, 5).s("  ").addr(&b.addr, width).s("  ");
        let mut v = Out::default();
        v.s(match c.up {
            Some(true) => "up for ",
            Some(false) => "down for ",
            None => "none for ",
        })
        .secs(now_ms.saturating_sub(c.since_ms));
        o.l(&v.0, 19)
            .r(Some(c.passes.into()), 8)
            .r(Some(c.fails.into()), 8);
        o.s("  ").l(
            match c.last {
                Last::None => "-",
                Last::Pass => "pass",
                Last::Fail => "fail",
                Last::Unknown => "unknown",
            },
            7,
        );
        o.ms3(c.rtt_us, 9).ms3(c.srtt_us, 9).s("  ");
        match &c.error {
            Some((at, text)) => o
                .s(text)
                .s(" (")
                .secs(now_ms.saturating_sub(*at))
                .s(" ago)\n"),
            None => o.s("-\n"),
        };
    }
}

fn cluster_text(o: &mut Out, c: &ClusterInfo, now_ms: u64) {
    o.s("cluster     node ")
        .s(&c.node)
        .s(" (id ")
        .s(&c.id)
        .s("), epoch ")
        .n(c.epoch);
    o.s(", written ").secs(now_ms.saturating_sub(c.written_ms));
    o.s(" ago; sent ")
        .n(c.sent.0)
        .s(" datagrams, ")
        .n(c.sent.1)
        .s(" bytes, ");
    o.n(c.send_errors).s(" send errors\n");
    if c.capacity_refused > 0 {
        o.s("refused     ").n(c.capacity_refused);
        o.s(" changes from the group, past this table's capacity\n");
    }
    o.s("peers       ");
    o.n(c.peers.len() as u64).s("\n");
    for p in &c.peers {
        o.s("  ").l(&p.node, 16).s(" ").l(&p.addr, 24).s(" heard ");
        o.secs(now_ms.saturating_sub(p.heard_ms))
            .s(" ago  epoch ")
            .n(p.epoch);
        o.s(if p.in_sync {
            "  in sync\n"
        } else {
            "  differs\n"
        });
    }
    let total: u64 = c.drops.iter().map(|d| d.2).sum();
    o.s("dropped     ").n(total).s("\n");
    for (addr, why, n) in &c.drops {
        o.s("  ").l(addr, 24).s(" ").l(why, 10).s(" ").n(*n).s("\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::sample;

    #[test]
    fn text_report() {
        let expect = "\
table       /run/lbfo/table
generation  5f0c3e1a9b2d4c77
heartbeat   0.4 s ago (agent running)
counters    shm segment 32769
services    1 of 64 (capacity: up to 8 backends each)
digest      {DIGEST}

web.lan  policy failover
  ADDRESS    STATE   WEIGHT        PRIO       LIMIT     LOOKUPS
  10.0.0.11  up           1           1           -        1503
  fd00::12   down         3           2         100          97
";
        let expect = expect.replace("{DIGEST}", &sample(0, true).digest());
        assert_eq!(text(&sample(9_600, true)), expect);
        let t = text(&sample(6_900, false));
        assert!(
            t.contains("heartbeat   3.1 s ago (agent not running)\n"),
            "{t}"
        );
        assert!(
            t.contains("unreadable; lookups are shown as -") && t.contains("100           -\n"),
            "{t}"
        );
        assert!(text(&sample(0, true)).contains("heartbeat   never (agent not running)\n"));
    }
}
