//! One function per client subcommand: build the request from the flags, make the call,
//! print the answer. Flag syntax is checked by clap before any of this runs; what is left
//! here (duplicate dimensions, durations too large for protobuf) fails before connecting.

use super::output::{self, emit};
use super::rpc::{RpcError, connect, request};
use super::{AcquireArgs, ConnArgs, EXIT_DENIED, QuotaArgs, ReleaseArgs, ReportArgs, SummaryArgs};
use anyhow::Context as _;
use permitd::config::{parse_resources_toml, resource_to_toml};
use permitd::proto::permits_client::PermitsClient;
use permitd::proto::quotas_client::QuotasClient;
use permitd::proto::{
    AcquirePermitRequest, AcquirePermitResponse, DeleteResourceRequest, DenialReason,
    GetQuotaRequest, LimitScope, LimitSource, ListResourcesRequest, PutResourceRequest,
    ReleasePermitRequest, ReportOutcomeRequest, Resource,
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Resources asked for per `ListResources` page.
const PAGE_SIZE: u32 = 100;

/// `permitd acquire`.
pub(super) async fn acquire(args: AcquireArgs) -> anyhow::Result<ExitCode> {
    let cost = to_map("--cost", args.cost)?;
    let max_wait = proto_duration("--max-wait", args.max_wait)?;
    let lease = proto_duration("--lease", args.lease)?;
    let deadline = args
        .conn
        .timeout
        .saturating_add(args.max_wait.unwrap_or_default());
    let mut client = PermitsClient::new(connect(&args.conn, deadline).await?);
    let msg = AcquirePermitRequest {
        resource: args.resource,
        partition: args.partition.unwrap_or_default(),
        cost,
        max_wait,
        priority: args.priority,
        client_id: args.client_id,
        lease,
    };
    let resp = client
        .acquire_permit(request(msg, deadline))
        .await
        .map_err(RpcError::from)?
        .into_inner();
    let text = if args.json {
        acquire_json(&resp)
    } else {
        acquire_text(&resp)
    };
    emit(&text)?;
    Ok(if resp.granted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}

/// The denial reason's short name (`rate_limited`), or `None` when not denied.
fn denial_reason(resp: &AcquirePermitResponse) -> Option<String> {
    if resp.granted && resp.denial_reason == 0 {
        return None;
    }
    let full = DenialReason::try_from(resp.denial_reason)
        .ok()
        .map(|r| r.as_str_name());
    Some(output::enum_name(
        full,
        "DENIAL_REASON_",
        resp.denial_reason,
    ))
}

/// An acquire answer for people.
fn acquire_text(resp: &AcquirePermitResponse) -> String {
    let mut rows = Vec::new();
    if resp.granted {
        rows.push(("permit_id", resp.permit_id.clone()));
        rows.push((
            "lease_expires_at",
            output::timestamp(resp.lease_expires_at.as_ref()),
        ));
    } else {
        rows.push(("reason", denial_reason(resp).unwrap_or_default()));
        rows.push(("retry_after", output::duration(resp.retry_after.as_ref())));
    }
    rows.push(("waited", output::duration(resp.waited.as_ref())));
    rows.push(("remaining", output::amounts(&resp.remaining)));
    let mut out = String::from(if resp.granted {
        "granted\n"
    } else {
        "denied\n"
    });
    for (key, value) in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{:<17} {value}", format!("{key}:"));
    }
    out
}

/// An acquire answer as one JSON object on one line.
fn acquire_json(resp: &AcquirePermitResponse) -> String {
    let permit_id = if resp.permit_id.is_empty() {
        "null".to_owned()
    } else {
        output::json_str(&resp.permit_id)
    };
    let reason = denial_reason(resp).map_or_else(|| "null".to_owned(), |r| output::json_str(&r));
    format!(
        "{{\"granted\":{},\"permit_id\":{permit_id},\"denial_reason\":{reason},\
         \"retry_after\":{},\"lease_expires_at\":{},\"waited\":{},\"remaining\":{}}}\n",
        resp.granted,
        output::json_duration(resp.retry_after.as_ref()),
        output::json_timestamp(resp.lease_expires_at.as_ref()),
        output::json_duration(resp.waited.as_ref()),
        output::json_amounts(&resp.remaining),
    )
}

/// `permitd release`.
pub(super) async fn release(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let mut client = PermitsClient::new(connect(&args.conn, args.conn.timeout).await?);
    let msg = ReleasePermitRequest {
        permit_id: args.permit_id.clone(),
        refund: args.refund,
    };
    client
        .release_permit(request(msg, args.conn.timeout))
        .await
        .map_err(RpcError::from)?;
    let refunded = if args.refund { " (cost refunded)" } else { "" };
    emit(&format!("released {}{refunded}\n", args.permit_id))?;
    Ok(ExitCode::SUCCESS)
}

/// `permitd report`.
pub(super) async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let actual_cost = to_map("--actual-cost", args.actual_cost)?;
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in args.headers {
        // Repeated headers combine as HTTP does: one value, comma separated.
        match headers
            .keys()
            .find(|k| k.eq_ignore_ascii_case(&name))
            .cloned()
        {
            Some(existing) => {
                if let Some(v) = headers.get_mut(&existing) {
                    v.push_str(", ");
                    v.push_str(&value);
                }
            }
            None => {
                headers.insert(name, value);
            }
        }
    }
    let mut client = PermitsClient::new(connect(&args.conn, args.conn.timeout).await?);
    let msg = ReportOutcomeRequest {
        permit_id: args.permit_id.unwrap_or_default(),
        resource: args.resource.unwrap_or_default(),
        partition: args.partition.unwrap_or_default(),
        status_code: args.status,
        headers,
        actual_cost,
        attempt: args.attempt,
        answered_ago: None,
    };
    let resp = client
        .report_outcome(request(msg, args.conn.timeout))
        .await
        .map_err(RpcError::from)?
        .into_inner();
    let mut out = String::new();
    let _ = writeln!(out, "retry:          {}", resp.retry);
    let _ = writeln!(
        out,
        "retry_after:    {}",
        output::duration(resp.retry_after.as_ref())
    );
    let _ = writeln!(
        out,
        "cooldown_until: {}",
        output::timestamp(resp.cooldown_until.as_ref())
    );
    if !resp.learned.is_empty() {
        let mut rows = vec![vec![
            "LEARNED".to_owned(),
            "LIMIT".to_owned(),
            "REMAINING".to_owned(),
            "RESET_AT".to_owned(),
            "FROM".to_owned(),
        ]];
        rows.extend(resp.learned.iter().map(|l| {
            vec![
                l.dimension.clone(),
                l.limit.to_string(),
                l.remaining.to_string(),
                output::timestamp(l.reset_at.as_ref()),
                l.source.clone(),
            ]
        }));
        out.push('\n');
        out.push_str(&output::table(&rows));
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `permitd resources list`.
pub(super) async fn resources_list(
    conn: &ConnArgs,
    prefix: String,
    as_toml: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = QuotasClient::new(connect(conn, conn.timeout).await?);
    let mut resources = Vec::new();
    let mut page_token = String::new();
    loop {
        let msg = ListResourcesRequest {
            prefix: prefix.clone(),
            page_size: PAGE_SIZE,
            page_token: page_token.clone(),
        };
        let page = client
            .list_resources(request(msg, conn.timeout))
            .await
            .map_err(RpcError::from)?
            .into_inner();
        resources.extend(page.resources);
        if page.next_page_token.is_empty() {
            break;
        }
        // A server handing back the same token would page forever.
        anyhow::ensure!(
            page.next_page_token != page_token,
            "the server repeated page token \"{page_token}\""
        );
        page_token = page.next_page_token;
    }
    if resources.is_empty() {
        if !as_toml {
            eprintln!("no resources");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = if as_toml {
        let tables: Vec<String> = resources.iter().map(resource_to_toml).collect();
        tables.join("\n")
    } else {
        resources_table(&resources)
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Resources as an aligned table, one per line.
fn resources_table(resources: &[Resource]) -> String {
    let mut rows = vec![
        [
            "NAME",
            "LIMITS",
            "CONCURRENCY",
            "LEASE",
            "PER_PARTITION",
            "MAX_QUEUE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in resources {
        let limits: Vec<String> = r
            .limits
            .iter()
            .map(|l| {
                let mut s = format!(
                    "{} {}/{}",
                    l.dimension,
                    l.amount,
                    output::duration(l.period.as_ref())
                );
                if l.burst != 0 {
                    let _ = write!(s, " burst {}", l.burst);
                }
                match LimitScope::try_from(l.scope) {
                    Ok(LimitScope::Resource) => s.push_str(" per resource"),
                    Ok(LimitScope::Partition) => s.push_str(" per partition"),
                    Ok(LimitScope::Unspecified) => {}
                    Err(_) => {
                        let _ = write!(s, " scope {}", l.scope);
                    }
                }
                s
            })
            .collect();
        rows.push(vec![
            r.name.clone(),
            if limits.is_empty() {
                "-".to_owned()
            } else {
                limits.join("; ")
            },
            if r.concurrency == 0 {
                "unlimited".to_owned()
            } else {
                r.concurrency.to_string()
            },
            output::duration(r.lease.as_ref()),
            if r.per_partition { "yes" } else { "no" }.to_owned(),
            if r.max_queue == 0 {
                "default".to_owned()
            } else {
                r.max_queue.to_string()
            },
        ]);
    }
    output::table(&rows)
}

/// `permitd resources put`.
pub(super) async fn resources_put(conn: &ConnArgs, file: &Path) -> anyhow::Result<ExitCode> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let origin = if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let resources = parse_resources_toml(&text).with_context(|| origin.clone())?;
    let mut client = QuotasClient::new(connect(conn, conn.timeout).await?);
    for resource in resources {
        let name = resource.name.clone();
        let msg = PutResourceRequest {
            resource: Some(resource),
        };
        let resp = client
            .put_resource(request(msg, conn.timeout))
            .await
            .map_err(RpcError::from)
            .with_context(|| format!("resource \"{name}\""))?
            .into_inner();
        let verb = if resp.replaced { "replaced" } else { "created" };
        emit(&format!("{verb} {name}\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `permitd resources delete`.
pub(super) async fn resources_delete(conn: &ConnArgs, name: String) -> anyhow::Result<ExitCode> {
    let mut client = QuotasClient::new(connect(conn, conn.timeout).await?);
    let msg = DeleteResourceRequest { name: name.clone() };
    client
        .delete_resource(request(msg, conn.timeout))
        .await
        .map_err(RpcError::from)?;
    emit(&format!("deleted {name}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// `permitd resources reset`.
pub(super) async fn resources_reset(conn: &ConnArgs, name: String) -> anyhow::Result<ExitCode> {
    let mut client = QuotasClient::new(connect(conn, conn.timeout).await?);
    let msg = permitd::proto::ResetResourceRequest { name: name.clone() };
    let r = client
        .reset_resource(request(msg, conn.timeout))
        .await
        .map_err(RpcError::from)?
        .into_inner();
    emit(&format!(
        "reset {name}: cooldowns, blocks and learned limits cleared ({} live buckets)\n",
        r.buckets
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `permitd quota`.
pub(super) async fn quota(args: QuotaArgs) -> anyhow::Result<ExitCode> {
    let mut client = QuotasClient::new(connect(&args.conn, args.conn.timeout).await?);
    let msg = GetQuotaRequest {
        resource: args.resource,
        partition: args.partition.unwrap_or_default(),
    };
    let q = client
        .get_quota(request(msg, args.conn.timeout))
        .await
        .map_err(RpcError::from)?
        .into_inner();
    let partition = if q.partition.is_empty() {
        "- (resource-wide bucket)".to_owned()
    } else {
        q.partition.clone()
    };
    let in_flight = if q.concurrency == 0 {
        format!("{} (no concurrency limit)", q.in_flight)
    } else {
        format!("{} of {}", q.in_flight, q.concurrency)
    };
    let mut out = String::new();
    for (key, value) in [
        ("resource", q.resource.clone()),
        ("partition", partition),
        ("in_flight", in_flight),
        ("queue_depth", q.queue_depth.to_string()),
        (
            "cooldown_until",
            output::timestamp(q.cooldown_until.as_ref()),
        ),
        ("granted_total", q.granted_total.to_string()),
        ("denied_total", q.denied_total.to_string()),
        ("upstream_429_total", q.upstream_429_total.to_string()),
        ("at", output::timestamp(q.at.as_ref())),
    ] {
        let _ = writeln!(out, "{:<19} {value}", format!("{key}:"));
    }
    if !q.dimensions.is_empty() {
        let mut rows = vec![
            [
                "DIMENSION",
                "REMAINING",
                "LIMIT",
                "PERIOD",
                "RESET_AT",
                "SOURCE",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for d in &q.dimensions {
            let source = LimitSource::try_from(d.source)
                .ok()
                .map(|s| s.as_str_name());
            rows.push(vec![
                d.dimension.clone(),
                d.remaining.to_string(),
                d.limit.to_string(),
                output::duration(d.period.as_ref()),
                output::timestamp(d.reset_at.as_ref()),
                output::enum_name(source, "LIMIT_SOURCE_", d.source),
            ]);
        }
        out.push('\n');
        out.push_str(&output::table(&rows));
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `permitd summary`: a resource's totals over its partitions and the ones under most
/// pressure, or with `--all` every partition, page by page.
pub(super) async fn summary(args: SummaryArgs) -> anyhow::Result<ExitCode> {
    use permitd::proto::{GetSummaryRequest, ListPartitionsRequest, PartitionOrder};
    let mut client = QuotasClient::new(connect(&args.conn, args.conn.timeout).await?);
    let prefix = args.partition_prefix.unwrap_or_default();
    let s = client
        .get_summary(request(
            GetSummaryRequest {
                resource: args.resource.clone(),
                partition_prefix: prefix.clone(),
                top: if args.all { 1 } else { args.top },
            },
            args.conn.timeout,
        ))
        .await
        .map_err(RpcError::from)?
        .into_inner();
    let mut out = String::new();
    let kind = if s.per_partition {
        "per partition"
    } else {
        "one shared bucket"
    };
    let under = if prefix.is_empty() {
        String::new()
    } else {
        format!(" starting with {prefix:?}")
    };
    for (key, value) in [
        ("resource", format!("{} ({kind})", s.resource)),
        (
            "partitions",
            format!(
                "{} live{under}, {} near empty ({:.1} %), {} cooling down, {} in slow start",
                s.live_partitions,
                s.near_empty,
                s.near_empty_share * 100.0,
                s.cooling_down,
                s.probing
            ),
        ),
        ("in_flight", s.in_flight.to_string()),
        ("queue_depth", s.queue_depth.to_string()),
        (
            "granted",
            format!(
                "{} ({:.1}/s over {})",
                s.granted_total,
                s.granted_per_second,
                output::duration(s.rate_window.as_ref())
            ),
        ),
        (
            "denied",
            format!("{} ({:.1}/s)", s.denied_total, s.denied_per_second),
        ),
        ("upstream_429_total", s.upstream_429_total.to_string()),
        ("at", output::timestamp(s.at.as_ref())),
    ] {
        let _ = writeln!(out, "{:<19} {value}", format!("{key}:"));
    }
    if !args.all {
        if !s.top.is_empty() {
            let _ = writeln!(out, "\nunder most pressure:");
            out.push_str(&output::table(&partition_rows(&s.top)));
        }
        emit(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    emit(&out)?;
    let order = if args.by_pressure {
        PartitionOrder::Pressure
    } else {
        PartitionOrder::Name
    };
    let mut token = String::new();
    loop {
        let page = client
            .list_partitions(request(
                ListPartitionsRequest {
                    resource: args.resource.clone(),
                    partition_prefix: prefix.clone(),
                    order: order.into(),
                    page_size: 1000,
                    page_token: std::mem::take(&mut token),
                },
                args.conn.timeout,
            ))
            .await
            .map_err(RpcError::from)?
            .into_inner();
        if !page.partitions.is_empty() {
            emit(&format!(
                "\n{}",
                output::table(&partition_rows(&page.partitions))
            ))?;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    Ok(ExitCode::SUCCESS)
}

/// A table of partitions: the tightest dimension of each, its use and its counts.
fn partition_rows(parts: &[permitd::proto::QuotaUpdate]) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "PARTITION",
            "TIGHTEST",
            "REMAINING",
            "IN_FLIGHT",
            "QUEUED",
            "GRANTED",
            "DENIED",
            "COOLDOWN_UNTIL",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for p in parts {
        // The dimension with the least left, as a share of its limit.
        let tight = p.dimensions.iter().filter(|d| d.limit > 0).min_by(|a, b| {
            let share = |d: &permitd::proto::DimensionQuota| d.remaining as f64 / d.limit as f64;
            share(a).total_cmp(&share(b))
        });
        let (dim, left) = tight.map_or(("-".to_owned(), "-".to_owned()), |d| {
            (d.dimension.clone(), format!("{}/{}", d.remaining, d.limit))
        });
        let in_flight = if p.concurrency == 0 {
            p.in_flight.to_string()
        } else {
            format!("{}/{}", p.in_flight, p.concurrency)
        };
        rows.push(vec![
            p.partition.clone(),
            dim,
            left,
            in_flight,
            p.queue_depth.to_string(),
            p.granted_total.to_string(),
            p.denied_total.to_string(),
            output::timestamp(p.cooldown_until.as_ref()),
        ]);
    }
    rows
}

/// Collect `DIM=N` flags into a map, refusing a dimension given twice.
fn to_map(flag: &str, pairs: Vec<(String, u64)>) -> anyhow::Result<HashMap<String, u64>> {
    let mut map = HashMap::with_capacity(pairs.len());
    for (dim, n) in pairs {
        anyhow::ensure!(
            map.insert(dim.clone(), n).is_none(),
            "{flag}: dimension \"{dim}\" given twice"
        );
    }
    Ok(map)
}

/// A flag's duration as a protobuf `Duration`.
fn proto_duration(
    flag: &str,
    d: Option<Duration>,
) -> anyhow::Result<Option<prost_types::Duration>> {
    d.map(|d| {
        prost_types::Duration::try_from(d)
            .map_err(|_| anyhow::anyhow!("{flag}: duration too large"))
    })
    .transpose()
}
