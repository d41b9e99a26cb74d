//! The isolation table of `../shared/design/security.md`: two tenants, three roles each,
//! no credential and a wrong one, against every RPC and HTTP route, each attempt with its
//! expected status; and no answer or error seen by tenant B (or by nobody) carries tenant
//! A's names or values. Run embedded and over a real Redis.

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use permitd::auth::{Mode, Principal, Role, Settings, TenantScope, token};
use permitd::config::Config;
use permitd::proto::{
    self, cache_client::CacheClient, idempotency_client::IdempotencyClient,
    permits_client::PermitsClient, quotas_client::QuotasClient,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;

use crate::support::{TestServer, dur, limit, resource};

/// A's markers: none may appear in anything B or an anonymous caller sees.
const A_ONLY: &str = "alpha-only:model";
const SHARED: &str = "shared:model";
const A_AMOUNT: u64 = 7777;
const A_SECRET: &str = "SECRET-A-VALUE";
const A_RESULT: &str = "RESULT-A-BODY";

/// Adds a bearer token to every call.
#[derive(Clone)]
pub struct Token(pub Option<String>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(r)
    }
}

type Conn = InterceptedService<crate::connect_client::AnyChannel, Token>;

/// How the table's calls travel: gRPC, or Connect (JSON over HTTP/1.1) on the gRPC port or
/// on the HTTP listener. Every row runs the same way over each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Grpc,
    ConnectGrpcPort,
    ConnectHttpListener,
}

/// Who calls: a tenant's role, nobody, or a token nobody has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    A(Role),
    B(Role),
    Nobody,
    Forged,
}

impl Who {
    const ALL: [Who; 8] = [
        Who::A(Role::Admin),
        Who::A(Role::Worker),
        Who::A(Role::Viewer),
        Who::B(Role::Admin),
        Who::B(Role::Worker),
        Who::B(Role::Viewer),
        Who::Nobody,
        Who::Forged,
    ];

    fn token(self) -> Option<String> {
        match self {
            Who::A(r) => Some(format!("pmt_team-a_{}", r.name())),
            Who::B(r) => Some(format!("pmt_team-b_{}", r.name())),
            Who::Nobody => None,
            Who::Forged => Some("pmt_forged".into()),
        }
    }

    /// Whether A's things must stay invisible to this caller.
    fn outsider(self) -> bool {
        !matches!(self, Who::A(_))
    }

    /// The status a call needing `role` on A's objects gets: A's callers by role; B's
    /// callers by role, then NOT_FOUND (the role check comes first and reveals nothing).
    fn expect(self, role: Role, ok_for_a: Code) -> Code {
        match self {
            Who::Nobody | Who::Forged => Code::Unauthenticated,
            Who::A(r) | Who::B(r) if r < role => Code::PermissionDenied,
            Who::A(_) => ok_for_a,
            Who::B(_) => Code::NotFound,
        }
    }

    /// The status of a call that acts in the caller's own namespace (a batch, a record key,
    /// a cache key, a new name): by role, and then the same answer for B as for A, since B
    /// meets its own, untouched namespace rather than A's things.
    fn expect_own(self, role: Role, ok: Code) -> Code {
        match self.expect(role, ok) {
            Code::NotFound => ok,
            c => c,
        }
    }
}

pub fn principals() -> Vec<Principal> {
    let mut out = Vec::new();
    for tenant in ["team-a", "team-b"] {
        for role in [Role::Admin, Role::Worker, Role::Viewer] {
            let t = format!("pmt_{tenant}_{}", role.name());
            out.push(Principal {
                name: format!("{tenant}-{}", role.name()),
                tenant: TenantScope::One(tenant.into()),
                role,
                max_priority: (role == Role::Worker).then_some(5),
                token_sha256: Some(token::sha256(t.as_bytes())),
                cert_identity: None,
            });
        }
    }
    out
}

pub fn secure(config: &mut Config) {
    config.auth = Settings {
        mode: Mode::Tokens,
        principals: principals(),
        principals_file: None,
    };
}

