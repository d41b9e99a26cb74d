//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: a thin handler over
//! [`crate::rls`] (matching) and the permit engine (embedded or cluster). Every descriptor
//! is evaluated; the request is all or nothing (if one descriptor is over its limit, the
//! hits taken for the others are given back: the request is not forwarded, so it must not
//! spend their quota); `shadow_mode` rules count but never answer OVER_LIMIT.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::auth::{self, Role, tenant};
use crate::engine::{Hold, PermitEngine};
use crate::permits::{PermitError, Registry};
use crate::proto::envoy::config::core::v3::HeaderValue;
use crate::proto::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response, rate_limit_service_server,
};
use crate::rls::{self, Headers, Matched, Rls, Unit};

use rate_limit_response::{Code, DescriptorStatus, RateLimit};

/// The RLS service.
#[derive(Debug, Clone)]
pub struct RlsService {
    rls: Arc<Rls>,
    registry: Registry,
    engine: Arc<dyn PermitEngine>,
    auth: Arc<auth::Auth>,
}

impl RlsService {
    /// Over `rls`'s rules and the engine.
    #[must_use]
    pub fn new(
        rls: Arc<Rls>,
        registry: Registry,
        engine: Arc<dyn PermitEngine>,
        auth: Arc<auth::Auth>,
    ) -> Self {
        Self {
            rls,
            registry,
            engine,
            auth,
        }
    }
}

/// One descriptor's hit, taken or not.
struct Hit {
    /// Its status (code, limit, remaining, reset).
    status: DescriptorStatus,
    /// What it took.
    held: Hold,
    /// Its limit's window and burst, for the headers.
    window: Option<(u32, Duration)>,
}

fn invalid(field: &str, message: &str) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

fn check_text(field: &str, s: &str, required: bool) -> Result<(), Status> {
    if required && s.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if s.len() > rls::MAX_TEXT {
        return Err(invalid(
            field,
            &format!("{} bytes, at most {}", s.len(), rls::MAX_TEXT),
        ));
    }
    Ok(())
}

fn check(req: &RateLimitRequest) -> Result<(), Status> {
    check_text("domain", &req.domain, true)?;
    if req.descriptors.len() > rls::MAX_DESCRIPTORS {
        return Err(invalid(
            "descriptors",
            &format!(
                "{} descriptors, at most {}",
                req.descriptors.len(),
                rls::MAX_DESCRIPTORS
            ),
        ));
    }
    for (i, d) in req.descriptors.iter().enumerate() {
        if d.entries.is_empty() || d.entries.len() > rls::MAX_ENTRIES {
            return Err(invalid(
                &format!("descriptors[{i}].entries"),
                &format!(
                    "{} entries, 1 to {} allowed",
                    d.entries.len(),
                    rls::MAX_ENTRIES
                ),
            ));
        }
        for (j, e) in d.entries.iter().enumerate() {
            check_text(&format!("descriptors[{i}].entries[{j}].key"), &e.key, true)?;
            check_text(
                &format!("descriptors[{i}].entries[{j}].value"),
                &e.value,
                false,
            )?;
        }
    }
    Ok(())
}

