//! `GET /events`: the dashboard's feed, as server-sent events.
//!
//! Two event types, each one JSON object on one `data:` line:
//! - `quota`: one bucket's state. Fed by the same code as `Quotas.Watch`
//!   ([`crate::server::watch::start`]): a snapshot of every bucket first, then changes
//!   coalesced to at most one per bucket per [`COALESCE`]; a client that falls behind skips
//!   to the latest state.
//! - `totals`: every [`TOTALS_EVERY`], per resource the counters the chart needs (grants,
//!   denials by reason) and its aggregate state, plus the header-feedback counters.
//!
//! - `summary`: every [`TOTALS_EVERY`], per per-partition resource, totals over its live
//!   partitions and the [`TOP`] under most pressure ([`crate::permits::summary`]): a page
//!   shows 10^5 partitions as this, never as one `quota` event each. (The `quota` feed
//!   carries resource-wide buckets only.)
//!
//! The first `totals` also carries each resource's `history`: the counters sampled every
//! second over the last [`HISTORY`] ([`History`]), so a page opened now charts the last five
//! minutes, not only what happened since it opened.
//!
//! A last `bye` event says the server is shutting down, then the stream ends.
//!
//! Memory per client is bounded: one task whose outbox holds [`OUTBOX`] events. A client
//! that does not read fills TCP, then the outbox, then the task waits; meanwhile the watch
//! feed's ring overflows and resynchronises, and totals ticks are skipped.
//!
//! JSON is written by hand (the crate has no JSON serializer). Times are sent as
//! milliseconds *from now* (`cooldown_ms`, `reset_in_ms`) so the page counts down on its
//! own clock, whatever the skew between it and the server.

use super::prom::View;
use crate::store::keys::DEFAULT_TENANT;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};

use super::{ClientGuard, State};
use crate::permits::stats::REASONS;
use crate::proto;
use crate::server::convert::to_duration;
use crate::server::watch::WatchStream;

/// Shortest time between two updates of one bucket.
pub const COALESCE: Duration = Duration::from_millis(250);
/// Period of the `totals` event.
pub const TOTALS_EVERY: Duration = Duration::from_secs(1);
/// Events queued towards one client before its task waits.
const OUTBOX: usize = 16;
/// Partitions named per `summary` event.
pub const TOP: usize = 8;
/// Span of the counters' history.
pub const HISTORY: Duration = Duration::from_secs(300);

/// Per resource, (epoch ms, granted, denied) once a second over the last [`HISTORY`]:
/// sampled by one task for every page (O(resources) a second, whatever the pages).
#[derive(Debug, Default)]
pub struct History {
    rows: std::sync::Mutex<HistoryRows>,
}

#[derive(Debug, Default)]
struct HistoryRows {
    by_resource: std::collections::HashMap<String, std::collections::VecDeque<[u64; 3]>>,
    /// When the last sample was taken.
    last: Option<u64>,
}

impl History {
    /// Record every resource's counters now (and forget deleted resources).
    pub fn sample(&self, registry: &crate::permits::Registry) {
        let t = epoch_ms(SystemTime::now());
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut rows = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let live = registry.stats();
        let names: std::collections::HashSet<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
        rows.by_resource.retain(|k, _| names.contains(k.as_str()));
        let keep = HISTORY.as_millis();
        let last = rows.last.replace(t);
        for (name, stats) in &live {
            let granted = load(&stats.granted);
            let denied: u64 = stats.denied.iter().map(load).sum();
            let h = rows.by_resource.entry(name.clone()).or_default();
            // Counters only grow while a resource lives: smaller ones mean it was made anew.
            if h.back().is_some_and(|b| b[1] > granted || b[2] > denied) {
                h.clear();
            }
            // A resource new since the last sample had no grants then: its first grants
            // count from that instant, not from its first sample.
            if h.is_empty()
                && let Some(prev) = last
            {
                h.push_back([prev, 0, 0]);
            }
            h.push_back([t, granted, denied]);
            while h
                .front()
                .is_some_and(|f| u128::from(t.saturating_sub(f[0])) > keep)
            {
                h.pop_front();
            }
        }
    }

