//! `status --prometheus`: the text exposition format (version 0.0.4), for node_exporter's
//! textfile collector.

use super::out::{addr_string, Out};
use super::{next_total, BackendRow, CheckRow, ClusterInfo, Snapshot};
use crate::health::Last;

/// The Prometheus text exposition format (version 0.0.4), written as it goes: [`Prom::family`]
/// writes a family's `# HELP` and `# TYPE` lines and [`Prom::sample`] its samples, which the
/// format requires to follow at once. Nothing is collected first, so the families, labels and
/// values cost no intermediate structures (and little code on the routers).
#[derive(Debug, Default)]
pub struct Prom {
    out: Out,
    /// The family being written.
    name: &'static str,
}

/// A metric family. The views pass a family as one pointer to a constant instead of three
/// strings (router size budget).
#[derive(Debug)]
pub struct Family {
    /// `lbfo_...`.
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// One line of help.
    pub help: &'static str,
}

/// A sample's value. Every value `status` reports is a count (or a 0/1 flag) or a time in
/// milliseconds, shown in seconds; integers keep them exact and keep floating point (soft-float
/// code on the routers) out of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A count or a flag.
    Count(u64),
    /// Milliseconds, printed as seconds.
    Ms(u64),
    /// Microseconds, printed as seconds (round-trip times).
    Us(u64),
}

fn flag(v: bool) -> Value {
    Value::Count(u64::from(v))
}

impl Prom {
    /// Starts the family `f`.
    #[inline(never)]
    pub fn family(&mut self, f: &Family) {
        self.name = f.name;
        let o = &mut self.out;
        o.s("# HELP ").s(f.name).s(" ").esc(f.help, false);
        o.s("\n# TYPE ").s(f.name).s(" ").s(f.kind).s("\n");
    }

    /// A sample of the current family.
    #[inline(never)]
    pub fn sample(&mut self, labels: &[(&str, &str)], value: Value) {
        let o = &mut self.out;
        o.s(self.name);
        for (i, (k, v)) in labels.iter().enumerate() {
            o.s(if i == 0 { "{" } else { "," })
                .s(k)
                .s("=\"")
                .esc(v, true)
                .s("\"");
        }
        if !labels.is_empty() {
            o.s("}");
        }
        o.s(" ").value(value).s("\n");
    }

    /// A family of one sample without labels.
    #[inline(never)]
    fn one(&mut self, f: &Family, value: Value) {
        self.family(f);
        self.sample(&[], value);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out.0
    }
}

