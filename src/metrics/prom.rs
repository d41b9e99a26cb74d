//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! [`Exposition`] owns the format: one `# HELP` and one `# TYPE` line per family, then its
//! samples; label values escaped (`\`, `"`, newline), HELP text escaped (`\`, newline),
//! histograms as cumulative `_bucket{le}` series ending at `+Inf`, plus `_sum` and `_count`.
//! [`render`] owns what is exported. Labels are bounded: resource, dimension, denial reason,
//! status class and gRPC method; partitions are summed, never labels.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::State;
use crate::permits::stats::{Histogram, REASONS, STATUS_CLASSES, WAIT_BOUNDS};
use crate::server::grpc_stats::LATENCY_BOUNDS;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up.
    Counter,
    /// Cumulative buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Histogram => "histogram",
        }
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Start a family: its HELP and TYPE lines. Its samples must follow before the next.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
    }

    /// One sample of an integer counter or gauge.
    pub fn int(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One histogram of the current family: `counts` per bucket of `bounds` (not cumulative)
    /// plus a last one for +Inf; `sum` in the family's unit.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let mut cumulative = 0u64;
        for (i, c) in counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(*c);
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| number(*b));
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(sum));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    /// The text.
    #[must_use]
    pub fn finish(self) -> String {
        self.out
    }
}

