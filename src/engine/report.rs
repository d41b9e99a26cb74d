//! ReportOutcome's logic, in the domain rather than in its tonic handler: settle the permit
//! (or charge a call made without one), read the upstream's headers, advise a retry, apply
//! what the answer teaches to the bucket through the engine, and count it. The handler
//! validates, authorizes and converts; a test reaches this without a server.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::PermitEngine;
use crate::backoff::{self, Retryable};
use crate::clock::Nanos;
use crate::feedback::{
    self, Upstream,
    apply::{Call, Counters, Learned, Target, is_cooldown_status},
};
use crate::permits::id::PermitId;
use crate::permits::{PermitError, Registry, ResourceDef, Settlement};

/// Which call a report is about.
#[derive(Debug)]
pub enum Reported<'a> {
    /// A permitted call: its lease ends with the report.
    Permit(PermitId<'a>),
    /// A call made without a permit, on this bucket (tenant-qualified resource).
    Bucket {
        /// The resource.
        resource: &'a str,
        /// The partition.
        partition: &'a str,
    },
}

/// One upstream answer, validated.
#[derive(Debug)]
pub struct Report<'a> {
    /// The call.
    pub call: Reported<'a>,
    /// The HTTP status (0: no answer).
    pub status: u32,
    /// The answer's headers.
    pub headers: &'a HashMap<String, String>,
    /// Dimension -> what the call really used (empty: as acquired).
    pub actual_cost: &'a HashMap<String, u64>,
    /// 1 for a first try.
    pub attempt: u32,
    /// How long before the report the answer came.
    pub answered_ago: Nanos,
}

/// What permitd advises after a report, with wall-clock instants.
#[derive(Debug)]
pub struct Advice {
    /// Whether to retry.
    pub retry: bool,
    /// After how long.
    pub retry_after: Duration,
    /// The cooldown in force for everyone, if any.
    pub cooldown_until: Option<SystemTime>,
    /// What the headers taught, with their resets on the wall clock.
    pub learned: Vec<(Learned, Option<SystemTime>)>,
}