    /// One resource's history as a JSON array of `[t, granted, denied]`.
    fn json(&self, out: &mut String, name: &str) {
        let rows = self
            .rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.push('[');
        // Not sampled yet: made since the last sample, when it had no grants.
        let unseen = rows.last.map(|t| [t, 0, 0]);
        let list: Vec<[u64; 3]> = match rows.by_resource.get(name).filter(|h| !h.is_empty()) {
            Some(h) => h.iter().copied().collect(),
            None => unseen.into_iter().collect(),
        };
        for (i, [t, g, d]) in list.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{t},{g},{d}]");
        }
        out.push(']');
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often an idle stream sends a comment (keeps proxies from closing it, and finds dead
/// clients).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The SSE body type.
pub type EventStream = Sse<axum::response::sse::KeepAliveStream<EventFeed>>;
/// The events of one client.
pub type EventFeed = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// Start one client's feed.
pub(super) fn stream(
    state: &State,
    view: View,
) -> Result<EventStream, crate::permits::PermitError> {
    let req = proto::WatchRequest {
        resource_prefix: String::new(),
        min_interval: Some(to_duration(COALESCE)),
        // Partitions reach the page as summaries: 10^5 of them must not flood it.
        resource_buckets_only: true,
        ..proto::WatchRequest::default()
    };
    let tenant = view.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.into());
    let watch = crate::server::watch::start(
        &state.registry,
        Arc::clone(&state.engine),
        &state.hub,
        &tenant,
        &req,
    )?;
    let (tx, rx) = mpsc::channel(OUTBOX);
    tokio::spawn(pump(state.clone(), view, watch, tx));
    let feed: EventFeed = Box::pin(ReceiverStream::new(rx).map(Ok));
    Ok(Sse::new(feed).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Forward watch updates and totals ticks to the client until the watch ends (shutdown)
/// or the client leaves. The page is counted (`permitd_dashboard_clients` and
/// `permitd_dashboard_connections_total`) once its first totals are queued, so whoever sees
/// it counted knows that later grants reach the page as changes.
async fn pump(state: State, view: View, mut watch: WatchStream, tx: mpsc::Sender<Event>) {
    let mut tick = tokio::time::interval(TOTALS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await; // the first tick is now
    let first = Event::default()
        .event("totals")
        .data(totals_json(&state, &view, true));
    if tx.send(first).await.is_err() {
        return;
    }
    if !send_summaries(&state, &view, &tx).await {
        return;
    }
    let _counted: ClientGuard = state.client_connected();
    loop {
        let event = tokio::select! {
            u = watch.next() => match u {
                Some(Ok(u)) => Event::default().event("quota").data(quota_json(&u)),
                // The watch ends with UNAVAILABLE at shutdown.
                Some(Err(_)) | None => {
                    let _ = tx.send(Event::default().event("bye").data("{}")).await;
                    return;
                }
            },
            _ = tick.tick() => {
                let totals = Event::default().event("totals").data(totals_json(&state, &view, false));
                if tx.send(totals).await.is_err() || !send_summaries(&state, &view, &tx).await {
                    return;
                }
                continue;
            }
            () = tx.closed() => return,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// One `summary` event per per-partition resource the page shows, each read once the
/// client has room for it; false when the client is gone. (A cluster replica holds no
/// partition buckets: it sends none.)
async fn send_summaries(state: &State, view: &View, tx: &mpsc::Sender<Event>) -> bool {
    if !state.engine.holds_buckets() {
        return true;
    }
    let defs = state
        .registry
        .list_where("", "", usize::MAX, |n| view.shows(n));
    for def in defs.iter().filter(|d| d.per_partition) {
        let Ok(slot) = tx.reserve().await else {
            return false;
        };
        let Ok(s) = state.registry.summary(&def.name, "", TOP) else {
            continue;
        };
        let local = crate::auth::tenant::split(&def.name).1;
        let p = crate::server::summaries::summary_to_proto(local, true, &s);
        slot.send(Event::default().event("summary").data(summary_json(&p)));
    }
    true
}

/// A resource summary as the page reads it.
fn summary_json(s: &proto::ResourceSummary) -> String {
    let mut o = String::with_capacity(256 + 512 * s.top.len());
    o.push_str("{\"resource\":");
    json_str(&mut o, &s.resource);
    let _ = write!(
        o,
        ",\"live\":{},\"in_flight\":{},\"queue\":{},\"near_empty\":{},\"cooling\":{},\
         \"probing\":{},\"granted\":{},\"denied\":{},\"upstream_429\":{},\
         \"granted_per_s\":{:.2},\"denied_per_s\":{:.2},\"version\":{},\"top\":[",
        s.live_partitions,
        s.in_flight,
        s.queue_depth,
        s.near_empty,
        s.cooling_down,
        s.probing,
        s.granted_total,
        s.denied_total,
        s.upstream_429_total,
        s.granted_per_second,
        s.denied_per_second,
        s.version,
    );
    for (i, u) in s.top.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&quota_json(u));
    }
    o.push_str("]}");
    o
}

/// `GET /events/partitions?resource=R&prefix=P`: the first [`SEARCH_PAGE`] live partitions
/// of R whose name starts with P, in name order, each read now, and how many match in all.
pub(super) fn partitions_json(
    state: &State,
    view: &View,
    query: &str,
) -> Result<String, (axum::http::StatusCode, String)> {
    use axum::http::StatusCode;
    let mut resource = None;
    let mut prefix = String::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "resource" => resource = Some(v.into_owned()),
            "prefix" => prefix = v.into_owned(),
            _ => {}
        }
    }
    let bad = |e: crate::permits::PermitError| (StatusCode::BAD_REQUEST, format!("{e}\n"));
    let resource = resource.ok_or((StatusCode::BAD_REQUEST, "resource: is required\n".into()))?;
    crate::server::convert::name(
        &resource,
        "resource",
        true,
        crate::permits::resource::MAX_NAME_LEN,
    )
    .map_err(bad)?;
    crate::server::convert::name(
        &prefix,
        "prefix",
        false,
        crate::permits::resource::MAX_NAME_LEN,
    )
    .map_err(bad)?;
    let tenant = view.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
    let qualified = crate::auth::tenant::qualify(tenant, &resource);
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!("unknown resource {resource:?}\n"),
        )
    };
    if !view.shows(&qualified) {
        return Err(not_found());
    }
    if !state.engine.holds_buckets() {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "partition search needs the embedded engine\n".into(),
        ));
    }
    let (rows, _, total) = state
        .registry
        .partitions(
            &qualified,
            &prefix,
            crate::permits::summary::Order::Name,
            "",
            SEARCH_PAGE,
        )
        .map_err(|e| match e {
            crate::permits::PermitError::UnknownResource(_) => not_found(),
            e => bad(e),
        })?;
    let mut o = format!("{{\"total\":{total},\"partitions\":[");
    for (i, (p, v)) in rows.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&quota_json(&crate::server::convert::quota_update(
            &resource, p, v,
        )));
    }
    o.push_str("]}");
    Ok(o)
}

