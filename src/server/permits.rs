//! `permitd.v1.Permits`: converts requests to the domain, calls the registry, converts back.
//! Nothing else happens here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::convert::{name, opt_duration, to_duration, to_timestamp};
use crate::auth::tenant::check_qualified;
use crate::auth::{self, Caller, Role};
use crate::backoff::{self, Retryable};
use crate::engine::PermitEngine;
use crate::engine::report::{Report, Reported};
use crate::feedback::{self, Upstream, apply::Counters};
use crate::permits::resource::check_name;
use crate::permits::resource::{MAX_DIMENSION_LEN, MAX_LEASE, MAX_NAME_LEN, MIN_LEASE};
use crate::permits::{
    self, AcquireOutcome, AcquireRequest, DenialReason, PermitError, Registry, Settlement,
};
use crate::proto::{self, permits_server::Permits};

/// Longest `max_wait` accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Most headers in one report.
pub const MAX_HEADERS: usize = 200;
/// Largest header name plus value, in bytes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Longest permit id accepted.
const MAX_PERMIT_ID: usize = 512;
/// Margin kept before a caller's gRPC deadline, so the answer arrives before it expires.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);
/// The longest a report may say the answer came before it (`answered_ago`).
const MAX_ANSWERED_AGO: Duration = Duration::from_secs(3600);

/// The Permits service.
#[derive(Debug, Clone)]
pub struct PermitsService {
    registry: Registry,
    retryable: Arc<Retryable>,
    counters: Arc<Counters>,
    /// What decides: the embedded registry or the Redis engine.
    engine: Arc<dyn PermitEngine>,
    auth: Arc<auth::Auth>,
}

impl PermitsService {
    /// A service over `registry`; `retryable` says which upstream statuses are worth a
    /// retry; `counters` count what header feedback learned and ignored.
    #[must_use]
    pub fn new(
        registry: Registry,
        retryable: Retryable,
        counters: Arc<Counters>,
        engine: Arc<dyn PermitEngine>,
        auth: Arc<auth::Auth>,
    ) -> Self {
        Self {
            registry,
            retryable: Arc::new(retryable),
            counters,
            engine,
            auth,
        }
    }

    /// One AcquirePermit: validate `r` (fields named as in the proto, `cost.tokens`), ask
    /// the registry, convert the answer. `deadline` is the caller's gRPC deadline; it bounds
    /// `max_wait`. Shared by AcquirePermit and each item of AcquirePermits.
    pub(super) async fn acquire_one(
        &self,
        caller: &Caller,
        r: &proto::AcquirePermitRequest,
        deadline: Option<Duration>,
    ) -> Result<proto::AcquirePermitResponse, Status> {
        caller.check_priority(r.priority)?;
        let resource = caller.qualify(&r.resource, "resource", MAX_NAME_LEN)?;
        name(&r.partition, "partition", false, MAX_NAME_LEN)?;
        check_cost(&r.cost, "cost")?;
        if r.client_id.len() > MAX_NAME_LEN {
            return Err(PermitError::Invalid {
                field: "client_id".into(),
                message: format!("{} bytes, at most {MAX_NAME_LEN}", r.client_id.len()),
            }
            .into());
        }
        let mut max_wait = opt_duration(r.max_wait.as_ref(), "max_wait", Duration::ZERO, MAX_WAIT)?
            .unwrap_or_default();
        if let Some(d) = deadline {
            max_wait = max_wait.min(d.saturating_sub(DEADLINE_MARGIN));
        }
        let lease = opt_duration(r.lease.as_ref(), "lease", MIN_LEASE, MAX_LEASE)?;
        let req = AcquireRequest {
            resource: &resource,
            partition: &r.partition,
            cost: &r.cost,
            max_wait,
            priority: r.priority,
            lease,
        };
        Ok(acquire_response(self.engine.acquire(req).await?))
    }

    /// The permit id `id` of the caller's tenant: malformed ids are INVALID_ARGUMENT, and
    /// another tenant's (or a forged name) is NOT_FOUND, as an unknown permit.
    fn own_permit<'a>(
        caller: &Caller,
        id: &'a str,
    ) -> Result<permits::id::PermitId<'a>, PermitError> {
        let id = permits::id::parse(permit_id(id)?).ok_or(PermitError::MalformedPermit)?;
        if check_qualified(id.resource, MAX_NAME_LEN).is_err()
            || check_name(id.partition, false, MAX_NAME_LEN).is_err()
        {
            return Err(PermitError::MalformedPermit);
        }
        if !caller.owns(id.resource) {
            return Err(PermitError::UnknownPermit);
        }
        Ok(id)
    }
}

