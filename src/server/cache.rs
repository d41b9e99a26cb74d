//! `permitd.v1.Cache`: protobuf <-> [`crate::cache`] and nothing else. Reads `now` from the
//! clock (as Unix ms), scopes every entry to the caller's tenant, and maps errors through
//! [`ServiceError`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{duration, to_timestamp};
use super::error::ServiceError;
use crate::auth::{self, Role};
use crate::cache::Cache;
use crate::clock::{Clock, from_unix_ms, unix_ms};
use crate::proto;

/// The Cache service.
#[derive(Debug, Clone)]
pub struct CacheService {
    cache: Cache,
    clock: Arc<dyn Clock>,
    auth: Arc<auth::Auth>,
}

impl CacheService {
    /// A service over the cache, reading time from `clock`.
    #[must_use]
    pub fn new(cache: Cache, clock: Arc<dyn Clock>, auth: Arc<auth::Auth>) -> Self {
        Self { cache, clock, auth }
    }

    /// Now, in Unix milliseconds.
    fn now(&self) -> u64 {
        unix_ms(self.clock.as_ref())
    }
}

#[tonic::async_trait]
impl proto::cache_server::Cache for CacheService {
    async fn get(
        &self,
        request: Request<proto::CacheGetRequest>,
    ) -> Result<Response<proto::CacheGetResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Cache.Get")?;
        let r = request.into_inner();
        let hit = self
            .cache
            .get(&caller.tenant, &r.namespace, &r.key, self.now())
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(match hit {
            Some(hit) => proto::CacheGetResponse {
                found: true,
                value: hit.value,
                expires_at: Some(to_timestamp(from_unix_ms(hit.expires_at_ms))),
            },
            None => proto::CacheGetResponse::default(),
        }))
    }

    async fn put(
        &self,
        request: Request<proto::CachePutRequest>,
    ) -> Result<Response<proto::CachePutResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Cache.Put")?;
        let r = request.into_inner();
        let ttl = r.ttl.as_ref().map(|d| duration(d, "ttl")).transpose()?;
        let expires_at_ms = self
            .cache
            .put(
                &caller.tenant,
                &r.namespace,
                &r.key,
                r.value,
                ttl,
                self.now(),
            )
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(proto::CachePutResponse {
            expires_at: Some(to_timestamp(from_unix_ms(expires_at_ms))),
        }))
    }

    async fn delete(
        &self,
        request: Request<proto::CacheDeleteRequest>,
    ) -> Result<Response<proto::CacheDeleteResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Cache.Delete")?;
        let r = request.into_inner();
        let deleted = self
            .cache
            .delete(&caller.tenant, &r.namespace, &r.key, self.now())
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(proto::CacheDeleteResponse { deleted }))
    }

    async fn stats(
        &self,
        request: Request<proto::CacheStatsRequest>,
    ) -> Result<Response<proto::CacheStatsResponse>, Status> {
        self.auth
            .caller(&request)?
            .require_operator("Cache.Stats")?;
        let s = self.cache.stats();
        Ok(Response::new(proto::CacheStatsResponse {
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            expired_removed: s.expired_removed,
            entries: s.entries,
            bytes: s.bytes,
            max_total_bytes: s.max_total_bytes,
            corrupt_values: s.corrupt_values,
        }))
    }
}
