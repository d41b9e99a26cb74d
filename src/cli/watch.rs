//! `permitd watch`: a live view of `Quotas.Watch`.
//!
//! Two outputs:
//! - a table that redraws in place (ANSI home + clear; plain ASCII bars, so it works over
//!   ssh and in any terminal), one row per bucket and dimension, with a cooldown countdown
//!   that ticks between updates. When stdout is not a terminal the table is printed again
//!   after each batch of changes instead, without escape codes;
//! - with `--json`, one JSON object per update per line, for scripts.
//!
//! Ends with status 0 when the stream ends (the server's final UNAVAILABLE at shutdown
//! included, noted on stderr), on Ctrl-C, or when stdout is closed (`| head`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use tonic::Code;

use super::WatchArgs;
use super::output::{self, json_str};
use super::rpc::{RpcError, connect};
use permitd::proto::quotas_client::QuotasClient;
use permitd::proto::{LimitSource, QuotaUpdate, WatchRequest};

/// Width of a remaining/limit bar, in characters.
const BAR: usize = 20;
/// How often the table is redrawn when something changed (and to tick countdowns).
const REDRAW: Duration = Duration::from_millis(200);
/// Redraw at least this often in a terminal (countdowns move).
const TICK: Duration = Duration::from_secs(1);

/// One bucket as last received.
struct Seen {
    update: QuotaUpdate,
    /// When it arrived, to count the cooldown down locally.
    at: Instant,
}