/// The caller's gRPC deadline from the `grpc-timeout` header (`<digits><unit>`).
fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let v = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn check_cost(cost: &HashMap<String, u64>, field: &str) -> Result<(), PermitError> {
    if cost.len() > 16 {
        return Err(PermitError::Invalid {
            field: field.into(),
            message: format!("{} dimensions, at most 16", cost.len()),
        });
    }
    for dim in cost.keys() {
        name(dim, &format!("{field}.{dim}"), true, MAX_DIMENSION_LEN)?;
    }
    Ok(())
}

fn check_headers(headers: &HashMap<String, String>) -> Result<(), PermitError> {
    if headers.len() > MAX_HEADERS {
        return Err(PermitError::Invalid {
            field: "headers".into(),
            message: format!("{} headers, at most {MAX_HEADERS}", headers.len()),
        });
    }
    if let Some((k, _)) = headers
        .iter()
        .find(|(k, v)| k.len() + v.len() > MAX_HEADER_BYTES)
    {
        return Err(PermitError::Invalid {
            field: format!("headers.{}", k.chars().take(64).collect::<String>()),
            message: format!("name and value exceed {MAX_HEADER_BYTES} bytes"),
        });
    }
    Ok(())
}

fn reason(r: DenialReason) -> proto::DenialReason {
    match r {
        DenialReason::RateLimited => proto::DenialReason::RateLimited,
        DenialReason::ConcurrencyLimited => proto::DenialReason::ConcurrencyLimited,
        DenialReason::Cooldown => proto::DenialReason::Cooldown,
        DenialReason::QueueTimeout => proto::DenialReason::QueueTimeout,
        DenialReason::QueueFull => proto::DenialReason::QueueFull,
    }
}

fn acquire_response(o: AcquireOutcome) -> proto::AcquirePermitResponse {
    // Indexes may come back from Redis written under an older definition: one that names
    // no dimension now is skipped, never a panic.
    let remaining = o
        .remaining
        .iter()
        .filter_map(|&(d, n)| Some((o.def.dimensions.get(d)?.clone(), n)))
        .collect();
    let mut resp = proto::AcquirePermitResponse {
        waited: Some(to_duration(o.waited)),
        remaining,
        ..Default::default()
    };
    match o.result {
        Ok(g) => {
            resp.granted = true;
            resp.permit_id = g.permit_id;
            resp.lease_expires_at = Some(to_timestamp(g.lease_expires_at));
        }
        Err(d) => {
            resp.retry_after = Some(to_duration(d.retry_after));
            resp.denial_reason = reason(d.reason) as i32;
        }
    }
    resp
}

fn permit_id(id: &str) -> Result<&str, PermitError> {
    if id.is_empty() || id.len() > MAX_PERMIT_ID {
        return Err(PermitError::MalformedPermit);
    }
    Ok(id)
}

