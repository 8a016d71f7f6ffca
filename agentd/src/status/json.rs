//! `status --json`: one JSON object for scripts (the README lists its fields).

use super::out::Out;
use super::{next_total, CheckRow, ClusterInfo, Snapshot};
use crate::health::Last;

/// A checked backend's `"check"` object (see the README for its fields).
fn check_json(o: &mut Out, c: &CheckRow, now_ms: u64) {
    o.s("{\"kind\":").q(&c.kind).s(",\"verdict\":");
    o.s(match c.up {
        Some(true) => "\"up\"",
        Some(false) => "\"down\"",
        None => "null",
    });
    o.s(",\"verdict_age_ms\":")
        .n(now_ms.saturating_sub(c.since_ms));
    o.s(",\"passes\":").n(c.passes.into());
    o.s(",\"fails\":").n(c.fails.into()).s(",\"last\":");
    o.s(match c.last {
        Last::None => "null",
        Last::Pass => "\"pass\"",
        Last::Fail => "\"fail\"",
        Last::Unknown => "\"unknown\"",
    });
    o.s(",\"rtt_us\":").opt(c.rtt_us.map(u64::from));
    o.s(",\"srtt_us\":").opt(c.srtt_us.map(u64::from));
    match &c.error {
        Some((at, text)) => {
            o.s(",\"error\":").q(text).s(",\"error_age_ms\":");
            o.n(now_ms.saturating_sub(*at)).s("}")
        }
        None => o.s(",\"error\":null,\"error_age_ms\":null}"),
    };
}

fn cluster_json(o: &mut Out, c: &ClusterInfo, now_ms: u64) {
    o.s("{\"node\":").q(&c.node).s(",\"id\":\"").s(&c.id);
    o.s("\",\"epoch\":")
        .n(c.epoch)
        .s(",\"written_ms\":")
        .n(c.written_ms);
    o.s(",\"sent_datagrams\":")
        .n(c.sent.0)
        .s(",\"sent_bytes\":")
        .n(c.sent.1);
    o.s(",\"send_errors\":").n(c.send_errors);
    o.s(",\"wakes\":").n(c.wakes);
    o.s(",\"capacity_refused\":")
        .n(c.capacity_refused)
        .s(",\"peers\":[");
    for (i, p) in c.peers.iter().enumerate() {
        o.sep(i).s("{\"node\":").q(&p.node).s(",\"id\":\"").s(&p.id);
        o.s("\",\"addr\":")
            .q(&p.addr)
            .s(",\"last_heard_ms\":")
            .n(p.heard_ms);
        o.s(",\"last_heard_age_ms\":")
            .n(now_ms.saturating_sub(p.heard_ms));
        o.s(",\"epoch\":")
            .n(p.epoch)
            .s(",\"in_sync\":")
            .b(p.in_sync)
            .s("}");
    }
    o.s("],\"drops\":[");
    for (i, (addr, why, n)) in c.drops.iter().enumerate() {
        o.sep(i).s("{\"addr\":").q(addr).s(",\"reason\":").q(why);
        o.s(",\"count\":").n(*n).s("}");
    }
    o.s("],\"drop_totals\":{");
    let mut at = None;
    while let Some((why, n)) = next_total(c, at) {
        o.s(if at.is_some() { "," } else { "" }).q(why).s(":").n(n);
        at = Some(why);
    }
    o.s("}}");
}