struct Clients {
    permits: PermitsClient<Conn>,
    quotas: QuotasClient<Conn>,
    idem: IdempotencyClient<Conn>,
    cache: CacheClient<Conn>,
}

async fn clients(server: &TestServer, who: Who, over: Over) -> Clients {
    let ch = match over {
        Over::Grpc => crate::connect_client::grpc(server.channel().await),
        Over::ConnectGrpcPort => crate::connect_client::connect(server.addr),
        Over::ConnectHttpListener => {
            crate::connect_client::connect(server.metrics_addr.expect("an HTTP listener"))
        }
    };
    let t = Token(who.token());
    Clients {
        permits: PermitsClient::with_interceptor(ch.clone(), t.clone()),
        quotas: QuotasClient::with_interceptor(ch.clone(), t.clone()),
        idem: IdempotencyClient::with_interceptor(ch.clone(), t.clone()),
        cache: CacheClient::with_interceptor(ch, t),
    }
}

/// The table: rows checked, failures (described), leaks found.
#[derive(Default)]
struct Table {
    rows: usize,
    failures: Vec<String>,
}

impl Table {
    fn check<T: Debug>(
        &mut self,
        call: &str,
        who: Who,
        want: Code,
        got: &Result<T, tonic::Status>,
    ) {
        self.rows += 1;
        let code = match got {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        if code != want {
            self.failures
                .push(format!("{call} as {who:?}: want {want:?}, got {got:?}"));
        }
        if who.outsider() {
            // A name the caller sent may come back in its own error; A's values may not,
            // and a listing must not show A's names.
            let listing = call.starts_with("ListResources") || call.starts_with("Watch");
            self.no_leak(call, who, &format!("{got:?}"), listing);
        }
    }

    fn no_leak(&mut self, call: &str, who: Who, text: &str, names: bool) {
        let amount = A_AMOUNT.to_string();
        let mut markers = vec![A_SECRET, A_RESULT, amount.as_str(), "team-a"];
        if names {
            markers.push(A_ONLY);
        }
        for marker in markers {
            if carries(text, marker) {
                self.failures.push(format!(
                    "{call} as {who:?}: answer carries {marker:?}: {text}"
                ));
            }
        }
    }
}

/// A stream's first message (waited for up to 2 s) as text, or the call's error.
async fn first_message<T: Debug>(
    call: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
) -> Result<String, tonic::Status> {
    let mut s = call?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(2), s.message()).await;
    Ok(format!("{first:?}"))
}

/// Whether `text` holds `marker` on its own: a number only where no digit touches it (a
/// timestamp's nanos such as 557777000 do not carry A's 7777).
fn carries(text: &str, marker: &str) -> bool {
    let numeric = marker.bytes().all(|b| b.is_ascii_digit());
    text.match_indices(marker).any(|(at, _)| {
        let b = text.as_bytes();
        !numeric
            || (!b[..at].last().is_some_and(u8::is_ascii_digit)
                && !b.get(at + marker.len()).is_some_and(u8::is_ascii_digit))
    })
}

/// One HTTP/1.1 GET with an optional bearer token: (status, head and body so far). For a
/// stream (`/events`) reading stops once `until` has been read.
async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    until: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if !until.is_empty() && String::from_utf8_lossy(&buf).contains(until) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

