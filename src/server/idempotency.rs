//! `permitd.v1.Idempotency`: protobuf <-> [`crate::idempotency`] and nothing else. Reads
//! `now` from the clock (as Unix ms), scopes every key to the caller's tenant, and maps
//! errors through [`ServiceError`].

use std::collections::BTreeMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{duration, to_duration, to_timestamp};
use super::error::ServiceError;
use crate::auth::{self, Role};
use crate::clock::{Clock, from_unix_ms, unix_ms};
use crate::idempotency::{BeginOutcome, BeginRequest, Idempotency, IdempotencyError, StoredResult};
use crate::proto::{self, IdempotencyState};

/// The Idempotency service.
#[derive(Debug, Clone)]
pub struct IdempotencyService {
    idempotency: Idempotency,
    clock: Arc<dyn Clock>,
    auth: Arc<auth::Auth>,
}

impl IdempotencyService {
    /// A service over the domain, reading time from `clock`.
    #[must_use]
    pub fn new(idempotency: Idempotency, clock: Arc<dyn Clock>, auth: Arc<auth::Auth>) -> Self {
        Self {
            idempotency,
            clock,
            auth,
        }
    }

    /// Now, in Unix milliseconds.
    fn now(&self) -> u64 {
        unix_ms(self.clock.as_ref())
    }
}

/// A proto result -> the domain's (maps ordered).
fn result_from_proto(r: proto::StoredResult) -> StoredResult {
    StoredResult {
        status_code: r.status_code,
        headers: r.headers.into_iter().collect::<BTreeMap<_, _>>(),
        body: r.body,
        metadata: r.metadata.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// The domain's result -> proto.
fn result_to_proto(r: StoredResult) -> proto::StoredResult {
    proto::StoredResult {
        status_code: r.status_code,
        headers: r.headers.into_iter().collect(),
        body: r.body,
        metadata: r.metadata.into_iter().collect(),
    }
}

/// The lock token Begin handed out: required, so only its holder completes or abandons.
fn token(t: String) -> Result<Option<String>, Status> {
    if t.is_empty() {
        return Err(Status::invalid_argument(
            "lock_token: is required (the token Begin returned)",
        ));
    }
    Ok(Some(t))
}

#[tonic::async_trait]
impl proto::idempotency_server::Idempotency for IdempotencyService {
    async fn begin(
        &self,
        request: Request<proto::BeginRequest>,
    ) -> Result<Response<proto::BeginResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Idempotency.Begin")?;
        let r = request.into_inner();
        let ttl = r.ttl.as_ref().map(|d| duration(d, "ttl")).transpose()?;
        let lock_ttl = r
            .lock_ttl
            .as_ref()
            .map(|d| duration(d, "lock_ttl"))
            .transpose()?;
        let req = BeginRequest {
            fingerprint: r.fingerprint,
            ttl,
            lock_ttl,
        };
        let outcome = self
            .idempotency
            .begin(&caller.tenant, &r.key, req, self.now())
            .await
            .map_err(ServiceError::from)?;
        let mut resp = proto::BeginResponse::default();
        match outcome {
            BeginOutcome::Acquired {
                lock_token,
                lock_expires_at_ms,
            } => {
                resp.set_state(IdempotencyState::Acquired);
                resp.lock_token = lock_token;
                resp.lock_expires_at = Some(to_timestamp(from_unix_ms(lock_expires_at_ms)));
            }
            BeginOutcome::InProgress { retry_after } => {
                resp.set_state(IdempotencyState::InProgress);
                resp.retry_after = Some(to_duration(retry_after));
            }
            BeginOutcome::Completed { result } => {
                resp.set_state(IdempotencyState::Completed);
                resp.result = Some(result_to_proto(result));
            }
            BeginOutcome::FingerprintMismatch => {
                resp.set_state(IdempotencyState::FingerprintMismatch);
            }
        }
        Ok(Response::new(resp))
    }

    async fn complete(
        &self,
        request: Request<proto::CompleteRequest>,
    ) -> Result<Response<proto::CompleteResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Idempotency.Complete")?;
        let r = request.into_inner();
        let result = r.result.map(result_from_proto).ok_or_else(|| {
            ServiceError::from(IdempotencyError::Invalid {
                field: "result",
                message: "is required".into(),
            })
        })?;
        self.idempotency
            .complete(
                &caller.tenant,
                &r.key,
                token(r.lock_token)?,
                result,
                self.now(),
            )
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(proto::CompleteResponse {}))
    }

    async fn abandon(
        &self,
        request: Request<proto::AbandonRequest>,
    ) -> Result<Response<proto::AbandonResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Idempotency.Abandon")?;
        let r = request.into_inner();
        self.idempotency
            .abandon(&caller.tenant, &r.key, token(r.lock_token)?, self.now())
            .await
            .map_err(ServiceError::from)?;
        Ok(Response::new(proto::AbandonResponse {}))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let caller = self.auth.caller(&request)?;
        caller.require(Role::Worker, "Idempotency.Get")?;
        let r = request.into_inner();
        let view = self
            .idempotency
            .get(&caller.tenant, &r.key, self.now())
            .await
            .map_err(ServiceError::from)?;
        let state = if view.result.is_some() {
            IdempotencyState::Completed
        } else {
            IdempotencyState::InProgress
        };
        Ok(Response::new(proto::GetResponse {
            state: state as i32,
            result: view.result.map(result_to_proto),
            expires_at: Some(to_timestamp(from_unix_ms(view.expires_at_ms))),
            lock_expires_at: view
                .lock_expires_at_ms
                .map(|ms| to_timestamp(from_unix_ms(ms))),
            fingerprint: view.fingerprint,
        }))
    }

    async fn stats(
        &self,
        request: Request<proto::IdempotencyStatsRequest>,
    ) -> Result<Response<proto::IdempotencyStatsResponse>, Status> {
        self.auth
            .caller(&request)?
            .require_operator("Idempotency.Stats")?;
        let s = self.idempotency.stats();
        Ok(Response::new(proto::IdempotencyStatsResponse {
            acquired: s.acquired,
            in_progress: s.in_progress,
            replayed: s.replayed,
            fingerprint_mismatches: s.mismatched,
            completed: s.completed,
            abandoned: s.abandoned,
            expired_removed: s.expired_removed,
            corrupt_values: s.corrupt_values,
        }))
    }
}