/// `{a="x",b="y"}` (nothing when there are no labels), with `le` last when given.
fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (i, (k, v)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A float as Prometheus reads it (`+Inf`, `-Inf`, `NaN` for the special values).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[allow(clippy::cast_precision_loss)] // counters and nanoseconds to float seconds
fn secs_from(units: u64, per_sec: f64) -> f64 {
    units as f64 / per_sec
}

/// Everything `/metrics` exports, as text.
#[must_use]
pub fn render(state: &State, view: &View) -> String {
    let resources: Vec<_> = state
        .registry
        .metrics()
        .into_iter()
        .filter(|r| view.shows(&r.def.name))
        .collect();
    let mut e = Exposition::default();

    e.family("permitd_resources", Kind::Gauge, "Resources defined.");
    e.int(
        "permitd_resources",
        &[],
        u64::try_from(resources.len()).unwrap_or(u64::MAX),
    );

    // Per resource and dimension: the resource-wide bucket's tightest limit.
    type DimGetter = fn(&crate::permits::DimensionView) -> f64;
    #[allow(clippy::cast_precision_loss)]
    let dim_families: [(&str, &str, DimGetter); 3] = [
        (
            "permitd_limit",
            "Units per period of the tightest limit of a dimension (resource-wide bucket).",
            |d| d.limit as f64,
        ),
        (
            "permitd_limit_period_seconds",
            "Period of that limit.",
            |d| d.period.as_secs_f64(),
        ),
        (
            "permitd_remaining",
            "Units available now in the resource-wide bucket.",
            |d| d.remaining as f64,
        ),
    ];
    for (name, help, get) in dim_families {
        e.family(name, Kind::Gauge, help);
        for r in &resources {
            for d in &r.dimensions {
                e.sample(
                    name,
                    &view.labels(&r.def.name, &[("dimension", dim_name(r, d))]),
                    get(d),
                );
            }
        }
    }

    // The same limit as a rate, with where it came from (config, learned, adaptive): the
    // effective rate of a header-less upstream is the adaptive one.
    let name = "permitd_limit_rate_per_second";
    e.family(
        name,
        Kind::Gauge,
        "Units per second of the tightest limit of a dimension, by source (resource-wide bucket).",
    );
    for r in &resources {
        for d in &r.dimensions {
            let dim = dim_name(r, d);
            let source = match d.source {
                crate::permits::resource::Origin::Config => "config",
                crate::permits::resource::Origin::Learned => "learned",
                crate::permits::resource::Origin::Adaptive => "adaptive",
            };
            e.sample(
                name,
                &view.labels(&r.def.name, &[("dimension", dim), ("source", source)]),
                d.rate_per_second,
            );
        }
    }

    // Per resource: gauges summed over its buckets.
    type ResGetter = fn(&crate::permits::ResourceMetrics) -> f64;
    #[allow(clippy::cast_precision_loss)]
    let res_families: [(&str, &str, ResGetter); 6] = [
        (
            "permitd_concurrency_limit",
            "Permits in flight allowed per bucket (0 = unlimited).",
            |r| f64::from(r.def.concurrency),
        ),
        (
            "permitd_in_flight",
            "Leases held, over all the resource's buckets.",
            |r| r.in_flight as f64,
        ),
        (
            "permitd_queue_depth",
            "Callers waiting, over all the resource's buckets.",
            |r| r.queue_depth as f64,
        ),
        (
            "permitd_cooldown_remaining_seconds",
            "Longest cooldown left in any of the resource's buckets (0 = none).",
            |r| r.cooldown_remaining.as_secs_f64(),
        ),
        (
            "permitd_buckets",
            "Live buckets (the resource-wide one plus one per active partition).",
            |r| r.buckets as f64,
        ),
        (
            "permitd_slow_start_buckets",
            "Buckets in slow start: their upstream has not confirmed its limits yet.",
            |r| r.probing as f64,
        ),
    ];
    for (name, help, get) in res_families {
        e.family(name, Kind::Gauge, help);
        for r in &resources {
            e.sample(name, &view.labels(&r.def.name, &[]), get(r));
        }
    }

    if let Some(rls) = &state.rls {
        let name = "permitd_rls_detailed_hits_total";
        e.family(
            name,
            Kind::Counter,
            "ShouldRateLimit answers per value of the rules marked detailed_metric (at most 100 \
             values per rule; later ones are counted as _other).",
        );
        for (resource, value, over, n) in rls.detail.counts() {
            if !view.shows(&resource) {
                continue;
            }
            let code = if over { "over_limit" } else { "ok" };
            let labels = view.labels(&resource, &[("value", &value), ("code", code)]);
            e.int(name, &labels, n);
        }
    }

    e.family(
        "permitd_permits_granted_total",
        Kind::Counter,
        "Permits granted.",
    );
    for r in &resources {
        let n = load(&r.stats.granted);
        e.int(
            "permitd_permits_granted_total",
            &view.labels(&r.def.name, &[]),
            n,
        );
    }
    e.family(
        "permitd_permits_denied_total",
        Kind::Counter,
        "Permits denied, by reason.",
    );
    for r in &resources {
        for (i, (_, reason)) in REASONS.iter().enumerate() {
            let n = load(&r.stats.denied[i]);
            let labels = view.labels(&r.def.name, &[("reason", reason)]);
            e.int("permitd_permits_denied_total", &labels, n);
        }
    }
    e.family(
        "permitd_queue_wait_seconds",
        Kind::Histogram,
        "Time granted callers spent queued.",
    );
    for r in &resources {
        histogram(
            &mut e,
            "permitd_queue_wait_seconds",
            &view.labels(&r.def.name, &[]),
            &r.stats.queue_wait,
        );
    }
    e.family(
        "permitd_upstream_responses_total",
        Kind::Counter,
        "Upstream answers reported, by status class (none = no answer).",
    );
    for r in &resources {
        for (i, class) in STATUS_CLASSES.iter().enumerate() {
            let n = load(&r.stats.upstream[i]);
            let labels = view.labels(&r.def.name, &[("class", class)]);
            e.int("permitd_upstream_responses_total", &labels, n);
        }
    }

    // Server-wide counters would show other tenants' traffic: operators only.
    if view.tenant.is_some() {
        return e.finish();
    }
    let f = &state.feedback;
    for (name, help, c) in [
        (
            "permitd_feedback_reports_total",
            "Outcome reports received.",
            &f.reports,
        ),
        (
            "permitd_feedback_headers_learned_total",
            "Rate-limit header observations learned from.",
            &f.learned,
        ),
        (
            "permitd_feedback_headers_ignored_total",
            "Rate-limit headers that could not be used.",
            &f.ignored_headers,
        ),
        (
            "permitd_feedback_cooldowns_total",
            "Reports that imposed a cooldown.",
            &f.cooldowns,
        ),
        (
            "permitd_feedback_upstream_429_total",
            "Upstream 429 answers reported.",
            &f.upstream_429,
        ),
    ] {
        e.family(name, Kind::Counter, help);
        e.int(name, &[], load(c));
    }
    // Evidence overruling coarse headers: trials of a shorter learned window.
    let name = "permitd_feedback_pace_trials_total";
    e.family(
        name,
        Kind::Counter,
        "Trials of a shorter learned window than whole-second resets show, by outcome.",
    );
    for (outcome, c) in [
        ("tried", &f.pace_tried),
        ("held", &f.pace_held),
        ("refused", &f.pace_refused),
    ] {
        e.int(name, &[("result", outcome)], load(c));
    }

    if let Some((idempotency, cache)) = &state.records {
        let i = idempotency.stats();
        e.family(
            "permitd_idempotency_begins_total",
            Kind::Counter,
            "Idempotency Begins, by answer.",
        );
        for (answer, n) in [
            ("acquired", i.acquired),
            ("in_progress", i.in_progress),
            ("completed", i.replayed),
            ("fingerprint_mismatch", i.mismatched),
        ] {
            e.int("permitd_idempotency_begins_total", &[("answer", answer)], n);
        }
        let c = cache.stats();
        e.family(
            "permitd_cache_gets_total",
            Kind::Counter,
            "Cache Gets, by result.",
        );
        e.int("permitd_cache_gets_total", &[("result", "hit")], c.hits);
        e.int("permitd_cache_gets_total", &[("result", "miss")], c.misses);
        for (name, kind, help, n) in [
            (
                "permitd_idempotency_completed_total",
                Kind::Counter,
                "Results stored by Complete.",
                i.completed,
            ),
            (
                "permitd_idempotency_abandoned_total",
                Kind::Counter,
                "Locks dropped by Abandon.",
                i.abandoned,
            ),
            (
                "permitd_idempotency_expired_removed_total",
                Kind::Counter,
                "Expired or damaged records swept.",
                i.expired_removed,
            ),
            (
                "permitd_cache_evictions_total",
                Kind::Counter,
                "Entries evicted to stay within the byte budget.",
                c.evictions,
            ),
            (
                "permitd_cache_expired_removed_total",
                Kind::Counter,
                "Expired or damaged entries swept.",
                c.expired_removed,
            ),
            (
                "permitd_cache_entries",
                Kind::Gauge,
                "Cache entries indexed now.",
                c.entries,
            ),
            (
                "permitd_cache_bytes",
                Kind::Gauge,
                "Key and value bytes cached now.",
                c.bytes,
            ),
            (
                "permitd_cache_budget_bytes",
                Kind::Gauge,
                "The cache's byte budget.",
                c.max_total_bytes,
            ),
            (
                "permitd_store_corrupt_values",
                Kind::Gauge,
                "Damaged values seen by the store since start.",
                c.corrupt_values,
            ),
        ] {
            e.family(name, kind, help);
            e.int(name, &[], n);
        }
    }

    e.family(
        "permitd_grpc_requests_total",
        Kind::Counter,
        "gRPC requests received, by method (unknown paths as \"other\").",
    );
    for (method, s) in state.grpc.methods() {
        e.int(
            "permitd_grpc_requests_total",
            &[("method", method)],
            load(&s.requests),
        );
    }
    e.family(
        "permitd_grpc_request_duration_seconds",
        Kind::Histogram,
        "Time from a gRPC request to its response head, by method.",
    );
    for (method, s) in state.grpc.methods() {
        let counts: Vec<u64> = s.buckets.iter().map(load).collect();
        let sum = secs_from(load(&s.sum_ns), 1e9);
        e.histogram(
            "permitd_grpc_request_duration_seconds",
            &[("method", method)],
            &LATENCY_BOUNDS,
            &counts,
            sum,
        );
    }

    e.family(
        "permitd_watch_subscribers",
        Kind::Gauge,
        "Subscribers of the quota hub (Watch streams and dashboard pages).",
    );
    let subs = u64::try_from(state.hub.subscribers()).unwrap_or(u64::MAX);
    e.int("permitd_watch_subscribers", &[], subs);
    e.family(
        "permitd_dashboard_clients",
        Kind::Gauge,
        "Dashboard pages connected to /events.",
    );
    e.int("permitd_dashboard_clients", &[], state.dashboard_clients());
    e.family(
        "permitd_dashboard_connections_total",
        Kind::Counter,
        "Dashboard pages connected to /events since the start.",
    );
    let n = state.dashboard_connections();
    e.int("permitd_dashboard_connections_total", &[], n);
    e.finish()
}

/// A queue-wait histogram (sum kept in microseconds).
fn histogram(e: &mut Exposition, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let counts: Vec<u64> = h.buckets.iter().map(load).collect();
    let sum = secs_from(load(&h.sum_us), 1e6);
    e.histogram(name, labels, &WAIT_BOUNDS, &counts, sum);
}

/// Whose metrics a scrape shows, and how resources are labelled.
#[derive(Debug, Clone)]
pub struct View {
    /// One tenant's resources only (a tenant principal); `None`: everything (an operator).
    pub tenant: Option<std::sync::Arc<str>>,
    /// Label each resource's series with its `tenant` (auth on).
    pub tenant_label: bool,
}

impl View {
    /// Everything, unlabelled: auth off.
    #[must_use]
    pub fn all() -> Self {
        Self {
            tenant: None,
            tenant_label: false,
        }
    }

    pub(super) fn shows(&self, qualified: &str) -> bool {
        self.tenant
            .as_deref()
            .is_none_or(|t| crate::auth::tenant::split(qualified).0 == t)
    }

    /// `resource` (as its tenant names it), `tenant` when labelled, then `extra`.
    fn labels<'a>(
        &self,
        qualified: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let (tenant, name) = crate::auth::tenant::split(qualified);
        let mut out = Vec::with_capacity(2 + extra.len());
        out.push(("resource", name));
        if self.tenant_label {
            out.push(("tenant", tenant));
        }
        out.extend_from_slice(extra);
        out
    }
}