/// The metrics of a snapshot, in the Prometheus text format.
///
/// Extension point: agent-side counters (for example the cluster's dropped datagrams, as
/// `lbfo_agent_dropped_total{reason="..."}`, a `counter`) become a field of [`Snapshot`] filled in
/// by [`snapshot`](super::snapshot), and one more family written here.
pub fn prometheus(s: &Snapshot) -> String {
    let mut p = Prom::default();
    table_readable(&mut p, true);
    p.one(
        &Family {
            name: "lbfo_agent_up",
            kind: "gauge",
            help: "Whether the agent's heartbeat in the table is recent (1) or not (0).",
        },
        flag(s.agent_running()),
    );
    if let Some(age) = s.heartbeat_age_ms() {
        p.one(
            &Family {
                name: "lbfo_agent_heartbeat_age_seconds",
                kind: "gauge",
                help: "Seconds since the agent last wrote its heartbeat into the table.",
            },
            Value::Ms(age),
        );
    }
    p.one(
        &Family {
            name: "lbfo_table_retired",
            kind: "gauge",
            help: "Whether an agent replaced this table file by another (1).",
        },
        flag(s.retired),
    );
    p.one(&Family { name: "lbfo_counters_readable", kind: "gauge", help: "Whether the shared usage counters could be read (1); without them there are no lookup counts." }, flag(s.counters_ok),
    );
    p.family(&Family { name: "lbfo_counters_tampered_total", kind: "counter", help: "Times the agent found the usage counters written by something other than lookups and put them back: a backend's counter (what=counter), the segment's header (what=header)." });
    p.sample(&[("what", "counter")], Value::Count(s.tampered.0));
    p.sample(&[("what", "header")], Value::Count(s.tampered.1));
    p.one(
        &Family {
            name: "lbfo_services",
            kind: "gauge",
            help: "Services in the table.",
        },
        Value::Count(s.services.len() as u64),
    );
    p.one(
        &Family {
            name: "lbfo_capacity_services",
            kind: "gauge",
            help: "Services the table holds at most (the capacity setting).",
        },
        Value::Count(s.capacity.services() as u64),
    );
    p.one(
        &Family {
            name: "lbfo_capacity_backends",
            kind: "gauge",
            help: "Backends each service holds at most (the capacity setting).",
        },
        Value::Count(s.capacity.backends() as u64),
    );
    p.family(&Family {
        name: "lbfo_service_info",
        kind: "gauge",
        help: "One sample per service, labelled with its policy.",
    });
    for sv in &s.services {
        p.sample(
            &[("service", &sv.name), ("policy", sv.policy)],
            Value::Count(1),
        );
    }
    backend_metrics(&mut p, s);
    check_metrics(&mut p, s);
    if let Some(c) = &s.cluster {
        cluster_metrics(&mut p, c, s.now_ms);
    }
    p.one(
        &Family {
            name: "lbfo_nscd_hosts_cache",
            kind: "gauge",
            help: "Whether an nscd that keeps lbfo's answers is running (1): unscd with its hosts cache on, or glibc's nscd with its hosts cache on and an lbfo module replaced since it loaded it; it may keep serving a backend after lbfo moves on.",
        },
        flag(s.nscd.is_some()),
    );
    p.finish()
}

/// The backends' families, one after the other, each over every backend.
fn backend_metrics(p: &mut Prom, s: &Snapshot) {
    // `None` leaves a backend out. A static table, not an array built on the stack at every call
    // (router size budget).
    type Of = fn(&BackendRow) -> Option<Value>;
    static BACKEND_FAMILIES: [(Family, Of); 5] = [
        (Family { name: "lbfo_backend_lookups_total", kind: "counter", help: "Lookups answered with this backend since its counter was last zeroed (reset, limit)." }, |b| b.lookups.map(Value::Count),
        ),
        (Family { name: "lbfo_backend_up", kind: "gauge", help: "Whether the backend is in rotation (1) or marked down (0)." }, |b| Some(flag(b.up)),
        ),
        (Family { name: "lbfo_backend_weight", kind: "gauge", help: "The backend's weight." }, |b| Some(Value::Count(b.weight.into())),
        ),
        (Family { name: "lbfo_backend_priority", kind: "gauge", help: "The backend's priority (failover picks the lowest among up backends)." }, |b| Some(Value::Count(b.prio.into())),
        ),
        (Family { name: "lbfo_backend_limit", kind: "gauge", help: "The backend's usage limit; 0 means none." }, |b| Some(Value::Count(b.limit)),
        ),
    ];
    for (family, of) in &BACKEND_FAMILIES {
        p.family(family);
        for sv in &s.services {
            for b in &sv.backends {
                if let Some(v) = of(b) {
                    let addr = addr_string(&b.addr);
                    p.sample(&[("service", &sv.name), ("address", &addr)], v);
                }
            }
        }
    }
}