/// `permitd watch`.
pub(super) async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let min_interval = prost_types::Duration::try_from(args.interval)
        .map_err(|_| anyhow::anyhow!("--interval: too large"))?;
    // The call's deadline covers connecting and the stream's start, not its life.
    let channel = connect(&args.conn, args.conn.timeout).await?;
    let req = WatchRequest {
        resource_prefix: args.prefix.clone().unwrap_or_default(),
        min_interval: Some(min_interval),
        partition_prefix: args.partition_prefix.clone().unwrap_or_default(),
        resource_buckets_only: args.resource_buckets_only,
    };
    let mut stream = QuotasClient::new(channel)
        .watch(req)
        .await
        .map_err(RpcError::from)?
        .into_inner();
    let terminal = !args.json && std::io::stdout().is_terminal();
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    let mut dirty = true;
    let mut drawn = Instant::now();
    let mut redraw = tokio::time::interval(REDRAW);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let ended = loop {
        tokio::select! {
            // Polled first, so the handler is installed before anything is printed.
            biased;
            _ = &mut ctrl_c => break None,
            m = stream.message() => match m {
                Ok(Some(u)) if args.json => {
                    if !write_out(&update_json(&u))? {
                        break None;
                    }
                }
                Ok(Some(u)) => {
                    let key = (u.resource.clone(), u.partition.clone());
                    seen.insert(key, Seen { update: u, at: Instant::now() });
                    dirty = true;
                }
                Ok(None) => break Some("stream ended".to_owned()),
                Err(s) if s.code() == Code::Unavailable => {
                    break Some(format!("stream ended: {}", RpcError::from(s)));
                }
                Err(s) => return Err(RpcError::from(s).into()),
            },
            _ = redraw.tick(), if !args.json => {
                if dirty || (terminal && drawn.elapsed() >= TICK) {
                    let text = table(&seen, &args, terminal);
                    if !write_out(&text)? {
                        break None;
                    }
                    dirty = false;
                    drawn = Instant::now();
                }
            }
        }
    };
    if !args.json && dirty {
        let _ = write_out(&table(&seen, &args, terminal))?;
    }
    if let Some(why) = ended {
        eprintln!("{why}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Write to stdout; false once the reader has gone (a closed pipe).
fn write_out(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `[########............]`: the remaining share of the limit.
fn bar(remaining: u64, limit: u64) -> String {
    let filled = if limit == 0 {
        0
    } else {
        let f = u128::from(remaining.min(limit)) * BAR as u128 / u128::from(limit);
        usize::try_from(f).unwrap_or(BAR)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

/// Seconds of cooldown left, counted down since the update arrived.
fn cooldown_left(s: &Seen) -> Option<Duration> {
    let until = SystemTime::try_from(s.update.cooldown_until?).ok()?;
    let read = s
        .update
        .at
        .and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(SystemTime::now);
    let left = until
        .duration_since(read)
        .ok()?
        .checked_sub(s.at.elapsed())?;
    (!left.is_zero()).then_some(left)
}

/// The whole screen.
fn table(seen: &BTreeMap<(String, String), Seen>, args: &WatchArgs, terminal: bool) -> String {
    let mut rows = vec![
        [
            "RESOURCE",
            "PARTITION",
            "DIMENSION",
            "REMAINING",
            "",
            "IN FLIGHT",
            "QUEUED",
            "COOLDOWN",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for s in seen.values() {
        let u = &s.update;
        let partition = if u.partition.is_empty() {
            "-"
        } else {
            &u.partition
        };
        let in_flight = if u.concurrency == 0 {
            u.in_flight.to_string()
        } else {
            format!("{}/{}", u.in_flight, u.concurrency)
        };
        let cooldown =
            cooldown_left(s).map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d.as_secs_f64()));
        let dims: Vec<(String, String, String)> = if u.dimensions.is_empty() {
            vec![("-".to_owned(), String::new(), "-".to_owned())]
        } else {
            u.dimensions
                .iter()
                .map(|d| {
                    (
                        d.dimension.clone(),
                        bar(d.remaining, d.limit),
                        format!("{}/{}", d.remaining, d.limit),
                    )
                })
                .collect()
        };
        for (dim, bar, figures) in dims {
            rows.push(vec![
                u.resource.clone(),
                partition.to_owned(),
                dim,
                bar,
                figures,
                in_flight.clone(),
                u.queue_depth.to_string(),
                cooldown.clone(),
            ]);
        }
    }
    let mut out = String::new();
    if terminal {
        // Home, then clear: the table redraws in place.
        out.push_str("\x1b[H\x1b[2J");
    }
    let prefix = args.prefix.as_deref().unwrap_or("");
    let _ = writeln!(
        out,
        "permitd watch  {}  prefix={}  buckets={}  {}",
        args.conn.server,
        if prefix.is_empty() { "(all)" } else { prefix },
        seen.len(),
        humantime::format_rfc3339_seconds(SystemTime::now()),
    );
    out.push('\n');
    out.push_str(&output::table(&rows));
    if terminal {
        out.push_str("\nCtrl-C to quit\n");
    } else {
        out.push('\n');
    }
    out
}

/// One update as a JSON object on one line.
fn update_json(u: &QuotaUpdate) -> String {
    let dims: Vec<String> = u
        .dimensions
        .iter()
        .map(|d| {
            let source = output::enum_name(
                LimitSource::try_from(d.source)
                    .ok()
                    .map(|s| s.as_str_name()),
                "LIMIT_SOURCE_",
                d.source,
            );
            format!(
                "{{\"dimension\":{},\"limit\":{},\"remaining\":{},\"period\":{},\
                 \"reset_at\":{},\"source\":{}}}",
                json_str(&d.dimension),
                d.limit,
                d.remaining,
                output::json_duration(d.period.as_ref()),
                output::json_timestamp(d.reset_at.as_ref()),
                json_str(&source),
            )
        })
        .collect();
    format!(
        "{{\"resource\":{},\"partition\":{},\"dimensions\":[{}],\"in_flight\":{},\
         \"concurrency\":{},\"queue_depth\":{},\"cooldown_until\":{},\"granted_total\":{},\
         \"denied_total\":{},\"upstream_429_total\":{},\"at\":{}}}\n",
        json_str(&u.resource),
        json_str(&u.partition),
        dims.join(","),
        u.in_flight,
        u.concurrency,
        u.queue_depth,
        output::json_timestamp(u.cooldown_until.as_ref()),
        u.granted_total,
        u.denied_total,
        u.upstream_429_total,
        output::json_timestamp(u.at.as_ref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bars are proportional and never overflow.
    #[test]
    fn bars() {
        assert_eq!(
            bar(50, 100),
            format!("[{}{}]", "#".repeat(10), ".".repeat(10))
        );
        assert_eq!(bar(0, 100), format!("[{}]", ".".repeat(20)));
        assert_eq!(bar(500, 100), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(u64::MAX, u64::MAX), format!("[{}]", "#".repeat(20)));
        assert_eq!(bar(3, 0), format!("[{}]", ".".repeat(20)));
    }

    /// An update is one line of JSON with every field, escaped.
    #[test]
    fn json_line() {
        let u = QuotaUpdate {
            resource: "a\"b".into(),
            partition: String::new(),
            dimensions: vec![permitd::proto::DimensionQuota {
                dimension: "requests".into(),
                limit: 10,
                remaining: 9,
                reset_at: None,
                source: LimitSource::Config as i32,
                period: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            in_flight: 1,
            concurrency: 2,
            ..Default::default()
        };
        assert_eq!(
            update_json(&u),
            "{\"resource\":\"a\\\"b\",\"partition\":\"\",\"dimensions\":[{\"dimension\":\
             \"requests\",\"limit\":10,\"remaining\":9,\"period\":\"60s\",\"reset_at\":null,\
             \"source\":\"config\"}],\"in_flight\":1,\"concurrency\":2,\"queue_depth\":0,\
             \"cooldown_until\":null,\"granted_total\":0,\"denied_total\":0,\
             \"upstream_429_total\":0,\"at\":null}\n"
        );
    }
}