impl RlsService {
    /// The hits of one descriptor: a query (0 hits) reads the bucket, otherwise the hits
    /// are taken at once (never queued).
    async fn hit(&self, m: &Matched<'_>, hits: u64) -> Result<Hit, Status> {
        let Some(resource) = &m.resource else {
            // Matched an unlimited rule.
            return Ok(Hit {
                status: DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                },
                held: Hold::Nothing,
                window: None,
            });
        };
        let qualified = tenant::qualify(&self.rls.tenant, resource);
        let def = match (self.registry.definition(&qualified), &m.limit) {
            (Ok(d), _) => d,
            (Err(PermitError::UnknownResource(_)), Some(l)) => {
                // A descriptor's own limit override: its resource is made on first use.
                let proto = rls::definition(&qualified, l, !m.partition.is_empty());
                self.registry.check_new_resource(&qualified)?;
                let def = crate::server::convert::resource_from_proto(&proto, "descriptors.limit")?;
                self.registry.put(def);
                self.registry.definition(&qualified)?
            }
            (Err(e), _) => return Err(e.into()),
        };
        let Some(rate) = def.limits.iter().find(|l| l.dimension == 0).map(|l| l.rate) else {
            return Err(Status::failed_precondition(format!(
                "resource {resource:?} has no requests limit for the gateway to draw on"
            )));
        };
        let shown = m.limit.clone().unwrap_or_else(|| {
            std::borrow::Cow::Owned(rls::Limit {
                requests_per_unit: u32::try_from(rate.amount).unwrap_or(u32::MAX),
                unit: unit_of(Duration::from_nanos(rate.period_ns)),
                multiplier: 1,
                name: String::new(),
                replaces: Vec::new(),
            })
        });
        let current = RateLimit {
            name: shown.name.clone(),
            requests_per_unit: shown.requests_per_unit,
            unit: shown.unit.proto(),
        };
        let window = Some((
            shown.requests_per_unit,
            Duration::from_nanos(rate.period_ns),
        ));
        let partition = if def.per_partition {
            m.partition.as_str()
        } else {
            ""
        };
        let over = |remaining: u64| Hit {
            status: DescriptorStatus {
                code: if m.shadow_mode {
                    Code::Ok
                } else {
                    Code::OverLimit
                } as i32,
                current_limit: Some(current.clone()),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(pdur(rls::until_full(remaining, &rate))),
                quota: None,
            },
            held: Hold::Nothing,
            window,
        };
        if hits > rate.burst || shown.requests_per_unit == 0 {
            return Ok(over(0));
        }
        if hits == 0 {
            let remaining = self.peek(&qualified, partition, rate.burst).await;
            return Ok(Hit {
                status: DescriptorStatus {
                    code: Code::Ok as i32,
                    current_limit: Some(current),
                    limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    duration_until_reset: Some(pdur(rls::until_full(remaining, &rate))),
                    quota: None,
                },
                held: Hold::Nothing,
                window,
            });
        }
        let taken = self
            .engine
            .take(&qualified, partition, hits)
            .await
            .map(|t| (t.hold, t.remaining));
        let (held, remaining) = match taken {
            Ok(t) => t,
            // Too many distinct values: over limit, not an error Envoy would fail open on.
            Err(PermitError::Exhausted { .. }) => return Ok(over(0)),
            Err(e) => return Err(e.into()),
        };
        let remaining = remaining
            .iter()
            .filter(|(d, _)| *d == 0)
            .map(|(_, r)| *r)
            .min()
            .unwrap_or(0);
        if matches!(held, Hold::Nothing) {
            return Ok(over(remaining));
        }
        Ok(Hit {
            status: DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: Some(current),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(pdur(rls::until_full(remaining, &rate))),
                quota: None,
            },
            held,
            window,
        })
    }

    /// Units left in a bucket without taking any (a bucket not made yet is full).
    async fn peek(&self, resource: &str, partition: &str, full: u64) -> u64 {
        let view = self.engine.quota(resource, partition).await;
        view.ok()
            .and_then(|v| {
                v.dimensions
                    .iter()
                    .filter(|d| d.dimension == 0)
                    .map(|d| d.remaining)
                    .min()
            })
            .unwrap_or(full)
    }

    /// Keep a hit, or give it back (`refund`: another descriptor refused the request).
    async fn settle(&self, held: Hold, refund: bool) {
        let done = self.engine.settle(held, refund).await;
        if let Err(error) = done {
            tracing::debug!(%error, "rls hit settle");
        }
    }
}

/// The whole-unit name closest to `period` (for a permitd resource's limit shown back).
fn unit_of(period: Duration) -> Unit {
    [
        Unit::Year,
        Unit::Month,
        Unit::Week,
        Unit::Day,
        Unit::Hour,
        Unit::Minute,
    ]
    .into_iter()
    .find(|u| period >= u.duration())
    .unwrap_or(Unit::Second)
}

fn pdur(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

fn header(key: &str, value: String) -> HeaderValue {
    HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    }
}

