//! The one place errors become gRPC statuses. The match is exhaustive, so a new error
//! variant does not compile until someone picks its code.

use tonic::{Code, Status};

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
                PermitError::ShuttingDown => Code::Unavailable,
            },
            ServiceError::Store(s) if s.is_transient() => Code::Unavailable,
            ServiceError::Store(_) | ServiceError::Join(_) => Code::Internal,
        };
        if code == Code::Internal {
            // Details go to the log, not to the client.
            tracing::error!(error = ?e, "internal error");
            return Status::internal("internal error (logged on the server)");
        }
        Status::new(code, e.to_string())
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
}