async fn run_table(server: &TestServer, cluster: bool, over: Over) -> Table {
    let mut t = Table::default();
    let mut a_admin = clients(server, Who::A(Role::Admin), over).await;
    let mut b_admin = clients(server, Who::B(Role::Admin), over).await;
    let mut a_worker = clients(server, Who::A(Role::Worker), over).await;

    // A's world: a resource only A has, one both name (with other limits), a permit, a
    // completed idempotency record, a cache entry. B defines its own "shared" resource.
    let mut a_only = resource(
        A_ONLY,
        vec![limit("requests", A_AMOUNT, Duration::from_secs(60), 0)],
        0,
    );
    a_only.concurrency = 0;
    for r in [
        a_only,
        resource(
            SHARED,
            vec![limit("requests", A_AMOUNT, Duration::from_secs(60), 0)],
            0,
        ),
    ] {
        a_admin
            .quotas
            .put_resource(proto::PutResourceRequest { resource: Some(r) })
            .await
            .expect("A defines");
    }
    b_admin
        .quotas
        .put_resource(proto::PutResourceRequest {
            resource: Some(resource(
                SHARED,
                vec![limit("requests", 5, Duration::from_secs(60), 0)],
                0,
            )),
        })
        .await
        .expect("B defines its own");
    let acquire = |res: &str| proto::AcquirePermitRequest {
        resource: res.into(),
        ..Default::default()
    };
    let permit = a_worker
        .permits
        .acquire_permit(acquire(A_ONLY))
        .await
        .expect("A acquires")
        .into_inner();
    assert!(permit.granted);
    let a_permit = permit.permit_id;
    let begun = a_worker
        .idem
        .begin(proto::BeginRequest {
            key: "k1".into(),
            fingerprint: "fp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    a_worker
        .idem
        .complete(proto::CompleteRequest {
            key: "k1".into(),
            lock_token: begun.lock_token,
            result: Some(proto::StoredResult {
                status_code: 200,
                body: A_RESULT.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let open = a_worker
        .idem
        .begin(proto::BeginRequest {
            key: "k2".into(),
            fingerprint: "fp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    a_worker
        .cache
        .put(proto::CachePutRequest {
            namespace: "ns".into(),
            key: "k".into(),
            value: A_SECRET.into(),
            ttl: Some(dur(Duration::from_secs(600))),
        })
        .await
        .unwrap();

    for who in Who::ALL {
        let mut c = clients(server, who, over).await;
        let any_ok = |role: Role| who.expect(role, Code::Ok);
        // Reads.
        let r = c
            .quotas
            .get_quota(proto::GetQuotaRequest {
                resource: A_ONLY.into(),
                ..Default::default()
            })
            .await;
        t.check("GetQuota", who, any_ok(Role::Viewer), &r);
        let r = c
            .quotas
            .list_resources(proto::ListResourcesRequest::default())
            .await;
        let want = match who {
            Who::Nobody | Who::Forged => Code::Unauthenticated,
            _ => Code::Ok,
        };
        t.check("ListResources", who, want, &r);
        if let (Who::A(_), Ok(list)) = (who, &r) {
            let names: Vec<&str> = list
                .get_ref()
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            if names != [A_ONLY, SHARED] {
                t.failures
                    .push(format!("ListResources as {who:?}: {names:?}"));
            }
        }
        if let (Who::B(_), Ok(list)) = (who, &r) {
            let l = &list.get_ref().resources;
            if l.len() != 1 || l[0].name != SHARED || l[0].limits[0].amount != 5 {
                t.failures.push(format!("ListResources as {who:?}: {l:?}"));
            }
        }
        let r = c
            .quotas
            .get_quota(proto::GetQuotaRequest {
                resource: SHARED.into(),
                ..Default::default()
            })
            .await;
        let want = match who {
            Who::Nobody | Who::Forged => Code::Unauthenticated,
            _ => Code::Ok,
        };
        t.check("GetQuota(shared name)", who, want, &r);
        if let (Who::B(_), Ok(q)) = (who, &r)
            && q.get_ref().dimensions.first().map(|d| d.limit) != Some(5)
        {
            t.failures
                .push(format!("GetQuota(shared) as {who:?} sees {q:?}"));
        }
        // Watch: the first message of the snapshot, or its error.
        let w = c
            .quotas
            .watch(proto::WatchRequest {
                resource_prefix: String::new(),
                min_interval: None,
                ..Default::default()
            })
            .await;
        let w = first_message(w).await;
        t.check("Watch", who, want, &w);
        if let (Who::A(_), Ok(text)) = (who, &w)
            && !text.contains(A_ONLY)
            && !text.contains(SHARED)
        {
            t.failures
                .push(format!("Watch as {who:?} saw nothing of A: {text}"));
        }
        // Summaries: the embedded engine's views (a cluster replica has no partition
        // buckets of its own and answers UNIMPLEMENTED after the role check).
        let viewing = match (cluster, any_ok(Role::Viewer)) {
            (true, Code::Ok | Code::NotFound) => Code::Unimplemented,
            (_, c) => c,
        };
        let r = c
            .quotas
            .get_summary(proto::GetSummaryRequest {
                resource: A_ONLY.into(),
                ..Default::default()
            })
            .await;
        t.check("GetSummary", who, viewing, &r);
        let r = c
            .quotas
            .list_partitions(proto::ListPartitionsRequest {
                resource: A_ONLY.into(),
                ..Default::default()
            })
            .await;
        t.check("ListPartitions", who, viewing, &r);
        let w = c
            .quotas
            .watch_summaries(proto::WatchSummariesRequest::default())
            .await;
        let w = first_message(w).await;
        let want_ws = match (cluster, want) {
            (true, Code::Ok) => Code::Unimplemented,
            (_, c) => c,
        };
        t.check("WatchSummaries", who, want_ws, &w);
        if let (Who::A(_), false, Ok(text)) = (who, cluster, &w)
            && !text.contains(A_ONLY)
            && !text.contains(SHARED)
        {
            t.failures.push(format!(
                "WatchSummaries as {who:?} saw nothing of A: {text}"
            ));
        }
        // Permits.
        let r = c.permits.acquire_permit(acquire(A_ONLY)).await;
        t.check("AcquirePermit", who, any_ok(Role::Worker), &r);
        if let Ok(p) = &r
            && p.get_ref().granted
        {
            let _ = c
                .permits
                .release_permit(proto::ReleasePermitRequest {
                    permit_id: p.get_ref().permit_id.clone(),
                    refund: true,
                })
                .await;
        }
        let r = c
            .permits
            .acquire_permits(proto::AcquirePermitsRequest {
                requests: vec![acquire(A_ONLY)],
            })
            .await;
        // A batch answers per item: the call itself is OK for anyone with the role.
        let want_batch = who.expect_own(Role::Worker, Code::Ok);
        t.check("AcquirePermits", who, want_batch, &r);
        if let (Who::B(_), Ok(b)) = (who, &r) {
            match &b.get_ref().results[0].result {
                Some(proto::acquire_permit_result::Result::Error(e))
                    if e.code == Code::NotFound as i32 => {}
                other => t
                    .failures
                    .push(format!("AcquirePermits item as {who:?}: {other:?}")),
            }
        }
        if let (Who::A(_), Ok(b)) = (who, &r)
            && let Some(proto::acquire_permit_result::Result::Response(p)) =
                &b.get_ref().results[0].result
        {
            let _ = c
                .permits
                .release_permit(proto::ReleasePermitRequest {
                    permit_id: p.permit_id.clone(),
                    refund: true,
                })
                .await;
        }
        let r = c
            .permits
            .acquire_permit(proto::AcquirePermitRequest {
                priority: 9,
                ..acquire(A_ONLY)
            })
            .await;
        let want = match who {
            Who::A(Role::Worker)
            | Who::B(Role::Worker)
            | Who::A(Role::Viewer)
            | Who::B(Role::Viewer) => Code::PermissionDenied,
            other => other.expect(Role::Worker, Code::Ok),
        };
        t.check("AcquirePermit(priority over the ceiling)", who, want, &r);
        if let Ok(p) = &r {
            let _ = c
                .permits
                .release_permit(proto::ReleasePermitRequest {
                    permit_id: p.get_ref().permit_id.clone(),
                    refund: true,
                })
                .await;
        }
        // A's permit in other hands: NOT_FOUND, and the lease stays A's (released at the
        // end by A).
        if who.outsider() {
            let r = c
                .permits
                .report_outcome(proto::ReportOutcomeRequest {
                    permit_id: a_permit.clone(),
                    status_code: 429,
                    headers: HashMap::from([("retry-after".into(), "1".into())]),
                    ..Default::default()
                })
                .await;
            t.check(
                "ReportOutcome(A's permit)",
                who,
                who.expect(Role::Worker, Code::NotFound),
                &r,
            );
            let r = c
                .permits
                .release_permit(proto::ReleasePermitRequest {
                    permit_id: a_permit.clone(),
                    refund: false,
                })
                .await;
            t.check(
                "ReleasePermit(A's permit)",
                who,
                who.expect(Role::Worker, Code::NotFound),
                &r,
            );
        }
        let r = c
            .permits
            .report_outcome(proto::ReportOutcomeRequest {
                resource: A_ONLY.into(),
                status_code: 200,
                ..Default::default()
            })
            .await;
        let want = match who {
            Who::A(Role::Admin) => Code::Ok,
            Who::A(Role::Worker) => Code::PermissionDenied,
            other => other.expect(Role::Worker, Code::NotFound),
        };
        t.check("ReportOutcome(no permit)", who, want, &r);
        let r = c
            .permits
            .compute_backoff(proto::ComputeBackoffRequest {
                resource: A_ONLY.into(),
                attempt: 1,
                status_code: 429,
                ..Default::default()
            })
            .await;
        t.check("ComputeBackoff", who, any_ok(Role::Worker), &r);
        // Administration: B's admin defining A_ONLY makes B's own, so it is tested last.
        let r = c
            .quotas
            .delete_resource(proto::DeleteResourceRequest {
                name: "nothing-here".into(),
            })
            .await;
        t.check(
            "DeleteResource(absent)",
            who,
            who.expect(Role::Admin, Code::NotFound),
            &r,
        );
        if who.outsider() {
            let r = c
                .quotas
                .delete_resource(proto::DeleteResourceRequest {
                    name: A_ONLY.into(),
                })
                .await;
            t.check(
                "DeleteResource(A's)",
                who,
                who.expect(Role::Admin, Code::NotFound),
                &r,
            );
        }
        // Resetting A's resource (A's admin would drop the lease held to the end; its reset
        // is tested in pauses.rs).
        if who != Who::A(Role::Admin) {
            let r = c
                .quotas
                .reset_resource(proto::ResetResourceRequest {
                    name: A_ONLY.into(),
                })
                .await;
            t.check(
                "ResetResource(A's)",
                who,
                who.expect(Role::Admin, Code::NotFound),
                &r,
            );
        }
        // Records.
        let r = c.idem.get(proto::GetRequest { key: "k1".into() }).await;
        t.check(
            "Idempotency.Get",
            who,
            who.expect(Role::Worker, Code::Ok),
            &r,
        );
        let r = c
            .idem
            .complete(proto::CompleteRequest {
                key: "k2".into(),
                lock_token: "guessed".into(),
                result: Some(proto::StoredResult::default()),
            })
            .await;
        let want = who.expect_own(Role::Worker, Code::FailedPrecondition);
        t.check("Idempotency.Complete(wrong token)", who, want, &r);
        let r = c
            .idem
            .abandon(proto::AbandonRequest {
                key: "k2".into(),
                lock_token: "guessed".into(),
            })
            .await;
        t.check("Idempotency.Abandon(wrong token)", who, want, &r);
        let r = c
            .idem
            .complete(proto::CompleteRequest {
                key: "k2".into(),
                lock_token: String::new(),
                result: Some(proto::StoredResult::default()),
            })
            .await;
        let want_token = who.expect_own(Role::Worker, Code::InvalidArgument);
        t.check("Idempotency.Complete(no token)", who, want_token, &r);
        let r = c
            .idem
            .begin(proto::BeginRequest {
                key: "k1".into(),
                fingerprint: "fp".into(),
                ..Default::default()
            })
            .await;
        let want = who.expect_own(Role::Worker, Code::Ok);
        t.check("Idempotency.Begin", who, want, &r);
        if let (Who::B(_), Ok(b)) = (who, &r)
            && b.get_ref().state() != proto::IdempotencyState::Acquired
        {
            t.failures
                .push(format!("Begin(k1) as {who:?} did not start afresh: {b:?}"));
        }
        if let (Who::B(_), Ok(b)) = (who, &r) {
            // Leave B's namesake record as it was found: absent.
            let _ = c
                .idem
                .abandon(proto::AbandonRequest {
                    key: "k1".into(),
                    lock_token: b.get_ref().lock_token.clone(),
                })
                .await;
        }
        let r = c.idem.stats(proto::IdempotencyStatsRequest {}).await;
        let want = match who {
            Who::Nobody | Who::Forged => Code::Unauthenticated,
            _ => Code::PermissionDenied,
        };
        t.check("Idempotency.Stats", who, want, &r);
        let r = c
            .cache
            .get(proto::CacheGetRequest {
                namespace: "ns".into(),
                key: "k".into(),
            })
            .await;
        t.check("Cache.Get", who, want_batch, &r);
        if let (Who::B(_), Ok(g)) = (who, &r)
            && g.get_ref().found
        {
            t.failures
                .push(format!("Cache.Get as {who:?} found A's entry"));
        }
        if who.outsider() {
            let r = c
                .cache
                .delete(proto::CacheDeleteRequest {
                    namespace: "ns".into(),
                    key: "k".into(),
                })
                .await;
            t.check("Cache.Delete(A's key)", who, want_batch, &r);
        }
        let r = c.cache.stats(proto::CacheStatsRequest {}).await;
        let want = match who {
            Who::Nobody | Who::Forged => Code::Unauthenticated,
            _ => Code::PermissionDenied,
        };
        t.check("Cache.Stats", who, want, &r);
        // HTTP routes.
        let m = server.metrics_addr.expect("metrics listener");
        let tok = who.token();
        let (status, body) = http_get(m, "/metrics", tok.as_deref(), "").await;
        let want = match who {
            Who::Nobody | Who::Forged => 401,
            _ => 200,
        };
        t.rows += 1;
        if status != want {
            t.failures
                .push(format!("GET /metrics as {who:?}: {status}"));
        }
        if who.outsider() {
            t.no_leak("GET /metrics", who, &body, true);
        } else if !body.contains(A_ONLY) {
            t.failures
                .push(format!("GET /metrics as {who:?} lacks A's resource"));
        }
        let (status, body) = http_get(m, "/events", tok.as_deref(), "event: totals").await;
        t.rows += 1;
        if status != want {
            t.failures.push(format!("GET /events as {who:?}: {status}"));
        }
        if who.outsider() {
            t.no_leak("GET /events", who, &body, true);
        } else if !body.contains(A_ONLY) {
            t.failures
                .push(format!("GET /events as {who:?} lacks A's resource: {body}"));
        }
        let (status, _) = http_get(m, "/", None, "").await;
        t.rows += 1;
        if status != 200 {
            t.failures
                .push(format!("GET / (the static page) as {who:?}: {status}"));
        }
    }
    // Defining a resource of A's name defines the caller's own (tested after the rest, so
    // B's listings above could not contain it).
    for who in Who::ALL.into_iter().filter(|w| w.outsider()) {
        let mut c = clients(server, who, over).await;
        let r = c
            .quotas
            .put_resource(proto::PutResourceRequest {
                resource: Some(resource(
                    A_ONLY,
                    vec![limit("requests", 1, Duration::from_secs(60), 0)],
                    0,
                )),
            })
            .await;
        let want = who.expect_own(Role::Admin, Code::Ok);
        t.check("PutResource(A's name)", who, want, &r);
    }
    // Health stays open.
    let mut h = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    t.check("Health/Check", Who::Nobody, Code::Ok, &r);

    // A's things are as A left them, whatever B did.
    let q = a_admin
        .quotas
        .list_resources(proto::ListResourcesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let amounts: Vec<u64> = q.resources.iter().map(|r| r.limits[0].amount).collect();
    if amounts != [A_AMOUNT, A_AMOUNT] {
        t.failures.push(format!("A's resources changed: {q:?}"));
    }
    let g = a_worker
        .cache
        .get(proto::CacheGetRequest {
            namespace: "ns".into(),
            key: "k".into(),
        })
        .await
        .unwrap()
        .into_inner();
    if g.value != A_SECRET.as_bytes() {
        t.failures.push("A's cache entry changed".into());
    }
    let g = a_worker
        .idem
        .get(proto::GetRequest { key: "k1".into() })
        .await
        .unwrap()
        .into_inner();
    if g.result.map(|r| r.body) != Some(A_RESULT.as_bytes().to_vec()) {
        t.failures.push("A's idempotency record changed".into());
    }
    a_worker
        .idem
        .abandon(proto::AbandonRequest {
            key: "k2".into(),
            lock_token: open.lock_token,
        })
        .await
        .expect("A's holder abandons with its token");
    a_worker
        .permits
        .release_permit(proto::ReleasePermitRequest {
            permit_id: a_permit,
            refund: false,
        })
        .await
        .expect("A's permit is still A's");
    t
}

fn report(name: &str, t: &Table) {
    println!(
        "RESULT {name} rows={} failures={}",
        t.rows,
        t.failures.len()
    );
    assert!(
        t.failures.is_empty(),
        "{} of {} rows failed:\n{}",
        t.failures.len(),
        t.rows,
        t.failures.join("\n")
    );
}

/// The table on the embedded engine.
#[tokio::test]
async fn isolation_table_embedded() {
    let server = TestServer::start_secure(secure).await;
    let t = run_table(&server, false, Over::Grpc).await;
    report("isolation_table_embedded", &t);
    server.stop().await;
}

/// The table over Connect (JSON over HTTP/1.1), on the gRPC port and on the HTTP listener:
/// the same statuses and no leaks, since the calls run through the same stack.
#[tokio::test]
async fn isolation_table_over_connect() {
    for over in [Over::ConnectGrpcPort, Over::ConnectHttpListener] {
        let server = TestServer::start_secure(secure).await;
        let t = run_table(&server, false, over).await;
        report(&format!("isolation_table_over_connect {over:?}"), &t);
        server.stop().await;
    }
}

/// The table over a real Redis (one replica: the keys and scripts are the cluster's).
#[tokio::test]
async fn isolation_table_redis() {
    let Some(redis) = permitd_testkit::RedisServer::for_test("isolation_table_redis") else {
        return;
    };
    let server = TestServer::start_secure(|c| {
        secure(c);
        c.redis = Some(permitd::cluster::Settings {
            url: redis.url(),
            ..permitd::cluster::Settings::default()
        });
    })
    .await;
    let t = run_table(&server, true, Over::Grpc).await;
    report("isolation_table_redis", &t);
    server.stop().await;
}

/// A data directory written before auth keeps its resources as tenant `default`'s: a
/// principal of `default` sees and uses them, another tenant's sees nothing of them.
#[tokio::test]
async fn upgraded_data_directory_is_tenant_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = TestServer::start_in(dir.path()).await;
    crate::support::put(
        &old,
        resource(
            "legacy:x",
            vec![limit("requests", 42, Duration::from_secs(60), 0)],
            0,
        ),
    )
    .await;
    old.stop().await;
    let mut principals = principals();
    principals.push(Principal {
        name: "default-admin".into(),
        tenant: TenantScope::One("default".into()),
        role: Role::Admin,
        max_priority: None,
        token_sha256: Some(token::sha256(b"pmt_default_admin")),
        cert_identity: None,
    });
    let server = TestServer::start_with(Config {
        data_dir: dir.path().to_path_buf(),
        auth: Settings {
            mode: Mode::Tokens,
            principals,
            principals_file: None,
        },
        ..Config::default()
    })
    .await;
    let ch = server.channel().await;
    let mut legacy =
        QuotasClient::with_interceptor(ch.clone(), Token(Some("pmt_default_admin".into())));
    let list = legacy
        .list_resources(proto::ListResourcesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.resources.len(), 1);
    assert_eq!(
        (
            list.resources[0].name.as_str(),
            list.resources[0].limits[0].amount
        ),
        ("legacy:x", 42)
    );
    let mut a = QuotasClient::with_interceptor(ch, Token(Some("pmt_team-a_admin".into())));
    let list = a
        .list_resources(proto::ListResourcesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(list.resources.is_empty(), "{list:?}");
    let e = a
        .get_quota(proto::GetQuotaRequest {
            resource: "legacy:x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    server.stop().await;
}