#[tonic::async_trait]
impl Permits for PermitsService {
    async fn acquire_permit(
        &self,
        request: Request<proto::AcquirePermitRequest>,
    ) -> Result<Response<proto::AcquirePermitResponse>, Status> {
        let deadline = grpc_timeout(&request);
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "AcquirePermit")?;
        Ok(Response::new(
            self.acquire_one(&caller, &request.into_inner(), deadline)
                .await?,
        ))
    }

    async fn acquire_permits(
        &self,
        request: Request<proto::AcquirePermitsRequest>,
    ) -> Result<Response<proto::AcquirePermitsResponse>, Status> {
        let deadline = grpc_timeout(&request);
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "AcquirePermits")?;
        let r = request.into_inner();
        Ok(Response::new(
            super::batch::acquire_all(&r.requests, |item| {
                self.acquire_one(&caller, item, deadline)
            })
            .await?,
        ))
    }

    async fn report_outcome(
        &self,
        request: Request<proto::ReportOutcomeRequest>,
    ) -> Result<Response<proto::ReportOutcomeResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "ReportOutcome")?;
        let r = request.into_inner();
        check_cost(&r.actual_cost, "actual_cost")?;
        check_headers(&r.headers)?;
        let status = r.status_code;
        if status > 999 {
            return Err(PermitError::Invalid {
                field: "status_code".into(),
                message: format!("{status} is not an HTTP status (0-999)"),
            }
            .into());
        }
        // The instant of the answer: an absolute reset proves a refill counted from then.
        let ago = opt_duration(
            r.answered_ago.as_ref(),
            "answered_ago",
            Duration::ZERO,
            MAX_ANSWERED_AGO,
        )?
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let call = if r.permit_id.is_empty() {
            let resource = caller.qualify(&r.resource, "resource", MAX_NAME_LEN)?;
            name(&r.partition, "partition", false, MAX_NAME_LEN)?;
            // Feedback without a permit can pause a resource for everyone: a worker may
            // send it only where the resource says so.
            if caller.role < Role::Admin {
                let def = self
                    .registry
                    .get(&resource)
                    .ok_or_else(|| PermitError::UnknownResource(resource.clone().into_owned()))?;
                if !def.accept_feedback_without_permit {
                    return Err(Status::permission_denied(format!(
                        "role {} cannot ReportOutcome without a permit_id on resource {:?} \
                         (its accept_feedback_without_permit is off)",
                        caller.role.name(),
                        r.resource
                    )));
                }
            }
            (Some(resource), None)
        } else {
            (None, Some(Self::own_permit(&caller, &r.permit_id)?))
        };
        let reported = match &call {
            (Some(resource), _) => Reported::Bucket {
                resource,
                partition: &r.partition,
            },
            (None, Some(id)) => Reported::Permit(id.clone()),
            (None, None) => return Err(Status::internal("a report names no call (a bug)")),
        };
        let advice = crate::engine::report::report(
            self.engine.as_ref(),
            &self.registry,
            &self.retryable,
            &self.counters,
            Report {
                call: reported,
                status,
                headers: &r.headers,
                actual_cost: &r.actual_cost,
                attempt: r.attempt,
                answered_ago: ago,
            },
        )
        .await?;
        Ok(Response::new(proto::ReportOutcomeResponse {
            retry: advice.retry,
            retry_after: Some(to_duration(advice.retry_after)),
            cooldown_until: advice.cooldown_until.map(to_timestamp),
            learned: advice
                .learned
                .into_iter()
                .map(|(l, reset_at)| proto::LearnedLimit {
                    dimension: l.dimension,
                    limit: l.limit.unwrap_or(0),
                    remaining: l.remaining.unwrap_or(0),
                    reset_at: reset_at.map(to_timestamp),
                    source: l.source,
                })
                .collect(),
        }))
    }

    async fn compute_backoff(
        &self,
        request: Request<proto::ComputeBackoffRequest>,
    ) -> Result<Response<proto::ComputeBackoffResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "ComputeBackoff")?;
        let r = request.into_inner();
        let resource = caller
            .qualify(&r.resource, "resource", MAX_NAME_LEN)?
            .into_owned();
        name(&r.partition, "partition", false, MAX_NAME_LEN)?;
        check_headers(&r.headers)?;
        if r.attempt == 0 {
            return Err(PermitError::Invalid {
                field: "attempt".into(),
                message: "must be at least 1 (the attempt that just failed)".into(),
            }
            .into());
        }
        let def = self
            .registry
            .get(&resource)
            .ok_or_else(|| PermitError::UnknownResource(resource.clone()))?;
        let clock = self.registry.clock();
        let obs = feedback::parse(
            r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            clock.wall(clock.now()),
        );
        let upstream = Upstream::of(&obs);
        let mut advice = backoff::advise(
            &def.backoff,
            &self.retryable,
            r.attempt,
            r.status_code,
            upstream.wait,
            upstream.remaining_zero,
            &mut fastrand::Rng::new(),
        );
        // Retrying sooner than the bucket could grant it only buys a denial.
        if advice.retry
            && let Some(wait) = self.engine.retry_wait(&resource, &r.partition)
        {
            advice.retry_after = advice.retry_after.max(wait);
        }
        Ok(Response::new(proto::ComputeBackoffResponse {
            retry: advice.retry,
            retry_after: Some(to_duration(advice.retry_after)),
            give_up: advice.give_up,
        }))
    }

    async fn release_permit(
        &self,
        request: Request<proto::ReleasePermitRequest>,
    ) -> Result<Response<proto::ReleasePermitResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "ReleasePermit")?;
        let r = request.into_inner();
        let settlement = if r.refund {
            Settlement::Refund
        } else {
            Settlement::Keep
        };
        let id = Self::own_permit(&caller, &r.permit_id)?;
        self.engine.release(&id, settlement).await?;
        if !r.refund {
            self.engine.released_unreported(&id);
        }
        Ok(Response::new(proto::ReleasePermitResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// grpc-timeout values in every unit parse; garbage is ignored.
    #[test]
    fn grpc_timeout_header() {
        let mk = |v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&r)
        };
        assert_eq!(mk("2S"), Some(Duration::from_secs(2)));
        assert_eq!(mk("150m"), Some(Duration::from_millis(150)));
        assert_eq!(mk("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(mk("7u"), Some(Duration::from_micros(7)));
        assert_eq!(mk("S"), None);
        assert_eq!(mk("12x"), None);
        assert_eq!(mk("-1S"), None);
    }
}
