//! The embedded engine: the registry's own buckets, in this process. Its calls finish
//! without a round trip, so each future is ready at its first poll except an acquire
//! that queues.

use std::collections::HashMap;
use std::time::Duration;

use super::{Applied, Decide, EngineFuture, Hold, PermitEngine, Took};
use crate::clock::Nanos;
use crate::permits::id::PermitId;
use crate::permits::{
    AcquireOutcome, AcquireRequest, PermitError, QuotaView, Registry, ResourceDef, Settlement,
};

impl PermitEngine for Registry {
    fn admits(&self, _def: &ResourceDef) -> Result<(), PermitError> {
        // u128 arithmetic: every limit the definition's own checks allow is exact here.
        Ok(())
    }

    fn acquire<'a>(&'a self, req: AcquireRequest<'a>) -> EngineFuture<'a, AcquireOutcome> {
        Box::pin(Registry::acquire(self, req))
    }

    fn release<'a>(
        &'a self,
        id: &'a PermitId<'a>,
        settlement: Settlement<'a>,
    ) -> EngineFuture<'a, Option<Nanos>> {
        let r = self.release_id(id, settlement).map(Some);
        Box::pin(std::future::ready(r))
    }

    fn charge<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        actual: &'a HashMap<String, u64>,
    ) -> EngineFuture<'a, ()> {
        Box::pin(std::future::ready(Registry::charge(
            self, resource, partition, actual,
        )))
    }

    fn feedback<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        decide: &'a mut Decide<'a>,
    ) -> EngineFuture<'a, Applied> {
        let r = self.update_bucket(resource, partition, |def, b, now| {
            decide(def, b, now);
            let until = b.cooldown_until();
            Applied {
                now,
                cooldown_until: (until > now).then_some(until),
            }
        });
        Box::pin(std::future::ready(r))
    }

    fn quota<'a>(&'a self, resource: &'a str, partition: &'a str) -> EngineFuture<'a, QuotaView> {
        Box::pin(std::future::ready(Registry::quota(
            self, resource, partition,
        )))
    }

    fn take<'a>(
        &'a self,
        resource: &'a str,
        partition: &'a str,
        hits: u64,
    ) -> EngineFuture<'a, Took> {
        let r = Registry::take(self, resource, partition, hits).map(|t| Took {
            hold: if t.taken {
                Hold::Units {
                    resource: resource.to_owned(),
                    partition: partition.to_owned(),
                    hits,
                }
            } else {
                Hold::Nothing
            },
            remaining: t.remaining,
        });
        Box::pin(std::future::ready(r))
    }

    fn settle<'a>(&'a self, hold: Hold, refund: bool) -> EngineFuture<'a, ()> {
        let r = match hold {
            Hold::Nothing => Ok(()),
            Hold::Units { .. } if !refund => Ok(()),
            Hold::Units {
                resource,
                partition,
                hits,
            } => self.untake(&resource, &partition, hits),
            Hold::Permit(id) => self.release(
                &id,
                if refund {
                    Settlement::Refund
                } else {
                    Settlement::Keep
                },
            ),
        };
        Box::pin(std::future::ready(r))
    }

    fn reset<'a>(&'a self, resource: &'a str) -> EngineFuture<'a, usize> {
        Box::pin(std::future::ready(Registry::reset(self, resource)))
    }

    fn defined<'a>(&'a self, _resource: &'a str, _replaced: bool) -> EngineFuture<'a, ()> {
        // The catalog's `put` already made the new definition's buckets afresh.
        Box::pin(std::future::ready(Ok(())))
    }

    fn deleting<'a>(&'a self, _resource: &'a str) -> EngineFuture<'a, ()> {
        // The catalog's `delete` drops the buckets with the definition.
        Box::pin(std::future::ready(Ok(())))
    }

    fn deleted<'a>(&'a self, _resource: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn released_unreported(&self, id: &PermitId<'_>) {
        self.completed_unreported(id);
    }

    fn serving(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }

    fn retry_wait(&self, resource: &str, partition: &str) -> Option<Duration> {
        Registry::retry_wait(self, resource, partition)
    }

    fn learned(&self, resource: &str, partition: &str) {
        self.mark_learned(resource, partition);
    }

    fn sweep(&self) -> (usize, usize) {
        Registry::sweep(self)
    }

    fn holds_buckets(&self) -> bool {
        true
    }
}
