//! The Redis engine behind the [`PermitEngine`] contract: every replica's calls go to the
//! shared state in Redis, so a replica holds no bucket of its own (its views over all
//! partitions are the contract's named exception, [`PermitEngine::holds_buckets`]).

use std::collections::HashMap;
use std::time::Duration;

use super::Cluster;
use crate::clock::Nanos;
use crate::engine::{Applied, Decide, EngineFuture, Hold, PermitEngine, Took};
use crate::permits::id::PermitId;
use crate::permits::{
    AcquireOutcome, AcquireRequest, PermitError, QuotaView, ResourceDef, Settlement,
};

impl PermitEngine for Cluster {
    fn admits(&self, def: &ResourceDef) -> Result<(), PermitError> {
        super::check_exact(def)
    }

    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> EngineFuture<'a, AcquireOutcome> {
        Box::pin(Cluster::acquire(self, req))
    }

    fn release<'a>(
        &'a self,
        id: &'a PermitId<'a>,
        settlement: Settlement<'a>,
    ) -> EngineFuture<'a, Option<Nanos>> {
        // The grant's instant stays in Redis; the report's own instant stands in for it.
        Box::pin(async move { Cluster::release(self, id, settlement).await.map(|()| None) })
    }

    fn charge<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        actual: &'a HashMap<String, u64>,
    ) -> EngineFuture<'a, ()> {
        Box::pin(Cluster::charge(self, resource, partition, actual))
    }

    fn feedback<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        decide: &'a mut Decide<'a>,
    ) -> EngineFuture<'a, Applied> {
        Box::pin(async move {
            let (now, until) = Cluster::feedback(self, resource, partition, |def, fx, now| {
                decide(def, fx, now);
                now
            })
            .await?;
            Ok(Applied {
                now,
                cooldown_until: until,
            })
        })
    }

    fn quota<'a>(&'a self, resource: &'a str, partition: &'a str) -> EngineFuture<'a, QuotaView> {
        Box::pin(Cluster::quota(self, resource, partition))
    }

    fn take<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        hits: u64,
    ) -> EngineFuture<'a, Took> {
        Box::pin(async move {
            // A permit with the shortest life: its lease ends when the hit is settled.
            let cost = HashMap::from([("requests".to_owned(), hits)]);
            let o = Cluster::acquire(
                self,
                AcquireRequest {
                    resource,
                    partition,
                    cost: &cost,
                    max_wait: Duration::ZERO,
                    priority: 0,
                    lease: None,
                },
            )
            .await?;
            Ok(Took {
                hold: match o.result {
                    Ok(g) => Hold::Permit(g.permit_id),
                    Err(_) => Hold::Nothing,
                },
                remaining: o.remaining,
            })
        })
    }

    fn settle<'a>(&'a self, hold: Hold, refund: bool) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let Hold::Permit(id) = hold else {
                return Ok(());
            };
            let Some(pid) = crate::permits::id::parse(&id) else {
                return Err(PermitError::MalformedPermit);
            };
            let settlement = if refund {
                Settlement::Refund
            } else {
                Settlement::Keep
            };
            Cluster::release(self, &pid, settlement).await
        })
    }

    fn reset<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, usize> {
        Box::pin(Cluster::reset(self, resource))
    }

    fn defined<'a>(&'a self, resource: &'a str, replaced: bool) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            if replaced {
                // A replaced resource starts afresh, as on the embedded engine: its buckets,
                // leases, cooldowns and learned limits in Redis go (this also tells every
                // replica). Should Redis fail, the definition is stored and the error says
                // the state was not reset; PutResource again resets it.
                Cluster::reset(self, resource).await.map(|_| ())
            } else {
                self.resource_changed(resource).await;
                Ok(())
            }
        })
    }

    fn deleting<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            if self.registry.get(resource).is_some() {
                Cluster::reset(self, resource).await?;
            }
            Ok(())
        })
    }

    fn deleted<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            self.resource_changed(resource).await;
            Ok(())
        })
    }

    fn released_unreported(&self, _id: &PermitId<'_>) {
        // Slow start counts calls in Redis by their reports only: a named exception of the
        // conformance suite.
    }

    fn serving(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        (self.settings().policy == super::FailurePolicy::FailClosed).then(|| self.up())
    }

    fn retry_wait(&self, _resource: &str, _partition: &str) -> Option<Duration> {
        // Knowing would take a round trip; the cooldown in force is already in the advice.
        None
    }

    fn learned(&self, _resource: &str, _partition: &str) {
        // Learned state lives in Redis, which keeps it.
    }

    fn sweep(&self) -> (usize, usize) {
        // Only the local-fallback buckets live here; leases in Redis end by their own TTLs.
        self.sweep_fallback()
    }

    fn holds_buckets(&self) -> bool {
        false
    }
}