/// The report for scripts: one JSON object (see the README for its fields).
pub fn json(s: &Snapshot) -> String {
    let mut o = Out::default();
    o.s("{\"table\":")
        .q(&s.table)
        .s(",\"generation\":\"")
        .hex(s.generation);
    o.s("\",\"heartbeat_ms\":").n(s.heartbeat_ms);
    o.s(",\"heartbeat_age_ms\":").opt(s.heartbeat_age_ms());
    o.s(",\"agent_running\":").b(s.agent_running());
    o.s(",\"retired\":")
        .b(s.retired)
        .s(",\"counters_id\":")
        .opt(s.counters_id);
    o.s(",\"counters_ok\":").b(s.counters_ok);
    o.s(",\"capacity\":{\"max_services\":")
        .n(s.capacity.services() as u64)
        .s(",\"max_backends\":")
        .n(s.capacity.backends() as u64);
    o.s("},\"tampered\":{\"counters\":").n(s.tampered.0);
    o.s(",\"header\":").n(s.tampered.1).s("},\"services\":[");
    for (i, sv) in s.services.iter().enumerate() {
        o.sep(i)
            .s("{\"slot\":")
            .n(sv.slot as u64)
            .s(",\"name\":")
            .q(&sv.name);
        o.s(",\"policy\":\"").s(sv.policy).s("\",\"backends\":[");
        for (j, b) in sv.backends.iter().enumerate() {
            o.sep(j)
                .s("{\"pos\":")
                .n(b.pos as u64)
                .s(",\"addr\":\"")
                .addr(&b.addr, 0);
            o.s(if b.up {
                "\",\"state\":\"up\",\"weight\":"
            } else {
                "\",\"state\":\"down\",\"weight\":"
            });
            o.n(b.weight.into()).s(",\"prio\":").n(b.prio.into());
            o.s(",\"limit\":")
                .n(b.limit)
                .s(",\"lookups\":")
                .opt(b.lookups);
            o.s(",\"fastest\":").b(b.fast).s(",\"check\":");
            match &b.check {
                Some(c) => check_json(&mut o, c, s.now_ms),
                None => {
                    o.s("null");
                }
            }
            o.s("}");
        }
        o.s("],\"checked\":").b(sv.checked()).s(",\"picks_as\":");
        match sv.fastest_fallback() {
            Some(_) => o.s("\"roundrobin\"}"),
            None => o.s("null}"),
        };
    }
    o.s("],\"digest\":\"");
    s.write_digest(&mut o);
    o.s("\",\"cluster\":");
    match &s.cluster {
        Some(c) => cluster_json(&mut o, c, s.now_ms),
        None => {
            o.s("null");
        }
    }
    o.s(",\"nscd_hosts_cache\":");
    match &s.nscd {
        Some(n) => {
            o.s("{\"pid\":").n(n.pid as u64);
            o.s(",\"daemon\":")
                .q(n.daemon.name())
                .s(",\"conf\":")
                .q(&n.conf);
            o.s(",\"warning\":").q(&n.warning()).s("}");
        }
        None => {
            o.s("null");
        }
    }
    o.s("}\n");
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::out::{escape, quote};
    use crate::status::sample;

    #[test]
    fn json_report() {
        assert_eq!(
            json(&sample(9_600, true)),
            "{\"table\":\"/run/lbfo/table\",\"generation\":\"5f0c3e1a9b2d4c77\",\"heartbeat_ms\":9600,\
             \"heartbeat_age_ms\":400,\"agent_running\":true,\"retired\":false,\"counters_id\":32769,\
             \"counters_ok\":true,\"capacity\":{\"max_services\":64,\"max_backends\":8},\"tampered\":{\"counters\":0,\"header\":0},\"services\":[{\"slot\":0,\"name\":\"web.lan\",\"policy\":\"failover\",\
             \"backends\":[{\"pos\":0,\"addr\":\"10.0.0.11\",\"state\":\"up\",\"weight\":1,\"prio\":1,\
             \"limit\":0,\"lookups\":1503,\"fastest\":false,\"check\":null},{\"pos\":1,\"addr\":\"fd00::12\",\
             \"state\":\"down\",\"weight\":3,\"prio\":2,\"limit\":100,\"lookups\":97,\"fastest\":false,\
             \"check\":null}],\"checked\":false,\"picks_as\":null}],\"digest\":\"DIGEST\",\"cluster\":null,\"nscd_hosts_cache\":null}\n"
                .replace("DIGEST", &sample(0, true).digest())
        );
        let j = json(&sample(0, false));
        assert!(
            j.contains("\"heartbeat_age_ms\":null,\"agent_running\":false")
                && j.contains("\"lookups\":null"),
            "{j}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
        assert_eq!(quote("\r\t\u{1f}\u{7f}→"), "\"\\r\\t\\u001f\u{7f}→\"");
        assert_eq!(escape("\r\t→\"", false), "\r\t→\"");
    }
}