/// The response headers of the most restrictive descriptor (fewest remaining).
fn headers(mode: Headers, hits: &[Hit]) -> Vec<HeaderValue> {
    if mode == Headers::None {
        return Vec::new();
    }
    let Some((h, (limit, window))) = hits
        .iter()
        .filter_map(|h| h.window.map(|w| (h, w)))
        .min_by_key(|(h, _)| h.status.limit_remaining)
    else {
        return Vec::new();
    };
    let remaining = h.status.limit_remaining;
    let reset = h.status.duration_until_reset.map_or(0, |d| {
        u64::try_from(d.seconds).unwrap_or(0) + u64::from(d.nanos > 0)
    });
    let mut out = Vec::new();
    if matches!(mode, Headers::XRateLimit | Headers::Both) {
        out.push(header(
            "x-ratelimit-limit",
            format!("{limit}, {limit};w={}", window.as_secs()),
        ));
        out.push(header("x-ratelimit-remaining", remaining.to_string()));
        out.push(header("x-ratelimit-reset", reset.to_string()));
    }
    if matches!(mode, Headers::Ietf | Headers::Both) {
        out.push(header(
            "ratelimit-policy",
            format!("\"default\";q={limit};w={}", window.as_secs()),
        ));
        out.push(header(
            "ratelimit",
            format!("\"default\";r={remaining};t={reset}"),
        ));
    }
    out
}

#[tonic::async_trait]
impl rate_limit_service_server::RateLimitService for RlsService {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "ShouldRateLimit")?;
        let req = request.get_ref();
        check(req)?;
        // The rules live in one tenant's namespace: any other tenant has none.
        let mine = caller.operator || &*caller.tenant == self.rls.tenant.as_str();
        // Envoy sends 0 when no hits_addend is set: that is 1, as in envoyproxy/ratelimit.
        // A descriptor's own hits_addend (a wrapper, so 0 is explicit) is a query when 0.
        let default_hits = u64::from(req.hits_addend.max(1));
        let mut matched: Vec<Option<Matched>> = req
            .descriptors
            .iter()
            .map(|d| {
                if !mine {
                    return None;
                }
                let entries = rls::entries(d);
                let over = d
                    .limit
                    .as_ref()
                    .and_then(|l| Unit::from_proto(l.unit).map(|u| (l.requests_per_unit, u)));
                self.rls.lookup(&req.domain, &entries, over)
            })
            .collect();
        // `replaces`: a matched limit drops the limits it names from this request.
        let replaced: Vec<String> = matched
            .iter()
            .flatten()
            .flat_map(|m| m.limit.iter().flat_map(|l| l.replaces.clone()))
            .collect();
        if !replaced.is_empty() {
            for m in &mut matched {
                if m.as_ref()
                    .and_then(|m| m.limit.as_ref())
                    .is_some_and(|l| !l.name.is_empty() && replaced.contains(&l.name))
                {
                    *m = None;
                }
            }
        }
        let mut hits = Vec::with_capacity(matched.len());
        for (d, m) in req.descriptors.iter().zip(&matched) {
            let detail = m.as_ref().filter(|m| m.detailed_metric);
            let n = d.hits_addend.map_or(default_hits, |h| h);
            let hit = match m {
                Some(m) => self.hit(m, n).await?,
                None => Hit {
                    status: DescriptorStatus {
                        code: Code::Ok as i32,
                        ..Default::default()
                    },
                    held: Hold::Nothing,
                    window: None,
                },
            };
            if let Some(m) = detail
                && let Some(r) = &m.resource
            {
                let over = hit.status.code == Code::OverLimit as i32;
                self.rls
                    .detail
                    .record(&tenant::qualify(&self.rls.tenant, r), &m.partition, over);
            }
            hits.push(hit);
        }
        let over = hits.iter().any(|h| h.status.code == Code::OverLimit as i32);
        let response_headers_to_add = headers(self.rls.headers, &hits);
        let mut statuses = Vec::with_capacity(hits.len());
        for h in hits {
            self.settle(h.held, over).await;
            statuses.push(h.status);
        }
        Ok(Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            response_headers_to_add,
            ..Default::default()
        }))
    }
}