/// Partitions a search answers with.
pub const SEARCH_PAGE: usize = 50;

/// A JSON string literal.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Milliseconds from `now` until `t` (0 when past or absent).
fn ms_until(t: Option<&prost_types::Timestamp>, now: SystemTime) -> u64 {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .and_then(|t| t.duration_since(now).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ms(d: Option<&prost_types::Duration>) -> u64 {
    d.and_then(|d| Duration::try_from(*d).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One bucket as the page reads it.
fn quota_json(u: &proto::QuotaUpdate) -> String {
    // Countdowns are relative to when the state was read.
    let now =
        u.at.as_ref()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or_else(SystemTime::now);
    let mut o = String::with_capacity(256);
    o.push_str("{\"resource\":");
    json_str(&mut o, &u.resource);
    o.push_str(",\"partition\":");
    json_str(&mut o, &u.partition);
    o.push_str(",\"dims\":[");
    for (i, d) in u.dimensions.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json_str(&mut o, &d.dimension);
        let learned = d.source == proto::LimitSource::Learned as i32;
        let source = match proto::LimitSource::try_from(d.source) {
            Ok(proto::LimitSource::Learned) => "learned",
            Ok(proto::LimitSource::Adaptive) => "adaptive",
            _ => "config",
        };
        let _ = write!(
            o,
            ",\"limit\":{},\"remaining\":{},\"period_ms\":{},\"reset_in_ms\":{},\"learned\":{learned},\
             \"source\":\"{source}\",\"rate\":{:.3},\"reason\":",
            d.limit,
            d.remaining,
            ms(d.period.as_ref()),
            ms_until(d.reset_at.as_ref(), now),
            d.rate_per_second,
        );
        json_str(&mut o, &d.reason);
        o.push('}');
    }
    let _ = write!(
        o,
        "],\"in_flight\":{},\"concurrency\":{},\"queue\":{},\"cooldown_ms\":{},\
         \"granted\":{},\"denied\":{},\"upstream_429\":{},\"probing\":{},\"cooldown_reason\":",
        u.in_flight,
        u.concurrency,
        u.queue_depth,
        ms_until(u.cooldown_until.as_ref(), now),
        u.granted_total,
        u.denied_total,
        u.upstream_429_total,
        u.probing,
    );
    json_str(&mut o, &u.cooldown_reason);
    o.push('}');
    o
}

/// Per resource counters and aggregate state, plus the feedback counters.
fn totals_json(state: &State, view: &View, with_history: bool) -> String {
    let now = SystemTime::now();
    let epoch_ms = epoch_ms(now);
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut o = String::with_capacity(512);
    let _ = write!(o, "{{\"t\":{epoch_ms},\"resources\":[");
    let resources = state.registry.metrics();
    let shown = resources.iter().filter(|r| view.shows(&r.def.name));
    for (i, r) in shown.enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str("{\"name\":");
        json_str(&mut o, crate::auth::tenant::split(&r.def.name).1);
        let denied: u64 = r.stats.denied.iter().map(load).sum();
        let _ = write!(
            o,
            ",\"granted\":{},\"denied\":{denied},\"in_flight\":{},\"queue\":{},\
             \"cooldown_ms\":{},\"concurrency\":{},\"buckets\":{},\"per_partition\":{},\
             \"denied_by\":{{",
            load(&r.stats.granted),
            r.in_flight,
            r.queue_depth,
            u64::try_from(r.cooldown_remaining.as_millis()).unwrap_or(u64::MAX),
            r.def.concurrency,
            r.buckets,
            r.def.per_partition,
        );
        for (j, (_, reason)) in REASONS.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            let _ = write!(o, "\"{reason}\":{}", load(&r.stats.denied[j]));
        }
        // The resource-wide bucket's dimensions, read now (refills are not announced).
        o.push_str("},\"dims\":[");
        for (j, d) in r.dimensions.iter().enumerate() {
            if j > 0 {
                o.push(',');
            }
            o.push_str("{\"name\":");
            json_str(
                &mut o,
                r.def
                    .dimensions
                    .get(d.dimension)
                    .map_or("?", String::as_str),
            );
            let reset = d.reset_at.duration_since(now).unwrap_or_default();
            let _ = write!(
                o,
                ",\"limit\":{},\"remaining\":{},\"period_ms\":{},\"reset_in_ms\":{},\"learned\":{},\
                 \"rate\":{:.3},\"reason\":",
                d.limit,
                d.remaining,
                u64::try_from(d.period.as_millis()).unwrap_or(u64::MAX),
                u64::try_from(reset.as_millis()).unwrap_or(u64::MAX),
                d.learned,
                d.rate_per_second,
            );
            json_str(&mut o, &d.reason);
            o.push('}');
        }
        o.push(']');
        if with_history {
            o.push_str(",\"history\":");
            state.history.json(&mut o, &r.def.name);
        }
        o.push('}');
    }
    // Server-wide counters: an operator's view only (a tenant's page shows zeros).
    let none = crate::feedback::apply::Counters::default();
    let f = if view.tenant.is_none() {
        &*state.feedback
    } else {
        &none
    };
    let _ = write!(
        o,
        "],\"feedback\":{{\"reports\":{},\"learned\":{},\"ignored\":{},\"cooldowns\":{},\
         \"upstream_429\":{}}}}}",
        load(&f.reports),
        load(&f.learned),
        load(&f.ignored_headers),
        load(&f.cooldowns),
        load(&f.upstream_429),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings are escaped; countdowns are relative to the read time.
    #[test]
    fn quota_event_json() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let ts = |s| {
            Some(crate::server::convert::to_timestamp(
                at + Duration::from_secs(s),
            ))
        };
        let u = proto::QuotaUpdate {
            resource: "a\"b".into(),
            partition: "p\\1".into(),
            dimensions: vec![proto::DimensionQuota {
                dimension: "requests".into(),
                limit: 10,
                remaining: 7,
                reset_at: ts(3),
                source: proto::LimitSource::Learned as i32,
                period: Some(to_duration(Duration::from_secs(60))),
                ..Default::default()
            }],
            in_flight: 2,
            concurrency: 4,
            queue_depth: 1,
            cooldown_until: ts(5),
            granted_total: 3,
            denied_total: 1,
            upstream_429_total: 0,
            at: ts(0),
            probing: false,
            cooldown_reason: String::new(),
        };
        assert_eq!(
            quota_json(&u),
            "{\"resource\":\"a\\\"b\",\"partition\":\"p\\\\1\",\"dims\":[{\"name\":\"requests\",\
             \"limit\":10,\"remaining\":7,\"period_ms\":60000,\"reset_in_ms\":3000,\
             \"learned\":true,\"source\":\"learned\",\"rate\":0.000,\"reason\":\"\"}],\
             \"in_flight\":2,\"concurrency\":4,\"queue\":1,\"cooldown_ms\":5000,\"granted\":3,\
             \"denied\":1,\"upstream_429\":0,\"probing\":false,\"cooldown_reason\":\"\"}"
        );
    }
}