/// The health checks' families, over every checked backend, and the fastest sets.
fn check_metrics(p: &mut Prom, s: &Snapshot) {
    type Of = fn(&CheckRow, u64) -> Option<Value>;
    static CHECK_FAMILIES: [(Family, Of); 7] = [
        (Family { name: "lbfo_check_up", kind: "gauge", help: "The backend's health-check verdict on this machine: up (1) or down (0); absent until fall or rise checks agree." }, |c, _| c.up.map(flag),
        ),
        (Family { name: "lbfo_check_verdict_age_seconds", kind: "gauge", help: "Seconds the check's verdict (or its absence) has held." }, |c, now| Some(Value::Ms(now.saturating_sub(c.since_ms))),
        ),
        (Family { name: "lbfo_check_passes", kind: "gauge", help: "Checks passed in a row." }, |c, _| Some(Value::Count(c.passes.into())),
        ),
        (Family { name: "lbfo_check_failures", kind: "gauge", help: "Checks failed in a row." }, |c, _| Some(Value::Count(c.fails.into())),
        ),
        (Family { name: "lbfo_check_unknown", kind: "gauge", help: "Whether the last check could not run for a local reason (1): no verdict, the backend keeps its last one." }, |c, _| Some(flag(c.last == Last::Unknown)),
        ),
        (Family { name: "lbfo_check_rtt_seconds", kind: "gauge", help: "The last passed check's round-trip time." }, |c, _| c.rtt_us.map(|us| Value::Us(us.into())),
        ),
        (Family { name: "lbfo_check_rtt_smoothed_seconds", kind: "gauge", help: "The smoothed round-trip time (fastest picks by it)." }, |c, _| c.srtt_us.map(|us| Value::Us(us.into())),
        ),
    ];
    let checked = || {
        s.services.iter().flat_map(|sv| {
            sv.backends
                .iter()
                .filter_map(move |b| Some((sv, b, b.check.as_ref()?)))
        })
    };
    if checked().next().is_none() {
        return;
    }
    for (family, of) in &CHECK_FAMILIES {
        p.family(family);
        for (sv, b, c) in checked() {
            if let Some(v) = of(c, s.now_ms) {
                let addr = addr_string(&b.addr);
                p.sample(&[("service", &sv.name), ("address", &addr)], v);
            }
        }
    }
    p.family(&Family { name: "lbfo_check_info", kind: "gauge", help: "One sample per checked backend, labelled with the check's kind, its last result and its last error." });
    for (sv, b, c) in checked() {
        let addr = addr_string(&b.addr);
        let last = match c.last {
            Last::None => "",
            Last::Pass => "pass",
            Last::Fail => "fail",
            Last::Unknown => "unknown",
        };
        let error = c.error.as_ref().map_or("", |(_, t)| t.as_str());
        let labels = [
            ("service", sv.name.as_str()),
            ("address", &addr),
            ("kind", &c.kind),
            ("last", last),
            ("error", error),
        ];
        p.sample(&labels, Value::Count(1));
    }
    p.family(&Family {
        name: "lbfo_backend_fastest",
        kind: "gauge",
        help: "For fastest services: whether the backend is in this machine's fastest set (1).",
    });
    for sv in s.services.iter().filter(|sv| sv.policy == "fastest") {
        for b in &sv.backends {
            let addr = addr_string(&b.addr);
            p.sample(&[("service", &sv.name), ("address", &addr)], flag(b.fast));
        }
    }
}

/// The cluster's families: peers and when each was last heard, dropped datagrams by reason.
fn cluster_metrics(p: &mut Prom, c: &ClusterInfo, now_ms: u64) {
    p.one(
        &Family {
            name: "lbfo_cluster_peers",
            kind: "gauge",
            help: "Peers heard since the agent started.",
        },
        Value::Count(c.peers.len() as u64),
    );
    p.family(&Family {
        name: "lbfo_cluster_peer_last_heard_seconds",
        kind: "gauge",
        help: "Seconds since the agent last accepted a datagram from this peer.",
    });
    for peer in &c.peers {
        p.sample(
            &[("node", &peer.node), ("address", &peer.addr)],
            Value::Ms(now_ms.saturating_sub(peer.heard_ms)),
        );
    }
    p.family(&Family { name: "lbfo_cluster_dropped_total", kind: "counter", help: "Cluster datagrams dropped, by reason (truncated, oversized, version, bad_mac, garbage, replay, unverified, other_group, same_name, too_many_peers, future, misdirected, full)." });
    let mut at = None;
    while let Some((why, n)) = next_total(c, at) {
        p.sample(&[("reason", why)], Value::Count(n));
        at = Some(why);
    }
    p.one(
        &Family {
            name: "lbfo_cluster_sent_bytes_total",
            kind: "counter",
            help: "Bytes of cluster datagrams sent since the agent started.",
        },
        Value::Count(c.sent.1),
    );
    p.one(
        &Family {
            name: "lbfo_cluster_capacity_refused_total",
            kind: "counter",
            help: "Changes from the group not applied here: past this table's capacity.",
        },
        Value::Count(c.capacity_refused),
    );
}