/// Apply one report.
///
/// # Errors
/// The permit's resource or the bucket's is unknown, the actual cost names an unknown
/// dimension, or the engine failed.
pub async fn report(
    engine: &dyn PermitEngine,
    registry: &Registry,
    retryable: &Retryable,
    counters: &Counters,
    r: Report<'_>,
) -> Result<Advice, PermitError> {
    let (resource, partition, call) = match &r.call {
        Reported::Bucket {
            resource,
            partition,
        } => {
            engine.charge(resource, partition, r.actual_cost).await?;
            (*resource, *partition, None)
        }
        Reported::Permit(id) => {
            let settlement = if r.actual_cost.is_empty() {
                Settlement::Keep
            } else {
                Settlement::Actual(r.actual_cost)
            };
            // When the permit was granted: the upstream answered after it. The Redis
            // engine does not say, and the report's instant is used instead.
            let granted = match engine.release(id, settlement).await {
                Ok(g) => g,
                // A lease that already ended has nothing to release, but what the upstream
                // said still matters to every other worker: learn from it anyway.
                Err(PermitError::UnknownPermit) => None,
                Err(e) => return Err(e),
            };
            (
                id.resource,
                id.partition,
                Some(Call {
                    seq: id.seq,
                    granted,
                }),
            )
        }
    };
    let clock = registry.clock();
    let now = clock.now();
    let since_grant = call
        .and_then(|c| c.granted)
        .map_or(u64::MAX, |g| now.saturating_sub(g));
    let obs = feedback::parse(
        r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        // On the wall clock: the monotonic one starts with the server.
        clock
            .wall(now)
            .checked_sub(Duration::from_nanos(r.answered_ago.min(since_grant)))
            .unwrap_or(std::time::UNIX_EPOCH),
    );
    let upstream = Upstream::of(&obs);
    let (status, attempt) = (r.status, r.attempt.max(1));
    let decide = |def: &ResourceDef, target: &mut dyn Target, now: Nanos| {
        let mut rng = fastrand::Rng::new();
        let advice = backoff::advise(
            &def.backoff,
            retryable,
            attempt,
            status,
            upstream.wait,
            upstream.remaining_zero,
            &mut rng,
        );
        // Uncapped: apply cuts every pause to max_retry_after, and says so.
        let cooldown = is_cooldown_status(status, upstream.remaining_zero).then(|| {
            upstream
                .wait
                .unwrap_or_else(|| backoff::delay(&def.backoff, attempt, &mut rng))
        });
        let applied = feedback::apply::apply(def, target, &obs, status, cooldown, call, now);
        (advice, applied)
    };
    let mut decided = None;
    let engine_says = engine
        .feedback(resource, partition, &mut |def, target, now| {
            decided = Some(decide(def, target, now));
        })
        .await?;
    let (mut advice, mut applied) = decided.ok_or(PermitError::Internal(
        "the engine applied no feedback decision",
    ))?;
    let now = engine_says.now;
    // The cooldown in force, which another replica may have set.
    applied.cooldown_until = engine_says.cooldown_until;
    // A pause set by anyone outlasts this caller's own delay: say so. And no retry can be
    // granted before the bucket has room for it: advise that instant.
    if advice.retry {
        if let Some(until) = applied.cooldown_until {
            advice.retry_after = advice
                .retry_after
                .max(Duration::from_nanos(until.saturating_sub(now)));
        }
        if let Some(wait) = engine.retry_wait(resource, partition) {
            advice.retry_after = advice.retry_after.max(wait);
        }
    }
    // What the bucket learned changed: keep it across restarts. The adaptive rate's slow
    // growth between cuts is not worth a write per success: a restart resumes from the
    // last cut, the safe side.
    if applied.limits_changed > 0 || applied.imposed || applied.adapted {
        engine.learned(resource, partition);
    }
    counters.record(&obs, &applied, status);
    registry.count_upstream(resource, status);
    Ok(Advice {
        retry: advice.retry,
        retry_after: advice.retry_after,
        cooldown_until: applied.cooldown_until.map(|at| clock.wall(at)),
        learned: applied
            .learned
            .into_iter()
            .map(|l| {
                let at = l.reset_at.map(|at| clock.wall(at));
                (l, at)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock as _, ManualClock};
    use crate::permits::limit::Rate;
    use crate::permits::resource::{BackoffDef, LimitDef, Origin, REQUESTS, Scope};
    use crate::permits::{AcquireRequest, id};
    use crate::watch::Hub;

    fn def() -> ResourceDef {
        ResourceDef {
            name: "t:r".into(),
            dimensions: vec![REQUESTS.into()],
            declared_dimensions: vec![],
            limits: vec![LimitDef {
                dimension: 0,
                rate: Rate {
                    amount: 10,
                    period_ns: 1_000_000_000,
                    burst: 10,
                },
                scope: Scope::Resource,
                scope_explicit: false,
                origin: Origin::Config,
            }],
            concurrency: 0,
            lease: Duration::from_secs(60),
            per_partition: false,
            backoff: BackoffDef::default(),
            max_queue: 10,
            learn_from_headers: true,
            failure_policy: None,
            limits_known: true,
            probe_concurrency: 0,
            accept_feedback_without_permit: false,
        }
    }

    /// A 429 with Retry-After reported on a permit, on the embedded engine and a manual
    /// clock: the permit is settled, the advice is to retry after exactly the upstream's
    /// wait, the cooldown is in force for everyone, and it is counted.
    #[tokio::test]
    async fn a_429_pauses_the_resource_and_says_until_when() {
        let clock = Arc::new(ManualClock::new());
        let registry = Registry::new(clock.clone(), None, Hub::new());
        registry.put(def());
        let cost = HashMap::new();
        let grant = registry
            .acquire(AcquireRequest {
                resource: "t:r",
                partition: "",
                cost: &cost,
                max_wait: Duration::ZERO,
                priority: 0,
                lease: None,
            })
            .await
            .expect("acquire")
            .result
            .expect("granted");
        let pid = id::parse(&grant.permit_id).expect("an id");
        let counters = Counters::default();
        let headers = HashMap::from([("retry-after".to_owned(), "7".to_owned())]);
        let advice = report(
            &registry,
            &registry,
            &Retryable::new([429, 503]),
            &counters,
            Report {
                call: Reported::Permit(pid.clone()),
                status: 429,
                headers: &headers,
                actual_cost: &HashMap::new(),
                attempt: 1,
                answered_ago: 0,
            },
        )
        .await
        .expect("report");
        assert!(advice.retry);
        assert_eq!(advice.retry_after, Duration::from_secs(7));
        let until = advice.cooldown_until.expect("a cooldown");
        let in_force = until
            .duration_since(clock.wall(clock.now()))
            .expect("in the future");
        assert_eq!(in_force, Duration::from_secs(7));
        // The permit is settled: releasing it again finds nothing.
        assert!(matches!(
            registry.release_id(&pid, Settlement::Keep),
            Err(PermitError::UnknownPermit)
        ));
    }
}