/// A dimension's name as a label.
fn dim_name<'a>(
    r: &'a crate::permits::ResourceMetrics,
    d: &crate::permits::DimensionView,
) -> &'a str {
    r.def
        .dimensions
        .get(d.dimension)
        .map_or("?", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label values and HELP text are escaped; histograms are cumulative up to +Inf.
    #[test]
    fn format() {
        let mut e = Exposition::default();
        e.family("m", Kind::Gauge, "a \\ b\nc");
        e.sample("m", &[("l", "x\"y\\z\nw")], 0.5);
        e.sample("m", &[], f64::INFINITY);
        e.family("h", Kind::Histogram, "h");
        e.histogram("h", &[("r", "a")], &[0.1, 1.0], &[1, 2, 3], 4.25);
        assert_eq!(
            e.finish(),
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\n\
             m{l=\"x\\\"y\\\\z\\nw\"} 0.5\nm +Inf\n\
             # HELP h h\n# TYPE h histogram\n\
             h_bucket{r=\"a\",le=\"0.1\"} 1\nh_bucket{r=\"a\",le=\"1\"} 3\n\
             h_bucket{r=\"a\",le=\"+Inf\"} 6\nh_sum{r=\"a\"} 4.25\nh_count{r=\"a\"} 6\n"
        );
    }
}
