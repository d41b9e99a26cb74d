//! The one place errors become gRPC statuses. The match is exhaustive, so a new error
//! variant does not compile until someone picks its code.

use tonic::{Code, Status};

use crate::cache::CacheError;
use crate::idempotency::IdempotencyError;
use crate::permits::PermitError;
use crate::store::StoreError;

/// Everything a service method can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The permit domain refused.
    #[error(transparent)]
    Permit(#[from] PermitError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The idempotency domain refused or failed.
    #[error(transparent)]
    Idempotency(#[from] IdempotencyError),
    /// The cache refused or failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A blocking task died (a bug).
    #[error("internal task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let code = match &e {
            ServiceError::Permit(p) => match p {
                PermitError::Invalid { .. } | PermitError::MalformedPermit => Code::InvalidArgument,
                PermitError::UnknownResource(_) | PermitError::UnknownPermit => Code::NotFound,
                PermitError::ShuttingDown | PermitError::Unavailable(_) => Code::Unavailable,
                PermitError::Exhausted { .. } => Code::ResourceExhausted,
                PermitError::Internal(_) => Code::Internal,
            },
            ServiceError::Store(s) if s.is_transient() => Code::Unavailable,
            ServiceError::Store(_) | ServiceError::Join(_) => Code::Internal,
            ServiceError::Idempotency(i) => match i {
                IdempotencyError::Invalid { .. } => Code::InvalidArgument,
                IdempotencyError::NotFound { .. } => Code::NotFound,
                IdempotencyError::Refused { .. } => Code::FailedPrecondition,
                IdempotencyError::Damaged { .. } => Code::DataLoss,
                IdempotencyError::Exhausted { .. } => Code::ResourceExhausted,
                IdempotencyError::Store(s) => store_code(s),
                IdempotencyError::Task(_) => Code::Internal,
            },
            ServiceError::Cache(c) => match c {
                CacheError::Invalid { .. } => Code::InvalidArgument,
                CacheError::Store(s) => store_code(s),
                CacheError::Task(_) => Code::Internal,
            },
        };
        if let ServiceError::Permit(PermitError::UnknownResource(name)) = &e {
            // Registry names carry the tenant; the caller knows its names without it.
            return Status::not_found(format!(
                "unknown resource {:?}",
                crate::auth::tenant::split(name).1
            ));
        }
        if code == Code::Internal {
            // Details go to the log, not to the client.
            tracing::error!(error = ?e, "internal error");
            return Status::internal("internal error (logged on the server)");
        }
        Status::new(code, e.to_string())
    }
}

/// A store failure inside a domain error: `UNAVAILABLE` when retrying can help, else
/// `INTERNAL`.
fn store_code(s: &StoreError) -> Code {
    if s.is_transient() {
        Code::Unavailable
    } else {
        Code::Internal
    }
}

impl From<PermitError> for Status {
    fn from(e: PermitError) -> Self {
        ServiceError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each domain error maps to the documented code, with the field in the message.
    #[test]
    fn codes() {
        let s = Status::from(PermitError::Invalid {
            field: "cost.tokens".into(),
            message: "too big".into(),
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("cost.tokens: "));
        assert_eq!(
            Status::from(PermitError::UnknownPermit).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(PermitError::UnknownResource("x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(PermitError::ShuttingDown).code(),
            Code::Unavailable
        );
        assert_eq!(
            Status::from(PermitError::MalformedPermit).code(),
            Code::InvalidArgument
        );
    }

    /// Each idempotency and cache error maps to its documented code; store trouble is
    /// UNAVAILABLE only when transient, and internal details are not leaked.
    #[test]
    fn idempotency_and_cache_codes() {
        use crate::idempotency::Refusal;
        let code = |e: ServiceError| Status::from(e).code();
        let store = |transient| StoreError::Backend {
            op: "flush",
            transient,
            source: "disk".into(),
        };
        let invalid = IdempotencyError::Invalid {
            field: "key",
            message: "is required".into(),
        };
        let s = Status::from(ServiceError::from(invalid));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "key: is required")
        );
        let not_found = IdempotencyError::NotFound { key: "k".into() };
        assert_eq!(code(not_found.into()), Code::NotFound);
        for refusal in [
            Refusal::NotBegun,
            Refusal::AlreadyCompleted,
            Refusal::NotHolder,
            Refusal::LockExpired,
        ] {
            let e = IdempotencyError::Refused {
                key: "k".into(),
                refusal,
            };
            assert_eq!(code(e.into()), Code::FailedPrecondition);
        }
        assert_eq!(
            code(IdempotencyError::Store(store(true)).into()),
            Code::Unavailable
        );
        let s = Status::from(ServiceError::from(IdempotencyError::Store(store(false))));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("disk"));
        let invalid = CacheError::Invalid {
            field: "value",
            message: "too big".into(),
        };
        assert_eq!(code(invalid.into()), Code::InvalidArgument);
        assert_eq!(
            code(CacheError::Store(store(true)).into()),
            Code::Unavailable
        );
        assert_eq!(code(CacheError::Store(store(false)).into()), Code::Internal);
    }
}