/// What `status --prometheus` prints when the table cannot be read, so a textfile collector
/// still reports the outage instead of keeping stale numbers.
pub fn prometheus_unreadable() -> String {
    let mut p = Prom::default();
    table_readable(&mut p, false);
    p.finish()
}

fn table_readable(p: &mut Prom, yes: bool) {
    p.one(
        &Family {
            name: "lbfo_table_readable",
            kind: "gauge",
            help: "Whether the table could be read (1) or not (0).",
        },
        flag(yes),
    );
}

impl Out {
    /// A Prometheus sample value: a count as it is, milliseconds (microseconds) as seconds with
    /// up to three (six) decimals (no trailing zeros, no exponent).
    #[inline(never)]
    fn value(&mut self, v: Value) -> &mut Self {
        let (t, per) = match v {
            Value::Count(n) => return self.n(n),
            Value::Ms(ms) => (ms, 1000),
            Value::Us(us) => (us, 1_000_000),
        };
        self.n(t / per);
        // In 32 bits: 64-bit division is a library call on the routers.
        let (mut frac, mut unit) = ((t % per) as u32, per as u32 / 10);
        if frac != 0 {
            self.0.push('.');
        }
        while frac != 0 {
            self.0.push(char::from(b'0' + (frac / unit) as u8));
            frac %= unit;
            unit /= 10;
        }
        self
    }
}

