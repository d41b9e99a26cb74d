//! Bad input and abuse: one table of malformed, out-of-range and hostile calls, each with
//! the status it must get and the field its message must name. After every row the server
//! must still answer Health/Check SERVING; after the whole table, a resource defined before
//! it must still grant (nothing stored was lost).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use permitd::proto::{self, AcquirePermitResponse};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::support::{TestServer, acquire_req, dur, from_dur, limit, put, resource};

/// The resource every valid-looking row targets: 1 000 requests and 1 000 tokens per hour.
const OK: &str = "bad:ok";
/// The resource the huge-cost rows drive into debt: 1 000 tokens per hour, `input_tokens`
/// declared without a limit, requests unlimited.
const DEBT: &str = "bad:debt";
/// Longest a row may take: the burst row asks to wait 30 s, so answering within this proves
/// it was refused at once, not queued.
const ROW_BOUND: Duration = Duration::from_secs(5);

/// An AcquirePermitRequest whose `resource` is raw bytes, to send what a Rust `String`
/// cannot hold (non-UTF-8).
#[derive(Clone, PartialEq, prost::Message)]
struct RawAcquire {
    #[prost(bytes = "vec", tag = "1")]
    resource: Vec<u8>,
}

/// One call of the table.
enum Call {
    Acquire(proto::AcquirePermitRequest),
    RawAcquire(RawAcquire),
    Report(proto::ReportOutcomeRequest),
    Release(String),
    Put(Option<proto::Resource>),
    Delete(&'static str),
    Quota(&'static str, String),
    Backoff(proto::ComputeBackoffRequest),
    Batch(proto::AcquirePermitsRequest),
    List(proto::ListResourcesRequest),
    Watch(proto::WatchRequest),
    Reset(String),
    Begin(proto::BeginRequest),
    Complete(proto::CompleteRequest),
    Abandon(proto::AbandonRequest),
    IdemGet(String),
    CachePut(proto::CachePutRequest),
    CacheGet(proto::CacheGetRequest),
    CacheDelete(proto::CacheDeleteRequest),
}

/// What a row must get back.
enum Expect {
    /// A granted permit.
    Granted,
    /// A denied permit (a normal answer).
    Denied,
    /// Any OK answer of a call that is not an acquire.
    Answered,
    /// This code, with this text (the field) in the message.
    Error(Code, &'static str),
    /// Any error status (the code is tonic's to pick; printed).
    AnyError,
}

struct Case {
    name: &'static str,
    call: Call,
    expect: Expect,
}

fn row(name: &'static str, call: Call, code: Code, field: &'static str) -> Case {
    Case {
        name,
        call,
        expect: Expect::Error(code, field),
    }
}

fn acquire(f: impl FnOnce(&mut proto::AcquirePermitRequest)) -> Call {
    let mut r = acquire_req(OK);
    f(&mut r);
    Call::Acquire(r)
}

fn ok(name: &'static str, call: Call, expect: Expect) -> Case {
    Case { name, call, expect }
}

fn cost(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

fn pdur(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

fn backoff(f: impl FnOnce(&mut proto::ComputeBackoffRequest)) -> Call {
    let mut r = proto::ComputeBackoffRequest {
        resource: OK.into(),
        attempt: 1,
        status_code: 429,
        ..Default::default()
    };
    f(&mut r);
    Call::Backoff(r)
}

fn begin(f: impl FnOnce(&mut proto::BeginRequest)) -> Call {
    let mut r = proto::BeginRequest {
        key: "bad-input-key".into(),
        fingerprint: "fp".into(),
        ..Default::default()
    };
    f(&mut r);
    Call::Begin(r)
}

fn cache_put(f: impl FnOnce(&mut proto::CachePutRequest)) -> Call {
    let mut r = proto::CachePutRequest {
        namespace: "n".into(),
        key: "k".into(),
        value: b"v".to_vec(),
        ttl: None,
    };
    f(&mut r);
    Call::CachePut(r)
}

fn report(f: impl FnOnce(&mut proto::ReportOutcomeRequest)) -> Call {
    let mut r = proto::ReportOutcomeRequest {
        resource: OK.into(),
        status_code: 200,
        attempt: 1,
        ..Default::default()
    };
    f(&mut r);
    Call::Report(r)
}

fn put_res(f: impl FnOnce(&mut proto::Resource)) -> Call {
    let mut r = resource(
        "bad:put",
        vec![limit("requests", 5, Duration::from_secs(1), 0)],
        0,
    );
    f(&mut r);
    Call::Put(Some(r))
}

/// Make one call; the answer of an acquire, `None` for other calls.
async fn call(ch: &Channel, c: Call) -> Result<Option<AcquirePermitResponse>, tonic::Status> {
    let mut permits = proto::permits_client::PermitsClient::new(ch.clone());
    let mut quotas = proto::quotas_client::QuotasClient::new(ch.clone());
    let mut idem = proto::idempotency_client::IdempotencyClient::new(ch.clone());
    let mut cache =
        proto::cache_client::CacheClient::new(ch.clone()).max_encoding_message_size(8 << 20);
    match c {
        Call::Acquire(r) => Ok(Some(permits.acquire_permit(r).await?.into_inner())),
        Call::RawAcquire(r) => {
            let mut grpc = tonic::client::Grpc::new(ch.clone());
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unknown(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<RawAcquire, AcquirePermitResponse>::new();
            let path = PathAndQuery::from_static("/permitd.v1.Permits/AcquirePermit");
            let resp = grpc.unary(tonic::Request::new(r), path, codec).await?;
            Ok(Some(resp.into_inner()))
        }
        Call::Report(r) => permits.report_outcome(r).await.map(|_| None),
        Call::Release(id) => permits
            .release_permit(proto::ReleasePermitRequest {
                permit_id: id,
                refund: false,
            })
            .await
            .map(|_| None),
        Call::Put(resource) => quotas
            .put_resource(proto::PutResourceRequest { resource })
            .await
            .map(|_| None),
        Call::Delete(name) => quotas
            .delete_resource(proto::DeleteResourceRequest { name: name.into() })
            .await
            .map(|_| None),
        Call::Quota(resource, partition) => quotas
            .get_quota(proto::GetQuotaRequest {
                resource: resource.into(),
                partition,
            })
            .await
            .map(|_| None),
        Call::Backoff(r) => permits.compute_backoff(r).await.map(|_| None),
        Call::Batch(r) => permits.acquire_permits(r).await.map(|_| None),
        Call::List(r) => quotas.list_resources(r).await.map(|_| None),
        Call::Watch(r) => {
            // The stream's start and its first message (the snapshot), or the refusal.
            let mut s = quotas.watch(r).await?.into_inner();
            let _ = tokio::time::timeout(Duration::from_millis(200), s.message()).await;
            Ok(None)
        }
        Call::Reset(name) => quotas
            .reset_resource(proto::ResetResourceRequest { name })
            .await
            .map(|_| None),
        Call::Begin(r) => idem.begin(r).await.map(|_| None),
        Call::Complete(r) => idem.complete(r).await.map(|_| None),
        Call::Abandon(r) => idem.abandon(r).await.map(|_| None),
        Call::IdemGet(key) => idem.get(proto::GetRequest { key }).await.map(|_| None),
        Call::CachePut(r) => cache.put(r).await.map(|_| None),
        Call::CacheGet(r) => cache.get(r).await.map(|_| None),
        Call::CacheDelete(r) => cache.delete(r).await.map(|_| None),
    }
}

async fn serving(health: &mut HealthClient<Channel>) -> bool {
    health
        .check(HealthCheckRequest {
            service: "permitd.v1.Permits".into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

/// The table. Rows run in order: the huge-cost rows build on each other, and
/// `released` is a permit already released once.
#[rustfmt::skip]
#[allow(clippy::too_many_lines)]
fn cases(released: &str) -> Vec<Case> {
    use Code::{InvalidArgument as Invalid, NotFound};
    let unknown_id = format!("ffffff.1.{:x}.{OK}", OK.len());
    let many_headers = (0..201).map(|i| (format!("x-h{i}"), "1".into())).collect();
    let huge_headers = (0..300).map(|i| (format!("x-h{i}"), "v".repeat(1000))).collect();
    let big_header = [("x-big".to_owned(), "v".repeat(8 * 1024))].into();
    let wait_30s = Some(dur(Duration::from_secs(30)));
    vec![
        row("resource_empty", acquire(|r| r.resource.clear()), Invalid, "resource"),
        row("resource_201_bytes", acquire(|r| r.resource = "r".repeat(201)), Invalid, "resource"),
        row("resource_bad_char", acquire(|r| r.resource = "bad ok".into()), Invalid, "resource"),
        // tonic-prost refuses a non-UTF-8 string while decoding (INTERNAL, per grpc's
        // statuscodes.md), before permitd sees it.
        ok("resource_non_utf8", Call::RawAcquire(RawAcquire { resource: vec![b'b', 0xff] }),
            Expect::AnyError),
        row("partition_bad_char", acquire(|r| r.partition = "user 42".into()), Invalid, "partition"),
        row("partition_201_bytes", acquire(|r| r.partition = "p".repeat(201)), Invalid, "partition"),
        row("client_id_201_bytes", acquire(|r| r.client_id = "c".repeat(201)), Invalid, "client_id"),
        row("cost_unknown_dimension", acquire(|r| r.cost = cost(&[("bogus", 1)])), Invalid,
            "cost.bogus"),
        row("cost_bad_dimension_name", acquire(|r| r.cost = cost(&[("a b", 1)])), Invalid,
            "cost.a b"),
        row("cost_17_dimensions",
            acquire(|r| r.cost = (0..17).map(|i| (format!("d{i}"), 1)).collect()), Invalid, "cost"),
        // max_wait 30 s, answered within ROW_BOUND: refused at once, not queued.
        row("cost_above_burst_not_queued",
            acquire(|r| { r.cost = cost(&[("tokens", 1001)]); r.max_wait = wait_30s; }),
            Invalid, "cost.tokens"),
        row("cost_u64_max", acquire(|r| r.cost = cost(&[("tokens", u64::MAX)])), Invalid,
            "cost.tokens"),
        ok("cost_requests_0_granted", acquire(|r| r.cost = cost(&[("requests", 0)])),
            Expect::Granted),
        row("max_wait_negative", acquire(|r| r.max_wait = pdur(-1, 0)), Invalid, "max_wait"),
        row("max_wait_negative_nanos", acquire(|r| r.max_wait = pdur(0, -5)), Invalid, "max_wait"),
        row("max_wait_nanos_overflow", acquire(|r| r.max_wait = pdur(0, 1_000_000_000)), Invalid,
            "max_wait"),
        row("max_wait_over_1h", acquire(|r| r.max_wait = pdur(3601, 0)), Invalid, "max_wait"),
        row("max_wait_i64_max", acquire(|r| r.max_wait = pdur(i64::MAX, 999_999_999)), Invalid,
            "max_wait"),
        row("lease_0", acquire(|r| r.lease = pdur(0, 0)), Invalid, "lease"),
        row("lease_over_24h", acquire(|r| r.lease = pdur(24 * 3600 + 1, 0)), Invalid, "lease"),
        row("resource_unknown", acquire(|r| r.resource = "bad:nothere".into()), NotFound,
            "bad:nothere"),
        row("permit_id_malformed", Call::Release("not-a-permit".into()), Invalid, "permit_id"),
        row("permit_id_empty", Call::Release(String::new()), Invalid, "permit_id"),
        row("permit_id_unknown", Call::Release(unknown_id), NotFound, "permit"),
        row("permit_id_unknown_resource", Call::Release("1.1.7.nothere".into()), NotFound,
            "permit"),
        row("release_twice", Call::Release(released.into()), NotFound, "permit"),
        row("report_without_permit_or_resource", report(|r| r.resource.clear()), Invalid,
            "resource"),
        row("report_201_headers", report(|r| r.headers = many_headers), Invalid, "headers"),
        row("report_header_over_8kib", report(|r| r.headers = big_header), Invalid,
            "headers.x-big"),
        row("report_unknown_actual_cost_dimension",
            report(|r| r.actual_cost = cost(&[("bogus", 5)])), Invalid, "actual_cost.bogus"),
        row("report_unknown_resource", report(|r| r.resource = "bad:nothere".into()), NotFound,
            "bad:nothere"),
        row("put_missing_resource", Call::Put(None), Invalid, "resource"),
        row("put_bad_name", put_res(|r| r.name = "a b".into()), Invalid, "resource.name"),
        row("put_amount_0", put_res(|r| r.limits[0].amount = 0), Invalid,
            "resource.limits[0].amount"),
        row("put_period_missing", put_res(|r| r.limits[0].period = None), Invalid,
            "resource.limits[0].period"),
        row("put_period_0", put_res(|r| r.limits[0].period = pdur(0, 0)), Invalid,
            "resource.limits[0].period"),
        row("put_period_negative", put_res(|r| r.limits[0].period = pdur(-60, 0)), Invalid,
            "resource.limits[0].period"),
        row("put_scope_partition_not_per_partition",
            put_res(|r| r.limits[0].scope = proto::LimitScope::Partition as i32), Invalid,
            "resource.limits[0].scope"),
        row("delete_unknown", Call::Delete("bad:nothere"), NotFound, "bad:nothere"),
        row("quota_unknown", Call::Quota("bad:nothere", String::new()), NotFound, "bad:nothere"),
        row("quota_bad_partition", Call::Quota(OK, "a b".into()), Invalid, "partition"),
        // Huge costs: what no limit bounds is granted; a huge actual cost is charged as debt
        // (see the report: nothing caps it); the bucket in debt then denies with a finite,
        // non-zero retry_after and its quota stays readable.
        ok("cost_u64_max_unlimited_dimensions_granted",
            acquire(|r| {
                r.resource = DEBT.into();
                r.cost = cost(&[("requests", u64::MAX), ("input_tokens", u64::MAX)]);
            }),
            Expect::Granted),
        row("report_actual_cost_u64_max",
            report(|r| { r.resource = DEBT.into(); r.actual_cost = cost(&[("tokens", u64::MAX)]); }),
            Invalid, "actual_cost.tokens"),
        // A huge but valid report puts the bucket in debt (capped at one burst).
        ok("report_actual_cost_huge_charged",
            report(|r| { r.resource = DEBT.into(); r.actual_cost = cost(&[("tokens", 1_000_000_000_000)]); }),
            Expect::Answered),
        ok("acquire_in_debt_denied",
            acquire(|r| {
                r.resource = DEBT.into();
                r.cost = cost(&[("tokens", 1)]);
                r.max_wait = Some(dur(Duration::from_millis(100)));
            }),
            Expect::Denied),
        ok("quota_in_u64_max_debt", Call::Quota(DEBT, String::new()), Expect::Answered),
        // Above the 256 KiB message cap: refused by tonic's decoder (code printed).
        ok("oversized_client_id_300kib", acquire(|r| r.client_id = "c".repeat(300 * 1024)),
            Expect::AnyError),
        ok("oversized_header_map_300kib", report(|r| r.headers = huge_headers), Expect::AnyError),
        // Every other RPC: each bad field named, each unknown thing NOT_FOUND.
        row("backoff_resource_empty", backoff(|r| r.resource.clear()), Invalid, "resource"),
        row("backoff_attempt_0", backoff(|r| r.attempt = 0), Invalid, "attempt"),
        row("backoff_partition_bad", backoff(|r| r.partition = "p q".into()), Invalid, "partition"),
        row("backoff_unknown", backoff(|r| r.resource = "bad:none".into()), NotFound, "unknown resource"),
        row("backoff_201_headers", backoff(|r| r.headers = (0..201).map(|i| (format!("x{i}"), "1".into())).collect()), Invalid, "headers"),
        row("batch_1001_items", Call::Batch(proto::AcquirePermitsRequest { requests: vec![acquire_req(OK); 1001] }), Invalid, "requests"),
        ok("batch_bad_item_answers_per_item", Call::Batch(proto::AcquirePermitsRequest { requests: vec![proto::AcquirePermitRequest { resource: "x y".into(), ..Default::default() }] }), Expect::Answered),
        row("list_prefix_bad", Call::List(proto::ListResourcesRequest { prefix: "a b".into(), ..Default::default() }), Invalid, "prefix"),
        row("list_page_token_bad", Call::List(proto::ListResourcesRequest { page_token: "\u{1b}[31m".into(), ..Default::default() }), Invalid, "page_token"),
        ok("list_page_size_huge", Call::List(proto::ListResourcesRequest { page_size: u32::MAX, ..Default::default() }), Expect::Answered),
        row("watch_prefix_bad", Call::Watch(proto::WatchRequest { resource_prefix: "a\nb".into(), min_interval: None, ..Default::default() }), Invalid, "resource_prefix"),
        row("watch_interval_negative", Call::Watch(proto::WatchRequest { resource_prefix: String::new(), min_interval: pdur(-1, 0), ..Default::default() }), Invalid, "min_interval"),
        row("watch_interval_2h", Call::Watch(proto::WatchRequest { resource_prefix: String::new(), min_interval: pdur(7200, 0), ..Default::default() }), Invalid, "min_interval"),
        ok("watch_interval_1ns_raised", Call::Watch(proto::WatchRequest { resource_prefix: String::new(), min_interval: pdur(0, 1), ..Default::default() }), Expect::Answered),
        row("reset_empty", Call::Reset(String::new()), Invalid, "name"),
        row("reset_bad_char", Call::Reset("a\u{0}b".into()), Invalid, "name"),
        row("reset_unknown", Call::Reset("bad:none".into()), NotFound, "unknown resource"),
        row("quota_partition_bad", Call::Quota(OK, "p\tq".into()), Invalid, "partition"),
        row("begin_key_empty", begin(|r| r.key.clear()), Invalid, "key"),
        row("begin_key_256_bytes", begin(|r| r.key = "k".repeat(256)), Invalid, "key"),
        row("begin_fingerprint_513", begin(|r| r.fingerprint = "f".repeat(513)), Invalid, "fingerprint"),
        row("begin_ttl_negative", begin(|r| r.ttl = pdur(-5, 0)), Invalid, "ttl"),
        row("begin_lock_ttl_over_ttl", begin(|r| { r.ttl = pdur(10, 0); r.lock_ttl = pdur(20, 0); }), Invalid, "lock_ttl"),
        row("complete_no_result", Call::Complete(proto::CompleteRequest { key: "k".into(), lock_token: "t".into(), result: None }), Invalid, "result"),
        row("complete_no_token", Call::Complete(proto::CompleteRequest { key: "k".into(), lock_token: String::new(), result: Some(proto::StoredResult::default()) }), Invalid, "lock_token"),
        row("complete_key_empty", Call::Complete(proto::CompleteRequest { key: String::new(), lock_token: "t".into(), result: Some(proto::StoredResult::default()) }), Invalid, "key"),
        row("complete_never_begun", Call::Complete(proto::CompleteRequest { key: "never".into(), lock_token: "t".into(), result: Some(proto::StoredResult::default()) }), Code::FailedPrecondition, "call Begin"),
        // Just over the cap reaches the domain and is named; far over is refused while
        // decoding, before any of it is held.
        row("complete_result_over_cap", Call::Complete(proto::CompleteRequest { key: "k".into(), lock_token: "t".into(), result: Some(proto::StoredResult { body: vec![0; (1 << 20) + 1], ..Default::default() }) }), Invalid, "result"),
        row("complete_result_2mib", Call::Complete(proto::CompleteRequest { key: "k".into(), lock_token: "t".into(), result: Some(proto::StoredResult { body: vec![0; 2 << 20], ..Default::default() }) }), Code::OutOfRange, "message length too large"),
        row("abandon_no_token", Call::Abandon(proto::AbandonRequest { key: "k".into(), lock_token: String::new() }), Invalid, "lock_token"),
        row("abandon_never_begun", Call::Abandon(proto::AbandonRequest { key: "never".into(), lock_token: "t".into() }), Code::FailedPrecondition, "call Begin"),
        row("idem_get_key_empty", Call::IdemGet(String::new()), Invalid, "key"),
        row("idem_get_unknown", Call::IdemGet("never".into()), NotFound, "no record"),
        row("cache_put_namespace_empty", cache_put(|r| r.namespace.clear()), Invalid, "namespace"),
        row("cache_put_key_256", cache_put(|r| r.key = "k".repeat(256)), Invalid, "key"),
        row("cache_put_value_over_cap", cache_put(|r| r.value = vec![1; (1 << 20) + 1]), Invalid, "value"),
        row("cache_put_value_2mib", cache_put(|r| r.value = vec![1; 2 << 20]), Code::OutOfRange, "message length too large"),
        row("cache_put_namespace_control", cache_put(|r| r.namespace = "n\u{7}".into()), Invalid, "namespace"),
        row("cache_put_ttl_negative", cache_put(|r| r.ttl = pdur(-1, 0)), Invalid, "ttl"),
        row("cache_get_key_empty", Call::CacheGet(proto::CacheGetRequest { namespace: "n".into(), key: String::new() }), Invalid, "key"),
        row("cache_delete_namespace_empty", Call::CacheDelete(proto::CacheDeleteRequest { namespace: String::new(), key: "k".into() }), Invalid, "namespace"),
        // Permit ids with forged or hostile names inside: refused, never a partition made.
        row("release_id_escape_in_partition", Call::Release(format!("1.1.{:x}.{OK}\u{1b}[2J", OK.len())), Invalid, "permit_id"),
        row("release_id_other_tenant", Call::Release("1.1.8.team-b|x".into()), NotFound, "unknown permit"),
        row("report_id_bad_name", report(|r| r.permit_id = "1.1.3.a b".into()), Invalid, "permit_id"),
        ok("acquire_priority_max", acquire(|r| r.priority = i32::MAX), Expect::Granted),
    ]
}

/// Every malformed or hostile call gets its documented status naming the field, never a
/// panic or a hang; the server stays SERVING after each, and nothing stored is lost.
#[tokio::test]
async fn bad_input_table() {
    let server = TestServer::start().await;
    let hour = Duration::from_secs(3600);
    put(
        &server,
        resource(
            OK,
            vec![
                limit("requests", 1000, hour, 0),
                limit("tokens", 1000, hour, 0),
            ],
            0,
        ),
    )
    .await;
    let mut debt = resource(DEBT, vec![limit("tokens", 1000, hour, 0)], 0);
    debt.dimensions = vec!["input_tokens".into()];
    put(&server, debt).await;
    let ch = server.channel().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut permits = server.permits().await;
    // A permit released once, for the double-release row.
    let first = permits
        .acquire_permit(acquire_req(OK))
        .await
        .unwrap()
        .into_inner();
    assert!(first.granted);
    permits
        .release_permit(proto::ReleasePermitRequest {
            permit_id: first.permit_id.clone(),
            refund: false,
        })
        .await
        .unwrap();

    let rss_before = crate::support::rss_kib();
    let table = cases(&first.permit_id);
    let rows = table.len();
    let mut failures = Vec::new();
    for case in table {
        let t = Instant::now();
        let got = tokio::time::timeout(ROW_BOUND, call(&ch, case.call))
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within {ROW_BOUND:?}", case.name));
        let elapsed = t.elapsed();
        let healthy = serving(&mut health).await;
        let code = got.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok);
        let ok = match (&case.expect, &got) {
            (Expect::Granted, Ok(Some(r))) => r.granted,
            // A denial always says when to come back, never zero.
            (Expect::Denied, Ok(Some(r))) => {
                !r.granted
                    && r.retry_after
                        .as_ref()
                        .is_some_and(|d| from_dur(d) > Duration::ZERO)
            }
            (Expect::Answered, Ok(_)) => true,
            (Expect::Error(want, field), Err(s)) => {
                s.code() == *want && s.message().contains(field)
            }
            (Expect::AnyError, Err(_)) => true,
            _ => false,
        };
        let message = match &got {
            Err(s) => s.message().chars().take(100).collect::<String>(),
            Ok(Some(r)) => format!(
                "granted={} retry_after={:?}",
                r.granted,
                r.retry_after.map(|d| from_dur(&d))
            ),
            Ok(None) => String::new(),
        };
        println!(
            "RESULT bad_input case={} code={code:?} ok={ok} healthy={healthy} ms={} msg={message:?}",
            case.name,
            elapsed.as_millis(),
        );
        if !ok || !healthy {
            failures.push(format!("{}: got {got:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Nothing stored was lost and the resource still grants.
    let listed = server
        .quotas()
        .await
        .list_resources(proto::ListResourcesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [DEBT, OK], "no row may add or remove a resource");
    let amounts: Vec<u64> = listed.resources[1]
        .limits
        .iter()
        .map(|l| l.amount)
        .collect();
    assert_eq!(
        amounts,
        [1000, 1000],
        "no row may change a stored definition"
    );
    let r = permits
        .acquire_permit(acquire_req(OK))
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.granted,
        "the resource defined before the table still grants"
    );
    let rss_delta = crate::support::rss_kib()
        .zip(rss_before)
        .map(|(a, b)| i128::from(a) - i128::from(b));
    println!(
        "RESULT bad_input rows={rows} failed=0 healthy=true still_grants=true rss_delta_kib={}",
        rss_delta.map_or_else(|| "-".to_owned(), |d| d.to_string())
    );
    server.stop().await;
}

/// One raw HTTP/1 exchange on the metrics listener: the bytes sent, and the statuses that
/// are right for them (`0`: the server closed the connection without an answer).
struct HttpRow {
    name: &'static str,
    bytes: Vec<u8>,
    want: &'static [u16],
}

fn http_row(name: &'static str, bytes: impl Into<Vec<u8>>, want: &'static [u16]) -> HttpRow {
    HttpRow {
        name,
        bytes: bytes.into(),
        want,
    }
}

/// Send `bytes` on a fresh connection and read the status line (0 when the server closed
/// the connection without one).
async fn http_status(addr: std::net::SocketAddr, bytes: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (and close) before all of a huge request is written.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Every HTTP route (`/`, `/metrics`, `/events`) and none, with malformed, oversized and
/// hostile requests: each gets its status (or a closed connection), never a crash, and the
/// listener and the gRPC server keep serving after every row.
#[tokio::test]
async fn bad_http_table() {
    let server = TestServer::start_with_metrics().await;
    put(
        &server,
        resource(
            OK,
            vec![limit("requests", 1000, Duration::from_secs(3600), 0)],
            0,
        ),
    )
    .await;
    let addr = server.metrics_addr.expect("metrics listener");
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let mut non_utf8 = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Bin: ".to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe, 0x80]);
    non_utf8.extend_from_slice(b"\r\n\r\n");
    let mut bearer = b"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".to_vec();
    bearer.extend_from_slice(&[0xc3, 0x28, 0xa0, 0xa1]);
    bearer.extend_from_slice(b"\r\n\r\n");
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let rows = vec![
        http_row("dashboard", get("/", ""), &[200]),
        http_row("metrics", get("/metrics", ""), &[200]),
        http_row("events", get("/events", ""), &[200]),
        http_row("unknown_path", get("/nope", ""), &[404]),
        http_row("dotdot_path", get("/../../etc/passwd", ""), &[400, 404]),
        http_row(
            "post_metrics",
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            &[405],
        ),
        http_row(
            "delete_events",
            "DELETE /events HTTP/1.1\r\nHost: x\r\n\r\n",
            &[405],
        ),
        http_row(
            "bad_method",
            "G@T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            &[400],
        ),
        http_row(
            "bad_version",
            "GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
            &[400, 505],
        ),
        http_row("no_host", "GET /metrics HTTP/1.1\r\n\r\n", &[200, 400]),
        http_row("http10", "GET /metrics HTTP/1.0\r\n\r\n", &[200]),
        http_row("non_utf8_header", non_utf8, &[200, 400]),
        http_row("non_utf8_bearer", bearer, &[200, 400, 401]),
        http_row(
            "garbage_cookie",
            get("/events", "Cookie: permitd_token=\u{1}\u{2};;;=\r\n"),
            &[200, 400],
        ),
        http_row(
            "nul_in_path",
            "GET /metrics\0 HTTP/1.1\r\nHost: x\r\n\r\n",
            &[400],
        ),
        http_row(
            "huge_path",
            get(&format!("/{}", "a".repeat(70_000)), ""),
            &[400, 404, 414, 431],
        ),
        http_row(
            "huge_header",
            get("/metrics", &format!("X-Big: {}\r\n", "b".repeat(1 << 20))),
            &[400, 431, 0],
        ),
        http_row(
            "ten_thousand_headers",
            get("/metrics", &many_headers),
            &[400, 431, 0],
        ),
        http_row(
            "absurd_content_length",
            get("/metrics", "Content-Length: 99999999999999999999999\r\n"),
            &[400],
        ),
        http_row(
            "two_content_lengths",
            get("/metrics", "Content-Length: 1\r\nContent-Length: 2\r\n"),
            &[400],
        ),
        http_row(
            "bad_chunked",
            "POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            &[400, 405],
        ),
        http_row(
            "h2_preface",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            &[400, 505, 0],
        ),
        http_row(
            "tls_hello_on_plaintext",
            vec![
                0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
            ],
            &[400, 0],
        ),
        http_row(
            "pipelined_garbage",
            format!("{}\u{7}\u{7}\u{7}\r\n\r\n", get("/metrics", "")),
            &[200],
        ),
        http_row(
            "connect_method",
            "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
            &[400, 404, 405],
        ),
    ];
    let total = rows.len();
    let mut failures = Vec::new();
    let rss_before = crate::support::rss_kib();
    for row in rows {
        let got = tokio::time::timeout(ROW_BOUND, http_status(addr, &row.bytes))
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within {ROW_BOUND:?}", row.name));
        let still = http_status(addr, get("/metrics", "").as_bytes()).await;
        let ok = row.want.contains(&got) && still == 200;
        println!(
            "RESULT bad_http case={} status={got} ok={ok} metrics_after={still}",
            row.name
        );
        if !ok {
            failures.push(format!(
                "{}: got {got}, want {:?}; /metrics then {still}",
                row.name, row.want
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut permits = server.permits().await;
    assert!(
        permits
            .acquire_permit(acquire_req(OK))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let rss_delta = crate::support::rss_kib()
        .zip(rss_before)
        .map(|(a, b)| i128::from(a) - i128::from(b));
    println!(
        "RESULT bad_http rows={total} failed=0 still_grants=true rss_delta_kib={}",
        rss_delta.map_or_else(|| "-".to_owned(), |d| d.to_string())
    );
    server.stop().await;
}