/// [`Out::value`] as a string, for the tests.
#[cfg(test)]
fn sample_value(v: Value) -> String {
    let mut o = Out::default();
    o.value(v);
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::out::escape;
    use crate::status::sample;

    #[test]
    fn prometheus_report() {
        let expect = "\
# HELP lbfo_table_readable Whether the table could be read (1) or not (0).
# TYPE lbfo_table_readable gauge
lbfo_table_readable 1
# HELP lbfo_agent_up Whether the agent's heartbeat in the table is recent (1) or not (0).
# TYPE lbfo_agent_up gauge
lbfo_agent_up 1
# HELP lbfo_agent_heartbeat_age_seconds Seconds since the agent last wrote its heartbeat into the table.
# TYPE lbfo_agent_heartbeat_age_seconds gauge
lbfo_agent_heartbeat_age_seconds 0.4
# HELP lbfo_table_retired Whether an agent replaced this table file by another (1).
# TYPE lbfo_table_retired gauge
lbfo_table_retired 0
# HELP lbfo_counters_readable Whether the shared usage counters could be read (1); without them there are no lookup counts.
# TYPE lbfo_counters_readable gauge
lbfo_counters_readable 1
# HELP lbfo_counters_tampered_total Times the agent found the usage counters written by something other than lookups and put them back: a backend's counter (what=counter), the segment's header (what=header).
# TYPE lbfo_counters_tampered_total counter
lbfo_counters_tampered_total{what=\"counter\"} 0
lbfo_counters_tampered_total{what=\"header\"} 0
# HELP lbfo_services Services in the table.
# TYPE lbfo_services gauge
lbfo_services 1
# HELP lbfo_capacity_services Services the table holds at most (the capacity setting).
# TYPE lbfo_capacity_services gauge
lbfo_capacity_services 64
# HELP lbfo_capacity_backends Backends each service holds at most (the capacity setting).
# TYPE lbfo_capacity_backends gauge
lbfo_capacity_backends 8
# HELP lbfo_service_info One sample per service, labelled with its policy.
# TYPE lbfo_service_info gauge
lbfo_service_info{service=\"web.lan\",policy=\"failover\"} 1
# HELP lbfo_backend_lookups_total Lookups answered with this backend since its counter was last zeroed (reset, limit).
# TYPE lbfo_backend_lookups_total counter
lbfo_backend_lookups_total{service=\"web.lan\",address=\"10.0.0.11\"} 1503
lbfo_backend_lookups_total{service=\"web.lan\",address=\"fd00::12\"} 97
# HELP lbfo_backend_up Whether the backend is in rotation (1) or marked down (0).
# TYPE lbfo_backend_up gauge
lbfo_backend_up{service=\"web.lan\",address=\"10.0.0.11\"} 1
lbfo_backend_up{service=\"web.lan\",address=\"fd00::12\"} 0
# HELP lbfo_backend_weight The backend's weight.
# TYPE lbfo_backend_weight gauge
lbfo_backend_weight{service=\"web.lan\",address=\"10.0.0.11\"} 1
lbfo_backend_weight{service=\"web.lan\",address=\"fd00::12\"} 3
# HELP lbfo_backend_priority The backend's priority (failover picks the lowest among up backends).
# TYPE lbfo_backend_priority gauge
lbfo_backend_priority{service=\"web.lan\",address=\"10.0.0.11\"} 1
lbfo_backend_priority{service=\"web.lan\",address=\"fd00::12\"} 2
# HELP lbfo_backend_limit The backend's usage limit; 0 means none.
# TYPE lbfo_backend_limit gauge
lbfo_backend_limit{service=\"web.lan\",address=\"10.0.0.11\"} 0
lbfo_backend_limit{service=\"web.lan\",address=\"fd00::12\"} 100
# HELP lbfo_nscd_hosts_cache Whether an nscd that keeps lbfo's answers is running (1): unscd with its hosts cache on, or glibc's nscd with its hosts cache on and an lbfo module replaced since it loaded it; it may keep serving a backend after lbfo moves on.
# TYPE lbfo_nscd_hosts_cache gauge
lbfo_nscd_hosts_cache 0
";
        assert_eq!(prometheus(&sample(9_600, true)), expect);
        // No heartbeat: no age sample, agent down. No counters: the family stays, empty.
        let p = prometheus(&sample(0, false));
        assert!(
            p.contains("lbfo_agent_up 0\n") && !p.contains("lbfo_agent_heartbeat_age_seconds"),
            "{p}"
        );
        assert!(
            p.contains("# TYPE lbfo_backend_lookups_total counter\n# HELP lbfo_backend_up"),
            "{p}"
        );
        assert!(p.contains("lbfo_counters_readable 0\n"), "{p}");
        assert_eq!(
            prometheus_unreadable(),
            "# HELP lbfo_table_readable Whether the table could be read (1) or not (0).\n\
             # TYPE lbfo_table_readable gauge\nlbfo_table_readable 0\n"
        );
    }

    #[test]
    fn prometheus_escaping_and_values() {
        assert_eq!(escape("a\"b\\c\nd", true), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("a\"b\\c\nd", false), "a\"b\\\\c\\nd");
        let mut p = Prom::default();
        p.one(
            &Family {
                name: "x",
                kind: "gauge",
                help: "h",
            },
            Value::Count(3_000_000_000),
        );
        assert_eq!(p.finish(), "# HELP x h\n# TYPE x gauge\nx 3000000000\n");
        let mut p = Prom::default();
        p.family(&Family {
            name: "x",
            kind: "gauge",
            help: "h\\n",
        });
        p.sample(&[("a", "1"), ("b", "q\"")], Value::Ms(50));
        assert_eq!(
            p.finish(),
            "# HELP x h\\\\n\n# TYPE x gauge\nx{a=\"1\",b=\"q\\\"\"} 0.05\n"
        );
        for (v, text) in [
            (Value::Count(0), "0"),
            (Value::Ms(0), "0"),
            (Value::Ms(9600), "9.6"),
            (Value::Ms(1235), "1.235"),
            (Value::Ms(2000), "2"),
            (Value::Ms(1), "0.001"),
            (Value::Us(812), "0.000812"),
            (Value::Us(1_500_000), "1.5"),
            (Value::Us(0), "0"),
            (Value::Count(u64::MAX), "18446744073709551615"),
        ] {
            assert_eq!(sample_value(v), text, "{v:?}");
        }
    }
}
